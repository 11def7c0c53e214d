//! breakeven-data.
