//! `cargo xtask reproduce EXPERIMENT --profile P`: run a table's sweep through the runner,
//! then write `docs/results/<experiment>-<profile>.md` and a plot per row.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use breakeven_data::fetch::FetchOptions;
use breakeven_runner::claims::Verdict;
use breakeven_runner::config::DataName;
use breakeven_runner::metrics::{read_metrics, MetricsRecord};
use breakeven_runner::plot::{bar_chart, line_chart, Plot};
use breakeven_runner::report::{
    hardware_description, read_reference_runs, render_markdown, ReportContext,
};
use breakeven_runner::rundir::{git_revision, Summary};
use breakeven_runner::sweep::{Experiment, Profile, RunSpec};
use breakeven_runner::table::{
    find_data, run_table, run_table_with, RowOutcome, RowState, TableProgress,
};
use breakeven_runner::TrainOptions;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

use crate::slurm::{Executor, SlurmArgs};

#[derive(Debug, clap::Args)]
pub struct ReproduceArgs {
    /// The experiment: a file name in experiments/ without `.toml` (e.g. `table1`), or the
    /// path of a table definition file (`*.toml`; its page is named after the file).
    pub experiment: String,
    /// Scale: `smoke` (CI, minutes), `cpu` (about an hour on 2 cores), `paper` (published scale, GPU).
    #[arg(long, default_value = "smoke")]
    pub profile: String,
    /// Data directory, the only one searched when given (default: ./data).
    #[arg(long, env = "BREAKEVEN_DATA")]
    pub data_dir: Option<PathBuf>,
    /// Where run directories go (default: runs/<experiment>-<profile>).
    #[arg(long)]
    pub runs_dir: Option<PathBuf>,
    /// Where the Markdown table and plots go.
    #[arg(long, default_value = "docs/results")]
    pub out_dir: PathBuf,
    /// Run every run on this device instead of the profile's (`cpu`, `cuda`, `cuda:N`).
    #[arg(long)]
    pub device: Option<String>,
    /// No progress bars; warnings and errors only.
    #[arg(long)]
    pub quiet: bool,
    /// Train nothing: render the table from the runs finished so far (unfinished cells show as pending).
    #[arg(long)]
    pub report_only: bool,
    /// Never download: a data set that is not found is an error (without this, it is fetched
    /// first, verified, as `cargo xtask data fetch NAME` does).
    #[arg(long)]
    pub offline: bool,
    /// Run the rows whose data set is available and report the others as missing, instead of
    /// stopping before any training.
    #[arg(long)]
    pub allow_missing: bool,
    /// Where the runs train: `local` (this process) or `slurm` (job arrays on a cluster that
    /// shares this file system; see docs/CLUSTER.md). The page is the same either way.
    #[arg(long, value_enum, default_value = "local")]
    pub executor: Executor,
    #[command(flatten)]
    pub slurm: SlurmArgs,
}

/// The progress bars of a running `reproduce`, if any: log lines are printed above them.
static BARS: std::sync::OnceLock<MultiProgress> = std::sync::OnceLock::new();

/// A `tracing` writer that prints to stderr without tearing the progress bars.
#[derive(Debug, Default)]
pub struct LogWriter(Vec<u8>);

impl std::io::Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        let text = std::mem::take(&mut self.0);
        let print = || std::io::stderr().write_all(&text);
        match BARS.get() {
            Some(bars) => bars.suspend(print),
            None => print(),
        }
    }
}

impl Drop for LogWriter {
    fn drop(&mut self) {
        let _ = std::io::Write::flush(self);
    }
}

/// The project root (xtask lives in `<root>/xtask`).
pub(crate) fn project_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Two progress bars: runs of the table, and steps of the current run (both with ETA).
struct Bars {
    total: ProgressBar,
    run: ProgressBar,
}

impl TableProgress for Bars {
    fn run_started(&mut self, index: usize, total: usize, spec: &RunSpec) {
        self.total.set_length(total as u64);
        self.total.set_position(index as u64);
        self.total
            .set_message(format!("{}/{}", spec.row, spec.column));
    }
    fn run_bar(&mut self) -> Option<ProgressBar> {
        Some(self.run.clone())
    }
}

