//! The batch-variance page (`cargo xtask reproduce batch-variance`): batch size against
//! gradient variance (SCIENCE.md §5.4): Tr(K) along the trajectories of the break-even sweep
//! (the same runs, reused), compared at matched training accuracy, with a verdict from
//! `claims::trend_verdict`.

use std::fmt::Write as _;

use breakeven_runner::sweep::Profile;

use super::break_even_sweep::{
    group_by, group_levels, level_step, level_table, pct, plain_chart, series, table_levels,
    Metric, Sweep, Trajectory, ACC_AXIS, DEFINITION,
};
use crate::claims::{trend_verdict, TrendGroup};
use crate::matched::value_at_accuracy;
use crate::page::{claim_line, Page, Stamp};

const TITLE: &str = "Batch size vs gradient variance: Tr(K) at matched training accuracy";
const SOURCE: &str =
    "the seed talk's claim (SCIENCE.md §5.4), measured as in Jastrzebski et al. ICLR 2020";

/// The page of the break-even sweep's finished runs (`sweep`, of `profile`).
pub fn page(stamp: &Stamp, profile: &Profile, sweep: &Sweep) -> Page {
    let runs = &sweep.runs;
    let mut out = stamp.page(
        "batch-variance",
        DEFINITION,
        (TITLE, SOURCE),
        &profile.base,
        &profile.description,
    );
    let page = &mut out.markdown;
    let step = level_step(runs);
    let _ = writeln!(
        page,
        "- Runs: the break-even sweep's (`experiments/{DEFINITION}.toml`, runs/{DEFINITION}-{profile}), reused as they are; `cargo xtask reproduce {DEFINITION} --profile {profile}` reports λ_H^1, λ_K^1 and λ_K^*/λ_K^1 of the same runs.\n\
         - Tr(K) = E‖g_i − ḡ‖² over the first `tracking.k_examples` images of the fixed measurement subset (per-example gradients of the mean loss, population normalization), at every logged step. Training accuracy: accuracy on the measurement subset (eval mode).\n\
         - Matched accuracy: a run's Tr(K) at accuracy a is read where the run FIRST reaches a, interpolated linearly between the logged points around it; levels are multiples of {} above every compared run's starting accuracy, up to the best accuracy all of them reach.",
        pct(step),
        profile = stamp.profile
    );
    for n in &sweep.notes {
        let _ = writeln!(page, "- {n}");
    }
    if runs.is_empty() {
        page.push_str("\nNo finished runs.\n");
        return out;
    }

    // Tr(K) at every level some run reaches.
    let levels = table_levels(runs, step);
    page.push_str("\n## Tr(K) at matched training accuracy\n\n");
    let k_trace: Metric = |t| &t.k_trace;
    level_table(page, runs, &levels, k_trace);

    page.push_str("\n## Plots\n\n");
    for (suffix, title, x_label, plot_series) in [
        (
            "trace-k-acc",
            "Gradient variance Tr(K) against training accuracy",
            ACC_AXIS,
            series(runs, Trajectory::best_acc_so_far, k_trace, 100.0),
        ),
        (
            "trace-k-epoch",
            "Gradient variance Tr(K) during training",
            "epoch",
            series(runs, |t| t.epoch.clone(), k_trace, 1.0),
        ),
    ] {
        let plot = plain_chart(title, x_label, "Tr(K) (measurement subset)", &plot_series);
        let file = out.plot(suffix, plot);
        let _ = writeln!(out.markdown, "![{suffix}]({file})\n");
    }
    let page = &mut out.markdown;

    // Claim: at each η (and seed) and each level all its runs reach, Tr(K) grows with S.
    let mut groups = Vec::new();
    for (_, idx) in group_by(runs, |t| (t.lr.to_bits(), t.seed)) {
        for level in group_levels(runs, &idx, step) {
            let points = idx
                .iter()
                .map(|&i| {
                    let t = &runs[i];
                    Some((
                        t.batch as f64,
                        value_at_accuracy(&t.points(&t.k_trace), level)?,
                    ))
                })
                .collect::<Option<Vec<_>>>();
            if let Some(points) = points {
                let t = &runs[idx[0]];
                let seed = if profile.seeds.len() > 1 {
                    format!(", seed {}", t.seed)
                } else {
                    String::new()
                };
                groups.push(TrendGroup {
                    name: format!("η = {}{seed} at {}", t.lr, pct(level)),
                    points,
                });
            }
        }
    }
    page.push_str("## Claim (verdict computed from the runs above)\n\n");
    claim_line(
        page,
        "Larger S ⇒ larger Tr(K) at matched training accuracy (at each η and level)",
        trend_verdict(&groups, true).as_ref(),
        "no η with two batch sizes and a shared accuracy level; cannot decide.",
    );
    page.push_str("\nRule: per comparison group (runs at one η, compared at one accuracy level) the Spearman rank correlation between S and Tr(K); supported when the mean over groups is at least 0.5.\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pages::testing::{experiment, stamp, synthetic_sweep};

    #[test]
    fn tr_k_growing_with_the_batch_size_supports_the_claim() {
        let exp = experiment(DEFINITION);
        let profile = exp.profile("smoke").unwrap().clone();
        let out = page(&stamp("smoke"), &profile, &synthetic_sweep());
        assert_eq!(out.stem, "batch-variance-smoke");
        let files: Vec<&str> = out.plots.iter().map(|p| p.0.as_str()).collect();
        assert_eq!(
            files,
            [
                "batch-variance-smoke-trace-k-acc.svg",
                "batch-variance-smoke-trace-k-epoch.svg"
            ]
        );
        let md = &out.markdown;
        assert!(md.contains("- **Larger S ⇒ larger Tr(K) at matched training accuracy (at each η and level)**: "), "{md}");
        assert!(md.contains("→ **supports**."), "{md}");
        // Decreasing Tr(K) with S: does not support.
        let mut sweep = synthetic_sweep();
        for t in &mut sweep.runs {
            t.k_trace = vec![1.0 / t.batch as f64; 4];
        }
        let md = page(&stamp("smoke"), &profile, &sweep).markdown;
        assert!(md.contains("→ **does not support**."), "{md}");
    }
}
