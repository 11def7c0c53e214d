//! Label noise and Mixup in runs: the Mixup loss against a hand computation, clean/noisy
//! training accuracy logged and recomputed from the checkpoint, and Mixup runs resuming
//! bit-identically.

use breakeven_data::symmetric_label_noise;
use breakeven_models::{build, Mode, ModelSpec};
use candle_core::{DType, Device, Tensor};
use rand_chacha::ChaCha8Rng;

use super::{temp_dir, tiny_config};
use crate::checkpoint::list_checkpoints;
use crate::metrics::read_metrics;
use crate::objective::mixup_objective;
use crate::rundir::RunDir;
use crate::setup::{load_data, noise_tracking_split, prepare};
use crate::state::restore;
use crate::train::{train, TrainOptions};

#[test]
fn mixup_loss_and_gradient_match_a_hand_computation() {
    let spec: ModelSpec = toml::from_str("arch = \"fc_relu\"\nwidths = [5]").unwrap();
    let (n, k) = (4, 3);
    let model = build(&spec, (1, 2, 2), k, DType::F64, &Device::Cpu, 3).unwrap();
    let xs: Vec<f64> = (0..n * 4)
        .map(|i| ((i * 7 % 11) as f64 - 5.0) / 3.0)
        .collect();
    let x = Tensor::from_vec(xs, (n, 1, 2, 2), &Device::Cpu).unwrap();
    let (ya, yb) = ([0u32, 2, 1, 1], [1u32, 2, 0, 2]);
    let lambda = 0.3;
    let out = mixup_objective(
        model.as_ref(),
        &x,
        &Tensor::new(&ya, &Device::Cpu).unwrap(),
        &Tensor::new(&yb, &Device::Cpu).unwrap(),
        lambda,
    )
    .unwrap();

    // By hand from the logits: CE_i(y) = log Σ_c exp z_ic − z_iy, mixed with weights λ, 1 − λ;
    // the output bias gradient is the mean of softmax(z_i) − (λ e_ya + (1 − λ) e_yb).
    let z = model
        .forward(&x, Mode::Eval)
        .unwrap()
        .to_vec2::<f64>()
        .unwrap();
    let (mut loss, mut bias_grad) = (0.0, vec![0.0; k]);
    for i in 0..n {
        let lse = z[i].iter().map(|v| v.exp()).sum::<f64>().ln();
        let (a, b) = (ya[i] as usize, yb[i] as usize);
        loss += (lambda * (lse - z[i][a]) + (1.0 - lambda) * (lse - z[i][b])) / n as f64;
        for c in 0..k {
            let target =
                lambda * f64::from(u8::from(c == a)) + (1.0 - lambda) * f64::from(u8::from(c == b));
            bias_grad[c] += ((z[i][c] - lse).exp() - target) / n as f64;
        }
    }
    assert!((out.loss - loss).abs() < 1e-12, "{} vs {loss}", out.loss);
    let last = model.params().last().unwrap().var.dims().to_vec();
    assert_eq!(last, vec![k], "the last parameter is the output bias");
    let got = out.grads.last().unwrap().to_vec1::<f64>().unwrap();
    for (g, h) in got.iter().zip(&bias_grad) {
        assert!((g - h).abs() < 1e-12, "{got:?} vs {bias_grad:?}");
    }
    // λ = 0.3 < 1/2: accuracy counts the partner labels y_b.
    let pred: Vec<usize> = z
        .iter()
        .map(|r| (0..k).fold(0, |m, c| if r[c] > r[m] { c } else { m }))
        .collect();
    let want = (0..n).filter(|&i| pred[i] == yb[i] as usize).count();
    assert_eq!(out.correct, want);
}

