//! Cost of curvature on a conv net (SimpleCNN, SCIENCE.md §6) at a training batch: HVPs by
//! double backprop and by finite differences in units of one gradient, Lanczos vs power
//! iteration HVP counts for λ_H^1 at 1e-3, and λ_K^1 / Tr(K) from per-example gradients.
//!
//! `cargo run -p breakeven-curvature --example bench_curvature -- [--batch 128] [--width 1.0]
//!  [--examples 128] [--max-hvps 200] [--seed 0]`
//! Inputs are seeded Gaussian images and random labels: this measures cost, not science.

use std::time::Instant;

use breakeven_curvature::{
    covariance_summary, enable_double_backprop, lanczos, loss_and_gradient, per_example_gradients,
    power_iteration, BatchedLoss, Counted, CovarianceConfig, FdConfig, FdHessianOperator,
    HessianOperator, LanczosConfig, LinearOperator, PowerConfig, Reduction,
};
use breakeven_models::{build, cross_entropy, Mode, ModelSpec};
use candle_core::{DType, Device, Tensor, Var};
use rand::Rng;

struct Args {
    batch: usize,
    width: f64,
    examples: usize,
    max_hvps: usize,
    seed: u64,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        batch: 128,
        width: 1.0,
        examples: 128,
        max_hvps: 200,
        seed: 0,
    };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    for pair in argv.chunks(2) {
        let (k, v) = (
            pair[0].as_str(),
            pair.get(1).ok_or(format!("{} needs a value", pair[0]))?,
        );
        let bad = |e: &dyn std::fmt::Display| format!("{k} {v}: {e}");
        match k {
            "--batch" => a.batch = v.parse().map_err(|e| bad(&e))?,
            "--width" => a.width = v.parse().map_err(|e| bad(&e))?,
            "--examples" => a.examples = v.parse().map_err(|e| bad(&e))?,
            "--max-hvps" => a.max_hvps = v.parse().map_err(|e| bad(&e))?,
            "--seed" => a.seed = v.parse().map_err(|e| bad(&e))?,
            _ => return Err(format!("unknown flag {k}")),
        }
    }
    Ok(a)
}

