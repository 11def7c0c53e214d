//! CPU kernels of 2-D convolution on contiguous NCHW slices: im2col/col2im plus `gemm`,
//! parallel over the batch, and the dispatch to the shifted-view kernels of `conv_shifted.rs`
//! and the Winograd kernels of `conv_winograd.rs` where those apply (stride 1). The three
//! kernels are the forward, its input gradient (the transposed convolution) and its weight
//! gradient; `conv.rs` wires them into Candle's autograd (through `conv_ops.rs`).

use gemm::Parallelism;
use rayon::prelude::*;

use super::conv_im2col::{col2im, im2col};
use super::{conv_shifted, conv_winograd};

/// Element types the kernels run on (the ones `gemm` and our tests need).
pub(crate) trait Elem:
    Copy
    + Send
    + Sync
    + 'static
    + std::ops::AddAssign
    + std::ops::Add<Output = Self>
    + std::ops::Sub<Output = Self>
    + std::ops::Mul<Output = Self>
{
    const ZERO: Self;
    const ONE: Self;
    /// 1/2, exact (Winograd's kernel transform).
    const HALF: Self;
    fn is_nan(self) -> bool;
    /// Exact widening to f64.
    fn to_f64(self) -> f64;
}

impl Elem for f32 {
    const ZERO: Self = 0.0;
    const ONE: Self = 1.0;
    const HALF: Self = 0.5;
    fn is_nan(self) -> bool {
        f32::is_nan(self)
    }
    fn to_f64(self) -> f64 {
        f64::from(self)
    }
}

impl Elem for f64 {
    const ZERO: Self = 0.0;
    const ONE: Self = 1.0;
    const HALF: Self = 0.5;
    fn is_nan(self) -> bool {
        f64::is_nan(self)
    }
    fn to_f64(self) -> f64 {
        self
    }
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
    rs: usize,
    cs: usize,
}

impl<T> Mat<T> {
    fn rows(s: &[T], cols: usize) -> Self {
        Mat {
            ptr: s.as_ptr(),
            rs: cols,
            cs: 1,
        }
    }
    /// The transpose of a row-major matrix stored in `s` with rows of length `row_len`.
    fn transposed(s: &[T], row_len: usize) -> Self {
        Mat {
            ptr: s.as_ptr(),
            rs: 1,
            cs: row_len,
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
        gemm_strided(
            (m, n, k),
            (dst.as_mut_ptr(), n, 1),
            (a.ptr, a.rs, a.cs),
            (b.ptr, b.rs, b.cs),
            accumulate,
            par,
        )
    }
}

/// `dst (m×n) [+]= lhs (m×k) · rhs (k×n)`, every operand given as pointer, row stride and column
/// stride.
///
/// # Safety
/// Every index `i·rs + j·cs` within each operand's extent must lie inside a live allocation, the
/// elements `dst` reaches must be distinct and alias neither input.
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn gemm_strided<T: Elem>(
    (m, n, k): (usize, usize, usize),
    (dst, dst_rs, dst_cs): (*mut T, usize, usize),
    (lhs, lhs_rs, lhs_cs): (*const T, usize, usize),
    (rhs, rhs_rs, rhs_cs): (*const T, usize, usize),
    accumulate: bool,
    par: Parallelism,
) {
    // SAFETY: the caller's contract.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
            dst_cs as isize,
            dst_rs as isize,
            accumulate,
            lhs,
            lhs_cs as isize,
            lhs_rs as isize,
            rhs,
            rhs_cs as isize,
            rhs_rs as isize,
            T::ONE,
            T::ONE,
            false,
            false,
            false,
            par,
        )
    }
}

/// Columns one gemm should have at least: deep layers on small images put several images side
/// by side in one gemm, so that the gemm is wide and a large weight is packed once per block,
/// not once per image (ResNet-18's 512-channel 4×4 layers: 32 images per gemm).
const TARGET_COLS: usize = 512;

/// Images per gemm.
fn block_len(g: &Geom) -> usize {
    TARGET_COLS.div_ceil(g.hw_out().max(1)).clamp(1, g.n.max(1))
}

