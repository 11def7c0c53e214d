//! breakeven-optim: SGD with exactly `torch.optim.SGD`'s update rule, learning-rate schedules,
//! global gradient-norm clipping and resumable optimizer state.
//!
//! The update, per parameter `p` with gradient `g` (PyTorch's documented algorithm):
//! `d = g + wd·p`; with momentum μ: `buf = d` on the first step, else `buf = μ·buf + (1−τ)·d`;
//! `d = d + μ·buf` (Nesterov) or `d = buf`; `p = p − lr·d`. Parameters without a gradient are
//! skipped and keep their buffer, as in PyTorch.

mod clip;
mod error;
mod schedule;
mod sgd;
mod state;

pub use clip::{clip_grad_norm, global_grad_norm};
pub use error::OptimError;
pub use schedule::LrSchedule;
pub use sgd::{Sgd, SgdConfig};
pub use state::{SgdState, MOMENTUM_BUFFER_PREFIX};

#[cfg(test)]
mod sgd_tests;
