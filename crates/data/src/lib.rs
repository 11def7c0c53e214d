//! breakeven-data: image classification data sets, splits, and a seeded, resumable input pipeline.
//!
//! Readers ([`load_cifar10`], [`load_cifar100`], [`load_mnist`], [`load_fashion_mnist`],
//! [`load_tiny_imagenet`], or [`load`] by name) keep pixels as `u8` (N×C×H×W) with `u32` labels.
//! Data sets are found by [`locate`]: in `--data-dir` alone when given, else `$BREAKEVEN_DATA`,
//! then `./data` (Fashion-MNIST also in Debian's `/usr/share/datasets/fashion-mnist`). Bad files give a typed
//! [`DataError`] naming the file and what was expected; nothing panics on bad input.
//!
//! [`exact_duplicates`] finds repeated images, so splits can be made of distinct images on request.
//!
//! The [`Loader`] shuffles, augments ([`Augment::CIFAR`]), normalizes and mixes ([`Mixup`]) into
//! f32 tensors; all randomness comes from ChaCha8 streams keyed by (seed, epoch, position), so the
//! same seed gives the same batches bit for bit and [`LoaderState`] is all a checkpoint needs.
//!
//! We deliberately do not use `candle-datasets`: it adds minutes to a cold build, reads only
//! uncompressed IDX, returns f32 tensors for the whole set, and panics on malformed files.
//!
//! With the default `fetch` feature, [`fetch`] downloads, verifies and unpacks the official
//! archives (`cargo xtask data fetch NAME`).

mod augment;
mod cifar;
mod dataset;
mod dedup;
mod error;
#[cfg(feature = "fetch")]
pub mod fetch;
mod idx;
mod loader;
mod locate;
mod mixup;
mod noise;
mod normalize;
mod read;
mod rng;
mod split;
mod tiny_imagenet;

use std::path::Path;

pub use augment::{write_image, Augment, Placement};
pub use cifar::{load_cifar10, load_cifar100, Cifar100Labels, CIFAR10_CLASSES};
pub use dataset::{Dataset, TrainTest};
pub use dedup::{exact_duplicates, shared_images, Duplicates};
pub use error::{DataError, Result};
pub use idx::{
    load_fashion_mnist, load_idx_pair, load_mnist, FASHION_MNIST_CLASSES, IDX_IMAGES_MAGIC,
    IDX_LABELS_MAGIC,
};
pub use loader::{Batch, HostBatch, Loader, LoaderConfig, LoaderState};
pub use locate::{
    candidate_dirs, data_root, locate, DatasetName, DATA_ENV, DEBIAN_FASHION_MNIST,
    DEFAULT_DATA_DIR,
};
pub use mixup::{MixInfo, Mixup};
pub use noise::{symmetric_label_noise, NoisyLabels};
pub use normalize::Normalization;
pub use rng::epoch_permutation;
pub use split::{balanced_subset, first_n, validation_split};
pub use tiny_imagenet::{load_tiny_imagenet, TINY_SIDE};

/// Finds `name` (see [`locate`]) and reads its train and test splits (CIFAR-100: fine labels;
/// Tiny ImageNet: `test` is the labelled validation split).
pub fn load(name: DatasetName, data_dir: Option<&Path>) -> Result<TrainTest> {
    let dir = locate(name, data_dir)?;
    match name {
        DatasetName::Cifar10 => load_cifar10(&dir),
        DatasetName::Cifar100 => load_cifar100(&dir, Cifar100Labels::Fine),
        DatasetName::Mnist => load_mnist(&dir),
        DatasetName::FashionMnist => load_fashion_mnist(&dir),
        DatasetName::TinyImageNet => load_tiny_imagenet(&dir),
    }
}

#[cfg(test)]
mod tests;
