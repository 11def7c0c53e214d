//! Tests of the readers and the pipeline on files written here in the official layouts, plus the
//! real CIFAR-10 and Fashion-MNIST where present (skipped, with a message, where not).

mod bad_input;
mod loader;
mod readers;
mod real_data;

use std::io::Write;
use std::path::{Path, PathBuf};

/// The data root for tests: `$BREAKEVEN_DATA`, resolved against the workspace root when relative
/// (cargo runs a package's tests in the package's folder, while a relative path is given from the
/// root), else `<workspace>/data`.
pub(crate) fn test_data_root() -> PathBuf {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    match std::env::var_os(crate::DATA_ENV).filter(|v| !v.is_empty()) {
        Some(v) if Path::new(&v).is_absolute() => PathBuf::from(v),
        Some(v) => workspace.join(v),
        None => workspace.join("data"),
    }
}

/// A deterministic pseudo-image: pixel bytes depend on the example, channel and position.
pub(crate) fn pattern(example: usize, len: usize) -> Vec<u8> {
    (0..len)
        .map(|p| ((example * 31 + p * 7 + p / 97) % 256) as u8)
        .collect()
}

/// One CIFAR binary file: per record, the `header` bytes then 3,072 pixel bytes.
pub(crate) fn write_cifar(path: &Path, records: &[(Vec<u8>, Vec<u8>)]) {
    let mut bytes = Vec::new();
    for (header, pixels) in records {
        assert_eq!(pixels.len(), 3072);
        bytes.extend_from_slice(header);
        bytes.extend_from_slice(pixels);
    }
    std::fs::write(path, bytes).unwrap();
}

/// An IDX file of unsigned bytes (raw, or gzipped when the name ends in `.gz`).
pub(crate) fn write_idx(path: &Path, magic: u32, dims: &[u32], payload: &[u8]) {
    let mut bytes = magic.to_be_bytes().to_vec();
    for d in dims {
        bytes.extend_from_slice(&d.to_be_bytes());
    }
    bytes.extend_from_slice(payload);
    write_maybe_gz(path, &bytes);
}

pub(crate) fn write_maybe_gz(path: &Path, bytes: &[u8]) {
    if path.extension().is_some_and(|e| e == "gz") {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(bytes).unwrap();
        std::fs::write(path, enc.finish().unwrap()).unwrap();
    } else {
        std::fs::write(path, bytes).unwrap();
    }
}

/// MNIST-style folder with `n_train`/`n_test` 28×28 images; labels `i % 10`.
pub(crate) fn write_mnist_dir(dir: &Path, n_train: usize, n_test: usize, gz: bool) {
    let ext = if gz { ".gz" } else { "" };
    for (prefix, n) in [("train", n_train), ("t10k", n_test)] {
        let pixels: Vec<u8> = (0..n).flat_map(|i| pattern(i, 784)).collect();
        let labels: Vec<u8> = (0..n).map(|i| (i % 10) as u8).collect();
        write_idx(
            &dir.join(format!("{prefix}-images-idx3-ubyte{ext}")),
            crate::IDX_IMAGES_MAGIC,
            &[n as u32, 28, 28],
            &pixels,
        );
        write_idx(
            &dir.join(format!("{prefix}-labels-idx1-ubyte{ext}")),
            crate::IDX_LABELS_MAGIC,
            &[n as u32],
            &labels,
        );
    }
}

/// A JPEG of an H×W interleaved image (RGB when `rgb`, else grayscale), at quality 100.
pub(crate) fn jpeg(pixels: &[u8], side: u16, rgb: bool) -> Vec<u8> {
    let mut out = Vec::new();
    let color = if rgb {
        jpeg_encoder::ColorType::Rgb
    } else {
        jpeg_encoder::ColorType::Luma
    };
    jpeg_encoder::Encoder::new(&mut out, 100)
        .encode(pixels, side, side, color)
        .unwrap();
    out
}
