//! Adapter to the curvature penalties (SCIENCE.md §3). Until `breakeven-penalties` lands this
//! refuses any penalty with a clear error instead of silently training without it.

use breakeven_models::Model;
use candle_core::{Result, Tensor};
use rand_chacha::ChaCha8Rng;

use crate::config::PenaltyConfig;

/// The differentiable penalty term P (to be scaled by α) and its value.
pub fn penalty_term(
    _model: &dyn Model,
    _x: &Tensor,
    _y: &Tensor,
    _logits: &Tensor,
    penalty: &PenaltyConfig,
    _rng: &mut ChaCha8Rng,
) -> Result<(Tensor, f64)> {
    candle_core::bail!(
        "penalty `{}` is not available in this build (breakeven-penalties not wired yet)",
        penalty.kind
    )
}
