//! The memorization claim (SCIENCE.md §5.3): with noisy labels, the Fisher penalty slows the
//! learning of the noisy examples more than that of the clean ones. Judged at a matched point:
//! a penalized run and its baseline are read where their clean training accuracy first reaches
//! the same level, and the noisy examples each has fitted by then are compared.

use crate::claims::{sig4, Verdict};
use crate::metrics::MetricsRecord;

/// A penalty "slows memorization" when its memorization ratio at the matched point is at most
/// this fraction of the baseline's [ours].
pub const RATIO_THRESHOLD: f64 = 0.8;
/// The matched clean accuracy must exceed every run's initial clean accuracy by this much, or
/// the runs learned too little to compare [ours].
pub const MIN_LEARNED: f64 = 0.05;

/// One logged point: (epoch, clean accuracy, noisy accuracy against the trained labels), in [0, 1].
pub type FitPoint = (f64, f64, f64);

/// The fit curve of a run from its metrics (records without clean/noisy accuracy are skipped).
pub fn fit_curve(records: &[MetricsRecord]) -> Vec<FitPoint> {
    records
        .iter()
        .filter_map(|r| Some((r.epoch, r.train_acc_clean?, r.train_acc_noisy?)))
        .collect()
}

/// The matched clean accuracy of runs (a penalized run and its baseline): the smallest of their
/// best clean accuracies,
/// so every run reaches it. `None` when a run has no points or the level is not
/// [`MIN_LEARNED`] above every run's first logged clean accuracy.
pub fn matched_clean_level(curves: &[&[FitPoint]]) -> Option<f64> {
    let mut level = f64::INFINITY;
    let mut start = f64::NEG_INFINITY;
    for c in curves {
        let best = c.iter().map(|p| p.1).fold(f64::NEG_INFINITY, f64::max);
        level = level.min(best);
        start = start.max(c.first()?.1);
    }
    (level.is_finite() && level >= start + MIN_LEARNED).then_some(level)
}

/// A run read where its clean accuracy first reaches the matched level, with its first logged
/// point (the initialization, shared by all runs of a seed).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MatchedFit {
    pub epoch: f64,
    pub clean: f64,
    pub noisy: f64,
    pub clean0: f64,
    pub noisy0: f64,
}

impl MatchedFit {
    /// The memorization ratio R: noisy accuracy (against the wrong labels) gained since the
    /// first log point per clean accuracy gained. Gains, not levels, so that the chance-level
    /// agreement of an untrained net (about 1/C on both sides) does not count as fitting.
    /// `None` when no clean accuracy was gained.
    pub fn ratio(&self) -> Option<f64> {
        let dc = self.clean - self.clean0;
        (dc > 0.0).then(|| (self.noisy - self.noisy0) / dc)
    }
}

/// Where `curve` first reaches clean accuracy `level`, the noisy accuracy there linearly
/// interpolated between the two logged points around the crossing.
pub fn noisy_fit_at(curve: &[FitPoint], level: f64) -> Option<MatchedFit> {
    let first = *curve.first()?;
    let at = |epoch, clean, noisy| MatchedFit {
        epoch,
        clean,
        noisy,
        clean0: first.1,
        noisy0: first.2,
    };
    if first.1 >= level {
        return Some(at(first.0, first.1, first.2));
    }
    curve.windows(2).find_map(|w| {
        let (a, b) = (w[0], w[1]);
        (a.1 < level && b.1 >= level).then(|| {
            let t = (level - a.1) / (b.1 - a.1);
            at(a.0 + t * (b.0 - a.0), level, a.2 + t * (b.2 - a.2))
        })
    })
}

