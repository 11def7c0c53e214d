//! `cargo xtask reproduce edge-of-stability`: full-batch GD (Cohen et al. 2021, SCIENCE.md
//! §5.5) on the first n CIFAR-10 images for each loss × η of the profile, λ_H^1 by Lanczos
//! every few steps, plots of λ_H^1 against 2/η and of the training loss, and verdicts computed
//! by `breakeven_runner::claims::edge_of_stability_verdict`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result};
use breakeven_runner::claims::{edge_of_stability_verdict, sig4, EOS_BAND};
use breakeven_runner::full_batch::{run_full_batch_from_disk, FullBatchPoint, FullBatchSpec};
use breakeven_runner::plot::line_chart;
use breakeven_runner::sweep::merge;
use serde::Deserialize;

use crate::reproduce::{
    data_dir_for, out_dir, page_head, profile_device, project_root, write, write_page, write_plot,
    ReproduceArgs,
};

/// `experiments/edge-of-stability.toml`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Definition {
    title: String,
    source: String,
    profiles: BTreeMap<String, Profile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Profile {
    description: String,
    losses: Vec<String>,
    lrs: Vec<f64>,
    /// A `FullBatchSpec` without `loss` and `lr`.
    base: toml::Table,
    /// Overrides of `base` per loss (e.g. a stopping rule only for cross-entropy).
    #[serde(default)]
    per_loss: BTreeMap<String, toml::Table>,
}

/// A run's spec and points, stored as `<runs>/<loss>-lr<η>/run.json`.
#[derive(Debug, serde::Serialize, Deserialize)]
struct StoredRun {
    spec: FullBatchSpec,
    points: Vec<FullBatchPoint>,
    wall_s: f64,
}

fn spec_for(profile: &Profile, loss: &str, lr: f64, device: Option<&str>) -> Result<FullBatchSpec> {
    let mut t = profile.base.clone();
    if let Some(o) = profile.per_loss.get(loss) {
        merge(&mut t, o);
    }
    let mut over = toml::Table::new();
    over.insert("loss".into(), loss.into());
    over.insert("lr".into(), lr.into());
    if let Some(d) = device {
        over.insert("device".into(), d.into());
    }
    merge(&mut t, &over);
    toml::Value::Table(t)
        .try_into()
        .with_context(|| format!("edge-of-stability run {loss} η={lr}: bad profile base"))
}

/// Runs (or reuses, when its stored spec is identical) one run.
fn run_one(
    spec: &FullBatchSpec,
    dir: &Path,
    data_dir: Option<&Path>,
    execute: bool,
) -> Result<Option<StoredRun>> {
    let file = dir.join("run.json");
    if let Ok(text) = std::fs::read_to_string(&file) {
        let stored: StoredRun =
            serde_json::from_str(&text).with_context(|| format!("reading {}", file.display()))?;
        if serde_json::to_value(&stored.spec)? == serde_json::to_value(spec)? {
            return Ok(Some(stored));
        }
    }
    if !execute {
        return Ok(None);
    }
    tracing::info!(
        "full-batch GD: {} loss, η = {}, n = {}",
        serde_json::to_string(&spec.loss)?,
        spec.lr,
        spec.n
    );
    let t0 = std::time::Instant::now();
    let points = run_full_batch_from_disk(spec, data_dir, &mut |p| {
        tracing::debug!(step = p.step, loss = p.loss, lambda = ?p.lambda_h1, "point");
    })?;
    let stored = StoredRun {
        spec: spec.clone(),
        points,
        wall_s: t0.elapsed().as_secs_f64(),
    };
    std::fs::create_dir_all(dir)?;
    write(&file, &serde_json::to_string_pretty(&stored)?)?;
    Ok(Some(stored))
}

