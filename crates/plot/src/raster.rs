//! PNG copies of the plots (issue 7 asks for SVG and PNG), drawn in-process: the chart is drawn
//! again by plotters' bitmap backend (see `plot.rs` for why plotters) and encoded by the `png`
//! crate. No external program and no system font: the text uses the embedded DejaVu Sans.
//!
//! The bitmap backend anti-aliases only text and hairlines, so the chart is drawn at
//! [`SUPERSAMPLE`] × the PNG's size and averaged down, which smooths every line and marker.

use plotters::prelude::{BitMapBackend, IntoDrawingArea};

use crate::plot::{Plot, Stack};
use crate::PlotError;

/// Scale of the PNG relative to the SVG's own size (1.5: 760×420 plots become 1140×630).
pub const PNG_ZOOM: f64 = 1.5;

/// Each PNG pixel averages SUPERSAMPLE × SUPERSAMPLE drawn pixels.
const SUPERSAMPLE: usize = 2;

impl Plot {
    /// The chart as PNG bytes, [`PNG_ZOOM`] times the SVG's size.
    pub fn png(&self) -> Result<Vec<u8>, PlotError> {
        self.png_at(PNG_ZOOM)
    }

    /// The chart as PNG bytes at `zoom` times the SVG's size.
    pub fn png_at(&self, zoom: f64) -> Result<Vec<u8>, PlotError> {
        let (w, h, rgb) = self.rgb(zoom)?;
        encode_png(&rgb, w, h)
    }

    /// The chart as an RGB image (width, height, pixels) at `zoom` times the SVG's size.
    fn rgb(&self, zoom: f64) -> Result<(usize, usize, Vec<u8>), PlotError> {
        crate::plot::register_embedded_font()?;
        let (w, h) = self.svg_size();
        let (w, h) = ((w * zoom).round() as usize, (h * zoom).round() as usize);
        let (big_w, big_h) = (w * SUPERSAMPLE, h * SUPERSAMPLE);
        let mut big = vec![0u8; big_w * big_h * 3];
        {
            let root = BitMapBackend::with_buffer(&mut big, (big_w as u32, big_h as u32))
                .into_drawing_area();
            let px = zoom * SUPERSAMPLE as f64;
            self.draw_on(&root, px).map_err(PlotError)?;
            root.present()
                .map_err(|e| PlotError(format!("drawing a plot's PNG: {e}")))?;
        }
        Ok((w, h, downsample(&big, w, h)))
    }
}

impl Stack {
    /// The figure as PNG bytes, [`PNG_ZOOM`] times the SVG's size: the panels' images one
    /// under the other.
    pub fn png(&self) -> Result<Vec<u8>, PlotError> {
        let mut rgb = Vec::new();
        let (mut w, mut h) = (0, 0);
        for plot in &self.plots {
            let (pw, ph, px) = plot.rgb(PNG_ZOOM)?;
            w = pw;
            h += ph;
            rgb.extend(px);
        }
        encode_png(&rgb, w, h)
    }
}

/// Averages each SUPERSAMPLE × SUPERSAMPLE block of the RGB image `big` into one pixel of a
/// `w` × `h` image.
fn downsample(big: &[u8], w: usize, h: usize) -> Vec<u8> {
    let k = SUPERSAMPLE;
    let big_w = w * k;
    let mut out = vec![0u8; w * h * 3];
    for y in 0..h {
        for x in 0..w {
            for ch in 0..3 {
                let mut sum = 0u32;
                for dy in 0..k {
                    for dx in 0..k {
                        sum += big[((y * k + dy) * big_w + x * k + dx) * 3 + ch] as u32;
                    }
                }
                out[(y * w + x) * 3 + ch] = ((sum + (k * k / 2) as u32) / (k * k) as u32) as u8;
            }
        }
    }
    out
}

