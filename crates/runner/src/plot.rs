//! Plots as hand-written SVG (no plotting dependency): a grouped bar chart of measured versus
//! published accuracy per column, and line charts of metrics along training trajectories.

use std::fmt::Write;

const W: f64 = 760.0;
const H: f64 = 420.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 200.0;
const TOP: f64 = 50.0;
const BOTTOM: f64 = 60.0;
/// Colour-blind-safe palette (Okabe-Ito).
const COLOURS: [&str; 8] = [
    "#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000",
];

/// Escapes text for SVG.
fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// A "nice" axis range and tick step covering `[lo, hi]`.
fn ticks(lo: f64, hi: f64) -> (f64, f64, f64) {
    let span = (hi - lo).max(1e-12);
    let raw = span / 5.0;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| span / s <= 6.0)
        .unwrap_or(10.0 * mag);
    // Rounding can put k·step just inside the range; widen by a step then.
    let mut t_lo = (lo / step).floor() * step;
    if t_lo > lo {
        t_lo -= step;
    }
    let mut t_hi = (hi / step).ceil() * step;
    if t_hi < hi {
        t_hi += step;
    }
    (t_lo, t_hi, step)
}

fn frame(out: &mut String, title: &str, x_label: &str, y_label: &str) {
    let _ = write!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
<text x="{}" y="24" text-anchor="middle" font-size="15" font-weight="bold"{}>{}</text>
<text x="{}" y="{}" text-anchor="middle">{}</text>
<text transform="translate(18,{}) rotate(-90)" text-anchor="middle">{}</text>
"#,
        // A title longer than the plot area is centred on the figure and squeezed into it.
        if text_width(title, 15.0 * 1.08) > W - RIGHT - LEFT {
            W / 2.0
        } else {
            (LEFT + W - RIGHT) / 2.0
        },
        squeeze(title, 15.0 * 1.08, W - 20.0),
        esc(title),
        (LEFT + W - RIGHT) / 2.0,
        H - 14.0,
        esc(x_label),
        (TOP + H - BOTTOM) / 2.0,
        esc(y_label)
    );
}

fn y_axis(out: &mut String, lo: f64, hi: f64, step: f64) -> impl Fn(f64) -> f64 {
    let y = move |v: f64| H - BOTTOM - (v - lo) / (hi - lo) * (H - TOP - BOTTOM);
    let mut t = lo;
    while t <= hi + step * 1e-9 {
        let _ = writeln!(
            out,
            r##"<line x1="{LEFT}" x2="{}" y1="{y:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" text-anchor="end">{}</text>"##,
            W - RIGHT,
            LEFT - 6.0,
            y(t) + 4.0,
            fmt_tick(t),
            y = y(t)
        );
        t += step;
    }
    let _ = writeln!(
        out,
        r#"<line x1="{LEFT}" x2="{LEFT}" y1="{TOP}" y2="{}" stroke="black"/><line x1="{LEFT}" x2="{}" y1="{}" y2="{}" stroke="black"/>"#,
        H - BOTTOM,
        W - RIGHT,
        H - BOTTOM,
        H - BOTTOM
    );
    y
}

fn fmt_tick(v: f64) -> String {
    // -0.0 (a rounded tiny negative) is labelled "0", not "-0".
    let v = if v == 0.0 { 0.0 } else { v };
    if v != 0.0 && (v.abs() >= 1e4 || v.abs() < 1e-2) {
        format!("{v:.1e}")
    } else {
        format!("{}", (v * 1e6).round() / 1e6)
    }
}

/// Estimated rendered width (px) of `text` in a sans-serif font of `px` (about 0.6 em a
/// character on average).
fn text_width(text: &str, px: f64) -> f64 {
    0.6 * px * text.chars().count() as f64
}

