//! Curvature tracking: logged values are reproduced from the checkpoint by `measure`.

use super::{temp_dir, tiny_config};
use crate::checkpoint::list_checkpoints;
use crate::measure::measure_checkpoint;
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
    let json = measure_checkpoint(&ckpt, None, None, None, None).unwrap();
    let again = &json["curvature"];
    // Tr(K) has no randomness: identical. λ_H^1 from another Lanczos start: same to 1e-3.
    let k = again["k_trace"].as_f64().unwrap();
    assert!(
        (k - logged.k_trace.unwrap()).abs() <= 1e-9 * k,
        "{k} vs {:?}",
        logged.k_trace
    );
    let l1 = again["lambda_h"][0].as_f64().unwrap();
    assert!(
        (l1 - logged.lambda_h[0]).abs() <= 1e-3 * l1.abs(),
        "{l1} vs {}",
        logged.lambda_h[0]
    );
    assert_eq!(json["step"].as_u64().unwrap(), step);
    // The logged loss on the measurement subset is recomputed exactly from the checkpoint.
    assert_eq!(json["loss"].as_f64(), last.measure_loss);
    assert_eq!(json["accuracy"].as_f64(), last.measure_acc);

    // The same weights as a bare file (what a PyTorch user would save from a `state_dict`),
    // measured with the run config given explicitly: the same loss, accuracy and Tr(K).
    let tensors = candle_core::safetensors::load(&ckpt, &candle_core::Device::Cpu).unwrap();
    let weights: std::collections::HashMap<String, candle_core::Tensor> = tensors
        .into_iter()
        .filter(|(name, _)| !name.starts_with("optimizer."))
        .collect();
    let bare = dir.join("weights.safetensors");
    candle_core::safetensors::save(&weights, &bare).unwrap();
    let config_file = dir.join("run.toml");
    std::fs::write(&config_file, config.to_toml().unwrap()).unwrap();
    let json = measure_checkpoint(&bare, Some(&config_file), None, None, None).unwrap();
    assert_eq!(json["loss"].as_f64(), last.measure_loss);
    assert_eq!(json["accuracy"].as_f64(), last.measure_acc);
    let k_bare = json["curvature"]["k_trace"].as_f64().unwrap();
    assert!((k_bare - k).abs() <= 1e-9 * k, "{k_bare} vs {k}");
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
