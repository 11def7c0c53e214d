//! Axis ranges, tick positions and tick labels: round steps (1, 2 or 5 × 10^k) on a linear axis,
//! decades on a log axis, and labels at the precision of the step, so that float noise never
//! reaches a label ("0", not "2.8e-17"; "0.3", not "0.30000000000000004").

use std::ops::Range;

use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint, Ranged};

/// One axis of a chart, in axis coordinates: the value itself on a linear axis, its log10 on a
/// log axis.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Axis {
    pub lo: f64,
    pub hi: f64,
    /// Labelled ticks (with grid lines).
    pub ticks: Vec<f64>,
    /// Unlabelled grid lines: 2..9 × 10^k on a log axis.
    pub minor: Vec<f64>,
    pub log: bool,
    step: f64,
}

/// The round step (1, 2 or 5 × 10^k) that cuts `span` into at most 6 intervals.
fn round_step(span: f64) -> f64 {
    let mag = 10f64.powf((span / 5.0).log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| span / s <= 6.0 + 1e-9)
        .unwrap_or(10.0 * mag)
}

impl Axis {
    /// A linear axis covering the finite `values` (and `0` when `with_zero`), widened by
    /// `margin` × its span on each side (so that markers clear the frame). `pad` widens the range
    /// to whole steps (a value axis); otherwise it is the data range with the round ticks
    /// inside it (a time axis, such as epochs or steps).
    pub fn linear(
        values: impl IntoIterator<Item = f64>,
        with_zero: bool,
        pad: bool,
        margin: f64,
    ) -> Self {
        let (mut lo, mut hi) = extent(values);
        if lo > hi {
            (lo, hi) = (0.0, 1.0);
        }
        if with_zero {
            (lo, hi) = (lo.min(0.0), hi.max(0.0));
        }
        if hi - lo <= 1e-9 * lo.abs().max(hi.abs()) {
            let half = if lo == 0.0 { 1.0 } else { 0.1 * lo.abs() };
            (lo, hi) = (lo - half, hi + half);
        }
        let span = hi - lo;
        // A zero the data touch stays the axis' end.
        if lo != 0.0 || !with_zero {
            lo -= margin * span;
        }
        if hi != 0.0 || !with_zero {
            hi += margin * span;
        }
        let step = round_step(hi - lo);
        if pad {
            lo = (lo / step + 1e-9).floor() * step;
            hi = (hi / step - 1e-9).ceil() * step;
        }
        let first = (lo / step - 1e-9).ceil() as i64;
        let last = (hi / step + 1e-9).floor() as i64;
        let ticks = (first..=last).map(|k| k as f64 * step).collect();
        Self {
            lo,
            hi,
            ticks,
            minor: Vec::new(),
            log: false,
            step,
        }
    }

    /// A log10 axis covering the positive finite `values` (at least half a decade), widened by
    /// `margin` × its span on each side. Ticks at the decades (every other one or sparser when
    /// there are many), at 1, 2 and 5 × 10^k within 2.5 decades, at 1..9 × 10^k within one.
    pub fn log(values: impl IntoIterator<Item = f64>, margin: f64) -> Self {
        let (mut lo, mut hi) = extent(values.into_iter().filter(|v| *v > 0.0).map(f64::log10));
        if lo > hi {
            (lo, hi) = (0.0, 1.0);
        }
        if hi - lo < 0.5 {
            let mid = (lo + hi) / 2.0;
            (lo, hi) = (mid - 0.25, mid + 0.25);
        }
        let span = hi - lo;
        let (lo, hi) = (lo - margin * span, hi + margin * span);
        let span = hi - lo;
        let mantissas: &[u32] = match span {
            s if s > 2.5 => &[1],
            s if s > 1.0 => &[1, 2, 5],
            _ => &[1, 2, 3, 4, 5, 6, 7, 8, 9],
        };
        let stride = (span / 7.0).ceil().max(1.0) as i64;
        let decades = (lo.floor() as i64)..=(hi.ceil() as i64);
        let inside = |t: &f64| *t >= lo - 1e-9 && *t <= hi + 1e-9;
        let at = |m: u32, e: i64| e as f64 + (m as f64).log10();
        let ticks: Vec<f64> = decades
            .clone()
            .filter(|e| e.rem_euclid(stride) == 0)
            .flat_map(|e| mantissas.iter().map(move |&m| at(m, e)))
            .filter(inside)
            .collect();
        let minor = if stride == 1 {
            decades
                .flat_map(|e| {
                    (2..10)
                        .filter(|m| !mantissas.contains(m))
                        .map(move |m| at(m, e))
                })
                .filter(inside)
                .collect()
        } else {
            Vec::new()
        };
        Self {
            lo,
            hi,
            ticks,
            minor,
            log: true,
            step: 1.0,
        }
    }

