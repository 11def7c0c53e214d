//! breakeven-curvature.
