//! The pages of the reproductions with claims of their own (`cargo xtask reproduce NAME`): each
//! a function from the finished runs and the experiment definition to a [`crate::page::Page`].
//! The sweep tables' page is [`crate::table::page`], the LCA page [`crate::lca::page`].

pub mod batch_variance;
pub mod break_even;
pub mod break_even_sweep;
pub mod early_phase;
pub mod edge_of_stability;
pub mod fisher_explosion;
pub mod memorization;

#[cfg(test)]
pub(crate) mod testing;
