//! The curvature crate's integration tests: one binary, one module per concern (TESTING.md).

mod common;
mod hessian;
mod spectra;
mod stochastic;
