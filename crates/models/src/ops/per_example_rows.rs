//! The per-example weight and bias gradients of Linear and Conv2d layers from each layer's
//! batched input and output gradient, written as f64 straight into the rows of the n × D
//! matrix of `crate::per_example` (one task per example, so the bits do not depend on the
//! thread count).
//!
//! Linear (`y = x Wᵀ + b`): `dW_i = dy_i ⊗ x_i`, `db_i = dy_i`. Conv2d: `dW_i = dY_i (O × P) ·
//! im2col(X_i)ᵀ`, `db_i = Σ_positions dY_i`, on the im2col and gemm of `conv_cpu.rs`.

use candle_core::{bail, Layout, Result, Storage as CandleStorage, Tensor};
use rayon::prelude::*;

use super::conv_cpu::{self, Elem, Geom};
use super::conv_ops::{by_dtype, geom, Storage};

/// What a layer computes, beyond its input and output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RowsKind {
    /// `y = x Wᵀ + b`, x: N × in.
    Linear,
    /// `conv2d(x, W, b, stride, pad)`, x: N × C × H × W.
    Conv { stride: usize, pad: usize },
}

/// One recorded layer: its batched input, its output gradient, its weight's shape and where
/// its weight and bias start in a row.
#[derive(Debug, Clone)]
pub(crate) struct RowsLayer {
    pub kind: RowsKind,
    pub x: Tensor,
    pub dy: Tensor,
    /// The weight's dims (out × in, or O × C × KH × KW).
    pub weight_dims: Vec<usize>,
    pub weight: usize,
    pub bias: Option<usize>,
}

/// A layer's slices and shape, checked.
struct Slices<'a, T> {
    x: &'a [T],
    dy: &'a [T],
    shape: Shape,
    weight: usize,
    bias: Option<usize>,
}

enum Shape {
    Linear { inp: usize, out: usize },
    Conv(Geom),
}

impl Shape {
    /// Elements of the weight gradient.
    fn weight_len(&self) -> usize {
        match self {
            Shape::Linear { inp, out } => inp * out,
            Shape::Conv(g) => g.o * g.ck(),
        }
    }
}

/// Fills rows `0..n` of `data` (n × `dim`, row-major) with every layer's per-example weight and
/// bias gradients; entries no layer covers are left as they are. CPU f32 or f64 only.
pub(crate) fn per_example_rows(
    layers: &[RowsLayer],
    n: usize,
    dim: usize,
    data: &mut [f64],
) -> Result<()> {
    if data.len() != n * dim {
        bail!("per-example rows: buffer of {} for {n} × {dim}", data.len())
    }
    let Some(first) = first_on_cpu(layers)? else {
        return Ok(());
    };
    let op = "per-example rows";
    by_dtype!(op, first.x.dtype(), T => fill::<T>(layers, n, dim, data))
}

/// The first layer (whose input's dtype the kernels dispatch on), `None` without layers; an
/// error unless its tensors are on the CPU.
fn first_on_cpu(layers: &[RowsLayer]) -> Result<Option<&RowsLayer>> {
    let Some(first) = layers.first() else {
        return Ok(None);
    };
    if !first.x.device().is_cpu() {
        bail!(
            "per-example rows: CPU tensors only, got {:?}",
            first.x.device()
        )
    }
    Ok(Some(first))
}

/// `‖∇ℓ_i‖²` over every layer's weight and bias for each example `i < n` (the rows of
/// [`per_example_rows`] summed in squares, without the n × D matrix): Linear by
/// `‖dy_i ⊗ x_i‖² = ‖dy_i‖² ‖x_i‖²`, Conv2d from each example's weight gradient in a per-thread
/// buffer. One task per example, so the bits do not depend on the thread count. `dim` is the row
/// length the layers' offsets must fit in. CPU f32 or f64 only.
pub(crate) fn per_example_sq_norms(layers: &[RowsLayer], n: usize, dim: usize) -> Result<Vec<f64>> {
    let Some(first) = first_on_cpu(layers)? else {
        return Ok(vec![0.0; n]);
    };
    let op = "per-example rows";
    by_dtype!(op, first.x.dtype(), T => with_slices::<T, _>(layers, n, dim, |slices| {
        let (cols_len, dw_len) = buffer_lens(slices);
        let init = || (vec![T::ZERO; cols_len], vec![T::ZERO; dw_len]);
        let mut out = vec![0.0; n];
        out.par_iter_mut()
            .enumerate()
            .for_each_init(init, |(cols, dw), (i, norm)| {
                *norm = slices.iter().map(|s| example_sq_norm(s, i, cols, dw)).sum();
            });
        out
    }))
}

