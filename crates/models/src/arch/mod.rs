//! The architectures, one file each.

pub mod fc;
pub mod simple_cnn;
