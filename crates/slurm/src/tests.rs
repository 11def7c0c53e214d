//! The executor's loop against a fake cluster that "runs" a task by writing its run's
//! summary or by ending it the way a scenario says: retries from checkpoints, config errors
//! not retried, later stages planned as earlier ones finish, a killed command's jobs adopted.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use breakeven_runner::rundir::{FinalMetrics, RunStatus, Summary};
use breakeven_runner::sweep::Experiment;
use breakeven_runner::table::RowState;
use breakeven_runner::RunDir;

use crate::cluster::Cluster;
use crate::error::SlurmError;
use crate::executor::{run, Event, Options, Progress, Sweep};
use crate::files::SweepFiles;
use crate::ledger::Ledger;
use crate::query::{End, TaskState};
use crate::script::{SbatchOptions, TaskCommand};

/// η* over two learning rates, then a Baseline at η*/10 (a second stage), and GP over one α.
const DEFINITION: &str = r#"
name = "fake"
title = "fake"
source = "tests"
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
[[columns]]
key = "gp"
label = "GP"
lr = "small"
penalty = "gp"
[[rows]]
key = "synthetic"
setting = "Synthetic"
paper = {}
[rows.overrides.t]
data = { name = "synthetic" }
[profiles.t]
description = "test"
seeds = [0]
lr_grid = [0.1, 0.3]
small_lr_divisor = 10
alpha_grid = { gp = [0.5] }
[profiles.t.base]
data = { name = "synthetic", val_size = 64, batch_size = 32 }
model = { arch = "fc_relu" }
stop = { max_epochs = 1 }
"#;

/// How each attempt of a run ends, by a part of its directory name: `None` finishes it.
type Script = BTreeMap<&'static str, Vec<Option<End>>>;

#[derive(Default)]
struct Fake {
    script: Script,
    /// Per job: the run dirs of its tasks, and whether each has been "run" yet.
    jobs: BTreeMap<String, Vec<(PathBuf, Option<TaskState>)>>,
    attempts: BTreeMap<String, usize>,
    submitted: Vec<Vec<PathBuf>>,
    named: BTreeMap<String, String>,
}

fn runs_of(script: &str) -> Vec<PathBuf> {
    let start = script.find("RUNS=(\n").unwrap() + "RUNS=(\n".len();
    let end = start + script[start..].find(")\n").unwrap();
    script[start..end]
        .lines()
        .map(|l| PathBuf::from(l.trim()))
        .collect()
}

fn summary(dir: &Path, val: f64) {
    RunDir::new(dir)
        .write_summary(&Summary {
            name: "x".into(),
            status: RunStatus::Converged,
            diverged_at_step: None,
            steps: 10,
            epochs: 1.0,
            final_metrics: FinalMetrics {
                train_acc: Some(1.0),
                val_acc: Some(val),
                test_acc: Some(val),
                ..Default::default()
            },
            wall_s: 1.0,
            git_revision: "test".into(),
            hardware: None,
        })
        .unwrap();
}

impl Cluster for Fake {
    fn submit(&mut self, script: &Path) -> Result<String, SlurmError> {
        let text = std::fs::read_to_string(script).unwrap();
        let runs = runs_of(&text);
        let job = (100 + self.jobs.len()).to_string();
        let name = text
            .lines()
            .find_map(|l| l.strip_prefix("#SBATCH --job-name="))
            .unwrap()
            .to_string();
        self.named.insert(name, job.clone());
        self.submitted.push(runs.clone());
        self.jobs
            .insert(job.clone(), runs.into_iter().map(|r| (r, None)).collect());
        Ok(job)
    }

    /// First look: every task pending. Second look: each ends as the scenario says.
    fn tasks(&mut self, job: &str) -> Result<Option<BTreeMap<u32, TaskState>>, SlurmError> {
        let Some(tasks) = self.jobs.get_mut(job) else {
            return Ok(None);
        };
        let mut out = BTreeMap::new();
        for (i, (dir, state)) in tasks.iter_mut().enumerate() {
            let s = match state {
                None => TaskState::Pending("PENDING".into()),
                Some(s) => s.clone(),
            };
            if state.is_none() {
                let name = dir.display().to_string();
                let n = self.attempts.entry(name.clone()).or_default();
                let end = self
                    .script
                    .iter()
                    .find(|(k, _)| name.contains(*k))
                    .and_then(|(_, ends)| ends.get(*n).cloned())
                    .flatten();
                *n += 1;
                *state = Some(match end {
                    Some(end) => TaskState::Ended(end),
                    None => {
                        // η* = 0.3 wins the validation.
                        summary(dir, if name.contains("0.3") { 0.9 } else { 0.5 });
                        TaskState::Ended(End {
                            state: "COMPLETED".into(),
                            exit_code: Some(0),
                            signal: None,
                        })
                    }
                });
            }
            out.insert(i as u32, s);
        }
        Ok(Some(out))
    }

    fn find_job(&mut self, name: &str) -> Result<Option<String>, SlurmError> {
        Ok(self.named.get(name).cloned())
    }
}

