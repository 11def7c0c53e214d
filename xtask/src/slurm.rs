//! `--executor slurm`: the options, the `breakeven` binary the tasks run (built here with cargo
//! unless given), and the executor's events printed as they come. The executor itself is
//! `breakeven-slurm`.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use breakeven_runner::sweep::Experiment;
use breakeven_runner::table::{RowOutcome, RowState};
use breakeven_runner::TrainOptions;
use breakeven_slurm::{Event, Options, SbatchOptions, Slurm, Sweep, TaskCommand};

use crate::args::{project_root, ReproduceArgs, SlurmArgs};

/// The reproductions whose runs are a sweep of independent runs (those with their own loops
/// run in-process only).
pub(crate) fn check_supported(experiment: &str) -> Result<()> {
    match experiment {
        "lca" | "edge-of-stability" => bail!(
            "`{experiment}` runs its own training loop in-process; --executor slurm runs sweeps \
             of independent runs (table1, table2, fisher-explosion, memorization, break-even, \
             early-phase)"
        ),
        "batch-variance" => bail!(
            "`batch-variance` trains nothing (it reads break-even's runs): run \
             `reproduce break-even --executor slurm` first"
        ),
        _ => Ok(()),
    }
}

/// Runs the sweep of `exp` as Slurm job arrays (or, with `--report-only`, reports what its
/// runs dir holds) and returns its rows, reduced as the local executor reduces them. With
/// `--dry-run` the first script is printed and the command ends.
pub(crate) fn execute(
    args: &ReproduceArgs,
    exp: &Experiment,
    runs_dir: &Path,
    options: &TrainOptions,
) -> Result<Vec<RowOutcome>> {
    let root = std::path::absolute(runs_dir)
        .with_context(|| format!("runs dir {}", runs_dir.display()))?;
    let roots: Vec<PathBuf> = args
        .data_roots()
        .into_iter()
        .map(|r| std::path::absolute(&r).unwrap_or(r))
        .collect();
    let sweep = Sweep {
        exp,
        profile: &args.profile,
        root: &root,
        data_roots: &roots,
    };
    if args.report_only {
        return Ok(breakeven_slurm::executor::report(
            &sweep,
            args.slurm.retries,
        )?);
    }
    let base = &exp.profile(&args.profile)?.base;
    let opts = Options {
        sbatch: SbatchOptions {
            partition: args.slurm.partition.clone(),
            time: args.slurm.time.clone(),
            cpus_per_task: args.slurm.cpus_per_task,
            gpus_per_task: args.slurm.gpus_per_task.clone(),
            mem: args.slurm.mem.clone(),
            account: args.slurm.account.clone(),
            max_parallel: args.slurm.max_parallel,
            extra: args.slurm.sbatch_args.clone(),
        },
        task: TaskCommand {
            breakeven: breakeven_binary(&args.slurm)?,
            data_dir: roots.first().and_then(|r| r.canonicalize().ok()),
            device: Some(args.profile_device(base)),
            keep_all_checkpoints: options.keep_all_checkpoints,
        },
        retries: args.slurm.retries,
        poll: Duration::from_secs_f64(args.slurm.poll.max(0.1)),
        made_by: typed_command(),
    };
    if args.slurm.dry_run {
        match breakeven_slurm::dry_run(&sweep, &opts)? {
            Some(script) => print!("{script}"),
            None => println!("# every planned run has finished or failed: nothing to submit"),
        }
        let _ = std::io::stdout().flush();
        std::process::exit(0);
    }
    let mut events = Printer { quiet: args.quiet };
    let outcomes = breakeven_slurm::run(&sweep, &opts, &mut Slurm, &mut events)?;
    // Every failure once more at the end, those of an earlier command included.
    let failed: Vec<&(PathBuf, String)> = outcomes
        .iter()
        .filter_map(|o| match &o.state {
            RowState::Ran { errors, .. } => Some(errors),
            RowState::Missing { .. } => None,
        })
        .flatten()
        .collect();
    if !failed.is_empty() {
        eprintln!("slurm: {} runs failed (the page lists them):", failed.len());
        for (run, why) in failed {
            eprintln!("slurm:   {}: {why}", run.display());
        }
    }
    Ok(outcomes)
}

