//! The resumable, seeded batch loader: shuffle, augment, normalize, mix, and build tensors.
//!
//! Determinism: the order of epoch e is `epoch_permutation(n, seed, e)`; the augmentation and
//! Mixup draws of the batch starting at position i of epoch e come from streams keyed by
//! (seed, e, i). Nothing else is random, so [`LoaderState`] (seed, epoch, position) is the whole
//! state, and a restored loader yields the same batches bit for bit.

use std::sync::Arc;

use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::augment::{write_image, Augment};
use crate::dataset::Dataset;
use crate::error::{DataError, Result};
use crate::mixup::{MixInfo, Mixup};
use crate::normalize::Normalization;
use crate::rng::{epoch_permutation, keyed_rng, Purpose};

/// How batches are made.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoaderConfig {
    pub batch_size: usize,
    /// Reshuffle every epoch (a pure function of seed and epoch); otherwise index order.
    pub shuffle: bool,
    /// Skip the last, smaller batch of an epoch.
    pub drop_last: bool,
    pub augment: Option<Augment>,
    pub normalization: Normalization,
    pub mixup: Option<Mixup>,
    pub seed: u64,
}

impl LoaderConfig {
    /// Training on CIFAR-style images: reshuffled every epoch, crop + flip, no Mixup.
    pub fn train(batch_size: usize, normalization: Normalization, seed: u64) -> Self {
        LoaderConfig {
            batch_size,
            shuffle: true,
            drop_last: false,
            augment: Some(Augment::CIFAR),
            normalization,
            mixup: None,
            seed,
        }
    }

    /// Evaluation: index order, no augmentation, every example once per epoch.
    pub fn eval(batch_size: usize, normalization: Normalization) -> Self {
        LoaderConfig {
            batch_size,
            shuffle: false,
            drop_last: false,
            augment: None,
            normalization,
            mixup: None,
            seed: 0,
        }
    }
}

/// Where the loader is: everything needed to resume it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoaderState {
    pub seed: u64,
    pub epoch: u64,
    /// Position of the next batch's first example within the epoch's order.
    pub position: usize,
}

/// A batch in host memory: normalized f32 images (N×C×H×W) and labels.
#[derive(Debug, Clone, PartialEq)]
pub struct HostBatch {
    pub images: Vec<f32>,
    pub shape: [usize; 4],
    pub labels: Vec<u32>,
    /// Data-set indices of the examples (before Mixup).
    pub indices: Vec<usize>,
    pub epoch: u64,
    pub position: usize,
    pub mix: Option<MixInfo>,
}

/// A batch on a device.
#[derive(Debug, Clone)]
pub struct Batch {
    /// f32, N×C×H×W.
    pub images: Tensor,
    /// u32, N.
    pub labels: Tensor,
    /// With Mixup: the partner labels (u32, N) and λ.
    pub mix: Option<(Tensor, f64)>,
    pub indices: Vec<usize>,
    pub epoch: u64,
    pub position: usize,
}

impl HostBatch {
    /// Moves the batch to `device` as tensors.
    pub fn to_device(self, device: &Device) -> Result<Batch> {
        let n = self.labels.len();
        let images = Tensor::from_vec(self.images, self.shape.to_vec(), device)?;
        let labels = Tensor::from_vec(self.labels, n, device)?;
        let mix = match self.mix {
            Some(m) => Some((Tensor::from_vec(m.labels_b, n, device)?, m.lambda)),
            None => None,
        };
        Ok(Batch {
            images,
            labels,
            mix,
            indices: self.indices,
            epoch: self.epoch,
            position: self.position,
        })
    }
}

/// An endless stream of batches over `indices` of a data set, epoch after epoch.
#[derive(Debug, Clone)]
pub struct Loader {
    data: Arc<Dataset>,
    indices: Vec<usize>,
    labels: Option<Arc<Vec<u32>>>,
    config: LoaderConfig,
    tables: Vec<[f32; 256]>,
    state: LoaderState,
    order: (u64, Vec<usize>),
}

impl Loader {
    /// A loader over the examples `indices` of `data` (e.g. the train part of a validation split).
    pub fn new(data: Arc<Dataset>, indices: Vec<usize>, config: LoaderConfig) -> Result<Self> {
        if config.batch_size == 0 {
            return Err(DataError::InvalidArgument("batch size 0".into()));
        }
        if indices.is_empty() || (config.drop_last && indices.len() < config.batch_size) {
            return Err(DataError::InvalidArgument(format!(
                "{}: {} examples cannot make a batch of {}",
                data.name,
                indices.len(),
                config.batch_size
            )));
        }
        if let Some(&i) = indices.iter().find(|&&i| i >= data.len()) {
            return Err(DataError::InvalidArgument(format!(
                "{}: index {i} out of range for {} examples",
                data.name,
                data.len()
            )));
        }
        if config.normalization.channels() != data.channels {
            return Err(DataError::InvalidArgument(format!(
                "{}: normalization for {} channels, images have {}",
                data.name,
                config.normalization.channels(),
                data.channels
            )));
        }
        let tables = config.normalization.lookup_tables();
        let state = LoaderState {
            seed: config.seed,
            epoch: 0,
            position: 0,
        };
        Ok(Loader {
            data,
            indices,
            labels: None,
            config,
            tables,
            state,
            order: (u64::MAX, Vec::new()),
        })
    }

