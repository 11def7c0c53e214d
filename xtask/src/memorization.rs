//! `cargo xtask reproduce memorization`: memorization under label noise (SCIENCE.md §5.3)
//! through the table1 sweep machinery: clean vs noisy training accuracy per run, the noisy fit
//! of every run against its clean fit, and verdicts computed by `breakeven_runner::memorization`.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Result;
use breakeven_runner::evidence::{ALPHA, INTERVAL_LEVEL};
use breakeven_runner::memorization::{fit_curve, memorization_evidence, FitPoint, MIN_LEARNED};
use breakeven_runner::metrics::MetricsRecord;
use breakeven_runner::plot::line_chart;
use breakeven_runner::table::RowState;
use breakeven_runner::TrainOptions;

use crate::reproduce::{
    column_label, out_dir, page_head, profile_device, row_runs, run_definition, run_records,
    write_page, write_plot, ReproduceArgs,
};

/// One finished run of a noise level.
struct RunFit {
    column: String,
    /// The column's chosen setting (α chosen on validation; the baseline's one setting).
    chosen: bool,
    label: String,
    seed: u64,
    noise: f64,
    wall_s: f64,
    records: Vec<MetricsRecord>,
    curve: Vec<FitPoint>,
    test_acc: Option<f64>,
}

pub fn reproduce(args: &ReproduceArgs) -> Result<()> {
    let (exp, profile, outcomes) = run_definition(args, "memorization", &TrainOptions::default())?;

    let out_dir = out_dir(args)?;
    let stem = format!("memorization-{}", args.profile);
    let device = profile_device(args, &profile.base);
    let mut page = page_head(args, &exp.title, &device, &profile.description, &exp.source);
    let _ = writeln!(
        page,
        "- Accuracies are in eval mode on a fixed seeded subset of the training set \
         (`tracking.noise_subset`), split by the noise mask into clean and noisy examples; \
         \"noisy (trained labels)\" counts predictions of the wrong label the model is trained on \
         (memorization), \"noisy (true labels)\" predictions of the example's real class.\n\
         - Verdict rule [ours]: per penalty column (its α chosen on the validation split), all \
         its seeds and all the baseline's seeds are read at one matched point, the lowest of \
         their best clean training accuracies (so every run reaches it; it must be at least {:.0} \
         points above their initial clean accuracy), where each run's clean accuracy first \
         reaches it (linear interpolation between log points). Each run gives its memorization \
         ratio R = (noisy accuracy − initial noisy accuracy) / (clean accuracy − initial clean \
         accuracy): wrong labels fitted per right label fitted, gains since initialization so \
         that chance-level agreement (about 1/C on both sides) does not count. The claim \
         \"the penalty slows the fitting of noisy labels more than of clean ones\" is \
         R_baseline > R_penalty over seeds: *supports* when an exact one-sided permutation test \
         over the runs' ratios gives p ≤ {ALPHA}, *does not support* when the whole {:.0}% \
         bootstrap interval of mean R_baseline − mean R_penalty is at or below 0, *undecided* \
         otherwise and whenever a side has fewer than 3 seeds (`breakeven_runner::evidence`, whose tests show \
         the rule says *supports* for at most 5% of draws without an effect).\n",
        100.0 * MIN_LEARNED,
        100.0 * INTERVAL_LEVEL
    );
    if args.profile == "smoke" {
        page.push_str(
            "- Smoke scale: a few dozen steps on 128 images, where penalized runs barely leave \
             chance level; the verdicts below check the pipeline, not the claim.\n",
        );
    }

    for o in &outcomes {
        let Some(runs) = row_runs(&mut page, o) else {
            continue;
        };
        let chosen_of = |column: &str| match &o.state {
            RowState::Ran { cells, .. } => cells
                .iter()
                .find(|c| c.column == column)
                .and_then(|c| c.chosen),
            RowState::Missing { .. } => None,
        };
        let mut fits = Vec::new();
        for (spec, summary) in runs {
            let Some(summary) = summary else { continue };
            let records = run_records(spec)?;
            let alpha = if spec.config.penalty.kind.is_none() {
                String::new()
            } else {
                format!(", α={}", spec.config.penalty.alpha)
            };
            fits.push(RunFit {
                column: spec.column.clone(),
                chosen: chosen_of(&spec.column) == Some(spec.hyper),
                label: format!("{}{alpha}, seed {}", column_label(&exp, spec), spec.seed),
                seed: spec.seed,
                noise: spec.config.data.label_noise,
                wall_s: summary.wall_s,
                curve: fit_curve(&records),
                records,
                test_acc: summary.final_metrics.test_acc.map(|a| 100.0 * a),
            });
        }
        write_row(
            &mut page,
            &out_dir,
            &stem,
            &o.row.key,
            &o.row.setting,
            &fits,
        )?;
    }
    write_page(&out_dir, &stem, &page)
}

