//! The gradient of a penalized step against central finite differences of the penalized loss
//! J(θ) = L_B(θ; y) + α·P(θ) on a tanh MLP, a tanh CNN (on `ops::conv2d`) and an MLP with
//! BatchNorm, in f64; and double backprop against the finite-difference method.

use breakeven_models::{cross_entropy, Mode, Model};
use candle_core::{DType, Device, Tensor, Var};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::nets::{batch, enable_double_backprop, flat, Arch, Net};
use crate::{with_perturbed, GradMethod, Penalizer, PenaltyConfig, PenaltyKind, PenaltyNorm};

const N: usize = 6;

/// J(θ) computed with first-order passes only (batch statistics throughout, as the penalty's
/// definition says), independent of the penalizer's code paths.
fn objective(net: &Net, x: &Tensor, y: &Tensor, cfg: &PenaltyConfig, labels: &Tensor) -> f64 {
    let loss = cross_entropy(&net.forward(x, Mode::BatchStats).unwrap(), y).unwrap();
    let m = cfg.sub_batch.unwrap_or(N);
    let x_m = x.narrow(0, 0, m).unwrap();
    let sq: f64 = if cfg.kind.is_theta() {
        let l = cross_entropy(&net.forward(&x_m, Mode::BatchStats).unwrap(), labels).unwrap();
        let store = l.backward().unwrap();
        let gs: Vec<Tensor> = net
            .vars()
            .iter()
            .map(|v| store.get(v.as_tensor()).unwrap().clone())
            .collect();
        flat(&gs).iter().map(|a| a * a).sum()
    } else {
        let xv = Var::from_tensor(&x_m).unwrap();
        let l = cross_entropy(
            &net.forward(xv.as_tensor(), Mode::BatchStats).unwrap(),
            labels,
        )
        .unwrap();
        let g = l.backward().unwrap().get(xv.as_tensor()).unwrap().clone();
        flat(&[g]).iter().map(|a| a * a).sum()
    };
    let p = match cfg.norm {
        PenaltyNorm::Squared => sq,
        PenaltyNorm::Plain => sq.sqrt(),
    };
    loss.to_scalar::<f64>().unwrap() + cfg.alpha * p
}

fn random_direction(net: &Net, seed: u64) -> Vec<Tensor> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    net.vars()
        .iter()
        .map(|v| {
            let vals = breakeven_models::init::normal(&mut rng, v.elem_count(), 0.0, 1.0);
            Tensor::from_vec(vals, v.dims(), &Device::Cpu).unwrap()
        })
        .collect()
}

fn run(net: &Net, x: &Tensor, y: &Tensor, cfg: &PenaltyConfig, labels: &Tensor) -> Vec<f64> {
    let pen = Penalizer::new(cfg.clone(), N).unwrap();
    let out = if matches!(cfg.kind, PenaltyKind::Fp | PenaltyKind::Gpr) {
        pen.step_with_labels(net, x, y, 0, labels).unwrap()
    } else {
        pen.step(net, x, y, 0, &mut ChaCha8Rng::seed_from_u64(0))
            .unwrap()
    };
    flat(&out.grads)
}

fn cases() -> Vec<(PenaltyKind, Option<usize>, PenaltyNorm)> {
    vec![
        (PenaltyKind::Gp, None, PenaltyNorm::Squared),
        (PenaltyKind::Fp, None, PenaltyNorm::Squared),
        (PenaltyKind::Gpr, Some(4), PenaltyNorm::Squared),
        (PenaltyKind::Gpx, Some(4), PenaltyNorm::Squared),
        (PenaltyKind::Fp, Some(5), PenaltyNorm::Plain),
    ]
}

