//! Shared helpers of the tests: double-backprop setup, seeded data and tiny f64 models built
//! from candle-core ops only.

use breakeven_curvature::random::{gaussian_vector, rng};
use breakeven_curvature::{enable_double_backprop, DenseMatrix};
use candle_core::{DType, Device, Tensor, Var};

/// Every test that differentiates twice calls this first: Candle reads
/// CANDLE_GRAD_DO_NOT_DETACH once per thread, at the thread's first backward
/// (candle-core/src/backprop.rs), and each test runs on its own thread.
pub fn init() {
    enable_double_backprop().expect("double backprop must be available in the test threads");
}

/// A seeded `rows × cols` f64 tensor of standard normals times `scale`.
pub fn randn(seed: u64, rows: usize, cols: usize, scale: f64) -> Tensor {
    let v: Vec<f64> = gaussian_vector(&mut rng(seed), rows * cols)
        .into_iter()
        .map(|x| x * scale)
        .collect();
    Tensor::from_vec(v, (rows, cols), &Device::Cpu).unwrap()
}

/// A seeded f64 parameter of the given shape.
pub fn param(seed: u64, shape: &[usize], scale: f64) -> Var {
    let n: usize = shape.iter().product();
    let v: Vec<f64> = gaussian_vector(&mut rng(seed), n)
        .into_iter()
        .map(|x| x * scale)
        .collect();
    Var::from_tensor(&Tensor::from_vec(v, shape, &Device::Cpu).unwrap()).unwrap()
}

/// Row-wise log-softmax composed from differentiable ops (candle's `softmax_last_dim` drops
/// gradients, SCIENCE.md §7). The max is detached: log-sum-exp is shift invariant.
pub fn log_softmax(z: &Tensor) -> candle_core::Result<Tensor> {
    let m = z.max_keepdim(1)?.detach();
    let zs = z.broadcast_sub(&m)?;
    let lse = zs.exp()?.sum_keepdim(1)?.log()?;
    zs.broadcast_sub(&lse)
}

/// One-hot `n × c` f64 matrix of `labels`.
pub fn one_hot(labels: &[u32], c: usize) -> Tensor {
    let mut v = vec![0.0; labels.len() * c];
    for (i, &l) in labels.iter().enumerate() {
        v[i * c + l as usize] = 1.0;
    }
    Tensor::from_vec(v, (labels.len(), c), &Device::Cpu).unwrap()
}

/// Mean cross-entropy of logits `z` against `labels`.
pub fn cross_entropy(z: &Tensor, labels: &[u32]) -> candle_core::Result<Tensor> {
    let c = z.dim(1)?;
    let n = labels.len() as f64;
    (log_softmax(z)? * one_hot(labels, c).to_dtype(z.dtype())?)?
        .sum_all()?
        .neg()?
        / n
}

/// Seeded labels in `0..c`.
pub fn labels(seed: u64, n: usize, c: usize) -> Vec<u32> {
    use rand::Rng;
    let mut r = rng(seed);
    (0..n).map(|_| r.random_range(0..c as u32)).collect()
}

/// Rows `lo..hi` of a matrix.
pub fn rows(t: &Tensor, lo: usize, hi: usize) -> Tensor {
    t.narrow(0, lo, hi - lo).unwrap()
}

/// The host values of a 2-D f64 tensor.
pub fn to_rows(t: &Tensor) -> Vec<Vec<f64>> {
    t.to_dtype(DType::F64).unwrap().to_vec2::<f64>().unwrap()
}

/// Relative distance of two dense matrices (max entry difference over max entry).
pub fn rel_diff(a: &DenseMatrix, b: &DenseMatrix) -> f64 {
    a.rel_max_diff(b, 1e-12)
}

/// The tiny tanh MLP `x → tanh(x W1 + b1) W2 + b2` (3 → 4 → 3).
pub struct Mlp {
    pub vars: Vec<Var>,
}

impl Mlp {
    pub fn new(seed: u64) -> Self {
        Self {
            vars: vec![
                param(seed, &[3, 4], 0.8),
                param(seed + 1, &[4], 0.3),
                param(seed + 2, &[4, 3], 0.8),
                param(seed + 3, &[3], 0.3),
            ],
        }
    }

    pub fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let v = &self.vars;
        let h = x
            .matmul(v[0].as_tensor())?
            .broadcast_add(v[1].as_tensor())?
            .tanh()?;
        h.matmul(v[2].as_tensor())?.broadcast_add(v[3].as_tensor())
    }
}

/// The tiny CNN: conv 3×3 (1 → 2 channels) → tanh → avg-pool 2 → flatten → dense to 3.
/// Inputs are `n × 1 × 6 × 6`.
pub struct Cnn {
    pub vars: Vec<Var>,
}

impl Cnn {
    pub fn new(seed: u64) -> Self {
        Self {
            vars: vec![
                param(seed, &[2, 1, 3, 3], 0.5),
                param(seed + 1, &[1, 2, 1, 1], 0.2),
                param(seed + 2, &[8, 3], 0.5),
                param(seed + 3, &[3], 0.2),
            ],
        }
    }

    pub fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let v = &self.vars;
        let n = x.dim(0)?;
        let h = x
            .conv2d(v[0].as_tensor(), 0, 1, 1, 1)?
            .broadcast_add(v[1].as_tensor())?
            .tanh()?;
        let h = h.avg_pool2d(2)?.reshape((n, 8))?;
        h.matmul(v[2].as_tensor())?.broadcast_add(v[3].as_tensor())
    }
}

/// Seeded CNN inputs `n × 1 × 6 × 6`.
pub fn images(seed: u64, n: usize) -> Tensor {
    randn(seed, n, 36, 1.0).reshape((n, 1, 6, 6)).unwrap()
}