/// SVG attributes that squeeze `text` into `avail` px when it would be wider (so that long
/// titles and legend entries are never cut off at the figure's edge); empty otherwise.
fn squeeze(text: &str, px: f64, avail: f64) -> String {
    if text_width(text, px) > avail {
        format!(r#" textLength="{avail:.0}" lengthAdjust="spacingAndGlyphs""#)
    } else {
        String::new()
    }
}

fn legend(out: &mut String, entries: &[(String, &str, bool)]) {
    for (i, (label, colour, marker)) in entries.iter().enumerate() {
        let (x, y) = (W - RIGHT + 14.0, TOP + 10.0 + 20.0 * i as f64);
        if *marker {
            let _ = writeln!(
                out,
                r#"<circle cx="{}" cy="{y}" r="5" fill="{colour}"/>"#,
                x + 8.0
            );
        } else {
            let _ = writeln!(
                out,
                r#"<rect x="{x}" y="{}" width="16" height="10" fill="{colour}"/>"#,
                y - 5.0
            );
        }
        let _ = writeln!(
            out,
            r#"<text x="{}" y="{}"{}>{}</text>"#,
            x + 22.0,
            y + 4.0,
            squeeze(label, 12.0, RIGHT - 40.0),
            esc(label)
        );
    }
}

/// Bars of measured mean ± std per column, with the published value as a dot beside each bar.
pub fn bar_chart(
    title: &str,
    columns: &[String],
    measured: &[Option<(f64, f64)>],
    paper: &[Option<f64>],
) -> String {
    let values = measured
        .iter()
        .flatten()
        .map(|(m, s)| m + s)
        .chain(paper.iter().flatten().copied());
    let hi = values.fold(0.0f64, f64::max).max(1.0);
    let (lo, hi, step) = ticks(0.0, hi);
    let mut out = String::new();
    frame(&mut out, title, "column", "test accuracy (%)");
    let y = y_axis(&mut out, lo, hi, step);
    let slot = (W - RIGHT - LEFT) / columns.len().max(1) as f64;
    for (i, label) in columns.iter().enumerate() {
        let x0 = LEFT + slot * i as f64;
        let bw = slot * 0.4;
        if let Some(Some((m, s))) = measured.get(i) {
            let _ = writeln!(
                out,
                r#"<rect x="{:.1}" y="{:.1}" width="{bw:.1}" height="{:.1}" fill="{}"><title>{m:.2} ± {s:.2}</title></rect>"#,
                x0 + slot * 0.1,
                y(*m),
                y(lo) - y(*m),
                COLOURS[0]
            );
            let cx = x0 + slot * 0.1 + bw / 2.0;
            let _ = writeln!(
                out,
                r#"<line x1="{cx:.1}" x2="{cx:.1}" y1="{:.1}" y2="{:.1}" stroke="black"/>"#,
                y(m - s),
                y(m + s)
            );
        }
        if let Some(Some(p)) = paper.get(i) {
            let _ = writeln!(
                out,
                r#"<circle cx="{:.1}" cy="{:.1}" r="5" fill="{}"><title>paper {p:.2}</title></circle>"#,
                x0 + slot * 0.7,
                y(*p),
                COLOURS[1]
            );
        }
        let _ = writeln!(
            out,
            r#"<text x="{:.1}" y="{}" text-anchor="middle">{}</text>"#,
            x0 + slot / 2.0,
            H - BOTTOM + 18.0,
            esc(label)
        );
    }
    legend(
        &mut out,
        &[
            ("measured (mean ± std)".into(), COLOURS[0], false),
            ("paper".into(), COLOURS[1], true),
        ],
    );
    out.push_str("</svg>\n");
    out
}

/// One line per series of (x, y) points.
pub fn line_chart(
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[(String, Vec<(f64, f64)>)],
) -> String {
    line_chart_with_bounds(title, x_label, y_label, series, &[], "")
}

/// Writes a plot's SVG and its PNG beside it (see [`crate::raster`]); every results page uses it.
pub use crate::raster::write_svg_and_png;

/// Marker shapes that tell scatter series apart independently of the colour scale.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Marker {
    Circle,
    Triangle,
    Square,
    Diamond,
}

