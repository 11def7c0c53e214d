//! The Hessian of a loss as an operator, by double backprop (Pearlmutter's `R{∇L}` written as
//! `∇(∇L · v)`): one HVP costs about two gradients plus the graph of the first backward.

use candle_core::Var;

use crate::error::{CurvatureError, Result};
use crate::linalg::{axpy, scale};
use crate::loss::{batch_loss, loss_and_gradient, LossFn};
use crate::operator::{check_len, LinearOperator};
use crate::params::{grads_to_vec, graph_dot, num_params, vec_to_tensors};
use crate::probe::ProbedThread;

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
}

impl<L> std::fmt::Debug for HessianOperator<L> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HessianOperator")
            .field("dim", &self.dim)
            .finish()
    }
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
        })
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
}

impl<L: LossFn> LinearOperator for HessianOperator<L> {
    fn dim(&self) -> usize {
        self.dim
    }

    fn apply(&mut self, v: &[f64]) -> Result<Vec<f64>> {
        check_len("HessianOperator::apply input", v, self.dim)?;
        self.probe.ensure()?;
        let vt = vec_to_tensors(v, &self.vars)?;
        let mut acc = vec![0.0; self.dim];
        let mut total = 0usize;
        for b in 0..self.loss.num_batches() {
            let (l, n) = batch_loss(&mut self.loss, b)?;
            let grads = l.backward()?;
            // A loss linear in the parameters has a constant gradient: no graph, Hv = 0.
            if let Some(s) = graph_dot(&grads, &self.vars, &vt)? {
                let hv = grads_to_vec(&s.backward()?, &self.vars)?;
                axpy(n as f64, &hv, &mut acc);
            }
            total += n;
        }
        scale(1.0 / total as f64, &mut acc);
        Ok(acc)
    }
}
