//! The architectures, one file each.

pub mod densenet;
pub mod fc;
pub mod resnet;
pub mod simple_cnn;
pub mod vgg;
pub mod wrn;
