//! Trajectories compared at matched training accuracy (the break-even paper's protocol,
//! SCIENCE.md §5.1): where a run first reaches an accuracy level, a metric's value there,
//! its maximum up to there, and where a curve first crosses a bound (λ_H^1 against 2/η).
//!
//! A trajectory is a list of logged points in step order. Accuracy is not monotone along
//! SGD, so "at accuracy a" always means "the FIRST time the run reaches a": between the last
//! point below a and the first at or above it, every quantity is interpolated linearly in
//! accuracy. Runs that never reach a level give `None`, never a guess.

/// One logged point: training accuracy (fraction in [0, 1]) and the metric's value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AccPoint {
    pub acc: f64,
    pub value: f64,
}

/// Index of the first point whose accuracy is at least `level`.
fn first_reach(points: &[AccPoint], level: f64) -> Option<usize> {
    points.iter().position(|p| p.acc >= level)
}

/// The metric's value where the run first reaches accuracy `level`: linear interpolation in
/// accuracy between the last point below `level` and the first at or above it (the first
/// point's value when the run starts at or above it). `None` when the run never reaches
/// `level` or a bracketing value is not finite (a diverged run).
pub fn value_at_accuracy(points: &[AccPoint], level: f64) -> Option<f64> {
    let i = first_reach(points, level)?;
    let hi = points[i];
    let v = if i == 0 {
        hi.value
    } else {
        let lo = points[i - 1];
        // lo.acc < level <= hi.acc, so the denominator is positive.
        let t = (level - lo.acc) / (hi.acc - lo.acc);
        lo.value + t * (hi.value - lo.value)
    };
    v.is_finite().then_some(v)
}

/// The largest logged value from the start up to and including the first point at or above
/// accuracy `level` (the trajectory's maximum "before a"); `None` when `level` is never
/// reached or a value on the way is not finite.
pub fn max_until_accuracy(points: &[AccPoint], level: f64) -> Option<f64> {
    let i = first_reach(points, level)?;
    let head = &points[..=i];
    if head.iter().any(|p| !p.value.is_finite()) {
        return None;
    }
    head.iter().map(|p| p.value).reduce(f64::max)
}

/// Accuracy levels every run of a group can be compared at: the multiples of `step` strictly
/// above every run's starting accuracy (so that each level is reached by training, not at
/// initialization) and at most the smallest of the runs' best accuracies. Empty when the runs
/// share no such level, `step` is not positive, or a run has no points.
pub fn matched_levels(runs: &[&[AccPoint]], step: f64) -> Vec<f64> {
    if runs.is_empty() || runs.iter().any(|r| r.is_empty()) || step.is_nan() || step <= 0.0 {
        return vec![];
    }
    let start = runs
        .iter()
        .map(|r| r[0].acc)
        .fold(f64::NEG_INFINITY, f64::max);
    let reached = runs
        .iter()
        .map(|r| r.iter().map(|p| p.acc).fold(f64::NEG_INFINITY, f64::max))
        .fold(f64::INFINITY, f64::min);
    // Round the multiples so 0.1 + 0.05 style sums do not drop a level by 1 ulp.
    let first = (start / step + 1e-9).floor() as i64 + 1;
    (first..)
        .map(|k| (k as f64 * step * 1e9).round() / 1e9)
        .take_while(|&a| a <= reached + 1e-12)
        .collect()
}

