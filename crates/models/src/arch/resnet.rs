//! Residual networks of the CIFAR papers: ResNet-32 (He et al. 2016, CIFAR form, option A
//! shortcuts) and ResNet-18 (CIFAR form with a 3×3 stem and 1×1-conv shortcuts).
//!
//! * ResNet-32: akamaster/pytorch_resnet_cifar10 `resnet.py`, `resnet32()`: stem
//!   `conv1` 3×3 16 + `bn1`, stages `layer1..3` of 5 `BasicBlock`s (16, 32, 64 channels,
//!   strides 1, 2, 2), option-A shortcut `F.pad(x[:, :, ::2, ::2], (0,0,0,0, planes//4,
//!   planes//4))` (parameter-free), global average pool, `linear`. 464,154 parameters for 10
//!   classes. Init as its `_weights_init`: `kaiming_normal_` (fan_in, ReLU gain) on conv and
//!   linear weights, PyTorch's default linear bias, BN weight 1 bias 0. `width` = stem
//!   channels (16 in the reference; stages width × [1, 2, 4]).
//! * ResNet-18: kuangliu/pytorch-cifar `models/resnet.py`, `ResNet18()`: `conv1` 3×3 64 +
//!   `bn1` (no max-pool), `layer1..4` of 2 `BasicBlock`s (64..512, strides 1, 2, 2, 2),
//!   shortcut `Conv2d 1×1` + `BatchNorm2d` (`shortcut.0`, `shortcut.1`) where the shape
//!   changes, `avg_pool2d(4)`, `linear`. 11,173,962 parameters for 10 classes. PyTorch's
//!   default initialization (the code sets none). The average pool is global here: the same
//!   on 32×32 inputs, and defined on smaller ones. `width` = stem channels (64).

use candle_core::{Result, Tensor, Var};

use crate::error::ModelError;
use crate::init::{Fan, Init};
use crate::layers::{BatchNorm, Conv2d, ConvShape, Linear};
use crate::store::{key, ParamStore};
use crate::{ops, Mode, Model, Param};

/// Which reference the network follows (shortcut form and initialization).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    /// akamaster ResNet-{20,32,...}: option-A shortcuts, Kaiming-normal (fan_in) weights.
    CifarOptionA,
    /// kuangliu ResNet-18: projection shortcuts, PyTorch default init.
    Projection,
}

enum Shortcut {
    Identity,
    /// Subsample by 2 and zero-pad channels `front`/`back` (option A).
    Pad {
        front: usize,
        back: usize,
    },
    Conv(Conv2d, BatchNorm),
}

struct BasicBlock {
    conv1: Conv2d,
    bn1: BatchNorm,
    conv2: Conv2d,
    bn2: BatchNorm,
    shortcut: Shortcut,
}

fn conv_init(variant: Variant) -> Init {
    match variant {
        Variant::CifarOptionA => Init::KaimingNormal(Fan::In),
        Variant::Projection => Init::TorchDefaultWeight,
    }
}

impl BasicBlock {
    fn new(
        store: &mut ParamStore,
        prefix: &str,
        (inp, planes, stride): (usize, usize, usize),
        variant: Variant,
    ) -> Result<Self> {
        let init = conv_init(variant);
        let conv1 = Conv2d::new(
            store,
            &key(prefix, "conv1"),
            ConvShape::same(inp, planes, 3).stride(stride),
            init,
            None,
        )?;
        let bn1 = BatchNorm::new(store, &key(prefix, "bn1"), planes)?;
        let conv2 = Conv2d::new(
            store,
            &key(prefix, "conv2"),
            ConvShape::same(planes, planes, 3),
            init,
            None,
        )?;
        let bn2 = BatchNorm::new(store, &key(prefix, "bn2"), planes)?;
        let shortcut = if stride == 1 && inp == planes {
            Shortcut::Identity
        } else {
            match variant {
                Variant::CifarOptionA => {
                    let front = planes / 4;
                    Shortcut::Pad {
                        front,
                        back: planes.saturating_sub(inp + front),
                    }
                }
                Variant::Projection => {
                    let shape = ConvShape::same(inp, planes, 1).stride(stride);
                    let conv = Conv2d::new(store, &key(prefix, "shortcut.0"), shape, init, None)?;
                    Shortcut::Conv(
                        conv,
                        BatchNorm::new(store, &key(prefix, "shortcut.1"), planes)?,
                    )
                }
            }
        };
        Ok(Self {
            conv1,
            bn1,
            conv2,
            bn2,
            shortcut,
        })
    }

    fn forward(&self, x: &Tensor, mode: Mode) -> Result<Tensor> {
        let out = self.bn1.forward_relu(&self.conv1.forward(x)?, mode)?;
        let short = match &self.shortcut {
            Shortcut::Identity => x.clone(),
            Shortcut::Pad { front, back } => {
                ops::subsample2(x)?.pad_with_zeros(1, *front, *back)?
            }
            Shortcut::Conv(conv, bn) => bn.forward(&conv.forward(x)?, mode)?,
        };
        // relu(bn2(conv2(out)) + short), fused.
        self.bn2
            .forward_add_relu(&self.conv2.forward(&out)?, &short, mode)
    }
}

/// A CIFAR ResNet: stem, stages of basic blocks, global average pool, linear head.
pub struct ResNet {
    conv1: Conv2d,
    bn1: BatchNorm,
    blocks: Vec<BasicBlock>,
    linear: Linear,
    params: Vec<Param>,
    buffers: Vec<(String, Var)>,
}

