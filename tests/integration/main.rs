//! Cross-crate tests: one binary, a module per concern.

mod architecture;
mod vendor_patch;
