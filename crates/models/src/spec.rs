//! The typed model configuration and the one constructor every crate calls.

use candle_core::{DType, Device};
use serde::{Deserialize, Serialize};

use crate::arch::densenet::DenseNetBc;
use crate::arch::fc::{Activation, FcNet};
use crate::arch::resnet::ResNet;
use crate::arch::simple_cnn::SimpleCnn;
use crate::arch::vgg::Vgg11Bn;
use crate::arch::wrn::WideResNet;
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
    /// VGG-11 with BatchNorm; `width` = first-stage channels (default 64).
    Vgg11Bn {
        #[serde(default = "w64")]
        width: usize,
    },
    /// ResNet-32, CIFAR form, option-A shortcuts; `width` = stem channels (default 16).
    #[serde(rename = "resnet32")]
    ResNet32 {
        #[serde(default = "w16")]
        width: usize,
    },
    /// ResNet-18, CIFAR form; `width` = stem channels (default 64).
    #[serde(rename = "resnet18")]
    ResNet18 {
        #[serde(default = "w64")]
        width: usize,
    },
    /// Wide ResNet WRN-depth-widen (default WRN-28-10).
    Wrn {
        #[serde(default = "d28")]
        depth: usize,
        #[serde(default = "k10")]
        widen: usize,
    },
    /// DenseNet-BC (default depth 100, growth 12).
    #[serde(rename = "densenet_bc")]
    DenseNetBc {
        #[serde(default = "d100")]
        depth: usize,
        #[serde(default = "k12")]
        growth: usize,
    },
}

fn one() -> f64 {
    1.0
}

fn fc_widths() -> Vec<usize> {
    vec![200, 200]
}

fn w16() -> usize {
    16
}

fn w64() -> usize {
    64
}

fn d28() -> usize {
    28
}

fn k10() -> usize {
    10
}

fn d100() -> usize {
    100
}

fn k12() -> usize {
    12
}

