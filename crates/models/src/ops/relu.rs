//! ReLU as a fused CPU op whose backward is one pass and differentiable again.
//!
//! Candle's `relu` backward builds the mask with `zeros_like`, `ge`, `to_dtype` and `mul`:
//! four full-size passes per activation, a large share of a CNN's backward on CPU. Here the
//! forward is `max(x, 0)` and the backward is `ReluGrad(g, x) = g·[x > 0]` (PyTorch's mask),
//! itself linear in `g` with the same op as adjoint, so double backprop works (the mask has
//! zero derivative almost everywhere). Other devices and dtypes use Candle's `relu`.

use std::mem::MaybeUninit;

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::conv_ops::apply_bwd;

/// `max(x, 0)`, differentiable to any order.
pub fn relu(x: &Tensor) -> Result<Tensor> {
    if !fused(x) {
        return x.relu();
    }
    x.contiguous()?.apply_op1(Relu)
}

fn fused(x: &Tensor) -> bool {
    x.device().is_cpu() && matches!(x.dtype(), candle_core::DType::F32 | candle_core::DType::F64)
}

fn slice<'a, T>(v: &'a [T], l: &Layout, op: &str) -> Result<&'a [T]> {
    match l.contiguous_offsets() {
        Some((start, end)) => Ok(&v[start..end]),
        None => candle_core::bail!("{op}: expected a contiguous operand, got layout {l:?}"),
    }
}

struct Relu;

impl CustomOp1 for Relu {
    fn name(&self) -> &'static str {
        "breakeven-relu"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let out = match s {
            CpuStorage::F32(v) => CpuStorage::F32(positive_part(slice(v, l, self.name())?)),
            CpuStorage::F64(v) => CpuStorage::F64(positive_part(slice(v, l, self.name())?)),
            _ => candle_core::bail!("{}: expected f32 or f64, got {:?}", self.name(), l.shape()),
        };
        Ok((out, l.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, _y: &Tensor, g: &Tensor) -> Result<Option<Tensor>> {
        apply_bwd(g, x, ReluGrad).map(Some)
    }
}

/// `max(x, 0)` of a CPU storage, as [`relu`]'s kernel computes it (the fused convolution-ReLU
/// applies it to its own output).
pub(super) fn relu_cpu(s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
    Relu.cpu_fwd(s, l)
}

/// `g·[x > 0]`, recorded for double backprop where Candle keeps graphs (its derivative in `x`
/// is zero almost everywhere, so `x` may be the ReLU's output as well as its input).
pub(super) fn relu_grad(g: &Tensor, x: &Tensor) -> Result<Tensor> {
    apply_bwd(g, x, ReluGrad)
}

/// `g·[x > 0]`: linear in `g`, piecewise constant in `x`.
struct ReluGrad;

impl CustomOp2 for ReluGrad {
    fn name(&self) -> &'static str {
        "breakeven-relu-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        if l1.shape() != l2.shape() {
            candle_core::bail!(
                "{}: gradient {:?} and input {:?} differ in shape",
                self.name(),
                l1.shape(),
                l2.shape()
            );
        }
        let out = match (s1, s2) {
            (CpuStorage::F32(g), CpuStorage::F32(x)) => {
                CpuStorage::F32(mask(slice(g, l1, self.name())?, slice(x, l2, self.name())?))
            }
            (CpuStorage::F64(g), CpuStorage::F64(x)) => {
                CpuStorage::F64(mask(slice(g, l1, self.name())?, slice(x, l2, self.name())?))
            }
            _ => candle_core::bail!("{}: expected two f32 or two f64 operands", self.name()),
        };
        Ok((out, l1.shape().clone()))
    }

    fn bwd(
        &self,
        _g: &Tensor,
        x: &Tensor,
        _res: &Tensor,
        gg: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        Ok((Some(apply_bwd(gg, x, ReluGrad)?), None))
    }
}

/// Elements per parallel task: large activations (SimpleCNN's first layer: 4.2 M) are split
/// over the threads, which the serial loops left idle (3-4 ms per pass on one core of an Intel
/// Xeon); elementwise, so the result does not depend on the split.
const CHUNK: usize = 1 << 15;

/// `out[i] = f(a[i], b[i])`, in parallel chunks, written once (no zero fill first).
fn zip_map<T: Copy + Send + Sync>(a: &[T], b: &[T], f: impl Fn(T, T) -> T + Sync) -> Vec<T> {
    let n = a.len();
    assert_eq!(
        n,
        b.len(),
        "zip_map: operands of {n} and {} elements",
        b.len()
    );
    let mut out = Vec::with_capacity(n);
    let one = |o: &mut [MaybeUninit<T>], a: &[T], b: &[T]| {
        for ((o, &a), &b) in o.iter_mut().zip(a).zip(b) {
            o.write(f(a, b));
        }
    };
    let slots = &mut out.spare_capacity_mut()[..n];
    if n <= CHUNK {
        // One chunk: no hand-off to the thread pool.
        one(slots, a, b);
    } else {
        slots
            .par_chunks_mut(CHUNK)
            .zip(a.par_chunks(CHUNK).zip(b.par_chunks(CHUNK)))
            .for_each(|(o, (a, b))| one(o, a, b));
    }
    // SAFETY: the capacity is n, and the n slots were all written above (the chunks of `slots`,
    // `a` and `b` have the same lengths, and the zips stop at none of them early).
    unsafe { out.set_len(n) };
    out
}

