//! What a penalized step does besides its math: BatchNorm modes, α = 0 equals a plain step bit
//! for bit, every-k scheduling, FP sampling from the caller's generator, typed errors.

use breakeven_models::{cross_entropy, Mode, Model};
use candle_core::{DType, Tensor};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::nets::{batch, enable_double_backprop, Arch, Net};
use crate::{
    sample_fisher_labels, GradMethod, Penalizer, PenaltyConfig, PenaltyError, PenaltyKind,
};

const N: usize = 6;

fn fd() -> GradMethod {
    GradMethod::FiniteDifference {
        rel_step: None,
        one_sided: false,
        checked: true,
    }
}

fn bits(ts: &[Tensor]) -> Vec<Vec<u64>> {
    ts.iter()
        .map(|t| {
            t.flatten_all()
                .unwrap()
                .to_dtype(DType::F64)
                .unwrap()
                .to_vec1::<f64>()
                .unwrap()
                .iter()
                .map(|v| v.to_bits())
                .collect()
        })
        .collect()
}

fn state(net: &Net) -> Vec<Vec<u64>> {
    let mut ts: Vec<Tensor> = net.vars().iter().map(|v| v.as_tensor().clone()).collect();
    ts.extend(net.buffers().iter().map(|(_, v)| v.as_tensor().clone()));
    bits(&ts)
}

/// The plain gradient as the penalizer's plain passes take it: on curvature's detaching worker,
/// where BatchNorm's backward is the fused kernel (its low bits differ from the graph-keeping
/// composition that a backward on this thread would use).
fn plain_grads(net: &Net, x: &Tensor, y: &Tensor) -> Vec<Tensor> {
    let loss = cross_entropy(&net.forward(x, Mode::Train).unwrap(), y).unwrap();
    let store = breakeven_curvature::backward_detached(&loss).unwrap();
    net.vars()
        .iter()
        .map(|v| store.get(v.as_tensor()).unwrap().clone())
        .collect()
}

#[test]
fn alpha_zero_is_a_plain_step_bit_for_bit() {
    enable_double_backprop();
    let (x, y) = batch(&Arch::MlpBn, N, DType::F32, 1);
    for method in [GradMethod::DoubleBackprop, fd()] {
        for (kind, sub_batch) in [
            (PenaltyKind::Fp, None),
            (PenaltyKind::Gp, Some(4)),
            (PenaltyKind::Gpx, None),
        ] {
            let net = Net::new(Arch::MlpBn, DType::F32, 2);
            let reference = Net::new(Arch::MlpBn, DType::F32, 2);
            let cfg = PenaltyConfig {
                sub_batch,
                method: method.clone(),
                ..PenaltyConfig::new(kind, 0.0)
            };
            let out = Penalizer::new(cfg, N)
                .unwrap()
                .step(&net, &x, &y, 0, &mut ChaCha8Rng::seed_from_u64(3))
                .unwrap();
            assert!(out.applied && out.penalty.unwrap() > 0.0);
            let want = plain_grads(&reference, &x, &y);
            assert_eq!(bits(&out.grads), bits(&want), "{kind:?} {method:?}");
            // Parameters restored and running statistics updated exactly once, as a plain step.
            assert_eq!(state(&net), state(&reference), "{kind:?} {method:?}");
        }
    }
}

