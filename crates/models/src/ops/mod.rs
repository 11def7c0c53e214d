//! Tensor operations the architectures use where Candle's own are wrong or slow on CPU.

mod batch_norm;
pub mod conv;
mod conv_bias;
mod conv_cpu;
mod conv_im2col;
mod conv_ops;
mod conv_relu;
mod conv_residual;
mod conv_shifted;
#[cfg(test)]
mod conv_shifted_tests;
mod conv_stash;
#[cfg(test)]
mod conv_tests;
mod conv_winograd;
#[cfg(test)]
mod conv_winograd_tests;
mod max_pool;
mod per_example_rows;
mod pool;
mod relu;

pub use batch_norm::{
    batch_norm, batch_norm_add_relu, batch_norm_relu, channel_mean, per_channel, BatchStats,
};
pub(crate) use conv::conv2d_stashing;
pub use conv::{conv2d, conv2d_add, conv2d_relu};
pub(crate) use conv_stash::GradSlot;
pub use pool::{avg_pool2d, global_avg_pool, max_pool2d, subsample2};
pub use relu::relu;

pub(crate) use per_example_rows::{per_example_rows, per_example_sq_norms, RowsKind, RowsLayer};

/// Whether our backward ops record graphs of the gradients they produce (double backprop), as
/// breakeven-curvature decides for the whole workspace: only where Candle keeps graphs and no
/// first-order pass runs. Without graphs, they use fused kernels and keep no layer's output
/// gradient alive in the GradStore.
pub(crate) fn grad_graphs_kept() -> bool {
    breakeven_curvature::record_gradient_graphs()
}
