//! Sweeps: an experiment definition (rows × columns × hyper-parameter grid × seeds) expanded
//! into independent run specs, run (finished runs are never repeated, interrupted ones resume),
//! and reduced to a table: per column the hyper-parameter with the best mean validation
//! accuracy, and its test accuracy as mean ± std over seeds with the final training accuracy.
//!
//! Definitions are data (`experiments/*.toml`): a profile holds a base run config (a TOML
//! table), each row overrides it, and each column sets the learning rate and penalty.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::config::RunConfig;
use crate::error::RunError;
use crate::rundir::{RunDir, RunStatus, Summary};

/// An experiment file (see `experiments/table1.toml`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Experiment {
    pub name: String,
    pub title: String,
    /// Where the paper's numbers come from.
    pub source: String,
    pub columns: Vec<ColumnDef>,
    pub rows: Vec<RowDef>,
    pub profiles: BTreeMap<String, Profile>,
}

/// A table column: a learning rate choice and a penalty.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ColumnDef {
    pub key: String,
    pub label: String,
    /// `large`: the learning rate is tuned over the profile's `lr_grid` (η*); `small`: the
    /// row's small learning rate.
    pub lr: String,
    /// `none`, `fp`, `gp`, `gpr` or `gpx`; penalties tune α over the profile's `alpha_grid`.
    pub penalty: String,
}

/// A table row: a data set and architecture, with the paper's numbers per column.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RowDef {
    pub key: String,
    pub setting: String,
    /// Published test accuracy (%) per column key.
    pub paper: BTreeMap<String, f64>,
    /// Overrides of the base config for this row, per profile name (rows absent from a
    /// profile are not run in it).
    #[serde(default)]
    pub overrides: BTreeMap<String, toml::Table>,
}

/// One scale of the experiment (`smoke`, `cpu`, `paper`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    pub description: String,
    pub seeds: Vec<u64>,
    /// η* candidates (chosen on the validation split).
    pub lr_grid: Vec<f64>,
    /// The small learning rate of the baseline and penalty columns.
    pub small_lr: f64,
    /// α candidates per penalty.
    pub alpha_grid: BTreeMap<String, Vec<f64>>,
    /// The base run config of every run.
    pub base: toml::Table,
}

/// One run of a sweep.
#[derive(Debug, Clone)]
pub struct RunSpec {
    pub row: String,
    pub column: String,
    /// The tuned hyper-parameter's value (lr for η*, α for penalties, the small lr for the baseline).
    pub hyper: f64,
    pub seed: u64,
    pub config: RunConfig,
    pub dir: PathBuf,
}

/// Recursively merges `over` into `base` (tables merge, everything else replaces).
pub fn merge(base: &mut toml::Table, over: &toml::Table) {
    for (k, v) in over {
        match (base.get_mut(k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o),
            _ => {
                base.insert(k.clone(), v.clone());
            }
        }
    }
}

impl Experiment {
    pub fn load(path: &Path) -> Result<Self, RunError> {
        let text = std::fs::read_to_string(path).map_err(|e| RunError::io(path, e))?;
        toml::from_str(&text).map_err(|e| RunError::Config {
            origin: path.display().to_string(),
            message: e.to_string(),
        })
    }

    pub fn profile(&self, name: &str) -> Result<&Profile, RunError> {
        self.profiles.get(name).ok_or_else(|| RunError::Invalid {
            key: "profile".into(),
            message: format!(
                "unknown profile {name:?}, expected one of {:?}",
                self.profiles.keys().collect::<Vec<_>>()
            ),
        })
    }

    /// The rows that take part in `profile`.
    pub fn rows_in(&self, profile: &str) -> Vec<&RowDef> {
        self.rows
            .iter()
            .filter(|r| r.overrides.contains_key(profile))
            .collect()
    }

    /// The base config of `row` in `profile` (before the column's lr/penalty/seed).
    pub fn row_config(&self, profile: &str, row: &RowDef) -> Result<toml::Table, RunError> {
        let mut t = self.profile(profile)?.base.clone();
        if let Some(o) = row.overrides.get(profile) {
            merge(&mut t, o);
        }
        Ok(t)
    }

