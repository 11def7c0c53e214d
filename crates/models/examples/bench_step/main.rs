//! CPU speed and peak memory of breakeven's models against PyTorch, side by side.
//!
//! One command (the dev profile is optimized):
//!
//! ```text
//! cargo run -p breakeven-models --example bench_step -- [--write docs/results/cpu-speed.md]
//!     [--reps 5] [--rounds 3] [--batch 128] [--threads 2] [--only simple_cnn,resnet18,wrn16_4]
//!     [--python PYTHON_WITH_TORCH] [--per-example | --scaling]
//! ```
//!
//! Every measurement runs in a fresh child process (this binary with `--child`, or
//! `bench/torch_step.py`), so that its VmHWM from /proc/self/status is that measurement's peak.
//! Times are medians over `--reps` repetitions after one warm-up. The step table measures each
//! row in `--rounds` rounds (default 3), each running both implementations back to back, the
//! first of the two alternating between rounds; a row's time ratio is the median over rounds
//! of each round's ratio, so that a machine whose load drifts (a shared one) moves both sides of
//! a ratio together. Rows for architectures that `breakeven_models::build` does not know yet are
//! skipped with a note.
//!
//! `--per-example` times per-example gradients instead ([`per_example`]), `--scaling` how the
//! cost grows with batch size, width and parameter count ([`scaling`]); each writes its own
//! section of the page, which the other modes keep.

mod per_example;
mod scaling;

use std::process::Command;
use std::time::Instant;

use breakeven_curvature::{
    lanczos, per_example_gradients, BatchedLoss, HessianOperator, LanczosConfig, Reduction,
};
use breakeven_models::{build, cross_entropy, Mode, ModelSpec};
use candle_core::{DType, Device, Result, Tensor, Var};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// (key shared with torch_step.py, label, spec as JSON, measurements).
const MODELS: [(&str, &str, &str, &[&str]); 3] = [
    (
        "simple_cnn",
        "SimpleCNN",
        r#"{"arch":"simple_cnn"}"#,
        &["fwd", "fwdbwd", "hvp"],
    ),
    ("resnet18", "ResNet-18", r#"{"arch":"resnet18"}"#, &["step"]),
    (
        "wrn16_4",
        "WRN-16-4",
        r#"{"arch":"wrn","depth":16,"widen":4}"#,
        &["step"],
    ),
];

fn kind_label(kind: &str) -> &'static str {
    match kind {
        "fwd" => "forward",
        "fwdbwd" => "forward+backward",
        "hvp" => "HVP (double backprop)",
        "lanczos" => "Lanczos, 20 iterations",
        "per_example" => "per-example gradients",
        "per_example_loop" => "per-example gradients, batch-size-1 loop",
        _ => "training step (fwd+bwd+SGD)",
    }
}

/// One child's answer (both implementations print the same JSON).
#[derive(Debug, Clone, serde::Deserialize, serde::Serialize)]
struct Measured {
    median_ms: f64,
    times_ms: Vec<f64>,
    rss_before_mb: f64,
    peak_mb: f64,
    /// Number of model parameters (absent from older answers).
    #[serde(default)]
    params: Option<usize>,
}

impl Measured {
    /// The least disturbed repetition: on a shared machine the median carries other jobs' load.
    fn min_ms(&self) -> f64 {
        self.times_ms.iter().copied().fold(f64::INFINITY, f64::min)
    }
}

fn status_mb(key: &str) -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

fn uniform(rng: &mut ChaCha8Rng, shape: &[usize]) -> Result<Tensor> {
    let n = shape.iter().product();
    let v: Vec<f32> = (0..n).map(|_| rng.random::<f32>() * 2.0 - 1.0).collect();
    Tensor::from_vec(v, shape, &Device::Cpu)
}

