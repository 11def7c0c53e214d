//! The early-phase rules (SCIENCE.md §5.6; Jastrzebski et al. ICLR 2020): two trajectories of
//! checkpoints (embedded by `breakeven_runner::early_phase`) compared at matched training
//! accuracy, and the verdicts on whether the small-η run has the larger λ_K^1 and whether the
//! two trajectories separate.

use breakeven_runner::early_phase::TrajectoryPoint;

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

/// The highest level `start + k·step` that every run in `runs` reaches (its training accuracy
/// at some checkpoint is at or above it): the one level the verdicts read, so that each run is
/// one observation. `None` when some run never reaches `start`.
pub fn top_common_level(runs: &[&[TrajectoryPoint]], start: f64, step: f64) -> Option<f64> {
    let reached = runs
        .iter()
        .map(|t| {
            t.iter()
                .map(|p| p.train_acc)
                .fold(f64::NEG_INFINITY, f64::max)
        })
        .fold(f64::INFINITY, f64::min);
    if runs.is_empty() || step.is_nan() || step <= 0.0 || reached + 1e-9 < start {
        return None;
    }
    // A hair of tolerance: 0.2 + 9 × 0.05 must count as 0.65.
    let k = ((reached - start) / step + 1e-9).floor();
    Some(start + step * k)
}

/// The first checkpoint of `points` at or above `level`.
pub fn at_level(points: &[TrajectoryPoint], level: f64) -> Option<&TrajectoryPoint> {
    first_crossing(points, level).map(|i| &points[i])
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
    fn the_verdict_level_is_the_highest_every_run_reaches() {
        let up = |top: f64| -> Vec<TrajectoryPoint> {
            (0..=10)
                .map(|k| pt(0.1 + (top - 0.1) * k as f64 / 10.0, 1.0, [0.0; 2]))
                .collect()
        };
        let (a, b) = (up(0.7), up(0.57));
        let level = top_common_level(&[&a, &b], 0.2, 0.05).unwrap();
        assert!((level - 0.55).abs() < 1e-12, "{level}");
        let level = top_common_level(&[&a, &up(0.65)], 0.2, 0.05).unwrap();
        assert!((level - 0.65).abs() < 1e-12, "{level}");
        assert_eq!(top_common_level(&[&a, &up(0.15)], 0.2, 0.05), None);
        assert_eq!(at_level(&a, 0.4).map(|p| p.train_acc), Some(a[5].train_acc));
        // Distance of one example with classes (1, 0) vs (0, 1): √2.
        assert!((prediction_distance(&[1.0, 0.0], &[0.0, 1.0], 2) - 2f64.sqrt()).abs() < 1e-15);
        let m = match_runs(&a, &b, &[0.3, 0.9], 2);
        assert_eq!(m.len(), 1, "0.9 is not reached");
    }
}
