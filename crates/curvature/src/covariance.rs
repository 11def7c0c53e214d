//! The gradient covariance `K = (1/n) Σ_i (g_i − ḡ)(g_i − ḡ)ᵀ` from per-example gradients, and
//! its spectrum by the Gram trick: the non-zero eigenvalues of `K = GᵀG/n` (G: the n × D
//! matrix of centred gradients) are those of the n × n matrix `G Gᵀ/n`, so λ_K^1, Tr(K) and
//! λ_K^*/λ_K^1 never need a D × D matrix (SCIENCE.md §2).
//!
//! Conventions: per-example gradients are unscaled `∇ℓ_i` (no 1/n: BackPACK #49); the
//! normalization is `1/n` (population, the paper's) or `1/(n−1)` (unbiased), chosen explicitly.

use candle_core::{DType, Device, Tensor, Var};

use crate::detached::backward_detached;
use crate::error::{CurvatureError, Result};
use crate::linalg::{axpy, dot, jacobi_eigen, scale};
use crate::loss::{batch_loss, LossFn};
use crate::operator::{check_len, LinearOperator};
use crate::params::{grads_into, num_params};

/// Per-example gradients `g_i = ∇ℓ(x_i, y_i)`, stored as an `n × D` row-major matrix (the
/// one N × D buffer of the crate: the Gram trick needs all of them).
#[derive(Debug, Clone)]
pub struct PerExampleGradients {
    n: usize,
    dim: usize,
    data: Vec<f64>,
    /// The per-example losses `ℓ_i`.
    pub losses: Vec<f64>,
}

/// One backward pass per batch; every batch of `loss` must hold exactly ONE example (a loop of
/// batch-size-1 passes; Candle has no vmap). Each gradient is written straight into its row.
///
/// Cost (issue 18 item 3; SimpleCNN, 128 examples, Intel Xeon, 2 threads, timed piece by
/// piece): about 600 ms, of which about 420 ms are the batch-size-1 forward and backward
/// passes and the rest is filling the n × D f64 matrix (370 MB, first-touch page faults
/// included); 700-800 ms when each row went through `grads_to_vec` and `extend`.
/// `bench_step --per-example` compares it with `torch.func.vmap` and a PyTorch loop. Models
/// whose examples do not interact (no BatchNorm on batch statistics) get the same rows from
/// one batched pass in `breakeven_models::per_example_gradients`; this loop is the general
/// case and that function's reference in tests.
pub fn per_example_gradients<L: LossFn + ?Sized>(
    loss: &mut L,
    vars: &[Var],
) -> Result<PerExampleGradients> {
    let n = loss.num_batches();
    if n == 0 {
        return Err(CurvatureError::EmptyData("LossFn::num_batches() is 0"));
    }
    let dim = num_params(vars);
    let mut data = vec![0.0; n * dim];
    let mut losses = Vec::with_capacity(n);
    for i in 0..n {
        let (l, size) = batch_loss(loss, i)?;
        if size != 1 {
            return Err(CurvatureError::BadBatch {
                batch: i,
                reason: format!("per-example gradients need batches of one example, got {size}"),
            });
        }
        grads_into(
            &backward_detached(&l)?,
            vars,
            &mut data[i * dim..(i + 1) * dim],
        )?;
        losses.push(
            l.flatten_all()?
                .to_dtype(candle_core::DType::F64)?
                .to_vec1::<f64>()?[0],
        );
    }
    Ok(PerExampleGradients {
        n,
        dim,
        data,
        losses,
    })
}

impl PerExampleGradients {
    /// From `n` rows of length `dim` (row-major), e.g. gradients computed elsewhere.
    pub fn from_rows(n: usize, dim: usize, data: Vec<f64>) -> Result<Self> {
        if n == 0 || data.len() != n * dim {
            return Err(CurvatureError::DimensionMismatch {
                what: "PerExampleGradients::from_rows data",
                got: data.len(),
                expected: n * dim,
            });
        }
        Ok(Self {
            n,
            dim,
            data,
            losses: vec![],
        })
    }

    /// Number of examples n.
    pub fn len(&self) -> usize {
        self.n
    }

