//! The loss-change-allocation run (Lan et al., "LCA: Loss Change Allocation for Neural Network
//! Training", NeurIPS 2019; issue 9): plain SGD steps through the runner's setup and, at logged
//! steps, the LCA of the step's change of the loss on the fixed measurement subset (Simpson's
//! rule, shared endpoints reused), one JSON line per logged step in `<dir>/lca.jsonl`.
//!
//! The measurement subset is the run's seeded `tracking.measure_subset` draw of the training set
//! (the same for every step, so ΔL is a change of ONE function of θ). The training trajectory is
//! the one `train` would follow: same loader, same step generator, same optimizer. The
//! experiment as data (`experiments/lca.toml`: a large and a small learning rate over one base
//! config) is planned here too (`LcaExperiment`); its page is `breakeven_report::lca`.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use breakeven_curvature::{
    loss_change_allocation_batched, BatchedLoss, LcaConfig, LcaResult, LcaRule, LcaTrajectory,
    Reduction,
};
use breakeven_models::{cross_entropy, Mode, Model};
use candle_core::{Tensor, Var};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::config::RunConfig;
use crate::device::open_device;
use crate::error::RunError;
use crate::objective::step_objective;
use crate::rundir::RunDir;
use crate::setup::{load_data, prepare, STEP_SEED_OFFSET};

/// Which steps get an allocation: every step up to `dense_steps`, then every `every`-th; and
/// how accurately.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LcaSchedule {
    /// Allocate every one of the first K steps (consecutive steps share their endpoint
    /// gradient, so they cost 2 gradient passes each instead of 3).
    pub dense_steps: u64,
    /// Afterwards allocate steps whose 1-based index is a multiple of this (≥ 1).
    pub every: u64,
    /// The path integral's tolerance: a step whose |Σ A_i − ΔL| exceeds `tol`·|ΔL| (and
    /// [`ABS_FLOOR`]) is integrated again with composite Simpson on 2, 4, … panels, up to
    /// `max_panels`; a step still outside is recorded as not within tolerance. Absent: Simpson
    /// alone (the paper's rule), unchecked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tol: Option<f64>,
    /// The most Simpson panels a refined step may use (1: no refinement).
    #[serde(default = "one_panel")]
    pub max_panels: usize,
}

fn one_panel() -> usize {
    1
}

/// Integration errors at or below this many loss units count as within tolerance whatever ΔL
/// is (a step that barely changes the loss has no meaningful relative error; f32 losses
/// averaged over a few thousand images carry rounding of about this size).
pub const ABS_FLOOR: f64 = 1e-6;

/// Whether an allocation's integration error is within `tol`.
fn within(r: &LcaResult, tol: f64) -> bool {
    r.integration_error.abs() <= (tol * r.true_delta.abs()).max(ABS_FLOOR)
}

impl LcaSchedule {
    /// Whether the step that ends with `step` steps taken (1-based) is allocated.
    pub fn logs(&self, step: u64) -> bool {
        step <= self.dense_steps || step.is_multiple_of(self.every.max(1))
    }
}

/// The allocation total and sign counts of one parameter tensor (one layer's weight or bias).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LayerAllocation {
    pub name: String,
    /// Σ A_i over the tensor (negative: the tensor lowered the loss).
    pub total: f64,
    pub helped: usize,
    pub hurt: usize,
    pub zero: usize,
}

