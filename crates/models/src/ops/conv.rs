//! 2-D convolution. Placeholder over Candle's own op, to be replaced by a fast CPU path
//! (im2col + gemm with differentiable backward passes); CUDA keeps Candle's path.

use candle_core::{Result, Tensor};

/// `x`: N × C_in × H × W, `w`: C_out × C_in × kH × kW (PyTorch layout), optional bias C_out.
/// Same semantics as `torch.nn.functional.conv2d(x, w, b, stride, padding)` with dilation 1, groups 1.
pub fn conv2d(x: &Tensor, w: &Tensor, b: Option<&Tensor>, stride: usize, padding: usize) -> Result<Tensor> {
    let y = x.conv2d(w, padding, stride, 1, 1)?;
    match b {
        Some(b) => y.broadcast_add(&b.reshape((1, (), 1, 1))?),
        None => Ok(y),
    }
}
