//! The `breakeven` command line.
fn main() {}
