//! The early-phase page (`cargo xtask reproduce early-phase`, SCIENCE.md §5.6): SimpleCNN on
//! CIFAR-10 at η = 0.1 and η = 0.01 until 65% training accuracy, each checkpoint embedded by
//! its softmax predictions on a fixed test subset (`breakeven_runner::early_phase`), PCA to
//! 2-D, scatter plots coloured by λ_K^1 and by training accuracy, and verdicts computed by
//! `early_phase`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;

use breakeven_runner::early_phase::{Trajectory, TrajectoryPoint};
use breakeven_runner::rundir::Summary;
use breakeven_runner::sweep::{Experiment, Profile};
use breakeven_runner::table::RowOutcome;
use breakeven_runner::RunError;

use crate::claims::sig4;
use crate::early_phase::{
    lambda_ratio_verdict, match_runs, matched_levels, separation_verdict, LAMBDA_RATIO_THRESHOLD,
};
use crate::page::{claim_line, column_label, row_runs, Page, Stamp};
use crate::pca::pca_2d;
use crate::plot::{scatter_chart, Marker, ScatterSeries};

/// The experiment file (`experiments/early-phase.toml`).
pub const DEFINITION: &str = "early-phase";

/// The embedded checkpoints of every finished run, by run directory.
pub type Trajectories = BTreeMap<PathBuf, Trajectory>;

/// What a verdict line says when the runs cannot decide a claim.
const UNDECIDED: &str = "not enough matched accuracy levels to decide.";

/// Matched training-accuracy levels: from 20% (well above chance, 10%) in steps of 5%.
const LEVEL_START: f64 = 0.20;
const LEVEL_STEP: f64 = 0.05;

/// One finished run and its trajectory.
#[derive(Debug, Clone)]
pub struct Run {
    pub label: String,
    pub lr: f64,
    pub summary: Summary,
    pub classes: usize,
    pub points: Vec<TrajectoryPoint>,
}

/// The page: one section per row of `outcomes`, every finished run's checkpoints from
/// `trajectories`.
pub fn page(
    stamp: &Stamp,
    exp: &Experiment,
    profile: &Profile,
    outcomes: &[RowOutcome],
    trajectories: &Trajectories,
) -> Result<Page, RunError> {
    let mut out = stamp.page(
        DEFINITION,
        DEFINITION,
        (&exp.title, &exp.source),
        &profile.base,
        &profile.description,
    );
    let page = &mut out.markdown;
    page.push_str("- Embedding: each kept checkpoint's softmax outputs on the run's fixed test subset (the first `data.test_subset` test images), concatenated into one vector; PCA (exact, f64, Gram matrix + Jacobi) of the checkpoints of both runs together, 2 components. Training accuracy = accuracy at the checkpoint on the fixed measurement subset of training images (`tracking.measure_subset`); λ_K^1 = largest eigenvalue of the gradient covariance from `tracking.k_examples` per-example gradients of that subset (SCIENCE.md §2), logged at the same step.\n");
    let _ = writeln!(
        page,
        "- Matched accuracy: levels from {:.0}% in steps of {:.0}% up to the lower of the two runs' highest training accuracy; at each level the FIRST checkpoint of each run at or above it.",
        100.0 * LEVEL_START,
        100.0 * LEVEL_STEP
    );

    for o in outcomes {
        let Some(specs) = row_runs(&mut out.markdown, o) else {
            continue;
        };
        let mut runs = Vec::new();
        for (spec, summary) in specs {
            let Some(summary) = summary else { continue };
            let t = trajectories.get(&spec.dir).ok_or_else(|| {
                RunError::Other(format!(
                    "no embedded checkpoints for run {}",
                    spec.dir.display()
                ))
            })?;
            runs.push(Run {
                label: column_label(exp, spec).to_string(),
                lr: spec.config.optim.lr,
                summary: summary.clone(),
                classes: t.classes,
                points: t.points.clone(),
            });
        }
        row(&mut out, &o.row.key, &o.row.setting, &runs)?;
    }
    Ok(out)
}

