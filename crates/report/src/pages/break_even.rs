//! The break-even page (`cargo xtask reproduce break-even`): the break-even conjectures (Jastrzebski et al. ICLR
//! 2020, SCIENCE.md §5.1) from the η × S sweep: λ_H^1, λ_K^1 and λ_K^*/λ_K^1 compared at
//! matched training accuracy, the maxima against η and S, where λ_H^1 first meets 2/η, and
//! verdicts computed by `evidence::trend` at one matched accuracy level.

use std::fmt::Write as _;

use breakeven_runner::sweep::{Experiment, Profile};

use super::break_even_sweep::{
    level_step, level_table, pct, plain_chart, series, spans_decades, strata, table_levels,
    verdict_level, write_strata, Metric, Sweep, Trajectory, ACC_AXIS, DEFINITION,
};
use crate::claims::sig4;
use crate::evidence::{trend, Stratum, TREND_RULE};
use crate::matched::{first_crossing, max_until_accuracy, value_at_accuracy};
use crate::page::{evidence_line, Page, Stamp};
use crate::plot::{line_chart_with_bounds, Bound};

/// What a verdict line says when the runs cannot decide a claim.
const UNDECIDED: &str =
    "no stratum with two settings that all reach the verdict level; cannot decide.";

/// The page of the break-even sweep's finished runs (`sweep`).
pub fn page(stamp: &Stamp, exp: &Experiment, profile: &Profile, sweep: &Sweep) -> Page {
    let runs = &sweep.runs;
    let mut out = stamp.page(
        DEFINITION,
        DEFINITION,
        (&exp.title, &exp.source),
        &profile.base,
        &profile.description,
    );
    let page = &mut out.markdown;
    let step = level_step(runs);
    // The page still names `breakeven_runner::matched` (now `breakeven_report::matched`): the
    // committed pages re-render byte for byte; the next deliberate regeneration may update it.
    let _ = writeln!(
        page,
        "- Training accuracy: accuracy on the fixed measurement subset of the training set (`tracking.measure_subset` images, eval mode) at every logged step; λ_H^1 (Lanczos), λ_K^1, Tr(K) and λ_K^*/λ_K^1 (Gram matrix of the first `tracking.k_examples` per-example gradients) are measured on the same subset.\n\
         - Matched accuracy: a run's value at accuracy a is read where the run FIRST reaches a, interpolated linearly in accuracy between the two logged points around it (`breakeven_runner::matched`). Levels are multiples of {} above every compared run's starting accuracy, up to the best accuracy all of them reach.\n\
         - Maximum of λ along a trajectory: the largest logged value from initialization up to the first point at or above the highest level all runs of the comparison group reach (so every run's maximum covers the same stretch of learning).\n\
         - The same runs feed `cargo xtask reproduce batch-variance --profile {}` (Tr(K) vs S, SCIENCE.md §5.4).",
        pct(step),
        stamp.profile
    );
    for n in &sweep.notes {
        let _ = writeln!(page, "- {n}");
    }
    if runs.is_empty() {
        page.push_str("\nNo finished runs.\n");
        return out;
    }

    run_table(page, runs);
    plots(&mut out, runs);
    let page = &mut out.markdown;
    let levels = table_levels(runs, step);
    let metrics: [(&str, Metric); 3] = [
        ("λ_H^1", |t| &t.lambda_h),
        ("λ_K^1", |t| &t.lambda_k),
        ("λ_K^*/λ_K^1", |t| &t.k_ratio),
    ];
    for (name, m) in metrics {
        let _ = writeln!(page, "\n### {name} at matched training accuracy\n");
        level_table(page, runs, &levels, m);
    }

    page.push_str("\n## Claims (verdicts computed from the runs above)\n\n");
    let crossed = runs
        .iter()
        .filter(|t| first_crossing(&Trajectory::curve(&t.step, &t.lambda_h), 2.0 / t.lr).is_some())
        .count();
    let _ = writeln!(
        page,
        "The conjectures are about trajectories past the break-even point, where λ_H^1 meets the stability bound 2/η (SCIENCE.md §5.1): {crossed} of {} runs met it (column \"λ_H^1 first ≥ 2/η\" above); in runs that did not, the claims are tested before the break-even point only.\n",
        runs.len()
    );
    let Some(level) = verdict_level(runs, step) else {
        page.push_str(UNDECIDED);
        page.push('\n');
        return out;
    };
    let converged = sweep.converged();
    let mut unconverged: Vec<String> = runs
        .iter()
        .filter(|t| !t.converged)
        .map(|t| t.label.clone())
        .collect();
    if sweep.unfinished > 0 {
        unconverged.push(format!("{} run(s) not finished yet", sweep.unfinished));
    }
    let _ = writeln!(
        page,
        "Every verdict reads ONE accuracy level, {}: the highest multiple of {} that every run reaches (each run is one observation; levels read from the same runs are not independent evidence). Maxima are taken from initialization up to the first point at or above it.{}\n",
        pct(level),
        pct(step),
        if unconverged.is_empty() {
            " Every run reached its stopping accuracy.".to_string()
        } else {
            format!(
                " Not converged (every verdict is undecided until they are): {}.",
                unconverged.join("; ")
            )
        }
    );
    let with_seed = |t: &Trajectory, what: String| {
        if runs.iter().any(|r| r.seed != t.seed) {
            format!("{what}, seed {}", t.seed)
        } else {
            what
        }
    };
    let by_s = |y: &dyn Fn(&Trajectory) -> Option<f64>| {
        strata(
            runs,
            |t| (t.batch, t.seed),
            |t| with_seed(t, format!("S = {}", t.batch)),
            |t| t.lr,
            y,
        )
    };
    let by_lr = |y: &dyn Fn(&Trajectory) -> Option<f64>| {
        strata(
            runs,
            |t| (t.lr.to_bits(), t.seed),
            |t| with_seed(t, format!("η = {}", t.lr)),
            |t| t.batch as f64,
            y,
        )
    };
    let max_of = |m: Metric| move |t: &Trajectory| max_until_accuracy(&t.points(m(t)), level);
    let at_level = |m: Metric| move |t: &Trajectory| value_at_accuracy(&t.points(m(t)), level);
    let lh: Metric = |t| &t.lambda_h;
    let lk: Metric = |t| &t.lambda_k;
    let kr: Metric = |t| &t.k_ratio;
    let claims: [(&str, Vec<Stratum>, bool); 6] = [
        (
            "(a) Larger η ⇒ smaller maximum λ_H^1 (at each S)",
            by_s(&max_of(lh)),
            false,
        ),
        (
            "(a) Larger η ⇒ smaller maximum λ_K^1 (at each S)",
            by_s(&max_of(lk)),
            false,
        ),
        (
            "(b) Smaller S ⇒ smaller maximum λ_H^1 (at each η)",
            by_lr(&max_of(lh)),
            true,
        ),
        (
            "(b) Smaller S ⇒ smaller maximum λ_K^1 (at each η)",
            by_lr(&max_of(lk)),
            true,
        ),
        (
            "(c) Larger η ⇒ larger λ_K^*/λ_K^1 at matched training accuracy (at each S)",
            by_s(&at_level(kr)),
            true,
        ),
        (
            "(c) Smaller S ⇒ larger λ_K^*/λ_K^1 at matched training accuracy (at each η)",
            by_lr(&at_level(kr)),
            false,
        ),
    ];
    for (k, (claim, st, increasing)) in claims.iter().enumerate() {
        evidence_line(
            page,
            claim,
            "mean signed Spearman ρ",
            trend(st, *increasing, converged, 100 + k as u64).as_ref(),
            UNDECIDED,
        );
        write_strata(page, st, "");
    }
    let _ = writeln!(page, "\nRule: {TREND_RULE}. A stratum here is one seed's runs at one S (claims on η) or at one η (claims on S).");
    // The maxima against η (on a log axis) and S (log2), one line per comparison group.
    let maxima = |groups: &[Stratum], what: &str, x: fn(f64) -> f64| {
        groups
            .iter()
            .map(|g| {
                let mut pts: Vec<(f64, f64)> = g.points.iter().map(|&(a, b)| (x(a), b)).collect();
                pts.sort_by(|a, b| a.0.total_cmp(&b.0));
                (format!("{what}, {}", g.name), pts)
            })
            .collect::<Vec<_>>()
    };
    let vs_lr = [
        maxima(&claims[0].1, "λ_H^1", |lr| lr),
        maxima(&claims[1].1, "λ_K^1", |lr| lr),
    ]
    .concat();
    let vs_s = [
        maxima(&claims[2].1, "λ_H^1", f64::log2),
        maxima(&claims[3].1, "λ_K^1", f64::log2),
    ]
    .concat();
    for (suffix, title, x_label, series, log_x) in [
        (
            "max-vs-lr",
            "Maximum λ_H^1 and λ_K^1 against the learning rate",
            "learning rate η",
            vs_lr,
            true,
        ),
        (
            "max-vs-batch",
            "Maximum λ_H^1 and λ_K^1 against the batch size",
            "log2 S",
            vs_s,
            false,
        ),
    ] {
        if series.iter().all(|s| s.1.len() < 2) {
            continue;
        }
        let y_label = format!("maximum eigenvalue (up to {})", pct(level));
        let plot = plain_chart(title, x_label, &y_label, &series);
        let plot = if log_x { plot.log_x() } else { plot };
        let file = out.plot(suffix, plot);
        let _ = writeln!(out.markdown, "\n![{suffix}]({file})");
    }
    out
}

