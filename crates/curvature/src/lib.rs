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
//!
//! ```
//! use breakeven_curvature::{
//!     enable_double_backprop, hessian_summary, BatchedLoss, HessianOperator, HessianSummaryConfig,
//!     Reduction,
//! };
//! use candle_core::{Device, Tensor, Var};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // First thing, before any backward pass: Candle needs CANDLE_GRAD_DO_NOT_DETACH=1.
//! enable_double_backprop()?;
//! // A tiny model: linear regression with weights w, data in two batches of 3 and 2 rows.
//! let x = Tensor::new(&[[1.0f64, 0.0], [0.0, 2.0], [1.0, 1.0], [3.0, 0.5], [0.2, 1.0]], &Device::Cpu)?;
//! let y = Tensor::new(&[[1.0f64], [0.0], [2.0], [1.0], [0.5]], &Device::Cpu)?;
//! let w = Var::new(&[[0.1f64], [0.2]], &Device::Cpu)?;
//! let w_in_loss = w.clone();
//! let batches = [(0, 3), (3, 5)];
//! let loss = BatchedLoss::new(2, Reduction::Mean, move |b| {
//!     let (lo, hi) = batches[b];
//!     let r = (x.narrow(0, lo, hi - lo)?.matmul(w_in_loss.as_tensor())? - y.narrow(0, lo, hi - lo)?)?;
//!     Ok((r.sqr()?.mean_all()?, hi - lo)) // (mean loss of the batch, batch size)
//! });
//! let mut hessian = HessianOperator::new(vec![w], loss)?;
//! let mut cfg = HessianSummaryConfig::default();
//! cfg.lanczos.k = 2;
//! cfg.lanczos.tol = 1e-10;
//! let s = hessian_summary(&mut hessian, &cfg, 0)?;
//! // H = (2/N) XᵀX = [[4.416, 1.08], [1.08, 2.5]]: λ_H^1 = 4.901663…, Tr(H) = 6.916.
//! assert!((s.eigenvalues[0] - 4.901_663_395_67).abs() < 1e-9);
//! assert!((s.trace.trace - 6.916).abs() < 1e-9); // Hutch++ is exact once its sketch spans R².
//! assert!(s.lanczos.converged);
//! # Ok(())
//! # }
//! ```

mod covariance;
mod dense;
mod detached;
mod error;
mod fisher;
mod ggn;
mod hessian;
mod hessian_fd;
mod lanczos;
pub mod lca;
pub mod linalg;
mod loss;
mod operator;
mod params;
mod power;
pub mod random;
mod second_order;
mod slq;
mod softmax;
mod summary;
mod trace;

pub use covariance::{
    covariance_summary, per_example_gradients, CovarianceConfig, CovarianceOperator,
    CovarianceSummary, Normalization, PerExampleGradients,
};
pub use dense::DenseMatrix;
pub use detached::{backward_detached, detached_worker_available};
pub use error::{CurvatureError, Result};
pub use fisher::{
    fisher_trace, fisher_trace_from_examples, monte_carlo_labels, FisherKind, FisherOperator,
    FisherTrace,
};
pub use ggn::{GgnOperator, OutputLoss};
pub use hessian::HessianOperator;
pub use hessian_fd::{
    default_rel_step, directional_difference, fd_step, unit_roundoff, with_perturbed, FdConfig,
    FdHessianOperator, FdScheme,
};
pub use lanczos::{lanczos, EigenEstimate, LanczosConfig, Which};
pub use lca::{
    loss_change_allocation, loss_change_allocation_batched, LcaConfig, LcaCost, LcaResult, LcaRule,
    LcaTrajectory, TensorAllocation,
};
pub use loss::{loss_and_gradient, BatchedLoss, LossFn, Reduction};
pub use operator::{materialize, Counted, LinearOperator};
pub use params::{gradients, grads_to_vec, norm, num_params, params_to_vec, vec_to_tensors};
pub use power::{power_iteration, PowerConfig, PowerEstimate};
pub use second_order::{
    backward_first_order, candle_keeps_graphs, check_double_backprop, enable_double_backprop,
    graphs_kept_on_this_thread, record_gradient_graphs,
};
pub use slq::{spectral_density, SlqConfig, SpectralDensity};
pub use softmax::{log_softmax, softmax_detached, BatchedLogits, LogitsFn};
pub use summary::{hessian_summary, HessianSummary, HessianSummaryConfig, TraceMethod};
pub use trace::{hutch_plus_plus, hutchinson, HutchinsonConfig, TraceEstimate};
