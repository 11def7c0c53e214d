//! The `breakeven` command line: train a run from a config, resume a run directory, or measure
//! the curvature of a checkpoint.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use breakeven_runner::parse_device_name;
use breakeven_runner::{
    train, Outcome, RunConfig, RunDir, RunError, TrainOptions, EXIT_BAD_CONFIG,
};
use clap::{Parser, Subcommand};

/// Study SGD's implicit regularization: train with curvature tracking, resume, measure.
#[derive(Debug, Parser)]
#[command(name = "breakeven", version)]
struct Cli {
    /// Only warnings and errors; no progress bars (for CI).
    #[arg(long, short, global = true)]
    quiet: bool,
    /// Where data sets are looked for (default: $BREAKEVEN_DATA, then ./data).
    #[arg(long, global = true, env = "BREAKEVEN_DATA")]
    data_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Train the run described by a TOML config.
    Train {
        /// The run config (TOML; see experiments/runs/ for a commented example).
        #[arg(long)]
        config: PathBuf,
        /// The run directory (default: runs/<name>-seed<seed>).
        #[arg(long)]
        run_dir: Option<PathBuf>,
        /// Override the config's seed.
        #[arg(long)]
        seed: Option<u64>,
        /// Override the config's device (`cpu`, `cuda`, `cuda:N`).
        #[arg(long)]
        device: Option<String>,
        /// Keep every checkpoint instead of the newest two (analyses of whole trajectories).
        #[arg(long)]
        keep_all_checkpoints: bool,
    },
    /// Continue an interrupted run from its last checkpoint (a finished run is left as is).
    Resume {
        /// The run directory holding config.toml and checkpoints/.
        run_dir: PathBuf,
        /// The device to continue on; it must be the run's own (a run dir records its device).
        #[arg(long)]
        device: Option<String>,
        /// Keep every checkpoint instead of the newest two (analyses of whole trajectories).
        #[arg(long)]
        keep_all_checkpoints: bool,
    },
    /// The curvature of a checkpoint (λ_H^1..k, Tr H, Tr F, λ_K^1, Tr K; optionally the
    /// spectral density and per-layer blocks), every number with its standard error or
    /// convergence and the cost; or of every checkpoint of a run directory (batch mode).
    Measure(Box<breakeven_runner::measure::MeasureArgs>),
    /// Print, as JSON, the training, validation and test indices a run uses (into the data set's
    /// train and test splits), its normalization and, under label noise, its training labels:
    /// what another framework needs to train on exactly the same examples.
    Split {
        /// A run directory (its config.toml) or a run config (TOML).
        run: PathBuf,
    },
}

/// Exits with 0, [`EXIT_BAD_CONFIG`] when the error is a config error (running again cannot
/// help; cluster executors do not retry it), or 1; the error is printed as `anyhow` prints it.
fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("Error: {e:?}");
            let config = e.chain().any(|c| {
                c.downcast_ref::<RunError>()
                    .is_some_and(RunError::is_config)
            });
            std::process::ExitCode::from(if config { EXIT_BAD_CONFIG as u8 } else { 1 })
        }
    }
}

fn run() -> Result<()> {
    let cli = Cli::parse();
    init_tracing(cli.quiet);
    // Reuse freed activation buffers instead of faulting in fresh pages every step.
    breakeven_models::keep_freed_memory();
    let progress = !cli.quiet;
    match cli.command {
        Command::Train {
            config,
            run_dir,
            seed,
            device,
            keep_all_checkpoints,
        } => {
            let mut cfg = RunConfig::load(&config)
                .with_context(|| format!("reading {}", config.display()))?;
            if let Some(seed) = seed {
                cfg.seed = seed;
            }
            if let Some(device) = device {
                cfg.device = parse_device_name(&device)?;
            }
            let cfg = cfg
                .validate()
                .with_context(|| format!("in {}", config.display()))?;
            let dir = run_dir.unwrap_or_else(|| {
                PathBuf::from("runs").join(format!("{}-seed{}", cfg.name, cfg.seed))
            });
            let opts = TrainOptions {
                data_dir: cli.data_dir,
                progress,
                keep_all_checkpoints,
                ..Default::default()
            };
            report(
                train(&cfg, &RunDir::new(&dir), &opts)
                    .with_context(|| format!("run {}", dir.display()))?,
            )
        }
        Command::Resume {
            run_dir,
            device,
            keep_all_checkpoints,
        } => {
            let dir = RunDir::new(&run_dir);
            let mut cfg = dir
                .load_config()
                .with_context(|| format!("resuming {}", run_dir.display()))?;
            // Another device than the run's is refused by `train` (the configs differ).
            if let Some(device) = device {
                cfg.device = parse_device_name(&device)?;
            }
            let cfg = cfg
                .validate()
                .with_context(|| format!("in {}", run_dir.display()))?;
            let opts = TrainOptions {
                data_dir: cli.data_dir,
                progress,
                keep_all_checkpoints,
                ..Default::default()
            };
            report(train(&cfg, &dir, &opts).with_context(|| format!("run {}", run_dir.display()))?)
        }
        Command::Measure(args) => measure(&args, cli.data_dir.as_deref(), progress),
        Command::Split { run } => {
            let cfg = if run.is_dir() {
                RunDir::new(&run).load_config()
            } else {
                RunConfig::load(&run)
            }
            .with_context(|| format!("reading the run config of {}", run.display()))?;
            let split = breakeven_runner::setup::export_split(&cfg, cli.data_dir.as_deref())
                .with_context(|| format!("the data of {}", run.display()))?;
            println!("{}", serde_json::to_string(&split)?);
            Ok(())
        }
    }
}

/// `breakeven measure`: one checkpoint printed as JSON or a table, or a run directory's
/// checkpoints appended to its `curvature.jsonl`.
fn measure(
    args: &breakeven_runner::measure::MeasureArgs,
    data_dir: Option<&std::path::Path>,
    progress: bool,
) -> Result<()> {
    use breakeven_runner::measure::{batch, measure_checkpoint, output};
    if args.checkpoint.is_dir() {
        let report = batch::measure_run(args, data_dir, |m| {
            if progress {
                eprintln!(
                    "measured step {} ({:.1} s)",
                    m.step.unwrap_or(0),
                    m.cost.wall_s
                );
            }
        })
        .with_context(|| format!("measuring the run {}", args.checkpoint.display()))?;
        println!(
            "{}",
            serde_json::json!({
                "output": report.output.display().to_string(),
                "measured_steps": report.measured,
                "already_there": report.skipped,
            })
        );
        return Ok(());
    }
    let m = measure_checkpoint(args, data_dir)
        .with_context(|| format!("measuring {}", args.checkpoint.display()))?;
    if args.format == "table" {
        print!("{}", output::table(&m));
    } else {
        // The notes and the key map are in the JSON too; on stderr they are seen when it is
        // piped to a file.
        for note in &m.notes {
            eprintln!("note: {note}");
        }
        for (from, to) in &m.key_map {
            eprintln!("key map: {from} -> {to}");
        }
        println!("{}", serde_json::to_string_pretty(&m)?);
    }
    Ok(())
}

fn report(outcome: Outcome) -> Result<()> {
    match outcome {
        Outcome::Finished(summary) => {
            println!("{}", serde_json::to_string_pretty(&summary)?);
            Ok(())
        }
        Outcome::Interrupted { step } => bail!("interrupted after step {step}"),
    }
}

fn init_tracing(quiet: bool) {
    let default = if quiet { "warn" } else { "info" };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour only on a terminal: logs redirected to a file stay plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}
