//! Proofs for the shifted-view (implicit gemm) kernels of `conv_shifted`: equal to the im2col
//! kernels and to a direct loop convolution, in f64 and f32, on odd shapes with and without
//! padding, C ≠ O, batches of 1 and 3, and on 1 and 2 threads.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::conv_cpu::{
    conv_fwd_im2col, conv_input_grad_col2im, conv_weight_grad_im2col, Elem, Geom,
};
use super::conv_shifted;

/// (N, C, H, W, O, KH, KW, padding), all stride 1.
pub(super) type Case = (usize, usize, usize, usize, usize, usize, usize, usize);

const SHAPES: [Case; 9] = [
    (1, 3, 7, 9, 5, 3, 3, 0),
    (3, 3, 7, 9, 5, 3, 3, 1),
    (3, 5, 6, 5, 2, 3, 3, 1),
    (1, 8, 11, 13, 16, 3, 3, 1),
    (3, 16, 9, 9, 7, 3, 3, 0),
    (3, 2, 8, 7, 3, 2, 3, 1),
    (1, 4, 5, 6, 3, 3, 2, 2),
    (3, 6, 9, 8, 4, 5, 5, 2),
    (3, 9, 3, 3, 4, 3, 3, 0),
];

pub(super) fn geom((n, c, h, w, o, kh, kw, pad): Case) -> Geom {
    Geom {
        n,
        c,
        h,
        w,
        o,
        kh,
        kw,
        stride: 1,
        pad,
        ho: h + 2 * pad + 1 - kh,
        wo: w + 2 * pad + 1 - kw,
    }
}

pub(super) fn uniform(rng: &mut ChaCha8Rng, len: usize) -> Vec<f64> {
    (0..len).map(|_| rng.random::<f64>() * 2.0 - 1.0).collect()
}

/// The weight gradient as its definition, one loop per index, summed in f64.
pub(super) fn direct_weight_grad<T: Elem>(x: &[T], dy: &[T], g: &Geom) -> Vec<f64> {
    let mut dw = vec![0.0; g.o * g.c * g.kh * g.kw];
    for o in 0..g.o {
        for c in 0..g.c {
            for i in 0..g.kh {
                for j in 0..g.kw {
                    let mut s = 0.0;
                    for n in 0..g.n {
                        for y in 0..g.ho {
                            for xo in 0..g.wo {
                                if let Some(at) = pixel(g, n, c, y, xo, i, j) {
                                    let dv = dy[((n * g.o + o) * g.ho + y) * g.wo + xo];
                                    s += x[at].to_f64() * dv.to_f64();
                                }
                            }
                        }
                    }
                    dw[((o * g.c + c) * g.kh + i) * g.kw + j] = s;
                }
            }
        }
    }
    dw
}

/// The input pixel under output (y, x) and tap (i, j) of channel plane `c` of image `n`, if it
/// is not padding.
fn pixel(g: &Geom, n: usize, c: usize, y: usize, x: usize, i: usize, j: usize) -> Option<usize> {
    let (ih, iw) = (y + i, x + j);
    if ih < g.pad || iw < g.pad || ih >= g.h + g.pad || iw >= g.w + g.pad {
        return None;
    }
    Some(((n * g.c + c) * g.h + ih - g.pad) * g.w + iw - g.pad)
}

/// The forward (with bias) as its definition, summed in f64.
pub(super) fn direct_forward<T: Elem>(x: &[T], w: &[T], b: &[T], g: &Geom) -> Vec<f64> {
    let mut out = vec![0.0; g.n * g.o * g.hw_out()];
    for n in 0..g.n {
        for o in 0..g.o {
            for y in 0..g.ho {
                for xo in 0..g.wo {
                    let mut s = b[o].to_f64();
                    for c in 0..g.c {
                        for i in 0..g.kh {
                            for j in 0..g.kw {
                                if let Some(at) = pixel(g, n, c, y, xo, i, j) {
                                    let wv = w[((o * g.c + c) * g.kh + i) * g.kw + j];
                                    s += x[at].to_f64() * wv.to_f64();
                                }
                            }
                        }
                    }
                    out[((n * g.o + o) * g.ho + y) * g.wo + xo] = s;
                }
            }
        }
    }
    out
}

