//! Running a table: for each row of a profile, check its data set, run every run spec
//! (finished ones are skipped, interrupted ones resume, a failing run does not stop the others)
//! and reduce the row to its cells.

use std::path::{Path, PathBuf};

use breakeven_data::locate;

use crate::config::DataName;

use crate::error::RunError;
use crate::rundir::Summary;
use crate::sweep::{collect, reduce, CellResult, Experiment, RowDef, RunSpec};
use crate::train::{train, TrainOptions};

/// What happened to one row.
#[derive(Debug, Clone)]
pub enum RowState {
    /// The data set is not available: the message names where it was looked for and the fetch command.
    Missing { dataset: String, message: String },
    /// The row ran (possibly partly): its cells, runs, the runs that failed with an error, and
    /// the stages not planned yet (a staged profile's runs waiting for earlier ones).
    Ran {
        cells: Vec<CellResult>,
        runs: Vec<(RunSpec, Option<Summary>)>,
        errors: Vec<(PathBuf, String)>,
        waiting: Vec<String>,
    },
}

/// One row's outcome.
#[derive(Debug, Clone)]
pub struct RowOutcome {
    pub row: RowDef,
    pub state: RowState,
    /// The data directory the row's data set was found in (`None`: default search or synthetic).
    pub data_dir: Option<PathBuf>,
}

/// Where `name` is: the first of `roots` that holds it, or, when `roots` is empty, the default
/// search path (`$BREAKEVEN_DATA`, then `./data`). Named roots replace the default search, so a
/// sweep told where its data is never picks up another copy. Errors with the data crate's
/// message (every folder searched and the fetch command).
pub fn find_data(name: DataName, roots: &[PathBuf]) -> Result<Option<PathBuf>, RunError> {
    let Some(ds) = name.files() else {
        return Ok(None);
    };
    if roots.is_empty() {
        return locate(ds, None).map(|_| None).map_err(Into::into);
    }
    let mut first_error = None;
    for root in roots {
        match locate(ds, Some(root)) {
            Ok(_) => return Ok(Some(root.canonicalize().unwrap_or_else(|_| root.clone()))),
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    let err = first_error.ok_or_else(|| RunError::Other(format!("{name}: no folder searched")))?;
    if roots.len() == 1 {
        return Err(err.into());
    }
    let searched: Vec<String> = roots[1..]
        .iter()
        .map(|r| r.join(ds.folder()).display().to_string())
        .collect();
    Err(RunError::Other(format!(
        "{err}; also searched {}",
        searched.join(", ")
    )))
}

/// Callbacks of a table run (progress display).
pub trait TableProgress {
    /// Called before run `index` of `total` starts (or is found finished).
    fn run_started(&mut self, index: usize, total: usize, spec: &RunSpec);
    /// The bar the run should drive, if any.
    fn run_bar(&mut self) -> Option<indicatif::ProgressBar> {
        None
    }
}

/// No progress display.
#[derive(Debug)]
pub struct Silent;
impl TableProgress for Silent {
    fn run_started(&mut self, _: usize, _: usize, _: &RunSpec) {}
}

/// Runs every row of `profile` under `root/<row>/…`. `data_roots` are searched in order for
/// each data set (the default search path when empty, see [`find_data`]). With `execute` false
/// nothing is trained and no data is needed: the rows are reduced from whatever runs have
/// finished (a report of a sweep in progress).
pub fn run_table(
    exp: &Experiment,
    profile: &str,
    root: &Path,
    data_roots: &[PathBuf],
    execute: bool,
    progress: &mut dyn TableProgress,
) -> Result<Vec<RowOutcome>, RunError> {
    run_table_with(
        exp,
        profile,
        root,
        data_roots,
        execute,
        progress,
        &TrainOptions::default(),
    )
}

/// As [`run_table`], training every run with `options` (its `data_dir` and `bar` are set per
/// run; e.g. `keep_all_checkpoints` for analyses of whole trajectories).
pub fn run_table_with(
    exp: &Experiment,
    profile: &str,
    root: &Path,
    data_roots: &[PathBuf],
    execute: bool,
    progress: &mut dyn TableProgress,
    options: &TrainOptions,
) -> Result<Vec<RowOutcome>, RunError> {
    let rows = exp.rows_in(profile);
    // Plan (and so validate) every row first: a bad definition fails before any training.
    let mut plans = Vec::new();
    for row in &rows {
        let specs = exp.expand_row(profile, row, root)?;
        let data_name = specs
            .first()
            .map_or(DataName::Synthetic, |s| s.config.data.name);
        plans.push((row, data_name));
    }
    let mut index = 0;
    let mut out = Vec::new();
    for (row, data_name) in plans {
        let data_dir = match find_data(data_name, data_roots) {
            Ok(d) => d,
            // A report needs the runs, not the data.
            Err(_) if !execute => None,
            Err(e) => {
                tracing::warn!(row = %row.key, "skipped: {e}");
                out.push(RowOutcome {
                    row: (*row).clone(),
                    state: RowState::Missing {
                        dataset: data_name.to_string(),
                        message: e.to_string(),
                    },
                    data_dir: None,
                });
                continue;
            }
        };
        let mut errors: Vec<(PathBuf, String)> = Vec::new();
        // A staged profile plans more runs as earlier ones finish: train what is planned and
        // not finished, then plan again, until nothing new can run.
        let prof = exp.row_profile(profile, row)?;
        let mut plan = exp.plan_row(profile, row, root)?;
        if execute {
            loop {
                let runs = collect(&plan.specs)?;
                let mut todo: Vec<&RunSpec> = runs
                    .iter()
                    .filter(|(s, r)| {
                        r.as_ref().is_none_or(|r| r.continues_under(&s.config.stop))
                            && !errors.iter().any(|(d, _)| *d == s.dir)
                    })
                    .map(|(s, _)| s)
                    .collect();
                // Columns with more seeds carry the verdicts (η*, Baseline, FP in Table 1's
                // `cpu` profile): they train first, so a sweep cut short has the headline. The
                // row is planned again after every run, so seeds that a finished tuning run
                // unlocks go ahead of the other columns' grids.
                todo.sort_by_key(|s| std::cmp::Reverse(prof.seeds_of(&s.column).len()));
                let Some(spec) = todo.first() else {
                    break;
                };
                progress.run_started(index, index + todo.len(), spec);
                index += 1;
                let opts = TrainOptions {
                    data_dir: data_dir.clone(),
                    bar: progress.run_bar(),
                    ..options.clone()
                };
                if let Err(e) = train(
                    &spec.config.validate()?,
                    &crate::RunDir::new(&spec.dir),
                    &opts,
                ) {
                    tracing::error!(run = %spec.dir.display(), "failed: {e}");
                    // Candle appends a backtrace to its messages when RUST_BACKTRACE is set.
                    let message = e.to_string().lines().next().unwrap_or_default().to_string();
                    errors.push((spec.dir.clone(), message));
                }
                plan = exp.plan_row(profile, row, root)?;
            }
        }
        for waiting in &plan.waiting {
            tracing::warn!(row = %row.key, "not planned yet: {waiting}");
        }
        let specs = plan.specs;
        let runs = collect(&specs)?;
        let cells = reduce(&exp.columns, &runs);
        out.push(RowOutcome {
            row: (*row).clone(),
            state: RowState::Ran {
                cells,
                runs,
                errors,
                waiting: plan.waiting,
            },
            data_dir,
        });
    }
    Ok(out)
}
