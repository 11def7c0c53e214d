//! The catastrophic Fisher explosion page (SCIENCE.md §5.2): per row, every run's early Tr(F)
//! peak against its final test accuracy, the Tr(F) curves, and the verdicts of
//! `evidence::trend` (strata = seeds) on the paper's two claims.

use std::fmt::Write as _;

use breakeven_runner::rundir::RunStatus;
use breakeven_runner::sweep::{Experiment, Profile};
use breakeven_runner::table::RowOutcome;
use breakeven_runner::RunError;

use crate::claims::{early_peak, sig4};
use crate::evidence::{greater, trend, Evidence, Stratum, TREND_RULE};
use crate::page::{column_label, evidence_line, records_of, row_runs, Page, Records, Stamp};
use crate::plot::{labelled_scatter, line_chart, LabelledSeries};

/// The experiment file (`experiments/fisher-explosion.toml`).
pub const DEFINITION: &str = "fisher-explosion";

/// What a verdict line says when the runs cannot decide a claim.
const UNDECIDED: &str = "no seed with two plain-SGD learning rates that have an early peak and a final test accuracy; cannot decide.";

/// One finished run: its label, learning rate, seed, Tr(F) curve (epoch, Tr F), early peak and
/// final test accuracy (%).
#[derive(Debug, Clone)]
pub struct RunCurve {
    pub label: String,
    pub lr: f64,
    pub seed: u64,
    pub penalty: String,
    pub curve: Vec<(f64, f64)>,
    /// The largest Tr(F) after initialization within the dense window (the first
    /// `tracking.dense_epochs` epochs).
    pub peak: Option<(f64, f64)>,
    /// The largest Tr(F) over the whole run (after initialization): shown, not judged.
    pub run_peak: Option<(f64, f64)>,
    pub test_acc: Option<f64>,
    pub train_acc: Option<f64>,
    /// Reached the stopping rule (not capped, not diverged).
    pub converged: bool,
}

/// The plain-SGD runs as strata, one per seed, with (x, y) from `point`.
fn plain_strata(
    curves: &[RunCurve],
    point: impl Fn(&RunCurve) -> Option<(f64, f64)>,
) -> Vec<Stratum> {
    let mut seeds: Vec<u64> = curves.iter().map(|c| c.seed).collect();
    seeds.sort_unstable();
    seeds.dedup();
    seeds
        .into_iter()
        .map(|seed| Stratum {
            name: format!("seed {seed}"),
            seed,
            points: curves
                .iter()
                .filter(|c| c.seed == seed && c.penalty == "none")
                .filter_map(&point)
                .collect(),
        })
        .collect()
}

/// Whether every run a claim compares reached the stopping rule (`complete`: every planned run
/// of the row has finished).
fn all_converged(curves: &[RunCurve], plain_only: bool, complete: bool) -> bool {
    complete
        && curves
            .iter()
            .filter(|c| !plain_only || c.penalty == "none")
            .all(|c| c.converged)
}

/// Claim 1: a smaller η gives a larger early peak (plain SGD; per seed, ρ(η, peak) < 0).
pub fn smaller_eta_larger_peak(curves: &[RunCurve], complete: bool) -> Option<Evidence> {
    let st = plain_strata(curves, |c| Some((c.lr, c.peak?.1)));
    trend(&st, false, all_converged(curves, true, complete), 300)
}

/// Claim 2: a larger early peak goes with a lower final test accuracy (plain SGD; per seed,
/// ρ(peak, test accuracy) < 0).
pub fn peak_predicts_accuracy(curves: &[RunCurve], complete: bool) -> Option<Evidence> {
    let st = plain_strata(curves, |c| Some((c.peak?.1, c.test_acc?)));
    trend(&st, false, all_converged(curves, true, complete), 301)
}

/// [ours] FP at the smallest η lowers the early peak of the plain run at that η (seeds of each).
pub fn penalty_lowers_peak(curves: &[RunCurve], complete: bool) -> Option<Evidence> {
    let small = curves
        .iter()
        .filter(|c| c.penalty == "none")
        .map(|c| c.lr)
        .reduce(f64::min)?;
    let peaks = |penalized: bool| -> Vec<f64> {
        curves
            .iter()
            .filter(|c| c.lr == small && (c.penalty != "none") == penalized)
            .filter_map(|c| Some(c.peak?.1))
            .collect()
    };
    let (plain, pen) = (peaks(false), peaks(true));
    let converged = complete && curves.iter().filter(|c| c.lr == small).all(|c| c.converged);
    greater(&plain, &pen, converged, 302)
}