impl Marker {
    /// The i-th shape (cycling).
    pub fn nth(i: usize) -> Self {
        [Self::Circle, Self::Triangle, Self::Square, Self::Diamond][i % 4]
    }

    fn svg(self, x: f64, y: f64, fill: &str, tip: &str) -> String {
        let r = 5.0;
        let body = match self {
            Self::Circle => format!(r#"<circle cx="{x:.1}" cy="{y:.1}" r="{r}""#),
            Self::Square => format!(
                r#"<rect x="{:.1}" y="{:.1}" width="{:.1}" height="{:.1}""#,
                x - r * 0.85,
                y - r * 0.85,
                r * 1.7,
                r * 1.7
            ),
            Self::Triangle => format!(
                r#"<polygon points="{x:.1},{:.1} {:.1},{:.1} {:.1},{:.1}""#,
                y - r * 1.2,
                x - r * 1.1,
                y + r * 0.8,
                x + r * 1.1,
                y + r * 0.8
            ),
            Self::Diamond => format!(
                r#"<polygon points="{x:.1},{:.1} {:.1},{y:.1} {x:.1},{:.1} {:.1},{y:.1}""#,
                y - r * 1.2,
                x + r,
                y + r * 1.2,
                x - r
            ),
        };
        format!(
            r#"{body} fill="{fill}" stroke="black" stroke-width="0.6"><title>{}</title></{}>"#,
            esc(tip),
            self.tag()
        )
    }

    fn tag(self) -> &'static str {
        match self {
            Self::Circle => "circle",
            Self::Square => "rect",
            Self::Triangle | Self::Diamond => "polygon",
        }
    }
}

/// One scatter series: points (x, y, colour value) drawn with one marker shape, optionally
/// joined in order by a thin line (a trajectory).
#[derive(Debug, Clone)]
pub struct ScatterSeries {
    pub label: String,
    pub marker: Marker,
    pub points: Vec<(f64, f64, f64)>,
}

/// Viridis (perceptually uniform, colour-blind safe) at five stops.
const VIRIDIS: [(f64, f64, f64); 5] = [
    (68.0, 1.0, 84.0),
    (59.0, 82.0, 139.0),
    (33.0, 145.0, 140.0),
    (94.0, 201.0, 98.0),
    (253.0, 231.0, 37.0),
];

/// The viridis colour of `t` ∈ [0, 1] (clamped) as `#rrggbb`.
pub fn viridis(t: f64) -> String {
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
    format!(
        "#{:02x}{:02x}{:02x}",
        mix(a.0, b.0),
        mix(a.1, b.1),
        mix(a.2, b.2)
    )
}

/// Colour of points whose colour value is not finite.
const NO_VALUE: &str = "#bbbbbb";

