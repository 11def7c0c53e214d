//! The cluster as the executor sees it: submit a script, read the states of a job's tasks,
//! find a job by name. [`Slurm`] runs `sbatch`, `scontrol` and `squeue`; tests substitute a
//! fake.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use crate::error::SlurmError;
use crate::query::{parse_sbatch, parse_scontrol, TaskState};

/// What the executor needs from a batch system.
pub trait Cluster {
    /// Submits `script` (an array job); returns its job id.
    fn submit(&mut self, script: &Path) -> Result<String, SlurmError>;
    /// The states of job `job`'s tasks by index; `None` if the cluster does not know the job
    /// (ended long ago and forgotten). A task missing from a known job ended while pending.
    fn tasks(&mut self, job: &str) -> Result<Option<BTreeMap<u32, TaskState>>, SlurmError>;
    /// The id of a job named `name`, if the cluster knows one.
    fn find_job(&mut self, name: &str) -> Result<Option<String>, SlurmError>;
}

/// Slurm through its commands (`sbatch`, `scontrol`, `squeue` on `PATH`).
#[derive(Debug, Default)]
pub struct Slurm;

/// Runs `program args`, returning stdout, or the command and its stderr as the error.
fn output(program: &str, args: &[&str]) -> Result<(bool, String, String), SlurmError> {
    let command = format!("{program} {}", args.join(" "));
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| SlurmError::Command {
            command: command.clone(),
            message: format!("{e} (is Slurm's client installed and on PATH?)"),
        })?;
    Ok((
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).trim().to_string(),
    ))
}

impl Slurm {
    /// Whether a Slurm controller answers (`scontrol ping`).
    pub fn reachable() -> bool {
        output("scontrol", &["ping"]).is_ok_and(|(ok, out, _)| ok && out.contains("UP"))
    }
}

impl Cluster for Slurm {
    fn submit(&mut self, script: &Path) -> Result<String, SlurmError> {
        let path = script.display().to_string();
        let (ok, out, err) = output("sbatch", &["--parsable", &path])?;
        if !ok {
            return Err(SlurmError::Command {
                command: format!("sbatch --parsable {path}"),
                message: err,
            });
        }
        parse_sbatch(&out)
    }

    fn tasks(&mut self, job: &str) -> Result<Option<BTreeMap<u32, TaskState>>, SlurmError> {
        let (ok, out, err) = output("scontrol", &["-o", "show", "job", job])?;
        if !ok {
            if err.contains("Invalid job id") {
                return Ok(None);
            }
            return Err(SlurmError::Command {
                command: format!("scontrol -o show job {job}"),
                message: err,
            });
        }
        parse_scontrol(job, &out).map(Some)
    }

    fn find_job(&mut self, name: &str) -> Result<Option<String>, SlurmError> {
        // %F: the array's job id.
        let (ok, out, err) = output("squeue", &["-h", "-t", "all", "--name", name, "-o", "%F"])?;
        if !ok {
            return Err(SlurmError::Command {
                command: format!("squeue -h -t all --name {name} -o %F"),
                message: err,
            });
        }
        Ok(out
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty())
            .map(String::from))
    }
}
