//! Eigen-solvers on planted spectra (TESTING.md #6): diagonal and randomly rotated, with
//! negative, clustered and near-degenerate eigenvalues.

use breakeven_curvature::linalg::{dot, norm};
use breakeven_curvature::{
    lanczos, power_iteration, Counted, DenseMatrix, LanczosConfig, LinearOperator, PowerConfig,
    Which,
};

fn rel(a: f64, b: f64) -> f64 {
    (a - b).abs() / b.abs().max(1e-300)
}

/// The planted spectrum sorted for `which`.
fn expected(spectrum: &[f64], which: Which) -> Vec<f64> {
    let mut s = spectrum.to_vec();
    match which {
        Which::LargestAlgebraic => s.sort_by(|a, b| b.total_cmp(a)),
        Which::LargestMagnitude => s.sort_by(|a, b| b.abs().total_cmp(&a.abs())),
    }
    s
}

/// Runs Lanczos and asserts eigenvalues (1e-6 relative), true residuals (< 1e-4 |λ|),
/// orthonormal eigenvectors and no ghost (each planted value found once, in order).
fn check_top_k(a: &mut DenseMatrix, spectrum: &[f64], k: usize, which: Which, seed: u64) -> usize {
    let cfg = LanczosConfig {
        k,
        max_iter: a.dim(),
        tol: 1e-9,
        which,
        ..Default::default()
    };
    let est = lanczos(a, &cfg, seed).unwrap();
    assert!(
        est.converged,
        "not converged after {} iterations",
        est.iterations
    );
    let want = expected(spectrum, which);
    for (i, &w) in want.iter().enumerate().take(k) {
        let got = est.eigenvalues[i];
        assert!(rel(got, w) < 1e-6, "eigenvalue {i}: got {got}, want {w}");
        assert!(
            est.residuals[i] < 1e-4 * w.abs(),
            "residual {i}: {}",
            est.residuals[i]
        );
        // Recompute the residual independently of the estimator.
        let av = a.apply(&est.eigenvectors[i]).unwrap();
        let r: f64 = av
            .iter()
            .zip(&est.eigenvectors[i])
            .map(|(x, v)| (x - got * v).powi(2))
            .sum();
        assert!(r.sqrt() < 1e-4 * got.abs());
        for j in 0..=i {
            let d = dot(&est.eigenvectors[i], &est.eigenvectors[j]);
            let e = if i == j { 1.0 } else { 0.0 };
            assert!((d - e).abs() < 1e-8, "<v{i}, v{j}> = {d}");
        }
    }
    est.matvecs
}

/// A rank-2 operator in 40 dimensions: the Krylov space breaks down after two steps and every
/// restart vector lies in the null space, so the Ritz estimates are never checked again; the
/// exact pairs still count as converged by their true residuals, and not when residuals are off.
#[test]
fn lanczos_converges_on_a_low_rank_operator_after_breakdown() {
    let mut spectrum = vec![0.0; 40];
    spectrum[3] = 2.5;
    spectrum[17] = 0.75;
    let mut a = DenseMatrix::diagonal(&spectrum);
    let cfg = LanczosConfig {
        k: 2,
        max_iter: 12,
        tol: 1e-9,
        ..Default::default()
    };
    let est = lanczos(&mut a, &cfg, 5).unwrap();
    assert!(est.converged, "iterations {}", est.iterations);
    assert!(rel(est.eigenvalues[0], 2.5) < 1e-12 && rel(est.eigenvalues[1], 0.75) < 1e-12);
    assert!(
        est.residuals.iter().all(|r| *r < 1e-12),
        "{:?}",
        est.residuals
    );
    // Without the true residuals nothing vouches for the pairs.
    let blind = LanczosConfig {
        compute_residuals: false,
        ..cfg
    };
    assert!(!lanczos(&mut a, &blind, 5).unwrap().converged);
}

#[test]
fn lanczos_top_k_of_a_diagonal_operator() {
    let spectrum: Vec<f64> = (0..120).map(|i| 1.0 + i as f64 * 0.37).collect();
    let mut a = DenseMatrix::diagonal(&spectrum);
    check_top_k(&mut a, &spectrum, 5, Which::LargestAlgebraic, 1);
}

#[test]
fn lanczos_rotated_spectrum_with_negative_eigenvalues_algebraic_and_magnitude() {
    // Negative curvature larger in magnitude than the top positive eigenvalue, as early in training.
    let mut spectrum: Vec<f64> = (0..80).map(|i| 0.05 * i as f64 - 1.0).collect();
    spectrum.extend([25.0, 12.0, 7.5, -40.0, -18.0]);
    let mut a = DenseMatrix::with_spectrum(&spectrum, 7);
    check_top_k(&mut a, &spectrum, 3, Which::LargestAlgebraic, 2);
    let est = lanczos(
        &mut a,
        &LanczosConfig {
            k: 3,
            tol: 1e-9,
            which: Which::LargestMagnitude,
            ..Default::default()
        },
        3,
    )
    .unwrap();
    assert!(
        rel(est.eigenvalues[0], -40.0) < 1e-6,
        "{:?}",
        est.eigenvalues
    );
    assert!(rel(est.eigenvalues[1], 25.0) < 1e-6);
    assert!(rel(est.eigenvalues[2], -18.0) < 1e-6);
    check_top_k(&mut a, &spectrum, 4, Which::LargestMagnitude, 4);
}

