//! Full-batch gradient descent (no momentum) on a fixed subset, with λ_H^1 of the full-batch
//! loss by Lanczos every few steps: the edge-of-stability protocol of Cohen et al. 2021
//! (SCIENCE.md §5.5). The gradient and every Hessian-vector product are of the MEAN loss over
//! the whole subset, accumulated over batches weighted by size / n (a memory bound, not SGD).

use std::path::Path;
use std::sync::Arc;

use breakeven_curvature::{
    lanczos, loss_and_gradient, params_to_vec, vec_to_tensors, BatchedLoss, HessianOperator,
    LanczosConfig, Reduction,
};
use breakeven_data::{balanced_subset, Dataset, Loader, LoaderConfig, Normalization};
use breakeven_models::{build, correct_count, cross_entropy, Mode, Model, ModelSpec};
use candle_core::{DType, Device, Tensor, Var};
use serde::{Deserialize, Serialize};

use crate::checkpoint::Checkpoint;
use crate::error::RunError;

/// The training loss of a full-batch run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FullBatchLoss {
    /// `0.5 ‖f − onehot‖²` summed over classes, averaged over examples (Cohen et al.).
    Mse,
    /// Softmax cross-entropy.
    Ce,
}

/// One full-batch run.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FullBatchSpec {
    /// `cifar10` (or any data set the data crate loads); the first `n` training images.
    pub data: String,
    pub n: usize,
    /// Examples per batch of the gradient / HVP accumulation (memory only; the result is the
    /// full-batch quantity).
    pub batch: usize,
    pub model: ModelSpec,
    pub loss: FullBatchLoss,
    pub lr: f64,
    pub steps: u64,
    /// λ_H^1 every this many steps (and at step 0 and the last step).
    pub measure_every: u64,
    /// Lanczos iterations per measurement (warm-started from the previous eigenvector).
    pub lanczos_iters: usize,
    /// Stop once the training accuracy reaches this (Cohen et al. stop at 99%: with
    /// cross-entropy λ_H^1 falls as the margins grow after the data are fitted).
    #[serde(default)]
    pub stop_acc: Option<f64>,
    pub seed: u64,
    /// `f32` or `f64`.
    pub dtype: String,
    pub device: String,
}

/// One logged point: the loss before step `step` is taken, and λ_H^1 there when measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FullBatchPoint {
    pub step: u64,
    pub loss: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accuracy: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lambda_h1: Option<f64>,
}

/// The subset, pre-batched on the device: images, labels and one-hot targets.
pub struct FullBatchData {
    pub batches: Vec<(Tensor, Tensor, Tensor)>,
    pub n: usize,
    pub input: (usize, usize, usize),
    pub num_classes: usize,
}

/// `0.5 Σ_c (f_c − y_c)²`, averaged over the rows of `logits` (N × C); `onehot` has the same shape.
pub fn mse_onehot(logits: &Tensor, onehot: &Tensor) -> candle_core::Result<Tensor> {
    (logits - onehot)?.sqr()?.sum(1)?.mean_all()? * 0.5
}

/// One-hot rows (N × classes) of `labels` (u32, N) in `dtype`.
pub fn one_hot(labels: &Tensor, classes: usize, dtype: DType) -> candle_core::Result<Tensor> {
    let ys = labels.to_vec1::<u32>()?;
    let mut data = vec![0f64; ys.len() * classes];
    for (i, &y) in ys.iter().enumerate() {
        if (y as usize) < classes {
            data[i * classes + y as usize] = 1.0;
        } else {
            candle_core::bail!("label {y} of example {i} is not below {classes} classes");
        }
    }
    Tensor::from_vec(data, (ys.len(), classes), labels.device())?.to_dtype(dtype)
}

/// A class-balanced draw (seed 0, the same for every run) of `n` distinct training images of
/// `train` (repeated records skipped, see [`crate::setup::training_pool`]), normalized with their
/// own channel statistics.
pub fn subset_data(
    train: Dataset,
    n: usize,
    batch: usize,
    dtype: DType,
    device: &Device,
) -> Result<FullBatchData, RunError> {
    let all = crate::setup::training_pool(&train, None, true);
    let idx = balanced_subset(&train.labels, train.num_classes, &all, n, 0).map_err(|e| {
        RunError::Invalid {
            key: "n".into(),
            message: e.to_string(),
        }
    })?;
    let norm = Normalization::from_dataset(&train, Some(&idx))?;
    let (input, num_classes) = (
        (train.channels, train.height, train.width),
        train.num_classes,
    );
    let cfg = LoaderConfig {
        batch_size: batch.max(1),
        shuffle: false,
        drop_last: false,
        augment: None,
        normalization: norm,
        mixup: None,
        seed: 0,
    };
    let mut loader = Loader::new(Arc::new(train), idx, cfg)?;
    let mut batches = Vec::new();
    for _ in 0..loader.batches_per_epoch() {
        let b = loader.next_batch(device)?;
        let onehot = one_hot(&b.labels, num_classes, dtype)?;
        batches.push((b.images.to_dtype(dtype)?, b.labels, onehot));
    }
    Ok(FullBatchData {
        batches,
        n,
        input,
        num_classes,
    })
}

