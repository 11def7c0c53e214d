//! The runner's typed errors: config, file and checkpoint failures name the thing and what was expected.

use std::path::{Path, PathBuf};

/// Everything the runner library can fail with.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("config {origin}: {message}")]
    Config { origin: String, message: String },
    #[error("config key `{key}`: {message}")]
    Invalid { key: String, message: String },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("checkpoint {}: {message}", path.display())]
    Checkpoint { path: PathBuf, message: String },
    #[error("run directory {}: {message}", path.display())]
    RunDir { path: PathBuf, message: String },
    #[error("{0}")]
    Other(String),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    #[error(transparent)]
    Data(#[from] breakeven_data::DataError),
    #[error(transparent)]
    Model(#[from] breakeven_models::ModelError),
    #[error(transparent)]
    Optim(#[from] breakeven_optim::OptimError),
    #[error("curvature: {0}")]
    Curvature(#[from] breakeven_curvature::CurvatureError),
}

/// The exit status of the `breakeven` CLI when a run cannot start as configured (a config or
/// command-line error): running it again cannot help, so a cluster executor does not retry it.
/// Other errors exit with 1.
pub const EXIT_BAD_CONFIG: i32 = 2;

impl RunError {
    /// A config error (parsing, validation, or a value the data cannot satisfy): deterministic.
    pub fn is_config(&self) -> bool {
        matches!(self, Self::Config { .. } | Self::Invalid { .. })
    }

    /// An I/O error on `path`.
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        Self::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Result alias of the runner library.
pub type Result<T, E = RunError> = std::result::Result<T, E>;

impl From<breakeven_plot::PlotError> for RunError {
    fn from(e: breakeven_plot::PlotError) -> Self {
        RunError::Other(e.0)
    }
}
