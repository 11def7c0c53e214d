//! Proofs for the fast convolution in f64: forward against Candle's `conv2d`, first-order
//! gradients against Candle's backward and central differences, and second order (HVP of a
//! small conv net, gradient of the input-gradient norm) against differences of gradients.

use super::conv::{conv2d, conv2d_input_grad, conv2d_weight_grad};
use candle_core::{DType, Device, Result, Tensor, Var, D};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Double backprop needs `CANDLE_GRAD_DO_NOT_DETACH` before the thread's first backward
/// (SCIENCE.md §7); breakeven-curvature's switch sets it, and every test here calls it first.
fn keep_grad_graphs() {
    crate::gradcheck::enable_double_backprop();
}

fn randn(rng: &mut ChaCha8Rng, shape: &[usize]) -> Result<Tensor> {
    let n = shape.iter().product();
    let v: Vec<f64> = (0..n).map(|_| rng.random::<f64>() * 2.0 - 1.0).collect();
    Tensor::from_vec(v, shape, &Device::Cpu)
}

fn max_abs(t: &Tensor) -> Result<f64> {
    t.abs()?.flatten_all()?.max(0)?.to_scalar::<f64>()
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> Result<f64> {
    max_abs(&(a - b)?)
}

fn dot(a: &Tensor, b: &Tensor) -> Result<f64> {
    (a * b)?.sum_all()?.to_scalar::<f64>()
}

/// (N, C, H, W, O, KH, KW, stride, padding): stride 1/2, pad 0/1/2, 3×3, 1×1, non-square.
type Case = (
    usize,
    usize,
    usize,
    usize,
    usize,
    usize,
    usize,
    usize,
    usize,
);

/// Rows 9, 10, 11, 14 and 15 (stride 1, ≥ 16 input channels) run the shifted-view kernels
/// (`conv_shifted`: padding 1, 0, 2, 0 and 1, and C < O in row 15; row 10's weight gradient, on
/// a 3×4 output, runs im2col), row 16 (3×3, 128 → 136 channels) the Winograd forward and input
/// gradient (`conv_winograd`) and the im2col weight gradient; the rest run im2col: row 12
/// has ≥ 512 output pixels (one image per gemm), row 13 a batch that is not a multiple of the
/// images per gemm (6 + 1), the others several images side by side in one gemm.
const SHAPES: [Case; 16] = [
    (2, 3, 8, 8, 4, 3, 3, 1, 1),
    (3, 2, 7, 9, 5, 3, 3, 1, 0),
    (2, 4, 9, 6, 3, 3, 3, 2, 1),
    (1, 3, 8, 8, 2, 3, 3, 2, 0),
    (5, 6, 5, 7, 4, 1, 1, 1, 0),
    (2, 6, 7, 8, 4, 1, 1, 2, 0),
    (2, 3, 6, 7, 3, 2, 3, 1, 2),
    (4, 2, 9, 5, 3, 5, 3, 3, 1),
    (2, 16, 6, 7, 3, 3, 3, 1, 1),
    (1, 17, 5, 6, 4, 3, 3, 1, 0),
    (2, 16, 5, 5, 2, 3, 3, 1, 2),
    (2, 2, 24, 24, 3, 3, 3, 1, 1),
    (7, 2, 10, 10, 3, 3, 3, 1, 1),
    (1, 17, 20, 21, 4, 3, 3, 1, 0),
    (2, 16, 6, 7, 20, 3, 3, 1, 1),
    (2, 128, 5, 6, 136, 3, 3, 1, 1),
];

#[test]
fn the_rows_cover_every_kernel_family() {
    let geom = |&(n, c, h, w, o, kh, kw, stride, pad): &Case| {
        let out = |len: usize, k: usize| (len + 2 * pad - k) / stride + 1;
        super::conv_cpu::Geom {
            n,
            c,
            h,
            w,
            o,
            kh,
            kw,
            stride,
            pad,
            ho: out(h, kh),
            wo: out(w, kw),
        }
    };
    let rows = |takes: fn(&super::conv_cpu::Geom) -> bool| -> Vec<usize> {
        (0..SHAPES.len())
            .filter(|&i| takes(&geom(&SHAPES[i])))
            .collect()
    };
    assert_eq!(
        rows(super::conv_shifted::applies),
        vec![8, 9, 10, 13, 14, 15],
        "0-based rows the shifted-view kernels take"
    );
    assert_eq!(
        rows(super::conv_shifted::applies_weight_grad),
        vec![8, 10, 13, 14],
        "0-based rows whose weight gradient the shifted views take (Qe ≥ 48 positions per image; \
         rows 9 and 15 have 16 and 38)"
    );
    assert_eq!(
        rows(super::conv_winograd::applies),
        vec![15],
        "0-based rows the Winograd kernels take (before the shifted views)"
    );
}

#[test]
fn forward_equals_candle_conv2d() -> Result<()> {
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    for &(n, c, h, w, o, kh, kw, s, p) in &SHAPES {
        let x = randn(&mut rng, &[n, c, h, w])?;
        let k = randn(&mut rng, &[o, c, kh, kw])?;
        let b = randn(&mut rng, &[o])?;
        let ours = conv2d(&x, &k, Some(&b), s, p)?;
        let theirs = x
            .conv2d(&k, p, s, 1, 1)?
            .broadcast_add(&b.reshape((1, o, 1, 1))?)?;
        assert_eq!(
            ours.dims(),
            theirs.dims(),
            "shape {:?}",
            (n, c, h, w, o, kh, kw, s, p)
        );
        let err = max_abs_diff(&ours, &theirs)?;
        assert!(
            err < 1e-12,
            "forward differs by {err} for {:?}",
            (n, c, h, w, o, kh, kw, s, p)
        );
        // The f32 kernels agree with Candle too.
        let (x32, k32) = (x.to_dtype(DType::F32)?, k.to_dtype(DType::F32)?);
        let err32 = max_abs_diff(
            &conv2d(&x32, &k32, None, s, p)?.to_dtype(DType::F64)?,
            &x.conv2d(&k, p, s, 1, 1)?,
        )?;
        assert!(err32 < 1e-4, "f32 forward differs by {err32}");
    }
    Ok(())
}

#[test]
fn first_order_gradients_match_candle_and_finite_differences() -> Result<()> {
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    for &(n, c, h, w, o, kh, kw, s, p) in &SHAPES {
        let x = Var::from_tensor(&randn(&mut rng, &[n, c, h, w])?)?;
        let k = Var::from_tensor(&randn(&mut rng, &[o, c, kh, kw])?)?;
        let b = Var::from_tensor(&randn(&mut rng, &[o])?)?;
        let y = conv2d(&x, &k, Some(&b), s, p)?;
        // A loss whose output gradient is a fixed random tensor r, squared to be nonlinear.
        let r = randn(&mut rng, y.dims())?;
        let loss = |y: &Tensor| -> Result<Tensor> { (y * &r)?.sum_all()?.sqr() };
        let grads = loss(&y)?.backward()?;
        let (gx, gk, gb) = (
            grads.get(&x).unwrap(),
            grads.get(&k).unwrap(),
            grads.get(&b).unwrap(),
        );

        // Candle's conv2d backward derives `output_padding` from the height only and fails
        // with a shape error when width and height round differently under the stride, so it
        // serves as a reference only where the two agree.
        let out_pad = |len: usize, k: usize| (len + 2 * p - k) % s;
        if out_pad(h, kh) == out_pad(w, kw) {
            let yc = x
                .conv2d(&k, p, s, 1, 1)?
                .broadcast_add(&b.reshape((1, o, 1, 1))?)?;
            let gc = loss(&yc)?.backward()?;
            for (ours, var) in [(gx, &x), (gk, &k), (gb, &b)] {
                let err = max_abs_diff(ours, gc.get(var).unwrap())?;
                assert!(
                    err < 1e-9,
                    "gradient differs from Candle's by {err} for {:?}",
                    (n, c, h, w, o, kh, kw, s, p)
                );
            }
        }

        // Central differences along random directions.
        let eps = 1e-5;
        for (var, grad) in [(&x, gx), (&k, gk)] {
            let v = randn(&mut rng, var.dims())?;
            let at = |t: f64| -> Result<f64> {
                let moved = (var.as_tensor() + (&v * t)?)?;
                let y = if std::ptr::eq(var, &x) {
                    conv2d(&moved, &k, Some(&b), s, p)?
                } else {
                    conv2d(&x, &moved, Some(&b), s, p)?
                };
                loss(&y)?.to_scalar::<f64>()
            };
            let fd = (at(eps)? - at(-eps)?) / (2.0 * eps);
            let ad = dot(grad, &v)?;
            assert!(
                (fd - ad).abs() <= 1e-6 * ad.abs().max(1.0),
                "finite difference {fd} vs gradient {ad}"
            );
        }
    }
    Ok(())
}

#[test]
fn standalone_gradient_ops_match_backward() -> Result<()> {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let (x, k) = (
        Var::from_tensor(&randn(&mut rng, &[3, 4, 9, 7])?)?,
        Var::from_tensor(&randn(&mut rng, &[5, 4, 3, 3])?)?,
    );
    let y = conv2d(&x, &k, None, 2, 1)?;
    let dy = randn(&mut rng, y.dims())?;
    let grads = (&y * &dy)?.sum_all()?.backward()?;
    let dx = conv2d_input_grad(&dy, &k, (9, 7), 2, 1)?;
    let dw = conv2d_weight_grad(&x, &dy, (3, 3), 2, 1)?;
    assert!(max_abs_diff(&dx, grads.get(&x).unwrap())? < 1e-12);
    assert!(max_abs_diff(&dw, grads.get(&k).unwrap())? < 1e-12);
    // Candle's own transposed convolution agrees with ours.
    let dx_candle = dy.conv_transpose2d(&k, 1, 0, 2, 1)?;
    assert!(max_abs_diff(&dx, &dx_candle)? < 1e-12);
    Ok(())
}

/// Small smooth conv net (tanh so central differences are accurate), mean cross-entropy.
struct Net {
    w1: Var,
    b1: Var,
    w2: Var,
    w3: Var,
}

impl Net {
    fn new(rng: &mut ChaCha8Rng) -> Result<Self> {
        let scaled = |rng: &mut ChaCha8Rng, s: &[usize], f: f64| -> Result<Var> {
            Var::from_tensor(&(randn(rng, s)? * f)?)
        };
        Ok(Net {
            w1: scaled(rng, &[4, 3, 3, 3], 0.5)?,
            b1: scaled(rng, &[4], 0.5)?,
            w2: scaled(rng, &[5, 4, 3, 3], 0.4)?,
            w3: scaled(rng, &[3, 5, 1, 1], 0.6)?,
        })
    }

    fn params(&self) -> [&Var; 4] {
        [&self.w1, &self.b1, &self.w2, &self.w3]
    }

    /// Loss with parameters `p` (same order as `params`) on input `x`, labels `y`.
    fn loss(p: [&Tensor; 4], x: &Tensor, y: &Tensor) -> Result<Tensor> {
        let h = conv2d(x, p[0], Some(p[1]), 1, 1)?.tanh()?;
        let h = conv2d(&h, p[2], None, 2, 1)?.tanh()?;
        let logits = conv2d(&h, p[3], None, 1, 0)?
            .mean(D::Minus1)?
            .mean(D::Minus1)?;
        let logp = candle_nn::ops::log_softmax(&logits, D::Minus1)?;
        let picked = logp.gather(&y.unsqueeze(1)?, 1)?;
        picked.mean_all()?.neg()
    }
}

fn grads_of(loss: &Tensor, vars: [&Var; 4]) -> Result<Vec<Tensor>> {
    let g = loss.backward()?;
    vars.iter()
        .map(|v| {
            Ok(g.get(v.as_tensor())
                .expect("every parameter reaches the loss")
                .clone())
        })
        .collect()
}

#[test]
fn double_backprop_hvp_matches_finite_differences() -> Result<()> {
    keep_grad_graphs();
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    let net = Net::new(&mut rng)?;
    let x = randn(&mut rng, &[3, 3, 7, 6])?;
    let y = Tensor::new(&[0u32, 2, 1], &Device::Cpu)?;
    let v: Vec<Tensor> = net
        .params()
        .iter()
        .map(|p| randn(&mut rng, p.dims()))
        .collect::<Result<_>>()?;

    let ps = net.params().map(|p| p.as_tensor());
    let g = grads_of(&Net::loss(ps, &x, &y)?, net.params())?;
    let gv = g
        .iter()
        .zip(&v)
        .map(|(g, v)| (g * v)?.sum_all())
        .reduce(|a, b| a? + b?)
        .unwrap()?;
    let hv = grads_of(&gv, net.params())?;

    let eps = 1e-5;
    let grad_at = |t: f64| -> Result<Vec<Tensor>> {
        let moved: Vec<Var> = net
            .params()
            .iter()
            .zip(&v)
            .map(|(p, v)| Var::from_tensor(&(p.as_tensor() + (v * t)?)?))
            .collect::<Result<_>>()?;
        let refs = [&moved[0], &moved[1], &moved[2], &moved[3]];
        grads_of(&Net::loss(refs.map(|m| m.as_tensor()), &x, &y)?, refs)
    };
    let (gp, gm) = (grad_at(eps)?, grad_at(-eps)?);
    let mut worst: f64 = 0.0;
    for ((hv, gp), gm) in hv.iter().zip(&gp).zip(&gm) {
        let fd = ((gp - gm)? / (2.0 * eps))?;
        let scale = max_abs(&fd)?.max(1e-3);
        worst = worst.max(max_abs_diff(hv, &fd)? / scale);
    }
    assert!(
        worst < 1e-6,
        "HVP vs finite differences of the gradient: worst relative error {worst}"
    );
    Ok(())
}

#[test]
fn gradient_of_input_gradient_norm_matches_finite_differences() -> Result<()> {
    // GPx needs ∇_θ ‖∇_x L‖²: the input gradient must itself be differentiable in θ.
    keep_grad_graphs();
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let net = Net::new(&mut rng)?;
    let x = Var::from_tensor(&randn(&mut rng, &[2, 3, 6, 7])?)?;
    let y = Tensor::new(&[1u32, 0], &Device::Cpu)?;
    let penalty = |p: [&Tensor; 4]| -> Result<Tensor> {
        let loss = Net::loss(p, &x, &y)?;
        let gx = loss
            .backward()?
            .get(&x)
            .expect("input reaches the loss")
            .clone();
        gx.sqr()?.sum_all()
    };
    let ps = net.params().map(|p| p.as_tensor());
    let grads = grads_of(&penalty(ps)?, net.params())?;

    let eps = 1e-5;
    for (i, g) in grads.iter().enumerate() {
        let v = randn(&mut rng, g.dims())?;
        let at = |t: f64| -> Result<f64> {
            let moved = (net.params()[i].as_tensor() + (&v * t)?)?;
            let mut p = net.params().map(|p| p.as_tensor().clone());
            p[i] = moved;
            penalty([&p[0], &p[1], &p[2], &p[3]])?.to_scalar::<f64>()
        };
        let fd = (at(eps)? - at(-eps)?) / (2.0 * eps);
        let ad = dot(g, &v)?;
        assert!(
            (fd - ad).abs() <= 1e-6 * ad.abs().max(1e-3),
            "parameter {i}: finite difference {fd} vs double backprop {ad}"
        );
    }
    Ok(())
}

#[test]
fn second_order_through_the_shifted_view_kernels() -> Result<()> {
    // P(x, w) = ‖∇_x Σ r·tanh(conv(x, w))‖² on the rows with ≥ 16 input channels (the
    // shifted-view kernels, whose gradients double backprop runs in turn): ∇P by double
    // backprop against central differences of P.
    keep_grad_graphs();
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    for &(n, c, h, w, o, kh, kw, s, p) in SHAPES.iter().filter(|r| r.1 >= 16) {
        let x0 = randn(&mut rng, &[n, c, h, w])?;
        let w0 = (randn(&mut rng, &[o, c, kh, kw])? * 0.2)?;
        let r = randn(&mut rng, conv2d(&x0, &w0, None, s, p)?.dims())?;
        let penalty = |x: &Tensor, k: &Tensor| -> Result<Tensor> {
            let x = Var::from_tensor(x)?;
            let loss = (conv2d(x.as_tensor(), k, None, s, p)?.tanh()? * &r)?.sum_all()?;
            let gx = loss
                .backward()?
                .get(&x)
                .expect("input reaches the loss")
                .clone();
            gx.sqr()?.sum_all()
        };
        let (xv, wv) = (Var::from_tensor(&x0)?, Var::from_tensor(&w0)?);
        let g = penalty(xv.as_tensor(), wv.as_tensor())?.backward()?;
        let (gx, gw) = (
            g.get(&xv).expect("x in graph"),
            g.get(&wv).expect("w in graph"),
        );
        let (vx, vw) = (randn(&mut rng, x0.dims())?, randn(&mut rng, w0.dims())?);
        let eps = 1e-5;
        let at = |t: f64| -> Result<f64> {
            penalty(&(&x0 + (&vx * t)?)?, &(&w0 + (&vw * t)?)?)?.to_scalar::<f64>()
        };
        let fd = (at(eps)? - at(-eps)?) / (2.0 * eps);
        let ad = dot(gx, &vx)? + dot(gw, &vw)?;
        assert!(
            (fd - ad).abs() <= 1e-6 * ad.abs().max(1e-3),
            "{:?}: finite difference {fd} vs double backprop {ad}",
            (n, c, h, w, o, kh, kw, s, p)
        );
    }
    Ok(())
}

#[test]
fn non_contiguous_operands_and_bad_shapes() -> Result<()> {
    let mut rng = ChaCha8Rng::seed_from_u64(6);
    // A transposed view (H and W swapped) is copied to contiguous memory first.
    let x = randn(&mut rng, &[2, 3, 6, 5])?.transpose(2, 3)?;
    let k = randn(&mut rng, &[4, 3, 3, 3])?;
    assert!(!x.is_contiguous());
    let err = max_abs_diff(
        &conv2d(&x, &k, None, 1, 1)?,
        &x.contiguous()?.conv2d(&k, 1, 1, 1, 1)?,
    )?;
    assert!(err < 1e-12, "non-contiguous input differs by {err}");
    // Bad input is an error naming the shapes, never a panic.
    let wrong_channels = randn(&mut rng, &[4, 2, 3, 3])?;
    let msg = conv2d(&x, &wrong_channels, None, 1, 1)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("channels"), "unexpected message: {msg}");
    assert!(
        conv2d(&x, &k, None, 0, 1).is_err(),
        "stride 0 must be rejected"
    );
    let too_big = randn(&mut rng, &[4, 3, 9, 9])?;
    assert!(
        conv2d(&x, &too_big, None, 1, 0).is_err(),
        "kernel larger than the input"
    );
    let bad_dy = randn(&mut rng, &[2, 4, 3, 3])?;
    assert!(
        conv2d_input_grad(&bad_dy, &k, (5, 6), 1, 1).is_err(),
        "dy of the wrong size"
    );
    Ok(())
}

