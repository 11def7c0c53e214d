//! breakeven-runner: run configs, run directories, checkpoints, the training loop with
//! trajectory tracking, sweeps, and the `breakeven` CLI.

pub mod atomic;
pub mod checkpoint;
pub mod claims;
pub mod config;
pub mod device;
pub mod early_phase;
pub mod error;
pub mod evaluate;
pub mod evidence;
pub mod full_batch;
pub mod lca;
pub mod lca_report;
pub mod matched;
pub mod measure;
pub mod memorization;
pub mod metrics;
pub mod objective;
pub mod pca;
pub mod plot;
pub mod raster;
pub mod report;
pub mod rundir;
pub mod select;
pub mod setup;
pub mod state;
pub mod sweep;
pub mod table;
pub mod track;
pub mod train;
pub mod validate;

/// For binaries that train: glibc keeps freed activation buffers for reuse (models `alloc.rs`).
pub use breakeven_models::keep_freed_memory;
pub use config::RunConfig;
pub use error::{Result, RunError, EXIT_BAD_CONFIG};
pub use rundir::{RunDir, RunStatus, Summary};
pub use train::{enable_second_order, resolved_config, train, Outcome, TrainOptions};
pub use validate::ValidConfig;

#[cfg(test)]
mod tests;
