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
//! `Scatter` and `Gather` are the two ways of one op, [`Route`].
//!
//! None of them passes a gradient to `x` through the index map (its derivative is zero almost
//! everywhere).

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
    x.contiguous()?.apply_op1(MaxPool { k })
}

/// Branch-free step of the running maximum (the comparison is a coin flip on real data): take
/// `v` when it is greater, or NaN, unless a NaN is already held (`!(v <= best)` is
/// `v > best || v.is_nan()`; `&` and `!` on bools keep it a select).
#[inline(always)]
fn step<T: Elem + PartialOrd>((best, best_at): (T, usize), (v, at): (T, usize)) -> (T, usize) {
    #[allow(clippy::neg_cmp_op_on_partial_ord, clippy::nonminimal_bool)]
    let take = !(v <= best) & !best.is_nan();
    (if take { v } else { best }, if take { at } else { best_at })
}

/// Input and output plane sizes of a k×k pool of `dims` (N×C×H×W), checked.
#[derive(Debug, Clone, Copy)]
struct Planes {
    k: usize,
    w: usize,
    hw: usize,
    ho: usize,
    wo: usize,
}

impl Planes {
    fn new(op: &str, shape: &Shape, k: usize) -> Result<Self> {
        let (_, _, h, w) = shape.dims4()?;
        if k == 0 || h < k || w < k {
            candle_core::bail!("{op}: window {k}×{k} does not fit input {:?}", shape.dims());
        }
        Ok(Planes {
            k,
            w,
            hw: h * w,
            ho: h / k,
            wo: w / k,
        })
    }

    fn out_len(&self) -> usize {
        self.ho * self.wo
    }

    /// Index in the input plane of the first maximum of output `(i, j)`'s window. A NaN wins,
    /// as in PyTorch, and then stays (nothing is greater than NaN).
    #[inline]
    fn argmax<T: Elem + PartialOrd>(&self, x: &[T], i: usize, j: usize) -> usize {
        let (k, w) = (self.k, self.w);
        let start = i * k * w + j * k;
        let window = &x[start..start + (k - 1) * w + k];
        let (mut best, mut best_at) = (window[0], 0);
        for a in 0..k {
            for (b, &v) in window[a * w..a * w + k].iter().enumerate() {
                (best, best_at) = step((best, best_at), (v, a * w + b));
            }
        }
        start + best_at
    }

    /// Calls `f(j, a)` with the input-plane index `a` of the first maximum of each window
    /// `(i, j)` of output row `i`. 2×2 windows (every max-pool of our models) take a
    /// straight-line path over two input rows.
    #[inline]
    fn row_argmax<T: Elem + PartialOrd>(&self, x: &[T], i: usize, mut f: impl FnMut(usize, usize)) {
        if self.k != 2 {
            for j in 0..self.wo {
                f(j, self.argmax(x, i, j));
            }
            return;
        }
        let (w, top) = (self.w, 2 * i * self.w);
        let (r0, r1) = (
            &x[top..top + 2 * self.wo],
            &x[top + w..top + w + 2 * self.wo],
        );
        for (j, (p, q)) in r0.chunks_exact(2).zip(r1.chunks_exact(2)).enumerate() {
            let at = top + 2 * j;
            let m = step((p[0], at), (p[1], at + 1));
            let m = step(m, (q[0], at + w));
            f(j, step(m, (q[1], at + w + 1)).1);
        }
    }
}

/// Planes per parallel task: enough work per task to be worth a split.
fn planes_per_task(p: &Planes) -> usize {
    (16_384 / p.hw.max(1)).max(1)
}

/// `out[plane][o] = u[plane][a(x)[o]]`: `MaxPool` (with `u = x`) and `Gather`.
fn gather<T: Elem + PartialOrd>(u: &[T], x: &[T], p: &Planes) -> Vec<T> {
    let mut out = vec![T::ZERO; u.len() / p.hw * p.out_len()];
    let per = planes_per_task(p);
    out.par_chunks_mut(per * p.out_len())
        .enumerate()
        .for_each(|(t, chunk)| {
            for (q, o) in chunk.chunks_exact_mut(p.out_len()).enumerate() {
                let plane = (t * per + q) * p.hw;
                let (u, x) = (&u[plane..plane + p.hw], &x[plane..plane + p.hw]);
                for (i, row) in o.chunks_exact_mut(p.wo).enumerate() {
                    p.row_argmax(x, i, |j, a| row[j] = u[a]);
                }
            }
        });
    out
}

/// `dx[plane][a(x)[o]] = dy[plane][o]`, zero elsewhere: `Scatter`.
fn scatter<T: Elem + PartialOrd>(dy: &[T], x: &[T], p: &Planes) -> Vec<T> {
    let mut dx = vec![T::ZERO; x.len()];
    let per = planes_per_task(p);
    dx.par_chunks_mut(per * p.hw)
        .enumerate()
        .for_each(|(t, chunk)| {
            for (q, d) in chunk.chunks_exact_mut(p.hw).enumerate() {
                let plane = t * per + q;
                let x = &x[plane * p.hw..(plane + 1) * p.hw];
                let g = &dy[plane * p.out_len()..(plane + 1) * p.out_len()];
                for (i, row) in g.chunks_exact(p.wo).enumerate() {
                    p.row_argmax(x, i, |j, a| d[a] = row[j]);
                }
            }
        });
    dx
}

/// y = max over each k×k window of x.
struct MaxPool {
    k: usize,
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
        Ok((T::wrap(gather(x, x, &p)), Shape::from((n, c, p.ho, p.wo))))
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
        apply_bwd(dy, x, Route::scatter(self.k)).map(Some)
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
#[derive(Debug, Clone, Copy)]
struct Route {
    k: usize,
    way: Way,
}

impl Route {
    fn scatter(k: usize) -> Self {
        Route {
            k,
            way: Way::Scatter,
        }
    }

    fn gather(k: usize) -> Self {
        Route {
            k,
            way: Way::Gather,
        }
    }

    fn adjoint(self) -> Self {
        match self.way {
            Way::Scatter => Route::gather(self.k),
            Way::Gather => Route::scatter(self.k),
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
        let out = match self.way {
            Way::Scatter => scatter(v, x, &p),
            Way::Gather => gather(v, x, &p),
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
}