/// Claim: the penalty slows the learning of noisy examples more than that of clean ones.
/// Supported when R_penalty ≤ [`RATIO_THRESHOLD`] · R_baseline at the matched level (see
/// [`MatchedFit::ratio`]). `None` when the baseline gained no noisy fit by then (nothing to
/// slow down) or a ratio is undefined.
pub fn memorization_verdict(baseline: &MatchedFit, penalty: &MatchedFit) -> Option<Verdict> {
    let (r_base, r_pen) = (baseline.ratio()?, penalty.ratio()?);
    if !(r_base > 0.0 && r_pen.is_finite()) {
        return None;
    }
    let ratio = r_pen / r_base;
    let supports = ratio <= RATIO_THRESHOLD;
    Some(Verdict {
        statistic: ratio,
        supports,
        explanation: format!(
            "at clean training accuracy {:.1}%, noisy-fit gain / clean-fit gain = {} with the \
             penalty vs {} without: ratio {ratio:.3} ({} {RATIO_THRESHOLD})",
            100.0 * penalty.clean,
            sig4(r_pen),
            sig4(r_base),
            if supports { "≤" } else { ">" }
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matched_level_is_the_lowest_best_clean_accuracy() {
        let a = [(0.0, 0.1, 0.1), (1.0, 0.6, 0.2), (2.0, 0.9, 0.5)];
        let b = [(0.0, 0.12, 0.1), (1.0, 0.5, 0.1), (2.0, 0.7, 0.15)];
        assert_eq!(matched_clean_level(&[&a, &b]), Some(0.7));
        // Neither learned: no level.
        let flat = [(0.0, 0.1, 0.1), (1.0, 0.12, 0.1)];
        assert_eq!(matched_clean_level(&[&a, &flat]), None);
        assert_eq!(matched_clean_level(&[&a, &[]]), None);
    }

    #[test]
    fn noisy_fit_is_interpolated_at_the_first_crossing() {
        let c = [
            (0.0, 0.1, 0.0),
            (1.0, 0.5, 0.1),
            (2.0, 0.9, 0.3),
            (3.0, 0.4, 0.9),
        ];
        let m = noisy_fit_at(&c, 0.7).unwrap();
        assert!(
            (m.epoch - 1.5).abs() < 1e-12 && (m.noisy - 0.2).abs() < 1e-12,
            "{m:?}"
        );
        assert_eq!((m.clean, m.clean0, m.noisy0), (0.7, 0.1, 0.0));
        // Gains: 0.2 noisy per 0.6 clean.
        assert!((m.ratio().unwrap() - 0.2 / 0.6).abs() < 1e-12);
        let start = noisy_fit_at(&c, 0.05).unwrap();
        assert_eq!((start.epoch, start.ratio()), (0.0, None));
        assert!(noisy_fit_at(&c, 0.95).is_none());
    }

    fn fit(noisy: f64) -> MatchedFit {
        MatchedFit {
            epoch: 1.0,
            clean: 0.6,
            noisy,
            clean0: 0.1,
            noisy0: 0.1,
        }
    }

    #[test]
    fn verdict_needs_a_clearly_lower_memorization_ratio() {
        // Baseline gained 0.2 noisy per 0.5 clean (R = 0.4); the penalty 0.1 (R = 0.2).
        let v = memorization_verdict(&fit(0.3), &fit(0.2)).unwrap();
        assert!(v.supports && (v.statistic - 0.5).abs() < 1e-12, "{v:?}");
        let v = memorization_verdict(&fit(0.3), &fit(0.28)).unwrap();
        assert!(!v.supports && (v.statistic - 0.9).abs() < 1e-12, "{v:?}");
        assert!(v.explanation.contains("60.0%"), "{}", v.explanation);
        // A baseline that gained no noisy fit leaves nothing to slow down.
        assert!(memorization_verdict(&fit(0.1), &fit(0.2)).is_none());
        assert!(memorization_verdict(&fit(0.3), &fit(f64::NAN)).is_none());
    }

    #[test]
    fn curve_skips_records_without_noise_tracking() {
        let records = vec![
            MetricsRecord {
                epoch: 0.5,
                train_acc_clean: Some(0.3),
                train_acc_noisy: Some(0.1),
                ..Default::default()
            },
            MetricsRecord::default(),
        ];
        assert_eq!(fit_curve(&records), vec![(0.5, 0.3, 0.1)]);
    }
}
