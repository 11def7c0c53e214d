//! The real CIFAR-10 and CIFAR-100 (from `$BREAKEVEN_DATA`, the official binary releases) and
//! Fashion-MNIST (Debian's package), where present.

use crate::{
    exact_duplicates, load_cifar10, load_cifar100, load_fashion_mnist, locate, shared_images,
    Cifar100Labels, DatasetName, Normalization, DEBIAN_FASHION_MNIST,
};

/// Where the real data set is, or `None` after printing why the test is skipped.
fn located(name: DatasetName) -> Option<std::path::PathBuf> {
    let found = locate(name, Some(&super::test_data_root())).or_else(|e| {
        let debian = std::path::Path::new(DEBIAN_FASHION_MNIST);
        match name {
            DatasetName::FashionMnist => locate(name, debian.parent()).map_err(|_| e),
            _ => Err(e),
        }
    });
    found.map_err(|e| eprintln!("SKIPPED: {e}")).ok()
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
    // The official training-set channel statistics (to the 4 decimals they are quoted with).
    let norm = Normalization::from_dataset(&tt.train, None).unwrap();
    let (mean, std) = ([0.4914, 0.4822, 0.4465], [0.2470, 0.2435, 0.2616]);
    for c in 0..3 {
        assert!((norm.mean[c] - mean[c]).abs() < 1e-4, "{norm:?}");
        assert!((norm.std[c] - std[c]).abs() < 1e-4, "{norm:?}");
    }
}

/// The official CIFAR-10 holds no exact repeat, within or across its splits (see `dedup.rs`).
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
    assert_eq!(
        train.repeats(),
        0,
        "the official release repeats no training image"
    );
    assert_eq!(test.repeats(), 0, "the test split repeats an image");
    assert!(
        shared_images(&tt.train, &tt.test).is_empty(),
        "a test image is in train"
    );
}

/// The official CIFAR-100 binary release: counts, the first labels, fine labels nested in coarse
/// ones, and the release's own repeats (14 training images repeated, 9 of them with another
/// label; 10 training images equal to test images), which `data.dedup` would drop.
#[test]
fn real_cifar100_counts_labels_coarse_classes_and_repeats() {
    let Some(dir) = located(DatasetName::Cifar100) else {
        return;
    };
    let fine = load_cifar100(&dir, Cifar100Labels::Fine).unwrap();
    let coarse = load_cifar100(&dir, Cifar100Labels::Coarse).unwrap();
    assert_eq!((fine.train.len(), fine.test.len()), (50_000, 10_000));
    assert_eq!(fine.train.class_counts(), vec![500; 100]);
    assert_eq!(fine.test.class_counts(), vec![100; 100]);
    assert_eq!(coarse.train.class_counts(), vec![2_500; 20]);
    assert_eq!(fine.train.labels[..5], [19, 29, 0, 11, 1]);
    assert_eq!(fine.test.labels[0], 49);
    // Every fine class lies in exactly one coarse class, five fine classes to each.
    let mut parent = [None::<u32>; 100];
    for split in [(&fine.train, &coarse.train), (&fine.test, &coarse.test)] {
        for (&f, &c) in split.0.labels.iter().zip(&split.1.labels) {
            let p = parent[f as usize].get_or_insert(c);
            assert_eq!(*p, c, "fine class {f} in two coarse classes");
        }
    }
    for c in 0..20 {
        assert_eq!(parent.iter().filter(|p| **p == Some(c)).count(), 5);
    }
    let train = exact_duplicates(&fine.train);
    assert_eq!(train.repeats(), 14, "repeated training images");
    assert_eq!(train.label_conflicts, 9, "repeats with another label");
    assert_eq!(shared_images(&fine.train, &fine.test).len(), 10);
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