#[test]
fn double_backprop_gradient_matches_finite_differences_of_the_penalized_loss() {
    enable_double_backprop();
    for arch in [Arch::Mlp, Arch::Cnn, Arch::MlpBn] {
        let net = Net::new(arch, DType::F64, 5);
        let (x, y) = batch(&arch, N, DType::F64, 9);
        for (kind, sub_batch, norm) in cases() {
            let cfg = PenaltyConfig {
                sub_batch,
                norm,
                ..PenaltyConfig::new(kind, 0.7)
            };
            let m = sub_batch.unwrap_or(N);
            let labels = match kind {
                PenaltyKind::Fp | PenaltyKind::Gpr => Tensor::from_vec(
                    (0..m as u32).map(|i| (i * 2 + 1) % 3).collect(),
                    m,
                    &Device::Cpu,
                )
                .unwrap(),
                _ => y.narrow(0, 0, m).unwrap(),
            };
            let grad = run(&net, &x, &y, &cfg, &labels);
            let vars = net.vars();
            for seed in 0..3 {
                let v = random_direction(&net, seed);
                let h = 1e-5;
                let jp =
                    with_perturbed(&vars, &v, h, || Ok(objective(&net, &x, &y, &cfg, &labels)))
                        .unwrap();
                let jm =
                    with_perturbed(&vars, &v, -h, || Ok(objective(&net, &x, &y, &cfg, &labels)))
                        .unwrap();
                let fd = (jp - jm) / (2.0 * h);
                let v = flat(&v);
                let dir: f64 = grad.iter().zip(&v).map(|(g, v)| g * v).sum();
                let scale = grad.iter().map(|g| g * g).sum::<f64>().sqrt()
                    * v.iter().map(|a| a * a).sum::<f64>().sqrt();
                assert!(
                    (dir - fd).abs() < 1e-7 * scale,
                    "{arch:?} {kind:?} m={m} {norm:?}: ⟨∇J, v⟩ = {dir} vs FD {fd} (scale {scale})"
                );
            }
        }
    }
}

/// Double backprop vs the finite-difference method: relative error of the whole gradient
/// (‖a − b‖/‖b‖) within the documented bound for each precision.
#[test]
fn finite_difference_method_agrees_with_double_backprop_on_smooth_nets() {
    enable_double_backprop();
    for (arch, dtype, central_tol, one_sided_tol) in [
        (Arch::Mlp, DType::F64, 1e-8, 1e-4),
        (Arch::Cnn, DType::F64, 1e-8, 1e-4),
        (Arch::Mlp, DType::F32, 5e-4, 3e-2),
        (Arch::Cnn, DType::F32, 5e-4, 3e-2),
    ] {
        let net = Net::new(arch, dtype, 21);
        let (x, y) = batch(&arch, N, dtype, 4);
        for kind in [PenaltyKind::Gp, PenaltyKind::Fp, PenaltyKind::Gpx] {
            let labels = Tensor::new(&[1u32, 0, 2, 2, 1, 0], &Device::Cpu).unwrap();
            let labels = if kind == PenaltyKind::Fp {
                labels
            } else {
                y.clone()
            };
            // α large so that the penalty dominates the compared gradient.
            let db = PenaltyConfig::new(kind, 10.0);
            let exact = run(&net, &x, &y, &db, &labels);
            for (one_sided, tol) in [(false, central_tol), (true, one_sided_tol)] {
                let fd = PenaltyConfig {
                    method: GradMethod::FiniteDifference {
                        epsilon: None,
                        one_sided,
                    },
                    ..db.clone()
                };
                let approx = run(&net, &x, &y, &fd, &labels);
                let diff: f64 = exact
                    .iter()
                    .zip(&approx)
                    .map(|(a, b)| (a - b).powi(2))
                    .sum::<f64>()
                    .sqrt();
                let rel = diff / exact.iter().map(|a| a * a).sum::<f64>().sqrt();
                assert!(rel < tol, "{arch:?} {dtype:?} {kind:?} one_sided={one_sided}: rel error {rel:e} ≥ {tol:e}");
                eprintln!("{arch:?} {dtype:?} {kind:?} one_sided={one_sided}: rel error {rel:e}");
            }
        }
    }
}