    /// Always false (construction refuses zero examples).
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// Number of parameters D.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Gradient of example `i`.
    pub fn row(&self, i: usize) -> &[f64] {
        &self.data[i * self.dim..(i + 1) * self.dim]
    }

    /// The mean gradient ḡ.
    pub fn mean(&self) -> Vec<f64> {
        let mut m = vec![0.0; self.dim];
        for i in 0..self.n {
            axpy(1.0, self.row(i), &mut m);
        }
        scale(1.0 / self.n as f64, &mut m);
        m
    }

    /// The centred gradients `g_i − ḡ`, row-major.
    fn centred(&self) -> Vec<f64> {
        let m = self.mean();
        let mut c = self.data.clone();
        for row in c.chunks_exact_mut(self.dim) {
            axpy(-1.0, &m, row);
        }
        c
    }
}

/// `1/n` or `1/(n−1)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Normalization {
    /// `K = (1/n) Σ (g_i − ḡ)(g_i − ḡ)ᵀ`: the papers' convention.
    #[default]
    Population,
    /// `K = (1/(n−1)) Σ …`: the unbiased sample covariance.
    Unbiased,
}

impl Normalization {
    fn divisor(self, n: usize) -> Result<f64> {
        match self {
            Normalization::Population => Ok(n as f64),
            Normalization::Unbiased if n >= 2 => Ok((n - 1) as f64),
            Normalization::Unbiased => Err(CurvatureError::InvalidConfig {
                key: "normalization",
                reason: "the unbiased covariance needs at least 2 examples".into(),
            }),
        }
    }
}

/// Settings of [`covariance_summary`].
#[derive(Debug, Clone)]
pub struct CovarianceConfig {
    /// Number of top eigenvalues to report.
    pub k: usize,
    /// `1/n` or `1/(n−1)`.
    pub normalization: Normalization,
    /// An eigenvalue counts as non-zero when above `nonzero_rel_tol · λ_K^1` (centring makes
    /// the Gram matrix singular, so one eigenvalue is zero up to rounding).
    pub nonzero_rel_tol: f64,
}

impl Default for CovarianceConfig {
    fn default() -> Self {
        Self {
            k: 10,
            normalization: Normalization::Population,
            nonzero_rel_tol: 1e-9,
        }
    }
}

/// The spectrum summary of K (the break-even paper's λ_K^1, Tr(K), λ_K^*/λ_K^1).
#[derive(Debug, Clone)]
pub struct CovarianceSummary {
    /// The top-k eigenvalues of K, largest first (fewer if n < k).
    pub eigenvalues: Vec<f64>,
    /// `Tr(K) = (1/n) Σ ‖g_i − ḡ‖²` (or `1/(n−1)`): the gradient variance.
    pub trace: f64,
    /// λ_K^*: the smallest non-zero eigenvalue.
    pub lambda_star: f64,
    /// `λ_K^* / λ_K^1`.
    pub conditioning: f64,
    /// Number of non-zero eigenvalues.
    pub rank: usize,
    /// `‖ḡ‖²`.
    pub mean_grad_sq_norm: f64,
    /// `(1/n) Σ ‖g_i‖²` = Tr(empirical Fisher) = Tr(K_pop) + ‖ḡ‖².
    pub empirical_fisher_trace: f64,
    /// Number of examples n.
    pub n: usize,
}

