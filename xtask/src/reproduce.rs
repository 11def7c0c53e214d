//! `cargo xtask reproduce EXPERIMENT --profile P`: run the experiment's runs through the runner
//! (or the Slurm executor), have `breakeven-report` build its page, and write the page and its
//! plots to `docs/results/<experiment>-<profile>.md`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use breakeven_data::fetch::FetchOptions;
use breakeven_report::page::{read_records, Page};
use breakeven_report::pages::{
    batch_variance, break_even, break_even_sweep, early_phase, edge_of_stability, fisher_explosion,
    memorization,
};
use breakeven_report::table::read_reference_runs;
use breakeven_runner::config::DataName;
use breakeven_runner::lca::{lca_path, read_lca, run_lca, LcaExperiment};
use breakeven_runner::sweep::{Experiment, Profile};
use breakeven_runner::table::{find_data, run_table_with, RowOutcome, RowState, TableProgress};
use breakeven_runner::TrainOptions;

use crate::args::{Executor, ReproduceArgs};
use crate::progress::{Bars, LogProgress};

pub fn reproduce(args: &ReproduceArgs) -> Result<()> {
    if args.executor == Executor::Slurm {
        crate::slurm::check_supported(&args.experiment)?;
    }
    let page = match args.experiment.as_str() {
        "fisher-explosion" => {
            let (exp, profile, outcomes) = run_definition(args, fisher_explosion::DEFINITION)?;
            let records = read_records(&outcomes)?;
            fisher_explosion::page(&args.stamp(), &exp, &profile, &outcomes, &records)?
        }
        "memorization" => {
            let (exp, profile, outcomes) = run_definition(args, memorization::DEFINITION)?;
            let records = read_records(&outcomes)?;
            memorization::page(&args.stamp(), &exp, &profile, &outcomes, &records)?
        }
        "break-even" | "batch-variance" => {
            let (exp, profile, outcomes) = run_definition(args, break_even_sweep::DEFINITION)?;
            let sweep = break_even_sweep::sweep(&profile, &outcomes, &read_records(&outcomes)?)?;
            if args.experiment == "break-even" {
                break_even::page(&args.stamp(), &exp, &profile, &sweep)
            } else {
                batch_variance::page(&args.stamp(), &profile, &sweep)
            }
        }
        "early-phase" => early_phase_page(args)?,
        "edge-of-stability" => edge_of_stability_page(args)?,
        "lca" => lca_page(args)?,
        _ => table_page(args)?,
    };
    write_page(&args.out_dir()?, &page)
}

/// A table (`table1`, `table2` or a definition file): the sweep, with progress bars unless
/// `--quiet`, and its page with a bar chart and curves per row.
fn table_page(args: &ReproduceArgs) -> Result<Page> {
    let options = TrainOptions::default();
    let (exp, profile, outcomes) = if args.quiet || args.executor == Executor::Slurm {
        run_sweep(args, &args.experiment, &options, &mut LogProgress)?
    } else {
        let mut bars = Bars::start()?;
        let out = run_sweep(args, &args.experiment, &options, &mut bars);
        bars.finish();
        out?
    };
    let stem = format!("{}-{}", args.page_name(), args.profile);
    let reference = args.out_dir()?.join(format!("{stem}-pytorch.jsonl"));
    let reference_runs = read_reference_runs(&reference)?;
    let records = read_records(&outcomes)?;
    Ok(breakeven_report::table::page(
        stem,
        &args.stamp(),
        &exp,
        &profile,
        &outcomes,
        reference_runs,
        &records,
    )?)
}

/// The early-phase runs (every checkpoint kept) and each finished run's checkpoints embedded
/// by the runner.
fn early_phase_page(args: &ReproduceArgs) -> Result<Page> {
    let options = TrainOptions {
        keep_all_checkpoints: true,
        ..Default::default()
    };
    let (exp, profile, outcomes) =
        run_sweep(args, early_phase::DEFINITION, &options, &mut LogProgress)?;
    let mut trajectories = early_phase::Trajectories::new();
    for o in &outcomes {
        let RowState::Ran { runs, .. } = &o.state else {
            continue;
        };
        for (spec, _) in runs.iter().filter(|(_, s)| s.is_some()) {
            let t = breakeven_runner::early_phase::trajectory(&spec.dir, o.data_dir.as_deref())
                .with_context(|| format!("embedding the checkpoints of {}", spec.dir.display()))?;
            trajectories.insert(spec.dir.clone(), t);
        }
    }
    Ok(early_phase::page(
        &args.stamp(),
        &exp,
        &profile,
        &outcomes,
        &trajectories,
    )?)
}

