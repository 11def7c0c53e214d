//! k×k max-pool with stride k as three fused CPU ops that differentiate into each other, so a
//! pooled CNN's gradient and its double-backprop HVP make one pass per pool instead of the
//! reshape, two reductions and four full-size mask passes of Candle's `max` backward.
//!
//! Each output takes the first maximum of its window in row-major order, as PyTorch's CPU
//! kernel does (a NaN wins over numbers). With `a(x)` that index map, all three ops are linear
//! in their first operand and piecewise constant in `x`, which is the second:
//! - `MaxPool`  (x)      → y = x[a(x)],             bwd: dx = `Scatter`(dy, x);
//! - `Scatter`  (dy, x)  → dx = dy placed at a(x),  bwd: d(dy) = `Gather`(g, x);
//! - `Gather`   (u, x)   → u[a(x)],                 bwd: du = `Scatter`(g, x).
//!
//! `Scatter` and `Gather` are the two ways of one op, [`Route`]. `MaxPool`'s forward keeps
//! `a(x)` (one code per output, as PyTorch keeps its indices) and hands it to the `Route` ops
//! of its backward, which then never search the windows again.
//!
//! None of them passes a gradient to `x` through the index map (its derivative is zero almost
//! everywhere).

use std::sync::{Arc, OnceLock};

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::conv_cpu::Elem;
use super::conv_ops::{apply_bwd, by_dtype, Storage};

/// Whether `x` runs on the fused CPU kernels.
pub(super) fn fused(x: &Tensor) -> bool {
    x.device().is_cpu() && matches!(x.dtype(), candle_core::DType::F32 | candle_core::DType::F64)
}

/// The fused k×k max-pool of `x` (N×C×H×W, CPU, f32 or f64).
pub(super) fn max_pool2d(x: &Tensor, k: usize) -> Result<Tensor> {
    x.contiguous()?.apply_op1(MaxPool {
        k,
        codes: OnceLock::new(),
    })
}

/// Branch-free step of the running maximum (the comparison is a coin flip on real data): take
/// `v` when it is greater, or NaN, unless a NaN is already held (`!(v <= best)` is
/// `v > best || v.is_nan()`; `&` and `!` on bools keep it a select).
#[inline(always)]
fn step<T: Elem + PartialOrd>((best, best_at): (T, u16), (v, at): (T, u16)) -> (T, u16) {
    #[allow(clippy::neg_cmp_op_on_partial_ord, clippy::nonminimal_bool)]
    let take = !(v <= best) & !best.is_nan();
    // The code by a mask (all ones where `take`), which keeps the select a select.
    let mask = u16::from(take).wrapping_neg();
    (if take { v } else { best }, (at & mask) | (best_at & !mask))
}

/// Where each window's first maximum lies, one code per output: `a·k + b` for row `a`, column
/// `b` of the window. `MaxPool` keeps the codes of its forward pass for its backward ops (as
/// PyTorch keeps its indices), so that the backward does not search the windows again.
type Codes = Arc<Vec<u16>>;

/// Input and output plane sizes of a k×k pool of `dims` (N×C×H×W), checked.
#[derive(Debug, Clone, Copy)]
struct Planes {
    k: usize,
    w: usize,
    hw: usize,
    ho: usize,
    wo: usize,
    /// Planes (N·C).
    count: usize,
}

impl Planes {
    fn new(op: &str, shape: &Shape, k: usize) -> Result<Self> {
        let (n, c, h, w) = shape.dims4()?;
        if k == 0 || h < k || w < k {
            candle_core::bail!("{op}: window {k}×{k} does not fit input {:?}", shape.dims());
        }
        if k * k > usize::from(u16::MAX) + 1 {
            candle_core::bail!("{op}: window {k}×{k} has more than 2^16 entries");
        }
        Ok(Planes {
            k,
            w,
            hw: h * w,
            ho: h / k,
            wo: w / k,
            count: n * c,
        })
    }

    fn out_len(&self) -> usize {
        self.ho * self.wo
    }

    /// Offset in the input plane of window `(i, j)`'s entry `code`, for every code: a table,
    /// so that the kernels do no division by `k`.
    fn offsets(&self) -> Vec<usize> {
        (0..self.k * self.k)
            .map(|code| (code / self.k) * self.w + code % self.k)
            .collect()
    }

