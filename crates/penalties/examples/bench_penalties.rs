//! Benchmark: one SimpleCNN training step (batch 128, f32, CPU) with each penalty, by double
//! backprop and by finite difference, as a ratio to a plain step; medians, side by side.
//!
//! `cargo run -p breakeven-penalties --example bench_penalties [-- --reps N --batch B]`
//!
//! The inputs are seeded N(0, 1) images with seeded labels: the cost of a step does not depend
//! on the pixel values. A step is the gradient computation handed to the optimizer (the SGD
//! update itself is negligible). Ratios are against a plain step with detached gradients;
//! double-backprop steps run with `CANDLE_GRAD_DO_NOT_DETACH=1`, finite differences without.

use std::time::Instant;

use breakeven_models::{build, ModelSpec};
use breakeven_penalties::{GradMethod, Penalizer, PenaltyConfig, PenaltyKind};
use candle_core::{DType, Device, Tensor};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(|v| {
            v.parse()
                .unwrap_or_else(|_| panic!("{name} takes a number, got {v}"))
        })
        .unwrap_or(default)
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let n = xs.len();
    if n % 2 == 1 {
        xs[n / 2]
    } else {
        (xs[n / 2 - 1] + xs[n / 2]) / 2.0
    }
}

/// Milliseconds of `f` run in a fresh thread whose first backward pass sees
/// `CANDLE_GRAD_DO_NOT_DETACH` set (`keep_graph`) or not: candle-core reads the variable once
/// per thread, so each measurement chooses its own setting.
fn timed<T: Send>(keep_graph: bool, f: impl FnOnce() -> T + Send) -> (f64, T) {
    // Edition 2021: a safe fn; no other thread of ours runs while it changes.
    if keep_graph {
        std::env::set_var("CANDLE_GRAD_DO_NOT_DETACH", "1");
    } else {
        std::env::remove_var("CANDLE_GRAD_DO_NOT_DETACH");
    }
    std::thread::scope(|s| {
        s.spawn(|| {
            let start = Instant::now();
            let out = f();
            (start.elapsed().as_secs_f64() * 1e3, out)
        })
        .join()
        .expect("benchmark thread panicked")
    })
}

struct Cell {
    penalizer: Penalizer,
    keep_graph: bool,
    rng: ChaCha8Rng,
    ratios: Vec<f64>,
    times: Vec<f64>,
    penalty: Option<f64>,
}

