//! How a user hands a loss to the crate: a data set as numbered batches, each giving its
//! scalar loss and its size.
//!
//! Convention (fixed once, tested with unequal batches): every operator here is of the MEAN
//! loss over the whole data set, `L = (1/N) Σ_i ℓ_i`, so a batch of `B` examples whose mean
//! loss is `L_b` enters with weight `B / N`.

use candle_core::{Tensor, Var};

use crate::detached::backward_detached;
use crate::error::{CurvatureError, Result};
use crate::linalg::{axpy, scale};
use crate::params::{grads_to_vec, num_params};

/// How a closure reduces over the examples of its batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reduction {
    /// The closure returns the mean of the per-example losses.
    Mean,
    /// The closure returns their sum; it is divided by the batch size here.
    Sum,
}

/// A data set of numbered batches and a differentiable loss on each.
pub trait LossFn {
    /// Number of batches; the operator loops over `0..num_batches()`.
    fn num_batches(&self) -> usize;
    /// The MEAN loss over batch `batch` (a scalar tensor depending on the parameters) and the
    /// number of examples in it. Must be deterministic (no dropout, no BatchNorm updates).
    fn loss(&mut self, batch: usize) -> candle_core::Result<(Tensor, usize)>;
}

impl<T: LossFn + ?Sized> LossFn for &mut T {
    fn num_batches(&self) -> usize {
        (**self).num_batches()
    }
    fn loss(&mut self, batch: usize) -> candle_core::Result<(Tensor, usize)> {
        (**self).loss(batch)
    }
}

/// A [`LossFn`] from a closure `batch ↦ (loss, batch size)`.
pub struct BatchedLoss<F> {
    num_batches: usize,
    reduction: Reduction,
    f: F,
}

impl<F> std::fmt::Debug for BatchedLoss<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchedLoss")
            .field("num_batches", &self.num_batches)
            .field("reduction", &self.reduction)
            .finish()
    }
}

impl<F> BatchedLoss<F>
where
    F: FnMut(usize) -> candle_core::Result<(Tensor, usize)>,
{
    /// `f(i)` returns the loss of batch `i` reduced by `reduction`, and the batch size.
    pub fn new(num_batches: usize, reduction: Reduction, f: F) -> Self {
        Self {
            num_batches,
            reduction,
            f,
        }
    }
}

impl<F> LossFn for BatchedLoss<F>
where
    F: FnMut(usize) -> candle_core::Result<(Tensor, usize)>,
{
    fn num_batches(&self) -> usize {
        self.num_batches
    }
    fn loss(&mut self, batch: usize) -> candle_core::Result<(Tensor, usize)> {
        let (l, n) = (self.f)(batch)?;
        match self.reduction {
            Reduction::Mean => Ok((l, n)),
            Reduction::Sum => Ok(((l / n.max(1) as f64)?, n)),
        }
    }
}

/// Calls the loss of one batch and checks that it is a scalar of a non-empty batch.
pub(crate) fn batch_loss<L: LossFn + ?Sized>(
    loss: &mut L,
    batch: usize,
) -> Result<(Tensor, usize)> {
    let (l, n) = loss.loss(batch)?;
    if l.elem_count() != 1 {
        return Err(CurvatureError::BadBatch {
            batch,
            reason: format!("the loss must be a scalar, got shape {:?}", l.dims()),
        });
    }
    if n == 0 {
        return Err(CurvatureError::BadBatch {
            batch,
            reason: "batch size 0".into(),
        });
    }
    Ok((l, n))
}

/// The mean loss over the data set and its gradient, batches weighted by `B / N`.
pub fn loss_and_gradient<L: LossFn + ?Sized>(
    loss: &mut L,
    vars: &[Var],
) -> Result<(f64, Vec<f64>)> {
    let nb = loss.num_batches();
    if nb == 0 {
        return Err(CurvatureError::EmptyData("LossFn::num_batches() is 0"));
    }
    let mut g = vec![0.0; num_params(vars)];
    let (mut value, mut total) = (0.0, 0usize);
    for b in 0..nb {
        let (l, n) = batch_loss(loss, b)?;
        let grads = backward_detached(&l)?;
        axpy(n as f64, &grads_to_vec(&grads, vars)?, &mut g);
        value += n as f64
            * l.flatten_all()?
                .to_dtype(candle_core::DType::F64)?
                .to_vec1::<f64>()?[0];
        total += n;
    }
    scale(1.0 / total as f64, &mut g);
    Ok((value / total as f64, g))
}