/// The child: build the model, time `kind`, print `RESULT {json}`.
fn child(spec_json: &str, kind: &str, reps: usize, batch: usize) -> anyhow::Result<()> {
    // Per-example gradients and Lanczos run as the tracker runs them, in a process in
    // second-order mode (the runner's `enable_second_order`).
    if matches!(kind, "hvp" | "lanczos" | "per_example" | "per_example_loop") {
        breakeven_curvature::enable_double_backprop()?;
        anyhow::ensure!(
            breakeven_curvature::detached_worker_available(),
            "no detached backward worker"
        );
    }
    // As the runner and xtask do at start (alloc.rs).
    breakeven_models::keep_freed_memory();
    let spec: ModelSpec = serde_json::from_str(spec_json)?;
    let model = build(&spec, (3, 32, 32), 10, DType::F32, &Device::Cpu, 0)?;
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let x = uniform(&mut rng, &[batch, 3, 32, 32])?;
    let labels: Vec<u32> = (0..batch).map(|_| rng.random_range(0..10)).collect();
    let y = Tensor::new(labels.as_slice(), &Device::Cpu)?;
    let v: Vec<Tensor> = model
        .params()
        .iter()
        .map(|p| uniform(&mut rng, p.var.dims()))
        .collect::<Result<_>>()?;

    let vars: Vec<Var> = model.params().iter().map(|p| p.var.clone()).collect();
    let curvature = |e: breakeven_curvature::CurvatureError| candle_core::Error::Msg(e.to_string());

    let run = || -> Result<f32> {
        if kind == "per_example" {
            // One batched forward and backward pass (breakeven_models::per_example_gradients).
            let g = breakeven_models::per_example_gradients(model.as_ref(), &x, &y)
                .map_err(|e| candle_core::Error::Msg(e.to_string()))?;
            return Ok(g.row(batch - 1)[0] as f32);
        }
        if kind == "per_example_loop" {
            // The fallback, batch-size-1 passes: one example per batch of a `BatchedLoss`.
            let mut loss = BatchedLoss::new(batch, Reduction::Mean, |i| {
                let z = model.forward(&x.narrow(0, i, 1)?, Mode::BatchStats)?;
                Ok((cross_entropy(&z, &y.narrow(0, i, 1)?)?, 1))
            });
            let g = per_example_gradients(&mut loss, &vars).map_err(curvature)?;
            return Ok(g.row(batch - 1)[0] as f32);
        }
        if kind == "lanczos" {
            // As the tracker's λ_H^1: the Hessian operator of the batch's mean loss; tol 0
            // runs exactly 20 iterations.
            let loss = BatchedLoss::new(1, Reduction::Mean, |_| {
                Ok((
                    cross_entropy(&model.forward(&x, Mode::BatchStats)?, &y)?,
                    batch,
                ))
            });
            let mut op = HessianOperator::new(vars.clone(), loss).map_err(curvature)?;
            let cfg = LanczosConfig {
                k: 1,
                max_iter: 20,
                tol: 0.0,
                compute_residuals: false,
                ..Default::default()
            };
            let eig = lanczos(&mut op, &cfg, 0).map_err(curvature)?;
            return Ok(eig.eigenvalues[0] as f32);
        }
        let loss = cross_entropy(&model.forward(&x, Mode::Train)?, &y)?;
        match kind {
            "fwd" => loss.to_scalar::<f32>(),
            "hvp" => {
                let g = loss.backward()?;
                let mut gv = Tensor::zeros((), DType::F32, &Device::Cpu)?;
                for (p, v) in model.params().iter().zip(&v) {
                    gv = (gv + (g.get(&p.var).expect("parameter in graph") * v)?.sum_all()?)?;
                }
                // As breakeven-curvature's HessianOperator: the last pass keeps no graph.
                let h = breakeven_curvature::backward_detached(&gv)?;
                h.get(&model.params()[0].var)
                    .expect("parameter in graph")
                    .sum_all()?
                    .to_scalar::<f32>()
            }
            _ => {
                let g = loss.backward()?;
                if kind == "step" {
                    for p in model.params() {
                        let gi = g.get(&p.var).expect("parameter in graph");
                        p.var.set(&(p.var.as_tensor() - (gi * 0.01)?)?)?;
                    }
                }
                g.get(&model.params()[0].var)
                    .expect("parameter in graph")
                    .sum_all()?
                    .to_scalar::<f32>()
            }
        }
    };

    let rss_before_mb = status_mb("VmRSS");
    // 20 Lanczos iterations warm up on their first product; the others get one warm-up pass.
    if kind != "lanczos" {
        run()?;
    }
    let mut times_ms = Vec::with_capacity(reps);
    for _ in 0..reps {
        let t = Instant::now();
        run()?;
        times_ms.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let out = Measured {
        median_ms: median(&times_ms),
        times_ms,
        rss_before_mb,
        peak_mb: status_mb("VmHWM"),
        params: Some(vars.iter().map(|v| v.elem_count()).sum()),
    };
    println!("RESULT {}", serde_json::to_string(&out)?);
    Ok(())
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

/// Runs one child command and parses its `RESULT` line.
fn measure(cmd: &mut Command) -> std::result::Result<Measured, String> {
    let out = cmd
        .output()
        .map_err(|e| format!("could not start {cmd:?}: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    match stdout.lines().find_map(|l| l.strip_prefix("RESULT ")) {
        Some(json) => {
            serde_json::from_str(json).map_err(|e| format!("bad RESULT line {json}: {e}"))
        }
        None => {
            let err = String::from_utf8_lossy(&out.stderr);
            let last = err
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("no output");
            Err(last.trim().to_string())
        }
    }
}

/// What the command measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Task {
    /// The step table of [`MODELS`].
    Steps,
    /// Per-example gradients against `torch.func.vmap` and a loop ([`per_example`]).
    PerExample,
    /// Cost against batch size, width and parameter count ([`scaling`]).
    Scaling,
}

struct Args {
    write: Option<String>,
    /// glibc malloc tunables passed to every child (both implementations), or none.
    tunables: Option<String>,
    reps: usize,
    /// Rounds of the step table: each runs both implementations once (`--rounds`).
    rounds: usize,
    batch: usize,
    threads: usize,
    only: Option<Vec<String>>,
    /// The Python with torch that runs bench/torch_step.py (`--python`, else
    /// `$BREAKEVEN_TORCH_PYTHON`, else `python3`).
    python: String,
    mode: Task,
}

/// mmap threshold at its 32 MiB maximum, heap trimming off.
const TUNED_MALLOC: &str =
    "glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=17179869184";

fn parse_args(mut it: impl Iterator<Item = String>) -> anyhow::Result<Args> {
    let mut a = Args {
        write: None,
        tunables: None,
        reps: 5,
        rounds: 3,
        batch: 128,
        threads: 2,
        only: None,
        // The same variable as the PyTorch oracle test (tests/integration/measure_pytorch.rs).
        python: std::env::var("BREAKEVEN_TORCH_PYTHON").unwrap_or_else(|_| "python3".into()),
        mode: Task::Steps,
    };
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next()
                .ok_or_else(|| anyhow::anyhow!("{flag} needs a value"))
        };
        match flag.as_str() {
            "--write" => a.write = Some(value()?),
            // Keeps freed memory in the heap instead of returning it to the kernel, so that
            // repeated steps stop paying page faults (SimpleCNN step: ~8× fewer faults).
            "--tuned-malloc" => a.tunables = Some(TUNED_MALLOC.to_string()),
            "--reps" => a.reps = value()?.parse()?,
            "--rounds" => a.rounds = value()?.parse()?,
            "--batch" => a.batch = value()?.parse()?,
            "--threads" => a.threads = value()?.parse()?,
            "--only" => a.only = Some(value()?.split(',').map(str::to_string).collect()),
            "--python" => a.python = value()?,
            "--per-example" => a.mode = Task::PerExample,
            "--scaling" => a.mode = Task::Scaling,
            other => anyhow::bail!(
                "unknown flag {other}; expected --write, --reps, --rounds, --batch, --threads, \
                 --only, --python, --tuned-malloc, --per-example, --scaling"
            ),
        }
    }
    anyhow::ensure!(
        a.reps > 0 && a.rounds > 0,
        "--reps and --rounds must be at least 1"
    );
    Ok(a)
}

