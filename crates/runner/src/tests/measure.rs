//! `breakeven measure` against dense f64 oracles on a tiny model (exact Fisher, per-layer
//! blocks), on bare and renamed state_dicts, with the SLQ density, and in batch mode.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use breakeven_curvature::{
    lanczos, materialize, BatchedLogits, BatchedLoss, DenseMatrix, FisherKind, FisherOperator,
    HessianOperator, LanczosConfig, Reduction,
};
use breakeven_models::{cross_entropy, Mode};
use candle_core::{Device, Tensor};

use super::{temp_dir, tiny_config};
use crate::checkpoint::list_checkpoints;
use crate::measure::batch::measure_run;
use crate::measure::{measure_checkpoint, output, MeasureArgs, Session};
use crate::rundir::RunDir;
use crate::train::{train, TrainOptions};

fn args(checkpoint: &Path, extra: &[&str]) -> MeasureArgs {
    let mut f = vec!["--checkpoint".to_string(), checkpoint.display().to_string()];
    f.extend(extra.iter().map(|s| s.to_string()));
    MeasureArgs::parse_flags(f).unwrap()
}

/// A few steps of a tanh net with ONE hidden unit on the synthetic blobs (777 parameters:
/// small enough for dense Hessians and Fishers), keeping every checkpoint.
fn tiny_run(dir: &Path) -> RunDir {
    // Before the thread's first backward pass (training's), or measuring cannot differentiate
    // twice on this thread.
    crate::train::enable_second_order().unwrap();
    let mut config = tiny_config();
    config.model = breakeven_models::ModelSpec::FcTanh { widths: vec![1] };
    config.data.label_noise = 0.0;
    config.stop.max_steps = Some(6);
    config.tracking.checkpoint_every_steps = 2;
    let run = RunDir::new(dir.join("run"));
    let opts = TrainOptions {
        keep_all_checkpoints: true,
        ..Default::default()
    };
    train(&config.validate().unwrap(), &run, &opts).unwrap();
    run
}

fn last_checkpoint(run: &RunDir) -> PathBuf {
    list_checkpoints(&run.checkpoint_dir())
        .unwrap()
        .pop()
        .unwrap()
        .1
}

/// The dense matrix of `rows × cols` entries `m[r0.., c0..]`.
fn block(m: &DenseMatrix, lo: usize, n: usize) -> DenseMatrix {
    let data = (0..n * n).map(|k| m.get(lo + k / n, lo + k % n)).collect();
    DenseMatrix::from_row_major(n, data).unwrap()
}