fn fill<T: Storage>(layers: &[RowsLayer], n: usize, dim: usize, data: &mut [f64]) -> Result<()> {
    with_slices::<T, _>(layers, n, dim, |slices| {
        let (cols_len, dw_len) = buffer_lens(slices);
        let init = || (vec![T::ZERO; cols_len], vec![T::ZERO; dw_len]);
        data.par_chunks_mut(dim)
            .enumerate()
            .for_each_init(init, |(cols, dw), (i, row)| {
                for s in slices {
                    example_row(s, i, row, cols, dw);
                }
            });
    })
}

/// The largest im2col and weight-gradient buffers any Conv2d layer of `slices` needs.
fn buffer_lens<T>(slices: &[Slices<T>]) -> (usize, usize) {
    slices
        .iter()
        .filter_map(|s| match &s.shape {
            Shape::Conv(g) => Some((g.ck() * g.hw_out(), g.o * g.ck())),
            Shape::Linear { .. } => None,
        })
        .fold((0, 0), |(a, b), (c, d)| (a.max(c), b.max(d)))
}

/// Runs `f` on every layer's checked slices (contiguous CPU data, shapes matching `n`
/// examples, parameters inside a row of `dim`).
fn with_slices<T: Storage, R>(
    layers: &[RowsLayer],
    n: usize,
    dim: usize,
    f: impl FnOnce(&[Slices<T>]) -> R,
) -> Result<R> {
    let op = "per-example rows";
    let tensors: Vec<(Tensor, Tensor)> = layers
        .iter()
        .map(|l| Ok((l.x.contiguous()?, l.dy.contiguous()?)))
        .collect::<Result<_>>()?;
    let guards: Vec<_> = tensors
        .iter()
        .map(|(x, dy)| (x.storage_and_layout(), dy.storage_and_layout()))
        .collect();
    let mut slices = Vec::with_capacity(layers.len());
    for (l, ((xs, xl), (dys, dyl))) in layers.iter().zip(&guards) {
        let shape = shape(l, xl, dyl, n)?;
        let (x, dy) = match (&**xs, &**dys) {
            (CandleStorage::Cpu(x), CandleStorage::Cpu(dy)) => {
                (T::slice(x, xl, op)?, T::slice(dy, dyl, op)?)
            }
            _ => bail!("{op}: CPU tensors only"),
        };
        let end = l.weight + shape.weight_len();
        let bias_out = match &shape {
            Shape::Linear { out, .. } => *out,
            Shape::Conv(g) => g.o,
        };
        if end > dim || l.bias.is_some_and(|b| b + bias_out > dim) {
            bail!("{op}: layer parameters beyond the row length {dim}")
        }
        slices.push(Slices {
            x,
            dy,
            shape,
            weight: l.weight,
            bias: l.bias,
        });
    }
    Ok(f(&slices))
}

/// The layer's geometry from its input, output gradient and weight dims.
fn shape(l: &RowsLayer, xl: &Layout, dyl: &Layout, n: usize) -> Result<Shape> {
    let op = "per-example rows";
    let (xd, dyd) = (xl.shape().dims(), dyl.shape().dims());
    match l.kind {
        RowsKind::Linear => {
            let (&[xn, inp], &[dn, out], &[wo, wi]) = (xd, dyd, l.weight_dims.as_slice()) else {
                bail!(
                    "{op}: Linear expects N × in input and N × out output gradient, got {xd:?} \
                     and {dyd:?} (weight {:?})",
                    l.weight_dims
                )
            };
            if xn != n || dn != n || wo != out || wi != inp {
                bail!(
                    "{op}: Linear input {xd:?}, output gradient {dyd:?} and weight {:?} do not \
                     match for {n} examples",
                    l.weight_dims
                )
            }
            Ok(Shape::Linear { inp, out })
        }
        RowsKind::Conv { stride, pad } => {
            let &[o, c, kh, kw] = l.weight_dims.as_slice() else {
                bail!("{op}: Conv2d weight {:?} is not 4-D", l.weight_dims)
            };
            let g = geom(op, xl.shape().dims4()?, (o, c, kh, kw), stride, pad)?;
            if g.n != n || dyd != [n, g.o, g.ho, g.wo] {
                bail!(
                    "{op}: Conv2d output gradient {dyd:?}, expected [{n}, {}, {}, {}] for input \
                     {xd:?}",
                    g.o,
                    g.ho,
                    g.wo
                )
            }
            Ok(Shape::Conv(g))
        }
    }
}

