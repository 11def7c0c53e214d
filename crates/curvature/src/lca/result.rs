//! The result of a loss change allocation: per-tensor allocations, helped/hurt counts, the
//! integration error against the measured ΔL, and the cost in gradient evaluations.

use candle_core::{Tensor, Var};

/// The allocation of one parameter tensor (a layer's weight or bias).
#[derive(Debug, Clone)]
pub struct TensorAllocation {
    /// The name from [`LcaConfig::names`](super::LcaConfig::names), or `param{i}`.
    pub name: String,
    /// Shape of the parameter.
    pub shape: Vec<usize>,
    /// `A_i` of each scalar, row-major like the parameter.
    pub values: Vec<f64>,
    /// `Σ A_i` over this tensor.
    pub total: f64,
    /// Scalars with `A_i < 0` (helped).
    pub helped: usize,
    /// Scalars with `A_i > 0` (hurt).
    pub hurt: usize,
    /// Scalars with `A_i == 0` (did not move, or zero gradient along the whole path).
    pub zero: usize,
}

/// What one step's loss change allocation cost.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LcaCost {
    /// Forward + backward passes over the measurement set made for this step.
    pub gradient_evaluations: usize,
    /// Endpoint gradients taken from the previous step instead of recomputed.
    pub reused_gradients: usize,
    /// Forward-only passes (endpoint losses the rule's nodes do not provide).
    pub loss_evaluations: usize,
}

/// The loss change allocation of one step θ0 → θ1.
#[derive(Debug, Clone)]
pub struct LcaResult {
    /// Per parameter tensor, in the order of the `Var`s.
    pub tensors: Vec<TensorAllocation>,
    /// `L(θ0)`, mean over the measurement set.
    pub loss_before: f64,
    /// `L(θ1)`.
    pub loss_after: f64,
    /// The measured change `L(θ1) − L(θ0)`.
    pub true_delta: f64,
    /// `Σ_i A_i`, the change the quadrature accounts for.
    pub allocated: f64,
    /// `allocated − true_delta`: the quadrature (plus rounding) error.
    pub integration_error: f64,
    /// `|integration_error| / |true_delta|` (0 when both are 0, infinite when only ΔL is 0).
    pub relative_error: f64,
    /// Scalars with `A_i < 0`, over all tensors.
    pub helped: usize,
    /// Scalars with `A_i > 0`.
    pub hurt: usize,
    /// Scalars with `A_i == 0`.
    pub zero: usize,
    /// Gradient and loss passes spent.
    pub cost: LcaCost,
}

impl LcaResult {
    /// Total number of scalar parameters.
    pub fn num_params(&self) -> usize {
        self.helped + self.hurt + self.zero
    }
    /// Fraction of parameters that helped (`A_i < 0`).
    pub fn fraction_helped(&self) -> f64 {
        self.helped as f64 / self.num_params().max(1) as f64
    }
    /// Fraction of parameters that hurt (`A_i > 0`).
    pub fn fraction_hurt(&self) -> f64 {
        self.hurt as f64 / self.num_params().max(1) as f64
    }
    /// Fraction of parameters with `A_i == 0`.
    pub fn fraction_zero(&self) -> f64 {
        self.zero as f64 / self.num_params().max(1) as f64
    }
    /// The allocations as `f64` CPU tensors shaped like the parameters.
    pub fn allocation_tensors(&self) -> candle_core::Result<Vec<Tensor>> {
        self.tensors
            .iter()
            .map(|t| Tensor::from_slice(&t.values, t.shape.as_slice(), &candle_core::Device::Cpu))
            .collect()
    }
}

/// Splits `A = Δθ ⊙ ∫g` by parameter tensor and counts signs.
pub(super) fn summarize(
    params: &[Var],
    names: &[String],
    delta: &[f64],
    acc: &[f64],
    (loss0, loss1): (f64, f64),
    cost: LcaCost,
) -> LcaResult {
    let mut tensors = Vec::with_capacity(params.len());
    let mut off = 0;
    for (i, var) in params.iter().enumerate() {
        let n = var.elem_count();
        let values: Vec<f64> = (off..off + n).map(|j| delta[j] * acc[j]).collect();
        off += n;
        let name = match names.get(i) {
            Some(name) => name.clone(),
            None => format!("param{i}"),
        };
        tensors.push(TensorAllocation {
            name,
            shape: var.dims().to_vec(),
            total: values.iter().sum(),
            helped: values.iter().filter(|a| **a < 0.0).count(),
            hurt: values.iter().filter(|a| **a > 0.0).count(),
            zero: values.iter().filter(|a| **a == 0.0).count(),
            values,
        });
    }
    let allocated: f64 = tensors.iter().map(|t| t.total).sum();
    let true_delta = loss1 - loss0;
    let integration_error = allocated - true_delta;
    let relative_error = match (integration_error == 0.0, true_delta == 0.0) {
        (true, _) => 0.0,
        (false, true) => f64::INFINITY,
        (false, false) => integration_error.abs() / true_delta.abs(),
    };
    LcaResult {
        helped: tensors.iter().map(|t| t.helped).sum(),
        hurt: tensors.iter().map(|t| t.hurt).sum(),
        zero: tensors.iter().map(|t| t.zero).sum(),
        tensors,
        loss_before: loss0,
        loss_after: loss1,
        true_delta,
        allocated,
        integration_error,
        relative_error,
        cost,
    }
}
