//! Fully connected layer in PyTorch layout (`weight`: out × in, `bias`: out).

use candle_core::{Result, Tensor, Var};

use crate::init::Init;
use crate::ops::RowsKind;
use crate::per_example::Tape;
use crate::store::{key, ParamStore};

/// `y = x Wᵀ + b`, as `torch.nn.Linear`.
#[derive(Debug, Clone)]
pub struct Linear {
    weight: Var,
    bias: Option<Var>,
}

impl Linear {
    /// Registers `{prefix}.weight` (and `{prefix}.bias` when `bias` is given).
    pub fn new(
        store: &mut ParamStore,
        prefix: &str,
        (inp, out): (usize, usize),
        weight: Init,
        bias: Option<Init>,
    ) -> Result<Self> {
        let weight = store.param(key(prefix, "weight"), &[out, inp], weight)?;
        let bias = match bias {
            Some(init) => Some(store.param(key(prefix, "bias"), &[out], init)?),
            None => None,
        };
        Ok(Self { weight, bias })
    }

    /// PyTorch's default `nn.Linear` initialization (weights and bias U(±1/√in)).
    pub fn torch_default(
        store: &mut ParamStore,
        prefix: &str,
        dims: (usize, usize),
    ) -> Result<Self> {
        Self::new(
            store,
            prefix,
            dims,
            Init::TorchDefaultWeight,
            Some(Init::TorchDefaultBias { fan_in: dims.0 }),
        )
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        linear(
            x,
            self.weight.as_tensor(),
            self.bias.as_ref().map(Var::as_tensor),
        )
    }

    /// [`Self::forward`], recorded in `tape` when there is one (see [`Tape`]).
    pub fn forward_with(&self, x: &Tensor, tape: Option<&Tape>) -> Result<Tensor> {
        match tape {
            None => self.forward(x),
            Some(t) => t.record(
                RowsKind::Linear,
                x,
                &self.weight,
                self.bias.as_ref(),
                linear,
            ),
        }
    }
}

fn linear(x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> Result<Tensor> {
    let y = x.matmul(&w.t()?)?;
    match b {
        Some(b) => y.broadcast_add(b),
        None => Ok(y),
    }
}
