//! Impossible configs are one clear error naming the key, before anything is written.

use super::{temp_dir, tiny_config};
use crate::config::{DataName, PenaltyMethod, RunConfig};
use crate::rundir::RunDir;
use crate::train::{train, TrainOptions};
use breakeven_penalties::PenaltyKind::Fp;

/// A config edit that makes it invalid.
type Mutation = Box<dyn Fn(&mut RunConfig)>;

#[test]
fn bad_values_name_their_key() {
    let cases: Vec<(&str, Mutation)> = vec![
        ("optim.lr", Box::new(|c| c.optim.lr = -0.1)),
        ("optim.momentum", Box::new(|c| c.optim.momentum = 1.0)),
        ("penalty.alpha", Box::new(|c| c.penalty.kind = Some(Fp))),
        (
            "penalty.rel_step",
            Box::new(|c| {
                c.penalty.method = PenaltyMethod::FiniteDifference;
                c.penalty.rel_step = Some(-1e-3);
            }),
        ),
        ("penalty.method", Box::new(|c| c.penalty.one_sided = true)),
        ("penalty.method", Box::new(|c| c.penalty.fd_check = false)),
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
                c.penalty.kind = Some(Fp);
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
    // A name outside a fixed list is refused while parsing, with the accepted names.
    let mut plain = tiny_config();
    plain.schedule.kind = crate::config::ScheduleKind::Constant;
    plain.data.augment = crate::config::Augmentation::None;
    plain.penalty = crate::config::PenaltyConfig::default();
    let text = plain.to_toml().unwrap();
    for (key, from, to, accepted) in [
        (
            "data.name",
            "name = \"synthetic\"",
            "name = \"imagenet-1k\"",
            "tiny-imagenet",
        ),
        ("penalty.kind", "kind = \"none\"", "kind = \"sam\"", "gpr"),
        (
            "penalty.method",
            "method = \"double_backprop\"",
            "method = \"fd\"",
            "finite_difference",
        ),
        (
            "schedule.kind",
            "kind = \"constant\"",
            "kind = \"linear\"",
            "cosine",
        ),
        (
            "data.augment",
            "augment = \"none\"",
            "augment = \"flip\"",
            "flip-crop",
        ),
        ("dtype", "dtype = \"f32\"", "dtype = \"f16\"", "f64"),
        ("device", "device = \"cpu\"", "device = \"tpu\"", "cuda:N"),
    ] {
        assert!(text.contains(from), "{key}: {from} not in\n{text}");
        let bad = text.replacen(from, to, 1);
        let err = RunConfig::from_toml(&bad, "run.toml")
            .unwrap_err()
            .to_string();
        let value = to.split('"').nth(1).unwrap();
        assert!(
            err.contains(value) && err.contains(accepted) && err.contains("run.toml"),
            "{key}: {err}"
        );
    }
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
    c.data.name = DataName::Cifar100;
    let run = RunDir::new(dir.join("run"));
    let opts = TrainOptions {
        data_dir: Some(dir.join("no-data-here")),
        ..Default::default()
    };
    let err = train(&c.validate().unwrap(), &run, &opts)
        .unwrap_err()
        .to_string();
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

/// The typed config writes what the string-typed one wrote: every committed run's resolved
/// config parses and serializes back to the same bytes (so archived runs resume and compare
/// equal under any later version that keeps this test).
#[test]
fn committed_run_configs_round_trip_byte_for_byte() {
    fn configs(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                configs(&path, out);
            } else if path.file_name().is_some_and(|n| n == "config.toml") {
                out.push(path);
            }
        }
    }
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/results/runs");
    let mut found = Vec::new();
    configs(&root, &mut found);
    assert!(!found.is_empty(), "no run configs under {}", root.display());
    for path in found {
        let text = std::fs::read_to_string(&path).unwrap();
        let config = RunConfig::from_toml(&text, &path.display().to_string()).unwrap();
        config
            .validate()
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(config.to_toml().unwrap(), text, "{}", path.display());
    }
}