/// The per-run table, the plots and the verdicts of one noise level.
fn write_row(
    page: &mut String,
    out_dir: &Path,
    stem: &str,
    key: &str,
    setting: &str,
    fits: &[RunFit],
) -> Result<()> {
    // Plot titles must fit the figure: the noise level names the row.
    let short = fits.first().map_or(setting.to_string(), |f| {
        format!("{:.0}% label noise", 100.0 * f.noise)
    });
    let wall: f64 = fits.iter().map(|f| f.wall_s).sum();
    let _ = writeln!(
        page,
        "Training wall time of these runs: {:.1} min.\n",
        wall / 60.0
    );
    page.push_str(
        "Every finished run: final training accuracy (%) on the tracking subset, split by the noise \
         mask, and final test accuracy (%); * marks the column's chosen setting.\n\n\
         | Run | clean | noisy (trained labels) | noisy (true labels) | test |\n\
         |---|---|---|---|---|\n",
    );
    let pct = |a: Option<f64>| a.map_or("—".into(), |a| format!("{:.1}", 100.0 * a));
    for f in fits {
        let last = f.records.last();
        let _ = writeln!(
            page,
            "| {}{} | {} | {} | {} | {} |",
            f.label,
            if f.chosen { " *" } else { "" },
            pct(last.and_then(|r| r.train_acc_clean)),
            pct(last.and_then(|r| r.train_acc_noisy)),
            pct(last.and_then(|r| r.train_acc_noisy_true)),
            f.test_acc.map_or("—".into(), |a| format!("{a:.1}")),
        );
    }

    // The chosen settings' first seed: noisy fit against clean fit on one plot (the claim in
    // one picture; the diagonal marks fitting wrong labels as fast as right ones), and each
    // one's three accuracies over epochs.
    let first_seed = fits.iter().map(|f| f.seed).min().unwrap_or(0);
    let shown: Vec<&RunFit> = fits
        .iter()
        .filter(|f| f.chosen && f.seed == first_seed)
        .collect();
    let mut series: Vec<(String, Vec<(f64, f64)>)> = shown
        .iter()
        .map(|f| {
            let pts = f.curve.iter().map(|p| (100.0 * p.1, 100.0 * p.2)).collect();
            (f.label.clone(), pts)
        })
        .collect();
    series.push(("equal fit (y = x)".into(), vec![(0.0, 0.0), (100.0, 100.0)]));
    let fit_file = format!("{stem}-{key}-noisy-vs-clean.svg");
    write_plot(
        &out_dir.join(&fit_file),
        &line_chart(
            &format!("{short}: noisy vs clean training accuracy"),
            "clean examples fitted (training accuracy, %)",
            "noisy examples fitted to their wrong labels (%)",
            &series,
        ),
    )?;
    let _ = writeln!(page, "\n![noisy vs clean]({fit_file})\n");
    for f in &shown {
        let over = |g: fn(&MetricsRecord) -> Option<f64>| -> Vec<(f64, f64)> {
            f.records
                .iter()
                .filter_map(|r| Some((r.epoch, 100.0 * g(r)?)))
                .collect()
        };
        let series = vec![
            ("clean".to_string(), over(|r| r.train_acc_clean)),
            (
                "noisy (wrong labels)".to_string(),
                over(|r| r.train_acc_noisy),
            ),
            (
                "noisy (true labels)".to_string(),
                over(|r| r.train_acc_noisy_true),
            ),
        ];
        let file = format!("{stem}-{key}-{}.svg", f.column);
        write_plot(
            &out_dir.join(&file),
            &line_chart(
                &format!("{short}, {}: training accuracy", f.label),
                "epoch",
                "training accuracy on the tracking subset (%)",
                &series,
            ),
        )?;
        let _ = writeln!(page, "![{}]({file})\n", f.label);
    }

    page.push_str("### Claim (computed from the chosen settings' seeds)\n\n");
    let curves = |column: &str| -> Vec<&[FitPoint]> {
        fits.iter()
            .filter(|f| f.chosen && f.column == column)
            .map(|f| f.curve.as_slice())
            .collect()
    };
    let baseline = curves("baseline");
    let mut columns: Vec<&str> = fits
        .iter()
        .filter(|f| f.chosen && f.column != "baseline")
        .map(|f| f.column.as_str())
        .collect();
    columns.dedup();
    for (k, column) in columns.into_iter().enumerate() {
        let pen = curves(column);
        let name = fits
            .iter()
            .find(|f| f.chosen && f.column == column)
            .map_or(column.to_string(), |f| {
                f.label.split(", seed").next().unwrap_or(column).to_string()
            });
        let claim = format!("{name} slows the fitting of noisy labels more than of clean ones");
        match memorization_evidence(&baseline, &pen, k as u64) {
            Some(m) => {
                let e = &m.evidence;
                let mean = |r: &[f64]| r.iter().sum::<f64>() / r.len() as f64;
                let _ = writeln!(
                    page,
                    "- **{claim}: {}** ({}). At clean training accuracy {:.1}%: R_baseline = {:.3} \
                     ({} seeds), R_penalty = {:.3} ({} seeds); difference {:.3}, {:.0}% interval {}, \
                     p = {}.",
                    e.word.as_str(),
                    e.reason,
                    100.0 * m.level,
                    mean(&m.baseline_ratios),
                    m.baseline_ratios.len(),
                    mean(&m.penalty_ratios),
                    m.penalty_ratios.len(),
                    e.estimate,
                    100.0 * INTERVAL_LEVEL,
                    e.interval
                        .map_or("—".into(), |(lo, hi)| format!("[{lo:.3}, {hi:.3}]")),
                    e.p_value.map_or("—".into(), |p| format!("{p:.3}")),
                );
            }
            None => {
                let _ = writeln!(
                    page,
                    "- **{claim}: undecided** (no baseline run, the runs learned too little for a \
                     matched point, or no run had a defined memorization ratio there)."
                );
            }
        }
    }
    Ok(())
}
