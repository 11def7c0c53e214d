//! The LCA results page (`cargo xtask reproduce lca`): statistics computed from the logged
//! records of the large- and the small-η run (`breakeven_runner::lca`), the Markdown page and
//! its plots. Every claim on the page is computed here from the records.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::Path;

use breakeven_runner::config::RunConfig;
use breakeven_runner::lca::{LcaExperiment, LcaProfile, LcaRecord};

use crate::page::{Page, Stamp};
use crate::plot::line_chart;
use crate::table::hardware_description;

/// Summary statistics of one run's records.
#[derive(Debug, Clone, PartialEq)]
pub struct LcaStats {
    pub steps: usize,
    /// Steps whose integration error is within `lca.tol` (all steps without one): the only ones
    /// the fractions and the per-tensor table read.
    pub within_tol: usize,
    /// Mean Simpson panels per allocated step (1: Simpson alone).
    pub mean_panels: f64,
    pub num_params: usize,
    /// Quartiles of the per-step fraction hurt among non-zero allocations.
    pub hurt_q25: f64,
    pub hurt_median: f64,
    pub hurt_q75: f64,
    /// Median fraction of exactly-zero allocations.
    pub zero_median: f64,
    /// Median and maximum |relative integration error|; median |absolute error|.
    pub rel_error_median: f64,
    pub rel_error_max: f64,
    pub abs_error_median: f64,
    /// Σ true ΔL and Σ allocated over logged steps.
    pub sum_true_delta: f64,
    pub sum_allocated: f64,
    /// Mean gradient passes over the measurement subset per logged step.
    pub gradients_per_step: f64,
    /// Mean cost in examples' gradients relative to one training step's mini-batch.
    pub cost_in_train_steps: f64,
    pub lca_wall_s: f64,
    pub step_wall_s: f64,
}

fn quantile(sorted: &[f64], q: f64) -> f64 {
    let pos = q * (sorted.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    sorted[lo] + (pos - lo as f64) * (sorted[hi] - sorted[lo])
}

fn sorted(values: impl Iterator<Item = f64>) -> Vec<f64> {
    let mut v: Vec<f64> = values.filter(|x| !x.is_nan()).collect();
    v.sort_by(f64::total_cmp);
    v
}

fn mean(values: impl Iterator<Item = f64>) -> f64 {
    let (s, n) = values.fold((0.0, 0usize), |(s, n), x| (s + x, n + 1));
    s / n.max(1) as f64
}

/// Whether a record's integral is trusted: within `lca.tol`, or logged without one.
pub fn reliable(r: &LcaRecord) -> bool {
    r.within_tol != Some(false)
}

/// Statistics of a run; `None` without records. `batch_size` is the training mini-batch. The
/// fractions and errors read the [`reliable`] steps only; the cost reads every step.
pub fn lca_stats(records: &[LcaRecord], batch_size: usize) -> Option<LcaStats> {
    let all = records;
    let first = all.first()?;
    let kept: Vec<&LcaRecord> = all.iter().filter(|r| reliable(r)).collect();
    let hurt = sorted(kept.iter().map(|r| r.hurt_among_nonzero));
    let rel = sorted(kept.iter().map(|r| r.relative_error.abs()));
    let abs = sorted(kept.iter().map(|r| r.integration_error.abs()));
    let zero = sorted(kept.iter().map(|r| r.fraction_zero));
    if hurt.is_empty() {
        return None;
    }
    Some(LcaStats {
        steps: all.len(),
        within_tol: kept.len(),
        mean_panels: mean(all.iter().map(|r| r.panels as f64)),
        num_params: first.num_params,
        hurt_q25: quantile(&hurt, 0.25),
        hurt_median: quantile(&hurt, 0.5),
        hurt_q75: quantile(&hurt, 0.75),
        zero_median: quantile(&zero, 0.5),
        rel_error_median: rel.get(rel.len() / 2).copied().unwrap_or(f64::NAN),
        rel_error_max: rel.last().copied().unwrap_or(f64::NAN),
        abs_error_median: quantile(&abs, 0.5),
        sum_true_delta: kept.iter().map(|r| r.true_delta).sum(),
        sum_allocated: kept.iter().map(|r| r.allocated).sum(),
        gradients_per_step: mean(records.iter().map(|r| r.gradient_evaluations as f64)),
        cost_in_train_steps: mean(records.iter().map(|r| {
            (r.gradient_evaluations * r.measure_examples) as f64 / batch_size.max(1) as f64
        })),
        lca_wall_s: mean(records.iter().map(|r| r.lca_wall_s)),
        step_wall_s: mean(records.iter().map(|r| r.step_wall_s)),
    })
}

/// The paper's claim, as tested here: the median fraction hurt (among non-zero) is in [0.4, 0.6].
pub fn about_half_hurt(s: &LcaStats) -> bool {
    (0.4..=0.6).contains(&s.hurt_median)
}

/// Where and how the page was made.
#[derive(Debug, Clone)]
pub struct LcaPage {
    pub profile: String,
    pub description: String,
    pub command: String,
    pub generated_utc: String,
    pub git_revision: String,
    pub hardware: String,
    /// Plot file names relative to the page, with a caption.
    pub plots: Vec<(String, String)>,
    /// The profile's `lca.tol` and `lca.max_panels`, when it sets a tolerance.
    pub tolerance: Option<(f64, usize)>,
}

/// One run on the page: its label (`large`/`small`), config and records.
pub type LcaRun<'a> = (&'a str, &'a RunConfig, &'a [LcaRecord]);

