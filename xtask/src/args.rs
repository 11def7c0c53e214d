//! The command line of `cargo xtask reproduce` and what follows from it alone: where the
//! project, the data, the runs and the pages are, the command a page names, and its stamp.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use breakeven_report::page::Stamp;
use breakeven_runner::rundir::git_revision;

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
    /// Train only these rows of a table (keys of the definition's `[[rows]]`, comma-separated,
    /// e.g. `--rows cifar10-simplecnn`); the page still shows every row from the runs finished
    /// so far. Local executor only.
    #[arg(long, value_delimiter = ',')]
    pub rows: Vec<String>,
    /// Where the runs train: `local` (this process) or `slurm` (job arrays on a cluster that
    /// shares this file system; see docs/CLUSTER.md). The page is the same either way.
    #[arg(long, value_enum, default_value = "local")]
    pub executor: Executor,
    #[command(flatten)]
    pub slurm: SlurmArgs,
}

/// Where a sweep's runs train.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Executor {
    /// In this process, one run after another.
    Local,
    /// As Slurm job arrays on a cluster that shares this file system (docs/CLUSTER.md).
    Slurm,
}

#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "Slurm executor (--executor slurm, docs/CLUSTER.md)")]
pub struct SlurmArgs {
    /// Partition of every task (`sbatch --partition`).
    #[arg(long)]
    pub partition: Option<String>,
    /// Wall-time limit of one task (`sbatch --time`, e.g. `12:00:00`); a task that hits it is
    /// resubmitted from its last checkpoint (it counts against --retries).
    #[arg(long)]
    pub time: Option<String>,
    /// CPUs per task (`sbatch --cpus-per-task`).
    #[arg(long)]
    pub cpus_per_task: Option<u32>,
    /// GPUs per task (`sbatch --gpus-per-task`, e.g. `1` or `a100:1`).
    #[arg(long)]
    pub gpus_per_task: Option<String>,
    /// Memory per task's node (`sbatch --mem`, e.g. `16G`).
    #[arg(long)]
    pub mem: Option<String>,
    /// Account charged (`sbatch --account`).
    #[arg(long)]
    pub account: Option<String>,
    /// Tasks of one array running at once (the array's `%N`).
    #[arg(long)]
    pub max_parallel: Option<u32>,
    /// Another `sbatch` option for every task, one `#SBATCH` line each (repeatable), e.g.
    /// `--sbatch-arg=--qos=long`.
    #[arg(long = "sbatch-arg", allow_hyphen_values = true)]
    pub sbatch_args: Vec<String>,
    /// Times a run whose task failed, was cancelled, preempted or hit its time limit is
    /// resubmitted (from its last checkpoint) before it is recorded as failed; a config error
    /// is never retried.
    #[arg(long, default_value_t = 3)]
    pub retries: u32,
    /// Print the script of the first submission and stop: nothing is written or submitted.
    #[arg(long)]
    pub dry_run: bool,
    /// Seconds between two looks at the queue.
    #[arg(long, default_value_t = 10.0)]
    pub poll: f64,
    /// The `breakeven` binary the tasks run, on a file system the nodes share (default: built
    /// now with cargo, with this xtask's profile and features).
    #[arg(long)]
    pub breakeven_bin: Option<PathBuf>,
}

/// The project root: the checkout the command runs in ([`checkout_containing`] the current
/// directory), else the one this binary was built in ([`built_root`]). A copied binary run from
/// another checkout thus reads that checkout's `experiments/`, as the git revision its pages
/// record (read from the current directory) says; `main` warns when the two roots differ.
pub fn project_root() -> PathBuf {
    std::env::current_dir()
        .ok()
        .and_then(|d| checkout_containing(&d))
        .unwrap_or_else(built_root)
}

/// The checkout this binary was built in (xtask lives in `<root>/xtask`).
pub fn built_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// The nearest folder at or above `dir` that is a breakeven checkout (holds `xtask/Cargo.toml`
/// and `experiments/`).
pub fn checkout_containing(dir: &Path) -> Option<PathBuf> {
    dir.ancestors()
        .find(|a| a.join("xtask").join("Cargo.toml").is_file() && a.join("experiments").is_dir())
        .map(Path::to_path_buf)
}

impl ReproduceArgs {
    /// The name a page and a runs dir take: the experiment, or a definition file's stem.
    pub fn page_name(&self) -> String {
        page_name_of(&self.experiment)
    }