pub fn reproduce(args: &ReproduceArgs) -> Result<()> {
    breakeven_runner::enable_second_order()?;
    let root = project_root();
    let def_path = root.join("experiments").join("edge-of-stability.toml");
    let text = std::fs::read_to_string(&def_path)
        .with_context(|| format!("reading {}", def_path.display()))?;
    let def: Definition =
        toml::from_str(&text).with_context(|| format!("parsing {}", def_path.display()))?;
    let profile = def.profiles.get(&args.profile).with_context(|| {
        format!(
            "unknown profile {:?}, expected one of {:?}",
            args.profile,
            def.profiles.keys().collect::<Vec<_>>()
        )
    })?;
    let runs_dir = args.runs_dir.clone().unwrap_or_else(|| {
        root.join("runs")
            .join(format!("edge-of-stability-{}", args.profile))
    });
    let data_name = profile
        .base
        .get("data")
        .and_then(|d| d.as_str())
        .unwrap_or("cifar10")
        .to_string();
    let data_dir = data_dir_for(args, &data_name)?;

    let out_dir = out_dir(args)?;
    let stem = format!("edge-of-stability-{}", args.profile);
    let device = profile_device(args, &profile.base);
    let mut page = page_head(args, &def.title, &device, &profile.description, &def.source);
    let _ = writeln!(
        page,
        "- Rule: a run supports the claim when the median of λ_H^1·η/2 over the measurements in the second half of the run lies in [{lo}, {hi}] (hovering at 2/η) and, if λ_H^1·η/2 starts below {lo}, it reaches {lo} (progressive sharpening; a run starting above cannot sharpen and is judged on hovering alone). Runs stop at the training-accuracy target `stop_acc` where the profile sets one (Cohen et al. stop at 99%). The claim is supported overall when at least half of the runs that did not diverge support it.",
        lo = EOS_BAND.0,
        hi = EOS_BAND.1
    );
    let (mut supported, mut decided) = (0, 0);
    for loss in &profile.losses {
        let _ = writeln!(page, "\n## Loss: {loss}\n");
        page.push_str("| η | 2/η | steps | final loss | final acc. (%) | λ_H^1 first → max → last | verdict | wall (s) |\n|---|---|---|---|---|---|---|---|\n");
        let (mut sharp, mut losses) = (Vec::new(), Vec::new());
        for &lr in &profile.lrs {
            let spec = spec_for(profile, loss, lr, args.device.as_deref())?;
            let dir = runs_dir.join(format!("{loss}-lr{lr}"));
            let Some(run) = run_one(&spec, &dir, data_dir.as_deref(), !args.report_only)? else {
                let _ = writeln!(page, "| {lr} | {} | pending | | | | | |", sig4(2.0 / lr));
                continue;
            };
            let lambda: Vec<(u64, f64)> = run
                .points
                .iter()
                .filter_map(|p| Some((p.step, p.lambda_h1?)))
                .collect();
            let last = run.points.last();
            let diverged = last.is_some_and(|p| !p.loss.is_finite());
            let verdict = if diverged {
                None
            } else {
                edge_of_stability_verdict(&lambda, lr)
            };
            let cell = match (&verdict, diverged) {
                (_, true) => "diverged (not counted)".to_string(),
                (Some(v), _) => {
                    decided += 1;
                    supported += usize::from(v.supports);
                    format!("{}: {}", v.word(), v.explanation)
                }
                (None, _) => "too few measurements".to_string(),
            };
            let lam = |p: Option<&(u64, f64)>| p.map_or("—".into(), |p| sig4(p.1));
            let max = lambda.iter().map(|p| p.1).fold(f64::NEG_INFINITY, f64::max);
            let _ = writeln!(
                page,
                "| {lr} | {} | {} | {} | {} | {} → {} → {} | {cell} | {:.0} |",
                sig4(2.0 / lr),
                last.map_or(0, |p| p.step),
                last.map_or("—".into(), |p| sig4(p.loss)),
                last.and_then(|p| p.accuracy)
                    .map_or("—".into(), |a| format!("{:.1}", 100.0 * a)),
                lam(lambda.first()),
                if max.is_finite() {
                    sig4(max)
                } else {
                    "—".into()
                },
                lam(lambda.last()),
                run.wall_s
            );
            let end = last.map_or(1, |p| p.step.max(1)) as f64;
            sharp.push((
                format!("λ_H^1, η={lr}"),
                lambda
                    .iter()
                    .map(|&(s, l)| (s as f64, l))
                    .collect::<Vec<_>>(),
            ));
            sharp.push((
                format!("2/η, η={lr}"),
                vec![(0.0, 2.0 / lr), (end, 2.0 / lr)],
            ));
            losses.push((
                format!("η={lr}"),
                run.points
                    .iter()
                    .filter(|p| p.loss.is_finite())
                    .map(|p| (p.step as f64, p.loss))
                    .collect(),
            ));
        }
        for (suffix, title, y, series) in [
            (
                "sharpness",
                "top Hessian eigenvalue λ_H^1 and 2/η",
                "λ_H^1",
                &sharp,
            ),
            ("loss", "training loss (full batch)", "loss", &losses),
        ] {
            if series.is_empty() {
                continue;
            }
            let file = format!("{stem}-{loss}-{suffix}.svg");
            let title = format!("Full-batch GD, {loss}: {title}");
            let plot = line_chart(&title, "step", y, series);
            // The loss falls by decades; λ_H^1 is read against 2/η on a linear axis.
            let plot = if suffix == "loss" { plot.log_y() } else { plot };
            write_plot(&out_dir.join(&file), &plot)?;
            let _ = writeln!(page, "\n![{suffix}]({file})");
        }
    }
    let _ = writeln!(page, "\n## Verdict\n");
    let overall = decided > 0 && 2 * supported >= decided;
    let _ = writeln!(
        page,
        "**λ_H^1 rises to ≈ 2/η and hovers there**: {supported} of {decided} non-diverged runs support it → **{}**.",
        if overall { "supports" } else { "does not support" }
    );
    write_page(&out_dir, &stem, &page)
}