/// A fused op's output `fused` against the same computed by separate ops, `plain`, both
/// functions of `vars` (f64): the same gradients of L = Σ c·tanh(y) + Σ d·y (random c, d; the
/// linear term keeps a slope where a ReLU clips) to 1e-12, and of P = Σ_v ‖∇_v L‖² to 1e-10 of
/// their largest entry (double backprop through the fused op's backward).
fn same_gradients_to_second_order(
    fused: &Tensor,
    plain: &Tensor,
    vars: &[&Var],
    rng: &mut ChaCha8Rng,
    what: &str,
) -> Result<()> {
    let (c, d) = (randn(rng, fused.dims())?, randn(rng, fused.dims())?);
    let grads = |y: &Tensor| -> Result<Vec<Tensor>> {
        let loss = ((y.tanh()? * &c)?.sum_all()? + (y * &d)?.sum_all()?)?;
        let g = loss.backward()?;
        Ok(vars
            .iter()
            .map(|v| g.get(v).expect("reaches the loss").clone())
            .collect())
    };
    let (gf, gp) = (grads(fused)?, grads(plain)?);
    for (j, (a, b)) in gf.iter().zip(&gp).enumerate() {
        assert!(
            max_abs_diff(a, b)? <= 1e-12,
            "{what}: first order, operand {j}"
        );
    }
    let second = |g: &[Tensor]| -> Result<Vec<Tensor>> {
        let mut pen = g[0].sqr()?.sum_all()?;
        for t in &g[1..] {
            pen = (pen + t.sqr()?.sum_all()?)?;
        }
        let h = pen.backward()?;
        Ok(vars
            .iter()
            .map(|v| h.get(v).expect("reaches the penalty").clone())
            .collect())
    };
    let (hf, hp) = (second(&gf)?, second(&gp)?);
    for (j, (a, b)) in hf.iter().zip(&hp).enumerate() {
        let scale = max_abs(b)?.max(1e-3);
        let diff = max_abs_diff(a, b)?;
        assert!(
            diff <= 1e-10 * scale,
            "{what}: second order, operand {j}: {diff} vs {scale}"
        );
    }
    Ok(())
}

