//! The linear-operator abstraction every estimator works over.
//!
//! Convention: estimators work in `f64` host vectors (`&[f64]` in, `Vec<f64>` out) whatever the
//! model's dtype and device; each operator converts to the model's dtype/device on the way in and
//! back to `f64` on the way out. The vectors of a few million entries this implies are cheap next
//! to one Hessian-vector product, and the Lanczos recurrences stay in `f64`, where loss of
//! orthogonality is least harmful.

use crate::dense::DenseMatrix;
use crate::error::{CurvatureError, Result};

/// A symmetric linear map `v ↦ A v` on `R^dim`.
///
/// `apply` takes `&mut self` so that operators can count products, keep caches or own a
/// seeded generator; an operator must still be deterministic: two applications to the same
/// vector give the same result (TESTING.md #4).
pub trait LinearOperator {
    /// The dimension `D` of the space (number of scalar parameters for curvature operators).
    fn dim(&self) -> usize;
    /// `A v`. `v.len()` must equal [`LinearOperator::dim`].
    fn apply(&mut self, v: &[f64]) -> Result<Vec<f64>>;
}

impl<T: LinearOperator + ?Sized> LinearOperator for &mut T {
    fn dim(&self) -> usize {
        (**self).dim()
    }
    fn apply(&mut self, v: &[f64]) -> Result<Vec<f64>> {
        (**self).apply(v)
    }
}

impl<T: LinearOperator + ?Sized> LinearOperator for Box<T> {
    fn dim(&self) -> usize {
        (**self).dim()
    }
    fn apply(&mut self, v: &[f64]) -> Result<Vec<f64>> {
        (**self).apply(v)
    }
}

/// Wraps an operator and counts its products: the cost unit every estimator reports.
#[derive(Debug)]
pub struct Counted<A> {
    /// The wrapped operator.
    pub inner: A,
    /// Products so far.
    pub matvecs: usize,
}

impl<A: LinearOperator> Counted<A> {
    /// Starts counting at zero.
    pub fn new(inner: A) -> Self {
        Self { inner, matvecs: 0 }
    }
}

impl<A: LinearOperator> LinearOperator for Counted<A> {
    fn dim(&self) -> usize {
        self.inner.dim()
    }
    fn apply(&mut self, v: &[f64]) -> Result<Vec<f64>> {
        self.matvecs += 1;
        self.inner.apply(v)
    }
}

/// Checks `v.len() == dim`, naming the argument in the error.
pub(crate) fn check_len(what: &'static str, v: &[f64], dim: usize) -> Result<()> {
    if v.len() == dim {
        Ok(())
    } else {
        Err(CurvatureError::DimensionMismatch {
            what,
            got: v.len(),
            expected: dim,
        })
    }
}

/// Builds the dense `dim × dim` matrix of an operator from its products with the unit vectors
/// (`dim` products: for tests and small models only). The result is symmetrized only if
/// `symmetrize` is set; leave it off to measure the operator's own asymmetry.
pub fn materialize<A: LinearOperator + ?Sized>(
    op: &mut A,
    symmetrize: bool,
) -> Result<DenseMatrix> {
    let n = op.dim();
    let mut data = vec![0.0; n * n];
    let mut e = vec![0.0; n];
    for j in 0..n {
        e[j] = 1.0;
        let col = op.apply(&e)?;
        check_len("operator output", &col, n)?;
        e[j] = 0.0;
        for (i, x) in col.into_iter().enumerate() {
            data[i * n + j] = x;
        }
    }
    let mut m = DenseMatrix::from_row_major(n, data)?;
    if symmetrize {
        m.symmetrize();
    }
    Ok(m)
}
