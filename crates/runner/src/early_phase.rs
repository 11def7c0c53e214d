//! The early-phase picture (SCIENCE.md §5.6; Jastrzebski et al. ICLR 2020): every checkpoint of
//! a run embedded by its softmax predictions on a fixed test subset, joined with the λ_K^1 and
//! training accuracy logged at the same step, and the rules that decide whether a large- and a
//! small-η trajectory separate early.

use std::path::Path;

use breakeven_models::Mode;
use candle_core::DType;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::checkpoint::list_checkpoints;
use crate::claims::{median, sig4, spearman, Verdict};
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

/// The index of the first point whose training accuracy reaches `level`.
pub fn first_crossing(points: &[TrajectoryPoint], level: f64) -> Option<usize> {
    points.iter().position(|p| p.train_acc >= level)
}

/// Accuracy levels `start`, `start + step`, … up to the lower of the two runs' highest
/// training accuracy: the levels both trajectories reach.
pub fn matched_levels(
    a: &[TrajectoryPoint],
    b: &[TrajectoryPoint],
    start: f64,
    step: f64,
) -> Vec<f64> {
    let top = |t: &[TrajectoryPoint]| {
        t.iter()
            .map(|p| p.train_acc)
            .fold(f64::NEG_INFINITY, f64::max)
    };
    let hi = top(a).min(top(b));
    let mut levels = Vec::new();
    if step.is_nan() || step <= 0.0 {
        return levels;
    }
    for k in 0.. {
        let level = start + step * k as f64;
        // A hair of tolerance: 0.2 + 9 × 0.05 must count as 0.65.
        if level > hi + 1e-9 {
            break;
        }
        levels.push(level);
    }
    levels
}

/// Root-mean-square over test examples of the L2 distance between two prediction vectors
/// (example-major, `classes` per example).
pub fn prediction_distance(a: &[f64], b: &[f64], classes: usize) -> f64 {
    let n = (a.len() / classes.max(1)).max(1);
    let sq: f64 = a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum();
    (sq / n as f64).sqrt()
}

/// The two runs compared at one matched training-accuracy level (first crossings).
#[derive(Debug, Clone, PartialEq)]
pub struct MatchedPoint {
    pub level: f64,
    pub small: usize,
    pub large: usize,
    /// λ_K^1(small η) / λ_K^1(large η) (absent if either was not measured).
    pub lambda_ratio: Option<f64>,
    /// [`prediction_distance`] between the two checkpoints.
    pub distance: f64,
}

/// Both runs at each level of `levels` (levels a run never reaches are skipped).
pub fn match_runs(
    small: &[TrajectoryPoint],
    large: &[TrajectoryPoint],
    levels: &[f64],
    classes: usize,
) -> Vec<MatchedPoint> {
    levels
        .iter()
        .filter_map(|&level| {
            let (i, j) = (first_crossing(small, level)?, first_crossing(large, level)?);
            let ratio = match (small[i].lambda_k1, large[j].lambda_k1) {
                (Some(s), Some(l)) if l > 0.0 && s.is_finite() => Some(s / l),
                _ => None,
            };
            Some(MatchedPoint {
                level,
                small: i,
                large: j,
                lambda_ratio: ratio,
                distance: prediction_distance(
                    &small[i].predictions,
                    &large[j].predictions,
                    classes,
                ),
            })
        })
        .collect()
}

/// Minimum median ratio λ_K^1(small η) / λ_K^1(large η) at matched accuracy that counts as
/// "larger" (the same factor as the Fisher-explosion peak rule).
pub const LAMBDA_RATIO_THRESHOLD: f64 = 1.5;

/// Claim: at matched training accuracy the small-η run has the larger λ_K^1 (break-even
/// conjecture, SCIENCE.md §5.1). Supported when the median ratio over the matched levels is at
/// least [`LAMBDA_RATIO_THRESHOLD`]; needs 2 levels with both λ_K^1 measured.
pub fn lambda_ratio_verdict(matched: &[MatchedPoint]) -> Option<Verdict> {
    let ratios: Vec<f64> = matched.iter().filter_map(|m| m.lambda_ratio).collect();
    if ratios.len() < 2 {
        return None;
    }
    let med = median(&ratios)?;
    let supports = med >= LAMBDA_RATIO_THRESHOLD;
    let above = ratios.iter().filter(|&&r| r > 1.0).count();
    Some(Verdict {
        statistic: med,
        supports,
        explanation: format!(
            "median over {} matched training-accuracy levels of λ_K^1(small η) / λ_K^1(large η) = {} ({} {LAMBDA_RATIO_THRESHOLD}); ratio > 1 at {above} of {} levels",
            ratios.len(),
            sig4(med),
            if supports { "≥" } else { "<" },
            ratios.len()
        ),
    })
}

