//! Verdicts over seeds: an exact one-sided permutation test decides, a percentile bootstrap over
//! seeds shows the uncertainty, and the rule that turns them into a word is printed with them
//! (`docs/TESTING.md`, "Evidence for a scientific claim").
//!
//! Seeds are the unit of replication: each group holds one number per seed (a run's final test
//! accuracy), never several readings of the same run. With 3 seeds against 3 the smallest
//! one-sided permutation p-value is 1/20 = 0.05, reached only when every seed of one group beats
//! every seed of the other; so the rule "supports when p ≤ 0.05" says *supports* for exactly 5% of
//! null draws of continuous data, and never with fewer seeds. A percentile bootstrap over 3 seeds
//! is too narrow to decide on (its variance is (n−1)/n of the truth), which is why it only shows
//! the spread and decides only the *does not support* side.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// The significance level of every rule here (one-sided).
pub const ALPHA: f64 = 0.05;
/// Central coverage of the bootstrap intervals shown beside a verdict.
pub const INTERVAL_LEVEL: f64 = 0.95;
/// Bootstrap resamples per interval.
pub const RESAMPLES: usize = 10_000;
/// Seeds a side below which every rule says *undecided*: fewer cannot reach p ≤ `ALPHA`, and a
/// bootstrap over one or two values has no spread to speak of.
pub const MIN_SEEDS: usize = 3;

/// A word for a claim, computed from the seeds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Word {
    Supports,
    DoesNotSupport,
    Undecided,
}

impl Word {
    pub fn as_str(self) -> &'static str {
        match self {
            Word::Supports => "supports",
            Word::DoesNotSupport => "does not support",
            Word::Undecided => "undecided",
        }
    }
}

/// A claim's verdict: the estimate, its bootstrap interval, the test's p-value, the word and the
/// reason for it.
#[derive(Debug, Clone, PartialEq)]
pub struct Evidence {
    pub estimate: f64,
    pub interval: Option<(f64, f64)>,
    pub p_value: Option<f64>,
    pub word: Word,
    pub reason: String,
}

fn mean(xs: &[f64]) -> f64 {
    xs.iter().sum::<f64>() / xs.len() as f64
}

/// Exact one-sided permutation p-value of "`a` is larger than `b`" for the difference of means:
/// the share of all ways to split the pooled values into groups of `a`'s and `b`'s sizes whose
/// difference is at least the observed one (ties count against the claim). `None` when a group
/// is empty or the pool is too large to enumerate (over 20 values).
pub fn permutation_p_greater(a: &[f64], b: &[f64]) -> Option<f64> {
    let (n, m) = (a.len(), b.len());
    if n == 0 || m == 0 || n + m > 20 {
        return None;
    }
    let pool: Vec<f64> = a.iter().chain(b).copied().collect();
    let total: f64 = pool.iter().sum();
    let observed = mean(a) - mean(b);
    // A relative slack so that a split equal to the observed one in exact arithmetic counts.
    let slack = 1e-12 * (1.0 + pool.iter().map(|x| x.abs()).fold(0.0, f64::max));
    let (mut at_least, mut splits) = (0u64, 0u64);
    for mask in 0u32..(1 << (n + m)) {
        if mask.count_ones() as usize != n {
            continue;
        }
        let sum_a: f64 = (0..n + m)
            .filter(|i| mask & (1 << i) != 0)
            .map(|i| pool[i])
            .sum();
        let diff = sum_a / n as f64 - (total - sum_a) / m as f64;
        splits += 1;
        if diff >= observed - slack {
            at_least += 1;
        }
    }
    Some(at_least as f64 / splits as f64)
}

