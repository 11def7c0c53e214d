//! The tracking schedule (dense early, then per epoch), curvature measurement on the fixed
//! measurement subset, and clean/noisy training accuracy under label noise.
//!
//! Curvature is measured with BatchNorm in `BatchStats` mode (the statistics the training step
//! sees, running statistics untouched), so repeated products are deterministic (TESTING.md §4)
//! and a measurement never changes the run.

use std::time::Instant;

use breakeven_curvature::{
    covariance_summary, fisher_trace, fisher_trace_from_examples, hutchinson, lanczos,
    monte_carlo_labels, per_example_gradients, BatchedLogits, BatchedLoss, Counted,
    CovarianceConfig, CovarianceSummary, FisherKind, FisherTrace, HessianOperator,
    HutchinsonConfig, LanczosConfig, PerExampleGradients, Reduction,
};
use breakeven_models::{correct_count, cross_entropy, Mode, Model, ModelError};
use candle_core::{Tensor, Var};
use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::config::{RunConfig, TrackingConfig};
use crate::error::RunError;
use crate::evaluate::evaluate;
use crate::metrics::CurvatureRecord;
use crate::setup::{EvalSet, NoiseSets, Prepared};

/// Seed offset of the measurement streams (see [`measure_curvature`]).
pub(crate) const CURVATURE_SEED_OFFSET: u64 = 0x6375_7276; // "curv"

/// Whether `step` (steps taken so far) is a log point: every `dense_every` steps during the
/// first `dense_epochs` epochs, then at the end of every `every_epochs`-th epoch.
pub fn should_log(t: &TrackingConfig, step: u64, steps_per_epoch: u64) -> bool {
    let dense =
        step <= t.dense_epochs as u64 * steps_per_epoch && step.is_multiple_of(t.dense_every);
    let epoch_end = step.is_multiple_of(steps_per_epoch)
        && (step / steps_per_epoch).is_multiple_of(t.every_epochs as u64);
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
                tol: t.lanczos_tol.unwrap_or(1e-3),
                compute_residuals: t.lanczos_tol.is_some(),
                ..Default::default()
            };
            let eig = lanczos(&mut op, &cfg, lanczos_seed)?;
            if t.lanczos_tol.is_some() {
                record.lambda_h_residuals = eig
                    .residuals
                    .iter()
                    .zip(&eig.eigenvalues)
                    .map(|(r, l)| {
                        if *l != 0.0 {
                            r / l.abs()
                        } else {
                            f64::INFINITY
                        }
                    })
                    .collect();
                record.lanczos_iterations = Some(eig.iterations);
                record.lanczos_converged = Some(eig.converged);
            }
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

    // Fisher and (unless `tracking.covariance` is off) covariance from per-example gradients on
    // the first `k_examples` examples.
    let n = t.k_examples.min(set.len);
    let kind = FisherKind::MonteCarlo {
        samples: 1,
        seed: fisher_seed,
    };
    let (fisher, _) = fisher_trace_of(model, &vars, set, n, kind, |x| {
        model.forward(x, Mode::BatchStats)
    })?;
    record.fisher_trace = Some(fisher.trace);
    matvecs += fisher.backward_passes as u64;

    if t.covariance {
        let (grads, _) =
            example_gradients(model, &vars, set, n, |x| model.forward(x, Mode::BatchStats))?;
        let cov = covariance_summary(
            &grads,
            &CovarianceConfig {
                k: t.k_star.unwrap_or(1),
                ..Default::default()
            },
        )?;
        record.lambda_k1 = cov.eigenvalues.first().copied();
        record.k_trace = Some(cov.trace);
        record.k_ratio = Some(k_ratio(&cov, t.k_star));
        matvecs += n as u64;
    }
    record.matvecs = matvecs;
    record.wall_s = t0.elapsed().as_secs_f64();
    Ok(record)
}

/// Per-example gradients of the first `n` examples of `set`, and whether they came from one
/// batched pass: `breakeven_models::per_example_gradients` where the model has a taped forward
/// (no BatchNorm: SimpleCNN, the fc nets), else a loop of batch-size-1 passes of `forward` (the
/// same numbers to rounding). Shared by tracking and `breakeven measure`, so that a re-measured
/// checkpoint reproduces the logged values bit for bit.
pub(crate) fn example_gradients(
    model: &dyn Model,
    vars: &[Var],
    set: &EvalSet,
    n: usize,
    forward: impl Fn(&Tensor) -> candle_core::Result<Tensor>,
) -> Result<(PerExampleGradients, bool), RunError> {
    let (x, y) = set.first(n)?;
    match breakeven_models::per_example_gradients(model, &x, &y) {
        Ok(g) => return Ok((g, true)),
        Err(ModelError::PerExampleUnsupported { reason }) => {
            tracing::debug!("per-example gradients by batch-size-1 passes: {reason}");
        }
        Err(e) => return Err(e.into()),
    }
    let mut loss = BatchedLoss::new(n, Reduction::Mean, |i| {
        let (x, y) = set.example(i)?;
        Ok((cross_entropy(&forward(&x)?, &y)?, 1))
    });
    Ok((per_example_gradients(&mut loss, vars)?, false))
}