#[test]
fn lanczos_clustered_and_near_degenerate_without_ghosts() {
    // A bulk clustered near 1, an outlier pair 1e-4 apart, and a second outlier cluster: with
    // full reorthogonalization each planted value appears exactly once (no ghost copies).
    let mut spectrum: Vec<f64> = (0..150).map(|i| 1.0 + 1e-3 * (i as f64).sin()).collect();
    spectrum.extend([50.0, 50.0 * (1.0 - 1e-4), 20.0, 19.0, 18.5]);
    let mut a = DenseMatrix::with_spectrum(&spectrum, 11);
    check_top_k(&mut a, &spectrum, 5, Which::LargestAlgebraic, 5);
}

#[test]
fn lanczos_warm_start_tracks_a_drifting_operator_cheaply() {
    let spectrum: Vec<f64> = (0..100).map(|i| 1.0 + 0.1 * i as f64).collect();
    let mut a = DenseMatrix::with_spectrum(&spectrum, 21);
    let cfg = LanczosConfig {
        tol: 1e-8,
        ..Default::default()
    };
    let first = lanczos(&mut a, &cfg, 1).unwrap();
    // A small drift of the spectrum, same eigenbasis: a later point of a trajectory.
    let drifted: Vec<f64> = spectrum.iter().map(|x| x * 1.01).collect();
    let mut b = DenseMatrix::with_spectrum(&drifted, 21);
    let cold = lanczos(&mut b, &cfg, 2).unwrap();
    let warm_cfg = LanczosConfig {
        warm_start: Some(first.eigenvectors[0].clone()),
        ..cfg
    };
    let warm = lanczos(&mut b, &warm_cfg, 2).unwrap();
    assert!(rel(warm.eigenvalues[0], 10.9 * 1.01) < 1e-6);
    assert!(
        warm.converged && warm.matvecs < cold.matvecs,
        "warm {} vs cold {}",
        warm.matvecs,
        cold.matvecs
    );
    // Starting exactly on an eigenvector of a lower eigenvalue must not stop there.
    let mut d = DenseMatrix::diagonal(&spectrum);
    let mut e5 = vec![0.0; 100];
    e5[5] = 1.0;
    let est = lanczos(
        &mut d,
        &LanczosConfig {
            warm_start: Some(e5),
            tol: 1e-9,
            ..Default::default()
        },
        3,
    )
    .unwrap();
    assert!(
        rel(est.eigenvalues[0], 10.9) < 1e-6,
        "{:?}",
        est.eigenvalues
    );
}

#[test]
fn lanczos_rejects_bad_configs_with_typed_errors() {
    let mut a = DenseMatrix::diagonal(&[1.0, 2.0]);
    assert!(lanczos(
        &mut a,
        &LanczosConfig {
            k: 3,
            ..Default::default()
        },
        0
    )
    .is_err());
    let bad = LanczosConfig {
        warm_start: Some(vec![0.0, 0.0]),
        ..Default::default()
    };
    assert!(lanczos(&mut a, &bad, 0).is_err());
    let short = LanczosConfig {
        warm_start: Some(vec![1.0]),
        ..Default::default()
    };
    assert!(lanczos(&mut a, &short, 0).is_err());
}

#[test]
fn power_iteration_finds_the_dominant_eigenpair_and_costs_more_than_lanczos() {
    let mut spectrum: Vec<f64> = (0..100).map(|i| 0.1 * i as f64).collect();
    spectrum.extend([20.0, 19.0]); // gap ratio 0.95: slow for power iteration.
    let mut a = Counted::new(DenseMatrix::with_spectrum(&spectrum, 5));
    let p = power_iteration(
        &mut a,
        &PowerConfig {
            tol: 1e-6,
            ..Default::default()
        },
        9,
    )
    .unwrap();
    assert!(p.converged);
    assert!(rel(p.eigenvalue, 20.0) < 1e-6, "{}", p.eigenvalue);
    assert!(p.residual <= 1e-6 * 20.0);
    assert!((norm(&p.eigenvector) - 1.0).abs() < 1e-12);
    assert_eq!(a.matvecs, p.matvecs);
    let l = lanczos(
        &mut a.inner,
        &LanczosConfig {
            tol: 1e-6,
            ..Default::default()
        },
        9,
    )
    .unwrap();
    assert!(l.converged && rel(l.eigenvalues[0], 20.0) < 1e-6);
    assert!(
        l.matvecs * 3 < p.matvecs,
        "lanczos {} vs power {}",
        l.matvecs,
        p.matvecs
    );
}

#[test]
fn hessian_summary_reports_top_k_trace_and_conditioning() {
    use breakeven_curvature::{hessian_summary, HessianSummaryConfig, TraceMethod};
    let mut spectrum: Vec<f64> = (0..90).map(|i| 0.01 * i as f64).collect();
    spectrum.extend([30.0, 20.0, 10.0]);
    let truth: f64 = spectrum.iter().sum();
    let mut a = Counted::new(DenseMatrix::with_spectrum(&spectrum, 17));
    let mut cfg = HessianSummaryConfig::default();
    cfg.lanczos.k = 3;
    cfg.lanczos.tol = 1e-8;
    cfg.trace = TraceMethod::HutchPlusPlus { matvecs: 30 };
    let s = hessian_summary(&mut a, &cfg, 4).unwrap();
    assert!(rel(s.eigenvalues[0], 30.0) < 1e-6 && rel(s.eigenvalues[2], 10.0) < 1e-6);
    assert!(rel(s.conditioning, 10.0 / 30.0) < 1e-6);
    assert!(
        (s.trace.trace - truth).abs() < 3.0 * s.trace.std_error,
        "{:?} vs {truth}",
        s.trace
    );
    assert_eq!(s.matvecs, a.matvecs);
    assert_eq!(s.matvecs, s.lanczos.matvecs + s.trace.matvecs);
}
