//! Small dense linear algebra in `f64`: vector helpers, the symmetric tridiagonal eigensolver
//! (implicit QL) behind Lanczos, and cyclic Jacobi for small dense symmetric matrices (Gram
//! matrices, tests). No LAPACK: the matrices here are at most a few hundred wide.

use crate::error::{CurvatureError, Result};

/// `xᵀy`, with eight independent partial sums so that the compiler can vectorize it (a single
/// running sum fixes the order of the additions and runs at scalar speed).
pub fn dot(x: &[f64], y: &[f64]) -> f64 {
    let n = x.len().min(y.len());
    let (xc, yc) = (x[..n].chunks_exact(8), y[..n].chunks_exact(8));
    let tail: f64 = xc
        .remainder()
        .iter()
        .zip(yc.remainder())
        .map(|(a, b)| a * b)
        .sum();
    let mut acc = [0.0f64; 8];
    for (a, b) in xc.zip(yc) {
        for k in 0..8 {
            acc[k] += a[k] * b[k];
        }
    }
    acc.iter().sum::<f64>() + tail
}

/// `‖x‖₂`.
pub fn norm(x: &[f64]) -> f64 {
    dot(x, x).sqrt()
}

/// `y += a x`.
pub fn axpy(a: f64, x: &[f64], y: &mut [f64]) {
    for (yi, xi) in y.iter_mut().zip(x) {
        *yi += a * xi;
    }
}

/// `x *= a`.
pub fn scale(a: f64, x: &mut [f64]) {
    for xi in x.iter_mut() {
        *xi *= a;
    }
}

/// Eigen-decomposition of a symmetric matrix: eigenvalues in DESCENDING order and the matching
/// unit eigenvectors.
#[derive(Debug, Clone)]
pub struct SymEigen {
    /// Eigenvalues, largest first.
    pub values: Vec<f64>,
    /// `vectors[i]` is the unit eigenvector of `values[i]`.
    pub vectors: Vec<Vec<f64>>,
}

/// Sorts eigenpairs by a key, largest first; `vecs` is row-major `n × n` with eigenvectors as
/// COLUMNS.
fn sorted_pairs(values: Vec<f64>, vecs: &[f64], n: usize) -> SymEigen {
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| values[b].total_cmp(&values[a]));
    SymEigen {
        values: order.iter().map(|&i| values[i]).collect(),
        vectors: order
            .iter()
            .map(|&j| (0..n).map(|k| vecs[k * n + j]).collect())
            .collect(),
    }
}

/// Eigenpairs of the symmetric tridiagonal matrix with diagonal `diag` (length n) and
/// off-diagonal `off` (length n − 1), by the implicit QL algorithm with Wilkinson shifts
/// (Numerical Recipes `tqli`).
pub fn tridiagonal_eigen(diag: &[f64], off: &[f64]) -> Result<SymEigen> {
    let n = diag.len();
    if n == 0 {
        return Ok(SymEigen {
            values: vec![],
            vectors: vec![],
        });
    }
    if off.len() + 1 != n {
        return Err(CurvatureError::DimensionMismatch {
            what: "tridiagonal off-diagonal",
            got: off.len(),
            expected: n - 1,
        });
    }
    let mut d = diag.to_vec();
    let mut e = off.to_vec();
    e.push(0.0);
    let mut z = vec![0.0; n * n];
    for i in 0..n {
        z[i * n + i] = 1.0;
    }
    for l in 0..n {
        let mut iter = 0;
        loop {
            let mut m = l;
            while m + 1 < n {
                let dd = d[m].abs() + d[m + 1].abs();
                if e[m].abs() <= f64::EPSILON * dd {
                    break;
                }
                m += 1;
            }
            if m == l {
                break;
            }
            iter += 1;
            if iter > 100 {
                return Err(CurvatureError::NoConvergence(
                    "implicit QL on the Lanczos tridiagonal",
                ));
            }
            let mut g = (d[l + 1] - d[l]) / (2.0 * e[l]);
            let mut r = g.hypot(1.0);
            g = d[m] - d[l] + e[l] / (g + if g >= 0.0 { r } else { -r });
            let (mut s, mut c, mut p) = (1.0, 1.0, 0.0);
            let mut i = m;
            let mut deflated = false;
            while i > l {
                i -= 1;
                let f = s * e[i];
                let b = c * e[i];
                r = f.hypot(g);
                e[i + 1] = r;
                if r == 0.0 {
                    d[i + 1] -= p;
                    e[m] = 0.0;
                    deflated = true;
                    break;
                }
                s = f / r;
                c = g / r;
                g = d[i + 1] - p;
                r = (d[i] - g) * s + 2.0 * c * b;
                p = s * r;
                d[i + 1] = g + p;
                g = c * r - b;
                for k in 0..n {
                    let zf = z[k * n + i + 1];
                    let zi = z[k * n + i];
                    z[k * n + i + 1] = s * zi + c * zf;
                    z[k * n + i] = c * zi - s * zf;
                }
            }
            if deflated {
                continue;
            }
            d[l] -= p;
            e[l] = g;
            e[m] = 0.0;
        }
    }
    if d.iter().any(|x| !x.is_finite()) {
        return Err(CurvatureError::NonFinite("tridiagonal eigenvalue"));
    }
    Ok(sorted_pairs(d, &z, n))
}

