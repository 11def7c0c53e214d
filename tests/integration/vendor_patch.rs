//! The workspace builds against `vendor/candle-core` (see `vendor/README.md`), whose backward pass
//! stores the first gradient of each tensor as is. Stock Candle 0.11.1 adds it to a fresh zero
//! tensor instead, which with kept graphs puts an `Add(zeros, g)` node into every gradient's
//! graph and doubles an HVP's peak memory. This test fails if the patch is dropped (a Candle
//! upgrade, a lost `[patch.crates-io]`), so the regression is seen here and not only in the
//! benchmark.

use candle_core::{Device, Tensor, Var};

#[test]
fn candle_backward_stores_first_gradients_without_a_zeros_node() {
    // Keep graphs (double backprop) on this process's threads; the other tests of this binary
    // do not run Candle backward passes.
    breakeven_curvature::enable_double_backprop().expect("double backprop");
    let x = Var::from_tensor(&Tensor::new(&[1.0f64, -2.0, 3.0], &Device::Cpu).unwrap()).unwrap();
    let y = x.as_tensor().sqr().unwrap().sum_all().unwrap();
    let y = (y * 0.5).unwrap();
    // ∇(½ Σ x²) = x: values first, then the graph of the gradient.
    let g = y.backward().unwrap().get(&x).unwrap().clone();
    assert_eq!(g.to_vec1::<f64>().unwrap(), vec![1.0, -2.0, 3.0]);
    // Patched: g = affine(x · ½), nodes {affine, mul, x}; stock Candle: g = zeros + affine(x · ½),
    // one node more (the Add; its zeros operand is untracked and not listed).
    let nodes = g.sorted_nodes().len();
    assert_eq!(
        nodes, 3,
        "the gradient's graph has {nodes} nodes; 4 means Candle's stock backward (zeros + g) is \
         in use and vendor/candle-core's patch is not applied"
    );
    // The second derivative still flows: ∇(Σ g) = 1.
    let h = g.sum_all().unwrap().backward().unwrap();
    assert_eq!(h.get(&x).unwrap().to_vec1::<f64>().unwrap(), vec![1.0; 3]);
}
