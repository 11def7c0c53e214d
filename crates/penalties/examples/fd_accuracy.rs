//! How far the finite-difference penalty gradient is from the exact one, against the relative
//! step h, in f32 and f64, at initialization and after some plain SGD training:
//! ‖∇P_fd − ∇P_db‖ / ‖∇P_db‖ with ∇P_db by double backprop in f64 (the reference), for GP
//! (true labels) and FP (labels sampled once from the model and then fixed).
//!
//! `cargo run --release -p breakeven-penalties --example fd_accuracy [-- --model simple_cnn
//! --batch 128 --train-steps 200 --lr 0.05]`; `--model vgg11 --width 16` or
//! `--model resnet18 --width 16` for the other architectures; `--short` for a coarse grid of h
//! and `--train-steps 0` for initialization only.
//!
//! Data: the first CIFAR-10 training images (BREAKEVEN_DATA or ./data), scaled to [-1, 1]; seeded
//! N(0, 1) images with seeded labels when CIFAR-10 is not on disk (said in the output).
//! ∇P is read off a penalized step as ∇(L + P) − ∇L (α = 1).

use breakeven_curvature::{backward_first_order, enable_double_backprop, gradients};
use breakeven_models::{build, cross_entropy, Mode, Model, ModelSpec};
use breakeven_penalties::{
    sample_fisher_labels, GradMethod, Penalizer, PenaltyConfig, PenaltyKind,
};
use candle_core::{DType, Device, Tensor};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn num<T: std::str::FromStr>(name: &str, default: T) -> T {
    arg(name).map_or(default, |v| {
        v.parse()
            .unwrap_or_else(|_| panic!("{name} takes a number, got {v}"))
    })
}

/// `batches` batches of `batch` CIFAR-10 images (or seeded noise) as f32 tensors.
fn data(batch: usize, batches: usize) -> anyhow::Result<(Vec<(Tensor, Tensor)>, &'static str)> {
    let dev = Device::Cpu;
    let dir = std::env::var("BREAKEVEN_DATA")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| "data".into())
        .join("cifar-10-batches-bin");
    let mut out = Vec::new();
    if let Ok(tt) = breakeven_data::load_cifar10(&dir) {
        let d = tt.train;
        let per = d.image_len();
        for b in 0..batches {
            let (lo, hi) = (b * batch, (b + 1) * batch);
            let pixels: Vec<f32> = d.images[lo * per..hi * per]
                .iter()
                .map(|&p| p as f32 / 127.5 - 1.0)
                .collect();
            let x = Tensor::from_vec(pixels, (batch, d.channels, d.height, d.width), &dev)?;
            let y = Tensor::from_vec(d.labels[lo..hi].to_vec(), batch, &dev)?;
            out.push((x, y));
        }
        return Ok((out, "CIFAR-10 (first training images, scaled to [-1, 1])"));
    }
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    for b in 0..batches {
        let x = breakeven_models::init::normal(&mut rng, batch * 3 * 32 * 32, 0.0, 1.0);
        let x = Tensor::from_vec(x, (batch, 3, 32, 32), &dev)?.to_dtype(DType::F32)?;
        let y: Vec<u32> = (0..batch).map(|i| ((i * 7 + b) % 10) as u32).collect();
        out.push((x, Tensor::from_vec(y, batch, &dev)?));
    }
    Ok((out, "seeded N(0, 1) noise (CIFAR-10 not found)"))
}

/// ∇P = ∇(L + P) − ∇L at the model's current parameters, flattened to f64.
fn penalty_gradient(
    model: &dyn Model,
    x: &Tensor,
    y: &Tensor,
    kind: PenaltyKind,
    method: GradMethod,
    labels: &Tensor,
) -> anyhow::Result<Vec<f64>> {
    let batch = x.dim(0)?;
    let grads = |alpha: f64, method: GradMethod| -> anyhow::Result<Vec<Tensor>> {
        let pen = Penalizer::new(
            PenaltyConfig {
                method,
                ..PenaltyConfig::new(kind, alpha)
            },
            batch,
        )?;
        // Step 2: step 0 of an FD run would run the reliability check, which refuses FD on
        // these nets; here the difference itself is measured.
        let out = match kind {
            PenaltyKind::Fp => pen.step_with_labels(model, x, y, 2, labels)?,
            _ => pen.step(model, x, y, 2, &mut ChaCha8Rng::seed_from_u64(0))?,
        };
        Ok(out.grads)
    };
    let total = grads(1.0, method)?;
    let plain = grads(0.0, GradMethod::DoubleBackprop)?;
    let mut v = Vec::new();
    for (t, p) in total.iter().zip(&plain) {
        v.extend(
            (t - p)?
                .flatten_all()?
                .to_dtype(DType::F64)?
                .to_vec1::<f64>()?,
        );
    }
    Ok(v)
}

fn rel(a: &[f64], b: &[f64]) -> f64 {
    let d: f64 = a.iter().zip(b).map(|(x, y)| (x - y).powi(2)).sum();
    let n: f64 = b.iter().map(|y| y * y).sum();
    (d / n).sqrt()
}