    /// Code of the first maximum of output `(i, j)`'s window. A NaN wins, as in PyTorch, and
    /// then stays (nothing is greater than NaN).
    #[inline]
    fn argmax<T: Elem + PartialOrd>(&self, x: &[T], i: usize, j: usize) -> (T, u16) {
        let (k, w) = (self.k, self.w);
        let start = i * k * w + j * k;
        let window = &x[start..start + (k - 1) * w + k];
        let mut best = (window[0], 0);
        for a in 0..k {
            for (b, &v) in window[a * w..a * w + k].iter().enumerate() {
                best = step(best, (v, (a * k + b) as u16));
            }
        }
        best
    }

    /// Calls `f(j, max, code)` for each window `(i, j)` of output row `i`.
    #[inline]
    fn row_argmax<T: Elem + PartialOrd>(
        &self,
        x: &[T],
        i: usize,
        mut f: impl FnMut(usize, T, u16),
    ) {
        for j in 0..self.wo {
            let (v, code) = self.argmax(x, i, j);
            f(j, v, code);
        }
    }

    /// [`Self::row_argmax`] for 2×2 windows (every max-pool of our models), writing maxima
    /// and codes: a straight-line path over two input rows, with plain slices instead of a
    /// callback so that the loop compiles to selects, not branches (which mispredict on real
    /// data; SimpleCNN's 128×64×13×13 pool took 4.3 ms, now 2.0, one thread).
    #[inline]
    fn row_max2<T: Elem + PartialOrd>(&self, x: &[T], i: usize, out: &mut [T], codes: &mut [u16]) {
        let (w, top, wo) = (self.w, 2 * i * self.w, self.wo);
        let (r0, r1) = (&x[top..top + 2 * wo], &x[top + w..top + w + 2 * wo]);
        let (out, codes) = (&mut out[..wo], &mut codes[..wo]);
        for j in 0..wo {
            let m = step((r0[2 * j], 0), (r0[2 * j + 1], 1));
            let m = step(m, (r1[2 * j], 2));
            let (v, code) = step(m, (r1[2 * j + 1], 3));
            out[j] = v;
            codes[j] = code;
        }
    }
}

/// Planes per parallel task: enough work per task to be worth a split.
fn planes_per_task(p: &Planes) -> usize {
    (16_384 / p.hw.max(1)).max(1)
}

/// The pool of `x` and the codes of its maxima: `MaxPool`'s forward.
fn pool_with_codes<T: Elem + PartialOrd>(x: &[T], p: &Planes) -> (Vec<T>, Vec<u16>) {
    let mut out = vec![T::ZERO; p.count * p.out_len()];
    let mut codes = vec![0u16; p.count * p.out_len()];
    let per = planes_per_task(p);
    out.par_chunks_mut(per * p.out_len())
        .zip(codes.par_chunks_mut(per * p.out_len()))
        .enumerate()
        .for_each(|(t, (chunk, cchunk))| {
            let planes = chunk
                .chunks_exact_mut(p.out_len())
                .zip(cchunk.chunks_exact_mut(p.out_len()));
            for (q, (o, c)) in planes.enumerate() {
                let plane = (t * per + q) * p.hw;
                let x = &x[plane..plane + p.hw];
                let rows = o.chunks_exact_mut(p.wo).zip(c.chunks_exact_mut(p.wo));
                for (i, (row, crow)) in rows.enumerate() {
                    if p.k == 2 {
                        p.row_max2(x, i, row, crow);
                        continue;
                    }
                    p.row_argmax(x, i, |j, v, code| {
                        row[j] = v;
                        crow[j] = code;
                    });
                }
            }
        });
    (out, codes)
}

/// `out[plane][o] = u[plane][window o's entry codes[o]]`: `Gather`.
fn gather<T: Elem>(u: &[T], codes: &[u16], p: &Planes) -> Vec<T> {
    let mut out = vec![T::ZERO; p.count * p.out_len()];
    let (per, offsets) = (planes_per_task(p), p.offsets());
    out.par_chunks_mut(per * p.out_len())
        .enumerate()
        .for_each(|(t, chunk)| {
            for (q, o) in chunk.chunks_exact_mut(p.out_len()).enumerate() {
                let plane = t * per + q;
                let u = &u[plane * p.hw..(plane + 1) * p.hw];
                let c = &codes[plane * p.out_len()..(plane + 1) * p.out_len()];
                for (i, (row, crow)) in o
                    .chunks_exact_mut(p.wo)
                    .zip(c.chunks_exact(p.wo))
                    .enumerate()
                {
                    let top = i * p.k * p.w;
                    for (j, (r, &code)) in row.iter_mut().zip(crow).enumerate() {
                        *r = u[top + j * p.k + offsets[usize::from(code)]];
                    }
                }
            }
        });
    out
}