/// The two implementations' child commands for one measurement.
struct Children {
    exe: std::path::PathBuf,
    script: &'static str,
    /// PyTorch's version, `None` where `--python` cannot import torch.
    torch_version: Option<String>,
}

impl Children {
    fn new(args: &Args) -> anyhow::Result<Self> {
        let torch = Command::new(&args.python)
            .args(["-c", "import torch; print(torch.__version__)"])
            .output();
        let torch_version = match torch {
            Ok(o) if o.status.success() => {
                Some(String::from_utf8_lossy(&o.stdout).trim().to_string())
            }
            _ => None,
        };
        if torch_version.is_none() {
            println!(
                "PyTorch is absent ({} -c 'import torch' failed): breakeven columns only.",
                args.python
            );
        }
        Ok(Self {
            exe: std::env::current_exe()?,
            script: concat!(env!("CARGO_MANIFEST_DIR"), "/../../bench/torch_step.py"),
            torch_version,
        })
    }

    /// breakeven's child: `spec` as JSON, `kind` as in [`child`].
    fn ours(&self, args: &Args, spec: &str, kind: &str, reps: usize, batch: usize) -> Outcome {
        let mut cmd = Command::new(&self.exe);
        cmd.args(["--child", spec, kind, &reps.to_string(), &batch.to_string()])
            .env("RAYON_NUM_THREADS", args.threads.to_string());
        // Double backprop needs Candle's graphs kept (SCIENCE.md §7): the second-order
        // children turn it on themselves (enable_double_backprop), after starting the
        // detached worker.
        cmd.env_remove("CANDLE_GRAD_DO_NOT_DETACH");
        if let Some(t) = &args.tunables {
            cmd.env("GLIBC_TUNABLES", t);
        }
        measure(&mut cmd)
    }