/// A scatter plot coloured by a continuous value (viridis, with a labelled colour bar), one
/// marker shape per series, and with `connect` a thin line through each series in order
/// (solid for the first series, dashed for the others). Points with a non-finite x or y are
/// skipped; a non-finite colour value is drawn grey.
pub fn scatter_chart(
    title: &str,
    x_label: &str,
    y_label: &str,
    colour_label: &str,
    series: &[ScatterSeries],
    connect: bool,
) -> String {
    let finite = |p: &&(f64, f64, f64)| p.0.is_finite() && p.1.is_finite();
    let all = || series.iter().flat_map(|s| s.points.iter()).filter(finite);
    let (mut x_lo, mut x_hi, mut y_lo, mut y_hi) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    let (mut c_lo, mut c_hi) = (f64::MAX, f64::MIN);
    for &(x, y, c) in all() {
        (x_lo, x_hi, y_lo, y_hi) = (x_lo.min(x), x_hi.max(x), y_lo.min(y), y_hi.max(y));
        if c.is_finite() {
            (c_lo, c_hi) = (c_lo.min(c), c_hi.max(c));
        }
    }
    if x_lo > x_hi {
        (x_lo, x_hi, y_lo, y_hi) = (0.0, 1.0, 0.0, 1.0);
    }
    if c_lo > c_hi {
        (c_lo, c_hi) = (0.0, 1.0);
    }
    let (y_lo, y_hi, y_step) = ticks(y_lo, y_hi);
    let (x_lo, x_hi, x_step) = ticks(x_lo, x_hi);
    let (c_lo, c_hi, c_step) = ticks(c_lo, c_hi);
    let mut out = String::new();
    frame(&mut out, title, x_label, y_label);
    let y = y_axis(&mut out, y_lo, y_hi, y_step);
    let x = |v: f64| LEFT + (v - x_lo) / (x_hi - x_lo) * (W - RIGHT - LEFT);
    let mut t = x_lo;
    while t <= x_hi + x_step * 1e-9 {
        let _ = writeln!(
            out,
            r##"<line x1="{xt:.1}" x2="{xt:.1}" y1="{TOP}" y2="{}" stroke="#eee"/><text x="{xt:.1}" y="{}" text-anchor="middle">{}</text>"##,
            H - BOTTOM,
            H - BOTTOM + 16.0,
            fmt_tick(t),
            xt = x(t)
        );
        t += x_step;
    }
    let colour = |c: f64| {
        if c.is_finite() {
            viridis((c - c_lo) / (c_hi - c_lo))
        } else {
            NO_VALUE.to_string()
        }
    };
    if connect {
        for (i, s) in series.iter().enumerate() {
            let path: Vec<String> = s
                .points
                .iter()
                .filter(finite)
                .map(|&(a, b, _)| format!("{:.1},{:.1}", x(a), y(b)))
                .collect();
            let dash = if i == 0 {
                ""
            } else {
                r#" stroke-dasharray="5 3""#
            };
            let _ = writeln!(
                out,
                r##"<polyline fill="none" stroke="#777" stroke-width="1"{dash} points="{}"/>"##,
                path.join(" ")
            );
        }
    }
    for s in series {
        for &(a, b, c) in s.points.iter().filter(finite) {
            let tip = format!(
                "{}: ({}, {}), {colour_label} = {}",
                s.label,
                fmt_tick(a),
                fmt_tick(b),
                if c.is_finite() {
                    fmt_tick(c)
                } else {
                    "—".into()
                }
            );
            let _ = writeln!(out, "{}", s.marker.svg(x(a), y(b), &colour(c), &tip));
        }
    }
    // Legend: one grey marker (and line style) per series.
    for (i, s) in series.iter().enumerate() {
        let (lx, ly) = (W - RIGHT + 14.0, TOP + 10.0 + 20.0 * i as f64);
        if connect {
            let dash = if i == 0 {
                ""
            } else {
                r#" stroke-dasharray="5 3""#
            };
            let _ = writeln!(
                out,
                r##"<line x1="{lx}" x2="{}" y1="{ly}" y2="{ly}" stroke="#777"{dash}/>"##,
                lx + 16.0
            );
        }
        let _ = writeln!(out, "{}", s.marker.svg(lx + 8.0, ly, "#999", &s.label));
        let _ = writeln!(
            out,
            r#"<text x="{}" y="{}">{}</text>"#,
            lx + 22.0,
            ly + 4.0,
            esc(&s.label)
        );
    }
    colour_bar(
        &mut out,
        colour_label,
        c_lo,
        c_hi,
        c_step,
        TOP + 30.0 + 20.0 * series.len() as f64,
    );
    out.push_str("</svg>\n");
    out
}

