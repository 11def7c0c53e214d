//! 2-D convolution: the public entry points. On CPU (f32, f64) they run the gemm kernels of
//! `conv_cpu.rs` (shifted views of the padded image at stride 1, im2col otherwise) through the custom ops of `conv_ops.rs`, `conv_bias.rs`, `conv_relu.rs` and `conv_residual.rs`, differentiable to any
//! order; on other devices and dtypes they fall back to Candle's own `conv2d`.
//!
//! Why: Candle 0.11.1 computes the input gradient of `conv2d` with its CPU `conv_transpose2d`, a
//! direct loop, which made a SimpleCNN training step 7.3× slower than PyTorch (SCIENCE.md §7).
//! Candle's own backward also fails with a shape error on stride > 1 when height and width
//! round differently (it derives `output_padding` from the height only); ours does not.

use candle_core::{bail, DType, Result, Tensor};

use super::conv_bias::ConvBias;
use super::conv_ops::{Conv, InputGrad, WeightGrad};
use super::conv_relu::ConvRelu;
use super::conv_residual::ConvResidual;
use super::conv_stash::{GradSlot, Stashing};

/// `x`: N × C_in × H × W, `w`: C_out × C_in × kH × kW (PyTorch layout), optional bias C_out.
/// Same semantics as `torch.nn.functional.conv2d(x, w, b, stride, padding)` with dilation 1, groups 1.
/// Differentiable to any order on CPU (f32, f64), the bias fused into the kernel; elsewhere
/// Candle's `conv2d` plus a broadcast add.
pub fn conv2d(
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    stride: usize,
    padding: usize,
) -> Result<Tensor> {
    if stride == 0 {
        bail!(
            "conv2d: stride must be at least 1, got 0 (input {:?}, weight {:?})",
            x.shape(),
            w.shape()
        )
    }
    if uses_cpu_kernels(x, w) && b.is_none_or(|b| b.dtype() == x.dtype()) {
        let (x, w) = (x.contiguous()?, w.contiguous()?);
        let (stride, pad) = (stride, padding);
        return match b {
            Some(b) => x.apply_op3(&w, &b.contiguous()?, ConvBias { stride, pad }),
            None => x.apply_op2(&w, Conv { stride, pad }),
        };
    }
    let y = x.conv2d(w, padding, stride, 1, 1)?;
    match b {
        Some(b) => y.broadcast_add(&b.reshape((1, (), 1, 1))?),
        None => Ok(y),
    }
}

/// `relu(conv2d(x, w, b, stride, padding))` as one op that keeps no pre-activation tensor alive
/// for the backward pass (`conv_relu.rs`). Same numbers as the two ops; Candle's convolution
/// and ReLU where the CPU kernels do not run.
pub fn conv2d_relu(
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    stride: usize,
    padding: usize,
) -> Result<Tensor> {
    if stride > 0 && uses_cpu_kernels(x, w) && b.is_none_or(|b| b.dtype() == x.dtype()) {
        let (x, w) = (x.contiguous()?, w.contiguous()?);
        let op = ConvRelu {
            stride,
            pad: padding,
        };
        return match b {
            Some(b) => x.apply_op3(&w, &b.contiguous()?, op),
            None => x.apply_op2(&w, op),
        };
    }
    super::relu(&conv2d(x, w, b, stride, padding)?)
}

/// `conv2d(x, w, None, stride, padding) + r` as one op that keeps no separate convolution
/// output alive for the backward pass (`conv_residual.rs`): a residual block's end. Same
/// numbers as the two ops; Candle's convolution and addition where the CPU kernels do not run.
pub fn conv2d_add(
    x: &Tensor,
    w: &Tensor,
    r: &Tensor,
    stride: usize,
    padding: usize,
) -> Result<Tensor> {
    if stride > 0 && uses_cpu_kernels(x, w) && r.dtype() == x.dtype() && r.device().is_cpu() {
        let (x, w, r) = (x.contiguous()?, w.contiguous()?, r.contiguous()?);
        let op = ConvResidual {
            stride,
            pad: padding,
        };
        return x.apply_op3(&w, &r, op);
    }
    conv2d(x, w, None, stride, padding)? + r
}