/// The page: one section per row of `outcomes` (runs of `experiments/fisher-explosion.toml`),
/// every finished run read from `records`.
pub fn page(
    stamp: &Stamp,
    exp: &Experiment,
    profile: &Profile,
    outcomes: &[RowOutcome],
    records: &Records,
) -> Result<Page, RunError> {
    let mut page = stamp.page(
        DEFINITION,
        DEFINITION,
        (&exp.title, &exp.source),
        &profile.base,
        &profile.description,
    );
    for line in crate::page::run_lines(outcomes, records) {
        let _ = writeln!(page.markdown, "{line}");
    }
    page.markdown.push_str("- Early peak: the largest Tr(F) logged after initialization within the dense tracking window (the first `tracking.dense_epochs` epochs); Tr(F) is the Monte-Carlo Fisher trace (labels sampled from the model) on the first `tracking.k_examples` examples of the fixed measurement subset. Every plain-SGD run of the sweep counts, not only the validation-chosen ones; every run trains to the same stopping rule, and a run that did not reach it makes the verdicts undecided.\n");
    for o in outcomes {
        let Some(runs) = row_runs(&mut page.markdown, o) else {
            continue;
        };
        let (mut curves, mut unfinished) = (Vec::new(), false);
        for (spec, summary) in runs {
            let Some(summary) = summary else {
                unfinished = true;
                continue;
            };
            let curve: Vec<(f64, f64)> = records_of(records, &spec.dir)?
                .iter()
                .filter_map(|r| r.curvature.as_ref()?.fisher_trace.map(|f| (r.epoch, f)))
                .collect();
            // "Early": the dense tracking window (the first `dense_epochs` epochs), after the
            // initialization (shared by every run of a seed, so it cannot tell them apart).
            let early = spec.config.tracking.dense_epochs as f64;
            curves.push(RunCurve {
                label: format!(
                    "{} (η={}{}{})",
                    column_label(exp, spec),
                    spec.config.optim.lr,
                    if profile.seeds.len() > 1 {
                        format!(", seed {}", spec.seed)
                    } else {
                        String::new()
                    },
                    if spec.config.penalty.kind.is_none() {
                        String::new()
                    } else {
                        format!(", α={}", spec.config.penalty.alpha)
                    }
                ),
                lr: spec.config.optim.lr,
                seed: spec.seed,
                penalty: breakeven_runner::config::penalty_name(spec.config.penalty.kind)
                    .to_string(),
                peak: early_peak(&curve, 0.0, early),
                run_peak: early_peak(&curve, 0.0, f64::INFINITY),
                curve,
                test_acc: summary.final_metrics.test_acc.map(|a| 100.0 * a),
                train_acc: summary.final_metrics.train_acc.map(|a| 100.0 * a),
                converged: summary.status == RunStatus::Converged,
            });
        }
        if unfinished {
            page.markdown.push_str("Some runs of this row have not finished: every verdict below is undecided until they have.\n\n");
        }
        row(&mut page, &o.row.key, &o.row.setting, &curves, !unfinished);
    }
    Ok(page)
}