/// Example `i`'s gradients of one layer into its `row`.
fn example_row<T: Elem>(s: &Slices<T>, i: usize, row: &mut [f64], cols: &mut [T], dw: &mut [T]) {
    match &s.shape {
        Shape::Linear { inp, out } => {
            let (inp, out) = (*inp, *out);
            let x = &s.x[i * inp..(i + 1) * inp];
            let dy = &s.dy[i * out..(i + 1) * out];
            let w = &mut row[s.weight..s.weight + out * inp];
            for (dst, &d) in w.chunks_exact_mut(inp).zip(dy) {
                let d = d.to_f64();
                stream(dst, |k| d * x[k].to_f64());
            }
            if let Some(b) = s.bias {
                stream(&mut row[b..b + out], |k| dy[k].to_f64());
            }
        }
        Shape::Conv(g) => {
            let (img_in, img_out, ck) = (g.c * g.hw_in(), g.o * g.hw_out(), g.ck());
            let x = &s.x[i * img_in..(i + 1) * img_in];
            let dy = &s.dy[i * img_out..(i + 1) * img_out];
            // dWᵀ (CK × O), the gemm's better shape (CK rows, not O), transposed on the way out.
            let o = g.o;
            let dwt = &mut dw[..o * ck];
            conv_cpu::conv_weight_grad_one_t(x, dy, g, cols, dwt);
            let dwt = &*dwt;
            for (k, dst) in row[s.weight..s.weight + o * ck]
                .chunks_exact_mut(ck)
                .enumerate()
            {
                stream(dst, |j| dwt[j * o + k].to_f64());
            }
            if let Some(b) = s.bias {
                let hw = g.hw_out();
                stream(&mut row[b..b + o], |k| {
                    conv_cpu::sum(&dy[k * hw..(k + 1) * hw]).to_f64()
                });
            }
        }
    }
}

/// Example `i`'s squared gradient norm over one layer's weight and bias.
fn example_sq_norm<T: Elem>(s: &Slices<T>, i: usize, cols: &mut [T], dw: &mut [T]) -> f64 {
    let sq = |v: &[T]| v.iter().map(|a| a.to_f64() * a.to_f64()).sum::<f64>();
    match &s.shape {
        Shape::Linear { inp, out } => {
            let (inp, out) = (*inp, *out);
            let x = sq(&s.x[i * inp..(i + 1) * inp]);
            let dy = sq(&s.dy[i * out..(i + 1) * out]);
            dy * x + if s.bias.is_some() { dy } else { 0.0 }
        }
        Shape::Conv(g) => {
            let (img_in, img_out, ck) = (g.c * g.hw_in(), g.o * g.hw_out(), g.ck());
            let x = &s.x[i * img_in..(i + 1) * img_in];
            let dy = &s.dy[i * img_out..(i + 1) * img_out];
            let dwt = &mut dw[..g.o * ck];
            conv_cpu::conv_weight_grad_one_t(x, dy, g, cols, dwt);
            let weight = sq(dwt);
            let bias = match s.bias {
                Some(_) => {
                    let hw = g.hw_out();
                    (0..g.o)
                        .map(|k| conv_cpu::sum(&dy[k * hw..(k + 1) * hw]).to_f64().powi(2))
                        .sum()
                }
                None => 0.0,
            };
            weight + bias
        }
    }
}

/// `dst[k] = value(k)` for every k, on x86-64 with non-temporal stores: the n × D matrix is far
/// larger than the caches and written once, and a plain store first reads each line in
/// (read-for-ownership), doubling the memory traffic. Filling the rows of 128 examples of
/// SimpleCNN (page faults aside) took 121-155 ms with plain stores, 81 ms with these (Intel
/// Xeon, 1 thread, least of 8; the 2304 × 128 `fc1` weight alone is 302 MB of f64 rows).
fn stream(dst: &mut [f64], value: impl Fn(usize) -> f64) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_set_pd, _mm_sfence, _mm_stream_pd};
        let len = dst.len();
        let mut k = 0;
        if len > 0 && !(dst.as_ptr() as usize).is_multiple_of(16) {
            dst[0] = value(0);
            k = 1;
        }
        while k + 2 <= len {
            let (a, b) = (value(k), value(k + 1));
            // SAFETY: k + 1 < len, and &dst[k] is 16-byte aligned (an f64 slice is 8-byte
            // aligned, and the head element above made the rest 16-byte aligned). SSE2 is part
            // of the x86-64 baseline.
            unsafe { _mm_stream_pd(dst.as_mut_ptr().add(k), _mm_set_pd(b, a)) };
            k += 2;
        }
        if k < len {
            dst[k] = value(k);
        }
        // Streamed stores are weakly ordered: fence them before anything later (the rayon task
        // that wrote them completing, another thread reading the row).
        // SAFETY: a store fence has no preconditions.
        unsafe { _mm_sfence() };
    }
    #[cfg(not(target_arch = "x86_64"))]
    for (k, r) in dst.iter_mut().enumerate() {
        *r = value(k);
    }
}
