//! Tensor operations the architectures use where Candle's own are wrong or slow on CPU.

mod batch_norm;
pub mod conv;
mod conv_bias;
mod conv_cpu;
mod conv_im2col;
mod conv_ops;
#[cfg(test)]
mod conv_tests;
mod max_pool;
mod pool;
mod relu;

pub use batch_norm::{batch_norm, channel_mean, per_channel, BatchStats};
pub use conv::conv2d;
pub use pool::{avg_pool2d, global_avg_pool, max_pool2d, subsample2};
pub use relu::relu;

thread_local! {
    /// Whether Candle keeps gradient graphs on this thread (`CANDLE_GRAD_DO_NOT_DETACH`, which
    /// its `backprop.rs` latches once per thread). Asked of Candle, not read from the
    /// environment: a thread may have latched before the variable changed (breakeven-curvature
    /// runs the last backward passes on such a thread, where graphs would only cost memory).
    static GRAPHS_KEPT: bool = candle_keeps_graphs().unwrap_or(true);
}

/// Whether Candle keeps the graphs of gradients (double backprop) on this thread. Without them
/// Candle detaches every gradient, so our backward ops need not record a graph either: that
/// keeps each layer's output gradient from living on in the GradStore.
pub(crate) fn grad_graphs_kept() -> bool {
    GRAPHS_KEPT.with(|k| *k)
}

/// d²/dx² x³ at 1 comes out 6 only when Candle keeps graphs (4 when it detaches intermediate
/// gradients): the probe of breakeven-curvature's `candle_keeps_graphs`, which this crate
/// cannot depend on. Latches Candle's flag if this is the thread's first backward pass,
/// exactly as the pass about to run would.
fn candle_keeps_graphs() -> candle_core::Result<bool> {
    let x = candle_core::Var::new(1.0f64, &candle_core::Device::Cpu)?;
    let t = x.as_tensor();
    let Some(dy) = t.mul(t)?.mul(t)?.backward()?.get(t).cloned() else {
        return Ok(false);
    };
    let d2 = match dy.backward()?.get(t) {
        Some(d2) => d2.to_scalar::<f64>()?,
        None => 0.0,
    };
    Ok((d2 - 6.0).abs() < 1e-9)
}