impl ModelSpec {
    /// The architecture's short name (the `arch` tag).
    pub fn arch(&self) -> &'static str {
        match self {
            ModelSpec::SimpleCnn { .. } => "simple_cnn",
            ModelSpec::FcTanh { .. } => "fc_tanh",
            ModelSpec::FcRelu { .. } => "fc_relu",
            ModelSpec::Vgg11Bn { .. } => "vgg11_bn",
            ModelSpec::ResNet32 { .. } => "resnet32",
            ModelSpec::ResNet18 { .. } => "resnet18",
            ModelSpec::Wrn { .. } => "wrn",
            ModelSpec::DenseNetBc { .. } => "densenet_bc",
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
        ModelSpec::Vgg11Bn { width } => Box::new(Vgg11Bn::new(store, *width, input, classes)?),
        ModelSpec::ResNet32 { width } => Box::new(ResNet::resnet32(store, *width, input, classes)?),
        ModelSpec::ResNet18 { width } => Box::new(ResNet::resnet18(store, *width, input, classes)?),
        ModelSpec::Wrn { depth, widen } => {
            Box::new(WideResNet::new(store, *depth, *widen, input, classes)?)
        }
        ModelSpec::DenseNetBc { depth, growth } => {
            Box::new(DenseNetBc::new(store, *depth, *growth, input, classes)?)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configs_parse_with_defaults_and_reject_unknown_keys() {
        let spec: ModelSpec = toml::from_str("arch = \"resnet32\"").unwrap();
        assert_eq!(spec, ModelSpec::ResNet32 { width: 16 });
        let spec: ModelSpec = toml::from_str("arch = \"wrn\"\ndepth = 16\nwiden = 4").unwrap();
        assert_eq!(
            spec,
            ModelSpec::Wrn {
                depth: 16,
                widen: 4
            }
        );
        let spec: ModelSpec = serde_json::from_str(r#"{"arch":"fc_tanh"}"#).unwrap();
        assert_eq!(
            spec,
            ModelSpec::FcTanh {
                widths: vec![200, 200]
            }
        );
        for spec in [
            ModelSpec::SimpleCnn { width_mult: 0.5 },
            ModelSpec::DenseNetBc {
                depth: 40,
                growth: 12,
            },
            ModelSpec::Vgg11Bn { width: 8 },
            ModelSpec::ResNet18 { width: 8 },
            ModelSpec::FcRelu { widths: vec![3] },
        ] {
            let text = serde_json::to_string(&spec).unwrap();
            assert!(
                text.contains(&format!("\"arch\":\"{}\"", spec.arch())),
                "{text}"
            );
            assert_eq!(serde_json::from_str::<ModelSpec>(&text).unwrap(), spec);
        }
        let err = toml::from_str::<ModelSpec>("arch = \"resnet32\"\nwidht = 8").unwrap_err();
        assert!(err.to_string().contains("widht"), "{err}");
        assert!(toml::from_str::<ModelSpec>("arch = \"resnet50\"").is_err());
    }

    #[test]
    fn bad_configs_and_inputs_are_typed_errors() {
        let b = |spec: ModelSpec, input| {
            build(&spec, input, 10, DType::F32, &Device::Cpu, 0)
                .err()
                .map(|e| e.to_string())
        };
        assert!(b(
            ModelSpec::Wrn {
                depth: 27,
                widen: 1
            },
            (3, 32, 32)
        )
        .unwrap()
        .contains("6n+4"));
        assert!(b(
            ModelSpec::DenseNetBc {
                depth: 99,
                growth: 12
            },
            (3, 32, 32)
        )
        .unwrap()
        .contains("6n+4"));
        assert!(b(ModelSpec::Vgg11Bn { width: 4 }, (3, 16, 16))
            .unwrap()
            .contains("H, W ≥ 32"));
        assert!(b(ModelSpec::SimpleCnn { width_mult: 1.0 }, (3, 8, 8))
            .unwrap()
            .contains("(3, 8, 8)"));
        assert!(b(ModelSpec::SimpleCnn { width_mult: -1.0 }, (3, 32, 32))
            .unwrap()
            .contains("width_mult"));
        assert!(b(ModelSpec::ResNet32 { width: 3 }, (3, 32, 32))
            .unwrap()
            .contains("even"));
        assert!(b(ModelSpec::FcRelu { widths: vec![0] }, (1, 2, 2)).is_some());
        assert!(
            b(ModelSpec::FcRelu { widths: vec![] }, (1, 2, 2)).is_none(),
            "no hidden layer: logistic regression"
        );
    }

    #[test]
    fn every_architecture_maps_an_image_batch_to_logits_in_every_mode() {
        let specs = [
            (ModelSpec::SimpleCnn { width_mult: 0.125 }, (3, 12, 12)),
            (ModelSpec::FcTanh { widths: vec![4] }, (3, 4, 4)),
            (ModelSpec::Vgg11Bn { width: 1 }, (3, 32, 32)),
            (ModelSpec::ResNet32 { width: 2 }, (3, 8, 8)),
            (ModelSpec::ResNet18 { width: 2 }, (3, 8, 8)),
            (
                ModelSpec::Wrn {
                    depth: 10,
                    widen: 1,
                },
                (3, 8, 8),
            ),
            (
                ModelSpec::DenseNetBc {
                    depth: 10,
                    growth: 2,
                },
                (3, 8, 8),
            ),
        ];
        for (spec, (c, h, w)) in specs {
            let model = build(&spec, (c, h, w), 7, DType::F32, &Device::Cpu, 1).unwrap();
            let x = candle_core::Tensor::ones((2, c, h, w), DType::F32, &Device::Cpu).unwrap();
            for mode in [
                crate::Mode::Train,
                crate::Mode::BatchStats,
                crate::Mode::Eval,
            ] {
                assert_eq!(
                    model.forward(&x, mode).unwrap().dims(),
                    &[2, 7],
                    "{spec:?} {mode:?}"
                );
            }
        }
    }
}
