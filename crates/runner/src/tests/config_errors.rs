//! Impossible configs are one clear error naming the key, before anything is written.

use super::{temp_dir, tiny_config};
use crate::config::RunConfig;
use crate::rundir::RunDir;
use crate::train::{train, TrainOptions};

/// A config edit that makes it invalid.
type Mutation = Box<dyn Fn(&mut RunConfig)>;

#[test]
fn bad_values_name_their_key() {
    let cases: Vec<(&str, Mutation)> = vec![
        ("optim.lr", Box::new(|c| c.optim.lr = -0.1)),
        ("optim.momentum", Box::new(|c| c.optim.momentum = 1.0)),
        (
            "data.name",
            Box::new(|c| c.data.name = "imagenet-1k".into()),
        ),
        ("penalty.kind", Box::new(|c| c.penalty.kind = "sam".into())),
        ("penalty.alpha", Box::new(|c| c.penalty.kind = "fp".into())),
        ("device", Box::new(|c| c.device = "tpu".into())),
        (
            "stop.train_acc",
            Box::new(|c| c.stop.train_acc = Some(99.0)),
        ),
        ("data.batch_size", Box::new(|c| c.data.batch_size = 0)),
        ("data.mixup_alpha", Box::new(|c| c.data.mixup_alpha = -1.0)),
        (
            "data.mixup_alpha",
            Box::new(|c| {
                c.data.mixup_alpha = 1.0;
                c.penalty.kind = "fp".into();
                c.penalty.alpha = 0.1;
            }),
        ),
        (
            "tracking.noise_subset",
            Box::new(|c| c.tracking.noise_subset = 0),
        ),
    ];
    for (key, mutate) in cases {
        let mut c = tiny_config();
        mutate(&mut c);
        let err = c.validate().expect_err(key).to_string();
        assert!(err.contains(key), "error for {key} does not name it: {err}");
    }
}

#[test]
fn unknown_keys_and_models_are_rejected_by_parsing() {
    let text = tiny_config().to_toml().unwrap();
    let typo = text.replace("momentum =", "momentun =");
    let err = RunConfig::from_toml(&typo, "run.toml")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("momentun") && err.contains("run.toml"),
        "{err}"
    );
    let model = text.replace("arch = \"fc_relu\"", "arch = \"resnet9000\"");
    let err = RunConfig::from_toml(&model, "run.toml")
        .unwrap_err()
        .to_string();
    assert!(err.contains("resnet9000"), "{err}");
}

#[test]
fn missing_data_set_fails_before_writing_anything() {
    let dir = temp_dir("missing-data");
    let mut c = tiny_config();
    c.data.name = "cifar100".into();
    let run = RunDir::new(dir.join("run"));
    let opts = TrainOptions {
        data_dir: Some(dir.join("no-data-here")),
        ..Default::default()
    };
    let err = train(&c, &run, &opts).unwrap_err().to_string();
    assert!(err.contains("cifar100") && err.contains("fetch"), "{err}");
    assert!(
        !run.root.exists(),
        "a run directory was created for a run that cannot start"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn example_run_configs_parse_and_validate() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../experiments/runs");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let config = RunConfig::load(&path).unwrap_or_else(|e| panic!("{e}"));
        config
            .validate()
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        n += 1;
    }
    assert!(n > 0, "no example configs in {}", dir.display());
}
