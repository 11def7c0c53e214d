//! The frame every chart shares: title, axes with ticks and their descriptions, and the legend
//! panel on the right. Text is measured with the embedded font and shrunk or wrapped to fit,
//! so that no title, axis description or legend entry runs off the figure.

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::axis::Axis;
use super::style::{self, Look};
use super::{Marker, FONT};

/// Figure size in SVG pixels (the PNG is [`crate::raster::PNG_ZOOM`] times larger).
pub(crate) const W: f64 = 760.0;
pub(crate) const H: f64 = 420.0;
/// Width of the legend panel right of the plot.
const RIGHT: f64 = 200.0;
/// Where the legend panel's content starts.
pub(crate) const PANEL_X: f64 = W - RIGHT + 8.0;
/// Font sizes (SVG pixels).
const TITLE_PX: f64 = 16.0;
const LABEL_PX: f64 = 12.5;
pub(crate) const TICK_PX: f64 = 12.0;
const LEGEND_PX: f64 = 12.0;
/// Smallest size text is shrunk to before it wraps.
const MIN_SHRINK: f64 = 0.85;
const GRID: RGBColor = RGBColor(0xDD, 0xDD, 0xDD);
const MINOR_GRID: RGBColor = RGBColor(0xF0, 0xF0, 0xF0);

/// A drawing step's outcome; errors come back as text (they name the backend's failure).
pub(crate) type Drawn = Result<(), String>;

/// Pixel scale of one rendering: 1 for the SVG, more for the supersampled PNG. Geometry is
/// written in SVG pixels and scaled here, so both formats share one layout.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Px(pub f64);

impl Px {
    pub fn i(self, v: f64) -> i32 {
        (v * self.0).round() as i32
    }
    pub fn stroke(self, v: f64) -> u32 {
        (v * self.0).round().max(1.0) as u32
    }
}

/// A plotters result as a [`Drawn`]-style result.
pub(crate) fn ok<T, E: std::fmt::Display>(r: Result<T, E>) -> Result<T, String> {
    r.map_err(|e| format!("drawing a plot: {e}"))
}

/// Width of `text` at `size` (SVG pixels), from the embedded font's advances.
pub(crate) fn text_width(text: &str, size: f64) -> f64 {
    // Measured at 8× and scaled back, so that integer rounding does not depend on the scale.
    let font = FontDesc::new(
        FontFamily::Name(FONT),
        font_size(size, Px(8.0)),
        FontStyle::Normal,
    );
    font.box_size(text)
        .map_or(0.6 * size * text.chars().count() as f64, |(w, _)| {
            w as f64 / 8.0
        })
}

/// `text` set in at most `max_width`: at `size` if it fits, else shrunk (down to
/// [`MIN_SHRINK`]), else wrapped into lines at the shrunk size (and a single word longer than
/// the width shrunk further). Returns the size and the lines.
pub(crate) fn fit(text: &str, size: f64, max_width: f64) -> (f64, Vec<String>) {
    let w = text_width(text, size);
    if w <= max_width {
        return (size, vec![text.to_string()]);
    }
    if w * MIN_SHRINK <= max_width {
        return (tenths(size * max_width / w), vec![text.to_string()]);
    }
    let size = size * MIN_SHRINK;
    let mut lines: Vec<String> = Vec::new();
    for word in text.split_whitespace() {
        match lines.last_mut() {
            Some(line) if text_width(&format!("{line} {word}"), size) <= max_width => {
                line.push(' ');
                line.push_str(word);
            }
            _ => lines.push(word.to_string()),
        }
    }
    let widest = lines
        .iter()
        .map(|l| text_width(l, size))
        .fold(0.0, f64::max);
    (tenths(size * (max_width / widest).min(1.0)), lines)
}

/// `size` rounded down to a tenth of a pixel (short font sizes in the SVG).
fn tenths(size: f64) -> f64 {
    (size * 10.0).floor() / 10.0
}

/// The plotters font size of text `size` SVG pixels high at scale `px` (plotters writes size /
/// 1.24 as the SVG's font-size).
pub(crate) fn font_size(size: f64, px: Px) -> f64 {
    size * 1.24 * px.0
}

