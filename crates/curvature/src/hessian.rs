//! The Hessian of a loss as an operator, by double backprop (Pearlmutter's `R{∇L}` written as
//! `∇(∇L · v)`): one HVP costs a forward, a graph-keeping backward and a second backward.
//! With [`HessianOperator::cache_graphs`] the first two are done once and reused by every
//! product while the parameters stay unchanged.

use std::hash::{Hash, Hasher};

use candle_core::{Tensor, Var};

use crate::detached::backward_detached;
use crate::error::{CurvatureError, Result};
use crate::linalg::{axpy, scale};
use crate::loss::{batch_loss, loss_and_gradient, LossFn};
use crate::operator::{check_len, LinearOperator};
use crate::params::{grads_to_vec, num_params, params_to_vec, vec_to_tensors};
use crate::second_order::ProbedThread;

/// The graph-keeping gradient tensors of one batch (one per `Var`, `None` where the loss does
/// not depend on it) and the batch size.
type BatchGraph = (Vec<Option<Tensor>>, usize);

/// `H = ∇²L` of the mean loss over all batches of a [`LossFn`], with respect to `vars` (all
/// parameters or any sub-block of them).
///
/// Each product loops over the batches: `Hv = Σ_b (B_b / N) ∇(∇L_b · v)`. Needs
/// `CANDLE_GRAD_DO_NOT_DETACH=1` (see [`crate::enable_double_backprop`]); construction fails
/// with a typed error instead of returning zero products.
pub struct HessianOperator<L> {
    vars: Vec<Var>,
    loss: L,
    dim: usize,
    probe: ProbedThread,
    cache_graphs: bool,
    /// Fingerprint of the parameters the cached graphs were built at, and the graphs.
    cached: Option<(u64, Vec<BatchGraph>)>,
}

impl<L> std::fmt::Debug for HessianOperator<L> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HessianOperator")
            .field("dim", &self.dim)
            .field("cache_graphs", &self.cache_graphs)
            .finish()
    }
}

/// A hash of the exact parameter bits: any change (an optimizer step, a finite-difference
/// perturbation) invalidates cached graphs.
fn fingerprint(vars: &[Var]) -> Result<u64> {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for x in params_to_vec(vars)? {
        x.to_bits().hash(&mut h);
    }
    Ok(h.finish())
}

impl<L: LossFn> HessianOperator<L> {
    /// Probes double backprop on this thread, then wraps the loss.
    pub fn new(vars: Vec<Var>, loss: L) -> Result<Self> {
        let probe = ProbedThread::new()?;
        if loss.num_batches() == 0 {
            return Err(CurvatureError::EmptyData("LossFn::num_batches() is 0"));
        }
        Ok(Self {
            dim: num_params(&vars),
            vars,
            loss,
            probe,
            cache_graphs: false,
            cached: None,
        })
    }

    /// Keep the forward and first-backward graphs of every batch between products, so that a
    /// product costs one backward. Memory: the graphs of ALL batches stay alive (for a
    /// SimpleCNN batch of 128, about 3 GB), so use it for one or a few batches. The cache is
    /// rebuilt automatically when the parameters' bits change; the loss must be deterministic.
    pub fn cache_graphs(mut self, yes: bool) -> Self {
        self.cache_graphs = yes;
        self.cached = None;
        self
    }

    /// Drops cached graphs (they are rebuilt on the next product).
    pub fn clear_cache(&mut self) {
        self.cached = None;
    }

    /// The parameters the Hessian is taken with respect to.
    pub fn vars(&self) -> &[Var] {
        &self.vars
    }

    /// The wrapped loss.
    pub fn loss_fn(&mut self) -> &mut L {
        &mut self.loss
    }

    /// Mean loss and its gradient over the data set (same batch weighting as the products).
    pub fn loss_and_gradient(&mut self) -> Result<(f64, Vec<f64>)> {
        loss_and_gradient(&mut self.loss, &self.vars)
    }

    /// The graph-keeping gradients of batch `b` (one per `Var`) and its size.
    fn first_backward(&mut self, b: usize) -> Result<BatchGraph> {
        let (l, n) = batch_loss(&mut self.loss, b)?;
        let grads = l.backward()?;
        Ok((
            self.vars
                .iter()
                .map(|v| grads.get(v.as_tensor()).cloned())
                .collect(),
            n,
        ))
    }
}

/// `∇(∇L_b · v)` from the graph-keeping gradient tensors of one batch (`None` for a `Var` the
/// loss does not depend on); `None` when the gradient carries no graph (a linear loss: Hv = 0).
fn hvp_of_batch(grads: &[Option<Tensor>], vars: &[Var], vt: &[Tensor]) -> Result<Option<Vec<f64>>> {
    let mut s: Option<Tensor> = None;
    for (g, vp) in grads.iter().zip(vt) {
        if let Some(g) = g {
            let term = (g * vp)?.sum_all()?;
            s = Some(match s {
                None => term,
                Some(s) => (s + term)?,
            });
        }
    }
    match s {
        // Nothing differentiates Hv again: no graph needs keeping (detached.rs).
        Some(s) => Ok(Some(grads_to_vec(&backward_detached(&s)?, vars)?)),
        None => Ok(None),
    }
}

impl<L: LossFn> LinearOperator for HessianOperator<L> {
    fn dim(&self) -> usize {
        self.dim
    }

    fn apply(&mut self, v: &[f64]) -> Result<Vec<f64>> {
        check_len("HessianOperator::apply input", v, self.dim)?;
        self.probe.ensure()?;
        let vt = vec_to_tensors(v, &self.vars)?;
        let nb = self.loss.num_batches();
        let mut acc = vec![0.0; self.dim];
        let mut total = 0usize;
        let mut add = |hv: Option<Vec<f64>>, n: usize| {
            if let Some(hv) = hv {
                axpy(n as f64, &hv, &mut acc);
            }
            total += n;
        };
        if self.cache_graphs {
            let fp = fingerprint(&self.vars)?;
            if self.cached.as_ref().map(|(f, _)| *f) != Some(fp) {
                self.cached = None;
                let graphs = (0..nb)
                    .map(|b| self.first_backward(b))
                    .collect::<Result<Vec<_>>>()?;
                self.cached = Some((fp, graphs));
            }
            for (g, n) in self.cached.iter().flat_map(|(_, g)| g) {
                add(hvp_of_batch(g, &self.vars, &vt)?, *n);
            }
        } else {
            for b in 0..nb {
                let (g, n) = self.first_backward(b)?;
                add(hvp_of_batch(&g, &self.vars, &vt)?, n);
            }
        }
        scale(1.0 / total as f64, &mut acc);
        Ok(acc)
    }
}
