//! One-call summaries of an operator's spectrum for trajectory logging: λ_H^1..k, Tr(H) and
//! λ_H^k/λ_H^1 (the break-even paper's quantities; which k it used is unverified, so k is a knob).

use crate::error::Result;
use crate::lanczos::{lanczos, EigenEstimate, LanczosConfig};
use crate::operator::{Counted, LinearOperator};
use crate::trace::{hutch_plus_plus, hutchinson, HutchinsonConfig, TraceEstimate};

/// How the trace is estimated.
#[derive(Debug, Clone)]
pub enum TraceMethod {
    /// Plain Hutchinson.
    Hutchinson(HutchinsonConfig),
    /// Hutch++ with this total number of products.
    HutchPlusPlus {
        /// Product budget.
        matvecs: usize,
    },
}

/// Settings of [`hessian_summary`].
#[derive(Debug, Clone)]
pub struct HessianSummaryConfig {
    /// Top-k eigenvalues (`k` is the λ^k of the conditioning ratio).
    pub lanczos: LanczosConfig,
    /// Trace estimator.
    pub trace: TraceMethod,
}

impl Default for HessianSummaryConfig {
    fn default() -> Self {
        Self {
            lanczos: LanczosConfig {
                k: 5,
                tol: 1e-3,
                ..Default::default()
            },
            trace: TraceMethod::HutchPlusPlus { matvecs: 60 },
        }
    }
}

/// The spectrum summary of a symmetric operator (H, F, GGN, K).
#[derive(Debug, Clone)]
pub struct HessianSummary {
    /// λ^1 ≥ … ≥ λ^k (or by magnitude, per the Lanczos config).
    pub eigenvalues: Vec<f64>,
    /// `Tr` with its standard error.
    pub trace: TraceEstimate,
    /// `λ^k / λ^1`.
    pub conditioning: f64,
    /// The Lanczos run (eigenvectors for warm starts, residuals, convergence).
    pub lanczos: EigenEstimate,
    /// Products spent in total.
    pub matvecs: usize,
}

/// Lanczos for the top-k eigenvalues (seeded by `seed`) and a trace estimate (seeded by
/// `seed + 1`) of any operator; named for its main use on [`crate::HessianOperator`].
pub fn hessian_summary<A: LinearOperator + ?Sized>(
    op: &mut A,
    cfg: &HessianSummaryConfig,
    seed: u64,
) -> Result<HessianSummary> {
    let mut counted = Counted::new(op);
    let eig = lanczos(&mut counted, &cfg.lanczos, seed)?;
    let trace = match &cfg.trace {
        TraceMethod::Hutchinson(h) => hutchinson(&mut counted, h, seed.wrapping_add(1))?,
        TraceMethod::HutchPlusPlus { matvecs } => {
            hutch_plus_plus(&mut counted, *matvecs, seed.wrapping_add(1))?
        }
    };
    let first = eig.eigenvalues[0];
    let last = *eig.eigenvalues.last().unwrap_or(&first);
    tracing::debug!(
        lambda_1 = first,
        trace = trace.trace,
        matvecs = counted.matvecs,
        "hessian summary"
    );
    Ok(HessianSummary {
        conditioning: if first != 0.0 { last / first } else { 0.0 },
        eigenvalues: eig.eigenvalues.clone(),
        trace,
        lanczos: eig,
        matvecs: counted.matvecs,
    })
}
