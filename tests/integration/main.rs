//! Cross-crate tests: one binary, a module per concern.

mod architecture;
mod measure_pytorch;
mod vendor_patch;
