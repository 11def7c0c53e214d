//! Candle's second-order switch, in one place for the whole workspace.
//!
//! Candle 0.11 detaches every intermediate gradient during `backward` unless the environment
//! variable `CANDLE_GRAD_DO_NOT_DETACH` is non-empty and not `"0"`; the variable is read ONCE
//! per thread, at the first `backward` of that thread, into a thread-local
//! (`candle-core/src/backprop.rs`). With it unset, a Hessian-vector product comes out zero or
//! wrong with no error (SCIENCE.md §7). Hence:
//! - [`enable_double_backprop`] is the one place that sets the variable (every binary, test and
//!   example that differentiates twice calls it), and every second-order operator runs
//!   [`check_double_backprop`] (a scalar probe with a known second derivative) on each thread it
//!   is used from;
//! - [`backward_first_order`] is the backward pass of a gradient that is only read (a training
//!   step, a finite difference): on the calling thread, and computed exactly as on a thread that
//!   detaches, because the backward ops of breakeven-models ask [`record_gradient_graphs`]
//!   whether to record graphs of what they produce;
//! - `backward_detached` (detached.rs) runs the last pass of a double backprop, whose graph
//!   Candle's own ops would otherwise keep alive, on a worker that detaches.

use std::cell::Cell;

use candle_core::backprop::GradStore;
use candle_core::{DType, Device, Tensor, Var};

use crate::error::{CurvatureError, Result};

const VAR: &str = "CANDLE_GRAD_DO_NOT_DETACH";

/// Sets `CANDLE_GRAD_DO_NOT_DETACH=1` (if not already set to a true value) and probes the
/// current thread.
///
/// Call it at the start of `main` (or of a test), before any `backward` and before spawning
/// threads: setting an environment variable races with other threads reading the environment.
/// Threads started later read the variable at their own first backward and are enabled too.
/// Errors with [`CurvatureError::DoubleBackpropDisabled`] when the current thread already ran a
/// backward pass without it.
pub fn enable_double_backprop() -> Result<()> {
    let set = std::env::var(VAR)
        .map(|s| !s.is_empty() && s != "0")
        .unwrap_or(false);
    if !set {
        // The worker that runs last backward passes without graphs latches Candle's flag off
        // now, before the variable is set (detached.rs).
        crate::detached::start_worker();
        // Racy only against concurrent environment reads; see the doc comment.
        std::env::set_var(VAR, "1");
    }
    check_double_backprop()
}

/// Runs the probe `d²/dx² x³ |_{x=1} = 6` on the current thread.
pub fn check_double_backprop() -> Result<()> {
    let got = probe_second_derivative()?;
    if (got - 6.0).abs() > 1e-9 {
        return Err(CurvatureError::DoubleBackpropDisabled { got });
    }
    Ok(())
}

/// Whether Candle keeps gradient graphs on the current thread, i.e. whether double backprop
/// works here (latching Candle's flag if this is the thread's first backward pass).
pub fn candle_keeps_graphs() -> Result<bool> {
    Ok((probe_second_derivative()? - 6.0).abs() <= 1e-9)
}

thread_local! {
    /// Candle's flag on this thread, once probed (it never changes after the first backward).
    static GRAPHS_KEPT: Cell<Option<bool>> = const { Cell::new(None) };
    /// Set while [`backward_first_order`] runs on this thread.
    static FIRST_ORDER_PASS: Cell<bool> = const { Cell::new(false) };
}

/// Whether Candle keeps gradient graphs on this thread: probed at the first call on a thread
/// (latching Candle's flag exactly as the backward pass about to run would), then cached.
pub fn graphs_kept_on_this_thread() -> bool {
    GRAPHS_KEPT.with(|kept| match kept.get() {
        Some(k) => k,
        None => {
            // A failed probe (it cannot fail on the CPU) errs on the side of keeping graphs.
            let k = candle_keeps_graphs().unwrap_or(true);
            kept.set(Some(k));
            k
        }
    })
}

