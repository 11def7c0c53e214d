//! SGD against hand-computed updates (f64), resuming bit for bit, and config validation.

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor, Var};

use crate::{LrSchedule, OptimError, Sgd, SgdConfig, SgdState};

fn var(v: &[f64]) -> Var {
    Var::new(v, &Device::Cpu).unwrap()
}

fn t(v: &[f64]) -> Tensor {
    Tensor::new(v, &Device::Cpu).unwrap()
}

fn values(p: &Var) -> Vec<f64> {
    p.as_tensor().to_vec1().unwrap()
}

fn close(got: f64, want: f64) {
    assert!((got - want).abs() < 1e-12, "got {got}, want {want}");
}

#[test]
fn nesterov_with_weight_decay_by_hand() {
    // lr 0.1, μ 0.9, wd 0.1, p0 = 1, gradients 0.5 then -1.
    // Step 1: d = 0.5 + 0.1·1 = 0.6; buf = 0.6; d = 0.6 + 0.9·0.6 = 1.14; p = 1 − 0.114 = 0.886.
    // Step 2: d = −1 + 0.0886 = −0.9114; buf = 0.54 − 0.9114 = −0.3714;
    //         d = −0.9114 − 0.33426 = −1.24566; p = 0.886 + 0.124566 = 1.010566.
    let cfg = SgdConfig {
        momentum: 0.9,
        weight_decay: 0.1,
        nesterov: true,
        ..SgdConfig::new(0.1)
    };
    let p = var(&[1.0]);
    let mut sgd = Sgd::new(cfg, 1).unwrap();
    sgd.step(std::slice::from_ref(&p), &[t(&[0.5])]).unwrap();
    close(values(&p)[0], 0.886);
    sgd.step(std::slice::from_ref(&p), &[t(&[-1.0])]).unwrap();
    close(values(&p)[0], 1.010566);
}

#[test]
fn dampened_momentum_with_weight_decay_by_hand() {
    // lr 0.1, μ 0.9, τ 0.5, wd 0.1, p0 = 1, gradients 0.5 then −1.
    // Step 1: d = 0.6; buf = d = 0.6 (no dampening on the first step); p = 0.94.
    // Step 2: d = −1 + 0.094 = −0.906; buf = 0.54 + 0.5·(−0.906) = 0.087; p = 0.94 − 0.0087.
    let cfg = SgdConfig {
        momentum: 0.9,
        dampening: 0.5,
        weight_decay: 0.1,
        ..SgdConfig::new(0.1)
    };
    let p = var(&[1.0]);
    let mut sgd = Sgd::new(cfg, 1).unwrap();
    sgd.step(std::slice::from_ref(&p), &[t(&[0.5])]).unwrap();
    close(values(&p)[0], 0.94);
    sgd.step(std::slice::from_ref(&p), &[t(&[-1.0])]).unwrap();
    close(values(&p)[0], 0.9313);
}

/// A scalar re-statement of torch's loop, used over several steps, parameters and a schedule.
#[test]
fn matches_scalar_reference_over_steps_with_schedule() {
    for (momentum, dampening, nesterov) in [(0.0, 0.0, false), (0.8, 0.25, false), (0.9, 0.0, true)]
    {
        let cfg = SgdConfig {
            momentum,
            dampening,
            nesterov,
            weight_decay: 5e-4,
            schedule: LrSchedule::Warmup {
                steps: 2,
                start_factor: 0.5,
                then: Box::new(LrSchedule::MultiStep {
                    milestones: vec![3],
                    gamma: 0.1,
                }),
            },
            ..SgdConfig::new(0.2)
        };
        let init = [[1.5, -0.5], [0.25, 2.0]];
        let params: Vec<Var> = init.iter().map(|v| var(v)).collect();
        let mut sgd = Sgd::new(cfg.clone(), 2).unwrap();
        let mut p_ref = init;
        let mut buf_ref: Option<[[f64; 2]; 2]> = None;
        for step in 0..5u64 {
            let g = [[0.3 - step as f64 * 0.1, 1.0], [-0.7, 0.05 * step as f64]];
            let lr = cfg.schedule.lr_at(0.2, step);
            let mut new_buf = [[0.0; 2]; 2];
            for i in 0..2 {
                for j in 0..2 {
                    let mut d = g[i][j] + 5e-4 * p_ref[i][j];
                    if momentum != 0.0 {
                        let b = match buf_ref {
                            None => d,
                            Some(b) => momentum * b[i][j] + (1.0 - dampening) * d,
                        };
                        new_buf[i][j] = b;
                        d = if nesterov { d + momentum * b } else { b };
                    }
                    p_ref[i][j] -= lr * d;
                }
            }
            buf_ref = Some(new_buf);
            let grads = [t(&g[0]), t(&g[1])];
            sgd.step(&params, &grads).unwrap();
            for i in 0..2 {
                for (got, want) in values(&params[i]).iter().zip(p_ref[i]) {
                    close(*got, want);
                }
            }
        }
        assert_eq!(sgd.step_count(), 5);
    }
}

