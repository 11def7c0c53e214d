//! Each kind of [`Plot`] drawn into the shared frame: bars, lines with bounds, scatters
//! coloured by a value, and labelled scatters.

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::HPos;

use super::axis::Axis;
use super::frame::{at, fit, frame, ok, text, text_width, Drawn, Entry, Frame, Px, Sample};
use super::frame::{PANEL_X, TICK_PX};
use super::style::{self, line_look, Dash, Look, PALETTE};
use super::{Bound, Kind, LabelledSeries, Marker, Plot, ScatterSeries};

/// Scatter points whose colour value is not finite.
const NO_VALUE: RGBColor = RGBColor(0xBB, 0xBB, 0xBB);
/// Trajectory lines and legend samples of scatters.
const NEUTRAL: RGBColor = RGBColor(0x77, 0x77, 0x77);

/// Draws `plot` on `root` at pixel scale `px`.
pub(crate) fn draw<DB: DrawingBackend>(
    plot: &Plot,
    root: &DrawingArea<DB, Shift>,
    px: Px,
) -> Drawn {
    match &plot.kind {
        Kind::Bars {
            columns,
            measured,
            paper,
        } => bars(plot, root, px, columns, measured, paper),
        Kind::Lines {
            series,
            bounds,
            bound_label,
        } => lines(plot, root, px, series, bounds, bound_label),
        Kind::Scatter {
            colour_label,
            series,
            connect,
        } => scatter(plot, root, px, colour_label, series, *connect),
        Kind::Labelled { series } => labelled(plot, root, px, series),
    }
}

impl Plot {
    /// The frame of this plot over axes `x` and `y`.
    fn frame<'p>(
        &'p self,
        x: &'p Axis,
        y: &'p Axis,
        vertical_grid: bool,
        legend: &'p [Entry],
    ) -> Frame<'p> {
        Frame {
            title: &self.title,
            x: (&self.x_label, x),
            y: (&self.y_label, y),
            vertical_grid,
            legend,
            x_tick_lines: 1,
        }
    }
}

/// Fraction of an axis' span left free beyond the data where markers would touch the frame.
const MARGIN: f64 = 0.04;

/// A log axis over `values`, or a linear one (see [`Axis::linear`]).
fn axis(
    log: bool,
    values: impl IntoIterator<Item = f64>,
    with_zero: bool,
    pad: bool,
    margin: f64,
) -> Axis {
    if log {
        Axis::log(values, margin)
    } else {
        Axis::linear(values, with_zero, pad, margin)
    }
}

/// The points both axes can show, in axis coordinates.
fn shown<'p>(
    x: &'p Axis,
    y: &'p Axis,
    points: impl IntoIterator<Item = (f64, f64)> + 'p,
) -> impl Iterator<Item = (f64, f64)> + 'p {
    points
        .into_iter()
        .filter_map(|(a, b)| Some((x.to_axis(a)?, y.to_axis(b)?)))
}