/// Parallel over independent work items when they cover the threads, else the threads go into
/// each gemm.
pub(super) fn split(items: usize) -> (bool, Parallelism) {
    let threads = rayon::current_num_threads();
    if items >= threads || threads == 1 {
        (true, Parallelism::None)
    } else {
        (false, Parallelism::Rayon(threads))
    }
}

/// `Σ partial(range)` over the batch of `n` images cut into one fixed chunk per thread (one
/// chunk when `parallel` is false and the threads go into each gemm instead; see [`split`]),
/// the chunks' sums added in chunk order: bitwise reproducible for a given thread count. The
/// weight gradients' batch reduction (im2col and shifted views).
pub(super) fn sum_over_chunks<T: Elem>(
    n: usize,
    parallel: bool,
    partial: impl Fn(std::ops::Range<usize>) -> Vec<T> + Send + Sync,
) -> Vec<T> {
    let chunks = if parallel {
        rayon::current_num_threads().min(n).max(1)
    } else {
        1
    };
    let per = n.div_ceil(chunks);
    let ranges: Vec<_> = (0..chunks)
        .map(|c| (c * per).min(n)..((c + 1) * per).min(n))
        .collect();
    let mut parts: Vec<Vec<T>> = if chunks > 1 {
        ranges.into_par_iter().map(partial).collect()
    } else {
        ranges.into_iter().map(partial).collect()
    };
    let mut sum = parts.remove(0);
    for p in parts {
        sum.iter_mut().zip(p).for_each(|(a, b)| *a += b);
    }
    sum
}

/// Copies the per-image planes `src[i0 + j][r]` (each `hw` long, `rows` per image) into
/// `dst[r][j·hw ..]`, rows `ld` apart: images side by side as one matrix.
fn gather<T: Elem>(src: &[T], i0: usize, len: usize, rows: usize, hw: usize, dst: &mut [T]) {
    let ld = len * hw;
    for j in 0..len {
        let img = &src[(i0 + j) * rows * hw..(i0 + j + 1) * rows * hw];
        for (r, plane) in img.chunks_exact(hw).enumerate() {
            dst[r * ld + j * hw..r * ld + (j + 1) * hw].copy_from_slice(plane);
        }
    }
}

/// Forward, N×O×HO×WO: Winograd F(2×2, 3×3) (`conv_winograd`) for stride-1 3×3 layers with at
/// least 32 input and output channels (`conv_winograd::applies`), over shifted views of the padded image (`conv_shifted`)
/// for the other stride-1 kernels larger than 1×1 with at least 8 input channels, through
/// im2col for the rest.
pub(crate) fn conv_fwd<T: Elem>(x: &[T], w: &[T], bias: Option<&[T]>, g: &Geom) -> Vec<T> {
    if conv_winograd::applies(g) {
        return conv_winograd::forward(x, w, bias, g);
    }
    if conv_shifted::applies(g) {
        return conv_shifted::forward(x, w, bias, g);
    }
    conv_fwd_im2col(x, w, bias, g)
}

