//! Stochastic Lanczos quadrature (Ghorbani et al. 2019, PyHessian's `density`): a
//! Gaussian-smoothed estimate of the spectral density of a symmetric operator.

use crate::error::{CurvatureError, Result};
use crate::lanczos::Krylov;
use crate::operator::LinearOperator;
use crate::random::{rademacher_vector, rng};

/// Settings of [`spectral_density`].
#[derive(Debug, Clone)]
pub struct SlqConfig {
    /// Independent Rademacher probes (each one Lanczos run).
    pub probes: usize,
    /// Lanczos steps per probe (= quadrature nodes per probe).
    pub lanczos_steps: usize,
    /// Points of the output grid.
    pub grid_points: usize,
    /// Width of the Gaussian kernel; `None`: 1% of the node range.
    pub sigma: Option<f64>,
    /// Grid range; `None`: node range padded by 5 sigma each side.
    pub range: Option<(f64, f64)>,
}

impl Default for SlqConfig {
    fn default() -> Self {
        Self {
            probes: 10,
            lanczos_steps: 80,
            grid_points: 1000,
            sigma: None,
            range: None,
        }
    }
}

/// The density with its quadrature and diagnostics.
#[derive(Debug, Clone)]
pub struct SpectralDensity {
    /// Grid abscissae (eigenvalues).
    pub grid: Vec<f64>,
    /// Density on the grid; it integrates to ≈ 1 (a probability density over eigenvalues).
    pub density: Vec<f64>,
    /// Trapezoid integral of `density` over the grid (1 up to the grid's truncation).
    pub integral: f64,
    /// Quadrature nodes (Ritz values) per probe.
    pub nodes: Vec<Vec<f64>>,
    /// Quadrature weights per probe (each probe's weights sum to 1).
    pub weights: Vec<Vec<f64>>,
    /// Kernel width used.
    pub sigma: f64,
    /// Operator products spent.
    pub matvecs: usize,
}

impl SpectralDensity {
    /// The spectral mass in `[lo, hi]` from the quadrature (not the smoothed grid): the
    /// fraction of eigenvalues there.
    pub fn mass_between(&self, lo: f64, hi: f64) -> f64 {
        let p = self.nodes.len() as f64;
        self.nodes
            .iter()
            .zip(&self.weights)
            .flat_map(|(n, w)| n.iter().zip(w))
            .filter(|(x, _)| **x >= lo && **x <= hi)
            .map(|(_, w)| w)
            .sum::<f64>()
            / p
    }
}

/// Spectral density `φ(t) = (1/P) Σ_probes Σ_i τ_i N(t; θ_i, σ²)` with Ritz values `θ_i` and
/// weights `τ_i` = squared first components of the Ritz vectors.
pub fn spectral_density<A: LinearOperator + ?Sized>(
    op: &mut A,
    cfg: &SlqConfig,
    seed: u64,
) -> Result<SpectralDensity> {
    if cfg.probes == 0 || cfg.lanczos_steps == 0 || cfg.grid_points < 2 {
        return Err(CurvatureError::InvalidConfig {
            key: "probes/lanczos_steps/grid_points",
            reason: format!(
                "need probes ≥ 1, lanczos_steps ≥ 1, grid_points ≥ 2; got {}, {}, {}",
                cfg.probes, cfg.lanczos_steps, cfg.grid_points
            ),
        });
    }
    let n = op.dim();
    let mut r = rng(seed);
    let (mut nodes, mut weights, mut matvecs) = (vec![], vec![], 0);
    for _ in 0..cfg.probes {
        let v = rademacher_vector(&mut r, n);
        let mut kr = Krylov::new(v)?;
        for _ in 0..cfg.lanczos_steps.min(n) {
            // A breakdown ends the run: the quadrature is then exact for this probe.
            if !kr.step(op, &mut r)? || kr.last_beta == 0.0 {
                break;
            }
        }
        matvecs += kr.matvecs;
        let e = kr.ritz()?;
        weights.push(e.vectors.iter().map(|s| s[0] * s[0]).collect::<Vec<_>>());
        nodes.push(e.values);
    }
    let (lo_node, hi_node) = nodes
        .iter()
        .flatten()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), x| {
            (a.min(*x), b.max(*x))
        });
    let span = (hi_node - lo_node).max(1e-12 * hi_node.abs().max(1.0));
    let sigma = cfg.sigma.unwrap_or(0.01 * span);
    if !(sigma > 0.0 && sigma.is_finite()) {
        return Err(CurvatureError::InvalidConfig {
            key: "sigma",
            reason: format!("must be positive and finite, got {sigma}"),
        });
    }
    let (lo, hi) = cfg
        .range
        .unwrap_or((lo_node - 5.0 * sigma, hi_node + 5.0 * sigma));
    let step = (hi - lo) / (cfg.grid_points - 1) as f64;
    let grid: Vec<f64> = (0..cfg.grid_points).map(|i| lo + step * i as f64).collect();
    let norm_c = 1.0 / (sigma * (std::f64::consts::TAU).sqrt() * cfg.probes as f64);
    let density: Vec<f64> = grid
        .iter()
        .map(|t| {
            nodes
                .iter()
                .zip(&weights)
                .flat_map(|(n, w)| n.iter().zip(w))
                .map(|(x, w)| w * (-0.5 * ((t - x) / sigma).powi(2)).exp())
                .sum::<f64>()
                * norm_c
        })
        .collect();
    let integral = density.windows(2).map(|w| 0.5 * (w[0] + w[1]) * step).sum();
    Ok(SpectralDensity {
        grid,
        density,
        integral,
        nodes,
        weights,
        sigma,
        matvecs,
    })
}
