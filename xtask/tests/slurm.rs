//! `cargo xtask reproduce … --executor slurm` against a real Slurm (`scripts/local-slurm.sh
//! start`; `.ci/run` starts one): the page equals the local executor's, a task cancelled
//! mid-run is resubmitted and ends bit-identical to an uninterrupted run, a bad config ends as
//! failed with its error shown, and a killed command, run again, attaches to its job.
//!
//! Without a reachable Slurm every test here passes after printing `SKIPPED: no slurm`.
//! The tasks run the `breakeven` binary cargo builds beside this test's `xtask` for the
//! runner's own integration tests (`cargo test --workspace` builds both).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use breakeven_runner::checkpoint::list_checkpoints;
use breakeven_runner::metrics::{read_metrics, MetricsRecord};
use breakeven_runner::RunDir;
use breakeven_slurm::ledger::Ledger;

/// One sweep at a time: the single-node cluster has two CPUs.
static CLUSTER: Mutex<()> = Mutex::new(());

fn slurm_reachable(test: &str) -> bool {
    if breakeven_slurm::Slurm::reachable() {
        return true;
    }
    println!("SKIPPED: no slurm ({test}: `scontrol ping` finds no controller; start one with scripts/local-slurm.sh start)");
    false
}

/// The `breakeven` binary cargo built beside `xtask`.
fn breakeven_bin() -> PathBuf {
    let bin = Path::new(env!("CARGO_BIN_EXE_xtask")).with_file_name("breakeven");
    assert!(
        bin.is_file(),
        "{} is missing: build it with `cargo build -p breakeven-runner --bin breakeven` (cargo \
         test --workspace does)",
        bin.display()
    );
    bin
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("breakeven-xtask-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// (a): a two-stage sweep (the Baseline waits for η*) that trains in seconds.
const SAME: &str = r#"
name = "slurm-same"
title = "Slurm executor test: same page"
source = "xtask/tests/slurm.rs"
[[columns]]
key = "eta_star"
label = "η*"
lr = "large"
penalty = "none"
[[columns]]
key = "baseline"
label = "Baseline"
lr = "small"
penalty = "none"
[[rows]]
key = "blobs"
setting = "Synthetic blobs"
paper = {}
[rows.overrides.t]
data = { name = "synthetic" }
[profiles.t]
description = "Two stages: the Baseline waits for eta*."
seeds = [0]
lr_grid = [0.03, 0.1]
small_lr_divisor = 10
alpha_grid = {}
[profiles.t.base]
device = "cpu"
data = { name = "synthetic", val_size = 128, batch_size = 64 }
model = { arch = "fc_relu", widths = [32] }
optim = { momentum = 0.9 }
stop = { max_epochs = 2 }
tracking = { dense_every = 4, measure_subset = 64, eval_test = true }
"#;

/// (b)-(d): two runs long enough to be cancelled after a checkpoint (`long`), and a row whose
/// config fails when its run starts (`bad`: more validation examples than the set holds).
const FAULTS: &str = r#"
name = "slurm-faults"
title = "Slurm executor test: faults"
source = "xtask/tests/slurm.rs"
[[columns]]
key = "eta_star"
label = "η*"
lr = "large"
penalty = "none"
[[rows]]
key = "bad"
setting = "Too many validation examples"
paper = {}
[rows.overrides.t]
data = { name = "synthetic", val_size = 5000 }
[[rows]]
key = "long"
setting = "Synthetic blobs"
paper = {}
[rows.overrides.t]
data = { name = "synthetic" }
[profiles.t]
description = "Runs long enough to be cancelled after a checkpoint."
seeds = [0]
lr_grid = [0.01, 0.02]
small_lr = 0.001
alpha_grid = {}
[profiles.t.base]
device = "cpu"
data = { name = "synthetic", val_size = 128, batch_size = 16 }
model = { arch = "fc_relu", widths = [256, 256] }
optim = { momentum = 0.9 }
stop = { max_epochs = EPOCHS }
tracking = { dense_every = 10, measure_subset = 64, checkpoint_every_steps = 40 }
"#;

/// Epochs of the `long` runs (56 steps each): long enough to cancel one mid-run.
const EPOCHS: u32 = 12;

fn write_definition(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, text.replace("EPOCHS", &EPOCHS.to_string())).unwrap();
    path
}

fn xtask(def: &Path, profile: &str, executor: &str, runs: &Path, out: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_xtask"));
    c.arg("reproduce")
        .arg(def)
        .args(["--profile", profile, "--executor", executor, "--quiet"])
        .arg("--runs-dir")
        .arg(runs)
        .arg("--out-dir")
        .arg(out);
    if executor == "slurm" {
        c.args(["--poll", "0.5", "--cpus-per-task", "1", "--retries", "2"])
            .arg("--breakeven-bin")
            .arg(breakeven_bin());
    }
    c
}

fn run_ok(mut c: Command) -> Output {
    let out = c.output().unwrap();
    assert!(
        out.status.success(),
        "{c:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The page without the lines that legitimately differ between two sweeps of the same
/// definition: the command (its --runs-dir), when it was generated, the summed wall time and
/// the share of it spent on curvature.
fn comparable(page: &str) -> String {
    page.lines()
        .filter(|l| {
            !l.starts_with("- Command:")
                && !l.starts_with("- Generated:")
                && !l.starts_with("- Training wall time")
                && !l.starts_with("- Curvature tracking:")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Metrics without wall times (the only fields that are not bit-reproducible).
fn metrics(run: &Path) -> Vec<MetricsRecord> {
    read_metrics(&RunDir::new(run).metrics_path())
        .unwrap()
        .into_iter()
        .map(MetricsRecord::without_timings)
        .collect()
}

fn assert_same_run(a: &Path, b: &Path) {
    let (ma, mb) = (metrics(a), metrics(b));
    assert!(!ma.is_empty());
    assert_eq!(ma, mb, "{} vs {}", a.display(), b.display());
    let (sa, sb) = (
        RunDir::new(a).summary().unwrap().unwrap(),
        RunDir::new(b).summary().unwrap().unwrap(),
    );
    assert_eq!(sa.final_metrics, sb.final_metrics);
    assert_eq!((sa.status, sa.steps), (sb.status, sb.steps));
    assert_eq!(
        std::fs::read_to_string(RunDir::new(a).config_path()).unwrap(),
        std::fs::read_to_string(RunDir::new(b).config_path()).unwrap(),
        "the run dirs record the same resolved config"
    );
}

fn wait_for(what: &str, timeout: Duration, mut ready: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ready() {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// (a) The same two-stage sweep through both executors: identical pages (but for the
/// command, the date and the wall time), plots, run configs and metrics.
#[test]
fn slurm_page_equals_local_page() {
    let _cluster = CLUSTER.lock().unwrap_or_else(|e| e.into_inner());
    if !slurm_reachable("slurm_page_equals_local_page") {
        return;
    }
    let dir = temp_dir("same");
    let def = write_definition(&dir, "slurm-same", SAME);
    let (local, slurm) = (dir.join("local"), dir.join("slurm"));
    run_ok(xtask(
        &def,
        "t",
        "local",
        &local.join("runs"),
        &local.join("out"),
    ));
    let out = run_ok(xtask(
        &def,
        "t",
        "slurm",
        &slurm.join("runs"),
        &slurm.join("out"),
    ));
    let log = String::from_utf8_lossy(&out.stderr);
    // Two stages: the η* grid, then the Baseline at η*/10.
    assert_eq!(log.matches("slurm: submitted job").count(), 2, "{log}");

    let page = |d: &Path| std::fs::read_to_string(d.join("out/slurm-same-t.md")).unwrap();
    let (lp, sp) = (page(&local), page(&slurm));
    assert_eq!(comparable(&lp), comparable(&sp));
    assert!(sp.contains("| Synthetic blobs |"), "{sp}");
    let mut plots = 0;
    for e in std::fs::read_dir(local.join("out")).unwrap() {
        let name = e.unwrap().file_name();
        if name.to_string_lossy().ends_with(".svg") {
            plots += 1;
            assert_eq!(
                std::fs::read(local.join("out").join(&name)).unwrap(),
                std::fs::read(slurm.join("out").join(&name)).unwrap(),
                "{name:?}"
            );
        }
    }
    assert!(plots > 0);
    // Every run: the η* grid and the Baseline at η*/10.
    let mut compared = 0;
    for e in std::fs::read_dir(local.join("runs/blobs")).unwrap() {
        let name = e.unwrap().file_name();
        let p = Path::new("blobs").join(name);
        assert_same_run(&local.join("runs").join(&p), &slurm.join("runs").join(&p));
        compared += 1;
    }
    assert_eq!(compared, 3);
    // A second command finds everything finished and submits nothing.
    let again = run_ok(xtask(
        &def,
        "t",
        "slurm",
        &slurm.join("runs"),
        &slurm.join("out"),
    ));
    assert!(!String::from_utf8_lossy(&again.stderr).contains("submitted"));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The newest checkpoint's step of a run (0 if none).
fn checkpoint_step(run: &Path) -> u64 {
    list_checkpoints(&RunDir::new(run).checkpoint_dir())
        .ok()
        .and_then(|c| c.last().map(|(s, _)| *s))
        .unwrap_or(0)
}

fn spawn_logged(mut c: Command, log: &Path) -> Child {
    let f = std::fs::File::create(log).unwrap();
    c.stdout(Stdio::null()).stderr(f).spawn().unwrap()
}

/// (b), (c), (d) in one sweep: the command is killed once its job runs and one long run has a
/// checkpoint; that run's task is cancelled with `scancel`; the command, run again, attaches to
/// the job, resubmits the cancelled run (which resumes from its checkpoint and ends
/// bit-identical to an uninterrupted run), leaves the other long run in its task, and records
/// the bad-config runs as failed with their error, without retrying them.
#[test]
fn slurm_faults_cancel_bad_config_and_attach() {
    let _cluster = CLUSTER.lock().unwrap_or_else(|e| e.into_inner());
    if !slurm_reachable("slurm_faults_cancel_bad_config_and_attach") {
        return;
    }
    let dir = temp_dir("faults");
    let def = write_definition(&dir, "slurm-faults", FAULTS);
    let (runs, out) = (dir.join("runs"), dir.join("out"));
    let ledger_path = runs.join("slurm/ledger.json");
    let cancelled = runs.join("long/eta_star-0.01-seed0");
    let survivor = runs.join("long/eta_star-0.02-seed0");

    // (d) The first command submits, then is killed (SIGKILL) while its tasks run.
    let mut first = spawn_logged(
        xtask(&def, "t", "slurm", &runs, &out),
        &dir.join("first.log"),
    );
    wait_for("the job and a checkpoint", Duration::from_secs(120), || {
        checkpoint_step(&cancelled) > 0
    });
    first.kill().unwrap();
    first.wait().unwrap();
    let first_log = std::fs::read_to_string(dir.join("first.log")).unwrap();
    let ledger = Ledger::load(&ledger_path).unwrap().unwrap();
    assert_eq!(ledger.submissions.len(), 1);
    let job = ledger.submissions[0].job_id.clone().unwrap();
    let task = |run: &Path| {
        let key = run.strip_prefix(&runs).unwrap().display().to_string();
        let i = ledger.submissions[0].runs.iter().position(|r| *r == key);
        format!("{job}_{}", i.unwrap())
    };

    // (b) The task of a long run is cancelled mid-run, after its first checkpoint.
    let step = checkpoint_step(&cancelled);
    assert!(
        !RunDir::new(&cancelled).summary_path().exists(),
        "the run finished before it could be cancelled: raise EPOCHS"
    );
    let status = Command::new("scancel")
        .arg(task(&cancelled))
        .status()
        .unwrap();
    assert!(status.success());

    // (d) The same command again attaches to the recorded job.
    let second = run_ok(xtask(&def, "t", "slurm", &runs, &out));
    let log = String::from_utf8_lossy(&second.stderr).into_owned();
    assert!(
        log.contains(&format!("slurm: attached to job {job}")),
        "{log}"
    );
    assert!(
        log.contains(&format!("task {} cancelled (scancel)", task(&cancelled))),
        "{log}"
    );
    let ledger = Ledger::load(&ledger_path).unwrap().unwrap();
    // One resubmission, of the cancelled run alone: the other long run finished in the job
    // the first command submitted, and nothing was submitted twice.
    assert_eq!(ledger.submissions.len(), 2, "{log}");
    let key = |run: &Path| run.strip_prefix(&runs).unwrap().display().to_string();
    assert_eq!(ledger.submissions[1].runs, [key(&cancelled)]);
    assert_eq!(ledger.runs[&key(&cancelled)].failures.len(), 1);
    assert!(ledger.runs[&key(&survivor)].failures.is_empty());
    let resumed = std::fs::read_to_string(runs.join("slurm/logs").join(format!(
        "{}_0.log",
        ledger.submissions[1].job_id.as_ref().unwrap()
    )))
    .unwrap();
    assert!(resumed.contains("resuming"), "{resumed}");
    assert!(step > 0);

    // (c) The bad config failed once each, was not retried, and its error was shown.
    for lr in ["0.01", "0.02"] {
        let bad = format!("bad/eta_star-{lr}-seed0");
        let rec = &ledger.runs[&bad];
        assert_eq!(rec.failures.len(), 1, "{bad} was retried: {log}");
        assert!(rec.deterministic);
        // Shown when it failed (by whichever command saw it end) and in the closing list.
        let shown = format!("slurm: run {} failed:", runs.join(&bad).display());
        assert!(
            first_log.contains(&shown) || log.contains(&shown),
            "{first_log}\n{log}"
        );
        assert!(
            log.contains(&format!("slurm:   {}: ", runs.join(&bad).display())),
            "{log}"
        );
    }
    assert!(log.contains("runs failed (the page lists them)"), "{log}");
    assert!(log.contains("config key `data.val_size`"), "{log}");
    let page = std::fs::read_to_string(out.join("slurm-faults-t.md")).unwrap();
    assert!(
        page.contains("## Failed runs") && page.contains("data.val_size"),
        "{page}"
    );

    // (b) Both long runs equal uninterrupted runs of the local executor, bit for bit.
    let local = dir.join("local");
    run_ok(xtask(
        &def,
        "t",
        "local",
        &local.join("runs"),
        &local.join("out"),
    ));
    assert_same_run(&cancelled, &local.join("runs/long/eta_star-0.01-seed0"));
    assert_same_run(&survivor, &local.join("runs/long/eta_star-0.02-seed0"));
    std::fs::remove_dir_all(&dir).unwrap();
}
