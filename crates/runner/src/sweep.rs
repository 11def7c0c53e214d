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
pub use crate::select::{choose, collect, mean_std, reduce, CellResult};

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
    /// Row-level changes to a profile's sweep settings, per profile name: `seeds`,
    /// `tune_seeds`, `column_seeds`, `lr_grid`, `small_lr`, `small_lr_divisor`, `alpha_grid`
    /// (e.g. fewer seeds and a shorter grid for a row whose model costs several times more).
    /// The run config itself changes through `overrides`.
    #[serde(default)]
    pub sweep: BTreeMap<String, toml::Table>,
}

/// One scale of the experiment (`smoke`, `cpu`, `paper`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    pub description: String,
    pub seeds: Vec<u64>,
    /// The seeds a grid is tuned on (η* over `lr_grid`, α over `alpha_grid`); the chosen value
    /// then runs on every other seed of its column. Absent: every seed runs every grid point.
    #[serde(default)]
    pub tune_seeds: Option<Vec<u64>>,
    /// Seeds per column key, where a column runs other seeds than `seeds`.
    #[serde(default)]
    pub column_seeds: BTreeMap<String, Vec<u64>>,
    /// η* candidates (chosen on the validation split).
    pub lr_grid: Vec<f64>,
    /// The small learning rate of the baseline and penalty columns: this value, or the chosen
    /// η* divided by `small_lr_divisor` (those columns then wait for η* to be chosen).
    #[serde(default)]
    pub small_lr: Option<f64>,
    #[serde(default)]
    pub small_lr_divisor: Option<f64>,
    /// α candidates per penalty.
    pub alpha_grid: BTreeMap<String, Vec<f64>>,
    /// The base run config of every run.
    pub base: toml::Table,
}

impl Profile {
    /// The seeds of column `key`.
    pub fn seeds_of(&self, key: &str) -> &[u64] {
        self.column_seeds.get(key).unwrap_or(&self.seeds)
    }

    /// The seeds column `key` tunes its grid on (a subset of its seeds).
    pub fn tune_seeds_of(&self, key: &str) -> Vec<u64> {
        let seeds = self.seeds_of(key);
        match &self.tune_seeds {
            Some(t) => seeds.iter().copied().filter(|s| t.contains(s)).collect(),
            None => seeds.to_vec(),
        }
    }

    /// The small learning rate, given the chosen η* (if known yet).
    fn small_lr_given(&self, name: &str, eta_star: Option<f64>) -> Result<Option<f64>, RunError> {
        match (self.small_lr, self.small_lr_divisor) {
            (Some(lr), None) => Ok(Some(lr)),
            (None, Some(d)) if d > 0.0 => Ok(eta_star.map(|e| e / d)),
            _ => Err(RunError::Invalid {
                key: format!("profiles.{name}"),
                message: "set exactly one of `small_lr` and `small_lr_divisor` (> 0)".into(),
            }),
        }
    }
}

/// The runs of one row planned so far: a staged profile (`tune_seeds`, `small_lr_divisor`) adds
/// runs as the runs they depend on finish, and `waiting` says what is not planned yet and why.
#[derive(Debug, Clone, Default)]
pub struct RowPlan {
    pub specs: Vec<RunSpec>,
    pub waiting: Vec<String>,
}

