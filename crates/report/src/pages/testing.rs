//! Synthetic finished runs for the pages' tests: run specs expanded from the real experiment
//! definitions, with summaries and metrics logs made up in memory (nothing trains).

use std::path::Path;

use breakeven_runner::metrics::{CurvatureRecord, MetricsRecord};
use breakeven_runner::rundir::{FinalMetrics, RunStatus, Summary};
use breakeven_runner::select::CellResult;
use breakeven_runner::sweep::{Experiment, RunSpec};
use breakeven_runner::table::{RowOutcome, RowState};

use super::break_even_sweep::{Sweep, Trajectory};
use crate::page::{Records, Stamp};

/// `experiments/<name>.toml`.
pub fn experiment(name: &str) -> Experiment {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../experiments")
        .join(format!("{name}.toml"));
    Experiment::load(&path).unwrap()
}

/// A stamp for a page of `profile`.
pub fn stamp(profile: &str) -> Stamp {
    Stamp {
        profile: profile.into(),
        command: "cargo xtask reproduce test".into(),
        generated_utc: "now".into(),
        git_revision: "rev".into(),
        device: None,
    }
}

/// The run specs of the first row of `profile`.
pub fn specs(exp: &Experiment, profile: &str) -> Vec<RunSpec> {
    exp.expand_row(profile, exp.rows_in(profile)[0], Path::new("/runs"))
        .unwrap()
}

/// A converged run's summary with final test and training accuracy (fractions).
pub fn summary(test_acc: f64, train_acc: f64) -> Summary {
    Summary {
        name: "run".into(),
        status: RunStatus::Converged,
        diverged_at_step: None,
        steps: 100,
        epochs: 4.0,
        final_metrics: FinalMetrics {
            test_acc: Some(test_acc),
            train_acc: Some(train_acc),
            ..Default::default()
        },
        wall_s: 60.0,
        git_revision: String::new(),
        hardware: Some("Test CPU, 2 logical cores available, linux (x86_64); device cpu".into()),
    }
}

/// The first row of `profile` as run: `runs` finished, with the columns' chosen settings.
pub fn ran(
    exp: &Experiment,
    profile: &str,
    runs: Vec<(RunSpec, Option<Summary>)>,
    chosen: &[(&str, f64)],
) -> RowOutcome {
    let cells = chosen
        .iter()
        .map(|(column, hyper)| CellResult {
            column: column.to_string(),
            chosen: Some(*hyper),
            test_mean: None,
            test_std: None,
            test_by_seed: vec![],
            train_mean: None,
            seeds: 0,
            converged: true,
            diverged: 0,
            pending: 0,
            val_by_hyper: vec![],
            excluded: vec![],
        })
        .collect();
    RowOutcome {
        row: exp.rows_in(profile)[0].clone(),
        state: RowState::Ran {
            cells,
            runs,
            errors: vec![],
            waiting: vec![],
        },
        data_dir: None,
    }
}

/// A logged point at `epoch` with the Fisher trace `fisher` and training accuracy `acc`.
pub fn record(step: u64, epoch: f64, acc: f64, fisher: Option<f64>) -> MetricsRecord {
    MetricsRecord {
        step,
        epoch,
        train_acc: acc,
        measure_acc: Some(acc),
        curvature: fisher.map(|f| CurvatureRecord {
            fisher_trace: Some(f),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Records for the runs of `outcome`, made by `make` from each spec.
pub fn records_for(outcome: &RowOutcome, make: impl Fn(&RunSpec) -> Vec<MetricsRecord>) -> Records {
    let RowState::Ran { runs, .. } = &outcome.state else {
        return Records::new();
    };
    runs.iter()
        .map(|(spec, _)| (spec.dir.clone(), make(spec)))
        .collect()
}

/// A synthetic η × S sweep for the pages' tests: at each of η ∈ {0.1, 0.01} and S ∈ {16, 128}
/// one run through accuracies 10, 30, 50, 70%, whose λ_H^1 = λ_K^1 grow along training as
/// (S/16)/η (smaller with a larger η and a smaller S), λ_K^*/λ_K^1 = 100 η / S and Tr(K) = S.
pub fn synthetic_sweep() -> Sweep {
    let mut runs = Vec::new();
    for seed in 0..3u64 {
        for lr in [0.1, 0.01] {
            for batch in [16usize, 128] {
                // Seeds differ a little; every trend keeps its direction in every seed.
                let scale = batch as f64 / 16.0 / lr * (1.0 + 0.01 * seed as f64);
                runs.push(Trajectory {
                    label: format!("η={lr}, S={batch}, seed {seed}"),
                    lr,
                    batch,
                    seed,
                    step: vec![0.0, 10.0, 20.0, 30.0],
                    epoch: vec![0.0, 1.0, 2.0, 3.0],
                    acc: vec![0.1, 0.3, 0.5, 0.7],
                    lambda_h: (1..=4).map(|k| scale * k as f64).collect(),
                    lambda_k: (1..=4).map(|k| scale * k as f64).collect(),
                    k_trace: vec![batch as f64 * (1.0 + 0.01 * seed as f64); 4],
                    k_ratio: vec![100.0 * lr / batch as f64; 4],
                    lanczos_residual: vec![1e-4; 4],
                    converged: true,
                });
            }
        }
    }
    Sweep {
        runs,
        notes: vec!["run /r/x has not finished".into()],
        unfinished: 0,
    }
}