/// [`conv2d`] whose backward also leaves its output gradient in `slot` (the taped forward of
/// `crate::per_example`); `None` where the CPU kernels do not run (the caller then adds a
/// probe).
pub(crate) fn conv2d_stashing(
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    stride: usize,
    padding: usize,
    slot: &GradSlot,
) -> Result<Option<Tensor>> {
    if stride == 0 || !uses_cpu_kernels(x, w) || b.is_some_and(|b| b.dtype() != x.dtype()) {
        return Ok(None);
    }
    let (x, w) = (x.contiguous()?, w.contiguous()?);
    let (stride, pad, slot) = (stride, padding, slot.clone());
    let y = match b {
        Some(b) => x.apply_op3(
            &w,
            &b.contiguous()?,
            Stashing {
                op: ConvBias { stride, pad },
                slot,
            },
        )?,
        None => x.apply_op2(
            &w,
            Stashing {
                op: Conv { stride, pad },
                slot,
            },
        )?,
    };
    Ok(Some(y))
}

/// Gradient of `conv2d` with respect to its input: the transposed convolution of `dy`
/// (N × C_out × HO × WO) with `w`, back to an input of spatial size `input_hw`.
pub fn conv2d_input_grad(
    dy: &Tensor,
    w: &Tensor,
    input_hw: (usize, usize),
    stride: usize,
    padding: usize,
) -> Result<Tensor> {
    if stride == 0 {
        bail!("conv2d_input_grad: stride must be at least 1, got 0")
    }
    if uses_cpu_kernels(dy, w) {
        let (h, w_in) = input_hw;
        let op = InputGrad {
            stride,
            pad: padding,
            h,
            w: w_in,
        };
        return dy.contiguous()?.apply_op2(&w.contiguous()?, op);
    }
    // Candle's transposed convolution; `output_padding` recovers the sizes stride rounding lost.
    let (_, _, ho, wo) = dy.dims4()?;
    let (_, _, kh, kw) = w.dims4()?;
    let out_pad_h = (input_hw.0 + 2 * padding).saturating_sub((ho - 1) * stride + kh);
    let out_pad_w = (input_hw.1 + 2 * padding).saturating_sub((wo - 1) * stride + kw);
    if out_pad_h != out_pad_w {
        bail!(
            "conv2d_input_grad: Candle's transposed convolution needs equal output padding, \
             got {out_pad_h} (height) and {out_pad_w} (width)"
        )
    }
    dy.conv_transpose2d(w, padding, out_pad_h, stride, 1)
}

/// Gradient of `conv2d` with respect to its weight, for input `x` and output gradient `dy`,
/// with a `kernel_hw` kernel. CPU only (f32, f64).
pub fn conv2d_weight_grad(
    x: &Tensor,
    dy: &Tensor,
    kernel_hw: (usize, usize),
    stride: usize,
    padding: usize,
) -> Result<Tensor> {
    if stride == 0 {
        bail!("conv2d_weight_grad: stride must be at least 1, got 0")
    }
    if !uses_cpu_kernels(x, dy) {
        bail!(
            "conv2d_weight_grad: only the CPU kernels (f32, f64) are implemented, got {:?} on {:?}",
            x.dtype(),
            x.device()
        )
    }
    let (kh, kw) = kernel_hw;
    let op = WeightGrad {
        stride,
        pad: padding,
        kh,
        kw,
    };
    x.contiguous()?.apply_op2(&dy.contiguous()?, op)
}

fn uses_cpu_kernels(a: &Tensor, b: &Tensor) -> bool {
    a.device().is_cpu() && a.dtype() == b.dtype() && matches!(a.dtype(), DType::F32 | DType::F64)
}
