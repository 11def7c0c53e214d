//! One penalized training step: the gradient of L_B(θ; y) + α·P for the training loop.
//!
//! BatchNorm: the plain loss pass runs in `Mode::Train` and so updates the running statistics
//! exactly once per step; every extra pass of the penalty (a sub-batch forward, the perturbed
//! passes of the finite difference) runs in `Mode::BatchStats`. The penalty is a function of
//! the training-mode loss (batch statistics), so its passes must see batch statistics too, but
//! they must not move the running statistics a second time. When P is taken on the whole batch,
//! the plain pass's logits are reused: they are the same function of θ.

use breakeven_curvature::backward_detached;
use breakeven_models::{cross_entropy, Mode, Model};
use candle_core::backprop::GradStore;
use candle_core::{DType, Tensor, Var};
use rand::RngCore;

use crate::config::{GradMethod, PenaltyConfig, PenaltyKind, PenaltyNorm};
use crate::labels::{sample_fisher_labels, uniform_labels};
use crate::perturb::with_perturbed;
use crate::second_order::check_second_order;
use crate::PenaltyError;

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
        step % self.config.every == 0
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
        self.run(model, x, y, step, Labels::Draw(rng))
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
        self.run(model, x, y, step, Labels::Fixed(labels))
    }

    fn run<M: Model + ?Sized>(
        &self,
        model: &M,
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
            check_second_order()?;
        }
        let params: Vec<Var> = model.params().iter().map(|p| p.var.clone()).collect();
        let whole = m == n;

        // Plain pass. For GPx on the whole batch the input is a Var, so this one backward also
        // gives ∇_X L.
        let x_var = if applied && cfg.kind == PenaltyKind::Gpx && whole {
            Some(Var::from_tensor(x)?)
        } else {
            None
        };
        let logits = model.forward(x_var.as_ref().map_or(x, |v| v.as_tensor()), Mode::Train)?;
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
        // gradient is only read, so its pass keeps no graph (breakeven_curvature::detached).
        let again =
            applied && double && whole && matches!(cfg.kind, PenaltyKind::Gp | PenaltyKind::Gpx);
        let plain_store = if plain_needed {
            Some(if again {
                loss_t.backward()?
            } else {
                backward_detached(&loss_t)?
            })
        } else {
            None
        };
        let plain = match &plain_store {
            Some(store) => Some(grads_of(&params, store)?),
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

        let ctx = Ctx {
            params: &params,
            step,
        };
        let x_m = x.narrow(0, 0, m)?;
        let y_m = y.narrow(0, 0, m)?;
        let (penalty, dp) = if cfg.kind.is_theta() {
            let pen_logits = if whole {
                logits.clone()
            } else {
                model.forward(&x_m, Mode::BatchStats)?
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
                _ => grads_of(
                    &params,
                    &cross_entropy(&pen_logits, &pen_labels)?.backward()?,
                )?,
            };
            if double {
                ctx.by_double_backprop(&g, cfg.norm, fuse.then_some((&loss_t, cfg.alpha)))?
            } else {
                let eval = |shift: f64, dir: &[Tensor]| {
                    with_perturbed(&params, dir, shift, || {
                        let z = model.forward(&x_m, Mode::BatchStats)?;
                        grads_of(&params, &cross_entropy(&z, &pen_labels)?.backward()?)
                    })
                };
                let theta_norm = norm(
                    &params
                        .iter()
                        .map(|p| p.as_tensor().clone())
                        .collect::<Vec<_>>(),
                )?;
                ctx.by_finite_difference(&g, &g, theta_norm, &cfg.method, cfg.norm, eval)?
            }
        } else {
            // GPx: g = ∇_X L on the sub-batch, taken with the input as a Var.
            let (xv, store) = match (&x_var, plain_store) {
                (Some(xv), Some(store)) if whole => (xv.clone(), store),
                _ => {
                    let xv = Var::from_tensor(&x_m)?;
                    let z = model.forward(xv.as_tensor(), Mode::BatchStats)?;
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
                let g_theta = grads_of(&params, &store)?;
                let x_m = x_m.detach();
                let eval = |shift: f64, dir: &[Tensor]| {
                    let z =
                        model.forward(&(&x_m + dir[0].affine(shift, 0.0)?)?, Mode::BatchStats)?;
                    grads_of(&params, &cross_entropy(&z, &y_m)?.backward()?)
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
                grads_of(&params, &backward_detached(&loss_t)?)?
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
        let dp = grads_of(self.params, &backward_detached(&target)?)?
            .iter()
            .map(Tensor::detach)
            .collect();
        Ok((value, dp))
    }

    /// P from `g` and ∇_θ P from gradients at shifted points: `eval(s, dir)` is ∇_θ L with the
    /// perturbed quantity moved by s·dir; `g_theta` is ∇_θ L unshifted (for `one_sided`).
    fn by_finite_difference(
        &self,
        g: &[Tensor],
        g_theta: &[Tensor],
        base_norm: f64,
        method: &GradMethod,
        which: PenaltyNorm,
        eval: impl Fn(f64, &[Tensor]) -> candle_core::Result<Vec<Tensor>>,
    ) -> Result<(f64, Vec<Tensor>), PenaltyError> {
        let GradMethod::FiniteDifference { epsilon, one_sided } = *method else {
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
        let u = match g[0].dtype() {
            DType::F64 => f64::EPSILON,
            DType::F32 => f32::EPSILON as f64,
            DType::F16 | DType::BF16 => 1e-3,
            _ => f32::EPSILON as f64,
        };
        let eps = epsilon.unwrap_or_else(|| (u * base_norm.max(1.0)).cbrt());
        let dir = g
            .iter()
            .map(|t| t.affine(1.0 / g_norm, 0.0))
            .collect::<candle_core::Result<Vec<_>>>()?;
        let plus = eval(eps, &dir)?;
        // Hĝ ≈ (g₊ − g₋)/(2ε), or (g₊ − g)/ε one-sided.
        let (minus, denom) = if one_sided {
            (g_theta.iter().map(Tensor::detach).collect(), eps)
        } else {
            (eval(-eps, &dir)?, 2.0 * eps)
        };
        let scale = match which {
            PenaltyNorm::Squared => 2.0 * g_norm / denom,
            PenaltyNorm::Plain => 1.0 / denom,
        };
        let dp = plus
            .iter()
            .zip(&minus)
            .map(|(a, b)| (a - b)?.affine(scale, 0.0))
            .collect::<candle_core::Result<Vec<_>>>()?;
        Ok((value, dp))
    }
}

/// Gradients of `params` in `store`, zeros for parameters the loss does not reach.
fn grads_of(params: &[Var], store: &GradStore) -> candle_core::Result<Vec<Tensor>> {
    params
        .iter()
        .map(|p| match store.get(p.as_tensor()) {
            Some(g) => Ok(g.clone()),
            None => p.as_tensor().zeros_like(),
        })
        .collect()
}

/// ‖(t_1, …, t_n)‖₂ accumulated in f64, from detached values.
fn norm(ts: &[Tensor]) -> candle_core::Result<f64> {
    let mut s = 0.0;
    for t in ts {
        s += t
            .detach()
            .to_dtype(DType::F64)?
            .sqr()?
            .sum_all()?
            .to_scalar::<f64>()?;
    }
    Ok(s.sqrt())
}

fn scalar(t: &Tensor) -> candle_core::Result<f64> {
    t.detach().to_dtype(DType::F64)?.to_scalar::<f64>()
}
