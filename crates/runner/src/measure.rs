//! `breakeven measure`: the curvature of a checkpoint (a run's, or any weights file of a
//! supported architecture) on stated examples, every number with its error or convergence
//! diagnostics and the cost by kind of pass; or of every checkpoint of a run (batch mode).
//!
//! The examples are the first N of the run's seeded measurement permutation of the training
//! split (`setup::prepare`), so the default settings re-measure exactly what training logged,
//! with the same random draws (streams keyed by (seed, step), `track.rs`). The loss and the
//! Hessian quantities use the first `hessian_examples`, the per-example-gradient quantities
//! (Tr(F), λ_K^1, Tr(K)) the first `gradient_examples`; the output lists both index sets.
//! With `--dtype f64` the model is built in f64 and f32 weights and inputs are widened (exact).

pub mod batch;
pub mod estimate;
pub mod output;
pub mod settings;
pub mod weights;

use std::path::{Path, PathBuf};
use std::time::Instant;

use breakeven_models::ModelSpec;
use candle_core::Var;
use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use crate::config::RunConfig;
use crate::device::open_device;
use crate::error::RunError;
use crate::evaluate::evaluate;
use crate::rundir::RunDir;
use crate::setup::{load_data, prepare, EvalSet, Prepared};
use crate::track::CURVATURE_SEED_OFFSET;

use estimate::{Block, Cost, Counter, Covariance, Eigen, FisherEstimate, Trace};
pub use settings::{BnMode, FisherSampling, MeasureArgs, Quantity, Settings, TraceMethod};
use weights::{FileKind, KeyMap};

/// Loss and accuracy in eval mode (BatchNorm running statistics, as training logs them).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct LossValue {
    pub value: f64,
    pub accuracy: f64,
}

/// One set of examples and what used it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ExampleSet {
    pub count: usize,
    /// The quantities computed on these examples.
    pub used_by: Vec<&'static str>,
    /// Indices into the data set's training split, in order.
    pub indices: Vec<usize>,
}

/// Which examples each quantity used.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Examples {
    /// How they were chosen.
    pub selection: String,
    pub hessian: ExampleSet,
    pub gradient: ExampleSet,
}

/// The SLQ density: where it was written and its diagnostics.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Density {
    pub csv: String,
    pub png: String,
    pub probes: usize,
    pub lanczos_steps: usize,
    /// Width of the Gaussian kernel.
    pub sigma: f64,
    /// Trapezoid integral of the density (≈ 1).
    pub integral: f64,
    pub matvecs: usize,
}

/// Cost of one measurement.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Costs {
    #[serde(flatten)]
    pub passes: Cost,
    /// Wall time of the estimators (model and data set-up excluded), seconds.
    pub wall_s: f64,
}

/// Everything `measure` reports about one checkpoint.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Measurement {
    pub checkpoint: String,
    /// `run checkpoint` or `weights file`.
    pub kind: String,
    /// Training step of a run checkpoint.
    pub step: Option<u64>,
    pub model: ModelSpec,
    pub data: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub loss: Option<LossValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lambda_h: Option<Eigen>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trace_h: Option<Trace>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trace_f: Option<FisherEstimate>,
    /// λ_K^1 and Tr(K) (both come from the same per-example gradients).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub k: Option<Covariance>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub density: Option<Density>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub per_layer: Option<Vec<Block>>,
    pub cost: Costs,
    /// File key → model key, for every key loaded under another name.
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub key_map: std::collections::BTreeMap<String, String>,
    /// What the user should know (ignored optimizer tensors, widened dtypes, pairings).
    pub notes: Vec<String>,
    pub settings: Settings,
    /// Last: the index lists are long.
    pub examples: Examples,
}

/// A model and its measurement examples, prepared once for one or many checkpoints.
pub struct Session {
    pub config: RunConfig,
    pub settings: Settings,
    prepared: Prepared,
    key_map: KeyMap,
    out_dir: PathBuf,
}

