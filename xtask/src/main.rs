//! `cargo xtask`: the orchestrator.

mod batch_variance;
mod break_even;
mod break_even_runs;
mod early_phase;
mod edge_of_stability;
mod fetch;
mod fisher_explosion;
mod lca;
mod memorization;
mod reproduce;
mod slurm;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "xtask", about = "breakeven's task runner")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Data sets.
    #[command(subcommand)]
    Data(DataCommand),
    /// Reproduce a table or figure: run its sweep, write docs/results/<name>-<profile>.md and plots.
    Reproduce(Box<reproduce::ReproduceArgs>),
}

#[derive(Debug, Subcommand)]
enum DataCommand {
    /// Download, verify (MD5/SHA-256) and unpack a data set; resumable and idempotent.
    Fetch(fetch::DataFetchArgs),
}

fn main() -> anyhow::Result<()> {
    // Reuse freed activation buffers instead of faulting in fresh pages every step.
    breakeven_runner::keep_freed_memory();
    let cli = Cli::parse();
    let quiet = matches!(&cli.command, Command::Reproduce(a) if a.quiet);
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
                tracing_subscriber::EnvFilter::new(if quiet { "warn" } else { "info" })
            }),
        )
        .with_writer(reproduce::LogWriter::default)
        // Colour only on a terminal: logs redirected to a file stay plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
    match cli.command {
        Command::Data(DataCommand::Fetch(args)) => fetch::data_fetch(&args),
        Command::Reproduce(args) => reproduce::reproduce(&args),
    }
}