/// The input gradient as the adjoint of the forward's definition, summed in f64.
pub(super) fn direct_input_grad<T: Elem>(dy: &[T], w: &[T], g: &Geom) -> Vec<f64> {
    let mut dx = vec![0.0; g.n * g.c * g.hw_in()];
    for n in 0..g.n {
        for o in 0..g.o {
            for y in 0..g.ho {
                for xo in 0..g.wo {
                    let d = dy[((n * g.o + o) * g.ho + y) * g.wo + xo].to_f64();
                    for c in 0..g.c {
                        for i in 0..g.kh {
                            for j in 0..g.kw {
                                if let Some(at) = pixel(g, n, c, y, xo, i, j) {
                                    let wv = w[((o * g.c + c) * g.kh + i) * g.kw + j];
                                    dx[at] += d * wv.to_f64();
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    dx
}

/// Largest |a − b| relative to the largest |b|.
pub(super) fn rel_err<T: Elem>(a: &[T], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    let err = a
        .iter()
        .zip(b)
        .fold(0.0f64, |m, (x, y)| m.max((x.to_f64() - y).abs()));
    err / scale
}

#[test]
fn weight_gradient_equals_im2col_and_the_direct_loops() {
    let mut rng = ChaCha8Rng::seed_from_u64(18);
    for shape in SHAPES {
        let g = geom(shape);
        let x = uniform(&mut rng, g.n * g.c * g.hw_in());
        let dy = uniform(&mut rng, g.n * g.o * g.hw_out());
        let direct = direct_weight_grad(&x, &dy, &g);
        let ours = conv_shifted::weight_grad(&x, &dy, &g);
        let im2col: Vec<f64> = conv_weight_grad_im2col(&x, &dy, &g);
        agrees(&ours, &direct, &im2col, 1e-12, &format!("{shape:?}"));

        let (x32, dy32) = (to_f32(&x), to_f32(&dy));
        let direct32 = direct_weight_grad(&x32, &dy32, &g);
        let ours32 = conv_shifted::weight_grad(&x32, &dy32, &g);
        let im2col32 = to_f64(&conv_weight_grad_im2col(&x32, &dy32, &g));
        agrees(
            &ours32,
            &direct32,
            &im2col32,
            1e-5,
            &format!("{shape:?} f32"),
        );
    }
}

/// `ours` within `tol` (relative) of the direct loops and of the im2col (or col2im) kernel.
pub(super) fn agrees<T: Elem>(ours: &[T], direct: &[f64], reference: &[f64], tol: f64, what: &str) {
    assert!(rel_err(ours, direct) < tol, "{what} vs direct");
    assert!(rel_err(ours, reference) < tol, "{what} vs im2col");
}

pub(super) fn to_f32(v: &[f64]) -> Vec<f32> {
    v.iter().map(|&v| v as f32).collect()
}

pub(super) fn to_f64(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&v| f64::from(v)).collect()
}

#[test]
fn forward_equals_im2col_and_the_direct_loops() {
    let mut rng = ChaCha8Rng::seed_from_u64(20);
    for shape in SHAPES {
        let g = geom(shape);
        let x = uniform(&mut rng, g.n * g.c * g.hw_in());
        let w = uniform(&mut rng, g.o * g.c * g.kh * g.kw);
        let b = uniform(&mut rng, g.o);
        let direct = direct_forward(&x, &w, &b, &g);
        let ours = conv_shifted::forward(&x, &w, Some(&b), &g);
        let im2col = conv_fwd_im2col(&x, &w, Some(&b), &g);
        agrees(&ours, &direct, &im2col, 1e-12, &format!("{shape:?}"));
        let unbiased = conv_shifted::forward(&x, &w, None, &g);
        let im2col = conv_fwd_im2col(&x, &w, None, &g);
        assert!(
            rel_err(&unbiased, &im2col) < 1e-12,
            "{shape:?} without bias"
        );

        let (x32, w32, b32) = (to_f32(&x), to_f32(&w), to_f32(&b));
        let direct32 = direct_forward(&x32, &w32, &b32, &g);
        let ours32 = conv_shifted::forward(&x32, &w32, Some(&b32), &g);
        let im2col32 = to_f64(&conv_fwd_im2col(&x32, &w32, Some(&b32), &g));
        agrees(
            &ours32,
            &direct32,
            &im2col32,
            1e-5,
            &format!("{shape:?} f32"),
        );
    }
}

#[test]
fn input_gradient_equals_col2im_and_the_direct_loops() {
    let mut rng = ChaCha8Rng::seed_from_u64(21);
    for shape in SHAPES {
        let g = geom(shape);
        let dy = uniform(&mut rng, g.n * g.o * g.hw_out());
        let w = uniform(&mut rng, g.o * g.c * g.kh * g.kw);
        let direct = direct_input_grad(&dy, &w, &g);
        let ours = conv_shifted::input_grad(&dy, &w, &g);
        let col2im = conv_input_grad_col2im(&dy, &w, &g);
        agrees(&ours, &direct, &col2im, 1e-12, &format!("{shape:?}"));

        let (dy32, w32) = (to_f32(&dy), to_f32(&w));
        let direct32 = direct_input_grad(&dy32, &w32, &g);
        let ours32 = conv_shifted::input_grad(&dy32, &w32, &g);
        let col2im32 = to_f64(&conv_input_grad_col2im(&dy32, &w32, &g));
        agrees(
            &ours32,
            &direct32,
            &col2im32,
            1e-5,
            &format!("{shape:?} f32"),
        );
    }
}

#[test]
fn two_threads_give_reproducible_results_close_to_one_thread() {
    let mut rng = ChaCha8Rng::seed_from_u64(19);
    // A batch of 1 (threads inside gemm) and of 3 (threads over the images).
    for n in [1, 3] {
        let g = geom((n, 16, 9, 9, 7, 3, 3, 1));
        assert!(conv_shifted::applies(&g), "the dispatch takes this shape");
        let x = uniform(&mut rng, g.n * g.c * g.hw_in());
        let w = uniform(&mut rng, g.o * g.c * g.kh * g.kw);
        let dy = uniform(&mut rng, g.n * g.o * g.hw_out());
        let on = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            pool.install(|| {
                (
                    conv_shifted::forward(&x, &w, None, &g),
                    conv_shifted::input_grad(&dy, &w, &g),
                    conv_shifted::weight_grad(&x, &dy, &g),
                )
            })
        };
        let one = on(1);
        let (two, again) = (on(2), on(2));
        assert_eq!(two, again, "two threads give the same bits twice");
        // Each image's forward and input gradient run on one thread (or split over output
        // tiles inside gemm): the same bits on any thread count.
        assert_eq!((&two.0, &two.1), (&one.0, &one.1));
        // The weight gradient sums one chunk of images per thread, then the chunks.
        assert!(rel_err(&two.2, &one.2) < 1e-12);
    }
}
