//! `breakeven measure` against a PyTorch float64 oracle (issue 17): a tiny SimpleCNN made and
//! exported by PyTorch (`safetensors.torch.save_file(model.state_dict(), …)`), measured here
//! with `--arch` and no config, and recomputed by `bench/measure_oracle.py` with dense f64
//! linear algebra on the exact inputs `measure` used. Deterministic quantities must agree to
//! 1e-10 (relative); randomized ones within 4 of their printed standard errors.
//!
//! Runs where a Python with torch and safetensors is found (`BREAKEVEN_TORCH_PYTHON`, else
//! `python3`); elsewhere it prints why it skipped and passes. Synthetic data: no files needed.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use breakeven_runner::measure::{MeasureArgs, Measurement, Session};
use candle_core::{DType, Tensor};

fn python() -> Option<String> {
    let py = std::env::var("BREAKEVEN_TORCH_PYTHON").unwrap_or_else(|_| "python3".into());
    let ok = Command::new(&py)
        .args(["-c", "import torch, safetensors"])
        .output()
        .is_ok_and(|o| o.status.success());
    ok.then_some(py)
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../bench/measure_oracle.py")
}

fn run(py: &str, args: &[&str]) {
    let out = Command::new(py)
        .arg(script())
        .args(args)
        .output()
        .expect("running the PyTorch oracle");
    assert!(
        out.status.success(),
        "{} {args:?} failed:\n{}",
        script().display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn flags(weights: &Path, extra: &[&str]) -> MeasureArgs {
    let mut f: Vec<String> = [
        "--checkpoint",
        &weights.display().to_string(),
        "--arch",
        "simple_cnn",
        "--model-option",
        "width_mult=0.125",
        "--data",
        "synthetic",
        "--dtype",
        "f64",
        "--examples",
        "16",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    f.extend(extra.iter().map(|s| s.to_string()));
    MeasureArgs::parse_flags(f).unwrap()
}

fn rel(a: f64, b: f64) -> f64 {
    (a - b).abs() / b.abs().max(1e-300)
}

#[test]
fn measure_agrees_with_a_pytorch_f64_oracle_on_a_pytorch_exported_cnn() {
    let Some(py) = python() else {
        eprintln!(
            "SKIPPED measure_pytorch: no Python with torch and safetensors (set \
             BREAKEVEN_TORCH_PYTHON=/path/to/python of a venv with `pip install torch safetensors`)"
        );
        return;
    };
    let dir = std::env::temp_dir().join(format!("breakeven-measure-torch-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let weights = dir.join("simple_cnn.safetensors");
    let w = weights.display().to_string();
    run(
        &py,
        &[
            "export",
            "--out",
            &w,
            "--width-mult",
            "0.125",
            "--classes",
            "4",
            "--side",
            "16",
        ],
    );

    let exact = flags(
        &weights,
        &[
            "--fisher",
            "exact",
            "--lanczos-steps",
            "300",
            "--tol",
            "1e-12",
            "--hutch++",
            "300",
        ],
    );
    let mut session = Session::new(&exact, &weights, None).unwrap();
    let m: Measurement = session.measure(&weights).unwrap();
    // The exact inputs measure used, for the oracle.
    let p = session.prepared();
    let (x, y): (Vec<Tensor>, Vec<Tensor>) = p.measure.batches.iter().cloned().unzip();
    let x = Tensor::cat(&x, 0).unwrap().narrow(0, 0, 16).unwrap();
    let y = Tensor::cat(&y, 0)
        .unwrap()
        .narrow(0, 0, 16)
        .unwrap()
        .to_dtype(DType::F64)
        .unwrap();
    let inputs = dir.join("inputs.safetensors");
    candle_core::safetensors::save(
        &HashMap::from([("x".to_string(), x), ("y".to_string(), y)]),
        &inputs,
    )
    .unwrap();
    let oracle_path = dir.join("oracle.json");
    run(
        &py,
        &[
            "oracle",
            "--weights",
            &w,
            "--inputs",
            &inputs.display().to_string(),
            "--width-mult",
            "0.125",
            "--top-k",
            "3",
            "--out",
            &oracle_path.display().to_string(),
        ],
    );
    let o: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&oracle_path).unwrap()).unwrap();
    let f = |k: &str| o[k].as_f64().unwrap();

    let mc = breakeven_runner::measure::measure_checkpoint(
        &flags(&weights, &["--fisher", "mc:8", "--quantities", "trace_f"]),
        None,
    )
    .unwrap()
    .trace_f
    .unwrap();
    let hutch = breakeven_runner::measure::measure_checkpoint(
        &flags(
            &weights,
            &["--hutchinson-probes", "30", "--quantities", "trace_h"],
        ),
        None,
    )
    .unwrap()
    .trace_h
    .unwrap();

    let loss = m.loss.as_ref().unwrap();
    let lambda = m.lambda_h.as_ref().unwrap();
    let th = m.trace_h.as_ref().unwrap();
    let tf = m.trace_f.as_ref().unwrap();
    let k = m.k.as_ref().unwrap();
    let mut rows = vec![
        ("loss", loss.value, f("loss"), 0.0),
        ("Tr(F) exact", tf.value, f("trace_f"), 0.0),
        ("λ_K^1", k.lambda_k1, f("lambda_k1"), 0.0),
        ("Tr(K)", k.trace_k, f("trace_k"), 0.0),
    ];
    for i in 0..3 {
        rows.push((
            ["λ_H^1", "λ_H^2", "λ_H^3"][i],
            lambda.values[i],
            o["lambda_h"][i].as_f64().unwrap(),
            0.0,
        ));
    }
    rows.push(("Tr(H) Hutch++ 300", th.value, f("trace_h"), th.std_error));
    rows.push((
        "Tr(H) Hutchinson 30",
        hutch.value,
        f("trace_h"),
        hutch.std_error,
    ));
    rows.push(("Tr(F) mc:8", mc.value, f("trace_f"), mc.std_error));
    println!(
        "PyTorch {} oracle, SimpleCNN width 0.125 ({} parameters), {} synthetic examples",
        o["torch"], o["params"], o["examples"]
    );
    println!("| quantity | measure | PyTorch f64 | rel. diff | z |");
    println!("|---|---|---|---|---|");
    let mut failures = vec![];
    for (name, ours, theirs, se) in rows {
        let (r, z) = (
            rel(ours, theirs),
            if se > 0.0 { (ours - theirs) / se } else { 0.0 },
        );
        println!(
            "| {name} | {ours:.12e} | {theirs:.12e} | {r:.1e} | {} |",
            if se > 0.0 {
                format!("{z:.2} (se {se:.2e})")
            } else {
                "exact".into()
            }
        );
        let ok = if se > 0.0 { z.abs() < 4.0 } else { r < 1e-10 };
        if !ok {
            failures.push(name);
        }
    }
    println!(
        "Lanczos: {} steps, converged {}, residuals {:?}; cost {:?}",
        lambda.iterations, lambda.converged, lambda.residuals, m.cost
    );
    assert!(
        failures.is_empty(),
        "disagreement with PyTorch on {failures:?}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
