//! The Fisher information `F = E_x E_{ŷ∼p_θ(·|x)} [∇ℓ(x,ŷ) ∇ℓ(x,ŷ)ᵀ]` (labels sampled from the
//! model, NOT the data labels; SCIENCE.md §2) as an operator and its trace.
//!
//! Exact: `F = (1/N) Σ_n J_nᵀ (diag p_n − p_n p_nᵀ) J_n`, the softmax-CE Gauss-Newton.
//! Monte Carlo: `F̂ = (1/N) Σ_n (1/S) Σ_s J_nᵀ s_ns s_nsᵀ J_n` with `s = p − e_ŷ` the gradient of
//! `−log p_ŷ` in the logits: batched, no per-example loop, labels drawn from a seeded stream
//! per batch so that the operator stays deterministic.

use candle_core::{DType, IndexOp, Tensor, Var};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::detached::backward_detached;
use crate::error::{CurvatureError, Result};
use crate::ggn::{sandwich, softmax_hessian_times};
use crate::operator::{check_len, LinearOperator};
use crate::params::{grads_to_vec, num_params};
use crate::second_order::ProbedThread;
use crate::softmax::{batch_logits, log_softmax, softmax_detached, LogitsFn};
use crate::trace::mean_and_sem;

/// How the expectation over the model's labels is taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FisherKind {
    /// Summed exactly over the C classes.
    Exact,
    /// `samples` labels per example drawn from the model's softmax with a seeded generator.
    MonteCarlo {
        /// Labels per example.
        samples: usize,
        /// Seed of the label stream (one ChaCha stream per batch).
        seed: u64,
    },
}

/// Draws a class from probabilities `p` (summing to ≈ 1).
fn sample_class(p: &[f64], rng: &mut ChaCha8Rng) -> usize {
    let u: f64 = rng.random::<f64>() * p.iter().sum::<f64>();
    let mut c = 0.0;
    for (i, pi) in p.iter().enumerate() {
        c += pi;
        if u < c {
            return i;
        }
    }
    p.len() - 1
}

/// The per-batch label generator: seed, then stream = batch index.
fn batch_rng(seed: u64, batch: usize) -> ChaCha8Rng {
    let mut r = ChaCha8Rng::seed_from_u64(seed);
    r.set_stream(batch as u64);
    r
}

/// The Fisher of the mean loss over all batches of a [`LogitsFn`] (softmax cross-entropy).
pub struct FisherOperator<F> {
    vars: Vec<Var>,
    logits: F,
    kind: FisherKind,
    dim: usize,
    probe: ProbedThread,
}

impl<F> std::fmt::Debug for FisherOperator<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FisherOperator")
            .field("dim", &self.dim)
            .field("kind", &self.kind)
            .finish()
    }
}

impl<F: LogitsFn> FisherOperator<F> {
    /// Probes double backprop on this thread (the products use the `J v` trick).
    pub fn new(vars: Vec<Var>, logits: F, kind: FisherKind) -> Result<Self> {
        let probe = ProbedThread::new()?;
        if let FisherKind::MonteCarlo { samples: 0, .. } = kind {
            return Err(CurvatureError::InvalidConfig {
                key: "samples",
                reason: "need at least one sampled label per example".into(),
            });
        }
        Ok(Self {
            dim: num_params(&vars),
            vars,
            logits,
            kind,
            probe,
        })
    }

    /// Draws new labels from now on (Monte Carlo only).
    pub fn resample(&mut self, seed: u64) {
        if let FisherKind::MonteCarlo { samples, .. } = self.kind {
            self.kind = FisherKind::MonteCarlo { samples, seed };
        }
    }
}

impl<F: LogitsFn> LinearOperator for FisherOperator<F> {
    fn dim(&self) -> usize {
        self.dim
    }

    fn apply(&mut self, v: &[f64]) -> Result<Vec<f64>> {
        check_len("FisherOperator::apply input", v, self.dim)?;
        self.probe.ensure()?;
        let kind = self.kind;
        sandwich(&self.vars, &mut self.logits, v, |batch, z, jv| match kind {
            FisherKind::Exact => Ok(softmax_hessian_times(z, jv)?),
            FisherKind::MonteCarlo { samples, seed } => {
                let p = softmax_detached(z)?
                    .to_dtype(DType::F64)?
                    .to_vec2::<f64>()?;
                let jvh = jv.to_dtype(DType::F64)?.to_vec2::<f64>()?;
                let mut rng = batch_rng(seed, batch);
                let c = p.first().map_or(0, |r| r.len());
                let mut r = vec![0.0; p.len() * c];
                for (n, (pn, jn)) in p.iter().zip(&jvh).enumerate() {
                    for _ in 0..samples {
                        let y = sample_class(pn, &mut rng);
                        let s: Vec<f64> = (0..c)
                            .map(|k| pn[k] - if k == y { 1.0 } else { 0.0 })
                            .collect();
                        let sj: f64 = s.iter().zip(jn).map(|(a, b)| a * b).sum();
                        for k in 0..c {
                            r[n * c + k] += s[k] * sj / samples as f64;
                        }
                    }
                }
                Ok(Tensor::from_vec(r, (p.len(), c), z.device())?.to_dtype(z.dtype())?)
            }
        })
    }
}

