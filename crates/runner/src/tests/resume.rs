//! A run interrupted at arbitrary steps and resumed ends bit-identical to an uninterrupted run:
//! same parameters, optimizer state, metrics (except wall times) and summary.

use super::{temp_dir, tiny_config};
use crate::checkpoint::{list_checkpoints, Checkpoint};
use crate::metrics::read_metrics;
use crate::rundir::{RunDir, RunStatus};
use crate::train::{train, Outcome, TrainOptions};
use candle_core::Device;

/// Bits of every tensor of the newest checkpoint of `run`.
pub(super) fn final_bits(run: &RunDir) -> Vec<(String, Vec<u64>)> {
    let (_, path) = list_checkpoints(&run.checkpoint_dir())
        .unwrap()
        .pop()
        .unwrap();
    let ckpt = Checkpoint::load(&path, &Device::Cpu).unwrap();
    ckpt.tensors
        .iter()
        .map(|(n, t)| {
            let v = t
                .flatten_all()
                .unwrap()
                .to_dtype(candle_core::DType::F64)
                .unwrap()
                .to_vec1::<f64>()
                .unwrap();
            (n.clone(), v.iter().map(|x| x.to_bits()).collect())
        })
        .collect()
}

fn metrics_without_time(run: &RunDir) -> Vec<crate::metrics::MetricsRecord> {
    read_metrics(&run.metrics_path())
        .unwrap()
        .into_iter()
        .map(crate::metrics::MetricsRecord::without_timings)
        .collect()
}

