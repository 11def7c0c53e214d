//! The early-phase rules (SCIENCE.md §5.6; Jastrzebski et al. ICLR 2020): two trajectories of
//! checkpoints (embedded by `breakeven_runner::early_phase`) compared at matched training
//! accuracy, and the verdicts on whether the small-η run has the larger λ_K^1 and whether the
//! two trajectories separate.

use breakeven_runner::early_phase::TrajectoryPoint;

use crate::claims::{median, sig4, spearman, Verdict};

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
}