/// Sets `path` (dotted) of a config to `value` through its TOML form, so that overrides go by
/// key names only.
fn set_key(config: &RunConfig, path: &str, value: toml::Value) -> Result<RunConfig, RunError> {
    let mut v = toml::Value::try_from(config).map_err(|e| RunError::Other(e.to_string()))?;
    let mut node = &mut v;
    let keys: Vec<&str> = path.split('.').collect();
    for k in &keys[..keys.len() - 1] {
        node = node
            .get_mut(*k)
            .ok_or_else(|| RunError::Other(format!("config has no `{k}` table")))?;
    }
    let table = node
        .as_table_mut()
        .ok_or_else(|| RunError::Other(format!("config `{path}`: not in a table")))?;
    table.insert(keys[keys.len() - 1].to_string(), value);
    v.try_into().map_err(|e: toml::de::Error| RunError::Config {
        origin: format!("measure override of `{path}`"),
        message: e.to_string(),
    })
}

/// The run config of a bare weights file from `--arch`, its `--model-option`s and `--data`.
fn config_from_arch(
    arch: &str,
    options: &[String],
    data: Option<&str>,
) -> Result<RunConfig, RunError> {
    let data = data.ok_or_else(|| RunError::Invalid {
        key: "--data".into(),
        message: format!("--arch {arch} needs the data set the model takes (e.g. --data cifar10)"),
    })?;
    let mut model = format!("arch = {}\n", toml::Value::String(arch.into()));
    for o in options {
        let (k, v) = o.split_once('=').ok_or_else(|| RunError::Invalid {
            key: "--model-option".into(),
            message: format!("`{o}` is not KEY=VALUE (e.g. width_mult=0.5, widths=[200,200])"),
        })?;
        model.push_str(&format!("{} = {}\n", k.trim(), v.trim()));
    }
    let text = format!(
        "name = \"measure\"\n[data]\nname = {}\nbatch_size = 128\n[model]\n{model}[optim]\nlr = 0.1\n[stop]\nmax_epochs = 1\n",
        toml::Value::String(data.into())
    );
    RunConfig::from_toml(&text, &format!("--arch {arch} {}", options.join(" ")))
}

/// The run config that describes `checkpoint`: `--config`, `--arch`, or the run's own.
fn base_config(
    args: &MeasureArgs,
    checkpoint: &Path,
    kind: &FileKind,
) -> Result<RunConfig, RunError> {
    if let Some(path) = &args.config {
        return RunConfig::load(path);
    }
    if let Some(arch) = &args.arch {
        return config_from_arch(arch, &args.model_options, args.data.as_deref());
    }
    let how = "pass --arch NAME --data NAME (with --model-option KEY=VALUE for its width/depth; \
               --rename FROM=TO or --map-by-shape if the names differ), or --config RUN.toml";
    if !kind.is_run_checkpoint() {
        return Err(RunError::Checkpoint {
            path: checkpoint.into(),
            message: format!(
                "a bare weights file (e.g. a PyTorch state_dict; no run state inside) says \
                 nothing of its model or data: {how}"
            ),
        });
    }
    let run_root = checkpoint
        .parent()
        .and_then(Path::parent)
        .filter(|r| crate::rundir::is_run_dir(r))
        .ok_or_else(|| RunError::Checkpoint {
            path: checkpoint.into(),
            message: format!(
                "a run checkpoint outside its run directory (<run>/checkpoints/): {how}"
            ),
        })?;
    RunDir::new(run_root).load_config()
}

