//! 2-D convolution as three Candle custom ops that differentiate into each other, so that
//! first- and second-order gradients (double backprop) run on the fast CPU kernels of
//! `conv_cpu.rs`. Other devices and dtypes keep Candle's own `conv2d`.
//!
//! Why: Candle 0.11.1 computes the input gradient of `conv2d` with its CPU `conv_transpose2d`, a
//! direct loop, which made a SimpleCNN training step 7.3× slower than PyTorch (SCIENCE.md §7).
//!
//! The ops, for y = conv(x, w) with fixed stride and padding:
//! - `Conv`        (x, w)  → y,  bwd: dx = `InputGrad`(dy, w), dw = `WeightGrad`(x, dy);
//! - `InputGrad`   (dy, w) → dx, bwd: d(dy) = `Conv`(g, w), dw = `WeightGrad`(g, dy);
//! - `WeightGrad`  (x, dy) → dw, bwd: dx = `InputGrad`(dy, g), d(dy) = `Conv`(x, g).
//!
//! Each is bilinear, so its adjoints are the other two; the closure makes every order differentiable.

use super::conv_cpu::{self, Geom};
use candle_core::backend::BackendStorage;
use candle_core::{bail, CpuStorage, CustomOp2, DType, Layout, Result, Shape, Tensor};

/// `x`: N × C_in × H × W, `w`: C_out × C_in × kH × kW (PyTorch layout), optional bias C_out.
/// Same semantics as `torch.nn.functional.conv2d(x, w, b, stride, padding)` with dilation 1, groups 1.
/// Differentiable to any order on CPU (f32, f64); elsewhere Candle's `conv2d`.
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
    let y = if uses_cpu_kernels(x, w) {
        x.contiguous()?
            .apply_op2(&w.contiguous()?, Conv { stride, padding })?
    } else {
        x.conv2d(w, padding, stride, 1, 1)?
    };
    match b {
        Some(b) => y.broadcast_add(&b.reshape((1, (), 1, 1))?),
        None => Ok(y),
    }
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
        let op = InputGrad {
            stride,
            padding,
            h: input_hw.0,
            w: input_hw.1,
        };
        return dy.contiguous()?.apply_op2(&w.contiguous()?, op);
    }
    // Candle's transposed convolution; `output_padding` recovers the sizes stride rounding lost.
    let (_, _, ho, wo) = dy.dims4()?;
    let (_, _, kh, kw) = w.dims4()?;
    let out_pad_h = (input_hw.0 + 2 * padding).saturating_sub((ho - 1) * stride + kh);
    let out_pad_w = (input_hw.1 + 2 * padding).saturating_sub((wo - 1) * stride + kw);
    if out_pad_h != out_pad_w {
        bail!("conv2d_input_grad: non-CPU path needs equal output padding, got {out_pad_h} and {out_pad_w}")
    }
    dy.conv_transpose2d(w, padding, out_pad_h, stride, 1)
}

/// Gradient of `conv2d` with respect to its weight, for input `x` and output gradient `dy`,
/// with a `kernel_hw` kernel.
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
    let op = WeightGrad {
        stride,
        padding,
        kh: kernel_hw.0,
        kw: kernel_hw.1,
    };
    x.contiguous()?.apply_op2(&dy.contiguous()?, op)
}

fn uses_cpu_kernels(a: &Tensor, b: &Tensor) -> bool {
    a.device().is_cpu() && a.dtype() == b.dtype() && matches!(a.dtype(), DType::F32 | DType::F64)
}

thread_local! {
    /// Mirrors Candle's own reading of `CANDLE_GRAD_DO_NOT_DETACH` in `backprop.rs` (once per
    /// thread). Without it Candle detaches every gradient, so our backward ops need not record
    /// a graph either: that keeps each layer's output gradient from living on in the GradStore.
    static DO_NOT_DETACH: bool = std::env::var("CANDLE_GRAD_DO_NOT_DETACH").is_ok_and(|s| !s.is_empty() && s != "0");
}

