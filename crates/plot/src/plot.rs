//! Plots of the results pages: a grouped bar chart of measured versus published accuracy per
//! column, line charts of metrics along training, and scatter charts. A [`Plot`] is a chart
//! description; [`Plot::svg`] draws it as SVG and [`Plot::png`] (in [`crate::raster`]) as PNG.
//!
//! Drawn with `plotters`: one drawing routine serves its SVG and bitmap backends, so the PNG
//! needs neither an external program (librsvg's `rsvg-convert` rasterized our hand-written SVG
//! before) nor an SVG rasterizer. Its default features are off: no font-kit (system fonts,
//! fontconfig), no `image`; text goes through its `ab_glyph` renderer with one embedded font,
//! DejaVu Sans (`fonts/`, with its license), so that a PNG looks the same on every machine.
//! Cost, measured with `cargo build --timings` on the shared 2-core machine: the new crates
//! (plotters and its backends, ab_glyph, ttf-parser, png, fdeflate) build in about 18 s alone
//! (41 s of unit time inside a busy workspace build), and this module about 15 s; `resvg` with
//! text, the alternative that keeps SVG-to-PNG, took about 230 s.
//!
//! Layout (the frame, legends that wrap or shrink to fit, ticks) is ours, in `plot/`; plotters
//! draws.

mod axis;
mod draw;
mod frame;
mod style;

use std::sync::OnceLock;

use plotters::coord::Shift;
use plotters::prelude::{DrawingArea, DrawingBackend, FontStyle, IntoDrawingArea, SVGBackend};
use plotters::style::register_font;

use crate::PlotError;

/// The family name every text of a plot is set in (the SVG names it, so that a browser picks
/// its own sans-serif; the PNG uses the embedded DejaVu Sans).
pub(crate) const FONT: &str = "sans-serif";

/// DejaVu Sans 2.37 (`fonts/LICENSE`): covers the Greek and the symbols of our labels (η, λ, ±,
/// →, ≥, Σ, Δ).
static DEJAVU_SANS: &[u8] = include_bytes!("../fonts/DejaVuSans.ttf");

/// Registers the embedded font with plotters (once per process).
pub(crate) fn register_embedded_font() -> Result<(), PlotError> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok =
        *REGISTERED.get_or_init(|| register_font(FONT, FontStyle::Normal, DEJAVU_SANS).is_ok());
    if ok {
        Ok(())
    } else {
        Err(PlotError(
            "plot font: the embedded DejaVu Sans does not parse".into(),
        ))
    }
}

/// A chart: title, axis descriptions (what and in which unit), axis scales and what it draws.
#[derive(Debug, Clone)]
pub struct Plot {
    title: String,
    x_label: String,
    y_label: String,
    log_x: bool,
    log_y: bool,
    kind: Kind,
}

#[derive(Debug, Clone)]
enum Kind {
    Bars {
        columns: Vec<String>,
        measured: Vec<Option<(f64, f64)>>,
        paper: Vec<Option<f64>>,
    },
    Lines {
        series: Vec<(String, Vec<(f64, f64)>)>,
        bounds: Vec<Bound>,
        bound_label: String,
    },
    Scatter {
        colour_label: String,
        series: Vec<ScatterSeries>,
        connect: bool,
    },
    Labelled {
        series: Vec<LabelledSeries>,
    },
}

impl Plot {
    fn new(title: &str, x_label: &str, y_label: &str, kind: Kind) -> Self {
        Self {
            title: title.into(),
            x_label: x_label.into(),
            y_label: y_label.into(),
            log_x: false,
            log_y: false,
            kind,
        }
    }

    /// The same chart with a log10 x axis (values that span decades); points with x ≤ 0 are
    /// left out. Bar charts ignore it.
    pub fn log_x(mut self) -> Self {
        self.log_x = true;
        self
    }

    /// The same chart with a log10 y axis (values that span decades); points with y ≤ 0 are
    /// left out. Bar charts ignore it.
    pub fn log_y(mut self) -> Self {
        self.log_y = true;
        self
    }

    /// Size of the SVG in pixels (width, height).
    pub(crate) fn svg_size(&self) -> (f64, f64) {
        (frame::W, frame::H)
    }

