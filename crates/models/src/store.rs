//! Collects a model's named parameters and buffers while it is built, drawing every initial
//! value from one seeded generator in construction order.

use candle_core::{DType, Device, Result, Tensor, Var};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::init::{self, Init};
use crate::Param;

/// Builder state shared by all layers of one model under construction.
pub struct ParamStore {
    rng: ChaCha8Rng,
    dtype: DType,
    device: Device,
    params: Vec<Param>,
    buffers: Vec<(String, Var)>,
}

impl ParamStore {
    /// A store whose draws come from `ChaCha8Rng::seed_from_u64(seed)`.
    pub fn new(seed: u64, dtype: DType, device: &Device) -> Self {
        Self {
            rng: ChaCha8Rng::seed_from_u64(seed),
            dtype,
            device: device.clone(),
            params: Vec::new(),
            buffers: Vec::new(),
        }
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// A new trainable parameter called `name` (its `state_dict` key).
    pub fn param(&mut self, name: String, shape: &[usize], init: Init) -> Result<Var> {
        let var = init::var(&mut self.rng, shape, init, self.dtype, &self.device)?;
        self.params.push(Param {
            name,
            var: var.clone(),
        });
        Ok(var)
    }

    /// A new non-trainable buffer called `name`, holding `value` as given (dtype included).
    pub fn buffer(&mut self, name: String, value: &Tensor) -> Result<Var> {
        let var = Var::from_tensor(&value.to_device(&self.device)?)?;
        self.buffers.push((name, var.clone()));
        Ok(var)
    }

    /// The parameters and buffers, each in registration order.
    pub fn finish(self) -> (Vec<Param>, Vec<(String, Var)>) {
        (self.params, self.buffers)
    }
}

/// `prefix.name`, or `name` when the prefix is empty (PyTorch's key joining).
pub fn key(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{prefix}.{name}")
    }
}
