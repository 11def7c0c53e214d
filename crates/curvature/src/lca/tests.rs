//! Tests of loss change allocation: closed forms in f64 (quadratic and cubic losses), a tanh
//! MLP against the measured ΔL with h⁴ convergence, counts, costs, endpoint reuse, restoration.

use candle_core::{DType, Device, Tensor, Var};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::*;

const ALL_RULES: [LcaRule; 4] = [
    LcaRule::Midpoint,
    LcaRule::Trapezoid,
    LcaRule::Simpson,
    LcaRule::CompositeSimpson { panels: 3 },
];

fn cfg(rule: LcaRule) -> LcaConfig {
    LcaConfig {
        rule,
        names: Vec::new(),
    }
}

fn uniform(rng: &mut ChaCha8Rng, n: usize, scale: f64) -> Vec<f64> {
    (0..n)
        .map(|_| scale * (2.0 * rng.random::<f64>() - 1.0))
        .collect()
}

fn t(v: &[f64], shape: &[usize]) -> Tensor {
    Tensor::from_slice(v, shape, &Device::Cpu).unwrap()
}

fn host(t: &Tensor) -> Vec<f64> {
    t.flatten_all().unwrap().to_vec1::<f64>().unwrap()
}

fn bits(vars: &[Var]) -> Vec<u64> {
    vars.iter()
        .flat_map(|v| host(v.as_tensor()))
        .map(f64::to_bits)
        .collect()
}

/// Two parameter tensors (shapes [3] and [2, 2]) concatenated into one 7-vector x.
fn two_vars(x: &[f64]) -> Vec<Var> {
    vec![
        Var::from_tensor(&t(&x[..3], &[3])).unwrap(),
        Var::from_tensor(&t(&x[3..], &[2, 2])).unwrap(),
    ]
}

fn split(x: &[f64]) -> Vec<Tensor> {
    vec![t(&x[..3], &[3]), t(&x[3..], &[2, 2])]
}

fn concat(vars: &[Var]) -> Tensor {
    Tensor::cat(
        &[vars[0].as_tensor().clone(), vars[1].flatten_all().unwrap()],
        0,
    )
    .unwrap()
}

/// x³ elementwise (candle's `powf` goes through `ln`, NaN for negative x).
fn cube(x: &Tensor) -> candle_core::Result<Tensor> {
    x.sqr()? * x
}

#[test]
fn quadratic_loss_is_allocated_exactly_by_every_rule() {
    // L = ½ xᵀAx + bᵀx: the gradient is linear along the path, so every rule integrates it
    // exactly and A_i = d_i (A (θ0+θ1)/2 + b)_i in closed form.
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let n = 7;
    let m = uniform(&mut rng, n * n, 1.0);
    let a: Vec<f64> = (0..n * n)
        .map(|ij| (0..n).map(|k| m[k * n + ij / n] * m[k * n + ij % n]).sum())
        .collect();
    let b = uniform(&mut rng, n, 1.0);
    let (th0, th1) = (uniform(&mut rng, n, 1.0), uniform(&mut rng, n, 1.0));
    let expected: Vec<f64> = (0..n)
        .map(|i| {
            let mid: f64 = (0..n).map(|j| a[i * n + j] * 0.5 * (th0[j] + th1[j])).sum();
            (th1[i] - th0[i]) * (mid + b[i])
        })
        .collect();
    let (at, bt) = (t(&a, &[n, n]), t(&b, &[n, 1]));
    for rule in ALL_RULES {
        let vars = two_vars(&uniform(&mut rng, n, 1.0));
        let vs = vars.clone();
        let r = loss_change_allocation(
            &vars,
            &split(&th0),
            &split(&th1),
            || {
                let x = concat(&vs).reshape((n, 1))?;
                let quad = (x.t()?.matmul(&at.matmul(&x)?)? * 0.5)?;
                (quad + x.t()?.matmul(&bt)?)?.reshape(())
            },
            &cfg(rule),
        )
        .unwrap();
        let got: Vec<f64> = r.tensors.iter().flat_map(|t| t.values.clone()).collect();
        for (g, e) in got.iter().zip(&expected) {
            assert!(
                (g - e).abs() < 1e-12,
                "{rule:?}: A_i = {g}, closed form {e}"
            );
        }
        assert!(r.integration_error.abs() < 1e-12, "{rule:?}: {r:?}");
        assert_eq!(r.tensors[1].shape, vec![2, 2]);
        assert_eq!(r.tensors[0].name, "param0");
    }
}

