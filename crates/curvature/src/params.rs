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

/// The values of `t`, row-major, as `f64` into `dst` (of `t`'s element count). An f32 or f64
/// tensor on the CPU that is contiguous or a 2-D strided view (a transposed weight's gradient:
/// `Linear` computes `x Wᵀ`) is read in place: per-example gradients of SimpleCNN spent about a
/// tenth of their time in the copies of `flatten_all`, `to_dtype(F64)`, `to_vec1` and `extend`
/// (issue 18, item 3). Anything else goes through Candle's conversion. Both paths give the
/// same numbers (f32 → f64 is exact).
fn tensor_into(t: &Tensor, dst: &mut [f64]) -> Result<()> {
    {
        let (storage, layout) = t.storage_and_layout();
        let done = match &*storage {
            Storage::Cpu(CpuStorage::F32(v)) => strided_into(v, layout, dst, f64::from),
            Storage::Cpu(CpuStorage::F64(v)) => strided_into(v, layout, dst, |x| x),
            // The read guard is released before Candle touches the storage again.
            _ => false,
        };
        if done {
            return Ok(());
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

/// Copies the elements of `layout` over `src` into `dst` in row-major order, when the layout is
/// contiguous or 2-D (walked in 32 × 32 tiles, so that a transpose stays in cache); `false`,
/// with `dst` untouched, otherwise.
fn strided_into<T: Copy>(
    src: &[T],
    layout: &candle_core::Layout,
    dst: &mut [f64],
    to_f64: impl Fn(T) -> f64,
) -> bool {
    if layout.shape().elem_count() != dst.len() {
        return false;
    }
    if let Some((a, b)) = layout.contiguous_offsets() {
        for (d, x) in dst.iter_mut().zip(&src[a..b]) {
            *d = to_f64(*x);
        }
        return true;
    }
    let (&[rows, cols], &[s0, s1]) = (layout.dims(), layout.stride()) else {
        return false;
    };
    let start = layout.start_offset();
    let last = start + (rows.max(1) - 1) * s0 + (cols.max(1) - 1) * s1;
    if rows == 0 || cols == 0 || last >= src.len() {
        return false;
    }
    const TILE: usize = 32;
    for i0 in (0..rows).step_by(TILE) {
        for j0 in (0..cols).step_by(TILE) {
            for i in i0..(i0 + TILE).min(rows) {
                for j in j0..(j0 + TILE).min(cols) {
                    dst[i * cols + j] = to_f64(src[start + i * s0 + j * s1]);
                }
            }
        }
    }
    true
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

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::DType;

    /// Every layout read in place (contiguous, offset, transposed, strided 2-D) or through
    /// Candle (a 3-D permutation) gives Candle's own row-major values.
    #[test]
    fn tensors_are_read_in_row_major_order_whatever_their_layout() {
        let base = Tensor::arange(0f32, 60f32, &Device::Cpu)
            .unwrap()
            .reshape((6, 10))
            .unwrap();
        let cube = base.reshape((3, 4, 5)).unwrap();
        let views = [
            base.clone(),
            base.narrow(0, 2, 3).unwrap(),
            base.t().unwrap(),
            base.narrow(1, 3, 5).unwrap().t().unwrap(),
            base.narrow(0, 1, 4).unwrap().narrow(1, 2, 7).unwrap(),
            cube.permute((2, 0, 1)).unwrap(),
            base.to_dtype(DType::F64).unwrap().t().unwrap(),
        ];
        for (k, t) in views.iter().enumerate() {
            let want = t
                .flatten_all()
                .unwrap()
                .to_dtype(DType::F64)
                .unwrap()
                .to_vec1::<f64>()
                .unwrap();
            let mut got = vec![f64::NAN; t.elem_count()];
            tensor_into(t, &mut got).unwrap();
            assert_eq!(got, want, "view {k}: {:?} {:?}", t.dims(), t.stride());
        }
    }
}
