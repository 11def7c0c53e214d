//! Per-layer timing of the three convolution kernels (forward, input gradient, weight gradient)
//! against Candle's own `conv2d` / `conv_transpose2d`, on SimpleCNN and ResNet-18 layer shapes.
//!
//! `RAYON_NUM_THREADS=2 cargo run -p breakeven-models --example bench_conv -- [reps] [--ours-only]
//! [--simple-cnn]` (`--ours-only` skips Candle's kernels, whose single-thread times dominate
//! the run; `--simple-cnn` times SimpleCNN's layers only). PyTorch's numbers for the same
//! shapes: `python3 bench/torch_conv.py`.
//!
//! Times are medians of process CPU time (`CLOCK_PROCESS_CPUTIME_ID`), so that on a machine
//! shared with other jobs they count only the time this process ran; with more than one thread
//! they add up the threads.

use breakeven_models::ops::conv::{conv2d, conv2d_input_grad, conv2d_weight_grad};
use candle_core::{Device, Result, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// (N, C, H, W, O, K, stride, padding).
type Case = (usize, usize, usize, usize, usize, usize, usize, usize);

/// SimpleCNN's four convs, then ResNet-18 stages (the 8×8 and 4×4 ones last).
const SHAPES: [Case; 10] = [
    (128, 3, 32, 32, 32, 3, 1, 1),
    (128, 32, 32, 32, 32, 3, 1, 0),
    (128, 32, 15, 15, 64, 3, 1, 1),
    (128, 64, 15, 15, 64, 3, 1, 0),
    (128, 64, 32, 32, 64, 3, 1, 1),
    (128, 128, 16, 16, 128, 3, 1, 1),
    (128, 128, 16, 16, 256, 3, 2, 1),
    (128, 64, 32, 32, 128, 1, 2, 0),
    (128, 256, 8, 8, 256, 3, 1, 1),
    (128, 512, 4, 4, 512, 3, 1, 1),
];

fn uniform(rng: &mut ChaCha8Rng, shape: &[usize]) -> Result<Tensor> {
    let n = shape.iter().product();
    let v: Vec<f32> = (0..n).map(|_| rng.random::<f32>() * 2.0 - 1.0).collect();
    Tensor::from_vec(v, shape, &Device::Cpu)
}

#[path = "common/cpu_time.rs"]
mod cpu_time;
use cpu_time::cpu_ms;

fn median_ms(reps: usize, mut f: impl FnMut() -> Result<Tensor>) -> Result<f64> {
    f()?;
    let mut t: Vec<f64> = (0..reps)
        .map(|_| {
            let s = cpu_ms();
            f().map(|_| cpu_ms() - s)
        })
        .collect::<Result<_>>()?;
    t.sort_by(f64::total_cmp);
    Ok(t[t.len() / 2])
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let ours_only = args.iter().any(|a| a == "--ours-only");
    let shapes = if args.iter().any(|a| a == "--simple-cnn") {
        &SHAPES[..4]
    } else {
        &SHAPES[..]
    };
    let reps = args.iter().find_map(|s| s.parse().ok()).unwrap_or(5);
    // Candle's time, or NaN (printed as "NaN") where it is skipped.
    let theirs = |f: &mut dyn FnMut() -> Result<Tensor>| -> Result<f64> {
        if ours_only {
            Ok(f64::NAN)
        } else {
            median_ms(reps, f)
        }
    };
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    println!("shape (N,C,H,W,O,K,s,p) | fwd ours/candle ms | input-grad ours/candle | weight-grad ours/candle");
    for &(n, c, h, w, o, k, s, p) in shapes {
        let x = uniform(&mut rng, &[n, c, h, w])?;
        let wt = uniform(&mut rng, &[o, c, k, k])?;
        let y = conv2d(&x, &wt, None, s, p)?;
        let dy = uniform(&mut rng, y.dims())?;
        let fwd = median_ms(reps, || conv2d(&x, &wt, None, s, p))?;
        let fwd_c = theirs(&mut || x.conv2d(&wt, p, s, 1, 1))?;
        let ig = median_ms(reps, || conv2d_input_grad(&dy, &wt, (h, w), s, p))?;
        let out_pad = (h + 2 * p - k) % s;
        let ig_c = theirs(&mut || dy.conv_transpose2d(&wt, p, out_pad, s, 1))?;
        let wg = median_ms(reps, || conv2d_weight_grad(&x, &dy, (k, k), s, p))?;
        // Candle's own weight gradient, as its backprop.rs computes it.
        let wg_c = theirs(&mut || {
            x.transpose(0, 1)?
                .conv2d(&dy.transpose(0, 1)?, p, 1, s, 1)?
                .transpose(0, 1)
        })?;
        println!(
            "{:?} | {fwd:.1} / {fwd_c:.1} | {ig:.1} / {ig_c:.1} | {wg:.1} / {wg_c:.1}",
            (n, c, h, w, o, k, s, p)
        );
    }
    Ok(())
}
