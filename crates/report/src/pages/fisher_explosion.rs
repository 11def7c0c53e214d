//! The catastrophic Fisher explosion page (SCIENCE.md §5.2): per row, every run's early Tr(F)
//! peak and its peak over the run against its final test accuracy, the Tr(F) curves, and the
//! verdicts of `claims::peak_ratio_verdict` and `claims::peak_accuracy_verdict` on both peaks.

use std::fmt::Write as _;

use breakeven_runner::sweep::{Experiment, Profile};
use breakeven_runner::table::RowOutcome;
use breakeven_runner::RunError;

use crate::claims::{early_peak, peak_accuracy_verdict, peak_ratio_verdict, sig4, Verdict};
use crate::page::{claim_line, column_label, records_of, row_runs, Page, Records, Stamp};
use crate::plot::{labelled_scatter, line_chart, LabelledSeries};

/// The experiment file (`experiments/fisher-explosion.toml`).
pub const DEFINITION: &str = "fisher-explosion";

/// What a verdict line says when the runs cannot decide a claim.
const UNDECIDED: &str = "not enough finished, non-diverged runs to decide.";

/// One finished run: its label, learning rate, Tr(F) curve (epoch, Tr F), early peak and
/// final test accuracy (%).
#[derive(Debug, Clone)]
pub struct RunCurve {
    pub label: String,
    pub lr: f64,
    pub penalty: String,
    pub curve: Vec<(f64, f64)>,
    pub peak: Option<(f64, f64)>,
    /// The largest Tr(F) over the whole run (after initialization).
    pub run_peak: Option<(f64, f64)>,
    pub test_acc: Option<f64>,
    pub train_acc: Option<f64>,
}

/// Which peak a claim reads: the early one (the dense tracking window) or the whole run's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peak {
    Early,
    WholeRun,
}

impl Peak {
    fn of(self, c: &RunCurve) -> Option<(f64, f64)> {
        match self {
            Peak::Early => c.peak,
            Peak::WholeRun => c.run_peak,
        }
    }

    /// How a verdict's explanation names the peak.
    fn name(self) -> &'static str {
        match self {
            Peak::Early => "early Tr(F) peak",
            Peak::WholeRun => "Tr(F) peak over the run",
        }
    }
}

/// Claim 1 on `peak`: the smallest plain-SGD η against the largest one that did not diverge.
pub fn small_vs_large_eta(curves: &[RunCurve], peak: Peak) -> Option<Verdict> {
    let plain: Vec<&RunCurve> = curves
        .iter()
        .filter(|c| c.penalty == "none" && c.peak.is_some())
        .collect();
    let small = plain.iter().min_by(|a, b| a.lr.total_cmp(&b.lr))?;
    let large = plain.iter().max_by(|a, b| a.lr.total_cmp(&b.lr))?;
    (small.lr < large.lr)
        .then(|| peak_ratio_verdict(peak.name(), peak.of(small)?.1, peak.of(large)?.1))
        .flatten()
}

/// Claim 2 on `peak`: a larger peak predicts worse final test accuracy (every run).
pub fn peak_predicts_accuracy(curves: &[RunCurve], peak: Peak) -> Option<Verdict> {
    let (peaks, accs): (Vec<f64>, Vec<f64>) = curves
        .iter()
        .filter_map(|c| Some((peak.of(c)?.1, c.test_acc?)))
        .unzip();
    peak_accuracy_verdict(peak.name(), &peaks, &accs)
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
    page.markdown.push_str("- Early peak: the largest Tr(F) logged after initialization within the dense tracking window (the first `tracking.dense_epochs` epochs); Tr(F) is the Monte-Carlo Fisher trace (labels sampled from the model) on the first `tracking.k_examples` examples of the fixed measurement subset. Every run of the sweep counts, not only the validation-chosen ones.\n");
    for o in outcomes {
        let Some(runs) = row_runs(&mut page.markdown, o) else {
            continue;
        };
        let mut curves = Vec::new();
        for (spec, summary) in runs {
            let Some(summary) = summary else { continue };
            let curve: Vec<(f64, f64)> = records_of(records, &spec.dir)?
                .iter()
                .filter_map(|r| r.curvature.as_ref()?.fisher_trace.map(|f| (r.epoch, f)))
                .collect();
            // "Early": the dense tracking window (the first `dense_epochs` epochs), after the
            // initialization (shared by every run of a seed, so it cannot tell them apart).
            let early = spec.config.tracking.dense_epochs as f64;
            curves.push(RunCurve {
                label: format!(
                    "{} (η={}{})",
                    column_label(exp, spec),
                    spec.config.optim.lr,
                    if spec.config.penalty.kind.is_none() {
                        String::new()
                    } else {
                        format!(", α={}", spec.config.penalty.alpha)
                    }
                ),
                lr: spec.config.optim.lr,
                penalty: breakeven_runner::config::penalty_name(spec.config.penalty.kind)
                    .to_string(),
                peak: early_peak(&curve, 0.0, early),
                run_peak: early_peak(&curve, 0.0, f64::INFINITY),
                curve,
                test_acc: summary.final_metrics.test_acc.map(|a| 100.0 * a),
                train_acc: summary.final_metrics.train_acc.map(|a| 100.0 * a),
            });
        }
        row(&mut page, &o.row.key, &o.row.setting, &curves);
    }
    Ok(page)
}

