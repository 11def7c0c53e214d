//! The `sbatch` script of one submission: a job array whose task `i` trains (or resumes) the
//! `i`-th run directory. Everything a task needs is written into the script (the `breakeven`
//! binary, the data directory, the device), so it runs on any node that shares the file system.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::error::SlurmError;

/// What `sbatch` is asked for (each `None` leaves the cluster's default).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SbatchOptions {
    pub partition: Option<String>,
    /// Wall-time limit of one task (`--time`, e.g. `04:00:00`).
    pub time: Option<String>,
    pub cpus_per_task: Option<u32>,
    pub gpus_per_task: Option<String>,
    /// Memory per node (`--mem`, e.g. `16G`).
    pub mem: Option<String>,
    pub account: Option<String>,
    /// Tasks of one array running at once (the array's `%N`).
    pub max_parallel: Option<u32>,
    /// Further `sbatch` options, one `#SBATCH` line each (e.g. `--qos=long`).
    pub extra: Vec<String>,
}

/// How a task runs `breakeven`.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskCommand {
    /// Absolute path of the `breakeven` binary (on the shared file system).
    pub breakeven: PathBuf,
    /// Absolute data directory (`--data-dir`); `None` for sweeps that read no files.
    pub data_dir: Option<PathBuf>,
    /// `--device` (the profile's or `--device`'s): the run dirs record the same.
    pub device: Option<String>,
    /// `--keep-all-checkpoints` (analyses of whole trajectories).
    pub keep_all_checkpoints: bool,
}

/// One submission: a job array over `runs`.
#[derive(Debug, Clone)]
pub struct ArrayScript<'a> {
    /// `--job-name`, unique per sweep and submission (an attaching command finds a job whose id
    /// was not recorded by this name).
    pub job_name: &'a str,
    /// Absolute run directories; task `i` runs `runs[i]`.
    pub runs: &'a [PathBuf],
    /// Where task logs go (`<job>_<task>.log`, appended across requeues).
    pub log_dir: &'a Path,
    /// Where each task writes its exit status (`<job>_<task>`), read if Slurm has forgotten the job.
    pub exit_dir: &'a Path,
    /// The command that made the script (a comment).
    pub made_by: &'a str,
    pub sbatch: &'a SbatchOptions,
    pub task: &'a TaskCommand,
}

