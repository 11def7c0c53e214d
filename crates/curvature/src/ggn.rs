//! The generalized Gauss-Newton matrix `G = (1/N) Σ_n J_nᵀ M_n J_n` (J_n: Jacobian of the
//! logits of example n, M_n: Hessian of the loss in the logits). For softmax cross-entropy
//! `M_n = diag(p_n) − p_n p_nᵀ` and G equals the exact Fisher; for squared error
//! `ℓ = s‖f − y‖²` it is `M = 2s I`.
//!
//! Candle has no forward mode, so `J v` uses the double-backward trick: with a dummy `u`,
//! `Jᵀu = ∇_θ (z · u)` is linear in `u`, hence `J v = ∇_u ((Jᵀu) · v)`. It needs
//! `CANDLE_GRAD_DO_NOT_DETACH=1` like the Hessian (probed at construction).

use candle_core::{Tensor, Var};

use crate::error::{CurvatureError, Result};
use crate::linalg::{axpy, scale};
use crate::operator::{check_len, LinearOperator};
use crate::params::{grads_to_vec, graph_dot, num_params, vec_to_tensors};
use crate::second_order::ProbedThread;
use crate::softmax::{batch_logits, softmax_detached, LogitsFn};

/// The loss applied to the logits, which fixes `M_n`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum OutputLoss {
    /// `ℓ = −log softmax(z)_y`: `M = diag(p) − p pᵀ`.
    SoftmaxCrossEntropy,
    /// `ℓ = scale · ‖z − y‖²` (summed over outputs): `M = 2 · scale · I`. Cohen et al.'s MSE
    /// `0.5‖f − onehot‖²` is `scale = 0.5`; PyTorch's `MSELoss` (mean over C outputs too) is
    /// `scale = 1/C`.
    SquaredError {
        /// The factor in front of the squared norm.
        scale: f64,
    },
}

/// `Σ_n J_nᵀ middle(J_n v)` over all batches divided by N: the shared core of the GGN and the
/// Fisher operators. `middle(batch, logits, Jv)` returns the `B × C` matrix `r` with
/// `r_n = M_n (J v)_n`.
pub(crate) fn sandwich<F, M>(vars: &[Var], f: &mut F, v: &[f64], mut middle: M) -> Result<Vec<f64>>
where
    F: LogitsFn + ?Sized,
    M: FnMut(usize, &Tensor, &Tensor) -> Result<Tensor>,
{
    let vt = vec_to_tensors(v, vars)?;
    let mut acc = vec![0.0; num_params(vars)];
    let mut total = 0usize;
    for b in 0..f.num_batches() {
        let z = batch_logits(f, b)?;
        let n = z.dim(0)?;
        let u = Var::zeros(z.shape(), z.dtype(), z.device())?;
        let jt_u = (&z * u.as_tensor())?.sum_all()?.backward()?;
        let jv = match graph_dot(&jt_u, vars, &vt)? {
            Some(t) => t.backward()?.get(u.as_tensor()).cloned(),
            None => None,
        };
        let jv = match jv {
            Some(jv) => jv,
            None => z.zeros_like()?,
        };
        let r = middle(b, &z.detach(), &jv)?.detach();
        if r.dims() != z.dims() {
            return Err(CurvatureError::BadBatch {
                batch: b,
                reason: format!(
                    "middle factor has shape {:?}, logits {:?}",
                    r.dims(),
                    z.dims()
                ),
            });
        }
        let g = (&z * r)?.sum_all()?.backward()?;
        axpy(1.0, &grads_to_vec(&g, vars)?, &mut acc);
        total += n;
    }
    if total == 0 {
        return Err(CurvatureError::EmptyData("LogitsFn::num_batches() is 0"));
    }
    scale(1.0 / total as f64, &mut acc);
    Ok(acc)
}

/// `(diag p − p pᵀ) x` row by row.
pub(crate) fn softmax_hessian_times(z: &Tensor, x: &Tensor) -> candle_core::Result<Tensor> {
    let p = softmax_detached(z)?;
    let px = (&p * x)?;
    px.broadcast_sub(&p.broadcast_mul(&px.sum_keepdim(1)?)?)
}

/// The generalized Gauss-Newton operator of the mean loss over all batches.
pub struct GgnOperator<F> {
    vars: Vec<Var>,
    logits: F,
    loss: OutputLoss,
    dim: usize,
    probe: ProbedThread,
}

impl<F> std::fmt::Debug for GgnOperator<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgnOperator")
            .field("dim", &self.dim)
            .field("loss", &self.loss)
            .finish()
    }
}

impl<F: LogitsFn> GgnOperator<F> {
    /// Probes double backprop on this thread, then wraps the logits.
    pub fn new(vars: Vec<Var>, logits: F, loss: OutputLoss) -> Result<Self> {
        let probe = ProbedThread::new()?;
        if logits.num_batches() == 0 {
            return Err(CurvatureError::EmptyData("LogitsFn::num_batches() is 0"));
        }
        Ok(Self {
            dim: num_params(&vars),
            vars,
            logits,
            loss,
            probe,
        })
    }
}

impl<F: LogitsFn> LinearOperator for GgnOperator<F> {
    fn dim(&self) -> usize {
        self.dim
    }

    fn apply(&mut self, v: &[f64]) -> Result<Vec<f64>> {
        check_len("GgnOperator::apply input", v, self.dim)?;
        self.probe.ensure()?;
        let loss = self.loss;
        sandwich(&self.vars, &mut self.logits, v, |_, z, jv| match loss {
            OutputLoss::SoftmaxCrossEntropy => Ok(softmax_hessian_times(z, jv)?),
            OutputLoss::SquaredError { scale } => Ok((jv * (2.0 * scale))?),
        })
    }
}