/// Runs `config` whole and in pieces (interrupted after each of `stops`) and requires equal
/// parameters, optimizer state, metrics (except wall times) and summaries.
fn assert_resume_identical(name: &str, config: &crate::config::RunConfig, stops: &[u64]) {
    let dir = temp_dir(name);
    let whole = RunDir::new(dir.join("whole"));
    let Outcome::Finished(a) = train(
        &config.validate().unwrap(),
        &whole,
        &TrainOptions::default(),
    )
    .unwrap() else {
        panic!("not finished")
    };
    assert_eq!(a.status, RunStatus::Capped);
    assert_eq!(a.steps, 3 * 16);

    let pieces = RunDir::new(dir.join("pieces"));
    for &stop in stops {
        let opts = TrainOptions {
            stop_after_step: Some(stop),
            ..Default::default()
        };
        assert_eq!(
            train(&config.validate().unwrap(), &pieces, &opts).unwrap(),
            Outcome::Interrupted { step: stop }
        );
    }
    let Outcome::Finished(b) = train(
        &config.validate().unwrap(),
        &pieces,
        &TrainOptions::default(),
    )
    .unwrap() else {
        panic!("not finished")
    };

    assert_eq!(final_bits(&whole), final_bits(&pieces));
    let (ma, mb) = (metrics_without_time(&whole), metrics_without_time(&pieces));
    assert_eq!(ma.len(), mb.len());
    assert_eq!(ma, mb);
    assert_eq!(a.final_metrics, b.final_metrics);
    assert_eq!((a.status, a.steps), (b.status, b.steps));
    // A finished run is not repeated: its summary comes back from disk.
    let on_disk = pieces.summary().unwrap().unwrap();
    assert_eq!(
        train(
            &config.validate().unwrap(),
            &pieces,
            &TrainOptions::default()
        )
        .unwrap(),
        Outcome::Finished(on_disk)
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn interrupted_runs_resume_bit_identically() {
    // Stops right after a checkpoint (step 10), between checkpoints (13, 22: replayed from 10
    // and 20), and at an epoch end (32); each call resumes from the newest checkpoint.
    assert_resume_identical("resume", &tiny_config(), &[10, 13, 22, 32]);
}

#[test]
fn penalized_runs_resume_bit_identically() {
    // The Fisher penalty draws labels from the step generator: its position must be restored.
    let mut config = tiny_config();
    config.penalty.kind = Some(breakeven_penalties::PenaltyKind::Fp);
    config.penalty.alpha = 0.1;
    config.penalty.every = 3;
    config.penalty.sub_batch = Some(16);
    assert_resume_identical("resume-fp", &config, &[7, 26]);
    let dir = temp_dir("fp-logged");
    let run = RunDir::new(dir.join("run"));
    train(&config.validate().unwrap(), &run, &TrainOptions::default()).unwrap();
    let logged = read_metrics(&run.metrics_path()).unwrap();
    assert!(
        logged
            .iter()
            .skip(1)
            .all(|r| r.penalty.is_some_and(|p| p > 0.0)),
        "penalty values logged"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn mixup_runs_resume_bit_identically() {
    // Mixup draws λ and partners from streams keyed by (seed, epoch, position): nothing to save.
    let mut config = tiny_config();
    config.data.mixup_alpha = 0.4;
    assert_resume_identical("resume-mixup", &config, &[13]);
}

#[test]
fn divergence_stops_cleanly_with_its_step() {
    let dir = temp_dir("diverge");
    let mut config = tiny_config();
    config.optim.lr = 1e6;
    config.optim.momentum = 0.0;
    config.schedule.kind = crate::config::ScheduleKind::Constant;
    let run = RunDir::new(dir.join("run"));
    let Outcome::Finished(s) =
        train(&config.validate().unwrap(), &run, &TrainOptions::default()).unwrap()
    else {
        panic!("not finished")
    };
    assert_eq!(s.status, RunStatus::Diverged);
    let at = s.diverged_at_step.expect("diverged step");
    assert!(at < 48, "diverged at {at}");
    assert!(s.final_metrics.test_acc.is_none());
    assert_eq!(run.summary().unwrap().unwrap(), s);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn training_accuracy_threshold_stops_the_run() {
    let dir = temp_dir("converge");
    let mut config = tiny_config();
    config.stop.max_epochs = 50;
    config.stop.train_acc = Some(0.9);
    // Label noise and random crops keep the running accuracy of this tiny net near 0.7.
    config.data.label_noise = 0.0;
    config.data.augment = crate::config::Augmentation::None;
    let run = RunDir::new(dir.join("run"));
    let Outcome::Finished(s) =
        train(&config.validate().unwrap(), &run, &TrainOptions::default()).unwrap()
    else {
        panic!("not finished")
    };
    assert_eq!(s.status, RunStatus::Converged, "{s:?}");
    assert!(
        s.steps < 50 * 16 && s.steps % 16 == 0,
        "stopped at step {}",
        s.steps
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Environment variable telling a re-executed test binary to act as the child to be killed.
const KILL_CHILD_ENV: &str = "BREAKEVEN_TEST_KILL_CHILD";

#[test]
fn killed_process_resumes_bit_identically() {
    let mut config = tiny_config();
    config.stop.max_epochs = 12;
    config.tracking.checkpoint_every_steps = 7;
    if let Some(dir) = std::env::var_os(KILL_CHILD_ENV) {
        // Child: train until killed.
        let _ = train(
            &config.validate().unwrap(),
            &RunDir::new(dir),
            &TrainOptions::default(),
        );
        return;
    }
    let dir = temp_dir("kill");
    let victim = RunDir::new(dir.join("victim"));
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "tests::resume::killed_process_resumes_bit_identically",
            "--exact",
            "--test-threads=1",
        ])
        .env(KILL_CHILD_ENV, &victim.root)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // SIGKILL as soon as a few checkpoints exist: wherever the child is (mid-step, mid-write).
    let t0 = std::time::Instant::now();
    while list_checkpoints(&victim.checkpoint_dir())
        .map(|c| c.last().map_or(0, |l| l.0))
        .unwrap_or(0)
        < 40
    {
        assert!(
            child.try_wait().unwrap().is_none(),
            "child exited before it could be killed"
        );
        assert!(t0.elapsed().as_secs() < 60, "child made no progress");
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        victim.summary().unwrap().is_none(),
        "the child finished before the kill"
    );

    let Outcome::Finished(b) = train(
        &config.validate().unwrap(),
        &victim,
        &TrainOptions::default(),
    )
    .unwrap() else {
        panic!()
    };
    let whole = RunDir::new(dir.join("whole"));
    let Outcome::Finished(a) = train(
        &config.validate().unwrap(),
        &whole,
        &TrainOptions::default(),
    )
    .unwrap() else {
        panic!()
    };
    assert_eq!(final_bits(&whole), final_bits(&victim));
    assert_eq!(metrics_without_time(&whole), metrics_without_time(&victim));
    assert_eq!((a.final_metrics, a.steps), (b.final_metrics, b.steps));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A finished run is reused only for the config it was trained with: after an edit of the
/// experiment, the old cell is refused with the keys that changed, never silently reported.
#[test]
fn finished_run_with_another_config_is_refused_naming_the_keys() {
    let dir = temp_dir("finished-other");
    let mut config = tiny_config();
    config.stop.max_epochs = 1;
    let run = RunDir::new(dir.join("run"));
    train(&config.validate().unwrap(), &run, &TrainOptions::default()).unwrap();
    // Same config: the finished summary comes back.
    assert!(matches!(
        train(&config.validate().unwrap(), &run, &TrainOptions::default()).unwrap(),
        Outcome::Finished(_)
    ));
    config.optim.lr *= 2.0;
    config.data.batch_size += 1;
    let err = train(&config.validate().unwrap(), &run, &TrainOptions::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("different config"), "{err}");
    assert!(
        err.contains("optim.lr") && err.contains("data.batch_size"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn order_seed_changes_only_the_batch_order() {
    let dir = temp_dir("order-seed");
    let mut config = tiny_config();
    config.stop.max_epochs = 1;
    let run = |name: &str, config: &crate::config::RunConfig| {
        let r = RunDir::new(dir.join(name));
        train(&config.validate().unwrap(), &r, &TrainOptions::default()).unwrap();
        r
    };
    let plain = run("plain", &config);
    // `order_seed` = the run's seed is the run itself, bit for bit.
    config.data.order_seed = Some(config.seed);
    let same = run("same", &config);
    assert_eq!(final_bits(&plain), final_bits(&same));
    // Another order: the same start (initial weights and loss on the same examples), another end.
    config.data.order_seed = Some(config.seed + 1);
    let other = run("other", &config);
    let first = |r: &RunDir| {
        let m = read_metrics(&r.metrics_path()).unwrap();
        (m[0].step, m[0].measure_loss)
    };
    assert_eq!(first(&plain).0, 0);
    assert_eq!(first(&plain), first(&other));
    assert_ne!(final_bits(&plain), final_bits(&other));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A cap is a budget: a run that hit it trains on when the cap is raised, from its checkpoint
/// at the old cap, and ends bit-identical to a run given the raised cap from the start (the old
/// cap is an epoch end, which is logged either way). A converged run, a lowered cap and a
/// cosine schedule (which decays to zero at the cap) do not reopen anything.
#[test]
fn a_capped_run_trains_on_under_a_raised_cap() {
    let dir = temp_dir("raised-cap");
    let config = tiny_config();
    let finished = |config: &crate::config::RunConfig, run: &RunDir| match train(
        &config.validate().unwrap(),
        run,
        &TrainOptions::default(),
    )
    .unwrap()
    {
        Outcome::Finished(s) => s,
        other => panic!("not finished: {other:?}"),
    };
    let whole = RunDir::new(dir.join("whole"));
    let a = finished(&config, &whole);

    let grown = RunDir::new(dir.join("grown"));
    let mut short = config.clone();
    short.stop.max_epochs = 1;
    let first = finished(&short, &grown);
    assert_eq!((first.status, first.steps), (RunStatus::Capped, 16));
    assert!(!first.continues_under(&short.stop));
    assert!(first.continues_under(&config.stop));
    let b = finished(&config, &grown);
    assert_eq!((b.status, b.steps), (RunStatus::Capped, 3 * 16));
    assert_eq!(final_bits(&whole), final_bits(&grown));
    assert_eq!(metrics_without_time(&whole), metrics_without_time(&grown));
    assert_eq!(a.final_metrics, b.final_metrics);
    assert_eq!(grown.load_config().unwrap().stop.max_epochs, 3);

    // Raised while the run is unfinished: its config.toml takes the new cap too.
    let paused = RunDir::new(dir.join("paused"));
    let opts = TrainOptions {
        stop_after_step: Some(5),
        ..Default::default()
    };
    train(&short.validate().unwrap(), &paused, &opts).unwrap();
    finished(&config, &paused);
    assert_eq!(paused.load_config().unwrap().stop.max_epochs, 3);
    assert_eq!(final_bits(&whole), final_bits(&paused));

    // Back to the lower cap: refused by name, the longer run is kept.
    let err = train(&short.validate().unwrap(), &grown, &TrainOptions::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("stop.max_epochs"), "{err}");

    // Cosine: the schedule depends on the cap, so a raised cap is another run.
    let mut cosine = short.clone();
    cosine.schedule.kind = crate::config::ScheduleKind::Cosine;
    cosine.schedule.milestones.clear();
    let run = RunDir::new(dir.join("cosine"));
    finished(&cosine, &run);
    cosine.stop.max_epochs = 3;
    let err = train(&cosine.validate().unwrap(), &run, &TrainOptions::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("different config"), "{err}");

    // Converged before the old cap: a raised cap changes nothing.
    let mut easy = short.clone();
    easy.stop.train_acc = Some(0.0);
    let run = RunDir::new(dir.join("converged"));
    let c = finished(&easy, &run);
    assert_eq!(c.status, RunStatus::Converged);
    easy.stop.max_epochs = 3;
    // Read back from summary.json: equal to the number (serde_json's float_roundtrip).
    assert_eq!(finished(&easy, &run), c);
    std::fs::remove_dir_all(&dir).unwrap();
}
