//! In a process in second-order mode (breakeven-curvature's `enable_double_backprop`: Candle
//! keeps gradient graphs on this thread), a training step's backward runs directly on the
//! calling thread (`backward_first_order`) and must give the gradients bit for bit as a thread
//! that detaches (curvature's worker, `backward_detached`), for every op with a fused
//! first-order kernel (convolution, BatchNorm, max-pool, ReLU); a backward that keeps its graph
//! records the graph-building kernels instead. Its own test binary: the check needs the
//! variable unset when the process starts.

use breakeven_curvature::{
    backward_detached, backward_first_order, detached_worker_available, enable_double_backprop,
    gradients, graphs_kept_on_this_thread, record_gradient_graphs,
};
use breakeven_models::{build, cross_entropy, init, Mode, ModelSpec};
use candle_core::{DType, Device, Tensor};
use rand::SeedableRng;

fn bits(ts: &[Tensor]) -> Vec<u32> {
    ts.iter()
        .flat_map(|t| t.flatten_all().unwrap().to_vec1::<f32>().unwrap())
        .map(f32::to_bits)
        .collect()
}

#[test]
fn first_order_backward_in_second_order_mode_equals_the_detached_one_bit_for_bit() {
    if std::env::var_os("CANDLE_GRAD_DO_NOT_DETACH").is_some() {
        eprintln!("SKIPPED: CANDLE_GRAD_DO_NOT_DETACH was set before the process started");
        return;
    }
    enable_double_backprop().unwrap();
    assert!(detached_worker_available());
    assert!(graphs_kept_on_this_thread());
    assert!(record_gradient_graphs());
    for (spec, hw) in [
        (ModelSpec::SimpleCnn { width_mult: 0.25 }, 16),
        (ModelSpec::Vgg11Bn { width: 4 }, 32),
        (ModelSpec::ResNet32 { width: 4 }, 8),
    ] {
        let model = build(&spec, (3, hw, hw), 10, DType::F32, &Device::Cpu, 3).unwrap();
        let vars: Vec<_> = model.params().iter().map(|p| p.var.clone()).collect();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(4);
        let x = Tensor::from_vec(
            init::normal(&mut rng, 8 * 3 * hw * hw, 0.0, 1.0),
            (8, 3, hw, hw),
            &Device::Cpu,
        )
        .unwrap()
        .to_dtype(DType::F32)
        .unwrap();
        let y = Tensor::new(&[0u32, 3, 1, 9, 2, 2, 7, 5], &Device::Cpu).unwrap();
        let loss = cross_entropy(&model.forward(&x, Mode::BatchStats).unwrap(), &y).unwrap();
        let direct = gradients(&backward_first_order(&loss).unwrap(), &vars).unwrap();
        assert!(
            record_gradient_graphs(),
            "the first-order pass must end with the backward pass"
        );
        let worker = gradients(&backward_detached(&loss).unwrap(), &vars).unwrap();
        assert_eq!(
            bits(&direct),
            bits(&worker),
            "{spec:?}: direct first-order backward differs from the detached one"
        );
        // A graph-keeping backward builds differentiable gradients: BatchNorm's composed
        // kernel differs from the fused one in the low bits, so its numbers are not those of a
        // training step (which is why plain steps must not take it).
        let kept = gradients(&loss.backward().unwrap(), &vars).unwrap();
        let close = bits(&kept)
            .iter()
            .zip(bits(&direct))
            .all(|(a, b)| (f32::from_bits(*a) - f32::from_bits(b)).abs() <= 1e-4);
        assert!(
            close,
            "{spec:?}: the graph-keeping gradient is not even close"
        );
        if matches!(spec, ModelSpec::Vgg11Bn { .. }) {
            assert_ne!(
                bits(&kept),
                bits(&direct),
                "expected BatchNorm's composed backward to differ in the low bits"
            );
        }
    }
}
