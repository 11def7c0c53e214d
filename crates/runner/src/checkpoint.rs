//! Checkpoint files: safetensors holding model parameters and buffers under their PyTorch
//! `state_dict` names, optimizer state under `optimizer.*`, and the runner's resumable state
//! (step, data position, RNG state) as JSON in the safetensors metadata.

use breakeven_models::Model;
use candle_core::safetensors::Load;
use candle_core::{Device, Tensor};
use safetensors::SafeTensors;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::atomic::write_atomic;
use crate::error::RunError;

/// Metadata key holding the runner state JSON.
const STATE_KEY: &str = "breakeven.state";

/// Named tensors plus a JSON state string.
#[derive(Debug, Default)]
pub struct Checkpoint {
    pub tensors: Vec<(String, Tensor)>,
    pub state: String,
}

impl Checkpoint {
    /// Serializes and writes atomically.
    pub fn save(&self, path: &Path) -> Result<(), RunError> {
        // Candle's `View` for tensors copies each one to host bytes; its `data()` unwraps, so
        // only dtypes it can convert reach it (all of ours: f32, f64, u32, i64, u8).
        let meta = HashMap::from([(STATE_KEY.to_string(), self.state.clone())]);
        let bytes = safetensors::serialize(
            self.tensors.iter().map(|(n, t)| (n.as_str(), t)),
            Some(meta),
        )
        .map_err(|e| RunError::Checkpoint {
            path: path.into(),
            message: e.to_string(),
        })?;
        write_atomic(path, &bytes)
    }

    /// Reads a checkpoint, placing tensors on `device`.
    pub fn load(path: &Path, device: &Device) -> Result<Self, RunError> {
        let err = |message: String| RunError::Checkpoint {
            path: path.into(),
            message,
        };
        let bytes = std::fs::read(path).map_err(|e| RunError::io(path, e))?;
        let (_, meta) = SafeTensors::read_metadata(&bytes).map_err(|e| err(e.to_string()))?;
        let state = meta
            .metadata()
            .as_ref()
            .and_then(|m| m.get(STATE_KEY).cloned())
            .ok_or_else(|| {
                err(format!(
                    "no `{STATE_KEY}` metadata: not a breakeven checkpoint"
                ))
            })?;
        let st = SafeTensors::deserialize(&bytes).map_err(|e| err(e.to_string()))?;
        let mut tensors = Vec::new();
        for (name, view) in st.iter() {
            tensors.push((name.to_string(), view.load(device)?));
        }
        tensors.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(Self { tensors, state })
    }

    /// The model's parameters and buffers under their `state_dict` names, as a checkpoint
    /// holds them.
    pub fn model_tensors(model: &dyn Model) -> Vec<(String, Tensor)> {
        let mut tensors: Vec<_> = model
            .params()
            .iter()
            .map(|q| (q.name.clone(), q.var.as_tensor().clone()))
            .collect();
        tensors.extend(
            model
                .buffers()
                .into_iter()
                .map(|(n, v)| (n, v.as_tensor().clone())),
        );
        tensors
    }

    /// Sets `model`'s parameters and buffers from this checkpoint (read from `path`); a
    /// missing key, or a shape or dtype other than the model's, is an error naming both.
    pub fn restore_model(&self, model: &dyn Model, path: &Path) -> Result<(), RunError> {
        let mut targets: Vec<(String, candle_core::Var)> = model
            .params()
            .iter()
            .map(|q| (q.name.clone(), q.var.clone()))
            .collect();
        targets.extend(model.buffers());
        for (name, var) in &targets {
            let t = self.get(name, path)?;
            if t.dims() != var.dims() || t.dtype() != var.dtype() {
                return Err(RunError::Checkpoint {
                    path: path.into(),
                    message: format!(
                        "`{name}` is {:?} {:?}, the model expects {:?} {:?}",
                        t.dtype(),
                        t.dims(),
                        var.dtype(),
                        var.dims()
                    ),
                });
            }
            var.set(t)?;
        }
        Ok(())
    }

    /// The tensor called `name`, or an error naming the file and key.
    pub fn get(&self, name: &str, path: &Path) -> Result<&Tensor, RunError> {
        self.tensors
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, t)| t)
            .ok_or_else(|| RunError::Checkpoint {
                path: path.into(),
                message: format!("missing tensor `{name}`"),
            })
    }
}

/// `checkpoints/step-00001234.safetensors`.
pub fn checkpoint_path(dir: &Path, step: u64) -> PathBuf {
    dir.join(format!("step-{step:010}.safetensors"))
}

/// Checkpoints in `dir`, sorted by step (temporaries and foreign files are ignored).
pub fn list_checkpoints(dir: &Path) -> Result<Vec<(u64, PathBuf)>, RunError> {
    if !dir.exists() {
        return Ok(vec![]);
    }
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| RunError::io(dir, e))? {
        let path = entry.map_err(|e| RunError::io(dir, e))?.path();
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if let Some(step) = name
            .strip_prefix("step-")
            .and_then(|s| s.strip_suffix(".safetensors"))
        {
            if let Ok(step) = step.parse::<u64>() {
                out.push((step, path));
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Deletes all but the newest `keep` checkpoints.
pub fn prune_checkpoints(dir: &Path, keep: usize) -> Result<(), RunError> {
    let all = list_checkpoints(dir)?;
    for (_, p) in all.iter().take(all.len().saturating_sub(keep)) {
        std::fs::remove_file(p).map_err(|e| RunError::io(p, e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_bits_and_state() {
        let dir = std::env::temp_dir().join(format!("breakeven-ckpt-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let a = Tensor::new(
            &[[1.5f32, -0.0, f32::MIN_POSITIVE], [3.0, 4.0, 1e-30]],
            &Device::Cpu,
        )
        .unwrap();
        let b = Tensor::new(&[0.1f64, 0.2], &Device::Cpu).unwrap();
        let c = Checkpoint {
            tensors: vec![("w".into(), a.clone()), ("bn.n".into(), b.clone())],
            state: "{\"x\":1}".into(),
        };
        let p = checkpoint_path(&dir, 7);
        c.save(&p).unwrap();
        let back = Checkpoint::load(&p, &Device::Cpu).unwrap();
        assert_eq!(back.state, c.state);
        let a2 = back.get("w", &p).unwrap();
        assert_eq!(a2.dims(), &[2, 3]);
        let bits = |t: &Tensor| {
            t.flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
                .iter()
                .map(|v| v.to_bits())
                .collect::<Vec<_>>()
        };
        assert_eq!(bits(a2), bits(&a));
        assert_eq!(
            back.get("bn.n", &p).unwrap().to_vec1::<f64>().unwrap(),
            vec![0.1, 0.2]
        );
        assert!(back.get("nope", &p).is_err());
        checkpoint::save_dummy(&dir, 9);
        assert_eq!(
            list_checkpoints(&dir)
                .unwrap()
                .iter()
                .map(|x| x.0)
                .collect::<Vec<_>>(),
            vec![7, 9]
        );
        prune_checkpoints(&dir, 1).unwrap();
        assert_eq!(
            list_checkpoints(&dir)
                .unwrap()
                .iter()
                .map(|x| x.0)
                .collect::<Vec<_>>(),
            vec![9]
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    mod checkpoint {
        pub fn save_dummy(dir: &std::path::Path, step: u64) {
            super::Checkpoint {
                tensors: vec![],
                state: "{}".into(),
            }
            .save(&super::checkpoint_path(dir, step))
            .unwrap();
        }
    }
}
