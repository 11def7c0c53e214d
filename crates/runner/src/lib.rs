//! breakeven-runner: run configs, run directories, checkpoints, the training loop with
//! trajectory tracking, sweeps, and the `breakeven` CLI. What is computed and drawn from the
//! finished runs (claims, verdicts, pages, plots) is `breakeven-report`.

pub mod atomic;
pub mod checkpoint;
pub mod config;
mod device;
pub mod early_phase;
pub mod edge_of_stability;
pub mod error;
mod evaluate;
pub mod full_batch;
pub mod lca;
pub mod measure;
pub mod metrics;
mod objective;
pub mod rundir;
pub mod select;
pub mod setup;
mod state;
pub mod sweep;
pub mod table;
mod track;
pub mod train;
mod validate;

/// For binaries that train: glibc keeps freed activation buffers for reuse (models `alloc.rs`).
pub use breakeven_models::keep_freed_memory;
pub use config::RunConfig;
pub use device::{hardware_description, open_device, parse_device_name, DeviceName};
pub use error::{Result, RunError, EXIT_BAD_CONFIG};
pub use rundir::{RunDir, RunStatus, Summary};
pub use train::{enable_second_order, resolved_config, train, Outcome, TrainOptions};
pub use validate::ValidConfig;

#[cfg(test)]
mod tests;