/// Wall time of one run of `f`, in seconds.
fn secs(f: impl FnOnce()) -> f64 {
    let s = Instant::now();
    f();
    s.elapsed().as_secs_f64()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    enable_double_backprop()?;
    let args = parse_args()?;
    let dev = Device::Cpu;
    let model = build(
        &ModelSpec::SimpleCnn {
            width_mult: args.width,
        },
        (3, 32, 32),
        10,
        DType::F32,
        &dev,
        args.seed,
    )?;
    let vars: Vec<Var> = model.params().iter().map(|p| p.var.clone()).collect();
    let n = args.batch.max(args.examples);
    let mut rng = breakeven_curvature::random::rng(args.seed);
    let pixels: Vec<f32> = breakeven_curvature::random::gaussian_vector(&mut rng, n * 3 * 32 * 32)
        .into_iter()
        .map(|x| x as f32)
        .collect();
    let x = Tensor::from_vec(pixels, (n, 3, 32, 32), &dev)?;
    let y = Tensor::from_vec(
        (0..n)
            .map(|_| rng.random_range(0..10u32))
            .collect::<Vec<_>>(),
        n,
        &dev,
    )?;
    let model = std::sync::Arc::new(model);
    let batch_loss = |lo: usize, hi: usize| {
        let (m, x, y) = (model.clone(), x.clone(), y.clone());
        BatchedLoss::new(1, Reduction::Mean, move |_| {
            let z = m.forward(&x.narrow(0, lo, hi - lo)?, Mode::BatchStats)?;
            Ok((cross_entropy(&z, &y.narrow(0, lo, hi - lo)?)?, hi - lo))
        })
    };
    let dim: usize = vars.iter().map(|v| v.elem_count()).sum();
    println!(
        "SimpleCNN width {} ({dim} parameters), batch {}, f32, CPU",
        args.width, args.batch
    );

    let mut l = batch_loss(0, args.batch);
    let mut h = HessianOperator::new(vars.clone(), batch_loss(0, args.batch))?;
    let mut fd = FdHessianOperator::new(
        vars.clone(),
        batch_loss(0, args.batch),
        &FdConfig::default(),
    )?;
    let mut hc = HessianOperator::new(vars.clone(), batch_loss(0, args.batch))?.cache_graphs(true);
    let v = breakeven_curvature::random::gaussian_vector(&mut rng, dim);
    loss_and_gradient(&mut l, &vars)?; // warm-up: allocator and kernels
    hc.apply(&v)?; // builds the cached graph
                   // Interleaved repetitions, so that load from other processes hits all three alike.
    let (mut tg, mut th, mut tf, mut tc) = (vec![], vec![], vec![], vec![]);
    for _ in 0..3 {
        tg.push(secs(|| {
            loss_and_gradient(&mut l, &vars).unwrap();
        }));
        th.push(secs(|| {
            h.apply(&v).unwrap();
        }));
        tf.push(secs(|| {
            fd.apply(&v).unwrap();
        }));
        tc.push(secs(|| {
            hc.apply(&v).unwrap();
        }));
    }
    let med = |mut t: Vec<f64>| {
        t.sort_by(f64::total_cmp);
        t[t.len() / 2]
    };
    let (t_grad, t_hvp, t_fd, t_c) = (med(tg), med(th), med(tf), med(tc));
    println!("gradient            {:8.1} ms", 1e3 * t_grad);
    println!(
        "HVP double backprop {:8.1} ms = {:.2} gradients",
        1e3 * t_hvp,
        t_hvp / t_grad
    );
    println!(
        "HVP cached graph    {:8.1} ms = {:.2} gradients",
        1e3 * t_c,
        t_c / t_grad
    );
    println!(
        "HVP finite diff.    {:8.1} ms = {:.2} gradients",
        1e3 * t_fd,
        t_fd / t_grad
    );

    // Products of the cached operator: same values, cheaper.
    drop(h);
    let mut counted = Counted::new(&mut hc);
    let s = Instant::now();
    let lz = lanczos(
        &mut counted,
        &LanczosConfig {
            k: 1,
            tol: 1e-3,
            max_iter: args.max_hvps,
            compute_residuals: false,
            ..Default::default()
        },
        args.seed,
    )?;
    let t_l = s.elapsed().as_secs_f64();
    let s = Instant::now();
    let pw = power_iteration(
        &mut counted.inner,
        &PowerConfig {
            tol: 1e-3,
            max_iter: args.max_hvps,
            warm_start: None,
        },
        args.seed,
    )?;
    let t_p = s.elapsed().as_secs_f64();
    println!(
        "λ_H^1 Lanczos       {:10.4} in {:3} HVPs ({:.1} s), converged {}",
        lz.eigenvalues[0], lz.matvecs, t_l, lz.converged
    );
    println!(
        "λ_H^1 power iter.   {:10.4} in {:3} HVPs ({:.1} s), converged {} (largest |λ|)",
        pw.eigenvalue, pw.matvecs, t_p, pw.converged
    );

    let s = Instant::now();
    let mut per_ex = BatchedLoss::new(args.examples, Reduction::Mean, {
        let (m, x, y) = (model.clone(), x.clone(), y.clone());
        move |i| {
            let z = m.forward(&x.narrow(0, i, 1)?, Mode::BatchStats)?;
            Ok((cross_entropy(&z, &y.narrow(0, i, 1)?)?, 1))
        }
    });
    let g = per_example_gradients(&mut per_ex, &vars)?;
    let t_pe = s.elapsed().as_secs_f64();
    let s = Instant::now();
    let k = covariance_summary(&g, &CovarianceConfig::default())?;
    let t_k = s.elapsed().as_secs_f64();
    println!(
        "{} per-example gradients {:.2} s; Gram + eigen {:.2} s: λ_K^1 = {:.4}, Tr(K) = {:.4}, λ_K^*/λ_K^1 = {:.2e}",
        args.examples, t_pe, t_k, k.eigenvalues[0], k.trace, k.conditioning
    );
    Ok(())
}