    /// PyTorch's child (bench/torch_step.py), `None` without PyTorch.
    #[allow(clippy::too_many_arguments)]
    fn torch(
        &self,
        args: &Args,
        model: &str,
        width: f64,
        kind: &str,
        reps: usize,
        batch: usize,
    ) -> Option<Outcome> {
        self.torch_version.as_ref()?;
        let mut cmd = Command::new(&args.python);
        cmd.args([self.script, "--model", model, "--kind", kind]);
        cmd.args(["--reps", &reps.to_string(), "--batch", &batch.to_string()]);
        cmd.args(["--threads", &args.threads.to_string()]);
        cmd.args(["--width", &width.to_string()]);
        if let Some(t) = &args.tunables {
            cmd.env("GLIBC_TUNABLES", t);
        }
        Some(measure(&mut cmd))
    }
}

fn main() -> anyhow::Result<()> {
    let argv: Vec<String> = std::env::args().collect();
    if argv.get(1).map(String::as_str) == Some("--child") {
        let [spec, kind, reps, batch] = &argv[2..] else {
            anyhow::bail!("--child SPEC KIND REPS BATCH")
        };
        return child(spec, kind, reps.parse()?, batch.parse()?);
    }
    let args = parse_args(argv.into_iter().skip(1))?;
    let children = Children::new(&args)?;
    let section = match args.mode {
        Task::Steps => steps(&args, &children),
        Task::PerExample => per_example::section(&args, &children)?,
        Task::Scaling => scaling::section(&args, &children)?,
    };
    println!("\n{section}");
    if let Some(path) = &args.write {
        let old = std::fs::read_to_string(path).unwrap_or_default();
        std::fs::write(path, merge_page(&old, &section))
            .map_err(|e| anyhow::anyhow!("writing {path}: {e}"))?;
        println!("wrote {path}");
    }
    Ok(())
}

/// The step table: every kind of every model of [`MODELS`] (or of `--only`).
fn steps(args: &Args, children: &Children) -> String {
    let mut rows = Vec::new();
    for (key, label, spec, kinds) in MODELS {
        if args
            .only
            .as_ref()
            .is_some_and(|o| !o.iter().any(|k| k == key))
        {
            continue;
        }
        if let Err(e) = serde_json::from_str::<ModelSpec>(spec) {
            rows.push(format!(
                "| {label} | — | not built yet by breakeven_models::build ({e}) | | | | | |"
            ));
            continue;
        }
        for kind in kinds.iter().copied() {
            let (mut ours, mut theirs) = (Vec::new(), Vec::new());
            for round in 0..args.rounds {
                eprintln!(
                    "measuring {label} {kind}, round {} of {} ...",
                    round + 1,
                    args.rounds
                );
                let mut run_ours =
                    || ours.push(children.ours(args, spec, kind, args.reps, args.batch));
                let mut run_theirs =
                    || theirs.extend(children.torch(args, key, 1.0, kind, args.reps, args.batch));
                // Alternate which goes first, so that neither always follows the other.
                if round % 2 == 0 {
                    run_ours();
                    run_theirs();
                } else {
                    run_theirs();
                    run_ours();
                }
            }
            rows.push(row(label, kind, &ours, &theirs));
            println!("{}", rows.last().expect("just pushed"));
        }
    }
    render(args, children.torch_version.as_deref(), &rows)
}

