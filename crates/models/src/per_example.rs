//! Per-example gradients from ONE batched forward and backward pass (issue 18, item 3), for
//! models whose examples do not interact within a batch (no BatchNorm on batch statistics):
//! what `torch.func.vmap(grad)` does, without vmap.
//!
//! A taped forward ([`Model::forward_taped`]) runs every `Conv2d` and `Linear` layer with
//! detached weights, recording the layer's input, and catches its output gradient `dY`:
//! Candle frees the gradients of intermediate tensors during `backward` but keeps those of
//! `Var`s, so a zero probe `Var` added to a Linear's output has gradient `dY`; a convolution on
//! the CPU kernels hands `dY` over from its own backward (`ops::conv2d_stashing`). With
//! detached weights the backward pass computes only input gradients. The loss is the SUM of
//! the per-example losses, so row i of `dY` is example i's alone, and each example's weight
//! gradients follow per layer (`ops::per_example_rows`): Linear `dW_i = dy_i ⊗ x_i`, Conv2d
//! `dW_i = dY_i · im2col(X_i)ᵀ`, written as f64 straight into its row of the n × D matrix, in
//! [`Model::params`] order (the flattening of `breakeven_curvature::grads_to_vec`).
//!
//! The same numbers, to rounding, as `breakeven_curvature::per_example_gradients` over
//! batch-size-1 passes (tested in f64 to 1e-10): that loop remains the fallback for the
//! models without a taped forward.

use std::cell::RefCell;
use std::collections::HashMap;

use breakeven_curvature::{backward_detached, PerExampleGradients};
use candle_core::{DType, Shape, Tensor, Var};

use crate::error::ModelError;
use crate::loss::cross_entropy_per_example;
use crate::ops::{self, per_example_rows, per_example_sq_norms, GradSlot, RowsKind, RowsLayer};
use crate::Model;

/// The layers a taped forward recorded: filled by [`Model::forward_taped`], read by
/// [`per_example_gradients`].
#[derive(Debug, Default)]
pub struct Tape {
    layers: RefCell<Vec<Taped>>,
}

#[derive(Debug)]
struct Taped {
    kind: RowsKind,
    input: Tensor,
    output: Capture,
    weight: Var,
    bias: Option<Var>,
}

/// How a layer's output gradient is caught.
#[derive(Debug)]
enum Capture {
    /// A zero `Var` added to the output: Candle keeps the gradients of `Var`s.
    Probe(Var),
    /// The convolution's backward leaves it here (`ops::conv2d_stashing`); the output's shape
    /// gives zeros where the backward never ran.
    Slot(GradSlot, Shape),
}

