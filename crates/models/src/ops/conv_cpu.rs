//! CPU kernels of 2-D convolution on contiguous NCHW slices: im2col/col2im plus `gemm`,
//! parallel over the batch. The three kernels are the forward, its input gradient (the
//! transposed convolution) and its weight gradient; `conv.rs` wires them into Candle's autograd
//! (through `conv_ops.rs`).

use gemm::Parallelism;
use rayon::prelude::*;

use super::conv_im2col::{col2im, im2col};

/// Element types the kernels run on (the ones `gemm` and our tests need).
pub(crate) trait Elem: Copy + Send + Sync + 'static + std::ops::AddAssign {
    const ZERO: Self;
    const ONE: Self;
}

impl Elem for f32 {
    const ZERO: Self = 0.0;
    const ONE: Self = 1.0;
}

impl Elem for f64 {
    const ZERO: Self = 0.0;
    const ONE: Self = 1.0;
}

/// Shapes of one convolution: input N×C×H×W, weight O×C×KH×KW, output N×O×HO×WO.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Geom {
    pub n: usize,
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub o: usize,
    pub kh: usize,
    pub kw: usize,
    pub stride: usize,
    pub pad: usize,
    pub ho: usize,
    pub wo: usize,
}

impl Geom {
    /// Rows of the im2col matrix: C·KH·KW.
    pub fn ck(&self) -> usize {
        self.c * self.kh * self.kw
    }
    /// Output pixels per image and channel: HO·WO.
    pub fn hw_out(&self) -> usize {
        self.ho * self.wo
    }
    pub fn hw_in(&self) -> usize {
        self.h * self.w
    }
    /// A 1×1, stride-1, unpadded convolution is a plain matmul: im2col is the identity.
    fn is_pointwise(&self) -> bool {
        self.kh == 1 && self.kw == 1 && self.stride == 1 && self.pad == 0
    }
}

/// Row-major matrix view for `gemm`: pointer, row stride, column stride.
#[derive(Clone, Copy)]
struct Mat<T> {
    ptr: *const T,
    rs: isize,
    cs: isize,
}

impl<T> Mat<T> {
    fn rows(s: &[T], cols: usize) -> Self {
        Mat {
            ptr: s.as_ptr(),
            rs: cols as isize,
            cs: 1,
        }
    }
    /// The transpose of a row-major matrix stored in `s` with rows of length `row_len`.
    fn transposed(s: &[T], row_len: usize) -> Self {
        Mat {
            ptr: s.as_ptr(),
            rs: 1,
            cs: row_len as isize,
        }
    }
}

/// `dst (m×n, row-major) = [dst +] a (m×k) · b (k×n)`.
fn matmul<T: Elem>(
    dst: &mut [T],
    (m, n, k): (usize, usize, usize),
    a: Mat<T>,
    b: Mat<T>,
    accumulate: bool,
    par: Parallelism,
) {
    debug_assert!(dst.len() >= m * n);
    // SAFETY: callers pass views whose extents (m×k, k×n with the given strides) lie inside live
    // slices, and `dst` is an exclusive row-major m×n slice that aliases neither input.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            a.ptr,
            a.cs,
            a.rs,
            b.ptr,
            b.cs,
            b.rs,
            T::ONE,
            T::ONE,
            false,
            false,
            false,
            par,
        )
    }
}

/// Batch parallelism when the batch covers the threads, else the threads go into each gemm.
fn split(n: usize) -> (bool, Parallelism) {
    let threads = rayon::current_num_threads();
    if n >= threads || threads == 1 {
        (true, Parallelism::None)
    } else {
        (false, Parallelism::Rayon(threads))
    }
}

/// Forward: `y[n] = W (O×CK) · im2col(x[n]) [+ b]`, returned as N×O×HO×WO. The bias is written
/// into the output first and the gemm accumulates onto it, so it costs no extra pass.
pub(crate) fn conv_fwd<T: Elem>(x: &[T], w: &[T], bias: Option<&[T]>, g: &Geom) -> Vec<T> {
    let (ck, hw_out) = (g.ck(), g.hw_out());
    let mut y = vec![T::ZERO; g.n * g.o * hw_out];
    let (batch_par, par) = split(g.n);
    let one = |cols: &mut Vec<T>, (i, yn): (usize, &mut [T])| {
        let xn = &x[i * g.c * g.hw_in()..(i + 1) * g.c * g.hw_in()];
        let rhs = if g.is_pointwise() {
            Mat::rows(xn, hw_out)
        } else {
            im2col(xn, g, cols);
            Mat::rows(cols, hw_out)
        };
        if let Some(b) = bias {
            for (row, &bo) in yn.chunks_exact_mut(hw_out).zip(b) {
                row.fill(bo);
            }
        }
        matmul(
            yn,
            (g.o, hw_out, ck),
            Mat::rows(w, ck),
            rhs,
            bias.is_some(),
            par,
        );
    };
    let cols_len = if g.is_pointwise() { 0 } else { ck * hw_out };
    if batch_par {
        y.par_chunks_mut(g.o * hw_out)
            .enumerate()
            .for_each_init(|| vec![T::ZERO; cols_len], one);
    } else {
        let mut cols = vec![T::ZERO; cols_len];
        y.chunks_mut(g.o * hw_out)
            .enumerate()
            .for_each(|a| one(&mut cols, a));
    }
    y
}

