//! An in-memory image classification data set: u8 pixels (N×C×H×W) and class labels.

use crate::error::{DataError, Result};

/// Images kept as bytes, N×C×H×W (planar, row-major), with one class label per image.
///
/// Pixels stay `u8` in memory (CIFAR-10 train is 150 MB this way, 600 MB as f32); the
/// pipeline converts to normalized f32 only when it builds a batch.
#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    /// Short name, e.g. `"cifar10/train"`.
    pub name: String,
    /// N×C×H×W bytes.
    pub images: Vec<u8>,
    /// One label per image, each `< num_classes`.
    pub labels: Vec<u32>,
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    pub num_classes: usize,
    /// Class names in label order, where the data set ships them.
    pub class_names: Option<Vec<String>>,
}

/// The two official splits of a data set.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainTest {
    pub train: Dataset,
    pub test: Dataset,
}

impl Dataset {
    /// Number of examples.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Bytes per image: C·H·W.
    pub fn image_len(&self) -> usize {
        self.channels * self.height * self.width
    }

    /// The C×H×W bytes of image `i` (panics if `i >= len()`, like slice indexing).
    pub fn image(&self, i: usize) -> &[u8] {
        let n = self.image_len();
        &self.images[i * n..(i + 1) * n]
    }

    /// Number of examples of each class (labels out of range, which [`Dataset::validate`]
    /// reports, are not counted).
    pub fn class_counts(&self) -> Vec<usize> {
        let mut counts = vec![0; self.num_classes];
        for &l in &self.labels {
            if let Some(c) = counts.get_mut(l as usize) {
                *c += 1;
            }
        }
        counts
    }

    /// A new data set holding the examples at `indices`, in that order.
    pub fn subset(&self, indices: &[usize]) -> Result<Dataset> {
        let n = self.image_len();
        let mut images = Vec::with_capacity(indices.len() * n);
        let mut labels = Vec::with_capacity(indices.len());
        for &i in indices {
            if i >= self.len() {
                return Err(DataError::InvalidArgument(format!(
                    "{}: index {i} out of range for {} examples",
                    self.name,
                    self.len()
                )));
            }
            images.extend_from_slice(self.image(i));
            labels.push(self.labels[i]);
        }
        Ok(Dataset {
            images,
            labels,
            ..self.metadata_clone()
        })
    }

    /// Checks the invariants: pixel buffer length and label range.
    pub fn validate(&self) -> Result<()> {
        if self.images.len() != self.len() * self.image_len() {
            return Err(DataError::InvalidArgument(format!(
                "{}: {} pixel bytes for {} images of {}×{}×{}",
                self.name,
                self.images.len(),
                self.len(),
                self.channels,
                self.height,
                self.width
            )));
        }
        if let Some(i) = self
            .labels
            .iter()
            .position(|&l| l as usize >= self.num_classes)
        {
            return Err(DataError::InvalidArgument(format!(
                "{}: label {} of example {i} is not < {} classes",
                self.name, self.labels[i], self.num_classes
            )));
        }
        Ok(())
    }

    fn metadata_clone(&self) -> Dataset {
        Dataset {
            name: self.name.clone(),
            images: Vec::new(),
            labels: Vec::new(),
            channels: self.channels,
            height: self.height,
            width: self.width,
            num_classes: self.num_classes,
            class_names: self.class_names.clone(),
        }
    }
}

/// Checks that every label is `< num_classes`, naming the file and record otherwise.
pub(crate) fn check_labels(
    path: &std::path::Path,
    labels: &[u32],
    num_classes: usize,
) -> Result<()> {
    match labels.iter().position(|&l| l as usize >= num_classes) {
        None => Ok(()),
        Some(index) => Err(DataError::LabelOutOfRange {
            path: path.to_path_buf(),
            index,
            label: labels[index],
            num_classes,
        }),
    }
}
