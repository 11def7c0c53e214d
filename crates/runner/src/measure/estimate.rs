//! The estimators of `breakeven measure`, each returned with its error or convergence
//! diagnostics and its cost: λ_H^1..k (Lanczos), Tr(H) (Hutchinson or Hutch++), Tr(F) (exact
//! or Monte Carlo), λ_K^1 and Tr(K) (Gram matrix), the SLQ spectral density, and the per-tensor
//! (block-diagonal) λ_H^1 and Tr(H).
//!
//! BatchNorm runs in `BatchStats` mode by default (as in training-time tracking, `track.rs`):
//! the statistics of each batch of 128, or of the single example of a per-example pass (models
//! without BatchNorm take their per-example gradients from one batched pass instead); with
//! `--bn eval` in eval mode (running statistics, as PyHessian's `model.eval()`), where the loss
//! of a batch is the mean of its examples' losses. Either way repeated products are
//! deterministic and running statistics stay untouched.

use std::cell::Cell;

use breakeven_curvature::{
    covariance_summary, hutch_plus_plus, hutchinson, lanczos, spectral_density, BatchedLoss,
    CovarianceConfig, FisherKind, HessianOperator, HutchinsonConfig, LanczosConfig, LinearOperator,
    Reduction, SlqConfig, SpectralDensity, TraceEstimate,
};
use breakeven_models::{cross_entropy, Mode, Model};
use candle_core::{Tensor, Var};
use serde::Serialize;

use super::settings::{FisherSampling, Settings, TraceMethod};
use crate::error::RunError;
use crate::setup::EvalSet;

/// Cost of a measurement by kind of pass.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Cost {
    /// Hessian-vector products (Lanczos, residual checks, trace probes, SLQ, per-layer).
    pub hvp: u64,
    /// Per-example gradient backward passes (Tr(F): one per sampled or summed label; K: one
    /// per example).
    pub per_example_gradients: u64,
    /// Calls of the model's forward (a batch or a single example each).
    pub forward_passes: u64,
}

/// λ_H^1..k with Lanczos diagnostics.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Eigen {
    /// λ^1 ≥ … ≥ λ^k.
    pub values: Vec<f64>,
    /// True residuals `‖H y − θ y‖` of each Ritz pair (one extra product each).
    pub residuals: Vec<f64>,
    /// Krylov dimension reached.
    pub iterations: usize,
    /// Whether every wanted Ritz pair met `β |s| ≤ tol |θ|` within the step budget, or its true
    /// residual `‖H y − θ y‖ ≤ tol |θ|` (after a Lanczos breakdown on a low-rank H the Ritz
    /// estimate is not checked again, but the residual settles it).
    pub converged: bool,
    /// Products spent.
    pub matvecs: usize,
    /// `λ^k / λ^1` (the conditioning the paper tracks).
    pub ratio: Option<f64>,
}

/// A trace estimate with its standard error.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Trace {
    pub value: f64,
    /// Standard error of the stochastic estimator (0 when computed exactly).
    pub std_error: f64,
    /// `hutchinson`, `hutch++` or `exact` (unit vectors, small blocks only).
    pub method: String,
    /// Random probes of the stochastic part.
    pub probes: usize,
    /// Products spent.
    pub matvecs: usize,
}

impl Trace {
    fn from(t: TraceEstimate, method: &str) -> Self {
        Self {
            value: t.trace,
            std_error: t.std_error,
            method: method.into(),
            probes: t.samples,
            matvecs: t.matvecs,
        }
    }
}

/// Tr(F) with its errors.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct FisherEstimate {
    pub value: f64,
    /// Monte Carlo standard error of the label sampling (0 for `exact`); with one label per
    /// example it is the spread across examples, an upper bound.
    pub std_error: f64,
    /// Standard error from the choice of examples (spread of the per-example contributions /
    /// √n): the error of this value as an estimate of Tr(F) over the whole training set.
    pub std_error_over_examples: f64,
    /// `exact` (summed over all classes, weighted by the model's probabilities) or `mc`.
    pub method: String,
    /// Labels drawn per example (`mc`), or the number of classes (`exact`).
    pub labels_per_example: usize,
}

/// λ_K^1, Tr(K) and `λ_K^*/λ_K^1`: exact for the examples used (Gram matrix eigendecomposition).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Covariance {
    pub lambda_k1: f64,
    pub trace_k: f64,
    pub ratio: f64,
    /// `‖ḡ‖²`, the squared norm of the mean of the per-example gradients.
    pub mean_grad_sq_norm: f64,
    /// `1/n` (population), as the paper defines K.
    pub normalization: String,
    /// Standard error: 0, the Gram matrix of the examples used is decomposed exactly.
    pub std_error: f64,
}