/// Draws `lines` of text at `size`, the first anchored at `at` (pixels) by `h`, each following
/// line `1.2 × size` lower (or further right when `rotated`, which turns the text to read
/// upwards).
pub(crate) fn text<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    px: Px,
    lines: &[String],
    size: f64,
    at: (i32, i32),
    h: HPos,
    rotated: bool,
) -> Drawn {
    let mut style = TextStyle::from((FONT, font_size(size, px)).into_font())
        .color(&BLACK)
        .pos(Pos::new(h, VPos::Top));
    if rotated {
        style = style.transform(FontTransform::Rotate270);
    }
    for (k, line) in lines.iter().enumerate() {
        let step = px.i(1.2 * size * k as f64);
        let pos = if rotated {
            (at.0 + step, at.1)
        } else {
            (at.0, at.1 + step)
        };
        ok(root.draw(&Text::new(line.as_str(), pos, style.clone())))?;
    }
    Ok(())
}

/// How a legend entry shows its series.
#[derive(Debug, Clone)]
pub(crate) enum Sample {
    /// A short line in the series' look (with its marker, if any).
    Line(Look),
    /// A filled rectangle (bars).
    Bar(RGBColor),
    /// A marker alone.
    Point(Marker, RGBColor),
}

/// One legend entry.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub label: String,
    pub sample: Sample,
}

/// The chart the kinds draw into: data coordinates (axis coordinates, see [`Axis`]) → pixels.
pub(crate) type Chart<'a, DB> = ChartContext<'a, DB, Cartesian2d<Axis, Axis>>;

/// What the frame shows around a chart.
pub(crate) struct Frame<'p> {
    pub title: &'p str,
    /// Description and axis of x, then of y.
    pub x: (&'p str, &'p Axis),
    pub y: (&'p str, &'p Axis),
    /// Grid lines at the x ticks too (scatters), not only at the y ticks.
    pub vertical_grid: bool,
    pub legend: &'p [Entry],
    /// Lines of text under the x axis at each tick (bar charts wrap long column names).
    pub x_tick_lines: usize,
}

/// Draws the title, the axes (ticks, grid, descriptions) and the legend; returns the chart and
/// the y (SVG pixels) just below the legend (where a colour bar may go).
pub(crate) fn frame<'a, DB: DrawingBackend>(
    root: &'a DrawingArea<DB, Shift>,
    px: Px,
    f: &Frame<'_>,
) -> Result<(Chart<'a, DB>, f64), String> {
    let (title, (x_label, x), (y_label, y)) = (f.title, f.x, f.y);
    ok(root.fill(&WHITE))?;
    // Title: centred over the plot if it fits there, else over the figure.
    let (size, lines) = fit(title, TITLE_PX, W - 20.0);
    let widest = lines
        .iter()
        .map(|l| text_width(l, size))
        .fold(0.0, f64::max);
    let centre = if widest <= W - RIGHT - 40.0 {
        (W - RIGHT) / 2.0 + 20.0
    } else {
        W / 2.0
    };
    text(
        root,
        px,
        &lines,
        size,
        (px.i(centre), px.i(10.0)),
        HPos::Center,
        false,
    )?;
    let top = 10.0 + 1.2 * size * lines.len() as f64 + 12.0;

    // Axis descriptions, fitted to the plot's width and height.
    let (x_size, x_lines) = fit(x_label, LABEL_PX, W - RIGHT - 110.0);
    let (y_size, y_lines) = fit(y_label, LABEL_PX, H - top - 70.0);
    let x_desc_h = 1.2 * x_size * x_lines.len() as f64 + 10.0;
    let y_desc_w = 1.2 * y_size * y_lines.len() as f64 + 12.0;
    let y_tick_w = y
        .ticks
        .iter()
        .map(|t| text_width(&y.label(*t), TICK_PX))
        .fold(0.0, f64::max)
        + 12.0;
    let area = root.margin(
        px.i(top),
        px.i(x_desc_h),
        px.i(y_desc_w),
        px.i(RIGHT + 16.0),
    );
    let mut chart = ok(ChartBuilder::on(&area)
        .x_label_area_size(px.i(1.2 * TICK_PX * f.x_tick_lines.max(1) as f64 + 10.0))
        .y_label_area_size(px.i(y_tick_w))
        .build_cartesian_2d(x.clone(), y.clone()))?;
    let tick_style = TextStyle::from((FONT, font_size(TICK_PX, px)).into_font()).color(&BLACK);
    let x_fmt = |v: &f64| x.label(*v);
    let y_fmt = |v: &f64| y.label(*v);
    let mut mesh = chart.configure_mesh();
    mesh.x_label_formatter(&x_fmt)
        .y_label_formatter(&y_fmt)
        .label_style(tick_style)
        .bold_line_style(GRID.stroke_width(px.stroke(1.0)))
        .light_line_style(MINOR_GRID.stroke_width(px.stroke(1.0)))
        .axis_style(BLACK.stroke_width(px.stroke(1.0)))
        .set_all_tick_mark_size(px.i(4.0));
    if !f.vertical_grid {
        mesh.disable_x_mesh();
    }
    ok(mesh.draw())?;

    // Descriptions centred on the plotting area.
    let (xs, ys) = chart.plotting_area().get_pixel_range();
    let x_mid = (xs.start + xs.end) / 2;
    let x_top = px.i(H - x_desc_h + 2.0);
    text(
        root,
        px,
        &x_lines,
        x_size,
        (x_mid, x_top),
        HPos::Center,
        false,
    )?;
    let y_mid = (ys.start + ys.end) / 2;
    text(
        root,
        px,
        &y_lines,
        y_size,
        (px.i(6.0), y_mid),
        HPos::Center,
        true,
    )?;

    let below = draw_legend(root, px, f.legend, top)?;
    Ok((chart, below))
}

