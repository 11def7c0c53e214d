//! The typed model configuration and the one constructor every crate calls.

use candle_core::{DType, Device};
use serde::{Deserialize, Serialize};

use crate::arch::fc::{Activation, FcNet};
use crate::arch::simple_cnn::SimpleCnn;
use crate::error::ModelError;
use crate::store::ParamStore;
use crate::Model;

/// Which architecture, with its width/depth knobs. Serialized with an `arch` tag, e.g.
/// `{ arch = "simple_cnn", width_mult = 0.5 }` or `{ arch = "fc_tanh", widths = [200, 200] }`.
/// Every knob has the paper's value as default, so `{ arch = "resnet32" }` is the full model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "arch", rename_all = "snake_case", deny_unknown_fields)]
pub enum ModelSpec {
    /// SimpleCNN (SCIENCE.md §6); all widths scaled by `width_mult` (default 1).
    SimpleCnn {
        #[serde(default = "one")]
        width_mult: f64,
    },
    /// Fully connected, tanh hidden layers (default two of 200).
    FcTanh {
        #[serde(default = "fc_widths")]
        widths: Vec<usize>,
    },
    /// Fully connected, ReLU hidden layers (default two of 200).
    FcRelu {
        #[serde(default = "fc_widths")]
        widths: Vec<usize>,
    },
}

fn one() -> f64 {
    1.0
}

fn fc_widths() -> Vec<usize> {
    vec![200, 200]
}

impl ModelSpec {
    /// The architecture's short name (the `arch` tag).
    pub fn arch(&self) -> &'static str {
        match self {
            ModelSpec::SimpleCnn { .. } => "simple_cnn",
            ModelSpec::FcTanh { .. } => "fc_tanh",
            ModelSpec::FcRelu { .. } => "fc_relu",
        }
    }
}

/// Builds the model of `spec` for inputs of shape (C, H, W) and `classes` outputs, with every
/// initial value drawn from `ChaCha8Rng::seed_from_u64(seed)`: the same arguments give
/// bit-identical weights.
pub fn build(
    spec: &ModelSpec,
    input: (usize, usize, usize),
    classes: usize,
    dtype: DType,
    device: &Device,
    seed: u64,
) -> Result<Box<dyn Model>, ModelError> {
    if classes == 0 || input.0 == 0 || input.1 == 0 || input.2 == 0 {
        return Err(ModelError::InvalidInput {
            arch: spec.arch(),
            input,
            reason: format!("need positive C, H, W and classes, got {classes} classes"),
        });
    }
    let store = ParamStore::new(seed, dtype, device);
    tracing::debug!(arch = spec.arch(), ?input, classes, seed, "building model");
    Ok(match spec {
        ModelSpec::SimpleCnn { width_mult } => {
            Box::new(SimpleCnn::new(store, *width_mult, input, classes)?)
        }
        ModelSpec::FcTanh { widths } => {
            Box::new(FcNet::new(store, widths, Activation::Tanh, input, classes)?)
        }
        ModelSpec::FcRelu { widths } => {
            Box::new(FcNet::new(store, widths, Activation::Relu, input, classes)?)
        }
    })
}