/// Full-batch GD for each loss × η of the profile (runs already stored with the same spec
/// are reused; with `--report-only` nothing runs).
fn edge_of_stability_page(args: &ReproduceArgs) -> Result<Page> {
    use breakeven_runner::edge_of_stability::{run_or_reuse, Definition};
    breakeven_runner::enable_second_order()?;
    let def = Definition::load(&args.definition_path(edge_of_stability::DEFINITION))?;
    let profile = def.profile(&args.profile)?;
    let runs_dir = args.runs_dir(edge_of_stability::DEFINITION);
    // A report reads the stored runs, not the data.
    let data_dir = if args.report_only {
        None
    } else {
        data_dir_for(args, &profile.data_name())?
    };
    let mut sections = Vec::new();
    for network in profile.networks()? {
        for loss in &profile.losses {
            let mut runs = Vec::new();
            for &lr in &network.lrs {
                let spec = profile.spec(&network, loss, lr, args.device.as_deref())?;
                let dir = runs_dir.join(network.run_name(loss, lr));
                let run = run_or_reuse(&spec, &dir, data_dir.as_deref(), !args.report_only)?;
                runs.push((lr, run));
            }
            sections.push(edge_of_stability::Section {
                network: network.name.clone(),
                loss: loss.clone(),
                runs,
            });
        }
    }
    Ok(edge_of_stability::page(
        &args.stamp(),
        &def,
        profile,
        &sections,
    ))
}

/// A large and a small learning rate through the runner's LCA run (with `--report-only`, the
/// stored records).
fn lca_page(args: &ReproduceArgs) -> Result<Page> {
    let def = args.definition_path("lca");
    let exp = LcaExperiment::load(&def).with_context(|| format!("experiment {}", def.display()))?;
    let profile = exp.profile(&args.profile)?;
    let stem = format!("lca-{}", args.profile);
    let runs = profile.runs(&stem, args.device.as_deref())?;
    let runs_dir = args.runs_dir("lca");
    let data_name = runs[0].1.data.name;
    let data_dir = if args.report_only {
        None
    } else {
        data_dir_for(args, data_name.as_str())
            .with_context(|| format!("locating data set {data_name}"))?
    };
    let mut records = Vec::new();
    for (_, config) in &runs {
        let dir = runs_dir.join(&config.name);
        records.push(if args.report_only {
            read_lca(&lca_path(&dir))
                .with_context(|| format!("--report-only: no LCA records in {}", dir.display()))?
        } else {
            tracing::info!(run = %dir.display(), lr = config.optim.lr, "LCA run");
            run_lca(config, &profile.lca, &dir, data_dir.as_deref())
                .with_context(|| format!("LCA run {}", dir.display()))?
        });
    }
    // The LCA page names its command without `--runs-dir`.
    let mut stamp = args.stamp();
    stamp.command = format!("cargo xtask reproduce lca --profile {}", args.profile);
    if let Some(d) = &args.device {
        stamp.command.push_str(&format!(" --device {d}"));
    }
    if args.report_only {
        stamp.command.push_str(" --report-only");
    }
    Ok(breakeven_report::lca::page(
        &stamp,
        &exp,
        profile,
        &runs,
        &records,
        data_dir.as_deref(),
    ))
}

/// Runs the sweep of `experiments/<definition>.toml` for `args.profile` (finished runs are
/// skipped; with `--report-only` nothing is trained) with one log line per run.
fn run_definition(
    args: &ReproduceArgs,
    definition: &str,
) -> Result<(Experiment, Profile, Vec<RowOutcome>)> {
    run_sweep(args, definition, &TrainOptions::default(), &mut LogProgress)
}

