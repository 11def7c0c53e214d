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
//! 3×3 stride-1 layers with at least 32 input and output channels: all of ResNet-18's and
//! SimpleCNN's, WRN's but the 16-channel ones. The input gradient is the forward of `dy` padded
//! by 2 − p with the kernel flipped and its channels swapped. The transforms run along
//! contiguous tiles, 16 at a time, compiled for AVX-512 and AVX2 besides the baseline (see
//! [`Simd`]); with 16 channels they still cost about what the multiplies save.
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

/// Whether the dispatch takes `g` here: [`fits`], with at least 32 input and output channels.
/// Per layer, batch 128, f32, one thread of an Intel(R) Xeon(R) Processor (AVX-512; 2 cores
/// shared with training sweeps, load 6-7), ms of process CPU time, medians of 5 rounds
/// alternating the variants in one process (`winograd_timing` in `conv_winograd_tests.rs`),
/// two runs, shifted views → Winograd, forward / input gradient:
///
/// | layer | forward | input gradient |
/// |---|---|---|
/// | 64→64 32×32 p1 (ResNet-18 stage 1, WRN) | 99.0, 105.0 → 79.9, 89.1 | 99.6, 97.4 → 74.9, 73.8 |
/// | 64→128 16×16 p1 | 55.4, 59.5 → 35.1, 38.4 | 56.3, 61.5 → 40.2, 44.9 |
/// | 128→128 16×16 p1 | 104.1, 120.3 → 65.6, 68.0 | 108.8, 102.1 → 67.1, 67.5 |
/// | 256→256 8×8 p1 | 137.4, 128.6 → 80.7, 71.1 | 143.7, 141.9 → 80.3, 64.4 |
/// | 512→512 4×4 p1 | 241.2, 153.8 → 98.2, 63.2 | 268.2, 170.6 → 109.2, 67.2 |
/// | SimpleCNN 32→32 32×32 p0 | 40.8, 25.5 → 34.8, 19.5 | 41.5, 25.9 → 37.3, 21.5 |
/// | SimpleCNN 32→64 15×15 p1 | 15.8, 11.2 → 16.3, 9.5 | 17.0, 11.4 → 20.2, 10.8 |
/// | SimpleCNN 64→64 15×15 p0 | 26.8, 19.4 → 24.1, 17.5 | 27.3, 20.2 → 26.1, 19.5 |
/// | WRN 16→64 32×32 p1 (not taken) | 40.7, 40.9 → 35.1, 38.6 | 25.4, 36.5 → 29.1, 32.8 |
///
/// SimpleCNN's 15×15 layers are close (the first run was the more loaded one; earlier runs
/// of the same code with an AVX-512 row split: 11.3 → 9.3 / 11.2 → 10.3 and 17.3 → 15.2 /
/// 18.0 → 16.6). WRN's 16-channel layer loses its input gradient in most runs. With C = 3
/// (SimpleCNN's first layer) each gemm would be 3 deep; it stays with im2col.
pub(super) fn applies(g: &Geom) -> bool {
    fits(g) && g.c >= 32 && g.o >= 32
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

/// Tiles one pass of the transforms handles: 16 f32 are one AVX-512 register.
const LANES: usize = 16;

/// Tile grid of one image: ⌈HO/2⌉ × ⌈WO/2⌉ tiles; a row of TW tiles is `chunks` passes of
/// [`LANES`] tiles.
struct Tiles {
    th: usize,
    tw: usize,
    chunks: usize,
}

impl Tiles {
    fn of(g: &Geom) -> Self {
        let (th, tw) = (g.ho.div_ceil(2), g.wo.div_ceil(2));
        Tiles {
            th,
            tw,
            chunks: tw.div_ceil(LANES),
        }
    }
    fn per_image(&self) -> usize {
        self.th * self.tw
    }
    /// Length of a padded row's even (or odd) columns, whole passes and one more: TW + 1 used.
    fn half(&self) -> usize {
        LANES * self.chunks + 1
    }
    /// Length of one scratch plane of tiles (TH + 1 rows of TW, plus room for the last row's
    /// whole pass).
    fn plane(&self) -> usize {
        (self.th + 1) * self.tw + LANES * self.chunks
    }
}

/// Whole images per block: as many as make [`TARGET_TILES`] tiles, at least 1, at most N.
fn images_per_block(g: &Geom) -> usize {
    (TARGET_TILES / Tiles::of(g).per_image()).clamp(1, g.n.max(1))
}

/// Per-thread scratch: the zero-padded input plane split into its even and its odd columns (the
/// borders stay zero), the planes of tiles between the transforms' two passes (8 for the input,
/// 4 for the output), `V` ([16][C][ts]) and `M` ([16][O][t]).
struct Scratch<T> {
    z: Vec<T>,
    planes: Vec<T>,
    v: Vec<T>,
    m: Vec<T>,
}

#[inline(always)]
fn load<T: Copy>(s: &[T], at: usize) -> [T; LANES] {
    s[at..at + LANES].try_into().unwrap()
}

#[inline(always)]
fn store<T: Copy>(s: &mut [T], at: usize, x: [T; LANES]) {
    s[at..at + LANES].copy_from_slice(&x);
}

#[inline(always)]
fn add<T: Elem>(mut a: [T; LANES], b: [T; LANES]) -> [T; LANES] {
    for (a, b) in a.iter_mut().zip(b) {
        *a += b;
    }
    a
}

#[inline(always)]
fn sub<T: Elem>(mut a: [T; LANES], b: [T; LANES]) -> [T; LANES] {
    for (a, b) in a.iter_mut().zip(b) {
        *a = *a - b;
    }
    a
}

/// Pairs one pass of [`split_avx2`] and [`merge_avx2`] moves.
const PAIRS: usize = 8;

/// `a[i] = line[2i]`, `b[i] = line[2i + 1]` for the whole passes of [`PAIRS`] pairs of
/// `line.len() / 2` where T is f32, with AVX2 shuffles (LLVM vectorizes the loop only from 32
/// pairs on, more than a row has, and its straight-line code moves one float at a time).
/// Returns the pairs done: none where T is not f32.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[inline]
fn split_avx2<T: Elem>(line: &[T], a: &mut [T], b: &mut [T]) -> usize {
    use std::arch::x86_64::{_mm256_loadu_ps, _mm256_permute2f128_ps};
    use std::arch::x86_64::{_mm256_permutevar8x32_ps, _mm256_setr_epi32, _mm256_storeu_ps};
    let pairs = (line.len() / 2).min(a.len()).min(b.len()) / PAIRS * PAIRS;
    if std::any::TypeId::of::<T>() != std::any::TypeId::of::<f32>() {
        return 0;
    }
    let (src, (pa, pb)) = (
        line.as_ptr().cast::<f32>(),
        (a.as_mut_ptr(), b.as_mut_ptr()),
    );
    // SAFETY: T is f32; the loads stay within the first 2·pairs floats of `line`, the stores
    // within the first `pairs` of `a` and `b`.
    unsafe {
        let idx = _mm256_setr_epi32(0, 2, 4, 6, 1, 3, 5, 7);
        for i in (0..pairs).step_by(PAIRS) {
            // [x0 x2 x4 x6 x1 x3 x5 x7] and the same of x8..x16, then their halves regrouped.
            let lo = _mm256_permutevar8x32_ps(_mm256_loadu_ps(src.add(2 * i)), idx);
            let hi = _mm256_permutevar8x32_ps(_mm256_loadu_ps(src.add(2 * i + PAIRS)), idx);
            let (pa, pb) = (pa.add(i).cast::<f32>(), pb.add(i).cast::<f32>());
            _mm256_storeu_ps(pa, _mm256_permute2f128_ps::<0x20>(lo, hi));
            _mm256_storeu_ps(pb, _mm256_permute2f128_ps::<0x31>(lo, hi));
        }
    }
    pairs
}

/// `line[2i] = a[i]`, `line[2i + 1] = b[i]` for the whole passes of [`PAIRS`] pairs of
/// `line.len() / 2` where T is f32 (the inverse of [`split_avx2`]). Returns the pairs done.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[inline]
fn merge_avx2<T: Elem>(a: &[T], b: &[T], line: &mut [T]) -> usize {
    use std::arch::x86_64::{_mm256_loadu_ps, _mm256_permute2f128_ps, _mm256_storeu_ps};
    use std::arch::x86_64::{_mm256_unpackhi_ps, _mm256_unpacklo_ps};
    let pairs = (line.len() / 2).min(a.len()).min(b.len()) / PAIRS * PAIRS;
    if std::any::TypeId::of::<T>() != std::any::TypeId::of::<f32>() {
        return 0;
    }
    let (pa, pb, dst) = (
        a.as_ptr().cast::<f32>(),
        b.as_ptr().cast::<f32>(),
        line.as_mut_ptr(),
    );
    // SAFETY: T is f32; the loads stay within the first `pairs` of `a` and `b`, the stores
    // within the first 2·pairs floats of `line`.
    unsafe {
        for i in (0..pairs).step_by(PAIRS) {
            let (x, y) = (_mm256_loadu_ps(pa.add(i)), _mm256_loadu_ps(pb.add(i)));
            // [x0 y0 x1 y1 x4 y4 x5 y5] and [x2 y2 x3 y3 x6 y6 x7 y7], halves regrouped.
            let (lo, hi) = (_mm256_unpacklo_ps(x, y), _mm256_unpackhi_ps(x, y));
            let d = dst.add(2 * i).cast::<f32>();
            _mm256_storeu_ps(d, _mm256_permute2f128_ps::<0x20>(lo, hi));
            _mm256_storeu_ps(d.add(PAIRS), _mm256_permute2f128_ps::<0x31>(lo, hi));
        }
    }
    pairs
}

/// `V = Bᵀ d B` of every tile of one channel plane `src` (h × w), written to
/// `v[ξ·vs + at + ty·TW + tx]`, in two passes that run along contiguous tiles, [`LANES`] at a
/// time. First along each padded row r: `H[r % 2][k][r / 2][tx]` = x0 − x2, x1 + x2, x2 − x1,
/// x1 − x3 (k = 0..4) of its columns 2·tx + 0..4; then down the tiles, whose rows 2·ty + 0..4
/// are `H[0][k][ty]`, `H[1][k][ty]`, `H[0][k][ty + 1]`, `H[1][k][ty + 1]`: tile t and tile
/// t + TW of the same plane, so this pass runs over the whole image at once. Passes write up
/// to `LANES − 1` tiles past a row's end: the next row or the slack of `hp`, `v` overwrites or
/// ignores them.
#[inline(always)]
fn input_plane<T: Elem, const AVX2: bool>(
    src: &[T],
    (h, w, pad): (usize, usize, usize),
    tl: &Tiles,
    (z, hp): (&mut [T], &mut [T]),
    (v, vs, at): (&mut [T], usize, usize),
) {
    let (tw, ps, half) = (tl.tw, tl.plane(), tl.half());
    let (e, o) = z.split_at_mut(z.len() / 2);
    // Padded column x + pad of row r is e[r][(x + pad) / 2] if even, else o[r][(x + pad) / 2]:
    // source column 2i goes to `a[pad / 2 + i]`, 2i + 1 to `b[(pad + 1) / 2 + i]`. Rows of the
    // padding, and columns past the image, stay zero.
    for (y, line) in src.chunks_exact(w).enumerate().take(h) {
        let (e, o) = (&mut e[(y + pad) * half..], &mut o[(y + pad) * half..]);
        let (a, b) = match pad % 2 {
            0 => (&mut e[pad / 2..], &mut o[pad / 2..]),
            _ => (&mut o[pad / 2..], &mut e[pad / 2 + 1..]),
        };
        let (a, b) = (&mut a[..w.div_ceil(2)], &mut b[..w / 2]);
        let mut done = 0;
        #[cfg(target_arch = "x86_64")]
        if AVX2 {
            // SAFETY: AVX2 is set only where the CPU has AVX2 (`per_simd!`).
            done = unsafe { split_avx2(line, a, b) };
        }
        for ((a, b), p) in a[done..]
            .iter_mut()
            .zip(b[done..].iter_mut())
            .zip(line[2 * done..].chunks_exact(2))
        {
            *a = p[0];
            *b = p[1];
        }
        if w % 2 == 1 {
            a[w / 2] = line[w - 1];
        }
    }
    // All rows are split before any is read back: a wide load right after the narrower
    // stores that wrote it stalls (no store forwarding).
    let (e, o) = (&*e, &*o);
    for r in 0..2 * tl.th + 2 {
        let hr = &mut hp[(r % 2) * 4 * ps..(r % 2 + 1) * 4 * ps];
        for k in 0..tl.chunks {
            // Columns 2·tx + 0..4 of LANES tiles: x0 = e, x1 = o, x2 = e1, x3 = o1.
            let at = r * half + LANES * k;
            let (e0, o0, e1, o1) = (load(e, at), load(o, at), load(e, at + 1), load(o, at + 1));
            let at = (r / 2) * tw + LANES * k;
            store(hr, at, sub(e0, e1));
            store(hr, ps + at, add(o0, e1));
            store(hr, 2 * ps + at, sub(e1, o0));
            store(hr, 3 * ps + at, sub(o0, o1));
        }
    }
    // Bᵀ down each column k of the tiles: d0 − d2, d1 + d2, d2 − d1, d1 − d3.
    let n = tl.per_image().next_multiple_of(LANES);
    let (h0, h1) = hp.split_at(4 * ps);
    let mut vx = v.chunks_exact_mut(vs).map(|p| &mut p[at..at + n]);
    let mut rows: [&mut [T]; 16] = std::array::from_fn(|_| vx.next().unwrap());
    let (r01, r23) = rows.split_at_mut(8);
    let ((r0, r1), (r2, r3)) = (r01.split_at_mut(4), r23.split_at_mut(4));
    for k in 0..4 {
        let (h0, h1) = (&h0[k * ps..k * ps + tw + n], &h1[k * ps..k * ps + tw + n]);
        let d = h0[..n]
            .chunks_exact(LANES)
            .zip(h1[..n].chunks_exact(LANES))
            .zip(
                h0[tw..]
                    .chunks_exact(LANES)
                    .zip(h1[tw..].chunks_exact(LANES)),
            );
        let out = r0[k]
            .chunks_exact_mut(LANES)
            .zip(r1[k].chunks_exact_mut(LANES));
        let out = out.zip(
            r2[k]
                .chunks_exact_mut(LANES)
                .zip(r3[k].chunks_exact_mut(LANES)),
        );
        for (((d0, d1), (d2, d3)), ((v0, v1), (v2, v3))) in d.zip(out) {
            let (d0, d1): ([T; LANES], [T; LANES]) =
                (d0.try_into().unwrap(), d1.try_into().unwrap());
            let (d2, d3): ([T; LANES], [T; LANES]) =
                (d2.try_into().unwrap(), d3.try_into().unwrap());
            v0.copy_from_slice(&sub(d0, d2));
            v1.copy_from_slice(&add(d1, d2));
            v2.copy_from_slice(&sub(d2, d1));
            v3.copy_from_slice(&sub(d1, d3));
        }
    }
}

/// `Aᵀ M A + bias` of every tile of one output channel, written into `out` (HO × WO): `m` holds
/// the 16 matrices M_ξ, `ms` apart, and this channel's row of this image's tiles starts at `at`
/// in each. One pass over the image's tiles, [`LANES`] at a time, gives the four pixels of each
/// tile as four planes `Y[a][b]` (row 2·ty + a, column 2·tx + b); then each output row
/// interleaves `Y[a][0]` and `Y[a][1]`. Reads up to `LANES − 1` tiles past the image's last
/// one (within `m`'s slack), whose results are not used.
#[inline(always)]
fn output_plane<T: Elem, const AVX2: bool>(
    (m, ms, at): (&[T], usize, usize),
    g: &Geom,
    tl: &Tiles,
    bias: T,
    yp: &mut [T],
    out: &mut [T],
) {
    let (tw, ps) = (tl.tw, tl.plane());
    let mut r = [[[T::ZERO; LANES]; 4]; 2];
    for s in (0..tl.per_image()).step_by(LANES) {
        let mx = |xi: usize| load(m, xi * ms + at + s);
        let [r0, r1] = &mut r;
        for (k, (r0, r1)) in r0.iter_mut().zip(r1.iter_mut()).enumerate() {
            // Aᵀ M, both rows, of column k: m0 + m1 + m2 and m1 − m2 − m3.
            let (m0, m1, m2, m3) = (mx(k), mx(4 + k), mx(8 + k), mx(12 + k));
            *r0 = add(add(m0, m1), m2);
            *r1 = sub(sub(m1, m2), m3);
        }
        let b = [bias; LANES];
        for (a, r) in r.iter().enumerate() {
            store(yp, 2 * a * ps + s, add(add(add(r[0], r[1]), r[2]), b));
            store(yp, (2 * a + 1) * ps + s, add(sub(sub(r[1], r[2]), r[3]), b));
        }
    }
    let yp = &*yp;
    for (r, line) in out.chunks_exact_mut(g.wo).enumerate() {
        let base = 2 * (r % 2) * ps + (r / 2) * tw;
        let (y0, y1) = (&yp[base..base + tw], &yp[ps + base..ps + base + tw]);
        let mut done = 0;
        #[cfg(target_arch = "x86_64")]
        if AVX2 {
            // SAFETY: AVX2 is set only where the CPU has AVX2 (`per_simd!`).
            done = unsafe { merge_avx2(y0, y1, line) };
        }
        for ((p, &a), &b) in line[2 * done..]
            .chunks_exact_mut(2)
            .zip(&y0[done..])
            .zip(&y1[done..])
        {
            p[0] = a;
            p[1] = b;
        }
        if g.wo % 2 == 1 {
            line[g.wo - 1] = y0[tw - 1];
        }
    }
}

/// [`input_plane`] of every channel of the `len` images of `xb`: the tiles of image j start at
/// `j · TW·TH` in each row (`ts` long) of each `V_ξ`.
#[inline(always)]
fn input_block<T: Elem, const AVX2: bool>(
    xb: &[T],
    g: &Geom,
    tl: &Tiles,
    s: &mut Scratch<T>,
    ts: usize,
) {
    for (j, xn) in xb.chunks_exact(g.c * g.hw_in()).enumerate() {
        for (c, plane) in xn.chunks_exact(g.hw_in()).enumerate() {
            input_plane::<T, AVX2>(
                plane,
                (g.h, g.w, g.pad),
                tl,
                (&mut s.z, &mut s.planes),
                (&mut s.v, g.c * ts + LANES, c * ts + j * tl.per_image()),
            );
        }
    }
}

/// [`output_plane`] of every channel of the images of `yb`, from `M` (rows `t` long).
#[inline(always)]
fn output_block<T: Elem, const AVX2: bool>(
    bias: Option<&[T]>,
    g: &Geom,
    tl: &Tiles,
    s: &mut Scratch<T>,
    t: usize,
    yb: &mut [T],
) {
    for (j, yn) in yb.chunks_exact_mut(g.o * g.hw_out()).enumerate() {
        for (o, plane) in yn.chunks_exact_mut(g.hw_out()).enumerate() {
            let at = o * t + j * tl.per_image();
            let bo = bias.map_or(T::ZERO, |b| b[o]);
            output_plane::<T, AVX2>((&s.m, g.o * t + LANES, at), g, tl, bo, &mut s.planes, plane);
        }
    }
}

/// Instruction sets the transforms are compiled for: the crate is built for baseline x86-64,
/// whose SSE2 gives their passes 4 lanes instead of 16, so they are compiled once more for
/// AVX-512F and for AVX2 and the CPU's widest is taken at run time. The passes only add and
/// subtract, in the same order in every version: the results have the same bits (tested).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Simd {
    Avx512,
    Avx2,
    Portable,
}