/// λ_H^1 and Tr(H) of one parameter tensor's diagonal block of H.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Block {
    pub name: String,
    pub shape: Vec<usize>,
    pub dim: usize,
    pub lambda_1: Eigen,
    pub trace: Trace,
}

/// Calls the model in the measurement's BatchNorm mode and counts the forward passes.
#[derive(Debug)]
pub struct Counter {
    forwards: Cell<u64>,
    mode: Mode,
}

impl Counter {
    /// Forwards in `BatchStats` mode, or in `Eval` mode when `eval_bn`.
    pub fn new(eval_bn: bool) -> Self {
        Self {
            forwards: Cell::new(0),
            mode: if eval_bn {
                Mode::Eval
            } else {
                Mode::BatchStats
            },
        }
    }

    fn forward(&self, model: &dyn Model, x: &Tensor) -> candle_core::Result<Tensor> {
        self.count_forward();
        model.forward(x, self.mode)
    }

    /// Counts a forward pass run elsewhere (the batched per-example gradients' taped one).
    fn count_forward(&self) {
        self.forwards.set(self.forwards.get() + 1);
    }

    /// Forward passes so far.
    pub fn forwards(&self) -> u64 {
        self.forwards.get()
    }
}

/// The mean cross-entropy over `set` in its batches, as a [`BatchedLoss`] (for H).
fn batch_loss<'a>(
    model: &'a dyn Model,
    set: &'a EvalSet,
    counter: &'a Counter,
) -> BatchedLoss<impl FnMut(usize) -> candle_core::Result<(Tensor, usize)> + 'a> {
    BatchedLoss::new(set.batches.len(), Reduction::Mean, move |b| {
        let (x, y) = &set.batches[b];
        Ok((cross_entropy(&counter.forward(model, x)?, y)?, y.dim(0)?))
    })
}

fn eigen(e: breakeven_curvature::EigenEstimate) -> Eigen {
    let first = e.eigenvalues[0];
    Eigen {
        ratio: e
            .eigenvalues
            .last()
            .filter(|_| first != 0.0)
            .map(|l| l / first),
        values: e.eigenvalues,
        residuals: e.residuals,
        iterations: e.iterations,
        converged: e.converged,
        matvecs: e.matvecs,
    }
}

/// The Hessian of the mean loss over `set` with respect to `vars`.
pub fn hessian_op<'a>(
    model: &'a dyn Model,
    vars: Vec<Var>,
    set: &'a EvalSet,
    counter: &'a Counter,
) -> Result<impl LinearOperator + 'a, RunError> {
    Ok(HessianOperator::new(vars, batch_loss(model, set, counter))?)
}

/// λ^1..k of an operator by Lanczos with true residuals.
pub fn top_eigen<A: LinearOperator + ?Sized>(
    op: &mut A,
    k: usize,
    settings: &Settings,
    seed: u64,
) -> Result<Eigen, RunError> {
    let cfg = LanczosConfig {
        k: k.min(op.dim()),
        max_iter: settings.lanczos_steps.max(k),
        tol: settings.tol,
        compute_residuals: true,
        ..Default::default()
    };
    Ok(eigen(lanczos(op, &cfg, seed)?))
}

/// Tr of an operator by the configured method; blocks no larger than the probe budget are
/// summed exactly over the unit vectors (same cost or less, no error).
pub fn trace<A: LinearOperator + ?Sized>(
    op: &mut A,
    method: &TraceMethod,
    seed: u64,
) -> Result<Trace, RunError> {
    let n = op.dim();
    let budget = match method {
        TraceMethod::Hutchinson { probes } => *probes,
        TraceMethod::HutchPlusPlus { matvecs } => *matvecs,
    };
    if n <= budget {
        let mut e = vec![0.0; n];
        let mut t = 0.0;
        for i in 0..n {
            e[i] = 1.0;
            t += op.apply(&e)?[i];
            e[i] = 0.0;
        }
        return Ok(Trace {
            value: t,
            std_error: 0.0,
            method: "exact".into(),
            probes: 0,
            matvecs: n,
        });
    }
    Ok(match method {
        TraceMethod::Hutchinson { probes } => Trace::from(
            hutchinson(op, &HutchinsonConfig { samples: *probes }, seed)?,
            "hutchinson",
        ),
        TraceMethod::HutchPlusPlus { matvecs } => {
            Trace::from(hutch_plus_plus(op, *matvecs, seed)?, "hutch++")
        }
    })
}

