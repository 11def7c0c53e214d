//! One step's objective: the mini-batch loss L_B, plus α·P on the steps that carry the penalty
//! (through `breakeven-penalties`), its gradients aligned with the model's parameters, and the
//! numbers the tracker logs.

use breakeven_models::{correct_count, cross_entropy, Mode, Model};
use breakeven_penalties::{GradMethod, Penalizer, PenaltyError, PenaltyNorm};
use candle_core::Tensor;
use rand_chacha::ChaCha8Rng;

use crate::config::{PenaltyConfig, PenaltyMethod};
use crate::error::RunError;
use crate::evaluate::scalar;

/// What one step's forward/backward produced.
#[derive(Debug)]
pub struct StepOutput {
    /// L_B (without the penalty term); NaN or ±∞ when the step diverged.
    pub loss: f64,
    pub correct: usize,
    pub n: usize,
    /// P when the penalty was applied this step.
    pub penalty: Option<f64>,
    /// ∇(L_B + α·P), one per parameter (empty when the step diverged).
    pub grads: Vec<Tensor>,
}

/// The penalties crate's config for a batch of `n` examples (a short last batch of an epoch
/// takes the penalty on all its examples), or `None` without a penalty.
fn penalizer(cfg: &PenaltyConfig, n: usize) -> Result<Option<Penalizer>, RunError> {
    let Some(kind) = cfg.kind else {
        return Ok(None);
    };
    let config = breakeven_penalties::PenaltyConfig {
        kind,
        alpha: cfg.alpha,
        norm: if cfg.squared {
            PenaltyNorm::Squared
        } else {
            PenaltyNorm::Plain
        },
        every: cfg.every as u64,
        sub_batch: cfg.sub_batch.map(|m| m.min(n)),
        method: match cfg.method {
            PenaltyMethod::FiniteDifference => GradMethod::FiniteDifference {
                rel_step: cfg.rel_step,
                one_sided: cfg.one_sided,
                checked: cfg.fd_check,
            },
            PenaltyMethod::DoubleBackprop => GradMethod::DoubleBackprop,
        },
    };
    Penalizer::new(config, n)
        .map(Some)
        .map_err(|e| RunError::Invalid {
            key: "penalty".into(),
            message: e.to_string(),
        })
}

/// Computes the step's objective and gradients. `step` is the 0-based index of this step.
pub fn step_objective(
    model: &dyn Model,
    x: &Tensor,
    y: &Tensor,
    penalty: &PenaltyConfig,
    step: u64,
    rng: &mut ChaCha8Rng,
) -> Result<StepOutput, RunError> {
    let n = y.dim(0)?;
    if let Some(p) = penalizer(penalty, n)?.filter(|p| p.applies_at(step)) {
        let out = match p.step(model, x, y, step, rng) {
            Ok(out) => out,
            Err(PenaltyError::Diverged { value, .. }) => {
                let loss = if value.is_finite() { f64::NAN } else { value };
                return Ok(StepOutput {
                    loss,
                    correct: 0,
                    n,
                    penalty: None,
                    grads: vec![],
                });
            }
            Err(e) => return Err(RunError::Other(format!("penalized step {step}: {e}"))),
        };
        // The step's accuracy from the penalized step's own plain pass (no extra forward).
        let correct = correct_count(&out.logits, y)?;
        return Ok(StepOutput {
            loss: out.loss,
            correct,
            n,
            penalty: out.penalty,
            grads: out.grads,
        });
    }
    let logits = model.forward(x, Mode::Train)?;
    let loss = cross_entropy(&logits, y)?;
    let correct = correct_count(&logits.detach(), y)?;
    plain_step(model, &loss, correct, n)
}

/// The gradients of a plain step's `loss`, taken as the penalizer takes its plain passes: a
/// first-order backward on this thread (breakeven-curvature's `backward_first_order`), the same
/// numbers whether or not the process is in second-order mode.
fn plain_step(
    model: &dyn Model,
    loss: &Tensor,
    correct: usize,
    n: usize,
) -> Result<StepOutput, RunError> {
    let loss_value = scalar(loss)?;
    let vars: Vec<_> = model.params().iter().map(|p| p.var.clone()).collect();
    let store = breakeven_curvature::backward_first_order(loss)?;
    let grads = breakeven_curvature::gradients(&store, &vars)?
        .iter()
        .map(Tensor::detach)
        .collect();
    Ok(StepOutput {
        loss: loss_value,
        correct,
        n,
        penalty: None,
        grads,
    })
}

/// One Mixup step (Zhang et al. 2018) on a batch the loader already mixed: the loss on the
/// mixed targets, λ·CE(f(x̃), y_a) + (1 − λ)·CE(f(x̃), y_b), which equals the cross-entropy
/// against the soft target λ·onehot(y_a) + (1 − λ)·onehot(y_b). The step's accuracy counts a
/// prediction as correct when it is the label of larger weight (y_a when λ ≥ 1/2).
pub fn mixup_objective(
    model: &dyn Model,
    x: &Tensor,
    labels_a: &Tensor,
    labels_b: &Tensor,
    lambda: f64,
) -> Result<StepOutput, RunError> {
    let n = labels_a.dim(0)?;
    let logits = model.forward(x, Mode::Train)?;
    let loss = ((cross_entropy(&logits, labels_a)? * lambda)?
        + (cross_entropy(&logits, labels_b)? * (1.0 - lambda))?)?;
    let major = if lambda >= 0.5 { labels_a } else { labels_b };
    let correct = correct_count(&logits.detach(), major)?;
    plain_step(model, &loss, correct, n)
}