struct NoBars;
impl TableProgress for NoBars {
    fn run_started(&mut self, index: usize, total: usize, spec: &RunSpec) {
        tracing::info!("run {}/{total}: {}", index + 1, spec.dir.display());
    }
}

pub fn reproduce(args: &ReproduceArgs) -> Result<()> {
    if args.executor == Executor::Slurm {
        crate::slurm::check_supported(&args.experiment)?;
    }
    // Penalties and curvature need double backprop, enabled before this thread's first backward.
    // Experiments with their own pages (claims with computed verdicts, not a table).
    match args.experiment.as_str() {
        "fisher-explosion" => return crate::fisher_explosion::reproduce(args),
        "edge-of-stability" => return crate::edge_of_stability::reproduce(args),
        "lca" => return crate::lca::reproduce(args),
        "memorization" => return crate::memorization::reproduce(args),
        "early-phase" => return crate::early_phase::reproduce(args),
        "break-even" => return crate::break_even::reproduce(args),
        "batch-variance" => return crate::batch_variance::reproduce(args),
        _ => {}
    }
    breakeven_runner::enable_second_order()?;
    let (exp, profile, runs_dir) = load_definition(args, &args.experiment)?;
    let data_roots = data_roots(args);

    let outcomes = if args.executor == Executor::Slurm {
        crate::slurm::execute(args, &exp, &runs_dir, &TrainOptions::default())?
    } else if args.quiet {
        refuse_slurm_in_flight(args, &runs_dir)?;
        run_table(
            &exp,
            &args.profile,
            &runs_dir,
            &data_roots,
            !args.report_only,
            &mut NoBars,
        )?
    } else {
        refuse_slurm_in_flight(args, &runs_dir)?;
        let multi = BARS.get_or_init(MultiProgress::new);
        let total = multi.add(ProgressBar::new(0));
        total.set_style(ProgressStyle::with_template(
            "runs {pos}/{len} [{bar:30}] {elapsed} elapsed, ETA {eta} — {msg}",
        )?);
        let run = multi.add(ProgressBar::new(0));
        let mut bars = Bars {
            total: total.clone(),
            run: run.clone(),
        };
        let out = run_table(
            &exp,
            &args.profile,
            &runs_dir,
            &data_roots,
            !args.report_only,
            &mut bars,
        )?;
        total.finish_and_clear();
        run.finish_and_clear();
        out
    };

    let out_dir = out_dir(args)?;
    // The revision before this command writes anything (its own plots would read as "dirty").
    let revision = git_revision();
    let stem = format!("{}-{}", page_name(args), args.profile);
    let mut plots = Vec::new();
    for o in &outcomes {
        if let RowState::Ran { .. } = &o.state {
            for (suffix, plot) in row_plots(&exp, o)? {
                let file = format!("{stem}-{}{suffix}.svg", o.row.key);
                write_plot(&out_dir.join(&file), &plot)?;
                plots.push((o.row.key.clone(), file));
            }
        }
    }
    let device = args.device.clone().or_else(|| {
        profile
            .base
            .get("device")
            .and_then(|d| d.as_str())
            .map(String::from)
    });
    let command = command_line(args);
    let data_note: Vec<String> = outcomes
        .iter()
        .filter_map(|o| {
            o.data_dir
                .as_ref()
                .map(|d| format!("{}: {}", o.row.key, d.display()))
        })
        .collect();
    let ctx = ReportContext {
        profile: args.profile.clone(),
        command,
        generated_utc: utc_now(),
        git_revision: revision,
        hardware: format!(
            "{}{}",
            hardware_description(device.as_deref().unwrap_or("cpu")),
            if data_note.is_empty() {
                String::new()
            } else {
                format!("; data read from {}", data_note.join(", "))
            }
        ),
        plots,
        reference_runs: read_reference_runs(&out_dir.join(format!("{stem}-pytorch.jsonl")))?,
    };
    let md_path = out_dir.join(format!("{stem}.md"));
    require_a_row(&outcomes, &md_path)?;
    write(&md_path, &render_markdown(&exp, &outcomes, &ctx))?;
    println!("wrote {}", md_path.display());
    Ok(())
}

