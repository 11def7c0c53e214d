//! Weights in and out of safetensors files under the PyTorch `state_dict` names, so a file
//! written here loads into the reference PyTorch model with `load_state_dict(strict=True)`
//! (and back).

use std::collections::HashMap;
use std::path::Path;

use candle_core::{Tensor, Var};

use crate::{Model, ModelError};

/// Every parameter and buffer of `model` with its `state_dict` key, parameters first.
pub fn state_dict(model: &dyn Model) -> Vec<(String, Var)> {
    let mut all: Vec<(String, Var)> = model
        .params()
        .iter()
        .map(|p| (p.name.clone(), p.var.clone()))
        .collect();
    all.extend(model.buffers());
    all
}

/// Writes parameters and buffers (values as they are, dtypes included) to `path`.
pub fn save(model: &dyn Model, path: &Path) -> Result<(), ModelError> {
    let tensors: HashMap<String, Tensor> = state_dict(model)
        .into_iter()
        .map(|(k, v)| (k, v.as_tensor().clone()))
        .collect();
    candle_core::safetensors::save(&tensors, path).map_err(|source| ModelError::File {
        path: path.to_path_buf(),
        source,
    })
}

/// Reads `path` into `model`. Every key of the model must be in the file with the same
/// shape, and the file may hold no other key; nothing is changed unless all of them match.
/// Values are converted to each variable's dtype and device.
pub fn load(model: &dyn Model, path: &Path) -> Result<(), ModelError> {
    let device = model
        .params()
        .first()
        .map(|p| p.var.device().clone())
        .unwrap_or(candle_core::Device::Cpu);
    let tensors =
        candle_core::safetensors::load(path, &device).map_err(|source| ModelError::File {
            path: path.to_path_buf(),
            source,
        })?;
    load_tensors(model, tensors, path)
}

/// Like [`load`] from tensors already in memory; `origin` names their source in errors.
pub fn load_tensors(
    model: &dyn Model,
    mut tensors: HashMap<String, Tensor>,
    origin: &Path,
) -> Result<(), ModelError> {
    let path = origin.to_path_buf();
    let mut matched = Vec::new();
    for (key, var) in state_dict(model) {
        let Some(t) = tensors.remove(&key) else {
            return Err(ModelError::MissingKey {
                path,
                key,
                expected: var.dims().to_vec(),
            });
        };
        if t.dims() != var.dims() {
            return Err(ModelError::ShapeMismatch {
                path,
                key,
                found: t.dims().to_vec(),
                expected: var.dims().to_vec(),
            });
        }
        matched.push((var, t));
    }
    if let Some(key) = tensors.into_keys().min() {
        return Err(ModelError::UnexpectedKey { path, key });
    }
    for (var, t) in matched {
        var.set(&t.to_dtype(var.dtype())?.to_device(var.device())?)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{build, Mode, ModelSpec};
    use candle_core::{DType, Device};

    fn model(seed: u64) -> Box<dyn Model> {
        build(
            &ModelSpec::ResNet32 { width: 2 },
            (3, 8, 8),
            5,
            DType::F32,
            &Device::Cpu,
            seed,
        )
        .unwrap()
    }

    fn bits(m: &dyn Model) -> Vec<(String, Vec<u8>)> {
        state_dict(m)
            .into_iter()
            .map(|(k, v)| {
                let t = v.as_tensor().flatten_all().unwrap();
                let bytes = match t.dtype() {
                    DType::I64 => t
                        .to_vec1::<i64>()
                        .unwrap()
                        .iter()
                        .flat_map(|x| x.to_le_bytes())
                        .collect(),
                    _ => t
                        .to_vec1::<f32>()
                        .unwrap()
                        .iter()
                        .flat_map(|x| x.to_le_bytes())
                        .collect(),
                };
                (k, bytes)
            })
            .collect()
    }

    #[test]
    fn round_trip_restores_params_and_buffers_bit_for_bit() {
        let dir = std::env::temp_dir().join(format!("breakeven-models-io-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("w.safetensors");
        let a = model(1);
        // Move the BatchNorm running statistics away from their initial values.
        let x = Tensor::from_vec(
            (0..2 * 3 * 64).map(|i| (i % 7) as f32).collect::<Vec<_>>(),
            (2, 3, 8, 8),
            &Device::Cpu,
        )
        .unwrap();
        a.forward(&x, Mode::Train).unwrap();
        save(a.as_ref(), &path).unwrap();
        let b = model(2);
        assert_ne!(bits(a.as_ref()), bits(b.as_ref()));
        load(b.as_ref(), &path).unwrap();
        assert_eq!(bits(a.as_ref()), bits(b.as_ref()));
        let y = (a.forward(&x, Mode::Eval).unwrap() - b.forward(&x, Mode::Eval).unwrap()).unwrap();
        assert_eq!(
            y.abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap(),
            0.0
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn mismatches_name_the_offending_key_and_change_nothing() {
        let a = model(1);
        let full: HashMap<String, Tensor> = state_dict(a.as_ref())
            .into_iter()
            .map(|(k, v)| (k, v.as_tensor().copy().unwrap()))
            .collect();
        let origin = Path::new("w.safetensors");
        let b = model(2);
        let before = bits(b.as_ref());

        let mut missing = full.clone();
        missing.remove("layer2.0.bn1.running_var");
        let err = load_tensors(b.as_ref(), missing, origin)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("missing key `layer2.0.bn1.running_var`") && err.contains("w.safetensors"),
            "{err}"
        );

        let mut extra = full.clone();
        extra.insert(
            "layer9.conv.weight".into(),
            Tensor::zeros(3, DType::F32, &Device::Cpu).unwrap(),
        );
        let err = load_tensors(b.as_ref(), extra, origin)
            .unwrap_err()
            .to_string();
        assert!(err.contains("unexpected key `layer9.conv.weight`"), "{err}");

        let mut wrong = full;
        wrong.insert(
            "linear.weight".into(),
            Tensor::zeros((5, 7), DType::F32, &Device::Cpu).unwrap(),
        );
        let err = load_tensors(b.as_ref(), wrong, origin)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("key `linear.weight` has shape [5, 7], expected [5, 8]"),
            "{err}"
        );

        assert_eq!(bits(b.as_ref()), before);
        let err = load(b.as_ref(), Path::new("/nonexistent/w.safetensors"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("/nonexistent/w.safetensors"), "{err}");
    }
}