/// Where a curve of (x, y) points first reaches `bound` (y ≥ bound): x interpolated linearly
/// between the last point below and the first at or above; the first x when the curve starts
/// at or above. `None` when it never does. Used for λ_H^1 against the stability bound 2/η.
pub fn first_crossing(points: &[(f64, f64)], bound: f64) -> Option<f64> {
    let i = points.iter().position(|p| p.1 >= bound)?;
    if i == 0 {
        return Some(points[0].0);
    }
    let (lo, hi) = (points[i - 1], points[i]);
    let t = (bound - lo.1) / (hi.1 - lo.1);
    Some(lo.0 + t * (hi.0 - lo.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn traj(pts: &[(f64, f64)]) -> Vec<AccPoint> {
        pts.iter()
            .map(|&(acc, value)| AccPoint { acc, value })
            .collect()
    }

    #[test]
    fn value_at_accuracy_interpolates_at_the_first_reach() {
        // Accuracy 0.1 → 0.3 → 0.2 → 0.5; value 1 → 3 → 100 → 5.
        let t = traj(&[(0.1, 1.0), (0.3, 3.0), (0.2, 100.0), (0.5, 5.0)]);
        // 0.2 is first reached between points 0 and 1: halfway, value 2 (not the later 100).
        assert!((value_at_accuracy(&t, 0.2).unwrap() - 2.0).abs() < 1e-12);
        // 0.4 is first reached between points 2 (0.2) and 3 (0.5): a third of the way.
        let v = value_at_accuracy(&t, 0.4).unwrap();
        assert!(
            (v - (100.0 + (0.2 / 0.3) * (5.0 - 100.0))).abs() < 1e-9,
            "{v}"
        );
        // Exactly on a point, at the start, and never reached.
        assert_eq!(value_at_accuracy(&t, 0.3), Some(3.0));
        assert_eq!(value_at_accuracy(&t, 0.05), Some(1.0));
        assert_eq!(value_at_accuracy(&t, 0.6), None);
        // A diverged value at the bracket gives no number.
        let nan = traj(&[(0.1, 1.0), (0.3, f64::NAN)]);
        assert_eq!(value_at_accuracy(&nan, 0.2), None);
    }

    #[test]
    fn max_until_accuracy_stops_at_the_first_reach() {
        let t = traj(&[(0.1, 4.0), (0.25, 9.0), (0.3, 2.0), (0.6, 50.0)]);
        assert_eq!(max_until_accuracy(&t, 0.2), Some(9.0));
        assert_eq!(max_until_accuracy(&t, 0.05), Some(4.0));
        assert_eq!(max_until_accuracy(&t, 0.6), Some(50.0));
        assert_eq!(max_until_accuracy(&t, 0.7), None);
        let nan = traj(&[(0.1, f64::NAN), (0.3, 1.0)]);
        assert_eq!(max_until_accuracy(&nan, 0.3), None);
    }

    #[test]
    fn matched_levels_lie_above_every_start_and_within_every_reach() {
        let a = traj(&[(0.10, 0.0), (0.42, 0.0), (0.37, 0.0)]);
        let b = traj(&[(0.12, 0.0), (0.56, 0.0)]);
        // Above max start 0.12, up to min best 0.42, in steps of 0.05.
        assert_eq!(
            matched_levels(&[&a, &b], 0.05),
            vec![0.15, 0.2, 0.25, 0.3, 0.35, 0.4]
        );
        // A start exactly on a multiple excludes that level.
        let c = traj(&[(0.15, 0.0), (0.30, 0.0)]);
        assert_eq!(matched_levels(&[&c], 0.05), vec![0.2, 0.25, 0.3]);
        // No common level, no runs, an empty run or a bad step: nothing.
        let d = traj(&[(0.10, 0.0), (0.13, 0.0)]);
        assert!(matched_levels(&[&a, &d], 0.05).is_empty());
        assert!(matched_levels(&[], 0.05).is_empty());
        assert!(matched_levels(&[&a, &[]], 0.05).is_empty());
        assert!(matched_levels(&[&a], 0.0).is_empty());
    }

    #[test]
    fn first_crossing_interpolates_and_reports_a_start_above() {
        // 2/η = 20: crossed between x = 10 (y = 10) and x = 20 (y = 30), at x = 15.
        let pts = [
            (0.0, 2.0),
            (10.0, 10.0),
            (20.0, 30.0),
            (30.0, 10.0),
            (40.0, 40.0),
        ];
        assert_eq!(first_crossing(&pts, 20.0), Some(15.0));
        assert_eq!(first_crossing(&pts, 30.0), Some(20.0));
        assert_eq!(first_crossing(&pts, 1.0), Some(0.0));
        assert_eq!(first_crossing(&pts, 41.0), None);
        assert_eq!(first_crossing(&[], 1.0), None);
    }
}
