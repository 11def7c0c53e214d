//! The convolution as Candle custom ops that differentiate into each other, so that first- and
//! second-order gradients (double backprop) all run on the kernels of `conv_cpu.rs`.
//!
//! For y = conv(x, w) with fixed stride and padding (all three are bilinear, so the adjoints of
//! each are the other two, and the closure makes every order differentiable):
//! - `Conv`       (x, w)  → y,  bwd: dx = `InputGrad`(dy, w), dw = `WeightGrad`(x, dy);
//! - `InputGrad`  (dy, w) → dx, bwd: d(dy) = `Conv`(g, w),    dw = `WeightGrad`(g, dy);
//! - `WeightGrad` (x, dy) → dw, bwd: dx = `InputGrad`(dy, g), d(dy) = `Conv`(x, g).
//!
//! The bias-fused variant lives in `conv_bias.rs`; the plumbing here (dtype dispatch, tracked or
//! untracked backward ops) serves both.

use candle_core::backend::BackendStorage;
use candle_core::{bail, CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor};

use super::conv_cpu::{self, Elem, Geom};

/// Applies a backward op, recording it for double backprop only when Candle keeps graphs.
pub(super) fn apply_bwd<C: CustomOp2 + Send + Sync + 'static>(
    a: &Tensor,
    b: &Tensor,
    op: C,
) -> Result<Tensor> {
    let (a, b) = (a.contiguous()?, b.contiguous()?);
    if super::grad_graphs_kept() {
        a.apply_op2(&b, op)
    } else {
        a.apply_op2_no_bwd(&b, &op)
    }
}

/// [`apply_bwd`] for a unary op.
pub(super) fn apply_bwd1<C: CustomOp1 + Send + Sync + 'static>(
    a: &Tensor,
    op: C,
) -> Result<Tensor> {
    let a = a.contiguous()?;
    if super::grad_graphs_kept() {
        a.apply_op1(op)
    } else {
        a.apply_op1_no_bwd(&op)
    }
}

/// The gradient for `arg` only if Candle will use it: untracked inputs (data) need none, which
/// saves the first layer's whole input-gradient pass.
pub(super) fn wanted(
    arg: &Tensor,
    grad: impl FnOnce() -> Result<Tensor>,
) -> Result<Option<Tensor>> {
    if arg.track_op() {
        grad().map(Some)
    } else {
        Ok(None)
    }
}

/// Element types with a `CpuStorage` variant.
pub(super) trait Storage: Elem {
    fn slice<'a>(s: &'a CpuStorage, l: &Layout, op: &str) -> Result<&'a [Self]>;
    fn wrap(v: Vec<Self>) -> CpuStorage;
    /// The vector of a storage [`Self::wrap`] made (panics on another dtype: our kernels only
    /// unwrap what they wrapped).
    fn unwrap(s: CpuStorage) -> Vec<Self>;
}

macro_rules! storage {
    ($t:ty, $variant:ident) => {
        impl Storage for $t {
            fn slice<'a>(s: &'a CpuStorage, l: &Layout, op: &str) -> Result<&'a [Self]> {
                let CpuStorage::$variant(v) = s else {
                    bail!(
                        "{op}: operands must share one dtype, expected {}",
                        stringify!($t)
                    )
                };
                match l.contiguous_offsets() {
                    Some((start, end)) => Ok(&v[start..end]),
                    None => bail!("{op}: expected a contiguous operand, got layout {l:?}"),
                }
            }
            fn wrap(v: Vec<Self>) -> CpuStorage {
                CpuStorage::$variant(v)
            }
            fn unwrap(s: CpuStorage) -> Vec<Self> {
                match s {
                    CpuStorage::$variant(v) => v,
                    other => unreachable!(
                        "unwrap of a {:?} storage as {}",
                        other.dtype(),
                        stringify!($t)
                    ),
                }
            }
        }
    };
}
storage!(f32, F32);
storage!(f64, F64);

/// Dispatches `$body` with `$t` bound to the element type of `$dtype`.
macro_rules! by_dtype {
    ($op:expr, $dtype:expr, $t:ident => $body:expr) => {
        match $dtype {
            candle_core::DType::F32 => {
                type $t = f32;
                $body
            }
            candle_core::DType::F64 => {
                type $t = f64;
                $body
            }
            other => candle_core::bail!(
                "{}: only f32 and f64 run on the CPU kernels, got {other:?}",
                $op
            ),
        }
    };
}
pub(super) use by_dtype;

fn out_len(op: &str, len: usize, k: usize, stride: usize, pad: usize) -> Result<usize> {
    if len + 2 * pad < k {
        bail!("{op}: kernel {k} larger than padded input {len} + 2·{pad}")
    }
    Ok((len + 2 * pad - k) / stride + 1)
}

pub(super) type Dims4 = (usize, usize, usize, usize);

