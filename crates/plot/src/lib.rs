//! breakeven-plot: charts a person can read, drawn by `plotters` as SVG and as PNG with an
//! embedded font (DejaVu Sans), so that neither needs a system program or font. A leaf crate:
//! results pages (`breakeven-report`) and `breakeven measure` (`breakeven-runner`) both draw with
//! it; writing the files atomically is the caller's (`breakeven_runner::atomic::write_svg_and_png`).

pub mod plot;
pub mod raster;

pub use plot::*;

/// A plot that could not be drawn or encoded, with what went wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlotError(pub String);

impl std::fmt::Display for PlotError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for PlotError {}