/// One run of a sweep.
#[derive(Debug, Clone)]
pub struct RunSpec {
    pub row: String,
    pub column: String,
    /// The tuned hyper-parameter's value (lr for η*, α for penalties, the small lr for the baseline).
    pub hyper: f64,
    pub seed: u64,
    /// Part of the grid search: its validation accuracy takes part in choosing `hyper`.
    pub tuning: bool,
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
        crate::config::load_toml(path)
    }

    pub fn profile(&self, name: &str) -> Result<&Profile, RunError> {
        crate::config::named_profile(&self.profiles, name)
    }

    /// The sweep settings of `row` in `profile`: the profile's, with the row's `sweep` table
    /// merged over them (tables merge key by key, lists and numbers replace).
    pub fn row_profile(&self, profile: &str, row: &RowDef) -> Result<Profile, RunError> {
        let prof = self.profile(profile)?;
        let Some(over) = row.sweep.get(profile) else {
            return Ok(prof.clone());
        };
        let bad = |message: String| RunError::Invalid {
            key: format!("rows.{}.sweep.{profile}", row.key),
            message,
        };
        if let Some(k) = over
            .keys()
            .find(|k| matches!(k.as_str(), "base" | "description"))
        {
            return Err(bad(format!(
                "`{k}` cannot change per row (the run config changes through \
                 rows.{}.overrides.{profile})",
                row.key
            )));
        }
        let mut t = toml::Table::try_from(prof).map_err(|e| bad(e.to_string()))?;
        merge(&mut t, over);
        t.try_into()
            .map_err(|e: toml::de::Error| bad(e.to_string()))
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

    /// Every run of `row` in `profile` that can be planned now, validated, under
    /// `root/<row>/` (see [`Experiment::plan_row`]).
    pub fn expand_row(
        &self,
        profile: &str,
        row: &RowDef,
        root: &Path,
    ) -> Result<Vec<RunSpec>, RunError> {
        Ok(self.plan_row(profile, row, root)?.specs)
    }

    /// The runs of `row` in `profile`, under `root/<row>/`, in three stages: each column's grid
    /// on its tuning seeds (η* over `lr_grid`; α over `alpha_grid` at the small learning rate,
    /// which may wait for η*), then the chosen value on the column's other seeds. A later stage
    /// is planned once the runs it depends on have finished in `root`; without `tune_seeds` and
    /// with a fixed `small_lr` everything is planned at once.
    pub fn plan_row(&self, profile: &str, row: &RowDef, root: &Path) -> Result<RowPlan, RunError> {
        let prof = &self.row_profile(profile, row)?;
        let base = self.row_config(profile, row)?;
        let mut plan = RowPlan::default();
        let mut eta_star = None;
        let large = self.columns.iter().filter(|c| c.lr == "large");
        let small = self.columns.iter().filter(|c| c.lr != "large");
        for col in large.chain(small) {
            let lr = if col.lr == "large" {
                None
            } else {
                match prof.small_lr_given(profile, eta_star)? {
                    Some(lr) => Some(lr),
                    None => {
                        plan.waiting.push(format!(
                            "{}: its learning rate is η*/{}, and η* is not chosen yet",
                            col.label,
                            prof.small_lr_divisor.unwrap_or_default()
                        ));
                        continue;
                    }
                }
            };
            let hypers: Vec<f64> = match (lr, col.penalty.as_str()) {
                (None, _) => prof.lr_grid.clone(),
                (Some(lr), "none") => vec![lr],
                (_, p) => prof.alpha_grid.get(p).cloned().unwrap_or_default(),
            };
            if hypers.is_empty() {
                return Err(RunError::Invalid {
                    key: format!("profiles.{profile}"),
                    message: format!("no hyper-parameter values for column {}", col.key),
                });
            }
            // The lr is in the name of a small-lr run only where it follows η*.
            let name_lr = lr.filter(|_| prof.small_lr_divisor.is_some());
            let spec = |hyper: f64, seed: u64, tuning: bool| {
                let lr = lr.unwrap_or(hyper);
                self.spec(
                    profile,
                    row,
                    col,
                    &base,
                    (lr, name_lr),
                    hyper,
                    seed,
                    tuning,
                    root,
                )
            };
            // A single value needs no tuning: every seed runs at once.
            let tune = if hypers.len() == 1 {
                prof.seeds_of(&col.key).to_vec()
            } else {
                prof.tune_seeds_of(&col.key)
            };
            let mut grid = Vec::new();
            for &hyper in &hypers {
                for &seed in &tune {
                    grid.push(spec(hyper, seed, true)?);
                }
            }
            let extra: Vec<u64> = prof
                .seeds_of(&col.key)
                .iter()
                .copied()
                .filter(|s| !tune.contains(s))
                .collect();
            let results = collect(&grid)?;
            let finished = results.iter().all(|(_, r)| r.is_some());
            let chosen = if finished && (col.lr == "large" || !extra.is_empty()) {
                choose(&results)
            } else {
                None
            };
            plan.specs.extend(grid);
            if col.lr == "large" {
                eta_star = chosen;
            }
            match chosen {
                Some(h) => {
                    for &seed in &extra {
                        plan.specs.push(spec(h, seed, false)?);
                    }
                }
                None if !extra.is_empty() && finished => plan.waiting.push(format!(
                    "{}: seeds {extra:?} not planned: no value of its grid is eligible (each \
                     diverged on a tuning seed or has no validation accuracy)",
                    col.label
                )),
                None if !extra.is_empty() => plan.waiting.push(format!(
                    "{}: seeds {extra:?} wait for its grid to finish",
                    col.label
                )),
                None => {}
            }
        }
        Ok(plan)
    }

    /// One validated run spec.
    #[allow(clippy::too_many_arguments)]
    fn spec(
        &self,
        profile: &str,
        row: &RowDef,
        col: &ColumnDef,
        base: &toml::Table,
        (lr, name_lr): (f64, Option<f64>),
        hyper: f64,
        seed: u64,
        tuning: bool,
        root: &Path,
    ) -> Result<RunSpec, RunError> {
        let mut t = base.clone();
        merge(&mut t, &col.overrides);
        let lr_tag = name_lr.map_or(String::new(), |lr| format!("-lr{}", fmt_hyper(lr)));
        let mut over = toml::Table::new();
        over.insert(
            "name".into(),
            format!("{}-{}-{}{lr_tag}", row.key, col.key, fmt_hyper(hyper)).into(),
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
                message:
                    "`data.val_size` must be > 0: a sweep chooses η* and α on the validation split"
                        .into(),
            });
        }
        let dir = root.join(&row.key).join(format!(
            "{}-{}{lr_tag}-seed{seed}",
            col.key,
            fmt_hyper(hyper)
        ));
        Ok(RunSpec {
            row: row.key.clone(),
            column: col.key.clone(),
            hyper,
            seed,
            tuning,
            config,
            dir,
        })
    }
}

/// A hyper-parameter value for names: `0.05` → `0.05`, `1e-4` → `0.0001`.
pub fn fmt_hyper(v: f64) -> String {
    format!("{v}")
}
