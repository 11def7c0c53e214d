//! Benchmark: one SimpleCNN training step (batch 128, f32, CPU) with each penalty, by double
//! backprop and by finite difference, as a ratio to a plain step; medians, side by side.
//!
//! `cargo run -p breakeven-penalties --example bench_penalties [-- --reps N --batch B]`;
//! `--plain-only` times only the plain step, direct against through the worker (issue 14).
//!
//! The inputs are seeded N(0, 1) images with seeded labels: the cost of a step does not depend
//! on the pixel values. A step is the gradient computation handed to the optimizer (the SGD
//! update itself is negligible). Everything runs on one thread of a process in second-order
//! mode (`breakeven_curvature::enable_double_backprop`, as a penalized run): ratios are against
//! the plain step as the training loop takes it (a first-order backward on the calling thread,
//! `backward_first_order`). Beside it, in the same rounds: the plain step as it was taken before
//! (its backward sent to curvature's detaching worker, `backward_detached`) and a plain
//! backward that keeps its graph.

use std::time::Instant;

use breakeven_curvature::{
    backward_detached, backward_first_order, detached_worker_available, enable_double_backprop,
    gradients,
};
use breakeven_models::{build, cross_entropy, Mode, Model, ModelSpec};
use breakeven_penalties::{GradMethod, Penalizer, PenaltyConfig, PenaltyKind};
use candle_core::backprop::GradStore;
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

/// Milliseconds of `f`, and its result.
fn timed<T>(f: impl FnOnce() -> T) -> (f64, T) {
    let start = Instant::now();
    let out = f();
    (start.elapsed().as_secs_f64() * 1e3, out)
}

/// A plain step's gradients with the backward pass `backward` (forward in `Mode::Train`).
fn plain_with(
    model: &dyn Model,
    x: &Tensor,
    y: &Tensor,
    backward: impl Fn(&Tensor) -> candle_core::Result<GradStore>,
) -> candle_core::Result<Vec<Tensor>> {
    let vars: Vec<_> = model.params().iter().map(|p| p.var.clone()).collect();
    let loss = cross_entropy(&model.forward(x, Mode::Train)?, y)?;
    gradients(&backward(&loss)?, &vars)?
        .iter()
        .map(|g| Ok(g.detach()))
        .collect()
}

fn bits(ts: &[Tensor]) -> candle_core::Result<Vec<u32>> {
    let mut out = Vec::new();
    for t in ts {
        out.extend(
            t.flatten_all()?
                .to_vec1::<f32>()?
                .iter()
                .map(|x| x.to_bits()),
        );
    }
    Ok(out)
}

struct Cell {
    penalizer: Penalizer,
    rng: ChaCha8Rng,
    ratios: Vec<f64>,
    times: Vec<f64>,
    penalty: Option<f64>,
}