/// Runs the sweep of `definition` (see [`run_definition`]) locally with `progress`, or on
/// Slurm, and returns the definition, the profile and every row's outcome; fails when no row
/// ran (a committed page is never replaced by one whose every cell reads "missing").
fn run_sweep(
    args: &ReproduceArgs,
    definition: &str,
    options: &TrainOptions,
    progress: &mut dyn TableProgress,
) -> Result<(Experiment, Profile, Vec<RowOutcome>)> {
    // Penalties and curvature need double backprop, enabled before this thread's first backward.
    breakeven_runner::enable_second_order()?;
    let (exp, profile, runs_dir) = load_definition(args, definition)?;
    let outcomes = if args.executor == Executor::Slurm {
        anyhow::ensure!(
            args.rows.is_empty(),
            "--rows is for the local executor; with Slurm every row's runs are submitted"
        );
        crate::slurm::execute(args, &exp, &runs_dir, options)?
    } else {
        refuse_slurm_in_flight(args, &runs_dir)?;
        let run = |exp: &Experiment, execute: bool, progress: &mut dyn TableProgress| {
            run_table_with(
                exp,
                &args.profile,
                &runs_dir,
                &args.data_roots(),
                execute,
                progress,
                options,
            )
        };
        if args.rows.is_empty() {
            run(&exp, !args.report_only, progress)?
        } else {
            // The chosen rows train; then every row is read back for the page, keeping the
            // errors of the runs that failed in training.
            let trained = if args.report_only {
                Vec::new()
            } else {
                run(&only_rows(&exp, &args.profile, &args.rows)?, true, progress)?
            };
            let mut outcomes = run(&exp, false, progress)?;
            for o in &mut outcomes {
                let Some(t) = trained.iter().find(|t| t.row.key == o.row.key) else {
                    continue;
                };
                if let (RowState::Ran { errors, .. }, RowState::Ran { errors: e, .. }) =
                    (&mut o.state, &t.state)
                {
                    errors.extend(e.iter().cloned());
                }
            }
            outcomes
        }
    };
    let page = args.out_dir()?.join(format!(
        "{}-{}.md",
        page_name_of_definition(args, definition),
        args.profile
    ));
    require_a_row(&outcomes, &page)?;
    Ok((exp, profile, outcomes))
}

/// `exp` with only the rows `keys` (each must be a row of `profile`).
fn only_rows(exp: &Experiment, profile: &str, keys: &[String]) -> Result<Experiment> {
    let known: Vec<&str> = exp
        .rows_in(profile)
        .iter()
        .map(|r| r.key.as_str())
        .collect();
    if let Some(k) = keys.iter().find(|k| !known.contains(&k.as_str())) {
        anyhow::bail!("--rows: {k:?} is not a row of profile {profile:?}; its rows are {known:?}");
    }
    let mut only = exp.clone();
    only.rows.retain(|r| keys.contains(&r.key));
    Ok(only)
}

/// The page a definition's sweep writes (a table's own name, else the definition's).
fn page_name_of_definition(args: &ReproduceArgs, definition: &str) -> String {
    if definition == args.experiment {
        args.page_name()
    } else {
        definition.to_string()
    }
}

/// Where data set `name` is (`None`: the default search path or synthetic data), fetching it
/// into the first data root first unless `--offline`; the error says what to type.
fn data_dir_for(args: &ReproduceArgs, name: &str) -> Result<Option<PathBuf>> {
    let name: DataName = name.parse()?;
    let roots = args.data_roots();
    let missing = match find_data(name, &roots) {
        Ok(dir) => return Ok(dir),
        Err(e) => e,
    };
    let Some(dataset) = name.files() else {
        return Err(missing.into());
    };
    let fix = format!(
        "`{}` (or pass --data-dir / set BREAKEVEN_DATA to a folder holding it)",
        dataset.fetch_command()
    );
    if args.offline {
        anyhow::bail!("{missing}; --offline, so nothing was downloaded");
    }
    let root = &roots[0];
    tracing::warn!("{name} not found: fetching it into {}", root.display());
    crate::fetch::fetch_with_bar(dataset, root, &FetchOptions::default()).with_context(|| {
        format!(
            "{name} was not found and fetching it into {} failed; fix: {fix}",
            root.display()
        )
    })?;
    Ok(find_data(name, &roots)?)
}

/// Makes sure every data set the profile's rows read is there (see [`data_dir_for`]) before
/// anything trains; with `--allow-missing` the rows without data are reported as missing instead.
fn ensure_data(args: &ReproduceArgs, exp: &Experiment) -> Result<()> {
    let mut names: Vec<String> = Vec::new();
    for row in exp.rows_in(&args.profile) {
        let config = exp.row_config(&args.profile, row)?;
        let name = config
            .get("data")
            .and_then(|d| d.get("name"))
            .and_then(|n| n.as_str())
            .unwrap_or("synthetic");
        if name != "synthetic" && !names.iter().any(|n| n == name) {
            names.push(name.to_string());
        }
    }
    let errors: Vec<String> = names
        .iter()
        .filter_map(|n| data_dir_for(args, n).err().map(|e| format!("{e:#}")))
        .collect();
    if errors.is_empty() || args.allow_missing {
        return Ok(());
    }
    anyhow::bail!(
        "{} of the `{}` profile's data sets are missing; nothing was trained and no page was \
         written:\n- {}\n(--allow-missing runs the other rows and lists these as missing)",
        errors.len(),
        args.profile,
        errors.join("\n- ")
    )
}