/// `dx[plane][window o's entry codes[o]] = dy[plane][o]`, zero elsewhere: `Scatter`.
fn scatter<T: Elem>(dy: &[T], codes: &[u16], p: &Planes) -> Vec<T> {
    let mut dx = vec![T::ZERO; p.count * p.hw];
    let (per, offsets) = (planes_per_task(p), p.offsets());
    dx.par_chunks_mut(per * p.hw)
        .enumerate()
        .for_each(|(t, chunk)| {
            for (q, d) in chunk.chunks_exact_mut(p.hw).enumerate() {
                let plane = t * per + q;
                let g = &dy[plane * p.out_len()..(plane + 1) * p.out_len()];
                let c = &codes[plane * p.out_len()..(plane + 1) * p.out_len()];
                for (i, (row, crow)) in g.chunks_exact(p.wo).zip(c.chunks_exact(p.wo)).enumerate() {
                    let top = i * p.k * p.w;
                    for (j, (&v, &code)) in row.iter().zip(crow).enumerate() {
                        d[top + j * p.k + offsets[usize::from(code)]] = v;
                    }
                }
            }
        });
    dx
}

/// y = max over each k×k window of x; keeps the codes of the maxima for its backward.
struct MaxPool {
    k: usize,
    codes: OnceLock<Codes>,
}

impl MaxPool {
    fn fwd<T: Storage + PartialOrd>(
        &self,
        s: &CpuStorage,
        l: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let op = self.name();
        let p = Planes::new(op, l.shape(), self.k)?;
        let x = T::slice(s, l, op)?;
        let (n, c, _, _) = l.shape().dims4()?;
        let (y, codes) = pool_with_codes(x, &p);
        // A second forward of the same op (Candle runs each once) would find the same codes.
        let _ = self.codes.set(Arc::new(codes));
        Ok((T::wrap(y), Shape::from((n, c, p.ho, p.wo))))
    }
}

impl CustomOp1 for MaxPool {
    fn name(&self) -> &'static str {
        "breakeven-max-pool2d"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        by_dtype!(self.name(), s.dtype(), T => self.fwd::<T>(s, l))
    }

    fn bwd(&self, x: &Tensor, _y: &Tensor, dy: &Tensor) -> Result<Option<Tensor>> {
        let route = Route {
            k: self.k,
            way: Way::Scatter,
            codes: self.codes.get().cloned(),
        };
        apply_bwd(dy, x, route).map(Some)
    }
}

/// Which way a [`Route`] moves values between the window maxima of `x` and the pooled grid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Way {
    /// `dy` (N×C×H/k×W/k) placed at each window's maximum of `x` (N×C×H×W), zero elsewhere.
    Scatter,
    /// `u` (N×C×H×W, the shape of `x`) read at each window's maximum of `x`.
    Gather,
}

/// The two linear maps of a pool's index map, `Route(v, x)`: each is the adjoint of the other,
/// so each one's backward is the other.
#[derive(Debug, Clone)]
struct Route {
    k: usize,
    way: Way,
    /// The codes of `x`'s maxima, from the `MaxPool` forward of this `x`; searched for again
    /// when absent.
    codes: Option<Codes>,
}

impl Route {
    #[cfg(test)]
    fn scatter(k: usize) -> Self {
        Route {
            k,
            way: Way::Scatter,
            codes: None,
        }
    }

    #[cfg(test)]
    fn gather(k: usize) -> Self {
        Route {
            k,
            way: Way::Gather,
            codes: None,
        }
    }

    fn adjoint(&self) -> Self {
        let way = match self.way {
            Way::Scatter => Way::Gather,
            Way::Gather => Way::Scatter,
        };
        Route {
            way,
            ..self.clone()
        }
    }