/// Per run: length, whether it converged, final accuracy, maxima over the whole run, where λ_H^1
/// first meets 2/η, and the largest Lanczos residual logged.
fn run_table(page: &mut String, runs: &[Trajectory]) {
    page.push_str("\n## Runs\n\n| Run | steps (epochs) | stopping accuracy reached | final training acc. (%) | max λ_H^1 | max λ_K^1 | λ_H^1 first ≥ 2/η at step (epoch) | largest Lanczos residual |\n|---|---|---|---|---|---|---|---|\n");
    for t in runs {
        let last = |v: &[f64]| v.last().copied().unwrap_or(f64::NAN);
        let max = |v: &[f64]| {
            v.iter()
                .copied()
                .filter(|x| x.is_finite())
                .reduce(f64::max)
                .map_or("—".into(), sig4)
        };
        let bound = 2.0 / t.lr;
        let crossing = match (
            first_crossing(&Trajectory::curve(&t.step, &t.lambda_h), bound),
            first_crossing(&Trajectory::curve(&t.epoch, &t.lambda_h), bound),
        ) {
            (Some(s), Some(e)) => format!("{s:.0} ({e:.2})"),
            _ => format!("never (2/η = {})", sig4(bound)),
        };
        // ‖H y − θ y‖/|θ| over every logged λ_H^1..k ("not logged" for runs without
        // `tracking.lanczos_tol`).
        let residual = t
            .lanczos_residual
            .iter()
            .copied()
            .filter(|r| !r.is_nan())
            .reduce(f64::max)
            .map_or("not logged".into(), |r| format!("{r:.1e}"));
        let _ = writeln!(
            page,
            "| {} | {:.0} ({:.2}) | {} | {:.1} | {} | {} | {crossing} | {residual} |",
            t.label,
            last(&t.step),
            last(&t.epoch),
            if t.converged { "yes" } else { "**no**" },
            100.0 * last(&t.acc),
            max(&t.lambda_h),
            max(&t.lambda_k),
        );
    }
}

