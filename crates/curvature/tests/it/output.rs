//! Gauss-Newton and Fisher operators: closed forms (softmax regression, where GGN = Fisher =
//! Hessian), an explicit-Jacobian oracle for a nonlinear net, and the statistical identities
//! linking the sampled Fisher to the exact one (TESTING.md #2, #10).

use breakeven_curvature::{
    fisher_trace, fisher_trace_from_examples, materialize, monte_carlo_labels, params_to_vec,
    BatchedLogits, BatchedLoss, DenseMatrix, FisherKind, FisherOperator, GgnOperator,
    HessianOperator, LinearOperator, OutputLoss, Reduction,
};
use candle_core::{IndexOp, Tensor};

use crate::common::*;

const N: usize = 7;
const D: usize = 3;
const C: usize = 3;

/// Batches 0..3 and 3..7.
const SPLIT: [(usize, usize); 2] = [(0, 3), (3, 7)];

#[test]
fn softmax_regression_hessian_ggn_and_fisher_equal_the_closed_form() {
    init();
    let x = randn(300, N, D, 1.0);
    let y = labels(301, N, C);
    let w = param(302, &[D, C], 0.8);
    // Closed form: H = (1/N) Σ_n (diag p_n − p_n p_nᵀ) ⊗ x_n x_nᵀ, index (i, c) ↦ i*C + c.
    let xr = to_rows(&x);
    let p = to_rows(&x.matmul(w.as_tensor()).unwrap().exp().unwrap());
    let mut want = vec![0.0; D * C * D * C];
    for (xn, en) in xr.iter().zip(&p) {
        let z: f64 = en.iter().sum();
        let pn: Vec<f64> = en.iter().map(|e| e / z).collect();
        for (i, j, c, d) in (0..D).flat_map(|i| {
            (0..D).flat_map(move |j| (0..C).flat_map(move |c| (0..C).map(move |d| (i, j, c, d))))
        }) {
            let m = if c == d { pn[c] } else { 0.0 } - pn[c] * pn[d];
            want[(i * C + c) * D * C + j * C + d] += m * xn[i] * xn[j] / N as f64;
        }
    }
    let want = DenseMatrix::from_row_major(D * C, want).unwrap();
    let (x1, y1, w1) = (x.clone(), y.clone(), w.clone());
    let loss = BatchedLoss::new(2, Reduction::Mean, move |b| {
        let (lo, hi) = SPLIT[b];
        Ok((
            cross_entropy(&rows(&x1, lo, hi).matmul(w1.as_tensor())?, &y1[lo..hi])?,
            hi - lo,
        ))
    });
    let logits = || {
        let (x, w) = (x.clone(), w.clone());
        BatchedLogits::new(2, move |b| {
            let (lo, hi) = SPLIT[b];
            rows(&x, lo, hi).matmul(w.as_tensor())
        })
    };
    let vars = vec![w.clone()];
    let h = materialize(
        &mut HessianOperator::new(vars.clone(), loss).unwrap(),
        false,
    )
    .unwrap();
    let ggn = materialize(
        &mut GgnOperator::new(vars.clone(), logits(), OutputLoss::SoftmaxCrossEntropy).unwrap(),
        false,
    )
    .unwrap();
    let fisher = materialize(
        &mut FisherOperator::new(vars.clone(), logits(), FisherKind::Exact).unwrap(),
        false,
    )
    .unwrap();
    for (name, m) in [("hessian", &h), ("ggn", &ggn), ("fisher", &fisher)] {
        assert!(rel_diff(m, &want) < 1e-10, "{name}: {}", rel_diff(m, &want));
    }
    // Tr(F) exactly, per example, equals the trace of the materialized operator.
    let t = fisher_trace(&mut logits(), &vars, FisherKind::Exact).unwrap();
    assert!((t.trace - want.trace()).abs() < 1e-10 * want.trace());
    assert_eq!(t.per_example.len(), N);
    assert_eq!(t.backward_passes, N * C);
}