/// [`conv_fwd`] through im2col, for every shape: `y[n] = W (O×CK) · im2col(x[n]) [+ b]`. The
/// bias is written into the output first and the gemm accumulates onto it, so it costs no
/// extra pass.
pub(super) fn conv_fwd_im2col<T: Elem>(x: &[T], w: &[T], bias: Option<&[T]>, g: &Geom) -> Vec<T> {
    let (ck, hw_out, img_in) = (g.ck(), g.hw_out(), g.c * g.hw_in());
    let b = block_len(g);
    let mut y = vec![T::ZERO; g.n * g.o * hw_out];
    let (block_par, par) = split(g.n.div_ceil(b));
    let one = |scratch: &mut (Vec<T>, Vec<T>), (blk, yb): (usize, &mut [T])| {
        let (i0, len) = (blk * b, yb.len() / (g.o * hw_out));
        let ld = len * hw_out;
        let (cols, out) = scratch;
        let rhs = if len == 1 && g.is_pointwise() {
            Mat::rows(&x[i0 * img_in..(i0 + 1) * img_in], hw_out)
        } else {
            for j in 0..len {
                let xn = &x[(i0 + j) * img_in..(i0 + j + 1) * img_in];
                im2col(xn, g, &mut cols[j * hw_out..], ld);
            }
            Mat::rows(cols, ld)
        };
        // One image writes straight into y; a block goes through `out` (O × len·HW) and is
        // scattered back per image.
        let dst: &mut [T] = if len == 1 { yb } else { &mut out[..g.o * ld] };
        if let Some(bias) = bias {
            for (row, &bo) in dst.chunks_exact_mut(ld).zip(bias) {
                row.fill(bo);
            }
        }
        matmul(
            dst,
            (g.o, ld, ck),
            Mat::rows(w, ck),
            rhs,
            bias.is_some(),
            par,
        );
        if len > 1 {
            for (j, yn) in yb.chunks_exact_mut(g.o * hw_out).enumerate() {
                for (o, plane) in yn.chunks_exact_mut(hw_out).enumerate() {
                    plane.copy_from_slice(&out[o * ld + j * hw_out..o * ld + (j + 1) * hw_out]);
                }
            }
        }
    };
    let cols_len = if b == 1 && g.is_pointwise() {
        0
    } else {
        ck * b * hw_out
    };
    let out_len = if b == 1 { 0 } else { g.o * b * hw_out };
    let init = || (vec![T::ZERO; cols_len], vec![T::ZERO; out_len]);
    if block_par {
        y.par_chunks_mut(b * g.o * hw_out)
            .enumerate()
            .for_each_init(init, one);
    } else {
        let mut scratch = init();
        y.chunks_mut(b * g.o * hw_out)
            .enumerate()
            .for_each(|a| one(&mut scratch, a));
    }
    y
}

/// Input gradient (transposed convolution), N×C×H×W: Winograd (`conv_winograd`, the forward
/// of `dy` with the flipped kernel) where the forward uses it, over shifted views of the padded
/// image (`conv_shifted`) for the other stride-1 kernels larger than 1×1 and at least 8 input
/// channels, `dx[n] = col2im(Wᵀ (CK×O) · dy[n])` for the rest.
///
/// The shifted form replaced a convolution of `dy` with the flipped kernel, which SimpleCNN's
/// conv2 and ResNet-18's C = O layers had used: on the shifted forward it ran as fast as the
/// shifted input gradient or slower (SimpleCNN's conv2, 32→32 on 32×32 'valid', N = 128, one
/// thread of an Intel Xeon: 24.8 against 23.4 ms of CPU time, medians of 3 alternated runs).
pub(crate) fn conv_input_grad<T: Elem>(dy: &[T], w: &[T], g: &Geom) -> Vec<T> {
    if conv_winograd::applies(g) {
        return conv_winograd::input_grad(dy, w, g);
    }
    if conv_shifted::applies(g) {
        return conv_shifted::input_grad(dy, w, g);
    }
    conv_input_grad_col2im(dy, w, g)
}

/// [`conv_input_grad`] as gemm + col2im, for every shape.
pub(super) fn conv_input_grad_col2im<T: Elem>(dy: &[T], w: &[T], g: &Geom) -> Vec<T> {
    let (ck, hw_out, img_in) = (g.ck(), g.hw_out(), g.c * g.hw_in());
    let b = block_len(g);
    let mut dx = vec![T::ZERO; g.n * img_in];
    let (block_par, par) = split(g.n.div_ceil(b));
    let one = |scratch: &mut (Vec<T>, Vec<T>), (blk, dxb): (usize, &mut [T])| {
        let (i0, len) = (blk * b, dxb.len() / img_in);
        let ld = len * hw_out;
        let (dcols, dyb) = scratch;
        let rhs = if len == 1 {
            Mat::rows(&dy[i0 * g.o * hw_out..(i0 + 1) * g.o * hw_out], hw_out)
        } else {
            gather(dy, i0, len, g.o, hw_out, dyb);
            Mat::rows(dyb, ld)
        };
        if len == 1 && g.is_pointwise() {
            matmul(
                dxb,
                (ck, hw_out, g.o),
                Mat::transposed(w, ck),
                rhs,
                false,
                par,
            );
            return;
        }
        matmul(
            dcols,
            (ck, ld, g.o),
            Mat::transposed(w, ck),
            rhs,
            false,
            par,
        );
        for (j, dxn) in dxb.chunks_exact_mut(img_in).enumerate() {
            col2im(&dcols[j * hw_out..], g, dxn, ld);
        }
    };
    let cols_len = if b == 1 && g.is_pointwise() {
        0
    } else {
        ck * b * hw_out
    };
    let dyb_len = if b == 1 { 0 } else { g.o * b * hw_out };
    let init = || (vec![T::ZERO; cols_len], vec![T::ZERO; dyb_len]);
    if block_par {
        dx.par_chunks_mut(b * img_in)
            .enumerate()
            .for_each_init(init, one);
    } else {
        let mut scratch = init();
        dx.chunks_mut(b * img_in)
            .enumerate()
            .for_each(|a| one(&mut scratch, a));
    }
    dx
}

