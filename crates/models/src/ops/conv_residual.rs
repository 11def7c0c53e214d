//! Convolution with a residual added in the same op: `y = conv(x, w) + r`.
//!
//! Candle keeps every operand of an op until the backward pass. In `x + conv(…)` (a
//! pre-activation residual block's end, as in WRN) the addition keeps the convolution's output
//! alive only to hand its gradient through, one activation per block that PyTorch, whose
//! addition keeps no operand, frees. Here the residual is added into the convolution's own
//! output buffer: nothing but x, w and r (which the block keeps anyway) stays alive. The
//! gradients are the convolution's for x and w and `dy` itself for r, so every order of
//! differentiation works as for `conv2d` followed by an addition.

use candle_core::backend::BackendStorage;
use candle_core::{bail, CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};

use super::conv_ops::{by_dtype, Conv, Storage};

/// y = conv(x, w) + r.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConvResidual {
    pub stride: usize,
    pub pad: usize,
}

impl ConvResidual {
    fn fwd<T: Storage>(
        &self,
        x: (&CpuStorage, &Layout),
        w: (&CpuStorage, &Layout),
        r: (&CpuStorage, &Layout),
    ) -> Result<(CpuStorage, Shape)> {
        let conv = Conv {
            stride: self.stride,
            pad: self.pad,
        };
        let (y, shape) = conv.fwd::<T>(x, w, None)?;
        if r.1.shape() != &shape {
            bail!(
                "{}: residual has shape {:?}, expected the convolution's output {:?}",
                self.name(),
                r.1.shape(),
                shape
            )
        }
        let r = T::slice(r.0, r.1, self.name())?;
        let mut y = T::unwrap(y);
        y.iter_mut().zip(r).for_each(|(a, &b)| *a += b);
        Ok((T::wrap(y), shape))
    }
}

impl CustomOp3 for ConvResidual {
    fn name(&self) -> &'static str {
        "breakeven-conv2d-residual"
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
        by_dtype!(self.name(), s1.dtype(), T => self.fwd::<T>((s1, l1), (s2, l2), (s3, l3)))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _r: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (dx, dw) = Conv {
            stride: self.stride,
            pad: self.pad,
        }
        .grads(x, w, dy)?;
        Ok((dx, dw, Some(dy.clone())))
    }
}