/// Eigenpairs of a dense symmetric `n × n` matrix (row-major) by cyclic Jacobi rotations.
/// Accurate to working precision; `O(n³)` per sweep, so for `n` up to a few hundred.
pub fn jacobi_eigen(n: usize, matrix: &[f64]) -> Result<SymEigen> {
    if matrix.len() != n * n {
        return Err(CurvatureError::DimensionMismatch {
            what: "dense symmetric matrix",
            got: matrix.len(),
            expected: n * n,
        });
    }
    let mut a = matrix.to_vec();
    let mut v = vec![0.0; n * n];
    for i in 0..n {
        v[i * n + i] = 1.0;
    }
    let total: f64 = a.iter().map(|x| x * x).sum();
    for _sweep in 0..100 {
        let mut off = 0.0;
        for p in 0..n {
            for q in p + 1..n {
                off += a[p * n + q] * a[p * n + q];
            }
        }
        if off <= (f64::EPSILON * f64::EPSILON) * total * 1e-2 || off == 0.0 {
            break;
        }
        for p in 0..n {
            for q in p + 1..n {
                let apq = a[p * n + q];
                if apq == 0.0 {
                    continue;
                }
                let theta = (a[q * n + q] - a[p * n + p]) / (2.0 * apq);
                let t = if theta.abs() > 1e150 {
                    0.5 / theta
                } else {
                    theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt())
                };
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                for k in 0..n {
                    let (akp, akq) = (a[k * n + p], a[k * n + q]);
                    a[k * n + p] = c * akp - s * akq;
                    a[k * n + q] = s * akp + c * akq;
                }
                for k in 0..n {
                    let (apk, aqk) = (a[p * n + k], a[q * n + k]);
                    a[p * n + k] = c * apk - s * aqk;
                    a[q * n + k] = s * apk + c * aqk;
                }
                for k in 0..n {
                    let (vkp, vkq) = (v[k * n + p], v[k * n + q]);
                    v[k * n + p] = c * vkp - s * vkq;
                    v[k * n + q] = s * vkp + c * vkq;
                }
            }
        }
    }
    let values: Vec<f64> = (0..n).map(|i| a[i * n + i]).collect();
    if values.iter().any(|x| !x.is_finite()) {
        return Err(CurvatureError::NonFinite("Jacobi eigenvalue"));
    }
    Ok(sorted_pairs(values, &v, n))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tridiagonal_matches_jacobi_on_the_same_matrix() {
        let diag = [4.0, -1.0, 2.5, 0.3, 7.0, 7.0];
        let off = [1.0, 0.5, -2.0, 1e-9, 0.7];
        let n = diag.len();
        let mut dense = vec![0.0; n * n];
        for i in 0..n {
            dense[i * n + i] = diag[i];
            if i + 1 < n {
                dense[i * n + i + 1] = off[i];
                dense[(i + 1) * n + i] = off[i];
            }
        }
        let t = tridiagonal_eigen(&diag, &off).unwrap();
        let j = jacobi_eigen(n, &dense).unwrap();
        let tr: f64 = diag.iter().sum();
        assert!((t.values.iter().sum::<f64>() - tr).abs() < 1e-12);
        for (k, (a, b)) in t.values.iter().zip(&j.values).enumerate() {
            assert!((a - b).abs() < 1e-12, "eigenvalue {k}: {a} vs {b}");
            // Residual ‖A v − λ v‖ of both solvers' vectors.
            for vecs in [&t.vectors[k], &j.vectors[k]] {
                let mut r = 0.0;
                for i in 0..n {
                    let av: f64 = (0..n).map(|c| dense[i * n + c] * vecs[c]).sum();
                    r += (av - a * vecs[i]).powi(2);
                }
                assert!(r.sqrt() < 1e-12, "residual {}", r.sqrt());
                assert!((norm(vecs) - 1.0).abs() < 1e-12);
            }
        }
    }
}