/// One logged step θ_{t−1} → θ_t of an LCA run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LcaRecord {
    /// Steps taken after this one (1-based index of the allocated step).
    pub step: u64,
    pub lr: f64,
    /// Mini-batch loss of the step (before it).
    pub batch_loss: f64,
    /// L(θ_{t−1}) and L(θ_t), mean over the measurement subset.
    pub loss_before: f64,
    pub loss_after: f64,
    /// The true ΔL = loss_after − loss_before.
    pub true_delta: f64,
    /// Σ_i A_i (Simpson).
    pub allocated: f64,
    /// allocated − true_delta.
    pub integration_error: f64,
    /// |integration_error| / |true_delta|.
    pub relative_error: f64,
    /// Simpson panels of the rule that gave this allocation (1: the paper's Simpson).
    #[serde(default = "one_panel")]
    pub panels: usize,
    /// With `lca.tol`: whether the integration error is within it (steps that are not are
    /// left out of the per-tensor table).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub within_tol: Option<bool>,
    pub num_params: usize,
    pub fraction_helped: f64,
    pub fraction_hurt: f64,
    pub fraction_zero: f64,
    /// hurt / (helped + hurt): the paper's "about half the parameters hurt".
    pub hurt_among_nonzero: f64,
    /// Per parameter tensor, in the model's order.
    pub layers: Vec<LayerAllocation>,
    /// Forward+backward passes over the measurement subset spent on this step.
    pub gradient_evaluations: usize,
    /// Endpoint gradients reused from the previous step.
    pub reused_gradients: usize,
    /// Forward-only passes.
    pub loss_evaluations: usize,
    /// Examples in the measurement subset (one gradient evaluation = this many examples).
    pub measure_examples: usize,
    /// Wall time of the allocation and of the SGD step (seconds; not bit-reproducible).
    pub lca_wall_s: f64,
    pub step_wall_s: f64,
}

impl LcaRecord {
    fn new(step: u64, lr: f64, batch_loss: f64, r: &LcaResult, measure_examples: usize) -> Self {
        let nonzero = (r.helped + r.hurt).max(1) as f64;
        Self {
            step,
            lr,
            batch_loss,
            loss_before: r.loss_before,
            loss_after: r.loss_after,
            true_delta: r.true_delta,
            allocated: r.allocated,
            integration_error: r.integration_error,
            relative_error: r.relative_error,
            panels: 1,
            within_tol: None,
            num_params: r.num_params(),
            fraction_helped: r.fraction_helped(),
            fraction_hurt: r.fraction_hurt(),
            fraction_zero: r.fraction_zero(),
            hurt_among_nonzero: r.hurt as f64 / nonzero,
            layers: r
                .tensors
                .iter()
                .map(|t| LayerAllocation {
                    name: t.name.clone(),
                    total: t.total,
                    helped: t.helped,
                    hurt: t.hurt,
                    zero: t.zero,
                })
                .collect(),
            gradient_evaluations: r.cost.gradient_evaluations,
            reused_gradients: r.cost.reused_gradients,
            loss_evaluations: r.cost.loss_evaluations,
            measure_examples,
            lca_wall_s: 0.0,
            step_wall_s: 0.0,
        }
    }
}

/// `<dir>/lca.jsonl`.
pub fn lca_path(dir: &Path) -> PathBuf {
    dir.join("lca.jsonl")
}

/// Reads an `lca.jsonl`.
pub fn read_lca(path: &Path) -> Result<Vec<LcaRecord>, RunError> {
    let text = std::fs::read_to_string(path).map_err(|e| RunError::io(path, e))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l).map_err(|e| RunError::RunDir {
                path: path.to_path_buf(),
                message: format!("line {}: {e}", i + 1),
            })
        })
        .collect()
}

