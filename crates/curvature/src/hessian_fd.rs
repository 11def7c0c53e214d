//! The Hessian by finite differences of the gradient, and the one step rule every finite
//! difference of this workspace uses (the operator here and breakeven-penalties' FD penalties):
//! `Hv ≈ (g(θ+εv) − g(θ−εv)) / 2ε` (central, two gradients per product) or
//! `Hv ≈ (g(θ+εv) − g(θ)) / ε` (one-sided, one gradient when g(θ) is known), no second-order
//! graph.
//!
//! The step. Let s = ε‖v‖ be the length of the move in parameter space and u the unit roundoff
//! of the dtype. Rounding: θ + εv is stored to within u‖θ‖ and each gradient is computed to
//! within about u times its own scale, so the difference carries an absolute error of order
//! `u (1 + ‖θ‖) ‖H‖`, i.e. a relative error of order `u (1 + ‖θ‖) / s` once divided by ε.
//! Truncation: the next Taylor term is `(s/2) ∇³L[v̂, v̂]` (one-sided) or `(s²/6) ∇⁴L[v̂, v̂, v̂]`
//! (central); a network's derivatives change on the scale of its weights, so relative to Hv it
//! is of order `s / (1 + ‖θ‖)` or `(s / (1 + ‖θ‖))²`. Balancing the two:
//! `s = h (1 + ‖θ‖)` with `h = √u` (one-sided) or `h = ∛u` (central), i.e.
//! [`fd_step`]: `ε = h (1 + ‖θ‖) / ‖v‖` (h: [`default_rel_step`], or `FdConfig::rel_step`).
//! In f64 that is h = 1.5e-8 / 6.1e-6, in f32 3.5e-4 / 4.9e-3.
//!
//! Accuracy: on a smooth tanh MLP this matches double backprop to < 1e-6 relative in f64 and
//! ~4e-3 in f32 (tests). It is poor wherever the loss is not smooth at the scale of the step:
//! a step straddling a ReLU/max-pool kink of jump `J` in the gradient reports spurious
//! curvature `≈ J / 2ε` (tested); on a ReLU network the crossed kinks are a part of the
//! difference that no choice of ε in f32 removes (breakeven-penalties measures it on
//! SimpleCNN). Use [`crate::HessianOperator`] for those nets.

use candle_core::{DType, Tensor, Var};

use crate::error::{CurvatureError, Result};
use crate::loss::{loss_and_gradient, LossFn};
use crate::operator::{check_len, LinearOperator};
use crate::params::{num_params, params_to_vec, vec_to_tensors};

/// Central or one-sided differences.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FdScheme {
    /// `(g(θ+εv) − g(θ−εv)) / 2ε`: error O(ε²), two gradients.
    #[default]
    Central,
    /// `(g(θ+εv) − g(θ)) / ε`: error O(ε), one gradient when g(θ) is at hand.
    OneSided,
}

/// Settings of [`FdHessianOperator`].
#[derive(Debug, Clone, Default)]
pub struct FdConfig {
    /// Relative step `h` of [`fd_step`]; `None`: [`default_rel_step`] of the parameters' dtype.
    pub rel_step: Option<f64>,
    /// Central (default) or one-sided differences.
    pub scheme: FdScheme,
}

/// Unit roundoff of a floating dtype (machine epsilon, the spacing of floats at 1).
pub fn unit_roundoff(dtype: DType) -> f64 {
    match dtype {
        DType::F64 => f64::EPSILON,
        DType::F32 => f32::EPSILON as f64,
        DType::F16 => 9.77e-4,
        DType::BF16 => 7.81e-3,
        _ => f32::EPSILON as f64,
    }
}

/// The relative step that balances rounding and truncation (module docs): `√u` one-sided,
/// `∛u` central, u the unit roundoff of `dtype`.
pub fn default_rel_step(dtype: DType, scheme: FdScheme) -> f64 {
    let u = unit_roundoff(dtype);
    match scheme {
        FdScheme::OneSided => u.sqrt(),
        FdScheme::Central => u.cbrt(),
    }
}

/// The step ε of a difference along `v` at `θ`: `ε = h (1 + ‖θ‖) / ‖v‖`, so that the move εv
/// has length `h (1 + ‖θ‖)` (module docs). `theta_norm` is the norm of what is perturbed (the
/// parameters, or the input batch for an input-gradient penalty).
pub fn fd_step(rel_step: f64, theta_norm: f64, v_norm: f64) -> f64 {
    rel_step * (1.0 + theta_norm) / v_norm
}

