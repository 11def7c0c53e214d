//! One step's objective: the mini-batch loss L_B (+ α·P when the penalty is due), its gradients
//! aligned with the model's parameters, and the numbers the tracker logs.

use breakeven_models::{correct_count, cross_entropy, Mode, Model};
use candle_core::{Result, Tensor};
use rand_chacha::ChaCha8Rng;

use crate::config::PenaltyConfig;
use crate::evaluate::scalar;

/// What one step's forward/backward produced.
#[derive(Debug)]
pub struct StepOutput {
    /// L_B (without the penalty term).
    pub loss: f64,
    pub correct: usize,
    pub n: usize,
    /// P when the penalty was applied this step.
    pub penalty: Option<f64>,
    /// ∇(L_B + α·P), one per parameter.
    pub grads: Vec<Tensor>,
}

/// Computes the step's objective and gradients. `step` is the 0-based index of this step.
pub fn step_objective(
    model: &dyn Model,
    x: &Tensor,
    y: &Tensor,
    penalty: &PenaltyConfig,
    step: u64,
    rng: &mut ChaCha8Rng,
) -> Result<StepOutput> {
    let logits = model.forward(x, Mode::Train)?;
    let loss = cross_entropy(&logits, y)?;
    let correct = correct_count(&logits.detach(), y)?;
    let loss_value = scalar(&loss)?;
    let due = penalty.kind != "none" && step % penalty.every as u64 == 0;
    let (objective, penalty_value) = if due {
        let (p, value) = crate::penalty::penalty_term(model, x, y, &logits, penalty, rng)?;
        ((loss + (p * penalty.alpha)?)?, Some(value))
    } else {
        (loss, None)
    };
    let store = objective.backward()?;
    let grads = model
        .params()
        .iter()
        .map(|p| match store.get(p.var.as_tensor()) {
            Some(g) => Ok(g.detach()),
            None => p.var.as_tensor().zeros_like(),
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(StepOutput {
        loss: loss_value,
        correct,
        n: y.dim(0)?,
        penalty: penalty_value,
        grads,
    })
}
