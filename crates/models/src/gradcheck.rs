//! Test harness: every architecture's loss gradient against central finite differences, its
//! double-backprop Hessian-vector product against finite differences of the gradient, its
//! parameter count against the reference implementation, and deterministic construction.
//! All in f64 on tiny widths and inputs (seconds on two cores).

use candle_core::{DType, Device, Result, Tensor, Var};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::{build, cross_entropy, init, Mode, Model, ModelSpec};

/// Double backprop needs `CANDLE_GRAD_DO_NOT_DETACH=1` before a thread's first backward:
/// candle-core 0.11.1 `backprop.rs` reads it into a `thread_local!` on first use
/// (SCIENCE.md §7). libtest runs each test on its own thread, so every test that calls
/// `backward` calls this first; breakeven-curvature's switch sets the variable (once) and
/// checks the current thread.
pub fn enable_double_backprop() {
    breakeven_curvature::enable_double_backprop().expect("double backprop on this thread");
}

/// A model of `spec` in f64 on CPU with a random batch and labels.
pub struct Setup {
    pub model: Box<dyn Model>,
    pub x: Tensor,
    pub y: Tensor,
}

pub fn setup(
    spec: &ModelSpec,
    input: (usize, usize, usize),
    classes: usize,
    batch: usize,
    seed: u64,
) -> Setup {
    let model = build(spec, input, classes, DType::F64, &Device::Cpu, seed).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5eed);
    let (c, h, w) = input;
    let x = Tensor::from_vec(
        init::normal(&mut rng, batch * c * h * w, 0.0, 1.0),
        (batch, c, h, w),
        &Device::Cpu,
    )
    .unwrap();
    let labels: Vec<u32> = (0..batch)
        .map(|_| rng.random_range(0..classes as u32))
        .collect();
    let y = Tensor::from_vec(labels, batch, &Device::Cpu).unwrap();
    Setup { model, x, y }
}

impl Setup {
    pub fn loss(&self) -> Result<Tensor> {
        cross_entropy(&self.model.forward(&self.x, Mode::BatchStats)?, &self.y)
    }

    fn grads(&self) -> Result<Vec<Tensor>> {
        let g = self.loss()?.backward()?;
        self.model
            .params()
            .iter()
            .map(|p| {
                p.var
                    .zeros_like()
                    .map(|z| g.get(&p.var).cloned().unwrap_or(z))
            })
            .collect()
    }

    /// Runs `f` with parameter `p` shifted by `delta` (a tensor of its shape), then restores it.
    fn shifted<T>(&self, shifts: &[(usize, Tensor)], f: impl FnOnce() -> Result<T>) -> Result<T> {
        let params = self.model.params();
        let saved: Vec<Tensor> = shifts
            .iter()
            .map(|(i, _)| params[*i].var.as_tensor().copy())
            .collect::<Result<_>>()?;
        for (i, d) in shifts {
            params[*i].var.set(&(params[*i].var.as_tensor() + d)?)?;
        }
        let out = f();
        for ((i, _), s) in shifts.iter().zip(saved) {
            params[*i].var.set(&s)?;
        }
        out
    }

    /// Central differences of the loss on `samples` random coordinates against autodiff.
    pub fn check_gradient(&self, samples: usize, seed: u64) {
        enable_double_backprop();
        let grads = self.grads().unwrap();
        let params = self.model.params();
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let eps = 1e-6;
        let scale = grads
            .iter()
            .map(|g| {
                g.abs()
                    .unwrap()
                    .max_all()
                    .unwrap()
                    .to_scalar::<f64>()
                    .unwrap()
            })
            .fold(0.0, f64::max);
        assert!(scale > 0.0, "all gradients are zero");
        for s in 0..samples {
            // Every parameter tensor gets checked at least once, then random ones.
            let i = if s < params.len() {
                s
            } else {
                rng.random_range(0..params.len())
            };
            let var: &Var = &params[i].var;
            let j = rng.random_range(0..var.elem_count());
            let unit = |d: f64| {
                let mut v = vec![0.0; var.elem_count()];
                v[j] = d;
                Tensor::from_vec(v, var.shape(), &Device::Cpu)
            };
            let at = |d: f64| {
                self.shifted(&[(i, unit(d).unwrap())], || self.loss()?.to_scalar::<f64>())
                    .unwrap()
            };
            let fd = (at(eps) - at(-eps)) / (2.0 * eps);
            let auto = grads[i]
                .flatten_all()
                .unwrap()
                .get(j)
                .unwrap()
                .to_scalar::<f64>()
                .unwrap();
            assert!(
                (fd - auto).abs() <= 1e-6 * scale + 1e-5 * auto.abs(),
                "{}[{j}]: autodiff {auto:e} vs finite differences {fd:e} (max |g| {scale:e})",
                params[i].name
            );
        }
    }