/// The per-run table, the two plots and the verdicts of one row.
fn row(page: &mut Page, key: &str, setting: &str, curves: &[RunCurve]) {
    let md = &mut page.markdown;
    md.push_str("| Run | early Tr(F) peak (at epoch) | Tr(F) peak over the run (at epoch) | final test acc. (%) | final train acc. (%) |\n|---|---|---|---|---|\n");
    for c in curves {
        let at = |p: Option<(f64, f64)>| {
            p.map_or("—".into(), |(e, v)| format!("{} ({e:.2})", sig4(v)))
        };
        let (peak, run_peak) = (at(c.peak), at(c.run_peak));
        let f = |a: Option<f64>| a.map_or("—".into(), |a| format!("{a:.2}"));
        let _ = writeln!(
            md,
            "| {} | {peak} | {run_peak} | {} | {} |",
            c.label,
            f(c.test_acc),
            f(c.train_acc)
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
    // Each run's peak against its final test accuracy: separate runs, so labelled points.
    let runs = |label: &str, peak: Peak| LabelledSeries {
        label: label.into(),
        points: curves
            .iter()
            .filter_map(|c| Some((peak.of(c)?.1, c.test_acc?, c.label.clone())))
            .collect(),
    };
    let peak_file = page.plot(
        &format!("{key}-peak-vs-test"),
        labelled_scatter(
            &format!("{setting}: Tr(F) peak vs final test accuracy, one point per run"),
            "Tr(F) peak (measurement subset)",
            "final test accuracy (%)",
            &[
                runs("early peak", Peak::Early),
                runs("peak over the run", Peak::WholeRun),
            ],
        )
        .log_x(),
    );
    let md = &mut page.markdown;
    let _ = writeln!(
        md,
        "\n![Tr(F)]({trace_file})\n\n![peak vs test]({peak_file})\n"
    );
    md.push_str("### Claims (verdicts computed from the runs above)\n\n");
    claim_line(
        md,
        "With a small η, Tr(F) rises to a larger early peak than with a large η",
        small_vs_large_eta(curves, Peak::Early).as_ref(),
        UNDECIDED,
    );
    claim_line(
        md,
        "A larger early Tr(F) peak predicts worse final test accuracy",
        peak_predicts_accuracy(curves, Peak::Early).as_ref(),
        UNDECIDED,
    );
    // The same two rules on the peak over the whole run: where the small-η explosion comes
    // later than the dense window (a long fit at a small η), the early window misses it.
    claim_line(
        md,
        "Over the whole run, Tr(F) peaks higher with a small η than with a large η",
        small_vs_large_eta(curves, Peak::WholeRun).as_ref(),
        UNDECIDED,
    );
    claim_line(
        md,
        "A larger Tr(F) peak over the run predicts worse final test accuracy",
        peak_predicts_accuracy(curves, Peak::WholeRun).as_ref(),
        UNDECIDED,
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pages::testing::{experiment, ran, record, records_for, specs, stamp, summary};

    fn curve(lr: f64, penalty: &str, peak: f64, run_peak: f64, test_acc: f64) -> RunCurve {
        RunCurve {
            label: format!("η={lr}"),
            lr,
            penalty: penalty.into(),
            curve: vec![],
            peak: Some((1.0, peak)),
            run_peak: Some((3.0, run_peak)),
            test_acc: Some(test_acc),
            train_acc: None,
        }
    }

    #[test]
    fn the_smallest_plain_eta_is_compared_with_the_largest_and_penalized_runs_are_left_out() {
        let curves = [
            curve(0.1, "none", 10.0, 12.0, 80.0),
            curve(0.01, "none", 40.0, 13.0, 70.0),
            // Smaller η still, but penalized: not a plain-SGD run.
            curve(0.001, "fp", 1.0, 1.0, 75.0),
        ];
        let v = small_vs_large_eta(&curves, Peak::Early).unwrap();
        assert!(v.supports && (v.statistic - 4.0).abs() < 1e-12, "{v:?}");
        assert!(v
            .explanation
            .starts_with("early Tr(F) peak, small η / large η"));
        // Over the whole run the peaks are 13 vs 12: not 1.5 times larger.
        let v = small_vs_large_eta(&curves, Peak::WholeRun).unwrap();
        assert!(!v.supports, "{v:?}");
        assert!(v
            .explanation
            .starts_with("Tr(F) peak over the run, small η / large η"));
        // One plain learning rate decides nothing.
        assert!(small_vs_large_eta(&curves[..1], Peak::Early).is_none());
        // Peaks against accuracy: every run counts (3 needed).
        let v = peak_predicts_accuracy(&curves, Peak::Early).unwrap();
        assert!(v
            .explanation
            .contains("ρ(early Tr(F) peak, final test accuracy) over 3 runs"));
        assert!(peak_predicts_accuracy(&curves[..2], Peak::WholeRun).is_none());
    }

    #[test]
    fn the_page_reads_every_finished_run_and_decides_all_four_claims() {
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
            md.contains("| small η (η=0.003) | 333.3 (1.00) | 333.3 (1.00) | 66.67 | 100.00 |"),
            "{md}"
        );
        assert!(
            md.contains("small η / large η = 333.3 / 10.00 = 33.333 (≥ 1.5) → **supports**."),
            "{md}"
        );
        assert!(
            md.contains("Tr(F) peak over the run, small η / large η = 333.3 / 10.00"),
            "{md}"
        );
        assert_eq!(md.matches("→ **supports**.").count(), 4, "{md}");
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
