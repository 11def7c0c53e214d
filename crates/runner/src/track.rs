//! The tracking schedule (dense early, then per epoch) and curvature measurement on the fixed
//! measurement subset.

use rand_chacha::ChaCha8Rng;

use crate::config::{RunConfig, TrackingConfig};
use crate::error::RunError;
use crate::metrics::CurvatureRecord;
use crate::setup::Prepared;

/// Whether `step` (steps taken so far) is a log point: every `dense_every` steps during the
/// first `dense_epochs` epochs, then at the end of every `every_epochs`-th epoch.
pub fn should_log(t: &TrackingConfig, step: u64, steps_per_epoch: u64) -> bool {
    let dense = step <= t.dense_epochs as u64 * steps_per_epoch && step % t.dense_every == 0;
    let epoch_end =
        step % steps_per_epoch == 0 && (step / steps_per_epoch) % t.every_epochs as u64 == 0;
    dense || epoch_end
}

/// Curvature at the current parameters (see `CurvatureRecord`).
pub fn measure_curvature(
    _config: &RunConfig,
    _p: &mut Prepared,
    _step: u64,
    _rng: &mut ChaCha8Rng,
) -> Result<CurvatureRecord, RunError> {
    Err(RunError::Other(
        "curvature tracking is not wired yet (breakeven-curvature)".into(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dense_then_per_epoch() {
        let t = TrackingConfig {
            dense_epochs: 1,
            dense_every: 3,
            every_epochs: 2,
            ..Default::default()
        };
        let logged: Vec<u64> = (1..=40).filter(|&s| should_log(&t, s, 10)).collect();
        assert_eq!(logged, vec![3, 6, 9, 20, 40]);
    }
}
