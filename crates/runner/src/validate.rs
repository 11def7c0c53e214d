//! Validation of a parsed run config: impossible values are rejected naming the key, so a bad
//! config is one clear error before any data is read or any step is taken.

use std::ops::Deref;

use crate::config::{penalty_name, PenaltyMethod, RunConfig};
use crate::error::RunError;

/// A run config whose values were checked by [`RunConfig::validate`]: the only form the trainer
/// takes, so no run starts from an unchecked config.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidConfig(RunConfig);

impl Deref for ValidConfig {
    type Target = RunConfig;
    fn deref(&self) -> &RunConfig {
        &self.0
    }
}

impl ValidConfig {
    /// The checked config.
    pub fn config(&self) -> &RunConfig {
        &self.0
    }
}

impl RunConfig {
    /// Rejects impossible values, naming the key (unknown names of data sets, penalties,
    /// schedules, devices and architectures, and unknown keys, are already rejected by parsing,
    /// with the accepted values).
    pub fn validate(&self) -> Result<ValidConfig, RunError> {
        let bad = |key: &str, why: String| {
            Err(RunError::Invalid {
                key: key.into(),
                message: why,
            })
        };
        if !(self.optim.lr.is_finite() && self.optim.lr > 0.0) {
            return bad(
                "optim.lr",
                format!("must be a positive number, got {}", self.optim.lr),
            );
        }
        if !(0.0..1.0).contains(&self.optim.momentum) {
            return bad(
                "optim.momentum",
                format!("must be in [0, 1), got {}", self.optim.momentum),
            );
        }
        if !(self.optim.weight_decay >= 0.0 && self.optim.weight_decay.is_finite()) {
            return bad(
                "optim.weight_decay",
                format!("must be ≥ 0, got {}", self.optim.weight_decay),
            );
        }
        if self.optim.nesterov && self.optim.momentum == 0.0 {
            return bad(
                "optim.nesterov",
                "Nesterov needs momentum > 0 (as in torch.optim.SGD)".into(),
            );
        }
        if let Some(c) = self.optim.clip_grad_norm {
            if !(c > 0.0 && c.is_finite()) {
                return bad("optim.clip_grad_norm", format!("must be positive, got {c}"));
            }
        }
        if !(self.schedule.gamma > 0.0 && self.schedule.gamma.is_finite()) {
            return bad(
                "schedule.gamma",
                format!("must be positive, got {}", self.schedule.gamma),
            );
        }
        if self.data.batch_size == 0 {
            return bad("data.batch_size", "must be at least 1".into());
        }
        if self.data.subset == Some(0) {
            return bad(
                "data.subset",
                "must be at least 1 (omit it to use all examples)".into(),
            );
        }
        if !(0.0..=1.0).contains(&self.data.label_noise) {
            return bad(
                "data.label_noise",
                format!("must be in [0, 1], got {}", self.data.label_noise),
            );
        }
        if !(self.data.mixup_alpha >= 0.0 && self.data.mixup_alpha.is_finite()) {
            return bad(
                "data.mixup_alpha",
                format!("must be ≥ 0 (0 = off), got {}", self.data.mixup_alpha),
            );
        }
        // A penalized step evaluates P on the batch's own labels; with mixed inputs those
        // labels are only part of the target, so the combination is refused, not guessed.
        if self.data.mixup_alpha > 0.0 && self.penalty.kind.is_some() {
            return bad(
                "data.mixup_alpha",
                format!(
                    "Mixup cannot be combined with penalty {:?}; set one of them off",
                    penalty_name(self.penalty.kind)
                ),
            );
        }
        if !(self.penalty.alpha >= 0.0 && self.penalty.alpha.is_finite()) {
            return bad(
                "penalty.alpha",
                format!("must be ≥ 0, got {}", self.penalty.alpha),
            );
        }
        if self.penalty.kind.is_some() && self.penalty.alpha == 0.0 {
            return bad(
                "penalty.alpha",
                format!(
                    "penalty {:?} needs alpha > 0",
                    penalty_name(self.penalty.kind)
                ),
            );
        }
        let finite_difference = self.penalty.method == PenaltyMethod::FiniteDifference;
        if let Some(h) = self.penalty.rel_step {
            if !(h > 0.0 && h.is_finite()) {
                return bad("penalty.rel_step", format!("must be positive, got {h}"));
            }
        }
        if !finite_difference
            && (self.penalty.rel_step.is_some() || self.penalty.one_sided || !self.penalty.fd_check)
        {
            return bad(
                "penalty.method",
                "penalty.rel_step, penalty.one_sided and penalty.fd_check apply to method = \
                 \"finite_difference\" only"
                    .into(),
            );
        }
        if self.penalty.every == 0 {
            return bad("penalty.every", "must be at least 1".into());
        }
        if self.penalty.sub_batch == Some(0) {
            return bad("penalty.sub_batch", "must be at least 1".into());
        }
        if self.stop.max_epochs == 0 {
            return bad("stop.max_epochs", "must be at least 1".into());
        }
        if let Some(a) = self.stop.train_acc {
            if !(0.0..=1.0).contains(&a) {
                return bad("stop.train_acc", format!("must be in [0, 1], got {a}"));
            }
        }
        let t = &self.tracking;
        if t.dense_every == 0 || t.every_epochs == 0 || t.checkpoint_every_epochs == 0 {
            return bad(
                "tracking",
                "dense_every, every_epochs and checkpoint_every_epochs must be ≥ 1".into(),
            );
        }
        if t.curvature && (t.measure_subset < 2 || t.top_k == 0 || t.k_examples < 2) {
            return bad(
                "tracking",
                "curvature needs measure_subset ≥ 2, top_k ≥ 1, k_examples ≥ 2".into(),
            );
        }
        if self.data.label_noise > 0.0 && t.noise_subset == 0 {
            return bad(
                "tracking.noise_subset",
                "must be ≥ 1 with data.label_noise > 0 (clean/noisy training accuracy)".into(),
            );
        }
        if t.curvature && t.lanczos_iters > 0 && t.lanczos_iters < t.top_k {
            return bad(
                "tracking.lanczos_iters",
                format!("must be 0 or ≥ top_k = {}", t.top_k),
            );
        }
        if let Some(tol) = t.lanczos_tol {
            if !(tol > 0.0 && tol < 1.0) {
                return bad(
                    "tracking.lanczos_tol",
                    format!("must be in (0, 1) (a relative residual), got {tol}"),
                );
            }
        }
        if let Some(k) = t.k_star {
            if k == 0 || k >= t.k_examples {
                return bad(
                    "tracking.k_star",
                    format!(
                        "must be in 1..k_examples = {} (the centred Gram matrix of {} gradients has rank at most {}), got {k}",
                        t.k_examples,
                        t.k_examples,
                        t.k_examples.saturating_sub(1)
                    ),
                );
            }
        }
        Ok(ValidConfig(self.clone()))
    }
}