#[test]
fn resumed_optimizer_continues_bit_identically() {
    let cfg = SgdConfig {
        momentum: 0.9,
        weight_decay: 1e-3,
        nesterov: true,
        schedule: LrSchedule::Cosine {
            t_max: 6,
            min_lr: 0.001,
        },
        ..SgdConfig::new(0.05)
    };
    let dev = Device::Cpu;
    let make = || -> Vec<Var> {
        vec![
            Var::from_vec((0..6).map(|i| i as f32 * 0.3 - 0.7).collect(), (2, 3), &dev).unwrap(),
            Var::from_vec(vec![0.1f32, -0.2], 2, &dev).unwrap(),
        ]
    };
    let grads = |step: usize| -> Vec<Tensor> {
        let s = step as f32;
        vec![
            Tensor::from_vec((0..6).map(|i| (i as f32 - s).sin()).collect(), (2, 3), &dev).unwrap(),
            Tensor::from_vec(vec![s * 0.01 + 0.3, -0.4], 2, &dev).unwrap(),
        ]
    };
    let straight = make();
    let mut sgd = Sgd::new(cfg.clone(), 2).unwrap();
    for step in 0..6 {
        sgd.step(&straight, &grads(step)).unwrap();
    }

    let resumed = make();
    let mut first = Sgd::new(cfg, 2).unwrap();
    for step in 0..2 {
        first.step(&resumed, &grads(step)).unwrap();
    }
    // Through the on-disk formats: JSON for the scalars, safetensors for the buffers.
    let (state, tensors) = first.state();
    assert_eq!(tensors.len(), 2);
    let path = std::env::temp_dir().join(format!(
        "breakeven-optim-{}.safetensors",
        std::process::id()
    ));
    candle_core::safetensors::save(&tensors, &path).unwrap();
    let loaded = candle_core::safetensors::load(&path, &dev).unwrap();
    std::fs::remove_file(&path).unwrap();
    let state: SgdState = serde_json::from_str(&serde_json::to_string(&state).unwrap()).unwrap();
    drop(first);
    let mut second = Sgd::from_state(state, &loaded, &resumed).unwrap();
    assert_eq!(second.step_count(), 2);
    for step in 2..6 {
        second.step(&resumed, &grads(step)).unwrap();
    }
    for (a, b) in straight.iter().zip(&resumed) {
        let a: Vec<u32> = a
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
            .iter()
            .map(|x| x.to_bits())
            .collect();
        let b: Vec<u32> = b
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
            .iter()
            .map(|x| x.to_bits())
            .collect();
        assert_eq!(a, b);
    }
}

#[test]
fn bad_state_is_refused() {
    let params = vec![var(&[1.0, 2.0])];
    let sgd = Sgd::new(
        SgdConfig {
            momentum: 0.5,
            ..SgdConfig::new(0.1)
        },
        1,
    )
    .unwrap();
    let (state, _) = sgd.state();
    let mut tensors = HashMap::new();
    tensors.insert("momentum_buffer.0".to_string(), t(&[1.0, 2.0, 3.0]));
    let err = Sgd::from_state(state.clone(), &tensors, &params).unwrap_err();
    assert!(
        matches!(err, OptimError::ShapeMismatch { index: 0, .. }),
        "{err}"
    );
    let mut tensors = HashMap::new();
    tensors.insert("momentum_buffer.1".to_string(), t(&[1.0, 2.0]));
    let err = Sgd::from_state(state, &tensors, &params).unwrap_err();
    assert!(err.to_string().contains("momentum_buffer.1"), "{err}");
}