impl Tape {
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of layers recorded.
    pub fn len(&self) -> usize {
        self.layers.borrow().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Runs `layer(x, detached weight, detached bias)`, records `x`, and returns the output plus
    /// a zero probe whose gradient will be the output's.
    pub(crate) fn record(
        &self,
        kind: RowsKind,
        x: &Tensor,
        weight: &Var,
        bias: Option<&Var>,
        layer: impl FnOnce(&Tensor, &Tensor, Option<&Tensor>) -> candle_core::Result<Tensor>,
    ) -> candle_core::Result<Tensor> {
        let w = weight.as_tensor().detach();
        let b = bias.map(|b| b.as_tensor().detach());
        let y = layer(x, &w, b.as_ref())?;
        let probe = Var::zeros(y.shape(), y.dtype(), y.device())?;
        let y = (y + probe.as_tensor())?;
        self.layers.borrow_mut().push(Taped {
            kind,
            input: x.clone(),
            output: Capture::Probe(probe),
            weight: weight.clone(),
            bias: bias.cloned(),
        });
        Ok(y)
    }

    /// [`Self::record`] for a convolution: on the CPU kernels, the op itself hands over its
    /// output gradient (no probe to add); elsewhere a probe, and also on a first layer, whose
    /// input (data) and detached weights need no gradient, so that Candle would never run the
    /// op's backward.
    pub(crate) fn record_conv(
        &self,
        x: &Tensor,
        weight: &Var,
        bias: Option<&Var>,
        (stride, pad): (usize, usize),
    ) -> candle_core::Result<Tensor> {
        let kind = RowsKind::Conv { stride, pad };
        let w = weight.as_tensor().detach();
        let b = bias.map(|b| b.as_tensor().detach());
        let slot = GradSlot::default();
        let stashed = if x.track_op() {
            ops::conv2d_stashing(x, &w, b.as_ref(), stride, pad, &slot)?
        } else {
            None
        };
        let Some(y) = stashed else {
            return self.record(kind, x, weight, bias, |x, w, b| {
                ops::conv2d(x, w, b, stride, pad)
            });
        };
        self.layers.borrow_mut().push(Taped {
            kind,
            input: x.clone(),
            output: Capture::Slot(slot, y.shape().clone()),
            weight: weight.clone(),
            bias: bias.cloned(),
        });
        Ok(y)
    }
}

/// Per-example gradients `∇ℓ_i` (unscaled, as `breakeven_curvature::per_example_gradients`)
/// and losses `ℓ_i` of the cross-entropy of `model` on the batch `x` (N × …) with `labels`
/// (N, u32), from one batched forward and backward pass. CPU, f32 or f64.
///
/// Errors with [`ModelError::PerExampleUnsupported`] when the model has no taped forward (its
/// examples interact, as through BatchNorm on batch statistics) or the tensors are not on the
/// CPU in f32/f64; the caller can then fall back to batch-size-1 passes.
pub fn per_example_gradients(
    model: &dyn Model,
    x: &Tensor,
    labels: &Tensor,
) -> Result<PerExampleGradients, ModelError> {
    let unsupported = |reason: String| ModelError::PerExampleUnsupported { reason };
    let n = x.dim(0)?;
    let (layers, losses, dim) = taped_layers(model, x, labels)?;
    let mut data = vec![0.0; n * dim];
    advise_huge_pages(&mut data);
    per_example_rows(&layers, n, dim, &mut data)?;
    drop(layers);
    let mut g = PerExampleGradients::from_rows(n, dim, data)
        .map_err(|e| unsupported(format!("assembling the rows: {e}")))?;
    g.losses = losses;
    Ok(g)
}

/// The squared norms `‖∇ℓ_i‖²` of [`per_example_gradients`]' rows (to rounding) and the losses
/// `ℓ_i`, without the n × D matrix: the per-example building block of Tr(F) with sampled
/// labels (`E‖∇ log p_ŷ‖²`). Same support and errors as [`per_example_gradients`].
pub fn per_example_gradient_sq_norms(
    model: &dyn Model,
    x: &Tensor,
    labels: &Tensor,
) -> Result<(Vec<f64>, Vec<f64>), ModelError> {
    let n = x.dim(0)?;
    let (layers, losses, dim) = taped_layers(model, x, labels)?;
    Ok((per_example_sq_norms(&layers, n, dim)?, losses))
}

/// One taped forward and backward of the batch: every Conv2d and Linear layer's input and
/// output gradient with where its parameters start in a row, the per-example losses, and the
/// row length D; `PerExampleUnsupported` where the batched path does not apply.
fn taped_layers(
    model: &dyn Model,
    x: &Tensor,
    labels: &Tensor,
) -> Result<(Vec<RowsLayer>, Vec<f64>, usize), ModelError> {
    let unsupported = |reason: String| ModelError::PerExampleUnsupported { reason };
    let n = x.dim(0)?;
    if n == 0 {
        return Err(unsupported("empty batch".into()));
    }
    if !x.device().is_cpu() || !matches!(x.dtype(), DType::F32 | DType::F64) {
        return Err(unsupported(format!(
            "CPU f32/f64 inputs only, got {:?} on {:?}",
            x.dtype(),
            x.device()
        )));
    }
    if let Some(p) = model
        .params()
        .iter()
        .find(|p| p.var.dtype() != x.dtype() || !p.var.device().is_cpu())
    {
        return Err(unsupported(format!(
            "parameter `{}` is {:?} on {:?}, the input {:?} on the CPU",
            p.name,
            p.var.dtype(),
            p.var.device(),
            x.dtype()
        )));
    }
    let tape = Tape::new();
    let Some(logits) = model.forward_taped(x, &tape)? else {
        return Err(unsupported(
            "the model has no taped forward (layers that couple the examples of a batch, such \
             as BatchNorm on batch statistics, or layers other than Conv2d and Linear with \
             parameters); use breakeven_curvature::per_example_gradients"
                .into(),
        ));
    };
    let losses = cross_entropy_per_example(&logits, labels)?;
    let grads = backward_detached(&losses.sum_all()?)?;
    let losses = losses.to_dtype(DType::F64)?.to_vec1::<f64>()?;

    // Where each parameter starts in a row, and that every one is covered exactly once.
    let mut offsets = HashMap::new();
    let mut dim = 0;
    for p in model.params() {
        offsets.insert(p.var.as_tensor().id(), (p.name.as_str(), dim, false));
        dim += p.var.elem_count();
    }
    let mut place = |v: &Var| -> Result<usize, ModelError> {
        match offsets.get_mut(&v.as_tensor().id()) {
            Some((name, _, true)) => Err(unsupported(format!(
                "parameter `{name}` is used by two layers (shared weights)"
            ))),
            Some((_, off, seen)) => {
                *seen = true;
                Ok(*off)
            }
            None => Err(unsupported(format!(
                "a taped layer's parameter of shape {:?} is not among the model's params()",
                v.dims()
            ))),
        }
    };
    // Every slot emptied first, whatever fails later: where Candle keeps gradient graphs, a
    // caught gradient can refer back to the op that holds its slot (a reference cycle).
    let caught: Vec<(Taped, Option<Tensor>)> = tape
        .layers
        .into_inner()
        .into_iter()
        .map(|t| {
            let dy = match &t.output {
                Capture::Probe(probe) => grads.get(probe.as_tensor()).cloned(),
                Capture::Slot(slot, _) => slot
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner())
                    .take(),
            };
            (t, dy)
        })
        .collect();
    let mut layers = Vec::new();
    for (t, dy) in caught {
        // A layer the loss does not depend on has gradient zero.
        let dy = match (dy, &t.output) {
            (Some(g), _) => g,
            (None, Capture::Probe(probe)) => probe.as_tensor().zeros_like()?,
            (None, Capture::Slot(_, shape)) => {
                Tensor::zeros(shape, t.input.dtype(), t.input.device())?
            }
        };
        layers.push(RowsLayer {
            kind: t.kind,
            x: t.input,
            dy,
            weight_dims: t.weight.dims().to_vec(),
            weight: place(&t.weight)?,
            bias: t.bias.as_ref().map(&mut place).transpose()?,
        });
    }
    drop(grads);
    if let Some((name, ..)) = offsets.values().find(|(.., seen)| !seen) {
        return Err(unsupported(format!(
            "parameter `{name}` belongs to no taped Conv2d or Linear layer"
        )));
    }
    Ok((layers, losses, dim))
}

