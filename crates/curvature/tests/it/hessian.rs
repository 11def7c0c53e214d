//! The Hessian operators against closed forms and each other on tiny f64 models
//! (TESTING.md #1-#4, #8).

use breakeven_curvature::{
    check_double_backprop, materialize, params_to_vec, BatchedLoss, CurvatureError, DenseMatrix,
    FdConfig, FdHessianOperator, HessianOperator, LinearOperator, LossFn, Reduction,
};
use candle_core::{Tensor, Var};

use crate::common::*;

const N: usize = 7;
const D: usize = 4;

/// Splits `0..N` into batches of the given sizes.
fn bounds(sizes: &[usize]) -> Vec<(usize, usize)> {
    let mut lo = 0;
    sizes
        .iter()
        .map(|s| {
            lo += s;
            (lo - s, lo)
        })
        .collect()
}

fn x_data() -> Tensor {
    randn(100, N, D, 1.0)
}

/// Mean squared error of linear regression over batches of the given sizes.
fn linreg_loss(w: Var, sizes: &[usize]) -> impl LossFn {
    let x = x_data();
    let y = randn(101, N, 1, 1.0);
    let b = bounds(sizes);
    BatchedLoss::new(b.len(), Reduction::Mean, move |i| {
        let (lo, hi) = b[i];
        let r = (rows(&x, lo, hi).matmul(w.as_tensor())? - rows(&y, lo, hi))?;
        Ok((r.sqr()?.mean_all()?, hi - lo))
    })
}

#[test]
fn linear_regression_hessian_is_two_over_n_xtx_for_any_batch_split() {
    init();
    let x = to_rows(&x_data());
    let mut want = vec![0.0; D * D];
    for row in &x {
        for i in 0..D {
            for j in 0..D {
                want[i * D + j] += 2.0 / N as f64 * row[i] * row[j];
            }
        }
    }
    let want = DenseMatrix::from_row_major(D, want).unwrap();
    let w = param(1, &[D, 1], 1.0);
    for sizes in [&[N][..], &[3, 4], &[2, 5], &[1, 1, 5]] {
        let mut h = HessianOperator::new(vec![w.clone()], linreg_loss(w.clone(), sizes)).unwrap();
        let got = materialize(&mut h, false).unwrap();
        assert!(rel_diff(&got, &want) < 1e-12, "split {sizes:?}");
    }
}