/// A run that tracked no Tr(H) (0 Hutchinson probes) can be measured for the other quantities;
/// asking for Tr(H) with 0 probes names the flag.
#[test]
fn the_trace_method_is_checked_only_when_tr_h_is_measured() {
    let dir = temp_dir("measure-no-trace");
    let run = tiny_run(&dir);
    let ckpt = last_checkpoint(&run);
    let measure = |quantities: &str| {
        let a = args(
            &ckpt,
            &["--hutchinson-probes", "0", "--quantities", quantities],
        );
        Session::new(&a, &ckpt, None).and_then(|mut s| s.measure(&ckpt))
    };
    let m = measure("trace_f,trace_k").unwrap();
    assert!(m.trace_f.is_some() && m.k.is_some() && m.trace_h.is_none());
    let err = measure("trace_h").unwrap_err().to_string();
    assert!(err.contains("--hutchinson-probes"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn exact_fisher_equals_the_dense_f64_fisher_and_mc_agrees_within_its_error() {
    let dir = temp_dir("measure-fisher");
    let run = tiny_run(&dir);
    let ckpt = last_checkpoint(&run);
    let flags = [
        "--dtype",
        "f64",
        "--gradient-examples",
        "6",
        "--quantities",
        "trace_f",
        "--fisher",
        "exact",
    ];
    let a = args(&ckpt, &flags);
    let mut session = Session::new(&a, &ckpt, None).unwrap();
    let m = session.measure(&ckpt).unwrap();
    let f = m.trace_f.clone().unwrap();
    assert_eq!((f.method.as_str(), f.std_error), ("exact", 0.0));
    assert_eq!(f.labels_per_example, 4);
    // The error over the choice of examples: the standard error of the mean of the six
    // examples' own Tr(F_n), each computed alone.
    let per_example: Vec<f64> = (0..6)
        .map(|i| {
            let p = session.prepared();
            let model = p.model.as_ref();
            let vars: Vec<_> = model.params().iter().map(|q| q.var.clone()).collect();
            let x = p.measure.batches[0].0.narrow(0, i, 1).unwrap();
            let mut logits = BatchedLogits::new(1, |_| model.forward(&x, Mode::BatchStats));
            breakeven_curvature::fisher_trace(&mut logits, &vars, FisherKind::Exact)
                .unwrap()
                .trace
        })
        .collect();
    let mean = per_example.iter().sum::<f64>() / 6.0;
    let sem = (per_example.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / 5.0 / 6.0).sqrt();
    assert!((mean - f.value).abs() <= 1e-12 * mean);
    assert!(
        (sem - f.std_error_over_examples).abs() <= 1e-10 * sem,
        "{sem} vs {}",
        f.std_error_over_examples
    );
    assert!(m
        .notes
        .iter()
        .any(|n| n.contains("F32, measured as F64 (widened")));
    assert!(m.loss.is_none() && m.lambda_h.is_none() && m.k.is_none());

    // The oracle: F = (1/N) Σ_n J_nᵀ (diag p − p pᵀ) J_n by Jacobian-vector products over
    // the same six examples, as a dense 777 × 777 f64 matrix.
    let p = session.prepared();
    let model = p.model.as_ref();
    let vars: Vec<_> = model.params().iter().map(|q| q.var.clone()).collect();
    let (x, _) = &p.measure.batches[0];
    assert_eq!(x.dtype(), candle_core::DType::F64);
    let x = x.narrow(0, 0, 6).unwrap();
    let logits = BatchedLogits::new(6, |i| model.forward(&x.narrow(0, i, 1)?, Mode::BatchStats));
    let mut op = FisherOperator::new(vars, logits, FisherKind::Exact).unwrap();
    let dense = materialize(&mut op, false).unwrap();
    assert_eq!(dense.n(), 777);
    let rel = (f.value - dense.trace()).abs() / dense.trace();
    assert!(
        rel < 1e-10,
        "exact Tr(F) {} vs dense {}",
        f.value,
        dense.trace()
    );

    // Monte Carlo with 200 labels per example: within 4 standard errors of the exact value.
    let mut mc_flags = flags.to_vec();
    mc_flags[7] = "mc:200";
    let mc = measure_checkpoint(&args(&ckpt, &mc_flags), None)
        .unwrap()
        .trace_f
        .unwrap();
    assert_eq!((mc.method.as_str(), mc.labels_per_example), ("mc", 200));
    let z = (mc.value - f.value) / mc.std_error;
    assert!(
        z.abs() < 4.0,
        "MC {} ± {} vs exact {}",
        mc.value,
        mc.std_error,
        f.value
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn per_layer_blocks_equal_the_dense_hessian_diagonal_blocks() {
    let dir = temp_dir("measure-per-layer");
    let run = tiny_run(&dir);
    let ckpt = last_checkpoint(&run);
    let a = args(
        &ckpt,
        &[
            "--dtype",
            "f64",
            "--hessian-examples",
            "6",
            "--quantities",
            "trace_h",
            "--per-layer",
            "--lanczos-steps",
            "60",
            "--tol",
            "1e-10",
            "--hutch++",
            "60",
        ],
    );
    let mut session = Session::new(&a, &ckpt, None).unwrap();
    let m = session.measure(&ckpt).unwrap();
    let blocks = m.per_layer.clone().unwrap();
    let names: Vec<&str> = blocks.iter().map(|b| b.name.as_str()).collect();
    assert_eq!(names, ["1.weight", "1.bias", "3.weight", "3.bias"]);

    // The oracle: the dense Hessian from unit-vector HVPs over the same six examples.
    let p = session.prepared();
    let model = p.model.as_ref();
    let vars: Vec<_> = model.params().iter().map(|q| q.var.clone()).collect();
    let (x, y) = &p.measure.batches[0];
    let (x, y) = (x.narrow(0, 0, 6).unwrap(), y.narrow(0, 0, 6).unwrap());
    let loss = BatchedLoss::new(1, Reduction::Mean, |_| {
        Ok((cross_entropy(&model.forward(&x, Mode::BatchStats)?, &y)?, 6))
    });
    let mut h = HessianOperator::new(vars, loss).unwrap();
    let dense = materialize(&mut h, true).unwrap();
    let mut lo = 0;
    for b in &blocks {
        let hb = block(&dense, lo, b.dim);
        lo += b.dim;
        let (tr, lam) = (hb.trace(), b.lambda_1.values[0]);
        // Tr: exact for blocks within the budget; Hutch++ within 4 standard errors otherwise.
        if b.trace.method == "exact" {
            assert!(
                (b.trace.value - tr).abs() <= 1e-10 * tr.abs().max(1e-12),
                "{}: {} vs {tr}",
                b.name,
                b.trace.value
            );
        } else {
            let z = (b.trace.value - tr) / b.trace.std_error.max(1e-12 * tr.abs());
            assert!(
                z.abs() < 4.0,
                "{}: {} ± {} vs {tr}",
                b.name,
                b.trace.value,
                b.trace.std_error
            );
        }
        // λ_1: the dense block's largest eigenvalue (Lanczos to the full dimension on the
        // dense matrix, which is exact).
        let mut dense_op = hb;
        let cfg = LanczosConfig {
            k: 1,
            max_iter: b.dim,
            tol: 1e-14,
            ..Default::default()
        };
        let truth = lanczos(&mut dense_op, &cfg, 3).unwrap().eigenvalues[0];
        assert!(
            (lam - truth).abs() <= 1e-8 * truth.abs().max(1e-10),
            "{}: λ_1 {lam} vs dense {truth}",
            b.name
        );
        // Converged by its true residual ‖H y − λ y‖ (these rank-deficient blocks break
        // Lanczos down, after which the Ritz estimate is not checked again).
        let r = b.lambda_1.residuals[0];
        assert!(
            r <= 1e-7 * lam.abs(),
            "{}: residual {r} of λ_1 {lam}",
            b.name
        );
        assert!(b.lambda_1.converged, "{}", b.name);
    }
    assert_eq!(lo, dense.n());
    // The whole Tr(H) within 4 standard errors of the dense trace.
    let t = m.trace_h.unwrap();
    assert!(((t.value - dense.trace()) / t.std_error.max(1e-12)).abs() < 4.0);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_bare_state_dict_needs_an_architecture_and_renamed_keys_are_mapped() {
    let dir = temp_dir("measure-bare");
    let run = tiny_run(&dir);
    let ckpt = last_checkpoint(&run);
    // The weights under our names, and as a "PyTorch" export under other names (a `net.`
    // prefix, as a wrapper module adds).
    let tensors = candle_core::safetensors::load(&ckpt, &Device::Cpu).unwrap();
    let ours_path = dir.join("ours.safetensors");
    let ours: HashMap<String, Tensor> = tensors
        .iter()
        .filter(|(k, _)| !k.starts_with("optimizer."))
        .map(|(k, t)| (k.clone(), t.clone()))
        .collect();
    candle_core::safetensors::save(&ours, &ours_path).unwrap();
    let renamed: HashMap<String, Tensor> = tensors
        .into_iter()
        .filter(|(k, _)| !k.starts_with("optimizer."))
        .map(|(k, t)| (format!("net.{k}"), t))
        .collect();
    let bare = dir.join("torch.safetensors");
    candle_core::safetensors::save(&renamed, &bare).unwrap();

    let err = measure_checkpoint(&args(&bare, &[]), None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("--arch") && err.contains("--config"), "{err}");
    let arch = [
        "--arch",
        "fc_tanh",
        "--model-option",
        "widths=[1]",
        "--data",
        "synthetic",
        "--quantities",
        "loss",
    ];
    let err = measure_checkpoint(&args(&bare, &arch), None)
        .unwrap_err()
        .to_string();
    // The error shows the model's keys beside the file's.
    assert!(
        err.contains("missing key `1.weight`")
            && err.contains("the model expects")
            && err.contains("net.1.weight [1, 768]")
            && err.contains("1.weight [1, 768]"),
        "{err}"
    );
    let err = measure_checkpoint(&args(&bare, &arch[..6]), None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("missing key"), "{err}");

    // With --arch (no run config) the examples are drawn from the whole training split.
    let reference = measure_checkpoint(&args(&ours_path, &arch), None).unwrap();
    assert!(reference.loss.is_some() && reference.key_map.is_empty());
    let mut rename = arch.to_vec();
    rename.extend(["--rename", "net.1=1,net.3=3"]);
    let m = measure_checkpoint(&args(&bare, &rename), None).unwrap();
    assert_eq!(m.loss, reference.loss);
    assert_eq!(
        m.key_map.get("net.1.bias").map(String::as_str),
        Some("1.bias")
    );

    let mut by_shape = arch.to_vec();
    by_shape.push("--map-by-shape");
    let m = measure_checkpoint(&args(&bare, &by_shape), None).unwrap();
    assert_eq!(m.loss, reference.loss);
    assert_eq!(m.key_map.len(), 4);
    assert!(m.notes.iter().any(|n| n.contains("paired by shape")));
    // Without --data, --arch says what to pass.
    let err = measure_checkpoint(&args(&bare, &arch[..4]), None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("--data"), "{err}");
    // A PyTorch pickle is refused with the export recipe.
    let pickle = dir.join("model.pt");
    std::fs::write(&pickle, b"PK\x03\x04 not really a zip").unwrap();
    let err = measure_checkpoint(&args(&pickle, &arch), None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("safetensors.torch.save_file"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn slq_writes_a_density_that_integrates_to_one_and_the_table_shows_errors() {
    let dir = temp_dir("measure-slq");
    let run = tiny_run(&dir);
    let ckpt = last_checkpoint(&run);
    let out = dir.join("out");
    let out_s = out.display().to_string();
    let a = args(
        &ckpt,
        &[
            "--slq",
            "--slq-probes",
            "3",
            "--slq-steps",
            "20",
            "--out-dir",
            &out_s,
            "--examples",
            "32",
            "--hutchinson-probes",
            "5",
            "--format",
            "table",
        ],
    );
    let m = measure_checkpoint(&a, None).unwrap();
    let d = m.density.clone().unwrap();
    assert!((d.integral - 1.0).abs() < 0.05, "∫ = {}", d.integral);
    let csv = std::fs::read_to_string(&d.csv).unwrap();
    assert_eq!(csv.lines().next(), Some("eigenvalue,density"));
    assert_eq!(csv.lines().count(), 1001);
    let png = std::fs::read(&d.png).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    assert_eq!(m.settings.slq_probes, 3);
    assert_eq!(m.cost.passes.hvp as usize, {
        let e = m.lambda_h.as_ref().unwrap();
        e.matvecs + m.trace_h.as_ref().unwrap().matvecs + d.matvecs
    });
    assert_eq!(m.examples.hessian.count, 32);
    assert_eq!(m.examples.gradient.count, 32);
    assert_eq!(m.examples.hessian.indices, m.examples.gradient.indices);
    let text = output::table(&m);
    assert!(
        text.contains("Tr(H)") && text.contains(" ± ") && text.contains("density"),
        "{text}"
    );
    assert!(
        text.contains("32 for loss, lambda_h, trace_h, density"),
        "{text}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn batch_mode_measures_every_checkpoint_once_and_resumes() {
    let dir = temp_dir("measure-batch");
    let run = tiny_run(&dir);
    let steps: Vec<u64> = list_checkpoints(&run.checkpoint_dir())
        .unwrap()
        .into_iter()
        .map(|(s, _)| s)
        .collect();
    assert_eq!(steps, [0, 2, 4, 6]);
    let flags = ["--quantities", "loss,trace_k", "--examples", "8"];
    let a = args(&run.root, &flags);
    let first = measure_run(&a, None, |_| {}).unwrap();
    assert_eq!(first.measured, [0, 2, 4, 6]);
    let path = &run.root.join("curvature.jsonl");
    let full = std::fs::read_to_string(path).unwrap();
    assert_eq!(full.lines().count(), 4);
    // Nothing left to do.
    assert_eq!(
        measure_run(&a, None, |_| {}).unwrap().measured,
        Vec::<u64>::new()
    );
    // Interrupted after the first line: the rest is measured, and the file is as if whole.
    std::fs::write(path, format!("{}\n", full.lines().next().unwrap())).unwrap();
    let again = measure_run(&a, None, |_| {}).unwrap();
    assert_eq!((again.measured, again.skipped), (vec![2, 4, 6], vec![0]));
    let strip = |t: &str| -> Vec<serde_json::Value> {
        t.lines()
            .map(|l| {
                let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
                v["cost"]["wall_s"] = 0.into();
                v
            })
            .collect()
    };
    assert_eq!(strip(&std::fs::read_to_string(path).unwrap()), strip(&full));
    // Other settings are not mixed into the same file.
    let other = args(&run.root, &["--quantities", "loss", "--examples", "8"]);
    let err = measure_run(&other, None, |_| {}).unwrap_err().to_string();
    assert!(
        err.contains("other settings") && err.contains("--output"),
        "{err}"
    );
    // A stride, into another file.
    let out = dir.join("strided.jsonl").display().to_string();
    let mut strided = flags.to_vec();
    strided.extend(["--stride", "2", "--output", &out]);
    let s = measure_run(&args(&run.root, &strided), None, |_| {}).unwrap();
    assert_eq!(s.measured, [0, 4, 6]);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn with_eval_batchnorm_per_example_gradients_average_to_the_batch_gradient() {
    crate::train::enable_second_order().unwrap();
    let dir = temp_dir("measure-bn");
    // A ResNet-32 of width 2 (BatchNorm everywhere) with running statistics away from 0 and 1.
    let spec = breakeven_models::ModelSpec::ResNet32 { width: 2 };
    let model = breakeven_models::build(
        &spec,
        (3, 16, 16),
        4,
        candle_core::DType::F64,
        &Device::Cpu,
        3,
    )
    .unwrap();
    for (name, var) in model.buffers() {
        if name.ends_with("running_mean") || name.ends_with("running_var") {
            let n = var.elem_count();
            let v: Vec<f64> = (0..n).map(|i| 0.5 + 0.1 * (i % 7) as f64).collect();
            var.set(&Tensor::from_vec(v, var.dims(), &Device::Cpu).unwrap())
                .unwrap();
        }
    }
    let weights = dir.join("resnet.safetensors");
    breakeven_models::io::save(model.as_ref(), &weights).unwrap();
    let flags = |bn: &str| {
        args(
            &weights,
            &[
                "--arch",
                "resnet32",
                "--model-option",
                "width=2",
                "--data",
                "synthetic",
                "--dtype",
                "f64",
                "--gradient-examples",
                "6",
                "--quantities",
                "trace_k",
                "--bn",
                bn,
            ],
        )
    };
    let mut session = Session::new(&flags("eval"), &weights, None).unwrap();
    let eval = session.measure(&weights).unwrap();
    assert!(eval.loss.is_none() && eval.trace_f.is_none());
    let mean_sq = eval.k.unwrap().mean_grad_sq_norm;
    // ‖ḡ‖² from the per-example passes against the gradient of one batched pass.
    let p = session.prepared();
    let m = p.model.as_ref();
    let vars: Vec<_> = m.params().iter().map(|q| q.var.clone()).collect();
    let (x, y) = &p.measure.batches[0];
    let (x, y) = (x.narrow(0, 0, 6).unwrap(), y.narrow(0, 0, 6).unwrap());
    let mut loss = BatchedLoss::new(1, Reduction::Mean, |_| {
        Ok((cross_entropy(&m.forward(&x, Mode::Eval)?, &y)?, 6))
    });
    let (_, g) = breakeven_curvature::loss_and_gradient(&mut loss, &vars).unwrap();
    let batched: f64 = g.iter().map(|v| v * v).sum();
    assert!(
        (mean_sq - batched).abs() <= 1e-10 * batched,
        "{mean_sq} vs {batched}"
    );
    // With each example's own statistics, the two differ.
    let batch = measure_checkpoint(&flags("batch"), None).unwrap();
    let other = batch.k.unwrap().mean_grad_sq_norm;
    assert!(
        (other - batched).abs() > 1e-6 * batched,
        "{other} vs {batched}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