/// Runs `f` with `vars` moved to θ + scale·dir, then writes the saved θ back: a deep copy taken
/// first, so the restore is exact rather than θ + εd − εd, also when `f` fails (TESTING.md §8).
/// `scale = 0` runs `f` at θ untouched.
pub fn with_perturbed<T, E: From<candle_core::Error>>(
    vars: &[Var],
    dir: &[Tensor],
    scale: f64,
    f: impl FnOnce() -> std::result::Result<T, E>,
) -> std::result::Result<T, E> {
    if scale == 0.0 {
        return f();
    }
    let saved = vars
        .iter()
        .map(|p| Ok(p.as_tensor().copy()?.detach()))
        .collect::<candle_core::Result<Vec<_>>>()?;
    let moved = (|| {
        for ((p, s), d) in vars.iter().zip(&saved).zip(dir) {
            p.set(&s.add(&d.affine(scale, 0.0)?)?)?;
        }
        Ok::<(), candle_core::Error>(())
    })();
    let result = match moved {
        Ok(()) => f(),
        Err(e) => Err(e.into()),
    };
    // Restore every variable even if one fails, then report the first error.
    let mut restored = Ok(());
    for (p, s) in vars.iter().zip(&saved) {
        if let Err(e) = p.set(s) {
            restored = restored.and(Err(e));
        }
    }
    let out = result?;
    restored?;
    Ok(out)
}

/// The finite difference of a gradient along a direction: `grad_at(s)` is the gradient at the
/// point moved by `s` times the direction; `at_zero` is the gradient at the point itself, used
/// by [`FdScheme::OneSided`] instead of a second evaluation. Returns `(g₊ − g₋) / 2ε` or
/// `(g₊ − g) / ε` per tensor, in the gradients' dtype.
pub fn directional_difference<E: From<candle_core::Error>>(
    eps: f64,
    scheme: FdScheme,
    at_zero: Option<&[Tensor]>,
    mut grad_at: impl FnMut(f64) -> std::result::Result<Vec<Tensor>, E>,
) -> std::result::Result<Vec<Tensor>, E> {
    if !(eps > 0.0 && eps.is_finite()) {
        let msg = format!("finite-difference step must be positive and finite, got {eps}");
        return Err(candle_core::Error::Msg(msg).into());
    }
    let plus = grad_at(eps)?;
    let (minus, denom) = match (scheme, at_zero) {
        (FdScheme::OneSided, Some(g)) => (g.to_vec(), eps),
        (FdScheme::OneSided, None) => (grad_at(0.0)?, eps),
        (FdScheme::Central, _) => (grad_at(-eps)?, 2.0 * eps),
    };
    if plus.len() != minus.len() {
        let msg = format!(
            "finite difference: {} gradients at the moved point, {} at the other",
            plus.len(),
            minus.len()
        );
        return Err(candle_core::Error::Msg(msg).into());
    }
    let diff = plus
        .iter()
        .zip(&minus)
        .map(|(a, b)| (a.detach() - b.detach())?.affine(1.0 / denom, 0.0))
        .collect::<candle_core::Result<Vec<_>>>()?;
    Ok(diff)
}

/// The finite-difference Hessian operator of the mean loss of a [`LossFn`]. Parameters are
/// perturbed in place and restored bit for bit after every product, also when it fails.
pub struct FdHessianOperator<L> {
    vars: Vec<Var>,
    loss: L,
    dim: usize,
    h: f64,
    scheme: FdScheme,
}

impl<L> std::fmt::Debug for FdHessianOperator<L> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FdHessianOperator")
            .field("dim", &self.dim)
            .field("h", &self.h)
            .field("scheme", &self.scheme)
            .finish()
    }
}

fn l2(x: &[f64]) -> f64 {
    x.iter().map(|a| a * a).sum::<f64>().sqrt()
}

