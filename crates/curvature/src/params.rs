//! Moving between Candle parameters (`Var`s of any dtype/device) and the flat `f64` host
//! vectors estimators work in. The flat order is the order of the `vars` slice, each `Var`
//! flattened row-major.

use candle_core::backprop::GradStore;
use candle_core::{Device, Tensor, Var};

use crate::error::Result;
use crate::operator::check_len;

/// Total number of scalars in `vars`.
pub fn num_params(vars: &[Var]) -> usize {
    vars.iter().map(|v| v.elem_count()).sum()
}

/// The current values of `vars`, flattened to `f64`.
pub fn params_to_vec(vars: &[Var]) -> Result<Vec<f64>> {
    let mut out = Vec::with_capacity(num_params(vars));
    for v in vars {
        out.extend(
            v.as_tensor()
                .flatten_all()?
                .to_dtype(candle_core::DType::F64)?
                .to_vec1::<f64>()?,
        );
    }
    Ok(out)
}

/// The gradients of `vars` in a `GradStore`, flattened to `f64`; a `Var` the loss does not
/// depend on has gradient zero.
pub fn grads_to_vec(grads: &GradStore, vars: &[Var]) -> Result<Vec<f64>> {
    let mut out = Vec::with_capacity(num_params(vars));
    for v in vars {
        match grads.get(v.as_tensor()) {
            Some(g) => out.extend(
                g.flatten_all()?
                    .to_dtype(candle_core::DType::F64)?
                    .to_vec1::<f64>()?,
            ),
            None => out.extend(std::iter::repeat_n(0.0, v.elem_count())),
        }
    }
    Ok(out)
}

/// The gradients of `vars` in a `GradStore` as tensors shaped like them (graphs kept, if any),
/// zeros for a `Var` the loss does not depend on.
pub fn gradients(grads: &GradStore, vars: &[Var]) -> candle_core::Result<Vec<Tensor>> {
    vars.iter()
        .map(|v| match grads.get(v.as_tensor()) {
            Some(g) => Ok(g.clone()),
            None => v.as_tensor().zeros_like(),
        })
        .collect()
}

/// `‖(t_1, …, t_n)‖₂` of detached values, accumulated in f64.
pub fn norm(ts: &[Tensor]) -> candle_core::Result<f64> {
    let mut s = 0.0;
    for t in ts {
        s += t
            .detach()
            .to_dtype(candle_core::DType::F64)?
            .sqr()?
            .sum_all()?
            .to_scalar::<f64>()?;
    }
    Ok(s.sqrt())
}

/// Splits a flat `f64` vector into tensors shaped, typed and placed like `vars`.
pub fn vec_to_tensors(v: &[f64], vars: &[Var]) -> Result<Vec<Tensor>> {
    check_len("parameter-space vector", v, num_params(vars))?;
    let mut out = Vec::with_capacity(vars.len());
    let mut off = 0;
    for var in vars {
        let n = var.elem_count();
        let t = Tensor::from_slice(&v[off..off + n], var.shape(), &Device::Cpu)?
            .to_dtype(var.dtype())?
            .to_device(var.device())?;
        out.push(t);
        off += n;
    }
    Ok(out)
}

/// `Σ_p ⟨a_p, b_p⟩` as a scalar tensor that keeps the graph of `a` (None when `a` is empty).
pub(crate) fn graph_dot(grads: &GradStore, vars: &[Var], b: &[Tensor]) -> Result<Option<Tensor>> {
    let mut s: Option<Tensor> = None;
    for (var, bp) in vars.iter().zip(b) {
        if let Some(g) = grads.get(var.as_tensor()) {
            let term = (g * bp)?.sum_all()?;
            s = Some(match s {
                None => term,
                Some(s) => (s + term)?,
            });
        }
    }
    Ok(s)
}
