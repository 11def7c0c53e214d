//! Stride-1 convolutions as implicit gemms over shifted views of the padded image, without
//! im2col.
//!
//! Keep an image padded to C × Hp × Wp (Wp = W + 2p) and index the output over the "extended"
//! positions q = y·Wp + x (x < Wp; the columns x ≥ WO are junk). The input a kernel tap
//! (kh, kw) sees is then `Xs[c, q] = Xp[c·Hp·Wp + q + kh·Wp + kw]`: stride 1 in q and Hp·Wp in
//! c, a strided matrix that `gemm` reads in place. Each kernel is one gemm per image and tap:
//! - forward: `Ye (O×Qe) += W_tap (O×C) · Xs_tap`, then the junk columns are dropped;
//! - weight gradient: `dW_tap (O×C) += dYe · Xs_tapᵀ`, with `dYe` zero in the junk columns;
//! - input gradient: `dXp[c, q + kh·Wp + kw] += (W_tapᵀ · dYe)[c, q]`, then the border is cut.
//!
//! No 9× column matrix is written and then packed again by gemm (im2col was ~24% of a
//! SimpleCNN step's samples).
//!
//! The junk columns multiply real pixels by zero: a NaN or ±∞ pixel turns into NaN in outputs
//! whose im2col sum would not have seen it. Finite inputs give the same sums as im2col up to
//! rounding.

use rayon::prelude::*;

use super::conv_cpu::{gemm_strided, split, sum_over_chunks, Elem, Geom};

/// Whether the kernels here serve `g`: stride 1, a kernel larger than 1×1 and at least 8 input
/// channels. With C = 3 (SimpleCNN's first layer) each tap's forward gemm is 3 deep and ran
/// slower than im2col (7.2 against 5.0 ms of CPU time for the batch of 128, one thread of an
/// Intel Xeon), its gradients no faster.
pub(super) fn applies(g: &Geom) -> bool {
    g.stride == 1 && g.kh * g.kw > 1 && g.c >= 8 && g.ho > 0 && g.wo > 0
}

/// Whether the weight gradient takes the shifted views: [`applies`], with at least
/// [`MIN_WEIGHT_GRAD_POSITIONS`] extended output positions Qe per image. Each of its gemms sums
/// one image's Qe positions into its tap's whole O×C block, so on small images it spends its
/// time reading and writing that block; im2col puts images side by side and sums ≥ 512 pixels
/// per gemm. Per layer, batch 128, f32, one thread of an Intel Xeon (AVX-512), ms of CPU time,
/// medians of 5, two alternated runs, shifted views / im2col: 512→512 4×4 (Qe = 22) 142-154 /
/// 117-118; 256→256 8×8 (Qe = 78) 91-93 / 104-118; 128→128 16×16 78 / 115; 64→64 15×15 pad 0
/// (Qe = 193) 15 / 21-22. The threshold lies between the two measured small sizes.
pub(super) fn applies_weight_grad(g: &Geom) -> bool {
    applies(g) && Planes::of(g).qe >= MIN_WEIGHT_GRAD_POSITIONS
}

/// See [`applies_weight_grad`].
const MIN_WEIGHT_GRAD_POSITIONS: usize = 48;

/// Padded plane geometry: Hp, Wp, and Qe = (HO − 1)·Wp + WO extended output positions (the
/// last row's junk is cut, so that the last tap of the last channel reads the plane's last
/// element and nothing past it).
struct Planes {
    hp: usize,
    wp: usize,
    qe: usize,
}

impl Planes {
    fn of(g: &Geom) -> Self {
        let (hp, wp) = (g.h + 2 * g.pad, g.w + 2 * g.pad);
        Planes {
            hp,
            wp,
            qe: (g.ho - 1) * wp + g.wo,
        }
    }
    fn plane(&self) -> usize {
        self.hp * self.wp
    }
}

/// Copies one image (C×H×W) into the interior of `xp` (C×Hp×Wp), whose border stays as it is
/// (zero, written once when the buffer was made).
fn pad_into<T: Elem>(x: &[T], g: &Geom, pl: &Planes, xp: &mut [T]) {
    for (src, dst) in x
        .chunks_exact(g.hw_in())
        .zip(xp.chunks_exact_mut(pl.plane()))
    {
        for (i, row) in src.chunks_exact(g.w).enumerate() {
            let at = (i + g.pad) * pl.wp + g.pad;
            dst[at..at + g.w].copy_from_slice(row);
        }
    }
}

/// Writes `dy` of one image (O×HO×WO) into `dyt` (Qe × O, row q = y·Wp + x), whose junk rows
/// (x ≥ WO) stay zero.
fn transpose_into<T: Elem>(dy: &[T], g: &Geom, pl: &Planes, dyt: &mut [T]) {
    for y in 0..g.ho {
        for x in 0..g.wo {
            let row = &mut dyt[(y * pl.wp + x) * g.o..(y * pl.wp + x + 1) * g.o];
            let at = y * g.wo + x;
            for (o, d) in row.iter_mut().enumerate() {
                *d = dy[o * g.hw_out() + at];
            }
        }
    }
}