    /// Uses `labels` (one per example of the data set, e.g. noisy labels) instead of the data set's.
    pub fn with_labels(mut self, labels: Vec<u32>) -> Result<Self> {
        if labels.len() != self.data.len() {
            return Err(DataError::InvalidArgument(format!(
                "{}: {} replacement labels for {} examples",
                self.data.name,
                labels.len(),
                self.data.len()
            )));
        }
        if let Some(i) = labels
            .iter()
            .position(|&l| l as usize >= self.data.num_classes)
        {
            return Err(DataError::InvalidArgument(format!(
                "{}: replacement label {} of example {i} is not < {} classes",
                self.data.name, labels[i], self.data.num_classes
            )));
        }
        self.labels = Some(Arc::new(labels));
        Ok(self)
    }

    pub fn config(&self) -> &LoaderConfig {
        &self.config
    }

    /// Number of examples the loader draws from.
    pub fn len(&self) -> usize {
        self.indices.len()
    }

    pub fn is_empty(&self) -> bool {
        self.indices.is_empty()
    }

    /// Batches in one epoch.
    pub fn batches_per_epoch(&self) -> usize {
        let (n, b) = (self.indices.len(), self.config.batch_size);
        if self.config.drop_last {
            n / b
        } else {
            n.div_ceil(b)
        }
    }

    /// The position to save.
    pub fn state(&self) -> LoaderState {
        self.state
    }

    /// Continues from a saved position.
    pub fn restore(&mut self, state: LoaderState) -> Result<()> {
        if state.position > self.indices.len() {
            return Err(DataError::InvalidArgument(format!(
                "loader position {} beyond the {} examples of an epoch",
                state.position,
                self.indices.len()
            )));
        }
        self.state = state;
        self.order = (u64::MAX, Vec::new());
        Ok(())
    }

    /// The next batch on `device`.
    pub fn next_batch(&mut self, device: &Device) -> Result<Batch> {
        self.next_host()?.to_device(device)
    }

    /// The next batch in host memory; moves to the next epoch when this one is exhausted.
    pub fn next_host(&mut self) -> Result<HostBatch> {
        let (n, bs) = (self.indices.len(), self.config.batch_size);
        let left = n - self.state.position;
        if left == 0 || (self.config.drop_last && left < bs) {
            self.state.epoch += 1;
            self.state.position = 0;
        }
        let LoaderState {
            seed,
            epoch,
            position,
        } = self.state;
        if self.order.0 != epoch {
            self.order = (epoch, self.epoch_order(seed, epoch));
        }
        let end = (position + bs).min(n);
        let indices: Vec<usize> = self.order.1[position..end].to_vec();
        let b = indices.len();
        let (c, h, w) = (self.data.channels, self.data.height, self.data.width);
        let per = c * h * w;
        let mut images = vec![0f32; b * per];
        let mut aug_rng = keyed_rng(seed, Purpose::Augment, epoch, position as u64);
        for (k, &i) in indices.iter().enumerate() {
            let placement = self.config.augment.map(|a| (a.sample(&mut aug_rng), a.pad));
            write_image(
                self.data.image(i),
                (c, h, w),
                &self.tables,
                placement,
                &mut images[k * per..(k + 1) * per],
            );
        }
        let all_labels = self.labels.as_deref().unwrap_or(&self.data.labels);
        let labels: Vec<u32> = indices.iter().map(|&i| all_labels[i]).collect();
        let mix = match self.config.mixup {
            Some(m) => {
                let mut rng = keyed_rng(seed, Purpose::Mixup, epoch, position as u64);
                Some(m.apply(&mut images, per, &labels, &mut rng)?)
            }
            None => None,
        };
        self.state.position = end;
        Ok(HostBatch {
            images,
            shape: [b, c, h, w],
            labels,
            indices,
            epoch,
            position,
            mix,
        })
    }

    /// Data-set indices in the order of `epoch`.
    fn epoch_order(&self, seed: u64, epoch: u64) -> Vec<usize> {
        if !self.config.shuffle {
            return self.indices.clone();
        }
        epoch_permutation(self.indices.len(), seed, epoch)
            .into_iter()
            .map(|k| self.indices[k])
            .collect()
    }
}
