//! Cross-crate tests: one binary, modules per concern.
