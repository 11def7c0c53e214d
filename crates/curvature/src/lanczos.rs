//! Lanczos with full reorthogonalization for the top-k eigenpairs of a symmetric operator
//! (PyHessian's and Cohen et al.'s estimator of λ_H^1, made reproducible and diagnosable).

use rand_chacha::ChaCha8Rng;

use crate::error::{CurvatureError, Result};
use crate::linalg::{axpy, dot, norm, scale, tridiagonal_eigen, SymEigen};
use crate::operator::{check_len, LinearOperator};
use crate::random::{gaussian_vector, orthonormalize_against, rng};

/// Which end of the spectrum to return.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Which {
    /// Largest eigenvalues (λ_1 ≥ λ_2 ≥ …): sharpness.
    #[default]
    LargestAlgebraic,
    /// Largest |λ|, e.g. to see strongly negative curvature.
    LargestMagnitude,
}

/// Settings of [`lanczos`].
#[derive(Debug, Clone)]
pub struct LanczosConfig {
    /// Number of eigenpairs wanted.
    pub k: usize,
    /// Maximum Krylov dimension (= operator products before the residual check).
    pub max_iter: usize,
    /// Converged when every wanted Ritz pair has `β_m |s_m,i| ≤ tol · |θ_i|` or, with
    /// `compute_residuals`, a true residual `‖A y − θ y‖ ≤ tol · |θ|` when the iterations end.
    pub tol: f64,
    /// Which end of the spectrum.
    pub which: Which,
    /// Start vector, e.g. the previous eigenvector along a training trajectory (warm start);
    /// a seeded Gaussian vector when `None`.
    pub warm_start: Option<Vec<f64>>,
    /// Spend `k` extra products to report the true residuals `‖A y − θ y‖`.
    pub compute_residuals: bool,
}

impl Default for LanczosConfig {
    fn default() -> Self {
        Self {
            k: 1,
            max_iter: 100,
            tol: 1e-6,
            which: Which::LargestAlgebraic,
            warm_start: None,
            compute_residuals: true,
        }
    }
}

/// Eigenpairs with their diagnostics.
#[derive(Debug, Clone)]
pub struct EigenEstimate {
    /// The wanted eigenvalues in the order of [`Which`].
    pub eigenvalues: Vec<f64>,
    /// Unit eigenvectors (Ritz vectors), one per eigenvalue.
    pub eigenvectors: Vec<Vec<f64>>,
    /// `‖A y − θ y‖` when `compute_residuals`, otherwise the Ritz estimates `β |s_m|`.
    pub residuals: Vec<f64>,
    /// Krylov dimension reached.
    pub iterations: usize,
    /// Operator products spent, residual checks included.
    pub matvecs: usize,
    /// Whether the tolerance was met before `max_iter`.
    pub converged: bool,
}

/// A Lanczos basis built with full reorthogonalization; shared with spectral density.
pub(crate) struct Krylov {
    pub q: Vec<Vec<f64>>,
    pub alpha: Vec<f64>,
    pub beta: Vec<f64>,
    next: Vec<f64>,
    /// Norm of the last residual vector before normalization (β_m).
    pub last_beta: f64,
    pub matvecs: usize,
}

impl Krylov {
    pub fn new(mut start: Vec<f64>) -> Result<Self> {
        let n0 = norm(&start);
        if !(n0 > 0.0 && n0.is_finite()) {
            return Err(CurvatureError::InvalidConfig {
                key: "start vector",
                reason: format!("must be finite and non-zero, has norm {n0}"),
            });
        }
        scale(1.0 / n0, &mut start);
        Ok(Self {
            q: vec![],
            alpha: vec![],
            beta: vec![],
            next: start,
            last_beta: 0.0,
            matvecs: 0,
        })
    }

    /// One Lanczos step. Returns `false` when the basis already spans the whole space.
    /// On breakdown (an invariant subspace) it restarts with a random vector orthogonal to the
    /// basis, with a zero coupling, so that later steps can still find the rest of the spectrum.
    pub fn step<A: LinearOperator + ?Sized>(
        &mut self,
        op: &mut A,
        rng: &mut ChaCha8Rng,
    ) -> Result<bool> {
        let n = op.dim();
        if self.q.len() >= n {
            return Ok(false);
        }
        if !self.q.is_empty() {
            self.beta.push(self.last_beta);
        }
        let q = std::mem::take(&mut self.next);
        let mut w = op.apply(&q)?;
        self.matvecs += 1;
        check_len("operator output", &w, n)?;
        let a = dot(&w, &q);
        if !a.is_finite() {
            return Err(CurvatureError::NonFinite(
                "Lanczos alpha (operator product)",
            ));
        }
        self.alpha.push(a);
        self.q.push(q);
        // Full reorthogonalization, twice: this also performs the three-term recurrence.
        let b = orthonormalize_against(&self.q, &mut w);
        let scale_t = self
            .alpha
            .iter()
            .fold(0.0_f64, |m, x| m.max(x.abs()))
            .max(f64::MIN_POSITIVE);
        if b > 1e-10 * scale_t {
            self.last_beta = b;
            self.next = w;
        } else {
            self.last_beta = 0.0;
            if self.q.len() < n {
                let mut r = gaussian_vector(rng, n);
                let rn = orthonormalize_against(&self.q, &mut r);
                if rn < 1e-8 {
                    // Numerically the basis spans the space already.
                    self.next = vec![0.0; n];
                    return Ok(false);
                }
                self.next = r;
            }
        }
        Ok(true)
    }

