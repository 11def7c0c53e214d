//! What a running `reproduce` shows: progress bars over a table's runs (log lines printed above
//! them), or one log line per run.

use breakeven_runner::sweep::RunSpec;
use breakeven_runner::table::TableProgress;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

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

/// Two progress bars: runs of the table, and steps of the current run (both with ETA).
pub struct Bars {
    total: ProgressBar,
    run: ProgressBar,
}

impl Bars {
    /// The bars, drawn from now on.
    pub fn start() -> anyhow::Result<Self> {
        let multi = BARS.get_or_init(MultiProgress::new);
        let total = multi.add(ProgressBar::new(0));
        total.set_style(ProgressStyle::with_template(
            "runs {pos}/{len} [{bar:30}] {elapsed} elapsed, ETA {eta} — {msg}",
        )?);
        let run = multi.add(ProgressBar::new(0));
        Ok(Self { total, run })
    }

    /// Clears both bars.
    pub fn finish(&self) {
        self.total.finish_and_clear();
        self.run.finish_and_clear();
    }
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

/// Logs one line per run: `--quiet` tables, and the reproductions with pages of their own
/// (their runs are short, and the log goes to CI).
pub struct LogProgress;
impl TableProgress for LogProgress {
    fn run_started(&mut self, index: usize, total: usize, spec: &RunSpec) {
        tracing::info!("run {}/{total}: {}", index + 1, spec.dir.display());
    }
}