/// The mean loss of one batch (eval mode: full-batch GD has no BatchNorm batch effects).
pub fn batch_loss(
    model: &dyn Model,
    kind: FullBatchLoss,
    batch: &(Tensor, Tensor, Tensor),
) -> candle_core::Result<Tensor> {
    let logits = model.forward(&batch.0, Mode::Eval)?;
    match kind {
        FullBatchLoss::Mse => mse_onehot(&logits, &batch.2),
        FullBatchLoss::Ce => cross_entropy(&logits, &batch.1),
    }
}

/// Mean loss and gradient over the whole subset (batches weighted by size / n).
pub fn full_gradient(
    model: &dyn Model,
    kind: FullBatchLoss,
    data: &FullBatchData,
) -> Result<(f64, Vec<f64>), RunError> {
    let vars: Vec<Var> = model.params().iter().map(|p| p.var.clone()).collect();
    let mut loss = BatchedLoss::new(data.batches.len(), Reduction::Mean, |b| {
        let batch = &data.batches[b];
        Ok((batch_loss(model, kind, batch)?, batch.1.dim(0)?))
    });
    Ok(loss_and_gradient(&mut loss, &vars)?)
}

/// One GD step `θ ← θ − η g` on `model`'s parameters.
pub fn gd_step(model: &dyn Model, grad: &[f64], lr: f64) -> Result<(), RunError> {
    let vars: Vec<Var> = model.params().iter().map(|p| p.var.clone()).collect();
    let mut theta = params_to_vec(&vars)?;
    for (t, g) in theta.iter_mut().zip(grad) {
        *t -= lr * g;
    }
    for (v, t) in vars.iter().zip(vec_to_tensors(&theta, &vars)?) {
        v.set(&t)?;
    }
    Ok(())
}

/// λ_H^1 of the full-batch loss (Lanczos, warm-started from `warm`); returns it and its vector.
pub fn top_hessian_eigen(
    model: &dyn Model,
    kind: FullBatchLoss,
    data: &FullBatchData,
    iters: usize,
    warm: Option<Vec<f64>>,
    seed: u64,
) -> Result<(f64, Vec<f64>), RunError> {
    let vars: Vec<Var> = model.params().iter().map(|p| p.var.clone()).collect();
    let loss = BatchedLoss::new(data.batches.len(), Reduction::Mean, |b| {
        let batch = &data.batches[b];
        Ok((batch_loss(model, kind, batch)?, batch.1.dim(0)?))
    });
    let mut op = HessianOperator::new(vars, loss)?;
    let cfg = LanczosConfig {
        k: 1,
        max_iter: iters,
        tol: 1e-4,
        warm_start: warm,
        compute_residuals: false,
        ..Default::default()
    };
    let mut eig = lanczos(&mut op, &cfg, seed)?;
    Ok((eig.eigenvalues[0], eig.eigenvectors.swap_remove(0)))
}

/// Accuracy over the subset.
fn accuracy(model: &dyn Model, data: &FullBatchData) -> Result<f64, RunError> {
    let mut correct = 0;
    for (x, y, _) in &data.batches {
        correct += correct_count(&model.forward(x, Mode::Eval)?, y)?;
    }
    Ok(correct as f64 / data.n.max(1) as f64)
}

/// Where a full-batch run keeps its resumable state, and a test hook.
#[derive(Debug, Default, Clone, Copy)]
pub struct FullBatchResume<'a> {
    /// A safetensors file (`partial.safetensors` in the run's folder) written atomically after
    /// every measured step: the parameters (and any buffers) under their `state_dict` names,
    /// Lanczos' warm-start vector (`lanczos.warm`, f64) and, as metadata, the spec, the next
    /// step, the points so far and the wall time so far. At the start a file whose spec equals
    /// this run's is resumed from; one with another spec is ignored (and overwritten at the
    /// first measurement).
    pub checkpoint: Option<&'a Path>,
    /// Test hook: return right after the checkpoint of this step, as a kill would leave it.
    pub stop_after_step: Option<u64>,
}

