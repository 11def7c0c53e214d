//! The official download addresses and published checksums (shared/data/README.md).

use crate::DatasetName;

/// How a downloaded file becomes the data set's folder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unpack {
    /// A `.tar.gz` whose single top-level folder is the data set's folder.
    TarGz,
    /// A `.zip` whose single top-level folder is the data set's folder.
    Zip,
    /// Files kept as downloaded (the gzipped IDX files), inside the data set's folder.
    Keep,
}

/// One file to download, with the checksums it must match before use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteFile {
    pub url: String,
    pub file_name: String,
    /// Lower-case hex MD5 (what the publishers give).
    pub md5: String,
    /// Lower-case hex SHA-256, where known.
    pub sha256: Option<String>,
}

/// Everything needed to fetch one data set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    pub dataset: DatasetName,
    pub files: Vec<RemoteFile>,
    pub unpack: Unpack,
}

fn file(base: &str, name: &str, md5: &str, sha256: Option<&str>) -> RemoteFile {
    RemoteFile {
        url: format!("{base}{name}"),
        file_name: name.to_string(),
        md5: md5.to_string(),
        sha256: sha256.map(str::to_string),
    }
}

impl Source {
    /// The publisher's addresses and checksums.
    pub fn official(dataset: DatasetName) -> Source {
        let (files, unpack) = match dataset {
            DatasetName::Cifar10 => (
                vec![file(
                    "https://www.cs.toronto.edu/~kriz/",
                    "cifar-10-binary.tar.gz",
                    "c32a1d4ab5d03f1284b67883e8d87530",
                    Some("c4a38c50a1bc5f3a1c5537f2155ab9d68f9f25eb1ed8d9ddda3db29a59bca1dd"),
                )],
                Unpack::TarGz,
            ),
            DatasetName::Cifar100 => (
                vec![file(
                    "https://www.cs.toronto.edu/~kriz/",
                    "cifar-100-binary.tar.gz",
                    "03b5dce01913d631647c71ecec9e9cb8",
                    None,
                )],
                Unpack::TarGz,
            ),
            DatasetName::TinyImageNet => (
                vec![file(
                    "http://cs231n.stanford.edu/",
                    "tiny-imagenet-200.zip",
                    "90528d7ca1a48142e341f4ef8d21d0de",
                    None,
                )],
                Unpack::Zip,
            ),
            DatasetName::Mnist => {
                let base = "https://ossci-datasets.s3.amazonaws.com/mnist/";
                (
                    vec![
                        file(
                            base,
                            "train-images-idx3-ubyte.gz",
                            "f68b3c2dcbeaaa9fbdd348bbdeb94873",
                            None,
                        ),
                        file(
                            base,
                            "train-labels-idx1-ubyte.gz",
                            "d53e105ee54ea40749a09fcbcd1e9432",
                            None,
                        ),
                        file(
                            base,
                            "t10k-images-idx3-ubyte.gz",
                            "9fb629c4189551a2d022fa330f9573f3",
                            None,
                        ),
                        file(
                            base,
                            "t10k-labels-idx1-ubyte.gz",
                            "ec29112dd5afa0611ce80d1b7f02629c",
                            None,
                        ),
                    ],
                    Unpack::Keep,
                )
            }
            DatasetName::FashionMnist => {
                let base = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/";
                (
                    vec![
                        file(
                            base,
                            "train-images-idx3-ubyte.gz",
                            "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
                            None,
                        ),
                        file(
                            base,
                            "train-labels-idx1-ubyte.gz",
                            "25c81989df183df01b3e8a0aad5dffbe",
                            None,
                        ),
                        file(
                            base,
                            "t10k-images-idx3-ubyte.gz",
                            "bef4ecab320f06d8554ea6380940ec79",
                            None,
                        ),
                        file(
                            base,
                            "t10k-labels-idx1-ubyte.gz",
                            "bb300cfdad3c16e7a12a480ee83cd310",
                            None,
                        ),
                    ],
                    Unpack::Keep,
                )
            }
        };
        Source {
            dataset,
            files,
            unpack,
        }
    }

    /// The same files served from `base_url` (a mirror, or a test server): `base_url/file_name`.
    pub fn with_base_url(mut self, base_url: &str) -> Source {
        let base = base_url.trim_end_matches('/');
        for f in &mut self.files {
            f.url = format!("{base}/{}", f.file_name);
        }
        self
    }
}
