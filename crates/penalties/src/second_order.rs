//! Detects whether Candle keeps the graph of gradients in this thread, which double backprop
//! needs (SCIENCE.md §7: without `CANDLE_GRAD_DO_NOT_DETACH=1`, read once per thread by
//! candle-core's `backprop.rs`, an HVP comes out silently zero).

use candle_core::{Device, Var};

use crate::PenaltyError;

/// d²(x³)/dx² at x = 3 must be 18; with detached gradients it is 0 (or missing).
pub fn check_second_order() -> Result<(), PenaltyError> {
    let x = Var::new(&[3.0f64], &Device::Cpu)?;
    let y = x.as_tensor().sqr()?.mul(x.as_tensor())?.sum_all()?;
    let dy = y.backward()?;
    let g = dy
        .get(x.as_tensor())
        .ok_or_else(|| candle_core::Error::Msg("x³ has no gradient".into()))?;
    let d2 = g.sum_all()?.backward()?;
    let got = match d2.get(x.as_tensor()) {
        Some(h) => h.sum_all()?.to_scalar::<f64>()?,
        None => 0.0,
    };
    if (got - 18.0).abs() > 1e-9 {
        return Err(PenaltyError::SecondOrderUnavailable {
            got,
            expected: 18.0,
        });
    }
    Ok(())
}
