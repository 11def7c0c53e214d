//! The sweep's ledger, `<runs>/slurm/ledger.json`: which sweep owns the runs directory, every
//! submission (job name, job id, the run of each task), the task each run is in now, and the
//! failed attempts of each run. It is rewritten atomically after every change, so a command
//! killed at any point leaves a ledger the next one attaches to. Retry bookkeeping lives here:
//! [`judge`] turns how a task ended into finished, retry or failed.

use std::collections::BTreeMap;
use std::path::Path;

use breakeven_runner::atomic::write_atomic;
use breakeven_runner::EXIT_BAD_CONFIG;
use serde::{Deserialize, Serialize};

use crate::error::SlurmError;
use crate::query::End;

/// `<runs>/slurm/ledger.json`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ledger {
    /// The sweep that owns the runs directory: `<experiment>/<profile>`.
    pub sweep: String,
    /// Distinguishes this sweep's job names from another copy's (e.g. in another runs dir).
    pub token: String,
    pub submissions: Vec<Submission>,
    /// By run directory, relative to the runs directory.
    pub runs: BTreeMap<String, RunRecord>,
}

/// One `sbatch` of a job array.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Submission {
    pub job_name: String,
    /// `None` between writing the submission down and `sbatch` answering: a command killed
    /// there finds its job by name.
    pub job_id: Option<String>,
    /// The script, relative to the runs directory.
    pub script: String,
    /// Task `i` runs `runs[i]`.
    pub runs: Vec<String>,
}

/// One run's history on the cluster.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunRecord {
    /// The task running it now: `(submission, task index)`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_flight: Option<(usize, u32)>,
    /// Why each attempt that ended without finishing the run ended.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failures: Vec<String>,
    /// The last failure cannot be cured by running again (a config error).
    #[serde(default)]
    pub deterministic: bool,
}

impl RunRecord {
    /// Recorded as failed under `retries`: a deterministic failure, or more failed attempts
    /// than retries allowed (a larger `--retries` on a later command gives it more attempts).
    pub fn failed(&self, retries: u32) -> bool {
        self.in_flight.is_none() && (self.deterministic || self.failures.len() > retries as usize)
    }

    /// The page's message for a failed run.
    pub fn message(&self) -> String {
        let last = self.failures.last().map_or("", String::as_str);
        match self.failures.len() {
            1 => last.to_string(),
            n => format!("{last} (failed {n} times on Slurm)"),
        }
    }
}

/// What to do with a run whose task ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// `summary.json` exists (converged, capped or diverged: all are finished).
    Finished,
    /// Submit it again: it resumes from its last checkpoint.
    Retry(String),
    /// Give up: a config error, or the last of `--retries`.
    Failed { why: String, deterministic: bool },
}

/// How a task ended, in words.
pub fn describe(end: Option<&End>, exit: Option<i32>) -> String {
    let Some(end) = end else {
        return match exit {
            Some(c) => format!("exit status {c}"),
            // A pending task cancelled with its array vanishes from Slurm's records; so does a
            // job older than MinJobAge.
            None => {
                "ended with no record left in Slurm (cancelled while pending, or forgotten)".into()
            }
        };
    };
    let exit = exit.or(end.exit_code);
    match (end.state.as_str(), exit, end.signal) {
        ("CANCELLED", _, _) => "cancelled (scancel)".into(),
        ("TIMEOUT", _, _) => "hit the time limit (--time)".into(),
        ("NODE_FAIL", _, _) => "its node failed".into(),
        ("PREEMPTED", _, _) => "preempted".into(),
        ("OUT_OF_MEMORY", _, _) => "ran out of memory (--mem)".into(),
        ("BOOT_FAIL", _, _) => "its node failed to boot".into(),
        ("DEADLINE", _, _) => "missed its deadline".into(),
        ("COMPLETED", _, _) => "exited 0 without writing summary.json".into(),
        (state, Some(c), _) => format!("{state}, exit status {c}"),
        (state, None, Some(s)) => format!("{state}, killed by signal {s}"),
        (state, None, None) => state.to_string(),
    }
}

/// The verdict on a run whose task ended. `end`: Slurm's record of the task, if it still has
/// one; `exit`: the status the task wrote itself; `finished`: `summary.json` exists;
/// `failures`: failed attempts before this one; `error`: the error the run printed, if any.
pub fn judge(
    end: Option<&End>,
    exit: Option<i32>,
    finished: bool,
    failures: usize,
    retries: u32,
    error: Option<&str>,
) -> Verdict {
    if finished {
        return Verdict::Finished;
    }
    let mut why = describe(end, exit);
    if let Some(e) = error {
        why = format!("{why}: {e}");
    }
    let status = exit.or(end.and_then(|e| e.exit_code));
    if status == Some(EXIT_BAD_CONFIG) {
        return Verdict::Failed {
            why: format!("{why} (a config error: not retried)"),
            deterministic: true,
        };
    }
    if failures >= retries as usize {
        return Verdict::Failed {
            why,
            deterministic: false,
        };
    }
    Verdict::Retry(why)
}