/// `conv2d_add(x, w, r) = conv2d(x, w) + r` as one op: the same bits forward, and the same
/// gradients (x, w, and r, which here also depends on x as a residual block's identity does) at
/// first and second order, against the two ops in f64; a residual of the wrong shape is named.
#[test]
fn conv_plus_residual_matches_the_two_ops_at_every_order() -> Result<()> {
    use super::conv::conv2d_add;
    keep_grad_graphs();
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    // Shape-preserving rows (3×3 pad 1 stride 1, C = O), so the residual can be x itself, then a
    // shifted-view row, a Winograd row, an im2col stride-2 row and a 1×1 row with a free residual.
    let cases: [(Case, bool); 5] = [
        ((2, 4, 6, 5, 4, 3, 3, 1, 1), true),
        ((2, 16, 6, 7, 16, 3, 3, 1, 1), true),
        ((1, 128, 5, 6, 128, 3, 3, 1, 1), true),
        ((2, 4, 9, 6, 3, 3, 3, 2, 1), false),
        ((5, 6, 5, 7, 4, 1, 1, 1, 0), false),
    ];
    for ((n, c, h, w, o, kh, kw, s, p), identity) in cases {
        let x0 = randn(&mut rng, &[n, c, h, w])?;
        let w0 = (randn(&mut rng, &[o, c, kh, kw])? * 0.2)?;
        let dims = conv2d(&x0, &w0, None, s, p)?.dims().to_vec();
        let r0 = randn(&mut rng, &dims)?;
        let (x, k, r) = (
            Var::from_tensor(&x0)?,
            Var::from_tensor(&w0)?,
            Var::from_tensor(&r0)?,
        );
        // The residual: a free tensor, or 0.7·x + r (an identity shortcut plus a free part).
        let residual = || -> Result<Tensor> {
            if identity {
                (x.as_tensor() * 0.7)? + r.as_tensor()
            } else {
                Ok(r.as_tensor().clone())
            }
        };
        let fused = conv2d_add(x.as_tensor(), k.as_tensor(), &residual()?, s, p)?;
        let plain = (conv2d(x.as_tensor(), k.as_tensor(), None, s, p)? + residual()?)?;
        assert_eq!(max_abs_diff(&fused, &plain)?, 0.0, "forward");
        same_gradients_to_second_order(&fused, &plain, &[&x, &k, &r], &mut rng, "residual")?;
        // f32: the same bits as the two ops.
        let (x32, w32, r32) = (
            x0.to_dtype(DType::F32)?,
            w0.to_dtype(DType::F32)?,
            r0.to_dtype(DType::F32)?,
        );
        let a = conv2d_add(&x32, &w32, &r32, s, p)?;
        let b = (conv2d(&x32, &w32, None, s, p)? + &r32)?;
        assert_eq!(
            max_abs_diff(&a.to_dtype(DType::F64)?, &b.to_dtype(DType::F64)?)?,
            0.0
        );
    }
    let x = Tensor::zeros((1, 2, 5, 5), DType::F64, &Device::Cpu)?;
    let w = Tensor::zeros((3, 2, 3, 3), DType::F64, &Device::Cpu)?;
    let r = Tensor::zeros((1, 3, 5, 4), DType::F64, &Device::Cpu)?;
    let err = conv2d_add(&x, &w, &r, 1, 1).unwrap_err().to_string();
    assert!(
        err.contains("residual") && err.contains("[1, 3, 5, 5]"),
        "{err}"
    );
    Ok(())
}

