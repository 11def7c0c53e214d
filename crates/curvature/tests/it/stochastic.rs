//! Stochastic estimators tested statistically with fixed seeds (TESTING.md #5, #7).

use breakeven_curvature::{
    hutch_plus_plus, hutchinson, spectral_density, DenseMatrix, HutchinsonConfig, SlqConfig,
};

#[test]
fn hutchinson_lands_within_three_standard_errors() {
    let spectrum: Vec<f64> = (0..60)
        .map(|i| (i as f64 * 0.7).cos() * 3.0 + 1.0)
        .collect();
    let truth: f64 = spectrum.iter().sum();
    let mut a = DenseMatrix::with_spectrum(&spectrum, 3);
    for seed in 0..5 {
        let t = hutchinson(&mut a, &HutchinsonConfig { samples: 200 }, seed).unwrap();
        assert!(t.std_error > 0.0 && t.std_error.is_finite());
        assert!(
            (t.trace - truth).abs() < 3.0 * t.std_error,
            "seed {seed}: {} ± {} vs {truth}",
            t.trace,
            t.std_error
        );
        assert_eq!(t.matvecs, 200);
    }
    // Same seed, same bits.
    let x = hutchinson(&mut a, &HutchinsonConfig { samples: 10 }, 42).unwrap();
    let y = hutchinson(&mut a, &HutchinsonConfig { samples: 10 }, 42).unwrap();
    assert_eq!(x.trace.to_bits(), y.trace.to_bits());
}

#[test]
fn hutch_plus_plus_beats_hutchinson_at_equal_budget() {
    // Fast-decaying spectrum: the regime Hutch++ is built for.
    let spectrum: Vec<f64> = (0..200).map(|i| 100.0 / (1.0 + i as f64).powi(2)).collect();
    let truth: f64 = spectrum.iter().sum();
    let mut a = DenseMatrix::with_spectrum(&spectrum, 8);
    let budget = 30;
    let (mut err_h, mut err_pp) = (0.0, 0.0);
    for seed in 0..20 {
        let h = hutchinson(&mut a, &HutchinsonConfig { samples: budget }, seed).unwrap();
        let p = hutch_plus_plus(&mut a, budget, seed).unwrap();
        assert_eq!(p.matvecs, budget);
        err_h += (h.trace - truth).powi(2);
        err_pp += (p.trace - truth).powi(2);
    }
    assert!(
        err_pp * 4.0 < err_h,
        "Hutch++ rms {} vs Hutchinson rms {}",
        (err_pp / 20.0).sqrt(),
        (err_h / 20.0).sqrt()
    );
}

#[test]
fn slq_density_integrates_to_one_and_finds_two_planted_clusters() {
    // 70% of the mass near 1, 30% near 10.
    let mut spectrum: Vec<f64> = (0..140)
        .map(|i| 1.0 + 0.2 * ((i as f64) * 0.9).sin())
        .collect();
    spectrum.extend((0..60).map(|i| 10.0 + 0.3 * ((i as f64) * 1.3).cos()));
    let mut a = DenseMatrix::with_spectrum(&spectrum, 4);
    let cfg = SlqConfig {
        probes: 20,
        lanczos_steps: 40,
        sigma: Some(0.2),
        ..Default::default()
    };
    let d = spectral_density(&mut a, &cfg, 6).unwrap();
    assert!((d.integral - 1.0).abs() < 0.05, "integral {}", d.integral);
    let low = d.mass_between(0.0, 2.0);
    let high = d.mass_between(9.0, 11.0);
    assert!(
        (low - 0.7).abs() < 0.1 && (high - 0.3).abs() < 0.1,
        "masses {low} {high}"
    );
    assert!(low + high > 0.99);
    // The smoothed density peaks inside each cluster and is ~0 between them.
    let at = |t: f64| {
        let i = d.grid.iter().position(|x| *x >= t).unwrap();
        d.density[i]
    };
    assert!(
        at(1.0) > 0.5 && at(10.0) > 0.2 && at(5.5) < 1e-3,
        "{} {} {}",
        at(1.0),
        at(10.0),
        at(5.5)
    );
}

#[test]
fn hutch_plus_plus_reaches_1e_minus_3_within_60_products_on_a_decaying_spectrum() {
    // Ten dominant directions and a small tail: the sketch captures the top, Hutchinson only
    // has to estimate the tail.
    let mut spectrum: Vec<f64> = (0..10).map(|i| 100.0 / (1.0 + i as f64)).collect();
    spectrum.extend((0..190).map(|i| 1e-3 * (1.0 + (i as f64).cos())));
    let truth: f64 = spectrum.iter().sum();
    let mut a = DenseMatrix::with_spectrum(&spectrum, 12);
    for seed in 0..3 {
        let t = hutch_plus_plus(&mut a, 60, seed).unwrap();
        assert!(
            (t.trace - truth).abs() < 1e-3 * truth,
            "seed {seed}: {} vs {truth}",
            t.trace
        );
    }
}