/// Weight gradient, O×C×KH×KW, for the shapes [`applies`] accepts: per image and tap
/// `dW_tap (O×C) += dYe (O×Qe) · Xs_tapᵀ (Qe×C)`, with `dYe` stored transposed (Qe×O, so that
/// gemm reads it as it stands) and `dW_tap` column-major.
///
/// As the im2col kernel, the batch is cut into one fixed chunk per thread and the partial sums
/// are added in chunk order, so the result is bitwise reproducible for a given thread count.
pub(super) fn weight_grad<T: Elem>(x: &[T], dy: &[T], g: &Geom) -> Vec<T> {
    let pl = Planes::of(g);
    let (k2, img_in, img_out) = (g.kh * g.kw, g.c * g.hw_in(), g.o * g.hw_out());
    let (parallel, par) = split(g.n);
    // Per chunk: dW stored tap-major, [kh][kw][c][o].
    let partial = |range: std::ops::Range<usize>| {
        let mut dwt = vec![T::ZERO; k2 * g.c * g.o];
        let mut xp = vec![T::ZERO; if g.pad == 0 { 0 } else { g.c * pl.plane() }];
        let mut dyt = vec![T::ZERO; pl.qe * g.o];
        for (i, n) in range.enumerate() {
            let xn = &x[n * img_in..(n + 1) * img_in];
            let xs: &[T] = if g.pad == 0 {
                xn
            } else {
                pad_into(xn, g, &pl, &mut xp);
                &xp
            };
            transpose_into(&dy[n * img_out..(n + 1) * img_out], g, &pl, &mut dyt);
            for tap in 0..k2 {
                let off = (tap / g.kw) * pl.wp + tap % g.kw;
                // SAFETY: dst is the exclusive O×C block `tap` of `dwt` (column-major, columns
                // O apart); lhs is `dyt`, Qe×O read as O×Qe; rhs reads `xs[off + c·plane + q]`
                // for q < Qe, c < C, whose largest index (C−1)·plane + (KH−1)·Wp + KW−1 +
                // (HO−1)·Wp + WO−1 = C·plane − 1 lies inside the image's (padded) planes.
                unsafe {
                    gemm_strided(
                        (g.o, g.c, pl.qe),
                        (dwt[tap * g.c * g.o..].as_mut_ptr(), 1, g.o),
                        (dyt.as_ptr(), 1, g.o),
                        (xs.as_ptr().add(off), 1, pl.plane()),
                        i > 0,
                        par,
                    )
                }
            }
        }
        dwt
    };
    let sum = sum_over_chunks(g.n, parallel, partial);
    // [tap][c][o] → [o][c][tap]; an empty chunk (more threads than images) added zeros.
    let mut dw = vec![T::ZERO; g.o * g.c * k2];
    for tap in 0..k2 {
        for c in 0..g.c {
            for o in 0..g.o {
                dw[(o * g.c + c) * k2 + tap] = sum[(tap * g.c + c) * g.o + o];
            }
        }
    }
    dw
}

/// Extended output positions rounded up to whole SIMD vectors of f32 (and so of f64): gemm
/// then reads the shifted view in place instead of packing it. The padded buffers carry
/// [`SLACK`] zeros past the last plane for the rounded tail.
pub(super) fn rounded(qe: usize) -> usize {
    qe.next_multiple_of(SLACK)
}

const SLACK: usize = 16;

/// `w` (O×C×KH×KW) regrouped by tap: `[tap][o][c]`, or `[tap][c][o]` with `c_major`.
fn by_tap<T: Elem>(w: &[T], g: &Geom, c_major: bool) -> Vec<T> {
    let k2 = g.kh * g.kw;
    let mut out = vec![T::ZERO; w.len()];
    for o in 0..g.o {
        for c in 0..g.c {
            for tap in 0..k2 {
                let at = if c_major {
                    (tap * g.c + c) * g.o + o
                } else {
                    (tap * g.o + o) * g.c + c
                };
                out[at] = w[(o * g.c + c) * k2 + tap];
            }
        }
    }
    out
}

/// Runs `one(scratch, image, chunk)` over the per-image chunks of `out`, in parallel where the
/// images cover the threads.
pub(super) fn per_image<T: Elem, S>(
    out: &mut [T],
    len: usize,
    parallel: bool,
    init: impl Fn() -> S + Send + Sync,
    one: impl Fn(&mut S, usize, &mut [T]) + Send + Sync,
) {
    if parallel {
        out.par_chunks_mut(len)
            .enumerate()
            .for_each_init(init, |s, (n, chunk)| one(s, n, chunk));
    } else {
        let mut s = init();
        for (n, chunk) in out.chunks_mut(len).enumerate() {
            one(&mut s, n, chunk);
        }
    }
}

