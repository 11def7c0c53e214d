//! GPU correctness check: Candle's CUDA path agrees with the CPU path, which the unit tests prove
//! right against finite differences and closed forms.
//!
//! Built without a GPU by `scripts/build-cuda.sh` (release, `--features cuda`) and run on the
//! GPU machine by `scripts/gpu-check.sh`:
//!
//! ```text
//! gpu_check [--device cuda:0] [--markdown]   # exit status 1 when any comparison fails
//! gpu_check --device cpu --allow-cpu          # no GPU: conv rows compare our CPU kernels with
//!                                             # Candle's conv (the CUDA fallback), models themselves
//! ```
//!
//! What runs on CUDA differs from CPU: `breakeven_models::ops::conv2d` falls back to Candle's
//! `conv2d` (im2col + cuBLAS) and its backward (`conv_transpose2d`, SCIENCE.md §7), so the
//! comparisons cover the conv op to second order (forward, gradients, the gradient of a
//! gradient) and whole models (logits, mean-loss gradient, Hessian-vector product through
//! `breakeven_curvature::HessianOperator`). Error = ‖cuda − cpu‖ / ‖cpu‖ over all entries.

use breakeven_curvature::{BatchedLoss, HessianOperator, LinearOperator, Reduction};
use breakeven_models::ops::conv2d;
use breakeven_models::{build, cross_entropy, Mode, ModelSpec};
use candle_core::{DType, Device, Result, Tensor, Var};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// One comparison: its name, the relative error and the tolerance it must meet.
struct Row {
    name: String,
    err: f64,
    tol: f64,
}

impl Row {
    fn pass(&self) -> bool {
        self.err.is_finite() && self.err <= self.tol
    }
}

/// Relative error ‖a − b‖ / ‖b‖ (∞ when the lengths differ or b is zero while a is not).
fn rel_err(a: &[f64], b: &[f64]) -> f64 {
    if a.len() != b.len() {
        return f64::INFINITY;
    }
    let diff: f64 = a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum();
    let norm: f64 = b.iter().map(|y| y * y).sum();
    if norm == 0.0 {
        return if diff == 0.0 { 0.0 } else { f64::INFINITY };
    }
    (diff / norm).sqrt()
}

fn host(t: &Tensor) -> Result<Vec<f64>> {
    t.flatten_all()?
        .to_dtype(DType::F64)?
        .to_device(&Device::Cpu)?
        .to_vec1()
}

/// Uniform(−1, 1) values from the seeded stream, made on CPU in f64, then cast and moved, so
/// that both devices see the same numbers.
fn uniform(rng: &mut ChaCha8Rng, dims: &[usize], dtype: DType, dev: &Device) -> Result<Tensor> {
    let n = dims.iter().product();
    let v: Vec<f64> = (0..n).map(|_| rng.random::<f64>() * 2.0 - 1.0).collect();
    Tensor::from_vec(v, dims, &Device::Cpu)?
        .to_dtype(dtype)?
        .to_device(dev)
}

/// A conv case: input N×C×H×W, C_out, kernel, stride, padding, bias.
type ConvCase = (
    (usize, usize, usize, usize),
    usize,
    usize,
    usize,
    usize,
    bool,
);

/// Square inputs only: Candle's own conv backward (the CUDA path) rejects stride > 1 when
/// height and width round differently (see crates/models/src/ops/conv.rs).
const CONV_CASES: [ConvCase; 4] = [
    ((2, 3, 8, 8), 4, 3, 1, 1, true),
    ((2, 3, 9, 9), 5, 3, 2, 1, true),
    ((3, 4, 8, 8), 6, 1, 2, 0, false),
    ((2, 8, 16, 16), 8, 3, 1, 0, true),
];