#[test]
fn cubic_loss_is_exact_for_simpson_only() {
    // Separable L = Σ c_i x_i³ + b_i x_i: along x = a + s d the exact allocation is
    // c((a+d)³ − a³) + b d; trapezoid overshoots it by c d³/2, midpoint undershoots by c d³/4.
    let c = [1.5, -2.0, 0.7, 3.0, -0.4, 1.1, 2.2];
    let b = [0.3, -0.1, 0.0, 0.5, 1.0, -0.7, 0.2];
    let th0: [f64; 7] = [0.2, -0.5, 1.0, 0.4, -1.2, 0.0, 0.9];
    let th1: [f64; 7] = [0.9, 0.3, 0.1, -0.6, -0.2, 0.8, 1.5];
    let (ct, bt) = (t(&c, &[7]), t(&b, &[7]));
    let exact = |i: usize| {
        let d = th1[i] - th0[i];
        c[i] * (th1[i].powi(3) - th0[i].powi(3)) + b[i] * d
    };
    let bias = |rule: LcaRule, i: usize| {
        let d3 = (th1[i] - th0[i]).powi(3);
        match rule {
            LcaRule::Trapezoid => c[i] * d3 / 2.0,
            LcaRule::Midpoint => -c[i] * d3 / 4.0,
            _ => 0.0,
        }
    };
    for rule in ALL_RULES {
        let vars = two_vars(&[0.0; 7]);
        let vs = vars.clone();
        let r = loss_change_allocation(
            &vars,
            &split(&th0),
            &split(&th1),
            || {
                let x = concat(&vs);
                (cube(&x)? * &ct)?.sum_all()? + (&x * &bt)?.sum_all()?
            },
            &cfg(rule),
        )
        .unwrap();
        let got: Vec<f64> = r.tensors.iter().flat_map(|t| t.values.clone()).collect();
        for (i, g) in got.iter().enumerate() {
            let e = exact(i) + bias(rule, i);
            assert!((g - e).abs() < 1e-12, "{rule:?} param {i}: {g} vs {e}");
        }
        let total_bias: f64 = (0..7).map(|i| bias(rule, i)).sum();
        assert!((r.integration_error - total_bias).abs() < 1e-12, "{rule:?}");
        if matches!(rule, LcaRule::Midpoint | LcaRule::Trapezoid) {
            assert!(
                r.integration_error.abs() > 0.1,
                "{rule:?} must not be exact here"
            );
        }
    }
}

#[test]
fn non_separable_cubic_total_is_exact_for_simpson_not_trapezoid() {
    let th0 = [0.3, -0.8, 1.1, 0.5, 0.2, -0.4, 0.6];
    let th1 = [-0.5, 0.4, 0.9, 1.3, -0.6, 0.1, 0.0];
    let run = |rule| {
        let vars = two_vars(&[0.0; 7]);
        let vs = vars.clone();
        loss_change_allocation(
            &vars,
            &split(&th0),
            &split(&th1),
            || {
                let x = concat(&vs);
                // x0·x1·x2 + x3²·x4 − x5·x6² + Σ x_i³: cubic with cross terms.
                let p = |i: usize| x.get(i);
                let cross = ((p(0)? * p(1)?)? * p(2)?)? + (p(3)?.sqr()? * p(4)?)?
                    - (p(5)? * p(6)?.sqr()?)?;
                cross? + cube(&x)?.sum_all()?
            },
            &cfg(rule),
        )
        .unwrap()
    };
    let simpson = run(LcaRule::Simpson);
    assert!(simpson.integration_error.abs() < 1e-13, "{simpson:?}");
    assert!(run(LcaRule::Trapezoid).integration_error.abs() > 1e-2);
}

/// A 3-5-2 tanh MLP with mean squared error over 8 rows, in f64.
struct Mlp {
    vars: Vec<Var>,
    x: Tensor,
    y: Tensor,
}