#[test]
fn logistic_regression_hessian_matches_closed_form_and_split_weighting() {
    init();
    let x = x_data();
    let y: Vec<f64> = labels(7, N, 2).iter().map(|&l| l as f64).collect();
    let yt = Tensor::from_vec(y, (N, 1), x.device()).unwrap();
    let w = param(3, &[D, 1], 0.7);
    // Sum reduction in the closure: the operator must still be of the mean loss.
    let make = |sizes: &[usize], red: Reduction| {
        let (x, yt, w, b) = (x.clone(), yt.clone(), w.clone(), bounds(sizes));
        BatchedLoss::new(b.len(), red, move |i| {
            let (lo, hi) = b[i];
            let z = rows(&x, lo, hi).matmul(w.as_tensor())?;
            // ℓ = log(1 + e^z) − y z
            let l = ((z.exp()? + 1.0)?.log()? - (z * rows(&yt, lo, hi))?)?;
            let l = match red {
                Reduction::Mean => l.mean_all()?,
                Reduction::Sum => l.sum_all()?,
            };
            Ok((l, hi - lo))
        })
    };
    let xr = to_rows(&x);
    let wv = params_to_vec(std::slice::from_ref(&w)).unwrap();
    let mut want = vec![0.0; D * D];
    for row in &xr {
        let z: f64 = row.iter().zip(&wv).map(|(a, b)| a * b).sum();
        let s = 1.0 / (1.0 + (-z).exp());
        for i in 0..D {
            for j in 0..D {
                want[i * D + j] += s * (1.0 - s) * row[i] * row[j] / N as f64;
            }
        }
    }
    let want = DenseMatrix::from_row_major(D, want).unwrap();
    for (sizes, red) in [
        (&[N][..], Reduction::Mean),
        (&[3, 4], Reduction::Mean),
        (&[2, 5], Reduction::Sum),
    ] {
        let mut h = HessianOperator::new(vec![w.clone()], make(sizes, red)).unwrap();
        let got = materialize(&mut h, false).unwrap();
        assert!(
            rel_diff(&got, &want) < 1e-10,
            "split {sizes:?} {red:?}: {}",
            rel_diff(&got, &want)
        );
        // The naive mean of batch means (equal weights) is measurably different.
        assert!(got.max_asymmetry() < 1e-14);
    }
    // Equal-weight averaging of the 3 and 4 batches would be wrong by more than 1e-3.
    let mut h3 = HessianOperator::new(vec![w.clone()], make(&[3], Reduction::Mean)).unwrap();
    let mut h4 = {
        let (x, yt, wc) = (x.clone(), yt.clone(), w.clone());
        let l = BatchedLoss::new(1, Reduction::Mean, move |_| {
            let z = rows(&x, 3, 7).matmul(wc.as_tensor())?;
            let l = ((z.exp()? + 1.0)?.log()? - (z * rows(&yt, 3, 7))?)?;
            Ok((l.mean_all()?, 4))
        });
        HessianOperator::new(vec![w.clone()], l).unwrap()
    };
    let (a3, a4) = (
        materialize(&mut h3, false).unwrap(),
        materialize(&mut h4, false).unwrap(),
    );
    let naive: Vec<f64> = a3
        .data()
        .iter()
        .zip(a4.data())
        .map(|(a, b)| 0.5 * (a + b))
        .collect();
    let naive = DenseMatrix::from_row_major(D, naive).unwrap();
    assert!(rel_diff(&naive, &want) > 1e-3);
}

fn mlp_loss(mlp: &Mlp, sizes: &[usize]) -> impl LossFn {
    let x = randn(200, N, 3, 1.0);
    let y = labels(201, N, 3);
    let b = bounds(sizes);
    let vars = mlp.vars.clone();
    BatchedLoss::new(b.len(), Reduction::Mean, move |i| {
        let (lo, hi) = b[i];
        let m = Mlp { vars: vars.clone() };
        Ok((
            cross_entropy(&m.forward(&rows(&x, lo, hi))?, &y[lo..hi])?,
            hi - lo,
        ))
    })
}

#[test]
fn mlp_double_backprop_hessian_matches_finite_differences_and_restores_params() {
    init();
    let mlp = Mlp::new(10);
    let before = params_to_vec(&mlp.vars).unwrap();
    let mut h = HessianOperator::new(mlp.vars.clone(), mlp_loss(&mlp, &[3, 4])).unwrap();
    let exact = materialize(&mut h, false).unwrap();
    let mut fd =
        FdHessianOperator::new(mlp.vars.clone(), mlp_loss(&mlp, &[N]), &FdConfig::default())
            .unwrap();
    let approx = materialize(&mut fd, false).unwrap();
    assert!(
        rel_diff(&approx, &exact) < 1e-6,
        "FD vs double backprop: {}",
        rel_diff(&approx, &exact)
    );
    assert!(
        exact.max_asymmetry() < 1e-12 * exact.data().iter().fold(0.0_f64, |m, x| m.max(x.abs()))
    );
    let after = params_to_vec(&mlp.vars).unwrap();
    assert!(
        before
            .iter()
            .zip(&after)
            .all(|(a, b)| a.to_bits() == b.to_bits()),
        "FD left a trace"
    );
    // Determinism: the same product twice gives the same bits.
    let v: Vec<f64> = (0..h.dim()).map(|i| (i as f64).sin()).collect();
    let (a, b) = (h.apply(&v).unwrap(), h.apply(&v).unwrap());
    assert!(a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()));
}

