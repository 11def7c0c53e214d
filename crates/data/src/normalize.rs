//! Per-channel normalization `(x/255 − mean) / std`, applied through a 256-entry table per channel.

use serde::{Deserialize, Serialize};

use crate::dataset::Dataset;
use crate::error::{DataError, Result};

/// Per-channel mean and standard deviation of pixel values scaled to [0, 1].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Normalization {
    pub mean: Vec<f64>,
    pub std: Vec<f64>,
}

impl Normalization {
    /// Given statistics; `std` must be positive and both vectors the same length.
    pub fn new(mean: Vec<f64>, std: Vec<f64>) -> Result<Self> {
        if mean.len() != std.len() || mean.is_empty() {
            return Err(DataError::InvalidArgument(format!(
                "normalization with {} means and {} standard deviations",
                mean.len(),
                std.len()
            )));
        }
        if let Some(s) = std.iter().find(|s| !(s.is_finite() && **s > 0.0)) {
            return Err(DataError::InvalidArgument(format!(
                "normalization standard deviation {s} is not positive"
            )));
        }
        Ok(Normalization { mean, std })
    }

    /// Only scale to [0, 1]: mean 0, std 1.
    pub fn unit_scale(channels: usize) -> Self {
        Normalization {
            mean: vec![0.0; channels],
            std: vec![1.0; channels],
        }
    }

    /// Mean and (population) standard deviation of each channel over the examples at `indices`
    /// (all examples when `None`), computed exactly from per-channel byte histograms.
    pub fn from_dataset(data: &Dataset, indices: Option<&[usize]>) -> Result<Self> {
        let (c, plane) = (data.channels, data.height * data.width);
        let mut hist = vec![[0u64; 256]; c];
        let mut count = 0usize;
        let mut add = |img: &[u8]| {
            for (ch, h) in hist.iter_mut().enumerate() {
                for &v in &img[ch * plane..(ch + 1) * plane] {
                    h[v as usize] += 1;
                }
            }
        };
        match indices {
            None => {
                for i in 0..data.len() {
                    add(data.image(i));
                }
                count = data.len();
            }
            Some(idx) => {
                for &i in idx {
                    if i >= data.len() {
                        return Err(DataError::InvalidArgument(format!(
                            "{}: index {i} out of range for {} examples",
                            data.name,
                            data.len()
                        )));
                    }
                    add(data.image(i));
                    count += 1;
                }
            }
        }
        if count == 0 {
            return Err(DataError::InvalidArgument(format!(
                "{}: channel statistics of an empty set",
                data.name
            )));
        }
        let mut mean = Vec::with_capacity(c);
        let mut std = Vec::with_capacity(c);
        for h in &hist {
            let n: u64 = h.iter().sum();
            let m = h
                .iter()
                .enumerate()
                .map(|(v, &k)| v as f64 * k as f64)
                .sum::<f64>()
                / n as f64;
            let var = h
                .iter()
                .enumerate()
                .map(|(v, &k)| (v as f64 - m).powi(2) * k as f64)
                .sum::<f64>()
                / n as f64;
            mean.push(m / 255.0);
            std.push(var.sqrt() / 255.0);
        }
        Normalization::new(mean, std)
    }

    pub fn channels(&self) -> usize {
        self.mean.len()
    }

    /// For each channel, the normalized f32 value of every byte.
    pub fn lookup_tables(&self) -> Vec<[f32; 256]> {
        self.mean
            .iter()
            .zip(&self.std)
            .map(|(&m, &s)| std::array::from_fn(|v| ((v as f64 / 255.0 - m) / s) as f32))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statistics_match_a_direct_computation() {
        let images: Vec<u8> = (0..2 * 2 * 3 * 3).map(|i| (i * 37 % 256) as u8).collect();
        let d = Dataset {
            name: "t".into(),
            images: images.clone(),
            labels: vec![0, 1],
            channels: 2,
            height: 3,
            width: 3,
            num_classes: 2,
            class_names: None,
        };
        let norm = Normalization::from_dataset(&d, None).unwrap();
        for ch in 0..2 {
            let mut vals = Vec::new();
            for n in 0..2 {
                for p in 0..9 {
                    vals.push(images[n * 18 + ch * 9 + p] as f64 / 255.0);
                }
            }
            let m = vals.iter().sum::<f64>() / 18.0;
            let s = (vals.iter().map(|v| (v - m).powi(2)).sum::<f64>() / 18.0).sqrt();
            assert!((norm.mean[ch] - m).abs() < 1e-12);
            assert!((norm.std[ch] - s).abs() < 1e-12);
        }
        let lut = norm.lookup_tables();
        let want = ((200.0 / 255.0 - norm.mean[1]) / norm.std[1]) as f32;
        assert_eq!(lut[1][200], want);
        assert!(Normalization::new(vec![0.5], vec![0.0]).is_err());
    }
}