impl Mlp {
    fn new(seed: u64) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let shapes: [&[usize]; 4] = [&[3, 5], &[5], &[5, 2], &[2]];
        let vars = shapes
            .iter()
            .map(|s| {
                let n = s.iter().product();
                Var::from_tensor(&t(&uniform(&mut rng, n, 0.8), s)).unwrap()
            })
            .collect();
        let x = t(&uniform(&mut rng, 24, 1.0), &[8, 3]);
        let y = t(&uniform(&mut rng, 16, 1.0), &[8, 2]);
        Self { vars, x, y }
    }

    /// Mean over rows `lo..hi` of ½‖f(x) − y‖².
    fn loss(&self, lo: usize, hi: usize) -> candle_core::Result<Tensor> {
        let v = &self.vars;
        let x = self.x.narrow(0, lo, hi - lo)?;
        let h = x
            .matmul(v[0].as_tensor())?
            .broadcast_add(v[1].as_tensor())?
            .tanh()?;
        let out = h
            .matmul(v[2].as_tensor())?
            .broadcast_add(v[3].as_tensor())?;
        let r = (out - self.y.narrow(0, lo, hi - lo)?)?;
        (r.sqr()?.sum_keepdim(1)? * 0.5)?.mean_all()
    }

    fn snapshot(&self) -> Vec<Tensor> {
        self.vars
            .iter()
            .map(|v| v.as_tensor().copy().unwrap())
            .collect()
    }

    /// One gradient-descent step of size `lr` on the full set.
    fn gd_step(&self, lr: f64) {
        let grads = self.loss(0, 8).unwrap().backward().unwrap();
        for v in &self.vars {
            let g = grads.get(v.as_tensor()).unwrap();
            v.set(&(v.as_tensor() - (g * lr).unwrap()).unwrap())
                .unwrap();
        }
    }
}

#[test]
fn tanh_mlp_composite_simpson_converges_like_h4() {
    let mlp = Mlp::new(3);
    let th0 = mlp.snapshot();
    // A step large enough to overshoot (the loss rises): the path is far from linear.
    mlp.gd_step(1.5);
    let th1 = mlp.snapshot();
    let mut errors = Vec::new();
    for panels in [1, 2, 4, 8] {
        let r = loss_change_allocation(
            &mlp.vars,
            &th0,
            &th1,
            || mlp.loss(0, 8),
            &cfg(LcaRule::CompositeSimpson { panels }),
        )
        .unwrap();
        assert!(r.true_delta > 0.1, "the step must overshoot: {r:?}");
        assert!(r.relative_error < 2e-3, "panels {panels}: {r:?}");
        assert_eq!(r.cost.gradient_evaluations, 2 * panels + 1);
        errors.push(r.integration_error.abs());
    }
    eprintln!("composite Simpson |error| for 1, 2, 4, 8 panels: {errors:?}");
    // Halving h divides the Simpson error by ~2⁴ = 16 (asymptotically).
    for w in errors.windows(2) {
        let ratio = w[0] / w[1];
        assert!(
            (14.0..19.0).contains(&ratio),
            "error ratio {ratio}: {errors:?}"
        );
    }
    assert!(
        errors[3] > 1e-13,
        "errors must stay above rounding: {errors:?}"
    );
}

#[test]
fn helped_hurt_and_zero_counts_on_a_hand_made_step() {
    // L = ½‖x‖²: A_i = d_i (θ0_i + θ1_i)/2. Tensor "w" = x0..x2, "v" = x3..x6.
    let th0 = [1.0, 1.0, -1.0, 2.0, 0.0, 3.0, -2.0];
    let th1 = [0.5, 2.0, -0.5, 2.0, 0.0, -3.0, -1.0];
    // A = [−0.375 helped, 1.5 hurt, −0.375 helped | 0 zero, 0 zero, 0 zero (±3), −1.5 helped].
    let vars = two_vars(&[0.0; 7]);
    let vs = vars.clone();
    let mut c = cfg(LcaRule::Simpson);
    c.names = vec!["w".into(), "v".into()];
    let r = loss_change_allocation(
        &vars,
        &split(&th0),
        &split(&th1),
        || concat(&vs).sqr()?.sum_all()? * 0.5,
        &c,
    )
    .unwrap();
    let (w, v) = (&r.tensors[0], &r.tensors[1]);
    assert_eq!((w.name.as_str(), w.helped, w.hurt, w.zero), ("w", 2, 1, 0));
    assert_eq!((v.name.as_str(), v.helped, v.hurt, v.zero), ("v", 1, 0, 3));
    assert_eq!((r.helped, r.hurt, r.zero, r.num_params()), (3, 1, 3, 7));
    assert!((r.fraction_hurt() - 1.0 / 7.0).abs() < 1e-15);
    assert!((r.fraction_helped() - 3.0 / 7.0).abs() < 1e-15);
    assert!((r.fraction_zero() - 3.0 / 7.0).abs() < 1e-15);
    assert!((w.total - 0.75).abs() < 1e-15 && (v.total + 1.5).abs() < 1e-15);
    let tensors = r.allocation_tensors().unwrap();
    assert_eq!(tensors[1].dims(), &[2, 2]);
    assert_eq!(host(&tensors[0]), w.values);
}

