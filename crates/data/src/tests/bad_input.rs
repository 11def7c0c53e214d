//! Every malformed input is a typed error naming the file; never a panic, never fewer examples.

use super::*;
use crate::{
    load_cifar10, load_cifar100, load_mnist, load_tiny_imagenet, Cifar100Labels, DataError,
};

fn cifar10_dir(root: &Path) -> std::path::PathBuf {
    let dir = root.join("c10");
    std::fs::create_dir_all(&dir).unwrap();
    for name in [
        "data_batch_1",
        "data_batch_2",
        "data_batch_3",
        "data_batch_4",
        "data_batch_5",
        "test_batch",
    ] {
        write_cifar(
            &dir.join(format!("{name}.bin")),
            &[(vec![1], pattern(0, 3072)), (vec![2], pattern(1, 3072))],
        );
    }
    dir
}

#[test]
fn cifar_missing_truncated_and_bad_label() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = cifar10_dir(tmp.path());
    load_cifar10(&dir).unwrap();

    let file = dir.join("data_batch_3.bin");
    let bytes = std::fs::read(&file).unwrap();
    std::fs::write(&file, &bytes[..bytes.len() - 1]).unwrap();
    let err = load_cifar10(&dir).unwrap_err();
    assert!(
        matches!(&err, DataError::BadLength { path, len, .. } if *path == file && *len == 2 * 3073 - 1),
        "{err}"
    );
    assert!(err.to_string().contains("3073"), "{err}");
    std::fs::write(&file, []).unwrap();
    assert!(matches!(
        load_cifar10(&dir).unwrap_err(),
        DataError::BadLength { .. }
    ));

    let mut bad = bytes.clone();
    bad[3073] = 10;
    std::fs::write(&file, &bad).unwrap();
    let err = load_cifar10(&dir).unwrap_err();
    assert!(
        matches!(
            &err,
            DataError::LabelOutOfRange {
                index: 1,
                label: 10,
                num_classes: 10,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("data_batch_3.bin"));

    std::fs::remove_file(&file).unwrap();
    let err = load_cifar10(&dir).unwrap_err();
    assert!(
        matches!(&err, DataError::MissingFile { path, .. } if *path == file),
        "{err}"
    );
}

#[test]
fn cifar100_record_size_and_label_range() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    write_cifar(&dir.join("test.bin"), &[(vec![0, 0], pattern(0, 3072))]);
    // A CIFAR-10-sized record (3,073 bytes) is not a CIFAR-100 record.
    std::fs::write(dir.join("train.bin"), vec![0u8; 3073 * 2]).unwrap();
    let err = load_cifar100(dir, Cifar100Labels::Fine).unwrap_err();
    assert!(matches!(err, DataError::BadLength { .. }), "{err}");
    // Coarse label 20 is out of range for coarse labels but the fine label 5 is fine.
    write_cifar(&dir.join("train.bin"), &[(vec![20, 5], pattern(0, 3072))]);
    load_cifar100(dir, Cifar100Labels::Fine).unwrap();
    let err = load_cifar100(dir, Cifar100Labels::Coarse).unwrap_err();
    assert!(
        matches!(
            err,
            DataError::LabelOutOfRange {
                label: 20,
                num_classes: 20,
                ..
            }
        ),
        "{err}"
    );
    std::fs::write(dir.join("fine_label_names.txt"), "a\nb\n").unwrap();
    let err = load_cifar100(dir, Cifar100Labels::Fine).unwrap_err();
    assert!(matches!(err, DataError::Format { .. }), "{err}");
}

