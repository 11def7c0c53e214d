//! Typed errors of the optimizer: bad configuration, misaligned gradients, bad saved state.

/// Everything the optimizer can refuse; tensor math failures are wrapped in [`OptimError::Candle`].
#[derive(Debug, thiserror::Error)]
pub enum OptimError {
    /// A configuration value is out of its range; `field` is the serde key.
    #[error("invalid optimizer config: `{field}` = {value}, expected {expected}")]
    InvalidConfig {
        field: &'static str,
        value: String,
        expected: &'static str,
    },
    /// The gradient list does not line up with the parameter list.
    #[error("{grads} gradients given for {params} parameters")]
    LengthMismatch { params: usize, grads: usize },
    /// A gradient (or restored momentum buffer) has a different shape than its parameter.
    #[error("{what} #{index} has shape {got:?}, expected the parameter's shape {expected:?}")]
    ShapeMismatch {
        what: &'static str,
        index: usize,
        got: Vec<usize>,
        expected: Vec<usize>,
    },
    /// A saved state does not fit the optimizer it is loaded into.
    #[error("invalid optimizer state: {0}")]
    InvalidState(String),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}