fn main() -> anyhow::Result<()> {
    enable_double_backprop()?;
    let model_name = arg("--model").unwrap_or_else(|| "simple_cnn".into());
    let width: usize = num("--width", 16);
    let batch: usize = num("--batch", 128);
    let train_steps: usize = num("--train-steps", 200);
    let lr: f64 = num("--lr", 0.05);
    let spec = match model_name.as_str() {
        "simple_cnn" => ModelSpec::SimpleCnn { width_mult: 1.0 },
        "vgg11" => ModelSpec::Vgg11Bn { width },
        "resnet18" => ModelSpec::ResNet18 { width },
        other => anyhow::bail!("--model {other}: expected simple_cnn, vgg11 or resnet18"),
    };
    let (batches, source) = data(batch, train_steps.max(1) + 1)?;
    let (x, y) = batches[0].clone();
    let dev = Device::Cpu;
    let m32 = build(&spec, (3, 32, 32), 10, DType::F32, &dev, 0)?;
    let m64 = build(&spec, (3, 32, 32), 10, DType::F64, &dev, 0)?;
    println!(
        "{model_name:?} ({spec:?}), batch {batch}, data: {source}; ∇P_db in f64 is the reference"
    );
    let short = std::env::args().any(|a| a == "--short");
    let (f32_grid, f64_grid): (&[f64], &[f64]) = if short {
        (&[1e-2, 1e-3], &[1e-3, 1e-9])
    } else {
        (
            &[1e-1, 3e-2, 1e-2, 3e-3, 1e-3, 3e-4, 1e-4, 3e-5, 1e-5],
            &[1e-2, 1e-3, 1e-4, 1e-5, 1e-6, 1e-7, 1e-8, 1e-9],
        )
    };
    let phases: &[&str] = if train_steps == 0 {
        &["initialization"]
    } else {
        &["initialization", "trained"]
    };
    for &phase in phases {
        if phase == "trained" {
            // Plain SGD on the f32 model over the next batches.
            let vars: Vec<_> = m32.params().iter().map(|p| p.var.clone()).collect();
            for (xb, yb) in &batches[1..] {
                let loss = cross_entropy(&m32.forward(xb, Mode::Train)?, yb)?;
                let g = gradients(&backward_first_order(&loss)?, &vars)?;
                for (v, g) in vars.iter().zip(&g) {
                    v.set(&(v.as_tensor() - g.affine(lr, 0.0)?)?)?;
                }
            }
        }
        // The f64 model at exactly the f32 model's parameters.
        for (p64, p32) in m64.params().iter().zip(m32.params()) {
            p64.var.set(&p32.var.as_tensor().to_dtype(DType::F64)?)?;
        }
        let (x64, x32) = (x.to_dtype(DType::F64)?, x.clone());
        let logits = m64.forward(&x64, Mode::BatchStats)?;
        let fp_labels = sample_fisher_labels(&logits, &mut ChaCha8Rng::seed_from_u64(3))?;
        let loss = cross_entropy(&logits, &y)?.to_scalar::<f64>()?;
        println!(
            "\n## {phase} ({train_steps} SGD steps at lr {lr} before 'trained'; loss {loss:.4})\n"
        );
        println!(
            "| dtype | method | h | GP: ‖∇P_fd − ∇P_db‖/‖∇P_db‖ | FP (fixed sampled labels) |"
        );
        println!("|---|---|---|---|---|");
        let kinds = [PenaltyKind::Gp, PenaltyKind::Fp];
        let mut reference = Vec::new();
        for kind in kinds {
            reference.push(penalty_gradient(
                m64.as_ref(),
                &x64,
                &y,
                kind,
                GradMethod::DoubleBackprop,
                &fp_labels,
            )?);
        }
        let db32: Vec<f64> = kinds
            .iter()
            .zip(&reference)
            .map(|(k, r)| {
                penalty_gradient(
                    m32.as_ref(),
                    &x32,
                    &y,
                    *k,
                    GradMethod::DoubleBackprop,
                    &fp_labels,
                )
                .map(|g| rel(&g, r))
            })
            .collect::<anyhow::Result<_>>()?;
        println!(
            "| f32 | double backprop | – | {:.2e} | {:.2e} |",
            db32[0], db32[1]
        );
        for (dtype, grid, model, xs) in
            [("f32", f32_grid, &m32, &x32), ("f64", f64_grid, &m64, &x64)]
        {
            for one_sided in [true, false] {
                let scheme = if one_sided { "one-sided" } else { "central" };
                let hs = grid.iter().map(|h| Some(*h)).chain([None]);
                for h in hs {
                    let method = GradMethod::FiniteDifference {
                        rel_step: h,
                        one_sided,
                        checked: true,
                    };
                    let mut cells = Vec::new();
                    for (kind, r) in kinds.iter().zip(&reference) {
                        let g = penalty_gradient(
                            model.as_ref(),
                            xs,
                            &y,
                            *kind,
                            method.clone(),
                            &fp_labels,
                        )?;
                        cells.push(format!("{:.2e}", rel(&g, r)));
                    }
                    let h = h.map_or("default".to_string(), |h| format!("{h:.0e}"));
                    println!(
                        "| {dtype} | FD {scheme} | {h} | {} | {} |",
                        cells[0], cells[1]
                    );
                }
            }
        }
    }
    Ok(())
}