    /// Draws the chart on `root`, whose pixels are `scale` SVG pixels.
    pub(crate) fn draw_on<DB: DrawingBackend>(
        &self,
        root: &DrawingArea<DB, Shift>,
        scale: f64,
    ) -> Result<(), String> {
        draw::draw(self, root, frame::Px(scale))
    }

    /// The chart as an SVG document (760 × 420 px).
    pub fn svg(&self) -> Result<String, PlotError> {
        register_embedded_font()?;
        let mut out = String::new();
        {
            let size = (frame::W as u32, frame::H as u32);
            let root = SVGBackend::with_string(&mut out, size).into_drawing_area();
            self.draw_on(&root, 1.0).map_err(PlotError)?;
            root.present()
                .map_err(|e| PlotError(format!("writing a plot's SVG: {e}")))?;
        }
        Ok(out)
    }
}

/// Plots stacked top to bottom in one figure (one SVG, one PNG), each drawn exactly as it is
/// alone: a figure of panels that share a subject but not their axes, each panel answering
/// its own question (the cost of a model against batch size, width and parameter count).
#[derive(Debug, Clone)]
pub struct Stack {
    pub(crate) plots: Vec<Plot>,
}

/// The plots as panels of one figure, in order from the top.
pub fn stack(plots: Vec<Plot>) -> Stack {
    Stack { plots }
}

impl Stack {
    /// The figure as an SVG document (760 px wide, 420 px per panel): each panel's own SVG,
    /// nested at its offset (the drawing code places everything in its figure's own pixels).
    pub fn svg(&self) -> Result<String, PlotError> {
        let (w, h) = (frame::W, frame::H);
        let mut out = format!(
            r#"<svg width="{w}" height="{}" viewBox="0 0 {w} {}" xmlns="http://www.w3.org/2000/svg">"#,
            h * self.plots.len() as f64,
            h * self.plots.len() as f64,
        );
        out.push('\n');
        for (k, plot) in self.plots.iter().enumerate() {
            let svg = plot.svg()?;
            let Some(inner) = svg.find("<svg") else {
                return Err(PlotError("a panel's SVG has no <svg> element".into()));
            };
            out.push_str(&format!(r#"<svg y="{}""#, h * k as f64));
            out.push_str(&svg[inner + 4..]);
            out.push('\n');
        }
        out.push_str("</svg>\n");
        Ok(out)
    }
}

/// Bars of measured mean ± std per column, with the published value as a dot beside each bar.
pub fn bar_chart(
    title: &str,
    columns: &[String],
    measured: &[Option<(f64, f64)>],
    paper: &[Option<f64>],
) -> Plot {
    let kind = Kind::Bars {
        columns: columns.to_vec(),
        measured: measured.to_vec(),
        paper: paper.to_vec(),
    };
    Plot::new(title, "column", "test accuracy (%)", kind)
}

/// One line per series of (x, y) points (joined in the given order; non-finite points skipped).
pub fn line_chart(
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[(String, Vec<(f64, f64)>)],
) -> Plot {
    line_chart_with_bounds(title, x_label, y_label, series, &[], "")
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
) -> Plot {
    let kind = Kind::Lines {
        series: series.to_vec(),
        bounds: bounds.to_vec(),
        bound_label: bound_label.into(),
    };
    Plot::new(title, x_label, y_label, kind)
}

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
}

/// One scatter series: points (x, y, colour value) drawn with one marker shape, optionally
/// joined in order by a thin line (a trajectory).
#[derive(Debug, Clone)]
pub struct ScatterSeries {
    pub label: String,
    pub marker: Marker,
    pub points: Vec<(f64, f64, f64)>,
}

/// The viridis colour of `t` ∈ [0, 1] (clamped) as `#rrggbb`.
pub fn viridis(t: f64) -> String {
    let c = style::viridis_rgb(t);
    format!("#{:02x}{:02x}{:02x}", c.0, c.1, c.2)
}

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
) -> Plot {
    let kind = Kind::Scatter {
        colour_label: colour_label.into(),
        series: series.to_vec(),
        connect,
    };
    Plot::new(title, x_label, y_label, kind)
}

/// One group of a labelled scatter: points (x, y, text written beside the point).
#[derive(Debug, Clone)]
pub struct LabelledSeries {
    pub label: String,
    pub points: Vec<(f64, f64, String)>,
}