/// What [`run_full_batch_resumable`] did.
#[derive(Debug, Clone, PartialEq)]
pub struct FullBatchOutcome {
    /// Every logged point of the run, those before a resume included.
    pub points: Vec<FullBatchPoint>,
    /// The step it resumed at (`None`: it started at step 0).
    pub resumed_at: Option<u64>,
    /// Wall time of the earlier sessions (0 without a resume), as their checkpoint recorded it.
    pub earlier_wall_s: f64,
    /// False when `stop_after_step` stopped it.
    pub finished: bool,
}

/// The resumable state stored in a checkpoint's metadata.
#[derive(Debug, Serialize, Deserialize)]
struct PartialState {
    spec: serde_json::Value,
    next_step: u64,
    points: Vec<FullBatchPoint>,
    wall_s: f64,
}

/// A checkpoint read back: its state and Lanczos' warm-start vector.
struct Resumed {
    state: PartialState,
    warm: Option<Vec<f64>>,
}

/// The tensor name of Lanczos' warm-start vector in a checkpoint.
const WARM_KEY: &str = "lanczos.warm";

fn save_partial(
    path: &Path,
    model: &dyn Model,
    warm: Option<&[f64]>,
    state: &PartialState,
) -> Result<(), RunError> {
    let mut tensors = Checkpoint::model_tensors(model);
    if let Some(w) = warm {
        tensors.push((
            WARM_KEY.into(),
            Tensor::from_slice(w, w.len(), &Device::Cpu)?,
        ));
    }
    let state = serde_json::to_string(state).map_err(|e| RunError::Checkpoint {
        path: path.into(),
        message: e.to_string(),
    })?;
    Checkpoint { tensors, state }.save(path)
}

/// The checkpoint at `path` when it exists and holds `spec`'s run: loads its parameters (and
/// any buffers) into `model` and returns its state and warm-start vector.
fn load_partial(
    path: &Path,
    spec: &serde_json::Value,
    model: &dyn Model,
    device: &Device,
) -> Result<Option<Resumed>, RunError> {
    if !path.exists() {
        return Ok(None);
    }
    let ck = Checkpoint::load(path, device)?;
    let bad = |message: String| RunError::Checkpoint {
        path: path.into(),
        message,
    };
    let state: PartialState = serde_json::from_str(&ck.state)
        .map_err(|e| bad(format!("its state is not a full-batch run's: {e}")))?;
    if &state.spec != spec {
        tracing::info!(
            path = %path.display(),
            "a checkpoint of another spec: starting this run from step 0"
        );
        return Ok(None);
    }
    ck.restore_model(model, path)?;
    let warm = match ck.tensors.iter().find(|(n, _)| n == WARM_KEY) {
        Some((_, t)) => Some(t.to_dtype(DType::F64)?.to_vec1::<f64>()?),
        None => None,
    };
    Ok(Some(Resumed { state, warm }))
}

/// Runs full-batch GD per `spec` on prepared data; `on_point` sees every logged point (progress).
/// Stops early, with the non-finite point logged, when the loss diverges.
pub fn run_full_batch(
    spec: &FullBatchSpec,
    data: &FullBatchData,
    device: &Device,
    on_point: &mut dyn FnMut(&FullBatchPoint),
) -> Result<Vec<FullBatchPoint>, RunError> {
    let out = run_full_batch_resumable(spec, data, device, FullBatchResume::default(), on_point)?;
    Ok(out.points)
}

