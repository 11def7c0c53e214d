//! breakeven-penalties: the Fisher penalty (FP), gradient-norm penalties with true (GP) and
//! random (GPr) labels and the input-gradient penalty (GPx), added to the mini-batch loss
//! (SCIENCE.md §3), with their gradients by double backprop or by a finite difference.
//!
//! The training loop builds one [`Penalizer`] from a [`PenaltyConfig`] and calls
//! [`Penalizer::step`] once per step; the returned gradients go to the optimizer.

mod config;
mod error;
mod labels;
mod penalizer;

pub use config::{GradMethod, PenaltyConfig, PenaltyKind, PenaltyNorm};
pub use error::PenaltyError;
pub use labels::{sample_fisher_labels, uniform_labels};
pub use penalizer::{Logits, PenalizedStep, Penalizer, FD_AGREEMENT};

#[cfg(test)]
mod tests;