/// A scatter of separate measurements (runs, say), each point labelled with its text: one
/// colour and marker per group, no line, since the points are not a sequence.
pub fn labelled_scatter(
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[LabelledSeries],
) -> Plot {
    let kind = Kind::Labelled {
        series: series.to_vec(),
    };
    Plot::new(title, x_label, y_label, kind)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The value of attribute `name` in the tag text `tag`.
    fn attr<'s>(tag: &'s str, name: &str) -> Option<&'s str> {
        let key = format!("{name}=\"");
        let start = if tag.starts_with(&key) {
            key.len()
        } else {
            tag.find(&format!(" {key}"))? + key.len() + 1
        };
        tag[start..].split('"').next()
    }

    /// The number of points of a polyline tag.
    fn points(tag: &str) -> usize {
        attr(tag, "points").unwrap().split_whitespace().count()
    }

    /// The SVG's text elements: (tag, content).
    fn texts(svg: &str) -> Vec<(&str, String)> {
        svg.split("<text ")
            .skip(1)
            .map(|chunk| {
                let (tag, rest) = chunk.split_once('>').unwrap();
                let content = rest.split("</text>").next().unwrap().trim();
                (
                    tag,
                    content
                        .replace("&lt;", "<")
                        .replace("&gt;", ">")
                        .replace("&amp;", "&"),
                )
            })
            .collect()
    }

    fn has_text(svg: &str, s: &str) -> bool {
        texts(svg).iter().any(|(_, t)| t == s)
    }

    /// Tags of element `kind` (such as `polyline`) whose attribute `name` is `value`.
    fn tags_with<'s>(svg: &'s str, kind: &str, name: &str, value: &str) -> Vec<&'s str> {
        svg.split(&format!("<{kind} "))
            .skip(1)
            .map(|c| c.split('>').next().unwrap())
            .filter(|t| attr(t, name) == Some(value))
            .collect()
    }

    fn two_points(name: &str) -> (String, Vec<(f64, f64)>) {
        (name.into(), vec![(0.0, 1.0), (1.0, 2.0)])
    }

    #[test]
    fn bar_chart_has_title_labels_legend_and_one_bar_per_measured_column() {
        let cols = vec!["η*".to_string(), "FP".to_string(), "GP & x".to_string()];
        let plot = bar_chart(
            "Row <1>",
            &cols,
            &[Some((70.0, 1.0)), None, Some((50.0, 0.0))],
            &[Some(76.9), Some(79.7), None],
        );
        let svg = plot.svg().unwrap();
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("Row &lt;1&gt;") && svg.contains("GP &amp; x"));
        for t in ["η*", "FP", "GP & x", "test accuracy (%)", "paper", "80"] {
            assert!(has_text(&svg, t), "no text {t}: {svg}");
        }
        let bars = tags_with(&svg, "rect", "fill", "#0072B2");
        assert_eq!(bars.len(), 2 + 1, "two bars and one legend swatch");
        let dots = tags_with(&svg, "circle", "fill", "#E69F00");
        assert_eq!(dots.len(), 2 + 1, "two paper dots and one legend marker");
        assert!(has_text(&svg, "measured (mean ± std)"), "{svg}");
    }

    /// The legend names only what is drawn: no "paper" without published values, no "± std"
    /// (and no whiskers) with one seed per bar.
    #[test]
    fn bar_chart_legend_lists_only_what_is_drawn() {
        let cols = vec!["Baseline".to_string(), "FP".to_string()];
        let svg = bar_chart(
            "r",
            &cols,
            &[Some((17.0, 0.0)), Some((10.0, 0.0))],
            &[None, None],
        )
        .svg()
        .unwrap();
        assert!(has_text(&svg, "measured"), "{svg}");
        assert!(!svg.contains("± std") && !has_text(&svg, "paper"), "{svg}");
        assert!(tags_with(&svg, "circle", "fill", "#E69F00").is_empty());
        let with_spread = bar_chart("r", &cols, &[Some((17.0, 1.0)), None], &[None, None])
            .svg()
            .unwrap();
        // Nothing measured yet (a pending row): no "measured" entry either.
        let pending = bar_chart("r", &cols, &[None, None], &[Some(45.0), None])
            .svg()
            .unwrap();
        assert!(!has_text(&pending, "measured") && has_text(&pending, "paper"));
        assert!(bar_chart("r", &cols, &[None, None], &[None, None])
            .svg()
            .is_ok());
        let whiskers = |svg: &str| svg.matches("stroke=\"#000000\"").count();
        assert!(
            whiskers(&with_spread) >= whiskers(&svg) + 3,
            "{with_spread}"
        );
    }

    #[test]
    fn line_chart_x_ticks_are_round_when_x_starts_anywhere() {
        let svg = line_chart(
            "t",
            "log10 x",
            "y",
            &[("a".into(), vec![(-1.5229, 1.0), (0.3, 2.0)])],
        )
        .svg()
        .unwrap();
        assert!(has_text(&svg, "-1.0") && has_text(&svg, "-0.5"), "{svg}");
        assert!(!has_text(&svg, "-1.5229") && !has_text(&svg, "-0"), "{svg}");
    }

    #[test]
    fn long_titles_axis_descriptions_and_legend_entries_stay_inside_the_figure() {
        let words = "a rather long description that goes on ".repeat(4);
        let word = "x".repeat(90);
        let series = [two_points(&words), two_points(&word), two_points("short")];
        let svg = line_chart(&words, &words, &words, &series).svg().unwrap();
        for (tag, content) in texts(&svg) {
            let size: f64 = attr(tag, "font-size").unwrap().parse().unwrap();
            let at: f64 = attr(tag, if tag.contains("rotate") { "y" } else { "x" })
                .unwrap()
                .parse()
                .unwrap();
            let width = frame::text_width(&content, size);
            let (from, to) = match attr(tag, "text-anchor") {
                Some("middle") => (at - width / 2.0, at + width / 2.0),
                Some("end") => (at - width, at),
                _ => (at, at + width),
            };
            let extent = if tag.contains("rotate") {
                frame::H
            } else {
                frame::W
            };
            assert!(
                from >= 0.0 && to <= extent + 0.5,
                "{content:?} spans {from}..{to}"
            );
        }
        // Every word is still there, wrapped over lines.
        let all: String = texts(&svg).iter().map(|(_, t)| format!("{t} ")).collect();
        assert!(all.matches("goes on").count() >= 4 * 4, "{all}");
        assert!(all.contains(&word));
    }

    #[test]
    fn line_chart_skips_non_finite_points() {
        let series = [(
            "a".into(),
            vec![(0.0, 1.0), (1.0, f64::NAN), (2.0, 0.5), (3.0, 0.7)],
        )];
        let svg = line_chart("t", "epoch", "loss", &series).svg().unwrap();
        assert!(!svg.contains("NaN"));
        let lines = tags_with(&svg, "polyline", "stroke", "#0072B2");
        // The legend sample (drawn first) and the series through its three finite points.
        let counts: Vec<usize> = lines.iter().map(|t| points(t)).collect();
        assert_eq!(counts, [2, 3]);
    }

    #[test]
    fn more_than_six_series_get_dashes_and_markers_six_do_not() {
        let series = |n: usize| -> Vec<(String, Vec<(f64, f64)>)> {
            (0..n)
                .map(|i| {
                    (
                        format!("s{i}"),
                        (0..20).map(|k| (k as f64, (i * k) as f64)).collect(),
                    )
                })
                .collect()
        };
        let six = line_chart("t", "step", "y", &series(6)).svg().unwrap();
        assert_eq!(six.matches("<polygon").count(), 0, "no markers");
        assert_eq!(tags_with(&six, "polyline", "stroke", "#E69F00").len(), 2);
        let seven = line_chart("t", "step", "y", &series(7)).svg().unwrap();
        // Series 1: dashed (many pieces) with triangles; series 2: dotted with squares.
        assert!(tags_with(&seven, "polyline", "stroke", "#E69F00").len() > 5);
        assert!(tags_with(&seven, "polygon", "fill", "#E69F00").len() >= 3);
        assert!(tags_with(&seven, "polygon", "fill", "#009E73").len() >= 3);
        assert!(tags_with(&seven, "circle", "fill", "#0072B2").len() >= 3);
    }

    #[test]
    fn a_log_y_axis_labels_decades_and_leaves_out_non_positive_points() {
        let data = vec![(0.0, 0.02), (1.0, 0.0), (2.0, 3.0), (3.0, 90.0)];
        let plot = line_chart("t", "step", "loss", &[("a".into(), data)]).log_y();
        let svg = plot.svg().unwrap();
        for t in ["0.1", "1", "10"] {
            assert!(has_text(&svg, t), "no tick {t}: {svg}");
        }
        assert!(!has_text(&svg, "0") && !has_text(&svg, "-1"));
        let lines = tags_with(&svg, "polyline", "stroke", "#0072B2");
        assert_eq!(points(lines[1]), 3, "the series without its zero");
        // The linear chart of the same data starts at 0.
        let linear = line_chart("t", "step", "loss", &[two_points("a")])
            .svg()
            .unwrap();
        assert!(has_text(&linear, "0.0") || has_text(&linear, "0"));
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
        let plot = scatter_chart(
            "PCA <of> predictions",
            "PC1",
            "PC2",
            "log10 λ_K^1",
            &series,
            true,
        );
        let svg = plot.svg().unwrap();
        for t in [
            "PCA <of> predictions",
            "PC1",
            "PC2",
            "log10 λ_K^1",
            "η = 0.1",
            "1",
            "5",
        ] {
            assert!(has_text(&svg, t), "no text {t}");
        }
        assert!(!svg.contains("NaN"));
        // Circles: two points (fill and outline each) and the legend's; triangles: three
        // points and the legend's.
        assert_eq!(svg.matches("<circle").count(), 2 * 2 + 1);
        assert_eq!(svg.matches("<polygon").count(), 3 + 1);
        // One solid trajectory, one dashed (in pieces), in the line colour.
        let trajectories = tags_with(&svg, "polyline", "stroke", "#777777");
        assert!(trajectories.len() > 4, "{}", trajectories.len());
        // The colour bar: background, 64 strips and the bar's outline are the only rects.
        assert_eq!(svg.matches("<rect").count(), 1 + 64 + 1);
        assert!(
            svg.contains(r##"fill="#BBBBBB""##),
            "non-finite colour value drawn grey"
        );
        assert!(
            svg.contains(r##"fill="#440154""##),
            "the lowest value is viridis(0)"
        );
    }

    #[test]
    fn labelled_scatter_writes_each_label_and_joins_no_points() {
        let runs = |x: f64| -> Vec<(f64, f64, String)> {
            vec![
                (x, 40.0, "small η".into()),
                (10.0 * x, 45.0, "large η".into()),
            ]
        };
        let series = [
            LabelledSeries {
                label: "early peak".into(),
                points: runs(70.0),
            },
            LabelledSeries {
                label: "peak over the run".into(),
                points: runs(900.0),
            },
            // On top of the first point, with its label: drawn, but not labelled twice.
            LabelledSeries {
                label: "again".into(),
                points: vec![(70.0, 40.0, "small η".into())],
            },
        ];
        let plot = labelled_scatter("peaks", "Tr(F) peak", "test accuracy (%)", &series).log_x();
        let svg = plot.svg().unwrap();
        let labels = texts(&svg)
            .iter()
            .filter(|(_, t)| t.ends_with(" η"))
            .count();
        assert_eq!(labels, 4);
        assert!(
            has_text(&svg, "100") && has_text(&svg, "1000"),
            "decades on the log x axis"
        );
        assert!(
            tags_with(&svg, "polyline", "stroke", "#0072B2").is_empty(),
            "no line"
        );
        assert_eq!(tags_with(&svg, "circle", "fill", "#0072B2").len(), 2 + 1);
        assert_eq!(tags_with(&svg, "polygon", "fill", "#E69F00").len(), 2 + 1);
        assert_eq!(tags_with(&svg, "polygon", "fill", "#009E73").len(), 1 + 1);
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
        let plot = line_chart_with_bounds(
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
        let svg = plot.svg().unwrap();
        assert!(
            has_text(&svg, "40") && has_text(&svg, "2/η"),
            "the axis reaches 40"
        );
        // One ring where series a meets its bound; b's bound dashed (in pieces) in b's colour.
        let rings = tags_with(&svg, "circle", "stroke", "#0072B2");
        assert_eq!((rings.len(), attr(rings[0], "fill")), (1, Some("none")));
        assert!(tags_with(&svg, "polyline", "stroke", "#E69F00").len() > 5);
    }
}