    fn fwd<T: Storage + PartialOrd>(
        &self,
        v: (&CpuStorage, &Layout),
        x: (&CpuStorage, &Layout),
    ) -> Result<(CpuStorage, Shape)> {
        let op = self.name();
        let p = Planes::new(op, x.1.shape(), self.k)?;
        let (n, c, _, _) = x.1.shape().dims4()?;
        let pooled = Shape::from((n, c, p.ho, p.wo));
        let (expected, out_shape) = match self.way {
            Way::Scatter => (&pooled, x.1.shape().clone()),
            Way::Gather => (x.1.shape(), pooled.clone()),
        };
        if v.1.shape() != expected {
            candle_core::bail!(
                "{op}: operand {:?} does not fit a {k}×{k} pool of input {:?}: expected {:?}",
                v.1.shape(),
                x.1.shape(),
                expected.dims(),
                k = self.k
            );
        }
        let (v, x) = (T::slice(v.0, v.1, op)?, T::slice(x.0, x.1, op)?);
        let searched;
        let codes: &[u16] = match &self.codes {
            Some(c) if c.len() == p.count * p.out_len() => c,
            Some(c) => candle_core::bail!(
                "{op}: {} kept codes for a pool with {} outputs",
                c.len(),
                p.count * p.out_len()
            ),
            None => {
                searched = pool_with_codes(x, &p).1;
                &searched
            }
        };
        let out = match self.way {
            Way::Scatter => scatter(v, codes, &p),
            Way::Gather => gather(v, codes, &p),
        };
        Ok((T::wrap(out), out_shape))
    }
}

impl CustomOp2 for Route {
    fn name(&self) -> &'static str {
        match self.way {
            Way::Scatter => "breakeven-max-pool2d-scatter",
            Way::Gather => "breakeven-max-pool2d-gather",
        }
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        by_dtype!(self.name(), s1.dtype(), T => self.fwd::<T>((s1, l1), (s2, l2)))
    }

    fn bwd(
        &self,
        _v: &Tensor,
        x: &Tensor,
        _out: &Tensor,
        g: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        Ok((Some(apply_bwd(g, x, self.adjoint())?), None))
    }
}

#[cfg(test)]
mod tests {
    use super::super::pool::max_pool2d_windows;
    use super::*;
    use crate::gradcheck::enable_double_backprop;
    use candle_core::{Device, Var, D};

    /// 2×3×5×7 distinct values: no ties, odd sizes (the floor drops a row and a column).
    fn input() -> Tensor {
        let v: Vec<f64> = (0..2 * 3 * 5 * 7)
            .map(|i| ((i * 37 % 211) as f64) / 17.0 - 6.0)
            .collect();
        Tensor::from_vec(v, (2, 3, 5, 7), &Device::Cpu).unwrap()
    }

    fn flat(t: &Tensor) -> Vec<f64> {
        t.flatten_all().unwrap().to_vec1::<f64>().unwrap()
    }

    /// Σ w·pool(x)² with distinct weights, so a misplaced or rescaled gradient shows.
    fn loss(pool: fn(&Tensor, usize) -> Result<Tensor>, x: &Tensor) -> Tensor {
        let y = pool(x, 2).unwrap();
        let w = Tensor::arange(1.0, 1.0 + y.elem_count() as f64, &Device::Cpu)
            .unwrap()
            .reshape(y.shape())
            .unwrap();
        (y.sqr().unwrap() * w).unwrap().sum_all().unwrap()
    }

    #[test]
    fn values_and_gradient_equal_the_reshape_and_max_path_without_ties() {
        let x = Var::from_tensor(&input()).unwrap();
        assert_eq!(
            flat(&max_pool2d(x.as_tensor(), 2).unwrap()),
            flat(&max_pool2d_windows(x.as_tensor(), 2).unwrap())
        );
        assert_eq!(max_pool2d(x.as_tensor(), 2).unwrap().dims(), &[2, 3, 2, 3]);
        let ours = loss(max_pool2d, x.as_tensor()).backward().unwrap();
        let theirs = loss(max_pool2d_windows, x.as_tensor()).backward().unwrap();
        assert_eq!(flat(ours.get(&x).unwrap()), flat(theirs.get(&x).unwrap()));
    }