/// Applies a backward op, recording it for double backprop only when Candle keeps graphs.
fn apply_bwd<C: CustomOp2 + Send + Sync + 'static>(
    a: &Tensor,
    b: &Tensor,
    op: C,
) -> Result<Tensor> {
    let (a, b) = (a.contiguous()?, b.contiguous()?);
    if DO_NOT_DETACH.with(|d| *d) {
        a.apply_op2(&b, op)
    } else {
        a.apply_op2_no_bwd(&b, &op)
    }
}

/// Contiguous slice of a storage, or an error naming the op and the layout.
fn slice<'a, T>(v: &'a [T], l: &Layout, op: &str) -> Result<&'a [T]> {
    match l.contiguous_offsets() {
        Some((start, end)) => Ok(&v[start..end]),
        None => bail!("{op}: expected a contiguous operand, got layout {l:?}"),
    }
}

/// Runs a kernel on two CPU storages of the same float dtype.
fn run2(
    op: &str,
    s1: &CpuStorage,
    l1: &Layout,
    s2: &CpuStorage,
    l2: &Layout,
    f32k: impl FnOnce(&[f32], &[f32]) -> Vec<f32>,
    f64k: impl FnOnce(&[f64], &[f64]) -> Vec<f64>,
) -> Result<CpuStorage> {
    Ok(match (s1, s2) {
        (CpuStorage::F32(a), CpuStorage::F32(b)) => {
            CpuStorage::F32(f32k(slice(a, l1, op)?, slice(b, l2, op)?))
        }
        (CpuStorage::F64(a), CpuStorage::F64(b)) => {
            CpuStorage::F64(f64k(slice(a, l1, op)?, slice(b, l2, op)?))
        }
        _ => bail!(
            "{op}: expected two f32 or two f64 operands, got {:?} and {:?}",
            s1.dtype(),
            s2.dtype()
        ),
    })
}

/// Output size of a convolution along one axis, or an error if the kernel does not fit.
fn out_len(op: &str, len: usize, k: usize, stride: usize, pad: usize) -> Result<usize> {
    if len + 2 * pad < k {
        bail!("{op}: kernel {k} larger than padded input {len} + 2·{pad}")
    }
    Ok((len + 2 * pad - k) / stride + 1)
}

fn geom(
    op: &str,
    x: (usize, usize, usize, usize),
    w: (usize, usize, usize, usize),
    stride: usize,
    pad: usize,
) -> Result<Geom> {
    let ((n, c, h, wd), (o, wc, kh, kw)) = (x, w);
    if c != wc {
        bail!("{op}: input has {c} channels (N×C×H×W = {x:?}) but the weight expects {wc} (O×C×KH×KW = {w:?})")
    }
    let (ho, wo) = (
        out_len(op, h, kh, stride, pad)?,
        out_len(op, wd, kw, stride, pad)?,
    );
    Ok(Geom {
        n,
        c,
        h,
        w: wd,
        o,
        kh,
        kw,
        stride,
        pad,
        ho,
        wo,
    })
}

/// y = conv(x, w).
#[derive(Debug, Clone, Copy)]
struct Conv {
    stride: usize,
    padding: usize,
}

