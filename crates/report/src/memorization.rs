//! The memorization claim (SCIENCE.md §5.3): with noisy labels, the Fisher penalty slows the
//! learning of the noisy examples more than that of the clean ones. Judged at a matched point:
//! the baseline's and the penalty's runs are read where their clean training accuracy first
//! reaches one common level, and their memorization ratios are compared over seeds.

use breakeven_runner::metrics::MetricsRecord;

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

/// The claim over seeds: every baseline and penalized run is read at one common matched clean
/// level (the lowest of all their best clean accuracies), each gives its memorization ratio R,
/// and [`crate::evidence::greater`] decides "R_baseline > R_penalty" over the seeds (runs of a
/// fixed number of epochs: no convergence criterion applies).
#[derive(Debug, Clone, PartialEq)]
pub struct MemorizationEvidence {
    pub level: f64,
    pub baseline_ratios: Vec<f64>,
    pub penalty_ratios: Vec<f64>,
    pub evidence: crate::evidence::Evidence,
}

/// See [`MemorizationEvidence`]; `None` when the runs learned too little for a matched level or
/// a side has no run with a defined ratio.
pub fn memorization_evidence(
    baseline: &[&[FitPoint]],
    penalty: &[&[FitPoint]],
    seed: u64,
) -> Option<MemorizationEvidence> {
    let all: Vec<&[FitPoint]> = baseline.iter().chain(penalty).copied().collect();
    let level = matched_clean_level(&all)?;
    let ratios = |curves: &[&[FitPoint]]| -> Vec<f64> {
        curves
            .iter()
            .filter_map(|c| noisy_fit_at(c, level)?.ratio())
            .filter(|r| r.is_finite())
            .collect()
    };
    let (b, p) = (ratios(baseline), ratios(penalty));
    let evidence = crate::evidence::greater(&b, &p, true, seed)?;
    Some(MemorizationEvidence {
        level,
        baseline_ratios: b,
        penalty_ratios: p,
        evidence,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::evidence::Word;

    /// A run that fits clean examples linearly to 90% and noisy ones at `speed` per clean point.
    fn run(speed: f64) -> Vec<FitPoint> {
        (0..=10)
            .map(|e| {
                let clean = 0.1 + 0.08 * e as f64;
                (e as f64, clean, 0.1 + speed * (clean - 0.1))
            })
            .collect()
    }

    fn refs(v: &[Vec<FitPoint>]) -> Vec<&[FitPoint]> {
        v.iter().map(Vec::as_slice).collect()
    }

    #[test]
    fn evidence_over_seeds_supports_a_slower_noisy_fit_and_not_an_equal_one() {
        let base: Vec<Vec<FitPoint>> = [0.50, 0.52, 0.48].map(run).to_vec();
        let slow: Vec<Vec<FitPoint>> = [0.20, 0.25, 0.22].map(run).to_vec();
        let same: Vec<Vec<FitPoint>> = [0.51, 0.47, 0.53].map(run).to_vec();
        let e = memorization_evidence(&refs(&base), &refs(&slow), 0).unwrap();
        assert_eq!(e.evidence.word, Word::Supports, "{e:?}");
        assert_eq!(e.penalty_ratios.len(), 3);
        assert!((e.penalty_ratios[0] - 0.2).abs() < 1e-9);
        let e = memorization_evidence(&refs(&base), &refs(&same), 0).unwrap();
        assert_ne!(e.evidence.word, Word::Supports, "{e:?}");
        // One penalized seed cannot decide.
        let e = memorization_evidence(&refs(&base), &refs(&slow[..1]), 0).unwrap();
        assert_eq!(e.evidence.word, Word::Undecided);
    }

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
