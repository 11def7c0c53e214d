//! Tiny seeded models for the proofs: softmax regression, a tanh MLP, a tanh CNN on
//! `breakeven_models::ops::conv2d`, a tanh MLP with BatchNorm, each recording the modes of its
//! forward passes.

use std::sync::{Mutex, Once};

use breakeven_models::init::Init;
use breakeven_models::layers::BatchNorm;
use breakeven_models::ops::conv2d;
use breakeven_models::store::ParamStore;
use breakeven_models::{Mode, Model, Param};
use candle_core::{DType, Device, Result, Tensor, Var};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// Double backprop needs `CANDLE_GRAD_DO_NOT_DETACH` set before this thread's first backward:
/// candle-core reads it once per thread into a thread-local (`backprop.rs`). Every test calls
/// this first, as the runner does: the first call also starts curvature's detaching worker, so
/// these tests check the penalized gradients that run their last pass there.
pub fn enable_double_backprop() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        breakeven_curvature::enable_double_backprop().expect("double backprop on this thread");
    });
    breakeven_curvature::check_double_backprop().expect("double backprop on this thread");
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    /// logits = x Wᵀ + b, x: N × D.
    Softmax,
    /// D → tanh(H) → K.
    Mlp,
    /// N × 2 × 4 × 4 → conv 3×3 (3 channels, padding 1) → tanh → flatten → K.
    Cnn,
    /// D → Linear(H) → BatchNorm1d → tanh → K.
    MlpBn,
}

pub struct Net {
    arch: Arch,
    params: Vec<Param>,
    buffers: Vec<(String, Var)>,
    bn: Option<BatchNorm>,
    pub modes: Mutex<Vec<Mode>>,
    /// Test hooks: NaN logits in `Mode::BatchStats` passes; an error from the forward call with
    /// this 0-based index.
    pub nan_in_batch_stats: bool,
    pub fail_at_call: Option<usize>,
}

pub const D: usize = 5;
pub const H: usize = 4;
pub const K: usize = 3;

impl Net {
    pub fn new(arch: Arch, dtype: DType, seed: u64) -> Net {
        let mut store = ParamStore::new(seed, dtype, &Device::Cpu);
        let init = Init::Normal {
            mean: 0.0,
            std: 0.6,
        };
        let mut bn = None;
        match arch {
            Arch::Softmax => {
                store.param("w".into(), &[K, D], init).unwrap();
                store.param("b".into(), &[K], init).unwrap();
            }
            Arch::Mlp => {
                store.param("w1".into(), &[H, D], init).unwrap();
                store.param("b1".into(), &[H], init).unwrap();
                store.param("w2".into(), &[K, H], init).unwrap();
                store.param("b2".into(), &[K], init).unwrap();
            }
            Arch::Cnn => {
                store
                    .param("conv.weight".into(), &[3, 2, 3, 3], init)
                    .unwrap();
                store.param("conv.bias".into(), &[3], init).unwrap();
                store
                    .param(
                        "fc.weight".into(),
                        &[K, 48],
                        Init::Normal {
                            mean: 0.0,
                            std: 0.2,
                        },
                    )
                    .unwrap();
                store.param("fc.bias".into(), &[K], init).unwrap();
            }
            Arch::MlpBn => {
                store.param("w1".into(), &[H, D], init).unwrap();
                bn = Some(BatchNorm::new(&mut store, "bn", H).unwrap());
                store.param("w2".into(), &[K, H], init).unwrap();
                store.param("b2".into(), &[K], init).unwrap();
            }
        }
        let (params, buffers) = store.finish();
        Net {
            arch,
            params,
            buffers,
            bn,
            modes: Mutex::new(Vec::new()),
            nan_in_batch_stats: false,
            fail_at_call: None,
        }
    }

    pub fn vars(&self) -> Vec<Var> {
        self.params.iter().map(|p| p.var.clone()).collect()
    }

    pub fn take_modes(&self) -> Vec<Mode> {
        std::mem::take(&mut *self.modes.lock().unwrap())
    }
}

fn linear(x: &Tensor, w: &Var, b: &Var) -> Result<Tensor> {
    x.matmul(&w.as_tensor().t()?)?.broadcast_add(b.as_tensor())
}

impl Model for Net {
    fn forward(&self, x: &Tensor, mode: Mode) -> Result<Tensor> {
        {
            let mut modes = self.modes.lock().unwrap();
            if self.fail_at_call == Some(modes.len()) {
                candle_core::bail!("test hook: forward call {} fails", modes.len());
            }
            modes.push(mode);
        }
        let logits = self.logits(x, mode)?;
        if self.nan_in_batch_stats && mode == Mode::BatchStats {
            return logits.affine(f64::NAN, 0.0);
        }
        Ok(logits)
    }

    fn params(&self) -> &[Param] {
        &self.params
    }

    fn buffers(&self) -> Vec<(String, Var)> {
        self.buffers.clone()
    }
}

impl Net {
    fn logits(&self, x: &Tensor, mode: Mode) -> Result<Tensor> {
        let p: Vec<&Var> = self.params.iter().map(|p| &p.var).collect();
        match self.arch {
            Arch::Softmax => linear(x, p[0], p[1]),
            Arch::Mlp => linear(&linear(x, p[0], p[1])?.tanh()?, p[2], p[3]),
            Arch::Cnn => {
                let h = conv2d(x, p[0].as_tensor(), Some(p[1].as_tensor()), 1, 1)?.tanh()?;
                linear(&h.flatten_from(1)?, p[2], p[3])
            }
            Arch::MlpBn => {
                // Params in registration order: w1, bn.weight, bn.bias, w2, b2.
                let h = x.matmul(&p[0].as_tensor().t()?)?;
                let h = self.bn.as_ref().expect("bn").forward(&h, mode)?.tanh()?;
                linear(&h, p[3], p[4])
            }
        }
    }
}

/// A seeded batch of `n` inputs for `arch` and labels in 0..K.
pub fn batch(arch: &Arch, n: usize, dtype: DType, seed: u64) -> (Tensor, Tensor) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let shape: Vec<usize> = match arch {
        Arch::Cnn => vec![n, 2, 4, 4],
        _ => vec![n, D],
    };
    let count: usize = shape.iter().product();
    let x = breakeven_models::init::normal(&mut rng, count, 0.0, 1.0);
    let x = Tensor::from_vec(x, shape, &Device::Cpu)
        .unwrap()
        .to_dtype(dtype)
        .unwrap();
    let y: Vec<u32> = (0..n)
        .map(|i| ((i * 7 + seed as usize) % K) as u32)
        .collect();
    (x, Tensor::from_vec(y, n, &Device::Cpu).unwrap())
}

/// Flattened f64 values of tensors, concatenated.
pub fn flat(ts: &[Tensor]) -> Vec<f64> {
    ts.iter()
        .flat_map(|t| {
            t.flatten_all()
                .unwrap()
                .to_dtype(DType::F64)
                .unwrap()
                .to_vec1::<f64>()
                .unwrap()
        })
        .collect()
}
