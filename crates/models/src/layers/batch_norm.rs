//! BatchNorm over the channel axis of N × C (1-d) or N × C × H × W (2-d) inputs, with
//! PyTorch's semantics and names, built from differentiable tensor ops so that double
//! backprop through batch statistics works (Candle has no fused BatchNorm with a backward).

use std::sync::Mutex;

use candle_core::{DType, Result, Tensor, Var};

use crate::init::Init;
use crate::ops::{self, per_channel};
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
        self.apply(x, mode, Then::Nothing)
    }

    /// `relu(self.forward(x, mode))`, the same numbers; with batch statistics on CPU one fused
    /// op whose graph keeps no separate normalized activation ([`ops::batch_norm_relu`]).
    pub fn forward_relu(&self, x: &Tensor, mode: Mode) -> Result<Tensor> {
        self.apply(x, mode, Then::Relu)
    }

    /// `relu(self.forward(x, mode) + s)` (a residual block's end), the same numbers; with batch
    /// statistics on CPU one fused op that keeps neither the normalized activation nor the sum
    /// ([`ops::batch_norm_add_relu`]).
    pub fn forward_add_relu(&self, x: &Tensor, s: &Tensor, mode: Mode) -> Result<Tensor> {
        self.apply(x, mode, Then::AddRelu(s))
    }

    fn apply(&self, x: &Tensor, mode: Mode, then: Then) -> Result<Tensor> {
        let c = self.weight.dim(0)?;
        if !matches!(x.rank(), 2 | 4) || x.dim(1)? != c {
            candle_core::bail!(
                "BatchNorm: expected an N×{c} or N×{c}×H×W input, got {:?}",
                x.dims()
            );
        }
        if let Then::AddRelu(s) = then {
            if s.dims() != x.dims() {
                candle_core::bail!(
                    "BatchNorm: the residual added before the ReLU must have the input's shape \
                     {:?}, got {:?}",
                    x.dims(),
                    s.dims()
                );
            }
        }
        // Work on an N × C × (H·W) view, so that every reduction is over the contiguous last
        // axis first (see `channel_mean` and `per_channel`).
        let (n, shape) = (x.dim(0)?, x.shape().clone());
        let x = x.reshape((n, c, x.elem_count() / (n * c)))?;
        let y = match mode {
            Mode::Eval => {
                // y = x·s + (b − μ·s) with s = w/√(σ²+ε): two passes over x.
                let scale =
                    (self.weight.as_tensor() / (self.running_var.as_tensor() + EPS)?.sqrt()?)?;
                let shift = (self.bias.as_tensor() - (self.running_mean.as_tensor() * &scale)?)?;
                let y = x
                    .mul(&per_channel(&scale, &x)?)?
                    .add(&per_channel(&shift, &x)?)?;
                match then {
                    Then::Nothing => y,
                    Then::Relu => ops::relu(&y)?,
                    Then::AddRelu(s) => ops::relu(&(y + s.reshape(x.shape())?)?)?,
                }
            }
            Mode::Train | Mode::BatchStats => {
                let count = x.elem_count() / c;
                if count < 2 {
                    candle_core::bail!(
                        "BatchNorm: batch statistics need more than 1 value per channel, input {shape:?}"
                    );
                }
                let (w, b) = (self.weight.as_tensor(), self.bias.as_tensor());
                let (y, (mean, var)) = match then {
                    Then::Nothing => ops::batch_norm(&x, w, b, EPS)?,
                    Then::Relu => ops::batch_norm_relu(&x, w, b, EPS)?,
                    Then::AddRelu(s) => {
                        ops::batch_norm_add_relu(&x, w, b, &s.reshape(x.shape())?, EPS)?
                    }
                };
                if mode == Mode::Train {
                    self.update_running(&mean, &var, count)?;
                }
                y
            }
        };
        y.reshape(shape)
    }

    fn update_running(&self, mean: &[f64], var: &[f64], count: usize) -> Result<()> {
        let _guard = self
            .update
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let (dtype, device) = (self.running_mean.dtype(), self.running_mean.device());
        let unbiased: Vec<f64> = var
            .iter()
            .map(|v| v * count as f64 / (count - 1) as f64)
            .collect();
        let mean = Tensor::new(mean, device)?.to_dtype(dtype)?;
        let unbiased = Tensor::new(unbiased.as_slice(), device)?.to_dtype(dtype)?;
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

/// What follows the normalization inside one op.
#[derive(Clone, Copy)]
enum Then<'a> {
    Nothing,
    Relu,
    /// Add this tensor (the input's shape), then ReLU.
    AddRelu(&'a Tensor),
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    fn bn_and_input() -> (BatchNorm, Tensor) {
        let mut store = ParamStore::new(0, DType::F64, &Device::Cpu);
        let bn = BatchNorm::new(&mut store, "bn", 2).unwrap();
        // Channel 0 holds 1..8, channel 1 holds squares, over N=2, H=2, W=2.
        let v: Vec<f64> = (0..16)
            .map(|i| {
                if (i / 4) % 2 == 0 {
                    i as f64
                } else {
                    (i * i) as f64 / 10.0
                }
            })
            .collect();
        (bn, Tensor::from_vec(v, (2, 2, 2, 2), &Device::Cpu).unwrap())
    }

    /// Mean, biased and unbiased variance of channel `c`, by hand.
    fn stats(x: &Tensor, c: usize) -> (f64, f64, f64) {
        let v: Vec<f64> = x
            .narrow(1, c, 1)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let n = v.len() as f64;
        let mean = v.iter().sum::<f64>() / n;
        let ss = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>();
        (mean, ss / n, ss / (n - 1.0))
    }

    fn vec(v: &Var) -> Vec<f64> {
        v.as_tensor().to_vec1().unwrap()
    }

    #[test]
    fn train_normalizes_by_batch_and_updates_running_stats_like_pytorch() {
        let (bn, x) = bn_and_input();
        let y = bn.forward(&x, Mode::Train).unwrap();
        bn.forward(&x, Mode::Train).unwrap();
        for c in 0..2 {
            let (mean, var, unbiased) = stats(&x, c);
            let got = stats(&y, c);
            assert!(
                got.0.abs() < 1e-12 && (got.1 - var / (var + EPS)).abs() < 1e-12,
                "channel {c}: {got:?}"
            );
            // Two updates from (0, 1): m·(2−m)·s + (1−m)²·init.
            let m = MOMENTUM;
            assert!((vec(&bn.running_mean)[c] - m * (2.0 - m) * mean).abs() < 1e-12);
            let expected = m * (2.0 - m) * unbiased + (1.0 - m).powi(2);
            assert!((vec(&bn.running_var)[c] - expected).abs() < 1e-12);
        }
        assert_eq!(
            bn.num_batches_tracked
                .as_tensor()
                .to_scalar::<i64>()
                .unwrap(),
            2
        );
        assert_eq!(bn.num_batches_tracked.dims(), &[] as &[usize]);
    }

    /// `forward_relu` is `relu(forward)` and `forward_add_relu` is `relu(forward + s)` in every
    /// mode, and both update the running statistics the same way in Train mode.
    #[test]
    fn fused_forwards_are_relu_of_forward_in_every_mode() {
        let values = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f64>().unwrap();
        let (_, x) = bn_and_input();
        let s = ((x.sin().unwrap() * 2.0).unwrap() - 0.5).unwrap();
        for mode in [Mode::Train, Mode::BatchStats, Mode::Eval] {
            for add in [false, true] {
                let (bn, _) = bn_and_input();
                let (twin, _) = bn_and_input();
                for b in [&bn, &twin] {
                    b.bias
                        .set(&Tensor::new(&[0.3f64, -3.0], &Device::Cpu).unwrap())
                        .unwrap();
                }
                let (fused, reference) = if add {
                    let y = (twin.forward(&x, mode).unwrap() + &s).unwrap();
                    (bn.forward_add_relu(&x, &s, mode).unwrap(), y)
                } else {
                    (
                        bn.forward_relu(&x, mode).unwrap(),
                        twin.forward(&x, mode).unwrap(),
                    )
                };
                let reference = crate::ops::relu(&reference).unwrap();
                let what = format!("{mode:?}, add {add}");
                assert_eq!(fused.dims(), x.dims());
                assert_eq!(values(&fused), values(&reference), "{what}");
                assert!(values(&fused).contains(&0.0), "{what}: nothing clipped");
                assert!(
                    values(&fused).iter().any(|v| *v > 0.0),
                    "{what}: all clipped"
                );
                assert_eq!(vec(&bn.running_mean), vec(&twin.running_mean), "{what}");
                assert_eq!(vec(&bn.running_var), vec(&twin.running_var), "{what}");
            }
        }
        let (bn, _) = bn_and_input();
        let wrong = x.narrow(0, 0, 1).unwrap();
        let err = bn.forward_add_relu(&x, &wrong, Mode::Train).unwrap_err();
        assert!(err.to_string().contains("[1, 2, 2, 2]"), "{err}");
    }

    #[test]
    fn batch_stats_mode_leaves_running_stats_untouched() {
        let (bn, x) = bn_and_input();
        let train = bn.forward(&x, Mode::BatchStats).unwrap();
        assert_eq!(vec(&bn.running_mean), [0.0, 0.0]);
        assert_eq!(vec(&bn.running_var), [1.0, 1.0]);
        assert_eq!(
            bn.num_batches_tracked
                .as_tensor()
                .to_scalar::<i64>()
                .unwrap(),
            0
        );
        let again = bn.forward(&x, Mode::Train).unwrap();
        assert_eq!(
            (train - again)
                .unwrap()
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f64>()
                .unwrap(),
            0.0
        );
    }

    #[test]
    fn eval_uses_running_stats_and_affine_parameters() {
        let (bn, x) = bn_and_input();
        bn.running_mean
            .set(&Tensor::new(&[1.0f64, -2.0], &Device::Cpu).unwrap())
            .unwrap();
        bn.running_var
            .set(&Tensor::new(&[4.0f64, 0.25], &Device::Cpu).unwrap())
            .unwrap();
        bn.weight
            .set(&Tensor::new(&[3.0f64, 0.5], &Device::Cpu).unwrap())
            .unwrap();
        bn.bias
            .set(&Tensor::new(&[0.1f64, -0.1], &Device::Cpu).unwrap())
            .unwrap();
        let y = bn.forward(&x, Mode::Eval).unwrap();
        let (xs, ys): (Vec<f64>, Vec<f64>) = (
            x.flatten_all().unwrap().to_vec1().unwrap(),
            y.flatten_all().unwrap().to_vec1().unwrap(),
        );
        for (i, (xv, yv)) in xs.iter().zip(ys).enumerate() {
            let c = (i / 4) % 2;
            let (m, v, w, b) = [(1.0, 4.0, 3.0, 0.1), (-2.0, 0.25, 0.5, -0.1)][c];
            assert!((yv - ((xv - m) / (v + EPS).sqrt() * w + b)).abs() < 1e-12);
        }
        assert_eq!(
            bn.num_batches_tracked
                .as_tensor()
                .to_scalar::<i64>()
                .unwrap(),
            0
        );
    }

    #[test]
    fn one_dimensional_inputs_and_bad_shapes() {
        let mut store = ParamStore::new(0, DType::F64, &Device::Cpu);
        let bn = BatchNorm::new(&mut store, "", 3).unwrap();
        let x = Tensor::new(&[[1.0f64, 2.0, 3.0], [3.0, 2.0, 0.0]], &Device::Cpu).unwrap();
        let y = bn
            .forward(&x, Mode::Train)
            .unwrap()
            .to_vec2::<f64>()
            .unwrap();
        assert!((y[0][0] + 1.0).abs() < 1e-5 && (y[1][0] - 1.0).abs() < 1e-5);
        assert!(y[0][1].abs() < 1e-12, "constant channel normalizes to 0");
        assert!(
            bn.forward(&x.narrow(0, 0, 1).unwrap(), Mode::Train)
                .is_err(),
            "one value per channel"
        );
        assert!(bn
            .forward(
                &Tensor::zeros((2, 4), DType::F64, &Device::Cpu).unwrap(),
                Mode::Eval
            )
            .is_err());
        let (_, buffers) = store.finish();
        let names: Vec<&str> = buffers.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            ["running_mean", "running_var", "num_batches_tracked"]
        );
    }
}
