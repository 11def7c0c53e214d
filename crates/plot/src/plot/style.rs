//! How series look: the palette, line styles and marker shapes, so that series stay apart
//! without colour (a colour *and* a line style or marker once there are more than 6), and the
//! viridis scale of coloured scatters.

use plotters::coord::Shift;
use plotters::element::DashedPathElement;
use plotters::prelude::*;

use super::frame::{ok, Drawn, Px};
use super::Marker;

/// Colour-blind-safe palette: Okabe-Ito without its yellow (too light on white), then three of
/// Paul Tol's muted colours, so that up to 10 series get distinct colours.
pub(crate) const PALETTE: [RGBColor; 10] = [
    RGBColor(0x00, 0x72, 0xB2),
    RGBColor(0xE6, 0x9F, 0x00),
    RGBColor(0x00, 0x9E, 0x73),
    RGBColor(0xD5, 0x5E, 0x00),
    RGBColor(0xCC, 0x79, 0xA7),
    RGBColor(0x56, 0xB4, 0xE9),
    RGBColor(0x00, 0x00, 0x00),
    RGBColor(0x88, 0x22, 0x55),
    RGBColor(0x99, 0x99, 0x33),
    RGBColor(0x33, 0x22, 0x88),
];

/// Above this many series, colour alone does not tell them apart: lines get a dash pattern and
/// markers too.
pub(crate) const MAX_PLAIN_SERIES: usize = 6;

/// A line's dash pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dash {
    Solid,
    Dashed,
    Dotted,
}

/// Colour, dash pattern and (optional) marker of one series.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Look {
    pub colour: RGBColor,
    pub dash: Dash,
    pub marker: Option<Marker>,
}

/// The look of line series `i` of `n`: a colour each; beyond [`MAX_PLAIN_SERIES`] also a dash
/// pattern (cycling over 3) and a marker (cycling over 4), so that no two of the first 12 share
/// both and neighbours differ in each.
pub(crate) fn line_look(i: usize, n: usize) -> Look {
    let colour = PALETTE[i % PALETTE.len()];
    if n <= MAX_PLAIN_SERIES {
        return Look {
            colour,
            dash: Dash::Solid,
            marker: None,
        };
    }
    Look {
        colour,
        dash: [Dash::Solid, Dash::Dashed, Dash::Dotted][i % 3],
        marker: Some(Marker::nth(i)),
    }
}

/// Draws a polyline through `points` (pixels) with `dash`.
pub(crate) fn path<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    px: Px,
    points: &[(i32, i32)],
    dash: Dash,
    colour: RGBColor,
    width: f64,
) -> Drawn {
    let style = colour.stroke_width(px.stroke(width));
    let (on, off) = match dash {
        Dash::Solid => return solid_path(root, px, points, colour, style),
        Dash::Dashed => (7.0, 4.0),
        Dash::Dotted => (1.5, 3.5),
    };
    let (on, off) = (px.i(on * width.max(1.0)), px.i(off * width.max(1.0)));
    ok(root.draw(&DashedPathElement::new(
        points.iter().copied(),
        on,
        off,
        style,
    )))
}

/// A solid polyline. Plotters' bitmap backend joins thick segments with unlimited miters, so
/// where a line turns back on itself (a noisy trajectory in the clean-vs-noisy plane) the join
/// becomes a spike across the whole chart. On the raster (`px` > 1) the line is cut at every
/// turn sharper than 120°, each piece drawn on its own, and a dot of the line's width fills
/// the cut; SVG renderers limit miters themselves and get one polyline.
fn solid_path<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    px: Px,
    points: &[(i32, i32)],
    colour: RGBColor,
    style: ShapeStyle,
) -> Drawn {
    if px.0 <= 1.0 || points.len() < 3 {
        return ok(root.draw(&PathElement::new(points.to_vec(), style)));
    }
    let sharp = |a: (i32, i32), b: (i32, i32), c: (i32, i32)| {
        let (u, v) = ((b.0 - a.0, b.1 - a.1), (c.0 - b.0, c.1 - b.1));
        let dot = f64::from(u.0) * f64::from(v.0) + f64::from(u.1) * f64::from(v.1);
        let norms = f64::from(u.0).hypot(f64::from(u.1)) * f64::from(v.0).hypot(f64::from(v.1));
        norms > 0.0 && dot < -0.5 * norms
    };
    let mut start = 0;
    for k in 1..points.len() - 1 {
        if sharp(points[k - 1], points[k], points[k + 1]) {
            ok(root.draw(&PathElement::new(points[start..=k].to_vec(), style)))?;
            let r = (style.stroke_width / 2).max(1) as i32;
            ok(root.draw(&Circle::new(points[k], r, colour.filled())))?;
            start = k;
        }
    }
    ok(root.draw(&PathElement::new(points[start..].to_vec(), style)))
}