/// Tr(F) on the first `n` examples of `set`, exactly or with labels sampled from the model
/// (`kind`), and whether it came from batched passes. Where the model has a taped forward (no
/// BatchNorm: SimpleCNN, the fc nets) it takes one forward for the softmax and one batched
/// per-example backward per label set (per sample, or per class when exact), summing squares
/// without the n × D matrix (`breakeven_models::per_example_gradient_sq_norms`); otherwise
/// `fisher_trace`'s loop of batch-size-1 passes. Both draw the same labels (`fisher_trace`'s
/// stream of example i is its batch i) and reduce through `fisher_trace_from_examples`, so they
/// agree to rounding. Shared by tracking and `breakeven measure`, so that a re-measured
/// checkpoint reproduces the logged value.
pub(crate) fn fisher_trace_of(
    model: &dyn Model,
    vars: &[Var],
    set: &EvalSet,
    n: usize,
    kind: FisherKind,
    forward: impl Fn(&Tensor) -> candle_core::Result<Tensor>,
) -> Result<(FisherTrace, bool), RunError> {
    match batched_fisher_trace(model, set, n, kind, &forward) {
        Ok(f) => return Ok((f, true)),
        Err(RunError::Model(ModelError::PerExampleUnsupported { reason })) => {
            tracing::debug!("Tr(F) by batch-size-1 passes: {reason}");
        }
        Err(e) => return Err(e),
    }
    let mut logits = BatchedLogits::new(n, |i| {
        let (x, _) = set.example(i)?;
        forward(&x)
    });
    Ok((fisher_trace(&mut logits, vars, kind)?, false))
}

/// [`fisher_trace_of`]'s batched path; `PerExampleUnsupported` where the model cannot take it.
fn batched_fisher_trace(
    model: &dyn Model,
    set: &EvalSet,
    n: usize,
    kind: FisherKind,
    forward: &dyn Fn(&Tensor) -> candle_core::Result<Tensor>,
) -> Result<FisherTrace, RunError> {
    let (x, _) = set.first(n)?;
    let per_example = |labels: &[usize]| -> Result<Vec<f64>, RunError> {
        let labels: Vec<u32> = labels.iter().map(|&c| c as u32).collect();
        let labels = Tensor::from_vec(labels, n, x.device())?;
        Ok(breakeven_models::per_example_gradient_sq_norms(model, &x, &labels)?.0)
    };
    // A model without the batched path costs this one forward before it says so.
    let probs = softmax_rows(&forward(&x)?.detach())?;
    let (examples, passes) = match kind {
        FisherKind::MonteCarlo { samples, seed } => {
            let draws: Vec<Vec<usize>> = probs
                .iter()
                .enumerate()
                .map(|(i, p)| monte_carlo_labels(p, seed, i, samples))
                .collect();
            let mut examples = vec![Vec::with_capacity(samples); n];
            for s in 0..samples {
                let labels: Vec<usize> = draws.iter().map(|d| d[s]).collect();
                for (e, v) in examples.iter_mut().zip(per_example(&labels)?) {
                    e.push(v);
                }
            }
            (examples, n * samples)
        }
        FisherKind::Exact => {
            let classes = probs.first().map_or(0, Vec::len);
            let mut totals = vec![0.0; n];
            for c in 0..classes {
                for ((t, p), v) in totals.iter_mut().zip(&probs).zip(per_example(&vec![c; n])?) {
                    *t += p[c] * v;
                }
            }
            (totals.into_iter().map(|t| vec![t]).collect(), n * classes)
        }
    };
    Ok(fisher_trace_from_examples(kind, &examples, passes)?)
}

/// Softmax of each row of the logits `z` (N × C), in f64.
fn softmax_rows(z: &Tensor) -> candle_core::Result<Vec<Vec<f64>>> {
    let rows = z.to_dtype(candle_core::DType::F64)?.to_vec2::<f64>()?;
    Ok(rows
        .into_iter()
        .map(|r| {
            let max = r.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let e: Vec<f64> = r.iter().map(|v| (v - max).exp()).collect();
            let sum: f64 = e.iter().sum();
            e.into_iter().map(|v| v / sum).collect()
        })
        .collect())
}

