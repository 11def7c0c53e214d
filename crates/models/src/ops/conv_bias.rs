//! Convolution with a fused bias: `ConvBias` writes the bias into the output buffer before the
//! gemm accumulates onto it (no separate broadcast pass), and its bias gradient `BiasGrad` (sum
//! of dy over N, H, W) and that gradient's adjoint `BiasBroadcast` form a closed pair, so double
//! backprop never reaches Candle's slow broadcast-sum.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp1, CustomOp3, Layout, Result, Shape, Tensor};

use super::conv_cpu;
use super::conv_ops::{apply_bwd1, by_dtype, wanted, Conv, Storage};

/// y = conv(x, w) + b, the bias written into the output before the gemm accumulates onto it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConvBias {
    pub stride: usize,
    pub pad: usize,
}

impl CustomOp3 for ConvBias {
    fn name(&self) -> &'static str {
        "breakeven-conv2d-bias"
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
        let conv = Conv {
            stride: self.stride,
            pad: self.pad,
        };
        by_dtype!(self.name(), s1.dtype(), T => conv.fwd::<T>((s1, l1), (s2, l2), Some((s3, l3))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let conv = Conv {
            stride: self.stride,
            pad: self.pad,
        };
        conv_bias_grads(&conv, x, w, Some(b), dy)
    }
}

/// (dx, dw, db) of `conv(x, w) + b` for output gradient `dy`: the convolution's gradients and,
/// where there is a bias, `Σ_{n,h,w} dy` ([`BiasGrad`]); each only where Candle will use it.
pub(super) fn conv_bias_grads(
    conv: &Conv,
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    dy: &Tensor,
) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
    let (dx, dw) = conv.grads(x, w, dy)?;
    let db = match b {
        Some(b) => wanted(b, || apply_bwd1(dy, BiasGrad))?,
        None => None,
    };
    Ok((dx, dw, db))
}

/// db = Σ_{n,h,w} dy[n, o, h, w].
#[derive(Debug, Clone, Copy)]
struct BiasGrad;

impl BiasGrad {
    fn fwd<T: Storage>(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (n, o, h, w) = l.shape().dims4()?;
        let dy = T::slice(s, l, self.name())?;
        let mut db = vec![T::ZERO; o];
        for img in dy.chunks_exact(o * h * w).take(n) {
            for (acc, plane) in db.iter_mut().zip(img.chunks_exact(h * w)) {
                *acc += conv_cpu::sum(plane);
            }
        }
        Ok((T::wrap(db), Shape::from(o)))
    }
}

impl CustomOp1 for BiasGrad {
    fn name(&self) -> &'static str {
        "breakeven-conv2d-bias-grad"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        by_dtype!(self.name(), s.dtype(), T => self.fwd::<T>(s, l))
    }

    fn bwd(&self, dy: &Tensor, _db: &Tensor, g: &Tensor) -> Result<Option<Tensor>> {
        let (n, _, h, w) = dy.dims4()?;
        wanted(dy, || apply_bwd1(g, BiasBroadcast { n, h, w }))
    }
}

/// g (O) → N×O×H×W with every plane constant: the adjoint of [`BiasGrad`]. Candle's own
/// `broadcast_as` would do, but its backward (a reduction over dims 0, 2, 3) is slow.
#[derive(Debug, Clone, Copy)]
struct BiasBroadcast {
    n: usize,
    h: usize,
    w: usize,
}

impl BiasBroadcast {
    fn fwd<T: Storage>(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let o = l.shape().dims1()?;
        let g = T::slice(s, l, self.name())?;
        let plane = self.h * self.w;
        let mut out = Vec::with_capacity(self.n * o * plane);
        for _ in 0..self.n {
            for &go in g {
                out.extend(std::iter::repeat_n(go, plane));
            }
        }
        Ok((T::wrap(out), Shape::from((self.n, o, self.h, self.w))))
    }
}

impl CustomOp1 for BiasBroadcast {
    fn name(&self) -> &'static str {
        "breakeven-conv2d-bias-broadcast"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        by_dtype!(self.name(), s.dtype(), T => self.fwd::<T>(s, l))
    }

    fn bwd(&self, g: &Tensor, _out: &Tensor, dout: &Tensor) -> Result<Option<Tensor>> {
        wanted(g, || apply_bwd1(dout, BiasGrad))
    }
}
