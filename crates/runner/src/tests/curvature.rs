//! Curvature tracking: logged values are reproduced from the checkpoint by `measure`.

use super::{temp_dir, tiny_config};
use crate::checkpoint::list_checkpoints;
use crate::measure::{measure_checkpoint, MeasureArgs};
use crate::metrics::read_metrics;
use crate::rundir::RunDir;
use crate::train::{train, TrainOptions};

#[test]
fn logged_curvature_matches_remeasured_checkpoint() {
    let dir = temp_dir("curvature");
    let mut config = tiny_config();
    config.stop.max_epochs = 1;
    config.tracking.curvature = true;
    config.tracking.dense_every = 8;
    config.tracking.k_examples = 16;
    config.tracking.lanczos_iters = 30;
    config.tracking.hutchinson_samples = 4;
    let run = RunDir::new(dir.join("run"));
    train(&config.validate().unwrap(), &run, &TrainOptions::default()).unwrap();
    let last = read_metrics(&run.metrics_path()).unwrap().pop().unwrap();
    let logged = last.curvature.expect("curvature logged");
    assert_eq!(logged.lambda_h.len(), config.tracking.top_k);
    assert!(
        logged.lambda_h.windows(2).all(|w| w[0] >= w[1]),
        "{:?}",
        logged.lambda_h
    );
    assert!(logged.fisher_trace.unwrap() > 0.0 && logged.k_trace.unwrap() > 0.0);
    assert!(logged.lambda_k1.unwrap() <= logged.k_trace.unwrap() * (1.0 + 1e-12));

    let (step, ckpt) = list_checkpoints(&run.checkpoint_dir())
        .unwrap()
        .pop()
        .unwrap();
    assert_eq!(step, last.step);
    // Default settings re-measure what training logged, on the same examples with the same
    // random draws: every number is reproduced bit for bit.
    let flags = |extra: &[&str]| {
        let mut f = vec!["--checkpoint".to_string(), ckpt.display().to_string()];
        f.extend(extra.iter().map(|s| s.to_string()));
        MeasureArgs::parse_flags(f).unwrap()
    };
    let m = measure_checkpoint(&flags(&[]), None).unwrap();
    assert_eq!(m.step, Some(step));
    assert_eq!(m.lambda_h.as_ref().unwrap().values, logged.lambda_h);
    assert_eq!(
        Some(m.trace_h.as_ref().unwrap().value),
        logged.hessian_trace
    );
    assert_eq!(Some(m.trace_f.as_ref().unwrap().value), logged.fisher_trace);
    let k = m.k.as_ref().unwrap();
    assert_eq!(Some(k.trace_k), logged.k_trace);
    assert_eq!(Some(k.lambda_k1), logged.lambda_k1);
    assert_eq!(m.loss.as_ref().map(|l| l.value), last.measure_loss);
    assert_eq!(m.loss.as_ref().map(|l| l.accuracy), last.measure_acc);
    // ... and says which examples each used: the logged subset, and its first k_examples.
    assert_eq!(m.examples.hessian.count, config.tracking.measure_subset);
    assert_eq!(m.examples.gradient.count, config.tracking.k_examples);
    assert_eq!(
        m.examples.hessian.indices[..16],
        m.examples.gradient.indices[..]
    );
    // Every estimate carries its error and diagnostics.
    let t = m.trace_h.as_ref().unwrap();
    assert!(t.std_error > 0.0 && t.std_error.is_finite() && t.method == "hutchinson");
    let e = m.lambda_h.as_ref().unwrap();
    assert_eq!(e.residuals.len(), config.tracking.top_k);
    assert!(e.iterations >= config.tracking.top_k && e.iterations <= 30);
    // Cost: 16 sampled-label and 16 data-label per-example gradients; a forward per loss
    // batch (64 examples: one batch) and per HVP and batch; for Tr(F) one for the softmax and
    // one taped for the sampled labels, and one for the 16 examples of K (the fc net's
    // per-example gradients are batched passes, not a loop of 16).
    let c = &m.cost.passes;
    assert_eq!(c.hvp as usize, e.matvecs + t.matvecs);
    assert_eq!(c.per_example_gradients, 32);
    assert_eq!(c.forward_passes, 1 + c.hvp + 2 + 1);

    // The run config given explicitly: the optimizer tensors are skipped with a note.
    let config_file = dir.join("run.toml");
    std::fs::write(&config_file, config.to_toml().unwrap()).unwrap();
    let cfg = config_file.display().to_string();
    let with_config = measure_checkpoint(&flags(&["--config", &cfg]), None).unwrap();
    assert_eq!(with_config.k, m.k);
    assert!(
        with_config
            .notes
            .iter()
            .any(|n| n.contains("optimizer tensors")),
        "{:?}",
        with_config.notes
    );

    // The same weights as a bare file (what a PyTorch user would save from a `state_dict`),
    // measured with the run config given explicitly: the same loss, accuracy and Tr(K).
    let tensors = candle_core::safetensors::load(&ckpt, &candle_core::Device::Cpu).unwrap();
    let weights: std::collections::HashMap<String, candle_core::Tensor> = tensors
        .into_iter()
        .filter(|(name, _)| !name.starts_with("optimizer."))
        .collect();
    let bare = dir.join("weights.safetensors");
    candle_core::safetensors::save(&weights, &bare).unwrap();
    let mut args = flags(&["--config", &cfg]);
    args.checkpoint = bare;
    let b = measure_checkpoint(&args, None).unwrap();
    assert_eq!((b.kind.as_str(), b.step), ("weights file", None));
    assert_eq!(b.loss, m.loss);
    // Another step: other draws, but Tr(K) is deterministic.
    assert_eq!(b.k, m.k);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn lanczos_residuals_and_the_kth_gram_eigenvalue_are_logged_and_remeasured() {
    let dir = temp_dir("curvature-tol");
    let mut config = tiny_config();
    config.stop.max_epochs = 1;
    config.tracking.curvature = true;
    config.tracking.dense_every = 8;
    config.tracking.k_examples = 16;
    config.tracking.k_star = Some(4);
    config.tracking.top_k = 2;
    config.tracking.lanczos_iters = 80;
    config.tracking.lanczos_tol = Some(1e-4);
    config.tracking.hutchinson_samples = 2;
    let run = RunDir::new(dir.join("run"));
    train(&config.validate().unwrap(), &run, &TrainOptions::default()).unwrap();
    let records = read_metrics(&run.metrics_path()).unwrap();
    let logged: Vec<_> = records.iter().filter_map(|r| r.curvature.clone()).collect();
    assert!(logged.len() >= 2);
    for c in &logged {
        assert_eq!(c.lambda_h_residuals.len(), 2, "{c:?}");
        let iterations = c.lanczos_iterations.unwrap();
        assert!((2..=80).contains(&iterations), "{c:?}");
        // Converged means every true relative residual met the tolerance.
        if c.lanczos_converged == Some(true) {
            assert!(c.lambda_h_residuals.iter().all(|&r| r <= 1e-4), "{c:?}");
        }
        let ratio = c.k_ratio.unwrap();
        assert!(ratio > 0.0 && ratio <= 1.0, "{c:?}");
    }
    // On this small model Lanczos reaches 1e-4 well inside 80 iterations.
    assert!(logged.iter().all(|c| c.lanczos_converged == Some(true)));
    // `breakeven measure` reads k_star and the tolerance from the run config: same ratio.
    let (_, ckpt) = list_checkpoints(&run.checkpoint_dir())
        .unwrap()
        .pop()
        .unwrap();
    let args =
        MeasureArgs::parse_flags(vec!["--checkpoint".to_string(), ckpt.display().to_string()])
            .unwrap();
    let m = measure_checkpoint(&args, None).unwrap();
    assert_eq!(m.settings.k_star, Some(4));
    assert_eq!(m.settings.tol, 1e-4);
    assert_eq!(
        Some(m.k.as_ref().unwrap().ratio),
        logged.last().unwrap().k_ratio
    );
    // Out-of-range values are refused with the key named.
    for (k, message) in [(Some(0), "tracking.k_star"), (Some(16), "tracking.k_star")] {
        let mut bad = config.clone();
        bad.tracking.k_star = k;
        let err = bad.validate().unwrap_err().to_string();
        assert!(err.contains(message), "{err}");
    }
    let mut bad = config.clone();
    bad.tracking.lanczos_tol = Some(0.0);
    let err = bad.validate().unwrap_err().to_string();
    assert!(err.contains("tracking.lanczos_tol"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn tracking_does_not_change_the_trajectory() {
    // With the Fisher penalty the step generator is in use: measurements must not draw from it.
    let dir = temp_dir("tracking-off");
    let mut config = tiny_config();
    config.stop.max_epochs = 1;
    config.penalty.kind = Some(breakeven_penalties::PenaltyKind::Fp);
    config.penalty.alpha = 0.1;
    config.penalty.every = 2;
    let plain = RunDir::new(dir.join("plain"));
    train(
        &config.validate().unwrap(),
        &plain,
        &TrainOptions::default(),
    )
    .unwrap();
    config.tracking.curvature = true;
    config.tracking.k_examples = 8;
    config.tracking.lanczos_iters = 5;
    config.tracking.hutchinson_samples = 2;
    let tracked = RunDir::new(dir.join("tracked"));
    train(
        &config.validate().unwrap(),
        &tracked,
        &TrainOptions::default(),
    )
    .unwrap();
    assert_eq!(
        super::resume::final_bits(&plain),
        super::resume::final_bits(&tracked)
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn covariance_off_measures_the_fisher_trace_alone() {
    let dir = temp_dir("covariance-off");
    let mut config = tiny_config();
    config.stop.max_epochs = 1;
    config.tracking.curvature = true;
    config.tracking.k_examples = 8;
    config.tracking.lanczos_iters = 0;
    config.tracking.hutchinson_samples = 0;
    let run = |name: &str, config: &crate::config::RunConfig| {
        let r = RunDir::new(dir.join(name));
        train(&config.validate().unwrap(), &r, &TrainOptions::default()).unwrap();
        read_metrics(&r.metrics_path()).unwrap()
    };
    let with = run("with", &config);
    config.tracking.covariance = false;
    // Off is written to the run's config; on (the default) is not, so older configs are unchanged.
    assert!(config.to_toml().unwrap().contains("covariance = false"));
    let without = run("without", &config);
    assert_eq!(with.len(), without.len());
    for (a, b) in with.iter().zip(&without) {
        let (a, b) = (a.curvature.as_ref().unwrap(), b.curvature.as_ref().unwrap());
        // The same Fisher trace (its own draws), no covariance quantities, 8 fewer passes.
        assert_eq!(a.fisher_trace, b.fisher_trace);
        assert!(a.lambda_k1.is_some() && a.k_trace.is_some());
        assert_eq!((b.lambda_k1, b.k_trace, b.k_ratio), (None, None, None));
        assert_eq!(a.matvecs, b.matvecs + 8);
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