fn bars<DB: DrawingBackend>(
    plot: &Plot,
    root: &DrawingArea<DB, Shift>,
    px: Px,
    columns: &[String],
    measured: &[Option<(f64, f64)>],
    paper: &[Option<f64>],
) -> Drawn {
    let values = measured.iter().flatten().flat_map(|&(m, s)| [m - s, m + s]);
    let y = Axis::linear(
        values.chain(paper.iter().flatten().copied()),
        true,
        true,
        MARGIN,
    );
    let x = Axis::categories(columns.len());
    let (bar, dot) = (PALETTE[0], PALETTE[1]);
    // The legend names only what is drawn: "± std" where some bar has a spread (one seed has
    // none), "paper" where some published value exists.
    let spread = measured.iter().flatten().any(|&(_, s)| s > 0.0);
    let mut legend = Vec::new();
    if measured.iter().flatten().any(|&(m, _)| m.is_finite()) {
        legend.push(Entry {
            label: if spread {
                "measured (mean ± std)"
            } else {
                "measured"
            }
            .into(),
            sample: Sample::Bar(bar),
        });
    }
    if paper.iter().flatten().any(|v| v.is_finite()) {
        legend.push(Entry {
            label: "paper".into(),
            sample: Sample::Point(Marker::Circle, dot),
        });
    }
    // Column names wrap where they do not fit their slot (the plot is about 500 px wide).
    let slot = 500.0 / columns.len().max(1) as f64;
    let names: Vec<(f64, Vec<String>)> = columns
        .iter()
        .map(|c| fit(c, TICK_PX, 0.95 * slot))
        .collect();
    let frame_spec = Frame {
        x_tick_lines: names.iter().map(|(_, l)| l.len()).max().unwrap_or(1),
        ..plot.frame(&x, &y, false, &legend)
    };
    let (chart, _) = frame(root, px, &frame_spec)?;
    let black = BLACK.stroke_width(px.stroke(1.0));
    for (i, (size, lines)) in names.iter().enumerate() {
        let c = i as f64;
        // Non-finite values draw nothing (NaN would land at pixel 0).
        let mean_std = measured
            .get(i)
            .copied()
            .flatten()
            .filter(|v| v.0.is_finite());
        if let Some((m, s)) = mean_std {
            let s = if s.is_finite() { s } else { 0.0 };
            let corners = [at(&chart, c + 0.1, 0.0), at(&chart, c + 0.5, m)];
            ok(root.draw(&Rectangle::new(corners, bar.filled())))?;
            // No whisker without a spread (one seed): a flat tick would read as a measured 0.
            let whiskers = if s > 0.0 { 3 } else { 0 };
            for (from, to) in [
                ((c + 0.3, m - s), (c + 0.3, m + s)),
                ((c + 0.26, m - s), (c + 0.34, m - s)),
                ((c + 0.26, m + s), (c + 0.34, m + s)),
            ]
            .into_iter()
            .take(whiskers)
            {
                let ends = vec![at(&chart, from.0, from.1), at(&chart, to.0, to.1)];
                ok(root.draw(&PathElement::new(ends, black)))?;
            }
        }
        if let Some(p) = paper.get(i).copied().flatten().filter(|p| p.is_finite()) {
            style::marker(
                root,
                px,
                Marker::Circle,
                at(&chart, c + 0.7, p),
                5.0,
                dot,
                true,
            )?;
        }
        let (cx, bottom) = at(&chart, c + 0.5, y.lo);
        text(
            root,
            px,
            lines,
            *size,
            (cx, bottom + px.i(6.0)),
            HPos::Center,
            false,
        )?;
    }
    Ok(())
}

fn lines<DB: DrawingBackend>(
    plot: &Plot,
    root: &DrawingArea<DB, Shift>,
    px: Px,
    series: &[(String, Vec<(f64, f64)>)],
    bounds: &[Bound],
    bound_label: &str,
) -> Drawn {
    let finite = |p: &&(f64, f64)| p.0.is_finite() && p.1.is_finite();
    let all = || series.iter().flat_map(|(_, p)| p.iter().filter(finite));
    let x = axis(plot.log_x, all().map(|p| p.0), false, false, 0.0);
    let bound_ys = bounds.iter().map(|b| b.y);
    // Lines may touch a linear frame (its ends are round steps); a log one gets a margin.
    let y_margin = if plot.log_y { MARGIN } else { 0.0 };
    let y = axis(
        plot.log_y,
        all().map(|p| p.1).chain(bound_ys),
        true,
        true,
        y_margin,
    );
    let n = series.len();
    let mut legend: Vec<Entry> = series
        .iter()
        .enumerate()
        .map(|(i, (name, _))| Entry {
            label: name.clone(),
            sample: Sample::Line(line_look(i, n)),
        })
        .collect();
    if !bounds.is_empty() {
        let look = Look {
            colour: NEUTRAL,
            dash: Dash::Dashed,
            marker: None,
        };
        legend.push(Entry {
            label: bound_label.into(),
            sample: Sample::Line(look),
        });
    }
    let (chart, _) = frame(root, px, &plot.frame(&x, &y, false, &legend))?;
    for (i, (_, points)) in series.iter().enumerate() {
        let look = line_look(i, n);
        let pixels: Vec<(i32, i32)> = shown(&x, &y, points.iter().copied())
            .map(|(a, b)| at(&chart, a, b))
            .collect();
        style::path(root, px, &pixels, look.dash, look.colour, 2.0)?;
        // Markers at about 8 points per line, staggered between series so they do not pile up;
        // a lone point gets one either way.
        let marker = look
            .marker
            .or((pixels.len() == 1).then_some(Marker::Circle));
        if let Some(m) = marker {
            let every = (pixels.len() / 8).max(1);
            let offset = i * every / n.max(1);
            for p in pixels.iter().skip(offset).step_by(every) {
                style::marker(root, px, m, *p, 3.5, look.colour, false)?;
            }
        }
    }
    for b in bounds {
        let Some(yb) = y.to_axis(b.y) else { continue };
        let colour = line_look(b.series, n).colour;
        let ends = [at(&chart, x.lo, yb), at(&chart, x.hi, yb)];
        style::path(root, px, &ends, Dash::Dashed, colour, 1.5)?;
        if let Some(mx) = b.mark_x.and_then(|m| x.to_axis(m)) {
            let ring = colour.stroke_width(px.stroke(2.0));
            ok(root.draw(&Circle::new(at(&chart, mx, yb), px.i(5.0), ring)))?;
        }
    }
    Ok(())
}

