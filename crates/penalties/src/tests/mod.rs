//! Proofs of the penalties: closed forms, finite differences of the penalized loss, and the
//! behaviour of a step (modes, α = 0, errors).

mod behaviour;
mod closed_form;
mod finite_diff;
mod nets;
