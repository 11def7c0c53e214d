//! Optimizer state for resuming: scalars in a serde struct, momentum buffers as named tensors
//! (`momentum_buffer.<i>`, ready for safetensors). A restored optimizer continues bit-identically.

use std::collections::HashMap;

use candle_core::{Tensor, Var};
use serde::{Deserialize, Serialize};

use crate::{OptimError, Sgd, SgdConfig};

/// Key prefix of the momentum buffer of parameter `i`: `momentum_buffer.<i>`.
pub const MOMENTUM_BUFFER_PREFIX: &str = "momentum_buffer.";

/// The scalar part of the state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SgdState {
    pub config: SgdConfig,
    /// Steps taken so far; the schedule continues from here.
    pub step: u64,
    pub num_params: usize,
}

impl Sgd {
    /// The state to save: scalars and the momentum buffers that exist so far.
    pub fn state(&self) -> (SgdState, HashMap<String, Tensor>) {
        let tensors = self
            .buffers
            .iter()
            .enumerate()
            .filter_map(|(i, b)| {
                b.as_ref()
                    .map(|b| (format!("{MOMENTUM_BUFFER_PREFIX}{i}"), b.clone()))
            })
            .collect();
        let state = SgdState {
            config: self.config.clone(),
            step: self.step,
            num_params: self.buffers.len(),
        };
        (state, tensors)
    }

    /// Rebuilds an optimizer for `params` from a saved state. Every tensor must be a known
    /// `momentum_buffer.<i>` with parameter `i`'s shape and dtype; the buffers are copied so the
    /// restored optimizer shares no storage with the caller's map.
    pub fn from_state(
        state: SgdState,
        tensors: &HashMap<String, Tensor>,
        params: &[Var],
    ) -> Result<Sgd, OptimError> {
        if state.num_params != params.len() {
            return Err(OptimError::InvalidState(format!(
                "saved for {} parameters, restoring {}",
                state.num_params,
                params.len()
            )));
        }
        let mut sgd = Sgd::new(state.config, params.len())?;
        sgd.step = state.step;
        for (key, t) in tensors {
            let index = key
                .strip_prefix(MOMENTUM_BUFFER_PREFIX)
                .and_then(|i| i.parse::<usize>().ok())
                .filter(|&i| i < params.len())
                .ok_or_else(|| {
                    OptimError::InvalidState(format!(
                        "unexpected tensor `{key}`, expected {MOMENTUM_BUFFER_PREFIX}<i> with i < {}",
                        params.len()
                    ))
                })?;
            let p = &params[index];
            if t.dims() != p.dims() {
                return Err(OptimError::ShapeMismatch {
                    what: "momentum buffer",
                    index,
                    got: t.dims().to_vec(),
                    expected: p.dims().to_vec(),
                });
            }
            if t.dtype() != p.dtype() {
                return Err(OptimError::InvalidState(format!(
                    "`{key}` has dtype {:?}, the parameter {:?}",
                    t.dtype(),
                    p.dtype()
                )));
            }
            sgd.buffers[index] = Some(t.to_device(p.device())?.copy()?);
        }
        Ok(sgd)
    }
}