/// Claim: the two trajectories separate as training proceeds. Supported when the distance
/// between their predictions at matched training accuracy rises with the accuracy level:
/// Spearman ρ(level, distance) ≥ 0.5 over at least 3 levels, and the distance at the highest
/// level is at least twice that at the lowest.
pub fn separation_verdict(matched: &[MatchedPoint]) -> Option<Verdict> {
    if matched.len() < 3 {
        return None;
    }
    let levels: Vec<f64> = matched.iter().map(|m| m.level).collect();
    let dist: Vec<f64> = matched.iter().map(|m| m.distance).collect();
    let rho = spearman(&levels, &dist)?;
    let (first, last) = (dist[0], dist[dist.len() - 1]);
    let growth = if first > 0.0 {
        last / first
    } else {
        f64::INFINITY
    };
    let supports = rho >= 0.5 && growth >= 2.0;
    Some(Verdict {
        statistic: rho,
        supports,
        explanation: format!(
            "Spearman ρ(accuracy level, prediction distance) over {} levels = {rho:.3} ({} 0.5); distance at {:.0}% / at {:.0}% = {} / {} = {} ({} 2)",
            matched.len(),
            if rho >= 0.5 { "≥" } else { "<" },
            100.0 * levels[levels.len() - 1],
            100.0 * levels[0],
            sig4(last),
            sig4(first),
            sig4(growth),
            if growth >= 2.0 { "≥" } else { "<" }
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pt(acc: f64, lambda: f64, pred: [f64; 2]) -> TrajectoryPoint {
        TrajectoryPoint {
            step: 0,
            epoch: 0.0,
            train_acc: acc,
            lambda_k1: Some(lambda),
            predictions: pred.to_vec(),
        }
    }

    #[test]
    fn softmax_is_shift_invariant_and_normalized() {
        let p = softmax(&[1000.0, 1000.0 + 2f64.ln()]);
        assert!((p[0] - 1.0 / 3.0).abs() < 1e-12 && (p[1] - 2.0 / 3.0).abs() < 1e-12);
    }

    #[test]
    fn levels_are_those_both_runs_reach_and_crossings_are_first_ones() {
        let a = vec![
            pt(0.1, 1.0, [0.0; 2]),
            pt(0.5, 1.0, [0.0; 2]),
            pt(0.3, 1.0, [0.0; 2]),
            pt(0.7, 1.0, [0.0; 2]),
        ];
        let b = vec![pt(0.1, 1.0, [0.0; 2]), pt(0.65, 1.0, [0.0; 2])];
        let levels = matched_levels(&a, &b, 0.2, 0.05);
        assert_eq!(levels.len(), 10, "{levels:?}");
        assert!((levels[9] - 0.65).abs() < 1e-12);
        assert_eq!(first_crossing(&a, 0.4), Some(1));
        assert_eq!(first_crossing(&a, 0.6), Some(3));
        assert_eq!(first_crossing(&b, 0.66), None);
    }

    #[test]
    fn larger_lambda_for_the_small_rate_supports_the_claim_and_equal_does_not() {
        // Small-η run: λ_K^1 = 4 at every level; large-η run: 1 → ratio 4 ≥ 1.5.
        let small = vec![
            pt(0.1, 1.0, [0.0; 2]),
            pt(0.3, 4.0, [0.0; 2]),
            pt(0.5, 4.0, [0.0; 2]),
        ];
        let large = vec![
            pt(0.1, 1.0, [0.0; 2]),
            pt(0.35, 1.0, [0.0; 2]),
            pt(0.6, 1.0, [0.0; 2]),
        ];
        let m = match_runs(&small, &large, &matched_levels(&small, &large, 0.2, 0.1), 2);
        assert_eq!(m.len(), 4, "levels 0.2, 0.3, 0.4, 0.5");
        let v = lambda_ratio_verdict(&m).unwrap();
        assert!(v.supports && (v.statistic - 4.0).abs() < 1e-12, "{v:?}");
        let m = match_runs(&large, &large, &[0.2, 0.3], 2);
        assert!(!lambda_ratio_verdict(&m).unwrap().supports);
        assert!(
            lambda_ratio_verdict(&m[..1]).is_none(),
            "one level decides nothing"
        );
    }

    #[test]
    fn separation_needs_a_growing_distance() {
        // Predictions move apart linearly with accuracy in one run and stay put in the other.
        let apart: Vec<_> = (1..=6)
            .map(|k| pt(0.1 * k as f64, 1.0, [0.1 * k as f64, 0.0]))
            .collect();
        let still: Vec<_> = (1..=6)
            .map(|k| pt(0.1 * k as f64, 1.0, [0.0, 0.0]))
            .collect();
        let levels = matched_levels(&apart, &still, 0.2, 0.1);
        let m = match_runs(&apart, &still, &levels, 2);
        let v = separation_verdict(&m).unwrap();
        assert!(v.supports && (v.statistic - 1.0).abs() < 1e-12, "{v:?}");
        // Two identical runs never separate (distance 0 throughout: no correlation).
        let m = match_runs(&apart, &apart, &levels, 2);
        assert!(separation_verdict(&m).is_none_or(|v| !v.supports));
        assert!(separation_verdict(&m[..2]).is_none());
        // Distance of one example with classes (1, 0) vs (0, 1): √2.
        assert!((prediction_distance(&[1.0, 0.0], &[0.0, 1.0], 2) - 2f64.sqrt()).abs() < 1e-15);
    }

    #[test]
    fn experiment_profiles_expand_into_two_runs_with_a_checkpoint_at_every_log_point() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../experiments/early-phase.toml");
        let exp = crate::sweep::Experiment::load(&path).unwrap();
        let dir = std::env::temp_dir();
        for name in ["smoke", "cpu", "paper"] {
            let row = exp.rows_in(name)[0];
            let specs = exp.expand_row(name, row, &dir).unwrap();
            let mut lrs: Vec<f64> = specs.iter().map(|s| s.config.optim.lr).collect();
            lrs.sort_by(f64::total_cmp);
            assert_eq!(lrs, vec![0.01, 0.1], "{name}");
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
