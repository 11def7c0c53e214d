//! The penalty configuration, recorded with every run: which penalty, its weight and its cost
//! knobs (SCIENCE.md §3).

use serde::{Deserialize, Serialize};

use crate::PenaltyError;

/// Which gradient norm is added to the mini-batch loss (SCIENCE.md §3 table).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PenaltyKind {
    /// Fisher penalty: ‖∇_θ L_B(θ; ŷ)‖², ŷ sampled from the model's softmax at every evaluation.
    Fp,
    /// Gradient-norm penalty with the true labels.
    Gp,
    /// Gradient-norm penalty with uniformly random labels.
    Gpr,
    /// Input-gradient penalty ‖∇_X L_B(X; y)‖² (true labels).
    Gpx,
}

impl PenaltyKind {
    /// True for the penalties on a gradient with respect to the parameters.
    pub fn is_theta(self) -> bool {
        !matches!(self, PenaltyKind::Gpx)
    }
}

/// P = ‖g‖² (default, as the papers' code) or P = ‖g‖ (the seed talk's notation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum PenaltyNorm {
    #[default]
    Squared,
    Plain,
}

/// How ∇P is obtained.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum GradMethod {
    /// Exact, by differentiating through the backward pass (needs `CANDLE_GRAD_DO_NOT_DETACH=1`).
    #[default]
    DoubleBackprop,
    /// ∇‖g‖² = 2Hg with Hg ≈ (∇L(θ+εg) − ∇L(θ−εg))/2ε (central), or (∇L(θ+εg) − ∇L(θ))/ε
    /// (`one_sided`: one pass cheaper, error O(ε) instead of O(ε²)). GPx perturbs the input
    /// batch along g_X instead. The step is breakeven-curvature's one rule (`fd_step`):
    /// ε = h·(1 + ‖θ‖)/‖g‖, ‖θ‖ the norm of what is perturbed, so that the move is h·(1 + ‖θ‖)
    /// long; h = `rel_step`, by default √u one-sided and ∛u central (u the dtype's machine
    /// epsilon), which balances rounding against truncation (`curvature/src/hessian_fd.rs`).
    FiniteDifference {
        /// The relative step h; absent: the default above.
        #[serde(default)]
        rel_step: Option<f64>,
        #[serde(default)]
        one_sided: bool,
        /// The first penalized step compares the difference at h with the one at h/4 and
        /// refuses the method when they differ by more than 5% ([`crate::FD_AGREEMENT`]).
        /// `false` trains on the difference anyway: only for measuring what an unreliable
        /// difference does to training (issue 18's FD-against-double-backprop comparison).
        #[serde(default = "yes")]
        checked: bool,
    },
}

fn yes() -> bool {
    true
}

/// A penalty: training objective L_B(θ; y) + α·P.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PenaltyConfig {
    pub kind: PenaltyKind,
    /// Weight α ≥ 0.
    pub alpha: f64,
    #[serde(default)]
    pub norm: PenaltyNorm,
    /// Apply the penalty on steps with `step % every == 0` (k in the papers; plain steps between).
    #[serde(default = "one")]
    pub every: u64,
    /// Compute P on the first `sub_batch` examples of the batch (all when absent).
    #[serde(default)]
    pub sub_batch: Option<usize>,
    #[serde(default)]
    pub method: GradMethod,
}

fn one() -> u64 {
    1
}

impl PenaltyConfig {
    /// A squared-norm penalty applied every step on the whole batch, by double backprop.
    pub fn new(kind: PenaltyKind, alpha: f64) -> Self {
        PenaltyConfig {
            kind,
            alpha,
            norm: PenaltyNorm::Squared,
            every: 1,
            sub_batch: None,
            method: GradMethod::DoubleBackprop,
        }
    }

    /// Checks ranges; `batch_size` (when known) bounds `sub_batch`.
    pub fn validate(&self, batch_size: Option<usize>) -> Result<(), PenaltyError> {
        let bad = |field, value: String, expected: &str| {
            Err(PenaltyError::InvalidConfig {
                field,
                value,
                expected: expected.to_string(),
            })
        };
        if !(self.alpha.is_finite() && self.alpha >= 0.0) {
            return bad("alpha", self.alpha.to_string(), "a finite value >= 0");
        }
        if self.every == 0 {
            return bad("every", "0".into(), "at least 1 (apply every k steps)");
        }
        match (self.sub_batch, batch_size) {
            (Some(0), _) => return bad("sub_batch", "0".into(), "at least 1 example"),
            (Some(m), Some(n)) if m > n => {
                return Err(PenaltyError::SubBatchTooLarge {
                    sub_batch: m,
                    batch: n,
                })
            }
            _ => {}
        }
        if let GradMethod::FiniteDifference {
            rel_step: Some(h), ..
        } = self.method
        {
            if !(h.is_finite() && h > 0.0) {
                return bad(
                    "method.finite_difference.rel_step",
                    h.to_string(),
                    "a finite value > 0",
                );
            }
        }
        Ok(())
    }
}
