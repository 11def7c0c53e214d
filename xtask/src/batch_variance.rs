//! `cargo xtask reproduce batch-variance`: batch size against gradient variance (SCIENCE.md
//! §5.4): Tr(K) along the trajectories of the break-even sweep (the same runs, reused), compared
//! at matched training accuracy, with a verdict from `breakeven_runner::claims::trend_verdict`.

use std::fmt::Write as _;

use anyhow::Result;
use breakeven_runner::claims::{trend_verdict, TrendGroup};
use breakeven_runner::matched::value_at_accuracy;

use crate::break_even_runs::{
    group_by, group_levels, level_step, level_table, load_sweep, pct, plain_chart, series,
    table_levels, Metric, Trajectory, ACC_AXIS, DEFINITION,
};
use crate::reproduce::{
    out_dir, page_head_defined_by, profile_device, write, write_plot, ReproduceArgs,
};

const TITLE: &str = "Batch size vs gradient variance: Tr(K) at matched training accuracy";
const SOURCE: &str =
    "the seed talk's claim (SCIENCE.md §5.4), measured as in Jastrzebski et al. ICLR 2020";

pub fn reproduce(args: &ReproduceArgs) -> Result<()> {
    let sweep = load_sweep(args)?;
    let runs = &sweep.runs;
    let out_dir = out_dir(args)?;
    let stem = format!("batch-variance-{}", args.profile);
    let device = profile_device(args, &sweep.profile.base);
    let mut page = page_head_defined_by(
        args,
        DEFINITION,
        TITLE,
        &device,
        &sweep.profile.description,
        SOURCE,
    );
    let step = level_step(runs);
    let _ = writeln!(
        page,
        "- Runs: the break-even sweep's (`experiments/{DEFINITION}.toml`, runs/{DEFINITION}-{profile}), reused as they are; `cargo xtask reproduce {DEFINITION} --profile {profile}` reports λ_H^1, λ_K^1 and λ_K^*/λ_K^1 of the same runs.\n\
         - Tr(K) = E‖g_i − ḡ‖² over the first `tracking.k_examples` images of the fixed measurement subset (per-example gradients of the mean loss, population normalization), at every logged step. Training accuracy: accuracy on the measurement subset (eval mode).\n\
         - Matched accuracy: a run's Tr(K) at accuracy a is read where the run FIRST reaches a, interpolated linearly between the logged points around it; levels are multiples of {} above every compared run's starting accuracy, up to the best accuracy all of them reach.",
        pct(step),
        profile = args.profile
    );
    for n in &sweep.notes {
        let _ = writeln!(page, "- {n}");
    }
    let md = out_dir.join(format!("{stem}.md"));
    if runs.is_empty() {
        page.push_str("\nNo finished runs.\n");
        write(&md, &page)?;
        println!("wrote {}", md.display());
        return Ok(());
    }

    // Tr(K) at every level some run reaches.
    let levels = table_levels(runs, step);
    page.push_str("\n## Tr(K) at matched training accuracy\n\n");
    let k_trace: Metric = |t| &t.k_trace;
    level_table(&mut page, runs, &levels, k_trace);

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
        let file = format!("{stem}-{suffix}.svg");
        let plot = plain_chart(title, x_label, "Tr(K) (measurement subset)", &plot_series);
        write_plot(&out_dir.join(&file), &plot)?;
        let _ = writeln!(page, "![{suffix}]({file})\n");
    }

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
                let seed = if sweep.profile.seeds.len() > 1 {
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
    let claim = "Larger S ⇒ larger Tr(K) at matched training accuracy (at each η and level)";
    let _ = match trend_verdict(&groups, true) {
        Some(v) => writeln!(page, "- **{claim}**: {} → **{}**.", v.explanation, v.word()),
        None => writeln!(
            page,
            "- **{claim}**: no η with two batch sizes and a shared accuracy level; cannot decide."
        ),
    };
    page.push_str("\nRule: per comparison group (runs at one η, compared at one accuracy level) the Spearman rank correlation between S and Tr(K); supported when the mean over groups is at least 0.5.\n");
    write(&md, &page)?;
    println!("wrote {}", md.display());
    Ok(())
}
