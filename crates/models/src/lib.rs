//! Model architectures for breakeven, with PyTorch `state_dict` names, seeded initialization
//! and operations whose first- and second-order gradients are proven right.

mod alloc;
pub mod arch;
mod error;
pub mod init;
pub mod io;
pub mod layers;
mod loss;
pub mod ops;
pub mod per_example;
pub mod reference;
mod spec;
pub mod store;

pub use alloc::keep_freed_memory;
pub use error::ModelError;
pub use loss::{accuracy, correct_count, cross_entropy, cross_entropy_per_example};
pub use per_example::{per_example_gradient_sq_norms, per_example_gradients, Tape};
pub use spec::{build, ModelSpec};

use candle_core::{Result, Tensor, Var};

/// How a forward pass treats BatchNorm (and any other train/eval-dependent layer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Batch statistics, and the running statistics are updated (one plain training forward).
    Train,
    /// Batch statistics, running statistics left untouched: the extra passes of penalties and
    /// curvature estimates, so that a step updates the running statistics exactly once.
    BatchStats,
    /// Running statistics (evaluation).
    Eval,
}

/// A named trainable parameter; the name is the PyTorch `state_dict` key.
#[derive(Debug, Clone)]
pub struct Param {
    pub name: String,
    pub var: Var,
}

/// What every architecture offers to optimizers, penalties, curvature and the runner.
pub trait Model: Send + Sync {
    /// Logits (N × classes) for an input batch (N × C × H × W, or N × D for fully connected nets).
    fn forward(&self, x: &Tensor, mode: Mode) -> Result<Tensor>;
    /// Trainable parameters in `state_dict` order. BatchNorm running statistics are not here.
    fn params(&self) -> &[Param];
    /// Non-trainable state (BatchNorm `running_mean`, `running_var`, `num_batches_tracked`)
    /// with their `state_dict` names.
    fn buffers(&self) -> Vec<(String, Var)>;
    /// The logits of `forward` (in an analysis mode that updates nothing), with every `Conv2d`
    /// and `Linear` layer recorded in `tape`, for [`per_example_gradients`]. `None`, the
    /// default: the model cannot (its examples interact within a batch, as through BatchNorm
    /// on batch statistics, or it has other layers with parameters).
    fn forward_taped(&self, _x: &Tensor, _tape: &Tape) -> Result<Option<Tensor>> {
        Ok(None)
    }
}

#[cfg(test)]
mod gradcheck;
