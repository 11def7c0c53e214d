//! One penalized training step: the gradient of L_B(θ; y) + α·P for the training loop.
//!
//! BatchNorm: the plain loss pass runs in `Mode::Train` and so updates the running statistics
//! exactly once per step; every extra pass of the penalty (a sub-batch forward, the perturbed
//! passes of the finite difference) runs in `Mode::BatchStats`. The penalty is a function of
//! the training-mode loss (batch statistics), so its passes must see batch statistics too, but
//! they must not move the running statistics a second time. When P is taken on the whole batch,
//! the plain pass's logits are reused: they are the same function of θ.

use breakeven_curvature::{
    backward_detached, backward_first_order, check_double_backprop, default_rel_step,
    directional_difference, fd_step, gradients, norm, with_perturbed, CurvatureError, FdScheme,
};
use breakeven_models::{cross_entropy, Mode, Model};
use candle_core::{DType, Tensor, Var};
use rand::RngCore;

use crate::config::{GradMethod, PenaltyConfig, PenaltyKind, PenaltyNorm};
use crate::labels::{sample_fisher_labels, uniform_labels};
use crate::PenaltyError;

/// The network a penalized step differentiates: `logits(x, mode)`, a function of `params`.
pub type Logits<'a> = dyn Fn(&Tensor, Mode) -> candle_core::Result<Tensor> + 'a;

/// What a step hands to the optimizer and to the metrics log.
#[derive(Debug, Clone)]
pub struct PenalizedStep {
    /// ∇(L + α·P) per parameter, aligned with `model.params()`, detached.
    pub grads: Vec<Tensor>,
    /// The mini-batch loss L_B(θ; y) (without the penalty).
    pub loss: f64,
    /// P (not multiplied by α) when it was computed this step.
    pub penalty: Option<f64>,
    /// Whether this step carried the penalty (`step % every == 0`).
    pub applied: bool,
    /// The plain pass's logits (`Mode::Train`, whole batch), detached: the step's accuracy
    /// without another forward pass.
    pub logits: Tensor,
}

/// A validated penalty, called once per training step.
#[derive(Debug, Clone)]
pub struct Penalizer {
    config: PenaltyConfig,
}

