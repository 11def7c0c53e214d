//! Softmax pieces composed from differentiable candle-core ops (candle's `softmax_last_dim`
//! drops gradients, SCIENCE.md §7), and the logits interface of the output-space operators.

use candle_core::Tensor;

/// Row-wise log-softmax of `B × C` logits with gradients at every order. The row max is
/// detached: log-sum-exp is shift invariant, so the value and all derivatives are unchanged.
pub fn log_softmax(z: &Tensor) -> candle_core::Result<Tensor> {
    let m = z.max_keepdim(1)?.detach();
    let zs = z.broadcast_sub(&m)?;
    let lse = zs.exp()?.sum_keepdim(1)?.log()?;
    zs.broadcast_sub(&lse)
}

/// Row-wise softmax probabilities, detached (no gradient flows through them).
pub fn softmax_detached(z: &Tensor) -> candle_core::Result<Tensor> {
    log_softmax(&z.detach())?.exp()
}

/// A data set of numbered batches and a model's logits on each: what the Gauss-Newton and
/// Fisher operators need (they use no labels; the Fisher samples its own).
pub trait LogitsFn {
    /// Number of batches.
    fn num_batches(&self) -> usize;
    /// The `B × C` logits of batch `batch`, depending on the parameters. Deterministic.
    fn logits(&mut self, batch: usize) -> candle_core::Result<Tensor>;
}

impl<T: LogitsFn + ?Sized> LogitsFn for &mut T {
    fn num_batches(&self) -> usize {
        (**self).num_batches()
    }
    fn logits(&mut self, batch: usize) -> candle_core::Result<Tensor> {
        (**self).logits(batch)
    }
}

/// A [`LogitsFn`] from a closure `batch ↦ logits`.
pub struct BatchedLogits<F> {
    num_batches: usize,
    f: F,
}

impl<F> std::fmt::Debug for BatchedLogits<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchedLogits")
            .field("num_batches", &self.num_batches)
            .finish()
    }
}

impl<F: FnMut(usize) -> candle_core::Result<Tensor>> BatchedLogits<F> {
    /// `f(i)` returns the logits of batch `i`.
    pub fn new(num_batches: usize, f: F) -> Self {
        Self { num_batches, f }
    }
}

impl<F: FnMut(usize) -> candle_core::Result<Tensor>> LogitsFn for BatchedLogits<F> {
    fn num_batches(&self) -> usize {
        self.num_batches
    }
    fn logits(&mut self, batch: usize) -> candle_core::Result<Tensor> {
        (self.f)(batch)
    }
}

/// Calls the logits of one batch and checks they are a non-empty `B × C` matrix.
pub(crate) fn batch_logits<F: LogitsFn + ?Sized>(f: &mut F, batch: usize) -> crate::Result<Tensor> {
    let z = f.logits(batch)?;
    if z.rank() != 2 || z.dim(0)? == 0 {
        return Err(crate::CurvatureError::BadBatch {
            batch,
            reason: format!(
                "logits must be a non-empty B × C matrix, got shape {:?}",
                z.dims()
            ),
        });
    }
    Ok(z)
}
