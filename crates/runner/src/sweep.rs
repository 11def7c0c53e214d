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
pub use crate::select::{collect, mean_std, reduce, CellResult};

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
    /// Overrides of the run config for this column in every profile, merged over the row's
    /// (e.g. Table 2's Mixup column: `overrides = { data = { mixup_alpha = 1.0 } }`); the
    /// column's learning rate, penalty and seed still come from the sweep.
    #[serde(default)]
    pub overrides: toml::Table,
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
                    merge(&mut t, &col.overrides);
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