    /// The x axis of a bar chart: column `i` spans [i, i + 1]; no ticks (the columns are
    /// labelled by name).
    pub fn categories(n: usize) -> Self {
        Self {
            lo: 0.0,
            hi: n.max(1) as f64,
            ticks: Vec::new(),
            minor: Vec::new(),
            log: false,
            step: 1.0,
        }
    }

    /// `v` in axis coordinates; `None` where the axis cannot show it (not finite, or not
    /// positive on a log axis).
    pub fn to_axis(&self, v: f64) -> Option<f64> {
        match (self.log, v.is_finite()) {
            (true, true) if v > 0.0 => Some(v.log10()),
            (false, true) => Some(v),
            _ => None,
        }
    }

    /// The label of tick `t` (in axis coordinates).
    pub fn label(&self, t: f64) -> String {
        if self.log {
            // t = log10(m · 10^e): plain decimals while every tick lies in [0.001, 10^5),
            // else powers of ten.
            let e = (t + 1e-9).floor();
            let m = 10f64.powf(t - e).round();
            let plain = self.ticks.iter().all(|t| (-3.0 - 1e-9..5.0).contains(t));
            return if plain {
                let decimals = (-e).max(0.0) as usize;
                format!("{:.decimals$}", m * 10f64.powf(e))
            } else {
                power_of_ten(m, e as i32)
            };
        }
        // Within a millionth of a step of zero is zero (never "2.8e-17", never "-0").
        let t = if t.abs() < self.step * 1e-6 { 0.0 } else { t };
        let step_exp = self.step.log10().floor() as i32;
        let big = self.lo.abs().max(self.hi.abs());
        if !(1e-3..1e5).contains(&big) {
            if t == 0.0 {
                return "0".into();
            }
            // Scientific, with as many mantissa digits as the step needs.
            let e = t.abs().log10().floor() as i32;
            let digits = (e - step_exp).clamp(0, 3) as usize;
            return trim_exponent(&format!("{t:.digits$e}"));
        }
        let decimals = (-step_exp).max(0) as usize;
        format!("{t:.decimals$}")
    }
}

/// plotters' view of the axis: a linear map of axis coordinates with our ticks as its bold key
/// points and the minor grid as its light ones.
impl Ranged for Axis {
    type FormatOption = DefaultFormatting;
    type ValueType = f64;

    fn map(&self, v: &f64, limit: (i32, i32)) -> i32 {
        let f = (v - self.lo) / (self.hi - self.lo);
        limit.0 + (f * (limit.1 - limit.0) as f64).round() as i32
    }

    fn key_points<Hint: KeyPointHint>(&self, hint: Hint) -> Vec<f64> {
        if hint.weight().allow_light_points() {
            self.minor.clone()
        } else {
            self.ticks.clone()
        }
    }

    fn range(&self) -> Range<f64> {
        self.lo..self.hi
    }
}

/// (min, max) of the finite values; (MAX, MIN) when there are none.
fn extent(values: impl IntoIterator<Item = f64>) -> (f64, f64) {
    values
        .into_iter()
        .filter(|v| v.is_finite())
        .fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(v), hi.max(v)))
}

/// m × 10^e with a superscript exponent: "10⁵", "2×10⁻⁶".
fn power_of_ten(m: f64, e: i32) -> String {
    const SUPERSCRIPT: [char; 10] = ['⁰', '¹', '²', '³', '⁴', '⁵', '⁶', '⁷', '⁸', '⁹'];
    let mut exp: String = e
        .unsigned_abs()
        .to_string()
        .chars()
        .map(|d| SUPERSCRIPT[d.to_digit(10).unwrap_or(0) as usize])
        .collect();
    if e < 0 {
        exp.insert(0, '⁻');
    }
    if m == 1.0 {
        format!("10{exp}")
    } else {
        format!("{m}×10{exp}")
    }
}