#[test]
fn idx_wrong_magic_truncation_counts_and_labels() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let images = dir.join("train-images-idx3-ubyte");
    let labels = dir.join("train-labels-idx1-ubyte");
    let reset = || write_mnist_dir(dir, 5, 2, false);
    reset();
    load_mnist(dir).unwrap();

    // Labels magic on an images file.
    write_idx(
        &images,
        crate::IDX_LABELS_MAGIC,
        &[5, 28, 28],
        &vec![0; 5 * 784],
    );
    let err = load_mnist(dir).unwrap_err();
    assert!(
        matches!(&err, DataError::BadMagic { path, expected: 0x803, found: 0x801 } if *path == images),
        "{err}"
    );

    // Truncated payload, and a header promising more images than present.
    reset();
    let bytes = std::fs::read(&images).unwrap();
    std::fs::write(&images, &bytes[..bytes.len() - 10]).unwrap();
    assert!(matches!(
        load_mnist(dir).unwrap_err(),
        DataError::BadLength { .. }
    ));
    std::fs::write(&images, &bytes[..10]).unwrap();
    assert!(matches!(
        load_mnist(dir).unwrap_err(),
        DataError::BadLength { .. }
    ));
    write_idx(
        &images,
        crate::IDX_IMAGES_MAGIC,
        &[6, 28, 28],
        &vec![0; 5 * 784],
    );
    assert!(matches!(
        load_mnist(dir).unwrap_err(),
        DataError::BadLength { .. }
    ));
    // Trailing bytes are an error too, not silently ignored.
    write_idx(
        &images,
        crate::IDX_IMAGES_MAGIC,
        &[5, 28, 28],
        &vec![0; 5 * 784 + 1],
    );
    assert!(matches!(
        load_mnist(dir).unwrap_err(),
        DataError::BadLength { .. }
    ));

    // 4 labels for 5 images.
    reset();
    write_idx(&labels, crate::IDX_LABELS_MAGIC, &[4], &[0, 1, 2, 3]);
    let err = load_mnist(dir).unwrap_err();
    assert!(
        matches!(
            err,
            DataError::CountMismatch {
                n_images: 5,
                n_labels: 4,
                ..
            }
        ),
        "{err}"
    );

    // Label 11.
    write_idx(&labels, crate::IDX_LABELS_MAGIC, &[5], &[0, 1, 11, 3, 4]);
    let err = load_mnist(dir).unwrap_err();
    assert!(
        matches!(&err, DataError::LabelOutOfRange { path, index: 2, label: 11, .. } if *path == labels),
        "{err}"
    );

    // Missing labels file.
    std::fs::remove_file(&labels).unwrap();
    assert!(matches!(
        load_mnist(dir).unwrap_err(),
        DataError::MissingFile { .. }
    ));
}

#[test]
fn truncated_gzip_is_an_io_error_naming_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    write_mnist_dir(dir, 5, 2, true);
    let file = dir.join("t10k-images-idx3-ubyte.gz");
    let bytes = std::fs::read(&file).unwrap();
    std::fs::write(&file, &bytes[..bytes.len() / 2]).unwrap();
    let err = load_mnist(dir).unwrap_err();
    assert!(
        matches!(&err, DataError::Io { path, .. } if *path == file),
        "{err}"
    );
}

#[test]
fn tiny_imagenet_bad_files() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    super::readers::write_tiny_imagenet(root);
    // A 32×32 JPEG where 64×64 is expected.
    let small = root.join("val/images/val_1.JPEG");
    std::fs::write(&small, jpeg(&vec![1u8; 32 * 32 * 3], 32, true)).unwrap();
    let err = load_tiny_imagenet(root).unwrap_err();
    assert!(
        matches!(&err, DataError::Format { path, .. } if *path == small),
        "{err}"
    );
    // Not a JPEG at all.
    std::fs::write(&small, b"GIF89a").unwrap();
    assert!(matches!(
        load_tiny_imagenet(root).unwrap_err(),
        DataError::Format { .. }
    ));
    // An annotation naming an unknown class.
    std::fs::write(
        root.join("val/val_annotations.txt"),
        "val_0.JPEG\tn99999999\t0\t0\t1\t1\n",
    )
    .unwrap();
    let err = load_tiny_imagenet(root).unwrap_err();
    assert!(err.to_string().contains("n99999999"), "{err}");
    // A missing class folder.
    std::fs::remove_dir_all(root.join("train/n01629819")).unwrap();
    assert!(matches!(
        load_tiny_imagenet(root).unwrap_err(),
        DataError::MissingFile { .. }
    ));
}