/// Forward, N×O×HO×WO, for the shapes [`applies`] accepts: per image and tap
/// `Ye (O×Qe) += W_tap (O×C) · Xs_tap (C×Qe)`, with the bias written into `Ye` first.
pub(super) fn forward<T: Elem>(x: &[T], w: &[T], bias: Option<&[T]>, g: &Geom) -> Vec<T> {
    let pl = Planes::of(g);
    let qr = rounded(pl.qe);
    let (img_in, img_out) = (g.c * g.hw_in(), g.o * g.hw_out());
    let wt = by_tap(w, g, false);
    let mut y = vec![T::ZERO; g.n * img_out];
    let (parallel, par) = split(g.n);
    let init = || {
        (
            vec![T::ZERO; g.c * pl.plane() + SLACK],
            vec![T::ZERO; g.o * qr],
        )
    };
    let one = |(xp, ye): &mut (Vec<T>, Vec<T>), n: usize, yn: &mut [T]| {
        pad_into(&x[n * img_in..(n + 1) * img_in], g, &pl, xp);
        if let Some(bias) = bias {
            for (row, &b) in ye.chunks_exact_mut(qr).zip(bias) {
                row.fill(b);
            }
        }
        for tap in 0..g.kh * g.kw {
            let off = (tap / g.kw) * pl.wp + tap % g.kw;
            // SAFETY: dst is `ye`, O×Qr row-major and exclusive; lhs is the O×C block `tap` of
            // `wt`; rhs reads `xp[off + c·plane + q]` for c < C, q < Qr, at most
            // C·plane − 1 + (Qr − Qe) < C·plane + SLACK = xp.len().
            unsafe {
                gemm_strided(
                    (g.o, qr, g.c),
                    (ye.as_mut_ptr(), qr, 1),
                    (wt[tap * g.o * g.c..].as_ptr(), g.c, 1),
                    (xp.as_ptr().add(off), pl.plane(), 1),
                    tap > 0 || bias.is_some(),
                    par,
                )
            }
        }
        for (plane, row) in yn.chunks_exact_mut(g.hw_out()).zip(ye.chunks_exact(qr)) {
            for (yrow, y) in plane.chunks_exact_mut(g.wo).enumerate() {
                y.copy_from_slice(&row[yrow * pl.wp..yrow * pl.wp + g.wo]);
            }
        }
    };
    per_image(&mut y, img_out, parallel, init, one);
    y
}

/// Input gradient, N×C×H×W, for the shapes [`applies`] accepts: per image and tap
/// `dXp[c, q + kh·Wp + kw] += (W_tapᵀ (C×O) · dYe (O×Qe))[c, q]`, then the border is cut.
pub(super) fn input_grad<T: Elem>(dy: &[T], w: &[T], g: &Geom) -> Vec<T> {
    let pl = Planes::of(g);
    // Each tap's destination rows (c·plane + off + [0, q)) must not overlap one another.
    let qr = if rounded(pl.qe) <= pl.plane() {
        rounded(pl.qe)
    } else {
        pl.qe
    };
    let (img_in, img_out) = (g.c * g.hw_in(), g.o * g.hw_out());
    let wt = by_tap(w, g, true);
    let mut dx = vec![T::ZERO; g.n * img_in];
    let (parallel, par) = split(g.n);
    // `dye`'s junk columns are zero once and stay so; `dxp` is cleared per image.
    let init = || {
        (
            vec![T::ZERO; g.o * qr],
            vec![T::ZERO; g.c * pl.plane() + SLACK],
        )
    };
    let one = |(dye, dxp): &mut (Vec<T>, Vec<T>), n: usize, dxn: &mut [T]| {
        let dyn_ = &dy[n * img_out..(n + 1) * img_out];
        for (row, plane) in dye.chunks_exact_mut(qr).zip(dyn_.chunks_exact(g.hw_out())) {
            for (yrow, src) in plane.chunks_exact(g.wo).enumerate() {
                row[yrow * pl.wp..yrow * pl.wp + g.wo].copy_from_slice(src);
            }
        }
        dxp.fill(T::ZERO);
        for tap in 0..g.kh * g.kw {
            let off = (tap / g.kw) * pl.wp + tap % g.kw;
            // SAFETY: dst writes `dxp[off + c·plane + q]` for c < C, q < Qr: rows that do not
            // overlap (Qr ≤ plane) and end before C·plane + SLACK = dxp.len(), exclusive; lhs is
            // the C×O block `tap` of `wt`; rhs is `dye`, O×Qr row-major.
            unsafe {
                gemm_strided(
                    (g.c, qr, g.o),
                    (dxp.as_mut_ptr().add(off), pl.plane(), 1),
                    (wt[tap * g.o * g.c..].as_ptr(), g.o, 1),
                    (dye.as_ptr(), qr, 1),
                    true,
                    par,
                )
            }
        }
        for (src, dst) in dxp
            .chunks_exact(pl.plane())
            .zip(dxn.chunks_exact_mut(g.hw_in()))
        {
            for (i, row) in dst.chunks_exact_mut(g.w).enumerate() {
                let at = (i + g.pad) * pl.wp + g.pad;
                row.copy_from_slice(&src[at..at + g.w]);
            }
        }
    };
    per_image(&mut dx, img_in, parallel, init, one);
    dx
}