/// Asks Linux to back the 2 MiB-aligned interior of `buf` with transparent huge pages (where
/// THP is in `madvise` mode, as here). The n × D matrix is hundreds of MB (370 MB for 128
/// examples of SimpleCNN), freshly mapped on every call, so it faults in page by page on first
/// write: page faults and their cgroup accounting were about a quarter of the batched per-example
/// gradients' time (Intel Xeon, 1 thread, `perf`); with 2 MiB pages they fault 512 times less
/// often. A hint only: the contents and every result are unchanged, and an error is ignored.
fn advise_huge_pages(buf: &mut [f64]) {
    #[cfg(target_os = "linux")]
    {
        const HUGE: usize = 2 << 20;
        let start = buf.as_mut_ptr() as usize;
        let end = start + std::mem::size_of_val(buf);
        let (lo, hi) = (start.next_multiple_of(HUGE), end / HUGE * HUGE);
        if hi > lo {
            // SAFETY: [lo, hi) lies inside `buf`, which we own exclusively; MADV_HUGEPAGE changes
            // how its pages are backed, never their contents.
            unsafe {
                libc::madvise(lo as *mut libc::c_void, hi - lo, libc::MADV_HUGEPAGE);
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = buf;
}

#[cfg(test)]
mod tests {
    use breakeven_curvature::{grads_to_vec, BatchedLoss, Reduction};
    use candle_core::Tensor;

    use super::*;
    use crate::gradcheck::{setup, Setup};
    use crate::init::Init;
    use crate::layers::{Conv2d, ConvShape, Linear};
    use crate::store::ParamStore;
    use crate::{cross_entropy, Mode, ModelSpec};
    use candle_core::Device;

    /// The reference: a loop of batch-size-1 backward passes (breakeven-curvature's).
    fn looped(s: &Setup) -> PerExampleGradients {
        let n = s.y.dim(0).unwrap();
        let vars: Vec<Var> = s.model.params().iter().map(|p| p.var.clone()).collect();
        let mut loss = BatchedLoss::new(n, Reduction::Mean, |i| {
            let z = s.model.forward(&s.x.narrow(0, i, 1)?, Mode::BatchStats)?;
            Ok((cross_entropy(&z, &s.y.narrow(0, i, 1)?)?, 1))
        });
        breakeven_curvature::per_example_gradients(&mut loss, &vars).unwrap()
    }

    fn rel(a: &[f64], b: &[f64]) -> f64 {
        let d: f64 = a.iter().zip(b).map(|(x, y)| (x - y).powi(2)).sum();
        let s: f64 = b.iter().map(|y| y * y).sum();
        (d / s.max(1e-300)).sqrt()
    }

    /// Every row and loss against the loop, and the mean of the rows against the gradient of
    /// the batch's mean loss (a different code path: Candle's batched weight gradients).
    fn check_against_loop(s: &Setup) {
        let n = s.y.dim(0).unwrap();
        let ours = per_example_gradients(s.model.as_ref(), &s.x, &s.y).unwrap();
        let reference = looped(s);
        assert_eq!((ours.len(), ours.dim()), (reference.len(), reference.dim()));
        for i in 0..n {
            let r = rel(ours.row(i), reference.row(i));
            assert!(r < 1e-10, "example {i}: relative difference {r:e}");
            let (a, b) = (ours.losses[i], reference.losses[i]);
            assert!(
                (a - b).abs() <= 1e-12 * b.abs().max(1.0),
                "loss {i}: {a} vs {b}"
            );
        }
        let vars: Vec<Var> = s.model.params().iter().map(|p| p.var.clone()).collect();
        let mean = grads_to_vec(&s.loss().unwrap().backward().unwrap(), &vars).unwrap();
        let r = rel(&ours.mean(), &mean);
        assert!(r < 1e-10, "mean of rows vs batch gradient: {r:e}");
        // The probes and detached weights leave nothing behind: the parameters' own gradient
        // is still the plain one.
        assert!(ours.row(0).iter().any(|&g| g != 0.0));
        // The squared norms without the matrix: each row's, to rounding, and the same losses.
        let (norms, losses) = per_example_gradient_sq_norms(s.model.as_ref(), &s.x, &s.y).unwrap();
        assert_eq!(losses, ours.losses);
        for (i, norm) in norms.iter().enumerate() {
            let want: f64 = reference.row(i).iter().map(|g| g * g).sum();
            assert!(
                (norm - want).abs() <= 1e-10 * want,
                "example {i}: ‖g‖² {norm} vs {want}"
            );
        }
    }

    #[test]
    fn simple_cnn_rows_match_batch_size_one_passes() {
        let s = setup(
            &ModelSpec::SimpleCnn { width_mult: 0.125 },
            (3, 12, 12),
            3,
            5,
            11,
        );
        check_against_loop(&s);
    }

    #[test]
    fn fc_rows_match_batch_size_one_passes() {
        let tanh = setup(
            &ModelSpec::FcTanh { widths: vec![7, 5] },
            (2, 3, 3),
            4,
            6,
            12,
        );
        check_against_loop(&tanh);
        let relu = setup(
            &ModelSpec::FcRelu { widths: vec![9, 6] },
            (1, 4, 4),
            3,
            3,
            13,
        );
        check_against_loop(&relu);
    }

    /// Strides, padding and layers without bias, which SimpleCNN does not have: conv 3×3
    /// stride 2 padding 1 → ReLU → conv 2×2 stride 1 unpadded, no bias → tanh → Linear, no bias.
    struct Strided {
        c1: Conv2d,
        c2: Conv2d,
        fc: Linear,
        params: Vec<crate::Param>,
    }

    impl Strided {
        fn run(&self, x: &Tensor, tape: Option<&Tape>) -> candle_core::Result<Tensor> {
            let x = crate::ops::relu(&self.c1.forward_with(x, tape)?)?;
            let x = self.c2.forward_with(&x, tape)?.tanh()?;
            self.fc.forward_with(&x.flatten_from(1)?, tape)
        }
    }

    impl Model for Strided {
        fn forward(&self, x: &Tensor, _mode: Mode) -> candle_core::Result<Tensor> {
            self.run(x, None)
        }
        fn params(&self) -> &[crate::Param] {
            &self.params
        }
        fn buffers(&self) -> Vec<(String, Var)> {
            vec![]
        }
        fn forward_taped(&self, x: &Tensor, tape: &Tape) -> candle_core::Result<Option<Tensor>> {
            self.run(x, Some(tape)).map(Some)
        }
    }

    #[test]
    fn strided_padded_and_bias_free_layers_match_batch_size_one_passes() {
        let mut store = ParamStore::new(18, DType::F64, &Device::Cpu);
        let normal = Init::Normal {
            mean: 0.0,
            std: 0.5,
        };
        let c1 = ConvShape::same(2, 3, 3).stride(2).padding(1);
        let c1 = Conv2d::new(&mut store, "c1", c1, normal, Some(normal)).unwrap();
        let c2 = ConvShape::same(3, 4, 2).padding(0);
        let c2 = Conv2d::new(&mut store, "c2", c2, normal, None).unwrap();
        // 7×7 → 4×4 (stride 2, padding 1) → 3×3.
        let fc = Linear::new(&mut store, "fc", (4 * 3 * 3, 3), normal, None).unwrap();
        let (params, _) = store.finish();
        let mut s = setup(&ModelSpec::FcRelu { widths: vec![2] }, (2, 7, 7), 3, 5, 19);
        s.model = Box::new(Strided { c1, c2, fc, params });
        check_against_loop(&s);
    }

    #[test]
    fn batchnorm_models_are_refused_with_a_clear_error() {
        let s = setup(&ModelSpec::Vgg11Bn { width: 4 }, (3, 32, 32), 3, 2, 14);
        let err = per_example_gradients(s.model.as_ref(), &s.x, &s.y).unwrap_err();
        assert!(
            matches!(err, ModelError::PerExampleUnsupported { .. })
                && err.to_string().contains("BatchNorm"),
            "{err}"
        );
    }

    #[test]
    fn f32_rows_match_the_loop_to_f32_rounding() {
        let s = setup(
            &ModelSpec::SimpleCnn { width_mult: 0.125 },
            (3, 12, 12),
            3,
            4,
            15,
        );
        let s = Setup {
            model: crate::build(
                &ModelSpec::SimpleCnn { width_mult: 0.125 },
                (3, 12, 12),
                3,
                candle_core::DType::F32,
                &candle_core::Device::Cpu,
                15,
            )
            .unwrap(),
            x: s.x.to_dtype(DType::F32).unwrap(),
            y: s.y,
        };
        let (ours, reference) = (
            per_example_gradients(s.model.as_ref(), &s.x, &s.y).unwrap(),
            looped(&s),
        );
        for i in 0..4 {
            let r = rel(ours.row(i), reference.row(i));
            assert!(r < 1e-5, "example {i}: relative difference {r:e}");
        }
    }

    #[test]
    fn same_bits_twice_and_whatever_the_thread_count() {
        let s = setup(
            &ModelSpec::SimpleCnn { width_mult: 0.25 },
            (3, 16, 16),
            10,
            7,
            16,
        );
        let run = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            let g = pool.install(|| per_example_gradients(s.model.as_ref(), &s.x, &s.y).unwrap());
            let rows: Vec<f64> = (0..g.len()).flat_map(|i| g.row(i).to_vec()).collect();
            (rows, g.losses)
        };
        let one = run(1);
        assert!(one == run(1), "two runs on one thread differ");
        assert!(one == run(3), "one thread and three threads differ");
    }

    #[test]
    fn bad_labels_and_empty_batches_are_errors() {
        let s = setup(&ModelSpec::FcRelu { widths: vec![3] }, (1, 2, 2), 3, 2, 17);
        let bad = Tensor::new(&[0u32, 5], s.x.device()).unwrap();
        let err = per_example_gradients(s.model.as_ref(), &s.x, &bad).unwrap_err();
        assert!(err.to_string().contains("label 5 out of range"), "{err}");
        let empty = s.x.narrow(0, 0, 0).unwrap();
        let labels = s.y.narrow(0, 0, 0).unwrap();
        assert!(per_example_gradients(s.model.as_ref(), &empty, &labels).is_err());
    }
}