#[test]
fn batchnorm_sees_train_once_and_batch_stats_in_extra_passes() {
    enable_double_backprop();
    let (x, y) = batch(&Arch::MlpBn, N, DType::F64, 1);
    let cases = [
        (GradMethod::DoubleBackprop, None, vec![Mode::Train]),
        (
            GradMethod::DoubleBackprop,
            Some(4),
            vec![Mode::Train, Mode::BatchStats],
        ),
        (
            fd(),
            None,
            vec![Mode::Train, Mode::BatchStats, Mode::BatchStats],
        ),
        (
            fd(),
            Some(3),
            vec![
                Mode::Train,
                Mode::BatchStats,
                Mode::BatchStats,
                Mode::BatchStats,
            ],
        ),
    ];
    for (method, sub_batch, modes) in cases {
        let net = Net::new(Arch::MlpBn, DType::F64, 2);
        let cfg = PenaltyConfig {
            sub_batch,
            method: method.clone(),
            ..PenaltyConfig::new(PenaltyKind::Fp, 0.1)
        };
        // Step 2, a steady-state step: the first penalized step (0) of an FD run also runs the
        // reliability check's passes at a quarter of the step (all `BatchStats` as well).
        Penalizer::new(cfg, N)
            .unwrap()
            .step(&net, &x, &y, 2, &mut ChaCha8Rng::seed_from_u64(0))
            .unwrap();
        assert_eq!(
            net.take_modes(),
            modes,
            "{method:?} sub_batch {sub_batch:?}"
        );
        let tracked = net
            .buffers()
            .into_iter()
            .find(|(n, _)| n.ends_with("num_batches_tracked"))
            .unwrap()
            .1;
        assert_eq!(tracked.as_tensor().to_scalar::<i64>().unwrap(), 1);
    }
}

#[test]
fn penalty_applies_every_k_steps_only() {
    enable_double_backprop();
    let net = Net::new(Arch::Mlp, DType::F64, 2);
    let (x, y) = batch(&Arch::Mlp, N, DType::F64, 1);
    let pen = Penalizer::new(
        PenaltyConfig {
            every: 3,
            ..PenaltyConfig::new(PenaltyKind::Gp, 0.5)
        },
        N,
    )
    .unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    for step in 0..4u64 {
        let out = pen.step(&net, &x, &y, step, &mut rng).unwrap();
        assert_eq!(out.applied, step % 3 == 0, "step {step}");
        assert_eq!(out.penalty.is_some(), out.applied);
        let plain = bits(&plain_grads(&net, &x, &y));
        assert_eq!(bits(&out.grads) == plain, !out.applied, "step {step}");
    }
}

#[test]
fn fisher_labels_come_from_the_callers_generator() {
    enable_double_backprop();
    let net = Net::new(Arch::Mlp, DType::F64, 2);
    let (x, y) = batch(&Arch::Mlp, N, DType::F64, 1);
    let pen = Penalizer::new(PenaltyConfig::new(PenaltyKind::Fp, 0.5), N).unwrap();
    let drawn = pen
        .step(&net, &x, &y, 0, &mut ChaCha8Rng::seed_from_u64(42))
        .unwrap();
    let logits = net.forward(&x, Mode::Eval).unwrap();
    let labels = sample_fisher_labels(&logits, &mut ChaCha8Rng::seed_from_u64(42)).unwrap();
    let fixed = pen.step_with_labels(&net, &x, &y, 0, &labels).unwrap();
    assert_eq!(bits(&drawn.grads), bits(&fixed.grads));
    assert_eq!(drawn.penalty, fixed.penalty);
    // Resampled at every evaluation: the generator moves on, and so do the labels.
    let mut rng = ChaCha8Rng::seed_from_u64(42);
    let values: Vec<f64> = (0..4)
        .map(|_| {
            pen.step(&net, &x, &y, 0, &mut rng)
                .unwrap()
                .penalty
                .unwrap()
        })
        .collect();
    assert!(values.windows(2).any(|w| w[0] != w[1]), "{values:?}");
}