/// `(G Gᵀ)/div` of the centred gradients, accumulated over column blocks centred on the fly:
/// one pass over the n × D gradients and no centred copy of them. Each block's `B Bᵀ` is one
/// Candle matmul (gemm's SIMD kernels, on Candle's threads). For 128 × 361,898 gradients
/// (SimpleCNN's) the pairwise dot products of each block took 1.03-1.17 s, the whole
/// [`covariance_summary`] now 0.42-0.52 s (issue 18, item 3; Intel Xeon, 1 and 2 threads,
/// A/B in one process; the tracker's λ_K^1 and Tr(K) spent more here than on the gradients).
fn centred_gram(g: &PerExampleGradients, div: f64) -> Result<Vec<f64>> {
    const BLOCK: usize = 2048;
    let (n, d) = (g.n, g.dim);
    let mut gram = Tensor::zeros((n, n), DType::F64, &Device::Cpu)?;
    let mut buf = vec![0.0; n * BLOCK.min(d)];
    for start in (0..d).step_by(BLOCK) {
        let w = BLOCK.min(d - start);
        let mut mean = vec![0.0; w];
        for i in 0..n {
            axpy(
                1.0 / n as f64,
                &g.data[i * d + start..i * d + start + w],
                &mut mean,
            );
        }
        for i in 0..n {
            let row = &mut buf[i * w..(i + 1) * w];
            row.copy_from_slice(&g.data[i * d + start..i * d + start + w]);
            axpy(-1.0, &mean, row);
        }
        let b = Tensor::from_slice(&buf[..n * w], (n, w), &Device::Cpu)?;
        gram = (gram + b.matmul(&b.t()?)?)?;
    }
    let mut gram = gram.flatten_all()?.to_vec1::<f64>()?;
    // The lower triangle, mirrored: exactly symmetric whatever order gemm summed in.
    for i in 0..n {
        for j in 0..=i {
            let x = gram[i * n + j] / div;
            gram[i * n + j] = x;
            gram[j * n + i] = x;
        }
    }
    Ok(gram)
}

/// λ_K^1..k, Tr(K) and λ_K^*/λ_K^1 from the n × n Gram matrix (`O(n² D)` to build, `O(n³)` to
/// diagonalize; fine for the paper's n = 128 or a few hundred).
pub fn covariance_summary(
    g: &PerExampleGradients,
    cfg: &CovarianceConfig,
) -> Result<CovarianceSummary> {
    if cfg.k == 0 {
        return Err(CurvatureError::InvalidConfig {
            key: "k",
            reason: "must be at least 1".into(),
        });
    }
    let n = g.n;
    let div = cfg.normalization.divisor(n)?;
    let gram = centred_gram(g, div)?;
    let trace = (0..n).map(|i| gram[i * n + i]).sum();
    let eig = jacobi_eigen(n, &gram)?;
    let top = eig.values[0].max(0.0);
    let nonzero: Vec<f64> = eig
        .values
        .iter()
        .copied()
        .filter(|x| *x > cfg.nonzero_rel_tol * top)
        .collect();
    let lambda_star = nonzero.last().copied().unwrap_or(0.0);
    let mean = g.mean();
    let mean_grad_sq_norm = dot(&mean, &mean);
    let empirical_fisher_trace = (0..n).map(|i| dot(g.row(i), g.row(i))).sum::<f64>() / n as f64;
    Ok(CovarianceSummary {
        eigenvalues: eig.values.iter().take(cfg.k).copied().collect(),
        trace,
        lambda_star,
        conditioning: if top > 0.0 { lambda_star / top } else { 0.0 },
        rank: nonzero.len(),
        mean_grad_sq_norm,
        empirical_fisher_trace,
        n,
    })
}

/// K as a D × D operator, `K v = (1/n) Σ (g_i − ḡ)((g_i − ḡ)ᵀ v)`, for the generic estimators.
#[derive(Debug, Clone)]
pub struct CovarianceOperator {
    centred: Vec<f64>,
    n: usize,
    dim: usize,
    div: f64,
}

impl CovarianceOperator {
    /// Centres the gradients once.
    pub fn new(g: &PerExampleGradients, normalization: Normalization) -> Result<Self> {
        Ok(Self {
            centred: g.centred(),
            n: g.n,
            dim: g.dim,
            div: normalization.divisor(g.n)?,
        })
    }
}

impl LinearOperator for CovarianceOperator {
    fn dim(&self) -> usize {
        self.dim
    }

    fn apply(&mut self, v: &[f64]) -> Result<Vec<f64>> {
        check_len("CovarianceOperator::apply input", v, self.dim)?;
        let mut out = vec![0.0; self.dim];
        for row in self.centred.chunks_exact(self.dim).take(self.n) {
            axpy(dot(row, v) / self.div, row, &mut out);
        }
        Ok(out)
    }
}
