//! Full-batch GD in f64: the MSE loss against its closed form and finite differences, the
//! batched accumulation against one batch, and the GD step against θ − η g.

use super::*;
use breakeven_curvature::params_to_vec;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const CLASSES: usize = 3;

/// `n` seeded examples of 2×2×2 inputs in batches of the given sizes (f64, CPU).
fn data(sizes: &[usize], seed: u64) -> FullBatchData {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let n: usize = sizes.iter().sum();
    let xs: Vec<f64> = (0..n * 8).map(|_| rng.random_range(-1.0..1.0)).collect();
    let ys: Vec<u32> = (0..n).map(|i| (i % CLASSES) as u32).collect();
    let (mut batches, mut off) = (Vec::new(), 0);
    for &b in sizes {
        let x = Tensor::from_vec(
            xs[off * 8..(off + b) * 8].to_vec(),
            (b, 2, 2, 2),
            &Device::Cpu,
        )
        .unwrap();
        let y = Tensor::from_vec(ys[off..off + b].to_vec(), b, &Device::Cpu).unwrap();
        let onehot = one_hot(&y, CLASSES, DType::F64).unwrap();
        batches.push((x, y, onehot));
        off += b;
    }
    FullBatchData {
        batches,
        n,
        input: (2, 2, 2),
        num_classes: CLASSES,
    }
}

fn model() -> Box<dyn Model> {
    let spec = ModelSpec::FcTanh { widths: vec![5] };
    build(&spec, (2, 2, 2), CLASSES, DType::F64, &Device::Cpu, 7).unwrap()
}

#[test]
fn mse_is_half_the_squared_error_summed_over_classes_and_averaged_over_examples() {
    let logits = Tensor::new(&[[1.0f64, 0.0, 2.0], [0.5, 0.5, 0.5]], &Device::Cpu).unwrap();
    let labels = Tensor::new(&[2u32, 0], &Device::Cpu).unwrap();
    let onehot = one_hot(&labels, 3, DType::F64).unwrap();
    // Row 0: (1, 0, 1)² → 2; row 1: (0.5, 0.5, 0.5)² → 0.75; 0.5 · mean(2, 0.75) = 0.6875.
    let l = mse_onehot(&logits, &onehot)
        .unwrap()
        .to_scalar::<f64>()
        .unwrap();
    assert!((l - 0.6875).abs() < 1e-15, "{l}");
    assert!(one_hot(&Tensor::new(&[3u32], &Device::Cpu).unwrap(), 3, DType::F64).is_err());
}

#[test]
fn full_batch_gradient_matches_finite_differences_for_both_losses() {
    let d = data(&[4, 3], 1);
    let m = model();
    let vars: Vec<Var> = m.params().iter().map(|p| p.var.clone()).collect();
    let theta = params_to_vec(&vars).unwrap();
    for kind in [FullBatchLoss::Mse, FullBatchLoss::Ce] {
        let (_, g) = full_gradient(m.as_ref(), kind, &d).unwrap();
        let h = 1e-6;
        for i in (0..theta.len()).step_by(7) {
            let at = |delta: f64| {
                let mut t = theta.clone();
                t[i] += delta;
                for (v, x) in vars.iter().zip(vec_to_tensors(&t, &vars).unwrap()) {
                    v.set(&x).unwrap();
                }
                full_gradient(m.as_ref(), kind, &d).unwrap().0
            };
            let fd = (at(h) - at(-h)) / (2.0 * h);
            assert!(
                (fd - g[i]).abs() < 1e-7 * (1.0 + g[i].abs()),
                "{kind:?} coordinate {i}: FD {fd} vs gradient {}",
                g[i]
            );
        }
        for (v, x) in vars.iter().zip(vec_to_tensors(&theta, &vars).unwrap()) {
            v.set(&x).unwrap();
        }
    }
}

#[test]
fn batched_accumulation_equals_one_batch_of_everything() {
    let m = model();
    for kind in [FullBatchLoss::Mse, FullBatchLoss::Ce] {
        let (l1, g1) = full_gradient(m.as_ref(), kind, &data(&[7], 2)).unwrap();
        let (l3, g3) = full_gradient(m.as_ref(), kind, &data(&[3, 2, 2], 2)).unwrap();
        assert!((l1 - l3).abs() < 1e-13, "{kind:?}: loss {l1} vs {l3}");
        let worst = g1
            .iter()
            .zip(&g3)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        assert!(worst < 1e-13, "{kind:?}: gradients differ by {worst}");
    }
}

#[test]
fn gd_step_moves_the_parameters_by_minus_lr_times_the_gradient() {
    let m = model();
    let d = data(&[5], 3);
    let vars: Vec<Var> = m.params().iter().map(|p| p.var.clone()).collect();
    let before = params_to_vec(&vars).unwrap();
    let (_, g) = full_gradient(m.as_ref(), FullBatchLoss::Mse, &d).unwrap();
    gd_step(m.as_ref(), &g, 0.25).unwrap();
    let after = params_to_vec(&vars).unwrap();
    for ((a, b), gi) in after.iter().zip(&before).zip(&g) {
        assert_eq!(*a, b - 0.25 * gi);
    }
}

#[test]
fn lanczos_sharpness_matches_the_rayleigh_quotient_bound_and_a_short_run_logs_it() {
    crate::train::enable_second_order().unwrap();
    let m = model();
    let d = data(&[4, 4], 4);
    let (l, v) = top_hessian_eigen(m.as_ref(), FullBatchLoss::Mse, &d, 60, None, 0).unwrap();
    // The returned vector's Rayleigh quotient is λ, and λ_max ≥ any Rayleigh quotient: check
    // against a finite-difference curvature of the loss along v.
    let vars: Vec<Var> = m.params().iter().map(|p| p.var.clone()).collect();
    let theta = params_to_vec(&vars).unwrap();
    let loss_at = |s: f64| {
        let t: Vec<f64> = theta.iter().zip(&v).map(|(a, b)| a + s * b).collect();
        for (var, x) in vars.iter().zip(vec_to_tensors(&t, &vars).unwrap()) {
            var.set(&x).unwrap();
        }
        full_gradient(m.as_ref(), FullBatchLoss::Mse, &d).unwrap().0
    };
    let h = 1e-4;
    let curvature = (loss_at(h) - 2.0 * loss_at(0.0) + loss_at(-h)) / (h * h);
    assert!(
        (curvature - l).abs() < 1e-5 * (1.0 + l.abs()),
        "vᵀHv {curvature} vs λ {l}"
    );

    let spec = FullBatchSpec {
        data: "synthetic".into(),
        n: 8,
        batch: 4,
        model: ModelSpec::FcTanh { widths: vec![5] },
        loss: FullBatchLoss::Mse,
        lr: 0.1,
        steps: 4,
        measure_every: 2,
        lanczos_iters: 10,
        stop_acc: None,
        seed: 7,
        dtype: "f64".into(),
        device: "cpu".into(),
    };
    let mut seen = 0;
    let pts = run_full_batch(&spec, &d, &Device::Cpu, &mut |_| seen += 1).unwrap();
    assert_eq!(
        pts.iter().map(|p| p.step).collect::<Vec<_>>(),
        vec![0, 2, 4]
    );
    assert_eq!(seen, 3);
    assert!(pts.iter().all(|p| p.lambda_h1.is_some_and(f64::is_finite)));
    assert!(
        pts[2].loss < pts[0].loss,
        "GD with a small step lowers the loss"
    );
}
