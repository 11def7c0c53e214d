//! The resumable training state and its checkpoint: model parameters and buffers under their
//! PyTorch names, optimizer momentum buffers under `optimizer.*`, and the scalar state (step,
//! loader position, RNG position, running accumulators) as JSON with floats stored as bit
//! patterns, so that a resumed run continues bit for bit.

use std::collections::HashMap;
use std::path::Path;

use breakeven_data::LoaderState;
use breakeven_optim::{Sgd, SgdState};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::checkpoint::Checkpoint;
use crate::error::RunError;
use crate::rundir::RunStatus;
use crate::setup::Prepared;

/// Prefix of optimizer tensors in a checkpoint.
pub const OPTIMIZER_PREFIX: &str = "optimizer.";

/// Running sums over a span of steps (a log window or an epoch).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Accum {
    #[serde(with = "f64_bits")]
    pub loss_sum: f64,
    pub correct: u64,
    pub seen: u64,
    #[serde(with = "f64_bits")]
    pub penalty_sum: f64,
    pub penalty_steps: u64,
    #[serde(with = "f64_bits")]
    pub time_s: f64,
    pub steps: u64,
}

impl Accum {
    /// Adds one step (`loss` is the batch mean over `n` examples).
    pub fn add(&mut self, loss: f64, correct: usize, n: usize, penalty: Option<f64>, dt: f64) {
        self.loss_sum += loss * n as f64;
        self.correct += correct as u64;
        self.seen += n as u64;
        if let Some(p) = penalty {
            self.penalty_sum += p;
            self.penalty_steps += 1;
        }
        self.time_s += dt;
        self.steps += 1;
    }
    /// Mean loss per example (NaN-free: 0 when empty).
    pub fn loss(&self) -> f64 {
        if self.seen == 0 {
            0.0
        } else {
            self.loss_sum / self.seen as f64
        }
    }
    pub fn acc(&self) -> f64 {
        if self.seen == 0 {
            0.0
        } else {
            self.correct as f64 / self.seen as f64
        }
    }
    pub fn penalty(&self) -> Option<f64> {
        (self.penalty_steps > 0).then(|| self.penalty_sum / self.penalty_steps as f64)
    }
    pub fn time_per_step(&self) -> f64 {
        if self.steps == 0 {
            0.0
        } else {
            self.time_s / self.steps as f64
        }
    }
}

/// Everything besides tensors that a resumed run needs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainState {
    pub step: u64,
    /// Learning rate of the last step.
    #[serde(with = "f64_bits")]
    pub lr: f64,
    #[serde(with = "f64_bits")]
    pub grad_norm: f64,
    pub window: Accum,
    pub epoch: Accum,
    /// Set once the run has decided to stop (then resume goes straight to the final evaluation).
    pub stop: Option<RunStatus>,
    pub diverged_at_step: Option<u64>,
    /// Whether the step-0 point was logged.
    pub logged_initial: bool,
    #[serde(with = "f64_bits")]
    pub wall_s: f64,
    pub loader: LoaderState,
    pub sgd: SgdState,
    /// Word position of the step generator (u128 as a decimal string).
    pub rng_word_pos: String,
}

impl TrainState {
    /// The state before the first step.
    pub fn fresh(p: &Prepared) -> Self {
        Self {
            step: 0,
            lr: p.sgd.current_lr(),
            grad_norm: 0.0,
            window: Accum::default(),
            epoch: Accum::default(),
            stop: None,
            diverged_at_step: None,
            logged_initial: false,
            wall_s: 0.0,
            loader: p.loader.state(),
            sgd: p.sgd.state().0,
            rng_word_pos: "0".into(),
        }
    }
}

/// Writes the checkpoint of the current state (atomically).
pub fn save(
    path: &Path,
    p: &Prepared,
    state: &TrainState,
    rng: &ChaCha8Rng,
) -> Result<(), RunError> {
    let mut state = state.clone();
    state.loader = p.loader.state();
    let (sgd_state, sgd_tensors) = p.sgd.state();
    state.sgd = sgd_state;
    state.rng_word_pos = rng.get_word_pos().to_string();
    let mut tensors = Checkpoint::model_tensors(p.model.as_ref());
    tensors.extend(
        sgd_tensors
            .into_iter()
            .map(|(n, t)| (format!("{OPTIMIZER_PREFIX}{n}"), t)),
    );
    let json =
        serde_json::to_string(&state).map_err(|e| RunError::Other(format!("train state: {e}")))?;
    Checkpoint {
        tensors,
        state: json,
    }
    .save(path)
}

/// Loads a checkpoint into the prepared model, optimizer, loader and generator.
pub fn restore(
    path: &Path,
    p: &mut Prepared,
    rng: &mut ChaCha8Rng,
) -> Result<TrainState, RunError> {
    let ckpt = Checkpoint::load(path, &p.device)?;
    let err = |message: String| RunError::Checkpoint {
        path: path.into(),
        message,
    };
    let state: TrainState =
        serde_json::from_str(&ckpt.state).map_err(|e| err(format!("train state: {e}")))?;
    ckpt.restore_model(p.model.as_ref(), path)?;
    let sgd_tensors: HashMap<String, candle_core::Tensor> = ckpt
        .tensors
        .iter()
        .filter_map(|(n, t)| {
            n.strip_prefix(OPTIMIZER_PREFIX)
                .map(|k| (k.to_string(), t.clone()))
        })
        .collect();
    let vars: Vec<_> = p.model.params().iter().map(|q| q.var.clone()).collect();
    p.sgd = Sgd::from_state(state.sgd.clone(), &sgd_tensors, &vars)?;
    p.loader.restore(state.loader)?;
    let pos: u128 = state
        .rng_word_pos
        .parse()
        .map_err(|e| err(format!("rng_word_pos: {e}")))?;
    rng.set_word_pos(pos);
    Ok(state)
}

/// Serializes an f64 as its bit pattern, so JSON round trips are exact.
mod f64_bits {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(v.to_bits())
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        Ok(f64::from_bits(u64::deserialize(d)?))
    }
}