#[test]
fn grad_store_skips_parameters_without_gradient() {
    let a = var(&[1.0, 2.0]);
    let b = var(&[3.0]);
    let loss = a.as_tensor().sqr().unwrap().sum_all().unwrap();
    let store = loss.backward().unwrap();
    let mut sgd = Sgd::new(SgdConfig::new(0.5), 2).unwrap();
    sgd.step_grad_store(&[a.clone(), b.clone()], &store)
        .unwrap();
    // ∇ = 2a → a − 0.5·2a = 0.
    assert_eq!(values(&a), vec![0.0, 0.0]);
    assert_eq!(values(&b), vec![3.0]);
}

#[test]
fn misaligned_gradients_change_nothing() {
    let a = var(&[1.0, 2.0]);
    let b = var(&[3.0]);
    let mut sgd = Sgd::new(SgdConfig::new(0.5), 2).unwrap();
    let err = sgd
        .step(&[a.clone(), b.clone()], &[t(&[1.0, 1.0]), t(&[1.0, 1.0])])
        .unwrap_err();
    assert!(
        matches!(err, OptimError::ShapeMismatch { index: 1, .. }),
        "{err}"
    );
    assert_eq!(values(&a), vec![1.0, 2.0]);
    assert_eq!(sgd.step_count(), 0);
    let err = sgd.step(&[a, b], &[t(&[1.0, 1.0])]).unwrap_err();
    assert!(matches!(
        err,
        OptimError::LengthMismatch {
            params: 2,
            grads: 1
        }
    ));
}

#[test]
fn invalid_configs_name_their_field() {
    let cases = [
        (SgdConfig::new(-0.1), "`lr`"),
        (
            SgdConfig {
                momentum: 1.0,
                ..SgdConfig::new(0.1)
            },
            "`momentum`",
        ),
        (
            SgdConfig {
                momentum: -0.1,
                ..SgdConfig::new(0.1)
            },
            "`momentum`",
        ),
        (
            SgdConfig {
                nesterov: true,
                ..SgdConfig::new(0.1)
            },
            "`momentum`",
        ),
        (
            SgdConfig {
                weight_decay: -1.0,
                ..SgdConfig::new(0.1)
            },
            "`weight_decay`",
        ),
        (
            SgdConfig {
                momentum: 0.9,
                dampening: 0.1,
                nesterov: true,
                ..SgdConfig::new(0.1)
            },
            "`dampening`",
        ),
    ];
    for (cfg, field) in cases {
        let err = Sgd::new(cfg, 1).unwrap_err();
        assert!(matches!(err, OptimError::InvalidConfig { .. }));
        assert!(err.to_string().contains(field), "{err} should name {field}");
    }
}

#[test]
fn config_from_json_with_defaults_and_unknown_keys_rejected() {
    let cfg: SgdConfig = serde_json::from_str(
        r#"{"lr":0.01,"momentum":0.9,"schedule":{"multi_step":{"milestones":[100],"gamma":0.1}}}"#,
    )
    .unwrap();
    assert_eq!(cfg.weight_decay, 0.0);
    assert!(!cfg.nesterov);
    assert!(serde_json::from_str::<SgdConfig>(r#"{"lr":0.01,"moment":0.9}"#).is_err());
    // f32 parameters keep their dtype through a step.
    let p = Var::zeros(3, DType::F32, &Device::Cpu).unwrap();
    let g = Tensor::ones(3, DType::F32, &Device::Cpu).unwrap();
    let mut sgd = Sgd::new(cfg, 1).unwrap();
    sgd.step(std::slice::from_ref(&p), &[g]).unwrap();
    assert_eq!(p.dtype(), DType::F32);
    assert_eq!(p.as_tensor().to_vec1::<f32>().unwrap(), vec![-0.01f32; 3]);
}

#[test]
fn config_reads_from_toml() {
    let cfg: SgdConfig = toml::from_str(
        r#"
        lr = 0.1
        momentum = 0.9
        weight_decay = 5e-4
        nesterov = true
        schedule = { warmup = { steps = 500, start_factor = 0.1, then = { multi_step = { milestones = [30000, 45000], gamma = 0.1 } } } }
        "#,
    )
    .unwrap();
    Sgd::new(cfg.clone(), 1).unwrap();
    assert_eq!(cfg.schedule.lr_at(cfg.lr, 0), 0.1 * 0.1);
    assert!((cfg.schedule.lr_at(cfg.lr, 45_000) - 0.1 * 0.01).abs() < 1e-15);
    let cfg: SgdConfig = toml::from_str("lr = 0.01\nschedule = \"constant\"\n").unwrap();
    assert_eq!(cfg, SgdConfig::new(0.01));
}
