//! Power iteration for the eigenvalue of largest magnitude: the cheap baseline against which
//! Lanczos is measured, and what many edge-of-stability re-implementations use.

use crate::error::{CurvatureError, Result};
use crate::linalg::{axpy, dot, norm, scale};
use crate::operator::{check_len, LinearOperator};
use crate::random::{gaussian_vector, rng};

/// Settings of [`power_iteration`].
#[derive(Debug, Clone)]
pub struct PowerConfig {
    /// Maximum number of products.
    pub max_iter: usize,
    /// Converged when `‖A v − λ v‖ ≤ tol · |λ|` (λ the Rayleigh quotient).
    pub tol: f64,
    /// Start vector (warm start); a seeded Gaussian vector when `None`.
    pub warm_start: Option<Vec<f64>>,
}

impl Default for PowerConfig {
    fn default() -> Self {
        Self {
            max_iter: 1000,
            tol: 1e-6,
            warm_start: None,
        }
    }
}

/// The dominant eigenpair with diagnostics.
#[derive(Debug, Clone)]
pub struct PowerEstimate {
    /// Rayleigh quotient of the last iterate: the eigenvalue of largest |λ|.
    pub eigenvalue: f64,
    /// Unit eigenvector.
    pub eigenvector: Vec<f64>,
    /// `‖A v − λ v‖` of the returned pair.
    pub residual: f64,
    /// Iterations (= operator products).
    pub iterations: usize,
    /// Operator products.
    pub matvecs: usize,
    /// Whether `tol` was met.
    pub converged: bool,
}

/// Power iteration `v ← A v / ‖A v‖` until the residual test passes. Converges at rate
/// `|λ_2/λ_1|`: slow on clustered spectra, where [`crate::lanczos`] is far cheaper.
pub fn power_iteration<A: LinearOperator + ?Sized>(
    op: &mut A,
    cfg: &PowerConfig,
    seed: u64,
) -> Result<PowerEstimate> {
    let n = op.dim();
    if cfg.max_iter == 0 {
        return Err(CurvatureError::InvalidConfig {
            key: "max_iter",
            reason: "must be at least 1".into(),
        });
    }
    let mut v = match &cfg.warm_start {
        Some(w) => {
            check_len("power iteration warm start", w, n)?;
            w.clone()
        }
        None => gaussian_vector(&mut rng(seed), n),
    };
    let nv = norm(&v);
    if !(nv > 0.0 && nv.is_finite()) {
        return Err(CurvatureError::InvalidConfig {
            key: "warm_start",
            reason: format!("must be finite and non-zero, has norm {nv}"),
        });
    }
    scale(1.0 / nv, &mut v);
    let (mut lambda, mut residual, mut converged) = (0.0, f64::INFINITY, false);
    let mut it = 0;
    while it < cfg.max_iter {
        let w = op.apply(&v)?;
        check_len("operator output", &w, n)?;
        it += 1;
        lambda = dot(&v, &w);
        let mut r = w.clone();
        axpy(-lambda, &v, &mut r);
        residual = norm(&r);
        if !residual.is_finite() {
            return Err(CurvatureError::NonFinite("power iteration product"));
        }
        if residual <= cfg.tol * lambda.abs() {
            converged = true;
            break;
        }
        let nw = norm(&w);
        if nw == 0.0 {
            // v is in the null space: the operator is zero on it; report λ = 0.
            break;
        }
        v = w;
        scale(1.0 / nw, &mut v);
    }
    Ok(PowerEstimate {
        eigenvalue: lambda,
        eigenvector: v,
        residual,
        iterations: it,
        matvecs: it,
        converged,
    })
}