/// The run table, the plots and the verdicts of one row (one large-η and one small-η run).
fn row(out: &mut Page, key: &str, setting: &str, runs: &[Run]) -> Result<(), RunError> {
    let page = &mut out.markdown;
    page.push_str("| Run | status | steps (epochs) | checkpoints embedded | training acc. at the last checkpoint (%) | final train / test acc. (%) | max λ_K^1 |\n|---|---|---|---|---|---|---|\n");
    for r in runs {
        let f = |a: Option<f64>| a.map_or("—".into(), |a| format!("{:.2}", 100.0 * a));
        let max_l = r
            .points
            .iter()
            .filter_map(|p| p.lambda_k1)
            .fold(f64::NAN, f64::max);
        let _ = writeln!(
            page,
            "| {} (η={}) | {:?} | {} ({:.2}) | {} | {} | {} / {} | {} |",
            r.label,
            r.lr,
            r.summary.status,
            r.summary.steps,
            r.summary.epochs,
            r.points.len(),
            f(r.points.last().map(|p| p.train_acc)),
            f(r.summary.final_metrics.train_acc),
            f(r.summary.final_metrics.test_acc),
            sig4(max_l)
        );
    }
    let (Some(large), Some(small)) = (
        runs.iter().max_by(|a, b| a.lr.total_cmp(&b.lr)),
        runs.iter().min_by(|a, b| a.lr.total_cmp(&b.lr)),
    ) else {
        page.push_str("\nNo finished runs to embed.\n");
        return Ok(());
    };
    if large.lr == small.lr || large.points.is_empty() || small.points.is_empty() {
        page.push_str("\nNeeds two finished runs at different learning rates with checkpoints.\n");
        return Ok(());
    }
    let classes = large.classes;
    let len = large.points[0].predictions.len();
    if let Some(r) = runs
        .iter()
        .find(|r| r.classes != classes || r.points.iter().any(|p| p.predictions.len() != len))
    {
        return Err(RunError::Other(format!(
            "run {} has predictions of another shape than run {} (different test subsets or class counts)",
            r.label,
            large.label
        )));
    }

    // PCA of both trajectories together.
    let rows: Vec<Vec<f64>> = runs
        .iter()
        .flat_map(|r| r.points.iter().map(|p| p.predictions.clone()))
        .collect();
    let pca = pca_2d(&rows)?;
    let by_lambda = scatter_series(runs, &pca.scores, |p| {
        p.lambda_k1
            .filter(|l| *l > 0.0)
            .map_or(f64::NAN, f64::log10)
    });
    let by_acc = scatter_series(runs, &pca.scores, |p| 100.0 * p.train_acc);
    let x_label = format!(
        "PC1 of test-set predictions ({:.1}% of variance)",
        100.0 * pca.explained[0]
    );
    let y_label = format!("PC2 ({:.1}% of variance)", 100.0 * pca.explained[1]);
    let lambda_file = out.plot(
        &format!("{key}-pca-lambda"),
        scatter_chart(
            "Checkpoints embedded by test predictions, coloured by λ_K^1",
            &x_label,
            &y_label,
            "log10 λ_K^1",
            &by_lambda,
            true,
        ),
    );
    let acc_file = out.plot(
        &format!("{key}-pca-accuracy"),
        scatter_chart(
            "Checkpoints embedded by test predictions, by training accuracy",
            &x_label,
            &y_label,
            "training accuracy (%)",
            &by_acc,
            true,
        ),
    );
    // Accuracy is not monotone along SGD: points (coloured by epoch), not a line; λ_K^1 spans
    // decades, so on a log axis.
    let curves: Vec<ScatterSeries> = runs
        .iter()
        .enumerate()
        .map(|(i, r)| ScatterSeries {
            label: format!("{} (η={})", r.label, r.lr),
            marker: Marker::nth(i),
            points: r
                .points
                .iter()
                .filter_map(|p| {
                    let l = p.lambda_k1.filter(|l| *l > 0.0)?;
                    Some((100.0 * p.train_acc, l, p.epoch))
                })
                .collect(),
        })
        .collect();
    let curve_file = out.plot(
        &format!("{key}-lambda-vs-accuracy"),
        scatter_chart(
            &format!("{setting}: λ_K^1 against training accuracy"),
            "training accuracy (%) at the checkpoint",
            "λ_K^1",
            "epoch",
            &curves,
            false,
        )
        .log_y(),
    );
    let page = &mut out.markdown;
    let png = |f: &str| f.replace(".svg", ".png");
    let _ = writeln!(
        page,
        "\nPCA: PC1 explains {:.1}% and PC2 {:.1}% of the variance of the {} checkpoints' predictions ({} test images × {classes} classes each). Circles: {}; triangles: {} (dashed line); the shared initialization is the common starting point.\n",
        100.0 * pca.explained[0],
        100.0 * pca.explained[1],
        rows.len(),
        rows[0].len() / classes,
        runs[0].label,
        runs.get(1).map_or("—", |r| r.label.as_str()),
    );
    for (file, alt) in [
        (&lambda_file, "by λ_K^1"),
        (&acc_file, "by training accuracy"),
        (&curve_file, "λ_K^1 vs accuracy"),
    ] {
        let _ = writeln!(page, "![{alt}]({file}) ([PNG]({}))\n", png(file));
    }

    // Matched training accuracy.
    let levels = matched_levels(&small.points, &large.points, LEVEL_START, LEVEL_STEP);
    let matched = match_runs(&small.points, &large.points, &levels, classes);
    let _ = writeln!(
        page,
        "### At matched training accuracy\n\n| level (%) | step {s} | step {l} | λ_K^1 {s} | λ_K^1 {l} | ratio {s} / {l} | prediction distance |\n|---|---|---|---|---|---|---|",
        s = small.label,
        l = large.label
    );
    for m in &matched {
        let (a, b) = (&small.points[m.small], &large.points[m.large]);
        let l = |p: &TrajectoryPoint| p.lambda_k1.map_or("—".into(), sig4);
        let _ = writeln!(
            page,
            "| {:.0} | {} | {} | {} | {} | {} | {} |",
            100.0 * m.level,
            a.step,
            b.step,
            l(a),
            l(b),
            m.lambda_ratio.map_or("—".into(), sig4),
            sig4(m.distance)
        );
    }
    page.push_str("\nPrediction distance: root-mean-square over the test images of the L2 distance between the two checkpoints' softmax vectors (in the full prediction space, not the 2-D projection).\n\n");

    page.push_str("### Claims (verdicts computed from the runs above)\n\n");
    claim_line(
        page,
        &format!("At matched training accuracy the small-η run has the larger λ_K^1 (median ratio ≥ {LAMBDA_RATIO_THRESHOLD})"),
        lambda_ratio_verdict(&matched).as_ref(),
        UNDECIDED,
    );
    claim_line(
        page,
        "The two trajectories separate as training proceeds (distance at matched accuracy rises with the level: Spearman ρ ≥ 0.5 and last/first ≥ 2)",
        separation_verdict(&matched).as_ref(),
        UNDECIDED,
    );
    Ok(())
}

