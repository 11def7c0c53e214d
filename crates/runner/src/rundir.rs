//! The run directory: resolved config, `metrics.jsonl`, `checkpoints/`, and `summary.json`.
//!
//! A run is finished (never repeated by a sweep) iff `summary.json` exists; a directory with a
//! config but no summary is an interrupted run that `resume` continues from its last checkpoint.
//! The one exception: a run that hit its cap continues when the cap is raised
//! ([`Summary::continues_under`]), since a cap is a budget, not part of the run's definition.

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

use crate::atomic::write_atomic;
use crate::config::{RunConfig, ScheduleKind, StopConfig};
use crate::error::RunError;

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RunStatus {
    /// Reached the training-accuracy threshold.
    Converged,
    /// Hit the epoch or step cap first.
    Capped,
    /// The loss became NaN or ±∞ (SCIENCE.md: large learning rates can blow up); stopped cleanly.
    Diverged,
}

/// Final losses and accuracies (eval mode).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FinalMetrics {
    pub train_loss: Option<f64>,
    pub train_acc: Option<f64>,
    pub val_loss: Option<f64>,
    pub val_acc: Option<f64>,
    pub test_loss: Option<f64>,
    pub test_acc: Option<f64>,
}

/// `summary.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub name: String,
    pub status: RunStatus,
    /// The step whose loss was not finite (diverged runs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diverged_at_step: Option<u64>,
    pub steps: u64,
    pub epochs: f64,
    pub final_metrics: FinalMetrics,
    /// Sum of the wall time of all sessions of the run (seconds).
    pub wall_s: f64,
    pub git_revision: String,
    /// The machine the run finished on ([`crate::device::hardware_description`]); absent in
    /// runs finished before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hardware: Option<String>,
}

impl Summary {
    /// Whether this run stopped at a cap that `stop` raises: it then trains on from its last
    /// checkpoint instead of counting as finished. Converged and diverged runs never continue.
    pub fn continues_under(&self, stop: &StopConfig) -> bool {
        self.status == RunStatus::Capped
            && self.epochs < stop.max_epochs as f64
            && stop.max_steps.is_none_or(|m| self.steps < m)
    }
}

/// Paths of one run directory.
#[derive(Debug, Clone)]
pub struct RunDir {
    pub root: PathBuf,
}

impl RunDir {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }
    pub fn config_path(&self) -> PathBuf {
        self.root.join("config.toml")
    }
    pub fn metrics_path(&self) -> PathBuf {
        self.root.join("metrics.jsonl")
    }
    pub fn checkpoint_dir(&self) -> PathBuf {
        self.root.join("checkpoints")
    }
    pub fn summary_path(&self) -> PathBuf {
        self.root.join("summary.json")
    }

    /// Creates the directory tree and writes the resolved config. Refuses a directory holding a
    /// different config (a sweep's cell must never silently change meaning); a raised cap is
    /// recorded in the existing config (its provenance kept).
    pub fn create(&self, config: &RunConfig) -> Result<(), RunError> {
        std::fs::create_dir_all(self.checkpoint_dir()).map_err(|e| RunError::io(&self.root, e))?;
        if self.config_path().exists() {
            self.check_same(config)?;
            return self.record_cap(config);
        }
        write_atomic(&self.config_path(), config.to_toml()?.as_bytes())
    }

    /// Writes `config`'s stopping rule into the existing `config.toml` where it differs (a
    /// raised cap, which [`Self::check_same`] accepts), keeping everything else.
    fn record_cap(&self, config: &RunConfig) -> Result<(), RunError> {
        let old = self.load_config()?;
        if old.stop == config.stop {
            return Ok(());
        }
        let raised = RunConfig {
            stop: config.stop.clone(),
            ..old
        };
        write_atomic(&self.config_path(), raised.to_toml()?.as_bytes())
    }

    /// Refuses a directory whose run (finished or not) has another config than `config`,
    /// naming the keys that differ: a finished cell of a sweep must never be reused for a
    /// changed definition. A directory without a config passes, and so does a raised cap
    /// ([`raises_cap`]): up to the old cap the run is the same.
    pub fn check_same(&self, config: &RunConfig) -> Result<(), RunError> {
        if !self.config_path().exists() {
            return Ok(());
        }
        let old = RunConfig::load(&self.config_path())?;
        if same_run(&old, config) || raises_cap(&old, config) {
            return Ok(());
        }
        Err(RunError::RunDir {
            path: self.root.clone(),
            message: format!(
                "holds a run with a different config ({} differ); remove it or choose another \
                 --run-dir / --runs-dir",
                differing_keys(&old, config).join(", ")
            ),
        })
    }

    /// Reopens a run that stopped at its cap so that it trains on to the raised cap of `config`:
    /// records the new cap in `config.toml` (keeping the run's provenance), then removes
    /// `summary.json`. Interrupted between the two, it is simply called again.
    pub fn reopen(&self, config: &RunConfig) -> Result<(), RunError> {
        self.check_same(config)?;
        self.record_cap(config)?;
        match std::fs::remove_file(self.summary_path()) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(RunError::io(&self.summary_path(), e))
            }
            _ => Ok(()),
        }
    }

    /// The resolved config of an existing run.
    pub fn load_config(&self) -> Result<RunConfig, RunError> {
        let p = self.config_path();
        if !p.exists() {
            return Err(RunError::RunDir {
                path: self.root.clone(),
                message: "no config.toml: not a run directory".into(),
            });
        }
        RunConfig::load(&p)
    }

    /// The summary of a finished run, `None` if the run has not finished.
    pub fn summary(&self) -> Result<Option<Summary>, RunError> {
        let p = self.summary_path();
        if !p.exists() {
            return Ok(None);
        }
        let text = std::fs::read_to_string(&p).map_err(|e| RunError::io(&p, e))?;
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| RunError::RunDir {
                path: p,
                message: e.to_string(),
            })
    }

    /// Writes `summary.json` atomically: the run is finished from now on.
    pub fn write_summary(&self, summary: &Summary) -> Result<(), RunError> {
        let text =
            serde_json::to_string_pretty(summary).map_err(|e| RunError::Other(e.to_string()))?;
        write_atomic(&self.summary_path(), text.as_bytes())
    }
}