/// Forward, first-order gradients (x, w, b) and second-order gradients (x, w) of one conv case:
/// L = Σ y·r, S = Σ ∂L/∂x · u + Σ ∂L/∂w · u', then ∂S/∂x and ∂S/∂w. `candle`: Candle's own
/// conv2d + bias, exactly what `ops::conv2d` falls back to off-CPU (to try that path on CPU).
fn conv_outputs(
    case: ConvCase,
    dtype: DType,
    dev: &Device,
    candle: bool,
) -> Result<Vec<(String, Vec<f64>)>> {
    let ((n, c, h, w), co, k, s, p, bias) = case;
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let x = Var::from_tensor(&uniform(&mut rng, &[n, c, h, w], dtype, dev)?)?;
    let wt = Var::from_tensor(&uniform(&mut rng, &[co, c, k, k], dtype, dev)?)?;
    let b = if bias {
        Some(Var::from_tensor(&uniform(&mut rng, &[co], dtype, dev)?)?)
    } else {
        None
    };
    let y = if candle {
        let y = x.as_tensor().conv2d(wt.as_tensor(), p, s, 1, 1)?;
        match &b {
            Some(b) => y.broadcast_add(&b.as_tensor().reshape((1, (), 1, 1))?)?,
            None => y,
        }
    } else {
        conv2d(
            x.as_tensor(),
            wt.as_tensor(),
            b.as_ref().map(|b| b.as_tensor()),
            s,
            p,
        )?
    };
    let r = uniform(&mut rng, y.dims(), dtype, dev)?;
    let g = (&y * &r)?.sum_all()?.backward()?;
    let missing = || candle_core::Error::Msg("conv: a first-order gradient is missing".into());
    let gx = g.get(x.as_tensor()).ok_or_else(missing)?.clone();
    let gw = g.get(wt.as_tensor()).ok_or_else(missing)?.clone();
    let u = uniform(&mut rng, gx.dims(), dtype, dev)?;
    let u2 = uniform(&mut rng, gw.dims(), dtype, dev)?;
    let s2 = ((&gx * &u)?.sum_all()? + (&gw * &u2)?.sum_all()?)?;
    let h2 = s2.backward()?;
    let second = |v: &Var| -> Result<Vec<f64>> {
        match h2.get(v.as_tensor()) {
            Some(t) => host(t),
            None => Ok(vec![0.0; v.elem_count()]),
        }
    };
    let mut out = vec![
        ("forward".to_string(), host(&y)?),
        ("dL/dx".to_string(), host(&gx)?),
        ("dL/dw".to_string(), host(&gw)?),
    ];
    if let Some(b) = &b {
        out.push((
            "dL/db".into(),
            host(g.get(b.as_tensor()).ok_or_else(missing)?)?,
        ));
    }
    out.push(("d2 (x)".into(), second(&x)?));
    out.push(("d2 (w)".into(), second(&wt)?));
    Ok(out)
}

/// Logits, the mean-loss gradient and one HVP of a model built with seed 0 on `dev`.
fn model_outputs(spec: &ModelSpec, dtype: DType, dev: &Device) -> anyhow::Result<[Vec<f64>; 3]> {
    let model = build(spec, (3, 32, 32), 10, dtype, dev, 0)?;
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let batch = 8;
    let x = uniform(&mut rng, &[batch, 3, 32, 32], dtype, dev)?;
    let labels: Vec<u32> = (0..batch).map(|_| rng.random_range(0..10)).collect();
    let y = Tensor::new(labels.as_slice(), dev)?;
    let logits = host(&model.forward(&x, Mode::BatchStats)?)?;
    let vars: Vec<Var> = model.params().iter().map(|p| p.var.clone()).collect();
    let dim: usize = vars.iter().map(|v| v.elem_count()).sum();
    let v: Vec<f64> = (0..dim).map(|_| rng.random::<f64>() * 2.0 - 1.0).collect();
    let loss = BatchedLoss::new(1, Reduction::Mean, |_| {
        Ok((
            cross_entropy(&model.forward(&x, Mode::BatchStats)?, &y)?,
            batch,
        ))
    });
    let mut op = HessianOperator::new(vars, loss)?;
    let (_, grad) = op.loss_and_gradient()?;
    let hv = op.apply(&v)?;
    Ok([logits, grad, hv])
}