/// A vertical colour bar in the right margin from `top` to the bottom of the plot area, with
/// tick labels and its title above it.
fn colour_bar(out: &mut String, label: &str, lo: f64, hi: f64, step: f64, top: f64) {
    const STRIPS: usize = 64;
    let (bx, bw) = (W - RIGHT + 20.0, 16.0);
    let top = top + 16.0;
    let bottom = H - BOTTOM;
    let _ = writeln!(
        out,
        r#"<text x="{bx}" y="{:.1}" class="colour-bar-label">{}</text>"#,
        top - 14.0,
        esc(label)
    );
    let h = (bottom - top) / STRIPS as f64;
    for k in 0..STRIPS {
        // Strip k (from the bottom) shows the colour of its centre value.
        let t = (k as f64 + 0.5) / STRIPS as f64;
        let _ = writeln!(
            out,
            r#"<rect class="colour-bar" x="{bx}" y="{:.2}" width="{bw}" height="{:.2}" fill="{}"/>"#,
            bottom - (k + 1) as f64 * h,
            h + 0.3,
            viridis(t)
        );
    }
    let _ = writeln!(
        out,
        r#"<rect x="{bx}" y="{top:.1}" width="{bw}" height="{:.1}" fill="none" stroke="black" stroke-width="0.6"/>"#,
        bottom - top
    );
    let mut t = lo;
    while t <= hi + step * 1e-9 {
        let ty = bottom - (t - lo) / (hi - lo) * (bottom - top);
        let _ = writeln!(
            out,
            r#"<line x1="{}" x2="{}" y1="{ty:.1}" y2="{ty:.1}" stroke="black"/><text x="{}" y="{:.1}">{}</text>"#,
            bx + bw,
            bx + bw + 4.0,
            bx + bw + 7.0,
            ty + 4.0,
            fmt_tick(t)
        );
        t += step;
    }
}

/// A dashed horizontal line at `y` in the colour of series number `series`, with a marker at
/// (`mark_x`, `y`) when given: a run's stability bound 2/η and where its λ_H^1 first meets it.
#[derive(Debug, Clone, PartialEq)]
pub struct Bound {
    pub series: usize,
    pub y: f64,
    pub mark_x: Option<f64>,
}

