//! breakeven-report: what is computed and drawn from finished runs. The claim rules and their
//! verdicts (`claims`, `evidence`, `matched`, `memorization`, `early_phase`, `pca`), the
//! results pages (`page` for what every page shares, `table` for the sweep tables, `lca`, and
//! `pages` for the other reproductions: which runs to compare, the claims and their verdict
//! lines) and the plots (`plot`, as SVG and, in `raster`, as PNG with an embedded font). It
//! reads run records through `breakeven-runner`'s types and trains nothing; nothing but
//! `xtask` depends on it.

pub mod claims;
pub mod early_phase;
pub mod evidence;
pub mod lca;
pub mod matched;
pub mod memorization;
pub mod page;
pub mod pages;
pub mod pca;
/// The charts (`breakeven-plot`) and the atomic writer of their files, under the names the pages
/// use.
pub mod plot {
    pub use breakeven_plot::*;
    pub use breakeven_runner::atomic::write_svg_and_png;
}
pub mod table;