/// "1.50e4" → "1.5e4", "2.0e-5" → "2e-5".
fn trim_exponent(s: &str) -> String {
    match s.split_once('e') {
        Some((mantissa, exp)) if mantissa.contains('.') => {
            let mantissa = mantissa.trim_end_matches('0').trim_end_matches('.');
            format!("{mantissa}e{exp}")
        }
        _ => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(a: &Axis) -> Vec<String> {
        a.ticks.iter().map(|t| a.label(*t)).collect()
    }

    #[test]
    fn a_padded_linear_axis_covers_the_data_with_round_steps() {
        let a = Axis::linear([0.0, 79.76], false, true, 0.0);
        assert_eq!((a.lo, a.hi), (0.0, 80.0));
        assert_eq!(labels(&a), ["0", "20", "40", "60", "80"]);
        let b = Axis::linear([0.013, 0.0171], false, true, 0.0);
        assert!(b.lo <= 0.013 + 1e-15 && b.hi >= 0.0171 && b.ticks.len() >= 3);
        assert_eq!(b.label(b.ticks[1]), "0.014");
        // A margin moves data off the frame; a zero end stays.
        let m = Axis::linear([0.0, 80.0], true, true, 0.04);
        assert_eq!((m.lo, m.hi), (0.0, 100.0));
        let s = Axis::linear([-2.0, 8.0], false, true, 0.04);
        assert!(s.lo < -2.0 && s.hi > 8.0);
    }

    #[test]
    fn an_unpadded_axis_keeps_the_data_range_and_puts_round_ticks_inside() {
        let a = Axis::linear([-1.5229, 0.3], false, false, 0.0);
        assert_eq!((a.lo, a.hi), (-1.5229, 0.3));
        assert_eq!(labels(&a), ["-1.5", "-1.0", "-0.5", "0.0"]);
    }

    #[test]
    fn labels_carry_no_float_noise() {
        // 3 × 0.1 = 0.30000000000000004, and a tick a rounding error off zero.
        let a = Axis::linear([-2.8e-17, 0.5], false, true, 0.0);
        assert_eq!(labels(&a), ["0.0", "0.1", "0.2", "0.3", "0.4", "0.5"]);
        assert_eq!(a.label(-2.8e-17), "0.0");
        let ints = Axis::linear([-3.0, 3.0], false, true, 0.0);
        assert_eq!(ints.label(-1e-15), "0");
        let big = Axis::linear([0.0, 2.5e5], false, true, 0.0);
        assert_eq!(labels(&big), ["0", "5e4", "1e5", "1.5e5", "2e5", "2.5e5"]);
        let tiny = Axis::linear([0.0, 4e-4], false, true, 0.0);
        assert_eq!(labels(&tiny), ["0", "1e-4", "2e-4", "3e-4", "4e-4"]);
    }

    #[test]
    fn a_constant_series_still_gets_a_range() {
        let a = Axis::linear([3.0, 3.0], false, true, 0.0);
        assert!(a.lo < 3.0 && a.hi > 3.0 && a.ticks.len() >= 2);
        let z = Axis::linear([0.0], false, true, 0.0);
        assert!(z.lo < 0.0 && z.hi > 0.0);
        let l = Axis::log([5.0], 0.0);
        assert!(l.lo < 5f64.log10() && l.hi > 5f64.log10() && l.ticks.len() >= 2);
    }

    #[test]
    fn a_log_axis_has_decade_ticks_with_plain_labels() {
        let a = Axis::log([0.012, 3.0, 950.0, -1.0, 0.0, f64::NAN], 0.0);
        assert!(a.lo == 0.012f64.log10() && a.hi == 950f64.log10());
        assert_eq!(labels(&a), ["0.1", "1", "10", "100"]);
        assert_eq!(a.minor.len(), 8 * 5, "2..9 × the 5 decades inside");
        let narrow = Axis::log([2.0, 30.0], 0.0);
        assert_eq!(labels(&narrow), ["2", "5", "10", "20"]);
        let one = Axis::log([2.5, 8.0], 0.0);
        assert_eq!(labels(&one), ["3", "4", "5", "6", "7", "8"]);
        assert_eq!(Axis::log([1.0, 1e5], 0.0).label(5.0), "10⁵");
        assert_eq!(one.to_axis(0.0), None);
        assert_eq!(one.to_axis(100.0), Some(2.0));
    }

    #[test]
    fn a_log_axis_beyond_plain_decimals_labels_powers_of_ten_and_thins_decades() {
        let wide = Axis::log([1e-7, 1e6], 0.0);
        assert_eq!(
            labels(&wide),
            ["10⁻⁶", "10⁻⁴", "10⁻²", "10⁰", "10²", "10⁴", "10⁶"]
        );
        let small = Axis::log([1e-6, 3e-5], 0.0);
        assert_eq!(labels(&small)[..2], ["10⁻⁶", "2×10⁻⁶"]);
    }
}
