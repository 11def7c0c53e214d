//! Typed errors of the penalties: bad configuration, bad batches, missing second-order support,
//! divergence.

/// Everything a penalized step can refuse; tensor math failures are wrapped in
/// [`PenaltyError::Candle`].
#[derive(Debug, thiserror::Error)]
pub enum PenaltyError {
    /// A configuration value is out of range; `field` is the serde key.
    #[error("invalid penalty config: `{field}` = {value}, expected {expected}")]
    InvalidConfig {
        field: &'static str,
        value: String,
        expected: String,
    },
    /// The sub-batch asks for more examples than the batch has.
    #[error("penalty `sub_batch` = {sub_batch} is larger than the batch of {batch} examples")]
    SubBatchTooLarge { sub_batch: usize, batch: usize },
    /// Inputs and labels do not line up, or fixed labels have the wrong shape.
    #[error("bad batch: {0}")]
    BadBatch(String),
    /// Double backprop was asked for but Candle detaches gradients in this thread.
    #[error(
        "double backprop needs CANDLE_GRAD_DO_NOT_DETACH=1 set before the first backward pass \
         of this thread (candle-core reads it once per thread); a known second derivative came \
         out as {got} instead of {expected}. Call breakeven_curvature::enable_double_backprop() \
         at process start, before any backward pass (or use `method = finite_difference` on a \
         smooth net)"
    )]
    SecondOrderUnavailable { got: f64, expected: f64 },
    /// The finite-difference penalty gradient does not settle on this model at this precision.
    #[error(
        "method = finite_difference refused: on the first penalized step the penalty gradient \
         at relative steps h = {rel_step:.1e} and h/4 differs by {:.1}% (more than {:.0}%) in \
         {dtype:?}. The perturbation crosses ReLU/max-pool kinks, whose jumps do not shrink with \
         the step, or rounding dominates (measured on SimpleCNN: docs/results/cpu-speed.md, \
         penalties). Use method = double_backprop",
        100.0 * disagreement,
        100.0 * bound
    )]
    FiniteDifferenceUnreliable {
        dtype: candle_core::DType,
        rel_step: f64,
        disagreement: f64,
        bound: f64,
    },
    /// The loss, the penalty or its gradient became NaN or infinite.
    #[error("step {step}: the {what} is not finite ({value})")]
    Diverged {
        step: u64,
        what: &'static str,
        value: f64,
    },
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    #[error(transparent)]
    Curvature(#[from] breakeven_curvature::CurvatureError),
}
