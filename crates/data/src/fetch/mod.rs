//! `data fetch`: download the official archives, verify their checksums, unpack them safely.
//!
//! Idempotent (a data set whose folder holds a completed-fetch stamp, or already holds the data,
//! is not fetched again) and resumable (bytes go to `FILE.part`, continued with an HTTP Range
//! request). A file is used only after its MD5 (and SHA-256, where known) matched; archives are
//! unpacked into a staging folder that is moved into place only when extraction succeeded.

mod download;
mod extract;
mod sources;

use std::path::{Path, PathBuf};

pub use sources::{RemoteFile, Source, Unpack};

use crate::DatasetName;

/// Written into a data set's folder once it was fetched, verified and unpacked.
pub const STAMP_FILE: &str = ".breakeven-fetched";

/// Why a fetch failed.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("download of {url} failed: {reason}")]
    Http { url: String, reason: String },
    #[error("{}: {source}", .path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: {algorithm} is {found}, expected {expected}; the download was deleted", .path.display())]
    Checksum {
        path: PathBuf,
        algorithm: &'static str,
        expected: String,
        found: String,
    },
    #[error("{}: entry {entry:?} refused: {reason}", .archive.display())]
    UnsafeEntry {
        archive: PathBuf,
        entry: String,
        reason: &'static str,
    },
    #[error("{}: not a valid archive: {reason}", .path.display())]
    Archive { path: PathBuf, reason: String },
    #[error("{} exists but holds no complete data set; move it away and fetch again", .path.display())]
    Occupied { path: PathBuf },
    #[error("{}: expected the archive to contain the folder {expected}", .archive.display())]
    Layout { archive: PathBuf, expected: String },
}

impl FetchError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        FetchError::Io {
            path: path.into(),
            source,
        }
    }
}

/// Options of [`fetch`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FetchOptions {
    /// Serve every file from `BASE/FILE_NAME` instead of the publisher's address.
    pub base_url: Option<String>,
    /// Keep the verified archive next to the extracted folder.
    pub keep_archive: bool,
}

/// What [`fetch`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchOutcome {
    /// The data set was already there; nothing was downloaded.
    AlreadyPresent(PathBuf),
    /// Downloaded, verified and unpacked into this folder.
    Fetched(PathBuf),
}

/// Download progress: `(file name, bytes of the file so far, its size if the server says)`,
/// called as bytes arrive (a progress bar; this crate itself only logs).
pub type Progress<'a> = &'a dyn Fn(&str, u64, Option<u64>);

/// Fetches `name` from its official source into `data_root/<folder>`.
pub fn fetch(
    name: DatasetName,
    data_root: &Path,
    options: &FetchOptions,
) -> Result<FetchOutcome, FetchError> {
    fetch_with_progress(name, data_root, options, &|_, _, _| {})
}

/// [`fetch`], reporting download progress to `progress`.
pub fn fetch_with_progress(
    name: DatasetName,
    data_root: &Path,
    options: &FetchOptions,
    progress: Progress,
) -> Result<FetchOutcome, FetchError> {
    let mut source = Source::official(name);
    if let Some(base) = &options.base_url {
        source = source.with_base_url(base);
    }
    fetch_source_with_progress(&source, data_root, options.keep_archive, progress)
}

/// Fetches the files of `source` into `data_root/<folder>` (see the module docs).
pub fn fetch_source(
    source: &Source,
    data_root: &Path,
    keep_archive: bool,
) -> Result<FetchOutcome, FetchError> {
    fetch_source_with_progress(source, data_root, keep_archive, &|_, _, _| {})
}

/// [`fetch_source`], reporting download progress to `progress`.
pub fn fetch_source_with_progress(
    source: &Source,
    data_root: &Path,
    keep_archive: bool,
    progress: Progress,
) -> Result<FetchOutcome, FetchError> {
    let dataset = source.dataset;
    let dest = data_root.join(dataset.folder());
    if dest.join(STAMP_FILE).is_file() || dataset.marker().iter().any(|m| dest.join(m).is_file()) {
        tracing::info!(dataset = %dataset, dir = %dest.display(), "already present; not fetching");
        return Ok(FetchOutcome::AlreadyPresent(dest));
    }
    std::fs::create_dir_all(data_root).map_err(|e| FetchError::io(data_root, e))?;
    match source.unpack {
        Unpack::Keep => {
            std::fs::create_dir_all(&dest).map_err(|e| FetchError::io(&dest, e))?;
            for file in &source.files {
                obtain(file, &dest.join(&file.file_name), progress)?;
            }
        }
        Unpack::TarGz | Unpack::Zip => {
            for file in &source.files {
                let archive = data_root.join(&file.file_name);
                obtain(file, &archive, progress)?;
                unpack_into_place(source.unpack, &archive, data_root, &dest)?;
                if !keep_archive {
                    std::fs::remove_file(&archive).map_err(|e| FetchError::io(&archive, e))?;
                }
            }
        }
    }
    let stamp: String = source
        .files
        .iter()
        .map(|f| format!("{}  {}\n", f.md5, f.file_name))
        .collect();
    let stamp_path = dest.join(STAMP_FILE);
    std::fs::write(&stamp_path, stamp).map_err(|e| FetchError::io(&stamp_path, e))?;
    tracing::info!(dataset = %dataset, dir = %dest.display(), "fetched");
    Ok(FetchOutcome::Fetched(dest))
}

/// Ensures a verified copy of `file` at `path`, downloading (resumably) into `path.part`.
fn obtain(file: &RemoteFile, path: &Path, progress: Progress) -> Result<(), FetchError> {
    if path.is_file() && download::verify(file, path).is_ok() {
        return Ok(());
    }
    let part = PathBuf::from(format!("{}.part", path.display()));
    tracing::info!(url = %file.url, to = %part.display(), "downloading");
    download::download_resumable(file, &part, progress)?;
    if let Err(e) = download::verify(file, &part) {
        // A bad partial must not be resumed: start over next time.
        let _ = std::fs::remove_file(&part);
        return Err(e);
    }
    std::fs::rename(&part, path).map_err(|e| FetchError::io(path, e))
}

/// Extracts into a staging folder, then moves the data set's folder into place.
fn unpack_into_place(
    kind: Unpack,
    archive: &Path,
    data_root: &Path,
    dest: &Path,
) -> Result<(), FetchError> {
    let folder = dest.file_name().map(PathBuf::from).unwrap_or_default();
    let staging = data_root.join(format!(".{}.extracting", folder.display()));
    if staging.exists() {
        std::fs::remove_dir_all(&staging).map_err(|e| FetchError::io(&staging, e))?;
    }
    std::fs::create_dir_all(&staging).map_err(|e| FetchError::io(&staging, e))?;
    let result = (|| {
        match kind {
            Unpack::TarGz => extract::extract_tar_gz(archive, &staging)?,
            Unpack::Zip => extract::extract_zip(archive, &staging)?,
            Unpack::Keep => {}
        }
        let extracted = staging.join(&folder);
        if !extracted.is_dir() {
            return Err(FetchError::Layout {
                archive: archive.to_path_buf(),
                expected: folder.display().to_string(),
            });
        }
        if dest.exists() {
            // Holds neither our stamp nor the data: not ours to delete.
            return Err(FetchError::Occupied {
                path: dest.to_path_buf(),
            });
        }
        std::fs::rename(&extracted, dest).map_err(|e| FetchError::io(dest, e))
    })();
    let _ = std::fs::remove_dir_all(&staging);
    result
}

#[cfg(test)]
mod tests;