type Outcome = std::result::Result<Measured, String>;

/// The heading of one CPU's section of the page (one table per CPU model measured).
const CPU_SECTION: &str = "## CPU: ";

/// What every version of the page starts with.
const PAGE_HEAD: &str = "# CPU speed: breakeven (Candle 0.11.1, patched backward, + fused CPU ops) against PyTorch

One table per CPU model measured (the machine a developer or CI gets is sometimes an AMD EPYC and sometimes an Intel Xeon with AVX-512); `--write` replaces the section of the CPU it runs on and keeps the others, and the other benchmarks' sections below them.

Memory: peak resident set (VmHWM, MB) of a fresh process per measurement, and in parentheses its rise over the resident set just before the first pass (model and batch built; PyTorch's import alone is ~500 MB). The memory ratio compares the rises. The machine is shared with other engineers' builds: times are noisy, compare ratios within a run.
";

/// The page with `section` in place of the old section of the same heading; a new CPU's
/// section (starting with [`CPU_SECTION`]) goes after the other CPUs' sections, any other new
/// section at the end. Every other `## ` section is kept as it is.
fn merge_page(old: &str, section: &str) -> String {
    let heading = section.lines().next().unwrap_or_default();
    let sections: Vec<&str> = match old.find("\n## ") {
        Some(i) => old[i + 1..]
            .split_inclusive('\n')
            .fold(Vec::<(usize, usize)>::new(), |mut acc, line| {
                let start = acc.last().map_or(0, |&(_, e)| e);
                if line.starts_with("## ") || acc.is_empty() {
                    acc.push((start, start + line.len()));
                } else if let Some(last) = acc.last_mut() {
                    last.1 += line.len();
                }
                acc
            })
            .into_iter()
            .map(|(a, b)| &old[i + 1 + a..i + 1 + b])
            .collect(),
        None => vec![],
    };
    let new = format!("{}\n\n", section.trim_end());
    let mut page: Vec<String> = sections
        .iter()
        .map(|s| {
            if s.lines().next().unwrap_or_default() == heading {
                new.clone()
            } else {
                format!("{}\n\n", s.trim_end())
            }
        })
        .collect();
    if !sections
        .iter()
        .any(|s| s.lines().next().unwrap_or_default() == heading)
    {
        let at = if heading.starts_with(CPU_SECTION) {
            page.iter()
                .rposition(|s| s.starts_with(CPU_SECTION))
                .map_or(0, |i| i + 1)
        } else {
            page.len()
        };
        page.insert(at, new);
    }
    let page = format!("{PAGE_HEAD}\n{}", page.concat());
    format!("{}\n", page.trim_end())
}

/// The CPU's model name, from /proc/cpuinfo.
fn cpu_name() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("model name")
                    .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
            })
        })
        .unwrap_or_default()
}

/// The short git revision of the working tree.
fn git_rev() -> String {
    Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

/// The SIMD extensions the matmul and convolution kernels can use on this CPU.
fn simd_features() -> String {
    let flags = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("flags")
                    .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
            })
        })
        .unwrap_or_default();
    let wanted = [
        "avx2",
        "fma",
        "avx512f",
        "avx512bw",
        "avx512vl",
        "avx512_vnni",
        "avx512_bf16",
        "avx512_fp16",
        "amx_tile",
    ];
    let have: Vec<&str> = wanted
        .into_iter()
        .filter(|w| flags.split_whitespace().any(|f| f == *w))
        .collect();
    if have.is_empty() {
        "SIMD: none of AVX2/FMA/AVX-512".into()
    } else {
        format!("SIMD: {}", have.join(", "))
    }
}