/// An 8-bit RGB PNG of the `w` × `h` image `rgb`.
fn encode_png(rgb: &[u8], w: usize, h: usize) -> Result<Vec<u8>, PlotError> {
    let fail = |e: png::EncodingError| PlotError(format!("encoding a plot's PNG: {e}"));
    let mut out = Vec::new();
    let mut encoder = png::Encoder::new(&mut out, w as u32, h as u32);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header().map_err(fail)?;
    writer.write_image_data(rgb).map_err(fail)?;
    writer.finish().map_err(fail)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plot::line_chart;
    use std::io::Read;

    /// Decodes an 8-bit RGB, non-interlaced PNG (what [`encode_png`] writes) into (width,
    /// height, pixels), checking the signature and the IHDR on the way.
    fn decode_png(bytes: &[u8]) -> (usize, usize, Vec<u8>) {
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "PNG signature");
        assert_eq!(&bytes[12..16], b"IHDR", "IHDR first");
        let mut pos = 8;
        let (mut w, mut h) = (0, 0);
        let mut idat = Vec::new();
        while pos + 8 <= bytes.len() {
            let len = u32::from_be_bytes(bytes[pos..pos + 4].try_into().unwrap()) as usize;
            let kind = &bytes[pos + 4..pos + 8];
            let data = &bytes[pos + 8..pos + 8 + len];
            match kind {
                b"IHDR" => {
                    w = u32::from_be_bytes(data[0..4].try_into().unwrap()) as usize;
                    h = u32::from_be_bytes(data[4..8].try_into().unwrap()) as usize;
                    assert_eq!(
                        (data[8], data[9], data[12]),
                        (8, 2, 0),
                        "8-bit RGB, no interlace"
                    );
                }
                b"IDAT" => idat.extend_from_slice(data),
                _ => {}
            }
            pos += 12 + len;
        }
        let mut raw = Vec::new();
        flate2::read::ZlibDecoder::new(&idat[..])
            .read_to_end(&mut raw)
            .unwrap();
        let stride = w * 3;
        assert_eq!(
            raw.len(),
            h * (stride + 1),
            "one filter byte and {w} pixels a row"
        );
        let mut px = vec![0u8; h * stride];
        for y in 0..h {
            let filter = raw[y * (stride + 1)];
            for x in 0..stride {
                let v = raw[y * (stride + 1) + 1 + x];
                let a = if x >= 3 { px[y * stride + x - 3] } else { 0 };
                let b = if y > 0 { px[(y - 1) * stride + x] } else { 0 };
                let c = if x >= 3 && y > 0 {
                    px[(y - 1) * stride + x - 3]
                } else {
                    0
                };
                let pred = match filter {
                    0 => 0,
                    1 => a,
                    2 => b,
                    3 => ((a as u16 + b as u16) / 2) as u8,
                    4 => {
                        let p = a as i16 + b as i16 - c as i16;
                        let (pa, pb, pc) = (
                            (p - a as i16).abs(),
                            (p - b as i16).abs(),
                            (p - c as i16).abs(),
                        );
                        if pa <= pb && pa <= pc {
                            a
                        } else if pb <= pc {
                            b
                        } else {
                            c
                        }
                    }
                    f => panic!("filter {f}"),
                };
                px[y * stride + x] = v.wrapping_add(pred);
            }
        }
        (w, h, px)
    }

    /// Dark pixels in rows `rows` of a decoded image.
    fn dark_pixels(w: usize, px: &[u8], rows: std::ops::Range<usize>) -> usize {
        px[rows.start * w * 3..rows.end * w * 3]
            .chunks(3)
            .filter(|p| p[0] < 100 && p[1] < 100 && p[2] < 100)
            .count()
    }

    fn chart(title: &str) -> Plot {
        line_chart(
            title,
            "epoch",
            "loss",
            &[("a".into(), vec![(0.0, 1.0), (1.0, 2.0)])],
        )
    }

    #[test]
    fn the_png_has_the_requested_size_and_its_title_text_is_drawn() {
        // Text is what silently vanishes without a font: the title rows hold dark pixels with a
        // title and none without one.
        let (w, h, with) = decode_png(&chart("λ_H^1 MW ±").png().unwrap());
        assert_eq!((w, h), (1140, 630));
        let title_rows = 0..45;
        let (_, _, without) = decode_png(&chart("").png().unwrap());
        assert_eq!(dark_pixels(w, &without, title_rows.clone()), 0);
        let dark = dark_pixels(w, &with, title_rows);
        assert!(dark > 200, "the title drew {dark} dark pixels");
        let (w1, h1, _) = decode_png(&chart("x").png_at(1.0).unwrap());
        assert_eq!((w1, h1), (760, 420));
    }

    #[test]
    fn a_stack_draws_each_panel_in_its_own_band() {
        // Two panels: the figure is two plots high, each band starts with its own title, and
        // a panel without a title leaves its band's title rows blank.
        let fig = crate::plot::stack(vec![chart("first"), chart("")]);
        let (w, h, px) = decode_png(&fig.png().unwrap());
        assert_eq!((w, h), (1140, 2 * 630));
        assert!(dark_pixels(w, &px, 0..45) > 50);
        assert_eq!(dark_pixels(w, &px, 630..630 + 45), 0);
        // Each band draws its own line (the first palette colour) inside its own frame.
        let line = |rows: std::ops::Range<usize>| {
            px[rows.start * w * 3..rows.end * w * 3]
                .chunks(3)
                .filter(|p| p[0] < 40 && (90..140).contains(&p[1]) && p[2] > 150)
                .count()
        };
        assert!(line(45..600) > 300 && line(630 + 45..1230) > 300);
        let svg = fig.svg().unwrap();
        assert!(
            svg.contains(r#"height="840""#) && svg.contains("first"),
            "{svg:.300}"
        );
    }

    #[test]
    fn downsampling_averages_each_block() {
        // A 2×1 image drawn at 4×2: left block black and white (mean 128), right block white.
        let mut big = vec![255u8; 4 * 2 * 3];
        big[..3].fill(0);
        big[4 * 3..4 * 3 + 3].fill(0);
        assert_eq!(downsample(&big, 2, 1), [128, 128, 128, 255, 255, 255]);
    }
}