#[test]
fn bad_configs_are_refused_at_construction() {
    let cases = [
        (PenaltyConfig::new(PenaltyKind::Fp, -0.1), "`alpha`"),
        (
            PenaltyConfig {
                every: 0,
                ..PenaltyConfig::new(PenaltyKind::Gp, 0.1)
            },
            "`every`",
        ),
        (
            PenaltyConfig {
                sub_batch: Some(0),
                ..PenaltyConfig::new(PenaltyKind::Gp, 0.1)
            },
            "`sub_batch`",
        ),
        (
            PenaltyConfig {
                method: GradMethod::FiniteDifference {
                    rel_step: Some(-1.0),
                    one_sided: false,
                    checked: true,
                },
                ..PenaltyConfig::new(PenaltyKind::Gp, 0.1)
            },
            "rel_step",
        ),
    ];
    for (cfg, field) in cases {
        let err = Penalizer::new(cfg, N).unwrap_err();
        assert!(matches!(err, PenaltyError::InvalidConfig { .. }), "{err}");
        assert!(err.to_string().contains(field), "{err} should name {field}");
    }
    let err = Penalizer::new(
        PenaltyConfig {
            sub_batch: Some(7),
            ..PenaltyConfig::new(PenaltyKind::Gpx, 0.1)
        },
        N,
    )
    .unwrap_err();
    assert!(
        matches!(
            err,
            PenaltyError::SubBatchTooLarge {
                sub_batch: 7,
                batch: 6
            }
        ),
        "{err}"
    );
}