/// Geometry of input `x` (N×C×H×W) by weight `w` (O×C×KH×KW), checked.
pub(super) fn geom(op: &str, x: Dims4, w: Dims4, stride: usize, pad: usize) -> Result<Geom> {
    let ((n, c, h, wd), (o, wc, kh, kw)) = (x, w);
    if c != wc {
        bail!("{op}: input N×C×H×W = {x:?} has {c} channels, weight O×C×KH×KW = {w:?} expects {wc}")
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
pub(crate) struct Conv {
    pub stride: usize,
    pub pad: usize,
}

impl Conv {
    pub(super) fn fwd<T: Storage>(
        &self,
        x: (&CpuStorage, &Layout),
        w: (&CpuStorage, &Layout),
        b: Option<(&CpuStorage, &Layout)>,
    ) -> Result<(CpuStorage, Shape)> {
        let op = "breakeven-conv2d";
        let g = geom(
            op,
            x.1.shape().dims4()?,
            w.1.shape().dims4()?,
            self.stride,
            self.pad,
        )?;
        let bias = match b {
            Some((s, l)) if l.shape().dims() == [g.o] => Some(T::slice(s, l, op)?),
            Some((_, l)) => bail!("{op}: bias has shape {:?}, expected [{}]", l.shape(), g.o),
            None => None,
        };
        let y = conv_cpu::conv_fwd(T::slice(x.0, x.1, op)?, T::slice(w.0, w.1, op)?, bias, &g);
        Ok((T::wrap(y), Shape::from((g.n, g.o, g.ho, g.wo))))
    }

    /// (dx, dw) for output gradient `dy`.
    pub(super) fn grads(
        &self,
        x: &Tensor,
        w: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (_, _, h, wd) = x.dims4()?;
        let (_, _, kh, kw) = w.dims4()?;
        let (stride, pad) = (self.stride, self.pad);
        let dx = wanted(x, || {
            apply_bwd(
                dy,
                w,
                InputGrad {
                    stride,
                    pad,
                    h,
                    w: wd,
                },
            )
        })?;
        let dw = wanted(w, || {
            apply_bwd(
                x,
                dy,
                WeightGrad {
                    stride,
                    pad,
                    kh,
                    kw,
                },
            )
        })?;
        Ok((dx, dw))
    }
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
        by_dtype!(self.name(), s1.dtype(), T => self.fwd::<T>((s1, l1), (s2, l2), None))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        self.grads(x, w, dy)
    }
}

/// dx = conv_input_grad(dy, w): the transposed convolution back to an H × W input.
#[derive(Debug, Clone, Copy)]
pub(crate) struct InputGrad {
    pub stride: usize,
    pub pad: usize,
    pub h: usize,
    pub w: usize,
}

impl InputGrad {
    fn fwd<T: Storage>(
        &self,
        dy: (&CpuStorage, &Layout),
        w: (&CpuStorage, &Layout),
    ) -> Result<(CpuStorage, Shape)> {
        let op = self.name();
        let (n, o, ho, wo) = dy.1.shape().dims4()?;
        let (wo_ch, c, kh, kw) = w.1.shape().dims4()?;
        let g = geom(
            op,
            (n, c, self.h, self.w),
            (wo_ch, c, kh, kw),
            self.stride,
            self.pad,
        )?;
        if (o, ho, wo) != (g.o, g.ho, g.wo) {
            bail!(
                "{op}: output gradient {:?} does not fit a conv of a {}×{} input by weight {:?}: expected N×{}×{}×{}",
                dy.1.shape(), self.h, self.w, w.1.shape(), g.o, g.ho, g.wo
            )
        }
        let dx = conv_cpu::conv_input_grad(T::slice(dy.0, dy.1, op)?, T::slice(w.0, w.1, op)?, &g);
        Ok((T::wrap(dx), Shape::from((g.n, g.c, g.h, g.w))))
    }
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
        by_dtype!(self.name(), s1.dtype(), T => self.fwd::<T>((s1, l1), (s2, l2)))
    }

    fn bwd(
        &self,
        dy: &Tensor,
        w: &Tensor,
        _dx: &Tensor,
        g: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (_, _, kh, kw) = w.dims4()?;
        let (stride, pad) = (self.stride, self.pad);
        let d_dy = wanted(dy, || apply_bwd(g, w, Conv { stride, pad }))?;
        let d_w = wanted(w, || {
            apply_bwd(
                g,
                dy,
                WeightGrad {
                    stride,
                    pad,
                    kh,
                    kw,
                },
            )
        })?;
        Ok((d_dy, d_w))
    }
}

/// dw = conv_weight_grad(x, dy) for a KH × KW kernel.
#[derive(Debug, Clone, Copy)]
pub(crate) struct WeightGrad {
    pub stride: usize,
    pub pad: usize,
    pub kh: usize,
    pub kw: usize,
}

impl WeightGrad {
    fn fwd<T: Storage>(
        &self,
        x: (&CpuStorage, &Layout),
        dy: (&CpuStorage, &Layout),
    ) -> Result<(CpuStorage, Shape)> {
        let op = self.name();
        let (n, c, h, w) = x.1.shape().dims4()?;
        let (dn, o, ho, wo) = dy.1.shape().dims4()?;
        let g = geom(
            op,
            (n, c, h, w),
            (o, c, self.kh, self.kw),
            self.stride,
            self.pad,
        )?;
        if (dn, ho, wo) != (g.n, g.ho, g.wo) {
            bail!(
                "{op}: output gradient {:?} does not fit a conv of input {:?} by a {}×{} kernel: expected {}×{o}×{}×{}",
                dy.1.shape(), x.1.shape(), self.kh, self.kw, g.n, g.ho, g.wo
            )
        }
        let dw = conv_cpu::conv_weight_grad(T::slice(x.0, x.1, op)?, T::slice(dy.0, dy.1, op)?, &g);
        Ok((T::wrap(dw), Shape::from((g.o, g.c, g.kh, g.kw))))
    }
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
        by_dtype!(self.name(), s1.dtype(), T => self.fwd::<T>((s1, l1), (s2, l2)))
    }

    fn bwd(
        &self,
        x: &Tensor,
        dy: &Tensor,
        _dw: &Tensor,
        g: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (_, _, h, w) = x.dims4()?;
        let (stride, pad) = (self.stride, self.pad);
        let d_x = wanted(x, || apply_bwd(dy, g, InputGrad { stride, pad, h, w }))?;
        let d_dy = wanted(dy, || apply_bwd(x, g, Conv { stride, pad }))?;
        Ok((d_x, d_dy))
    }
}
