//! The tracking schedule (dense early, then per epoch), curvature measurement on the fixed
//! measurement subset, and clean/noisy training accuracy under label noise.
//!
//! Curvature is measured with BatchNorm in `BatchStats` mode (the statistics the training step
//! sees, running statistics untouched), so repeated products are deterministic (TESTING.md §4)
//! and a measurement never changes the run.

use std::time::Instant;

use breakeven_curvature::{
    covariance_summary, fisher_trace, hutchinson, lanczos, per_example_gradients, BatchedLogits,
    BatchedLoss, Counted, CovarianceConfig, FisherKind, HessianOperator, HutchinsonConfig,
    LanczosConfig, Reduction,
};
use breakeven_models::{correct_count, cross_entropy, Mode, Model};
use candle_core::Var;
use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::config::{RunConfig, TrackingConfig};
use crate::error::RunError;
use crate::evaluate::evaluate;
use crate::metrics::CurvatureRecord;
use crate::setup::{NoiseSets, Prepared};

/// Seed offset of the measurement streams (see [`measure_curvature`]).
pub(crate) const CURVATURE_SEED_OFFSET: u64 = 0x6375_7276; // "curv"

/// Whether `step` (steps taken so far) is a log point: every `dense_every` steps during the
/// first `dense_epochs` epochs, then at the end of every `every_epochs`-th epoch.
pub fn should_log(t: &TrackingConfig, step: u64, steps_per_epoch: u64) -> bool {
    let dense = step <= t.dense_epochs as u64 * steps_per_epoch && step % t.dense_every == 0;
    let epoch_end =
        step % steps_per_epoch == 0 && (step / steps_per_epoch) % t.every_epochs as u64 == 0;
    dense || epoch_end
}

/// Curvature at the current parameters (see `CurvatureRecord`). Every random draw (Lanczos
/// start, Hutchinson probes, sampled Fisher labels) comes from a stream keyed by (seed, step)
/// and owned by the measurement: tracking never consumes the training generator, so turning it
/// on or off leaves the trajectory unchanged, and re-measuring a checkpoint repeats the draws.
pub fn measure_curvature(
    config: &RunConfig,
    p: &mut Prepared,
    step: u64,
) -> Result<CurvatureRecord, RunError> {
    let mut rng = ChaCha8Rng::seed_from_u64(config.seed ^ CURVATURE_SEED_OFFSET);
    rng.set_stream(step);
    let t = &config.tracking;
    let t0 = Instant::now();
    let model: &dyn Model = p.model.as_ref();
    let vars: Vec<Var> = model.params().iter().map(|q| q.var.clone()).collect();
    let set = &p.measure;
    let mut record = CurvatureRecord::default();
    let mut matvecs = 0u64;
    let (lanczos_seed, hutch_seed, fisher_seed) = (rng.next_u64(), rng.next_u64(), rng.next_u64());

    if t.lanczos_iters > 0 || t.hutchinson_samples > 0 {
        let loss = BatchedLoss::new(set.batches.len(), Reduction::Mean, |b| {
            let (x, y) = &set.batches[b];
            Ok((
                cross_entropy(&model.forward(x, Mode::BatchStats)?, y)?,
                y.dim(0)?,
            ))
        });
        let op = HessianOperator::new(vars.clone(), loss)?;
        let mut op = Counted::new(op);
        if t.lanczos_iters > 0 {
            let cfg = LanczosConfig {
                k: t.top_k,
                max_iter: t.lanczos_iters,
                tol: 1e-3,
                compute_residuals: false,
                ..Default::default()
            };
            let eig = lanczos(&mut op, &cfg, lanczos_seed)?;
            let first = eig.eigenvalues[0];
            record.h_ratio = eig
                .eigenvalues
                .last()
                .filter(|_| first != 0.0)
                .map(|l| l / first);
            record.lambda_h = eig.eigenvalues;
        }
        if t.hutchinson_samples > 0 {
            let cfg = HutchinsonConfig {
                samples: t.hutchinson_samples,
            };
            record.hessian_trace = Some(hutchinson(&mut op, &cfg, hutch_seed)?.trace);
        }
        matvecs += op.matvecs as u64;
    }

    // Fisher and covariance from per-example gradients on the first `k_examples` examples.
    let n = t.k_examples.min(set.len);
    let mut logits = BatchedLogits::new(n, |i| {
        let (x, _) = set.example(i)?;
        model.forward(&x, Mode::BatchStats)
    });
    let kind = FisherKind::MonteCarlo {
        samples: 1,
        seed: fisher_seed,
    };
    let fisher = fisher_trace(&mut logits, &vars, kind)?;
    record.fisher_trace = Some(fisher.trace);
    matvecs += fisher.backward_passes as u64;

    let mut loss = BatchedLoss::new(n, Reduction::Mean, |i| {
        let (x, y) = set.example(i)?;
        Ok((cross_entropy(&model.forward(&x, Mode::BatchStats)?, &y)?, 1))
    });
    let grads = per_example_gradients(&mut loss, &vars)?;
    let cov = covariance_summary(
        &grads,
        &CovarianceConfig {
            k: 1,
            ..Default::default()
        },
    )?;
    record.lambda_k1 = cov.eigenvalues.first().copied();
    record.k_trace = Some(cov.trace);
    record.k_ratio = Some(cov.conditioning);
    matvecs += n as u64;

    record.matvecs = matvecs;
    record.wall_s = t0.elapsed().as_secs_f64();
    Ok(record)
}

/// Training accuracy on the noise-tracking subsets (eval mode): (clean, noisy against the
/// labels trained on, noisy against the true labels); `None` for an empty side. One forward
/// pass per batch serves both label sets of the noisy examples.
pub fn noise_fit(
    model: &dyn Model,
    sets: &NoiseSets,
) -> candle_core::Result<(Option<f64>, Option<f64>, Option<f64>)> {
    let clean = sets
        .clean
        .as_ref()
        .map(|s| evaluate(model, s).map(|(_, a)| a))
        .transpose()?;
    let (mut noisy, mut noisy_true) = (None, None);
    if let Some(set) = &sets.noisy {
        if set.batches.len() != sets.noisy_true.len() {
            candle_core::bail!(
                "noise tracking: {} batches of noisy examples but {} of true labels",
                set.batches.len(),
                sets.noisy_true.len()
            );
        }
        let (mut hit_noisy, mut hit_true, mut n) = (0usize, 0usize, 0usize);
        for ((x, y), y_true) in set.batches.iter().zip(&sets.noisy_true) {
            let logits = model.forward(x, Mode::Eval)?.detach();
            hit_noisy += correct_count(&logits, y)?;
            hit_true += correct_count(&logits, y_true)?;
            n += y.dim(0)?;
        }
        if n > 0 {
            noisy = Some(hit_noisy as f64 / n as f64);
            noisy_true = Some(hit_true as f64 / n as f64);
        }
    }
    Ok((clean, noisy, noisy_true))
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