fn main() -> anyhow::Result<()> {
    enable_double_backprop()?;
    anyhow::ensure!(
        detached_worker_available(),
        "CANDLE_GRAD_DO_NOT_DETACH was set before the process started: no detaching worker to \
         compare against; unset it"
    );
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

    if std::env::args().any(|a| a == "--plain-only") {
        return plain_only(model.as_ref(), &x, &y, reps);
    }

    let methods = [
        ("double backprop", GradMethod::DoubleBackprop),
        (
            "finite difference (central)",
            GradMethod::FiniteDifference {
                rel_step: None,
                one_sided: false,
                checked: true,
            },
        ),
        (
            "finite difference (one-sided)",
            GradMethod::FiniteDifference {
                rel_step: None,
                one_sided: true,
                checked: true,
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
                rng: ChaCha8Rng::seed_from_u64(1),
                ratios: Vec::new(),
                times: Vec::new(),
                penalty: None,
            });
        }
    }
    let mut plain_direct = Vec::new();
    let mut plain_worker = Vec::new();
    let mut plain_kept = Vec::new();
    let mut plain_rng = ChaCha8Rng::seed_from_u64(2);
    // The plain step three ways, same numbers bit for bit for the first two.
    let direct = plain_with(model.as_ref(), &x, &y, backward_first_order)?;
    let worker = plain_with(model.as_ref(), &x, &y, backward_detached)?;
    let same_bits = bits(&direct)? == bits(&worker)?;
    // Rounds over all cells, each penalized step right after a plain one, so that the load of
    // a shared machine hits both sides of a ratio alike; round 0 is a warm-up.
    for round in 0..=reps {
        let (w, r) = timed(|| plain_with(model.as_ref(), &x, &y, backward_detached));
        r?;
        let (k, r) = timed(|| plain_with(model.as_ref(), &x, &y, |l| l.backward()));
        r?;
        if round > 0 {
            plain_worker.push(w);
            plain_kept.push(k);
        }
        for cell in cells.iter_mut() {
            let (base, r) = timed(|| plain.step(model.as_ref(), &x, &y, 1, &mut plain_rng));
            r?;
            // Step 2: a steady-state penalized step (step 0 of an FD run also runs its
            // one-off reliability check, which refuses FD on this net; see the end).
            let (ms, out) = timed(|| {
                cell.penalizer
                    .step(model.as_ref(), &x, &y, 2, &mut cell.rng)
            });
            cell.penalty = out?.penalty;
            if round > 0 {
                plain_direct.push(base);
                cell.times.push(ms);
                cell.ratios.push(ms / base);
            }
        }
    }
    let plain_ms = median(plain_direct);
    let worker_ms = median(plain_worker);
    let kept_ms = median(plain_kept);
    println!(
        "SimpleCNN, batch {batch}, f32, CPU {}, {} threads; {reps} rounds after 1 warm-up; \
         process in second-order mode",
        cpu_name(),
        threads()
    );
    println!(
        "plain step (forward + backward, median): {plain_ms:.0} ms direct first-order backward \
         (now); {worker_ms:.0} ms through curvature's detaching worker (before; {:.2}x the \
         direct one; gradients bit-identical: {same_bits}); {kept_ms:.0} ms backward keeping its \
         graph ({:.2}x)",
        worker_ms / plain_ms,
        kept_ms / plain_ms
    );
    println!(
        "ratio = median over rounds of (penalized step / direct plain step measured just before it)\n"
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
        let cfg = PenaltyConfig {
            method,
            ..PenaltyConfig::new(PenaltyKind::Gp, alpha)
        };
        let pen = Penalizer::new(cfg, batch)?;
        let out = pen.step(model, x, y, 2, &mut ChaCha8Rng::seed_from_u64(0));
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
                rel_step: None,
                one_sided,
                checked: true,
            },
            1.0,
        )?)?;
        let diff: Vec<f64> = approx.iter().zip(&exact).map(|(a, b)| a - b).collect();
        let name = if one_sided { "one-sided" } else { "central" };
        print!(" {name} {:.2e};", norm(&diff) / norm(&exact));
    }
    println!();
    let cfg = PenaltyConfig {
        method: GradMethod::FiniteDifference {
            rel_step: None,
            one_sided: true,
            checked: true,
        },
        ..PenaltyConfig::new(PenaltyKind::Fp, 0.1)
    };
    let first = Penalizer::new(cfg, batch)?.step(model, x, y, 0, &mut ChaCha8Rng::seed_from_u64(0));
    match first {
        Err(e) => println!("the first penalized step of an FD run (step 0) on this net: {e}"),
        Ok(_) => println!("the first penalized step of an FD run (step 0) on this net: accepted"),
    }
    Ok(())
}

/// The plain step's backward directly on this thread (now) against through curvature's
/// detaching worker (before), alternating within each round; medians and their ratio.
fn plain_only(model: &dyn Model, x: &Tensor, y: &Tensor, reps: usize) -> anyhow::Result<()> {
    let (mut direct, mut worker) = (Vec::new(), Vec::new());
    for round in 0..=reps {
        let (a, r) = timed(|| plain_with(model, x, y, backward_first_order));
        r?;
        let (b, r) = timed(|| plain_with(model, x, y, backward_detached));
        r?;
        if round > 0 {
            direct.push(a);
            worker.push(b);
        }
    }
    let (d, w) = (median(direct.clone()), median(worker.clone()));
    let ratios: Vec<f64> = worker.iter().zip(&direct).map(|(w, d)| w / d).collect();
    println!(
        "plain SimpleCNN step, CPU {}, {} threads, {reps} rounds after 1 warm-up, second-order \
         mode: direct {d:.0} ms, through the worker {w:.0} ms (median); worker/direct = {:.3} \
         (ratio of medians), {:.3} (median of per-round ratios)",
        cpu_name(),
        threads(),
        w / d,
        median(ratios)
    );
    Ok(())
}

fn cpu_name() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "(unknown)".into())
}

fn threads() -> String {
    std::env::var("RAYON_NUM_THREADS").unwrap_or_else(|_| {
        std::thread::available_parallelism()
            .map(|n| n.to_string())
            .unwrap_or_else(|_| "?".into())
    })
}