/// Trains `config` (no penalty allowed: LCA of plain SGD) for `stop.max_steps` (capped by
/// `stop.max_epochs`) steps and allocates the steps `schedule` selects. Writes the resolved
/// config and `lca.jsonl` into `dir` and returns the records. A directory whose `lca.jsonl`
/// is complete (a `lca.done` marker) is read back instead of re-run.
pub fn run_lca(
    config: &RunConfig,
    schedule: &LcaSchedule,
    dir: &Path,
    data_dir: Option<&Path>,
) -> Result<Vec<LcaRecord>, RunError> {
    config.validate()?;
    if let Some(kind) = config.penalty.kind {
        return Err(RunError::Invalid {
            key: "penalty.kind".into(),
            message: format!(
                "LCA runs use plain SGD, got `{}`",
                crate::config::penalty_name(Some(kind))
            ),
        });
    }
    if schedule.every == 0 {
        return Err(RunError::Invalid {
            key: "lca.every".into(),
            message: "must be at least 1".into(),
        });
    }
    if schedule.max_panels == 0 {
        return Err(RunError::Invalid {
            key: "lca.max_panels".into(),
            message: "must be at least 1".into(),
        });
    }
    if let Some(tol) = schedule.tol.filter(|t| t.is_nan() || *t <= 0.0) {
        return Err(RunError::Invalid {
            key: "lca.tol".into(),
            message: format!("must be positive, got {tol}"),
        });
    }
    let done = dir.join("lca.done");
    let run_dir = RunDir::new(dir);
    if done.exists() && run_dir.load_config().is_ok_and(|c| c == *config) {
        tracing::info!(run = %dir.display(), "LCA run already finished");
        return read_lca(&lca_path(dir));
    }
    let data = load_data(config, data_dir)?;
    let _ = std::fs::remove_file(&done);
    // The resolved config as given (provenance-free, so a finished run is recognised above).
    std::fs::create_dir_all(dir).map_err(|e| RunError::io(dir, e))?;
    crate::atomic::write_atomic(&run_dir.config_path(), config.to_toml()?.as_bytes())?;
    let mut p = prepare(config, data, open_device(config.device)?)?;
    let mut rng = ChaCha8Rng::seed_from_u64(config.seed ^ STEP_SEED_OFFSET);
    let vars: Vec<Var> = p.model.params().iter().map(|q| q.var.clone()).collect();
    let names: Vec<String> = p.model.params().iter().map(|q| q.name.clone()).collect();
    let mut trajectory = LcaTrajectory::new(LcaConfig {
        rule: LcaRule::Simpson,
        names: names.clone(),
    });
    let max_steps = config
        .stop
        .max_steps
        .unwrap_or(u64::MAX)
        .min(config.stop.max_epochs as u64 * p.steps_per_epoch);
    let path = lca_path(dir);
    let mut out = std::fs::File::create(&path).map_err(|e| RunError::io(&path, e))?;
    let mut records = Vec::new();
    for step in 0..max_steps {
        let t0 = Instant::now();
        let batch = p.loader.next_batch(&p.device)?;
        let x = batch.images.to_dtype(p.dtype)?;
        let model: &dyn Model = p.model.as_ref();
        let obj = step_objective(model, &x, &batch.labels, &config.penalty, step, &mut rng)?;
        if !obj.loss.is_finite() {
            return Err(RunError::Other(format!(
                "LCA run diverged at step {step} (loss {})",
                obj.loss
            )));
        }
        let allocate = schedule.logs(step + 1);
        let theta0: Option<Vec<Tensor>> = if allocate {
            Some(
                vars.iter()
                    .map(|v| v.as_tensor().copy())
                    .collect::<candle_core::Result<_>>()?,
            )
        } else {
            None
        };
        let lr = p.sgd.current_lr();
        p.sgd.step(&vars, &obj.grads)?;
        let step_wall_s = t0.elapsed().as_secs_f64();
        let Some(theta0) = theta0 else { continue };
        let theta1: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
        let set = &p.measure;
        let model: &dyn Model = p.model.as_ref();
        // BatchStats: the statistics a training step sees, running statistics untouched, so
        // every pass over the subset is the same function of θ (TESTING.md §4).
        let mut loss = BatchedLoss::new(set.batches.len(), Reduction::Mean, |b| {
            let (x, y) = &set.batches[b];
            Ok((
                cross_entropy(&model.forward(x, Mode::BatchStats)?, y)?,
                y.dim(0)?,
            ))
        });
        let t1 = Instant::now();
        let lca_error = |e| RunError::Other(format!("LCA of step {}: {e}", step + 1));
        let mut result = trajectory
            .step(&vars, &theta0, &theta1, &mut loss)
            .map_err(lca_error)?;
        // Refine a step whose integral misses ΔL: composite Simpson on 2, 4, … panels.
        let (mut panels, mut spent) = (1, result.cost.gradient_evaluations);
        if let Some(tol) = schedule.tol {
            while !within(&result, tol) && panels < schedule.max_panels {
                panels = (2 * panels).min(schedule.max_panels);
                let config = LcaConfig {
                    rule: LcaRule::CompositeSimpson { panels },
                    names: names.clone(),
                };
                result =
                    loss_change_allocation_batched(&vars, &theta0, &theta1, &mut loss, &config)
                        .map_err(lca_error)?;
                spent += result.cost.gradient_evaluations;
            }
        }
        let mut record = LcaRecord::new(step + 1, lr, obj.loss, &result, set.len);
        record.panels = panels;
        record.gradient_evaluations = spent;
        record.within_tol = schedule.tol.map(|tol| within(&result, tol));
        record.lca_wall_s = t1.elapsed().as_secs_f64();
        record.step_wall_s = step_wall_s;
        let line = serde_json::to_string(&record).map_err(|e| RunError::Other(e.to_string()))?;
        writeln!(out, "{line}").map_err(|e| RunError::io(&path, e))?;
        tracing::debug!(
            step = record.step,
            hurt = record.hurt_among_nonzero,
            error = record.relative_error,
            "allocated"
        );
        records.push(record);
    }
    out.flush().map_err(|e| RunError::io(&path, e))?;
    crate::atomic::write_atomic(&done, b"finished\n")?;
    Ok(records)
}

