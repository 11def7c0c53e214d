//! `cargo xtask reproduce lca --profile P`: a large and a small learning rate through the
//! runner's LCA run (`breakeven_runner::lca`), then plots and `docs/results/lca-<profile>.md`.

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use breakeven_runner::lca::{run_lca, LcaRecord};
use breakeven_runner::lca_report::{render_lca_markdown, LcaExperiment, LcaPage, LcaRun};
use breakeven_runner::plot::line_chart;
use breakeven_runner::report::hardware_description;
use breakeven_runner::rundir::git_revision;

use crate::reproduce::{data_dir_for, project_root, utc_now, write, write_plot, ReproduceArgs};

pub fn reproduce(args: &ReproduceArgs) -> Result<()> {
    let root = project_root();
    let def = root.join("experiments").join("lca.toml");
    let exp = LcaExperiment::load(&def).with_context(|| format!("experiment {}", def.display()))?;
    let profile = exp.profile(&args.profile)?;
    let stem = format!("lca-{}", args.profile);
    let runs = profile.runs(&stem, args.device.as_deref())?;
    let runs_dir = args
        .runs_dir
        .clone()
        .unwrap_or_else(|| root.join("runs").join(&stem));
    let data_name = runs[0].1.data.name.to_string();
    let data_dir =
        data_dir_for(args, &data_name).with_context(|| format!("locating data set {data_name}"))?;

    let mut results: Vec<(String, Vec<LcaRecord>)> = Vec::new();
    for (label, config) in &runs {
        let dir = runs_dir.join(&config.name);
        let records = if args.report_only {
            breakeven_runner::lca::read_lca(&breakeven_runner::lca::lca_path(&dir))
                .with_context(|| format!("--report-only: no LCA records in {}", dir.display()))?
        } else {
            tracing::info!(run = %dir.display(), lr = config.optim.lr, "LCA run");
            run_lca(config, &profile.lca, &dir, data_dir.as_deref())
                .with_context(|| format!("LCA run {}", dir.display()))?
        };
        results.push((label.clone(), records));
    }

    let out_dir = if args.out_dir.is_absolute() {
        args.out_dir.clone()
    } else {
        root.join(&args.out_dir)
    };
    std::fs::create_dir_all(&out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    let named = |label: &str| {
        let lr = runs
            .iter()
            .find(|(l, _)| l == label)
            .map(|(_, c)| c.optim.lr);
        format!("{label} lr {}", lr.unwrap_or(f64::NAN))
    };
    let series = |f: &dyn Fn(&LcaRecord) -> f64| -> Vec<(String, Vec<(f64, f64)>)> {
        results
            .iter()
            .map(|(l, recs)| {
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
            "Simpson's relative integration error |Σ A_i − ΔL| / |ΔL|".to_string(),
            // The error spans decades between runs and steps.
            line_chart(
                "LCA: relative integration error (Simpson)",
                "step",
                "|allocated − ΔL| / |ΔL|",
                &series(&|r| r.relative_error.abs().min(1e3)),
            )
            .log_y(),
        ),
    ];
    for (label, recs) in &results {
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
    let mut page_plots = Vec::new();
    for (file, caption, plot) in &plots {
        write_plot(&out_dir.join(file), plot)?;
        page_plots.push((file.clone(), caption.clone()));
    }

    let mut command = format!("cargo xtask reproduce lca --profile {}", args.profile);
    if let Some(d) = &args.device {
        command.push_str(&format!(" --device {d}"));
    }
    if args.report_only {
        command.push_str(" --report-only");
    }
    let device = runs[0].1.device;
    let data_note = data_dir
        .as_ref()
        .map(|d| format!("; data read from {}", d.display()))
        .unwrap_or_default();
    let page = LcaPage {
        profile: args.profile.clone(),
        description: profile.description.clone(),
        command,
        generated_utc: utc_now(),
        git_revision: git_revision(),
        hardware: format!("{}{data_note}", hardware_description(&device.to_string())),
        plots: page_plots,
    };
    let page_runs: Vec<LcaRun<'_>> = runs
        .iter()
        .zip(&results)
        .map(|((label, config), (_, recs))| (label.as_str(), config, recs.as_slice()))
        .collect();
    let md_path = out_dir.join(format!("{stem}.md"));
    write(&md_path, &render_lca_markdown(&exp, &page_runs, &page))?;
    println!("wrote {}", md_path.display());
    Ok(())
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
