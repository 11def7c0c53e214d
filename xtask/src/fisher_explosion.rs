//! `cargo xtask reproduce fisher-explosion`: the catastrophic Fisher explosion (SCIENCE.md
//! §5.2) through the table1 sweep machinery, with Tr(F) curves, the early peak of every run
//! against its final test accuracy, and verdicts computed by `breakeven_runner::claims`.

use std::fmt::Write as _;

use anyhow::Result;
use breakeven_runner::claims::{
    early_peak, peak_accuracy_verdict, peak_ratio_verdict, sig4, Verdict,
};
use breakeven_runner::config::penalty_name;
use breakeven_runner::plot::{labelled_scatter, line_chart, LabelledSeries};
use breakeven_runner::TrainOptions;

use crate::reproduce::{
    claim_line, column_label, out_dir, page_head, profile_device, row_runs, run_definition,
    run_records, write_page, write_plot, ReproduceArgs,
};

/// What a verdict line says when the runs cannot decide a claim.
const UNDECIDED: &str = "not enough finished, non-diverged runs to decide.";

/// One finished run: its label, learning rate, Tr(F) curve (epoch, Tr F), early peak and
/// final test accuracy (%).
struct RunCurve {
    label: String,
    lr: f64,
    penalty: String,
    curve: Vec<(f64, f64)>,
    peak: Option<(f64, f64)>,
    /// The largest Tr(F) over the whole run (after initialization).
    run_peak: Option<(f64, f64)>,
    test_acc: Option<f64>,
    train_acc: Option<f64>,
}

pub fn reproduce(args: &ReproduceArgs) -> Result<()> {
    let (exp, profile, outcomes) =
        run_definition(args, "fisher-explosion", &TrainOptions::default())?;

    let out_dir = out_dir(args)?;
    let stem = format!("fisher-explosion-{}", args.profile);
    let device = profile_device(args, &profile.base);
    let mut page = page_head(args, &exp.title, &device, &profile.description, &exp.source);
    page.push_str("- Early peak: the largest Tr(F) logged after initialization within the dense tracking window (the first `tracking.dense_epochs` epochs); Tr(F) is the Monte-Carlo Fisher trace (labels sampled from the model) on the first `tracking.k_examples` examples of the fixed measurement subset. Every run of the sweep counts, not only the validation-chosen ones.\n");

    for o in &outcomes {
        let Some(runs) = row_runs(&mut page, o) else {
            continue;
        };
        let mut curves = Vec::new();
        for (spec, summary) in runs {
            let Some(summary) = summary else { continue };
            let records = run_records(spec)?;
            let curve: Vec<(f64, f64)> = records
                .iter()
                .filter_map(|r| r.curvature.as_ref()?.fisher_trace.map(|f| (r.epoch, f)))
                .collect();
            // "Early": the dense tracking window (the first `dense_epochs` epochs), after the
            // initialization (shared by every run of a seed, so it cannot tell them apart).
            let early = spec.config.tracking.dense_epochs as f64;
            curves.push(RunCurve {
                label: format!(
                    "{} (η={}{})",
                    column_label(&exp, spec),
                    spec.config.optim.lr,
                    if spec.config.penalty.kind.is_none() {
                        String::new()
                    } else {
                        format!(", α={}", spec.config.penalty.alpha)
                    }
                ),
                lr: spec.config.optim.lr,
                penalty: penalty_name(spec.config.penalty.kind).to_string(),
                peak: early_peak(&curve, 0.0, early),
                run_peak: early_peak(&curve, 0.0, f64::INFINITY),
                curve,
                test_acc: summary.final_metrics.test_acc.map(|a| 100.0 * a),
                train_acc: summary.final_metrics.train_acc.map(|a| 100.0 * a),
            });
        }
        write_row(
            &mut page,
            &out_dir,
            &stem,
            &o.row.key,
            &o.row.setting,
            &curves,
        )?;
    }
    write_page(&out_dir, &stem, &page)
}