/// One scatter series per run (marker by run), coloured by `colour`; `scores` holds the PCA
/// scores of every run's points in order.
fn scatter_series(
    runs: &[Run],
    scores: &[[f64; 2]],
    colour: impl Fn(&TrajectoryPoint) -> f64,
) -> Vec<ScatterSeries> {
    let mut k = 0;
    runs.iter()
        .enumerate()
        .map(|(i, r)| ScatterSeries {
            label: format!("{} (η={})", r.label, r.lr),
            marker: Marker::nth(i),
            points: r
                .points
                .iter()
                .map(|p| {
                    let s = scores.get(k).copied().unwrap_or([f64::NAN; 2]);
                    k += 1;
                    (s[0], s[1], colour(p))
                })
                .collect(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pages::testing::{experiment, ran, specs, stamp, summary};

    /// A trajectory through accuracies 10 … 70% whose predictions (2 test images × 2 classes)
    /// move along `direction` by `speed` per point, with λ_K^1 = `lambda` throughout.
    fn trajectory(speed: f64, direction: [f64; 4], lambda: f64) -> Trajectory {
        let points = (0..7)
            .map(|k| TrajectoryPoint {
                step: 10 * k,
                epoch: k as f64,
                train_acc: 0.1 + 0.1 * k as f64,
                lambda_k1: Some(lambda),
                predictions: direction
                    .iter()
                    .map(|d| 0.25 + speed * k as f64 * d)
                    .collect(),
            })
            .collect();
        Trajectory { classes: 2, points }
    }

    #[test]
    fn trajectories_that_part_with_a_larger_small_eta_lambda_support_both_claims() {
        let exp = experiment(DEFINITION);
        let profile = exp.profile("smoke").unwrap().clone();
        let specs = specs(&exp, "smoke");
        let mut trajectories = Trajectories::new();
        for s in &specs {
            // The small-η run has 4× the λ_K^1; the two move apart in prediction space.
            let t = if s.column == "small" {
                trajectory(0.01, [1.0, -1.0, 1.0, -1.0], 4.0)
            } else {
                trajectory(0.01, [-1.0, 1.0, -1.0, 1.0], 1.0)
            };
            trajectories.insert(s.dir.clone(), t);
        }
        let runs = specs
            .into_iter()
            .map(|s| (s, Some(summary(0.4, 0.7))))
            .collect();
        let outcome = ran(&exp, "smoke", runs, &[]);
        let page = page(&stamp("smoke"), &exp, &profile, &[outcome], &trajectories).unwrap();
        let key = &exp.rows_in("smoke")[0].key;
        let files: Vec<String> = page.plots.iter().map(|p| p.0.clone()).collect();
        assert_eq!(
            files,
            ["pca-lambda", "pca-accuracy", "lambda-vs-accuracy"]
                .map(|s| format!("early-phase-smoke-{key}-{s}.svg"))
        );
        let md = &page.markdown;
        // Levels 20, 25, … 70%: ratio 4 at each.
        assert!(
            md.contains(
                "training-accuracy levels of λ_K^1(small η) / λ_K^1(large η) = 4.000 (≥ 1.5)"
            ),
            "{md}"
        );
        assert_eq!(md.matches("→ **supports**.").count(), 2, "{md}");
        // The first point is shared (the common initialization) and all 14 are embedded.
        assert!(
            md.contains(
                "variance of the 14 checkpoints' predictions (2 test images × 2 classes each)"
            ),
            "{md}"
        );
    }

    #[test]
    fn predictions_of_another_shape_are_an_error_naming_the_runs() {
        let a = Run {
            label: "large η".into(),
            lr: 0.1,
            summary: summary(0.4, 0.7),
            classes: 2,
            points: trajectory(0.01, [1.0; 4], 1.0).points,
        };
        let mut b = a.clone();
        (b.label, b.lr) = ("small η".into(), 0.01);
        b.points[3].predictions.pop();
        let mut page = Page::new("p".into(), String::new());
        let err = row(&mut page, "k", "s", &[a.clone(), b])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("run small η has predictions of another shape than run large η"),
            "{err}"
        );
        // One learning rate only: nothing to compare, no plots.
        row(&mut page, "k", "s", &[a.clone(), a]).unwrap();
        assert!(page
            .markdown
            .contains("Needs two finished runs at different learning rates"));
        assert!(page.plots.is_empty());
    }
}