/// Tr(F) on the examples of `set`, exactly or by sampling labels from the model.
pub fn fisher(
    model: &dyn Model,
    vars: &[Var],
    set: &EvalSet,
    sampling: FisherSampling,
    seed: u64,
    counter: &Counter,
    cost: &mut Cost,
) -> Result<FisherEstimate, RunError> {
    let kind = match sampling {
        FisherSampling::Exact => FisherKind::Exact,
        FisherSampling::MonteCarlo(samples) => FisherKind::MonteCarlo { samples, seed },
    };
    let (f, batched) = crate::track::fisher_trace_of(model, vars, set, set.len, kind, |x| {
        counter.forward(model, x)
    })?;
    if batched {
        // The taped forward of each label set (the softmax's forward is counted above; the
        // loop counts one per example).
        let label_sets = f.backward_passes / set.len.max(1);
        for _ in 0..label_sets {
            counter.count_forward();
        }
    }
    cost.per_example_gradients += f.backward_passes as u64;
    let over_examples = if f.per_example.len() >= 2 {
        let n = f.per_example.len() as f64;
        let var = f
            .per_example
            .iter()
            .map(|x| (x - f.trace).powi(2))
            .sum::<f64>()
            / (n - 1.0);
        (var / n).sqrt()
    } else {
        f64::INFINITY
    };
    let (method, labels) = match sampling {
        FisherSampling::Exact => ("exact", f.backward_passes / set.len.max(1)),
        FisherSampling::MonteCarlo(k) => ("mc", k),
    };
    Ok(FisherEstimate {
        value: f.trace,
        std_error: f.std_error,
        std_error_over_examples: over_examples,
        method: method.into(),
        labels_per_example: labels,
    })
}

/// λ_K^1, Tr(K) from per-example gradients of the examples of `set`.
pub fn covariance(
    model: &dyn Model,
    vars: &[Var],
    set: &EvalSet,
    counter: &Counter,
    cost: &mut Cost,
    k_star: Option<usize>,
) -> Result<Covariance, RunError> {
    let (grads, batched) =
        crate::track::example_gradients(model, vars, set, set.len, |x| counter.forward(model, x))?;
    if batched {
        // One forward pass of the whole set (the loop counts one per example).
        counter.count_forward();
    }
    cost.per_example_gradients += set.len as u64;
    let cov = covariance_summary(
        &grads,
        &CovarianceConfig {
            k: k_star.unwrap_or(1),
            ..Default::default()
        },
    )?;
    Ok(Covariance {
        lambda_k1: cov.eigenvalues.first().copied().unwrap_or(0.0),
        trace_k: cov.trace,
        ratio: crate::track::k_ratio(&cov, k_star),
        mean_grad_sq_norm: cov.mean_grad_sq_norm,
        normalization: "1/n".into(),
        std_error: 0.0,
    })
}

/// The SLQ spectral density of an operator.
pub fn density<A: LinearOperator + ?Sized>(
    op: &mut A,
    settings: &Settings,
    seed: u64,
) -> Result<SpectralDensity, RunError> {
    let cfg = SlqConfig {
        probes: settings.slq_probes,
        lanczos_steps: settings.slq_steps,
        ..Default::default()
    };
    Ok(spectral_density(op, &cfg, seed)?)
}

/// λ_H^1 and Tr(H) of each parameter tensor's diagonal block of the Hessian over `set`.
pub fn per_layer(
    model: &dyn Model,
    set: &EvalSet,
    settings: &Settings,
    seed: u64,
    counter: &Counter,
    cost: &mut Cost,
) -> Result<Vec<Block>, RunError> {
    let mut out = Vec::new();
    for (i, p) in model.params().iter().enumerate() {
        let mut op = hessian_op(model, vec![p.var.clone()], set, counter)?;
        let dim = op.dim();
        let block_seed = seed.wrapping_add(2 * i as u64);
        let lambda_1 = top_eigen(&mut op, 1, settings, block_seed)?;
        let trace = trace(&mut op, &settings.trace, block_seed.wrapping_add(1))?;
        cost.hvp += (lambda_1.matvecs + trace.matvecs) as u64;
        out.push(Block {
            name: p.name.clone(),
            shape: p.var.dims().to_vec(),
            dim,
            lambda_1,
            trace,
        });
    }
    Ok(out)
}