#[derive(Default)]
struct Events(Vec<Event>);
impl Progress for Events {
    fn event(&mut self, e: Event) {
        self.0.push(e);
    }
}

fn setup(name: &str) -> (Experiment, PathBuf, Options) {
    let exp: Experiment = toml::from_str(DEFINITION).unwrap();
    let root = std::env::temp_dir().join(format!("breakeven-slurm-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).unwrap();
    let opts = Options {
        sbatch: SbatchOptions::default(),
        task: TaskCommand {
            breakeven: "/bin/false".into(),
            data_dir: None,
            device: None,
            keep_all_checkpoints: false,
        },
        retries: 2,
        poll: Duration::ZERO,
        made_by: "test".into(),
    };
    (exp, root, opts)
}

fn cancelled() -> Option<End> {
    Some(End {
        state: "CANCELLED".into(),
        exit_code: None,
        signal: Some(15),
    })
}

#[test]
fn stages_retries_and_config_errors() {
    let (exp, root, opts) = setup("stages");
    let sweep = Sweep {
        exp: &exp,
        profile: "t",
        root: &root,
        data_roots: &[],
    };
    let bad_config = Some(End {
        state: "FAILED".into(),
        exit_code: Some(breakeven_runner::EXIT_BAD_CONFIG),
        signal: None,
    });
    let mut fake = Fake {
        script: [
            // η* = 0.1 is cancelled once, then finishes from its checkpoint.
            ("eta_star-0.1-", vec![cancelled()]),
            // GP fails with a config error: recorded as failed, never retried.
            ("gp-0.5", vec![bad_config]),
        ]
        .into_iter()
        .collect(),
        ..Default::default()
    };
    let mut events = Events::default();
    let out = run(&sweep, &opts, &mut fake, &mut events).unwrap();

    let names = |runs: &[PathBuf]| -> Vec<String> {
        runs.iter()
            .map(|r| r.file_name().unwrap().to_string_lossy().into_owned())
            .collect()
    };
    // Stage 1: the η* grid. Then the retry of η* = 0.1, and once η* = 0.3 is chosen, the
    // Baseline and GP at 0.03.
    assert_eq!(
        names(&fake.submitted[0]),
        ["eta_star-0.1-seed0", "eta_star-0.3-seed0"]
    );
    assert_eq!(names(&fake.submitted[1]), ["eta_star-0.1-seed0"]);
    assert_eq!(
        names(&fake.submitted[2]),
        ["baseline-0.03-lr0.03-seed0", "gp-0.5-lr0.03-seed0"]
    );
    assert_eq!(fake.submitted.len(), 3, "nothing is submitted twice");
    // Run directories hold their resolved configs before their tasks start.
    for r in fake.submitted.iter().flatten() {
        assert!(r.join("config.toml").is_file(), "{}", r.display());
    }
    let retried = events
        .0
        .iter()
        .filter(|e| matches!(e, Event::Retrying { why, .. } if why.contains("scancel")))
        .count();
    assert_eq!(retried, 1);
    let failed: Vec<&String> = events
        .0
        .iter()
        .filter_map(|e| match e {
            Event::Failed { why, .. } => Some(why),
            _ => None,
        })
        .collect();
    assert_eq!(failed.len(), 1);
    assert!(failed[0].contains("config error"), "{}", failed[0]);

    let RowState::Ran { cells, errors, .. } = &out[0].state else {
        panic!("row did not run")
    };
    assert_eq!(cells[0].chosen, Some(0.3));
    assert_eq!(errors.len(), 1);
    assert!(errors[0].0.ends_with("gp-0.5-lr0.03-seed0"));

    // Run again: nothing to do, nothing submitted, the failure is still reported.
    let before = fake.submitted.len();
    let out = run(&sweep, &opts, &mut fake, &mut Events::default()).unwrap();
    assert_eq!(fake.submitted.len(), before);
    let RowState::Ran { errors, .. } = &out[0].state else {
        panic!()
    };
    assert_eq!(errors.len(), 1);
    std::fs::remove_dir_all(&root).unwrap();
}

#[test]
fn retries_run_out() {
    let (exp, root, mut opts) = setup("retries");
    opts.retries = 1;
    let sweep = Sweep {
        exp: &exp,
        profile: "t",
        root: &root,
        data_roots: &[],
    };
    let mut fake = Fake {
        script: [("eta_star-0.1-", vec![cancelled(), cancelled(), cancelled()])]
            .into_iter()
            .collect(),
        ..Default::default()
    };
    let mut events = Events::default();
    let out = run(&sweep, &opts, &mut fake, &mut events).unwrap();
    let ledger = Ledger::load(&SweepFiles::new(&root).ledger())
        .unwrap()
        .unwrap();
    let rec = &ledger.runs["synthetic/eta_star-0.1-seed0"];
    assert_eq!(rec.failures.len(), 2, "one attempt and one retry");
    assert!(!rec.deterministic);
    let RowState::Ran { errors, .. } = &out[0].state else {
        panic!()
    };
    assert!(errors[0].1.contains("failed 2 times"), "{}", errors[0].1);
    std::fs::remove_dir_all(&root).unwrap();
}

#[test]
fn a_killed_command_is_attached_to() {
    let (exp, root, opts) = setup("attach");
    let sweep = Sweep {
        exp: &exp,
        profile: "t",
        root: &root,
        data_roots: &[],
    };
    // A first command wrote its submission down, `sbatch` took it, and the command died
    // before recording the job id.
    let mut fake = Fake::default();
    let files = SweepFiles::new(&root);
    std::fs::create_dir_all(&files.dir).unwrap();
    let mut ledger = Ledger::load_or_new(&files.ledger(), "fake/t").unwrap();
    let dirs: Vec<PathBuf> = ["eta_star-0.1-seed0", "eta_star-0.3-seed0"]
        .iter()
        .map(|d| root.join("synthetic").join(d))
        .collect();
    for d in &dirs {
        std::fs::create_dir_all(d).unwrap();
    }
    let name = format!("breakeven-fake-t-{}-0", ledger.token);
    let script = format!(
        "#SBATCH --job-name={name}\nRUNS=(\n  {}\n  {}\n)\n",
        dirs[0].display(),
        dirs[1].display()
    );
    let path = files.dir.join("submit-0.sh");
    std::fs::write(&path, script).unwrap();
    ledger.add_submission(
        name,
        "submit-0.sh".into(),
        vec![
            "synthetic/eta_star-0.1-seed0".into(),
            "synthetic/eta_star-0.3-seed0".into(),
        ],
    );
    ledger.save(&files.ledger()).unwrap();
    let job = fake.submit(&path).unwrap();
    fake.submitted.clear();

    let mut events = Events::default();
    run(&sweep, &opts, &mut fake, &mut events).unwrap();
    assert!(
        matches!(&events.0[0], Event::Attached { jobs, runs: 2 } if jobs[0].starts_with('?')),
        "{:?}",
        events.0[0]
    );
    // The η* grid ran in the adopted job: only the next stage was submitted.
    assert_eq!(fake.submitted.len(), 1);
    assert!(fake.submitted[0]
        .iter()
        .all(|d| !d.display().to_string().contains("eta_star")));
    let ledger = Ledger::load(&files.ledger()).unwrap().unwrap();
    assert_eq!(ledger.submissions[0].job_id.as_deref(), Some(job.as_str()));

    // Another sweep cannot take this runs directory.
    let mut other = exp.clone();
    other.name = "other".into();
    let e = run(
        &Sweep {
            exp: &other,
            ..sweep
        },
        &opts,
        &mut fake,
        &mut Events::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("belongs to sweep fake/t"), "{e}");
    std::fs::remove_dir_all(&root).unwrap();
}

#[test]
fn errors_are_read_from_task_logs() {
    let log = "breakeven: task 7_1 on vm: /r/x\n2026 INFO resuming\nError: run /r/x\n\nCaused by:\n    0: config key `data.val_size`: 5000 examples asked for\n    1: deeper\n";
    assert_eq!(
        crate::files::error_in_log(log).unwrap(),
        "run /r/x: config key `data.val_size`: 5000 examples asked for: deeper"
    );
    assert_eq!(crate::files::error_in_log("all good\n"), None);
}

/// A raised cap: the runs that stopped at the old one are submitted again, with the new cap in
/// their config.toml and their summary gone (the task resumes them); converged runs are not.
#[test]
fn a_raised_cap_resubmits_the_capped_runs() {
    let (mut exp, root, opts) = setup("raised-cap");
    let mut fake = Fake::default();
    let sweep = |exp: &Experiment, fake: &mut Fake| {
        let sweep = Sweep {
            exp,
            profile: "t",
            root: &root,
            data_roots: &[],
        };
        run(&sweep, &opts, fake, &mut Events::default()).unwrap();
    };
    sweep(&exp, &mut fake);
    let all: Vec<PathBuf> = fake.submitted.iter().flatten().cloned().collect();
    assert_eq!(all.len(), 4);
    // η* = 0.1 hit the one-epoch cap; the others converged.
    let capped = all
        .iter()
        .find(|d| d.ends_with("eta_star-0.1-seed0"))
        .unwrap()
        .clone();
    let dir = RunDir::new(&capped);
    let mut s = dir.summary().unwrap().unwrap();
    s.status = RunStatus::Capped;
    dir.write_summary(&s).unwrap();

    exp.profiles
        .get_mut("t")
        .unwrap()
        .base
        .insert("stop".into(), toml::toml! { max_epochs = 3 }.into());
    let before = fake.submitted.len();
    sweep(&exp, &mut fake);
    assert_eq!(fake.submitted[before..], [vec![capped.clone()]]);
    assert_eq!(dir.load_config().unwrap().stop.max_epochs, 3);
    std::fs::remove_dir_all(&root).unwrap();
}
