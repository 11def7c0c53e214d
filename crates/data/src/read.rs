//! Reading whole files, transparently gunzipping `.gz`, with errors that name the file.

use std::io::Read;
use std::path::{Path, PathBuf};

use crate::error::{DataError, Result};

/// Reads `path` fully; a missing file is [`DataError::MissingFile`] saying what was `expected`.
pub(crate) fn read_file(path: &Path, expected: &str) -> Result<Vec<u8>> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(bytes),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(DataError::MissingFile {
            path: path.to_path_buf(),
            expected: expected.to_string(),
        }),
        Err(e) => Err(DataError::io(path, e)),
    }
}

/// Reads `path`, decompressing it if its name ends in `.gz` (a truncated stream is an error).
pub(crate) fn read_maybe_gz(path: &Path, expected: &str) -> Result<Vec<u8>> {
    let raw = read_file(path, expected)?;
    if path.extension().is_some_and(|e| e == "gz") {
        let mut out = Vec::with_capacity(raw.len() * 4);
        flate2::read::GzDecoder::new(raw.as_slice())
            .read_to_end(&mut out)
            .map_err(|e| DataError::io(path, e))?;
        Ok(out)
    } else {
        Ok(raw)
    }
}

/// `dir/stem` if it exists, else `dir/stem.gz` if that exists, else `dir/stem` (for the error).
pub(crate) fn raw_or_gz(dir: &Path, stem: &str) -> PathBuf {
    let raw = dir.join(stem);
    let gz = dir.join(format!("{stem}.gz"));
    if !raw.is_file() && gz.is_file() {
        gz
    } else {
        raw
    }
}
