//! The early-phase picture (SCIENCE.md §5.6; Jastrzebski et al. ICLR 2020): every checkpoint of
//! a run embedded by its softmax predictions on a fixed test subset, joined with the λ_K^1 and
//! training accuracy logged at the same step. The rules that decide whether a large- and a
//! small-η trajectory separate early are `breakeven_report::early_phase`.

use std::path::Path;

use breakeven_models::Mode;
use candle_core::DType;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::checkpoint::list_checkpoints;
use crate::device::open_device;
use crate::error::RunError;
use crate::metrics::read_metrics;
use crate::rundir::RunDir;
use crate::setup::{load_data, prepare, STEP_SEED_OFFSET};
use crate::state::restore;

/// One checkpoint of a trajectory.
#[derive(Debug, Clone, PartialEq)]
pub struct TrajectoryPoint {
    pub step: u64,
    pub epoch: f64,
    /// Accuracy on the fixed measurement subset of the training set at this checkpoint (eval
    /// mode): a training accuracy measured at the point itself, not a running mean.
    pub train_acc: f64,
    /// λ_K^1 logged at this step (absent when curvature was not measured here).
    pub lambda_k1: Option<f64>,
    /// Softmax outputs on the fixed test subset, example-major (n_test × classes).
    pub predictions: Vec<f64>,
}

/// The checkpoints of one run, with the number of classes of its predictions.
#[derive(Debug, Clone, PartialEq)]
pub struct Trajectory {
    /// Classes per test example in `predictions` (0 when the run has no checkpoints).
    pub classes: usize,
    pub points: Vec<TrajectoryPoint>,
}

/// Per checkpoint: its step and its softmax predictions (example-major).
pub type StepPredictions = Vec<(u64, Vec<f64>)>;

/// Softmax predictions (example-major, f64) of every checkpoint kept in `run_dir`, on the run's
/// own test subset (`data.test_subset`, a class-balanced draw: the same for every run), and
/// the number of classes (0 when there is no checkpoint).
pub fn checkpoint_predictions(
    run_dir: &Path,
    data_dir: Option<&Path>,
) -> Result<(usize, StepPredictions), RunError> {
    let run = RunDir::new(run_dir);
    let config = run.load_config()?;
    let checkpoints = list_checkpoints(&run.checkpoint_dir())?;
    if checkpoints.is_empty() {
        return Ok((0, vec![]));
    }
    let data = load_data(&config, data_dir)?;
    let mut p = prepare(&config, data, open_device(config.device)?)?;
    let mut rng = ChaCha8Rng::seed_from_u64(config.seed ^ STEP_SEED_OFFSET);
    let mut out = Vec::with_capacity(checkpoints.len());
    for (step, path) in checkpoints {
        restore(&path, &mut p, &mut rng)?;
        let mut probs = Vec::new();
        for (x, _) in &p.test.batches {
            let logits = p.model.forward(x, Mode::Eval)?.detach();
            for row in logits.to_dtype(DType::F64)?.to_vec2::<f64>()? {
                probs.extend(softmax(&row));
            }
        }
        out.push((step, probs));
    }
    Ok((p.num_classes, out))
}

/// Softmax of one row of logits (max-shifted, so large logits do not overflow).
pub fn softmax(logits: &[f64]) -> Vec<f64> {
    let max = logits.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let e: Vec<f64> = logits.iter().map(|l| (l - max).exp()).collect();
    let sum: f64 = e.iter().sum();
    e.into_iter().map(|v| v / sum).collect()
}

