//! GPU speed: a training step and a Hessian-vector product of SimpleCNN and WRN-28-10 on CUDA,
//! beside PyTorch on the same GPU in the same run.
//!
//! Built without a GPU by `scripts/build-cuda.sh`, run by `scripts/gpu-check.sh`:
//!
//! ```text
//! gpu_bench [--device cuda:0] [--reps 5] [--batch 128] [--only simple_cnn,wrn28_10]
//!           [--torch scripts/gpu_torch_ref.py] [--markdown]
//! ```
//!
//! Both sides measure the same thing as `crates/models/examples/bench_step/` does on CPU: f32,
//! random inputs and labels, `step` = forward + cross-entropy + backward + plain SGD update of
//! every parameter, `hvp` = double backprop ∇(∇L·v). Each time is taken between device
//! synchronizations; the median of `--reps` after one warm-up (fewer reps when the warm-up alone
//! exceeds 10 s, so one slow kernel cannot eat the GPU session). PyTorch runs with TF32 off, the
//! precision Candle's f32 cuBLAS calls use.

use std::process::Command;
use std::time::Instant;

use breakeven_models::{build, cross_entropy, Mode, ModelSpec};
use candle_core::{DType, Device, Result, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// (key, label, spec for both `breakeven_models::build` and reference/models.py `from_spec`).
const MODELS: [(&str, &str, &str); 2] = [
    (
        "simple_cnn",
        "SimpleCNN",
        r#"{"arch":"simple_cnn","width_mult":1.0}"#,
    ),
    (
        "wrn28_10",
        "WRN-28-10",
        r#"{"arch":"wrn","depth":28,"widen":10}"#,
    ),
];
const KINDS: [(&str, &str); 2] = [
    ("step", "training step (fwd+bwd+SGD)"),
    ("hvp", "HVP (double backprop)"),
];

#[derive(Debug, serde::Deserialize)]
struct Measured {
    median_ms: f64,
    times_ms: Vec<f64>,
}

fn uniform(rng: &mut ChaCha8Rng, dims: &[usize], dev: &Device) -> Result<Tensor> {
    let n = dims.iter().product();
    let v: Vec<f32> = (0..n).map(|_| rng.random::<f32>() * 2.0 - 1.0).collect();
    Tensor::from_vec(v, dims, &Device::Cpu)?.to_device(dev)
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let m = s.len() / 2;
    if s.len() % 2 == 1 {
        s[m]
    } else {
        (s[m - 1] + s[m]) / 2.0
    }
}

/// Times `kind` for one model on `dev`.
fn ours(
    spec_json: &str,
    kind: &str,
    reps: usize,
    batch: usize,
    dev: &Device,
) -> anyhow::Result<Measured> {
    let spec: ModelSpec = serde_json::from_str(spec_json)?;
    let model = build(&spec, (3, 32, 32), 10, DType::F32, dev, 0)?;
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let x = uniform(&mut rng, &[batch, 3, 32, 32], dev)?;
    let labels: Vec<u32> = (0..batch).map(|_| rng.random_range(0..10)).collect();
    let y = Tensor::new(labels.as_slice(), dev)?;
    let v: Vec<Tensor> = model
        .params()
        .iter()
        .map(|p| uniform(&mut rng, p.var.dims(), dev))
        .collect::<Result<_>>()?;
    let missing = || candle_core::Error::Msg("a parameter is missing from the graph".into());
    let run = || -> Result<()> {
        let loss = cross_entropy(&model.forward(&x, Mode::Train)?, &y)?;
        let g = loss.backward()?;
        if kind == "hvp" {
            let mut gv = Tensor::zeros((), DType::F32, dev)?;
            for (p, v) in model.params().iter().zip(&v) {
                gv = (gv + (g.get(&p.var).ok_or_else(missing)? * v)?.sum_all()?)?;
            }
            let h = gv.backward()?;
            h.get(&model.params()[0].var).ok_or_else(missing)?;
        } else {
            for p in model.params() {
                let gi = g.get(&p.var).ok_or_else(missing)?;
                p.var.set(&(p.var.as_tensor() - (gi * 0.01)?)?)?;
            }
        }
        dev.synchronize()
    };
    let t = Instant::now();
    run()?;
    let warm = t.elapsed().as_secs_f64();
    let reps = if warm > 10.0 { reps.min(2) } else { reps };
    let mut times_ms = Vec::with_capacity(reps);
    for _ in 0..reps {
        let t = Instant::now();
        run()?;
        times_ms.push(t.elapsed().as_secs_f64() * 1e3);
    }
    Ok(Measured {
        median_ms: median(&times_ms),
        times_ms,
    })
}

/// Runs the PyTorch reference in its own process and parses its `RESULT` line.
/// `device` is `cuda` or `cpu` (a CPU trial of the plumbing on a machine without a GPU).
fn theirs(
    script: &str,
    spec: &str,
    kind: &str,
    (reps, batch): (usize, usize),
    device: &str,
) -> std::result::Result<Measured, String> {
    let (reps, batch) = (reps.to_string(), batch.to_string());
    let out = Command::new("python3")
        .args([
            script, "--spec", spec, "--kind", kind, "--reps", &reps, "--batch", &batch,
        ])
        .args(["--device", device])
        .output()
        .map_err(|e| format!("could not start python3 {script}: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    match stdout.lines().find_map(|l| l.strip_prefix("RESULT ")) {
        Some(json) => {
            serde_json::from_str(json).map_err(|e| format!("bad RESULT line {json}: {e}"))
        }
        None => {
            let err = String::from_utf8_lossy(&out.stderr);
            Err(err
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("no output")
                .trim()
                .to_string())
        }
    }
}

fn main() -> anyhow::Result<()> {
    // Double backprop (HVP) needs Candle's graphs kept: set before the first backward (SCIENCE.md §7).
    breakeven_curvature::enable_double_backprop()?;
    let (mut device, mut reps, mut batch) = ("cuda:0".to_string(), 5usize, 128usize);
    let mut only: Option<Vec<String>> = None;
    let mut script = "scripts/gpu_torch_ref.py".to_string();
    let mut markdown = false;
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next()
                .ok_or_else(|| anyhow::anyhow!("{flag} needs a value"))
        };
        match flag.as_str() {
            "--device" => device = value()?,
            "--reps" => reps = value()?.parse()?,
            "--batch" => batch = value()?.parse()?,
            "--only" => only = Some(value()?.split(',').map(str::to_string).collect()),
            "--torch" => script = value()?,
            "--markdown" => markdown = true,
            other => anyhow::bail!(
                "unknown flag {other}; expected --device, --reps, --batch, --only, --torch, --markdown"
            ),
        }
    }
    let dev = breakeven_runner::open_device(breakeven_runner::parse_device_name(&device)?)?;
    if markdown {
        println!("| model | measurement | breakeven (Candle CUDA) ms | PyTorch CUDA ms | time ratio | breakeven times ms |");
        println!("|---|---|---|---|---|---|");
    }
    for (key, label, spec) in MODELS {
        if only.as_ref().is_some_and(|o| !o.iter().any(|k| k == key)) {
            continue;
        }
        for (kind, kind_label) in KINDS {
            eprintln!("measuring {label} {kind} ...");
            let a = ours(spec, kind, reps, batch, &dev).map_err(|e| e.to_string());
            let torch_dev = if dev.is_cuda() { "cuda" } else { "cpu" };
            let b = theirs(&script, spec, kind, (reps, batch), torch_dev);
            let cell = |m: &std::result::Result<Measured, String>| match m {
                Ok(m) => format!("{:.1}", m.median_ms),
                Err(e) => format!("failed: {e}"),
            };
            let ratio = match (&a, &b) {
                (Ok(a), Ok(b)) => format!("{:.2}×", a.median_ms / b.median_ms),
                _ => String::new(),
            };
            let times = a.as_ref().map_or(String::new(), |m| {
                m.times_ms
                    .iter()
                    .map(|t| format!("{t:.1}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            });
            if markdown {
                println!(
                    "| {label} | {kind_label} | {} | {} | {ratio} | {times} |",
                    cell(&a),
                    cell(&b)
                );
            } else {
                println!(
                    "{label} {kind}: breakeven {} ms, PyTorch {} ms {ratio}",
                    cell(&a),
                    cell(&b)
                );
            }
        }
    }
    Ok(())
}
