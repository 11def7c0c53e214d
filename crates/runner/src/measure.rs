//! `breakeven measure`: the curvature of one checkpoint on a measurement subset, as JSON.

use std::path::Path;
use std::time::Instant;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::config::RunConfig;
use crate::device::open_device;
use crate::error::RunError;
use crate::evaluate::evaluate;
use crate::rundir::RunDir;
use crate::setup::{load_data, prepare, STEP_SEED_OFFSET};
use crate::state::restore;
use crate::track::measure_curvature;

/// Measures the curvature of a checkpoint, optionally on another data set and subset size.
///
/// Without `config`, `checkpoint` is one of a run's checkpoints and the run's own config
/// (`<run>/config.toml`, two levels up) says which model and data it belongs to. With `config` (a
/// run config TOML), `checkpoint` is a bare weights file: ours (`breakeven_models::io::save`) or a
/// PyTorch `state_dict` of a supported architecture saved with `safetensors.torch.save_file`;
/// every key and shape is checked against the config's model.
pub fn measure_checkpoint(
    checkpoint: &Path,
    config_file: Option<&Path>,
    data: Option<&str>,
    subset: Option<usize>,
    data_dir: Option<&Path>,
) -> Result<serde_json::Value, RunError> {
    crate::train::enable_second_order()?;
    let mut config =
        match config_file {
            Some(path) => RunConfig::load(path)?,
            None => {
                let run_root = checkpoint.parent().and_then(Path::parent).ok_or_else(|| {
                    RunError::Checkpoint {
                        path: checkpoint.into(),
                        message: "expected <run>/checkpoints/<file> (or pass --config)".into(),
                    }
                })?;
                RunDir::new(run_root).load_config()?
            }
        };
    if let Some(name) = data {
        config.data.name = name.parse()?;
    }
    if let Some(n) = subset {
        config.tracking.measure_subset = n;
    }
    config.tracking.curvature = true;
    config.validate()?;
    let data = load_data(&config, data_dir)?;
    let mut p = prepare(&config, data, open_device(config.device)?)?;
    let mut rng = ChaCha8Rng::seed_from_u64(config.seed ^ STEP_SEED_OFFSET);
    let step = match config_file {
        Some(_) => {
            breakeven_models::io::load(p.model.as_ref(), checkpoint)?;
            0
        }
        None => restore(checkpoint, &mut p, &mut rng)?.step,
    };
    let t0 = Instant::now();
    let (loss, acc) = evaluate(p.model.as_ref(), &p.measure)?;
    let curvature = measure_curvature(&config, &mut p, step)?;
    Ok(serde_json::json!({
        "checkpoint": checkpoint.display().to_string(),
        "step": step,
        "data": config.data.name,
        "subset": p.measure.len,
        "loss": loss,
        "accuracy": acc,
        "curvature": curvature,
        "wall_s": t0.elapsed().as_secs_f64(),
    }))
}
