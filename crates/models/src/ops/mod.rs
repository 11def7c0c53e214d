//! Tensor operations the architectures use where Candle's own are wrong or slow on CPU.

pub mod conv;

pub use conv::conv2d;