/// λ_K^*/λ_K^1 of a summary computed with `k` = `k_star` (or 1): the `k_star`-th largest
/// eigenvalue over the largest (0 past the Gram matrix's rank), or without `k_star` the
/// smallest non-zero one over the largest. Shared by tracking and `breakeven measure`.
pub fn k_ratio(cov: &CovarianceSummary, k_star: Option<usize>) -> f64 {
    match k_star {
        Some(k) => match (cov.eigenvalues.first(), cov.eigenvalues.get(k.max(1) - 1)) {
            (Some(&top), Some(&kth)) if top > 0.0 => kth / top,
            _ => 0.0,
        },
        None => cov.conditioning,
    }
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
    use breakeven_curvature::PerExampleGradients;

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

    #[test]
    fn k_star_picks_the_kth_eigenvalue_of_a_known_covariance() {
        // Centred gradients ±3 e1, ±1 e2, ±2 e3: K = diag(18, 2, 8)/6, so λ = 3, 4/3, 1/3.
        let rows = [
            [3.0, 0.0, 0.0],
            [-3.0, 0.0, 0.0],
            [0.0, 1.0, 0.0],
            [0.0, -1.0, 0.0],
            [0.0, 0.0, 2.0],
            [0.0, 0.0, -2.0],
        ];
        let g = PerExampleGradients::from_rows(6, 3, rows.concat()).unwrap();
        let summary = |k| {
            covariance_summary(
                &g,
                &CovarianceConfig {
                    k,
                    ..Default::default()
                },
            )
            .unwrap()
        };
        let close = |a: f64, b: f64| (a - b).abs() < 1e-12;
        assert!(close(k_ratio(&summary(2), Some(2)), 4.0 / 9.0));
        assert!(close(k_ratio(&summary(3), Some(3)), 1.0 / 9.0));
        // Past the rank (3) the k-th eigenvalue is 0.
        assert_eq!(k_ratio(&summary(5), Some(5)), 0.0);
        // Without k_star: the smallest non-zero eigenvalue, as runs made before the option.
        assert!(close(k_ratio(&summary(1), None), 1.0 / 9.0));
    }

    /// Tr(F) from the batched per-example path equals the batch-size-1 loop's in f64 (the same
    /// labels drawn, every example's value to 1e-10), sampled (1 and 3 labels) and exact, for
    /// SimpleCNN and an fc net; a BatchNorm net falls back to the loop.
    #[test]
    fn batched_fisher_trace_equals_the_loop() {
        use breakeven_models::ModelSpec;
        use candle_core::{DType, Device};
        crate::train::enable_second_order().unwrap();
        let dev = Device::Cpu;
        let (n, classes) = (7, 5);
        let x = Tensor::randn(0.0f64, 1.0, (n, 3, 32, 32), &dev).unwrap();
        let y =
            Tensor::from_vec((0..n as u32).map(|i| i % 5).collect::<Vec<_>>(), n, &dev).unwrap();
        // Two batches, so the first n examples span them.
        let set = EvalSet {
            batches: vec![
                (x.narrow(0, 0, 4).unwrap(), y.narrow(0, 0, 4).unwrap()),
                (x.narrow(0, 4, 3).unwrap(), y.narrow(0, 4, 3).unwrap()),
            ],
            len: n,
        };
        let specs = [
            ModelSpec::SimpleCnn { width_mult: 0.25 },
            ModelSpec::FcTanh {
                widths: vec![16, 16],
            },
            ModelSpec::Vgg11Bn { width: 4 },
        ];
        for (k, spec) in specs.iter().enumerate() {
            let model =
                breakeven_models::build(spec, (3, 32, 32), classes, DType::F64, &dev, k as u64)
                    .unwrap();
            let vars: Vec<Var> = model.params().iter().map(|q| q.var.clone()).collect();
            let forward = |x: &Tensor| model.forward(x, Mode::BatchStats);
            for kind in [
                FisherKind::MonteCarlo {
                    samples: 1,
                    seed: 11,
                },
                FisherKind::MonteCarlo {
                    samples: 3,
                    seed: 12,
                },
                FisherKind::Exact,
            ] {
                let (f, batched) =
                    fisher_trace_of(model.as_ref(), &vars, &set, n, kind, forward).unwrap();
                assert_eq!(batched, k < 2, "{spec:?}");
                let mut logits = BatchedLogits::new(n, |i| {
                    let (x, _) = set.example(i)?;
                    forward(&x)
                });
                let r = fisher_trace(&mut logits, &vars, kind).unwrap();
                let close = |a: f64, b: f64| (a - b).abs() <= 1e-10 * b.abs().max(1e-12);
                assert!(
                    close(f.trace, r.trace),
                    "{spec:?} {kind:?}: {} vs {}",
                    f.trace,
                    r.trace
                );
                assert!(close(f.std_error, r.std_error), "{spec:?} {kind:?}");
                assert_eq!(f.backward_passes, r.backward_passes);
                for (a, b) in f.per_example.iter().zip(&r.per_example) {
                    assert!(close(*a, *b), "{spec:?} {kind:?}: {a} vs {b}");
                }
            }
            // Other draws give another estimate: the labels matter, and both paths share them.
            let mc = |seed| FisherKind::MonteCarlo { samples: 1, seed };
            let (a, _) = fisher_trace_of(model.as_ref(), &vars, &set, n, mc(11), forward).unwrap();
            let (b, _) = fisher_trace_of(model.as_ref(), &vars, &set, n, mc(99), forward).unwrap();
            assert_ne!(a.per_example, b.per_example, "{spec:?}");
        }
    }
}