#[test]
fn config_is_serde_with_defaults_and_rejects_unknown_keys() {
    let cfg: PenaltyConfig = serde_json::from_str(r#"{"kind":"fp","alpha":0.01}"#).unwrap();
    assert_eq!(cfg, PenaltyConfig::new(PenaltyKind::Fp, 0.01));
    let cfg: PenaltyConfig = serde_json::from_str(
        r#"{"kind":"gpx","alpha":0.1,"norm":"plain","every":10,"sub_batch":128,
            "method":{"finite_difference":{"one_sided":true}}}"#,
    )
    .unwrap();
    assert_eq!(
        cfg.method,
        GradMethod::FiniteDifference {
            rel_step: None,
            one_sided: true,
            checked: true,
        }
    );
    assert_eq!(
        serde_json::from_str::<PenaltyConfig>(&serde_json::to_string(&cfg).unwrap()).unwrap(),
        cfg
    );
    assert!(serde_json::from_str::<PenaltyConfig>(r#"{"kind":"fp","alpha":0.01,"k":10}"#).is_err());
    assert!(serde_json::from_str::<PenaltyConfig>(
        r#"{"kind":"fp","alpha":0.01,"method":{"finite_difference":{"eps":1e-3}}}"#
    )
    .is_err());
}

#[test]
fn divergence_is_a_typed_error_and_parameters_survive_failures() {
    enable_double_backprop();
    let (x, y) = batch(&Arch::Mlp, N, DType::F64, 1);
    // A NaN input: the loss itself.
    let net = Net::new(Arch::Mlp, DType::F64, 2);
    let bad_x = x.affine(f64::NAN, 0.0).unwrap();
    let pen = Penalizer::new(PenaltyConfig::new(PenaltyKind::Gp, 0.1), N).unwrap();
    let err = pen
        .step(&net, &bad_x, &y, 4, &mut ChaCha8Rng::seed_from_u64(0))
        .unwrap_err();
    assert!(
        matches!(
            err,
            PenaltyError::Diverged {
                step: 4,
                what: "loss",
                ..
            }
        ),
        "{err}"
    );
    // Finite loss, NaN penalty (its extra pass diverges), for both methods.
    for method in [GradMethod::DoubleBackprop, fd()] {
        let mut net = Net::new(Arch::Mlp, DType::F64, 2);
        net.nan_in_batch_stats = true;
        let cfg = PenaltyConfig {
            sub_batch: Some(4),
            method: method.clone(),
            ..PenaltyConfig::new(PenaltyKind::Fp, 0.1)
        };
        let err = Penalizer::new(cfg, N)
            .unwrap()
            .step(&net, &x, &y, 9, &mut ChaCha8Rng::seed_from_u64(0))
            .unwrap_err();
        assert!(
            matches!(
                err,
                PenaltyError::Diverged {
                    step: 9,
                    what: "penalty",
                    ..
                }
            ),
            "{method:?}: {err}"
        );
    }
    // A failure inside the perturbed pass θ − εĝ (the third forward) leaves θ bit for bit.
    let mut net = Net::new(Arch::Mlp, DType::F64, 2);
    net.fail_at_call = Some(2);
    let before = state(&net);
    let cfg = PenaltyConfig {
        method: fd(),
        ..PenaltyConfig::new(PenaltyKind::Gp, 0.1)
    };
    let err = Penalizer::new(cfg, N)
        .unwrap()
        .step(&net, &x, &y, 0, &mut ChaCha8Rng::seed_from_u64(0))
        .unwrap_err();
    assert!(matches!(err, PenaltyError::Candle(_)), "{err}");
    assert_eq!(net.take_modes(), vec![Mode::Train, Mode::BatchStats]);
    assert_eq!(state(&net), before);
}

#[test]
fn mismatched_batches_and_labels_are_refused() {
    enable_double_backprop();
    let net = Net::new(Arch::Mlp, DType::F64, 2);
    let (x, y) = batch(&Arch::Mlp, N, DType::F64, 1);
    let gp = Penalizer::new(PenaltyConfig::new(PenaltyKind::Gp, 0.1), N).unwrap();
    let short = y.narrow(0, 0, 4).unwrap();
    assert!(matches!(
        gp.step(&net, &x, &short, 0, &mut ChaCha8Rng::seed_from_u64(0)),
        Err(PenaltyError::BadBatch(_))
    ));
    assert!(matches!(
        gp.step_with_labels(&net, &x, &y, 0, &y),
        Err(PenaltyError::BadBatch(_))
    ));
    let fp = Penalizer::new(
        PenaltyConfig {
            sub_batch: Some(5),
            ..PenaltyConfig::new(PenaltyKind::Fp, 0.1)
        },
        N,
    )
    .unwrap();
    assert!(matches!(
        fp.step_with_labels(&net, &x, &y, 0, &y),
        Err(PenaltyError::BadBatch(_))
    ));
    // A later, smaller batch than the sub-batch.
    let x4 = x.narrow(0, 0, 4).unwrap();
    assert!(matches!(
        fp.step(&net, &x4, &short, 0, &mut ChaCha8Rng::seed_from_u64(0)),
        Err(PenaltyError::SubBatchTooLarge {
            sub_batch: 5,
            batch: 4
        })
    ));
}

#[test]
fn step_hands_back_the_plain_pass_logits() {
    enable_double_backprop();
    let (x, y) = batch(&Arch::MlpBn, N, DType::F64, 1);
    for every in [1, 2] {
        let net = Net::new(Arch::MlpBn, DType::F64, 2);
        let reference = Net::new(Arch::MlpBn, DType::F64, 2);
        let cfg = PenaltyConfig {
            every,
            sub_batch: Some(3),
            ..PenaltyConfig::new(PenaltyKind::Gpr, 0.2)
        };
        let out = Penalizer::new(cfg, N)
            .unwrap()
            .step(&net, &x, &y, 1, &mut ChaCha8Rng::seed_from_u64(0))
            .unwrap();
        assert_eq!(out.applied, every == 1);
        let want = reference.forward(&x, Mode::Train).unwrap();
        assert_eq!(bits(&[out.logits]), bits(&[want]));
    }
}

#[test]
fn config_reads_from_toml_as_documented() {
    #[derive(serde::Deserialize)]
    struct Run {
        penalty: PenaltyConfig,
    }
    let run: Run = toml::from_str(
        r#"
        [penalty]
        kind = "fp"
        alpha = 0.01
        every = 10
        sub_batch = 128
        method = { finite_difference = { rel_step = 1e-3, one_sided = false } }
        "#,
    )
    .unwrap();
    assert_eq!(
        run.penalty.method,
        GradMethod::FiniteDifference {
            rel_step: Some(1e-3),
            one_sided: false,
            checked: true,
        }
    );
    assert_eq!((run.penalty.every, run.penalty.sub_batch), (10, Some(128)));
    let run: Run =
        toml::from_str("[penalty]\nkind = \"gpx\"\nalpha = 0.1\nmethod = \"double_backprop\"\n")
            .unwrap();
    assert_eq!(run.penalty, PenaltyConfig::new(PenaltyKind::Gpx, 0.1));
}
