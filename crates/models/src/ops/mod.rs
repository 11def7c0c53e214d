//! Tensor operations the architectures use where Candle's own are wrong or slow on CPU.

mod batch_norm;
pub mod conv;
mod conv_bias;
mod conv_cpu;
mod conv_im2col;
mod conv_ops;
#[cfg(test)]
mod conv_tests;
mod pool;
mod relu;

pub use batch_norm::{batch_norm, channel_mean, per_channel, BatchStats};
pub use conv::conv2d;
pub use pool::{avg_pool2d, global_avg_pool, max_pool2d, subsample2};
pub use relu::relu;

/// Whether Candle keeps the graphs of gradients (double backprop), i.e. whether
/// `CANDLE_GRAD_DO_NOT_DETACH` is set to something other than "" or "0". Candle reads it once
/// per thread; reading it on every call errs towards keeping graphs if it changed since.
pub(crate) fn grad_graphs_kept() -> bool {
    std::env::var("CANDLE_GRAD_DO_NOT_DETACH").is_ok_and(|s| !s.is_empty() && s != "0")
}
