//! LCA runs on tiny synthetic models: the logged totals add up to the true ΔL within the logged
//! error (and the error is small where the loss is smooth), endpoints are reused on consecutive
//! steps, and the records are deterministic for a seed.

use super::*;
use crate::tests::temp_dir;

fn tiny(arch: &str, dtype: &str) -> RunConfig {
    RunConfig::from_toml(
        &format!(
            r#"
name = "lca-tiny"
seed = 11
dtype = "{dtype}"
[data]
name = "synthetic"
batch_size = 32
[model]
arch = "{arch}"
widths = [8]
[optim]
lr = 0.05
[stop]
max_epochs = 1
max_steps = 6
[tracking]
measure_subset = 48
"#
        ),
        "lca test",
    )
    .unwrap()
}

const SCHEDULE: LcaSchedule = LcaSchedule {
    dense_steps: 3,
    every: 2,
    tol: None,
    max_panels: 1,
};

#[test]
fn steps_outside_the_tolerance_are_refined_and_flagged() {
    // A ReLU net at a large step: the integrand has kinks, Simpson misses ΔL by more than
    // 1e-6 relative, and composite Simpson on more panels closes in on it.
    let mut config = tiny("fc_relu", "f64");
    config.optim.lr = 0.5;
    let plain = run_lca(&config, &SCHEDULE, &temp_dir("lca-plain"), None).unwrap();
    let refined_schedule = LcaSchedule {
        tol: Some(1e-6),
        max_panels: 16,
        ..SCHEDULE
    };
    let dir = temp_dir("lca-refined");
    let refined = run_lca(&config, &refined_schedule, &dir, None).unwrap();
    assert_eq!(plain.len(), refined.len());
    let mut more_panels = 0;
    for (a, b) in plain.iter().zip(&refined) {
        // Refinement changes the integral, never the trajectory.
        assert_eq!(a.true_delta.to_bits(), b.true_delta.to_bits());
        assert_eq!(a.panels, 1);
        assert_eq!(a.within_tol, None);
        let within = b.integration_error.abs() <= (1e-6 * b.true_delta.abs()).max(ABS_FLOOR);
        assert_eq!(b.within_tol, Some(within), "step {}", b.step);
        if b.panels > 1 {
            more_panels += 1;
            assert!(b.panels.is_power_of_two() && b.panels <= 16);
            // Spent more gradients than Simpson, and missed by no more than it did (or met it).
            assert!(b.gradient_evaluations > a.gradient_evaluations);
            assert!(
                within || b.relative_error <= a.relative_error * 1.5,
                "step {}",
                b.step
            );
        } else {
            assert!(
                within,
                "step {}: Simpson within tolerance needs no refinement",
                b.step
            );
        }
    }
    assert!(
        more_panels > 0,
        "no step needed refinement: the test proves nothing"
    );
    // A tolerance must be positive and the panels at least 1.
    let bad = LcaSchedule {
        tol: Some(0.0),
        ..refined_schedule
    };
    let err = run_lca(&config, &bad, &dir, None).unwrap_err().to_string();
    assert!(err.contains("lca.tol"), "{err}");
    let bad = LcaSchedule {
        max_panels: 0,
        ..refined_schedule
    };
    let err = run_lca(&config, &bad, &dir, None).unwrap_err().to_string();
    assert!(err.contains("lca.max_panels"), "{err}");
}

