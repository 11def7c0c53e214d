//! Winograd F(2×2, 3×3) for stride-1 3×3 convolutions: 16 multiplies per 2×2 output tile and
//! channel pair instead of 36 (Lavin & Gray, "Fast Algorithms for Convolutional Neural
//! Networks", 2016).
//!
//! Each 4×4 input tile d (stride 2 over the padded image) becomes `V = Bᵀ d B`, each 3×3 kernel
//! `U = G g Gᵀ`; for each of the 16 positions ξ of the transformed tile, one gemm
//! `M_ξ (O × T) = U_ξ (O×C) · V_ξ (C × T)` over the T tiles of a block of whole images; each
//! 2×2 output tile is `Aᵀ M A`. The transforms only add and subtract (G's halves are exact in
//! binary), so f64 results equal the direct sum up to rounding; in f32 the largest error seen in
//! the tests is ~2.5e-7 of the largest output (`conv_winograd_tests.rs`).
//!
//! Used (`conv_cpu.rs`'s dispatch, see [`applies`]) for the forward and the input gradient of
//! 3×3 stride-1 layers with at least 128 input and output channels: ResNet-18's and WRN's deep
//! stages. The input gradient is the forward of `dy` padded by 2 − p with the kernel flipped and
//! its channels swapped. Where C or O is 64 or less (all of SimpleCNN's layers) the transforms,
//! which run on short rows (TW = 4-16 tiles) without wide SIMD, cost more than the multiplies
//! saved, and the shifted views of `conv_shifted.rs` stay faster.
//!
//! Blocks are fixed by the shapes, not by the thread count: the result has the same bits on any
//! number of threads.

use super::conv_cpu::{gemm_strided, split, Elem, Geom};
use super::conv_shifted::{per_image, rounded};

/// Tiles a block of images should have at least (a block is whole images): the gemms are
/// (O × T) · … with T tiles, and `V_ξ` (C × T) should stay in L1.
const TARGET_TILES: usize = 128;

/// Whether `g` is a stride-1 3×3 convolution with a padding of at most 2 (so that its input
/// gradient is one, too).
pub(super) fn fits(g: &Geom) -> bool {
    g.stride == 1 && g.kh == 3 && g.kw == 3 && g.pad <= 2 && g.ho > 0 && g.wo > 0
}

/// Whether the dispatch takes `g` here: [`fits`], with at least 128 input and output channels.
/// Per layer, batch 128, f32, one thread of an Intel Xeon (AVX-512), ms of CPU time, medians of
/// 5 alternated runs, shifted views → Winograd, forward / input gradient: 128→128 16×16
/// 117 → 100 / 114 → 98; 256→256 8×8 136 → 95 / 139 → 94; 512→512 4×4 173 → 89 / 183 → 92;
/// 128→256 8×8 49 → 37 / 52 → 39; but 64→128 16×16 50 → 45 / 51 → 55, 64→64 32×32 99 → 101 /
/// 99 → 104, SimpleCNN's 32→64 and 64→64 15×15 11-17 → 15-25 (transform-bound).
pub(super) fn applies(g: &Geom) -> bool {
    fits(g) && g.c >= 128 && g.o >= 128
}

/// `U = G g Gᵀ` of every kernel, stored `[ξ][o][c]` (ξ = 4i + j).
fn kernel_transform<T: Elem>(w: &[T], g: &Geom) -> Vec<T> {
    let (oc, h) = (g.o * g.c, T::HALF);
    let mut u = vec![T::ZERO; 16 * oc];
    for (k, gk) in w.chunks_exact(9).enumerate() {
        // G g: rows g0, (g0 + g1 + g2)/2, (g0 − g1 + g2)/2, g2 of the 3×3 kernel's rows.
        let mut gg = [[T::ZERO; 3]; 4];
        for col in 0..3 {
            let (a, b, c) = (gk[col], gk[3 + col], gk[6 + col]);
            gg[0][col] = a;
            gg[1][col] = (a + b + c) * h;
            gg[2][col] = (a - b + c) * h;
            gg[3][col] = c;
        }
        for (i, row) in gg.iter().enumerate() {
            let [a, b, c] = *row;
            let t = [a, (a + b + c) * h, (a - b + c) * h, c];
            for (j, &v) in t.iter().enumerate() {
                u[(4 * i + j) * oc + k] = v;
            }
        }
    }
    u
}

/// Tile grid of one image: ⌈HO/2⌉ × ⌈WO/2⌉ tiles, and the zero-padded plane (2·TH + 2) ×
/// (2·TW + 2) the 4×4 tiles read.
struct Tiles {
    th: usize,
    tw: usize,
    hz: usize,
    wz: usize,
}

impl Tiles {
    fn of(g: &Geom) -> Self {
        let (th, tw) = (g.ho.div_ceil(2), g.wo.div_ceil(2));
        Tiles {
            th,
            tw,
            hz: 2 * th + 2,
            wz: 2 * tw + 2,
        }
    }
    fn per_image(&self) -> usize {
        self.th * self.tw
    }
}