/// Every round's measurement, or the first failure's message.
fn all_ok(outcomes: &[Outcome]) -> std::result::Result<Vec<&Measured>, String> {
    outcomes
        .iter()
        .map(|o| o.as_ref().map_err(String::clone))
        .collect()
}

/// A row of the step table from each round's measurements: times are the median over rounds of
/// each round's median (and the least repetition of any round), the time ratio is the median
/// over rounds of the round's ratio with their range, the memory ratio compares the median rises.
/// `theirs` is empty without PyTorch.
fn row(label: &str, kind: &str, ours: &[Outcome], theirs: &[Outcome]) -> String {
    let kind = kind_label(kind);
    let rise = |m: &Measured| m.peak_mb - m.rss_before_mb;
    let summary = |ms: &[&Measured]| {
        let median_ms = median(&ms.iter().map(|m| m.median_ms).collect::<Vec<_>>());
        let min_ms = ms.iter().map(|m| m.min_ms()).fold(f64::INFINITY, f64::min);
        let peak = median(&ms.iter().map(|m| m.peak_mb).collect::<Vec<_>>());
        let rise = median(&ms.iter().map(|m| rise(m)).collect::<Vec<_>>());
        (median_ms, min_ms, peak, rise)
    };
    let cells = |(median_ms, min_ms, peak, rise): (f64, f64, f64, f64)| {
        (
            format!("{median_ms:.0} ({min_ms:.0})"),
            format!("{peak:.0} (+{rise:.0})"),
        )
    };
    let ours = match all_ok(ours) {
        Ok(o) => o,
        Err(e) => return format!("| {label} | {kind} | failed: {e} | | | | | |"),
    };
    let o = summary(&ours);
    let (o_ms, o_mem) = cells(o);
    let theirs = match (theirs.is_empty(), all_ok(theirs)) {
        (false, Ok(t)) => t,
        (empty, err) => {
            let why = match err {
                Err(e) if !empty => format!("PyTorch failed: {e}"),
                _ => "PyTorch absent".to_string(),
            };
            return format!("| {label} | {kind} | {o_ms} | {why} | | {o_mem} | | |");
        }
    };
    let t = summary(&theirs);
    let (t_ms, t_mem) = cells(t);
    let ratios: Vec<f64> = ours
        .iter()
        .zip(&theirs)
        .map(|(o, t)| o.median_ms / t.median_ms)
        .collect();
    let (lo, hi) = ratios
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &r| {
            (a.min(r), b.max(r))
        });
    let ratio = match ratios.len() {
        1 => format!("{:.2}×", ratios[0]),
        _ => format!("{:.2}× [{lo:.2}-{hi:.2}]", median(&ratios)),
    };
    format!(
        "| {label} | {kind} | {o_ms} | {t_ms} | {ratio} | {o_mem} | {t_mem} | {:.2}× |",
        o.3 / t.3
    )
}

