//! What Slurm says about the tasks of a job array, parsed from `scontrol -o show job J` (one
//! line per task, pending tasks grouped as `ArrayTaskId=3-7%2`, each with its state and exit
//! code), and the job id `sbatch --parsable` prints. No accounting database is needed (`sacct`
//! is not used): a job Slurm has forgotten (older than `MinJobAge`) is read from the exit status
//! its tasks wrote (`files.rs`).

use std::collections::BTreeMap;

use crate::error::SlurmError;

/// The state of one task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskState {
    /// Waiting to start (or requeued, held, suspended: anything that may still run).
    Pending(String),
    /// Running, or completing (its processes may still write).
    Running,
    /// Ended: Slurm will not run it again.
    Ended(End),
}

/// How a task ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct End {
    /// `COMPLETED`, `FAILED`, `CANCELLED`, `TIMEOUT`, `NODE_FAIL`, `PREEMPTED`, `OUT_OF_MEMORY`, …
    pub state: String,
    /// The batch script's exit status, when it exited by itself.
    pub exit_code: Option<i32>,
    /// The signal that killed it, if one did.
    pub signal: Option<i32>,
}

/// Slurm's job states after which a task never runs again (with `--no-requeue`).
const END_STATES: &[&str] = &[
    "COMPLETED",
    "FAILED",
    "CANCELLED",
    "TIMEOUT",
    "NODE_FAIL",
    "PREEMPTED",
    "BOOT_FAIL",
    "DEADLINE",
    "OUT_OF_MEMORY",
];

/// States in which the task's processes exist.
const RUNNING_STATES: &[&str] = &[
    "RUNNING",
    "COMPLETING",
    "CONFIGURING",
    "SIGNALING",
    "STAGE_OUT",
];

/// `state` with an exit code `a:b` (status `a`, signal `b`, as `scontrol` prints it).
pub fn task_state(state: &str, exit: Option<&str>, reason: &str) -> TaskState {
    // `CANCELLED by 0` in squeue's output of some versions.
    let state = state
        .split_whitespace()
        .next()
        .unwrap_or("")
        .trim_end_matches('+');
    if END_STATES.contains(&state) {
        let (code, signal) = exit
            .and_then(|e| e.split_once(':'))
            .map(|(a, b)| (a.parse::<i32>().ok(), b.parse::<i32>().ok()))
            .unwrap_or((None, None));
        return TaskState::Ended(End {
            state: state.to_string(),
            exit_code: code.filter(|_| signal.unwrap_or(0) == 0),
            signal: signal.filter(|&s| s != 0),
        });
    }
    if RUNNING_STATES.contains(&state) {
        return TaskState::Running;
    }
    // PENDING, REQUEUED, SUSPENDED, held, unknown new states: not ended, so never resubmitted.
    let why = if reason.is_empty() || reason == "None" {
        state.to_string()
    } else {
        format!("{state} ({reason})")
    };
    TaskState::Pending(why)
}

/// The task indices of an `ArrayTaskId` value: `4`, `2-6`, `1,3,5-7`, `0-9:2`, each
/// optionally followed by a throttle `%N`.
pub fn task_indices(spec: &str) -> Result<Vec<u32>, SlurmError> {
    let bad = || SlurmError::Parse(format!("array task ids {spec:?}"));
    let spec = spec.split('%').next().unwrap_or("");
    let mut out = Vec::new();
    for part in spec.split(',').filter(|p| !p.is_empty()) {
        let (range, step) = match part.split_once(':') {
            Some((r, s)) => (r, s.parse::<u32>().map_err(|_| bad())?),
            None => (part, 1),
        };
        let (a, b) = match range.split_once('-') {
            Some((a, b)) => (
                a.parse::<u32>().map_err(|_| bad())?,
                b.parse::<u32>().map_err(|_| bad())?,
            ),
            None => {
                let a = range.parse::<u32>().map_err(|_| bad())?;
                (a, a)
            }
        };
        if step == 0 || b < a {
            return Err(bad());
        }
        out.extend((a..=b).step_by(step as usize));
    }
    if out.is_empty() {
        return Err(bad());
    }
    Ok(out)
}

/// `key=value` fields of one `scontrol -o` record (values hold no spaces, except the last
/// fields we do not read).
fn fields(line: &str) -> BTreeMap<&str, &str> {
    line.split_whitespace()
        .filter_map(|f| f.split_once('='))
        .collect()
}

/// The tasks of array job `job` in `scontrol -o show job <job>` output, by task index. A job
/// that is not an array (no `ArrayTaskId`) is reported as task 0.
pub fn parse_scontrol(job: &str, text: &str) -> Result<BTreeMap<u32, TaskState>, SlurmError> {
    let mut out = BTreeMap::new();
    for line in text.lines().filter(|l| l.contains("JobState=")) {
        let f = fields(line);
        if let Some(array) = f.get("ArrayJobId") {
            if *array != job {
                continue;
            }
        } else if f.get("JobId") != Some(&job) {
            continue;
        }
        let state = f
            .get("JobState")
            .ok_or_else(|| SlurmError::Parse(format!("no JobState in {line:?}")))?;
        let s = task_state(
            state,
            f.get("ExitCode").copied(),
            f.get("Reason").unwrap_or(&""),
        );
        let indices = match f.get("ArrayTaskId") {
            Some(ids) => task_indices(ids)?,
            None => vec![0],
        };
        for i in indices {
            out.insert(i, s.clone());
        }
    }
    Ok(out)
}

