//! The early-phase page (`cargo xtask reproduce early-phase`, SCIENCE.md §5.6): SimpleCNN on
//! CIFAR-10 at η = 0.1 and η = 0.01 until 65% training accuracy, each checkpoint embedded by
//! its softmax predictions on a fixed test subset (`breakeven_runner::early_phase`), PCA to
//! 2-D, scatter plots coloured by λ_K^1 and by training accuracy, and verdicts computed by
//! `early_phase`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;

use breakeven_runner::early_phase::{Trajectory, TrajectoryPoint};
use breakeven_runner::rundir::{RunStatus, Summary};
use breakeven_runner::sweep::{Experiment, Profile};
use breakeven_runner::table::RowOutcome;
use breakeven_runner::RunError;

use crate::claims::sig4;
use crate::early_phase::{
    at_level, match_runs, matched_levels, prediction_distance, top_common_level,
};
use crate::evidence::greater;
use crate::page::{column_label, evidence_line, row_runs, Page, Stamp};
use crate::pca::pca_2d;
use crate::plot::{scatter_chart, Marker, ScatterSeries};

/// The experiment file (`experiments/early-phase.toml`).
pub const DEFINITION: &str = "early-phase";

/// The embedded checkpoints of every finished run, by run directory.
pub type Trajectories = BTreeMap<PathBuf, Trajectory>;

/// What a verdict line says when the runs cannot decide a claim.
const UNDECIDED: &str =
    "no accuracy level that every compared run reaches, or a run without λ_K^1 there; cannot decide.";

/// The column of the control runs: the large η from the same initialization on the same
/// examples with another mini-batch order (`data.order_seed`).
pub const CONTROL: &str = "control";

/// Matched training-accuracy levels: from 20% (well above chance, 10%) in steps of 5%.
const LEVEL_START: f64 = 0.20;
const LEVEL_STEP: f64 = 0.05;

/// One finished run and its trajectory.
#[derive(Debug, Clone)]
pub struct Run {
    pub label: String,
    /// The column key: `large`, `small` or [`CONTROL`].
    pub column: String,
    pub lr: f64,
    pub seed: u64,
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
                label: if profile.seeds.len() > 1 {
                    format!("{}, seed {}", column_label(exp, spec), spec.seed)
                } else {
                    column_label(exp, spec).to_string()
                },
                column: spec.column.clone(),
                lr: spec.config.optim.lr,
                seed: spec.seed,
                summary: summary.clone(),
                classes: t.classes,
                points: t.points.clone(),
            });
        }
        row(&mut out, &o.row.key, &o.row.setting, &runs)?;
    }
    Ok(out)
}

/// How a run ended, against the stopping rule.
fn status(r: &Run) -> &'static str {
    match r.summary.status {
        RunStatus::Converged => "reached",
        RunStatus::Capped => "**not reached** (epoch cap)",
        RunStatus::Diverged => "**diverged**",
    }
}