    /// Double-backprop H·v against (∇L(θ+εv) − ∇L(θ−εv)) / 2ε for a random direction v.
    pub fn check_hvp(&self, seed: u64) {
        enable_double_backprop();
        let params = self.model.params();
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let v: Vec<Tensor> = params
            .iter()
            .map(|p| {
                Tensor::from_vec(
                    init::normal(&mut rng, p.var.elem_count(), 0.0, 1.0),
                    p.var.shape(),
                    &Device::Cpu,
                )
                .unwrap()
            })
            .collect();
        let grads = self.grads().unwrap();
        let gv = grads
            .iter()
            .zip(&v)
            .map(|(g, v)| (g * v).unwrap().sum_all().unwrap())
            .reduce(|a, b| (a + b).unwrap())
            .unwrap();
        let hv_store = gv.backward().unwrap();
        let hv: Vec<f64> = params
            .iter()
            .flat_map(|p| {
                hv_store
                    .get(&p.var)
                    .map(|t| t.flatten_all().unwrap().to_vec1::<f64>().unwrap())
                    .unwrap_or(vec![0.0; p.var.elem_count()])
            })
            .collect();
        let eps = 1e-8;
        let grad_at = |d: f64| -> Vec<f64> {
            let shifts: Vec<(usize, Tensor)> = v
                .iter()
                .enumerate()
                .map(|(i, v)| (i, (v * d).unwrap()))
                .collect();
            self.shifted(&shifts, || self.grads())
                .unwrap()
                .iter()
                .flat_map(|g| g.flatten_all().unwrap().to_vec1::<f64>().unwrap())
                .collect()
        };
        let (plus, minus) = (grad_at(eps), grad_at(-eps));
        let fd: Vec<f64> = plus
            .iter()
            .zip(&minus)
            .map(|(p, m)| (p - m) / (2.0 * eps))
            .collect();
        let norm = |a: &[f64]| a.iter().map(|x| x * x).sum::<f64>().sqrt();
        let diff: Vec<f64> = hv.iter().zip(&fd).map(|(a, b)| a - b).collect();
        let rel = norm(&diff) / norm(&fd);
        assert!(
            norm(&hv) > 0.0,
            "Hv is zero: double backprop did not record a graph"
        );
        assert!(
            rel < 1e-6,
            "‖Hv − fd‖/‖fd‖ = {rel:e} (‖Hv‖ {:e}, ‖fd‖ {:e})",
            norm(&hv),
            norm(&fd)
        );
    }
}

/// Total number of trainable scalars.
pub fn param_count(model: &dyn Model) -> usize {
    model.params().iter().map(|p| p.var.elem_count()).sum()
}

/// Builds `spec` twice with one seed and once with another: bit-identical, then different.
pub fn check_deterministic(spec: &ModelSpec, input: (usize, usize, usize), classes: usize) {
    let flat = |seed| -> Vec<u64> {
        let m = build(spec, input, classes, DType::F32, &Device::Cpu, seed).unwrap();
        m.params()
            .iter()
            .flat_map(|p| p.var.flatten_all().unwrap().to_vec1::<f32>().unwrap())
            .map(|x| x.to_bits() as u64)
            .collect()
    };
    let a = flat(11);
    assert_eq!(a, flat(11), "same seed, different weights");
    assert_ne!(a, flat(12), "different seeds, same weights");
}

/// The parameter names, for checks against the reference `state_dict` keys.
pub fn names(model: &dyn Model) -> Vec<String> {
    model.params().iter().map(|p| p.name.clone()).collect()
}