/// Configs equal up to provenance (a resumed run may be on a later commit or another data path).
fn strip(c: &RunConfig) -> RunConfig {
    RunConfig {
        provenance: None,
        ..c.clone()
    }
}

fn same_run(a: &RunConfig, b: &RunConfig) -> bool {
    strip(a) == strip(b)
}

/// `new` is `old` with a cap (`stop.max_epochs`, `stop.max_steps`) raised or kept, all else
/// equal: both train the same steps up to the old cap. Not under a cosine schedule, which
/// decays to zero at `stop.max_epochs` and so changes with it.
fn raises_cap(old: &RunConfig, new: &RunConfig) -> bool {
    let steps_kept = match (old.stop.max_steps, new.stop.max_steps) {
        (_, None) => true,
        (None, Some(_)) => false,
        (Some(a), Some(b)) => b >= a,
    };
    let with_new_cap = RunConfig {
        stop: StopConfig {
            max_epochs: new.stop.max_epochs,
            max_steps: new.stop.max_steps,
            ..old.stop.clone()
        },
        ..old.clone()
    };
    new.schedule.kind != ScheduleKind::Cosine
        && new.stop.max_epochs >= old.stop.max_epochs
        && steps_kept
        && same_run(&with_new_cap, new)
}

/// Dotted keys whose values differ between two configs (provenance aside).
fn differing_keys(a: &RunConfig, b: &RunConfig) -> Vec<String> {
    fn flatten(prefix: &str, v: &toml::Value, out: &mut Vec<(String, String)>) {
        match v {
            toml::Value::Table(t) => {
                for (k, v) in t {
                    let key = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    flatten(&key, v, out);
                }
            }
            other => out.push((prefix.to_string(), other.to_string())),
        }
    }
    let flat = |c: &RunConfig| {
        let mut out = Vec::new();
        if let Ok(v) = toml::Value::try_from(strip(c)) {
            flatten("", &v, &mut out);
        }
        out
    };
    let (fa, fb) = (flat(a), flat(b));
    let mut keys: Vec<String> = fa
        .iter()
        .filter(|kv| !fb.contains(kv))
        .chain(fb.iter().filter(|kv| !fa.contains(kv)))
        .map(|(k, _)| k.clone())
        .collect();
    keys.sort();
    keys.dedup();
    if keys.is_empty() {
        keys.push("some values".into());
    }
    keys
}

/// `git rev-parse HEAD` (+ `-dirty` when tracked files outside `docs/results` have changes), or
/// `unknown` outside a checkout.
pub fn git_revision() -> String {
    let run = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    match run(&["rev-parse", "HEAD"]) {
        Some(rev) if !rev.is_empty() => {
            // Generated results (pages, plots, archived runs) do not change what the code
            // computes: writing several pages in a row must not mark the later ones dirty.
            let dirty = run(&[
                "status",
                "--porcelain",
                "--untracked-files=no",
                "--",
                ":(top)",
                ":(top,exclude)docs/results",
            ])
            .is_some_and(|s| !s.is_empty());
            if dirty {
                format!("{rev}-dirty")
            } else {
                rev
            }
        }
        _ => "unknown".into(),
    }
}

/// Whether `dir` looks like a run directory.
pub fn is_run_dir(dir: &Path) -> bool {
    dir.join("config.toml").is_file()
}