/// Where the labels of the penalty pass come from.
enum Labels<'a> {
    Draw(&'a mut dyn RngCore),
    Fixed(&'a Tensor),
}

impl Penalizer {
    /// Validates `config` against the training batch size.
    pub fn new(config: PenaltyConfig, batch_size: usize) -> Result<Self, PenaltyError> {
        config.validate(Some(batch_size))?;
        Ok(Penalizer { config })
    }

    pub fn config(&self) -> &PenaltyConfig {
        &self.config
    }

    /// Whether step `step` (0-based) carries the penalty.
    pub fn applies_at(&self, step: u64) -> bool {
        step.is_multiple_of(self.config.every)
    }

    /// One step on batch (`x`, `y`: u32 labels); FP/GPr labels are drawn from `rng`.
    pub fn step<M: Model + ?Sized>(
        &self,
        model: &M,
        x: &Tensor,
        y: &Tensor,
        step: u64,
        rng: &mut dyn RngCore,
    ) -> Result<PenalizedStep, PenaltyError> {
        let params = vars_of(model);
        let logits = |x: &Tensor, mode: Mode| model.forward(x, mode);
        self.run(&params, &logits, x, y, step, Labels::Draw(rng))
    }

    /// As [`Penalizer::step`] for any network given as its parameters and a logits closure
    /// `logits(x, mode)` (`Mode::Train` for the step's plain pass, `Mode::BatchStats` for the
    /// penalty's extra passes); the gradients come back aligned with `params`.
    pub fn step_fn(
        &self,
        params: &[Var],
        logits: &Logits<'_>,
        x: &Tensor,
        y: &Tensor,
        step: u64,
        rng: &mut dyn RngCore,
    ) -> Result<PenalizedStep, PenaltyError> {
        self.run(params, logits, x, y, step, Labels::Draw(rng))
    }

    /// As [`Penalizer::step`] with the FP/GPr labels given (length = the penalty's sub-batch),
    /// so that two evaluations share them (finite-difference checks). GP and GPx refuse.
    pub fn step_with_labels<M: Model + ?Sized>(
        &self,
        model: &M,
        x: &Tensor,
        y: &Tensor,
        step: u64,
        labels: &Tensor,
    ) -> Result<PenalizedStep, PenaltyError> {
        if !matches!(self.config.kind, PenaltyKind::Fp | PenaltyKind::Gpr) {
            return Err(PenaltyError::BadBatch(format!(
                "fixed penalty labels given to {:?}, which uses the true labels",
                self.config.kind
            )));
        }
        let params = vars_of(model);
        let logits = |x: &Tensor, mode: Mode| model.forward(x, mode);
        self.run(&params, &logits, x, y, step, Labels::Fixed(labels))
    }

    fn run(
        &self,
        params: &[Var],
        model: &Logits<'_>,
        x: &Tensor,
        y: &Tensor,
        step: u64,
        labels: Labels<'_>,
    ) -> Result<PenalizedStep, PenaltyError> {
        let cfg = &self.config;
        let n = x.dim(0)?;
        if y.dims() != [n] {
            return Err(PenaltyError::BadBatch(format!(
                "labels have shape {:?}, expected [{n}] for inputs {:?}",
                y.dims(),
                x.dims()
            )));
        }
        let m = cfg.sub_batch.unwrap_or(n);
        if m > n {
            return Err(PenaltyError::SubBatchTooLarge {
                sub_batch: m,
                batch: n,
            });
        }
        let applied = self.applies_at(step);
        let double = matches!(cfg.method, GradMethod::DoubleBackprop);
        if applied && double {
            check_double_backprop().map_err(|e| match e {
                CurvatureError::DoubleBackpropDisabled { got } => {
                    PenaltyError::SecondOrderUnavailable { got, expected: 6.0 }
                }
                other => PenaltyError::Curvature(other),
            })?;
        }
        let whole = m == n;

        // Plain pass. For GPx on the whole batch the input is a Var, so this one backward also
        // gives ∇_X L.
        let x_var = if applied && cfg.kind == PenaltyKind::Gpx && whole {
            Some(Var::from_tensor(x)?)
        } else {
            None
        };
        let logits = model(x_var.as_ref().map_or(x, |v| v.as_tensor()), Mode::Train)?;
        let loss_t = cross_entropy(&logits, y)?;
        let loss = scalar(&loss_t)?;
        if !loss.is_finite() {
            return Err(PenaltyError::Diverged {
                step,
                what: "loss",
                value: loss,
            });
        }
        // With double backprop and α ≠ 0, L is differentiated together with α·P in the second
        // backward pass (of T = L + α·P), which saves FP and GPr a separate plain backward. The
        // plain gradient is computed alone only where it is used: plain steps, α = 0 (handed
        // back untouched), finite differences, and GP/GPx on the whole batch (where it is g).
        let fuse = applied && double && cfg.alpha != 0.0;
        let plain_needed =
            !fuse || (whole && matches!(cfg.kind, PenaltyKind::Gp | PenaltyKind::Gpx));
        // GP/GPx on the whole batch differentiate this gradient again; every other plain
        // gradient is only read: a first-order pass, directly on this thread.
        let again =
            applied && double && whole && matches!(cfg.kind, PenaltyKind::Gp | PenaltyKind::Gpx);
        let plain_store = if plain_needed {
            Some(if again {
                loss_t.backward()?
            } else {
                backward_first_order(&loss_t)?
            })
        } else {
            None
        };
        let plain = match &plain_store {
            Some(store) => Some(gradients(store, params)?),
            None => None,
        };
        if !applied {
            return Ok(PenalizedStep {
                grads: plain
                    .unwrap_or_default()
                    .iter()
                    .map(Tensor::detach)
                    .collect(),
                loss,
                penalty: None,
                applied,
                logits: logits.detach(),
            });
        }

        let ctx = Ctx { params, step };
        let x_m = x.narrow(0, 0, m)?;
        let y_m = y.narrow(0, 0, m)?;
        let (penalty, dp) = if cfg.kind.is_theta() {
            let pen_logits = if whole {
                logits.clone()
            } else {
                model(&x_m, Mode::BatchStats)?
            };
            let pen_labels = match (cfg.kind, labels) {
                (PenaltyKind::Gp, _) => y_m.clone(),
                (_, Labels::Fixed(l)) => {
                    if l.dims() != [m] {
                        return Err(PenaltyError::BadBatch(format!(
                            "fixed penalty labels have shape {:?}, expected [{m}]",
                            l.dims()
                        )));
                    }
                    l.to_dtype(DType::U32)?
                }
                (PenaltyKind::Fp, Labels::Draw(rng)) => sample_fisher_labels(&pen_logits, rng)?,
                (_, Labels::Draw(rng)) => uniform_labels(m, pen_logits.dim(1)?, x.device(), rng)?,
            };
            // With the true labels on the whole batch, g is the plain gradient.
            let g = match (&plain, cfg.kind == PenaltyKind::Gp && whole) {
                (Some(plain), true) => plain.clone(),
                _ => {
                    let pen_loss = cross_entropy(&pen_logits, &pen_labels)?;
                    // Double backprop differentiates g again; a finite difference only reads it.
                    let store = if double {
                        pen_loss.backward()?
                    } else {
                        backward_first_order(&pen_loss)?
                    };
                    gradients(&store, params)?
                }
            };
            if double {
                ctx.by_double_backprop(&g, cfg.norm, fuse.then_some((&loss_t, cfg.alpha)))?
            } else {
                let eval = |shift: f64, dir: &[Tensor]| {
                    with_perturbed(params, dir, shift, || {
                        let z = model(&x_m, Mode::BatchStats)?;
                        gradients(
                            &backward_first_order(&cross_entropy(&z, &pen_labels)?)?,
                            params,
                        )
                    })
                };
                let theta: Vec<Tensor> = params.iter().map(|p| p.as_tensor().clone()).collect();
                ctx.by_finite_difference(&g, &g, norm(&theta)?, &cfg.method, cfg.norm, eval)?
            }
        } else {
            // GPx: g = ∇_X L on the sub-batch, taken with the input as a Var.
            let (xv, store) = match (&x_var, plain_store) {
                (Some(xv), Some(store)) if whole => (xv.clone(), store),
                _ => {
                    let xv = Var::from_tensor(&x_m)?;
                    let z = model(xv.as_tensor(), Mode::BatchStats)?;
                    let store = cross_entropy(&z, &y_m)?.backward()?;
                    (xv, store)
                }
            };
            let gx = vec![store
                .get(xv.as_tensor())
                .cloned()
                .unwrap_or(xv.as_tensor().zeros_like()?)];
            if double {
                ctx.by_double_backprop(&gx, cfg.norm, fuse.then_some((&loss_t, cfg.alpha)))?
            } else {
                let g_theta = gradients(&store, params)?;
                let x_m = x_m.detach();
                let eval = |shift: f64, dir: &[Tensor]| {
                    let z = model(&(&x_m + dir[0].affine(shift, 0.0)?)?, Mode::BatchStats)?;
                    gradients(&backward_first_order(&cross_entropy(&z, &y_m)?)?, params)
                };
                let x_norm = norm(std::slice::from_ref(&x_m))?;
                ctx.by_finite_difference(&gx, &g_theta, x_norm, &cfg.method, cfg.norm, eval)?
            }
        };
        if !penalty.is_finite() {
            return Err(PenaltyError::Diverged {
                step,
                what: "penalty",
                value: penalty,
            });
        }
        let dp_norm = norm(&dp)?;
        if !dp_norm.is_finite() {
            return Err(PenaltyError::Diverged {
                step,
                what: "penalty gradient",
                value: dp_norm,
            });
        }
        // Fused: `dp` already is ∇(L + α·P). α = 0 hands back the plain gradient untouched
        // (bit for bit), the penalty still computed and reported.
        let grads = match plain {
            _ if fuse => dp,
            // A plain gradient kept for differentiation (GP/GPx on the whole batch) took the
            // graph-keeping backward, whose BatchNorm kernel differs from a plain step's in the
            // low bits: take the plain step's own pass again.
            Some(_) if cfg.alpha == 0.0 && again => {
                gradients(&backward_first_order(&loss_t)?, params)?
                    .iter()
                    .map(Tensor::detach)
                    .collect()
            }
            Some(plain) if cfg.alpha == 0.0 => plain.iter().map(Tensor::detach).collect(),
            Some(plain) => plain
                .iter()
                .zip(&dp)
                .map(|(g, d)| g.detach().add(&d.detach().affine(cfg.alpha, 0.0)?))
                .collect::<candle_core::Result<Vec<_>>>()?,
            None => {
                let msg = "internal: no plain gradient for an unfused step";
                return Err(candle_core::Error::Msg(msg.into()).into());
            }
        };
        tracing::trace!(step, loss, penalty, "penalized step");
        Ok(PenalizedStep {
            grads,
            loss,
            penalty: Some(penalty),
            applied,
            logits: logits.detach(),
        })
    }
}

/// The largest relative disagreement between the finite-difference ∇P at steps h and h/4 that
/// the first penalized step of a run accepts (issue 18: FD must be within 5% to be used).
pub const FD_AGREEMENT: f64 = 0.05;

struct Ctx<'a> {
    params: &'a [Var],
    step: u64,
}