fn main() -> anyhow::Result<()> {
    let reps = arg("--reps", 3).max(1);
    let batch = arg("--batch", 128);
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let pixels = breakeven_models::init::normal(&mut rng, batch * 3 * 32 * 32, 0.0, 1.0);
    let x = Tensor::from_vec(pixels, (batch, 3, 32, 32), &Device::Cpu)?.to_dtype(DType::F32)?;
    let labels: Vec<u32> = (0..batch).map(|i| (i * 7 % 10) as u32).collect();
    let y = Tensor::from_vec(labels, batch, &Device::Cpu)?;
    let model = build(
        &ModelSpec::SimpleCnn { width_mult: 1.0 },
        (3, 32, 32),
        10,
        DType::F32,
        &Device::Cpu,
        0,
    )?;
    // Step 1 of an every-2 penalty is a plain step: the training loop's own plain path.
    let plain = Penalizer::new(
        PenaltyConfig {
            every: 2,
            ..PenaltyConfig::new(PenaltyKind::Gp, 0.1)
        },
        batch,
    )?;

    let methods = [
        ("double backprop", GradMethod::DoubleBackprop),
        (
            "finite difference (central)",
            GradMethod::FiniteDifference {
                epsilon: None,
                one_sided: false,
            },
        ),
        (
            "finite difference (one-sided)",
            GradMethod::FiniteDifference {
                epsilon: None,
                one_sided: true,
            },
        ),
    ];
    // Each penalty on the whole batch, and FP on a sub-batch of 32 (the cost knob of §3).
    let rows = [
        (PenaltyKind::Fp, None),
        (PenaltyKind::Gp, None),
        (PenaltyKind::Gpr, None),
        (PenaltyKind::Gpx, None),
        (PenaltyKind::Fp, Some(32.min(batch))),
    ];
    let mut cells = Vec::new();
    for (kind, sub_batch) in rows {
        for (_, method) in &methods {
            let cfg = PenaltyConfig {
                method: method.clone(),
                sub_batch,
                ..PenaltyConfig::new(kind, 0.1)
            };
            cells.push(Cell {
                penalizer: Penalizer::new(cfg, batch)?,
                keep_graph: matches!(method, GradMethod::DoubleBackprop),
                rng: ChaCha8Rng::seed_from_u64(1),
                ratios: Vec::new(),
                times: Vec::new(),
                penalty: None,
            });
        }
    }
    let mut plain_detached = Vec::new();
    let mut plain_kept = Vec::new();
    let mut plain_rng = ChaCha8Rng::seed_from_u64(2);
    // Rounds over all cells, each penalized step right after a plain one, so that the load of
    // a shared machine hits both sides of a ratio alike; round 0 is a warm-up.
    for round in 0..=reps {
        let (kept, r) = timed(true, || {
            plain.step(model.as_ref(), &x, &y, 1, &mut plain_rng)
        });
        r?;
        if round > 0 {
            plain_kept.push(kept);
        }
        for cell in cells.iter_mut() {
            let (base, r) = timed(false, || {
                plain.step(model.as_ref(), &x, &y, 1, &mut plain_rng)
            });
            r?;
            let (ms, out) = timed(cell.keep_graph, || {
                cell.penalizer
                    .step(model.as_ref(), &x, &y, 0, &mut cell.rng)
            });
            cell.penalty = out?.penalty;
            if round > 0 {
                plain_detached.push(base);
                cell.times.push(ms);
                cell.ratios.push(ms / base);
            }
        }
    }
    let plain_ms = median(plain_detached);
    let kept_ms = median(plain_kept);
    println!(
        "SimpleCNN, batch {batch}, f32, CPU, {} threads; {reps} rounds after 1 warm-up",
        threads()
    );
    println!(
        "plain step: {plain_ms:.0} ms (median; gradients detached); {kept_ms:.0} ms with \
         CANDLE_GRAD_DO_NOT_DETACH=1 ({:.2}x), which a double-backprop run pays on its plain steps",
        kept_ms / plain_ms
    );
    println!(
        "ratio = median over rounds of (penalized step / plain step measured just before it)\n"
    );
    print!("| penalty |");
    for (name, _) in &methods {
        print!(" {name} |");
    }
    println!("\n|---|---|---|---|");
    for ((kind, sub_batch), row) in rows.iter().zip(cells.chunks(methods.len())) {
        let on = sub_batch.map_or(String::new(), |m| format!(", sub-batch {m}"));
        print!(
            "| {kind:?}{on} (P = {:.3e}) |",
            row[0].penalty.unwrap_or(f64::NAN)
        );
        for cell in row {
            print!(
                " {:.2}x ({:.0} ms) |",
                median(cell.ratios.clone()),
                median(cell.times.clone())
            );
        }
        println!();
    }
    // With the penalty every k steps the mean cost per step is (r + k − 1)/k.
    println!("\nmean cost per step with `every = 10` (the papers' reported knob): (r + 9)/10");
    for ((kind, sub_batch), row) in rows.iter().zip(cells.chunks(methods.len())) {
        let amortized: Vec<String> = row
            .iter()
            .map(|c| format!("{:.2}x", (median(c.ratios.clone()) + 9.0) / 10.0))
            .collect();
        println!("  {kind:?} {sub_batch:?}: {}", amortized.join(" / "));
    }
    println!("\nplain-step ratio from the medians instead: {}", {
        let cols: Vec<String> = cells
            .iter()
            .map(|c| format!("{:.2}x", median(c.times.clone()) / plain_ms))
            .collect();
        cols.join(" ")
    });
    agreement(model.as_ref(), &x, &y, batch)
}

/// How far the finite-difference ∇P is from the exact one on this ReLU/max-pool net in f32
/// (SCIENCE.md §7: differences cross kinks): ‖∇P_fd − ∇P_db‖/‖∇P_db‖ for GP, with
/// ∇P = (∇(L + α·P) − ∇L)/α at α = 1.
fn agreement(
    model: &dyn breakeven_models::Model,
    x: &Tensor,
    y: &Tensor,
    batch: usize,
) -> anyhow::Result<()> {
    let run = |method: GradMethod, alpha: f64| -> anyhow::Result<Vec<Tensor>> {
        let keep = matches!(method, GradMethod::DoubleBackprop);
        let cfg = PenaltyConfig {
            method,
            ..PenaltyConfig::new(PenaltyKind::Gp, alpha)
        };
        let pen = Penalizer::new(cfg, batch)?;
        let (_, out) = timed(keep, || {
            pen.step(model, x, y, 0, &mut ChaCha8Rng::seed_from_u64(0))
        });
        Ok(out?.grads)
    };
    let plain = run(GradMethod::DoubleBackprop, 0.0)?;
    let dp = |total: Vec<Tensor>| -> anyhow::Result<Vec<f64>> {
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
    };
    let exact = dp(run(GradMethod::DoubleBackprop, 1.0)?)?;
    let norm = |v: &[f64]| v.iter().map(|a| a * a).sum::<f64>().sqrt();
    print!("\nGP, ‖∇P_fd − ∇P_db‖/‖∇P_db‖ on this net (f32):");
    for one_sided in [false, true] {
        let approx = dp(run(
            GradMethod::FiniteDifference {
                epsilon: None,
                one_sided,
            },
            1.0,
        )?)?;
        let diff: Vec<f64> = approx.iter().zip(&exact).map(|(a, b)| a - b).collect();
        let name = if one_sided { "one-sided" } else { "central" };
        print!(" {name} {:.2e};", norm(&diff) / norm(&exact));
    }
    println!();
    Ok(())
}

fn threads() -> String {
    std::env::var("RAYON_NUM_THREADS").unwrap_or_else(|_| {
        std::thread::available_parallelism()
            .map(|n| n.to_string())
            .unwrap_or_else(|_| "?".into())
    })
}
