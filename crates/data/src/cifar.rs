//! CIFAR-10 and CIFAR-100 in the official binary layout (label byte(s) + 3,072 planar RGB bytes).

use std::path::Path;

use crate::dataset::{check_labels, Dataset, TrainTest};
use crate::error::{DataError, Result};
use crate::read::read_file;

const IMAGE_BYTES: usize = 3 * 32 * 32;

/// CIFAR-10 class names in label order (also in `batches.meta.txt`).
pub const CIFAR10_CLASSES: [&str; 10] = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
];

/// Which CIFAR-100 label to keep: the 100 fine classes (default) or the 20 superclasses.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Cifar100Labels {
    #[default]
    Fine,
    Coarse,
}

/// Reads `data_batch_1.bin` … `data_batch_5.bin` (train, 50,000) and `test_batch.bin` (test, 10,000).
pub fn load_cifar10(dir: &Path) -> Result<TrainTest> {
    let mut train = empty("cifar10/train", 10);
    for k in 1..=5 {
        read_records(
            &dir.join(format!("data_batch_{k}.bin")),
            1,
            0,
            10,
            &mut train,
        )?;
    }
    let mut test = empty("cifar10/test", 10);
    read_records(&dir.join("test_batch.bin"), 1, 0, 10, &mut test)?;
    let names: Vec<String> = CIFAR10_CLASSES.iter().map(|s| s.to_string()).collect();
    train.class_names = Some(names.clone());
    test.class_names = Some(names);
    tracing::info!(train = train.len(), test = test.len(), dir = %dir.display(), "loaded CIFAR-10");
    Ok(TrainTest { train, test })
}

/// Reads `train.bin` (50,000) and `test.bin` (10,000); each record is coarse byte, fine byte, pixels.
/// Class names come from `fine_label_names.txt` / `coarse_label_names.txt` when present.
pub fn load_cifar100(dir: &Path, which: Cifar100Labels) -> Result<TrainTest> {
    let (offset, classes, names_file) = match which {
        Cifar100Labels::Coarse => (0, 20, "coarse_label_names.txt"),
        Cifar100Labels::Fine => (1, 100, "fine_label_names.txt"),
    };
    let mut train = empty("cifar100/train", classes);
    read_records(&dir.join("train.bin"), 2, offset, classes, &mut train)?;
    let mut test = empty("cifar100/test", classes);
    read_records(&dir.join("test.bin"), 2, offset, classes, &mut test)?;
    let names = read_names(&dir.join(names_file), classes)?;
    train.class_names = names.clone();
    test.class_names = names;
    tracing::info!(train = train.len(), test = test.len(), dir = %dir.display(), "loaded CIFAR-100");
    Ok(TrainTest { train, test })
}

fn empty(name: &str, num_classes: usize) -> Dataset {
    Dataset {
        name: name.to_string(),
        images: Vec::new(),
        labels: Vec::new(),
        channels: 3,
        height: 32,
        width: 32,
        num_classes,
        class_names: None,
    }
}

/// Appends the records of one file: `label_bytes` header bytes (the label at `label_at`), then pixels.
fn read_records(
    path: &Path,
    label_bytes: usize,
    label_at: usize,
    num_classes: usize,
    out: &mut Dataset,
) -> Result<()> {
    let bytes = read_file(path, "a CIFAR binary batch")?;
    let record = label_bytes + IMAGE_BYTES;
    if bytes.is_empty() || bytes.len() % record != 0 {
        return Err(DataError::BadLength {
            path: path.to_path_buf(),
            len: bytes.len() as u64,
            expected: format!("a positive multiple of the record size {record}"),
        });
    }
    let n = bytes.len() / record;
    let labels: Vec<u32> = bytes
        .chunks_exact(record)
        .map(|r| u32::from(r[label_at]))
        .collect();
    check_labels(path, &labels, num_classes)?;
    out.images.reserve(n * IMAGE_BYTES);
    for r in bytes.chunks_exact(record) {
        out.images.extend_from_slice(&r[label_bytes..]);
    }
    out.labels.extend(labels);
    Ok(())
}

/// One class name per non-empty line; absent file gives `None`, a wrong count an error.
fn read_names(path: &Path, classes: usize) -> Result<Option<Vec<String>>> {
    if !path.is_file() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(path).map_err(|e| DataError::io(path, e))?;
    let names: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect();
    if names.len() != classes {
        return Err(DataError::format(
            path,
            format!("{} class names, expected {classes}", names.len()),
        ));
    }
    Ok(Some(names))
}
