//! Tensor operations the architectures use where Candle's own are wrong or slow on CPU.

pub mod conv;
mod conv_cpu;
mod conv_ops;
#[cfg(test)]
mod conv_tests;
mod pool;
mod relu;

pub use conv::conv2d;
pub use pool::{avg_pool2d, global_avg_pool, max_pool2d, subsample2};
pub use relu::relu;
