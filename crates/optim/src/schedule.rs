//! Learning-rate schedules, evaluated per optimizer step.
//!
//! Units: every count here (`milestones`, `t_max`, warm-up `steps`) is in **optimizer steps**,
//! and the schedule is evaluated at the 0-based index of the step about to be taken (the first
//! step uses `lr_at(0)`). An experiment written in epochs converts once with
//! [`LrSchedule::epochs_to_steps`] (PyTorch users call `scheduler.step()` per epoch instead; with
//! `steps_per_epoch` = 1 the two agree exactly).

use serde::{Deserialize, Serialize};

use crate::OptimError;

/// A learning-rate schedule as a function of the optimizer step, scaling the base `lr`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum LrSchedule {
    /// `lr` at every step.
    #[default]
    Constant,
    /// `lr · gamma^k`, k = number of milestones ≤ step (`torch.optim.lr_scheduler.MultiStepLR`:
    /// the step equal to a milestone already uses the decayed rate).
    MultiStep { milestones: Vec<u64>, gamma: f64 },
    /// `min_lr + (lr − min_lr)·(1 + cos(π·t/t_max))/2` for t < t_max, then `min_lr`
    /// (`CosineAnnealingLR`'s closed form over one half period, held at its floor afterwards).
    Cosine { t_max: u64, min_lr: f64 },
    /// Linear warm-up multiplying any schedule: factor `start_factor + (1 − start_factor)·t/steps`
    /// for t < steps, 1 afterwards (`LinearLR` chained with `then`, as `ChainedScheduler` does).
    /// `then` is evaluated at the same absolute step, so its milestones stay absolute.
    Warmup {
        steps: u64,
        start_factor: f64,
        then: Box<LrSchedule>,
    },
}

impl LrSchedule {
    /// The learning rate at 0-based optimizer step `step`, for base learning rate `lr`.
    pub fn lr_at(&self, lr: f64, step: u64) -> f64 {
        match self {
            LrSchedule::Constant => lr,
            LrSchedule::MultiStep { milestones, gamma } => {
                let passed = milestones.iter().filter(|&&m| m <= step).count();
                lr * gamma.powi(passed as i32)
            }
            LrSchedule::Cosine { t_max, min_lr } => {
                if step >= *t_max {
                    return *min_lr;
                }
                let phase = std::f64::consts::PI * step as f64 / *t_max as f64;
                min_lr + (lr - min_lr) * (1.0 + phase.cos()) / 2.0
            }
            LrSchedule::Warmup {
                steps,
                start_factor,
                then,
            } => {
                let inner = then.lr_at(lr, step);
                if step >= *steps {
                    return inner;
                }
                let factor = start_factor + (1.0 - start_factor) * step as f64 / *steps as f64;
                inner * factor
            }
        }
    }

    /// The same schedule with every count multiplied by `steps_per_epoch` (epochs → steps).
    pub fn epochs_to_steps(&self, steps_per_epoch: u64) -> LrSchedule {
        match self {
            LrSchedule::Constant => LrSchedule::Constant,
            LrSchedule::MultiStep { milestones, gamma } => LrSchedule::MultiStep {
                milestones: milestones.iter().map(|m| m * steps_per_epoch).collect(),
                gamma: *gamma,
            },
            LrSchedule::Cosine { t_max, min_lr } => LrSchedule::Cosine {
                t_max: t_max * steps_per_epoch,
                min_lr: *min_lr,
            },
            LrSchedule::Warmup {
                steps,
                start_factor,
                then,
            } => LrSchedule::Warmup {
                steps: steps * steps_per_epoch,
                start_factor: *start_factor,
                then: Box::new(then.epochs_to_steps(steps_per_epoch)),
            },
        }
    }

