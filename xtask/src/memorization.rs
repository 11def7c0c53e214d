//! `cargo xtask reproduce memorization`: memorization under label noise (SCIENCE.md §5.3)
//! through the table1 sweep machinery: clean vs noisy training accuracy per run, the noisy fit
//! of every run against its clean fit, and verdicts computed by `breakeven_runner::memorization`.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Result;
use breakeven_runner::memorization::{
    fit_curve, matched_clean_level, memorization_verdict, noisy_fit_at, FitPoint, MIN_LEARNED,
    RATIO_THRESHOLD,
};
use breakeven_runner::metrics::MetricsRecord;
use breakeven_runner::plot::line_chart;
use breakeven_runner::TrainOptions;

use crate::reproduce::{
    claim_line, column_label, out_dir, page_head, profile_device, row_runs, run_definition,
    run_records, write_page, write_plot, ReproduceArgs,
};

/// What a verdict line says when the runs cannot decide a claim.
const UNDECIDED: &str = "undecided: no baseline run of this seed, the runs learned too little \
             for a matched point, or the baseline had fitted no noisy example by then.";

/// One finished run of a noise level.
struct RunFit {
    column: String,
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
         - Verdict rule [ours]: each penalized run is compared with the baseline run of its seed at \
         a matched point, the lower of the two runs' best clean training accuracies (so both reach \
         it; it must be at least {:.0} points above their initial clean accuracy). Matching pairs, \
         not the whole noise level, keeps the slowest run from setting a level at which no run has \
         begun to memorize (our first rule, replaced after the first cpu results left every verdict \
         undecided that way). Each run is read where its clean accuracy first \
         reaches that level (linear interpolation between log points), giving its memorization \
         ratio R = (noisy accuracy − initial noisy accuracy) / (clean accuracy − initial clean \
         accuracy): wrong labels fitted per right label fitted, gains since initialization so that \
         chance-level agreement (about 1/C on both sides) does not count. A penalty slows memorization more than clean \
         learning when R_penalty ≤ {RATIO_THRESHOLD} · R_baseline (same seed).",
        100.0 * MIN_LEARNED
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
        let mut fits = Vec::new();
        for (spec, summary) in runs {
            let Some(summary) = summary else { continue };
            let records = run_records(spec)?;
            let alpha = if spec.config.penalty.kind == "none" {
                String::new()
            } else {
                format!(", α={}", spec.config.penalty.alpha)
            };
            fits.push(RunFit {
                column: spec.column.clone(),
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
    let baseline_of = |f: &RunFit| {
        fits.iter()
            .find(|b| b.column == "baseline" && b.seed == f.seed)
    };
    // The matched clean level of a penalized run and its baseline (`None` for the baseline).
    let level_of = |f: &RunFit| {
        let b = baseline_of(f).filter(|_| f.column != "baseline")?;
        matched_clean_level(&[&b.curve, &f.curve])
    };
    let wall: f64 = fits.iter().map(|f| f.wall_s).sum();
    let _ = writeln!(
        page,
        "Training wall time of these runs: {:.1} min.\n",
        wall / 60.0
    );
    page.push_str(
        "Final training accuracy (%) on the tracking subset, final test accuracy (%), and the \
         noisy accuracy (%) of the penalized run and of its baseline at their matched clean level, with both memorization ratios R.\n\n\
         | Run | clean | noisy (trained labels) | noisy (true labels) | test | noisy at the matched point |\n\
         |---|---|---|---|---|---|\n",
    );
    let pct = |a: Option<f64>| a.map_or("—".into(), |a| format!("{:.1}", 100.0 * a));
    for f in fits {
        let last = f.records.last();
        let r = |m: &breakeven_runner::memorization::MatchedFit| {
            m.ratio().map_or("—".into(), |r| format!("{r:.3}"))
        };
        let matched = level_of(f)
            .and_then(|l| {
                let p = noisy_fit_at(&f.curve, l)?;
                let b = noisy_fit_at(&baseline_of(f)?.curve, l)?;
                Some(format!(
                    "at clean {:.1}%: {:.1} (R = {}) vs baseline {:.1} (R = {})",
                    100.0 * l,
                    100.0 * p.noisy,
                    r(&p),
                    100.0 * b.noisy,
                    r(&b)
                ))
            })
            .unwrap_or_else(|| "—".into());
        let _ = writeln!(
            page,
            "| {} | {} | {} | {} | {} | {matched} |",
            f.label,
            pct(last.and_then(|r| r.train_acc_clean)),
            pct(last.and_then(|r| r.train_acc_noisy)),
            pct(last.and_then(|r| r.train_acc_noisy_true)),
            f.test_acc.map_or("—".into(), |a| format!("{a:.1}")),
        );
    }

    // Noisy fit against clean fit, every run on one plot: the claim in one picture. The
    // diagonal marks fitting wrong labels as fast as right ones.
    let mut series: Vec<(String, Vec<(f64, f64)>)> = fits
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
    // Per run: the three accuracies over epochs.
    for (i, f) in fits.iter().enumerate() {
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
        let file = format!("{stem}-{key}-{}-{i}.svg", f.column);
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

    page.push_str("### Claim (verdicts computed from the runs above)\n\n");
    let claim = "The penalty slows the learning of noisy examples more than that of clean ones";
    for f in fits.iter().filter(|f| f.column != "baseline") {
        let v = baseline_of(f).zip(level_of(f)).and_then(|(b, level)| {
            memorization_verdict(
                &noisy_fit_at(&b.curve, level)?,
                &noisy_fit_at(&f.curve, level)?,
            )
        });
        claim_line(
            page,
            &format!("{claim} ({})", f.label),
            v.as_ref(),
            UNDECIDED,
        );
    }
    Ok(())
}