#[test]
fn cnn_double_backprop_hessian_matches_finite_differences() {
    init();
    let cnn = Cnn::new(30);
    let x = images(31, 5);
    let y = labels(32, 5, 3);
    let vars = cnn.vars.clone();
    let make = || {
        let (x, y, vars) = (x.clone(), y.clone(), vars.clone());
        BatchedLoss::new(2, Reduction::Mean, move |i| {
            let (lo, hi) = [(0, 2), (2, 5)][i];
            let m = Cnn { vars: vars.clone() };
            Ok((
                cross_entropy(&m.forward(&rows(&x, lo, hi))?, &y[lo..hi])?,
                hi - lo,
            ))
        })
    };
    let mut h = HessianOperator::new(cnn.vars.clone(), make()).unwrap();
    let exact = materialize(&mut h, false).unwrap();
    let mut fd = FdHessianOperator::new(cnn.vars.clone(), make(), &FdConfig::default()).unwrap();
    let approx = materialize(&mut fd, false).unwrap();
    assert_eq!(exact.n(), 2 * 9 + 2 + 8 * 3 + 3);
    assert!(
        rel_diff(&approx, &exact) < 1e-6,
        "FD vs double backprop: {}",
        rel_diff(&approx, &exact)
    );
}

#[test]
fn finite_differences_restore_parameters_bit_for_bit_when_the_loss_fails() {
    let w = param(5, &[D, 1], 1.0);
    let before = params_to_vec(std::slice::from_ref(&w)).unwrap();
    let x = x_data();
    let w2 = w.clone();
    let mut calls = 0;
    let loss = BatchedLoss::new(1, Reduction::Mean, move |_| {
        calls += 1;
        if calls == 2 {
            // Fails on the minus pass, with the parameters perturbed.
            return Err(candle_core::Error::Msg("data loader failed".into()));
        }
        Ok((x.matmul(w2.as_tensor())?.sqr()?.mean_all()?, N))
    });
    let mut fd = FdHessianOperator::new(vec![w.clone()], loss, &FdConfig::default()).unwrap();
    assert!(matches!(
        fd.apply(&[1.0, 0.0, 0.0, 0.0]),
        Err(CurvatureError::Candle(_))
    ));
    let after = params_to_vec(&[w]).unwrap();
    assert!(before
        .iter()
        .zip(&after)
        .all(|(a, b)| a.to_bits() == b.to_bits()));
}

#[test]
fn probe_passes_on_a_fresh_thread_after_enabling() {
    init();
    // Threads started later read the variable at their own first backward.
    std::thread::spawn(|| check_double_backprop().unwrap())
        .join()
        .unwrap();
}

#[test]
fn wrong_shapes_and_lengths_are_typed_errors() {
    init();
    let w = param(6, &[D, 1], 1.0);
    let x = x_data();
    let w2 = w.clone();
    let loss = BatchedLoss::new(1, Reduction::Mean, move |_| {
        Ok((x.matmul(w2.as_tensor())?, N))
    });
    let mut h = HessianOperator::new(vec![w], loss).unwrap();
    assert!(matches!(
        h.apply(&[0.0; D]),
        Err(CurvatureError::BadBatch { batch: 0, .. })
    ));
    assert!(matches!(
        h.apply(&[0.0; 3]),
        Err(CurvatureError::DimensionMismatch { got: 3, .. })
    ));
}