/// The sampled Tr(F) of softmax regression on batches of one example, rebuilt in closed form
/// (`‖∇_W log p_c(x)‖² = ‖e_c − p‖² ‖x‖²`) from the labels `monte_carlo_labels` says
/// `fisher_trace` draws, through `fisher_trace_from_examples`: the same value, per example and
/// in total, with 1 and 4 labels per example; another seed's labels give another value.
#[test]
fn monte_carlo_labels_and_closed_form_norms_rebuild_the_sampled_fisher_trace() {
    init();
    let x = randn(320, N, D, 1.0);
    let w = param(321, &[D, C], 0.8);
    let xr = to_rows(&x);
    let p: Vec<Vec<f64>> = to_rows(&x.matmul(w.as_tensor()).unwrap().exp().unwrap())
        .into_iter()
        .map(|e| {
            let z: f64 = e.iter().sum();
            e.iter().map(|v| v / z).collect()
        })
        .collect();
    let sq_norm = |n: usize, c: usize| -> f64 {
        let r: f64 = (0..C)
            .map(|k| (if k == c { 1.0 } else { 0.0 } - p[n][k]).powi(2))
            .sum();
        r * xr[n].iter().map(|v| v * v).sum::<f64>()
    };
    let one_each = |x: &Tensor, w: &candle_core::Var| {
        let (x, w) = (x.clone(), w.clone());
        BatchedLogits::new(N, move |b| rows(&x, b, b + 1).matmul(w.as_tensor()))
    };
    for samples in [1, 4] {
        let kind = FisherKind::MonteCarlo { samples, seed: 7 };
        let t = fisher_trace(&mut one_each(&x, &w), std::slice::from_ref(&w), kind).unwrap();
        let examples: Vec<Vec<f64>> = (0..N)
            .map(|n| {
                monte_carlo_labels(&p[n], 7, n, samples)
                    .into_iter()
                    .map(|c| sq_norm(n, c))
                    .collect()
            })
            .collect();
        let r = fisher_trace_from_examples(kind, &examples, N * samples).unwrap();
        assert!(
            (t.trace - r.trace).abs() < 1e-10 * r.trace,
            "{} vs {}",
            t.trace,
            r.trace
        );
        assert!((t.std_error - r.std_error).abs() < 1e-10 * r.std_error);
        for (a, b) in t.per_example.iter().zip(&r.per_example) {
            assert!((a - b).abs() < 1e-10 * b, "{a} vs {b}");
        }
        assert_eq!(t.backward_passes, r.backward_passes);
        let other: Vec<Vec<usize>> = (0..N)
            .map(|n| monte_carlo_labels(&p[n], 8, n, samples))
            .collect();
        let same: Vec<Vec<usize>> = (0..N)
            .map(|n| monte_carlo_labels(&p[n], 7, n, samples))
            .collect();
        assert_ne!(other, same);
    }
    assert!(fisher_trace_from_examples(FisherKind::Exact, &[], 0).is_err());
}

#[test]
fn squared_error_ggn_of_linear_regression_is_the_hessian() {
    init();
    let x = randn(310, N, D, 1.0);
    let w = param(311, &[D, 1], 1.0);
    let xw = x.clone();
    let w2 = w.clone();
    let logits = BatchedLogits::new(2, move |b| {
        let (lo, hi) = SPLIT[b];
        rows(&xw, lo, hi).matmul(w2.as_tensor())
    });
    // ℓ = ‖z − y‖² (scale 1) ⇒ H = (2/N) XᵀX.
    let mut g = GgnOperator::new(vec![w], logits, OutputLoss::SquaredError { scale: 1.0 }).unwrap();
    let got = materialize(&mut g, false).unwrap();
    let xr = to_rows(&x);
    let mut want = vec![0.0; D * D];
    for r in &xr {
        for i in 0..D {
            for j in 0..D {
                want[i * D + j] += 2.0 * r[i] * r[j] / N as f64;
            }
        }
    }
    assert!(rel_diff(&got, &DenseMatrix::from_row_major(D, want).unwrap()) < 1e-12);
}

/// The MLP's logits over batches 0..3 and 3..7 of fixed inputs.
fn mlp_logits(
    mlp: &Mlp,
    x: &Tensor,
) -> BatchedLogits<impl FnMut(usize) -> candle_core::Result<Tensor>> {
    let (vars, x) = (mlp.vars.clone(), x.clone());
    BatchedLogits::new(2, move |b| {
        let (lo, hi) = SPLIT[b];
        Mlp { vars: vars.clone() }.forward(&rows(&x, lo, hi))
    })
}

#[test]
fn mlp_ggn_matches_an_explicit_jacobian_oracle() {
    init();
    let mlp = Mlp::new(40);
    let x = randn(41, N, 3, 1.0);
    let dim = params_to_vec(&mlp.vars).unwrap().len();
    // Oracle without the J v trick: rows of J_n by one backward per output, then
    // (1/N) Σ J_nᵀ (diag p − p pᵀ) J_n densely.
    let z = mlp.forward(&x).unwrap();
    let p = to_rows(&breakeven_curvature::softmax_detached(&z).unwrap());
    let mut want = vec![0.0; dim * dim];
    for (n, pn) in p.iter().enumerate() {
        let jac: Vec<Vec<f64>> = (0..C)
            .map(|c| {
                breakeven_curvature::grads_to_vec(
                    &z.i((n, c)).unwrap().backward().unwrap(),
                    &mlp.vars,
                )
                .unwrap()
            })
            .collect();
        for c in 0..C {
            for d in 0..C {
                let m = if c == d { pn[c] } else { 0.0 } - pn[c] * pn[d];
                for a in 0..dim {
                    for b in 0..dim {
                        want[a * dim + b] += m * jac[c][a] * jac[d][b] / N as f64;
                    }
                }
            }
        }
    }
    let want = DenseMatrix::from_row_major(dim, want).unwrap();
    let mut ggn = GgnOperator::new(
        mlp.vars.clone(),
        mlp_logits(&mlp, &x),
        OutputLoss::SoftmaxCrossEntropy,
    )
    .unwrap();
    let got = materialize(&mut ggn, false).unwrap();
    assert!(rel_diff(&got, &want) < 1e-10, "{}", rel_diff(&got, &want));
    let mut f =
        FisherOperator::new(mlp.vars.clone(), mlp_logits(&mlp, &x), FisherKind::Exact).unwrap();
    assert!(rel_diff(&materialize(&mut f, false).unwrap(), &want) < 1e-10);
    // Exact trace from per-example log-probability gradients (independent code path).
    let t = fisher_trace(&mut mlp_logits(&mlp, &x), &mlp.vars, FisherKind::Exact).unwrap();
    assert!(
        (t.trace - want.trace()).abs() < 1e-9 * want.trace(),
        "{} vs {}",
        t.trace,
        want.trace()
    );
}

