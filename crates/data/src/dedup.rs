//! Exact duplicate images: found by their bytes, so that a validation split never holds a copy
//! of a training image and a "subset of n" means n distinct images.
//!
//! Why this exists: a validation split carved at random from a set with repeats holds copies of
//! training images and chooses η* and α by memorization (a corrupted CIFAR-10 copy this project
//! once used repeated most images five times: 70.8% validation against 49.9% test accuracy). The
//! official releases hold a few genuine repeats (CIFAR-100: 14 within train, 10 train images
//! equal to test images); runs keep them by default, as published work does, and log them.

use std::collections::HashMap;

use crate::dataset::Dataset;

/// Which images of a data set repeat an earlier one, byte for byte.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Duplicates {
    /// Ascending indices of the first occurrence of every distinct image.
    pub unique: Vec<usize>,
    /// For every index, the index of the first image with the same bytes (itself if unique).
    pub first_of: Vec<usize>,
    /// Repeats whose label differs from the label of their first occurrence.
    pub label_conflicts: usize,
}

impl Duplicates {
    /// Number of records that repeat an earlier image.
    pub fn repeats(&self) -> usize {
        self.first_of.len() - self.unique.len()
    }
}

/// Groups the images of `data` by their bytes (compared in full, not by a hash alone).
pub fn exact_duplicates(data: &Dataset) -> Duplicates {
    let mut seen: HashMap<&[u8], usize> = HashMap::with_capacity(data.len());
    let mut unique = Vec::new();
    let mut first_of = Vec::with_capacity(data.len());
    let mut label_conflicts = 0;
    for i in 0..data.len() {
        let first = *seen.entry(data.image(i)).or_insert(i);
        if first == i {
            unique.push(i);
        } else if data.labels[first] != data.labels[i] {
            label_conflicts += 1;
        }
        first_of.push(first);
    }
    Duplicates {
        unique,
        first_of,
        label_conflicts,
    }
}

/// Indices of the images of `data` whose bytes also occur in `other` (e.g. training images
/// that are copies of test images).
pub fn shared_images(data: &Dataset, other: &Dataset) -> Vec<usize> {
    let theirs: std::collections::HashSet<&[u8]> =
        (0..other.len()).map(|i| other.image(i)).collect();
    (0..data.len())
        .filter(|&i| theirs.contains(data.image(i)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny(pixels: &[[u8; 2]], labels: &[u32]) -> Dataset {
        Dataset {
            name: "tiny".into(),
            images: pixels.iter().flatten().copied().collect(),
            labels: labels.to_vec(),
            channels: 1,
            height: 1,
            width: 2,
            num_classes: 3,
            class_names: None,
        }
    }

    #[test]
    fn repeats_map_to_their_first_occurrence() {
        let d = tiny(
            &[[1, 2], [3, 4], [1, 2], [5, 6], [3, 4], [1, 2]],
            &[0, 1, 0, 2, 2, 0],
        );
        let dup = exact_duplicates(&d);
        assert_eq!(dup.unique, vec![0, 1, 3]);
        assert_eq!(dup.first_of, vec![0, 1, 0, 3, 1, 0]);
        assert_eq!(dup.repeats(), 3);
        // Record 4 repeats record 1's image with another label.
        assert_eq!(dup.label_conflicts, 1);
    }

    #[test]
    fn distinct_images_are_all_unique() {
        let d = tiny(&[[1, 2], [2, 1], [0, 0]], &[0, 1, 2]);
        let dup = exact_duplicates(&d);
        assert_eq!(dup.unique, vec![0, 1, 2]);
        assert_eq!(dup.repeats(), 0);
        assert_eq!(dup.label_conflicts, 0);
    }

    #[test]
    fn shared_images_finds_copies_across_splits() {
        let train = tiny(&[[1, 2], [3, 4], [5, 6]], &[0, 1, 2]);
        let test = tiny(&[[5, 6], [7, 8]], &[2, 0]);
        assert_eq!(shared_images(&train, &test), vec![2]);
        assert!(shared_images(&test, &tiny(&[[9, 9]], &[0])).is_empty());
    }
}
