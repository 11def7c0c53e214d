//! Per-example gradients and the gradient covariance (TESTING.md #9, #10).

use breakeven_curvature::{
    covariance_summary, loss_and_gradient, materialize, params_to_vec, per_example_gradients,
    vec_to_tensors, BatchedLoss, CovarianceConfig, CovarianceOperator, CurvatureError, LossFn,
    Normalization, Reduction,
};
use candle_core::Tensor;

use crate::common::*;

const N: usize = 9;

/// Softmax regression 4 → 3 with a bias; batch b = examples `ranges[b]`.
fn loss(ranges: Vec<(usize, usize)>) -> (impl LossFn, Vec<candle_core::Var>, Tensor, Vec<u32>) {
    let x = randn(400, N, 4, 1.0);
    let y = labels(401, N, 3);
    let vars = vec![param(402, &[4, 3], 0.7), param(403, &[3], 0.3)];
    let (xc, yc, vc) = (x.clone(), y.clone(), vars.clone());
    let l = BatchedLoss::new(ranges.len(), Reduction::Mean, move |b| {
        let (lo, hi) = ranges[b];
        let z = rows(&xc, lo, hi)
            .matmul(vc[0].as_tensor())?
            .broadcast_add(vc[1].as_tensor())?;
        Ok((cross_entropy(&z, &yc[lo..hi])?, hi - lo))
    });
    (l, vars, x, y)
}

#[test]
fn per_example_gradients_match_the_closed_form_and_the_full_gradient() {
    let (mut l, vars, x, y) = loss((0..N).map(|i| (i, i + 1)).collect());
    let g = per_example_gradients(&mut l, &vars).unwrap();
    assert_eq!((g.len(), g.dim()), (N, 15));
    // ∇_W ℓ_n = x_n (p_n − e_y)ᵀ, ∇_b ℓ_n = p_n − e_y.
    let w = params_to_vec(&vars).unwrap();
    for (n, xn) in to_rows(&x).iter().enumerate() {
        let z: Vec<f64> = (0..3)
            .map(|c| (0..4).map(|i| xn[i] * w[i * 3 + c]).sum::<f64>() + w[12 + c])
            .collect();
        let zmax = z.iter().cloned().fold(f64::MIN, f64::max);
        let e: Vec<f64> = z.iter().map(|a| (a - zmax).exp()).collect();
        let s: f64 = e.iter().sum();
        let d: Vec<f64> = (0..3)
            .map(|c| e[c] / s - if c as u32 == y[n] { 1.0 } else { 0.0 })
            .collect();
        let mut want: Vec<f64> = (0..4)
            .flat_map(|i| d.iter().map(move |dc| xn[i] * dc))
            .collect();
        want.extend(&d);
        for (a, b) in g.row(n).iter().zip(&want) {
            assert!((a - b).abs() < 1e-12, "example {n}: {a} vs {b}");
        }
    }
    // Mean of per-example gradients (unscaled) = gradient of the mean loss, any batching.
    let (mut l2, vars2, _, _) = loss(vec![(0, 4), (4, 9)]);
    let (_, full) = loss_and_gradient(&mut l2, &vars2).unwrap();
    for (a, b) in g.mean().iter().zip(&full) {
        assert!((a - b).abs() < 1e-12);
    }
    // Batches of more than one example are refused, not silently mixed.
    let (mut l3, vars3, _, _) = loss(vec![(0, 2)]);
    assert!(matches!(
        per_example_gradients(&mut l3, &vars3),
        Err(CurvatureError::BadBatch { batch: 0, .. })
    ));
}

