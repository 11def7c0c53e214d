//! Wide ResNet WRN-d-k, CIFAR definition (Zagoruyko & Komodakis 2016).
//!
//! Reference: xternalz/WideResNet-pytorch `wideresnet.py`, `WideResNet(depth, classes,
//! widen)`: `conv1` 3×3 16, three `NetworkBlock`s `block{1,2,3}.layer.{i}` of n = (d−4)/6
//! pre-activation `BasicBlock`s (bn1 → ReLU → conv1 → bn2 → ReLU → conv2, 16k/32k/64k
//! channels, strides 1/2/2; where in ≠ out the shortcut is `convShortcut` 1×1 applied to the
//! activated input), final `bn1` → ReLU → average pool → `fc`. Dropout 0 (the default).
//! WRN-28-10: 36,479,194 and WRN-16-4: 2,748,890 parameters for 10 classes (recounted by
//! reference/models.py). Init as the reference: conv N(0, 2/(k²·out)) (Kaiming normal,
//! fan_out), BN 1/0, `fc` weight PyTorch default and bias zero. The reference pools 8×8; the
//! pool here is global (the same on 32×32 inputs).

use candle_core::{Result, Tensor, Var};

use crate::error::ModelError;
use crate::init::{Fan, Init};
use crate::layers::{BatchNorm, Conv2d, ConvShape, Linear};
use crate::store::{key, ParamStore};
use crate::{ops, Mode, Model, Param};

const CONV_INIT: Init = Init::KaimingNormal(Fan::Out);

struct Block {
    bn1: BatchNorm,
    conv1: Conv2d,
    bn2: BatchNorm,
    conv2: Conv2d,
    conv_shortcut: Option<Conv2d>,
}

impl Block {
    fn new(
        store: &mut ParamStore,
        prefix: &str,
        (inp, out, stride): (usize, usize, usize),
    ) -> Result<Self> {
        let bn1 = BatchNorm::new(store, &key(prefix, "bn1"), inp)?;
        let conv1 = Conv2d::new(
            store,
            &key(prefix, "conv1"),
            ConvShape::same(inp, out, 3).stride(stride),
            CONV_INIT,
            None,
        )?;
        let bn2 = BatchNorm::new(store, &key(prefix, "bn2"), out)?;
        let conv2 = Conv2d::new(
            store,
            &key(prefix, "conv2"),
            ConvShape::same(out, out, 3),
            CONV_INIT,
            None,
        )?;
        let conv_shortcut = if inp == out {
            None
        } else {
            let shape = ConvShape::same(inp, out, 1).stride(stride);
            Some(Conv2d::new(
                store,
                &key(prefix, "convShortcut"),
                shape,
                CONV_INIT,
                None,
            )?)
        };
        Ok(Self {
            bn1,
            conv1,
            bn2,
            conv2,
            conv_shortcut,
        })
    }

    fn forward(&self, x: &Tensor, mode: Mode) -> Result<Tensor> {
        let act = self.bn1.forward_relu(x, mode)?;
        let out = self.conv1.forward(&act)?;
        // As the reference: the projection sees the activated input, identity the raw one.
        let shortcut = match &self.conv_shortcut {
            Some(conv) => conv.forward(&act)?,
            None => x.clone(),
        };
        // conv2(…) + shortcut in one op: the sum is all the next block keeps (the same bits as
        // the two ops; IEEE addition commutes).
        self.conv2
            .forward_add(&self.bn2.forward_relu(&out, mode)?, &shortcut)
    }
}

pub struct WideResNet {
    conv1: Conv2d,
    blocks: Vec<Block>,
    bn1: BatchNorm,
    fc: Linear,
    params: Vec<Param>,
    buffers: Vec<(String, Var)>,
}

impl WideResNet {
    pub fn new(
        mut store: ParamStore,
        depth: usize,
        widen: usize,
        (c, _, _): (usize, usize, usize),
        classes: usize,
    ) -> std::result::Result<Self, ModelError> {
        if depth < 10 || !(depth - 4).is_multiple_of(6) || widen == 0 {
            return Err(ModelError::InvalidSpec {
                arch: "wrn",
                reason: format!(
                    "depth must be 6n+4 with n ≥ 1 and widen ≥ 1, got depth {depth}, widen {widen}"
                ),
            });
        }
        let n = (depth - 4) / 6;
        let channels = [16, 16 * widen, 32 * widen, 64 * widen];
        let conv1 = Conv2d::new(
            &mut store,
            "conv1",
            ConvShape::same(c, channels[0], 3),
            CONV_INIT,
            None,
        )?;
        let mut blocks = Vec::new();
        for s in 0..3 {
            let stride = if s == 0 { 1 } else { 2 };
            for i in 0..n {
                let (inp, st) = if i == 0 {
                    (channels[s], stride)
                } else {
                    (channels[s + 1], 1)
                };
                blocks.push(Block::new(
                    &mut store,
                    &format!("block{}.layer.{i}", s + 1),
                    (inp, channels[s + 1], st),
                )?);
            }
        }
        let bn1 = BatchNorm::new(&mut store, "bn1", channels[3])?;
        let fc = Linear::new(
            &mut store,
            "fc",
            (channels[3], classes),
            Init::TorchDefaultWeight,
            Some(Init::Zeros),
        )?;
        let (params, buffers) = store.finish();
        Ok(Self {
            conv1,
            blocks,
            bn1,
            fc,
            params,
            buffers,
        })
    }
}

impl Model for WideResNet {
    fn forward(&self, x: &Tensor, mode: Mode) -> Result<Tensor> {
        let mut x = self.conv1.forward(x)?;
        for block in &self.blocks {
            x = block.forward(&x, mode)?;
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
    fn parameter_counts_and_names_match_the_reference() {
        for (depth, widen, count) in [(16, 4, 2_748_890), (28, 10, 36_479_194)] {
            let s = setup(&ModelSpec::Wrn { depth, widen }, (3, 32, 32), 10, 1, 0);
            assert_eq!(param_count(s.model.as_ref()), count, "WRN-{depth}-{widen}");
        }
        let s = setup(
            &ModelSpec::Wrn {
                depth: 16,
                widen: 4,
            },
            (3, 32, 32),
            10,
            1,
            0,
        );
        let n = names(s.model.as_ref());
        assert_eq!(
            &n[..3],
            [
                "conv1.weight",
                "block1.layer.0.bn1.weight",
                "block1.layer.0.bn1.bias"
            ]
        );
        assert!(n.contains(&"block2.layer.0.convShortcut.weight".to_string()));
        assert!(!n.contains(&"block2.layer.1.convShortcut.weight".to_string()));
        assert_eq!(
            &n[n.len() - 4..],
            ["bn1.weight", "bn1.bias", "fc.weight", "fc.bias"]
        );
    }

    #[test]
    fn gradient_and_hvp_match_finite_differences() {
        let s = setup(
            &ModelSpec::Wrn {
                depth: 10,
                widen: 1,
            },
            (3, 8, 8),
            3,
            3,
            41,
        );
        s.check_gradient(40, 42);
        s.check_hvp(43);
    }

    #[test]
    fn construction_is_deterministic() {
        check_deterministic(
            &ModelSpec::Wrn {
                depth: 10,
                widen: 2,
            },
            (3, 8, 8),
            10,
        );
    }
}
