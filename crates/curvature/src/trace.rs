//! Stochastic trace estimators: Hutchinson (Rademacher probes) and Hutch++ (Meyer et al. 2021,
//! a low-rank sketch plus Hutchinson on the deflated rest), each with its standard error.

use crate::error::{CurvatureError, Result};
use crate::linalg::dot;
use crate::operator::{check_len, LinearOperator};
use crate::random::{orthonormalize_against, rademacher_vector, rng};

/// A trace estimate.
#[derive(Debug, Clone)]
pub struct TraceEstimate {
    /// The estimate of `Tr(A)`.
    pub trace: f64,
    /// Standard error of the stochastic part (sample standard deviation / √samples).
    pub std_error: f64,
    /// Random probes used by the stochastic part.
    pub samples: usize,
    /// Operator products spent.
    pub matvecs: usize,
}

/// Settings of [`hutchinson`].
#[derive(Debug, Clone)]
pub struct HutchinsonConfig {
    /// Number of Rademacher probes (= products).
    pub samples: usize,
}

impl Default for HutchinsonConfig {
    fn default() -> Self {
        Self { samples: 100 }
    }
}

/// Mean and standard error of the mean.
pub(crate) fn mean_and_sem(xs: &[f64]) -> (f64, f64) {
    let m = xs.len() as f64;
    let mean = xs.iter().sum::<f64>() / m;
    if xs.len() < 2 {
        return (mean, f64::INFINITY);
    }
    let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (m - 1.0);
    (mean, (var / m).sqrt())
}

/// Hutchinson: `Tr(A) ≈ mean vᵀ A v` over Rademacher `v`.
pub fn hutchinson<A: LinearOperator + ?Sized>(
    op: &mut A,
    cfg: &HutchinsonConfig,
    seed: u64,
) -> Result<TraceEstimate> {
    if cfg.samples < 2 {
        return Err(CurvatureError::InvalidConfig {
            key: "samples",
            reason: format!(
                "need at least 2 probes for a standard error, got {}",
                cfg.samples
            ),
        });
    }
    let n = op.dim();
    let mut r = rng(seed);
    let mut xs = Vec::with_capacity(cfg.samples);
    for _ in 0..cfg.samples {
        let v = rademacher_vector(&mut r, n);
        let av = op.apply(&v)?;
        check_len("operator output", &av, n)?;
        xs.push(dot(&v, &av));
    }
    let (trace, std_error) = mean_and_sem(&xs);
    Ok(TraceEstimate {
        trace,
        std_error,
        samples: cfg.samples,
        matvecs: cfg.samples,
    })
}

/// Hutch++ with a total budget of `matvecs` products (a multiple of 3 is used best): a third
/// sketches the top subspace `Q = orth(A S)`, a third computes `Tr(QᵀAQ)` exactly, the rest
/// runs Hutchinson on `(I − QQᵀ) A (I − QQᵀ)`. Beats Hutchinson when the spectrum decays.
pub fn hutch_plus_plus<A: LinearOperator + ?Sized>(
    op: &mut A,
    matvecs: usize,
    seed: u64,
) -> Result<TraceEstimate> {
    let n = op.dim();
    let sketch = matvecs / 3;
    let probes = matvecs - 2 * sketch;
    if sketch == 0 || probes < 2 {
        return Err(CurvatureError::InvalidConfig {
            key: "matvecs",
            reason: format!("Hutch++ needs a budget of at least 4 products, got {matvecs}"),
        });
    }
    let mut r = rng(seed);
    let mut basis: Vec<Vec<f64>> = Vec::with_capacity(sketch);
    let mut used = 0;
    for _ in 0..sketch {
        let s = rademacher_vector(&mut r, n);
        let mut y = op.apply(&s)?;
        check_len("operator output", &y, n)?;
        used += 1;
        let ny = crate::linalg::norm(&y);
        if orthonormalize_against(&basis, &mut y) > 1e-10 * ny.max(f64::MIN_POSITIVE)
            && basis.len() < n
        {
            basis.push(y);
        }
    }
    let mut low_rank = 0.0;
    for q in &basis {
        let aq = op.apply(q)?;
        used += 1;
        low_rank += dot(q, &aq);
    }
    let mut xs = Vec::with_capacity(probes);
    for _ in 0..probes {
        let mut g = rademacher_vector(&mut r, n);
        for _ in 0..2 {
            for q in &basis {
                let c = dot(q, &g);
                crate::linalg::axpy(-c, q, &mut g);
            }
        }
        let ag = op.apply(&g)?;
        used += 1;
        xs.push(dot(&g, &ag));
    }
    let (rest, std_error) = mean_and_sem(&xs);
    Ok(TraceEstimate {
        trace: low_rank + rest,
        std_error,
        samples: probes,
        matvecs: used,
    })
}