#[test]
fn cost_per_rule_and_endpoint_reuse_along_a_trajectory() {
    let mlp = Mlp::new(5);
    let mut points = vec![mlp.snapshot()];
    for _ in 0..3 {
        mlp.gd_step(0.3);
        points.push(mlp.snapshot());
    }
    let expected = [
        (LcaRule::Midpoint, (1, 0, 2), (1, 0, 1)),
        (LcaRule::Trapezoid, (2, 0, 0), (1, 1, 0)),
        (LcaRule::Simpson, (3, 0, 0), (2, 1, 0)),
        (
            LcaRule::CompositeSimpson { panels: 4 },
            (9, 0, 0),
            (8, 1, 0),
        ),
    ];
    for (rule, first, later) in expected {
        let mut loss = BatchedLoss::new(1, Reduction::Mean, |_| Ok((mlp.loss(0, 8)?, 8)));
        let mut traj = LcaTrajectory::new(cfg(rule));
        for (k, w) in points.windows(2).enumerate() {
            let r = traj.step(&mlp.vars, &w[0], &w[1], &mut loss).unwrap();
            let c = r.cost;
            let got = (
                c.gradient_evaluations,
                c.reused_gradients,
                c.loss_evaluations,
            );
            assert_eq!(got, if k == 0 { first } else { later }, "{rule:?} step {k}");
            // Reusing endpoints changes the cost, not a single bit of the result.
            let fresh =
                loss_change_allocation_batched(&mlp.vars, &w[0], &w[1], &mut loss, &cfg(rule))
                    .unwrap();
            assert_eq!(fresh.cost.reused_gradients, 0);
            assert_eq!(r.allocated.to_bits(), fresh.allocated.to_bits(), "{rule:?}");
            assert_eq!(r.loss_before.to_bits(), fresh.loss_before.to_bits());
            assert_eq!(r.tensors[0].values, fresh.tensors[0].values);
        }
        // A step that does not start where the last one ended recomputes everything.
        let r = traj
            .step(&mlp.vars, &points[0], &points[1], &mut loss)
            .unwrap();
        assert_eq!(r.cost.reused_gradients, 0, "{rule:?}");
    }
}

#[test]
fn f32_parameters_agree_with_f64() {
    // The models train in f32: the path points are formed in f64 and rounded once per node.
    let mlp = Mlp::new(13);
    let th0 = mlp.snapshot();
    mlp.gd_step(0.5);
    let th1 = mlp.snapshot();
    let c = cfg(LcaRule::Simpson);
    let r64 = loss_change_allocation(&mlp.vars, &th0, &th1, || mlp.loss(0, 8), &c).unwrap();
    let to32 = |ts: &[Tensor]| -> Vec<Tensor> {
        ts.iter().map(|t| t.to_dtype(DType::F32).unwrap()).collect()
    };
    let (th0_32, th1_32) = (to32(&th0), to32(&th1));
    let mlp32 = Mlp {
        vars: th0_32
            .iter()
            .map(|t| Var::from_tensor(t).unwrap())
            .collect(),
        x: mlp.x.to_dtype(DType::F32).unwrap(),
        y: mlp.y.to_dtype(DType::F32).unwrap(),
    };
    let before = bits32(&mlp32.vars);
    let r32 =
        loss_change_allocation(&mlp32.vars, &th0_32, &th1_32, || mlp32.loss(0, 8), &c).unwrap();
    assert_eq!(bits32(&mlp32.vars), before);
    let rel = (r32.allocated - r64.allocated).abs() / r64.allocated.abs();
    assert!(rel < 1e-5, "f32 {} vs f64 {}", r32.allocated, r64.allocated);
    assert!(r32.relative_error < 1e-3, "{r32:?}");
    assert_eq!(r32.tensors[2].values.len(), 10);
}

fn bits32(vars: &[Var]) -> Vec<u32> {
    vars.iter()
        .flat_map(|v| {
            v.as_tensor()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
        })
        .map(f32::to_bits)
        .collect()
}