/// The command as typed, for the scripts' headers.
fn typed_command() -> String {
    let args: Vec<String> = std::env::args().skip(1).collect();
    format!("cargo xtask {}", args.join(" "))
}

/// `--breakeven-bin` (made absolute), or `breakeven` built now: `cargo build` with this
/// xtask's profile (debug assertions on: the dev profile) and its `cuda` feature, so tasks
/// run the same code the local executor would.
fn breakeven_binary(args: &SlurmArgs) -> Result<PathBuf> {
    if let Some(bin) = &args.breakeven_bin {
        let bin = std::path::absolute(bin)?;
        if !bin.is_file() {
            bail!("--breakeven-bin {}: no such file", bin.display());
        }
        return Ok(bin);
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(&cargo);
    cmd.current_dir(project_root()).args([
        "build",
        "--package",
        "breakeven-runner",
        "--bin",
        "breakeven",
        "--message-format=json-render-diagnostics",
    ]);
    if !cfg!(debug_assertions) {
        cmd.arg("--release");
    }
    if cfg!(feature = "cuda") {
        cmd.args(["--features", "breakeven-runner/cuda"]);
    }
    // `cargo xtask` (cargo run) gives this process the package variables of xtask; a build
    // script that tracks one (ring's tracks CARGO_MANIFEST_DIR) would be rebuilt here, with
    // everything above it (40 s), and again by the next plain `cargo` command.
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy();
        if key.starts_with("CARGO_PKG_")
            || matches!(
                key.as_ref(),
                "CARGO_MANIFEST_DIR"
                    | "CARGO_MANIFEST_PATH"
                    | "CARGO_CRATE_NAME"
                    | "CARGO_BIN_NAME"
                    | "CARGO_PRIMARY_PACKAGE"
            )
        {
            cmd.env_remove(key.as_ref());
        }
    }
    let out = cmd
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("running {cargo} build for the breakeven binary"))?;
    if !out.status.success() {
        bail!("building the breakeven binary failed (see above)");
    }
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if msg["reason"] == "compiler-artifact" && msg["target"]["name"] == "breakeven" {
            if let Some(exe) = msg["executable"].as_str() {
                return Ok(PathBuf::from(exe));
            }
        }
    }
    bail!("cargo built no `breakeven` executable")
}

/// Prints the executor's events on stderr (job ids and failures even with --quiet).
struct Printer {
    quiet: bool,
}

impl breakeven_slurm::Progress for Printer {
    fn event(&mut self, event: Event) {
        let line = match event {
            Event::Attached { jobs, runs } => format!(
                "slurm: attached to job {} ({runs} runs in flight, submitted by an earlier command)",
                jobs.join(", ")
            ),
            Event::Submitted { job, runs, script } => {
                format!("slurm: submitted job {job}: {runs} runs ({})", script.display())
            }
            Event::Retrying { run, job, why } => format!(
                "slurm: task {job} {why}; {} is resubmitted from its last checkpoint",
                run.display()
            ),
            Event::Failed { run, why } => format!("slurm: run {} failed: {why}", run.display()),
            Event::Progress(c) if !self.quiet => {
                let waiting = if c.waiting > 0 {
                    format!("; {} stages wait for runs to finish", c.waiting)
                } else {
                    String::new()
                };
                format!(
                    "slurm: {} pending, {} running, {} finished, {} failed{waiting}",
                    c.pending, c.running, c.finished, c.failed
                )
            }
            Event::Progress(_) => return,
            Event::Warning(w) => {
                tracing::warn!("slurm: {w}");
                return;
            }
        };
        eprintln!("{line}");
    }
}
