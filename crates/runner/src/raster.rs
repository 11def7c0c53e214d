//! PNG copies of the SVG plots (issue 7 asks for both), rendered by librsvg's `rsvg-convert`.
//!
//! Why a system tool and not a Rust rasterizer: `resvg` 0.49 with text support added ~30
//! crates and about 230 s of compile time (read-fonts 43 s, usvg 40 s, skrifa 37 s, harfrust
//! 35 s, ... measured with `cargo build --timings` on the shared 2-core machine), over the
//! 90 s a cold CI build could spare. `rsvg-convert` (Debian `librsvg2-bin`) costs no build time
//! and renders text with the system fonts (Debian `fonts-dejavu-core`); `.ci/run` installs both.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use crate::atomic::write_atomic;
use crate::error::RunError;

/// The rasterizer binary (looked up on `PATH`).
pub const RSVG_CONVERT: &str = "rsvg-convert";

/// Scale of the PNG relative to the SVG's own size (1.5: 760×420 plots become 1140×630).
pub const PNG_ZOOM: f64 = 1.5;

/// Renders SVG text to PNG bytes at `zoom` × the SVG's size.
pub fn svg_to_png(svg: &str, zoom: f64) -> Result<Vec<u8>, RunError> {
    let fail =
        |message: String| RunError::Other(format!("PNG rendering with {RSVG_CONVERT}: {message}"));
    let mut child = Command::new(RSVG_CONVERT)
        .args(["--format", "png", "--zoom", &format!("{zoom}")])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            fail(format!(
                "cannot start it ({e}); install it (Debian: apt-get install librsvg2-bin fonts-dejavu-core)"
            ))
        })?;
    // The SVG is small (tens of kB): write it all, then read the output.
    child
        .stdin
        .take()
        .ok_or_else(|| fail("no stdin".into()))?
        .write_all(svg.as_bytes())
        .map_err(|e| fail(format!("writing the SVG: {e}")))?;
    let out = child
        .wait_with_output()
        .map_err(|e| fail(format!("waiting for it: {e}")))?;
    if !out.status.success() {
        return Err(fail(format!(
            "{}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    if !out.stdout.starts_with(b"\x89PNG\r\n\x1a\n") {
        return Err(fail("its output is not a PNG".into()));
    }
    Ok(out.stdout)
}

/// Writes `svg` to `svg_path` and its PNG rendering beside it (same name, `.png`), both
/// atomically; returns the PNG's path.
pub fn write_svg_and_png(svg_path: &Path, svg: &str) -> Result<std::path::PathBuf, RunError> {
    write_atomic(svg_path, svg.as_bytes())?;
    let png_path = svg_path.with_extension("png");
    write_atomic(&png_path, &svg_to_png(svg, PNG_ZOOM)?)?;
    Ok(png_path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    /// Decodes an 8-bit RGB/RGBA, non-interlaced PNG (what rsvg-convert writes) into
    /// (width, height, channels, pixels).
    fn decode_png(bytes: &[u8]) -> (usize, usize, usize, Vec<u8>) {
        let mut pos = 8;
        let (mut w, mut h, mut channels) = (0, 0, 0);
        let mut idat = Vec::new();
        while pos + 8 <= bytes.len() {
            let len = u32::from_be_bytes(bytes[pos..pos + 4].try_into().unwrap()) as usize;
            let kind = &bytes[pos + 4..pos + 8];
            let data = &bytes[pos + 8..pos + 8 + len];
            match kind {
                b"IHDR" => {
                    w = u32::from_be_bytes(data[0..4].try_into().unwrap()) as usize;
                    h = u32::from_be_bytes(data[4..8].try_into().unwrap()) as usize;
                    assert_eq!((data[8], data[12]), (8, 0), "8-bit, non-interlaced");
                    channels = match data[9] {
                        2 => 3,
                        6 => 4,
                        t => panic!("colour type {t}"),
                    };
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
        let stride = w * channels;
        let mut px = vec![0u8; h * stride];
        for y in 0..h {
            let filter = raw[y * (stride + 1)];
            for x in 0..stride {
                let v = raw[y * (stride + 1) + 1 + x];
                let a = if x >= channels {
                    px[y * stride + x - channels]
                } else {
                    0
                };
                let b = if y > 0 { px[(y - 1) * stride + x] } else { 0 };
                let c = if x >= channels && y > 0 {
                    px[(y - 1) * stride + x - channels]
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
        (w, h, channels, px)
    }

    fn dark_pixels(png: &[u8]) -> usize {
        let (_, _, ch, px) = decode_png(png);
        px.chunks(ch)
            .filter(|p| p[0] < 100 && p[1] < 100 && p[2] < 100)
            .count()
    }

    #[test]
    fn renders_text_with_a_system_font_at_the_requested_size() {
        // Text is the part that silently vanishes when no font is found: compare a page with
        // text against the same page without it.
        let page = |text: &str| {
            format!(
                r#"<svg xmlns="http://www.w3.org/2000/svg" width="120" height="40" font-family="sans-serif"><rect width="100%" height="100%" fill="white"/><text x="4" y="30" font-size="28">{text}</text></svg>"#
            )
        };
        let with = svg_to_png(&page("λ MW"), 1.0).unwrap();
        let without = svg_to_png(&page(""), 1.0).unwrap();
        let (w, h, _, _) = decode_png(&with);
        assert_eq!((w, h), (120, 40));
        assert_eq!(dark_pixels(&without), 0);
        assert!(
            dark_pixels(&with) > 150,
            "text rendered {} dark pixels: is a font installed (fonts-dejavu-core)?",
            dark_pixels(&with)
        );
        let (w2, h2, _, _) = decode_png(&svg_to_png(&page("x"), 1.5).unwrap());
        assert_eq!((w2, h2), (180, 60));
    }

    #[test]
    fn invalid_svg_is_an_error_naming_the_tool() {
        let err = svg_to_png("<svg", 1.0).unwrap_err().to_string();
        assert!(err.contains(RSVG_CONVERT), "{err}");
    }

    #[test]
    fn writes_both_files() {
        let dir = std::env::temp_dir().join(format!("breakeven-raster-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let svg =
            crate::plot::line_chart("t", "x", "y", &[("a".into(), vec![(0.0, 1.0), (1.0, 2.0)])]);
        let png = write_svg_and_png(&dir.join("plot.svg"), &svg).unwrap();
        assert_eq!(png, dir.join("plot.png"));
        assert!(dark_pixels(&std::fs::read(&png).unwrap()) > 100);
        assert_eq!(std::fs::read_to_string(dir.join("plot.svg")).unwrap(), svg);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