    pub fn ritz(&self) -> Result<SymEigen> {
        tridiagonal_eigen(&self.alpha, &self.beta)
    }
}

/// Orders eigen-indices by `which`, best first.
pub(crate) fn wanted_order(values: &[f64], which: Which) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..values.len()).collect();
    match which {
        Which::LargestAlgebraic => idx.sort_by(|&a, &b| values[b].total_cmp(&values[a])),
        Which::LargestMagnitude => {
            idx.sort_by(|&a, &b| values[b].abs().total_cmp(&values[a].abs()))
        }
    }
    idx
}

/// Top-k eigenpairs of a symmetric operator by Lanczos with full reorthogonalization.
/// Memory: `max_iter` vectors of `dim` `f64`s.
pub fn lanczos<A: LinearOperator + ?Sized>(
    op: &mut A,
    cfg: &LanczosConfig,
    seed: u64,
) -> Result<EigenEstimate> {
    let n = op.dim();
    if cfg.k == 0 || cfg.k > n {
        return Err(CurvatureError::InvalidConfig {
            key: "k",
            reason: format!("must be in 1..={n} (the operator dimension), got {}", cfg.k),
        });
    }
    if cfg.max_iter < cfg.k {
        return Err(CurvatureError::InvalidConfig {
            key: "max_iter",
            reason: format!("must be at least k = {}, got {}", cfg.k, cfg.max_iter),
        });
    }
    let mut rng = rng(seed);
    let start = match &cfg.warm_start {
        Some(v) => {
            check_len("Lanczos warm start", v, n)?;
            v.clone()
        }
        None => gaussian_vector(&mut rng, n),
    };
    let mut kr = Krylov::new(start)?;
    let max_iter = cfg.max_iter.min(n);
    let mut converged = false;
    let mut ritz;
    loop {
        let more = kr.step(op, &mut rng)?;
        ritz = kr.ritz()?;
        let m = kr.alpha.len();
        if m >= cfg.k && kr.last_beta > 0.0 {
            let order = wanted_order(&ritz.values, cfg.which);
            converged = order[..cfg.k].iter().all(|&i| {
                let est = kr.last_beta * ritz.vectors[i][m - 1].abs();
                est <= cfg.tol * ritz.values[i].abs().max(f64::MIN_POSITIVE)
            });
        } else if !more || m >= n {
            converged = m >= cfg.k;
        }
        if converged || !more || m >= max_iter {
            break;
        }
    }
    let m = kr.alpha.len();
    let order = wanted_order(&ritz.values, cfg.which);
    let mut eigenvalues = Vec::with_capacity(cfg.k);
    let mut eigenvectors = Vec::with_capacity(cfg.k);
    let mut residuals = Vec::with_capacity(cfg.k);
    for &i in order.iter().take(cfg.k) {
        let s = &ritz.vectors[i];
        let mut y = vec![0.0; n];
        for (qj, sj) in kr.q.iter().zip(s) {
            axpy(*sj, qj, &mut y);
        }
        let ny = norm(&y);
        scale(1.0 / ny, &mut y);
        let theta = ritz.values[i];
        let res = if cfg.compute_residuals {
            let mut ay = op.apply(&y)?;
            kr.matvecs += 1;
            axpy(-theta, &y, &mut ay);
            norm(&ay)
        } else {
            kr.last_beta * s[m - 1].abs()
        };
        eigenvalues.push(theta);
        eigenvectors.push(y);
        residuals.push(res);
    }
    // After a breakdown on a low-rank operator every restart vector lies in the null space, so
    // the Ritz estimates are never checked again (`last_beta` stays 0) although the pairs are
    // exact: the true residuals, when computed, decide.
    if !converged && cfg.compute_residuals && eigenvalues.len() == cfg.k {
        converged = eigenvalues
            .iter()
            .zip(&residuals)
            .all(|(t, r)| *r <= cfg.tol * t.abs().max(f64::MIN_POSITIVE));
    }
    tracing::debug!(
        iterations = m,
        matvecs = kr.matvecs,
        converged,
        "lanczos done"
    );
    Ok(EigenEstimate {
        eigenvalues,
        eigenvectors,
        residuals,
        iterations: m,
        matvecs: kr.matvecs,
        converged,
    })
}