/// Draws marker `m` of radius `r` (SVG pixels) centred at `at` (pixels), filled with `fill`,
/// with a thin dark outline when `outline`.
pub(crate) fn marker<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    px: Px,
    m: Marker,
    at: (i32, i32),
    r: f64,
    fill: RGBColor,
    outline: bool,
) -> Drawn {
    let (x, y) = (at.0 as f64, at.1 as f64);
    let r = r * px.0;
    let p = |dx: f64, dy: f64| ((x + dx * r).round() as i32, (y + dy * r).round() as i32);
    let edge = BLACK.mix(0.8).stroke_width(px.stroke(0.7));
    let corners = match m {
        Marker::Circle => {
            let radius = r.round() as i32;
            ok(root.draw(&Circle::new(at, radius, fill.filled())))?;
            if outline {
                ok(root.draw(&Circle::new(at, radius, edge)))?;
            }
            return Ok(());
        }
        Marker::Square => vec![
            p(-0.85, -0.85),
            p(0.85, -0.85),
            p(0.85, 0.85),
            p(-0.85, 0.85),
        ],
        Marker::Triangle => vec![p(0.0, -1.2), p(1.1, 0.8), p(-1.1, 0.8)],
        Marker::Diamond => vec![p(0.0, -1.2), p(1.0, 0.0), p(0.0, 1.2), p(-1.0, 0.0)],
    };
    let mut ring = corners.clone();
    ok(root.draw(&Polygon::new(corners, fill.filled())))?;
    if outline {
        ring.push(ring[0]);
        ok(root.draw(&PathElement::new(ring, edge)))?;
    }
    Ok(())
}

/// Viridis (perceptually uniform, colour-blind safe) at five stops.
const VIRIDIS: [(f64, f64, f64); 5] = [
    (68.0, 1.0, 84.0),
    (59.0, 82.0, 139.0),
    (33.0, 145.0, 140.0),
    (94.0, 201.0, 98.0),
    (253.0, 231.0, 37.0),
];

/// The viridis colour of `t` ∈ [0, 1] (clamped; a non-finite `t` counts as 0).
pub(crate) fn viridis_rgb(t: f64) -> RGBColor {
    let t = if t.is_finite() {
        t.clamp(0.0, 1.0)
    } else {
        0.0
    };
    let pos = t * (VIRIDIS.len() - 1) as f64;
    let i = (pos.floor() as usize).min(VIRIDIS.len() - 2);
    let f = pos - i as f64;
    let (a, b) = (VIRIDIS[i], VIRIDIS[i + 1]);
    let mix = |u: f64, v: f64| (u + (v - u) * f).round() as u8;
    RGBColor(mix(a.0, b.0), mix(a.1, b.1), mix(a.2, b.2))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A thick line that turns back on itself stays near its points on the raster: no miter
    /// spike runs off past the turn (plotters' unlimited miter reached the canvas edge here).
    #[test]
    fn a_line_turning_back_draws_no_spike() {
        let (w, h) = (400usize, 200usize);
        let mut buf = vec![255u8; w * h * 3];
        {
            let root =
                BitMapBackend::with_buffer(&mut buf, (w as u32, h as u32)).into_drawing_area();
            let points = [(50, 100), (200, 100), (60, 104), (150, 110)];
            path(&root, Px(7.0), &points, Dash::Solid, PALETTE[0], 2.0).unwrap();
            root.present().unwrap();
        }
        // Stroke 14 px: every drawn pixel lies within 7 px (+1 for rounding) of the points' box.
        let drawn: Vec<(usize, usize)> = buf
            .chunks(3)
            .enumerate()
            .filter(|(_, p)| p[0] < 128)
            .map(|(i, _)| (i % w, i / w))
            .collect();
        assert!(!drawn.is_empty());
        let max_x = drawn.iter().map(|p| p.0).max().unwrap();
        let (min_y, max_y) = (
            drawn.iter().map(|p| p.1).min().unwrap(),
            drawn.iter().map(|p| p.1).max().unwrap(),
        );
        let min_x = drawn.iter().map(|p| p.0).min().unwrap();
        assert!(
            min_x >= 42 && max_x <= 208,
            "the line spans x = {min_x}..{max_x}"
        );
        assert!(min_y >= 92 && max_y <= 118, "rows {min_y}..{max_y}");
    }

    #[test]
    fn up_to_six_series_are_plain_lines_in_distinct_colours() {
        let looks: Vec<Look> = (0..6).map(|i| line_look(i, 6)).collect();
        for (i, a) in looks.iter().enumerate() {
            assert_eq!((a.dash, a.marker), (Dash::Solid, None));
            assert!(looks[..i].iter().all(|b| b.colour != a.colour));
        }
    }

    #[test]
    fn beyond_six_series_each_has_its_colour_and_its_own_dash_and_marker() {
        for n in [7, 10] {
            let looks: Vec<Look> = (0..n).map(|i| line_look(i, n)).collect();
            for (i, a) in looks.iter().enumerate() {
                assert!(a.marker.is_some(), "series {i} of {n} has no marker");
                for b in &looks[..i] {
                    assert_ne!(a.colour, b.colour, "{n} series: colours repeat");
                    assert!(
                        (a.dash, a.marker) != (b.dash, b.marker),
                        "{n} series: two share dash and marker"
                    );
                }
            }
        }
        // Past the palette, dash and marker still tell the first 12 apart.
        let looks: Vec<Look> = (0..12).map(|i| line_look(i, 12)).collect();
        for (i, a) in looks.iter().enumerate() {
            assert!(looks[..i]
                .iter()
                .all(|b| (a.colour, a.dash, a.marker) != (b.colour, b.dash, b.marker)));
        }
    }
}
