//! Symmetric label noise: a seeded, exact fraction of labels redrawn to a different class.

use rand::Rng;

use crate::error::{DataError, Result};
use crate::rng::{keyed_rng, Purpose};

/// Labels after corruption, with the mask of corrupted examples.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoisyLabels {
    pub labels: Vec<u32>,
    /// `is_noisy[i]` iff example i's label was replaced (it then differs from the true label).
    pub is_noisy: Vec<bool>,
}

impl NoisyLabels {
    pub fn num_noisy(&self) -> usize {
        self.is_noisy.iter().filter(|&&b| b).count()
    }
}

/// Replaces exactly `round(fraction · n)` labels, chosen uniformly at random without replacement,
/// each by a class drawn uniformly from the **other** `num_classes − 1` classes (the convention of
/// Zhang et al. 2017 / Arpit et al. 2017 "symmetric noise" where a corrupted label is always wrong,
/// so the mask is exactly the set of wrong labels). Deterministic in `seed`.
pub fn symmetric_label_noise(
    labels: &[u32],
    num_classes: usize,
    fraction: f64,
    seed: u64,
) -> Result<NoisyLabels> {
    if !(0.0..=1.0).contains(&fraction) {
        return Err(DataError::InvalidArgument(format!(
            "label noise fraction {fraction} is not in [0, 1]"
        )));
    }
    if num_classes < 2 {
        return Err(DataError::InvalidArgument(format!(
            "label noise needs at least 2 classes, got {num_classes}"
        )));
    }
    if let Some(i) = labels.iter().position(|&l| l as usize >= num_classes) {
        return Err(DataError::InvalidArgument(format!(
            "label {} of example {i} is not < {num_classes}",
            labels[i]
        )));
    }
    let n = labels.len();
    let k = (fraction * n as f64).round() as usize;
    let mut rng = keyed_rng(seed, Purpose::LabelNoise, 0, 0);
    // Partial Fisher-Yates: the first k entries are a uniform k-subset.
    let mut order: Vec<usize> = (0..n).collect();
    for i in 0..k {
        let j = rng.random_range(i..n);
        order.swap(i, j);
    }
    let mut out = labels.to_vec();
    let mut is_noisy = vec![false; n];
    for &i in &order[..k] {
        let r = rng.random_range(0..num_classes as u32 - 1);
        out[i] = if r >= labels[i] { r + 1 } else { r };
        is_noisy[i] = true;
    }
    Ok(NoisyLabels {
        labels: out,
        is_noisy,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_fraction_mask_and_always_a_different_class() {
        let labels: Vec<u32> = (0..1000).map(|i| (i % 10) as u32).collect();
        let noisy = symmetric_label_noise(&labels, 10, 0.37, 5).unwrap();
        assert_eq!(noisy.num_noisy(), 370);
        let mut hits = [0usize; 10];
        for (i, (&old, &new)) in labels.iter().zip(&noisy.labels).enumerate() {
            assert_eq!(noisy.is_noisy[i], new != old, "example {i}");
            assert!(new < 10);
            if noisy.is_noisy[i] {
                hits[new as usize] += 1;
            }
        }
        // Every class is reachable as a wrong label: about 370/10 = 37 land on each.
        assert!(hits.iter().all(|&h| h > 15), "{hits:?}");
        assert_eq!(symmetric_label_noise(&labels, 10, 0.37, 5).unwrap(), noisy);
        assert_ne!(symmetric_label_noise(&labels, 10, 0.37, 6).unwrap(), noisy);
        assert_eq!(
            symmetric_label_noise(&labels, 10, 0.0, 5)
                .unwrap()
                .num_noisy(),
            0
        );
        assert_eq!(
            symmetric_label_noise(&labels, 10, 1.0, 5)
                .unwrap()
                .num_noisy(),
            1000
        );
        assert!(symmetric_label_noise(&labels, 10, 1.5, 5).is_err());
        assert!(symmetric_label_noise(&labels, 5, 0.1, 5).is_err());
    }
}