/// The run table, the plots of the first seed and the verdicts over seeds of one row.
fn row(out: &mut Page, key: &str, setting: &str, runs: &[Run]) -> Result<(), RunError> {
    let page = &mut out.markdown;
    page.push_str("| Run | stopping rule (epoch running training accuracy) | steps (epochs) | checkpoints embedded | measurement-subset acc. at the last checkpoint (%) | final train / test acc., eval mode (%) | max λ_K^1 |\n|---|---|---|---|---|---|---|\n");
    for r in runs {
        let f = |a: Option<f64>| a.map_or("—".into(), |a| format!("{:.2}", 100.0 * a));
        let max_l = r
            .points
            .iter()
            .filter_map(|p| p.lambda_k1)
            .fold(f64::NAN, f64::max);
        let _ = writeln!(
            page,
            "| {} (η={}) | {} | {} ({:.2}) | {} | {} | {} / {} | {} |",
            r.label,
            r.lr,
            status(r),
            r.summary.steps,
            r.summary.epochs,
            r.points.len(),
            f(r.points.last().map(|p| p.train_acc)),
            f(r.summary.final_metrics.train_acc),
            f(r.summary.final_metrics.test_acc),
            sig4(max_l)
        );
    }
    page.push_str("\nThree accuracies, three columns: the stopping rule reads the running accuracy of the last epoch's mini-batches (train mode, the whole training subset); the checkpoints, the matched levels and the embedding read the fixed measurement subset in eval mode; the final accuracies are eval mode on the whole training subset and the test set. So a run that did not reach the rule can still have checkpoints above its level, and one that did can end a few points below it.\n");
    let Some(first) = runs.iter().map(|r| r.seed).min() else {
        page.push_str("\nNo finished runs to embed.\n");
        return Ok(());
    };
    let seed_runs: Vec<Run> = runs.iter().filter(|r| r.seed == first).cloned().collect();
    let pick = |col: &str| seed_runs.iter().find(|r| r.column == col);
    let (Some(large), Some(small)) = (pick("large"), pick("small")) else {
        page.push_str("\nNeeds a finished large-η and small-η run with checkpoints.\n");
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

    // PCA of the first seed's trajectories together.
    let rows: Vec<Vec<f64>> = seed_runs
        .iter()
        .flat_map(|r| r.points.iter().map(|p| p.predictions.clone()))
        .collect();
    let pca = pca_2d(&rows)?;
    let by_lambda = scatter_series(&seed_runs, &pca.scores, |p| {
        p.lambda_k1
            .filter(|l| *l > 0.0)
            .map_or(f64::NAN, f64::log10)
    });
    let by_acc = scatter_series(&seed_runs, &pca.scores, |p| 100.0 * p.train_acc);
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
    let curves: Vec<ScatterSeries> = seed_runs
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
    let names: Vec<&str> = seed_runs.iter().map(|r| r.label.as_str()).collect();
    let _ = writeln!(
        page,
        "\nThe plots show seed {first}'s runs ({}; one marker each, in that order: circles, triangles, squares). PCA: PC1 explains {:.1}% and PC2 {:.1}% of the variance of their {} checkpoints' predictions ({} test images × {classes} classes each); the shared initialization is the common starting point.\n",
        names.join("; "),
        100.0 * pca.explained[0],
        100.0 * pca.explained[1],
        rows.len(),
        rows[0].len() / classes,
    );
    for (file, alt) in [
        (&lambda_file, "by λ_K^1"),
        (&acc_file, "by training accuracy"),
        (&curve_file, "λ_K^1 vs accuracy"),
    ] {
        let _ = writeln!(page, "![{alt}]({file}) ([PNG]({}))\n", png(file));
    }

    // Matched training accuracy, first seed.
    let control = pick(CONTROL);
    let levels = matched_levels(&small.points, &large.points, LEVEL_START, LEVEL_STEP);
    let matched = match_runs(&small.points, &large.points, &levels, classes);
    let _ = writeln!(
        page,
        "### At matched training accuracy (seed {first})\n\n| level (%) | step {s} | step {l} | λ_K^1 {s} | λ_K^1 {l} | ratio {s} / {l} | prediction distance {s} ↔ {l} | control: distance {l} ↔ other batch order |\n|---|---|---|---|---|---|---|---|",
        s = small.label,
        l = large.label
    );
    for m in &matched {
        let (a, b) = (&small.points[m.small], &large.points[m.large]);
        let l = |p: &TrajectoryPoint| p.lambda_k1.map_or("—".into(), sig4);
        let ctrl = control
            .and_then(|c| at_level(&c.points, m.level))
            .map_or("—".into(), |c| {
                sig4(prediction_distance(&b.predictions, &c.predictions, classes))
            });
        let _ = writeln!(
            page,
            "| {:.0} | {} | {} | {} | {} | {} | {} | {ctrl} |",
            100.0 * m.level,
            a.step,
            b.step,
            l(a),
            l(b),
            m.lambda_ratio.map_or("—".into(), sig4),
            sig4(m.distance)
        );
    }
    page.push_str("\nPrediction distance: root-mean-square over the test images of the L2 distance between two checkpoints' softmax vectors (in the full prediction space, not the 2-D projection). The control run starts from the same weights on the same examples at the large η and differs only in the mini-batch order (`data.order_seed`): its distance to the large-η run is how far SGD's noise alone carries two trajectories.\n\n");

    verdicts(page, runs, classes);
    Ok(())
}

/// The two claims over seeds, read at the one level every compared run reaches.
fn verdicts(page: &mut String, runs: &[Run], classes: usize) {
    page.push_str("### Claims (verdicts computed from the runs above)\n\n");
    let mut seeds: Vec<u64> = runs.iter().map(|r| r.seed).collect();
    seeds.sort_unstable();
    seeds.dedup();
    let of = |col: &str, seed: u64| runs.iter().find(|r| r.column == col && r.seed == seed);
    let compared: Vec<&Run> = runs
        .iter()
        .filter(|r| ["large", "small", CONTROL].contains(&r.column.as_str()))
        .collect();
    let traj: Vec<&[TrajectoryPoint]> = compared.iter().map(|r| r.points.as_slice()).collect();
    let level = top_common_level(&traj, LEVEL_START, LEVEL_STEP);
    let converged = compared
        .iter()
        .all(|r| r.summary.status == RunStatus::Converged);
    let (mut l_small, mut l_large, mut cross, mut ctrl) = (vec![], vec![], vec![], vec![]);
    if let Some(level) = level {
        for &seed in &seeds {
            let (Some(s), Some(l)) = (of("small", seed), of("large", seed)) else {
                continue;
            };
            let (Some(ps), Some(pl)) = (at_level(&s.points, level), at_level(&l.points, level))
            else {
                continue;
            };
            if let (Some(a), Some(b)) = (ps.lambda_k1, pl.lambda_k1) {
                l_small.push(a);
                l_large.push(b);
            }
            cross.push(prediction_distance(
                &ps.predictions,
                &pl.predictions,
                classes,
            ));
            if let Some(pc) = of(CONTROL, seed).and_then(|c| at_level(&c.points, level)) {
                ctrl.push(prediction_distance(
                    &pl.predictions,
                    &pc.predictions,
                    classes,
                ));
            }
        }
    }
    let at = level.map_or(String::new(), |l| format!(" (at {:.0}%)", 100.0 * l));
    let list = |v: &[f64]| v.iter().map(|x| sig4(*x)).collect::<Vec<_>>().join(", ");
    evidence_line(
        page,
        &format!("At matched training accuracy the small-η run has the larger λ_K^1{at}"),
        "mean λ_K^1, small η − large η",
        (!l_small.is_empty())
            .then(|| greater(&l_small, &l_large, converged, 400))
            .flatten()
            .as_ref(),
        UNDECIDED,
    );
    let _ = writeln!(
        page,
        "  - λ_K^1 per seed, small η: {}; large η: {}",
        list(&l_small),
        list(&l_large)
    );
    evidence_line(
        page,
        &format!("The learning rate separates the trajectories more than SGD's noise does{at}"),
        "mean prediction distance, small ↔ large η minus large η ↔ its other batch order",
        (!cross.is_empty() && !ctrl.is_empty())
            .then(|| greater(&cross, &ctrl, converged, 401))
            .flatten()
            .as_ref(),
        UNDECIDED,
    );
    let _ = writeln!(
        page,
        "  - distance per seed, small ↔ large η: {}; control: {}",
        list(&cross),
        list(&ctrl)
    );
    let _ = writeln!(
        page,
        "\nRule: both claims are read at ONE level, {}: the highest multiple of {:.0}% from {:.0}% that every compared run reaches, so each run is one observation and the level does not sit next to the shared initialization. An exact one-sided permutation test over seeds decides *supports* (p ≤ 0.05, which with 3 seeds a side needs every seed of one side above every seed of the other); *does not support* when the 95% bootstrap interval over seeds of the difference is at or below 0; *undecided* otherwise, with fewer than 3 seeds a side, or when a compared run did not reach its stopping rule.",
        level.map_or("none".into(), |l| format!("{:.0}%", 100.0 * l)),
        100.0 * LEVEL_STEP,
        100.0 * LEVEL_START
    );
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

    fn run(column: &str, seed: u64, t: Trajectory) -> Run {
        Run {
            label: format!("{column}, seed {seed}"),
            column: column.into(),
            lr: if column == "small" { 0.01 } else { 0.1 },
            seed,
            summary: summary(0.4, 0.7),
            classes: t.classes,
            points: t.points,
        }
    }

    /// Seed `seed`'s three runs: the small η 4× the λ_K^1 and moving away from the large η,
    /// the control moving `control` as far as the large η in its own direction.
    fn three(seed: u64, control: f64) -> Vec<Run> {
        let j = 0.001 * seed as f64;
        vec![
            run(
                "large",
                seed,
                trajectory(0.01 + j, [-1.0, 1.0, -1.0, 1.0], 1.0),
            ),
            run(
                "small",
                seed,
                trajectory(0.01 + j, [1.0, -1.0, 1.0, -1.0], 4.0 + j),
            ),
            run(
                CONTROL,
                seed,
                trajectory(control + j, [-1.0, 1.0, -1.0, 1.0], 1.0),
            ),
        ]
    }

    #[test]
    fn both_claims_are_judged_over_seeds_at_one_level_against_the_control() {
        // The control follows the large run closely (speed 0.009 vs 0.01): SGD noise is small.
        let runs: Vec<Run> = (0..3).flat_map(|s| three(s, 0.009)).collect();
        let mut page = String::new();
        verdicts(&mut page, &runs, 2);
        assert_eq!(
            page.matches("→ **supports** (p ≤ 0.05).").count(),
            2,
            "{page}"
        );
        assert!(page.contains("(at 70%)"), "{page}");
        // A control that wanders as far as the small η does: the separation is not supported.
        let runs: Vec<Run> = (0..3)
            .flat_map(|s| {
                let mut r = three(s, 0.01);
                r[2].points = trajectory(0.01, [1.0, -1.0, 1.0, -1.0], 1.0).points;
                r
            })
            .collect();
        let mut page = String::new();
        verdicts(&mut page, &runs, 2);
        assert!(
            page.contains("large η ↔ its other batch order = 0.01, 95% interval [-0.01, 0.03], p = 0.3500 → **undecided** (p > 0.05"),
            "{page}"
        );
        assert_eq!(page.matches("→ **supports**").count(), 1, "{page}");
        // A run short of its stopping rule: undecided.
        let mut runs: Vec<Run> = (0..3).flat_map(|s| three(s, 0.009)).collect();
        runs[1].summary.status = RunStatus::Capped;
        let mut page = String::new();
        verdicts(&mut page, &runs, 2);
        assert_eq!(
            page.matches("→ **undecided** (a run did not reach").count(),
            2,
            "{page}"
        );
    }

    #[test]
    fn the_page_embeds_the_first_seed_and_lists_every_run() {
        let exp = experiment(DEFINITION);
        let profile = exp.profile("smoke").unwrap().clone();
        let specs = specs(&exp, "smoke");
        assert_eq!(specs.len(), 3, "large, small and the control");
        let control = specs.iter().find(|s| s.column == CONTROL).unwrap();
        assert_eq!(control.config.optim.lr, 0.1);
        assert!(control
            .config
            .data
            .order_seed
            .is_some_and(|o| o != control.seed));
        let mut trajectories = Trajectories::new();
        for s in &specs {
            let r = &three(0, 0.009)[["large", "small", CONTROL]
                .iter()
                .position(|c| *c == s.column)
                .unwrap()];
            let t = Trajectory {
                classes: 2,
                points: r.points.clone(),
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
        // One seed: both verdicts undecided, saying why.
        assert_eq!(
            md.matches("→ **undecided** (1 vs 1 seeds: at least 3 a side are needed).")
                .count(),
            2,
            "{md}"
        );
        // All 21 checkpoints of the three runs are embedded; the status column names the rule.
        assert!(
            md.contains(
                "variance of their 21 checkpoints' predictions (2 test images × 2 classes each)"
            ),
            "{md}"
        );
        assert!(md.contains("| reached |"), "{md}");
    }

    #[test]
    fn predictions_of_another_shape_are_an_error_naming_the_runs() {
        let mut a = run("large", 0, trajectory(0.01, [1.0; 4], 1.0));
        a.label = "large η".into();
        let mut b = run("small", 0, trajectory(0.01, [1.0; 4], 1.0));
        b.label = "small η".into();
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
            .contains("Needs a finished large-η and small-η run with checkpoints."));
        assert!(page.plots.is_empty());
    }
}