fn run_checks(gpu: &Device) -> anyhow::Result<Vec<Row>> {
    let mut rows = Vec::new();
    // f64: both paths are exact up to summation order, so the CUDA path must agree to ~1e-12;
    // f32: ~1e-6 per operation, amplified by long sums and ReLU/max-pool switches.
    for (dtype, tol) in [(DType::F64, 1e-10), (DType::F32, 1e-4)] {
        for case in CONV_CASES {
            let cpu = conv_outputs(case, dtype, &Device::Cpu, false)?;
            let cuda = conv_outputs(case, dtype, gpu, !gpu.is_cuda())?;
            let ((n, c, h, w), co, k, s, p, bias) = case;
            for ((what, a), (_, b)) in cuda.iter().zip(&cpu) {
                rows.push(Row {
                    name: format!(
                        "conv2d {n}×{c}×{h}×{w}→{co} k{k} s{s} p{p}{} {dtype:?}: {what}",
                        if bias { " +bias" } else { "" }
                    ),
                    err: rel_err(a, b),
                    tol,
                });
            }
        }
    }
    let models = [
        ("SimpleCNN", r#"{"arch":"simple_cnn"}"#, DType::F64, 1e-9),
        ("SimpleCNN", r#"{"arch":"simple_cnn"}"#, DType::F32, 1e-3),
        // The smallest WRN: BatchNorm, stride-2 and 1×1 shortcut convs.
        (
            "WRN-10-1",
            r#"{"arch":"wrn","depth":10,"widen":1}"#,
            DType::F64,
            1e-9,
        ),
    ];
    for (label, json, dtype, tol) in models {
        let spec: ModelSpec = serde_json::from_str(json)?;
        let cpu = model_outputs(&spec, dtype, &Device::Cpu)?;
        let cuda = model_outputs(&spec, dtype, gpu)?;
        for (i, what) in ["logits", "gradient", "HVP"].iter().enumerate() {
            rows.push(Row {
                name: format!("{label} {dtype:?} batch 8: {what}"),
                err: rel_err(&cuda[i], &cpu[i]),
                tol,
            });
        }
    }
    Ok(rows)
}

fn main() -> anyhow::Result<()> {
    // Double backprop (HVP) needs Candle's graphs kept: set before the first backward (SCIENCE.md §7).
    breakeven_curvature::enable_double_backprop()?;
    let mut device = "cuda:0".to_string();
    let (mut markdown, mut allow_cpu) = (false, false);
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--device" => {
                device = args
                    .next()
                    .ok_or_else(|| anyhow::anyhow!("--device needs a value"))?
            }
            "--markdown" => markdown = true,
            "--allow-cpu" => allow_cpu = true,
            other => anyhow::bail!(
                "unknown flag {other}; expected --device NAME, --markdown, --allow-cpu"
            ),
        }
    }
    let gpu = breakeven_runner::open_device(breakeven_runner::parse_device_name(&device)?)?;
    if !gpu.is_cuda() && !allow_cpu {
        anyhow::bail!("--device {device} is not a CUDA device: nothing to compare")
    }
    let rows = run_checks(&gpu)?;
    let failed = rows.iter().filter(|r| !r.pass()).count();
    if markdown {
        println!("| comparison (CUDA vs CPU) | relative error | tolerance | result |");
        println!("|---|---|---|---|");
    }
    for r in &rows {
        let verdict = if r.pass() { "pass" } else { "FAIL" };
        if markdown {
            println!("| {} | {:.2e} | {:.0e} | {verdict} |", r.name, r.err, r.tol);
        } else {
            println!("{verdict:4} {:.2e} (tol {:.0e})  {}", r.err, r.tol, r.name);
        }
    }
    if markdown {
        println!("\n{} passed, {failed} failed", rows.len() - failed);
    } else {
        println!("{} passed, {failed} failed", rows.len() - failed);
    }
    if failed > 0 {
        std::process::exit(1);
    }
    Ok(())
}
