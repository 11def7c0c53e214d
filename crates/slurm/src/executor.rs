//! The Slurm executor of a sweep: plan the runs (the same staged planner as the local
//! executor), write their run directories, submit the unfinished ones as one job array, follow
//! the tasks, retry failed ones from their last checkpoint, and plan again as runs finish,
//! until nothing is left to run. Then the rows are reduced exactly as the local executor's.
//!
//! Everything the executor knows is in `<runs>/slurm/` (ledger, scripts, task logs, exit
//! statuses): a command killed at any point is started again and attaches to its jobs.

use std::path::{Path, PathBuf};
use std::time::Duration;

use breakeven_runner::sweep::{Experiment, RunSpec};
use breakeven_runner::table::{find_data, run_table, RowOutcome, RowState, Silent};
use breakeven_runner::{resolved_config, RunDir};

use crate::cluster::Cluster;
use crate::error::SlurmError;
use crate::files::{error_in_log, stage_binary, staged_binary, SweepFiles, SweepLock};
use crate::ledger::{judge, Ledger, Verdict};
use crate::query::TaskState;
use crate::script::{ArrayScript, SbatchOptions, TaskCommand};

/// One sweep: an experiment's profile, its runs directory and where its data is.
#[derive(Debug, Clone, Copy)]
pub struct Sweep<'a> {
    pub exp: &'a Experiment,
    pub profile: &'a str,
    /// Absolute: tasks on other nodes find their run directories under it.
    pub root: &'a Path,
    /// Searched for each row's data set, as by the local executor.
    pub data_roots: &'a [PathBuf],
}

/// How the sweep runs on the cluster.
#[derive(Debug, Clone)]
pub struct Options {
    pub sbatch: SbatchOptions,
    pub task: TaskCommand,
    /// Failed attempts a run may have before it is recorded as failed (config errors: none).
    pub retries: u32,
    /// Time between two looks at the cluster.
    pub poll: Duration,
    /// The command that runs the sweep (in each script's header).
    pub made_by: String,
}

/// Where the runs of the sweep stand.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub pending: usize,
    pub running: usize,
    pub finished: usize,
    pub failed: usize,
    /// Stages of the staged planner not planned yet (they wait for runs to finish).
    pub waiting: usize,
}

/// What the executor reports while it works.
#[derive(Debug, Clone)]
pub enum Event {
    /// This command found jobs of an earlier command still in flight and follows them.
    Attached { jobs: Vec<String>, runs: usize },
    Submitted {
        job: String,
        runs: usize,
        script: PathBuf,
    },
    /// A task ended without finishing its run; the run is submitted again.
    Retrying {
        run: PathBuf,
        job: String,
        why: String,
    },
    /// A run failed for good; `why` holds the error it printed.
    Failed { run: PathBuf, why: String },
    /// The counts changed.
    Progress(Counts),
    /// Slurm did not answer (the executor keeps trying).
    Warning(String),
}

/// Receives the executor's events (the CLI prints them).
pub trait Progress {
    fn event(&mut self, event: Event);
}

/// Tasks per array: Slurm's default `MaxArraySize` (1001) allows indices 0-1000.
const MAX_ARRAY: usize = 1000;

/// Consecutive failed looks at the cluster before the executor gives up.
const MAX_QUERY_FAILURES: u32 = 30;

/// The jobs of a Slurm sweep in `root` that may still be running (the local executor refuses
/// to train beside them).
pub fn jobs_in_flight(root: &Path) -> Result<Vec<String>, SlurmError> {
    Ok(Ledger::load(&SweepFiles::new(root).ledger())?
        .map(|l| l.jobs_in_flight())
        .unwrap_or_default())
}

/// A planned run and the data directory of its row.
struct Planned {
    spec: RunSpec,
    data_dir: Option<PathBuf>,
    key: String,
}

