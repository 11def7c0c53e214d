//! breakeven-penalties.