/// The job id `sbatch --parsable` printed (`123` or `123;cluster`).
pub fn parse_sbatch(stdout: &str) -> Result<String, SlurmError> {
    let id = stdout.trim().split(';').next().unwrap_or("").trim();
    if id.is_empty() || !id.chars().all(|c| c.is_ascii_digit()) {
        return Err(SlurmError::Parse(format!(
            "sbatch printed {stdout:?}, expected a job id"
        )));
    }
    Ok(id.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `scontrol -o show job 1` of Slurm 22.05 (fields trimmed): two tasks running, three
    /// pending behind the array's `%2` throttle.
    const RUNNING: &str = "\
JobId=1 ArrayJobId=1 ArrayTaskId=2-4%2 ArrayTaskThrottle=2 JobName=t.sh JobState=PENDING Reason=JobArrayTaskLimit Dependency=(null) Requeue=0 ExitCode=0:0 StdOut=/tmp/sl/1_4294967294.log Power=
JobId=3 ArrayJobId=1 ArrayTaskId=1 ArrayTaskThrottle=2 JobName=t.sh JobState=RUNNING Reason=None Dependency=(null) ExitCode=0:0 StdOut=/tmp/sl/1_1.log Power=
JobId=2 ArrayJobId=1 ArrayTaskId=0 ArrayTaskThrottle=2 JobName=t.sh JobState=RUNNING Reason=None Dependency=(null) ExitCode=0:0 StdOut=/tmp/sl/1_0.log Power=
";

    /// The same job once every task ended (task 3 cancelled with `scancel 1_3`).
    const ENDED: &str = "\
JobId=1 ArrayJobId=1 ArrayTaskId=4 JobState=FAILED Reason=NonZeroExitCode ExitCode=4:0
JobId=5 ArrayJobId=1 ArrayTaskId=3 JobState=CANCELLED Reason=None ExitCode=0:15
JobId=4 ArrayJobId=1 ArrayTaskId=2 JobState=FAILED Reason=NonZeroExitCode ExitCode=2:0
JobId=3 ArrayJobId=1 ArrayTaskId=1 JobState=TIMEOUT Reason=TimeLimit ExitCode=0:1
JobId=2 ArrayJobId=1 ArrayTaskId=0 JobState=COMPLETED Reason=None ExitCode=0:0
";

    fn ended(state: &str, code: Option<i32>, signal: Option<i32>) -> TaskState {
        TaskState::Ended(End {
            state: state.into(),
            exit_code: code,
            signal,
        })
    }

    #[test]
    fn scontrol_running_array_with_grouped_pending_tasks() {
        let t = parse_scontrol("1", RUNNING).unwrap();
        assert_eq!(t.len(), 5);
        assert_eq!(t[&0], TaskState::Running);
        assert_eq!(t[&1], TaskState::Running);
        for i in 2..=4 {
            assert_eq!(
                t[&i],
                TaskState::Pending("PENDING (JobArrayTaskLimit)".into())
            );
        }
        assert!(parse_scontrol("7", RUNNING).unwrap().is_empty());
    }

    #[test]
    fn scontrol_ended_tasks_with_exit_codes_and_signals() {
        let t = parse_scontrol("1", ENDED).unwrap();
        assert_eq!(t[&0], ended("COMPLETED", Some(0), None));
        assert_eq!(t[&1], ended("TIMEOUT", None, Some(1)));
        assert_eq!(t[&2], ended("FAILED", Some(2), None));
        assert_eq!(t[&3], ended("CANCELLED", None, Some(15)));
        assert_eq!(t[&4], ended("FAILED", Some(4), None));
    }

    #[test]
    fn states_that_may_still_run_are_not_ended() {
        for s in [
            "PENDING",
            "REQUEUED",
            "SUSPENDED",
            "REQUEUE_HOLD",
            "SPECIAL_EXIT",
        ] {
            assert!(
                matches!(task_state(s, None, ""), TaskState::Pending(_)),
                "{s}"
            );
        }
        for s in ["COMPLETING", "CONFIGURING", "RUNNING"] {
            assert_eq!(task_state(s, None, ""), TaskState::Running, "{s}");
        }
        assert_eq!(
            task_state("CANCELLED by 0", Some("0:15"), ""),
            ended("CANCELLED", None, Some(15))
        );
        assert_eq!(
            task_state("NODE_FAIL", Some("0:0"), ""),
            ended("NODE_FAIL", Some(0), None)
        );
    }

    #[test]
    fn array_index_specs() {
        assert_eq!(task_indices("4").unwrap(), [4]);
        assert_eq!(task_indices("2-4%2").unwrap(), [2, 3, 4]);
        assert_eq!(task_indices("1,3,5-7").unwrap(), [1, 3, 5, 6, 7]);
        assert_eq!(task_indices("0-6:3").unwrap(), [0, 3, 6]);
        for bad in ["", "a", "3-1", "1-", "0-4:0"] {
            assert!(task_indices(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn sbatch_parsable_output() {
        assert_eq!(parse_sbatch("123\n").unwrap(), "123");
        assert_eq!(parse_sbatch("123;cluster\n").unwrap(), "123");
        assert!(parse_sbatch("sbatch: error: Batch job submission failed").is_err());
    }
}
