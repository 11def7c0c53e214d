//! Moving between Candle parameters (`Var`s of any dtype/device) and the flat `f64` host
//! vectors estimators work in. The flat order is the order of the `vars` slice, each `Var`
//! flattened row-major.

use candle_core::backprop::GradStore;
use candle_core::{CpuStorage, Device, Storage, Tensor, Var};

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
    let mut out = vec![0.0; num_params(vars)];
    grads_into(grads, vars, &mut out)?;
    Ok(out)
}

/// [`grads_to_vec`] written into `out` (of length [`num_params`]), e.g. one row of the
/// per-example gradients: the same numbers, without the intermediate vectors.
pub(crate) fn grads_into(grads: &GradStore, vars: &[Var], out: &mut [f64]) -> Result<()> {
    check_len("gradient buffer", out, num_params(vars))?;
    let mut off = 0;
    for v in vars {
        let dst = &mut out[off..off + v.elem_count()];
        match grads.get(v.as_tensor()) {
            Some(g) => tensor_into(g, dst)?,
            None => dst.fill(0.0),
        }
        off += v.elem_count();
    }
    Ok(())
}

/// The values of `t`, row-major, as `f64` into `dst` (of `t`'s element count). A contiguous
/// f32 or f64 tensor on the CPU is read in place: per-example gradients of SimpleCNN spent
/// about a tenth of their time in the three copies of `to_dtype(F64)`, `to_vec1` and
/// `extend` (issue 18, item 3). Anything else goes through Candle's conversion. Both paths
/// give the same numbers (f32 → f64 is exact).
fn tensor_into(t: &Tensor, dst: &mut [f64]) -> Result<()> {
    {
        let (storage, layout) = t.storage_and_layout();
        let range = layout
            .contiguous_offsets()
            .filter(|(a, b)| b - a == dst.len());
        match (&*storage, range) {
            (Storage::Cpu(CpuStorage::F32(v)), Some((a, b))) => {
                for (d, x) in dst.iter_mut().zip(&v[a..b]) {
                    *d = f64::from(*x);
                }
                return Ok(());
            }
            (Storage::Cpu(CpuStorage::F64(v)), Some((a, b))) => {
                dst.copy_from_slice(&v[a..b]);
                return Ok(());
            }
            // The read guard is released before Candle touches the storage again.
            _ => {}
        }
    }
    let v = t
        .flatten_all()?
        .to_dtype(candle_core::DType::F64)?
        .to_vec1::<f64>()?;
    check_len("gradient tensor", &v, dst.len())?;
    dst.copy_from_slice(&v);
    Ok(())
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