/// The results page `docs/results/lca-<profile>.md`.
pub fn render_lca_markdown(exp: &LcaExperiment, runs: &[LcaRun<'_>], page: &LcaPage) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# {} — profile `{}`\n", exp.title, page.profile);
    let _ = writeln!(out, "Source: {}. {}\n", exp.source, page.description);
    let _ = writeln!(
        out,
        "Generated by `{}` on {} at git {}.\nRendered on: {}.\n",
        page.command, page.generated_utc, page.git_revision, page.hardware
    );
    let stats: Vec<_> = runs
        .iter()
        .map(|(l, c, r)| (*l, *c, lca_stats(r, c.data.batch_size)))
        .collect();
    out.push_str("## Do about half of the parameters hurt?\n\n");
    out.push_str("| lr | model | data | measurement images | allocated steps (within tolerance) | params | hurt among non-zero: q25 / median / q75 | median \\|rel. integration error\\| of those steps | median zero | about half (median in [0.4, 0.6])? |\n|---|---|---|---|---|---|---|---|---|---|\n");
    for (label, c, s) in &stats {
        let Some(s) = s else { continue };
        let _ = writeln!(
            out,
            "| {label} ({}) | {} | {} | {} | {} ({}) | {} | {:.3} / {:.3} / {:.3} | {:.2e} | {:.4} | {} |",
            c.optim.lr,
            model_name(c),
            data_name(c),
            c.tracking.measure_subset,
            s.steps,
            s.within_tol,
            s.num_params,
            s.hurt_q25,
            s.hurt_median,
            s.hurt_q75,
            s.rel_error_median,
            s.zero_median,
            if about_half_hurt(s) { "yes" } else { "no" }
        );
    }
    let _ = writeln!(
        out,
        "\n{}",
        match page.tolerance {
            Some((tol, panels)) => format!("Each step's path integral is refined (composite Simpson on 2, 4, … up to {panels} panels) until |Σ A_i − ΔL| ≤ {tol}·|ΔL| (or ≤ {:e} in loss units); steps still outside are left out of the fractions above and of the per-tensor table below.", breakeven_runner::lca::ABS_FLOOR),
            None => "Simpson's rule alone, unchecked (no `lca.tol` in this profile): every step is counted whatever its integration error.".to_string(),
        }
    );
    if let [(la, ca, Some(a)), (lb, cb, Some(b))] = stats.as_slice() {
        let _ = writeln!(
            out,
            "\nMedian fraction hurt: {la} lr ({}) {:.3}, {lb} lr ({}) {:.3}; difference (large − small) {:+.3}. {}\n",
            ca.optim.lr,
            a.hurt_median,
            cb.optim.lr,
            b.hurt_median,
            a.hurt_median - b.hurt_median,
            match (about_half_hurt(a), about_half_hurt(b)) {
                (true, true) => "At both learning rates about half of the moving parameters hurt at a typical step, as Lan et al. report.",
                (false, false) => "At neither learning rate is the median within [0.4, 0.6]: the paper's \"about half\" is NOT reproduced here.",
                (true, false) => "Only the large learning rate has about half hurting.",
                (false, true) => "Only the small learning rate has about half hurting.",
            }
        );
    }
    out.push_str("## Integration error and cost\n\n");
    out.push_str("| lr | median \\|rel. error\\| | max \\|rel. error\\| | median \\|abs. error\\| | Σ true ΔL | Σ allocated | mean Simpson panels | gradient passes / logged step | cost in training steps | LCA s / logged step | SGD step s |\n|---|---|---|---|---|---|---|---|---|---|---|\n");
    for (label, c, s) in &stats {
        let Some(s) = s else { continue };
        let _ = writeln!(
            out,
            "| {label} ({}) | {:.2e} | {:.2e} | {:.2e} | {:.4} | {:.4} | {:.2} | {:.2} | {:.1} | {:.2} | {:.3} |",
            c.optim.lr, s.rel_error_median, s.rel_error_max, s.abs_error_median, s.sum_true_delta, s.sum_allocated, s.mean_panels, s.gradients_per_step, s.cost_in_train_steps, s.lca_wall_s, s.step_wall_s
        );
    }
    out.push_str("\nErrors and the two sums read the steps within tolerance only (all steps without a tolerance); cost reads every step, refinements included.\n");
    out.push_str("\nOne gradient pass = forward + backward over the whole measurement subset; consecutive allocated steps reuse the shared endpoint gradient (2 passes instead of Simpson's 3). \"Cost in training steps\" = passes × subset size / mini-batch size.\n\n");
    out.push_str(
        "## Allocation per parameter tensor (Σ over the logged steps within tolerance; negative = lowered the loss)\n\n",
    );
    if let Some((_, _, first)) = runs.first() {
        let names: Vec<&str> = first
            .first()
            .map(|r| r.layers.iter().map(|l| l.name.as_str()).collect())
            .unwrap_or_default();
        out.push_str("| tensor |");
        for (l, c, _) in runs {
            let _ = write!(out, " {l} ({}) |", c.optim.lr);
        }
        out.push_str("\n|---|");
        out.push_str(&"---|".repeat(runs.len()));
        out.push('\n');
        for (i, name) in names.iter().enumerate() {
            let _ = write!(out, "| {name} |");
            for (_, _, recs) in runs {
                let total: f64 = recs
                    .iter()
                    .filter(|r| reliable(r))
                    .filter_map(|r| r.layers.get(i))
                    .map(|l| l.total)
                    .sum();
                let _ = write!(out, " {total:+.4e} |");
            }
            out.push('\n');
        }
    }
    out.push_str("\n## Plots\n\n");
    for (file, caption) in &page.plots {
        let _ = writeln!(out, "![{caption}]({file})\n");
    }
    out.push_str("## Caveats\n\n");
    out.push_str("- LCA uses Simpson's rule (the paper's RK4 for an integrand of the path parameter alone), refined on more panels where a tolerance is set. On ReLU / max-pool nets the gradient jumps where the path crosses a kink, so the error falls only like O(h), not h⁴: the integration error above is measured, not assumed small.\n");
    out.push_str("- One seed per learning rate: the fractions are descriptive, with no interval over seeds.\n");
    out.push_str("- ΔL is the change of the mean loss on a fixed seeded measurement subset of the training set, not on the mini-batch of the step nor the full training set.\n");
    out.push_str("- \"Hurt among non-zero\" excludes parameters whose allocation is exactly 0 (did not move or had zero gradient along the whole path, e.g. dead ReLU units).\n");
    out
}

fn model_name(c: &RunConfig) -> String {
    serde_json::to_string(&c.model)
        .unwrap_or_else(|_| "?".into())
        .replace('|', "/")
}

fn data_name(c: &RunConfig) -> String {
    let subset = c
        .data
        .subset
        .map(|n| format!(", {n} train"))
        .unwrap_or_default();
    format!(
        "{}{subset}, batch {}, subset {} for LCA",
        c.data.name, c.data.batch_size, c.tracking.measure_subset
    )
}

/// The page `lca-<profile>.md` and its plots: `runs` are the profile's two runs (label and
/// config), `records` their logged steps in the same order; `data_dir` is where the data set
/// was read (named on the page).
pub fn page(
    stamp: &Stamp,
    exp: &LcaExperiment,
    profile: &LcaProfile,
    runs: &[(String, RunConfig)],
    records: &[Vec<LcaRecord>],
    data_dir: Option<&Path>,
) -> Page {
    let stem = format!("lca-{}", stamp.profile);
    let named = |label: &str| {
        let lr = runs
            .iter()
            .find(|(l, _)| l == label)
            .map(|(_, c)| c.optim.lr);
        format!("{label} lr {}", lr.unwrap_or(f64::NAN))
    };
    let series = |f: &dyn Fn(&LcaRecord) -> f64| -> Vec<(String, Vec<(f64, f64)>)> {
        runs.iter()
            .zip(records)
            .map(|((l, _), recs)| {
                let pts = recs.iter().map(|r| (r.step as f64, f(r))).collect();
                (named(l), pts)
            })
            .collect()
    };
    let mut plots = vec![
        (
            format!("{stem}-hurt.svg"),
            "Fraction of parameters that hurt (among non-zero allocations)".to_string(),
            line_chart(
                "LCA: fraction of parameters that hurt (A_i > 0) among non-zero",
                "step",
                "fraction hurt",
                &series(&|r| r.hurt_among_nonzero),
            ),
        ),
        (
            format!("{stem}-error.svg"),
            "Relative integration error |Σ A_i − ΔL| / |ΔL| of each allocated step".to_string(),
            // The error spans decades between runs and steps.
            line_chart(
                "LCA: relative integration error (Simpson, refined where a tolerance is set)",
                "step",
                "|allocated − ΔL| / |ΔL|",
                &series(&|r| r.relative_error.abs().min(1e3)),
            )
            .log_y(),
        ),
    ];
    for ((label, _), recs) in runs.iter().zip(records) {
        plots.push((
            format!("{stem}-layers-{label}.svg"),
            format!("Allocation per layer (weight + bias), {}", named(label)),
            line_chart(
                &format!("LCA per layer, {}", named(label)),
                "step",
                "Σ A_i over the layer (negative = helped)",
                &per_layer(recs),
            ),
        ));
    }
    let device = runs
        .first()
        .map_or_else(|| "cpu".to_string(), |(_, c)| c.device.to_string());
    let data_note = data_dir
        .map(|d| format!("; data read from {}", d.display()))
        .unwrap_or_default();
    let about = LcaPage {
        profile: stamp.profile.clone(),
        description: profile.description.clone(),
        command: stamp.command.clone(),
        generated_utc: stamp.generated_utc.clone(),
        git_revision: stamp.git_revision.clone(),
        hardware: format!("{}{data_note}", hardware_description(&device)),
        plots: plots
            .iter()
            .map(|(file, caption, _)| (file.clone(), caption.clone()))
            .collect(),
        tolerance: profile.lca.tol.map(|t| (t, profile.lca.max_panels)),
    };
    let page_runs: Vec<LcaRun<'_>> = runs
        .iter()
        .zip(records)
        .map(|((label, config), recs)| (label.as_str(), config, recs.as_slice()))
        .collect();
    Page {
        markdown: render_lca_markdown(exp, &page_runs, &about),
        stem,
        plots: plots
            .into_iter()
            .map(|(file, _, plot)| (file, plot))
            .collect(),
    }
}

/// One series per layer: the allocations of its tensors (`conv1.weight`, `conv1.bias`) summed.
fn per_layer(records: &[LcaRecord]) -> Vec<(String, Vec<(f64, f64)>)> {
    let mut layers: BTreeMap<usize, (String, Vec<(f64, f64)>)> = BTreeMap::new();
    let mut order: Vec<String> = Vec::new();
    for r in records {
        let mut totals: BTreeMap<String, f64> = BTreeMap::new();
        for l in &r.layers {
            let layer = l.name.rsplit_once('.').map_or(l.name.as_str(), |(a, _)| a);
            if !order.iter().any(|o| o == layer) {
                order.push(layer.to_string());
            }
            *totals.entry(layer.to_string()).or_default() += l.total;
        }
        for (name, total) in totals {
            let i = order.iter().position(|o| *o == name).unwrap_or(0);
            layers
                .entry(i)
                .or_insert_with(|| (name.clone(), Vec::new()))
                .1
                .push((r.step as f64, total));
        }
    }
    layers.into_values().collect()
}

#[cfg(test)]
mod tests {
    use breakeven_runner::lca::{LayerAllocation, LcaRecord};

    use super::{about_half_hurt, lca_stats};

    /// A logged step whose fraction hurt is `hurt`: 3 gradient passes over 48 examples.
    fn record(step: u64, hurt: f64, true_delta: f64, allocated: f64) -> LcaRecord {
        LcaRecord {
            step,
            lr: 0.1,
            batch_loss: 1.0,
            loss_before: 1.0,
            loss_after: 1.0 + true_delta,
            true_delta,
            allocated,
            integration_error: allocated - true_delta,
            relative_error: ((allocated - true_delta) / true_delta).abs(),
            panels: 1,
            within_tol: None,
            num_params: 10,
            fraction_helped: 1.0 - hurt,
            fraction_hurt: hurt,
            fraction_zero: 0.0,
            hurt_among_nonzero: hurt,
            layers: vec![LayerAllocation {
                name: "fc.weight".into(),
                total: allocated,
                helped: 5,
                hurt: 5,
                zero: 0,
            }],
            gradient_evaluations: 3,
            reused_gradients: 0,
            loss_evaluations: 0,
            measure_examples: 48,
            lca_wall_s: 0.5,
            step_wall_s: 0.1,
        }
    }

    #[test]
    fn stats_are_quantiles_of_the_records() {
        // The fractions 0.1, 0.3, 0.5, 0.7, 0.9 (out of order): quartiles 0.3 / 0.5 / 0.7.
        let mut records: Vec<LcaRecord> = [0.9, 0.1, 0.5, 0.3, 0.7]
            .into_iter()
            .enumerate()
            .map(|(i, h)| record(i as u64 + 1, h, -0.1, -0.1 + 0.01 * i as f64))
            .collect();
        let s = lca_stats(&records, 32).unwrap();
        assert_eq!((s.steps, s.num_params), (5, 10));
        assert!((s.hurt_q25 - 0.3).abs() < 1e-12 && (s.hurt_median - 0.5).abs() < 1e-12);
        assert!((s.hurt_q75 - 0.7).abs() < 1e-12);
        assert!(about_half_hurt(&s));
        // Relative errors 0, 0.1, 0.2, 0.3, 0.4: median 0.2, maximum 0.4.
        assert!((s.rel_error_median - 0.2).abs() < 1e-12, "{s:?}");
        assert!((s.rel_error_max - 0.4).abs() < 1e-12);
        assert!((s.sum_true_delta + 0.5).abs() < 1e-12);
        assert!((s.sum_allocated - (-0.5 + 0.1)).abs() < 1e-12);
        // 3 passes of 48 examples per step, against batches of 32.
        assert!((s.gradients_per_step - 3.0).abs() < 1e-12);
        assert!((s.cost_in_train_steps - 3.0 * 48.0 / 32.0).abs() < 1e-12);
        // A step outside the tolerance is left out of the fractions, errors and sums, not the
        // cost: without step 5 (error 0.4), the maximum relative error is 0.3.
        records[4].within_tol = Some(false);
        records[4].panels = 8;
        let t = lca_stats(&records, 32).unwrap();
        assert_eq!((t.steps, t.within_tol), (5, 4));
        assert!((t.rel_error_max - 0.3).abs() < 1e-12, "{t:?}");
        assert!((t.sum_true_delta + 0.4).abs() < 1e-12);
        assert!((t.mean_panels - 12.0 / 5.0).abs() < 1e-12);
        assert!((t.gradients_per_step - 3.0).abs() < 1e-12);
        records[4].within_tol = None;
        records[2].hurt_among_nonzero = 0.95;
        assert!(!about_half_hurt(&lca_stats(&records, 32).unwrap()));
        assert!(lca_stats(&[], 32).is_none());
        // No step within tolerance: no statistics to report.
        for r in &mut records {
            r.within_tol = Some(false);
        }
        assert!(lca_stats(&records, 32).is_none());
    }

    #[test]
    fn the_page_draws_both_runs_and_names_its_command() {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../experiments/lca.toml");
        let exp = super::LcaExperiment::load(&path).unwrap();
        let profile = exp.profile("smoke").unwrap();
        let runs = profile.runs("lca-smoke", None).unwrap();
        let records: Vec<Vec<LcaRecord>> = [0.5, 0.2]
            .into_iter()
            .map(|h| (1..=4).map(|k| record(k, h, -0.1, -0.1)).collect())
            .collect();
        let stamp = crate::pages::testing::stamp("smoke");
        let page = super::page(&stamp, &exp, profile, &runs, &records, None);
        assert_eq!(page.stem, "lca-smoke");
        let files: Vec<&str> = page.plots.iter().map(|p| p.0.as_str()).collect();
        assert_eq!(
            files,
            [
                "lca-smoke-hurt.svg",
                "lca-smoke-error.svg",
                "lca-smoke-layers-large.svg",
                "lca-smoke-layers-small.svg"
            ]
        );
        let md = &page.markdown;
        assert!(
            md.contains("Generated by `cargo xtask reproduce test` on now at git rev."),
            "{md}"
        );
        assert!(
            md.contains("Only the large learning rate has about half hurting."),
            "{md}"
        );
        assert!(
            md.contains("| fc.weight | -4.0000e-1 | -4.0000e-1 |"),
            "{md}"
        );
        assert!(md.contains("![Fraction of parameters that hurt (among non-zero allocations)](lca-smoke-hurt.svg)"), "{md}");
    }
}