/// Weight gradient, O×C×KH×KW: over shifted views of the padded image (`conv_shifted`) for
/// stride-1 kernels larger than 1×1, at least 8 input channels and images that are not too small
/// (`conv_shifted::applies_weight_grad`), through im2col for the rest.
pub(crate) fn conv_weight_grad<T: Elem>(x: &[T], dy: &[T], g: &Geom) -> Vec<T> {
    if conv_shifted::applies_weight_grad(g) {
        return conv_shifted::weight_grad(x, dy, g);
    }
    conv_weight_grad_im2col(x, dy, g)
}

/// Weight gradient: `dW = Σ_n dy[n] (O×HW) · im2col(x[n])ᵀ`, O×C×KH×KW, with blocks of images
/// side by side so that each gemm sums over at least `TARGET_COLS` pixels (a deep gemm, and
/// the O×CK accumulator is read and written once per block instead of once per image).
///
/// The batch is cut into one fixed chunk per thread and the partial sums are added in chunk
/// order, so the result is bitwise reproducible for a given thread count.
pub(super) fn conv_weight_grad_im2col<T: Elem>(x: &[T], dy: &[T], g: &Geom) -> Vec<T> {
    let (ck, hw_out, img_in) = (g.ck(), g.hw_out(), g.c * g.hw_in());
    let b = block_len(g);
    let (batch_par, par) = split(g.n);
    let partial = |range: std::ops::Range<usize>| {
        let mut dw = vec![T::ZERO; g.o * ck];
        let mut cols = vec![T::ZERO; ck * b * hw_out];
        let mut dyb = vec![T::ZERO; if b == 1 { 0 } else { g.o * b * hw_out }];
        let mut first = true;
        let mut i0 = range.start;
        while i0 < range.end {
            let len = b.min(range.end - i0);
            let ld = len * hw_out;
            for j in 0..len {
                let xn = &x[(i0 + j) * img_in..(i0 + j + 1) * img_in];
                im2col(xn, g, &mut cols[j * hw_out..], ld);
            }
            let lhs = if len == 1 {
                Mat::rows(&dy[i0 * g.o * hw_out..(i0 + 1) * g.o * hw_out], hw_out)
            } else {
                gather(dy, i0, len, g.o, hw_out, &mut dyb);
                Mat::rows(&dyb, ld)
            };
            matmul(
                &mut dw,
                (g.o, ck, ld),
                lhs,
                Mat::transposed(&cols, ld),
                !first,
                par,
            );
            first = false;
            i0 += len;
        }
        dw
    };
    sum_over_chunks(g.n, batch_par, partial)
}

/// The TRANSPOSED weight gradient of ONE image, `dwᵀ (CK×O) = im2col(x) (CK×HW) · dyᵀ`, on the
/// calling thread (`g.n` is ignored; `cols` is scratch of at least CK·HW): the per-example
/// gradients of `crate::per_example`, which run one image per task, so every row comes out the
/// same whatever the thread count. Transposed because the gemm runs faster with CK (288-576
/// in SimpleCNN) rather than O (32-64) as its row count: 121-133 ms against 133-151 ms for the
/// rows of 128 examples (Intel Xeon, 1 thread, least of 8, plain stores).
pub(crate) fn conv_weight_grad_one_t<T: Elem>(
    x: &[T],
    dy: &[T],
    g: &Geom,
    cols: &mut [T],
    dwt: &mut [T],
) {
    let (ck, hw_out) = (g.ck(), g.hw_out());
    im2col(x, g, cols, hw_out);
    matmul(
        dwt,
        (ck, g.o, hw_out),
        Mat::rows(cols, hw_out),
        Mat::transposed(dy, hw_out),
        false,
        Parallelism::None,
    );
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
