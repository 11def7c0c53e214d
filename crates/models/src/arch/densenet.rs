//! DenseNet-BC (Huang et al. 2017) for CIFAR: bottleneck layers and compression 0.5.
//!
//! Reference: andreasveit/densenet-pytorch `densenet.py`, `DenseNet3(depth, classes,
//! growth_rate, reduction=0.5, bottleneck=True)`: `conv1` 3×3 to 2k channels, three
//! `block{1,2,3}.layer.{i}` of n = (depth−4)/6 `BottleneckBlock`s (bn1 → ReLU → conv1 1×1 to
//! 4k → bn2 → ReLU → conv2 3×3 to k, output concatenated to the input), `trans{1,2}` (bn1 →
//! ReLU → conv1 1×1 to ⌊c/2⌋ → avg-pool 2), final `bn1` → ReLU → average pool → `fc`.
//! DenseNet-BC-100 k=12: 769,162 parameters for 10 classes (recounted by reference/models.py).
//! Init as the reference: conv N(0, 2/(k²·out)), BN 1/0, `fc` weight PyTorch default, bias 0.
//! The reference's dropout of p = 1e-7 (a cuDNN workaround) is omitted; its 8×8 average pool
//! is global here (the same on 32×32 inputs).

use candle_core::{Result, Tensor, Var};

use crate::error::ModelError;
use crate::init::{Fan, Init};
use crate::layers::{BatchNorm, Conv2d, ConvShape, Linear};
use crate::store::{key, ParamStore};
use crate::{ops, Mode, Model, Param};

const CONV_INIT: Init = Init::KaimingNormal(Fan::Out);

/// BN → ReLU → conv, the unit every layer of the network is made of.
struct BnReluConv {
    bn: BatchNorm,
    conv: Conv2d,
}

impl BnReluConv {
    fn new(store: &mut ParamStore, (bn, conv): (String, String), shape: ConvShape) -> Result<Self> {
        Ok(Self {
            bn: BatchNorm::new(store, &bn, shape.inp)?,
            conv: Conv2d::new(store, &conv, shape, CONV_INIT, None)?,
        })
    }

    fn forward(&self, x: &Tensor, mode: Mode) -> Result<Tensor> {
        self.conv.forward(&self.bn.forward_relu(x, mode)?)
    }
}

enum Layer {
    /// Bottleneck: 1×1 to 4k then 3×3 to k, concatenated to the input.
    Bottleneck(BnReluConv, BnReluConv),
    /// Transition: 1×1 compression then 2×2 average pool.
    Transition(BnReluConv),
}

pub struct DenseNetBc {
    conv1: Conv2d,
    layers: Vec<Layer>,
    bn1: BatchNorm,
    fc: Linear,
    params: Vec<Param>,
    buffers: Vec<(String, Var)>,
}

impl DenseNetBc {
    pub fn new(
        mut store: ParamStore,
        depth: usize,
        growth: usize,
        (c, h, w): (usize, usize, usize),
        classes: usize,
    ) -> std::result::Result<Self, ModelError> {
        if depth < 10 || !(depth - 4).is_multiple_of(6) || growth == 0 {
            return Err(ModelError::InvalidSpec {
                arch: "densenet_bc",
                reason: format!("depth must be 6n+4 with n ≥ 1 and growth ≥ 1, got depth {depth}, growth {growth}"),
            });
        }
        if h < 4 || w < 4 {
            return Err(ModelError::InvalidInput {
                arch: "densenet_bc",
                input: (c, h, w),
                reason: "two 2×2 average pools need H, W ≥ 4".into(),
            });
        }
        let n = (depth - 4) / 6;
        let names = |p: &str| (key(p, "bn1"), key(p, "conv1"));
        let mut planes = 2 * growth;
        let conv1 = Conv2d::new(
            &mut store,
            "conv1",
            ConvShape::same(c, planes, 3),
            CONV_INIT,
            None,
        )?;
        let mut layers = Vec::new();
        for b in 1..=3 {
            for i in 0..n {
                let p = format!("block{b}.layer.{i}");
                let inp = planes + i * growth;
                let a =
                    BnReluConv::new(&mut store, names(&p), ConvShape::same(inp, 4 * growth, 1))?;
                let bc = BnReluConv::new(
                    &mut store,
                    (key(&p, "bn2"), key(&p, "conv2")),
                    ConvShape::same(4 * growth, growth, 3),
                )?;
                layers.push(Layer::Bottleneck(a, bc));
            }
            planes += n * growth;
            if b < 3 {
                let out = planes / 2;
                layers.push(Layer::Transition(BnReluConv::new(
                    &mut store,
                    names(&format!("trans{b}")),
                    ConvShape::same(planes, out, 1),
                )?));
                planes = out;
            }
        }
        let bn1 = BatchNorm::new(&mut store, "bn1", planes)?;
        let fc = Linear::new(
            &mut store,
            "fc",
            (planes, classes),
            Init::TorchDefaultWeight,
            Some(Init::Zeros),
        )?;
        let (params, buffers) = store.finish();
        Ok(Self {
            conv1,
            layers,
            bn1,
            fc,
            params,
            buffers,
        })
    }
}

impl Model for DenseNetBc {
    fn forward(&self, x: &Tensor, mode: Mode) -> Result<Tensor> {
        let mut x = self.conv1.forward(x)?;
        for layer in &self.layers {
            x = match layer {
                Layer::Bottleneck(a, b) => {
                    Tensor::cat(&[&x, &b.forward(&a.forward(&x, mode)?, mode)?], 1)?
                }
                Layer::Transition(t) => ops::avg_pool2d(&t.forward(&x, mode)?, 2)?,
            };
        }
        let x = self.bn1.forward_relu(&x, mode)?;
        self.fc.forward(&ops::global_avg_pool(&x)?)
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
        let s = setup(
            &ModelSpec::DenseNetBc {
                depth: 100,
                growth: 12,
            },
            (3, 32, 32),
            10,
            1,
            0,
        );
        assert_eq!(param_count(s.model.as_ref()), 769_162);
        let n = names(s.model.as_ref());
        assert_eq!(
            &n[..4],
            [
                "conv1.weight",
                "block1.layer.0.bn1.weight",
                "block1.layer.0.bn1.bias",
                "block1.layer.0.conv1.weight"
            ]
        );
        assert!(n.contains(&"trans2.conv1.weight".to_string()));
        assert!(n.contains(&"block3.layer.15.conv2.weight".to_string()));
        assert_eq!(
            &n[n.len() - 4..],
            ["bn1.weight", "bn1.bias", "fc.weight", "fc.bias"]
        );
    }

    #[test]
    fn gradient_and_hvp_match_finite_differences() {
        let s = setup(
            &ModelSpec::DenseNetBc {
                depth: 10,
                growth: 2,
            },
            (3, 8, 8),
            3,
            3,
            51,
        );
        s.check_gradient(40, 52);
        s.check_hvp(53);
    }

    #[test]
    fn construction_is_deterministic() {
        check_deterministic(
            &ModelSpec::DenseNetBc {
                depth: 16,
                growth: 4,
            },
            (3, 8, 8),
            10,
        );
    }
}