/// Whether a backward op running now should record the graph of the gradient it produces, so
/// that it can be differentiated again: only where Candle keeps graphs and no
/// [`backward_first_order`] pass is running. Custom ops ask this (breakeven-models' `ops`);
/// without graphs they use fused kernels and keep no intermediate alive.
pub fn record_gradient_graphs() -> bool {
    !FIRST_ORDER_PASS.with(Cell::get) && graphs_kept_on_this_thread()
}

/// Restores the previous first-order flag when dropped (also on a panic).
struct FirstOrderPass(bool);

impl Drop for FirstOrderPass {
    fn drop(&mut self) {
        FIRST_ORDER_PASS.with(|f| f.set(self.0));
    }
}

/// `t.backward()` for gradients that are only read, never differentiated again: a training
/// step's gradient, the gradients of a finite difference. It runs directly on the calling
/// thread. Where Candle keeps graphs (a process in second-order mode), the custom backward ops
/// record none during this pass ([`record_gradient_graphs`]), so the gradients are the same
/// numbers, bit for bit, as on a thread that detaches; Candle's own ops still attach small
/// graphs to their outputs, freed with the returned store.
pub fn backward_first_order(t: &Tensor) -> candle_core::Result<GradStore> {
    let _restore = FirstOrderPass(FIRST_ORDER_PASS.with(|f| f.replace(true)));
    t.backward()
}

/// `d²/dx² x³` at x = 1 by double backprop: 6 when Candle keeps graphs, something else (4 in
/// Candle 0.11) when it detaches the intermediate gradients.
fn probe_second_derivative() -> Result<f64> {
    let x = Var::new(1.0f64, &Device::Cpu)?;
    let t = x.as_tensor();
    let y = t.mul(t)?.mul(t)?;
    let g = y.backward()?;
    let dy = g
        .get(t)
        .ok_or(CurvatureError::NonFinite(
            "probe first derivative (missing)",
        ))?
        .clone();
    Ok(match dy.backward()?.get(t) {
        Some(d2) => d2.to_dtype(DType::F64)?.to_scalar::<f64>()?,
        None => 0.0,
    })
}

/// Remembers which threads passed the probe, so operators re-probe when moved to a new thread.
#[derive(Debug)]
pub(crate) struct ProbedThread(std::thread::ThreadId);

impl ProbedThread {
    pub fn new() -> Result<Self> {
        check_double_backprop()?;
        Ok(Self(std::thread::current().id()))
    }

    pub fn ensure(&mut self) -> Result<()> {
        let id = std::thread::current().id();
        if id != self.0 {
            check_double_backprop()?;
            self.0 = id;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// This unit-test binary never enables double backprop itself, so the probe's verdict must
    /// follow the environment the tests were started with: pass with the variable, and a
    /// typed error (never a silent zero) without it.
    #[test]
    fn probe_follows_the_environment_and_refuses_with_a_typed_error() {
        let set = std::env::var(VAR)
            .map(|s| !s.is_empty() && s != "0")
            .unwrap_or(false);
        let r = check_double_backprop();
        if set {
            assert!(r.is_ok(), "{r:?}");
        } else {
            match r {
                Err(CurvatureError::DoubleBackpropDisabled { got }) => {
                    // Not even zero: detaching only the incoming gradients leaves a partial
                    // graph (x³ gives 4 instead of 6), which is why a probe is needed.
                    assert!((got - 6.0).abs() > 1.0, "{got}");
                    let msg = CurvatureError::DoubleBackpropDisabled { got }.to_string();
                    assert!(msg.contains("CANDLE_GRAD_DO_NOT_DETACH=1"));
                }
                other => panic!("expected DoubleBackpropDisabled, got {other:?}"),
            }
            // And an operator refuses to be built on this thread.
            let w = Var::new(&[1.0f64, 2.0], &Device::Cpu).unwrap();
            let w2 = w.clone();
            let loss = crate::BatchedLoss::new(1, crate::Reduction::Mean, move |_| {
                Ok((w2.as_tensor().sqr()?.sum_all()?, 1))
            });
            assert!(matches!(
                crate::HessianOperator::new(vec![w], loss),
                Err(CurvatureError::DoubleBackpropDisabled { .. })
            ));
        }
    }
}
