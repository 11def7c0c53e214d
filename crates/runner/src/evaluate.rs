//! Loss and accuracy of a model on an evaluation set, in eval mode (BatchNorm running statistics).

use breakeven_models::{correct_count, cross_entropy, Mode, Model};
use candle_core::{Result, Tensor};

use crate::setup::{EvalSet, StreamedSet};

/// Mean cross-entropy and accuracy over the whole set (batches weighted by their size).
pub fn evaluate(model: &dyn Model, set: &EvalSet) -> Result<(f64, f64)> {
    let (mut loss_sum, mut correct, mut n) = (0.0, 0usize, 0usize);
    for (x, y) in &set.batches {
        let logits = model.forward(x, Mode::Eval)?.detach();
        let b = y.dim(0)?;
        loss_sum += scalar(&cross_entropy(&logits, y)?)? * b as f64;
        correct += correct_count(&logits, y)?;
        n += b;
    }
    if n == 0 {
        candle_core::bail!("evaluate: empty evaluation set");
    }
    Ok((loss_sum / n as f64, correct as f64 / n as f64))
}

/// As [`evaluate`], building the batches on the fly from a fresh copy of the set's loader.
pub fn evaluate_streamed(
    model: &dyn Model,
    set: &StreamedSet,
    device: &candle_core::Device,
) -> Result<(f64, f64)> {
    let mut loader = set.loader.clone();
    let (mut loss_sum, mut correct, mut n) = (0.0, 0usize, 0usize);
    for _ in 0..loader.batches_per_epoch() {
        let b = loader
            .next_batch(device)
            .map_err(|e| candle_core::Error::Msg(e.to_string()))?;
        let x = b.images.to_dtype(set.dtype)?;
        let logits = model.forward(&x, Mode::Eval)?.detach();
        let k = b.labels.dim(0)?;
        loss_sum += scalar(&cross_entropy(&logits, &b.labels)?)? * k as f64;
        correct += correct_count(&logits, &b.labels)?;
        n += k;
    }
    if n == 0 {
        candle_core::bail!("evaluate: empty evaluation set");
    }
    Ok((loss_sum / n as f64, correct as f64 / n as f64))
}

/// A 0-d float tensor as f64.
pub fn scalar(t: &Tensor) -> Result<f64> {
    t.to_dtype(candle_core::DType::F64)?.to_scalar::<f64>()
}

/// ‖θ‖ over all trainable parameters.
pub fn weight_norm(model: &dyn Model) -> Result<f64> {
    let mut sum = 0.0;
    for p in model.params() {
        sum += scalar(&p.var.as_tensor().sqr()?.sum_all()?)?;
    }
    Ok(sum.sqrt())
}