impl Simd {
    /// Whether this CPU runs `self`.
    fn runs(self) -> bool {
        match self {
            #[cfg(target_arch = "x86_64")]
            Simd::Avx512 => {
                std::arch::is_x86_feature_detected!("avx512f")
                    && std::arch::is_x86_feature_detected!("avx2")
            }
            #[cfg(target_arch = "x86_64")]
            Simd::Avx2 => std::arch::is_x86_feature_detected!("avx2"),
            Simd::Portable => true,
            #[allow(unreachable_patterns)]
            _ => false,
        }
    }
    /// The widest this CPU runs.
    pub(super) fn widest() -> Self {
        Self::available()[0]
    }
    /// Those this CPU runs, widest first.
    pub(super) fn available() -> Vec<Self> {
        [Simd::Avx512, Simd::Avx2, Simd::Portable]
            .into_iter()
            .filter(|s| s.runs())
            .collect()
    }
}

/// `$name(simd, …)`: `$body` (an `#[inline(always)]` function) compiled for `simd`, or for
/// the portable baseline where this CPU does not run `simd`.
macro_rules! per_simd {
    ($name:ident, $body:ident, $avx512:ident, $avx2:ident, ($($arg:ident: $ty:ty),*)) => {
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = "avx512f,avx2")]
        fn $avx512<T: Elem>($($arg: $ty),*) {
            $body::<T, true>($($arg),*)
        }
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = "avx2")]
        fn $avx2<T: Elem>($($arg: $ty),*) {
            $body::<T, true>($($arg),*)
        }
        fn $name<T: Elem>(simd: Simd, $($arg: $ty),*) {
            match simd {
                #[cfg(target_arch = "x86_64")]
                // SAFETY: the CPU has AVX-512F and AVX2.
                Simd::Avx512 if simd.runs() => unsafe { $avx512($($arg),*) },
                #[cfg(target_arch = "x86_64")]
                // SAFETY: the CPU has AVX2.
                Simd::Avx2 if simd.runs() => unsafe { $avx2($($arg),*) },
                _ => $body::<T, false>($($arg),*),
            }
        }
    };
}

