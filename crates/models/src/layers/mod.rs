//! Layers with parameters (linear, convolution, BatchNorm), registered in a [`ParamStore`]
//! under their PyTorch names.
//!
//! [`ParamStore`]: crate::store::ParamStore

mod batch_norm;
mod conv;
mod linear;

pub use batch_norm::BatchNorm;
pub use conv::{Conv2d, ConvShape};
pub use linear::Linear;
