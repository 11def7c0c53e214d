//! Convolution followed by ReLU as one op: `y = max(conv(x, w) + b, 0)`.
//!
//! Candle keeps every operand of an op until the backward pass, so `relu(conv(x))` keeps the
//! convolution's output alive as the ReLU's input beside the ReLU's output, which the next layer
//! keeps: two activations per layer where PyTorch, whose ReLU saves only its result, keeps one.
//! Here the ReLU runs on the convolution's output inside the op, which keeps x, w, b and hands
//! its output on. The backward masks `dy` by `y > 0` (the same set as `conv(x) + b > 0`) and then
//! takes the convolution's gradients, all through differentiable ops, so every order of
//! differentiation works as for the two ops, with the same numbers.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor};

use super::conv_bias::conv_bias_grads;
use super::conv_ops::{by_dtype, Conv};
use super::relu::{relu_cpu, relu_grad};

/// y = max(conv(x, w) + b, 0); the bias, when there is one, is the third operand.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConvRelu {
    pub stride: usize,
    pub pad: usize,
}

impl ConvRelu {
    fn conv(&self) -> Conv {
        Conv {
            stride: self.stride,
            pad: self.pad,
        }
    }

    fn fwd(
        &self,
        x: (&CpuStorage, &Layout),
        w: (&CpuStorage, &Layout),
        b: Option<(&CpuStorage, &Layout)>,
    ) -> Result<(CpuStorage, Shape)> {
        let conv = self.conv();
        let (y, shape) =
            by_dtype!("breakeven-conv2d-relu", x.0.dtype(), T => conv.fwd::<T>(x, w, b))?;
        relu_cpu(&y, &Layout::contiguous(&shape))
    }

    /// (dx, dw, db) for output gradient `dy` of output `y`.
    fn grads(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: Option<&Tensor>,
        y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        conv_bias_grads(&self.conv(), x, w, b, &relu_grad(dy, y)?)
    }
}

impl CustomOp2 for ConvRelu {
    fn name(&self) -> &'static str {
        "breakeven-conv2d-relu"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        self.fwd((s1, l1), (s2, l2), None)
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (dx, dw, _) = self.grads(x, w, None, y, dy)?;
        Ok((dx, dw))
    }
}

impl CustomOp3 for ConvRelu {
    fn name(&self) -> &'static str {
        "breakeven-conv2d-bias-relu"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        self.fwd((s1, l1), (s2, l2), Some((s3, l3)))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: &Tensor,
        y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        self.grads(x, w, Some(b), y, dy)
    }
}
