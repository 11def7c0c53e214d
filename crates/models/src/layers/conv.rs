//! 2-D convolution layer in PyTorch layout; the arithmetic is [`crate::ops::conv2d`].

use candle_core::{Result, Tensor, Var};

use crate::init::Init;
use crate::per_example::Tape;
use crate::store::{key, ParamStore};

/// Square-kernel convolution, as `torch.nn.Conv2d(in, out, k, stride, padding, bias)`.
#[derive(Debug, Clone)]
pub struct Conv2d {
    weight: Var,
    bias: Option<Var>,
    stride: usize,
    padding: usize,
}

/// Shape of a [`Conv2d`]: channels in and out, kernel size, stride, padding.
#[derive(Debug, Clone, Copy)]
pub struct ConvShape {
    pub inp: usize,
    pub out: usize,
    pub kernel: usize,
    pub stride: usize,
    pub padding: usize,
}

impl ConvShape {
    /// k×k, stride 1, padding k/2 (PyTorch's usual 'same' for odd k).
    pub fn same(inp: usize, out: usize, kernel: usize) -> Self {
        Self {
            inp,
            out,
            kernel,
            stride: 1,
            padding: kernel / 2,
        }
    }

    pub fn stride(self, stride: usize) -> Self {
        Self { stride, ..self }
    }

    pub fn padding(self, padding: usize) -> Self {
        Self { padding, ..self }
    }

    /// Spatial output size for an input of size `n` (floor division, as PyTorch).
    pub fn out_size(&self, n: usize) -> Option<usize> {
        (n + 2 * self.padding)
            .checked_sub(self.kernel)
            .map(|d| d / self.stride + 1)
    }
}

impl Conv2d {
    /// Registers `{prefix}.weight` (out × in × k × k) and `{prefix}.bias` when `bias` is given.
    pub fn new(
        store: &mut ParamStore,
        prefix: &str,
        shape: ConvShape,
        weight: Init,
        bias: Option<Init>,
    ) -> Result<Self> {
        let ConvShape {
            inp,
            out,
            kernel,
            stride,
            padding,
        } = shape;
        let weight = store.param(key(prefix, "weight"), &[out, inp, kernel, kernel], weight)?;
        let bias = match bias {
            Some(init) => Some(store.param(key(prefix, "bias"), &[out], init)?),
            None => None,
        };
        Ok(Self {
            weight,
            bias,
            stride,
            padding,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        crate::ops::conv2d(
            x,
            self.weight.as_tensor(),
            self.bias.as_ref().map(|b| b.as_tensor()),
            self.stride,
            self.padding,
        )
    }

    /// `relu(forward(x))` as one op ([`crate::ops::conv2d_relu`]: no pre-activation tensor stays
    /// alive for the backward pass); recorded as the two ops in `tape` when there is one.
    pub fn forward_relu_with(&self, x: &Tensor, tape: Option<&Tape>) -> Result<Tensor> {
        if tape.is_some() {
            return crate::ops::relu(&self.forward_with(x, tape)?);
        }
        crate::ops::conv2d_relu(
            x,
            self.weight.as_tensor(),
            self.bias.as_ref().map(|b| b.as_tensor()),
            self.stride,
            self.padding,
        )
    }

    /// `forward(x) + r` where `r` has the output's shape, as one op where the layer has no bias
    /// ([`crate::ops::conv2d_add`]: no separate convolution output stays alive for the backward
    /// pass), else as two.
    pub fn forward_add(&self, x: &Tensor, r: &Tensor) -> Result<Tensor> {
        match &self.bias {
            Some(_) => self.forward(x)? + r,
            None => {
                crate::ops::conv2d_add(x, self.weight.as_tensor(), r, self.stride, self.padding)
            }
        }
    }

    /// [`Self::forward`], recorded in `tape` when there is one (see [`Tape`]).
    pub fn forward_with(&self, x: &Tensor, tape: Option<&Tape>) -> Result<Tensor> {
        let Some(t) = tape else {
            return self.forward(x);
        };
        t.record_conv(
            x,
            &self.weight,
            self.bias.as_ref(),
            (self.stride, self.padding),
        )
    }
}