    /// Every run of `row` in `profile`, validated, under `root/<row>/`.
    pub fn expand_row(
        &self,
        profile: &str,
        row: &RowDef,
        root: &Path,
    ) -> Result<Vec<RunSpec>, RunError> {
        let prof = self.profile(profile)?;
        let base = self.row_config(profile, row)?;
        let mut specs = Vec::new();
        for col in &self.columns {
            let hypers: Vec<f64> = match (col.lr.as_str(), col.penalty.as_str()) {
                ("large", _) => prof.lr_grid.clone(),
                (_, "none") => vec![prof.small_lr],
                (_, p) => prof.alpha_grid.get(p).cloned().unwrap_or_default(),
            };
            if hypers.is_empty() {
                return Err(RunError::Invalid {
                    key: format!("profiles.{profile}"),
                    message: format!("no hyper-parameter values for column {}", col.key),
                });
            }
            for &hyper in &hypers {
                for &seed in &prof.seeds {
                    let mut t = base.clone();
                    let lr = if col.lr == "large" {
                        hyper
                    } else {
                        prof.small_lr
                    };
                    let mut over = toml::Table::new();
                    over.insert(
                        "name".into(),
                        format!("{}-{}-{}", row.key, col.key, fmt_hyper(hyper)).into(),
                    );
                    over.insert("seed".into(), toml::Value::Integer(seed as i64));
                    let mut optim = toml::Table::new();
                    optim.insert("lr".into(), lr.into());
                    over.insert("optim".into(), optim.into());
                    let mut pen = toml::Table::new();
                    pen.insert("kind".into(), col.penalty.clone().into());
                    if col.penalty != "none" {
                        pen.insert("alpha".into(), hyper.into());
                    }
                    over.insert("penalty".into(), pen.into());
                    merge(&mut t, &over);
                    let origin = format!(
                        "{} row {} column {} ({profile})",
                        self.name, row.key, col.key
                    );
                    let config: RunConfig =
                        toml::Value::Table(t)
                            .try_into()
                            .map_err(|e: toml::de::Error| RunError::Config {
                                origin: origin.clone(),
                                message: e.to_string(),
                            })?;
                    config.validate().map_err(|e| RunError::Config {
                        origin: origin.clone(),
                        message: e.to_string(),
                    })?;
                    // Hyper-parameters are chosen on validation accuracy, never on the test set.
                    if config.data.val_size == 0 {
                        return Err(RunError::Config {
                            origin,
                            message: "`data.val_size` must be > 0: a sweep chooses η* and α on the validation split".into(),
                        });
                    }
                    let dir = root.join(&row.key).join(format!(
                        "{}-{}-seed{seed}",
                        col.key,
                        fmt_hyper(hyper)
                    ));
                    specs.push(RunSpec {
                        row: row.key.clone(),
                        column: col.key.clone(),
                        hyper,
                        seed,
                        config,
                        dir,
                    });
                }
            }
        }
        Ok(specs)
    }
}

/// A hyper-parameter value for names: `0.05` → `0.05`, `1e-4` → `0.0001`.
pub fn fmt_hyper(v: f64) -> String {
    format!("{v}")
}

/// The reduced result of one column of one row.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CellResult {
    pub column: String,
    /// The chosen hyper-parameter (best mean validation accuracy); `None` if every run diverged.
    pub chosen: Option<f64>,
    /// Test and final train accuracy (%) of the chosen setting, mean and std over seeds.
    pub test_mean: Option<f64>,
    pub test_std: Option<f64>,
    pub train_mean: Option<f64>,
    pub seeds: usize,
    /// Runs (of any hyper-parameter) that diverged, and that have not finished yet.
    pub diverged: usize,
    pub pending: usize,
    /// Mean validation accuracy (%) per hyper-parameter value, for the record.
    pub val_by_hyper: Vec<(f64, Option<f64>)>,
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

/// Chooses per column on validation accuracy and aggregates test accuracy over seeds.
/// `results` pairs each spec with its summary (`None`: not finished).
pub fn reduce(columns: &[ColumnDef], results: &[(RunSpec, Option<Summary>)]) -> Vec<CellResult> {
    columns
        .iter()
        .map(|col| {
            let runs: Vec<_> = results
                .iter()
                .filter(|(s, _)| s.column == col.key)
                .collect();
            let mut hypers: Vec<f64> = runs.iter().map(|(s, _)| s.hyper).collect();
            hypers.dedup();
            let finished = |h: f64| {
                runs.iter()
                    .filter(move |(s, r)| {
                        s.hyper == h && r.as_ref().is_some_and(|r| r.status != RunStatus::Diverged)
                    })
                    .filter_map(|(_, r)| r.as_ref())
            };
            // A setting with any diverged seed is not eligible: η* must be trainable on every seed.
            let eligible = |h: f64| {
                !runs.iter().any(|(s, r)| {
                    s.hyper == h && r.as_ref().is_some_and(|r| r.status == RunStatus::Diverged)
                })
            };
            let val_of = |r: &Summary| r.final_metrics.val_acc;
            let val_by_hyper: Vec<(f64, Option<f64>)> = hypers
                .iter()
                .map(|&h| {
                    let v: Vec<f64> = finished(h).filter_map(val_of).collect();
                    (
                        h,
                        (!v.is_empty() && eligible(h)).then(|| 100.0 * mean_std(&v).0),
                    )
                })
                .collect();
            let chosen = val_by_hyper
                .iter()
                .filter_map(|&(h, v)| v.map(|v| (h, v)))
                .fold(None::<(f64, f64)>, |best, (h, v)| match best {
                    Some((_, bv)) if bv >= v => best,
                    _ => Some((h, v)),
                })
                .map(|(h, _)| h);
            let (mut test, mut train) = (vec![], vec![]);
            if let Some(h) = chosen {
                for r in finished(h) {
                    if let Some(t) = r.final_metrics.test_acc {
                        test.push(100.0 * t);
                    }
                    if let Some(t) = r.final_metrics.train_acc {
                        train.push(100.0 * t);
                    }
                }
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
                test_mean,
                test_std,
                train_mean: (!train.is_empty()).then(|| mean_std(&train).0),
                seeds: test.len(),
                diverged: runs
                    .iter()
                    .filter(|(_, r)| r.as_ref().is_some_and(|r| r.status == RunStatus::Diverged))
                    .count(),
                pending: runs.iter().filter(|(_, r)| r.is_none()).count(),
                val_by_hyper,
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