    #[test]
    fn hessian_vector_product_matches_finite_differences_of_the_gradient() {
        enable_double_backprop();
        let x = Var::from_tensor(&input()).unwrap();
        let v = Tensor::from_vec(
            (0..input().elem_count())
                .map(|i| ((i * 13 % 7) as f64) - 3.0)
                .collect::<Vec<_>>(),
            input().shape(),
            &Device::Cpu,
        )
        .unwrap();
        let grad = |t: &Tensor| {
            loss(max_pool2d, t)
                .backward()
                .unwrap()
                .get(t)
                .unwrap()
                .clone()
        };
        let g = grad(x.as_tensor());
        let hv = (&g * &v)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap()
            .get(&x)
            .unwrap()
            .clone();
        let eps = 1e-5;
        let at = |s: f64| {
            let xs = Var::from_tensor(&(input() + (&v * s).unwrap()).unwrap()).unwrap();
            flat(&grad(xs.as_tensor()))
        };
        let (plus, minus) = (at(eps), at(-eps));
        for (i, h) in flat(&hv).into_iter().enumerate() {
            let fd = (plus[i] - minus[i]) / (2.0 * eps);
            assert!(
                (fd - h).abs() < 1e-6 * (1.0 + fd.abs()),
                "coord {i}: {h} vs fd {fd}"
            );
        }
    }

    #[test]
    fn ties_send_the_gradient_to_the_first_maximum_as_pytorch() {
        // One 2×2 window of equal values, one with a tie in its second row.
        let x = Tensor::new(
            &[[[[1.0f64, 1.0, 0.0, 2.0], [1.0, 1.0, 2.0, 1.0]]]],
            &Device::Cpu,
        )
        .unwrap();
        let x = Var::from_tensor(&x).unwrap();
        let g = max_pool2d(x.as_tensor(), 2)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        assert_eq!(
            flat(g.get(&x).unwrap()),
            vec![1.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0]
        );
    }

    #[test]
    fn nan_propagates_to_the_output() {
        let x = Tensor::new(&[[[[1.0f32, f32::NAN], [3.0, 2.0]]]], &Device::Cpu).unwrap();
        let y = max_pool2d(&x, 2).unwrap().flatten_all().unwrap();
        assert!(y.to_vec1::<f32>().unwrap()[0].is_nan());
    }

    #[test]
    fn scatter_and_gather_are_adjoint() {
        // ⟨Scatter(dy, x), u⟩ = ⟨dy, Gather(u, x)⟩ for any dy and u.
        let x = input();
        let u = (input().sin().unwrap() * 3.0).unwrap();
        let dy = max_pool2d(&input().cos().unwrap(), 2).unwrap();
        let dx = dy.apply_op2(&x, Route::scatter(2)).unwrap();
        let gu = u.apply_op2(&x, Route::gather(2)).unwrap();
        let lhs = (dx * &u)
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f64>()
            .unwrap();
        let rhs = (dy * gu)
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f64>()
            .unwrap();
        assert!(
            (lhs - rhs).abs() < 1e-12 * (1.0 + lhs.abs()),
            "{lhs} vs {rhs}"
        );
    }

    #[test]
    fn f32_matches_f64_and_bad_shapes_are_named() {
        let y64 = max_pool2d(&input(), 3).unwrap();
        let y32 = max_pool2d(&input().to_dtype(candle_core::DType::F32).unwrap(), 3).unwrap();
        let d = (y64 - y32.to_dtype(candle_core::DType::F64).unwrap())
            .unwrap()
            .abs()
            .unwrap()
            .max_keepdim(D::Minus1)
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f64>()
            .unwrap();
        assert!(d < 1e-6);
        let err = max_pool2d(&input(), 6).unwrap_err().to_string();
        assert!(
            err.contains("window 6×6") && err.contains("[2, 3, 5, 7]"),
            "{err}"
        );
        let bad = Tensor::zeros((2, 3, 3, 3), candle_core::DType::F64, &Device::Cpu).unwrap();
        let err = bad
            .apply_op2(&input(), Route::scatter(2))
            .unwrap_err()
            .to_string();
        assert!(err.contains("expected [2, 3, 2, 3]"), "{err}");
    }