/// Whole images per block: as many as make [`TARGET_TILES`] tiles, at least 1, at most N.
fn images_per_block(g: &Geom) -> usize {
    (TARGET_TILES / Tiles::of(g).per_image()).clamp(1, g.n.max(1))
}

/// Per-thread scratch: the padded plane split into even and odd columns, rows of `Bᵀ d` (or
/// of `M A`), `V` ([16][C][t]) and `M` ([16][O][t]).
struct Scratch<T> {
    z: Vec<T>,
    rows: Vec<T>,
    v: Vec<T>,
    m: Vec<T>,
}

/// `V = Bᵀ d B` of every tile of one channel plane `src` (h × w), written to
/// `v[ξ·stride + at + ty·TW + tx]`. `z` holds the plane padded by `pad`, its even columns then
/// its odd ones (each `TW + 1` wide; the border stays zero), so that the transform runs along
/// contiguous rows.
fn input_transform<T: Elem>(
    src: &[T],
    (h, w, pad): (usize, usize, usize),
    tl: &Tiles,
    (z, rows): (&mut [T], &mut [T]),
    (v, stride, at): (&mut [T], usize, usize),
) {
    let (tw, half) = (tl.tw, tl.tw + 1);
    let (ze, zo) = z.split_at_mut(tl.hz * half);
    for (i, line) in src.chunks_exact(w).enumerate().take(h) {
        let r = (i + pad) * half;
        for (x, &p) in line.iter().enumerate() {
            let col = x + pad;
            if col % 2 == 0 {
                ze[r + col / 2] = p;
            } else {
                zo[r + col / 2] = p;
            }
        }
    }
    let (e, o) = rows[..8 * half].split_at_mut(4 * half);
    for ty in 0..tl.th {
        // Bᵀ d on the even and on the odd columns: rows d0 − d2, d1 + d2, d2 − d1, d1 − d3.
        for (z, t) in [(&*ze, &mut *e), (&*zo, &mut *o)] {
            let r = |k: usize| &z[(2 * ty + k) * half..(2 * ty + k + 1) * half];
            let (r0, r1, r2, r3) = (r(0), r(1), r(2), r(3));
            let (t0, rest) = t.split_at_mut(half);
            let (t1, rest) = rest.split_at_mut(half);
            let (t2, t3) = rest.split_at_mut(half);
            for k in 0..half {
                t0[k] = r0[k] - r2[k];
                t1[k] = r1[k] + r2[k];
                t2[k] = r2[k] - r1[k];
                t3[k] = r1[k] - r3[k];
            }
        }
        // (Bᵀ d) B along each row: x0 − x2, x1 + x2, x2 − x1, x1 − x3 with x0 = e[tx],
        // x1 = o[tx], x2 = e[tx + 1], x3 = o[tx + 1].
        for i in 0..4 {
            let (e0, e1) = (
                &e[i * half..i * half + tw],
                &e[i * half + 1..i * half + half],
            );
            let (o0, o1) = (
                &o[i * half..i * half + tw],
                &o[i * half + 1..i * half + half],
            );
            let base = at + ty * tw;
            let out = |j: usize| (4 * i + j) * stride + base..(4 * i + j) * stride + base + tw;
            let v0 = &mut v[out(0)];
            for k in 0..tw {
                v0[k] = e0[k] - e1[k];
            }
            let v1 = &mut v[out(1)];
            for k in 0..tw {
                v1[k] = o0[k] + e1[k];
            }
            let v2 = &mut v[out(2)];
            for k in 0..tw {
                v2[k] = e1[k] - o0[k];
            }
            let v3 = &mut v[out(3)];
            for k in 0..tw {
                v3[k] = o0[k] - o1[k];
            }
        }
    }
}

/// `Aᵀ M A + bias` of every tile of one output channel, written into `out` (HO × WO): `m` holds
/// the 16 matrices M_ξ, `stride` apart, and this channel's row of this image's tiles starts at
/// `at` in each.
fn output_transform<T: Elem>(
    (m, stride, at): (&[T], usize, usize),
    g: &Geom,
    tl: &Tiles,
    bias: T,
    rows: &mut [T],
    out: &mut [T],
) {
    let tw = tl.tw;
    let (s, y) = rows[..12 * tw].split_at_mut(8 * tw);
    let (y0, y1) = y.split_at_mut(2 * tw);
    for ty in 0..tl.th {
        let row = |xi: usize| &m[xi * stride + at + ty * tw..xi * stride + at + (ty + 1) * tw];
        // M A along each row i: m0 + m1 + m2 and m1 − m2 − m3, as rows s[2i], s[2i + 1].
        for i in 0..4 {
            let (a, b, c, d) = (row(4 * i), row(4 * i + 1), row(4 * i + 2), row(4 * i + 3));
            let (s0, s1) = s[2 * i * tw..(2 * i + 2) * tw].split_at_mut(tw);
            for k in 0..tw {
                s0[k] = a[k] + b[k] + c[k];
                s1[k] = b[k] - c[k] - d[k];
            }
        }
        // Aᵀ (M A): output rows 2·ty and 2·ty + 1, columns 2·tx (from s[2i]) and 2·tx + 1
        // (from s[2i + 1]) interleaved.
        let q = |r: usize| &s[r * tw..(r + 1) * tw];
        for (col, (a0, a1, a2, a3)) in
            [(0, (q(0), q(2), q(4), q(6))), (1, (q(1), q(3), q(5), q(7)))]
        {
            for k in 0..tw {
                y0[2 * k + col] = a0[k] + a1[k] + a2[k] + bias;
                y1[2 * k + col] = a1[k] - a2[k] - a3[k] + bias;
            }
        }
        for (a, y) in [(0, &*y0), (1, &*y1)] {
            let r = 2 * ty + a;
            if r < g.ho {
                out[r * g.wo..(r + 1) * g.wo].copy_from_slice(&y[..g.wo]);
            }
        }
    }
}

