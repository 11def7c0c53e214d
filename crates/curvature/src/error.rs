//! The crate's error type: its own failures typed, Candle's tensor errors wrapped.

/// Everything that can go wrong in an operator or an estimator.
#[derive(Debug, thiserror::Error)]
pub enum CurvatureError {
    /// A tensor operation failed inside Candle.
    #[error("candle: {0}")]
    Candle(#[from] candle_core::Error),
    /// Second-order gradients are switched off in this thread (see [`crate::enable_double_backprop`]).
    #[error(
        "double backprop is disabled on this thread: the probe d²/dx² x³ at x = 1 gave {got} \
         instead of 6. Candle detaches gradients unless the environment variable \
         CANDLE_GRAD_DO_NOT_DETACH=1 is set before the FIRST backward pass of the thread (it is \
         read once into a thread-local). Call breakeven_curvature::enable_double_backprop() at \
         the start of the thread, or export CANDLE_GRAD_DO_NOT_DETACH=1 before starting the \
         process"
    )]
    DoubleBackpropDisabled {
        /// What the probe measured: 0 when the second backward found no gradient, otherwise a
        /// wrong value from the partial graph Candle keeps (4 for x³ in candle 0.11.1).
        got: f64,
    },
    /// A vector handed to an operator or estimator has the wrong length.
    #[error("{what}: vector of length {got}, expected {expected}")]
    DimensionMismatch {
        /// Which argument.
        what: &'static str,
        /// Its length.
        got: usize,
        /// The operator's dimension.
        expected: usize,
    },
    /// A configuration value is out of range.
    #[error("invalid config `{key}`: {reason}")]
    InvalidConfig {
        /// The field name.
        key: &'static str,
        /// What was expected.
        reason: String,
    },
    /// A loss or logits closure returned something of the wrong shape.
    #[error("batch {batch}: {reason}")]
    BadBatch {
        /// The batch index given to the closure.
        batch: usize,
        /// What was wrong and what was expected.
        reason: String,
    },
    /// The data set is empty (no batches, or batches of size zero).
    #[error("the data set is empty: {0}")]
    EmptyData(&'static str),
    /// An iterative kernel did not converge (a symptom of non-finite or wildly scaled input).
    #[error("{0} did not converge")]
    NoConvergence(&'static str),
    /// A quantity that must be finite is not.
    #[error("{0} is not finite")]
    NonFinite(&'static str),
}

/// The crate's result type.
pub type Result<T> = std::result::Result<T, CurvatureError>;