fn render(args: &Args, torch: Option<&str>, rows: &[String]) -> String {
    let (rev, cpu) = (git_rev(), cpu_name());
    let mut s = String::new();
    s.push_str(&format!("{}{cpu} ({})\n\n", CPU_SECTION, simd_features()));
    let cmd = std::env::args().skip(1).collect::<Vec<_>>().join(" ");
    s.push_str(&format!(
        "Generated by `cargo run -p breakeven-models --example bench_step -- {cmd}`"
    ));
    s.push_str(&format!(" at git {rev}; batch {}, f32, {} threads (RAYON_NUM_THREADS / torch.set_num_threads); {} rounds, each running both implementations back to back (each in a fresh process, the first of the two alternating between rounds), each measurement the median of {} repetitions after one warm-up; times: median over rounds (least repetition of any round); time ratio: median over rounds of the round's ratio of medians [smallest-largest round]; peak and rise: median over rounds, the memory ratio compares the rises; CPU: {cpu}; PyTorch {}; breakeven's processes keep freed memory in the heap (`breakeven_models::keep_freed_memory`, as the runner and xtask do); glibc malloc tunables for both: {}.\n\n", args.batch, args.threads, args.rounds, args.reps, torch.unwrap_or("absent"), args.tunables.as_deref().unwrap_or("defaults")));
    s.push_str("| model | measurement | breakeven ms, median (min) | PyTorch ms, median (min) | time ratio, median of rounds [range] | breakeven peak MB (rise) | PyTorch peak MB (rise) | memory ratio |\n");
    s.push_str("|---|---|---|---|---|---|---|---|\n");
    for r in rows {
        s.push_str(r);
        s.push('\n');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn measured(median_ms: f64, rise_mb: f64) -> Outcome {
        Ok(Measured {
            median_ms,
            times_ms: vec![median_ms, median_ms + 1.0],
            rss_before_mb: 10.0,
            peak_mb: 10.0 + rise_mb,
            params: None,
        })
    }

    #[test]
    fn a_row_reads_the_median_of_the_rounds_ratios() {
        // Round ratios 0.8, 1.5 (a round where PyTorch ran unloaded), 0.9: median 0.9.
        let ours = [
            measured(80.0, 50.0),
            measured(150.0, 60.0),
            measured(90.0, 50.0),
        ];
        let theirs = [
            measured(100.0, 100.0),
            measured(100.0, 100.0),
            measured(100.0, 90.0),
        ];
        let r = row("SimpleCNN", "fwd", &ours, &theirs);
        assert!(r.contains("| 0.90× [0.80-1.50] |"), "{r}");
        // Medians over rounds: 90 ms (least repetition 80), rise 50 MB against 100 MB.
        assert!(r.contains("| 90 (80) | 100 (100) |"), "{r}");
        assert!(r.ends_with("| 60 (+50) | 110 (+100) | 0.50× |"), "{r}");
        // One round: its ratio alone.
        let one = row("SimpleCNN", "fwd", &ours[..1], &theirs[..1]);
        assert!(one.contains("| 0.80× |"), "{one}");
        // Without PyTorch, or with a failed round on either side.
        assert!(row("SimpleCNN", "fwd", &ours, &[]).contains("PyTorch absent"));
        let failed = [measured(1.0, 1.0), Err("out of memory".to_string())];
        assert!(
            row("SimpleCNN", "fwd", &ours[..2], &failed).contains("PyTorch failed: out of memory")
        );
        assert!(row("SimpleCNN", "fwd", &failed, &theirs[..2]).contains("failed: out of memory"));
    }

    #[test]
    fn a_cpu_section_replaces_its_own_and_keeps_the_rest() {
        let amd = "## CPU: AMD EPYC (SIMD: avx2, fma)\n\nold amd\n";
        let pen = "## Penalties\n\npenalty table\n";
        let old = format!("{PAGE_HEAD}\n{amd}\n{pen}");
        let intel = "## CPU: Intel Xeon (SIMD: avx512f)\n\nintel\n";
        let page = merge_page(&old, intel);
        let amd_at = page.find("old amd").unwrap();
        let intel_at = page.find("intel\n").unwrap();
        let pen_at = page.find("penalty table").unwrap();
        assert!(amd_at < intel_at && intel_at < pen_at, "{page}");
        let again = merge_page(&page, "## CPU: AMD EPYC (SIMD: avx2, fma)\n\nnew amd\n");
        assert!(
            !again.contains("old amd") && again.contains("new amd"),
            "{again}"
        );
        assert_eq!(again.matches("## CPU: AMD EPYC").count(), 1);
        assert!(again.contains("intel\n") && again.contains("penalty table"));
        assert!(again.starts_with(PAGE_HEAD));
        // The other modes' sections are replaced in place and kept by the step table's writes.
        let pe = |body: &str| format!("{}Intel Xeon\n\n{body}\n", per_example::HEADING);
        let with_pe = merge_page(&again, &pe("old pe"));
        let cpu_again = merge_page(&with_pe, intel);
        assert!(cpu_again.contains("old pe"), "{cpu_again}");
        let replaced = merge_page(&cpu_again, &pe("new pe"));
        assert!(!replaced.contains("old pe") && replaced.contains("new pe"));
        assert_eq!(replaced.matches(per_example::HEADING).count(), 1);
        assert!(replaced.find("penalty table").unwrap() < replaced.find("new pe").unwrap());
    }
}
