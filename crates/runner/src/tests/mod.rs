//! Whole-run tests of the runner on tiny synthetic data: resume equals an uninterrupted run,
//! divergence stops cleanly, and bad configs fail before training.

mod config_errors;
mod curvature;
mod measure;
mod noise_mixup;
mod resume;
mod sweep;

use std::path::PathBuf;

use crate::config::RunConfig;

/// A fresh temporary directory for one test.
pub fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("breakeven-runner-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A tiny run: a one-hidden-layer ReLU net on the synthetic blobs, 3 epochs of 16 steps.
pub fn tiny_config() -> RunConfig {
    RunConfig::from_toml(
        r#"
name = "tiny"
seed = 7
[data]
name = "synthetic"
val_size = 128
batch_size = 56
augment = "flip-crop"
label_noise = 0.1
[model]
arch = "fc_relu"
widths = [16]
[optim]
lr = 0.05
momentum = 0.9
weight_decay = 5e-4
[schedule]
kind = "step"
milestones = [2]
[stop]
max_epochs = 3
[tracking]
dense_every = 4
measure_subset = 64
checkpoint_every_steps = 5
"#,
        "tiny",
    )
    .unwrap()
}
