//! BatchNorm over the channel axis of N × C (1-d) or N × C × H × W (2-d) inputs, with
//! PyTorch's semantics and names, built from differentiable tensor ops so that double
//! backprop through batch statistics works (Candle has no fused BatchNorm with a backward).

use std::sync::Mutex;

use candle_core::{DType, Result, Tensor, Var};

use crate::init::Init;
use crate::store::{key, ParamStore};
use crate::Mode;

/// PyTorch defaults of `nn.BatchNorm2d`.
const EPS: f64 = 1e-5;
const MOMENTUM: f64 = 0.1;

/// `torch.nn.BatchNorm1d/2d(c)` with affine weights and tracked running statistics.
///
/// * [`Mode::Train`]: normalize by the batch mean and biased batch variance, then update
///   `running_mean ← (1−m)·running_mean + m·mean`, `running_var ← (1−m)·running_var +
///   m·var·n/(n−1)` (unbiased, as PyTorch) and `num_batches_tracked += 1`.
/// * [`Mode::BatchStats`]: batch statistics, running statistics untouched.
/// * [`Mode::Eval`]: running statistics.
#[derive(Debug)]
pub struct BatchNorm {
    weight: Var,
    bias: Var,
    running_mean: Var,
    running_var: Var,
    num_batches_tracked: Var,
    /// Serializes running-statistics updates of concurrent Train passes.
    update: Mutex<()>,
}

impl BatchNorm {
    /// Registers `{prefix}.weight` (ones), `{prefix}.bias` (zeros) as parameters and
    /// `{prefix}.running_mean`, `.running_var`, `.num_batches_tracked` (i64 scalar) as buffers.
    pub fn new(store: &mut ParamStore, prefix: &str, channels: usize) -> Result<Self> {
        let weight = store.param(key(prefix, "weight"), &[channels], Init::Ones)?;
        let bias = store.param(key(prefix, "bias"), &[channels], Init::Zeros)?;
        let (dtype, device) = (store.dtype(), store.device().clone());
        let running_mean = store.buffer(
            key(prefix, "running_mean"),
            &Tensor::zeros(channels, dtype, &device)?,
        )?;
        let running_var = store.buffer(
            key(prefix, "running_var"),
            &Tensor::ones(channels, dtype, &device)?,
        )?;
        let num_batches_tracked = store.buffer(
            key(prefix, "num_batches_tracked"),
            &Tensor::new(0i64, &device)?,
        )?;
        Ok(Self {
            weight,
            bias,
            running_mean,
            running_var,
            num_batches_tracked,
            update: Mutex::new(()),
        })
    }

    pub fn forward(&self, x: &Tensor, mode: Mode) -> Result<Tensor> {
        let c = self.weight.dim(0)?;
        let (reduce, stat_shape): (Vec<usize>, Vec<usize>) = match x.rank() {
            2 => (vec![0], vec![1, c]),
            4 => (vec![0, 2, 3], vec![1, c, 1, 1]),
            r => candle_core::bail!(
                "BatchNorm: expected an N×C or N×C×H×W input, got rank {r} ({:?})",
                x.dims()
            ),
        };
        if x.dim(1)? != c {
            candle_core::bail!(
                "BatchNorm: input {:?} has {} channels, expected {c}",
                x.dims(),
                x.dim(1)?
            );
        }
        let (mean, var) = match mode {
            Mode::Eval => (
                self.running_mean
                    .as_tensor()
                    .reshape(stat_shape.as_slice())?,
                self.running_var
                    .as_tensor()
                    .reshape(stat_shape.as_slice())?,
            ),
            Mode::Train | Mode::BatchStats => {
                let count = x.elem_count() / c;
                if count < 2 {
                    candle_core::bail!("BatchNorm: batch statistics need more than 1 value per channel, input {:?}", x.dims());
                }
                let mean = x.mean_keepdim(reduce.as_slice())?;
                let var = x
                    .broadcast_sub(&mean)?
                    .sqr()?
                    .mean_keepdim(reduce.as_slice())?;
                if mode == Mode::Train {
                    self.update_running(&mean, &var, count)?;
                }
                (mean, var)
            }
        };
        let xhat = x
            .broadcast_sub(&mean)?
            .broadcast_div(&(var + EPS)?.sqrt()?)?;
        xhat.broadcast_mul(&self.weight.as_tensor().reshape(stat_shape.as_slice())?)?
            .broadcast_add(&self.bias.as_tensor().reshape(stat_shape.as_slice())?)
    }

    fn update_running(&self, mean: &Tensor, var: &Tensor, count: usize) -> Result<()> {
        let _guard = self
            .update
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mean = mean
            .detach()
            .flatten_all()?
            .to_dtype(self.running_mean.dtype())?;
        let unbiased = (var.detach().flatten_all()? * (count as f64 / (count - 1) as f64))?
            .to_dtype(self.running_var.dtype())?;
        let new_mean = ((self.running_mean.as_tensor() * (1.0 - MOMENTUM))? + (mean * MOMENTUM)?)?;
        let new_var =
            ((self.running_var.as_tensor() * (1.0 - MOMENTUM))? + (unbiased * MOMENTUM)?)?;
        self.running_mean.set(&new_mean)?;
        self.running_var.set(&new_var)?;
        let tracked = self
            .num_batches_tracked
            .as_tensor()
            .to_dtype(DType::I64)?
            .to_scalar::<i64>()?;
        self.num_batches_tracked.set(&Tensor::new(
            tracked + 1,
            self.num_batches_tracked.device(),
        )?)
    }
}
