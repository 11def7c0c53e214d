//! Choosing and aggregating: per column, the hyper-parameter with the best mean validation
//! accuracy over seeds (settings where any tuning run diverged, or stopped at its cap before the
//! protocol's training-accuracy criterion, are not eligible), and its test accuracy as
//! mean ± std over seeds with the final training accuracy.

use serde::{Deserialize, Serialize};

use crate::error::RunError;
use crate::rundir::{RunDir, RunStatus, Summary};
use crate::sweep::{ColumnDef, RunSpec};

/// The reduced result of one column of one row.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CellResult {
    pub column: String,
    /// The chosen hyper-parameter (best mean validation accuracy); `None` if every run diverged.
    pub chosen: Option<f64>,
    /// Test and final train accuracy (%) of the chosen setting, mean and std over seeds.
    pub test_mean: Option<f64>,
    pub test_std: Option<f64>,
    /// Test accuracy (%) of each finished seed of the chosen setting (the unit of replication).
    #[serde(default)]
    pub test_by_seed: Vec<f64>,
    pub train_mean: Option<f64>,
    pub seeds: usize,
    /// Every seed of the chosen setting reached the stopping criterion (none hit the cap); always
    /// true of a fixed-epoch protocol, which has no such criterion.
    #[serde(default)]
    pub converged: bool,
    /// Runs (of any hyper-parameter) that diverged, and that have not finished yet.
    pub diverged: usize,
    pub pending: usize,
    /// Mean validation accuracy (%) per hyper-parameter value, for the record.
    pub val_by_hyper: Vec<(f64, Option<f64>)>,
    /// The values that may not be chosen, and why ([`Excluded`]).
    #[serde(default)]
    pub excluded: Vec<(f64, Excluded)>,
}

/// Why a grid value may not be chosen, whatever its validation accuracy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Excluded {
    /// A tuning run diverged: the value must be trainable on every seed.
    Diverged,
    /// A tuning run stopped at its cap before the training-accuracy criterion: runs are compared
    /// at convergence (TESTING.md), so a value that does not reach it within the cap is not a
    /// candidate (its validation accuracy is that of an unfinished fit).
    NotConverged,
}

impl Excluded {
    /// How a page names it.
    pub fn as_str(self) -> &'static str {
        match self {
            Excluded::Diverged => "diverged",
            Excluded::NotConverged => "not converged",
        }
    }
}

/// Mean and sample standard deviation (0 for one value).
pub fn mean_std(xs: &[f64]) -> (f64, f64) {
    let n = xs.len() as f64;
    let mean = xs.iter().sum::<f64>() / n;
    let var = if xs.len() > 1 {
        xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)
    } else {
        0.0
    };
    (mean, var.sqrt())
}

/// The hyper-parameter with the best mean validation accuracy over the finished tuning runs
/// of `runs` (one column's) among the eligible values (see [`excluded`]). Ties go to the first
/// value in the runs' order.
pub fn choose(runs: &[(RunSpec, Option<Summary>)]) -> Option<f64> {
    let excluded = excluded(runs);
    val_by_hyper(runs)
        .into_iter()
        .filter(|(h, _)| !excluded.iter().any(|(e, _)| e == h))
        .filter_map(|(h, v)| v.map(|v| (h, v)))
        .fold(None::<(f64, f64)>, |best, (h, v)| match best {
            Some((_, bv)) if bv >= v => best,
            _ => Some((h, v)),
        })
        .map(|(h, _)| h)
}

/// The tuning runs of `runs`, in order, and their distinct hyper-parameter values.
fn tuning_values(
    runs: &[(RunSpec, Option<Summary>)],
) -> (Vec<&(RunSpec, Option<Summary>)>, Vec<f64>) {
    let tuning: Vec<_> = runs.iter().filter(|(s, _)| s.tuning).collect();
    let mut hypers: Vec<f64> = tuning.iter().map(|(s, _)| s.hyper).collect();
    hypers.dedup();
    (tuning, hypers)
}