fn scatter<DB: DrawingBackend>(
    plot: &Plot,
    root: &DrawingArea<DB, Shift>,
    px: Px,
    colour_label: &str,
    series: &[ScatterSeries],
    connect: bool,
) -> Drawn {
    let all = || series.iter().flat_map(|s| s.points.iter());
    let xs = all().filter(|p| p.1.is_finite()).map(|p| p.0);
    let x = axis(plot.log_x, xs, false, true, MARGIN);
    let ys = all().filter(|p| p.0.is_finite()).map(|p| p.1);
    let y = axis(plot.log_y, ys, false, true, MARGIN);
    let c = Axis::linear(all().map(|p| p.2), false, true, 0.0);
    let dash = |i: usize| if i == 0 { Dash::Solid } else { Dash::Dashed };
    let legend: Vec<Entry> = series
        .iter()
        .enumerate()
        .map(|(i, s)| Entry {
            label: s.label.clone(),
            sample: if connect {
                Sample::Line(Look {
                    colour: NEUTRAL,
                    dash: dash(i),
                    marker: Some(s.marker),
                })
            } else {
                Sample::Point(s.marker, NO_VALUE)
            },
        })
        .collect();
    let (chart, below) = frame(root, px, &plot.frame(&x, &y, true, &legend))?;
    let pixels = |s: &ScatterSeries| -> Vec<((i32, i32), f64)> {
        s.points
            .iter()
            .filter_map(|&(a, b, v)| Some((at(&chart, x.to_axis(a)?, y.to_axis(b)?), v)))
            .collect()
    };
    if connect {
        for (i, s) in series.iter().enumerate() {
            let line: Vec<(i32, i32)> = pixels(s).into_iter().map(|(p, _)| p).collect();
            style::path(root, px, &line, dash(i), NEUTRAL, 1.0)?;
        }
    }
    for s in series {
        for (p, v) in pixels(s) {
            let fill = if v.is_finite() {
                style::viridis_rgb((v - c.lo) / (c.hi - c.lo))
            } else {
                NO_VALUE
            };
            style::marker(root, px, s.marker, p, 5.0, fill, true)?;
        }
    }
    let bottom = chart.plotting_area().get_pixel_range().1.end;
    colour_bar(root, px, colour_label, &c, below + 8.0, bottom)
}

/// A vertical viridis bar in the legend panel from `top` (SVG pixels) down to `bottom`
/// (pixels), titled `label`, with ticks of `c`.
fn colour_bar<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    px: Px,
    label: &str,
    c: &Axis,
    top: f64,
    bottom: i32,
) -> Drawn {
    const STRIPS: usize = 64;
    let (size, lines) = fit(label, TICK_PX, super::frame::W - PANEL_X - 8.0);
    text(
        root,
        px,
        &lines,
        size,
        (px.i(PANEL_X + 4.0), px.i(top)),
        HPos::Left,
        false,
    )?;
    let bar_top = px.i(top + 1.2 * size * lines.len() as f64 + 8.0);
    let (x0, x1) = (px.i(PANEL_X + 12.0), px.i(PANEL_X + 28.0));
    let height = (bottom - bar_top) as f64;
    let y_of = |t: f64| bottom - ((t - c.lo) / (c.hi - c.lo) * height).round() as i32;
    for k in 0..STRIPS {
        // Strip k (from the bottom) shows the colour of its centre value.
        let (lo, hi) = (k as f64 / STRIPS as f64, (k + 1) as f64 / STRIPS as f64);
        let fill = style::viridis_rgb((lo + hi) / 2.0);
        let rows = |f: f64| bottom - (f * height).round() as i32;
        ok(root.draw(&Rectangle::new(
            [(x0, rows(hi)), (x1, rows(lo))],
            fill.filled(),
        )))?;
    }
    let edge = BLACK.stroke_width(px.stroke(1.0));
    ok(root.draw(&Rectangle::new([(x0, bar_top), (x1, bottom)], edge)))?;
    for t in &c.ticks {
        let ty = y_of(*t);
        ok(root.draw(&PathElement::new(
            vec![(x1, ty), (x1 + px.i(4.0), ty)],
            edge,
        )))?;
        let at = (x1 + px.i(7.0), ty - px.i(0.6 * TICK_PX));
        text(root, px, &[c.label(*t)], TICK_PX, at, HPos::Left, false)?;
    }
    Ok(())
}