#[test]
fn noise_tracking_split_follows_the_mask() {
    let labels: Vec<u32> = (0..200).map(|i| i % 4).collect();
    let noisy = symmetric_label_noise(&labels, 4, 0.25, 9).unwrap();
    let train_idx: Vec<usize> = (0..200).step_by(2).collect();
    let (clean, bad) = noise_tracking_split(&train_idx, &noisy, 60, 1);
    assert_eq!(clean.len() + bad.len(), 60);
    assert!(clean.iter().all(|&i| !noisy.is_noisy[i] && i % 2 == 0));
    assert!(bad.iter().all(|&i| noisy.is_noisy[i] && i % 2 == 0));
    // Roughly a quarter noisy (hypergeometric: 15 ± ~3.4).
    assert!((5..=25).contains(&bad.len()), "{} noisy", bad.len());
    assert_eq!(
        noise_tracking_split(&train_idx, &noisy, 60, 1),
        (clean, bad)
    );
    let (all_clean, all_bad) = noise_tracking_split(&train_idx, &noisy, 10_000, 1);
    assert_eq!(all_clean.len() + all_bad.len(), train_idx.len());
}

#[test]
fn clean_and_noisy_training_accuracy_are_logged_and_recomputed_from_the_checkpoint() {
    let dir = temp_dir("noise-tracking");
    let mut config = tiny_config();
    config.data.label_noise = 0.3;
    config.data.augment = crate::config::Augmentation::None;
    config.tracking.noise_subset = 400;
    let run = RunDir::new(dir.join("run"));
    train(&config.validate().unwrap(), &run, &TrainOptions::default()).unwrap();
    let records = read_metrics(&run.metrics_path()).unwrap();
    for r in &records {
        let (c, nz, nt) = (
            r.train_acc_clean.unwrap(),
            r.train_acc_noisy.unwrap(),
            r.train_acc_noisy_true.unwrap(),
        );
        // A noisy label always differs from the true one: at most one of them is predicted.
        assert!((0.0..=1.0).contains(&c) && nz + nt <= 1.0 + 1e-12, "{r:?}");
    }
    // The blobs are easy: after 3 epochs the net predicts true classes, clean and noisy alike,
    // and has not memorized the wrong labels.
    let last = records.last().unwrap();
    assert!(last.train_acc_clean.unwrap() > 0.9, "{last:?}");
    assert!(last.train_acc_noisy_true.unwrap() > 0.8, "{last:?}");
    assert!(last.train_acc_noisy.unwrap() < 0.2, "{last:?}");

    // Recomputed from the last checkpoint by hand: argmax against the labels.
    let (step, ckpt) = list_checkpoints(&run.checkpoint_dir())
        .unwrap()
        .pop()
        .unwrap();
    assert_eq!(step, last.step);
    let mut p = prepare(&config, load_data(&config, None).unwrap(), Device::Cpu).unwrap();
    let mut rng = <ChaCha8Rng as rand::SeedableRng>::seed_from_u64(0);
    restore(&ckpt, &mut p, &mut rng).unwrap();
    let sets = p.noise.as_ref().unwrap();
    let accuracy = |batches: &[(Tensor, Tensor)], truth: Option<&[Tensor]>| {
        let (mut hit, mut n) = (0, 0);
        for (b, (x, y)) in batches.iter().enumerate() {
            let y = truth.map_or(y, |t| &t[b]).to_vec1::<u32>().unwrap();
            let z = p
                .model
                .forward(x, Mode::Eval)
                .unwrap()
                .to_dtype(DType::F64)
                .unwrap()
                .to_vec2::<f64>()
                .unwrap();
            for (row, &label) in z.iter().zip(&y) {
                let arg = (0..row.len()).fold(0, |m, c| if row[c] > row[m] { c } else { m });
                hit += usize::from(arg == label as usize);
                n += 1;
            }
        }
        hit as f64 / n as f64
    };
    let clean = &sets.clean.as_ref().unwrap().batches;
    let noisy = &sets.noisy.as_ref().unwrap().batches;
    assert_eq!(
        sets.clean.as_ref().unwrap().len + sets.noisy.as_ref().unwrap().len,
        400
    );
    assert_eq!(last.train_acc_clean, Some(accuracy(clean, None)));
    assert_eq!(last.train_acc_noisy, Some(accuracy(noisy, None)));
    assert_eq!(
        last.train_acc_noisy_true,
        Some(accuracy(noisy, Some(&sets.noisy_true)))
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
