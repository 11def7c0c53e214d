//! `cargo xtask`: the orchestrator.
fn main() {}