/// `max(x, 0)` elementwise (as `f32::max`: a NaN gives 0).
fn positive_part<T: Float>(x: &[T]) -> Vec<T> {
    zip_map(x, x, |x, _| x.max_zero())
}

/// `g·[x > 0]` elementwise.
fn mask<T: Copy + Send + Sync + PartialOrd + Default>(g: &[T], x: &[T]) -> Vec<T> {
    let zero = T::default();
    zip_map(g, x, |g, x| if x > zero { g } else { zero })
}

/// The two element types of the fused ReLU.
trait Float: Copy + Send + Sync + PartialOrd {
    fn max_zero(self) -> Self;
}

impl Float for f32 {
    fn max_zero(self) -> Self {
        self.max(0.0)
    }
}

impl Float for f64 {
    fn max_zero(self) -> Self {
        self.max(0.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gradcheck::enable_double_backprop;
    use candle_core::{Device, Var};

    /// ∂f/∂x, keeping its graph (double-backprop mode) for a second derivative.
    fn d(f: &Tensor, x: &Var) -> Tensor {
        f.backward().unwrap().get(x).unwrap().clone()
    }

    #[test]
    fn large_tensors_split_over_threads_equal_the_direct_computation_in_f64() {
        // More than one parallel chunk (with a partial last one), exact zeros and a NaN.
        enable_double_backprop();
        let n = 3 * CHUNK + 17;
        let mut v: Vec<f64> = (0..n)
            .map(|i| ((i * 37 % 101) as f64) / 10.0 - 5.0)
            .collect();
        v[CHUNK + 3] = f64::NAN;
        let w: Vec<f64> = (0..n).map(|i| (i as f64 * 0.01).sin()).collect();
        let x = Var::from_tensor(&Tensor::from_vec(v.clone(), n, &Device::Cpu).unwrap()).unwrap();
        let wt = Tensor::from_vec(w.clone(), n, &Device::Cpu).unwrap();
        let y = relu(x.as_tensor()).unwrap();
        let expected: Vec<f64> = v.iter().map(|&x| if x > 0.0 { x } else { 0.0 }).collect();
        assert_eq!(y.to_vec1::<f64>().unwrap(), expected);
        // f = Σ w·relu(x)²/2: gradient w·relu(x), Hessian-vector product along 1: w·[x > 0].
        let f = (y.sqr().unwrap() * &wt).unwrap().sum_all().unwrap() * 0.5;
        let g = d(&f.unwrap(), &x);
        let grad: Vec<f64> = (0..n).map(|i| w[i] * expected[i]).collect();
        assert_eq!(g.to_vec1::<f64>().unwrap(), grad);
        let hv = d(&g.sum_all().unwrap(), &x);
        let hess: Vec<f64> = (0..n)
            .map(|i| if v[i] > 0.0 { w[i] } else { 0.0 })
            .collect();
        assert_eq!(hv.to_vec1::<f64>().unwrap(), hess);
    }

    #[test]
    fn values_gradient_and_second_order_match_candle_composition() {
        enable_double_backprop();
        let v: Vec<f64> = (0..60)
            .map(|i| ((i * 37 % 61) as f64) / 7.0 - 4.0)
            .collect();
        let x = Var::from_tensor(&Tensor::from_vec(v, (3, 4, 5), &Device::Cpu).unwrap()).unwrap();
        let w = Tensor::arange(0.0f64, 60.0, &Device::Cpu)
            .unwrap()
            .reshape((3, 4, 5))
            .unwrap();
        // f(x) = Σ w·relu(x)·x: first derivative w·[x>0]·2x, second 2w·[x>0] on the diagonal.
        let f = |r: &Tensor| {
            (r * x.as_tensor())
                .unwrap()
                .mul(&w)
                .unwrap()
                .sum_all()
                .unwrap()
        };
        let ours = relu(x.as_tensor()).unwrap();
        let theirs = x.as_tensor().relu().unwrap();
        assert_eq!(
            ours.to_vec3::<f64>().unwrap(),
            theirs.to_vec3::<f64>().unwrap()
        );
        let g = d(&f(&ours), &x);
        let expected = ((x
            .as_tensor()
            .gt(0.0)
            .unwrap()
            .to_dtype(candle_core::DType::F64)
            .unwrap()
            * &w)
            .unwrap()
            * (x.as_tensor() * 2.0).unwrap())
        .unwrap();
        assert_eq!(
            g.to_vec3::<f64>().unwrap(),
            expected.to_vec3::<f64>().unwrap()
        );
        // Hessian-vector product with v = 1: 2w·[x>0].
        let hv = d(&g.sum_all().unwrap(), &x);
        let expected = (x
            .as_tensor()
            .gt(0.0)
            .unwrap()
            .to_dtype(candle_core::DType::F64)
            .unwrap()
            * (&w * 2.0).unwrap())
        .unwrap();
        assert_eq!(
            hv.to_vec3::<f64>().unwrap(),
            expected.to_vec3::<f64>().unwrap()
        );
    }
}
