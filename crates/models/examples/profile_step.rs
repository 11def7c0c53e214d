//! A small driver for profiling one model's forward+backward: it loops the step of
//! bench_step's `fwdbwd` child (same model, seed, batch and loss) and prints the medians of the
//! forward and backward times, so that `perf record` sees nothing but training steps.
//!
//! ```text
//! RAYON_NUM_THREADS=1 perf record -g target/debug/examples/profile_step \
//!     [--reps 20] [--batch 128] [--spec '{"arch":"simple_cnn"}']
//! ```
//!
//! Times are process CPU time (`CLOCK_PROCESS_CPUTIME_ID`): on a machine shared with other
//! jobs they count only the time this process ran. With more than one thread they add up the
//! threads, idle spinning included.

use breakeven_models::{build, cross_entropy, Mode, ModelSpec};
use candle_core::{DType, Device, Result, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

#[path = "common/cpu_time.rs"]
mod cpu_time;
use cpu_time::cpu_ms;

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() -> anyhow::Result<()> {
    let (mut reps, mut batch) = (20usize, 128usize);
    let mut spec = r#"{"arch":"simple_cnn"}"#.to_string();
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next()
                .ok_or_else(|| anyhow::anyhow!("{flag} needs a value"))
        };
        match flag.as_str() {
            "--reps" => reps = value()?.parse()?,
            "--batch" => batch = value()?.parse()?,
            "--spec" => spec = value()?,
            other => anyhow::bail!("unknown flag {other}; expected --reps, --batch, --spec"),
        }
    }
    anyhow::ensure!(reps > 0, "--reps must be at least 1");
    // As bench_step's children, the runner and xtask do (alloc.rs).
    breakeven_models::keep_freed_memory();
    let spec: ModelSpec = serde_json::from_str(&spec)?;
    let model = build(&spec, (3, 32, 32), 10, DType::F32, &Device::Cpu, 0)?;
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let pixels: Vec<f32> = (0..batch * 3 * 32 * 32)
        .map(|_| rng.random::<f32>() * 2.0 - 1.0)
        .collect();
    let x = Tensor::from_vec(pixels, (batch, 3, 32, 32), &Device::Cpu)?;
    let labels: Vec<u32> = (0..batch).map(|_| rng.random_range(0..10)).collect();
    let y = Tensor::new(labels.as_slice(), &Device::Cpu)?;
    let step = || -> Result<(f64, f64)> {
        let t0 = cpu_ms();
        let loss = cross_entropy(&model.forward(&x, Mode::Train)?, &y)?;
        loss.to_scalar::<f32>()?;
        let t1 = cpu_ms();
        drop(loss.backward()?);
        Ok((t1 - t0, cpu_ms() - t1))
    };
    step()?;
    let (mut fwd, mut bwd) = (Vec::new(), Vec::new());
    for _ in 0..reps {
        let (f, b) = step()?;
        fwd.push(f);
        bwd.push(b);
    }
    println!(
        "{reps} reps, batch {batch}, {} thread(s): forward {:.1} ms, backward {:.1} ms \
         (medians of process CPU time)",
        rayon::current_num_threads(),
        median(&mut fwd),
        median(&mut bwd)
    );
    Ok(())
}