/// Forward, N×O×HO×WO, for the shapes [`fits`] accepts, in blocks of whole images.
pub(super) fn forward<T: Elem>(x: &[T], w: &[T], bias: Option<&[T]>, g: &Geom) -> Vec<T> {
    forward_in_blocks(x, w, bias, g, images_per_block(g))
}

/// [`forward`] in blocks of `b` images.
pub(super) fn forward_in_blocks<T: Elem>(
    x: &[T],
    w: &[T],
    bias: Option<&[T]>,
    g: &Geom,
    b: usize,
) -> Vec<T> {
    assert!(b >= 1, "a block holds at least one image");
    let tl = Tiles::of(g);
    let tr = rounded(b * tl.per_image());
    let (img_in, img_out) = (g.c * g.hw_in(), g.o * g.hw_out());
    let u = kernel_transform(w, g);
    let mut y = vec![T::ZERO; g.n * img_out];
    let (parallel, par) = split(g.n.div_ceil(b));
    let init = || Scratch {
        z: vec![T::ZERO; tl.hz * tl.wz],
        rows: vec![T::ZERO; 12 * tl.tw + 8],
        v: vec![T::ZERO; 16 * g.c * tr],
        m: vec![T::ZERO; 16 * g.o * tr],
    };
    let one = |s: &mut Scratch<T>, blk: usize, yb: &mut [T]| {
        let (i0, len) = (blk * b, yb.len() / img_out);
        let t = rounded(len * tl.per_image());
        for j in 0..len {
            let xn = &x[(i0 + j) * img_in..(i0 + j + 1) * img_in];
            for (c, plane) in xn.chunks_exact(g.hw_in()).enumerate() {
                input_transform(
                    plane,
                    (g.h, g.w, g.pad),
                    &tl,
                    (&mut s.z, &mut s.rows),
                    (&mut s.v, g.c * t, c * t + j * tl.per_image()),
                );
            }
        }
        for xi in 0..16 {
            // SAFETY: dst is M_ξ, O×t row-major inside `s.m` and exclusive; lhs is U_ξ (O×C,
            // row-major); rhs is V_ξ (C×t, row-major) inside `s.v`.
            unsafe {
                gemm_strided(
                    (g.o, t, g.c),
                    (s.m[xi * g.o * t..].as_mut_ptr(), t, 1),
                    (u[xi * g.o * g.c..].as_ptr(), g.c, 1),
                    (s.v[xi * g.c * t..].as_ptr(), t, 1),
                    false,
                    par,
                )
            }
        }
        for (j, yn) in yb.chunks_exact_mut(img_out).enumerate() {
            for (o, plane) in yn.chunks_exact_mut(g.hw_out()).enumerate() {
                let at = o * t + j * tl.per_image();
                let bo = bias.map_or(T::ZERO, |b| b[o]);
                output_transform((&s.m, g.o * t, at), g, &tl, bo, &mut s.rows, plane);
            }
        }
    };
    per_image(&mut y, b * img_out, parallel, init, one);
    y
}

/// Input gradient, N×C×H×W, for the shapes [`fits`] accepts: the [`forward`] of `dy` padded by
/// 2 − p with the kernel flipped and its channels swapped.
pub(super) fn input_grad<T: Elem>(dy: &[T], w: &[T], g: &Geom) -> Vec<T> {
    input_grad_in_blocks(dy, w, g, None)
}

/// [`input_grad`] in blocks of `b` images (by default as many as [`forward`] would take).
pub(super) fn input_grad_in_blocks<T: Elem>(
    dy: &[T],
    w: &[T],
    g: &Geom,
    b: Option<usize>,
) -> Vec<T> {
    let mut wf = vec![T::ZERO; w.len()];
    for o in 0..g.o {
        for c in 0..g.c {
            for k in 0..9 {
                wf[(c * g.o + o) * 9 + k] = w[(o * g.c + c) * 9 + 8 - k];
            }
        }
    }
    let gt = Geom {
        c: g.o,
        h: g.ho,
        w: g.wo,
        o: g.c,
        pad: 2 - g.pad,
        ho: g.h,
        wo: g.w,
        ..*g
    };
    let b = b.unwrap_or_else(|| images_per_block(&gt));
    forward_in_blocks(dy, &wf, None, &gt, b)
}