/// `conv2d_relu(x, w, b) = relu(conv2d(x, w, b))` as one op: the same bits forward (f64 and
/// f32), and the same gradients of x, w and b at first and second order in f64, with and without
/// a bias, on each kernel family. The loss has a slope where the output is clipped, so a
/// missing mask in the backward fails it.
#[test]
fn conv_relu_matches_the_two_ops_at_every_order() -> Result<()> {
    use super::conv::conv2d_relu;
    use super::relu::relu;
    keep_grad_graphs();
    let mut rng = ChaCha8Rng::seed_from_u64(13);
    for (i, &(n, c, h, w, o, kh, kw, s, p)) in SHAPES.iter().enumerate() {
        let with_bias = i % 2 == 0;
        let x = Var::from_tensor(&randn(&mut rng, &[n, c, h, w])?)?;
        let k = Var::from_tensor(&(randn(&mut rng, &[o, c, kh, kw])? * 0.3)?)?;
        let b = Var::from_tensor(&(randn(&mut rng, &[o])? * 0.1)?)?;
        let bias = with_bias.then(|| b.as_tensor());
        let fused = conv2d_relu(x.as_tensor(), k.as_tensor(), bias, s, p)?;
        let plain = relu(&conv2d(x.as_tensor(), k.as_tensor(), bias, s, p)?)?;
        assert_eq!(max_abs_diff(&fused, &plain)?, 0.0, "row {i}: forward");
        let vars: Vec<&Var> = if with_bias {
            vec![&x, &k, &b]
        } else {
            vec![&x, &k]
        };
        same_gradients_to_second_order(&fused, &plain, &vars, &mut rng, &format!("row {i}"))?;
        let (x32, k32, b32) = (
            x.as_tensor().to_dtype(DType::F32)?,
            k.as_tensor().to_dtype(DType::F32)?,
            b.as_tensor().to_dtype(DType::F32)?,
        );
        let bias32 = with_bias.then_some(&b32);
        let a = conv2d_relu(&x32, &k32, bias32, s, p)?;
        let r = relu(&conv2d(&x32, &k32, bias32, s, p)?)?;
        assert_eq!(
            max_abs_diff(&a.to_dtype(DType::F64)?, &r.to_dtype(DType::F64)?)?,
            0.0,
            "row {i}: f32 forward"
        );
    }
    Ok(())
}