/// The legend in the right panel from `top`; returns the y (SVG pixels) below its last entry.
/// Entries wrap to the panel's width; a legend taller than the figure is set smaller.
fn draw_legend<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    px: Px,
    entries: &[Entry],
    top: f64,
) -> Result<f64, String> {
    let text_x = PANEL_X + 32.0;
    let layout = |size: f64| -> (Vec<(f64, Vec<String>)>, f64) {
        let rows: Vec<_> = entries
            .iter()
            .map(|e| fit(&e.label, size, W - text_x - 6.0))
            .collect();
        let height = rows.iter().map(|(s, l)| row_height(*s, l.len())).sum();
        (rows, height)
    };
    let mut size = LEGEND_PX;
    let (mut rows, mut height) = layout(size);
    while height > H - top - 8.0 && size > 7.0 {
        size *= 0.9;
        (rows, height) = layout(size);
    }
    let mut y0 = top + 2.0;
    for (e, (size, lines)) in entries.iter().zip(&rows) {
        let cy = y0 + 0.6 * size;
        let mid = (px.i(PANEL_X + 13.0), px.i(cy));
        match e.sample {
            Sample::Line(look) => {
                let ends = [(px.i(PANEL_X), px.i(cy)), (px.i(PANEL_X + 26.0), px.i(cy))];
                style::path(root, px, &ends, look.dash, look.colour, 2.0)?;
                if let Some(m) = look.marker {
                    style::marker(root, px, m, mid, 3.5, look.colour, false)?;
                }
            }
            Sample::Bar(colour) => {
                let (x0, x1) = (px.i(PANEL_X + 4.0), px.i(PANEL_X + 22.0));
                let corners = [(x0, px.i(cy - 5.0)), (x1, px.i(cy + 5.0))];
                ok(root.draw(&Rectangle::new(corners, colour.filled())))?;
            }
            Sample::Point(m, colour) => style::marker(root, px, m, mid, 5.0, colour, true)?,
        }
        text(
            root,
            px,
            lines,
            *size,
            (px.i(text_x), px.i(y0)),
            HPos::Left,
            false,
        )?;
        y0 += row_height(*size, lines.len());
    }
    Ok(y0)
}

/// Height of a legend entry of `lines` lines at `size`, with the gap below it.
fn row_height(size: f64, lines: usize) -> f64 {
    (1.2 * size * lines as f64).max(1.2 * size).max(12.0) + 0.6 * size
}

/// The pixel of data point (`x`, `y`) given in axis coordinates.
pub(crate) fn at<DB: DrawingBackend>(chart: &Chart<'_, DB>, x: f64, y: f64) -> (i32, i32) {
    chart.backend_coord(&(x, y))
}
