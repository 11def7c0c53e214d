//! Safe extraction of `.tar.gz` and `.zip` archives: no entry may land outside the target folder.
//!
//! Absolute paths, `..` components and link entries (symbolic or hard) are refused outright:
//! none of the official archives contains a link, and refusing them means no later entry can
//! be written through one.

use std::fs::File;
use std::path::{Component, Path, PathBuf};

use super::FetchError;

/// The entry's path made relative to the target, or an error if it would escape it.
/// `Ok(None)` for entries that name the target itself (`./`).
fn safe_relative(archive: &Path, name: &Path) -> Result<Option<PathBuf>, FetchError> {
    let mut out = PathBuf::new();
    for component in name.components() {
        match component {
            Component::Normal(c) => out.push(c),
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => {
                return Err(FetchError::UnsafeEntry {
                    archive: archive.to_path_buf(),
                    entry: name.display().to_string(),
                    reason: "absolute path or `..` would land outside the target folder",
                });
            }
        }
    }
    Ok((!out.as_os_str().is_empty()).then_some(out))
}

fn create_parent(path: &Path) -> Result<(), FetchError> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| FetchError::io(parent, e))?;
    }
    Ok(())
}

/// Extracts a gzipped tar into `target` (which must exist).
pub(crate) fn extract_tar_gz(archive: &Path, target: &Path) -> Result<(), FetchError> {
    let file = File::open(archive).map_err(|e| FetchError::io(archive, e))?;
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(file));
    let bad = |e: std::io::Error| FetchError::Archive {
        path: archive.to_path_buf(),
        reason: e.to_string(),
    };
    for entry in tar.entries().map_err(bad)? {
        let mut entry = entry.map_err(bad)?;
        let name = entry.path().map_err(bad)?.into_owned();
        let kind = entry.header().entry_type();
        let Some(rel) = safe_relative(archive, &name)? else {
            continue;
        };
        let dest = target.join(&rel);
        if kind.is_dir() {
            std::fs::create_dir_all(&dest).map_err(|e| FetchError::io(&dest, e))?;
        } else if kind.is_file() || kind.is_contiguous() {
            create_parent(&dest)?;
            let mut out = File::create(&dest).map_err(|e| FetchError::io(&dest, e))?;
            std::io::copy(&mut entry, &mut out).map_err(bad)?;
        } else if kind.is_symlink() || kind.is_hard_link() {
            return Err(FetchError::UnsafeEntry {
                archive: archive.to_path_buf(),
                entry: name.display().to_string(),
                reason: "links are refused (none is expected in the official archives)",
            });
        } else {
            // PAX/GNU metadata entries are applied by the tar crate; other kinds (devices, FIFOs)
            // carry no data we need.
            tracing::debug!(entry = %name.display(), ?kind, "skipping non-file tar entry");
        }
    }
    Ok(())
}

/// Extracts a zip into `target` (which must exist).
pub(crate) fn extract_zip(archive: &Path, target: &Path) -> Result<(), FetchError> {
    let file = File::open(archive).map_err(|e| FetchError::io(archive, e))?;
    let bad = |e: zip::result::ZipError| FetchError::Archive {
        path: archive.to_path_buf(),
        reason: e.to_string(),
    };
    let mut zip = zip::ZipArchive::new(file).map_err(bad)?;
    for i in 0..zip.len() {
        let mut entry = zip.by_index(i).map_err(bad)?;
        let name = PathBuf::from(entry.name().map_err(bad)?.as_ref());
        let Some(rel) = safe_relative(archive, &name)? else {
            continue;
        };
        if entry.is_symlink() {
            return Err(FetchError::UnsafeEntry {
                archive: archive.to_path_buf(),
                entry: name.display().to_string(),
                reason: "links are refused (none is expected in the official archives)",
            });
        }
        let dest = target.join(&rel);
        if entry.is_dir() {
            std::fs::create_dir_all(&dest).map_err(|e| FetchError::io(&dest, e))?;
        } else {
            create_parent(&dest)?;
            let mut out = File::create(&dest).map_err(|e| FetchError::io(&dest, e))?;
            std::io::copy(&mut entry, &mut out).map_err(|e| FetchError::Archive {
                path: archive.to_path_buf(),
                reason: format!("{}: {e}", name.display()),
            })?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_relative_paths_are_accepted() {
        let a = Path::new("a.tar.gz");
        assert_eq!(
            safe_relative(a, Path::new("x/./y")).unwrap(),
            Some(PathBuf::from("x/y"))
        );
        assert_eq!(safe_relative(a, Path::new("./")).unwrap(), None);
        for bad in ["../x", "x/../../y", "/etc/passwd", "x/.."] {
            assert!(safe_relative(a, Path::new(bad)).is_err(), "{bad}");
        }
    }
}