#[test]
fn unequal_batches_give_the_full_set_allocation() {
    let mlp = Mlp::new(7);
    let th0 = mlp.snapshot();
    mlp.gd_step(0.5);
    let th1 = mlp.snapshot();
    let bounds = [(0, 3), (3, 8)];
    let mut two = BatchedLoss::new(2, Reduction::Mean, |b| {
        let (lo, hi) = bounds[b];
        Ok((mlp.loss(lo, hi)?, hi - lo))
    });
    let c = cfg(LcaRule::Simpson);
    let split_r = loss_change_allocation_batched(&mlp.vars, &th0, &th1, &mut two, &c).unwrap();
    let whole = loss_change_allocation(&mlp.vars, &th0, &th1, || mlp.loss(0, 8), &c).unwrap();
    assert!((split_r.true_delta - whole.true_delta).abs() < 1e-14);
    for (a, b) in split_r.tensors.iter().zip(&whole.tensors) {
        for (x, y) in a.values.iter().zip(&b.values) {
            assert!((x - y).abs() < 1e-14, "{x} vs {y}");
        }
    }
}

#[test]
fn parameters_are_restored_bit_for_bit_also_on_error() {
    let mlp = Mlp::new(9);
    let th0 = mlp.snapshot();
    mlp.gd_step(0.5);
    let th1 = mlp.snapshot();
    // Current values differ from both endpoints.
    mlp.gd_step(0.1);
    let before = bits(&mlp.vars);
    let c = cfg(LcaRule::Simpson);
    let ok = loss_change_allocation(&mlp.vars, &th0, &th1, || mlp.loss(0, 8), &c).unwrap();
    assert_eq!(bits(&mlp.vars), before);
    let mut calls = 0;
    let failing = loss_change_allocation(
        &mlp.vars,
        &th0,
        &th1,
        || {
            calls += 1;
            if calls == 2 {
                Err(candle_core::Error::Msg(
                    "measurement batch unreadable".into(),
                ))
            } else {
                mlp.loss(0, 8)
            }
        },
        &c,
    );
    assert!(failing.is_err());
    assert_eq!(bits(&mlp.vars), before);
    // θ1 sharing storage with the Vars (a shallow clone) is read before anything is written.
    for (v, t) in mlp.vars.iter().zip(&th1) {
        v.set(t).unwrap();
    }
    let aliased: Vec<Tensor> = mlp.vars.iter().map(|v| v.as_tensor().clone()).collect();
    let r = loss_change_allocation(&mlp.vars, &th0, &aliased, || mlp.loss(0, 8), &c).unwrap();
    assert_eq!(r.allocated.to_bits(), ok.allocated.to_bits());
}

#[test]
fn bad_inputs_are_typed_errors() {
    let mlp = Mlp::new(11);
    let th = mlp.snapshot();
    let f = || mlp.loss(0, 8);
    let bad_shape = vec![th[1].clone(), th[0].clone(), th[2].clone(), th[3].clone()];
    let e = loss_change_allocation(&mlp.vars, &th, &bad_shape, f, &LcaConfig::default());
    assert!(matches!(
        e,
        Err(CurvatureError::InvalidConfig { key: "theta1", .. })
    ));
    let e = loss_change_allocation(&mlp.vars, &th[..3], &th, f, &LcaConfig::default());
    assert!(matches!(
        e,
        Err(CurvatureError::DimensionMismatch { what: "theta0", .. })
    ));
    let e = loss_change_allocation(
        &mlp.vars,
        &th,
        &th,
        f,
        &cfg(LcaRule::CompositeSimpson { panels: 0 }),
    );
    assert!(matches!(
        e,
        Err(CurvatureError::InvalidConfig {
            key: "rule.panels",
            ..
        })
    ));
    let c = LcaConfig {
        names: vec!["only one".into()],
        ..LcaConfig::default()
    };
    let e = loss_change_allocation(&mlp.vars, &th, &th, f, &c);
    assert!(matches!(e, Err(CurvatureError::DimensionMismatch { .. })));
    // A step into a non-finite loss is an error, not a NaN allocation.
    let vars = two_vars(&[1.0; 7]);
    let before = bits(&vars);
    let vs = vars.clone();
    let e = loss_change_allocation(
        &vars,
        &split(&[1.0; 7]),
        &split(&[0.0; 7]),
        || concat(&vs).log()?.sum_all(),
        &LcaConfig::default(),
    );
    assert!(matches!(e, Err(CurvatureError::NonFinite(_))), "{e:?}");
    assert_eq!(bits(&vars), before);
    // A zero step allocates nothing and reports no error.
    let r = loss_change_allocation(&mlp.vars, &th, &th, f, &LcaConfig::default()).unwrap();
    assert_eq!(
        (r.zero, r.allocated, r.relative_error),
        (r.num_params(), 0.0, 0.0)
    );
}
