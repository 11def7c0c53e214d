//! Principal component analysis in f64 for small sets of long vectors (e.g. a few hundred
//! checkpoints, each embedded by thousands of softmax outputs): the top two components from
//! the n×n Gram matrix of the centred rows, eigen-decomposed by cyclic Jacobi rotations
//! (`breakeven_curvature::linalg::jacobi_eigen`).
//!
//! With n points in d dimensions and n ≪ d, the non-zero eigenvalues of the d×d covariance
//! XᵀX/n equal those of the n×n Gram matrix XXᵀ/n, and the scores of component k are
//! X v_k = u_k √(n λ_k) (u_k the unit Gram eigenvector): no d×d matrix is ever formed
//! (the same trick as λ_K^1 in SCIENCE.md §2). Jacobi costs O(n³) per sweep, fine for n ≤ ~500.

use breakeven_curvature::linalg::jacobi_eigen;

use breakeven_runner::RunError;

/// The 2-D PCA embedding of a set of points.
#[derive(Debug, Clone, PartialEq)]
pub struct Pca2 {
    /// Per input row: its scores on components 1 and 2 (centred coordinates).
    pub scores: Vec<[f64; 2]>,
    /// Variance along components 1 and 2 (covariance normalized by n).
    pub variance: [f64; 2],
    /// Fraction of the total variance each component explains (0 when all points coincide).
    pub explained: [f64; 2],
}