    /// `experiments/<definition>.toml`, or the definition file given as a path.
    pub fn definition_path(&self, definition: &str) -> PathBuf {
        if definition.ends_with(".toml") {
            PathBuf::from(definition)
        } else {
            project_root()
                .join("experiments")
                .join(format!("{definition}.toml"))
        }
    }

    /// `--runs-dir`, else `runs/<definition>-<profile>`.
    pub fn runs_dir(&self, definition: &str) -> PathBuf {
        self.runs_dir.clone().unwrap_or_else(|| {
            project_root().join("runs").join(format!(
                "{}-{}",
                page_name_of(definition),
                self.profile
            ))
        })
    }

    /// Where data sets are looked for: `--data-dir` (or `$BREAKEVEN_DATA`) alone when given,
    /// else the project's `./data`.
    pub fn data_roots(&self) -> Vec<PathBuf> {
        vec![self
            .data_dir
            .clone()
            .unwrap_or_else(|| project_root().join("data"))]
    }

    /// `--out-dir`, made absolute against the project root, and created.
    pub fn out_dir(&self) -> Result<PathBuf> {
        let dir = if self.out_dir.is_absolute() {
            self.out_dir.clone()
        } else {
            project_root().join(&self.out_dir)
        };
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(dir)
    }

    /// The command that made a page, with the options that change what it reads or runs.
    pub fn command_line(&self) -> String {
        let mut command = format!(
            "cargo xtask reproduce {} --profile {}",
            self.experiment, self.profile
        );
        if let Some(d) = &self.device {
            command.push_str(&format!(" --device {d}"));
        }
        if let Some(r) = &self.runs_dir {
            command.push_str(&format!(" --runs-dir {}", r.display()));
        }
        if self.report_only {
            command.push_str(" --report-only");
        }
        command
    }

    /// The device a run of a profile with this base config uses: `--device`, else the
    /// profile's `device`, else CPU.
    pub fn profile_device(&self, base: &toml::Table) -> String {
        self.device.clone().unwrap_or_else(|| {
            base.get("device")
                .and_then(|d| d.as_str())
                .unwrap_or("cpu")
                .to_string()
        })
    }

    /// The page's stamp, taken now: the command, the date and the git revision (taken before
    /// this command writes its page and plots, which would read as "dirty").
    pub fn stamp(&self) -> Stamp {
        Stamp {
            profile: self.profile.clone(),
            command: self.command_line(),
            generated_utc: utc_now(),
            git_revision: git_revision(),
            device: self.device.clone(),
        }
    }
}

fn page_name_of(definition: &str) -> String {
    match definition.strip_suffix(".toml") {
        Some(path) => Path::new(path)
            .file_name()
            .map_or(path.to_string(), |n| n.to_string_lossy().into_owned()),
        None => definition.to_string(),
    }
}

/// `YYYY-MM-DD HH:MM UTC` from the system clock (civil-from-days, no date crate needed).
pub fn utc_now() -> String {
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

#[cfg(test)]
mod tests {
    use super::{built_root, checkout_containing, project_root};

    /// A copied binary run inside another checkout reads that checkout (from any folder in it);
    /// outside every checkout it falls back to where it was built.
    #[test]
    fn the_project_root_is_the_checkout_the_command_runs_in() {
        let dir = std::env::temp_dir().join(format!("breakeven-root-{}", std::process::id()));
        let other = dir.join("other-checkout");
        std::fs::create_dir_all(other.join("xtask")).unwrap();
        std::fs::create_dir_all(other.join("experiments")).unwrap();
        std::fs::create_dir_all(other.join("docs/results")).unwrap();
        std::fs::write(other.join("xtask/Cargo.toml"), "").unwrap();
        assert_eq!(checkout_containing(&other), Some(other.clone()));
        assert_eq!(
            checkout_containing(&other.join("docs/results")),
            Some(other.clone())
        );
        // Not a checkout: no experiments/ (or no xtask/Cargo.toml).
        std::fs::create_dir_all(dir.join("plain/xtask")).unwrap();
        std::fs::write(dir.join("plain/xtask/Cargo.toml"), "").unwrap();
        assert_eq!(checkout_containing(&dir.join("plain")), None);
        std::fs::remove_dir_all(&dir).unwrap();
        // The tests run in xtask/, inside the checkout they were built in.
        assert_eq!(
            project_root().canonicalize().unwrap(),
            built_root().canonicalize().unwrap()
        );
    }
}