/// The documented accuracy limits of finite differences: fine in f32 on a smooth net, and
/// spurious curvature ≈ jump / 2ε next to a kink, where double backprop is exact.
#[test]
fn finite_difference_accuracy_limits_f32_smooth_and_kinks() {
    init();
    // Smooth tanh MLP in f32 against the f64 double-backprop Hessian.
    let mlp = Mlp::new(10);
    let exact = materialize(
        &mut HessianOperator::new(mlp.vars.clone(), mlp_loss(&mlp, &[N])).unwrap(),
        false,
    )
    .unwrap();
    let vars32: Vec<Var> = mlp
        .vars
        .iter()
        .map(|v| {
            Var::from_tensor(&v.as_tensor().to_dtype(candle_core::DType::F32).unwrap()).unwrap()
        })
        .collect();
    let (x, y) = (randn(200, N, 3, 1.0), labels(201, N, 3));
    let v32 = vars32.clone();
    let loss32 = BatchedLoss::new(1, Reduction::Mean, move |_| {
        let z = Mlp { vars: v32.clone() }.forward(&x.to_dtype(candle_core::DType::F32)?)?;
        Ok((cross_entropy(&z, &y)?, N))
    });
    let mut fd32 = FdHessianOperator::new(vars32, loss32, &FdConfig::default()).unwrap();
    assert!((fd32.rel_step() - (f32::EPSILON as f64).cbrt()).abs() < 1e-12);
    let approx = materialize(&mut fd32, false).unwrap();
    let err = rel_diff(&approx, &exact);
    assert!(err < 2e-2, "f32 smooth FD error {err}");

    // L(w) = 3·relu(w) at w = 1e-4: H = 0 exactly, but the central difference straddles the
    // kink at 0 and reports ≈ 3 (w + ε) / 2ε² instead.
    let w = Var::new(&[1e-4f32], &candle_core::Device::Cpu).unwrap();
    let w2 = w.clone();
    let kink = move || {
        let w2 = w2.clone();
        BatchedLoss::new(1, Reduction::Mean, move |_| {
            Ok(((w2.as_tensor().relu()? * 3.0)?.sum_all()?, 1))
        })
    };
    let hv = HessianOperator::new(vec![w.clone()], kink())
        .unwrap()
        .apply(&[1.0])
        .unwrap();
    assert_eq!(hv, vec![0.0]);
    let fdv = FdHessianOperator::new(vec![w], kink(), &FdConfig::default())
        .unwrap()
        .apply(&[1.0])
        .unwrap();
    assert!(fdv[0] > 10.0, "FD across the kink: {}", fdv[0]);
}

#[test]
fn hessian_of_a_parameter_subset_is_the_principal_block() {
    init();
    let mlp = Mlp::new(70);
    let full = materialize(
        &mut HessianOperator::new(mlp.vars.clone(), mlp_loss(&mlp, &[3, 4])).unwrap(),
        false,
    )
    .unwrap();
    // The output layer only: W2 (4 × 3) and b2 (3), the last 15 of 31 coordinates.
    let block = materialize(
        &mut HessianOperator::new(mlp.vars[2..].to_vec(), mlp_loss(&mlp, &[3, 4])).unwrap(),
        false,
    )
    .unwrap();
    let (n, off) = (block.n(), full.n() - block.n());
    assert_eq!((full.n(), n), (31, 15));
    for i in 0..n {
        for j in 0..n {
            assert!((block.get(i, j) - full.get(off + i, off + j)).abs() < 1e-12);
        }
    }
}

#[test]
fn cached_graphs_give_the_same_products_and_follow_parameter_changes() {
    init();
    let mlp = Mlp::new(80);
    let v: Vec<f64> = (0..31).map(|i| (i as f64 * 0.37).cos()).collect();
    let mut plain = HessianOperator::new(mlp.vars.clone(), mlp_loss(&mlp, &[3, 4])).unwrap();
    let mut cached = HessianOperator::new(mlp.vars.clone(), mlp_loss(&mlp, &[3, 4]))
        .unwrap()
        .cache_graphs(true);
    let (a, b, c) = (
        plain.apply(&v).unwrap(),
        cached.apply(&v).unwrap(),
        cached.apply(&v).unwrap(),
    );
    assert!(a
        .iter()
        .zip(&b)
        .all(|(x, y)| (x - y).abs() <= 1e-15 * x.abs().max(1.0)));
    assert_eq!(b, c);
    // A training step changes the parameters: the cache must not serve the old Hessian.
    let w = &mlp.vars[0];
    w.set(&(w.as_tensor() * 1.1).unwrap()).unwrap();
    let (a2, b2) = (plain.apply(&v).unwrap(), cached.apply(&v).unwrap());
    assert!(a2.iter().zip(&a).any(|(x, y)| (x - y).abs() > 1e-6));
    assert!(a2
        .iter()
        .zip(&b2)
        .all(|(x, y)| (x - y).abs() <= 1e-15 * x.abs().max(1.0)));
}
