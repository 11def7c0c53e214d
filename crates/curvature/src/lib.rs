//! breakeven-curvature: Hessian, Gauss-Newton/Fisher and gradient-covariance operators for
//! Candle models, and the spectral estimators (Lanczos, power iteration, Hutchinson, Hutch++,
//! stochastic Lanczos quadrature) that run on any of them.
//!
//! Invariant: this crate depends on `candle-core` and external crates only, never on another
//! breakeven crate; a user with a set of `Var`s and a loss closure can use all of it.
//!
//! Conventions: estimators work in `f64` host vectors; operators convert to the model's
//! dtype/device. Every operator is of the MEAN loss over the whole data set (batches weighted
//! by size / N); per-example gradients are unscaled `∇ℓ_i`.

mod covariance;
mod dense;
mod error;
mod fisher;
mod ggn;
mod hessian;
mod hessian_fd;
mod lanczos;
pub mod linalg;
mod loss;
mod operator;
mod params;
mod power;
mod probe;
pub mod random;
mod slq;
mod softmax;
mod trace;

pub use covariance::{
    covariance_summary, per_example_gradients, CovarianceConfig, CovarianceOperator,
    CovarianceSummary, Normalization, PerExampleGradients,
};
pub use dense::DenseMatrix;
pub use error::{CurvatureError, Result};
pub use fisher::{fisher_trace, FisherKind, FisherOperator, FisherTrace};
pub use ggn::{GgnOperator, OutputLoss};
pub use hessian::HessianOperator;
pub use hessian_fd::{FdConfig, FdHessianOperator};
pub use lanczos::{lanczos, EigenEstimate, LanczosConfig, Which};
pub use loss::{loss_and_gradient, BatchedLoss, LossFn, Reduction};
pub use operator::{materialize, Counted, LinearOperator};
pub use params::{grads_to_vec, num_params, params_to_vec, vec_to_tensors};
pub use power::{power_iteration, PowerConfig, PowerEstimate};
pub use probe::{check_double_backprop, enable_double_backprop};
pub use slq::{spectral_density, SlqConfig, SpectralDensity};
pub use softmax::{log_softmax, softmax_detached, BatchedLogits, LogitsFn};
pub use trace::{hutch_plus_plus, hutchinson, HutchinsonConfig, TraceEstimate};
