//! The batch-variance page (`cargo xtask reproduce batch-variance`): batch size against
//! gradient variance (SCIENCE.md §5.4): Tr(K) along the trajectories of the break-even sweep
//! (the same runs, reused), compared at matched training accuracy, with a verdict from
//! `evidence::trend` at one matched accuracy level.

use std::fmt::Write as _;

use breakeven_runner::sweep::Profile;

use super::break_even_sweep::{
    level_step, level_table, pct, plain_chart, series, strata, table_levels, verdict_level,
    write_strata, Metric, Sweep, ACC_AXIS, DEFINITION,
};
use crate::evidence::{trend, TREND_RULE};
use crate::matched::value_at_accuracy;
use crate::page::{evidence_line, Page, Stamp};

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
            series(runs, |t| t.acc.clone(), k_trace, 100.0),
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

    // Claim: at each η (and seed), at the one level every run reaches, Tr(K) grows with S.
    page.push_str("## Claim (verdict computed from the runs above)\n\n");
    let Some(level) = verdict_level(runs, step) else {
        page.push_str(
            "No accuracy level above the runs' starts is reached by every run; cannot decide.\n",
        );
        return out;
    };
    let several_seeds = runs.iter().any(|r| r.seed != runs[0].seed);
    let groups = strata(
        runs,
        |t| (t.lr.to_bits(), t.seed),
        |t| {
            if several_seeds {
                format!("η = {}, seed {}", t.lr, t.seed)
            } else {
                format!("η = {}", t.lr)
            }
        },
        |t| t.batch as f64,
        |t| value_at_accuracy(&t.points(&t.k_trace), level),
    );
    let converged = sweep.converged();
    evidence_line(
        page,
        &format!(
            "Larger S ⇒ larger Tr(K) at matched training accuracy ({}, at each η)",
            pct(level)
        ),
        "mean signed Spearman ρ",
        trend(&groups, true, converged, 200).as_ref(),
        "no η with two batch sizes that reach the level; cannot decide.",
    );
    write_strata(page, &groups, "S = ");
    let _ = writeln!(
        page,
        "\nThe level, {}, is the highest multiple of {} that every run reaches: each run is read once (the levels of the same runs are not independent evidence).{}\n\nRule: {TREND_RULE}. A stratum here is one seed's runs at one η.",
        pct(level),
        pct(step),
        if converged {
            ""
        } else {
            " Some runs did not reach their stopping accuracy or have not finished, so the verdict is undecided."
        }
    );
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
        assert!(
            md.contains(
                "- **Larger S ⇒ larger Tr(K) at matched training accuracy (70%, at each η)**: "
            ),
            "{md}"
        );
        assert!(md.contains("→ **supports** (p ≤ 0.05)."), "{md}");
        assert!(
            md.contains("  - η = 0.1, seed 2: S = 16 → 16.32, S = 128 → 130.6\n"),
            "{md}"
        );
        // Decreasing Tr(K) with S: does not support.
        let mut sweep = synthetic_sweep();
        for t in &mut sweep.runs {
            t.k_trace = vec![1.0 / t.batch as f64; 4];
        }
        let md = page(&stamp("smoke"), &profile, &sweep).markdown;
        assert!(
            md.contains("→ **does not support** (the whole interval"),
            "{md}"
        );
    }
}