impl Session {
    /// Prepares the model and the measurement examples for checkpoints described like
    /// `checkpoint` (its kind and run decide the config when `args` do not).
    pub fn new(
        args: &MeasureArgs,
        checkpoint: &Path,
        data_dir: Option<&Path>,
    ) -> Result<Self, RunError> {
        crate::train::enable_second_order()?;
        let kind = weights::inspect(checkpoint)?;
        let mut config = base_config(args, checkpoint, &kind)?;
        let settings =
            Settings::resolve(args, &config.tracking, config.dtype.as_str(), config.seed)?;
        if let Some(name) = &args.data {
            config = set_key(&config, "data.name", toml::Value::String(name.clone()))?;
        }
        if let Some(device) = &args.device {
            config = set_key(&config, "device", toml::Value::String(device.clone()))?;
        }
        config = set_key(
            &config,
            "dtype",
            toml::Value::String(settings.dtype.clone()),
        )?;
        // The measurement subset is a prefix of one seeded permutation: any size gives the
        // same first examples.
        config = set_key(
            &config,
            "tracking.measure_subset",
            toml::Value::Integer(settings.examples_needed() as i64),
        )?;
        config.validate()?;
        let data = load_data(&config, data_dir)?;
        let prepared = prepare(&config, data, open_device(config.device)?)?;
        let key_map = KeyMap {
            rename: match &args.rename {
                Some(r) => KeyMap::parse_rename(r)?,
                None => vec![],
            },
            by_shape: args.map_by_shape,
        };
        Ok(Self {
            config,
            settings,
            prepared,
            key_map,
            out_dir: args.out_dir.clone().unwrap_or_else(|| PathBuf::from(".")),
        })
    }

    /// The model (with the weights last measured) and the measurement examples.
    pub fn prepared(&self) -> &Prepared {
        &self.prepared
    }

