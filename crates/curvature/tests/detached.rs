//! The detaching worker (src/detached.rs) in a process of its own: it must latch Candle's flag
//! off before `enable_double_backprop` sets the variable, and its products must equal, bit for
//! bit, those of a second backward pass that keeps its graph.

use breakeven_curvature::{
    backward_detached, candle_keeps_graphs, detached_worker_available, enable_double_backprop,
};
use candle_core::{DType, Device, Tensor, Var};

#[test]
fn detached_second_backward_is_exact_and_runs_without_graphs() -> candle_core::Result<()> {
    if std::env::var("CANDLE_GRAD_DO_NOT_DETACH").is_ok() {
        eprintln!("SKIPPED: CANDLE_GRAD_DO_NOT_DETACH was set before the process started");
        return Ok(());
    }
    enable_double_backprop().expect("double backprop");
    assert!(detached_worker_available());
    assert!(
        candle_keeps_graphs().expect("probe"),
        "this thread keeps graphs"
    );

    // A two-layer tanh net: Hv = ∇(∇L · v), second pass inline and on the worker.
    let dev = Device::Cpu;
    let seq = |n: usize, s: f64| {
        Tensor::arange(0u32, n as u32, &dev)?
            .to_dtype(DType::F64)?
            .affine(s, -0.3)
    };
    let x = seq(12, 0.05)?.reshape((4, 3))?;
    let w1 = Var::from_tensor(&seq(15, 0.07)?.reshape((3, 5))?)?;
    let w2 = Var::from_tensor(&seq(10, -0.04)?.reshape((5, 2))?)?;
    let loss = x
        .matmul(w1.as_tensor())?
        .tanh()?
        .matmul(w2.as_tensor())?
        .sqr()?
        .mean_all()?;
    let g = loss.backward()?;
    let (g1, g2) = (
        g.get(w1.as_tensor()).unwrap(),
        g.get(w2.as_tensor()).unwrap(),
    );
    let (v1, v2) = (
        seq(15, 0.11)?.reshape((3, 5))?,
        seq(10, 0.13)?.reshape((5, 2))?,
    );
    let gv = ((g1 * &v1)?.sum_all()? + (g2 * &v2)?.sum_all()?)?;
    let inline = gv.backward()?;
    let detached = backward_detached(&gv)?;
    for w in [&w1, &w2] {
        let a = inline
            .get(w.as_tensor())
            .unwrap()
            .flatten_all()?
            .to_vec1::<f64>()?;
        let b = detached
            .get(w.as_tensor())
            .unwrap()
            .flatten_all()?
            .to_vec1::<f64>()?;
        assert_eq!(a, b, "Hv differs between the inline and the detached pass");
        assert!(a.iter().any(|&h| h != 0.0));
    }
    // The worker really detaches: double backprop started there would be wrong (4, not 6).
    let t = Var::new(1.0f64, &dev)?;
    let cube = t.as_tensor().mul(t.as_tensor())?.mul(t.as_tensor())?;
    let dy = backward_detached(&cube)?
        .get(t.as_tensor())
        .unwrap()
        .clone();
    let d2 = dy
        .backward()?
        .get(t.as_tensor())
        .map(|d| d.to_scalar::<f64>())
        .transpose()?;
    assert_ne!(d2, Some(6.0), "the worker kept the graph");
    Ok(())
}