impl Sweep<'_> {
    fn name(&self) -> String {
        format!("{}/{}", self.exp.name, self.profile)
    }

    fn key(&self, dir: &Path) -> String {
        dir.strip_prefix(self.root)
            .unwrap_or(dir)
            .display()
            .to_string()
    }

    /// Every run planned now in rows whose data is available, columns with more seeds first
    /// (as the local executor trains them), and the count of stages not planned yet.
    fn plan(&self) -> Result<(Vec<Planned>, usize), SlurmError> {
        let prof = self.exp.profile(self.profile)?;
        let mut out = Vec::new();
        let mut waiting = 0;
        for row in self.exp.rows_in(self.profile) {
            let plan = self.exp.plan_row(self.profile, row, self.root)?;
            let Some(first) = plan.specs.first() else {
                continue;
            };
            // A row whose data set is missing is not run (the page says so).
            let Ok(data_dir) = find_data(first.config.data.name, self.data_roots) else {
                continue;
            };
            waiting += plan.waiting.len();
            let mut specs = plan.specs;
            specs.sort_by_key(|s| std::cmp::Reverse(prof.seeds_of(&s.column).len()));
            out.extend(specs.into_iter().map(|spec| Planned {
                key: self.key(&spec.dir),
                spec,
                data_dir: data_dir.clone(),
            }));
        }
        Ok((out, waiting))
    }
}

/// The script of the first submission the sweep would make now, without writing or
/// submitting anything (`--dry-run`); `None` when every planned run has finished.
pub fn dry_run(sweep: &Sweep, opts: &Options) -> Result<Option<String>, SlurmError> {
    let files = SweepFiles::new(sweep.root);
    let ledger = Ledger::load(&files.ledger())?.unwrap_or_default();
    let (planned, _) = sweep.plan()?;
    let runs: Vec<PathBuf> = planned
        .iter()
        .filter(|p| !finished(&p.spec) && !ledger.failed(&p.key, opts.retries))
        .filter(|p| {
            ledger
                .runs
                .get(&p.key)
                .is_none_or(|r| r.in_flight.is_none())
        })
        .map(|p| p.spec.dir.clone())
        .collect();
    if runs.is_empty() {
        return Ok(None);
    }
    let name = job_name(sweep, &ledger.token_or("<token>"), ledger.submissions.len());
    let task = TaskCommand {
        breakeven: staged_binary(&files, &opts.task.breakeven)?,
        ..opts.task.clone()
    };
    array_script(&files, opts, &name, &runs, &task).map(Some)
}

/// The `sbatch --array` script of one submission: job `name`, one task per run dir of `runs`.
fn array_script(
    files: &SweepFiles,
    opts: &Options,
    name: &str,
    runs: &[PathBuf],
    task: &TaskCommand,
) -> Result<String, SlurmError> {
    ArrayScript {
        job_name: name,
        runs,
        log_dir: &files.logs(),
        exit_dir: &files.exits(),
        made_by: &opts.made_by,
        sbatch: &opts.sbatch,
        task,
    }
    .render()
}

impl Ledger {
    fn token_or(&self, default: &str) -> String {
        if self.token.is_empty() {
            default.to_string()
        } else {
            self.token.clone()
        }
    }
}

fn job_name(sweep: &Sweep, token: &str, submission: usize) -> String {
    format!(
        "breakeven-{}-{}-{token}-{submission}",
        sweep.exp.name, sweep.profile
    )
}

/// `summary.json` exists, and the run is not one that stopped at a cap the sweep now raises
/// (`Summary::continues_under`: such a run is submitted again and trains on).
fn finished(spec: &RunSpec) -> bool {
    match RunDir::new(&spec.dir).summary() {
        Ok(Some(s)) => !s.continues_under(&spec.config.stop),
        Ok(None) => false,
        // An unreadable summary is the task's to report, not a reason to train again.
        Err(_) => true,
    }
}

