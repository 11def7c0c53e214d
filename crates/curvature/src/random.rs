//! Seeded random vectors and rotations: every draw of the crate comes from `ChaCha8Rng`
//! seeded explicitly (never Candle's unseedable generator), so a seed fixes the bits.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::linalg::{axpy, dot, norm, scale};

/// The crate's generator for a seed.
pub fn rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed)
}

/// One standard normal draw (Box-Muller; the portable way, without `rand_distr`).
pub fn standard_normal(rng: &mut ChaCha8Rng) -> f64 {
    // u1 in (0, 1] so that ln(u1) is finite.
    let u1: f64 = 1.0 - rng.random::<f64>();
    let u2: f64 = rng.random::<f64>();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// A vector of `n` standard normal entries.
pub fn gaussian_vector(rng: &mut ChaCha8Rng, n: usize) -> Vec<f64> {
    (0..n).map(|_| standard_normal(rng)).collect()
}

/// A vector of `n` Rademacher (±1) entries.
pub fn rademacher_vector(rng: &mut ChaCha8Rng, n: usize) -> Vec<f64> {
    (0..n)
        .map(|_| if rng.random::<bool>() { 1.0 } else { -1.0 })
        .collect()
}

/// A Haar-ish random orthogonal `n × n` matrix (row-major, orthonormal COLUMNS) by modified
/// Gram-Schmidt on Gaussian columns, each orthogonalized twice for `f64` accuracy.
pub fn random_orthogonal(rng: &mut ChaCha8Rng, n: usize) -> Vec<f64> {
    let mut cols: Vec<Vec<f64>> = Vec::with_capacity(n);
    while cols.len() < n {
        let mut v = gaussian_vector(rng, n);
        for _ in 0..2 {
            for q in &cols {
                let c = dot(q, &v);
                axpy(-c, q, &mut v);
            }
        }
        let nv = norm(&v);
        if nv < 1e-8 {
            continue;
        }
        scale(1.0 / nv, &mut v);
        cols.push(v);
    }
    let mut out = vec![0.0; n * n];
    for (j, c) in cols.iter().enumerate() {
        for (i, x) in c.iter().enumerate() {
            out[i * n + j] = *x;
        }
    }
    out
}

/// Orthogonalizes `v` against the orthonormal `basis` (twice: "twice is enough") and returns
/// its remaining norm; `v` is normalized in place when that norm is positive.
pub fn orthonormalize_against(basis: &[Vec<f64>], v: &mut [f64]) -> f64 {
    for _ in 0..2 {
        for q in basis {
            let c = dot(q, v);
            axpy(-c, q, v);
        }
    }
    let nv = norm(v);
    if nv > 0.0 {
        scale(1.0 / nv, v);
    }
    nv
}