    /// Checks ranges; field names are the serde keys.
    pub fn validate(&self) -> Result<(), OptimError> {
        let bad = |field, value: String, expected| {
            Err(OptimError::InvalidConfig {
                field,
                value,
                expected,
            })
        };
        match self {
            LrSchedule::Constant => Ok(()),
            LrSchedule::MultiStep { milestones, gamma } => {
                if !(gamma.is_finite() && *gamma > 0.0) {
                    return bad("multi_step.gamma", gamma.to_string(), "a finite value > 0");
                }
                if milestones.windows(2).any(|w| w[0] >= w[1]) {
                    return bad(
                        "multi_step.milestones",
                        format!("{milestones:?}"),
                        "strictly increasing steps",
                    );
                }
                Ok(())
            }
            LrSchedule::Cosine { t_max, min_lr } => {
                if *t_max == 0 {
                    return bad("cosine.t_max", "0".into(), "at least 1 step");
                }
                if !(min_lr.is_finite() && *min_lr >= 0.0) {
                    return bad("cosine.min_lr", min_lr.to_string(), "a finite value >= 0");
                }
                Ok(())
            }
            LrSchedule::Warmup {
                steps,
                start_factor,
                then,
            } => {
                if *steps == 0 {
                    return bad("warmup.steps", "0".into(), "at least 1 step");
                }
                if !(start_factor.is_finite() && (0.0..=1.0).contains(start_factor)) {
                    return bad(
                        "warmup.start_factor",
                        start_factor.to_string(),
                        "a value in [0, 1]",
                    );
                }
                then.validate()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multi_step_decays_at_the_milestone_itself() {
        let s = LrSchedule::MultiStep {
            milestones: vec![3, 5],
            gamma: 0.1,
        };
        let lrs: Vec<f64> = (0..7).map(|t| s.lr_at(1.0, t)).collect();
        let want = [1.0, 1.0, 1.0, 0.1, 0.1, 0.1 * 0.1, 0.1 * 0.1];
        for (got, want) in lrs.iter().zip(want) {
            assert!((got - want).abs() < 1e-15, "{lrs:?}");
        }
    }

    #[test]
    fn cosine_hits_base_half_and_floor() {
        let s = LrSchedule::Cosine {
            t_max: 10,
            min_lr: 0.01,
        };
        assert_eq!(s.lr_at(0.5, 0), 0.5);
        assert!((s.lr_at(0.5, 5) - (0.01 + 0.49 * 0.5)).abs() < 1e-15);
        // One step before the end: min + (lr-min)(1+cos(0.9π))/2.
        let want9 = 0.01 + 0.49 * (1.0 + (0.9 * std::f64::consts::PI).cos()) / 2.0;
        assert!((s.lr_at(0.5, 9) - want9).abs() < 1e-15);
        assert_eq!(s.lr_at(0.5, 10), 0.01);
        assert_eq!(s.lr_at(0.5, 1000), 0.01);
    }

    #[test]
    fn warmup_multiplies_the_inner_schedule() {
        let s = LrSchedule::Warmup {
            steps: 4,
            start_factor: 0.2,
            then: Box::new(LrSchedule::MultiStep {
                milestones: vec![2],
                gamma: 0.5,
            }),
        };
        let want = [0.2, 0.4, 0.6 * 0.5, 0.8 * 0.5, 0.5, 0.5];
        for (t, w) in want.iter().enumerate() {
            assert!((s.lr_at(1.0, t as u64) - w).abs() < 1e-15, "step {t}");
        }
        let c = LrSchedule::Warmup {
            steps: 2,
            start_factor: 0.0,
            then: Box::new(LrSchedule::Constant),
        };
        assert_eq!(c.lr_at(0.1, 0), 0.0);
        assert!((c.lr_at(0.1, 1) - 0.05).abs() < 1e-17);
        assert_eq!(c.lr_at(0.1, 2), 0.1);
    }

    #[test]
    fn epochs_convert_to_steps() {
        let s = LrSchedule::Warmup {
            steps: 1,
            start_factor: 0.5,
            then: Box::new(LrSchedule::MultiStep {
                milestones: vec![2, 4],
                gamma: 0.1,
            }),
        };
        let steps = s.epochs_to_steps(10);
        for epoch in 0..6u64 {
            assert_eq!(s.lr_at(1.0, epoch), steps.lr_at(1.0, epoch * 10));
        }
        assert_eq!(steps.lr_at(1.0, 19), 1.0);
        assert_eq!(steps.lr_at(1.0, 20), 0.1);
    }

    #[test]
    fn serde_round_trip_and_rejects_unknown_keys() {
        let s = LrSchedule::Warmup {
            steps: 5,
            start_factor: 0.1,
            then: Box::new(LrSchedule::Cosine {
                t_max: 100,
                min_lr: 0.0,
            }),
        };
        let json = serde_json::to_string(&s).unwrap();
        let back: LrSchedule = serde_json::from_str(&json).unwrap();
        assert_eq!(back, s);
        let bad = r#"{"cosine":{"t_max":10,"min_lr":0.0,"eta":1}}"#;
        assert!(serde_json::from_str::<LrSchedule>(bad).is_err());
    }

    #[test]
    fn validation_names_the_field() {
        let s = LrSchedule::Cosine {
            t_max: 0,
            min_lr: 0.0,
        };
        let err = s.validate().unwrap_err().to_string();
        assert!(err.contains("cosine.t_max"), "{err}");
        let s = LrSchedule::Warmup {
            steps: 3,
            start_factor: 0.5,
            then: Box::new(LrSchedule::MultiStep {
                milestones: vec![5, 2],
                gamma: 0.1,
            }),
        };
        let err = s.validate().unwrap_err().to_string();
        assert!(err.contains("multi_step.milestones"), "{err}");
    }
}
