//! The executor's typed errors: each names the command, file or option and what was expected.

use std::path::PathBuf;

use breakeven_runner::RunError;

/// Everything the Slurm executor can fail with (a run failing on the cluster is not an error
/// of the executor: it is recorded and reported with the sweep's results).
#[derive(Debug, thiserror::Error)]
pub enum SlurmError {
    /// A Slurm command could not be run or failed.
    #[error("`{command}` failed: {message}")]
    Command { command: String, message: String },
    /// Slurm printed something this executor cannot read.
    #[error("cannot read Slurm's output: {0}")]
    Parse(String),
    /// An option or path this executor cannot use.
    #[error("{0}")]
    Invalid(String),
    /// The sweep's ledger belongs to another sweep, is held by another process, or is unreadable.
    #[error("sweep ledger {}: {message}", path.display())]
    Ledger { path: PathBuf, message: String },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Run(#[from] RunError),
}

impl SlurmError {
    pub fn io(path: &std::path::Path, source: std::io::Error) -> Self {
        Self::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}
