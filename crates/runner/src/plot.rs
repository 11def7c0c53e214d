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
<text x="{}" y="24" text-anchor="middle" font-size="15" font-weight="bold">{}</text>
<text x="{}" y="{}" text-anchor="middle">{}</text>
<text transform="translate(18,{}) rotate(-90)" text-anchor="middle">{}</text>
"#,
        (LEFT + W - RIGHT) / 2.0,
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
    if v != 0.0 && (v.abs() >= 1e4 || v.abs() < 1e-2) {
        format!("{v:.1e}")
    } else {
        format!("{}", (v * 1e6).round() / 1e6)
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
            r#"<text x="{}" y="{}">{}</text>"#,
            x + 22.0,
            y + 4.0,
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
    let pts = || {
        series
            .iter()
            .flat_map(|(_, p)| p.iter())
            .filter(|(x, y)| x.is_finite() && y.is_finite())
    };
    let (mut x_lo, mut x_hi, mut y_lo, mut y_hi) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in pts() {
        (x_lo, x_hi, y_lo, y_hi) = (x_lo.min(x), x_hi.max(x), y_lo.min(y), y_hi.max(y));
    }
    if x_lo > x_hi {
        (x_lo, x_hi, y_lo, y_hi) = (0.0, 1.0, 0.0, 1.0);
    }
    let (y_lo, y_hi, step) = ticks(y_lo.min(0.0), y_hi);
    let mut out = String::new();
    frame(&mut out, title, x_label, y_label);
    let y = y_axis(&mut out, y_lo, y_hi, step);
    let x_span = (x_hi - x_lo).max(1e-12);
    let x = |v: f64| LEFT + (v - x_lo) / x_span * (W - RIGHT - LEFT);
    let (xt_lo, xt_hi, xt_step) = ticks(x_lo, x_hi);
    let mut t = xt_lo.max(x_lo);
    while t <= xt_hi.min(x_hi) + xt_step * 1e-9 {
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
            .filter(|(a, b)| a.is_finite() && b.is_finite())
            .map(|&(a, b)| format!("{:.1},{:.1}", x(a), y(b)))
            .collect();
        let _ = writeln!(
            out,
            r#"<polyline fill="none" stroke="{colour}" stroke-width="1.5" points="{}"/>"#,
            path.join(" ")
        );
        entries.push((name.clone(), colour, false));
    }
    legend(&mut out, &entries);
    out.push_str("</svg>\n");
    out
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
    // Ticks at round multiples of the step inside the data range (log-scale x starts anywhere).
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