#[test]
fn gram_trick_matches_the_dense_covariance_and_the_identities_hold() {
    let (mut l, vars, _, _) = loss((0..N).map(|i| (i, i + 1)).collect());
    let g = per_example_gradients(&mut l, &vars).unwrap();
    let cfg = CovarianceConfig {
        k: 15,
        ..Default::default()
    };
    let s = covariance_summary(&g, &cfg).unwrap();
    // Dense D × D covariance from its operator, diagonalized directly.
    let k = materialize(
        &mut CovarianceOperator::new(&g, Normalization::Population).unwrap(),
        true,
    )
    .unwrap();
    let dense = k.eigen().unwrap();
    assert!((s.trace - k.trace()).abs() < 1e-12 * k.trace());
    for (i, (a, b)) in s.eigenvalues.iter().zip(&dense.values).enumerate().take(N) {
        assert!(
            (a - b).abs() < 1e-10 * dense.values[0],
            "eigenvalue {i}: {a} vs {b}"
        );
    }
    // Centring leaves rank ≤ n − 1; λ* is the smallest non-zero one.
    assert!(s.rank < N && s.rank >= 1);
    assert!((s.lambda_star - s.eigenvalues[s.rank - 1]).abs() < 1e-14);
    assert!((s.conditioning - s.lambda_star / s.eigenvalues[0]).abs() < 1e-14);
    // Tr(empirical Fisher) = Tr(K) + ‖ḡ‖²; Tr(K) = (1/n) Σ ‖g_i − ḡ‖².
    assert!(
        (s.empirical_fisher_trace - (s.trace + s.mean_grad_sq_norm)).abs()
            < 1e-12 * s.empirical_fisher_trace
    );
    let m = g.mean();
    let direct: f64 = (0..N)
        .map(|i| {
            g.row(i)
                .iter()
                .zip(&m)
                .map(|(a, b)| (a - b).powi(2))
                .sum::<f64>()
        })
        .sum::<f64>()
        / N as f64;
    assert!((s.trace - direct).abs() < 1e-12 * direct);
    // Unbiased = population · n/(n − 1).
    let u = covariance_summary(
        &g,
        &CovarianceConfig {
            normalization: Normalization::Unbiased,
            ..cfg
        },
    )
    .unwrap();
    assert!((u.trace - s.trace * N as f64 / (N - 1) as f64).abs() < 1e-12 * s.trace);
    assert!(
        (u.eigenvalues[0] - s.eigenvalues[0] * N as f64 / (N - 1) as f64).abs()
            < 1e-12 * s.eigenvalues[0]
    );
}

#[test]
fn mini_batch_gradient_noise_follows_tr_k_over_b() {
    // E‖ḡ_B‖² = ‖ḡ‖² + Tr(K)/B for batches drawn with replacement (TESTING.md #10), linking
    // covariance_summary to plain averaging of sampled batches.
    use rand::Rng;
    let (mut l, vars, _, _) = loss((0..N).map(|i| (i, i + 1)).collect());
    let g = per_example_gradients(&mut l, &vars).unwrap();
    let s = covariance_summary(&g, &CovarianceConfig::default()).unwrap();
    let mut r = breakeven_curvature::random::rng(11);
    for b in [1usize, 4] {
        let draws: Vec<f64> = (0..4000)
            .map(|_| {
                let mut m = vec![0.0; g.dim()];
                for _ in 0..b {
                    let i = r.random_range(0..N);
                    m.iter_mut()
                        .zip(g.row(i))
                        .for_each(|(a, x)| *a += x / b as f64);
                }
                m.iter().map(|a| a * a).sum::<f64>()
            })
            .collect();
        let mean = draws.iter().sum::<f64>() / draws.len() as f64;
        let sd = (draws.iter().map(|d| (d - mean).powi(2)).sum::<f64>() / (draws.len() - 1) as f64)
            .sqrt();
        let se = sd / (draws.len() as f64).sqrt();
        let want = s.mean_grad_sq_norm + s.trace / b as f64;
        assert!(
            (mean - want).abs() < 3.0 * se,
            "B = {b}: {mean} ± {se} vs {want}"
        );
    }
}

