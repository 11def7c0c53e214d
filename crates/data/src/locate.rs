//! Where data sets live: an explicit `--data-dir` alone, or else `$BREAKEVEN_DATA`, then `./data`
//! (and Debian's Fashion-MNIST).
//!
//! An explicit folder replaces the default search path rather than preceding it, so a caller (or a
//! test) that names a folder gets the answer for that folder whatever the machine holds elsewhere.

use std::path::{Path, PathBuf};

use crate::error::{DataError, Result};

/// Environment variable naming the data root.
pub const DATA_ENV: &str = "BREAKEVEN_DATA";
/// Data root used when neither a directory nor the environment variable is given.
pub const DEFAULT_DATA_DIR: &str = "data";
/// Where Debian's `dataset-fashion-mnist` package installs the gzipped IDX files.
pub const DEBIAN_FASHION_MNIST: &str = "/usr/share/datasets/fashion-mnist";

/// The data sets breakeven reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DatasetName {
    Cifar10,
    Cifar100,
    Mnist,
    FashionMnist,
    TinyImageNet,
}

impl DatasetName {
    pub const ALL: [DatasetName; 5] = [
        DatasetName::Cifar10,
        DatasetName::Cifar100,
        DatasetName::Mnist,
        DatasetName::FashionMnist,
        DatasetName::TinyImageNet,
    ];

    /// The name used on the command line (`cargo xtask data fetch NAME`).
    pub fn as_str(self) -> &'static str {
        match self {
            DatasetName::Cifar10 => "cifar10",
            DatasetName::Cifar100 => "cifar100",
            DatasetName::Mnist => "mnist",
            DatasetName::FashionMnist => "fashion-mnist",
            DatasetName::TinyImageNet => "tiny-imagenet",
        }
    }

    /// The folder under the data root (the name the official archive extracts to).
    pub fn folder(self) -> &'static str {
        match self {
            DatasetName::Cifar10 => "cifar-10-batches-bin",
            DatasetName::Cifar100 => "cifar-100-binary",
            DatasetName::Mnist => "mnist",
            DatasetName::FashionMnist => "fashion-mnist",
            DatasetName::TinyImageNet => "tiny-imagenet-200",
        }
    }

    /// A file whose presence marks a usable copy (so an empty folder does not shadow a real one).
    pub(crate) fn marker(self) -> &'static [&'static str] {
        match self {
            DatasetName::Cifar10 => &["data_batch_1.bin"],
            DatasetName::Cifar100 => &["train.bin"],
            DatasetName::Mnist | DatasetName::FashionMnist => {
                &["train-images-idx3-ubyte", "train-images-idx3-ubyte.gz"]
            }
            DatasetName::TinyImageNet => &["wnids.txt"],
        }
    }

    /// The command that downloads this data set.
    pub fn fetch_command(self) -> String {
        format!("cargo xtask data fetch {}", self.as_str())
    }
}

impl std::fmt::Display for DatasetName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for DatasetName {
    type Err = DataError;
    fn from_str(s: &str) -> Result<Self> {
        DatasetName::ALL
            .into_iter()
            .find(|d| d.as_str() == s)
            .ok_or_else(|| {
                DataError::InvalidArgument(format!(
                    "unknown data set {s:?}; expected one of cifar10, cifar100, mnist, fashion-mnist, tiny-imagenet"
                ))
            })
    }
}

/// The data root to write into (fetch): the explicit directory, else `$BREAKEVEN_DATA`, else `./data`.
pub fn data_root(explicit: Option<&Path>) -> PathBuf {
    match explicit {
        Some(dir) => dir.to_path_buf(),
        None => std::env::var_os(DATA_ENV)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR)),
    }
}

