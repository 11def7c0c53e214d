//! The curvature crate's integration tests: one binary, one module per concern (TESTING.md).

mod common;
mod covariance;
mod hessian;
mod output;
mod spectra;
mod stochastic;