fn plots(page: &mut Page, runs: &[Trajectory]) {
    let epoch: fn(&Trajectory) -> Vec<f64> = |t| t.epoch.clone();
    let acc: fn(&Trajectory) -> Vec<f64> = |t| t.acc.clone();
    let bounds: Vec<Bound> = runs
        .iter()
        .enumerate()
        .map(|(i, t)| Bound {
            series: i,
            y: 2.0 / t.lr,
            mark_x: first_crossing(&Trajectory::curve(&t.epoch, &t.lambda_h), 2.0 / t.lr),
        })
        .collect();
    let lambda_h = series(runs, epoch, |t| &t.lambda_h, 1.0);
    let chart = line_chart_with_bounds(
        "λ_H^1 during training, with each run's stability bound 2/η",
        "epoch",
        "λ_H^1 (measurement subset)",
        &lambda_h,
        &bounds,
        "2/η (circle: first crossing)",
    );
    let mut files = vec![(
        "lambda-h-epoch",
        if spans_decades(&lambda_h) {
            chart.log_y()
        } else {
            chart
        },
    )];
    for (file, title, y, m) in [
        (
            "lambda-h-acc",
            "λ_H^1 against training accuracy",
            "λ_H^1",
            (|t| &t.lambda_h) as Metric,
        ),
        (
            "lambda-k-acc",
            "λ_K^1 against training accuracy",
            "λ_K^1",
            |t| &t.lambda_k,
        ),
        (
            "k-ratio-acc",
            "λ_K^*/λ_K^1 against training accuracy",
            "λ_K^*/λ_K^1",
            |t| &t.k_ratio,
        ),
    ] {
        files.push((
            file,
            plain_chart(title, ACC_AXIS, y, &series(runs, acc, m, 100.0)),
        ));
    }
    let _ = writeln!(page.markdown, "\n## Plots\n");
    for (suffix, plot) in files {
        let file = page.plot(suffix, plot);
        let _ = writeln!(page.markdown, "![{suffix}]({file})\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pages::testing::{experiment, stamp, synthetic_sweep};

    #[test]
    fn the_six_claims_are_decided_from_the_trajectories() {
        let exp = experiment(DEFINITION);
        let profile = exp.profile("smoke").unwrap().clone();
        let page = page(&stamp("smoke"), &exp, &profile, &synthetic_sweep());
        let files: Vec<&str> = page.plots.iter().map(|p| p.0.as_str()).collect();
        assert_eq!(
            files,
            [
                "break-even-smoke-lambda-h-epoch.svg",
                "break-even-smoke-lambda-h-acc.svg",
                "break-even-smoke-lambda-k-acc.svg",
                "break-even-smoke-k-ratio-acc.svg",
                "break-even-smoke-max-vs-lr.svg",
                "break-even-smoke-max-vs-batch.svg",
            ]
        );
        let md = &page.markdown;
        assert!(md.contains("- run /r/x has not finished\n"), "{md}");
        // Every synthetic trend goes the claimed way in each of the 3 seeds: 6 strata of 2
        // settings in perfect order, p = 1/64 by the permutation test (± Monte Carlo error).
        assert_eq!(md.matches("→ **supports** (p ≤ 0.05).").count(), 6, "{md}");
        assert!(
            md.contains("  - S = 16, seed 0: 0.1 → 40.00, 0.01 → 400.0\n"),
            "{md}"
        );
        assert!(
            md.contains("Every verdict reads ONE accuracy level, 70%"),
            "{md}"
        );
        // η = 0.1, S = 16: λ_H^1 = 10, 20, … meets 2/η = 20 at its second point.
        assert!(
            md.contains("| η=0.1, S=16, seed 0 | 30 (3.00) | yes | 70.0 | 40.00 | 40.00 | 10 (1.00) | 1.0e-4 |"),
            "{md}"
        );
        assert!(md.contains(" of 12 runs met it"), "{md}");
        // One run short of its stopping accuracy makes every verdict undecided.
        let mut sweep = synthetic_sweep();
        sweep.runs[0].converged = false;
        let md = super::page(&stamp("smoke"), &exp, &profile, &sweep).markdown;
        assert_eq!(
            md.matches("→ **undecided** (a run did not reach").count(),
            6,
            "{md}"
        );
        assert!(
            md.contains(
                "Not converged (every verdict is undecided until they are): η=0.1, S=16, seed 0."
            ),
            "{md}"
        );
        // A planned run that has not finished: undecided too, and counted.
        let mut sweep = synthetic_sweep();
        sweep.unfinished = 2;
        let md = super::page(&stamp("smoke"), &exp, &profile, &sweep).markdown;
        assert_eq!(
            md.matches("→ **undecided** (a run did not reach").count(),
            6,
            "{md}"
        );
        assert!(md.contains("2 run(s) not finished yet."), "{md}");
        // Reversed trends are refuted, not merely undecided.
        let mut sweep = synthetic_sweep();
        for t in &mut sweep.runs {
            t.lambda_h.iter_mut().for_each(|v| *v = 1.0 / *v);
        }
        let md = super::page(&stamp("smoke"), &exp, &profile, &sweep).markdown;
        assert_eq!(md.matches("→ **does not support**").count(), 2, "{md}");
    }

    #[test]
    fn without_finished_runs_the_page_says_so_and_draws_nothing() {
        let exp = experiment(DEFINITION);
        let profile = exp.profile("smoke").unwrap().clone();
        let page = page(&stamp("smoke"), &exp, &profile, &Sweep::default());
        assert!(page.markdown.ends_with("\nNo finished runs.\n"));
        assert!(page.plots.is_empty());
    }
}