/// The per-run table, the two plots and the verdicts of one row.
fn write_row(
    page: &mut String,
    out_dir: &std::path::Path,
    stem: &str,
    key: &str,
    setting: &str,
    curves: &[RunCurve],
) -> Result<()> {
    page.push_str("| Run | early Tr(F) peak (at epoch) | Tr(F) peak over the run (at epoch) | final test acc. (%) | final train acc. (%) |\n|---|---|---|---|---|\n");
    for c in curves {
        let at = |p: Option<(f64, f64)>| {
            p.map_or("—".into(), |(e, v)| format!("{} ({e:.2})", sig4(v)))
        };
        let (peak, run_peak) = (at(c.peak), at(c.run_peak));
        let f = |a: Option<f64>| a.map_or("—".into(), |a| format!("{a:.2}"));
        let _ = writeln!(
            page,
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
    let trace_file = format!("{stem}-{key}-trace.svg");
    write_plot(
        &out_dir.join(&trace_file),
        &line_chart(
            &format!("{setting}: Fisher trace during training"),
            "epoch",
            "Tr(F) (measurement subset)",
            &series,
        )
        .log_y(),
    )?;
    // Each run's peak against its final test accuracy: separate runs, so labelled points.
    let runs = |label: &str, peak: fn(&RunCurve) -> Option<(f64, f64)>| LabelledSeries {
        label: label.into(),
        points: curves
            .iter()
            .filter_map(|c| Some((peak(c)?.1, c.test_acc?, c.label.clone())))
            .collect(),
    };
    let peak_file = format!("{stem}-{key}-peak-vs-test.svg");
    write_plot(
        &out_dir.join(&peak_file),
        &labelled_scatter(
            &format!("{setting}: Tr(F) peak vs final test accuracy, one point per run"),
            "Tr(F) peak (measurement subset)",
            "final test accuracy (%)",
            &[
                runs("early peak", |c| c.peak),
                runs("peak over the run", |c| c.run_peak),
            ],
        )
        .log_x(),
    )?;
    let _ = writeln!(
        page,
        "\n![Tr(F)]({trace_file})\n\n![peak vs test]({peak_file})\n"
    );

    page.push_str("### Claims (verdicts computed from the runs above)\n\n");
    // Claim 1: the smallest plain-SGD η against the largest η that did not diverge.
    let plain: Vec<&RunCurve> = curves
        .iter()
        .filter(|c| c.penalty == "none" && c.peak.is_some())
        .collect();
    let small = plain.iter().min_by(|a, b| a.lr.total_cmp(&b.lr));
    let large = plain.iter().max_by(|a, b| a.lr.total_cmp(&b.lr));
    let v1 = small.zip(large).and_then(|(s, l)| {
        (s.lr < l.lr)
            .then(|| peak_ratio_verdict(s.peak?.1, l.peak?.1))
            .flatten()
    });
    claim_line(
        page,
        "With a small η, Tr(F) rises to a larger early peak than with a large η",
        v1.as_ref(),
        UNDECIDED,
    );
    let (peaks, accs): (Vec<f64>, Vec<f64>) = curves
        .iter()
        .filter_map(|c| Some((c.peak?.1, c.test_acc?)))
        .unzip();
    let v2 = peak_accuracy_verdict(&peaks, &accs);
    claim_line(
        page,
        "A larger early Tr(F) peak predicts worse final test accuracy",
        v2.as_ref(),
        UNDECIDED,
    );
    // The same two rules on the peak over the whole run: where the small-η explosion comes
    // later than the dense window (a long fit at a small η), the early window misses it.
    let whole_run = |v: Option<Verdict>| {
        v.map(|mut v| {
            v.explanation = v
                .explanation
                .replace("early Tr(F) peak", "Tr(F) peak over the run");
            v
        })
    };
    let v3 = small.zip(large).and_then(|(s, l)| {
        (s.lr < l.lr)
            .then(|| peak_ratio_verdict(s.run_peak?.1, l.run_peak?.1))
            .flatten()
    });
    claim_line(
        page,
        "Over the whole run, Tr(F) peaks higher with a small η than with a large η",
        whole_run(v3).as_ref(),
        UNDECIDED,
    );
    let (peaks, accs): (Vec<f64>, Vec<f64>) = curves
        .iter()
        .filter_map(|c| Some((c.run_peak?.1, c.test_acc?)))
        .unzip();
    claim_line(
        page,
        "A larger Tr(F) peak over the run predicts worse final test accuracy",
        whole_run(peak_accuracy_verdict(&peaks, &accs)).as_ref(),
        UNDECIDED,
    );
    Ok(())
}
