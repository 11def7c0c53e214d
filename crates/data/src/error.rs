//! The data crate's typed errors: each names the file (or data set) and what was expected.

use std::path::PathBuf;

/// Everything that can go wrong while finding, reading, splitting or batching a data set.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// The data set's folder was not found in any of the places searched.
    #[error(
        "data set {dataset} not found at {}; run `{fetch}` (or pass --data-dir / set BREAKEVEN_DATA)",
        .searched.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
    )]
    NotFound {
        dataset: &'static str,
        searched: Vec<PathBuf>,
        fetch: String,
    },
    /// A file the layout requires is absent.
    #[error("missing file {}: expected {expected}", .path.display())]
    MissingFile { path: PathBuf, expected: String },
    /// Reading a file failed (includes truncated gzip streams).
    #[error("cannot read {}: {source}", .path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// An IDX file starts with the wrong magic number.
    #[error("{}: wrong magic number {found:#010x}, expected {expected:#010x}", .path.display())]
    BadMagic {
        path: PathBuf,
        expected: u32,
        found: u32,
    },
    /// A file's length does not match its layout (truncated, padded, or not a whole number of records).
    #[error("{}: length {len} bytes, expected {expected}", .path.display())]
    BadLength {
        path: PathBuf,
        len: u64,
        expected: String,
    },
    /// A label byte is not a valid class index.
    #[error("{}: record {index} has label {label}, expected < {num_classes}", .path.display())]
    LabelOutOfRange {
        path: PathBuf,
        index: usize,
        label: u32,
        num_classes: usize,
    },
    /// An images file and its labels file disagree on the number of examples.
    #[error("{} holds {n_images} images but {} holds {n_labels} labels", .images.display(), .labels.display())]
    CountMismatch {
        images: PathBuf,
        labels: PathBuf,
        n_images: usize,
        n_labels: usize,
    },
    /// A text or image file does not follow the expected format.
    #[error("{}: {reason}", .path.display())]
    Format { path: PathBuf, reason: String },
    /// A split, subset or pipeline parameter is invalid for this data set.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// Building a tensor failed.
    #[error(transparent)]
    Tensor(#[from] candle_core::Error),
}

/// Result with [`DataError`].
pub type Result<T> = std::result::Result<T, DataError>;

impl DataError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        DataError::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn format(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        DataError::Format {
            path: path.into(),
            reason: reason.into(),
        }
    }
}
