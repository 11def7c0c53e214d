//! breakeven-slurm: a sweep's runs as Slurm job arrays. `cargo xtask reproduce … --executor
//! slurm` plans a sweep with the runner's staged planner, writes each run directory, submits the
//! unfinished runs as one `sbatch --array` per submission (each task runs `breakeven train`, or
//! `breakeven resume` from the last checkpoint), follows the tasks with `scontrol`, retries
//! failed and preempted tasks from their checkpoints, plans the next stage as runs finish, and
//! hands the rows back reduced exactly as the local executor reduces them.
//!
//! Pure parts (scripts, parsing Slurm's output, retry bookkeeping) are unit-tested here; the
//! whole path runs against a real single-node Slurm in `xtask/tests/slurm.rs`
//! (`scripts/local-slurm.sh`).

pub mod cluster;
pub mod error;
pub mod executor;
pub mod files;
pub mod ledger;
pub mod query;
pub mod script;

pub use cluster::{Cluster, Slurm};
pub use error::SlurmError;
pub use executor::{dry_run, jobs_in_flight, run, Counts, Event, Options, Progress, Sweep};
pub use script::{SbatchOptions, TaskCommand};

#[cfg(test)]
mod tests;
