//! VGG-11 with BatchNorm, CIFAR form.
//!
//! Reference: kuangliu/pytorch-cifar `models/vgg.py`, `VGG('VGG11')`: per entry of
//! [64,M,128,M,256,256,M,512,512,M,512,512,M] a `Conv2d(3×3, padding 1, bias)` +
//! `BatchNorm2d` + ReLU, or `MaxPool2d(2)`, all in `features` (keys `features.{i}.*`, the
//! ReLU and pool taking an index each), then `classifier = Linear(512, K)`.
//! 9,231,114 parameters for 10 classes (recounted by reference/models.py). PyTorch's
//! default initialization, as that code does not override it. `width` is the first stage's
//! channel count (64 in the reference); the stages are width × [1, 2, 4, 4, 8, 8, 8, 8].

use candle_core::{Result, Tensor, Var};

use crate::error::ModelError;
use crate::init::Init;
use crate::layers::{BatchNorm, Conv2d, ConvShape, Linear};
use crate::store::{key, ParamStore};
use crate::{ops, Mode, Model, Param};

/// One entry of the feature stack.
enum Stage {
    Conv(Conv2d, BatchNorm),
    Pool,
}

pub struct Vgg11Bn {
    features: Vec<Stage>,
    classifier: Linear,
    params: Vec<Param>,
    buffers: Vec<(String, Var)>,
}

/// Channel multipliers of VGG-11 (0 = max-pool).
const CFG: [usize; 13] = [1, 0, 2, 0, 4, 4, 0, 8, 8, 0, 8, 8, 0];

impl Vgg11Bn {
    pub fn new(
        mut store: ParamStore,
        width: usize,
        (c, h, w): (usize, usize, usize),
        classes: usize,
    ) -> std::result::Result<Self, ModelError> {
        if width == 0 {
            return Err(ModelError::InvalidSpec {
                arch: "vgg11_bn",
                reason: "width must be positive".into(),
            });
        }
        if h < 32 || w < 32 {
            return Err(ModelError::InvalidInput {
                arch: "vgg11_bn",
                input: (c, h, w),
                reason: "five 2×2 max-pools need H, W ≥ 32".into(),
            });
        }
        let mut features = Vec::new();
        let (mut inp, mut index) = (c, 0);
        for mult in CFG {
            if mult == 0 {
                features.push(Stage::Pool);
                index += 1;
                continue;
            }
            let out = mult * width;
            let prefix = format!("features.{index}");
            let conv = Conv2d::new(
                &mut store,
                &prefix,
                ConvShape::same(inp, out, 3),
                Init::TorchDefaultWeight,
                Some(Init::TorchDefaultBias { fan_in: inp * 9 }),
            )?;
            let bn = BatchNorm::new(&mut store, &format!("features.{}", index + 1), out)?;
            features.push(Stage::Conv(conv, bn));
            (inp, index) = (out, index + 3);
        }
        let flat = inp * (h / 32) * (w / 32);
        let classifier =
            Linear::torch_default(&mut store, &key("", "classifier"), (flat, classes))?;
        let (params, buffers) = store.finish();
        Ok(Self {
            features,
            classifier,
            params,
            buffers,
        })
    }
}

impl Model for Vgg11Bn {
    fn forward(&self, x: &Tensor, mode: Mode) -> Result<Tensor> {
        let mut x = x.clone();
        for stage in &self.features {
            x = match stage {
                Stage::Conv(conv, bn) => bn.forward_relu(&conv.forward(&x)?, mode)?,
                Stage::Pool => ops::max_pool2d(&x, 2)?,
            };
        }
        self.classifier.forward(&x.flatten_from(1)?)
    }

    fn params(&self) -> &[Param] {
        &self.params
    }

    fn buffers(&self) -> Vec<(String, Var)> {
        self.buffers.clone()
    }
}

#[cfg(test)]
mod tests {
    use crate::gradcheck::{check_deterministic, names, param_count, setup};
    use crate::ModelSpec;

    #[test]
    fn parameter_count_and_names_match_the_reference() {
        let s = setup(&ModelSpec::Vgg11Bn { width: 64 }, (3, 32, 32), 10, 1, 0);
        assert_eq!(param_count(s.model.as_ref()), 9_231_114);
        let n = names(s.model.as_ref());
        assert_eq!(
            &n[..6],
            [
                "features.0.weight",
                "features.0.bias",
                "features.1.weight",
                "features.1.bias",
                "features.4.weight",
                "features.4.bias"
            ]
        );
        assert_eq!(
            &n[n.len() - 4..],
            [
                "features.26.weight",
                "features.26.bias",
                "classifier.weight",
                "classifier.bias"
            ]
        );
        assert_eq!(s.model.buffers().len(), 8 * 3);
    }

    #[test]
    fn gradient_and_hvp_match_finite_differences() {
        let s = setup(&ModelSpec::Vgg11Bn { width: 1 }, (2, 32, 32), 3, 3, 21);
        s.check_gradient(30, 22);
        s.check_hvp(23);
    }

    #[test]
    fn construction_is_deterministic() {
        check_deterministic(&ModelSpec::Vgg11Bn { width: 2 }, (3, 32, 32), 10);
    }
}