impl ResNet {
    /// ResNet-32 (akamaster) with `width` stem channels.
    pub fn resnet32(
        store: ParamStore,
        width: usize,
        input: (usize, usize, usize),
        classes: usize,
    ) -> std::result::Result<Self, ModelError> {
        Self::new(
            store,
            Variant::CifarOptionA,
            width,
            &[5, 5, 5],
            input,
            classes,
        )
    }

    /// ResNet-18 (kuangliu) with `width` stem channels.
    pub fn resnet18(
        store: ParamStore,
        width: usize,
        input: (usize, usize, usize),
        classes: usize,
    ) -> std::result::Result<Self, ModelError> {
        Self::new(
            store,
            Variant::Projection,
            width,
            &[2, 2, 2, 2],
            input,
            classes,
        )
    }

    /// Stage `s` has `width·2^s` channels and `blocks[s]` blocks; stages after the first
    /// start with stride 2.
    pub fn new(
        mut store: ParamStore,
        variant: Variant,
        width: usize,
        blocks: &[usize],
        (c, _, _): (usize, usize, usize),
        classes: usize,
    ) -> std::result::Result<Self, ModelError> {
        let arch = match variant {
            Variant::CifarOptionA => "resnet32",
            Variant::Projection => "resnet18",
        };
        if width == 0 || (variant == Variant::CifarOptionA && !width.is_multiple_of(2)) {
            return Err(ModelError::InvalidSpec {
                arch,
                reason: format!("width must be positive (and even for option A), got {width}"),
            });
        }
        let init = conv_init(variant);
        let conv1 = Conv2d::new(
            &mut store,
            "conv1",
            ConvShape::same(c, width, 3),
            init,
            None,
        )?;
        let bn1 = BatchNorm::new(&mut store, "bn1", width)?;
        let mut layers = Vec::new();
        let mut inp = width;
        for (s, &n) in blocks.iter().enumerate() {
            let planes = width << s;
            for b in 0..n {
                let stride = if s > 0 && b == 0 { 2 } else { 1 };
                layers.push(BasicBlock::new(
                    &mut store,
                    &format!("layer{}.{b}", s + 1),
                    (inp, planes, stride),
                    variant,
                )?);
                inp = planes;
            }
        }
        let linear = match variant {
            Variant::CifarOptionA => Linear::new(
                &mut store,
                "linear",
                (inp, classes),
                Init::KaimingNormal(Fan::In),
                Some(Init::TorchDefaultBias { fan_in: inp }),
            )?,
            Variant::Projection => Linear::torch_default(&mut store, "linear", (inp, classes))?,
        };
        let (params, buffers) = store.finish();
        Ok(Self {
            conv1,
            bn1,
            blocks: layers,
            linear,
            params,
            buffers,
        })
    }
}

impl Model for ResNet {
    fn forward(&self, x: &Tensor, mode: Mode) -> Result<Tensor> {
        let mut x = self.bn1.forward_relu(&self.conv1.forward(x)?, mode)?;
        for block in &self.blocks {
            x = block.forward(&x, mode)?;
        }
        self.linear.forward(&ops::global_avg_pool(&x)?)
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
    fn resnet32_parameter_count_and_names_match_the_reference() {
        let s = setup(&ModelSpec::ResNet32 { width: 16 }, (3, 32, 32), 10, 1, 0);
        assert_eq!(param_count(s.model.as_ref()), 464_154);
        let n = names(s.model.as_ref());
        assert_eq!(
            &n[..4],
            [
                "conv1.weight",
                "bn1.weight",
                "bn1.bias",
                "layer1.0.conv1.weight"
            ]
        );
        assert!(n.contains(&"layer3.4.bn2.bias".to_string()));
        assert_eq!(&n[n.len() - 2..], ["linear.weight", "linear.bias"]);
        assert_eq!(s.model.buffers().len(), 31 * 3);
    }

    #[test]
    fn resnet18_parameter_count_and_names_match_the_reference() {
        let s = setup(&ModelSpec::ResNet18 { width: 64 }, (3, 32, 32), 10, 1, 0);
        assert_eq!(param_count(s.model.as_ref()), 11_173_962);
        let n = names(s.model.as_ref());
        assert!(n.contains(&"layer2.0.shortcut.0.weight".to_string()));
        assert!(n.contains(&"layer4.1.bn2.weight".to_string()));
        assert!(!n.contains(&"layer1.0.shortcut.0.weight".to_string()));
    }

    #[test]
    fn resnet32_gradient_and_hvp_match_finite_differences() {
        let s = setup(&ModelSpec::ResNet32 { width: 2 }, (3, 8, 8), 3, 3, 31);
        s.check_gradient(40, 32);
        s.check_hvp(33);
    }

    #[test]
    fn resnet18_gradient_and_hvp_match_finite_differences() {
        let s = setup(&ModelSpec::ResNet18 { width: 2 }, (3, 16, 16), 3, 3, 34);
        s.check_gradient(40, 35);
        s.check_hvp(36);
    }

    #[test]
    fn construction_is_deterministic() {
        check_deterministic(&ModelSpec::ResNet32 { width: 4 }, (3, 8, 8), 10);
        check_deterministic(&ModelSpec::ResNet18 { width: 4 }, (3, 8, 8), 10);
    }
}
