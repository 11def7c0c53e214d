//! MNIST and Fashion-MNIST in the IDX format (big-endian header, raw or gzipped).

use std::path::Path;

use crate::dataset::{check_labels, Dataset, TrainTest};
use crate::error::{DataError, Result};
use crate::read::{raw_or_gz, read_maybe_gz};

/// Magic of an IDX file of unsigned bytes with 3 dimensions (images).
pub const IDX_IMAGES_MAGIC: u32 = 0x0000_0803;
/// Magic of an IDX file of unsigned bytes with 1 dimension (labels).
pub const IDX_LABELS_MAGIC: u32 = 0x0000_0801;

/// Fashion-MNIST class names in label order.
pub const FASHION_MNIST_CLASSES: [&str; 10] = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
];

/// Reads MNIST's four IDX files (raw or `.gz`) from `dir`.
pub fn load_mnist(dir: &Path) -> Result<TrainTest> {
    let names = (0..10).map(|d| d.to_string()).collect();
    load_idx_dir(dir, "mnist", names)
}

/// Reads Fashion-MNIST's four IDX files (raw or `.gz`) from `dir`.
pub fn load_fashion_mnist(dir: &Path) -> Result<TrainTest> {
    let names = FASHION_MNIST_CLASSES
        .iter()
        .map(|s| s.to_string())
        .collect();
    load_idx_dir(dir, "fashion-mnist", names)
}

fn load_idx_dir(dir: &Path, name: &str, class_names: Vec<String>) -> Result<TrainTest> {
    let split = |prefix: &str, split: &str| -> Result<Dataset> {
        let images = raw_or_gz(dir, &format!("{prefix}-images-idx3-ubyte"));
        let labels = raw_or_gz(dir, &format!("{prefix}-labels-idx1-ubyte"));
        let mut d = load_idx_pair(&images, &labels, &format!("{name}/{split}"), 10)?;
        d.class_names = Some(class_names.clone());
        Ok(d)
    };
    let train = split("train", "train")?;
    let test = split("t10k", "test")?;
    tracing::info!(train = train.len(), test = test.len(), dir = %dir.display(), "loaded {name}");
    Ok(TrainTest { train, test })
}

/// Reads one images file (N×H×W) and its labels file (N) into a 1-channel data set.
pub fn load_idx_pair(
    images_path: &Path,
    labels_path: &Path,
    name: &str,
    num_classes: usize,
) -> Result<Dataset> {
    let img = read_maybe_gz(images_path, "an IDX images file (raw or .gz)")?;
    let (dims, pixels) = parse_idx(images_path, &img, IDX_IMAGES_MAGIC, 3)?;
    let lab = read_maybe_gz(labels_path, "an IDX labels file (raw or .gz)")?;
    let (ldims, label_bytes) = parse_idx(labels_path, &lab, IDX_LABELS_MAGIC, 1)?;
    if dims[0] != ldims[0] {
        return Err(DataError::CountMismatch {
            images: images_path.to_path_buf(),
            labels: labels_path.to_path_buf(),
            n_images: dims[0],
            n_labels: ldims[0],
        });
    }
    let labels: Vec<u32> = label_bytes.iter().map(|&b| u32::from(b)).collect();
    check_labels(labels_path, &labels, num_classes)?;
    Ok(Dataset {
        name: name.to_string(),
        images: pixels.to_vec(),
        labels,
        channels: 1,
        height: dims[1],
        width: dims[2],
        num_classes,
        class_names: None,
    })
}

/// Checks magic and exact length; returns the dimensions and the payload.
fn parse_idx<'a>(
    path: &Path,
    bytes: &'a [u8],
    magic: u32,
    ndims: usize,
) -> Result<(Vec<usize>, &'a [u8])> {
    let header = 4 + 4 * ndims;
    if bytes.len() < 4 {
        return Err(DataError::BadLength {
            path: path.to_path_buf(),
            len: bytes.len() as u64,
            expected: format!("at least a {header}-byte IDX header"),
        });
    }
    let be = |i: usize| u32::from_be_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
    let found = be(0);
    if found != magic {
        return Err(DataError::BadMagic {
            path: path.to_path_buf(),
            expected: magic,
            found,
        });
    }
    if bytes.len() < header {
        return Err(DataError::BadLength {
            path: path.to_path_buf(),
            len: bytes.len() as u64,
            expected: format!("at least a {header}-byte IDX header"),
        });
    }
    let dims: Vec<usize> = (0..ndims).map(|k| be(4 + 4 * k) as usize).collect();
    let payload: usize = dims.iter().product();
    if bytes.len() != header + payload {
        return Err(DataError::BadLength {
            path: path.to_path_buf(),
            len: bytes.len() as u64,
            expected: format!(
                "{} = {header}-byte header + {} bytes for dimensions {dims:?}",
                header + payload,
                payload
            ),
        });
    }
    Ok((dims, &bytes[header..]))
}