/// The trajectory of a run: its checkpoints (with predictions) joined by step with its logged
/// metrics. Checkpoints at steps that were not logged are left out (no accuracy to colour by).
pub fn trajectory(run_dir: &Path, data_dir: Option<&Path>) -> Result<Trajectory, RunError> {
    let records = read_metrics(&RunDir::new(run_dir).metrics_path())?;
    let (classes, predictions) = checkpoint_predictions(run_dir, data_dir)?;
    let mut points = Vec::new();
    for (step, predictions) in predictions {
        let Some(r) = records.iter().find(|r| r.step == step) else {
            continue;
        };
        points.push(TrajectoryPoint {
            step,
            epoch: r.epoch,
            train_acc: r.measure_acc.unwrap_or(r.train_acc),
            lambda_k1: r.curvature.as_ref().and_then(|c| c.lambda_k1),
            predictions,
        });
    }
    Ok(Trajectory { classes, points })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn softmax_is_shift_invariant_and_normalized() {
        let p = softmax(&[1000.0, 1000.0 + 2f64.ln()]);
        assert!((p[0] - 1.0 / 3.0).abs() < 1e-12 && (p[1] - 2.0 / 3.0).abs() < 1e-12);
    }

    #[test]
    fn experiment_profiles_expand_into_three_runs_a_seed_with_a_checkpoint_at_every_log_point() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../experiments/early-phase.toml");
        let exp = crate::sweep::Experiment::load(&path).unwrap();
        let dir = std::env::temp_dir();
        for name in ["smoke", "cpu", "paper"] {
            let row = exp.rows_in(name)[0];
            let specs = exp.expand_row(name, row, &dir).unwrap();
            let seeds = &exp.profile(name).unwrap().seeds;
            assert_eq!(specs.len(), 3 * seeds.len(), "{name}");
            for &seed in seeds {
                // Per seed: the large η, the small η, and the control (the large η from the
                // same start with another batch order).
                let of = |col: &str| {
                    specs
                        .iter()
                        .find(|s| s.seed == seed && s.column == col)
                        .unwrap_or_else(|| panic!("{name}: no {col} run of seed {seed}"))
                };
                let (large, small, control) = (of("large"), of("small"), of("control"));
                assert_eq!((large.config.optim.lr, small.config.optim.lr), (0.1, 0.01));
                assert_eq!(control.config.optim.lr, large.config.optim.lr);
                assert_eq!(large.config.data.order_seed, None);
                assert!(control.config.data.order_seed.is_some_and(|o| o != seed));
            }
            for s in &specs {
                let t = &s.config.tracking;
                assert!(t.curvature && t.k_examples > 0, "{name}: λ_K^1 tracked");
                assert_eq!(
                    t.checkpoint_every_steps, t.dense_every,
                    "{name}: a checkpoint per log point"
                );
                assert_eq!(s.config.stop.train_acc, Some(0.65), "{name}");
                assert_eq!(s.config.data.name, crate::config::DataName::Cifar10);
                assert!(
                    s.config.data.test_subset.is_some(),
                    "{name}: a fixed test subset"
                );
                if name != "smoke" {
                    assert_eq!(s.config.data.batch_size, 128, "{name}");
                }
            }
        }
    }

    #[test]
    fn a_tiny_run_keeps_every_checkpoint_and_embeds_each_logged_one() {
        let dir = crate::tests::temp_dir("early-phase");
        let mut config = crate::tests::tiny_config();
        config.tracking.checkpoint_every_steps = config.tracking.dense_every;
        config.stop.max_epochs = 2;
        config.data.test_subset = Some(20);
        let opts = crate::TrainOptions {
            keep_all_checkpoints: true,
            ..Default::default()
        };
        crate::train(
            &config.validate().unwrap(),
            &RunDir::new(dir.join("all")),
            &opts,
        )
        .unwrap();
        let t = trajectory(&dir.join("all"), None).unwrap();
        assert_eq!(t.classes, 4);
        let points = t.points;
        let records = read_metrics(&RunDir::new(dir.join("all")).metrics_path()).unwrap();
        // Every logged step (dense every 4 steps, plus epoch ends) has a checkpoint.
        assert_eq!(points.len(), records.len());
        for (p, r) in points.iter().zip(&records) {
            assert_eq!(p.step, r.step);
            assert_eq!(Some(p.train_acc), r.measure_acc);
            assert_eq!(p.predictions.len(), 20 * 4, "20 test images × 4 classes");
            for row in p.predictions.chunks(4) {
                assert!((row.iter().sum::<f64>() - 1.0).abs() < 1e-9);
            }
        }
        assert_ne!(points[0].predictions, points[points.len() - 1].predictions);
        // Without the option only the newest two checkpoints survive.
        crate::train(
            &config.validate().unwrap(),
            &RunDir::new(dir.join("pruned")),
            &crate::TrainOptions::default(),
        )
        .unwrap();
        let kept = list_checkpoints(&RunDir::new(dir.join("pruned")).checkpoint_dir()).unwrap();
        assert_eq!(kept.len(), 2);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