/// Percentile bootstrap interval of `stat(group means)`, resampling the seeds of each group
/// independently with replacement (`RESAMPLES` draws from a generator seeded with `seed`).
/// Resamples where `stat` is undefined are dropped; `None` if a group is empty or most are.
pub fn bootstrap_interval(
    groups: &[&[f64]],
    stat: impl Fn(&[f64]) -> Option<f64>,
    seed: u64,
) -> Option<(f64, f64)> {
    if groups.iter().any(|g| g.is_empty()) {
        return None;
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut means = vec![0.0; groups.len()];
    let mut draws = Vec::with_capacity(RESAMPLES);
    for _ in 0..RESAMPLES {
        for (m, g) in means.iter_mut().zip(groups) {
            *m = (0..g.len())
                .map(|_| g[rng.random_range(0..g.len())])
                .sum::<f64>()
                / g.len() as f64;
        }
        if let Some(v) = stat(&means).filter(|v| v.is_finite()) {
            draws.push(v);
        }
    }
    if draws.len() < RESAMPLES / 2 {
        return None;
    }
    Some(percentile_interval(draws))
}

/// The central [`INTERVAL_LEVEL`] percentile interval of bootstrap `draws` (not empty).
fn percentile_interval(mut draws: Vec<f64>) -> (f64, f64) {
    draws.sort_by(f64::total_cmp);
    let tail = (1.0 - INTERVAL_LEVEL) / 2.0;
    let at = |q: f64| draws[((q * (draws.len() - 1) as f64).round() as usize).min(draws.len() - 1)];
    (at(tail), at(1.0 - tail))
}

/// The word every rule here gives, in this order: *undecided* when a compared run did not
/// converge or `too_few` names a shortage of seeds; *supports* when the test `supported` the
/// claim; *does not support* when the whole `interval` lies at or below 0; else *undecided*.
fn decide(
    converged: bool,
    too_few: Option<String>,
    supported: bool,
    interval: Option<(f64, f64)>,
) -> (Word, String) {
    if !converged {
        (
            Word::Undecided,
            "a run did not reach the stopping criterion".to_string(),
        )
    } else if let Some(reason) = too_few {
        (Word::Undecided, reason)
    } else if supported {
        (Word::Supports, format!("p ≤ {ALPHA}"))
    } else if interval.is_some_and(|(_, hi)| hi <= 0.0) {
        (
            Word::DoesNotSupport,
            "the whole interval is at or below 0".to_string(),
        )
    } else {
        (
            Word::Undecided,
            format!("p > {ALPHA} and the interval reaches above 0"),
        )
    }
}

/// The rule for "`a` is larger than `b`" over seeds (e.g. η* beats the Baseline):
/// - *undecided* whenever a run did not converge (`converged` false: runs are compared at
///   convergence only) or a side has fewer than [`MIN_SEEDS`] seeds;
/// - *supports* when the exact one-sided permutation p ≤ `ALPHA`;
/// - *does not support* when the whole bootstrap interval of mean(a) − mean(b) lies at or below
///   0 (the data point the other way);
/// - *undecided* otherwise.
pub fn greater(a: &[f64], b: &[f64], converged: bool, seed: u64) -> Option<Evidence> {
    if a.is_empty() || b.is_empty() {
        return None;
    }
    let estimate = mean(a) - mean(b);
    let interval = bootstrap_interval(&[a, b], |m| Some(m[0] - m[1]), seed);
    let p_value = permutation_p_greater(a, b);
    let too_few = (a.len().min(b.len()) < MIN_SEEDS).then(|| {
        format!(
            "{} vs {} seeds: at least {MIN_SEEDS} a side are needed",
            a.len(),
            b.len()
        )
    });
    let supported = p_value.is_some_and(|p| p <= ALPHA) && estimate > 0.0;
    let (word, reason) = decide(converged, too_few, supported, interval);
    Some(Evidence {
        estimate,
        interval,
        p_value,
        word,
        reason,
    })
}

/// The rule for "the penalty recovers the gap" (seeds of η*, the Baseline and the penalty):
/// *supports* when the gap itself is supported and the penalty beats the Baseline by
/// [`greater`]; *does not support* when the gap is supported and the penalty's
/// [`greater`] says *does not support*; *undecided* otherwise. The estimate is the recovered
/// share (penalty − Baseline) / (η* − Baseline), with its bootstrap interval.
pub fn recovers(
    large: &[f64],
    base: &[f64],
    pen: &[f64],
    converged: bool,
    seed: u64,
) -> Option<Evidence> {
    let gap = greater(large, base, converged, seed)?;
    let beats = greater(pen, base, converged, seed.wrapping_add(1))?;
    let share = |m: &[f64]| {
        let g = m[0] - m[1];
        (g.abs() > 1e-12).then(|| (m[2] - m[1]) / g)
    };
    let estimate = share(&[mean(large), mean(base), mean(pen)]).unwrap_or(f64::NAN);
    let interval = bootstrap_interval(&[large, base, pen], share, seed.wrapping_add(2));
    let (word, reason) = match (gap.word, beats.word) {
        (Word::Supports, Word::Supports) => (
            Word::Supports,
            format!(
                "the gap is supported and the penalty beats the Baseline (p = {:.3})",
                beats.p_value.unwrap_or(f64::NAN)
            ),
        ),
        (Word::Supports, Word::DoesNotSupport) => (
            Word::DoesNotSupport,
            "the penalty's interval against the Baseline is at or below 0".to_string(),
        ),
        (Word::Supports, _) => (
            Word::Undecided,
            format!("penalty vs Baseline: {}", beats.reason),
        ),
        _ => (
            Word::Undecided,
            format!("no supported gap ({})", gap.reason),
        ),
    };
    Some(Evidence {
        estimate,
        interval,
        p_value: beats.p_value,
        word,
        reason,
    })
}

/// Permutations drawn by [`trend`]'s Monte Carlo permutation test.
pub const PERMUTATIONS: usize = 9_999;

/// Runs of a trend claim that share one seed and every setting but the varied one: (x, y) per
/// run, e.g. x = η and y = the maximum λ_H^1 of the runs of batch size 128 and seed 0.
#[derive(Debug, Clone, PartialEq)]
pub struct Stratum {
    /// What the runs share, for the page (e.g. `S = 128, seed 0`).
    pub name: String,
    /// The seed of the stratum's runs: the unit the interval resamples.
    pub seed: u64,
    pub points: Vec<(f64, f64)>,
}

/// A stratum as centred ranks: Spearman's ρ of any ordering of `y` against `x` is
/// `Σ x_i y_i / norm` (0 when either side is constant).
struct RankedStratum {
    x: Vec<f64>,
    y: Vec<f64>,
    norm: f64,
}

impl RankedStratum {
    fn new(points: &[(f64, f64)]) -> Self {
        let centred = |v: Vec<f64>| {
            let m = mean(&v);
            v.into_iter().map(|r| r - m).collect::<Vec<_>>()
        };
        let x = centred(crate::claims::ranks(
            &points.iter().map(|p| p.0).collect::<Vec<_>>(),
        ));
        let y = centred(crate::claims::ranks(
            &points.iter().map(|p| p.1).collect::<Vec<_>>(),
        ));
        let ss = |v: &[f64]| v.iter().map(|a| a * a).sum::<f64>();
        let norm = (ss(&x) * ss(&y)).sqrt();
        Self { x, y, norm }
    }

    fn rho(&self, y: &[f64]) -> f64 {
        if self.norm <= 0.0 {
            return 0.0;
        }
        self.x.iter().zip(y).map(|(a, b)| a * b).sum::<f64>() / self.norm
    }
}

/// The rule for "y increases with x" (`increasing`) or "y decreases with x", over strata:
/// - the statistic is the mean over strata of Spearman's ρ(x, y), signed so that the claimed
///   direction is positive (a stratum whose y is constant counts 0); strata with fewer than 2
///   distinct x say nothing and are left out;
/// - p is a stratified permutation test: under the null, y does not depend on x within a
///   stratum, so the y of each stratum are shuffled over its x, [`PERMUTATIONS`] times from a
///   generator seeded with `seed`, and p = (1 + #{shuffled ≥ observed}) / (1 + draws), which
///   keeps the level exact for any number of draws;
/// - the interval is a percentile bootstrap of the statistic over seeds (a drawn seed brings all
///   its strata), since seeds, not strata, are the replicates;
/// - the word: *undecided* when a run did not converge or fewer than [`MIN_SEEDS`] seeds are
///   left; *supports* when p ≤ [`ALPHA`]; *does not support* when the whole interval lies at or
///   below 0; *undecided* otherwise.
///
/// `None` when no stratum is left or a value is not finite.
pub fn trend(strata: &[Stratum], increasing: bool, converged: bool, seed: u64) -> Option<Evidence> {
    trend_with(strata, increasing, converged, seed, PERMUTATIONS)
}

fn trend_with(
    strata: &[Stratum],
    increasing: bool,
    converged: bool,
    seed: u64,
    permutations: usize,
) -> Option<Evidence> {
    if strata
        .iter()
        .flat_map(|s| &s.points)
        .any(|p| !p.0.is_finite() || !p.1.is_finite())
    {
        return None;
    }
    let kept: Vec<&Stratum> = strata
        .iter()
        .filter(|s| {
            let mut xs: Vec<f64> = s.points.iter().map(|p| p.0).collect();
            xs.sort_by(f64::total_cmp);
            xs.dedup();
            xs.len() >= 2
        })
        .collect();
    if kept.is_empty() {
        return None;
    }
    let sign = if increasing { 1.0 } else { -1.0 };
    let ranked: Vec<RankedStratum> = kept.iter().map(|s| RankedStratum::new(&s.points)).collect();
    let rhos: Vec<f64> = ranked.iter().map(|r| sign * r.rho(&r.y)).collect();
    let estimate = mean(&rhos);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    // A relative slack so that a shuffle equal to the observed one in exact arithmetic counts.
    let slack = 1e-12;
    let mut at_least = 0usize;
    let mut ys: Vec<Vec<f64>> = ranked.iter().map(|r| r.y.clone()).collect();
    for _ in 0..permutations {
        let mut total = 0.0;
        for (r, y) in ranked.iter().zip(ys.iter_mut()) {
            // Fisher-Yates on the stratum's y ranks.
            for i in (1..y.len()).rev() {
                y.swap(i, rng.random_range(0..=i));
            }
            total += sign * r.rho(y);
        }
        if total / ranked.len() as f64 >= estimate - slack {
            at_least += 1;
        }
    }
    let p_value = (1 + at_least) as f64 / (1 + permutations) as f64;
    // Bootstrap over seeds: each seed's strata travel together.
    let mut seeds: Vec<u64> = kept.iter().map(|s| s.seed).collect();
    seeds.sort_unstable();
    seeds.dedup();
    let by_seed: Vec<Vec<f64>> = seeds
        .iter()
        .map(|&sd| {
            kept.iter()
                .zip(&rhos)
                .filter(|(s, _)| s.seed == sd)
                .map(|(_, &r)| r)
                .collect()
        })
        .collect();
    let mut draws = Vec::with_capacity(RESAMPLES);
    for _ in 0..RESAMPLES {
        let (mut sum, mut n) = (0.0, 0usize);
        for _ in 0..by_seed.len() {
            let g = &by_seed[rng.random_range(0..by_seed.len())];
            sum += g.iter().sum::<f64>();
            n += g.len();
        }
        draws.push(sum / n as f64);
    }
    let interval = Some(percentile_interval(draws));
    let too_few = (seeds.len() < MIN_SEEDS).then(|| {
        format!(
            "{} seed{}: at least {MIN_SEEDS} are needed",
            seeds.len(),
            if seeds.len() == 1 { "" } else { "s" }
        )
    });
    let (word, reason) = decide(converged, too_few, p_value <= ALPHA, interval);
    Some(Evidence {
        estimate,
        interval,
        p_value: Some(p_value),
        word,
        reason,
    })
}

/// How [`trend`] decides, for a page.
pub const TREND_RULE: &str = "per stratum (runs of one seed that differ only in the varied setting) Spearman's ρ between the setting and the statistic, signed so the claimed direction is positive, averaged over strata; p from a stratified permutation test (the statistic shuffled over the setting within each stratum, 9,999 draws, p = (1 + #{shuffled ≥ observed}) / 10,000); a 95% percentile bootstrap over seeds. *Supports* when p ≤ 0.05; *does not support* when the whole interval is at or below 0; *undecided* otherwise, or with fewer than 3 seeds, or when a compared run did not reach its stopping criterion";

#[cfg(test)]
mod tests {
    use super::*;
    use rand_distr::{Distribution, Normal};

    #[test]
    fn permutation_p_values_are_exact() {
        // Full separation of 3 vs 3: 1 split of 20 is as extreme.
        assert_eq!(
            permutation_p_greater(&[4.0, 5.0, 6.0], &[1.0, 2.0, 3.0]),
            Some(0.05)
        );
        // The reverse: every split is at least as extreme.
        assert_eq!(
            permutation_p_greater(&[1.0, 2.0, 3.0], &[4.0, 5.0, 6.0]),
            Some(1.0)
        );
        // 3 vs 1: 4 splits, the best is 1 of them.
        assert_eq!(permutation_p_greater(&[9.0], &[1.0, 2.0, 3.0]), Some(0.25));
        // All equal: every split ties the observed difference.
        assert_eq!(permutation_p_greater(&[1.0; 3], &[1.0; 3]), Some(1.0));
        assert_eq!(permutation_p_greater(&[], &[1.0]), None);
    }

    #[test]
    fn bootstrap_interval_brackets_the_estimate_and_is_seeded() {
        let (a, b) = ([70.0, 71.0, 72.5], [65.0, 66.5, 64.0]);
        let (lo, hi) = bootstrap_interval(&[&a, &b], |m| Some(m[0] - m[1]), 3).unwrap();
        let est = mean(&a) - mean(&b);
        assert!(lo < est && est < hi, "{lo} {est} {hi}");
        // The extremes of resampling: all-min minus all-max and the reverse.
        assert!(lo >= 70.0 - 66.5 - 1e-9 && hi <= 72.5 - 64.0 + 1e-9);
        assert_eq!(
            bootstrap_interval(&[&a, &b], |m| Some(m[0] - m[1]), 3),
            Some((lo, hi))
        );
    }

    /// Draws `k` columns of `seeds` values each from one normal distribution (no effect).
    fn null_columns(rng: &mut ChaCha8Rng, k: usize, seeds: usize) -> Vec<Vec<f64>> {
        let normal = Normal::new(60.0, 1.5).unwrap();
        (0..k)
            .map(|_| (0..seeds).map(|_| normal.sample(rng)).collect())
            .collect()
    }

    /// A planted effect is decided the right way in at least `share` of `trials`.
    fn at_least(count: usize, trials: impl Into<u64>, share: f64, what: &str) {
        let trials = trials.into() as f64;
        assert!(count as f64 >= share * trials, "{what} {count}/{trials}");
    }

    /// The rate a rule may show under the null: its level plus 3 Monte Carlo standard errors.
    fn allowed(trials: usize) -> f64 {
        ALPHA + 3.0 * (ALPHA * (1.0 - ALPHA) / trials as f64).sqrt()
    }

    #[test]
    fn under_the_null_the_gap_rule_supports_at_most_five_percent_of_the_time() {
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        let trials = 3_000;
        let mut supports = 0;
        for t in 0..trials {
            let cols = null_columns(&mut rng, 2, 3);
            let e = greater(&cols[0], &cols[1], true, t as u64).unwrap();
            supports += (e.word == Word::Supports) as usize;
        }
        let rate = supports as f64 / trials as f64;
        assert!(rate <= allowed(trials), "supports {rate} of null draws");
        // Exactly the full separations, 1 in 20.
        assert!((rate - 0.05).abs() < 0.015, "{rate}");
    }

    #[test]
    fn under_the_null_the_recovery_rule_supports_at_most_five_percent_of_the_time() {
        let mut rng = ChaCha8Rng::seed_from_u64(12);
        let trials = 2_000;
        let mut supports = 0;
        for t in 0..trials {
            let cols = null_columns(&mut rng, 3, 3);
            let e = recovers(&cols[0], &cols[1], &cols[2], true, t as u64).unwrap();
            supports += (e.word == Word::Supports) as usize;
        }
        let rate = supports as f64 / trials as f64;
        assert!(rate <= allowed(trials), "supports {rate} of null draws");
    }

    #[test]
    fn a_planted_effect_is_found_and_a_reversed_one_is_refuted() {
        let mut rng = ChaCha8Rng::seed_from_u64(13);
        let trials = 300;
        let (mut found, mut refuted, mut recovered) = (0, 0, 0);
        for t in 0..trials {
            let cols = null_columns(&mut rng, 4, 3);
            // η* 5 points (3.3 sd) above the Baseline; the penalty recovers all of it.
            let large: Vec<f64> = cols[0].iter().map(|x| x + 5.0).collect();
            let pen: Vec<f64> = cols[2].iter().map(|x| x + 5.0).collect();
            let e = greater(&large, &cols[1], true, t).unwrap();
            found += (e.word == Word::Supports) as usize;
            let e = greater(&cols[1], &large, true, t).unwrap();
            refuted += (e.word == Word::DoesNotSupport) as usize;
            let e = recovers(&large, &cols[1], &pen, true, t).unwrap();
            recovered += (e.word == Word::Supports) as usize;
        }
        at_least(found, trials, 0.8, "found");
        at_least(refuted, trials, 0.8, "refuted");
        at_least(recovered, trials, 0.6, "recovered");
    }

    #[test]
    fn unconverged_runs_and_too_few_seeds_are_undecided() {
        let (a, b) = ([80.0, 81.0, 82.0], [70.0, 71.0, 72.0]);
        assert_eq!(greater(&a, &b, true, 0).unwrap().word, Word::Supports);
        let e = greater(&a, &b, false, 0).unwrap();
        assert_eq!(e.word, Word::Undecided);
        assert!(e.reason.contains("stopping criterion"));
        let e = greater(&a[..2], &b, true, 0).unwrap();
        assert_eq!(e.word, Word::Undecided);
        assert!(e.reason.contains("2 vs 3 seeds"), "{}", e.reason);
        // One seed a side: a degenerate interval below 0 still decides nothing.
        let e = greater(&[1.0], &[2.0], true, 0).unwrap();
        assert_eq!(e.word, Word::Undecided, "{e:?}");
        assert!(greater(&[], &b, true, 0).is_none());
    }

    fn strata(
        rng: &mut ChaCha8Rng,
        seeds: u64,
        groups: usize,
        xs: &[f64],
        slope: f64,
    ) -> Vec<Stratum> {
        let normal = Normal::new(0.0, 1.0).unwrap();
        let mut out = Vec::new();
        for seed in 0..seeds {
            for g in 0..groups {
                out.push(Stratum {
                    name: format!("g{g}, seed {seed}"),
                    seed,
                    points: xs
                        .iter()
                        .map(|&x| (x, slope * x + normal.sample(rng)))
                        .collect(),
                });
            }
        }
        out
    }

    #[test]
    fn under_the_null_the_trend_rule_supports_at_most_five_percent_of_the_time() {
        // The break-even layout: 3 seeds × 3 strata of 3 settings, y independent of x.
        let mut rng = ChaCha8Rng::seed_from_u64(21);
        let trials = 1_000;
        let mut supports = 0;
        for t in 0..trials {
            let s = strata(&mut rng, 3, 3, &[1.0, 2.0, 3.0], 0.0);
            let e = trend_with(&s, t % 2 == 0, true, t as u64, 999).unwrap();
            supports += (e.word == Word::Supports) as usize;
        }
        let rate = supports as f64 / trials as f64;
        assert!(rate <= allowed(trials), "supports {rate} of null draws");
        // The Fisher-explosion layout: 3 seeds, one stratum of 5 settings each.
        let mut supports = 0;
        for t in 0..trials {
            let s = strata(&mut rng, 3, 1, &[1.0, 2.0, 3.0, 4.0, 5.0], 0.0);
            let e = trend_with(&s, false, true, t as u64, 999).unwrap();
            supports += (e.word == Word::Supports) as usize;
        }
        let rate = supports as f64 / trials as f64;
        assert!(rate <= allowed(trials), "supports {rate} of null draws");
    }

    #[test]
    fn a_planted_trend_is_found_and_a_reversed_one_is_refuted() {
        let mut rng = ChaCha8Rng::seed_from_u64(22);
        let trials = 200;
        let (mut found, mut refuted) = (0, 0);
        for t in 0..trials {
            // A slope of one noise sd per setting step.
            let s = strata(&mut rng, 3, 3, &[1.0, 2.0, 3.0], 1.0);
            found += (trend_with(&s, true, true, t, 999).unwrap().word == Word::Supports) as usize;
            refuted += (trend_with(&s, false, true, t, 999).unwrap().word == Word::DoesNotSupport)
                as usize;
        }
        at_least(found, trials, 0.8, "found");
        at_least(refuted, trials, 0.8, "refuted");
    }

    #[test]
    fn the_trend_rule_needs_seeds_converged_runs_and_two_settings() {
        let mut rng = ChaCha8Rng::seed_from_u64(23);
        let s = strata(&mut rng, 3, 3, &[1.0, 2.0, 3.0], 10.0);
        let e = trend(&s, true, true, 0).unwrap();
        // Perfect order in all 9 strata: only the identity shuffles (1/6 each) tie it.
        assert_eq!(e.word, Word::Supports, "{e:?}");
        assert!((e.estimate - 1.0).abs() < 1e-12);
        assert!(e.p_value.unwrap() <= 2.0 / 10_000.0, "{e:?}");
        assert_eq!(e.interval, Some((1.0, 1.0)));
        let e = trend(&s, true, false, 0).unwrap();
        assert_eq!(e.word, Word::Undecided);
        assert!(e.reason.contains("stopping criterion"));
        let two_seeds: Vec<Stratum> = s.iter().filter(|s| s.seed < 2).cloned().collect();
        let e = trend(&two_seeds, true, true, 0).unwrap();
        assert_eq!(e.word, Word::Undecided);
        assert!(e.reason.contains("2 seeds"), "{}", e.reason);
        // One distinct x says nothing; a NaN gives no verdict.
        let flat = Stratum {
            name: "one setting".into(),
            seed: 0,
            points: vec![(1.0, 2.0), (1.0, 3.0)],
        };
        assert!(trend(std::slice::from_ref(&flat), true, true, 0).is_none());
        let mut nan = s[0].clone();
        nan.points[0].1 = f64::NAN;
        assert!(trend(&[nan], true, true, 0).is_none());
        // The same seed gives the same p and interval.
        assert_eq!(trend(&s[..4], true, true, 5), trend(&s[..4], true, true, 5));
    }
}
