//! The LCA experiment as data (`experiments/lca.toml`: profiles with a large and a small
//! learning rate over one base config), statistics computed from the logged records, and the
//! Markdown results page. Every claim on the page is computed here from the records.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::Path;

use serde::Deserialize;

use crate::config::RunConfig;
use crate::error::RunError;
use crate::lca::{LcaRecord, LcaSchedule};

/// `experiments/lca.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LcaExperiment {
    pub name: String,
    pub title: String,
    pub source: String,
    pub profiles: BTreeMap<String, LcaProfile>,
}

/// One scale of the experiment: the two learning rates, the allocation schedule, the base run.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LcaProfile {
    pub description: String,
    pub large_lr: f64,
    pub small_lr: f64,
    pub lca: LcaSchedule,
    /// A `RunConfig` without `optim.lr` and `name` (filled in per learning rate).
    pub base: toml::Table,
}

impl LcaExperiment {
    /// Reads and parses the definition; `path` names the file in errors.
    pub fn load(path: &Path) -> Result<Self, RunError> {
        let text = std::fs::read_to_string(path).map_err(|e| RunError::io(path, e))?;
        toml::from_str(&text).map_err(|e| RunError::Config {
            origin: path.display().to_string(),
            message: e.to_string(),
        })
    }

    /// The named profile, or an error listing the defined ones.
    pub fn profile(&self, name: &str) -> Result<&LcaProfile, RunError> {
        self.profiles.get(name).ok_or_else(|| RunError::Invalid {
            key: "profile".into(),
            message: format!(
                "`{name}` is not defined; profiles: {}",
                self.profiles.keys().cloned().collect::<Vec<_>>().join(", ")
            ),
        })
    }
}

impl LcaProfile {
    /// The two runs: `("large", config)` and `("small", config)`, validated.
    pub fn runs(
        &self,
        stem: &str,
        device: Option<&str>,
    ) -> Result<Vec<(String, RunConfig)>, RunError> {
        [("large", self.large_lr), ("small", self.small_lr)]
            .into_iter()
            .map(|(label, lr)| {
                let mut t = self.base.clone();
                t.insert("name".into(), format!("{stem}-{label}-lr{lr}").into());
                if let Some(d) = device {
                    t.insert("device".into(), d.into());
                }
                let optim = t
                    .entry("optim")
                    .or_insert_with(|| toml::Table::new().into());
                if let Some(o) = optim.as_table_mut() {
                    o.insert("lr".into(), lr.into());
                }
                let config: RunConfig =
                    toml::Value::Table(t)
                        .try_into()
                        .map_err(|e: toml::de::Error| RunError::Config {
                            origin: format!("{stem} profile base"),
                            message: e.to_string(),
                        })?;
                config.validate()?;
                Ok((label.to_string(), config))
            })
            .collect()
    }
}

/// Summary statistics of one run's records.
#[derive(Debug, Clone, PartialEq)]
pub struct LcaStats {
    pub steps: usize,
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

/// Statistics of a run; `None` without records. `batch_size` is the training mini-batch.
pub fn lca_stats(records: &[LcaRecord], batch_size: usize) -> Option<LcaStats> {
    let first = records.first()?;
    let hurt = sorted(records.iter().map(|r| r.hurt_among_nonzero));
    let rel = sorted(records.iter().map(|r| r.relative_error.abs()));
    let abs = sorted(records.iter().map(|r| r.integration_error.abs()));
    let zero = sorted(records.iter().map(|r| r.fraction_zero));
    Some(LcaStats {
        steps: records.len(),
        num_params: first.num_params,
        hurt_q25: quantile(&hurt, 0.25),
        hurt_median: quantile(&hurt, 0.5),
        hurt_q75: quantile(&hurt, 0.75),
        zero_median: quantile(&zero, 0.5),
        rel_error_median: rel.get(rel.len() / 2).copied().unwrap_or(f64::NAN),
        rel_error_max: rel.last().copied().unwrap_or(f64::NAN),
        abs_error_median: quantile(&abs, 0.5),
        sum_true_delta: records.iter().map(|r| r.true_delta).sum(),
        sum_allocated: records.iter().map(|r| r.allocated).sum(),
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
        "Generated by `{}` on {} at git {}.\nHardware: {}.\n",
        page.command, page.generated_utc, page.git_revision, page.hardware
    );
    let stats: Vec<_> = runs
        .iter()
        .map(|(l, c, r)| (*l, *c, lca_stats(r, c.data.batch_size)))
        .collect();
    out.push_str("## Do about half of the parameters hurt?\n\n");
    out.push_str("| lr | model | data | logged steps | params | hurt among non-zero: q25 / median / q75 | median zero | about half (median in [0.4, 0.6])? |\n|---|---|---|---|---|---|---|---|\n");
    for (label, c, s) in &stats {
        let Some(s) = s else { continue };
        let _ = writeln!(
            out,
            "| {label} ({}) | {} | {} | {} | {} | {:.3} / {:.3} / {:.3} | {:.4} | {} |",
            c.optim.lr,
            model_name(c),
            data_name(c),
            s.steps,
            s.num_params,
            s.hurt_q25,
            s.hurt_median,
            s.hurt_q75,
            s.zero_median,
            if about_half_hurt(s) { "yes" } else { "no" }
        );
    }
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
    out.push_str("| lr | median \\|rel. error\\| | max \\|rel. error\\| | median \\|abs. error\\| | Σ true ΔL | Σ allocated | gradient passes / logged step | cost in training steps | LCA s / logged step | SGD step s |\n|---|---|---|---|---|---|---|---|---|---|\n");
    for (label, c, s) in &stats {
        let Some(s) = s else { continue };
        let _ = writeln!(
            out,
            "| {label} ({}) | {:.2e} | {:.2e} | {:.2e} | {:.4} | {:.4} | {:.2} | {:.1} | {:.2} | {:.3} |",
            c.optim.lr, s.rel_error_median, s.rel_error_max, s.abs_error_median, s.sum_true_delta, s.sum_allocated, s.gradients_per_step, s.cost_in_train_steps, s.lca_wall_s, s.step_wall_s
        );
    }
    out.push_str("\nOne gradient pass = forward + backward over the whole measurement subset; consecutive allocated steps reuse the shared endpoint gradient (2 passes instead of Simpson's 3). \"Cost in training steps\" = passes × subset size / mini-batch size.\n\n");
    out.push_str(
        "## Allocation per parameter tensor (Σ over logged steps; negative = lowered the loss)\n\n",
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
    out.push_str("- LCA uses Simpson's rule (the paper's RK4 for an integrand of the path parameter alone). On ReLU / max-pool nets the gradient jumps where the path crosses a kink, so the error falls only like O(h), not h⁴: the integration error above is measured, not assumed small.\n");
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