/// [`line_chart`] with per-series dashed bounds (the y range covers them) and a legend line
/// `bound_label` for the dashes.
pub fn line_chart_with_bounds(
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[(String, Vec<(f64, f64)>)],
    bounds: &[Bound],
    bound_label: &str,
) -> String {
    let finite = |p: &&(f64, f64)| p.0.is_finite() && p.1.is_finite();
    let (mut x_lo, mut x_hi, mut y_lo, mut y_hi) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in series.iter().flat_map(|(_, p)| p.iter()).filter(finite) {
        (x_lo, x_hi, y_lo, y_hi) = (x_lo.min(x), x_hi.max(x), y_lo.min(y), y_hi.max(y));
    }
    if x_lo > x_hi {
        (x_lo, x_hi, y_lo, y_hi) = (0.0, 1.0, 0.0, 1.0);
    }
    for b in bounds.iter().filter(|b| b.y.is_finite()) {
        y_hi = y_hi.max(b.y);
    }
    let (y_lo, y_hi, step) = ticks(y_lo.min(0.0), y_hi);
    let mut out = String::new();
    frame(&mut out, title, x_label, y_label);
    let y = y_axis(&mut out, y_lo, y_hi, step);
    let x_span = (x_hi - x_lo).max(1e-12);
    let x = |v: f64| LEFT + (v - x_lo) / x_span * (W - RIGHT - LEFT);
    let (_, _, xt_step) = ticks(x_lo, x_hi);
    // Ticks at round multiples of the step inside the data range (a log-scale x starts
    // anywhere: a start at x_lo itself gave labels like -1.5229).
    let mut t = (x_lo / xt_step - 1e-9).ceil() * xt_step;
    while t <= x_hi + xt_step * 1e-9 {
        let _ = writeln!(
            out,
            r#"<text x="{:.1}" y="{}" text-anchor="middle">{}</text>"#,
            x(t),
            H - BOTTOM + 16.0,
            fmt_tick(t)
        );
        t += xt_step;
    }
    let mut entries = Vec::new();
    for (i, (name, points)) in series.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let path: Vec<String> = points
            .iter()
            .filter(finite)
            .map(|&(a, b)| format!("{:.1},{:.1}", x(a), y(b)))
            .collect();
        let _ = writeln!(
            out,
            r#"<polyline fill="none" stroke="{colour}" stroke-width="1.5" points="{}"/>"#,
            path.join(" ")
        );
        entries.push((name.clone(), colour, false));
    }
    for b in bounds.iter().filter(|b| b.y.is_finite()) {
        let colour = COLOURS[b.series % COLOURS.len()];
        let _ = writeln!(
            out,
            r#"<line x1="{LEFT}" x2="{}" y1="{yb:.1}" y2="{yb:.1}" stroke="{colour}" stroke-width="1.2" stroke-dasharray="6,4"/>"#,
            W - RIGHT,
            yb = y(b.y)
        );
        if let Some(mx) = b.mark_x.filter(|m| m.is_finite()) {
            let _ = writeln!(
                out,
                r#"<circle cx="{:.1}" cy="{:.1}" r="5" fill="none" stroke="{colour}" stroke-width="2"/>"#,
                x(mx),
                y(b.y)
            );
        }
    }
    legend(&mut out, &entries);
    if !bounds.is_empty() {
        let (lx, ly) = (W - RIGHT + 14.0, TOP + 10.0 + 20.0 * entries.len() as f64);
        let _ = writeln!(
            out,
            r##"<line x1="{lx}" x2="{}" y1="{ly}" y2="{ly}" stroke="#555" stroke-dasharray="6,4"/><text x="{}" y="{}">{}</text>"##,
            lx + 16.0,
            lx + 22.0,
            ly + 4.0,
            esc(bound_label)
        );
    }
    out.push_str("</svg>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bar_chart_has_title_labels_legend_and_one_bar_per_measured_column() {
        let cols = vec!["η*".to_string(), "FP".to_string(), "GP & x".to_string()];
        let svg = bar_chart(
            "Row <1>",
            &cols,
            &[Some((70.0, 1.0)), None, Some((50.0, 0.0))],
            &[Some(76.9), Some(79.7), None],
        );
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert!(
            svg.contains("Row &lt;1&gt;")
                && svg.contains("GP &amp; x")
                && svg.contains("test accuracy (%)")
        );
        assert_eq!(
            svg.matches("<rect x=").count(),
            2 + 1,
            "two bars and one legend swatch"
        );
        assert_eq!(
            svg.matches("<circle").count(),
            2 + 1,
            "two paper dots and one legend marker"
        );
    }

    #[test]
    fn line_chart_x_ticks_are_round_on_a_log_axis() {
        let svg = line_chart(
            "t",
            "log10 x",
            "y",
            &[("a".to_string(), vec![(-1.5229, 1.0), (0.3, 2.0)])],
        );
        assert!(!svg.contains(">-1.5229<"), "{svg}");
        assert!(!svg.contains(">-0<"), "{svg}");
        assert!(svg.contains(">-1<") || svg.contains(">-1.0<"), "{svg}");
    }

    #[test]
    fn long_titles_and_legend_entries_are_squeezed_into_the_figure() {
        let long = "x".repeat(120);
        let svg = line_chart(
            &long,
            "x",
            "y",
            &[(long.clone(), vec![(0.0, 1.0), (1.0, 2.0)])],
        );
        assert_eq!(svg.matches("lengthAdjust").count(), 2, "{svg}");
        let short = line_chart("t", "x", "y", &[("a".into(), vec![(0.0, 1.0), (1.0, 2.0)])]);
        assert!(!short.contains("lengthAdjust"));
    }

    #[test]
    fn ticks_cover_the_range_with_round_steps() {
        let (lo, hi, step) = ticks(0.0, 79.76);
        assert_eq!((lo, hi, step), (0.0, 80.0, 20.0));
        let (lo, hi, _) = ticks(0.013, 0.0171);
        assert!(lo <= 0.013 && hi >= 0.0171);
    }

    #[test]
    fn line_chart_skips_non_finite_points() {
        let svg = line_chart(
            "t",
            "epoch",
            "loss",
            &[("a".into(), vec![(0.0, 1.0), (1.0, f64::NAN), (2.0, 0.5)])],
        );
        assert_eq!(svg.matches("<polyline").count(), 1);
        assert!(!svg.contains("NaN"));
    }

    #[test]
    fn scatter_chart_has_markers_per_series_colour_bar_and_labels() {
        let series = vec![
            ScatterSeries {
                label: "η = 0.1".into(),
                marker: Marker::Circle,
                points: vec![(0.0, 0.0, 1.0), (1.0, 2.0, 3.0), (f64::NAN, 1.0, 2.0)],
            },
            ScatterSeries {
                label: "η = 0.01".into(),
                marker: Marker::Triangle,
                points: vec![(0.0, 0.0, 1.0), (-1.0, 1.5, f64::NAN), (-2.0, 3.0, 5.0)],
            },
        ];
        let svg = scatter_chart(
            "PCA <of> predictions",
            "PC1",
            "PC2",
            "log10 λ_K^1",
            &series,
            true,
        );
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert!(
            svg.contains("PCA &lt;of&gt; predictions")
                && svg.contains(">PC1<")
                && svg.contains("log10 λ_K^1")
        );
        // Two finite circles + one legend circle; three triangles + one legend triangle.
        assert_eq!(svg.matches("<circle").count(), 2 + 1);
        assert_eq!(svg.matches("<polygon").count(), 3 + 1);
        assert_eq!(
            svg.matches("<polyline").count(),
            2,
            "one trajectory line per series"
        );
        assert_eq!(
            svg.matches("stroke-dasharray").count(),
            2,
            "second series dashed (line and legend)"
        );
        assert!(!svg.contains("NaN"));
        // The colour bar: 64 strips from the lowest to the highest colour, labelled ticks.
        assert_eq!(svg.matches(r#"class="colour-bar""#).count(), 64);
        assert!(
            svg.contains(r##"fill="#bbbbbb""##),
            "non-finite colour value drawn grey"
        );
        assert!(svg.contains(&format!(r#"fill="{}""#, viridis(0.0))) || svg.contains("#440154"));
        assert!(
            svg.contains(">1<") && svg.contains(">5<"),
            "colour-bar ticks cover 1..5"
        );
    }

    #[test]
    fn viridis_runs_from_purple_to_yellow_and_clamps() {
        assert_eq!(viridis(0.0), "#440154");
        assert_eq!(viridis(1.0), "#fde725");
        assert_eq!(viridis(-3.0), viridis(0.0));
        assert_eq!(viridis(7.0), viridis(1.0));
        assert_eq!(viridis(0.5), "#21918c");
        assert_eq!(Marker::nth(5), Marker::Triangle);
    }

    #[test]
    fn line_chart_with_bounds_draws_dashed_bounds_in_range_and_markers() {
        let svg = line_chart_with_bounds(
            "λ",
            "epoch",
            "λ_H^1",
            &[
                ("a".into(), vec![(0.0, 1.0), (1.0, 5.0)]),
                ("b".into(), vec![(0.0, 2.0), (1.0, 3.0)]),
            ],
            &[
                Bound {
                    series: 0,
                    y: 4.0,
                    mark_x: Some(0.75),
                },
                Bound {
                    series: 1,
                    y: 40.0,
                    mark_x: None,
                },
            ],
            "2/η",
        );
        // Two bounds and the legend sample are dashed; one marker; the axis reaches 40.
        assert_eq!(svg.matches("stroke-dasharray").count(), 3);
        assert_eq!(svg.matches("<circle").count(), 1);
        assert!(svg.contains(">40<") && svg.contains("2/η"));
        assert!(svg.contains(&format!("stroke=\"{}\" stroke-width=\"1.2\"", COLOURS[1])));
    }
}