/// The top two principal components of `rows` (all of one length). Each component's sign is
/// fixed so that its largest-magnitude score is positive (a deterministic orientation).
pub fn pca_2d(rows: &[Vec<f64>]) -> Result<Pca2, RunError> {
    let n = rows.len();
    let d = rows.first().map_or(0, Vec::len);
    if n < 2 || d == 0 {
        return Err(RunError::Other(format!(
            "pca_2d: need at least 2 non-empty points, got {n} of dimension {d}"
        )));
    }
    if let Some((i, r)) = rows.iter().enumerate().find(|(_, r)| r.len() != d) {
        return Err(RunError::Other(format!(
            "pca_2d: point {i} has dimension {}, expected {d}",
            r.len()
        )));
    }
    let mut mean = vec![0.0; d];
    for r in rows {
        for (m, x) in mean.iter_mut().zip(r) {
            *m += x / n as f64;
        }
    }
    let centred: Vec<Vec<f64>> = rows
        .iter()
        .map(|r| r.iter().zip(&mean).map(|(x, m)| x - m).collect())
        .collect();
    let mut gram = vec![0.0; n * n];
    for i in 0..n {
        for j in 0..=i {
            let g: f64 = centred[i].iter().zip(&centred[j]).map(|(a, b)| a * b).sum();
            gram[i * n + j] = g / n as f64;
            gram[j * n + i] = g / n as f64;
        }
    }
    let total: f64 = (0..n).map(|i| gram[i * n + i]).sum();
    let eig = jacobi_eigen(n, &gram).map_err(|e| {
        RunError::Other(format!(
            "pca_2d: eigen-decomposition of the Gram matrix: {e}"
        ))
    })?;
    let (values, vectors) = (&eig.values, &eig.vectors);
    let mut scores = vec![[0.0; 2]; n];
    let mut variance = [0.0; 2];
    for k in 0..2.min(n) {
        // Rounding can leave the eigenvalue of a flat direction slightly negative.
        let lambda = values[k].max(0.0);
        variance[k] = lambda;
        let norm = (n as f64 * lambda).sqrt();
        let col: Vec<f64> = vectors[k].iter().map(|u| u * norm).collect();
        let peak = col
            .iter()
            .copied()
            .fold(0.0f64, |a, b| if b.abs() > a.abs() { b } else { a });
        let sign = if peak < 0.0 { -1.0 } else { 1.0 };
        for (s, c) in scores.iter_mut().zip(&col) {
            s[k] = sign * c;
        }
    }
    let explained = if total > 0.0 {
        [variance[0] / total, variance[1] / total]
    } else {
        [0.0, 0.0]
    };
    Ok(Pca2 {
        scores,
        variance,
        explained,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jacobi_recovers_a_known_spectrum_and_orthonormal_vectors() {
        // [[2,1,0],[1,2,0],[0,0,5]]: eigenvalues 5, 3, 1 with vectors e3, (1,1,0)/√2, (1,−1,0)/√2.
        let a = [2.0, 1.0, 0.0, 1.0, 2.0, 0.0, 0.0, 0.0, 5.0];
        let e = jacobi_eigen(3, &a).unwrap();
        let (vals, vecs) = (&e.values, &e.vectors);
        for (got, want) in vals.iter().zip([5.0, 3.0, 1.0]) {
            assert!((got - want).abs() < 1e-12, "{vals:?}");
        }
        assert!((vecs[0][2].abs() - 1.0).abs() < 1e-12);
        let r = 0.5f64.sqrt();
        assert!((vecs[1][0].abs() - r).abs() < 1e-12 && (vecs[1][1].abs() - r).abs() < 1e-12);
        for j in 0..3 {
            for k in 0..3 {
                let dot: f64 = (0..3).map(|i| vecs[j][i] * vecs[k][i]).sum();
                let want = if j == k { 1.0 } else { 0.0 };
                assert!((dot - want).abs() < 1e-12);
            }
        }
        assert!(jacobi_eigen(2, &a).is_err());
    }

    #[test]
    fn pca_of_a_rotated_cross_gives_the_closed_form_axes_and_scores() {
        // Coordinates a = (3, 0, −2, −1) along u and b = (0, 1, 1, −2) along w (u ⟂ w, both
        // rotated into 4-D, shifted by c; a and b have mean 0 and a·b = 0): variances
        // 14/4 = 3.5 and 6/4 = 1.5, scores a on PC1 and b on PC2 up to the orientation rule.
        let u = [0.5, 0.5, 0.5, 0.5];
        let w = [0.5, -0.5, 0.5, -0.5];
        let c = [1.0, -2.0, 3.0, 0.25];
        let pt =
            |a: f64, b: f64| -> Vec<f64> { (0..4).map(|i| c[i] + a * u[i] + b * w[i]).collect() };
        let rows = vec![pt(3.0, 0.0), pt(0.0, 1.0), pt(-2.0, 1.0), pt(-1.0, -2.0)];
        let p = pca_2d(&rows).unwrap();
        assert!((p.variance[0] - 3.5).abs() < 1e-12 && (p.variance[1] - 1.5).abs() < 1e-12);
        assert!((p.explained[0] - 0.7).abs() < 1e-12 && (p.explained[1] - 0.3).abs() < 1e-12);
        // Orientation: the largest-magnitude score of each component is positive (3 on PC1;
        // −2 on PC2, so PC2 comes out as −b).
        let want = [[3.0, 0.0], [0.0, -1.0], [-2.0, -1.0], [-1.0, 2.0]];
        for (s, w) in p.scores.iter().zip(want) {
            assert!(
                (s[0] - w[0]).abs() < 1e-12 && (s[1] - w[1]).abs() < 1e-12,
                "{:?}",
                p.scores
            );
        }
    }

    #[test]
    fn pca_matches_covariance_eigenvalues_on_random_points() {
        // Closed form through a different route: the 3×3 covariance itself, by Jacobi.
        let rows: Vec<Vec<f64>> = (0..7)
            .map(|i| {
                let t = i as f64;
                vec![t.sin() * 2.0, (1.3 * t).cos(), 0.3 * t - 1.0]
            })
            .collect();
        let p = pca_2d(&rows).unwrap();
        let n = rows.len() as f64;
        let mean: Vec<f64> = (0..3)
            .map(|j| rows.iter().map(|r| r[j]).sum::<f64>() / n)
            .collect();
        let mut cov = vec![0.0; 9];
        for r in &rows {
            for a in 0..3 {
                for b in 0..3 {
                    cov[a * 3 + b] += (r[a] - mean[a]) * (r[b] - mean[b]) / n;
                }
            }
        }
        let e = jacobi_eigen(3, &cov).unwrap();
        let (vals, vecs) = (&e.values, &e.vectors);
        assert!((p.variance[0] - vals[0]).abs() < 1e-10 && (p.variance[1] - vals[1]).abs() < 1e-10);
        // Scores are projections on the covariance eigenvectors (up to sign).
        for (r, s) in rows.iter().zip(&p.scores) {
            for k in 0..2 {
                let proj: f64 = (0..3).map(|j| (r[j] - mean[j]) * vecs[k][j]).sum();
                assert!((proj.abs() - s[k].abs()).abs() < 1e-10);
            }
        }
    }

    #[test]
    fn pca_rejects_bad_input_and_handles_identical_points() {
        assert!(pca_2d(&[vec![1.0]]).is_err());
        assert!(pca_2d(&[vec![1.0, 2.0], vec![1.0]]).is_err());
        let p = pca_2d(&[vec![1.0, 2.0], vec![1.0, 2.0]]).unwrap();
        assert_eq!(p.explained, [0.0, 0.0]);
        assert!(p.scores.iter().all(|s| s[0] == 0.0 && s[1] == 0.0));
    }
}