/// Mean validation accuracy (%) of the finished tuning runs per hyper-parameter value, in the
/// runs' order (`None` where none has finished or where one diverged), eligible or not.
fn val_by_hyper(runs: &[(RunSpec, Option<Summary>)]) -> Vec<(f64, Option<f64>)> {
    let (tuning, hypers) = tuning_values(runs);
    hypers
        .into_iter()
        .map(|h| {
            let of_h = || tuning.iter().filter(move |(s, _)| s.hyper == h);
            let diverged =
                of_h().any(|(_, r)| r.as_ref().is_some_and(|r| r.status == RunStatus::Diverged));
            let v: Vec<f64> = of_h()
                .filter_map(|(_, r)| r.as_ref())
                .filter_map(|r| r.final_metrics.val_acc)
                .collect();
            (
                h,
                (!v.is_empty() && !diverged).then(|| 100.0 * mean_std(&v).0),
            )
        })
        .collect()
}

/// The values of the grid that may not be chosen: one of their finished tuning runs diverged,
/// or stopped at its cap where the protocol stops at a training accuracy (a fixed-epoch
/// protocol, with no such criterion, ends every run at its cap by design).
pub fn excluded(runs: &[(RunSpec, Option<Summary>)]) -> Vec<(f64, Excluded)> {
    let (tuning, hypers) = tuning_values(runs);
    hypers
        .into_iter()
        .filter_map(|h| {
            let finished = || {
                tuning
                    .iter()
                    .filter(move |(s, _)| s.hyper == h)
                    .filter_map(|(s, r)| r.as_ref().map(|r| (s, r)))
            };
            if finished().any(|(_, r)| r.status == RunStatus::Diverged) {
                Some((h, Excluded::Diverged))
            } else if finished()
                .any(|(s, r)| r.status == RunStatus::Capped && s.config.stop.train_acc.is_some())
            {
                Some((h, Excluded::NotConverged))
            } else {
                None
            }
        })
        .collect()
}

/// Chooses per column on validation accuracy (tuning runs only) and aggregates test accuracy
/// over every finished seed of the chosen value. `results` pairs each spec with its summary
/// (`None`: not finished).
pub fn reduce(columns: &[ColumnDef], results: &[(RunSpec, Option<Summary>)]) -> Vec<CellResult> {
    columns
        .iter()
        .map(|col| {
            let runs: Vec<(RunSpec, Option<Summary>)> = results
                .iter()
                .filter(|(s, _)| s.column == col.key)
                .cloned()
                .collect();
            let chosen = choose(&runs);
            let finished = runs.iter().filter(|(s, r)| {
                Some(s.hyper) == chosen
                    && r.as_ref().is_some_and(|r| r.status != RunStatus::Diverged)
            });
            let (mut test, mut train) = (vec![], vec![]);
            let mut converged = true;
            for (spec, r) in finished.filter_map(|(s, r)| Some((s, r.as_ref()?))) {
                if let Some(t) = r.final_metrics.test_acc {
                    test.push(100.0 * t);
                }
                if let Some(t) = r.final_metrics.train_acc {
                    train.push(100.0 * t);
                }
                // A fixed-epoch protocol (no training-accuracy criterion) ends at its cap by design.
                converged &=
                    r.status == RunStatus::Converged || spec.config.stop.train_acc.is_none();
            }
            let (test_mean, test_std) = if test.is_empty() {
                (None, None)
            } else {
                let (m, s) = mean_std(&test);
                (Some(m), Some(s))
            };
            CellResult {
                column: col.key.clone(),
                chosen,
                test_by_seed: test.clone(),
                test_mean,
                test_std,
                train_mean: (!train.is_empty()).then(|| mean_std(&train).0),
                seeds: test.len(),
                // A seed of the chosen setting that diverged did not reach the criterion either.
                converged: !test.is_empty()
                    && converged
                    && !runs.iter().any(|(s, r)| {
                        Some(s.hyper) == chosen
                            && r.as_ref().is_some_and(|r| r.status == RunStatus::Diverged)
                    }),
                diverged: runs
                    .iter()
                    .filter(|(_, r)| r.as_ref().is_some_and(|r| r.status == RunStatus::Diverged))
                    .count(),
                pending: runs.iter().filter(|(_, r)| r.is_none()).count(),
                val_by_hyper: val_by_hyper(&runs),
                excluded: excluded(&runs),
            }
        })
        .collect()
}

/// Summaries of the specs' run directories (`None` where a run has not finished).
pub fn collect(specs: &[RunSpec]) -> Result<Vec<(RunSpec, Option<Summary>)>, RunError> {
    specs
        .iter()
        .map(|s| Ok((s.clone(), RunDir::new(&s.dir).summary()?)))
        .collect()
}