/// Runs the sweep on `cluster` until every planned run has finished or failed, and returns
/// the rows as the local executor's [`run_table`] reduces them, with each failed run's error.
pub fn run(
    sweep: &Sweep,
    opts: &Options,
    cluster: &mut dyn Cluster,
    progress: &mut dyn Progress,
) -> Result<Vec<RowOutcome>, SlurmError> {
    if !sweep.root.is_absolute() {
        return Err(SlurmError::Invalid(format!(
            "the runs directory {} must be absolute (tasks run on other nodes)",
            sweep.root.display()
        )));
    }
    let files = SweepFiles::new(sweep.root);
    for dir in [files.dir.clone(), files.logs(), files.exits()] {
        std::fs::create_dir_all(&dir).map_err(|e| SlurmError::io(&dir, e))?;
    }
    let _lock = SweepLock::acquire(&files.lock())?;
    let mut ledger = Ledger::load_or_new(&files.ledger(), &sweep.name())?;
    let opts = &Options {
        task: TaskCommand {
            breakeven: stage_binary(&files, &opts.task.breakeven)?,
            ..opts.task.clone()
        },
        ..opts.clone()
    };
    let attached = ledger.jobs_in_flight();
    if !attached.is_empty() {
        progress.event(Event::Attached {
            runs: ledger.in_flight().len(),
            jobs: attached,
        });
    }
    let mut last = None;
    let mut query_failures = 0;
    loop {
        // 1. Tasks that ended since the last look.
        let (pending, running) = match follow(sweep, opts, &files, &mut ledger, cluster, progress) {
            Ok(counts) => {
                query_failures = 0;
                counts
            }
            Err(e @ SlurmError::Command { .. }) if query_failures < MAX_QUERY_FAILURES => {
                query_failures += 1;
                progress.event(Event::Warning(format!("{e}; trying again")));
                std::thread::sleep(opts.poll);
                continue;
            }
            Err(e) => return Err(e),
        };
        // 2. Plan again: later stages appear as runs finish.
        let (planned, waiting) = sweep.plan()?;
        let mut todo = Vec::new();
        let (mut finished_n, mut failed_n) = (0, 0);
        for p in &planned {
            // In flight: counted as pending or running above, until its task has ended.
            if ledger
                .runs
                .get(&p.key)
                .is_some_and(|r| r.in_flight.is_some())
            {
                continue;
            }
            if finished(&p.spec) {
                finished_n += 1;
                continue;
            }
            // A run directory removed by hand is a fresh start.
            if !RunDir::new(&p.spec.dir).config_path().exists() {
                ledger.forget(&p.key);
            }
            if ledger.failed(&p.key, opts.retries) {
                failed_n += 1;
            } else {
                todo.push(p);
            }
        }
        // 3. Submit what is planned and neither finished, failed nor in flight.
        let mut pending = pending;
        if !todo.is_empty() {
            pending += todo.len();
            for chunk in todo.chunks(MAX_ARRAY) {
                submit(sweep, opts, &files, &mut ledger, cluster, chunk, progress)?;
            }
        }
        let counts = Counts {
            pending,
            running,
            finished: finished_n,
            failed: failed_n,
            waiting,
        };
        if last != Some(counts) {
            progress.event(Event::Progress(counts));
            last = Some(counts);
        }
        if ledger.in_flight().is_empty() {
            break;
        }
        std::thread::sleep(opts.poll);
    }
    outcomes(sweep, &ledger, opts.retries)
}

/// Looks at every task in flight; records the ones that ended (finished, to retry, failed).
/// Returns the counts of pending and running tasks.
fn follow(
    sweep: &Sweep,
    opts: &Options,
    files: &SweepFiles,
    ledger: &mut Ledger,
    cluster: &mut dyn Cluster,
    progress: &mut dyn Progress,
) -> Result<(usize, usize), SlurmError> {
    let (mut pending, mut running) = (0, 0);
    let mut subs: Vec<usize> = ledger.in_flight().iter().map(|(_, s, _)| *s).collect();
    subs.sort_unstable();
    subs.dedup();
    for s in subs {
        let job = match ledger.submissions[s].job_id.clone() {
            Some(j) => j,
            // Written down, but the command was killed before `sbatch` answered.
            None => match cluster.find_job(&ledger.submissions[s].job_name)? {
                Some(j) => {
                    ledger.submissions[s].job_id = Some(j.clone());
                    ledger.save(&files.ledger())?;
                    j
                }
                None => {
                    ledger.drop_submission(s);
                    ledger.save(&files.ledger())?;
                    continue;
                }
            },
        };
        let tasks = cluster.tasks(&job)?;
        let runs: Vec<(String, u32)> = ledger
            .in_flight()
            .into_iter()
            .filter(|(_, t, _)| *t == s)
            .map(|(k, _, i)| (k, i))
            .collect();
        for (key, i) in runs {
            let end = match tasks.as_ref().and_then(|t| t.get(&i)) {
                Some(TaskState::Pending(_)) => {
                    pending += 1;
                    continue;
                }
                Some(TaskState::Running) => {
                    running += 1;
                    continue;
                }
                Some(TaskState::Ended(end)) => Some(end.clone()),
                // Gone from a known job (cancelled while pending), or the job is forgotten.
                None => None,
            };
            let dir = sweep.root.join(&key);
            let exit = files.exit_status(&job, i);
            let error = std::fs::read_to_string(files.log(&job, i))
                .ok()
                .and_then(|t| error_in_log(&t));
            let failures = ledger.runs.get(&key).map_or(0, |r| r.failures.len());
            let verdict = judge(
                end.as_ref(),
                exit,
                RunDir::new(&dir).summary_path().exists(),
                failures,
                opts.retries,
                error.as_deref(),
            );
            ledger.record(&key, &verdict);
            ledger.save(&files.ledger())?;
            match verdict {
                Verdict::Finished => {}
                Verdict::Retry(why) => progress.event(Event::Retrying {
                    run: dir,
                    job: format!("{job}_{i}"),
                    why,
                }),
                Verdict::Failed { .. } => progress.event(Event::Failed {
                    why: ledger.runs[&key].message(),
                    run: dir,
                }),
            }
        }
    }
    Ok((pending, running))
}

