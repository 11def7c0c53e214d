//! `breakeven measure`: the curvature of one checkpoint on a measurement subset, as JSON.

use std::path::Path;
use std::time::Instant;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::device::open_device;
use crate::error::RunError;
use crate::evaluate::evaluate;
use crate::rundir::RunDir;
use crate::setup::{load_data, prepare, STEP_SEED_OFFSET};
use crate::state::restore;
use crate::track::measure_curvature;

/// Loads the checkpoint with its run's config (`<run>/config.toml`, two levels up), optionally
/// on another data set and subset size, and measures its curvature.
pub fn measure_checkpoint(
    checkpoint: &Path,
    data: Option<&str>,
    subset: Option<usize>,
    data_dir: Option<&Path>,
) -> Result<serde_json::Value, RunError> {
    crate::train::enable_second_order()?;
    let run_root =
        checkpoint
            .parent()
            .and_then(Path::parent)
            .ok_or_else(|| RunError::Checkpoint {
                path: checkpoint.into(),
                message: "expected <run>/checkpoints/<file>".into(),
            })?;
    let mut config = RunDir::new(run_root).load_config()?;
    if let Some(name) = data {
        config.data.name = name.into();
    }
    if let Some(n) = subset {
        config.tracking.measure_subset = n;
    }
    config.tracking.curvature = true;
    config.validate()?;
    let data = load_data(&config, data_dir)?;
    let mut p = prepare(&config, data, open_device(&config.device)?)?;
    let mut rng = ChaCha8Rng::seed_from_u64(config.seed ^ STEP_SEED_OFFSET);
    let state = restore(checkpoint, &mut p, &mut rng)?;
    let t0 = Instant::now();
    let (loss, acc) = evaluate(p.model.as_ref(), &p.measure)?;
    let curvature = measure_curvature(&config, &mut p, state.step)?;
    Ok(serde_json::json!({
        "checkpoint": checkpoint.display().to_string(),
        "step": state.step,
        "data": config.data.name,
        "subset": p.measure.len,
        "loss": loss,
        "accuracy": acc,
        "curvature": curvature,
        "wall_s": t0.elapsed().as_secs_f64(),
    }))
}
