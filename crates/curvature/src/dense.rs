//! A dense symmetric matrix as a [`LinearOperator`]: the oracle of the tests, and the target of
//! [`crate::materialize`] for small operators.

use crate::error::{CurvatureError, Result};
use crate::linalg::{jacobi_eigen, SymEigen};
use crate::operator::{check_len, LinearOperator};
use crate::random::{random_orthogonal, rng};

/// A dense `n × n` matrix, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct DenseMatrix {
    n: usize,
    data: Vec<f64>,
}

impl DenseMatrix {
    /// From `n * n` row-major entries.
    pub fn from_row_major(n: usize, data: Vec<f64>) -> Result<Self> {
        if data.len() != n * n {
            return Err(CurvatureError::DimensionMismatch {
                what: "DenseMatrix::from_row_major data",
                got: data.len(),
                expected: n * n,
            });
        }
        Ok(Self { n, data })
    }

    /// The diagonal matrix `diag(values)`.
    pub fn diagonal(values: &[f64]) -> Self {
        let n = values.len();
        let mut data = vec![0.0; n * n];
        for (i, v) in values.iter().enumerate() {
            data[i * n + i] = *v;
        }
        Self { n, data }
    }

    /// `Q diag(values) Qᵀ` with `Q` a random orthogonal matrix drawn from `seed`: a matrix with
    /// a planted spectrum and no special basis (TESTING.md #6).
    pub fn with_spectrum(values: &[f64], seed: u64) -> Self {
        let n = values.len();
        let q = random_orthogonal(&mut rng(seed), n);
        let mut data = vec![0.0; n * n];
        for i in 0..n {
            for j in 0..=i {
                let s: f64 = (0..n)
                    .map(|k| q[i * n + k] * values[k] * q[j * n + k])
                    .sum();
                data[i * n + j] = s;
                data[j * n + i] = s;
            }
        }
        Self { n, data }
    }

    /// The side `n`.
    pub fn n(&self) -> usize {
        self.n
    }

    /// Entry `(i, j)`.
    pub fn get(&self, i: usize, j: usize) -> f64 {
        self.data[i * self.n + j]
    }

    /// The row-major entries.
    pub fn data(&self) -> &[f64] {
        &self.data
    }

    /// Replaces the matrix by `(A + Aᵀ)/2`.
    pub fn symmetrize(&mut self) {
        let n = self.n;
        for i in 0..n {
            for j in 0..i {
                let s = 0.5 * (self.data[i * n + j] + self.data[j * n + i]);
                self.data[i * n + j] = s;
                self.data[j * n + i] = s;
            }
        }
    }

    /// `max |A_ij − A_ji|`.
    pub fn max_asymmetry(&self) -> f64 {
        let n = self.n;
        let mut m: f64 = 0.0;
        for i in 0..n {
            for j in 0..i {
                m = m.max((self.data[i * n + j] - self.data[j * n + i]).abs());
            }
        }
        m
    }

    /// `Tr(A)`.
    pub fn trace(&self) -> f64 {
        (0..self.n).map(|i| self.get(i, i)).sum()
    }

    /// `max |A_ij − B_ij| / max(max |B_ij|, floor)`: the relative distance tests use.
    pub fn rel_max_diff(&self, other: &DenseMatrix, floor: f64) -> f64 {
        let scale = other.data.iter().fold(floor, |m, x| m.max(x.abs()));
        self.data
            .iter()
            .zip(&other.data)
            .fold(0.0_f64, |m, (a, b)| m.max((a - b).abs()))
            / scale
    }

    /// All eigenpairs (largest first) by Jacobi; the matrix must be symmetric.
    pub fn eigen(&self) -> Result<SymEigen> {
        jacobi_eigen(self.n, &self.data)
    }
}

impl LinearOperator for DenseMatrix {
    fn dim(&self) -> usize {
        self.n
    }

    fn apply(&mut self, v: &[f64]) -> Result<Vec<f64>> {
        check_len("DenseMatrix::apply input", v, self.n)?;
        Ok(self
            .data
            .chunks_exact(self.n)
            .map(|row| row.iter().zip(v).map(|(a, b)| a * b).sum())
            .collect())
    }
}
