//! The cross-implementation check against PyTorch: small models of every architecture, a
//! seeded input and a fixed sequence of passes, replayed by `reference/models.py` on the
//! reference PyTorch definitions; their logits are stored in `reference/fixtures.json`, so a
//! test checks agreement without Python (TESTING.md §12).

use candle_core::{DType, Device, Result, Tensor};
use rand::SeedableRng;

use crate::{build, init, Mode, Model, ModelError, ModelSpec};

/// Name and small configuration of each architecture checked against PyTorch.
pub fn reference_models() -> Vec<(&'static str, ModelSpec)> {
    vec![
        ("simple_cnn", ModelSpec::SimpleCnn { width_mult: 0.25 }),
        (
            "fc_tanh",
            ModelSpec::FcTanh {
                widths: vec![16, 8],
            },
        ),
        (
            "fc_relu",
            ModelSpec::FcRelu {
                widths: vec![16, 8],
            },
        ),
        ("vgg11_bn", ModelSpec::Vgg11Bn { width: 4 }),
        ("resnet32", ModelSpec::ResNet32 { width: 4 }),
        ("resnet18", ModelSpec::ResNet18 { width: 4 }),
        (
            "wrn",
            ModelSpec::Wrn {
                depth: 10,
                widen: 2,
            },
        ),
        (
            "densenet_bc",
            ModelSpec::DenseNetBc {
                depth: 16,
                growth: 4,
            },
        ),
    ]
}

/// CIFAR-shaped inputs with 10 classes, in f64, seed 7.
pub fn model(spec: &ModelSpec) -> std::result::Result<Box<dyn Model>, ModelError> {
    build(spec, (3, 32, 32), 10, DType::F64, &Device::Cpu, 7)
}

/// A 4 × 3 × 32 × 32 batch of N(0, 1) draws from seed 2024.
pub fn input() -> Result<Tensor> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(2024);
    Tensor::from_vec(
        init::normal(&mut rng, 4 * 3 * 32 * 32, 0.0, 1.0),
        (4, 3, 32, 32),
        &Device::Cpu,
    )
}

/// Train pass on `x` (its logits are returned), Train pass on `x/2` (moves the running
/// statistics again), then the Eval logits of `x`: (train, eval).
pub fn run(model: &dyn Model, x: &Tensor) -> Result<(Tensor, Tensor)> {
    let train = model.forward(x, Mode::Train)?;
    model.forward(&(x * 0.5)?, Mode::Train)?;
    Ok((train, model.forward(x, Mode::Eval)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Logits PyTorch computed from our initial weights (`reference/models.py check DIR
    /// --write-fixtures reference/fixtures.json`), per model: "train" and "eval", N × 10.
    const FIXTURES: &str = include_str!("../reference/fixtures.json");

    #[test]
    fn every_architecture_matches_pytorch_in_train_and_eval_mode() {
        let fixtures: serde_json::Value = serde_json::from_str(FIXTURES).unwrap();
        for (name, spec) in reference_models() {
            let model = model(&spec).unwrap();
            let (train, eval) = run(model.as_ref(), &input().unwrap()).unwrap();
            for (mode, ours) in [("train", train), ("eval", eval)] {
                let theirs: Vec<Vec<f64>> =
                    serde_json::from_value(fixtures[name][mode].clone()).unwrap();
                let ours = ours.to_vec2::<f64>().unwrap();
                let scale = theirs.iter().flatten().fold(0.0f64, |m, v| m.max(v.abs()));
                let diff = ours
                    .iter()
                    .flatten()
                    .zip(theirs.iter().flatten())
                    .fold(0.0f64, |m, (a, b)| m.max((a - b).abs()));
                assert!(
                    diff <= 1e-12 * scale.max(1.0),
                    "{name} {mode}: max |ours − PyTorch| = {diff:e}"
                );
            }
        }
    }
}