#[test]
fn blocked_gram_agrees_with_lanczos_on_the_covariance_operator_for_wide_gradients() {
    // D = 5000 spans three column blocks of the Gram accumulation; the reference is Lanczos
    // on K v = (1/n) Σ (g_i − ḡ)(g_i − ḡ)ᵀ v, a separate code path.
    use breakeven_curvature::{lanczos, LanczosConfig, PerExampleGradients};
    let (n, d) = (6, 5000);
    let mut r = breakeven_curvature::random::rng(21);
    let mut data = breakeven_curvature::random::gaussian_vector(&mut r, n * d);
    // A shared offset: the mean must be removed before the Gram product.
    data.iter_mut()
        .enumerate()
        .for_each(|(k, x)| *x += 3.0 + (k % d) as f64 * 1e-3);
    let g = PerExampleGradients::from_rows(n, d, data).unwrap();
    let s = covariance_summary(
        &g,
        &CovarianceConfig {
            k: 5,
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(s.rank, n - 1);
    let mut op = CovarianceOperator::new(&g, Normalization::Population).unwrap();
    let cfg = LanczosConfig {
        k: 5,
        tol: 1e-10,
        max_iter: 40,
        ..Default::default()
    };
    let l = lanczos(&mut op, &cfg, 1).unwrap();
    for (a, b) in s.eigenvalues.iter().zip(&l.eigenvalues) {
        assert!((a - b).abs() < 1e-8 * b, "{a} vs {b}");
    }
}

/// The loss of example i.
type ExampleLoss = std::rc::Rc<dyn Fn(usize) -> candle_core::Result<Tensor>>;

/// A tanh net 3 → 4 → 2 on 5 examples, with a weight used transposed (its gradient is a
/// non-contiguous view) and a parameter the loss ignores: `vars` in `dtype`, loss of example i.
fn tanh_net(dtype: candle_core::DType) -> (impl LossFn, Vec<candle_core::Var>, ExampleLoss) {
    let n = 5;
    let x = randn(410, n, 3, 1.0).to_dtype(dtype).unwrap();
    let y = labels(411, n, 2);
    let vars: Vec<candle_core::Var> = [
        param(412, &[3, 4], 0.8),
        param(413, &[4], 0.3),
        param(414, &[2, 4], 0.8),
        param(415, &[2], 1.0),
    ]
    .iter()
    .map(|v| candle_core::Var::from_tensor(&v.as_tensor().to_dtype(dtype).unwrap()).unwrap())
    .collect();
    let vc = vars.clone();
    let example = std::rc::Rc::new(move |i: usize| {
        let h = rows(&x, i, i + 1)
            .matmul(vc[0].as_tensor())?
            .broadcast_add(vc[1].as_tensor())?
            .tanh()?;
        // h Wᵀ: the gradient of W is the transpose of a matmul, a strided view.
        let z = h.matmul(&vc[2].as_tensor().t()?)?;
        cross_entropy(&z, &y[i..i + 1])
    });
    let e = example.clone();
    let l = BatchedLoss::new(n, Reduction::Mean, move |i| Ok((e(i)?, 1)));
    (l, vars, example)
}

/// Per-example gradients written straight into their rows (issue 18 item 3) against a plain
/// loop of Candle backward passes read through `to_dtype`/`to_vec1` (bit for bit, in f64 and
/// f32) and against central finite differences of each example's loss in f64 (TESTING.md #9).
#[test]
fn per_example_gradients_match_a_loop_and_finite_differences() {
    use candle_core::DType;
    init();
    for dtype in [DType::F64, DType::F32] {
        let (mut l, vars, example) = tanh_net(dtype);
        let g = per_example_gradients(&mut l, &vars).unwrap();
        assert_eq!((g.len(), g.dim()), (5, 12 + 4 + 8 + 2));
        for i in 0..5 {
            let grads = example(i).unwrap().backward().unwrap();
            let want: Vec<f64> = vars
                .iter()
                .flat_map(|v| match grads.get(v.as_tensor()) {
                    Some(t) => t
                        .flatten_all()
                        .unwrap()
                        .to_dtype(DType::F64)
                        .unwrap()
                        .to_vec1::<f64>()
                        .unwrap(),
                    None => vec![0.0; v.elem_count()],
                })
                .collect();
            assert_eq!(g.row(i), &want[..], "{dtype:?}, example {i}");
            let loss = example(i).unwrap().to_dtype(DType::F64).unwrap();
            assert_eq!(g.losses[i], loss.to_scalar::<f64>().unwrap());
        }
        // The ignored parameter's gradient is zero, not missing.
        assert!((0..5).all(|i| g.row(i)[24..].iter().all(|x| *x == 0.0)));
        if dtype != DType::F64 {
            continue;
        }
        let theta = params_to_vec(&vars).unwrap();
        let set = |t: &[f64]| {
            for (v, x) in vars.iter().zip(vec_to_tensors(t, &vars).unwrap()) {
                v.set(&x).unwrap();
            }
        };
        let h = 1e-6;
        for i in 0..5 {
            for k in 0..theta.len() {
                let mut t = theta.clone();
                t[k] = theta[k] + h;
                set(&t);
                let up = example(i).unwrap().to_scalar::<f64>().unwrap();
                t[k] = theta[k] - h;
                set(&t);
                let down = example(i).unwrap().to_scalar::<f64>().unwrap();
                let fd = (up - down) / (2.0 * h);
                let got = g.row(i)[k];
                assert!(
                    (got - fd).abs() <= 1e-8 * (1.0 + fd.abs()),
                    "example {i}, parameter {k}: {got} vs finite difference {fd}"
                );
            }
        }
        set(&theta);
    }
}