/// The local executor does not train in a runs dir whose Slurm jobs may still be running
/// (two executors never share a run directory).
fn refuse_slurm_in_flight(args: &ReproduceArgs, runs_dir: &Path) -> Result<()> {
    if args.report_only {
        return Ok(());
    }
    let jobs = breakeven_slurm::jobs_in_flight(runs_dir)?;
    if !jobs.is_empty() {
        anyhow::bail!(
            "{} belongs to a Slurm sweep with job {} in flight: rerun with --executor slurm to \
             follow it, or scancel it first",
            runs_dir.display(),
            jobs.join(", ")
        );
    }
    Ok(())
}

/// Refuses to write a page when no row of it ran: a committed page is never replaced by one
/// whose every cell reads "missing".
fn require_a_row(outcomes: &[RowOutcome], page: &Path) -> Result<()> {
    if outcomes
        .iter()
        .any(|o| matches!(o.state, RowState::Ran { .. }))
    {
        return Ok(());
    }
    anyhow::bail!(
        "no row of this profile ran (every data set is missing); {} was left as it was",
        page.display()
    )
}

/// `experiments/<definition>.toml` with `--device` applied to `args.profile`, that profile,
/// and where its runs live (`--runs-dir`, else `runs/<definition>-<profile>`). Unless
/// `--report-only`, the profile's data sets are located (or fetched) first.
fn load_definition(
    args: &ReproduceArgs,
    definition: &str,
) -> Result<(Experiment, Profile, PathBuf)> {
    let def = args.definition_path(definition);
    let mut exp = Experiment::load(&def)
        .with_context(|| format!("experiment definition {}", def.display()))?;
    let profile = exp.profile(&args.profile)?.clone();
    if let (Some(device), Some(p)) = (&args.device, exp.profiles.get_mut(&args.profile)) {
        p.base.insert("device".into(), device.clone().into());
    }
    let runs_dir = args.runs_dir(definition);
    if !args.report_only {
        if args.rows.is_empty() {
            ensure_data(args, &exp)?;
        } else {
            ensure_data(args, &only_rows(&exp, &args.profile, &args.rows)?)?;
        }
    }
    Ok((exp, profile, runs_dir))
}

/// Writes the page's plots (SVG, with a PNG beside each) and then `<stem>.md`, atomically,
/// into `out_dir`, and says where.
fn write_page(out_dir: &Path, page: &Page) -> Result<()> {
    for (file, plot) in &page.plots {
        let path = out_dir.join(file);
        breakeven_report::plot::write_svg_and_png(&path, plot)
            .with_context(|| format!("writing {} and its PNG", path.display()))?;
    }
    let md = out_dir.join(format!("{}.md", page.stem));
    breakeven_runner::atomic::write_atomic(&md, page.markdown.as_bytes())
        .with_context(|| format!("writing {}", md.display()))?;
    println!("wrote {}", md.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_must_be_rows_of_the_profile() {
        let def = Path::new(env!("CARGO_MANIFEST_DIR")).join("../experiments/table1.toml");
        let exp = Experiment::load(&def).unwrap();
        let only = only_rows(&exp, "smoke", &["synthetic-fc".into()]).unwrap();
        assert_eq!(only.rows.len(), 1);
        assert_eq!(only.rows[0].key, "synthetic-fc");
        // A row of the definition that the profile does not run, and a typo.
        for key in ["tinyimagenet-wrn", "synthetic"] {
            let err = only_rows(&exp, "smoke", &[key.into()])
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("not a row of profile") && err.contains("synthetic-fc"),
                "{err}"
            );
        }
    }

    #[test]
    fn a_profile_without_any_row_that_ran_writes_no_page() {
        let missing = RowOutcome {
            row: breakeven_runner::sweep::RowDef {
                key: "k".into(),
                setting: "s".into(),
                paper: Default::default(),
                overrides: Default::default(),
                sweep: Default::default(),
            },
            state: RowState::Missing {
                dataset: "cifar10".into(),
                message: "not found".into(),
            },
            data_dir: None,
        };
        let err = require_a_row(&[missing], Path::new("p.md")).unwrap_err();
        assert!(err.to_string().contains("p.md was left as it was"), "{err}");
    }
}
