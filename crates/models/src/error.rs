//! Typed errors of the models crate: bad configurations, inputs too small, weight files that do
//! not match the architecture.

use std::path::PathBuf;

/// What can go wrong when building a model or moving its weights in and out of files.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// A configuration value is out of range for the architecture.
    #[error("model {arch}: invalid configuration: {reason}")]
    InvalidSpec { arch: &'static str, reason: String },
    /// The input shape cannot pass through the architecture (e.g. pooled down to nothing).
    #[error("model {arch}: input shape (C,H,W) = {input:?} is not usable: {reason}")]
    InvalidInput {
        arch: &'static str,
        input: (usize, usize, usize),
        reason: String,
    },
    /// A weights file lacks a key the model needs.
    #[error("weights file {path}: missing key `{key}` (expected shape {expected:?})")]
    MissingKey {
        path: PathBuf,
        key: String,
        expected: Vec<usize>,
    },
    /// A weights file holds a key the model does not have.
    #[error(
        "weights file {path}: unexpected key `{key}` (not a parameter or buffer of this model)"
    )]
    UnexpectedKey { path: PathBuf, key: String },
    /// A weights file holds a tensor of the wrong shape.
    #[error("weights file {path}: key `{key}` has shape {found:?}, expected {expected:?}")]
    ShapeMismatch {
        path: PathBuf,
        key: String,
        found: Vec<usize>,
        expected: Vec<usize>,
    },
    /// Reading or writing a weights file failed.
    #[error("weights file {path}: {source}")]
    File {
        path: PathBuf,
        source: candle_core::Error,
    },
    /// Per-example gradients cannot run as one batched pass for this model or input (the
    /// caller may fall back to batch-size-1 passes).
    #[error("per-example gradients in one batched pass: {reason}")]
    PerExampleUnsupported { reason: String },
    /// Tensor math failed.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}