/// The folders searched for `name`, in order of precedence: `explicit/<folder>` alone when a root
/// is given; otherwise `$BREAKEVEN_DATA/<folder>`, `./data/<folder>` and, for Fashion-MNIST,
/// Debian's folder.
pub fn candidate_dirs(name: DatasetName, explicit: Option<&Path>) -> Vec<PathBuf> {
    if let Some(dir) = explicit {
        return vec![dir.join(name.folder())];
    }
    let mut roots: Vec<PathBuf> = Vec::new();
    if let Some(env) = std::env::var_os(DATA_ENV).filter(|v| !v.is_empty()) {
        roots.push(PathBuf::from(env));
    }
    roots.push(PathBuf::from(DEFAULT_DATA_DIR));
    let mut dirs: Vec<PathBuf> = roots.iter().map(|r| r.join(name.folder())).collect();
    if name == DatasetName::FashionMnist {
        dirs.push(PathBuf::from(DEBIAN_FASHION_MNIST));
    }
    dirs.dedup();
    dirs
}

/// The first candidate folder that holds `name`, or [`DataError::NotFound`] listing all of them.
pub fn locate(name: DatasetName, explicit: Option<&Path>) -> Result<PathBuf> {
    let searched = candidate_dirs(name, explicit);
    for dir in &searched {
        if name.marker().iter().any(|m| dir.join(m).is_file()) {
            tracing::debug!(dataset = name.as_str(), dir = %dir.display(), "found data set");
            return Ok(dir.clone());
        }
    }
    // A folder that is there but incomplete is named with the file it lacks, not as "not found".
    if let Some(dir) = searched.iter().find(|d| d.is_dir()) {
        return Err(DataError::MissingFile {
            path: dir.join(name.marker()[0]),
            expected: format!(
                "the {} layout (the folder exists but is incomplete; `{}` downloads a whole copy)",
                name.as_str(),
                name.fetch_command()
            ),
        });
    }
    Err(DataError::NotFound {
        dataset: name.as_str(),
        searched,
        fetch: name.fetch_command(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_is_an_error() {
        for d in DatasetName::ALL {
            assert_eq!(d.as_str().parse::<DatasetName>().unwrap(), d);
        }
        assert!("cifar11".parse::<DatasetName>().is_err());
    }

    #[test]
    fn missing_data_set_names_places_and_fetch_command() {
        let tmp = tempfile::tempdir().unwrap();
        let err = locate(DatasetName::Cifar100, Some(tmp.path())).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("cargo xtask data fetch cifar100"), "{msg}");
        assert!(
            msg.contains(&tmp.path().join("cifar-100-binary").display().to_string()),
            "{msg}"
        );
        assert!(matches!(err, DataError::NotFound { .. }));
        // Only the named folder is searched, whatever `$BREAKEVEN_DATA` or `./data` hold.
        assert_eq!(
            candidate_dirs(DatasetName::Cifar100, Some(tmp.path())),
            vec![tmp.path().join("cifar-100-binary")]
        );
    }

    #[test]
    fn tiny_imagenet_folder_without_wnids_names_the_missing_file() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(tmp.path().join("tiny-imagenet-200/train")).unwrap();
        let err = locate(DatasetName::TinyImageNet, Some(tmp.path()))
            .unwrap_err()
            .to_string();
        let wnids = tmp.path().join("tiny-imagenet-200/wnids.txt");
        assert!(err.contains(&wnids.display().to_string()), "{err}");
        assert!(!err.contains("not found"), "{err}");
    }

    #[test]
    fn explicit_dir_with_marker_is_found_first() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("mnist");
        std::fs::create_dir_all(&dir).unwrap();
        // An empty folder is not a data set: the error names the file it lacks.
        let err = locate(DatasetName::Mnist, Some(tmp.path())).unwrap_err();
        assert!(matches!(err, DataError::MissingFile { .. }), "{err}");
        assert!(err.to_string().contains("train-images-idx3-ubyte"), "{err}");
        std::fs::write(dir.join("train-images-idx3-ubyte.gz"), b"").unwrap();
        assert_eq!(locate(DatasetName::Mnist, Some(tmp.path())).unwrap(), dir);
    }
}