/// A word for bash, single-quoted unless it is plainly safe.
pub fn shell_quote(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-+=:,@%".contains(c));
    if plain {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// `#SBATCH` lines are split on whitespace by `sbatch`: paths and values that go there must
/// not hold any.
fn sbatch_word(what: &str, value: &str) -> Result<(), SlurmError> {
    if value.is_empty()
        || value
            .chars()
            .any(|c| c.is_whitespace() || c == '"' || c == '\'')
    {
        return Err(SlurmError::Invalid(format!(
            "{what} {value:?}: an #SBATCH line cannot hold whitespace or quotes; choose a path or value without them"
        )));
    }
    Ok(())
}

impl ArrayScript<'_> {
    /// The script. Errors if there is nothing to run or a value cannot go on an `#SBATCH` line.
    pub fn render(&self) -> Result<String, SlurmError> {
        if self.runs.is_empty() {
            return Err(SlurmError::Invalid(
                "a job array needs at least one run".into(),
            ));
        }
        let (o, t) = (self.sbatch, self.task);
        sbatch_word("--job-name", self.job_name)?;
        let log = self.log_dir.join("%A_%a.log");
        sbatch_word("the log directory", &log.display().to_string())?;
        let mut s = String::from("#!/bin/bash\n");
        let mut line = |opt: String| {
            let _ = writeln!(s, "#SBATCH {opt}");
        };
        let last = self.runs.len() - 1;
        line(match o.max_parallel {
            Some(n) => format!("--array=0-{last}%{n}"),
            None => format!("--array=0-{last}"),
        });
        line(format!("--job-name={}", self.job_name));
        line(format!("--output={}", log.display()));
        // One log per task attempt, kept across a requeue by Slurm itself.
        line("--open-mode=append".into());
        // Retries are this executor's (a new array from the last checkpoint), never Slurm's own
        // requeue: two copies of one run must never train at once.
        line("--no-requeue".into());
        line("--ntasks=1".into());
        let named = [
            ("--partition", &o.partition),
            ("--time", &o.time),
            ("--gpus-per-task", &o.gpus_per_task),
            ("--mem", &o.mem),
            ("--account", &o.account),
        ];
        for (flag, value) in named {
            if let Some(v) = value {
                sbatch_word(flag, v)?;
                line(format!("{flag}={v}"));
            }
        }
        if let Some(c) = o.cpus_per_task {
            line(format!("--cpus-per-task={c}"));
        }
        for extra in &o.extra {
            if extra.trim().is_empty() || extra.contains('\n') {
                return Err(SlurmError::Invalid(format!(
                    "--sbatch-arg {extra:?}: one non-empty option per flag"
                )));
            }
            line(extra.trim().to_string());
        }

        let _ = writeln!(s, "#\n# Made by `{}`.", self.made_by.replace('\n', " "));
        s.push_str(
            "# Task i trains RUNS[i], or resumes it from its last checkpoint after a failure;\n\
             # a finished run (summary.json) is left as it is.\n",
        );
        s.push_str("set -u\n");
        let _ = writeln!(
            s,
            "BREAKEVEN={}",
            shell_quote(&t.breakeven.display().to_string())
        );
        let _ = writeln!(
            s,
            "EXIT_DIR={}",
            shell_quote(&self.exit_dir.display().to_string())
        );
        // Global options of the CLI, then per-command ones.
        let mut global = String::new();
        if let Some(d) = &t.data_dir {
            let _ = write!(
                global,
                " --data-dir {}",
                shell_quote(&d.display().to_string())
            );
        }
        let mut per_run = String::new();
        if let Some(d) = &t.device {
            let _ = write!(per_run, " --device {}", shell_quote(d));
        }
        if t.keep_all_checkpoints {
            per_run.push_str(" --keep-all-checkpoints");
        }
        s.push_str("RUNS=(\n");
        for r in self.runs {
            let _ = writeln!(s, "  {}", shell_quote(&r.display().to_string()));
        }
        s.push_str(")\n");
        s.push_str(
            r#"run=${RUNS[$SLURM_ARRAY_TASK_ID]}
task=${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}
echo "breakeven: task $task on $(hostname): $run"
if [ -e "$run/summary.json" ]; then
    echo "breakeven: $run has finished already"
    echo 0 >"$EXIT_DIR/$task"
    exit 0
fi
# One task per run directory at a time: a second one (another sweep, a stray resubmission)
# stops here instead of training beside it.
exec 9>>"$run/.task.lock"
if ! flock -n 9; then
    echo "breakeven: another task holds $run" >&2
    exit 75
fi
if compgen -G "$run/checkpoints/step-*.safetensors" >/dev/null; then
"#,
        );
        let _ = writeln!(s, "    \"$BREAKEVEN\"{global} resume{per_run} \"$run\"");
        s.push_str("else\n");
        let _ = writeln!(
            s,
            "    \"$BREAKEVEN\"{global} train --config \"$run/config.toml\" --run-dir \"$run\"{per_run}"
        );
        s.push_str(
            r#"fi
status=$?
echo "$status" >"$EXIT_DIR/$task"
exit "$status"
"#,
        );
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task() -> TaskCommand {
        TaskCommand {
            breakeven: "/opt/be/target/release/breakeven".into(),
            data_dir: Some("/shared/data".into()),
            device: Some("cuda".into()),
            keep_all_checkpoints: false,
        }
    }

    fn script(runs: &[PathBuf], o: &SbatchOptions, t: &TaskCommand) -> Result<String, SlurmError> {
        ArrayScript {
            job_name: "be-table1-paper-1",
            runs,
            log_dir: Path::new("/shared/runs/slurm/logs"),
            exit_dir: Path::new("/shared/runs/slurm/exit"),
            made_by: "cargo xtask reproduce table1 --profile paper --executor slurm",
            sbatch: o,
            task: t,
        }
        .render()
    }

    #[test]
    fn array_options_and_one_line_per_sbatch_flag() {
        let runs = vec![
            PathBuf::from("/shared/runs/a/eta-0.1-seed0"),
            PathBuf::from("/shared/runs/a/eta-0.3-seed0"),
            PathBuf::from("/shared/runs/b/it's"),
        ];
        let o = SbatchOptions {
            partition: Some("gpu".into()),
            time: Some("04:00:00".into()),
            cpus_per_task: Some(8),
            gpus_per_task: Some("1".into()),
            mem: Some("32G".into()),
            account: Some("lab".into()),
            max_parallel: Some(16),
            extra: vec!["--qos=long".into(), "--constraint=a100".into()],
        };
        let s = script(&runs, &o, &task()).unwrap();
        let sbatch: Vec<&str> = s.lines().filter(|l| l.starts_with("#SBATCH")).collect();
        assert_eq!(
            sbatch,
            [
                "#SBATCH --array=0-2%16",
                "#SBATCH --job-name=be-table1-paper-1",
                "#SBATCH --output=/shared/runs/slurm/logs/%A_%a.log",
                "#SBATCH --open-mode=append",
                "#SBATCH --no-requeue",
                "#SBATCH --ntasks=1",
                "#SBATCH --partition=gpu",
                "#SBATCH --time=04:00:00",
                "#SBATCH --gpus-per-task=1",
                "#SBATCH --mem=32G",
                "#SBATCH --account=lab",
                "#SBATCH --cpus-per-task=8",
                "#SBATCH --qos=long",
                "#SBATCH --constraint=a100",
            ]
        );
        assert!(s.starts_with("#!/bin/bash\n"));
        // Every #SBATCH line comes before the first command (sbatch stops reading there).
        let first_cmd = s.lines().position(|l| l == "set -u").unwrap();
        assert!(s.lines().skip(first_cmd).all(|l| !l.starts_with("#SBATCH")));
        assert!(s.contains("  /shared/runs/a/eta-0.3-seed0\n"));
        assert!(s.contains(r"  '/shared/runs/b/it'\''s'"), "{s}");
        assert!(s.contains("BREAKEVEN=/opt/be/target/release/breakeven\n"));
        assert!(
            s.contains("\"$BREAKEVEN\" --data-dir /shared/data resume --device cuda \"$run\"\n")
        );
        assert!(s.contains(
            "\"$BREAKEVEN\" --data-dir /shared/data train --config \"$run/config.toml\" --run-dir \"$run\" --device cuda\n"
        ));
    }

    #[test]
    fn defaults_leave_the_cluster_to_choose() {
        let runs = vec![PathBuf::from("/r/x")];
        let t = TaskCommand {
            data_dir: None,
            device: None,
            keep_all_checkpoints: true,
            ..task()
        };
        let s = script(&runs, &SbatchOptions::default(), &t).unwrap();
        assert!(s.contains("#SBATCH --array=0-0\n"));
        for absent in [
            "--partition",
            "--time",
            "--mem",
            "--account",
            "--cpus",
            "--gpus",
        ] {
            assert!(!s.contains(absent), "{absent} in\n{s}");
        }
        assert!(s.contains("\"$BREAKEVEN\" resume --keep-all-checkpoints \"$run\""));
        assert!(s.contains("--run-dir \"$run\" --keep-all-checkpoints\n"));
    }

    #[test]
    fn refuses_what_an_sbatch_line_cannot_hold() {
        let runs = vec![PathBuf::from("/r/x")];
        let o = SbatchOptions {
            partition: Some("gpu long".into()),
            ..Default::default()
        };
        let e = script(&runs, &o, &task()).unwrap_err().to_string();
        assert!(e.contains("--partition") && e.contains("whitespace"), "{e}");
        assert!(script(&[], &SbatchOptions::default(), &task()).is_err());
        let o = SbatchOptions {
            extra: vec!["--qos=a\n#SBATCH --x".into()],
            ..Default::default()
        };
        assert!(script(&runs, &o, &task()).is_err());
    }

    #[test]
    fn quoting() {
        assert_eq!(shell_quote("/a/b-c_d.e"), "/a/b-c_d.e");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote(""), "''");
        assert_eq!(shell_quote("$HOME"), "'$HOME'");
    }
}
