//! breakeven-runner.
