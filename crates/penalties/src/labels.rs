//! Labels of the penalty passes: sampled from the model's softmax (FP) or uniform (GPr), drawn
//! from the caller's seeded generator; no gradient flows through the sampling.

use candle_core::{DType, Result, Tensor};
use rand::{Rng, RngCore};

/// One label per row of `logits` (N × K), ŷ_n ∼ Categorical(softmax(z_n)), by inverse CDF on one
/// uniform draw per row. The softmax is computed in f64 from detached values.
pub fn sample_fisher_labels(logits: &Tensor, rng: &mut dyn RngCore) -> Result<Tensor> {
    let rows = logits.detach().to_dtype(DType::F64)?.to_vec2::<f64>()?;
    let mut labels = Vec::with_capacity(rows.len());
    for z in &rows {
        let max = z.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let weights: Vec<f64> = z.iter().map(|v| (v - max).exp()).collect();
        let total: f64 = weights.iter().sum();
        let u = rng.random::<f64>() * total;
        let mut acc = 0.0;
        // Falls back to the last class when rounding leaves u ≥ the accumulated sum.
        let mut label = z.len().saturating_sub(1);
        for (c, w) in weights.iter().enumerate() {
            acc += w;
            if u < acc {
                label = c;
                break;
            }
        }
        labels.push(label as u32);
    }
    Tensor::from_vec(labels, rows.len(), logits.device())
}

/// `n` labels uniform over `classes`.
pub fn uniform_labels(
    n: usize,
    classes: usize,
    device: &candle_core::Device,
    rng: &mut dyn RngCore,
) -> Result<Tensor> {
    let labels: Vec<u32> = (0..n)
        .map(|_| rng.random_range(0..classes as u32))
        .collect();
    Tensor::from_vec(labels, n, device)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn fisher_labels_follow_the_softmax() {
        // Three rows repeated: p = softmax(ln(1, 2, 7)) = (0.1, 0.2, 0.7).
        let n = 6000;
        let row = [1f64.ln(), 2f64.ln(), 7f64.ln()];
        let z: Vec<f64> = (0..n).flat_map(|_| row).collect();
        let logits = Tensor::from_vec(z, (n, 3), &Device::Cpu).unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let labels = sample_fisher_labels(&logits, &mut rng)
            .unwrap()
            .to_vec1::<u32>()
            .unwrap();
        for (c, p) in [0.1, 0.2, 0.7].iter().enumerate() {
            let freq = labels.iter().filter(|&&l| l as usize == c).count() as f64 / n as f64;
            let se = (p * (1.0 - p) / n as f64).sqrt();
            assert!((freq - p).abs() < 4.0 * se, "class {c}: {freq} vs {p}");
        }
        // Same seed, same labels.
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let again = sample_fisher_labels(&logits, &mut rng)
            .unwrap()
            .to_vec1::<u32>()
            .unwrap();
        assert_eq!(labels, again);
    }

    #[test]
    fn uniform_labels_cover_all_classes_in_range() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let labels = uniform_labels(1000, 4, &Device::Cpu, &mut rng)
            .unwrap()
            .to_vec1::<u32>()
            .unwrap();
        for c in 0..4 {
            let count = labels.iter().filter(|&&l| l == c).count();
            // Binomial(1000, 1/4): mean 250, sd ≈ 13.7.
            assert!((count as i64 - 250).abs() < 60, "class {c}: {count}");
        }
        assert!(labels.iter().all(|&l| l < 4));
    }
}
