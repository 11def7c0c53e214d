//! Standard CIFAR augmentation (random 32×32 crop of the 4-pixel zero-padded image, horizontal
//! flip with p = 0.5) fused with normalization: one pass over the bytes of each image.

use rand::Rng;
use serde::{Deserialize, Serialize};

/// Random crop after zero padding, and optional horizontal flip.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Augment {
    /// Zero padding on every side before the crop back to the original size.
    pub pad: usize,
    /// Flip horizontally with probability 1/2.
    pub flip: bool,
}

impl Augment {
    /// The standard CIFAR recipe (He et al. 2016): pad 4, random crop 32, flip.
    pub const CIFAR: Augment = Augment { pad: 4, flip: true };

    /// Draws where to crop and whether to flip.
    pub fn sample(&self, rng: &mut impl Rng) -> Placement {
        Placement {
            dy: rng.random_range(0..=2 * self.pad),
            dx: rng.random_range(0..=2 * self.pad),
            flip: self.flip && rng.random_bool(0.5),
        }
    }
}

/// One drawn augmentation: the crop's top-left corner in the padded image, and the flip.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placement {
    pub dy: usize,
    pub dx: usize,
    pub flip: bool,
}

/// Writes one C×H×W byte image into `out` as normalized f32, through the per-channel tables.
///
/// With a placement, output pixel (y, x) is the padded image at (y + dy, x' + dx), where
/// x' = W − 1 − x when flipped (crop, then flip, as torchvision does) and padded pixels are
/// byte 0 (black) before normalization. Without one, the image is copied unchanged.
pub fn write_image(
    src: &[u8],
    shape: (usize, usize, usize),
    tables: &[[f32; 256]],
    placement: Option<(Placement, usize)>,
    out: &mut [f32],
) {
    let (c, h, w) = shape;
    let plane = h * w;
    for ch in 0..c {
        let lut = &tables[ch];
        let src = &src[ch * plane..(ch + 1) * plane];
        let out = &mut out[ch * plane..(ch + 1) * plane];
        let Some((p, pad)) = placement else {
            for (o, &v) in out.iter_mut().zip(src) {
                *o = lut[v as usize];
            }
            continue;
        };
        let zero = lut[0];
        for y in 0..h {
            let row = &mut out[y * w..(y + 1) * w];
            // Source row in the unpadded image, if any.
            let sy = (y + p.dy).checked_sub(pad).filter(|&sy| sy < h);
            let Some(sy) = sy else {
                row.fill(zero);
                continue;
            };
            let srow = &src[sy * w..(sy + 1) * w];
            for (x, o) in row.iter_mut().enumerate() {
                let xc = if p.flip { w - 1 - x } else { x };
                *o = match (xc + p.dx).checked_sub(pad).filter(|&sx| sx < w) {
                    Some(sx) => lut[srow[sx] as usize],
                    None => zero,
                };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Identity tables: the output is the byte value itself.
    fn ident(c: usize) -> Vec<[f32; 256]> {
        vec![std::array::from_fn(|v| v as f32); c]
    }

    #[test]
    fn crop_offsets_and_flip_on_a_hand_made_image() {
        // 1 channel, 3×3, pixels 1..=9; pad 1 (padded image is 5×5 with a zero border).
        let src: Vec<u8> = (1..=9).collect();
        let mut out = vec![0f32; 9];
        let run = |dy, dx, flip, out: &mut Vec<f32>| {
            write_image(
                &src,
                (1, 3, 3),
                &ident(1),
                Some((Placement { dy, dx, flip }, 1)),
                out,
            );
        };
        run(1, 1, false, &mut out); // centred crop = the image
        assert_eq!(out, vec![1., 2., 3., 4., 5., 6., 7., 8., 9.]);
        run(0, 0, false, &mut out); // shifted down-right: zero top row and left column
        assert_eq!(out, vec![0., 0., 0., 0., 1., 2., 0., 4., 5.]);
        run(2, 2, false, &mut out); // shifted up-left
        assert_eq!(out, vec![5., 6., 0., 8., 9., 0., 0., 0., 0.]);
        run(1, 1, true, &mut out); // flip only
        assert_eq!(out, vec![3., 2., 1., 6., 5., 4., 9., 8., 7.]);
        run(0, 2, true, &mut out); // crop then flip
        assert_eq!(out, vec![0., 0., 0., 0., 3., 2., 0., 6., 5.]);
        write_image(&src, (1, 3, 3), &ident(1), None, &mut out);
        assert_eq!(out, vec![1., 2., 3., 4., 5., 6., 7., 8., 9.]);
    }

    #[test]
    fn placements_cover_all_offsets_and_flip_half_the_time() {
        let mut rng = crate::rng::keyed_rng(0, crate::rng::Purpose::Augment, 0, 0);
        let mut seen = [[0usize; 9]; 9];
        let mut flips = 0;
        for _ in 0..20_000 {
            let p = Augment::CIFAR.sample(&mut rng);
            seen[p.dy][p.dx] += 1;
            flips += usize::from(p.flip);
        }
        assert!(seen.iter().flatten().all(|&k| k > 150), "{seen:?}");
        // Binomial(20000, 1/2): sd ≈ 71.
        assert!((flips as f64 - 10_000.0).abs() < 400.0, "{flips}");
    }
}