/// Writes the run directories of `todo` (the resolved config, as `train` would), the array
/// script, and submits it; the ledger records the submission before `sbatch` runs and the
/// job id right after.
fn submit(
    sweep: &Sweep,
    opts: &Options,
    files: &SweepFiles,
    ledger: &mut Ledger,
    cluster: &mut dyn Cluster,
    todo: &[&Planned],
    progress: &mut dyn Progress,
) -> Result<(), SlurmError> {
    for p in todo {
        let dir = RunDir::new(&p.spec.dir);
        let config = resolved_config(&p.spec.config, p.data_dir.as_deref());
        dir.create(&config)?;
        // A run capped below the sweep's raised cap: its config.toml takes the new cap and its
        // summary goes, so the task resumes it from its last checkpoint.
        if dir.summary()?.is_some() {
            dir.reopen(&config)?;
        }
    }
    let n = ledger.submissions.len();
    let name = job_name(sweep, &ledger.token, n);
    let runs: Vec<PathBuf> = todo.iter().map(|p| p.spec.dir.clone()).collect();
    let script = array_script(files, opts, &name, &runs, &opts.task)?;
    let script_name = format!("submit-{n}.sh");
    let script_path = files.dir.join(&script_name);
    breakeven_runner::atomic::write_atomic(&script_path, script.as_bytes())?;
    let s = ledger.add_submission(
        name,
        script_name,
        todo.iter().map(|p| p.key.clone()).collect(),
    );
    ledger.save(&files.ledger())?;
    let job = match cluster.submit(&script_path) {
        Ok(job) => job,
        Err(e) => {
            ledger.drop_submission(s);
            ledger.submissions.pop();
            ledger.save(&files.ledger())?;
            return Err(e);
        }
    };
    ledger.submissions[s].job_id = Some(job.clone());
    ledger.save(&files.ledger())?;
    progress.event(Event::Submitted {
        job,
        runs: todo.len(),
        script: script_path,
    });
    Ok(())
}

/// The rows of the sweep as far as it got (`--report-only`): reduced as [`run`] reduces them,
/// with the runs its ledger records as failed.
pub fn report(sweep: &Sweep, retries: u32) -> Result<Vec<RowOutcome>, SlurmError> {
    let ledger = Ledger::load(&SweepFiles::new(sweep.root).ledger())?.unwrap_or_default();
    outcomes(sweep, &ledger, retries)
}

/// The rows reduced exactly as the local executor reduces them (its `run_table` without
/// training), with the runs recorded as failed listed as the row's errors.
fn outcomes(sweep: &Sweep, ledger: &Ledger, retries: u32) -> Result<Vec<RowOutcome>, SlurmError> {
    let mut out = run_table(
        sweep.exp,
        sweep.profile,
        sweep.root,
        sweep.data_roots,
        false,
        &mut Silent,
    )?;
    for o in &mut out {
        if let RowState::Ran { runs, errors, .. } = &mut o.state {
            for (spec, summary) in runs.iter() {
                let key = sweep.key(&spec.dir);
                if summary.is_none() && ledger.failed(&key, retries) {
                    errors.push((spec.dir.clone(), ledger.runs[&key].message()));
                }
            }
        }
    }
    Ok(out)
}