    /// Loads `checkpoint` into the model and measures it.
    pub fn measure(&mut self, checkpoint: &Path) -> Result<Measurement, RunError> {
        let kind = weights::inspect(checkpoint)?;
        let load = weights::load_weights(self.prepared.model.as_ref(), checkpoint, &self.key_map)?;
        let s = self.settings.clone();
        let p = &self.prepared;
        let model = p.model.as_ref();
        let h_n = s.hessian_examples.min(p.measure.len);
        let g_n = s.gradient_examples.min(p.measure.len);
        let mut notes = load.notes;
        if h_n < s.hessian_examples || g_n < s.gradient_examples {
            notes.push(format!(
                "the training split has only {} examples: fewer than asked are used",
                p.measure.len
            ));
        }
        let h_set = prefix(&p.measure, h_n)?;
        let g_set = prefix(&p.measure, g_n)?;
        let vars: Vec<Var> = model.params().iter().map(|q| q.var.clone()).collect();

        // The streams of training-time tracking (`track::measure_curvature`), then ours.
        let mut rng = ChaCha8Rng::seed_from_u64(s.seed ^ CURVATURE_SEED_OFFSET);
        rng.set_stream(kind.step.unwrap_or(0));
        let (lanczos_seed, hutch_seed, fisher_seed) =
            (rng.next_u64(), rng.next_u64(), rng.next_u64());
        let (slq_seed, layer_seed) = (rng.next_u64(), rng.next_u64());

        let t0 = Instant::now();
        let counter = Counter::new(s.bn == BnMode::Eval);
        let mut cost = Cost::default();
        let loss = if s.wants(Quantity::Loss) {
            let (value, accuracy) = evaluate(model, &h_set)?;
            cost.forward_passes += h_set.batches.len() as u64;
            Some(LossValue { value, accuracy })
        } else {
            None
        };
        let (mut lambda_h, mut trace_h, mut density) = (None, None, None);
        if s.wants(Quantity::LambdaH) || s.wants(Quantity::TraceH) || s.slq {
            let mut op = estimate::hessian_op(model, vars.clone(), &h_set, &counter)?;
            if s.wants(Quantity::LambdaH) {
                let e = estimate::top_eigen(&mut op, s.top_k, &s, lanczos_seed)?;
                cost.hvp += e.matvecs as u64;
                lambda_h = Some(e);
            }
            if s.wants(Quantity::TraceH) {
                let t = estimate::trace(&mut op, &s.trace, hutch_seed)?;
                cost.hvp += t.matvecs as u64;
                trace_h = Some(t);
            }
            if s.slq {
                let d = estimate::density(&mut op, &s, slq_seed)?;
                cost.hvp += d.matvecs as u64;
                density = Some(output::write_density(&d, &s, &self.out_dir, checkpoint)?);
            }
        }
        let trace_f = if s.wants(Quantity::TraceF) {
            Some(estimate::fisher(
                model,
                &vars,
                &g_set,
                s.fisher,
                fisher_seed,
                &counter,
                &mut cost,
            )?)
        } else {
            None
        };
        let k = if s.wants(Quantity::LambdaK) || s.wants(Quantity::TraceK) {
            Some(estimate::covariance(
                model, &vars, &g_set, &counter, &mut cost, s.k_star,
            )?)
        } else {
            None
        };
        let per_layer = if s.per_layer {
            Some(estimate::per_layer(
                model, &h_set, &s, layer_seed, &counter, &mut cost,
            )?)
        } else {
            None
        };
        cost.forward_passes += counter.forwards();
        let wall_s = t0.elapsed().as_secs_f64();

        let used = |qs: &[(Quantity, &'static str)], extra: &[(bool, &'static str)]| {
            qs.iter()
                .filter(|(q, _)| s.wants(*q))
                .map(|(_, n)| *n)
                .chain(extra.iter().filter(|(on, _)| *on).map(|(_, n)| *n))
                .collect::<Vec<_>>()
        };
        let examples = Examples {
            selection: format!(
                "the first N of the seeded measurement permutation of the {} training split \
                 (run seed {}); indices into that split",
                self.config.data.name, self.config.seed
            ),
            hessian: ExampleSet {
                count: h_n,
                used_by: used(
                    &[
                        (Quantity::Loss, "loss"),
                        (Quantity::LambdaH, "lambda_h"),
                        (Quantity::TraceH, "trace_h"),
                    ],
                    &[(s.slq, "density"), (s.per_layer, "per_layer")],
                ),
                indices: p.measure_idx[..h_n].to_vec(),
            },
            gradient: ExampleSet {
                count: g_n,
                used_by: used(
                    &[
                        (Quantity::TraceF, "trace_f"),
                        (Quantity::LambdaK, "lambda_k"),
                        (Quantity::TraceK, "trace_k"),
                    ],
                    &[],
                ),
                indices: p.measure_idx[..g_n].to_vec(),
            },
        };
        Ok(Measurement {
            checkpoint: checkpoint.display().to_string(),
            kind: if kind.is_run_checkpoint() {
                "run checkpoint"
            } else {
                "weights file"
            }
            .into(),
            step: kind.step,
            model: self.config.model.clone(),
            data: self.config.data.name.to_string(),
            settings: s,
            examples,
            loss,
            lambda_h,
            trace_h,
            trace_f,
            k,
            density,
            per_layer,
            cost: Costs {
                passes: cost,
                wall_s,
            },
            key_map: load.key_map,
            notes,
        })
    }
}

/// The first `n` examples of a set, in its batches (the last one cut short).
fn prefix(set: &EvalSet, n: usize) -> Result<EvalSet, RunError> {
    let mut batches = Vec::new();
    let mut left = n;
    for (x, y) in &set.batches {
        if left == 0 {
            break;
        }
        let b = y.dim(0)?;
        if b <= left {
            batches.push((x.clone(), y.clone()));
            left -= b;
        } else {
            batches.push((x.narrow(0, 0, left)?, y.narrow(0, 0, left)?));
            left = 0;
        }
    }
    Ok(EvalSet {
        batches,
        len: n - left,
    })
}

/// Measures one checkpoint file (see [`Session`]).
pub fn measure_checkpoint(
    args: &MeasureArgs,
    data_dir: Option<&Path>,
) -> Result<Measurement, RunError> {
    Session::new(args, &args.checkpoint, data_dir)?.measure(&args.checkpoint)
}