impl Ledger {
    /// The ledger of `runs_dir` for `sweep`, or a new one. Refuses a runs directory that holds
    /// another sweep's ledger: two sweeps never share run directories.
    pub fn load_or_new(path: &Path, sweep: &str) -> Result<Self, SlurmError> {
        let Some(ledger) = Self::load(path)? else {
            return Ok(Self {
                sweep: sweep.to_string(),
                token: new_token(),
                ..Default::default()
            });
        };
        if ledger.sweep != sweep {
            return Err(SlurmError::Ledger {
                path: path.to_path_buf(),
                message: format!(
                    "this runs directory belongs to sweep {}, not {sweep}; choose another --runs-dir",
                    ledger.sweep
                ),
            });
        }
        Ok(ledger)
    }

    /// The ledger at `path`, if there is one.
    pub fn load(path: &Path) -> Result<Option<Self>, SlurmError> {
        if !path.exists() {
            return Ok(None);
        }
        let text = std::fs::read_to_string(path).map_err(|e| SlurmError::io(path, e))?;
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| SlurmError::Ledger {
                path: path.to_path_buf(),
                message: e.to_string(),
            })
    }

    pub fn save(&self, path: &Path) -> Result<(), SlurmError> {
        let text = serde_json::to_string_pretty(self).map_err(|e| SlurmError::Ledger {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        Ok(write_atomic(path, text.as_bytes())?)
    }

    /// Writes down a submission of `runs` (before `sbatch`): each run is in flight in it.
    pub fn add_submission(&mut self, job_name: String, script: String, runs: Vec<String>) -> usize {
        let s = self.submissions.len();
        for (i, r) in runs.iter().enumerate() {
            self.runs.entry(r.clone()).or_default().in_flight = Some((s, i as u32));
        }
        self.submissions.push(Submission {
            job_name,
            job_id: None,
            script,
            runs,
        });
        s
    }

    /// Runs in flight, as `(run, submission, task)`.
    pub fn in_flight(&self) -> Vec<(String, usize, u32)> {
        self.runs
            .iter()
            .filter_map(|(k, r)| r.in_flight.map(|(s, i)| (k.clone(), s, i)))
            .collect()
    }

    /// The job ids with runs in flight (`?name` for a job whose id is not known yet).
    pub fn jobs_in_flight(&self) -> Vec<String> {
        let mut subs: Vec<usize> = self.in_flight().iter().map(|(_, s, _)| *s).collect();
        subs.sort_unstable();
        subs.dedup();
        subs.iter()
            .map(|&s| {
                let sub = &self.submissions[s];
                sub.job_id
                    .clone()
                    .unwrap_or_else(|| format!("?{}", sub.job_name))
            })
            .collect()
    }

    /// Records how `run`'s task ended.
    pub fn record(&mut self, run: &str, verdict: &Verdict) {
        let rec = self.runs.entry(run.to_string()).or_default();
        rec.in_flight = None;
        match verdict {
            Verdict::Finished => {}
            Verdict::Retry(why) => {
                rec.failures.push(why.clone());
                rec.deterministic = false;
            }
            Verdict::Failed { why, deterministic } => {
                rec.failures.push(why.clone());
                rec.deterministic = *deterministic;
            }
        }
    }

    /// A submission `sbatch` never took (a command killed before it ran): its runs are not in
    /// flight.
    pub fn drop_submission(&mut self, s: usize) {
        for r in self.runs.values_mut() {
            if matches!(r.in_flight, Some((t, _)) if t == s) {
                r.in_flight = None;
            }
        }
    }

    /// Whether `run` is recorded as failed under `retries`.
    pub fn failed(&self, run: &str, retries: u32) -> bool {
        self.runs.get(run).is_some_and(|r| r.failed(retries))
    }

    /// Forgets the failures of `run` (its run directory was removed to try it afresh).
    pub fn forget(&mut self, run: &str) {
        if let Some(r) = self.runs.get_mut(run) {
            if r.in_flight.is_none() {
                self.runs.remove(run);
            }
        }
    }
}

/// Eight hex digits from the clock and the process id (unique enough to tell sweeps apart).
fn new_token() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let mixed = (nanos as u64) ^ (u64::from(std::process::id()) << 32);
    format!("{:08x}", (mixed ^ (mixed >> 29)) as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn end(state: &str, code: Option<i32>, signal: Option<i32>) -> End {
        End {
            state: state.into(),
            exit_code: code,
            signal,
        }
    }

    #[test]
    fn verdicts() {
        let cancelled = end("CANCELLED", None, Some(15));
        assert_eq!(
            judge(Some(&cancelled), None, true, 0, 2, None),
            Verdict::Finished
        );
        assert_eq!(
            judge(Some(&cancelled), None, false, 0, 2, None),
            Verdict::Retry("cancelled (scancel)".into())
        );
        // The last allowed attempt fails for good.
        assert!(matches!(
            judge(Some(&cancelled), None, false, 2, 2, None),
            Verdict::Failed {
                deterministic: false,
                ..
            }
        ));
        // A config error is not retried, however many retries are left.
        let bad = end("FAILED", Some(2), None);
        let v = judge(
            Some(&bad),
            None,
            false,
            0,
            5,
            Some("config key `data.val_size`: too big"),
        );
        let Verdict::Failed { why, deterministic } = v else {
            panic!("{v:?}")
        };
        assert!(deterministic);
        assert!(
            why.contains("data.val_size") && why.contains("not retried"),
            "{why}"
        );
        // The status the task wrote wins over Slurm's (and replaces it once Slurm forgot).
        assert!(matches!(
            judge(None, Some(2), false, 0, 5, None),
            Verdict::Failed {
                deterministic: true,
                ..
            }
        ));
        assert_eq!(
            judge(
                Some(&end("FAILED", Some(1), None)),
                None,
                false,
                0,
                1,
                Some("boom")
            ),
            Verdict::Retry("FAILED, exit status 1: boom".into())
        );
        for (state, words) in [
            ("TIMEOUT", "time limit"),
            ("NODE_FAIL", "node failed"),
            ("PREEMPTED", "preempted"),
            ("OUT_OF_MEMORY", "memory"),
            ("COMPLETED", "without writing summary.json"),
        ] {
            let d = describe(Some(&end(state, Some(0), None)), None);
            assert!(d.contains(words), "{state}: {d}");
        }
        assert!(describe(None, None).contains("no record"));
    }

    #[test]
    fn retry_bookkeeping() {
        let mut l = Ledger::default();
        let s = l.add_submission(
            "n".into(),
            "submit-0.sh".into(),
            vec!["a".into(), "b".into()],
        );
        assert_eq!(l.in_flight().len(), 2);
        assert_eq!(l.runs["b"].in_flight, Some((s, 1)));
        l.record("a", &Verdict::Finished);
        l.record("b", &Verdict::Retry("cancelled".into()));
        assert!(l.in_flight().is_empty());
        assert!(!l.failed("a", 1) && !l.failed("b", 1));
        // Failed after more failures than retries; a larger --retries revives it.
        l.add_submission("n2".into(), "submit-1.sh".into(), vec!["b".into()]);
        assert!(!l.failed("b", 0), "in flight is not failed");
        l.record(
            "b",
            &Verdict::Failed {
                why: "time limit".into(),
                deterministic: false,
            },
        );
        assert!(l.failed("b", 1));
        assert!(!l.failed("b", 2));
        assert_eq!(
            l.runs["b"].message(),
            "time limit (failed 2 times on Slurm)"
        );
        // A config error stays failed whatever --retries says.
        l.record(
            "c",
            &Verdict::Failed {
                why: "bad".into(),
                deterministic: true,
            },
        );
        assert!(l.failed("c", 100));
        l.forget("c");
        assert!(!l.failed("c", 0));
        // A submission sbatch never took leaves nothing in flight.
        let s = l.add_submission("n3".into(), "submit-2.sh".into(), vec!["d".into()]);
        assert_eq!(l.jobs_in_flight(), ["?n3"]);
        l.drop_submission(s);
        assert!(l.in_flight().is_empty());
    }

    #[test]
    fn ledger_round_trip_and_ownership() {
        let dir =
            std::env::temp_dir().join(format!("breakeven-slurm-ledger-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("ledger.json");
        let _ = std::fs::remove_file(&path);
        let mut l = Ledger::load_or_new(&path, "table1/smoke").unwrap();
        l.add_submission("n".into(), "submit-0.sh".into(), vec!["row/a".into()]);
        l.submissions[0].job_id = Some("42".into());
        l.save(&path).unwrap();
        let back = Ledger::load_or_new(&path, "table1/smoke").unwrap();
        assert_eq!(back, l);
        assert_eq!(back.jobs_in_flight(), ["42"]);
        let e = Ledger::load_or_new(&path, "table2/smoke")
            .unwrap_err()
            .to_string();
        assert!(e.contains("belongs to sweep table1/smoke"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
