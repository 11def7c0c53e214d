//! Stochastic gradient descent with momentum, dampening, Nesterov and weight decay, with
//! exactly the update rule of `torch.optim.SGD` (see the crate docs).

use candle_core::backprop::GradStore;
use candle_core::{Tensor, Var};
use serde::{Deserialize, Serialize};

use crate::{LrSchedule, OptimError};

/// Hyper-parameters, with PyTorch's names and defaults (except `lr`, which has none there).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SgdConfig {
    /// Base learning rate; the schedule scales it per step.
    pub lr: f64,
    #[serde(default)]
    pub momentum: f64,
    /// τ in `buf = μ·buf + (1−τ)·d`.
    #[serde(default)]
    pub dampening: f64,
    /// L2 penalty added to the gradient before momentum (`d = g + wd·p`), not decoupled.
    #[serde(default)]
    pub weight_decay: f64,
    #[serde(default)]
    pub nesterov: bool,
    #[serde(default)]
    pub schedule: LrSchedule,
}

impl SgdConfig {
    /// Plain SGD at a constant learning rate.
    pub fn new(lr: f64) -> Self {
        SgdConfig {
            lr,
            momentum: 0.0,
            dampening: 0.0,
            weight_decay: 0.0,
            nesterov: false,
            schedule: LrSchedule::Constant,
        }
    }

    /// Ranges PyTorch enforces, plus momentum < 1 (μ ≥ 1 never forgets a gradient).
    pub fn validate(&self) -> Result<(), OptimError> {
        let bad = |field, value: f64, expected| {
            Err(OptimError::InvalidConfig {
                field,
                value: value.to_string(),
                expected,
            })
        };
        if !(self.lr.is_finite() && self.lr >= 0.0) {
            return bad("lr", self.lr, "a finite value >= 0");
        }
        if !(0.0..1.0).contains(&self.momentum) {
            return bad("momentum", self.momentum, "a value in [0, 1)");
        }
        if !(0.0..=1.0).contains(&self.dampening) {
            return bad("dampening", self.dampening, "a value in [0, 1]");
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return bad("weight_decay", self.weight_decay, "a finite value >= 0");
        }
        if self.nesterov && self.momentum == 0.0 {
            return bad("momentum", self.momentum, "> 0 when `nesterov` is true");
        }
        if self.nesterov && self.dampening != 0.0 {
            return bad("dampening", self.dampening, "0 when `nesterov` is true");
        }
        self.schedule.validate()
    }
}

/// The optimizer: its config, the number of steps taken and one lazily created momentum
/// buffer per parameter (created on that parameter's first step, as in PyTorch).
#[derive(Debug)]
pub struct Sgd {
    pub(crate) config: SgdConfig,
    pub(crate) step: u64,
    pub(crate) buffers: Vec<Option<Tensor>>,
}

impl Sgd {
    /// Validates `config`; `num_params` is the length of the parameter list it will step.
    pub fn new(config: SgdConfig, num_params: usize) -> Result<Self, OptimError> {
        config.validate()?;
        Ok(Sgd {
            config,
            step: 0,
            buffers: vec![None; num_params],
        })
    }

    pub fn config(&self) -> &SgdConfig {
        &self.config
    }

    /// Number of steps taken so far (the 0-based index of the next step).
    pub fn step_count(&self) -> u64 {
        self.step
    }

    /// The learning rate the next step will use.
    pub fn current_lr(&self) -> f64 {
        self.config.schedule.lr_at(self.config.lr, self.step)
    }

    /// One step with gradients aligned with `params`.
    pub fn step(&mut self, params: &[Var], grads: &[Tensor]) -> Result<(), OptimError> {
        if grads.len() != params.len() {
            return Err(OptimError::LengthMismatch {
                params: params.len(),
                grads: grads.len(),
            });
        }
        self.step_with(params, |i| Some(&grads[i]))
    }

    /// One step with the gradients of a backward pass; parameters absent from the store are
    /// skipped (no update, buffer kept), as PyTorch skips `p.grad is None`.
    pub fn step_grad_store(&mut self, params: &[Var], grads: &GradStore) -> Result<(), OptimError> {
        self.step_with(params, |i| grads.get(params[i].as_tensor()))
    }

    fn step_with<'a>(
        &mut self,
        params: &[Var],
        grad_of: impl Fn(usize) -> Option<&'a Tensor>,
    ) -> Result<(), OptimError> {
        if params.len() != self.buffers.len() {
            return Err(OptimError::InvalidState(format!(
                "optimizer built for {} parameters, stepped with {}",
                self.buffers.len(),
                params.len()
            )));
        }
        // Check everything before touching any parameter, so a bad call changes nothing.
        for (i, p) in params.iter().enumerate() {
            if let Some(g) = grad_of(i) {
                if g.dims() != p.dims() {
                    return Err(OptimError::ShapeMismatch {
                        what: "gradient",
                        index: i,
                        got: g.dims().to_vec(),
                        expected: p.dims().to_vec(),
                    });
                }
            }
        }
        let lr = self.current_lr();
        let SgdConfig {
            momentum,
            dampening,
            weight_decay,
            nesterov,
            ..
        } = self.config;
        for (i, p) in params.iter().enumerate() {
            let Some(g) = grad_of(i) else { continue };
            // Detach: a gradient from double backprop carries its own graph, which a momentum
            // buffer would otherwise keep alive from step to step.
            let p_now = p.as_detached_tensor();
            let mut d = g.detach();
            if weight_decay != 0.0 {
                d = d.add(&p_now.affine(weight_decay, 0.0)?)?;
            }
            if momentum != 0.0 {
                let buf = match &self.buffers[i] {
                    None => d.copy()?,
                    Some(buf) => buf
                        .affine(momentum, 0.0)?
                        .add(&d.affine(1.0 - dampening, 0.0)?)?,
                };
                d = if nesterov {
                    d.add(&buf.affine(momentum, 0.0)?)?
                } else {
                    buf.clone()
                };
                self.buffers[i] = Some(buf);
            }
            p.set(&p_now.sub(&d.affine(lr, 0.0)?)?)?;
        }
        self.step += 1;
        Ok(())
    }
}