impl CustomOp2 for Conv {
    fn name(&self) -> &'static str {
        "breakeven-conv2d"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let g = geom(
            self.name(),
            l1.shape().dims4()?,
            l2.shape().dims4()?,
            self.stride,
            self.padding,
        )?;
        let out = run2(
            self.name(),
            s1,
            l1,
            s2,
            l2,
            |x, w| conv_cpu::conv_fwd::<f32>(x, w, &g),
            |x, w| conv_cpu::conv_fwd::<f64>(x, w, &g),
        )?;
        Ok((out, Shape::from((g.n, g.o, g.ho, g.wo))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (_, _, h, wd) = x.dims4()?;
        let (_, _, kh, kw) = w.dims4()?;
        let dx = apply_bwd(
            dy,
            w,
            InputGrad {
                stride: self.stride,
                padding: self.padding,
                h,
                w: wd,
            },
        )?;
        let dw = apply_bwd(
            x,
            dy,
            WeightGrad {
                stride: self.stride,
                padding: self.padding,
                kh,
                kw,
            },
        )?;
        Ok((Some(dx), Some(dw)))
    }
}

/// dx = conv_input_grad(dy, w): the transposed convolution back to an H × W input.
#[derive(Debug, Clone, Copy)]
struct InputGrad {
    stride: usize,
    padding: usize,
    h: usize,
    w: usize,
}

impl CustomOp2 for InputGrad {
    fn name(&self) -> &'static str {
        "breakeven-conv2d-input-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (n, o, ho, wo) = l1.shape().dims4()?;
        let (wo_ch, c, kh, kw) = l2.shape().dims4()?;
        let g = geom(
            self.name(),
            (n, c, self.h, self.w),
            (wo_ch, c, kh, kw),
            self.stride,
            self.padding,
        )?;
        if (o, ho, wo) != (g.o, g.ho, g.wo) {
            bail!("{}: output gradient {:?} does not match a conv of input {}×{} by weight {:?}: expected N×{}×{}×{}", self.name(), l1.shape(), self.h, self.w, l2.shape(), g.o, g.ho, g.wo)
        }
        let out = run2(
            self.name(),
            s1,
            l1,
            s2,
            l2,
            |dy, w| conv_cpu::conv_input_grad::<f32>(dy, w, &g),
            |dy, w| conv_cpu::conv_input_grad::<f64>(dy, w, &g),
        )?;
        Ok((out, Shape::from((g.n, g.c, g.h, g.w))))
    }

    fn bwd(
        &self,
        dy: &Tensor,
        w: &Tensor,
        _dx: &Tensor,
        g: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (_, _, kh, kw) = w.dims4()?;
        let d_dy = apply_bwd(
            g,
            w,
            Conv {
                stride: self.stride,
                padding: self.padding,
            },
        )?;
        let d_w = apply_bwd(
            g,
            dy,
            WeightGrad {
                stride: self.stride,
                padding: self.padding,
                kh,
                kw,
            },
        )?;
        Ok((Some(d_dy), Some(d_w)))
    }
}

/// dw = conv_weight_grad(x, dy) for a KH × KW kernel.
#[derive(Debug, Clone, Copy)]
struct WeightGrad {
    stride: usize,
    padding: usize,
    kh: usize,
    kw: usize,
}

impl CustomOp2 for WeightGrad {
    fn name(&self) -> &'static str {
        "breakeven-conv2d-weight-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (n, c, h, w) = l1.shape().dims4()?;
        let (dn, o, ho, wo) = l2.shape().dims4()?;
        let g = geom(
            self.name(),
            (n, c, h, w),
            (o, c, self.kh, self.kw),
            self.stride,
            self.padding,
        )?;
        if (dn, ho, wo) != (g.n, g.ho, g.wo) {
            bail!("{}: output gradient {:?} does not match a conv of input {:?} by a {}×{} kernel: expected {}×{o}×{}×{}", self.name(), l2.shape(), l1.shape(), self.kh, self.kw, g.n, g.ho, g.wo)
        }
        let out = run2(
            self.name(),
            s1,
            l1,
            s2,
            l2,
            |x, dy| conv_cpu::conv_weight_grad::<f32>(x, dy, &g),
            |x, dy| conv_cpu::conv_weight_grad::<f64>(x, dy, &g),
        )?;
        Ok((out, Shape::from((g.o, g.c, g.kh, g.kw))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        dy: &Tensor,
        _dw: &Tensor,
        g: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (_, _, h, w) = x.dims4()?;
        let d_x = apply_bwd(
            dy,
            g,
            InputGrad {
                stride: self.stride,
                padding: self.padding,
                h,
                w,
            },
        )?;
        let d_dy = apply_bwd(
            x,
            g,
            Conv {
                stride: self.stride,
                padding: self.padding,
            },
        )?;
        Ok((Some(d_x), Some(d_dy)))
    }
}