/// Input gradient (transposed convolution), N×C×H×W.
///
/// Stride 1 with a square kernel, `pad < k` and at least 16 input channels: the transposed convolution is a plain
/// convolution of `dy` with the flipped, channel-transposed kernel and padding `k − 1 − pad`,
/// which runs on the forward kernel with a deep gemm (k = O·K²). Otherwise
/// `dx[n] = col2im(Wᵀ (CK×O) · dy[n])`, whose gemm is shallow (k = O) and whose column buffer
/// makes a round trip through memory.
pub(crate) fn conv_input_grad<T: Elem>(dy: &[T], w: &[T], g: &Geom) -> Vec<T> {
    // Few input channels (the first layer, whose input gradient only GPx asks for) would make
    // the flipped gemm only C rows tall; the column form is faster there.
    if g.stride == 1 && g.kh == g.kw && g.pad < g.kh && !g.is_pointwise() && g.c >= 16 {
        let flipped = flip_transpose(w, g);
        let pad = g.kh - 1 - g.pad;
        let gt = Geom {
            c: g.o,
            h: g.ho,
            w: g.wo,
            o: g.c,
            pad,
            ho: g.h,
            wo: g.w,
            ..*g
        };
        return conv_fwd(dy, &flipped, None, &gt);
    }
    let (ck, hw_out) = (g.ck(), g.hw_out());
    let mut dx = vec![T::ZERO; g.n * g.c * g.hw_in()];
    let (batch_par, par) = split(g.n);
    let one = |dcols: &mut Vec<T>, (i, dxn): (usize, &mut [T])| {
        let dyn_ = Mat::rows(&dy[i * g.o * hw_out..(i + 1) * g.o * hw_out], hw_out);
        if g.is_pointwise() {
            matmul(
                dxn,
                (ck, hw_out, g.o),
                Mat::transposed(w, ck),
                dyn_,
                false,
                par,
            );
        } else {
            matmul(
                dcols,
                (ck, hw_out, g.o),
                Mat::transposed(w, ck),
                dyn_,
                false,
                par,
            );
            col2im(dcols, g, dxn);
        }
    };
    let cols_len = if g.is_pointwise() { 0 } else { ck * hw_out };
    if batch_par {
        dx.par_chunks_mut(g.c * g.hw_in())
            .enumerate()
            .for_each_init(|| vec![T::ZERO; cols_len], one);
    } else {
        let mut dcols = vec![T::ZERO; cols_len];
        dx.chunks_mut(g.c * g.hw_in())
            .enumerate()
            .for_each(|a| one(&mut dcols, a));
    }
    dx
}

/// `w` (O×C×KH×KW) → `w'` (C×O×KH×KW) with `w'[c][o][i][j] = w[o][c][KH−1−i][KW−1−j]`.
fn flip_transpose<T: Elem>(w: &[T], g: &Geom) -> Vec<T> {
    let k2 = g.kh * g.kw;
    let mut out = vec![T::ZERO; w.len()];
    for o in 0..g.o {
        for c in 0..g.c {
            let src = &w[(o * g.c + c) * k2..(o * g.c + c + 1) * k2];
            let dst = &mut out[(c * g.o + o) * k2..(c * g.o + o + 1) * k2];
            for (d, &v) in dst.iter_mut().zip(src.iter().rev()) {
                *d = v;
            }
        }
    }
    out
}

/// Weight gradient: `dW = Σ_n dy[n] (O×HW) · im2col(x[n])ᵀ`, O×C×KH×KW.
///
/// The batch is cut into one fixed chunk per thread and the partial sums are added in chunk
/// order, so the result is bitwise reproducible for a given thread count.
pub(crate) fn conv_weight_grad<T: Elem>(x: &[T], dy: &[T], g: &Geom) -> Vec<T> {
    let (ck, hw_out) = (g.ck(), g.hw_out());
    let (batch_par, par) = split(g.n);
    let chunks = if batch_par {
        rayon::current_num_threads().min(g.n).max(1)
    } else {
        1
    };
    let per = g.n.div_ceil(chunks);
    let cols_len = if g.is_pointwise() { 0 } else { ck * hw_out };
    let partial = |range: std::ops::Range<usize>| {
        let mut dw = vec![T::ZERO; g.o * ck];
        let mut cols = vec![T::ZERO; cols_len];
        for (j, i) in range.enumerate() {
            let xn = &x[i * g.c * g.hw_in()..(i + 1) * g.c * g.hw_in()];
            let rhs = if g.is_pointwise() {
                Mat::transposed(xn, hw_out)
            } else {
                im2col(xn, g, &mut cols);
                Mat::transposed(&cols, hw_out)
            };
            let dyn_ = Mat::rows(&dy[i * g.o * hw_out..(i + 1) * g.o * hw_out], hw_out);
            matmul(&mut dw, (g.o, ck, hw_out), dyn_, rhs, j > 0, par);
        }
        dw
    };
    let ranges: Vec<_> = (0..chunks)
        .map(|c| c * per..((c + 1) * per).min(g.n))
        .collect();
    let mut parts: Vec<Vec<T>> = if chunks > 1 {
        ranges.into_par_iter().map(partial).collect()
    } else {
        ranges.into_iter().map(partial).collect()
    };
    let mut dw = parts.remove(0);
    for p in parts {
        dw.iter_mut().zip(p).for_each(|(a, b)| *a += b);
    }
    dw
}

/// Sum of a slice in eight independent lanes (vectorizes; fixed order, so reproducible).
pub(crate) fn sum<T: Elem>(v: &[T]) -> T {
    let mut lanes = [T::ZERO; 8];
    let chunks = v.chunks_exact(8);
    let rest = chunks.remainder();
    for c in chunks {
        for (l, &x) in lanes.iter_mut().zip(c) {
            *l += x;
        }
    }
    let mut total = T::ZERO;
    for x in lanes.into_iter().chain(rest.iter().copied()) {
        total += x;
    }
    total
}
