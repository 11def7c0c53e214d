//! The memorization page (`cargo xtask reproduce memorization`): memorization under label
//! noise (SCIENCE.md §5.3): clean vs noisy training accuracy per run, the noisy fit of every
//! run against its clean fit, and verdicts computed by `memorization::memorization_evidence`.

use std::fmt::Write as _;

use breakeven_runner::metrics::MetricsRecord;
use breakeven_runner::sweep::{Experiment, Profile};
use breakeven_runner::table::{RowOutcome, RowState};
use breakeven_runner::RunError;

use crate::evidence::{ALPHA, INTERVAL_LEVEL};
use crate::memorization::{fit_curve, memorization_evidence, FitPoint, MIN_LEARNED};
use crate::page::{column_label, records_of, row_runs, Page, Records, Stamp};
use crate::plot::line_chart;

/// The experiment file (`experiments/memorization.toml`).
pub const DEFINITION: &str = "memorization";

/// One finished run of a noise level.
#[derive(Debug, Clone)]
pub struct RunFit {
    pub column: String,
    /// The column's chosen setting (α chosen on validation; the baseline's one setting).
    pub chosen: bool,
    pub label: String,
    pub seed: u64,
    pub noise: f64,
    pub wall_s: f64,
    pub records: Vec<MetricsRecord>,
    pub curve: Vec<FitPoint>,
    pub test_acc: Option<f64>,
}

/// The page: one section per noise level (row of `outcomes`), every finished run read from
/// `records`.
pub fn page(
    stamp: &Stamp,
    exp: &Experiment,
    profile: &Profile,
    outcomes: &[RowOutcome],
    records: &Records,
) -> Result<Page, RunError> {
    let mut out = stamp.page(
        DEFINITION,
        DEFINITION,
        (&exp.title, &exp.source),
        &profile.base,
        &profile.description,
    );
    let page = &mut out.markdown;
    // The rule still names `breakeven_runner::evidence` (now `breakeven_report::evidence`): the
    // committed pages re-render byte for byte; the next deliberate regeneration may update it.
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
    if stamp.profile == "smoke" {
        page.push_str(
            "- Smoke scale: a few dozen steps on 128 images, where penalized runs barely leave \
             chance level; the verdicts below check the pipeline, not the claim.\n",
        );
    }

    for o in outcomes {
        let Some(runs) = row_runs(&mut out.markdown, o) else {
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
            let records = records_of(records, &spec.dir)?.to_vec();
            let alpha = if spec.config.penalty.kind.is_none() {
                String::new()
            } else {
                format!(", α={}", spec.config.penalty.alpha)
            };
            fits.push(RunFit {
                column: spec.column.clone(),
                chosen: chosen_of(&spec.column) == Some(spec.hyper),
                label: format!("{}{alpha}, seed {}", column_label(exp, spec), spec.seed),
                seed: spec.seed,
                noise: spec.config.data.label_noise,
                wall_s: summary.wall_s,
                curve: fit_curve(&records),
                records,
                test_acc: summary.final_metrics.test_acc.map(|a| 100.0 * a),
            });
        }
        row(&mut out, &o.row.key, &o.row.setting, &fits);
    }
    Ok(out)
}

/// The per-run table, the plots and the verdicts of one noise level.
fn row(out: &mut Page, key: &str, setting: &str, fits: &[RunFit]) {
    let page = &mut out.markdown;
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
    let fit_file = out.plot(
        &format!("{key}-noisy-vs-clean"),
        line_chart(
            &format!("{short}: noisy vs clean training accuracy"),
            "clean examples fitted (training accuracy, %)",
            "noisy examples fitted to their wrong labels (%)",
            &series,
        ),
    );
    let _ = writeln!(out.markdown, "\n![noisy vs clean]({fit_file})\n");
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
        let file = out.plot(
            &format!("{key}-{}", f.column),
            line_chart(
                &format!("{short}, {}: training accuracy", f.label),
                "epoch",
                "training accuracy on the tracking subset (%)",
                &series,
            ),
        );
        let _ = writeln!(out.markdown, "![{}]({file})\n", f.label);
    }
    let page = &mut out.markdown;

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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pages::testing::{experiment, ran, records_for, specs, stamp, summary};

    /// Clean accuracy 10 → 90% over 4 epochs; the noisy examples' fit to their wrong labels
    /// rises by `noisy_gain` per epoch.
    fn fit(noisy_gain: f64) -> Vec<MetricsRecord> {
        (0..=4)
            .map(|k| MetricsRecord {
                step: 10 * k,
                epoch: k as f64,
                train_acc_clean: Some(0.1 + 0.2 * k as f64),
                train_acc_noisy: Some(0.1 + noisy_gain * k as f64),
                train_acc_noisy_true: Some(0.1),
                ..Default::default()
            })
            .collect()
    }

    #[test]
    fn penalties_that_fit_fewer_noisy_labels_per_clean_one_are_supported_over_three_seeds() {
        let mut exp = experiment(DEFINITION);
        exp.profiles.get_mut("smoke").unwrap().seeds = vec![0, 1, 2];
        let profile = exp.profile("smoke").unwrap().clone();
        let specs = specs(&exp, "smoke");
        let mut chosen: Vec<(String, f64)> =
            specs.iter().map(|s| (s.column.clone(), s.hyper)).collect();
        chosen.dedup();
        let chosen: Vec<(&str, f64)> = chosen.iter().map(|(c, h)| (c.as_str(), *h)).collect();
        let runs = specs
            .into_iter()
            .map(|s| (s, Some(summary(0.3, 0.5))))
            .collect();
        let outcome = ran(&exp, "smoke", runs, &chosen);
        // The baseline memorizes (its ratio grows with the seed); every penalty barely does.
        let records = records_for(&outcome, |s| {
            if s.column == "baseline" {
                fit(0.1 + 0.01 * s.seed as f64)
            } else {
                fit(0.02)
            }
        });
        let out = page(&stamp("smoke"), &exp, &profile, &[outcome], &records).unwrap();
        assert_eq!(out.stem, "memorization-smoke");
        // The noisy-vs-clean plot and one per chosen column (first seed).
        let key = &exp.rows_in("smoke")[0].key;
        assert_eq!(out.plots.len(), 1 + chosen.len());
        assert_eq!(
            out.plots[0].0,
            format!("memorization-smoke-{key}-noisy-vs-clean.svg")
        );
        let md = &out.markdown;
        assert!(md.contains("Smoke scale"), "{md}");
        assert_eq!(
            md.matches("slows the fitting of noisy labels more than of clean ones: supports**")
                .count(),
            chosen.len() - 1,
            "{md}"
        );
        assert!(
            md.contains("R_baseline = 0.550 (3 seeds), R_penalty = 0.100 (3 seeds)"),
            "{md}"
        );
        // A row without finished runs has no claim lines; only the smoke page carries its note.
        let outcome = ran(&exp, "smoke", vec![], &chosen);
        let md = page(&stamp("cpu"), &exp, &profile, &[outcome], &Records::new())
            .unwrap()
            .markdown;
        assert!(
            !md.contains("Smoke scale") && !md.contains("than of clean ones:"),
            "{md}"
        );
    }
}