fn labelled<DB: DrawingBackend>(
    plot: &Plot,
    root: &DrawingArea<DB, Shift>,
    px: Px,
    series: &[LabelledSeries],
) -> Drawn {
    const POINT_PX: f64 = 10.5;
    let finite = |p: &&(f64, f64, String)| p.0.is_finite() && p.1.is_finite();
    let all = || series.iter().flat_map(|s| s.points.iter().filter(finite));
    let x = axis(plot.log_x, all().map(|p| p.0), false, true, MARGIN);
    let y = axis(plot.log_y, all().map(|p| p.1), false, true, MARGIN);
    let legend: Vec<Entry> = series
        .iter()
        .enumerate()
        .map(|(i, s)| Entry {
            label: s.label.clone(),
            sample: Sample::Point(Marker::nth(i), PALETTE[i % PALETTE.len()]),
        })
        .collect();
    let (chart, _) = frame(root, px, &plot.frame(&x, &y, true, &legend))?;
    let (xs, ys) = chart.plotting_area().get_pixel_range();
    let mut placed: Vec<[i32; 4]> = Vec::new();
    let mut written: Vec<((i32, i32), &str)> = Vec::new();
    for (i, s) in series.iter().enumerate() {
        for (a, b, label) in s.points.iter().filter(finite) {
            let (Some(a), Some(b)) = (x.to_axis(*a), y.to_axis(*b)) else {
                continue;
            };
            let p = at(&chart, a, b);
            let colour = PALETTE[i % PALETTE.len()];
            style::marker(root, px, Marker::nth(i), p, 5.0, colour, true)?;
            // A point on top of one already labelled with the same text needs no second label.
            let near = |q: &(i32, i32)| (q.0 - p.0).abs().max((q.1 - p.1).abs()) <= px.i(4.0);
            if written.iter().any(|(q, l)| near(q) && *l == label) {
                continue;
            }
            written.push((p, label));
            // The label goes right of the point, else left, above or below: the first place
            // inside the plot that overlaps no earlier label.
            let (w, h) = (px.i(text_width(label, POINT_PX)), px.i(1.2 * POINT_PX));
            let gap = px.i(8.0);
            let candidates = [
                [p.0 + gap, p.1 - h / 2],
                [p.0 - gap - w, p.1 - h / 2],
                [p.0 - w / 2, p.1 - gap - h],
                [p.0 - w / 2, p.1 + gap],
            ]
            .map(|[l, t]| [l, t, l + w, t + h]);
            let inside = |r: &[i32; 4]| {
                r[0] >= xs.start && r[2] <= xs.end && r[1] >= ys.start && r[3] <= ys.end
            };
            let free = |r: &[i32; 4]| {
                placed
                    .iter()
                    .all(|q| r[2] <= q[0] || q[2] <= r[0] || r[3] <= q[1] || q[3] <= r[1])
            };
            let spot = candidates
                .iter()
                .find(|r| inside(r) && free(r))
                .or_else(|| candidates.iter().find(|r| inside(r)))
                .unwrap_or(&candidates[0]);
            placed.push(*spot);
            text(
                root,
                px,
                std::slice::from_ref(label),
                POINT_PX,
                (spot[0], spot[1]),
                HPos::Left,
                false,
            )?;
        }
    }
    Ok(())
}
