//! breakeven-optim.