/// [`run_full_batch`] with a checkpoint after every measured step, resumed from when present:
/// a resumed run's points and parameters are those of an uninterrupted run, bit for bit (GD
/// and the Lanczos seeds depend only on the step; the warm start is stored exactly).
pub fn run_full_batch_resumable(
    spec: &FullBatchSpec,
    data: &FullBatchData,
    device: &Device,
    resume: FullBatchResume<'_>,
    on_point: &mut dyn FnMut(&FullBatchPoint),
) -> Result<FullBatchOutcome, RunError> {
    let dtype = if spec.dtype == "f64" {
        DType::F64
    } else {
        DType::F32
    };
    let model = build(
        &spec.model,
        data.input,
        data.num_classes,
        dtype,
        device,
        spec.seed,
    )?;
    let model = model.as_ref();
    let spec_value = serde_json::to_value(spec).map_err(|e| RunError::Other(e.to_string()))?;
    let mut points = Vec::new();
    let mut warm = None;
    let (mut first, mut earlier_wall_s, mut resumed_at) = (0, 0.0, None);
    if let Some(path) = resume.checkpoint {
        if let Some(Resumed { state, warm: w }) = load_partial(path, &spec_value, model, device)? {
            tracing::info!(step = state.next_step, path = %path.display(), "resuming full-batch GD");
            (first, earlier_wall_s, resumed_at) =
                (state.next_step, state.wall_s, Some(state.next_step));
            points = state.points;
            warm = w;
        }
    }
    let t0 = std::time::Instant::now();
    for step in first..=spec.steps {
        let (loss, grad) = full_gradient(model, spec.loss, data)?;
        let acc = match spec.stop_acc {
            Some(_) if loss.is_finite() => Some(accuracy(model, data)?),
            _ => None,
        };
        let stop = matches!((acc, spec.stop_acc), (Some(a), Some(t)) if a >= t);
        let measure = step % spec.measure_every.max(1) == 0 || step == spec.steps || stop;
        let mut point = FullBatchPoint {
            step,
            loss,
            accuracy: None,
            lambda_h1: None,
        };
        if measure && loss.is_finite() {
            point.accuracy = Some(match acc {
                Some(a) => a,
                None => accuracy(model, data)?,
            });
            if spec.lanczos_iters > 0 {
                let seed = spec.seed ^ 0x656f_7321 ^ step.wrapping_mul(0x9e37_79b9);
                let (l, v) = top_hessian_eigen(
                    model,
                    spec.loss,
                    data,
                    spec.lanczos_iters,
                    warm.take(),
                    seed,
                )?;
                point.lambda_h1 = Some(l);
                warm = Some(v);
            }
        }
        if measure || !loss.is_finite() {
            on_point(&point);
            points.push(point);
        }
        if !loss.is_finite() {
            tracing::warn!(step, "full-batch GD diverged (loss {loss})");
            break;
        }
        if stop {
            break;
        }
        if step < spec.steps {
            gd_step(model, &grad, spec.lr)?;
        }
        if measure && step < spec.steps {
            let done = step + 1 - first;
            let eta_s = t0.elapsed().as_secs_f64() / done as f64 * (spec.steps - step) as f64;
            tracing::info!(
                "full-batch GD step {}/{}: loss {loss:.4}, λ_H^1 {}, at most {:.0} min left",
                step,
                spec.steps,
                points
                    .last()
                    .and_then(|p| p.lambda_h1)
                    .map_or("-".into(), |l| format!("{l:.4}")),
                eta_s / 60.0
            );
            if let Some(path) = resume.checkpoint {
                let state = PartialState {
                    spec: spec_value.clone(),
                    next_step: step + 1,
                    points: points.clone(),
                    wall_s: earlier_wall_s + t0.elapsed().as_secs_f64(),
                };
                save_partial(path, model, warm.as_deref(), &state)?;
            }
            if resume.stop_after_step == Some(step) {
                return Ok(FullBatchOutcome {
                    points,
                    resumed_at,
                    earlier_wall_s,
                    finished: false,
                });
            }
        }
    }
    Ok(FullBatchOutcome {
        points,
        resumed_at,
        earlier_wall_s,
        finished: true,
    })
}

/// Loads the data set of `spec` from `data_dir` (or the default search path) and runs it,
/// resumable through `resume` ([`run_full_batch_resumable`]).
pub fn run_full_batch_from_disk(
    spec: &FullBatchSpec,
    data_dir: Option<&Path>,
    resume: FullBatchResume<'_>,
    on_point: &mut dyn FnMut(&FullBatchPoint),
) -> Result<FullBatchOutcome, RunError> {
    let device = crate::device::open_device(crate::device::parse_device_name(&spec.device)?)?;
    let dtype = if spec.dtype == "f64" {
        DType::F64
    } else {
        DType::F32
    };
    let train = if spec.data == "synthetic" {
        crate::setup::synthetic(spec.seed).train
    } else {
        breakeven_data::load(spec.data.parse()?, data_dir)?.train
    };
    let data = subset_data(train, spec.n, spec.batch, dtype, &device)?;
    run_full_batch_resumable(spec, &data, &device, resume, on_point)
}

#[cfg(test)]
#[path = "full_batch_tests.rs"]
mod tests;