/// The bar chart of a row, and the test-accuracy curves of each column's chosen setting (first seed).
fn row_plots(exp: &Experiment, o: &RowOutcome) -> Result<Vec<(&'static str, Plot)>> {
    let RowState::Ran { cells, runs, .. } = &o.state else {
        return Ok(vec![]);
    };
    let labels: Vec<String> = exp.columns.iter().map(|c| c.label.clone()).collect();
    let measured: Vec<Option<(f64, f64)>> =
        cells.iter().map(|c| c.test_mean.zip(c.test_std)).collect();
    let paper: Vec<Option<f64>> = exp
        .columns
        .iter()
        .map(|c| o.row.paper.get(&c.key).copied())
        .collect();
    let mut out = vec![(
        "",
        bar_chart(
            &format!("{}: test accuracy", o.row.setting),
            &labels,
            &measured,
            &paper,
        ),
    )];
    // Per chosen setting (first seed): test accuracy and, when tracked, Tr(F) along training.
    let (mut acc, mut train_acc, mut fisher) = (Vec::new(), Vec::new(), Vec::new());
    for (col, cell) in exp.columns.iter().zip(cells) {
        let Some(h) = cell.chosen else { continue };
        let Some((spec, _)) = runs
            .iter()
            .find(|(s, r)| s.column == col.key && s.hyper == h && r.is_some())
        else {
            continue;
        };
        let records = run_records(spec)?;
        let name = format!("{} ({h})", col.label);
        let series = |f: fn(&MetricsRecord) -> Option<f64>| {
            records
                .iter()
                .filter_map(|r| f(r).map(|a| (r.epoch, 100.0 * a)))
                .collect::<Vec<_>>()
        };
        acc.push((name.clone(), series(|r| r.test_acc)));
        train_acc.push((name.clone(), series(|r| r.measure_acc)));
        let tr_f: Vec<(f64, f64)> = records
            .iter()
            .filter_map(|r| {
                r.curvature
                    .as_ref()
                    .and_then(|c| c.fisher_trace)
                    .map(|f| (r.epoch, f))
            })
            .collect();
        if !tr_f.is_empty() {
            fisher.push((name, tr_f));
        }
    }
    // Test accuracy where the profile tracks it along training (`tracking.eval_test`), else the
    // training accuracy on the fixed measurement subset, which every run tracks.
    if acc.iter().any(|(_, pts)| !pts.is_empty()) {
        let title = format!("{}: test accuracy during training", o.row.setting);
        out.push((
            "-curves",
            line_chart(&title, "epoch", "test accuracy (%)", &acc),
        ));
    } else if train_acc.iter().any(|(_, pts)| !pts.is_empty()) {
        let title = format!("{}: training accuracy during training", o.row.setting);
        out.push((
            "-curves",
            line_chart(
                &title,
                "epoch",
                "training accuracy (%, measurement subset)",
                &train_acc,
            ),
        ));
    }
    if !fisher.is_empty() {
        // Tr(F) spans decades between the columns and along training.
        let title = format!("{}: Fisher trace Tr(F) during training", o.row.setting);
        out.push((
            "-fisher",
            line_chart(&title, "epoch", "Tr(F) (measurement subset)", &fisher).log_y(),
        ));
    }
    Ok(out)
}

/// Logs one line per run: the reproductions with pages of their own (their runs are short, and
/// the log goes to CI); table1 draws bars instead.
pub(crate) struct LogProgress;
impl TableProgress for LogProgress {
    fn run_started(&mut self, index: usize, total: usize, spec: &RunSpec) {
        tracing::info!("run {}/{total}: {}", index + 1, spec.dir.display());
    }
}

