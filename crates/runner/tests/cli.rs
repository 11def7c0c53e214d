//! The `breakeven` binary's exit status: 2 for a config error (a cluster executor does not
//! retry it), 1 for other errors. Cargo builds the binary for this test, which is also how
//! `xtask/tests/slurm.rs` finds one to submit.

use std::path::PathBuf;
use std::process::Command;

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("breakeven-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

const RUN: &str = r#"
name = "cli"
[data]
name = "synthetic"
val_size = VAL
batch_size = 32
[model]
arch = "fc_relu"
[optim]
lr = 0.1
[stop]
max_epochs = 1
"#;

fn train(dir: &std::path::Path, config: &str, run: &str) -> (Option<i32>, String) {
    let path = dir.join("config.toml");
    std::fs::write(&path, config).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_breakeven"))
        .args(["--quiet", "train", "--config"])
        .arg(&path)
        .arg("--run-dir")
        .arg(dir.join(run))
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn config_errors_exit_with_2_other_errors_with_1() {
    let dir = temp_dir("exit");
    // More validation examples than the synthetic set holds: found when the run starts.
    let (code, err) = train(&dir, &RUN.replace("VAL", "5000"), "a");
    assert_eq!(code, Some(breakeven_runner::EXIT_BAD_CONFIG), "{err}");
    assert!(err.contains("data.val_size"), "{err}");
    // An unknown key.
    let (code, err) = train(
        &dir,
        &format!("{}\nbogus = 1\n", RUN.replace("VAL", "64")),
        "b",
    );
    assert_eq!(code, Some(2), "{err}");
    // Not a config error: the run directory cannot be created (a file is in the way).
    std::fs::write(dir.join("c"), "in the way").unwrap();
    let (code, err) = train(&dir, &RUN.replace("VAL", "64"), "c");
    assert_eq!(code, Some(1), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `breakeven measure` on the last checkpoint of a fresh run, with `extra` flags.
fn measure(args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_breakeven"))
        .args(["--quiet", "measure"])
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn measure_prints_json_or_a_table_and_says_what_a_bare_file_needs() {
    let dir = temp_dir("measure");
    let run = RUN
        .replace("VAL", "64")
        .replace("max_epochs = 1", "max_epochs = 1\nmax_steps = 2");
    let (code, err) = train(&dir, &run, "run");
    assert_eq!(code, Some(0), "{err}");
    let ckpt = dir.join("run/checkpoints/step-0000000002.safetensors");
    let c = ckpt.to_str().unwrap();
    let quick = ["--examples", "8", "--quantities", "loss,trace_h,trace_k"];
    let (code, out, err) = measure(&[&["--checkpoint", c][..], &quick].concat());
    assert_eq!(code, Some(0), "{err}");
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(json["step"], 2);
    assert!(json["trace_h"]["std_error"].as_f64().unwrap() > 0.0);
    assert_eq!(
        json["examples"]["hessian"]["indices"]
            .as_array()
            .unwrap()
            .len(),
        8
    );
    assert_eq!(json["kind"], "run checkpoint");
    let (code, out, err) =
        measure(&[&["--checkpoint", c, "--format", "table"][..], &quick].concat());
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("Tr(H)") && out.contains(" ± "), "{out}");
    // A bare weights file without --arch or --config: the error says what to pass (exit 1).
    let bare = dir.join("bare.safetensors");
    let tensors = candle_core::safetensors::load(&ckpt, &candle_core::Device::Cpu).unwrap();
    candle_core::safetensors::save(
        &tensors
            .into_iter()
            .filter(|(k, _)| !k.starts_with("optimizer."))
            .collect(),
        &bare,
    )
    .unwrap();
    let (code, _, err) = measure(&["--checkpoint", bare.to_str().unwrap()]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("--arch NAME --data NAME"), "{err}");
    // --arch without --data is a command-line error (exit 2).
    let (code, _, err) = measure(&["--checkpoint", bare.to_str().unwrap(), "--arch", "fc_relu"]);
    assert_eq!(code, Some(breakeven_runner::EXIT_BAD_CONFIG), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}
