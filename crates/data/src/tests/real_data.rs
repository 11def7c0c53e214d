//! The real CIFAR-10 (from `$BREAKEVEN_DATA`) and Fashion-MNIST (Debian's package), where present.

use crate::{
    exact_duplicates, load_cifar10, load_fashion_mnist, locate, shared_images, DatasetName,
    Normalization,
};

/// Where the real data set is, or `None` after printing why the test is skipped.
fn located(name: DatasetName) -> Option<std::path::PathBuf> {
    locate(name, Some(&super::test_data_root()))
        .map_err(|e| eprintln!("SKIPPED: {e}"))
        .ok()
}

#[test]
fn real_cifar10_counts_labels_and_channel_statistics() {
    let Some(dir) = located(DatasetName::Cifar10) else {
        return;
    };
    let tt = load_cifar10(&dir).unwrap();
    assert_eq!((tt.train.len(), tt.test.len()), (50_000, 10_000));
    assert_eq!(tt.train.class_counts(), vec![5_000; 10]);
    assert_eq!(tt.test.class_counts(), vec![1_000; 10]);
    assert_eq!(tt.train.labels[0], 6);
    assert_eq!(tt.test.labels[0], 3);
    // The statistics published for this copy in shared/data/README.md.
    let norm = Normalization::from_dataset(&tt.train, None).unwrap();
    let (mean, std) = ([0.4932, 0.4830, 0.4470], [0.2460, 0.2441, 0.2616]);
    for c in 0..3 {
        assert!((norm.mean[c] - mean[c]).abs() < 1e-4, "{norm:?}");
        assert!((norm.std[c] - std[c]).abs() < 1e-4, "{norm:?}");
    }
}

/// Exact repeats in the shared copy (see `dedup.rs`): printed, since the count describes this
/// copy, not CIFAR-10; what must hold of any copy is asserted.
#[test]
fn real_cifar10_duplicates() {
    let Some(dir) = located(DatasetName::Cifar10) else {
        return;
    };
    let tt = load_cifar10(&dir).unwrap();
    let train = exact_duplicates(&tt.train);
    let test = exact_duplicates(&tt.test);
    eprintln!(
        "cifar10 train: {} distinct images among {} records ({} repeats, {} with another label); \
         test: {} distinct among {}",
        train.unique.len(),
        tt.train.len(),
        train.repeats(),
        train.label_conflicts,
        test.unique.len(),
        tt.test.len()
    );
    for (i, &first) in train.first_of.iter().enumerate() {
        assert_eq!(tt.train.image(i), tt.train.image(first), "record {i}");
    }
    assert_eq!(train.label_conflicts, 0, "a repeated image with two labels");
    assert_eq!(test.repeats(), 0, "the test split repeats an image");
    assert!(
        shared_images(&tt.train, &tt.test).is_empty(),
        "a test image is in train"
    );
}

#[test]
fn real_fashion_mnist_counts_and_first_labels() {
    let Some(dir) = located(DatasetName::FashionMnist) else {
        return;
    };
    let tt = load_fashion_mnist(&dir).unwrap();
    assert_eq!((tt.train.len(), tt.test.len()), (60_000, 10_000));
    assert_eq!((tt.train.height, tt.train.width), (28, 28));
    assert_eq!(tt.train.labels[..10], [9, 0, 0, 3, 0, 2, 7, 2, 5, 5]);
    assert_eq!(tt.train.class_counts(), vec![6_000; 10]);
    assert_eq!(tt.test.class_counts(), vec![1_000; 10]);
}