impl Ctx<'_> {
    /// P from `g` (which carries its graph) and ∇_θ P by a second backward pass. With
    /// `fuse_with = Some((L, α))` that pass differentiates L + α·P instead, and the returned
    /// gradient is the step's total.
    fn by_double_backprop(
        &self,
        g: &[Tensor],
        which: PenaltyNorm,
        fuse_with: Option<(&Tensor, f64)>,
    ) -> Result<(f64, Vec<Tensor>), PenaltyError> {
        let mut sq = g[0].sqr()?.sum_all()?;
        for gi in &g[1..] {
            sq = (sq + gi.sqr()?.sum_all()?)?;
        }
        let p = match which {
            PenaltyNorm::Squared => sq,
            PenaltyNorm::Plain => sq.sqrt()?,
        };
        let value = scalar(&p)?;
        if !value.is_finite() {
            return Err(PenaltyError::Diverged {
                step: self.step,
                what: "penalty",
                value,
            });
        }
        let target = match fuse_with {
            Some((loss, alpha)) => (loss + p.affine(alpha, 0.0)?)?,
            None => p,
        };
        // Nothing differentiates ∇(L + α·P) again: its pass runs where Candle keeps no graph.
        let dp = gradients(&backward_detached(&target)?, self.params)?
            .iter()
            .map(Tensor::detach)
            .collect();
        Ok((value, dp))
    }

    /// P from `g` and ∇_θ P from gradients at shifted points: `eval(s, dir)` is ∇_θ L with the
    /// perturbed quantity (θ, or the input batch for GPx, of norm `base_norm`) moved by s·dir;
    /// `g_theta` is ∇_θ L unshifted (for `one_sided`). ∇‖g‖² = 2Hg with Hg by curvature's
    /// finite difference along g, its step from curvature's rule (`fd_step`).
    fn by_finite_difference(
        &self,
        g: &[Tensor],
        g_theta: &[Tensor],
        base_norm: f64,
        method: &GradMethod,
        which: PenaltyNorm,
        eval: impl Fn(f64, &[Tensor]) -> candle_core::Result<Vec<Tensor>>,
    ) -> Result<(f64, Vec<Tensor>), PenaltyError> {
        let GradMethod::FiniteDifference {
            rel_step,
            one_sided,
            checked,
        } = *method
        else {
            unreachable!("called for the finite-difference method only")
        };
        let g: Vec<Tensor> = g.iter().map(Tensor::detach).collect();
        let g_norm = norm(&g)?;
        let value = match which {
            PenaltyNorm::Squared => g_norm * g_norm,
            PenaltyNorm::Plain => g_norm,
        };
        if !g_norm.is_finite() {
            return Err(PenaltyError::Diverged {
                step: self.step,
                what: "penalty",
                value,
            });
        }
        if g_norm == 0.0 {
            // Hg = 0 at g = 0; the plain norm's subgradient 0 is taken there.
            let zeros = self
                .params
                .iter()
                .map(|p| p.as_tensor().zeros_like())
                .collect::<candle_core::Result<_>>()?;
            return Ok((value, zeros));
        }
        let scheme = if one_sided {
            FdScheme::OneSided
        } else {
            FdScheme::Central
        };
        let h = rel_step.unwrap_or_else(|| default_rel_step(g[0].dtype(), scheme));
        let eps = fd_step(h, base_norm, g_norm);
        let g_at_zero: Vec<Tensor> = g_theta.iter().map(Tensor::detach).collect();
        let hg = directional_difference(eps, scheme, Some(&g_at_zero), |s| eval(s, &g))?;
        if self.step == 0 && checked {
            // The first penalized step of a run checks that the difference means something for
            // this model at this precision: the same product at a quarter of the step must
            // agree. On ReLU/max-pool nets the move crosses kinks whose jumps do not shrink with
            // the step, and in f32 no step fixes that (docs/results/cpu-speed.md, penalties).
            let finer =
                directional_difference(eps / 4.0, scheme, Some(&g_at_zero), |s| eval(s, &g))?;
            let diff = hg
                .iter()
                .zip(&finer)
                .map(|(a, b)| a - b)
                .collect::<candle_core::Result<Vec<_>>>()?;
            let disagreement = norm(&diff)? / norm(&hg)?;
            if disagreement.is_nan() || disagreement > FD_AGREEMENT {
                return Err(PenaltyError::FiniteDifferenceUnreliable {
                    dtype: g[0].dtype(),
                    rel_step: h,
                    disagreement,
                    bound: FD_AGREEMENT,
                });
            }
        }
        // ∇‖g‖² = 2Hg; ∇‖g‖ = Hg/‖g‖.
        let scale = match which {
            PenaltyNorm::Squared => 2.0,
            PenaltyNorm::Plain => 1.0 / g_norm,
        };
        let dp = hg
            .iter()
            .map(|t| t.affine(scale, 0.0))
            .collect::<candle_core::Result<Vec<_>>>()?;
        Ok((value, dp))
    }
}

/// The model's parameters as `Var`s, in `params()` order.
fn vars_of<M: Model + ?Sized>(model: &M) -> Vec<Var> {
    model.params().iter().map(|p| p.var.clone()).collect()
}

fn scalar(t: &Tensor) -> candle_core::Result<f64> {
    t.detach().to_dtype(DType::F64)?.to_scalar::<f64>()
}
