//! Mixup (Zhang et al. 2018) as a batch transform: x = λ·x + (1 − λ)·x[π], λ ~ Beta(α, α).

use rand_distr::{Beta, Distribution};
use serde::{Deserialize, Serialize};

use crate::error::{DataError, Result};
use crate::rng::shuffle;

/// Mixup with Beta(α, α) mixing weights.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Mixup {
    pub alpha: f64,
}

/// What a mixed batch needs for its loss: λ·CE(y_a) + (1 − λ)·CE(y_b).
#[derive(Debug, Clone, PartialEq)]
pub struct MixInfo {
    /// The partner labels y_b (y_a are the batch's own labels).
    pub labels_b: Vec<u32>,
    /// The partner of each example within the batch.
    pub partner: Vec<usize>,
    pub lambda: f64,
}

impl Mixup {
    pub fn new(alpha: f64) -> Result<Self> {
        if !(alpha.is_finite() && alpha > 0.0) {
            return Err(DataError::InvalidArgument(format!(
                "mixup alpha {alpha} is not positive"
            )));
        }
        Ok(Mixup { alpha })
    }

    /// Mixes a batch of `labels.len()` images (each `image_len` floats) in place with a random
    /// partner permutation and one λ for the whole batch; returns the partner labels and λ.
    pub fn apply(
        &self,
        images: &mut [f32],
        image_len: usize,
        labels: &[u32],
        rng: &mut rand_chacha::ChaCha8Rng,
    ) -> Result<MixInfo> {
        let b = labels.len();
        if images.len() != b * image_len {
            return Err(DataError::InvalidArgument(format!(
                "mixup on {} floats, expected {b} images of {image_len}",
                images.len()
            )));
        }
        let beta = Beta::new(self.alpha, self.alpha).map_err(|e| {
            DataError::InvalidArgument(format!("mixup Beta({0}, {0}): {e}", self.alpha))
        })?;
        let lambda: f64 = beta.sample(rng);
        let mut partner: Vec<usize> = (0..b).collect();
        shuffle(&mut partner, rng);
        let original = images.to_vec();
        let (l, m) = (lambda as f32, (1.0 - lambda) as f32);
        for (i, &j) in partner.iter().enumerate() {
            let dst = &mut images[i * image_len..(i + 1) * image_len];
            let other = &original[j * image_len..(j + 1) * image_len];
            for (d, &o) in dst.iter_mut().zip(other) {
                *d = l * *d + m * o;
            }
        }
        Ok(MixInfo {
            labels_b: partner.iter().map(|&j| labels[j]).collect(),
            partner,
            lambda,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::{keyed_rng, Purpose};

    #[test]
    fn mixes_images_with_partner_labels() {
        let labels = vec![0u32, 1, 2, 3];
        let images: Vec<f32> = (0..8).map(|i| i as f32).collect();
        let mut mixed = images.clone();
        let mut rng = keyed_rng(1, Purpose::Mixup, 0, 0);
        let info = Mixup::new(0.4)
            .unwrap()
            .apply(&mut mixed, 2, &labels, &mut rng)
            .unwrap();
        assert!((0.0..=1.0).contains(&info.lambda));
        for i in 0..4 {
            let j = info.partner[i];
            assert_eq!(info.labels_b[i], labels[j]);
            for k in 0..2 {
                let want = info.lambda as f32 * images[2 * i + k]
                    + (1.0 - info.lambda as f32) * images[2 * j + k];
                assert_eq!(mixed[2 * i + k], want);
            }
        }
        assert!(Mixup::new(0.0).is_err());
    }

    #[test]
    fn lambda_has_the_beta_mean_and_variance() {
        // Beta(α, α): mean 1/2, variance 1 / (4(2α + 1)).
        let alpha = 0.4;
        let m = Mixup::new(alpha).unwrap();
        let mut rng = keyed_rng(2, Purpose::Mixup, 0, 0);
        let n = 4000;
        let lambdas: Vec<f64> = (0..n)
            .map(|_| m.apply(&mut [0.0], 1, &[0], &mut rng).unwrap().lambda)
            .collect();
        let mean = lambdas.iter().sum::<f64>() / n as f64;
        let var = lambdas.iter().map(|l| (l - mean).powi(2)).sum::<f64>() / n as f64;
        let want_var = 1.0 / (4.0 * (2.0 * alpha + 1.0));
        let se_mean = (want_var / n as f64).sqrt();
        assert!((mean - 0.5).abs() < 4.0 * se_mean, "mean {mean}");
        assert!(
            (var - want_var).abs() < 0.1 * want_var,
            "var {var} vs {want_var}"
        );
    }
}
