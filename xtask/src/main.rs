//! `cargo xtask`: the orchestrator. `reproduce` parses the task, plans and runs it through
//! `breakeven-runner` (or `breakeven-slurm`), has `breakeven-report` build the page and writes
//! it; `data fetch` downloads a data set through `breakeven-data`.

mod args;
mod fetch;
mod progress;
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
    Reproduce(Box<args::ReproduceArgs>),
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
        .with_writer(progress::LogWriter::default)
        // Colour only on a terminal: logs redirected to a file stay plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
    let (root, built) = (args::project_root(), args::built_root());
    if root.canonicalize().ok() != built.canonicalize().ok() {
        tracing::warn!(
            "reading experiments/ from {} (the checkout this command runs in), not from {} \
             (where this xtask was built)",
            root.display(),
            built.display()
        );
    }
    match cli.command {
        Command::Data(DataCommand::Fetch(args)) => fetch::data_fetch(&args),
        Command::Reproduce(args) => reproduce::reproduce(&args),
    }
}