/// `Tr(F)` with its diagnostics.
#[derive(Debug, Clone)]
pub struct FisherTrace {
    /// The estimate of `Tr(F)`.
    pub trace: f64,
    /// Standard error (0 for [`FisherKind::Exact`]).
    pub std_error: f64,
    /// Per-example contributions `E_ŷ ‖∇ log p_ŷ(x_n)‖²` (exact or sampled), in data order.
    pub per_example: Vec<f64>,
    /// Backward passes spent (the cost unit: C per example exact, S per example sampled).
    pub backward_passes: usize,
}

/// The labels [`fisher_trace`] draws for a [`LogitsFn`] whose batch `batch` holds ONE example
/// with softmax `probs`: `samples` classes from that batch's seeded stream. A caller that
/// computes the per-example gradients some other way (one batched pass of its own) gets the
/// same estimator with the same draws from these labels and [`fisher_trace_from_examples`].
pub fn monte_carlo_labels(probs: &[f64], seed: u64, batch: usize, samples: usize) -> Vec<usize> {
    let mut rng = batch_rng(seed, batch);
    (0..samples)
        .map(|_| sample_class(probs, &mut rng))
        .collect()
}

/// [`FisherTrace`] from each example's squared gradient norms, in data order: for
/// [`FisherKind::MonteCarlo`] `‖∇ log p_ŷ(x_n)‖²` of each sampled label ŷ, for
/// [`FisherKind::Exact`] the one value `Σ_c p_c ‖∇ log p_c(x_n)‖²`; `backward_passes` is the
/// cost to report. [`fisher_trace`] reduces its own loop's values through this function.
pub fn fisher_trace_from_examples(
    kind: FisherKind,
    examples: &[Vec<f64>],
    backward_passes: usize,
) -> Result<FisherTrace> {
    if examples.is_empty() {
        return Err(CurvatureError::EmptyData("no examples for Tr(F)"));
    }
    let mut per_example = Vec::with_capacity(examples.len());
    let mut mc_var = Vec::with_capacity(examples.len());
    for xs in examples {
        if xs.is_empty() {
            return Err(CurvatureError::EmptyData(
                "an example without a Tr(F) value",
            ));
        }
        let (m, sem) = mean_and_sem(xs);
        per_example.push(m);
        mc_var.push(sem * sem);
    }
    let n = per_example.len() as f64;
    let trace = per_example.iter().sum::<f64>() / n;
    let std_error = match kind {
        FisherKind::Exact => 0.0,
        // With several labels per example, the Monte Carlo variance of each example's mean is
        // estimated directly; with one, the spread across examples bounds it from above.
        FisherKind::MonteCarlo { samples, .. } if samples >= 2 => {
            mc_var.iter().sum::<f64>().sqrt() / n
        }
        FisherKind::MonteCarlo { .. } => mean_and_sem(&per_example).1,
    };
    Ok(FisherTrace {
        trace,
        std_error,
        per_example,
        backward_passes,
    })
}

/// `Tr(F) = (1/N) Σ_n E_{ŷ∼p_n} ‖∇_θ log p_ŷ(x_n)‖²`, exactly (`Σ_c p_c ‖∇ log p_c‖²`) or by
/// sampling. Per-example gradients come from one backward per (example, label) through the
/// batch's graph: give batches of ONE example for speed (a batch of B costs B× more).
pub fn fisher_trace<F: LogitsFn + ?Sized>(
    logits: &mut F,
    vars: &[Var],
    kind: FisherKind,
) -> Result<FisherTrace> {
    let mut examples = Vec::new();
    let mut backward_passes = 0;
    if logits.num_batches() == 0 {
        return Err(CurvatureError::EmptyData("LogitsFn::num_batches() is 0"));
    }
    for b in 0..logits.num_batches() {
        let z = batch_logits(logits, b)?;
        let logp = log_softmax(&z)?;
        let p = logp
            .detach()
            .exp()?
            .to_dtype(DType::F64)?
            .to_vec2::<f64>()?;
        let mut rng = match kind {
            FisherKind::MonteCarlo { seed, .. } => Some(batch_rng(seed, b)),
            FisherKind::Exact => None,
        };
        for (n, pn) in p.iter().enumerate() {
            let sq_norm = |c: usize| -> Result<f64> {
                let g = grads_to_vec(&backward_detached(&logp.i((n, c))?)?, vars)?;
                Ok(g.iter().map(|x| x * x).sum())
            };
            match (kind, rng.as_mut()) {
                (FisherKind::MonteCarlo { samples, .. }, Some(rng)) => {
                    let xs = (0..samples)
                        .map(|_| sq_norm(sample_class(pn, rng)))
                        .collect::<Result<Vec<f64>>>()?;
                    backward_passes += samples;
                    examples.push(xs);
                }
                _ => {
                    let mut t = 0.0;
                    for (c, pc) in pn.iter().enumerate() {
                        t += pc * sq_norm(c)?;
                    }
                    backward_passes += pn.len();
                    examples.push(vec![t]);
                }
            }
        }
    }
    fisher_trace_from_examples(kind, &examples, backward_passes)
}