#[test]
fn sampled_fisher_is_unbiased_for_the_exact_fisher() {
    init();
    let mlp = Mlp::new(50);
    let x = randn(51, N, 3, 1.5);
    let vars = mlp.vars.clone();
    let exact_trace = fisher_trace(&mut mlp_logits(&mlp, &x), &vars, FisherKind::Exact)
        .unwrap()
        .trace;
    // Trace with sampled labels: within 3 standard errors.
    let mc = fisher_trace(
        &mut mlp_logits(&mlp, &x),
        &vars,
        FisherKind::MonteCarlo {
            samples: 64,
            seed: 3,
        },
    )
    .unwrap();
    assert!(mc.std_error > 0.0);
    assert!(
        (mc.trace - exact_trace).abs() < 3.0 * mc.std_error,
        "{} ± {} vs {exact_trace}",
        mc.trace,
        mc.std_error
    );
    // The sampled operator: vᵀ F̂ v over independent label draws averages to vᵀ F v.
    let v: Vec<f64> = (0..params_to_vec(&vars).unwrap().len())
        .map(|i| ((i * 7 % 11) as f64 - 5.0) / 5.0)
        .collect();
    let mut exact =
        FisherOperator::new(vars.clone(), mlp_logits(&mlp, &x), FisherKind::Exact).unwrap();
    let want: f64 = v
        .iter()
        .zip(exact.apply(&v).unwrap())
        .map(|(a, b)| a * b)
        .sum();
    let mut op = FisherOperator::new(
        vars.clone(),
        mlp_logits(&mlp, &x),
        FisherKind::MonteCarlo {
            samples: 1,
            seed: 0,
        },
    )
    .unwrap();
    let draws: Vec<f64> = (0..200)
        .map(|s| {
            op.resample(s);
            v.iter()
                .zip(op.apply(&v).unwrap())
                .map(|(a, b)| a * b)
                .sum()
        })
        .collect();
    let m = draws.iter().sum::<f64>() / draws.len() as f64;
    let sd = (draws.iter().map(|d| (d - m).powi(2)).sum::<f64>() / (draws.len() - 1) as f64).sqrt();
    let se = sd / (draws.len() as f64).sqrt();
    assert!((m - want).abs() < 3.0 * se, "{m} ± {se} vs {want}");
    // Deterministic for a fixed seed.
    op.resample(9);
    let (a, b) = (op.apply(&v).unwrap(), op.apply(&v).unwrap());
    assert_eq!(a, b);
}

#[test]
fn mean_batch_gradient_with_sampled_labels_has_squared_norm_tr_f_over_b() {
    // E_ŷ ‖ḡ_B(ŷ)‖² = Tr(F)/B for a batch of B examples (E_ŷ ∇ log p_ŷ = 0 per example), where
    // Tr(F) comes from the separately written exact per-class code.
    init();
    let mlp = Mlp::new(60);
    let x = randn(61, N, 3, 1.5);
    let tr_f = fisher_trace(&mut mlp_logits(&mlp, &x), &mlp.vars, FisherKind::Exact)
        .unwrap()
        .trace;
    let z = mlp.forward(&x).unwrap();
    let p = to_rows(&breakeven_curvature::softmax_detached(&z).unwrap());
    let mut r = breakeven_curvature::random::rng(5);
    let mut draws = Vec::new();
    for _ in 0..300 {
        use rand::Rng;
        let y: Vec<u32> = p
            .iter()
            .map(|pn| {
                let u: f64 = r.random();
                let mut acc = 0.0;
                pn.iter()
                    .position(|pc| {
                        acc += pc;
                        u < acc
                    })
                    .unwrap_or(C - 1) as u32
            })
            .collect();
        let g = breakeven_curvature::grads_to_vec(
            &cross_entropy(&z, &y).unwrap().backward().unwrap(),
            &mlp.vars,
        )
        .unwrap();
        draws.push(g.iter().map(|a| a * a).sum::<f64>());
    }
    let m = draws.iter().sum::<f64>() / draws.len() as f64;
    let sd = (draws.iter().map(|d| (d - m).powi(2)).sum::<f64>() / (draws.len() - 1) as f64).sqrt();
    let se = sd / (draws.len() as f64).sqrt();
    let want = tr_f / N as f64;
    assert!(
        (m - want).abs() < 3.0 * se,
        "{m} ± {se} vs Tr(F)/B = {want}"
    );
}
