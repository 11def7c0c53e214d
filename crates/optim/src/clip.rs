//! Global L2 gradient-norm clipping with `torch.nn.utils.clip_grad_norm_` semantics.

use candle_core::{DType, Result, Tensor};

/// ‖(g_1, …, g_n)‖₂ over all gradients together, accumulated in f64.
pub fn global_grad_norm(grads: &[Tensor]) -> Result<f64> {
    let mut sum_sq = 0.0f64;
    for g in grads {
        sum_sq += g
            .to_dtype(DType::F64)?
            .sqr()?
            .sum_all()?
            .to_scalar::<f64>()?;
    }
    Ok(sum_sq.sqrt())
}

/// Scales `grads` in place so their global L2 norm is at most `max_norm` and returns the norm
/// **before** clipping, like `clip_grad_norm_`: coefficient `max_norm / (norm + 1e-6)`, clamped
/// to 1 (so gradients under the limit are multiplied by exactly 1 and stay bit-identical).
///
/// A non-finite norm is returned as is and the gradients are left untouched; the caller decides
/// (PyTorch's default would silently spread the NaN into every gradient).
pub fn clip_grad_norm(grads: &mut [Tensor], max_norm: f64) -> Result<f64> {
    let norm = global_grad_norm(grads)?;
    if !norm.is_finite() {
        return Ok(norm);
    }
    let coef = max_norm / (norm + 1e-6);
    if coef < 1.0 {
        for g in grads.iter_mut() {
            *g = g.affine(coef, 0.0)?;
        }
    }
    Ok(norm)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn t(v: &[f64]) -> Tensor {
        Tensor::new(v, &Device::Cpu).unwrap()
    }

    #[test]
    fn clips_to_max_norm_and_returns_pre_clip_norm() {
        // ‖(3, 4, 12)‖ = 13.
        let mut grads = vec![t(&[3.0, 4.0]), t(&[12.0])];
        let norm = clip_grad_norm(&mut grads, 6.5).unwrap();
        assert_eq!(norm, 13.0);
        let coef = 6.5 / (13.0 + 1e-6);
        let got: Vec<f64> = grads
            .iter()
            .flat_map(|g| g.to_vec1::<f64>().unwrap())
            .collect();
        let want = [3.0 * coef, 4.0 * coef, 12.0 * coef];
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() < 1e-14, "{got:?}");
        }
        assert!((global_grad_norm(&grads).unwrap() - 6.5).abs() < 1e-6);
    }

    #[test]
    fn leaves_small_gradients_bit_identical() {
        let mut grads = vec![t(&[0.1, -0.2]), t(&[0.3])];
        let before: Vec<Vec<f64>> = grads.iter().map(|g| g.to_vec1().unwrap()).collect();
        let norm = clip_grad_norm(&mut grads, 1.0).unwrap();
        assert!((norm - (0.01f64 + 0.04 + 0.09).sqrt()).abs() < 1e-15);
        let after: Vec<Vec<f64>> = grads.iter().map(|g| g.to_vec1().unwrap()).collect();
        assert_eq!(before, after);
    }

    #[test]
    fn non_finite_norm_is_reported_not_spread() {
        let mut grads = vec![t(&[f64::NAN, 1.0]), t(&[2.0])];
        let norm = clip_grad_norm(&mut grads, 1.0).unwrap();
        assert!(norm.is_nan());
        assert_eq!(grads[1].to_vec1::<f64>().unwrap(), vec![2.0]);
    }
}
