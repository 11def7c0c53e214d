//! `cargo xtask reproduce early-phase`: the early-phase picture (SCIENCE.md §5.6). SimpleCNN
//! on CIFAR-10 at η = 0.1 and η = 0.01 until 65% training accuracy through the sweep
//! machinery (every checkpoint kept); each checkpoint embedded by its softmax predictions on
//! a fixed test subset, PCA to 2-D, scatter plots coloured by λ_K^1 and by training accuracy,
//! and verdicts computed by `breakeven_runner::early_phase`.

use std::fmt::Write as _;

use anyhow::{bail, Context, Result};
use breakeven_runner::claims::sig4;
use breakeven_runner::early_phase::{
    lambda_ratio_verdict, match_runs, matched_levels, separation_verdict, TrajectoryPoint,
    LAMBDA_RATIO_THRESHOLD,
};
use breakeven_runner::pca::pca_2d;
use breakeven_runner::plot::{scatter_chart, Marker, ScatterSeries};
use breakeven_runner::rundir::Summary;
use breakeven_runner::TrainOptions;

use crate::reproduce::{
    claim_line, column_label, out_dir, page_head, profile_device, row_runs, run_definition,
    write_page, write_plot, ReproduceArgs,
};

/// What a verdict line says when the runs cannot decide a claim.
const UNDECIDED: &str = "not enough matched accuracy levels to decide.";

/// Matched training-accuracy levels: from 20% (well above chance, 10%) in steps of 5%.
const LEVEL_START: f64 = 0.20;
const LEVEL_STEP: f64 = 0.05;

/// One finished run and its trajectory.
struct Run {
    label: String,
    lr: f64,
    summary: Summary,
    classes: usize,
    points: Vec<TrajectoryPoint>,
}

pub fn reproduce(args: &ReproduceArgs) -> Result<()> {
    // Every checkpoint is kept: each one becomes a point of the embedding.
    let options = TrainOptions {
        keep_all_checkpoints: true,
        ..Default::default()
    };
    let (exp, profile, outcomes) = run_definition(args, "early-phase", &options)?;

    let out_dir = out_dir(args)?;
    let stem = format!("early-phase-{}", args.profile);
    let device = profile_device(args, &profile.base);
    let mut page = page_head(args, &exp.title, &device, &profile.description, &exp.source);
    page.push_str("- Embedding: each kept checkpoint's softmax outputs on the run's fixed test subset (the first `data.test_subset` test images), concatenated into one vector; PCA (exact, f64, Gram matrix + Jacobi) of the checkpoints of both runs together, 2 components. Training accuracy = accuracy at the checkpoint on the fixed measurement subset of training images (`tracking.measure_subset`); λ_K^1 = largest eigenvalue of the gradient covariance from `tracking.k_examples` per-example gradients of that subset (SCIENCE.md §2), logged at the same step.\n");
    let _ = writeln!(
        page,
        "- Matched accuracy: levels from {:.0}% in steps of {:.0}% up to the lower of the two runs' highest training accuracy; at each level the FIRST checkpoint of each run at or above it.",
        100.0 * LEVEL_START,
        100.0 * LEVEL_STEP
    );

    for o in &outcomes {
        let Some(specs) = row_runs(&mut page, o) else {
            continue;
        };
        let mut runs = Vec::new();
        for (spec, summary) in specs {
            let Some(summary) = summary else { continue };
            let t = breakeven_runner::early_phase::trajectory(&spec.dir, o.data_dir.as_deref())
                .with_context(|| format!("embedding the checkpoints of {}", spec.dir.display()))?;
            runs.push(Run {
                label: column_label(&exp, spec).to_string(),
                lr: spec.config.optim.lr,
                summary: summary.clone(),
                classes: t.classes,
                points: t.points,
            });
        }
        write_row(
            &mut page,
            &out_dir,
            &stem,
            &o.row.key,
            &o.row.setting,
            &runs,
        )?;
    }
    write_page(&out_dir, &stem, &page)
}

/// The run table, the plots and the verdicts of one row (one large-η and one small-η run).
fn write_row(
    page: &mut String,
    out_dir: &std::path::Path,
    stem: &str,
    key: &str,
    setting: &str,
    runs: &[Run],
) -> Result<()> {
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
        bail!(
            "run {} has predictions of another shape than run {} (different test subsets or class counts)",
            r.label,
            large.label
        );
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
    let lambda_file = format!("{stem}-{key}-pca-lambda.svg");
    write_plot(
        &out_dir.join(&lambda_file),
        &scatter_chart(
            "Checkpoints embedded by test predictions, coloured by λ_K^1",
            &x_label,
            &y_label,
            "log10 λ_K^1",
            &by_lambda,
            true,
        ),
    )?;
    let acc_file = format!("{stem}-{key}-pca-accuracy.svg");
    write_plot(
        &out_dir.join(&acc_file),
        &scatter_chart(
            "Checkpoints embedded by test predictions, by training accuracy",
            &x_label,
            &y_label,
            "training accuracy (%)",
            &by_acc,
            true,
        ),
    )?;
    let curve_file = format!("{stem}-{key}-lambda-vs-accuracy.svg");
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
    write_plot(
        &out_dir.join(&curve_file),
        &scatter_chart(
            &format!("{setting}: λ_K^1 against training accuracy"),
            "training accuracy (%) at the checkpoint",
            "λ_K^1",
            "epoch",
            &curves,
            false,
        )
        .log_y(),
    )?;
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