#[test]
fn totals_match_true_delta_within_logged_error() {
    let dir = temp_dir("lca-totals");
    let records = run_lca(&tiny("fc_tanh", "f64"), &SCHEDULE, &dir, None).unwrap();
    assert_eq!(
        records.iter().map(|r| r.step).collect::<Vec<_>>(),
        vec![1, 2, 3, 4, 6]
    );
    // Consecutive steps share θ: 3 passes for the first, 2 (+1 reused) while consecutive, 3
    // again after the unlogged step 5.
    assert_eq!(
        records
            .iter()
            .map(|r| (r.gradient_evaluations, r.reused_gradients))
            .collect::<Vec<_>>(),
        vec![(3, 0), (2, 1), (2, 1), (2, 1), (3, 0)]
    );
    for r in &records {
        let layers: f64 = r.layers.iter().map(|l| l.total).sum();
        assert!((layers - r.allocated).abs() <= 1e-12 * r.allocated.abs().max(1e-12));
        assert!(
            (r.allocated - r.true_delta).abs() <= r.integration_error.abs() * (1.0 + 1e-9) + 1e-15,
            "step {}: allocated {} vs ΔL {} (logged error {})",
            r.step,
            r.allocated,
            r.true_delta,
            r.integration_error
        );
        // tanh net in f64: the integrand is smooth, so one Simpson panel is accurate to well
        // under 1% even for these large first steps (measured <= 2e-3); a wrong weight or node
        // would be off by O(1).
        assert!(r.true_delta < 0.0, "step {} did not lower the loss", r.step);
        assert!(
            r.relative_error < 1e-2,
            "step {}: {}",
            r.step,
            r.relative_error
        );
        let parts = r.fraction_helped + r.fraction_hurt + r.fraction_zero;
        assert!((parts - 1.0).abs() < 1e-12);
        assert!(r.hurt_among_nonzero > 0.0 && r.hurt_among_nonzero < 1.0);
    }
    // The file holds exactly what was returned (serde_json's float parsing may differ in the
    // last bit, so the lines are compared as written), and a finished run is read back.
    let text = std::fs::read_to_string(lca_path(&dir)).unwrap();
    let written: Vec<String> = records
        .iter()
        .map(|r| serde_json::to_string(r).unwrap())
        .collect();
    assert_eq!(text.lines().collect::<Vec<_>>(), written);
    let again = run_lca(&tiny("fc_tanh", "f64"), &SCHEDULE, &dir, None).unwrap();
    assert_eq!(again.len(), records.len());
    for (a, b) in again.iter().zip(&records) {
        assert_eq!(
            (a.step, a.gradient_evaluations),
            (b.step, b.gradient_evaluations)
        );
        assert!((a.true_delta - b.true_delta).abs() <= 1e-14 * b.true_delta.abs());
        // Read back, not re-run: a re-run would measure different wall times.
        assert!((a.lca_wall_s - b.lca_wall_s).abs() <= 1e-12 * b.lca_wall_s);
    }
}

#[test]
fn records_are_deterministic_for_a_seed() {
    let run = |name: &str| {
        let dir = temp_dir(name);
        let mut r = run_lca(&tiny("fc_relu", "f32"), &SCHEDULE, &dir, None).unwrap();
        for x in &mut r {
            x.lca_wall_s = 0.0;
            x.step_wall_s = 0.0;
        }
        r
    };
    let (a, b) = (run("lca-det-a"), run("lca-det-b"));
    assert_eq!(a.len(), 5);
    assert_eq!(a, b);
    let mut other = tiny("fc_relu", "f32");
    other.seed = 12;
    let c = run_lca(&other, &SCHEDULE, &temp_dir("lca-det-c"), None).unwrap();
    assert_ne!(a[0].true_delta, c[0].true_delta);
}

#[test]
fn penalties_are_refused() {
    let mut c = tiny("fc_relu", "f32");
    c.penalty.kind = Some(breakeven_penalties::PenaltyKind::Fp);
    c.penalty.alpha = 0.1;
    let e = run_lca(&c, &SCHEDULE, &temp_dir("lca-pen"), None).unwrap_err();
    assert!(e.to_string().contains("penalty.kind"), "{e}");
}

#[test]
fn experiment_profiles_expand_to_valid_configs() {
    use crate::lca::LcaExperiment;
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../experiments/lca.toml");
    let exp = LcaExperiment::load(&path).unwrap();
    for name in ["smoke", "cpu", "paper"] {
        let p = exp.profile(name).unwrap();
        let runs = p.runs("lca-test", None).unwrap();
        let lrs: Vec<f64> = runs.iter().map(|(_, c)| c.optim.lr).collect();
        assert_eq!(lrs, vec![p.large_lr, p.small_lr], "{name}");
        assert!(p.large_lr > p.small_lr, "{name}");
        assert!(runs.iter().all(|(_, c)| c.penalty.kind.is_none()));
    }
    assert!(exp.profile("nope").is_err());
}
