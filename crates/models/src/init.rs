//! Seeded weight initialization: uniform, normal, Glorot and Kaiming fillers drawing from
//! `ChaCha8Rng`, so the same seed gives bit-identical weights on every machine.
//!
//! Values are drawn in f64 on the host and then converted to the requested dtype and device,
//! so the draws do not depend on the dtype (an f32 model is the rounded f64 model).

use candle_core::{DType, Device, Result, Tensor, Var};
use rand::Rng;
use rand_chacha::ChaCha8Rng;

/// Which fan a Kaiming initializer normalizes by (PyTorch's `mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fan {
    In,
    Out,
}

/// How a parameter tensor is filled. Fans follow PyTorch's `_calculate_fan_in_and_fan_out`:
/// for a weight of shape `[out, in, k...]`, fan_in = in·∏k and fan_out = out·∏k.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Init {
    /// All zeros (biases, BatchNorm shift).
    Zeros,
    /// All ones (BatchNorm scale).
    Ones,
    /// U(lo, hi).
    Uniform { lo: f64, hi: f64 },
    /// N(mean, std²).
    Normal { mean: f64, std: f64 },
    /// Glorot/Xavier uniform: U(±√(6/(fan_in+fan_out))), the Keras default for kernels.
    GlorotUniform,
    /// Kaiming/He normal for ReLU: N(0, 2/fan).
    KaimingNormal(Fan),
    /// PyTorch's default for `Linear`/`Conv2d` weights, `kaiming_uniform_(a=√5)`:
    /// U(±1/√fan_in).
    TorchDefaultWeight,
    /// PyTorch's default for `Linear`/`Conv2d` biases: U(±1/√fan_in) with the fan_in of the
    /// layer's weight (given here, since a bias shape does not carry it).
    TorchDefaultBias { fan_in: usize },
}

/// (fan_in, fan_out) of a weight shape, as PyTorch computes them.
pub fn fans(shape: &[usize]) -> (usize, usize) {
    match shape {
        [] => (1, 1),
        [n] => (*n, *n),
        [out, inp, rest @ ..] => {
            let receptive: usize = rest.iter().product();
            (inp * receptive, out * receptive)
        }
    }
}

/// Draws a tensor of `shape` filled according to `init`.
pub fn fill(
    rng: &mut ChaCha8Rng,
    shape: &[usize],
    init: Init,
    dtype: DType,
    device: &Device,
) -> Result<Tensor> {
    let n: usize = shape.iter().product();
    let (fan_in, fan_out) = fans(shape);
    let values: Vec<f64> = match init {
        Init::Zeros => vec![0.0; n],
        Init::Ones => vec![1.0; n],
        Init::Uniform { lo, hi } => uniform(rng, n, lo, hi),
        Init::Normal { mean, std } => normal(rng, n, mean, std),
        Init::GlorotUniform => {
            let limit = (6.0 / (fan_in + fan_out) as f64).sqrt();
            uniform(rng, n, -limit, limit)
        }
        Init::KaimingNormal(fan) => {
            let fan = match fan {
                Fan::In => fan_in,
                Fan::Out => fan_out,
            };
            normal(rng, n, 0.0, (2.0 / fan as f64).sqrt())
        }
        Init::TorchDefaultWeight => {
            let bound = 1.0 / (fan_in as f64).sqrt();
            uniform(rng, n, -bound, bound)
        }
        Init::TorchDefaultBias { fan_in } => {
            let bound = 1.0 / (fan_in as f64).sqrt();
            uniform(rng, n, -bound, bound)
        }
    };
    Tensor::from_vec(values, shape, &Device::Cpu)?
        .to_dtype(dtype)?
        .to_device(device)
}

/// Like [`fill`], wrapped in a trainable `Var`.
pub fn var(
    rng: &mut ChaCha8Rng,
    shape: &[usize],
    init: Init,
    dtype: DType,
    device: &Device,
) -> Result<Var> {
    Var::from_tensor(&fill(rng, shape, init, dtype, device)?)
}

/// `n` draws from U(lo, hi).
pub fn uniform(rng: &mut ChaCha8Rng, n: usize, lo: f64, hi: f64) -> Vec<f64> {
    (0..n)
        .map(|_| lo + (hi - lo) * rng.random::<f64>())
        .collect()
}

/// `n` draws from N(mean, std²) by the Box-Muller transform (no extra crate; pairs of
/// uniforms in a fixed order, so a seed fixes every draw).
pub fn normal(rng: &mut ChaCha8Rng, n: usize, mean: f64, std: f64) -> Vec<f64> {
    let mut out = Vec::with_capacity(n + 1);
    while out.len() < n {
        // 1 − U lies in (0, 1], so the logarithm is finite.
        let u1 = 1.0 - rng.random::<f64>();
        let u2 = rng.random::<f64>();
        let r = (-2.0 * u1.ln()).sqrt();
        let theta = 2.0 * std::f64::consts::PI * u2;
        out.push(mean + std * r * theta.cos());
        out.push(mean + std * r * theta.sin());
    }
    out.truncate(n);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn same_seed_same_bits_and_moments_match() {
        let draw = |seed| {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            fill(
                &mut rng,
                &[64, 32, 3, 3],
                Init::KaimingNormal(Fan::Out),
                DType::F64,
                &Device::Cpu,
            )
            .and_then(|t| t.flatten_all()?.to_vec1::<f64>())
            .unwrap()
        };
        let a = draw(7);
        assert_eq!(a, draw(7));
        assert_ne!(a, draw(8));
        let n = a.len() as f64;
        let mean = a.iter().sum::<f64>() / n;
        let var = a.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
        let expected = 2.0 / (64.0 * 9.0);
        // 18432 draws: the sample variance has relative standard error √(2/n) ≈ 1%.
        assert!(mean.abs() < 4.0 * (expected / n).sqrt(), "mean {mean}");
        assert!(
            (var / expected - 1.0).abs() < 0.05,
            "var {var} vs {expected}"
        );
    }

    #[test]
    fn glorot_uniform_respects_its_limit_and_fans() {
        assert_eq!(fans(&[32, 3, 3, 3]), (27, 288));
        assert_eq!(fans(&[10, 128]), (128, 10));
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let t = fill(
            &mut rng,
            &[32, 3, 3, 3],
            Init::GlorotUniform,
            DType::F64,
            &Device::Cpu,
        )
        .unwrap();
        let v = t.flatten_all().unwrap().to_vec1::<f64>().unwrap();
        let limit = (6.0f64 / (27.0 + 288.0)).sqrt();
        assert!(v.iter().all(|x| x.abs() <= limit));
        assert!(v.iter().map(|x| x.abs()).fold(0.0, f64::max) > 0.9 * limit);
    }
}
