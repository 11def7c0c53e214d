//! im2col and its adjoint col2im: unfold one image into the columns a convolution's gemm reads,
//! and fold columns back (summing overlaps), with zero padding handled by index ranges.

use super::conv_cpu::{Elem, Geom};

/// Output columns `[lo, hi)` of kernel offset `k` whose input index `o·s + k − p` lies in `[0, len)`.
fn valid_range(len: usize, k: usize, s: usize, p: usize, out: usize) -> (usize, usize) {
    let lo = if p > k { (p - k).div_ceil(s) } else { 0 };
    let hi = if len + p > k {
        ((len - 1 + p - k) / s + 1).min(out)
    } else {
        0
    };
    (lo.min(hi), hi)
}

/// Unfolds one image (C×H×W) into `cols` (C·KH·KW rows × HO·WO columns, rows `ld` apart, so
/// that several images can sit side by side in one matrix), zero outside the image.
pub(super) fn im2col<T: Elem>(x: &[T], g: &Geom, cols: &mut [T], ld: usize) {
    let (hw_out, s, p) = (g.hw_out(), g.stride, g.pad);
    for c in 0..g.c {
        let xc = &x[c * g.hw_in()..(c + 1) * g.hw_in()];
        for ki in 0..g.kh {
            for kj in 0..g.kw {
                let row = ((c * g.kh + ki) * g.kw + kj) * ld;
                let dst = &mut cols[row..row + hw_out];
                let (lo, hi) = valid_range(g.w, kj, s, p, g.wo);
                for oh in 0..g.ho {
                    let drow = &mut dst[oh * g.wo..(oh + 1) * g.wo];
                    let ih = (oh * s + ki) as isize - p as isize;
                    if ih < 0 || ih >= g.h as isize {
                        drow.fill(T::ZERO);
                        continue;
                    }
                    let xrow = &xc[ih as usize * g.w..(ih as usize + 1) * g.w];
                    drow[..lo].fill(T::ZERO);
                    drow[hi..].fill(T::ZERO);
                    if s == 1 {
                        drow[lo..hi].copy_from_slice(&xrow[lo + kj - p..hi + kj - p]);
                    } else {
                        for ow in lo..hi {
                            drow[ow] = xrow[ow * s + kj - p];
                        }
                    }
                }
            }
        }
    }
}

/// Folds `cols` (rows `ld` apart) back into one image, summing overlaps: the adjoint of
/// [`im2col`]. `dx` must be zero.
pub(super) fn col2im<T: Elem>(cols: &[T], g: &Geom, dx: &mut [T], ld: usize) {
    let (hw_out, s, p) = (g.hw_out(), g.stride, g.pad);
    for c in 0..g.c {
        let dxc = &mut dx[c * g.hw_in()..(c + 1) * g.hw_in()];
        for ki in 0..g.kh {
            for kj in 0..g.kw {
                let row = ((c * g.kh + ki) * g.kw + kj) * ld;
                let src = &cols[row..row + hw_out];
                let (lo, hi) = valid_range(g.w, kj, s, p, g.wo);
                for oh in 0..g.ho {
                    let ih = (oh * s + ki) as isize - p as isize;
                    if ih < 0 || ih >= g.h as isize {
                        continue;
                    }
                    let srow = &src[oh * g.wo..(oh + 1) * g.wo];
                    let xrow = &mut dxc[ih as usize * g.w..(ih as usize + 1) * g.w];
                    for ow in lo..hi {
                        xrow[ow * s + kj - p] += srow[ow];
                    }
                }
            }
        }
    }
}
