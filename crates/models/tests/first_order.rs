//! Gradients of BatchNorm and max-pooling networks in a process where Candle drops gradient
//! graphs (no `CANDLE_GRAD_DO_NOT_DETACH`, plain training): the untracked backward ops run
//! here, while the library's unit tests, which enable double backprop, run the tracked ones.

use breakeven_models::{build, cross_entropy, init, Mode, ModelSpec};
use candle_core::{DType, Device, Tensor};
use rand::SeedableRng;

#[test]
fn batch_norm_and_pooling_nets_have_finite_difference_gradients_without_double_backprop() {
    assert!(
        std::env::var_os("CANDLE_GRAD_DO_NOT_DETACH").is_none(),
        "this test needs the first-order path"
    );
    // (model, input side): SimpleCNN and VGG max-pool, VGG also with BatchNorm.
    for (spec, hw) in [
        (ModelSpec::ResNet32 { width: 2 }, 8),
        (
            ModelSpec::Wrn {
                depth: 10,
                widen: 1,
            },
            8,
        ),
        (ModelSpec::SimpleCnn { width_mult: 0.125 }, 16),
        (ModelSpec::Vgg11Bn { width: 2 }, 32),
    ] {
        let model = build(&spec, (3, hw, hw), 3, DType::F64, &Device::Cpu, 5).unwrap();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(6);
        let x = Tensor::from_vec(
            init::normal(&mut rng, 3 * 3 * hw * hw, 0.0, 1.0),
            (3, 3, hw, hw),
            &Device::Cpu,
        )
        .unwrap();
        let y = Tensor::new(&[0u32, 2, 1], &Device::Cpu).unwrap();
        let loss = || cross_entropy(&model.forward(&x, Mode::BatchStats)?, &y)?.to_scalar::<f64>();
        let grads = cross_entropy(&model.forward(&x, Mode::BatchStats).unwrap(), &y)
            .unwrap()
            .backward()
            .unwrap();
        // The first coordinate of every parameter tensor, by central differences.
        for p in model.params() {
            let g = grads
                .get(&p.var)
                .unwrap()
                .flatten_all()
                .unwrap()
                .get(0)
                .unwrap()
                .to_scalar::<f64>()
                .unwrap();
            let base = p.var.as_tensor().copy().unwrap();
            let at = |d: f64| {
                let mut v = base.flatten_all().unwrap().to_vec1::<f64>().unwrap();
                v[0] += d;
                p.var
                    .set(&Tensor::from_vec(v, base.shape(), &Device::Cpu).unwrap())
                    .unwrap();
                loss().unwrap()
            };
            let fd = (at(1e-6) - at(-1e-6)) / 2e-6;
            p.var.set(&base).unwrap();
            assert!(
                (fd - g).abs() < 1e-6 * (1.0 + g.abs()),
                "{:?} {}: autodiff {g:e} vs fd {fd:e}",
                spec,
                p.name
            );
        }
    }
}