/// Where data set `name` is (`None`: the default search path or synthetic data), fetching it
/// into the first data root first unless `--offline`; the error says what to type.
pub(crate) fn data_dir_for(args: &ReproduceArgs, name: &str) -> Result<Option<PathBuf>> {
    let name: DataName = name.parse()?;
    let roots = data_roots(args);
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

/// The name a page and a runs dir take: the experiment, or a definition file's stem.
pub(crate) fn page_name(args: &ReproduceArgs) -> String {
    page_name_of(&args.experiment)
}

fn page_name_of(definition: &str) -> String {
    match definition.strip_suffix(".toml") {
        Some(path) => Path::new(path)
            .file_name()
            .map_or(path.to_string(), |n| n.to_string_lossy().into_owned()),
        None => definition.to_string(),
    }
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
pub(crate) fn require_a_row(outcomes: &[RowOutcome], page: &Path) -> Result<()> {
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
pub(crate) fn load_definition(
    args: &ReproduceArgs,
    definition: &str,
) -> Result<(Experiment, Profile, PathBuf)> {
    let root = project_root();
    let def = if definition.ends_with(".toml") {
        PathBuf::from(definition)
    } else {
        root.join("experiments").join(format!("{definition}.toml"))
    };
    let mut exp = Experiment::load(&def)
        .with_context(|| format!("experiment definition {}", def.display()))?;
    let profile = exp.profile(&args.profile)?.clone();
    if let (Some(device), Some(p)) = (&args.device, exp.profiles.get_mut(&args.profile)) {
        p.base.insert("device".into(), device.clone().into());
    }
    let runs_dir = args.runs_dir.clone().unwrap_or_else(|| {
        root.join("runs")
            .join(format!("{}-{}", page_name_of(definition), args.profile))
    });
    if !args.report_only {
        ensure_data(args, &exp)?;
    }
    Ok((exp, profile, runs_dir))
}

/// Runs the sweep of `experiments/<definition>.toml` for `args.profile` (finished runs are
/// skipped; with `--report-only` nothing is trained) and returns the definition, the profile
/// and every row's outcome.
pub(crate) fn run_definition(
    args: &ReproduceArgs,
    definition: &str,
    options: &TrainOptions,
) -> Result<(Experiment, Profile, Vec<RowOutcome>)> {
    breakeven_runner::enable_second_order()?;
    let (exp, profile, runs_dir) = load_definition(args, definition)?;
    let outcomes = if args.executor == Executor::Slurm {
        crate::slurm::execute(args, &exp, &runs_dir, options)?
    } else {
        refuse_slurm_in_flight(args, &runs_dir)?;
        run_table_with(
            &exp,
            &args.profile,
            &runs_dir,
            &data_roots(args),
            !args.report_only,
            &mut LogProgress,
            options,
        )?
    };
    let page = out_dir(args)?.join(format!("{definition}-{}.md", args.profile));
    require_a_row(&outcomes, &page)?;
    Ok((exp, profile, outcomes))
}

/// Writes the row's heading to `page`, then why it did not run or which of its runs failed;
/// returns its runs when it ran.
pub(crate) fn row_runs<'a>(
    page: &mut String,
    o: &'a RowOutcome,
) -> Option<&'a [(RunSpec, Option<Summary>)]> {
    let _ = writeln!(page, "\n## {}\n", o.row.setting);
    match &o.state {
        RowState::Missing { message, .. } => {
            let _ = writeln!(page, "Not run: {message}");
            None
        }
        RowState::Ran { runs, errors, .. } => {
            for (dir, e) in errors {
                let _ = writeln!(page, "- run {} failed: {e}", dir.display());
            }
            Some(runs)
        }
    }
}

/// The metrics log of a run of the sweep.
pub(crate) fn run_records(spec: &RunSpec) -> Result<Vec<MetricsRecord>> {
    let path = breakeven_runner::RunDir::new(&spec.dir).metrics_path();
    read_metrics(&path).with_context(|| format!("reading {}", path.display()))
}

/// The label of a run's column in its experiment definition (its key if the column is gone).
pub(crate) fn column_label<'a>(exp: &'a Experiment, spec: &'a RunSpec) -> &'a str {
    exp.columns
        .iter()
        .find(|c| c.key == spec.column)
        .map_or(spec.column.as_str(), |c| c.label.as_str())
}

/// Writes `page` as `<out_dir>/<stem>.md` (atomically) and says where.
pub(crate) fn write_page(out_dir: &Path, stem: &str, page: &str) -> Result<()> {
    let md = out_dir.join(format!("{stem}.md"));
    write(&md, page)?;
    println!("wrote {}", md.display());
    Ok(())
}

/// Where data sets are looked for: `--data-dir` (or `$BREAKEVEN_DATA`) alone when given, else
/// the project's `./data`.
pub(crate) fn data_roots(args: &ReproduceArgs) -> Vec<PathBuf> {
    vec![args
        .data_dir
        .clone()
        .unwrap_or_else(|| project_root().join("data"))]
}

/// The command that made a page, with the options that change what it reads or runs.
pub(crate) fn command_line(args: &ReproduceArgs) -> String {
    let mut command = format!(
        "cargo xtask reproduce {} --profile {}",
        args.experiment, args.profile
    );
    if let Some(d) = &args.device {
        command.push_str(&format!(" --device {d}"));
    }
    if let Some(r) = &args.runs_dir {
        command.push_str(&format!(" --runs-dir {}", r.display()));
    }
    if args.report_only {
        command.push_str(" --report-only");
    }
    command
}

/// `--out-dir`, made absolute against the project root, and created.
pub(crate) fn out_dir(args: &ReproduceArgs) -> Result<PathBuf> {
    let dir = if args.out_dir.is_absolute() {
        args.out_dir.clone()
    } else {
        project_root().join(&args.out_dir)
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

/// The head every generated results page shares: title, do-not-edit marker, the exact command,
/// date and git revision, hardware, profile and definition. `device` is `--device` or the
/// profile's own.
pub(crate) fn page_head(
    args: &ReproduceArgs,
    title: &str,
    device: &str,
    profile_description: &str,
    source: &str,
) -> String {
    page_head_defined_by(
        args,
        &args.experiment,
        title,
        device,
        profile_description,
        source,
    )
}

/// [`page_head`] for a report whose definition file is `experiments/<definition>.toml` rather
/// than the experiment's own name (reports that read another experiment's runs).
pub(crate) fn page_head_defined_by(
    args: &ReproduceArgs,
    definition: &str,
    title: &str,
    device: &str,
    profile_description: &str,
    source: &str,
) -> String {
    let mut page = format!("# {title} — profile `{}`\n\n", args.profile);
    page.push_str("<!-- Generated file: do not edit; rerun the command below. -->\n\n");
    page.push_str(&format!("- Command: `{}`\n", command_line(args)));
    page.push_str(&format!(
        "- Generated: {} (git {})\n",
        utc_now(),
        git_revision()
    ));
    page.push_str(&format!("- Hardware: {}\n", hardware_description(device)));
    page.push_str(&format!("- Profile: {profile_description}\n"));
    page.push_str(&format!(
        "- Definition: `experiments/{definition}.toml`; source: {source}\n"
    ));
    page
}

/// The device a run of this profile uses: `--device`, else the profile's `device`, else CPU.
pub(crate) fn profile_device(args: &ReproduceArgs, base: &toml::Table) -> String {
    args.device.clone().unwrap_or_else(|| {
        base.get("device")
            .and_then(|d| d.as_str())
            .unwrap_or("cpu")
            .to_string()
    })
}

/// Writes `plot` as SVG at `path` (`*.svg`) with its PNG beside it (issue 7: every plot as SVG
/// and PNG), so every page's plots come in both formats.
pub(crate) fn write_plot(path: &Path, plot: &Plot) -> Result<()> {
    breakeven_runner::plot::write_svg_and_png(path, plot)
        .map(|_| ())
        .with_context(|| format!("writing {} and its PNG", path.display()))
}

/// Writes `text` atomically.
pub(crate) fn write(path: &Path, text: &str) -> Result<()> {
    breakeven_runner::atomic::write_atomic(path, text.as_bytes())
        .with_context(|| format!("writing {}", path.display()))
}

/// `YYYY-MM-DD HH:MM UTC` from the system clock (civil-from-days, no date crate needed).
pub(crate) fn utc_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60
    )
}

/// A claim's verdict line on a results page: what was measured and the verdict, or, without a
/// verdict, the reproduction's reason the runs cannot decide (`undecided`).
pub fn claim_line(page: &mut String, claim: &str, v: Option<&Verdict>, undecided: &str) {
    let _ = match v {
        Some(v) => writeln!(page, "- **{claim}**: {} → **{}**.", v.explanation, v.word()),
        None => writeln!(page, "- **{claim}**: {undecided}"),
    };
}