/// The per-run table, the two plots and the verdicts of one row.
fn row(page: &mut Page, key: &str, setting: &str, curves: &[RunCurve], complete: bool) {
    let md = &mut page.markdown;
    md.push_str("| Run | early Tr(F) peak (at epoch) | Tr(F) peak over the run (at epoch) | final test acc. (%) | final train acc. (%) | stopping rule reached |\n|---|---|---|---|---|---|\n");
    for c in curves {
        let at = |p: Option<(f64, f64)>| {
            p.map_or("—".into(), |(e, v)| format!("{} ({e:.2})", sig4(v)))
        };
        let (peak, run_peak) = (at(c.peak), at(c.run_peak));
        let f = |a: Option<f64>| a.map_or("—".into(), |a| format!("{a:.2}"));
        let _ = writeln!(
            md,
            "| {} | {peak} | {run_peak} | {} | {} | {} |",
            c.label,
            f(c.test_acc),
            f(c.train_acc),
            if c.converged { "yes" } else { "**no**" }
        );
    }
    // Tr(F) spans decades between learning rates: a log axis.
    let series: Vec<(String, Vec<(f64, f64)>)> = curves
        .iter()
        .map(|c| (c.label.clone(), c.curve.clone()))
        .collect();
    let trace_file = page.plot(
        &format!("{key}-trace"),
        line_chart(
            &format!("{setting}: Fisher trace during training"),
            "epoch",
            "Tr(F) (measurement subset)",
            &series,
        )
        .log_y(),
    );
    // Each run's early peak against its final test accuracy: separate runs, so labelled
    // points, one series per column.
    let mut columns: Vec<&str> = curves.iter().map(|c| c.penalty.as_str()).collect();
    columns.dedup();
    let runs = |penalty: &str| LabelledSeries {
        label: if penalty == "none" {
            "plain SGD".into()
        } else {
            penalty.to_uppercase()
        },
        points: curves
            .iter()
            .filter(|c| c.penalty == penalty)
            .filter_map(|c| Some((c.peak?.1, c.test_acc?, c.label.clone())))
            .collect(),
    };
    let peak_file = page.plot(
        &format!("{key}-peak-vs-test"),
        labelled_scatter(
            &format!("{setting}: early Tr(F) peak vs final test accuracy, one point per run"),
            "early Tr(F) peak (measurement subset)",
            "final test accuracy (%)",
            &columns.iter().map(|p| runs(p)).collect::<Vec<_>>(),
        )
        .log_x(),
    );
    let md = &mut page.markdown;
    let _ = writeln!(
        md,
        "\n![Tr(F)]({trace_file})\n\n![peak vs test]({peak_file})\n"
    );
    md.push_str("### Claims (verdicts computed from the runs above)\n\n");
    evidence_line(
        md,
        "With a smaller η, Tr(F) rises to a larger early peak (plain SGD)",
        "mean over seeds of −ρ(η, early peak) (Spearman)",
        smaller_eta_larger_peak(curves, complete).as_ref(),
        UNDECIDED,
    );
    evidence_line(
        md,
        "A larger early Tr(F) peak predicts worse final test accuracy (plain SGD)",
        "mean over seeds of −ρ(early peak, final test accuracy) (Spearman)",
        peak_predicts_accuracy(curves, complete).as_ref(),
        UNDECIDED,
    );
    if curves.iter().any(|c| c.penalty != "none") {
        evidence_line(
            md,
            "[ours] FP at the smallest η lowers the early peak of plain SGD at that η",
            "mean early peak, plain − FP",
            penalty_lowers_peak(curves, complete).as_ref(),
            "no plain and penalized runs at the smallest η; cannot decide.",
        );
    }
    let _ = writeln!(
        md,
        "\nRule of the first two: {TREND_RULE}. A stratum here is one seed's plain-SGD runs. The [ours] line: an exact one-sided permutation test over seeds (*supports* when p ≤ 0.05, which needs 3 seeds a side), *does not support* when the 95% bootstrap interval of the difference is at or below 0. The peak over the whole run is shown in the table, not judged: it depends on how long a run trains and is not the paper's claim."
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pages::testing::{experiment, ran, record, records_for, specs, stamp, summary};

    fn curve(lr: f64, seed: u64, penalty: &str, peak: f64, test_acc: f64) -> RunCurve {
        RunCurve {
            label: format!("η={lr}, seed {seed}"),
            lr,
            seed,
            penalty: penalty.into(),
            curve: vec![],
            peak: Some((1.0, peak)),
            run_peak: Some((3.0, peak)),
            test_acc: Some(test_acc),
            train_acc: None,
            converged: true,
        }
    }

    /// 3 seeds × 4 plain η (peak 1/η, accuracy falling with the peak) and FP at the smallest η.
    fn curves() -> Vec<RunCurve> {
        let mut out = Vec::new();
        for seed in 0..3 {
            let jitter = 0.1 * seed as f64;
            for lr in [0.001, 0.003, 0.01, 0.03] {
                out.push(curve(
                    lr,
                    seed,
                    "none",
                    1.0 / lr + jitter,
                    80.0 - 1.0 / lr / 100.0,
                ));
            }
            out.push(curve(0.001, seed, "fp", 50.0 + jitter, 79.0));
        }
        out
    }

    #[test]
    fn the_claims_are_trends_over_seeds_of_plain_runs_and_need_converged_runs() {
        let c = curves();
        let e = smaller_eta_larger_peak(&c, true).unwrap();
        assert_eq!(e.word, crate::evidence::Word::Supports, "{e:?}");
        assert!((e.estimate - 1.0).abs() < 1e-12);
        let e = peak_predicts_accuracy(&c, true).unwrap();
        assert_eq!(e.word, crate::evidence::Word::Supports, "{e:?}");
        // FP's peaks (50) sit far below plain SGD's (1000) at η = 0.001 in all 3 seeds.
        let e = penalty_lowers_peak(&c, true).unwrap();
        assert_eq!(e.word, crate::evidence::Word::Supports, "{e:?}");
        assert_eq!(e.p_value, Some(0.05));
        // Accuracy rising with the peak is refuted.
        let mut up = c.clone();
        for r in &mut up {
            r.test_acc = Some(r.peak.unwrap().1);
        }
        let e = peak_predicts_accuracy(&up, true).unwrap();
        assert_eq!(e.word, crate::evidence::Word::DoesNotSupport, "{e:?}");
        // A capped plain run: undecided; a capped FP run does not touch the plain claims.
        let mut capped = c.clone();
        capped[4].converged = false;
        assert_eq!(
            smaller_eta_larger_peak(&capped, true).unwrap().word,
            crate::evidence::Word::Supports
        );
        assert_eq!(
            penalty_lowers_peak(&capped, true).unwrap().word,
            crate::evidence::Word::Undecided
        );
        capped[0].converged = false;
        let e = smaller_eta_larger_peak(&capped, true).unwrap();
        assert_eq!(e.word, crate::evidence::Word::Undecided);
        // A planned run that has not finished: undecided.
        let e = smaller_eta_larger_peak(&c, false).unwrap();
        assert_eq!(e.word, crate::evidence::Word::Undecided);
        // Two seeds cannot decide.
        let two: Vec<RunCurve> = c.iter().filter(|r| r.seed < 2).cloned().collect();
        let e = peak_predicts_accuracy(&two, true).unwrap();
        assert!(e.reason.contains("2 seeds"), "{e:?}");
    }

    #[test]
    fn the_page_reads_every_finished_run_and_states_its_rules() {
        let exp = experiment(DEFINITION);
        let profile = exp.profile("smoke").unwrap().clone();
        // Tr(F) peaks at epoch 1 (inside the 2-epoch dense window) at 1/η, falls afterwards,
        // and a larger peak goes with a lower test accuracy.
        let peak = |s: &breakeven_runner::sweep::RunSpec| {
            let p = 1.0 / s.config.optim.lr;
            if s.config.penalty.kind.is_none() {
                p
            } else {
                p / 100.0
            }
        };
        let runs = specs(&exp, "smoke")
            .into_iter()
            .map(|s| {
                let acc = 1.0 - peak(&s) / 1000.0;
                (s, Some(summary(acc, 1.0)))
            })
            .collect();
        let outcome = ran(&exp, "smoke", runs, &[]);
        let records = records_for(&outcome, |s| {
            let p = peak(s);
            vec![
                record(0, 0.0, 0.1, Some(1.0)),
                record(10, 1.0, 0.5, Some(p)),
                record(40, 3.0, 0.9, Some(p / 2.0)),
            ]
        });
        let page = page(&stamp("smoke"), &exp, &profile, &[outcome], &records).unwrap();
        let files: Vec<&str> = page.plots.iter().map(|p| p.0.as_str()).collect();
        assert_eq!(
            files,
            [
                "fisher-explosion-smoke-cifar10-simplecnn-trace.svg",
                "fisher-explosion-smoke-cifar10-simplecnn-peak-vs-test.svg"
            ]
        );
        let md = &page.markdown;
        assert!(md.starts_with("# "), "{md}");
        assert!(
            md.contains(
                "| small η (η=0.003) | 333.3 (1.00) | 333.3 (1.00) | 66.67 | 100.00 | yes |"
            ),
            "{md}"
        );
        // Where the runs trained and the share of their wall time spent on curvature, from the
        // summaries and the records read for the page.
        assert!(
            md.contains("\n- Trained on: Test CPU, 2 logical cores"),
            "{md}"
        );
        assert!(
            md.contains("\n- Curvature tracking: 0.0% of the wall time of the 4 finished runs"),
            "{md}"
        );
        // The smoke profile has one seed: every verdict is undecided, and says why.
        assert_eq!(
            md.matches("→ **undecided** (1 seed: at least 3 are needed).")
                .count(),
            2,
            "{md}"
        );
        assert!(md.contains("Rule of the first two: per stratum"), "{md}");
        // A run without its records is an error naming it.
        let err = page_without_records(&exp, &profile);
        assert!(err.contains("no metrics read for run /runs/"), "{err}");
    }

    fn page_without_records(exp: &Experiment, profile: &Profile) -> String {
        let runs = specs(exp, "smoke")
            .into_iter()
            .map(|s| (s, Some(summary(0.5, 1.0))))
            .collect();
        let outcome = ran(exp, "smoke", runs, &[]);
        page(&stamp("smoke"), exp, profile, &[outcome], &Records::new())
            .unwrap_err()
            .to_string()
    }
}