    /// First maximum of each k×k window, by a plain loop in f64 (PyTorch's rule: a NaN wins and
    /// stays, ties go to the first entry in row-major order): `(n·c plane, input index)` per output.
    fn reference_argmax(x: &[f64], (planes, h, w): (usize, usize, usize), k: usize) -> Vec<usize> {
        let mut at = Vec::new();
        for q in 0..planes {
            for i in 0..h / k {
                for j in 0..w / k {
                    let mut best: Option<usize> = None;
                    for a in 0..k {
                        for b in 0..k {
                            let idx = q * h * w + (i * k + a) * w + j * k + b;
                            best = match best {
                                Some(m) if x[m].is_nan() || x[idx] <= x[m] => Some(m),
                                _ => Some(idx),
                            };
                        }
                    }
                    at.push(best.expect("non-empty window"));
                }
            }
        }
        at
    }

    #[test]
    fn kept_codes_route_as_the_direct_computation_in_f64() {
        // Ties (all-equal windows, as after a ReLU), a NaN, odd sizes (a dropped row and
        // column), and k = 2 (the straight-line path) and k = 3 (the general one).
        let (n, c, h, w) = (2, 3, 7, 9);
        let mut v: Vec<f64> = (0..n * c * h * w)
            .map(|i| ((i * 37 % 23) as f64) / 5.0 - 2.0)
            .map(|x| if x < -0.5 { 0.0 } else { x })
            .collect();
        v[40] = f64::NAN;
        let x = Tensor::from_vec(v.clone(), (n, c, h, w), &Device::Cpu).unwrap();
        let u: Vec<f64> = (0..v.len()).map(|i| (i as f64 * 0.37).sin()).collect();
        for k in [2, 3] {
            let p = Planes::new("test", x.shape(), k).unwrap();
            let at = reference_argmax(&v, (n * c, h, w), k);
            let (y, codes) = pool_with_codes(&v, &p);
            for (o, &a) in at.iter().enumerate() {
                assert!(
                    y[o] == v[a] || (y[o].is_nan() && v[a].is_nan()),
                    "k {k}, output {o}"
                );
            }
            let dy: Vec<f64> = (0..at.len()).map(|i| i as f64 + 1.0).collect();
            let mut dx = vec![0.0; v.len()];
            for (o, &a) in at.iter().enumerate() {
                dx[a] = dy[o];
            }
            assert_eq!(scatter(&dy, &codes, &p), dx, "scatter, k {k}");
            let gu: Vec<f64> = at.iter().map(|&a| u[a]).collect();
            assert_eq!(gather(&u, &codes, &p), gu, "gather, k {k}");
            // The ops with kept codes and the ops that search again agree.
            let dy_t = Tensor::from_vec(dy, (n, c, h / k, w / k), &Device::Cpu).unwrap();
            let u_t = Tensor::from_vec(u.clone(), (n, c, h, w), &Device::Cpu).unwrap();
            let kept = Some(Arc::new(codes));
            let with = |way| Route {
                k,
                way,
                codes: kept.clone(),
            };
            let searched = |way| Route {
                k,
                way,
                codes: None,
            };
            for (t, way) in [(&dy_t, Way::Scatter), (&u_t, Way::Gather)] {
                assert_eq!(
                    flat(&t.apply_op2(&x, with(way)).unwrap()),
                    flat(&t.apply_op2(&x, searched(way)).unwrap()),
                    "{way:?}, k {k}"
                );
            }
        }
    }

    #[test]
    fn second_order_through_kept_codes_equals_the_reshape_and_max_path() {
        // HVP of Σ w·pool(x)² along v: Scatter(2w·Gather(v)), run on the codes the forward kept;
        // the reference is Candle's reshape and max (f64, no ties).
        enable_double_backprop();
        let x = Var::from_tensor(&input()).unwrap();
        let v = (input().cos().unwrap() * 2.0).unwrap();
        let hvp = |pool: fn(&Tensor, usize) -> Result<Tensor>| {
            let g = loss(pool, x.as_tensor()).backward().unwrap();
            let gv = (g.get(&x).unwrap() * &v).unwrap().sum_all().unwrap();
            flat(gv.backward().unwrap().get(&x).unwrap())
        };
        let (ours, theirs) = (hvp(max_pool2d), hvp(max_pool2d_windows));
        for (i, (a, b)) in ours.iter().zip(&theirs).enumerate() {
            assert!(
                (a - b).abs() <= 1e-12 * (1.0 + b.abs()),
                "coord {i}: {a} vs {b}"
            );
        }
        assert!(ours.iter().any(|h| *h != 0.0));
    }
}