impl<L: LossFn> FdHessianOperator<L> {
    /// Wraps the loss; the step is chosen from the coarsest dtype among `vars`.
    pub fn new(vars: Vec<Var>, loss: L, cfg: &FdConfig) -> Result<Self> {
        if loss.num_batches() == 0 {
            return Err(CurvatureError::EmptyData("LossFn::num_batches() is 0"));
        }
        let coarsest = vars
            .iter()
            .map(|v| v.dtype())
            .max_by(|a, b| unit_roundoff(*a).total_cmp(&unit_roundoff(*b)))
            .unwrap_or(DType::F64);
        let h = cfg
            .rel_step
            .unwrap_or(default_rel_step(coarsest, cfg.scheme));
        if !(h > 0.0 && h.is_finite()) {
            return Err(CurvatureError::InvalidConfig {
                key: "rel_step",
                reason: format!("must be positive and finite, got {h}"),
            });
        }
        Ok(Self {
            dim: num_params(&vars),
            vars,
            loss,
            h,
            scheme: cfg.scheme,
        })
    }

    /// The relative step `h` in use.
    pub fn rel_step(&self) -> f64 {
        self.h
    }

    /// The wrapped loss.
    pub fn loss_fn(&mut self) -> &mut L {
        &mut self.loss
    }
}

impl<L: LossFn> LinearOperator for FdHessianOperator<L> {
    fn dim(&self) -> usize {
        self.dim
    }

    fn apply(&mut self, v: &[f64]) -> Result<Vec<f64>> {
        check_len("FdHessianOperator::apply input", v, self.dim)?;
        if v.iter().all(|x| *x == 0.0) {
            return Ok(vec![0.0; self.dim]);
        }
        let eps = fd_step(self.h, l2(&params_to_vec(&self.vars)?), l2(v));
        let dir = vec_to_tensors(v, &self.vars)?;
        let (vars, loss) = (&self.vars, &mut self.loss);
        // The gradients come back as f64 host vectors; the difference is taken in f64.
        let grad_at = |s: f64| -> Result<Vec<Tensor>> {
            let (_, g) = with_perturbed(vars, &dir, s, || loss_and_gradient(&mut *loss, vars))?;
            Ok(vec![Tensor::new(g, &candle_core::Device::Cpu)?])
        };
        let diff = directional_difference(eps, self.scheme, None, grad_at)?;
        Ok(diff[0].to_vec1::<f64>()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn bits(v: &Var) -> Vec<u32> {
        v.as_tensor()
            .to_vec1::<f32>()
            .unwrap()
            .iter()
            .map(|x| x.to_bits())
            .collect()
    }

    #[test]
    fn with_perturbed_restores_bit_for_bit_on_success_and_on_error() {
        let p = Var::new(&[0.1f32, 1e-3, -7.3], &Device::Cpu).unwrap();
        let before = bits(&p);
        let d = Tensor::new(&[0.3f32, -0.9, 1.0 / 3.0], &Device::Cpu).unwrap();
        let seen = with_perturbed(
            std::slice::from_ref(&p),
            std::slice::from_ref(&d),
            1e-2,
            || p.as_tensor().to_vec1::<f32>(),
        )
        .unwrap();
        assert!((seen[0] - (0.1 + 0.003)).abs() < 1e-6);
        assert_eq!(bits(&p), before);
        let err = with_perturbed(
            std::slice::from_ref(&p),
            std::slice::from_ref(&d),
            0.5,
            || Err::<(), _>(candle_core::Error::Msg("boom".into())),
        );
        assert!(err.is_err());
        assert_eq!(bits(&p), before);
    }

    #[test]
    fn the_step_rule_moves_h_times_one_plus_theta() {
        assert_eq!(
            default_rel_step(DType::F64, FdScheme::OneSided),
            f64::EPSILON.sqrt()
        );
        assert_eq!(
            default_rel_step(DType::F32, FdScheme::Central),
            (f32::EPSILON as f64).cbrt()
        );
        // ‖εv‖ = h (1 + ‖θ‖) whatever the length of v.
        for v_norm in [1e-3, 1.0, 250.0] {
            let eps = fd_step(1e-4, 9.0, v_norm);
            assert!((eps * v_norm - 1e-3).abs() < 1e-15);
        }
        // One-sided on a quadratic is exact up to rounding: g(θ) = 3θ, Hv = 3v.
        let hv = directional_difference(
            fd_step(1e-8, 1.0, 2.0),
            FdScheme::OneSided,
            Some(&[Tensor::new(&[3.0f64], &Device::Cpu).unwrap()]),
            |s| Tensor::new(&[3.0 * (1.0 + 2.0 * s)], &Device::Cpu).map(|t| vec![t]),
        )
        .unwrap();
        let got = hv[0].to_vec1::<f64>().unwrap()[0];
        assert!((got - 6.0).abs() < 1e-6, "{got}");
    }
}
