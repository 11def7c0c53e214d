//! `metrics.jsonl`: one JSON object per logged step, rewritten atomically on every append and
//! truncated to the checkpoint's step on resume, so a resumed run has no duplicate or lost lines.

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

use crate::atomic::write_atomic;
use crate::error::RunError;

/// One logged point of the trajectory. Curvature fields are present only when measured.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MetricsRecord {
    /// Optimizer steps taken so far.
    pub step: u64,
    /// Epochs completed so far, fractional (step / steps per epoch).
    pub epoch: f64,
    /// Learning rate used by the last step.
    pub lr: f64,
    /// Mean training loss and accuracy of the mini-batches since the previous log point.
    pub train_loss: f64,
    pub train_acc: f64,
    /// Mean penalty value P of the steps since the previous log point (when a penalty is on).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub penalty: Option<f64>,
    /// Loss/accuracy on the fixed measurement subset of the training set (eval mode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub measure_loss: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub measure_acc: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub val_loss: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub val_acc: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_loss: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_acc: Option<f64>,
    /// With label noise (SCIENCE.md §5.3), on the fixed noise-tracking subset in eval mode:
    /// accuracy on its clean examples, on its noisy examples against the (noisy) labels they are
    /// trained on (memorization), and on the noisy examples against their true labels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub train_acc_clean: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub train_acc_noisy: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub train_acc_noisy_true: Option<f64>,
    /// ‖∇L‖ of the last mini-batch (before clipping).
    pub grad_norm: f64,
    /// ‖θ‖ after the last step.
    pub weight_norm: f64,
    /// Mean wall time of a step since the previous log point (seconds; not bit-reproducible).
    pub step_time_s: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub curvature: Option<CurvatureRecord>,
}

impl MetricsRecord {
    /// The record with its timings (step time, curvature wall time) zeroed: the only fields a
    /// resumed or rescheduled run does not reproduce bit for bit.
    pub fn without_timings(mut self) -> Self {
        self.step_time_s = 0.0;
        if let Some(c) = self.curvature.as_mut() {
            c.wall_s = 0.0;
        }
        self
    }
}

/// Curvature along the trajectory, on the measurement subset (SCIENCE.md §2).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CurvatureRecord {
    /// λ_H^1..k (Lanczos on Hessian-vector products).
    pub lambda_h: Vec<f64>,
    /// Tr(H) (Hutchinson).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hessian_trace: Option<f64>,
    /// Tr(F), labels sampled from the model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fisher_trace: Option<f64>,
    /// λ_K^1 and Tr(K) from the Gram matrix of centred per-example gradients.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lambda_k1: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub k_trace: Option<f64>,
    /// λ_H^k / λ_H^1 and λ_K^* / λ_K^1 (conditioning).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub h_ratio: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub k_ratio: Option<f64>,
    /// With `tracking.lanczos_tol`: the true relative residuals ‖H y − θ y‖/|θ| of λ_H^1..k,
    /// the Lanczos iterations spent and whether every residual met the tolerance.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub lambda_h_residuals: Vec<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lanczos_iterations: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lanczos_converged: Option<bool>,
    /// Matrix-vector products / gradient evaluations spent, and the wall time of the measurement.
    pub matvecs: u64,
    pub wall_s: f64,
}

/// The metrics file of one run.
#[derive(Debug)]
pub struct MetricsLog {
    path: PathBuf,
    lines: Vec<String>,
}

impl MetricsLog {
    /// Opens `path`, keeping only complete records with `step <= keep_up_to` (all if `None`);
    /// a torn or unparsable line ends the kept prefix. Writes the kept prefix back atomically.
    pub fn open(path: &Path, keep_up_to: Option<u64>) -> Result<Self, RunError> {
        let mut lines = Vec::new();
        if path.exists() {
            let text = std::fs::read_to_string(path).map_err(|e| RunError::io(path, e))?;
            for line in text.lines() {
                let Ok(record) = serde_json::from_str::<MetricsRecord>(line) else {
                    break;
                };
                if keep_up_to.is_some_and(|max| record.step > max) {
                    break;
                }
                lines.push(line.to_string());
            }
        }
        let log = Self {
            path: path.to_path_buf(),
            lines,
        };
        log.flush()?;
        Ok(log)
    }

    /// Starts an empty file (a fresh run), replacing any previous content.
    pub fn create(path: &Path) -> Result<Self, RunError> {
        let log = Self {
            path: path.to_path_buf(),
            lines: Vec::new(),
        };
        log.flush()?;
        Ok(log)
    }

    /// Appends one record and rewrites the file atomically.
    pub fn append(&mut self, record: &MetricsRecord) -> Result<(), RunError> {
        let line = serde_json::to_string(record)
            .map_err(|e| RunError::Other(format!("metrics record: {e}")))?;
        self.lines.push(line);
        self.flush()
    }

    /// Number of records.
    pub fn len(&self) -> usize {
        self.lines.len()
    }

    /// Whether no record was logged.
    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }

    fn flush(&self) -> Result<(), RunError> {
        let mut text = self.lines.join("\n");
        if !text.is_empty() {
            text.push('\n');
        }
        write_atomic(&self.path, text.as_bytes())
    }
}

/// Reads every record of a metrics file.
pub fn read_metrics(path: &Path) -> Result<Vec<MetricsRecord>, RunError> {
    let text = std::fs::read_to_string(path).map_err(|e| RunError::io(path, e))?;
    text.lines()
        .enumerate()
        .map(|(i, l)| {
            serde_json::from_str(l)
                .map_err(|e| RunError::Other(format!("{} line {}: {e}", path.display(), i + 1)))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncates_to_checkpoint_step_and_drops_torn_line() {
        let dir = std::env::temp_dir().join(format!("breakeven-metrics-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("metrics.jsonl");
        let mut log = MetricsLog::open(&p, None).unwrap();
        for step in [1, 5, 10, 15] {
            log.append(&MetricsRecord {
                step,
                ..Default::default()
            })
            .unwrap();
        }
        let mut text = std::fs::read_to_string(&p).unwrap();
        text.push_str("{\"step\": 2"); // a torn write from an older, non-atomic writer
        std::fs::write(&p, text).unwrap();
        let log = MetricsLog::open(&p, Some(10)).unwrap();
        assert_eq!(log.len(), 3);
        let steps: Vec<u64> = read_metrics(&p).unwrap().iter().map(|r| r.step).collect();
        assert_eq!(steps, vec![1, 5, 10]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
