//! The gradient of a penalized step against central finite differences of the penalized loss
//! J(θ) = L_B(θ; y) + α·P(θ) on a tanh MLP, a tanh CNN (on `ops::conv2d`) and an MLP with
//! BatchNorm, in f64; and double backprop against the finite-difference method.

use breakeven_models::{cross_entropy, Mode, Model};
use candle_core::{DType, Device, Tensor, Var};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::nets::{batch, enable_double_backprop, flat, Arch, Net};
use breakeven_curvature::with_perturbed;

use crate::{GradMethod, Penalizer, PenaltyConfig, PenaltyKind, PenaltyNorm};

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
                let jp = with_perturbed(&vars, &v, h, || {
                    Ok::<_, candle_core::Error>(objective(&net, &x, &y, &cfg, &labels))
                })
                .unwrap();
                let jm = with_perturbed(&vars, &v, -h, || {
                    Ok::<_, candle_core::Error>(objective(&net, &x, &y, &cfg, &labels))
                })
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
/// (‖a − b‖/‖b‖) within the documented bound for each precision, with curvature's step rule
/// (h = ∛u central, √u one-sided, times 1 + ‖θ‖): measured 1e-9 / 6e-8 in f64 and
/// 9e-4 / 4e-4 in f32 on these smooth nets.
#[test]
fn finite_difference_method_agrees_with_double_backprop_on_smooth_nets() {
    enable_double_backprop();
    for (arch, dtype, central_tol, one_sided_tol) in [
        (Arch::Mlp, DType::F64, 1e-8, 1e-6),
        (Arch::Cnn, DType::F64, 1e-8, 1e-6),
        (Arch::Mlp, DType::F32, 2e-3, 2e-3),
        (Arch::Cnn, DType::F32, 2e-3, 2e-3),
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
                        rel_step: None,
                        one_sided,
                        checked: true,
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

/// The bound settled on for issue 18: a finite-difference ∇P is used only where it settles to
/// within 5% (`FD_AGREEMENT`) when the step is divided by 4, checked on the first penalized
/// step. On a ReLU/max-pool SimpleCNN in f32 it never does (the crossed kinks make the
/// difference from double backprop 0.6-20× at every step size, docs/results/cpu-speed.md), so
/// the method is refused there with a message that names the way out, for every penalty and
/// both schemes; the smooth nets of the test above pass the same check.
#[test]
fn finite_difference_is_refused_on_a_relu_net_in_f32() {
    enable_double_backprop();
    let model = breakeven_models::build(
        &breakeven_models::ModelSpec::SimpleCnn { width_mult: 0.25 },
        (3, 16, 16),
        10,
        DType::F32,
        &Device::Cpu,
        1,
    )
    .unwrap();
    let n = 32;
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    let x = Tensor::from_vec(
        breakeven_models::init::normal(&mut rng, n * 3 * 16 * 16, 0.0, 1.0),
        (n, 3, 16, 16),
        &Device::Cpu,
    )
    .unwrap()
    .to_dtype(DType::F32)
    .unwrap();
    let y = Tensor::from_vec((0..n as u32).map(|i| i % 10).collect(), n, &Device::Cpu).unwrap();
    for kind in [PenaltyKind::Gp, PenaltyKind::Fp, PenaltyKind::Gpx] {
        for one_sided in [true, false] {
            let cfg = PenaltyConfig {
                method: GradMethod::FiniteDifference {
                    rel_step: None,
                    one_sided,
                    checked: true,
                },
                ..PenaltyConfig::new(kind, 0.1)
            };
            let pen = Penalizer::new(cfg, n).unwrap();
            let err = pen
                .step(model.as_ref(), &x, &y, 0, &mut ChaCha8Rng::seed_from_u64(0))
                .unwrap_err();
            match &err {
                crate::PenaltyError::FiniteDifferenceUnreliable {
                    disagreement,
                    bound,
                    ..
                } => {
                    assert!(
                        disagreement > bound,
                        "{kind:?} one_sided={one_sided}: {err}"
                    );
                    eprintln!("{kind:?} one_sided={one_sided}: disagreement {disagreement:.3}");
                }
                other => panic!("{kind:?} one_sided={one_sided}: expected a refusal, got {other}"),
            }
            assert!(
                err.to_string().contains("method = double_backprop"),
                "{err}"
            );
            // Double backprop is the way out, and it works on the same step.
            let db = Penalizer::new(PenaltyConfig::new(kind, 0.1), n).unwrap();
            db.step(model.as_ref(), &x, &y, 0, &mut ChaCha8Rng::seed_from_u64(0))
                .unwrap();
            // Unchecked, the same step trains on the difference (for comparisons only).
            let unchecked = PenaltyConfig {
                method: GradMethod::FiniteDifference {
                    rel_step: None,
                    one_sided,
                    checked: false,
                },
                ..PenaltyConfig::new(kind, 0.1)
            };
            let out = Penalizer::new(unchecked, n)
                .unwrap()
                .step(model.as_ref(), &x, &y, 0, &mut ChaCha8Rng::seed_from_u64(0))
                .unwrap();
            assert!(out.penalty.is_some_and(f64::is_finite));
        }
    }
}
