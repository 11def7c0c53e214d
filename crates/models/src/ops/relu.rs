//! ReLU as a fused CPU op whose backward is one pass and differentiable again.
//!
//! Candle's `relu` backward builds the mask with `zeros_like`, `ge`, `to_dtype` and `mul`:
//! four full-size passes per activation, a large share of a CNN's backward on CPU. Here the
//! forward is `max(x, 0)` and the backward is `ReluGrad(g, x) = g·[x > 0]` (PyTorch's mask),
//! itself linear in `g` with the same op as adjoint, so double backprop works (the mask has
//! zero derivative almost everywhere). Other devices and dtypes use Candle's `relu`.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor};

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
            CpuStorage::F32(v) => CpuStorage::F32(
                slice(v, l, self.name())?
                    .iter()
                    .map(|x| x.max(0.0))
                    .collect(),
            ),
            CpuStorage::F64(v) => CpuStorage::F64(
                slice(v, l, self.name())?
                    .iter()
                    .map(|x| x.max(0.0))
                    .collect(),
            ),
            _ => candle_core::bail!("{}: expected f32 or f64, got {:?}", self.name(), l.shape()),
        };
        Ok((out, l.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, _y: &Tensor, g: &Tensor) -> Result<Option<Tensor>> {
        apply_bwd(g, x, ReluGrad).map(Some)
    }
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

fn mask<T: Copy + PartialOrd + Default>(g: &[T], x: &[T]) -> Vec<T> {
    let zero = T::default();
    g.iter()
        .zip(x)
        .map(|(&g, &x)| if x > zero { g } else { zero })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gradcheck::enable_double_backprop;
    use candle_core::{Device, Var};

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
        let g = f(&ours).backward().unwrap().get(&x).unwrap().clone();
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
        let hv = g
            .sum_all()
            .unwrap()
            .backward()
            .unwrap()
            .get(&x)
            .unwrap()
            .clone();
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