/// `experiments/lca.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LcaExperiment {
    pub name: String,
    pub title: String,
    pub source: String,
    pub profiles: BTreeMap<String, LcaProfile>,
}

/// One scale of the experiment: the two learning rates, the allocation schedule, the base run.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LcaProfile {
    pub description: String,
    pub large_lr: f64,
    pub small_lr: f64,
    pub lca: LcaSchedule,
    /// A `RunConfig` without `optim.lr` and `name` (filled in per learning rate).
    pub base: toml::Table,
}

impl LcaExperiment {
    /// Reads and parses the definition; `path` names the file in errors.
    pub fn load(path: &Path) -> Result<Self, RunError> {
        crate::config::load_toml(path)
    }

    /// The named profile, or an error listing the defined ones.
    pub fn profile(&self, name: &str) -> Result<&LcaProfile, RunError> {
        self.profiles.get(name).ok_or_else(|| RunError::Invalid {
            key: "profile".into(),
            message: format!(
                "`{name}` is not defined; profiles: {}",
                self.profiles.keys().cloned().collect::<Vec<_>>().join(", ")
            ),
        })
    }
}

impl LcaProfile {
    /// The two runs: `("large", config)` and `("small", config)`, validated.
    pub fn runs(
        &self,
        stem: &str,
        device: Option<&str>,
    ) -> Result<Vec<(String, RunConfig)>, RunError> {
        [("large", self.large_lr), ("small", self.small_lr)]
            .into_iter()
            .map(|(label, lr)| {
                let mut t = self.base.clone();
                t.insert("name".into(), format!("{stem}-{label}-lr{lr}").into());
                if let Some(d) = device {
                    t.insert("device".into(), d.into());
                }
                let optim = t
                    .entry("optim")
                    .or_insert_with(|| toml::Table::new().into());
                if let Some(o) = optim.as_table_mut() {
                    o.insert("lr".into(), lr.into());
                }
                let config: RunConfig =
                    toml::Value::Table(t)
                        .try_into()
                        .map_err(|e: toml::de::Error| RunError::Config {
                            origin: format!("{stem} profile base"),
                            message: e.to_string(),
                        })?;
                config.validate()?;
                Ok((label.to_string(), config))
            })
            .collect()
    }
}

#[cfg(test)]
#[path = "lca_tests.rs"]
mod tests;