per_simd!(
    input_transform,
    input_block,
    input_avx512,
    input_avx2,
    (xb: &[T], g: &Geom, tl: &Tiles, s: &mut Scratch<T>, ts: usize)
);
per_simd!(
    output_transform,
    output_block,
    output_avx512,
    output_avx2,
    (bias: Option<&[T]>, g: &Geom, tl: &Tiles, s: &mut Scratch<T>, t: usize, yb: &mut [T])
);

/// Forward, N×O×HO×WO, for the shapes [`fits`] accepts, in blocks of whole images.
pub(super) fn forward<T: Elem>(x: &[T], w: &[T], bias: Option<&[T]>, g: &Geom) -> Vec<T> {
    forward_in_blocks(x, w, bias, g, images_per_block(g), Simd::widest())
}

/// [`forward`] in blocks of `b` images, the transforms compiled for `simd`.
pub(super) fn forward_in_blocks<T: Elem>(
    x: &[T],
    w: &[T],
    bias: Option<&[T]>,
    g: &Geom,
    b: usize,
    simd: Simd,
) -> Vec<T> {
    assert!(b >= 1, "a block holds at least one image");
    let tl = Tiles::of(g);
    // Rows of V_ξ are `LANES` longer than the tiles: the input pass's last write overruns.
    let tr = rounded(b * tl.per_image());
    let (img_in, img_out) = (g.c * g.hw_in(), g.o * g.hw_out());
    let u = kernel_transform(w, g);
    let mut y = vec![T::ZERO; g.n * img_out];
    let (parallel, par) = split(g.n.div_ceil(b));
    let init = || Scratch {
        z: vec![T::ZERO; 2 * (2 * tl.th + 2) * tl.half()],
        planes: vec![T::ZERO; 8 * tl.plane()],
        v: vec![T::ZERO; 16 * (g.c * (tr + LANES) + LANES)],
        m: vec![T::ZERO; 16 * (g.o * tr + LANES)],
    };
    let one = |s: &mut Scratch<T>, blk: usize, yb: &mut [T]| {
        let (i0, len) = (blk * b, yb.len() / img_out);
        let t = rounded(len * tl.per_image());
        let ts = t + LANES;
        input_transform(simd, &x[i0 * img_in..(i0 + len) * img_in], g, &tl, s, ts);
        for xi in 0..16 {
            // SAFETY: dst is M_ξ, O×t row-major inside `s.m` and exclusive; lhs is U_ξ (O×C,
            // row-major); rhs is V_ξ (C×t, rows ts apart) inside `s.v`.
            unsafe {
                gemm_strided(
                    (g.o, t, g.c),
                    (s.m[xi * (g.o * t + LANES)..].as_mut_ptr(), t, 1),
                    (u[xi * g.o * g.c..].as_ptr(), g.c, 1),
                    (s.v[xi * (g.c * ts + LANES)..].as_ptr(), ts, 1),
                    false,
                    par,
                )
            }
        }
        output_transform(simd, bias, g, &tl, s, t, yb);
    };
    per_image(&mut y, b * img_out, parallel, init, one);
    y
}

/// Input gradient, N×C×H×W, for the shapes [`fits`] accepts: the [`forward`] of `dy` padded by
/// 2 − p with the kernel flipped and its channels swapped.
pub(super) fn input_grad<T: Elem>(dy: &[T], w: &[T], g: &Geom) -> Vec<T> {
    input_grad_in_blocks(dy, w, g, None, Simd::widest())
}

/// [`input_grad`] in blocks of `b` images (by default as many as [`forward`] would take), the
/// transforms compiled for `simd`.
pub(super) fn input_grad_in_blocks<T: Elem>(
    dy: &[T],
    w: &[T],
    g: &Geom,
    b: Option<usize>,
    simd: Simd,
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
    forward_in_blocks(dy, &wf, None, &gt, b, simd)
}
