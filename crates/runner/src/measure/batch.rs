//! Batch mode of `measure`: every checkpoint of a run directory (or every `stride`-th, the last
//! one always), one JSON line each appended to `curvature.jsonl`. The file is rewritten
//! atomically after each checkpoint, so an interrupted batch leaves whole lines only, and a
//! second call resumes at the first checkpoint not yet in it. Lines measured with other
//! settings are never mixed in: the call stops with an error instead.

use std::path::{Path, PathBuf};

use super::{MeasureArgs, Measurement, Session};
use crate::atomic::write_atomic;
use crate::checkpoint::list_checkpoints;
use crate::error::RunError;
use crate::rundir::RunDir;

/// What a batch did.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchReport {
    /// The JSON-lines file.
    pub output: PathBuf,
    /// Steps measured by this call.
    pub measured: Vec<u64>,
    /// Steps already in the file (skipped).
    pub skipped: Vec<u64>,
}

/// The checkpoints of a batch: every `stride`-th in step order, and the last one.
pub fn select(all: &[(u64, PathBuf)], stride: usize) -> Vec<(u64, PathBuf)> {
    let stride = stride.max(1);
    let mut out: Vec<(u64, PathBuf)> = all.iter().step_by(stride).cloned().collect();
    if let Some(last) = all.last() {
        if out.last() != Some(last) {
            out.push(last.clone());
        }
    }
    out
}

/// Measures the checkpoints of the run at `args.checkpoint` (a run directory), appending to
/// `args.output` (default `<run>/curvature.jsonl`); `on_line` sees each new measurement.
pub fn measure_run(
    args: &MeasureArgs,
    data_dir: Option<&Path>,
    mut on_line: impl FnMut(&Measurement),
) -> Result<BatchReport, RunError> {
    let run = RunDir::new(&args.checkpoint);
    let all = list_checkpoints(&run.checkpoint_dir())?;
    if all.is_empty() {
        return Err(RunError::RunDir {
            path: args.checkpoint.clone(),
            message: "no checkpoints in checkpoints/ (train with --keep-all-checkpoints to \
                      keep every one)"
                .into(),
        });
    }
    let output = args
        .output
        .clone()
        .unwrap_or_else(|| args.checkpoint.join("curvature.jsonl"));
    let mut text = match std::fs::read_to_string(&output) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(RunError::io(&output, e)),
    };
    let chosen = select(&all, args.stride);
    let mut session = Session::new(args, &chosen[0].1, data_dir)?;
    // Through the text, as the file's lines were (float parsing is then the same on both sides).
    let settings: serde_json::Value = serde_json::to_string(&session.settings)
        .and_then(|t| serde_json::from_str(&t))
        .map_err(|e| RunError::Other(format!("settings as JSON: {e}")))?;
    let mut done = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let v: serde_json::Value = serde_json::from_str(line).map_err(|e| RunError::RunDir {
            path: output.clone(),
            message: format!(
                "line {}: not JSON ({e}); move the file away to start over",
                i + 1
            ),
        })?;
        if v["settings"] != settings {
            return Err(RunError::RunDir {
                path: output.clone(),
                message: format!(
                    "line {} was measured with other settings ({}); this call's are {}: pass \
                     --output to write elsewhere",
                    i + 1,
                    v["settings"],
                    settings
                ),
            });
        }
        if let Some(step) = v["step"].as_u64() {
            done.push(step);
        }
    }
    let mut report = BatchReport {
        output: output.clone(),
        measured: vec![],
        skipped: vec![],
    };
    for (step, path) in chosen {
        if done.contains(&step) {
            report.skipped.push(step);
            continue;
        }
        let m = session.measure(&path)?;
        let line = serde_json::to_string(&m)
            .map_err(|e| RunError::Other(format!("measurement as JSON: {e}")))?;
        text.push_str(&line);
        text.push('\n');
        write_atomic(&output, text.as_bytes())?;
        on_line(&m);
        report.measured.push(step);
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stride_keeps_the_last_checkpoint() {
        let all: Vec<(u64, PathBuf)> = (1..=7)
            .map(|s| (s * 10, PathBuf::from(s.to_string())))
            .collect();
        let steps = |v: Vec<(u64, PathBuf)>| v.into_iter().map(|(s, _)| s).collect::<Vec<_>>();
        assert_eq!(steps(select(&all, 3)), vec![10, 40, 70]);
        assert_eq!(steps(select(&all, 2)), vec![10, 30, 50, 70]);
        assert_eq!(steps(select(&all, 4)), vec![10, 50, 70]);
        assert_eq!(steps(select(&all, 0)), steps(all.clone()));
    }
}
