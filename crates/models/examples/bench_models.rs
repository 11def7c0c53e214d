//! Times a training forward and forward + backward of full-size architectures on CPU (f32),
//! median of a few repetitions.
//!
//! `cargo run -p breakeven-models --example bench_models -- [BATCH] [REPS] [ARCH | SPEC...]`
//!
//! An argument that starts with `{` is a model spec in JSON, timed as given (e.g.
//! `'{"arch":"densenet_bc","depth":40,"growth":12}'`), for sizing reduced models.

use std::time::Instant;

use breakeven_models::{build, cross_entropy, init, Mode, ModelSpec};
use candle_core::{DType, Device, Tensor};
use rand::SeedableRng;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let batch: usize = args.first().map(|s| s.parse()).transpose()?.unwrap_or(128);
    let reps: usize = args.get(1).map(|s| s.parse()).transpose()?.unwrap_or(3);
    let (json, wanted): (Vec<&str>, Vec<&str>) = args
        .iter()
        .skip(2)
        .map(String::as_str)
        .partition(|a| a.starts_with('{'));
    let given: Vec<ModelSpec> = json
        .iter()
        .map(|j| serde_json::from_str(j).map_err(|e| anyhow::anyhow!("model spec {j}: {e}")))
        .collect::<anyhow::Result<_>>()?;
    let defaults = [
        ModelSpec::SimpleCnn { width_mult: 1.0 },
        ModelSpec::FcTanh {
            widths: vec![200, 200],
        },
        ModelSpec::ResNet32 { width: 16 },
        ModelSpec::Vgg11Bn { width: 64 },
        ModelSpec::ResNet18 { width: 64 },
        ModelSpec::Wrn {
            depth: 16,
            widen: 4,
        },
        ModelSpec::DenseNetBc {
            depth: 100,
            growth: 12,
        },
    ];
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    let x = Tensor::from_vec(
        init::normal(&mut rng, batch * 3 * 32 * 32, 0.0, 1.0),
        (batch, 3, 32, 32),
        &Device::Cpu,
    )?
    .to_dtype(DType::F32)?;
    let y = Tensor::from_vec(
        (0..batch as u32).map(|i| i % 10).collect::<Vec<_>>(),
        batch,
        &Device::Cpu,
    )?;
    let specs: Vec<&ModelSpec> = if given.is_empty() {
        defaults
            .iter()
            .filter(|s| wanted.is_empty() || wanted.contains(&s.arch()))
            .collect()
    } else {
        given.iter().collect()
    };
    for spec in specs {
        let model = build(spec, (3, 32, 32), 10, DType::F32, &Device::Cpu, 0)?;
        let median = |f: &dyn Fn() -> anyhow::Result<()>| -> anyhow::Result<f64> {
            let mut t = Vec::new();
            for _ in 0..reps {
                let start = Instant::now();
                f()?;
                t.push(start.elapsed().as_secs_f64() * 1e3);
            }
            t.sort_by(f64::total_cmp);
            Ok(t[t.len() / 2])
        };
        let fwd = median(&|| {
            model.forward(&x, Mode::Train)?;
            Ok(())
        })?;
        let step = median(&|| {
            cross_entropy(&model.forward(&x, Mode::Train)?, &y)?.backward()?;
            Ok(())
        })?;
        let params: usize = model.params().iter().map(|p| p.var.elem_count()).sum();
        println!(
            "{:12} {params:>9} params, batch {batch}: forward {fwd:8.1} ms, forward+backward {step:8.1} ms  {}",
            spec.arch(),
            serde_json::to_string(spec)?
        );
    }
    Ok(())
}
