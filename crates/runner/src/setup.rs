//! From a validated config to the things a run needs: data splits and loaders, the fixed
//! measurement subset, evaluation sets, the model and the optimizer.

use std::path::Path;
use std::sync::Arc;

use breakeven_data::{
    epoch_permutation, first_n, symmetric_label_noise, validation_split, Augment, Dataset,
    DatasetName, Loader, LoaderConfig, Normalization, TrainTest,
};
use breakeven_models::{build, Model};
use breakeven_optim::{LrSchedule, Sgd, SgdConfig};
use candle_core::{DType, Device, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::config::RunConfig;
use crate::error::RunError;

/// Seed offsets so that the model init, the measurement subset and the penalty labels never
/// share a stream with each other or with the data pipeline (which keys its own streams).
pub const MEASURE_SEED_OFFSET: u64 = 0x6d65_6173; // "meas"
/// Seed offset of the training-step generator (penalty label sampling, curvature probes).
pub const STEP_SEED_OFFSET: u64 = 0x7374_6570; // "step"

/// A labelled evaluation set, pre-batched on the device.
#[derive(Debug, Clone)]
pub struct EvalSet {
    pub batches: Vec<(Tensor, Tensor)>,
    pub len: usize,
}

/// Batch size of evaluation passes.
const EVAL_BATCH: usize = 500;

/// A labelled set evaluated in batches made on the fly (too large to keep on the device).
#[derive(Debug, Clone)]
pub struct StreamedSet {
    pub loader: Loader,
    pub dtype: DType,
}

/// Everything built from a config, before any step.
pub struct Prepared {
    pub device: Device,
    pub dtype: DType,
    pub loader: Loader,
    pub steps_per_epoch: u64,
    pub num_classes: usize,
    pub model: Box<dyn Model>,
    pub sgd: Sgd,
    /// Fixed seeded subset of the training examples for curvature and train metrics.
    pub measure: EvalSet,
    pub val: Option<EvalSet>,
    pub test: EvalSet,
    /// The training examples without augmentation (for the final training accuracy).
    pub train_eval: StreamedSet,
}

/// Loads the data set named in the config (or generates the synthetic one).
pub fn load_data(config: &RunConfig, data_dir: Option<&Path>) -> Result<TrainTest, RunError> {
    if config.data.name == "synthetic" {
        return Ok(synthetic(config.seed));
    }
    let name: DatasetName = config.data.name.parse()?;
    Ok(breakeven_data::load(name, data_dir)?)
}

/// Seeded Gaussian blobs: 4 classes of 3×16×16 byte images (1,024 train, 256 test); learnable
/// but not trivially, for tests and smoke runs that need no files.
pub fn synthetic(seed: u64) -> TrainTest {
    let (c, h, w, classes) = (3, 16, 16, 4);
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x7379_6e74);
    let means: Vec<Vec<f64>> = (0..classes)
        .map(|_| {
            (0..c * h * w)
                .map(|_| rng.random_range(64.0..192.0))
                .collect()
        })
        .collect();
    let mut make = |n: usize, name: &str| {
        let mut images = Vec::with_capacity(n * c * h * w);
        let mut labels = Vec::with_capacity(n);
        for i in 0..n {
            let y = i % classes;
            labels.push(y as u32);
            for m in &means[y] {
                // Sum of two uniforms: cheap, triangular noise with std ≈ 41.
                let noise: f64 = (0..2).map(|_| rng.random_range(-50.0..50.0)).sum();
                images.push((m + noise).clamp(0.0, 255.0) as u8);
            }
        }
        Dataset {
            name: format!("synthetic/{name}"),
            images,
            labels,
            channels: c,
            height: h,
            width: w,
            num_classes: classes,
            class_names: None,
        }
    };
    let train = make(1024, "train");
    let test = make(256, "test");
    TrainTest { train, test }
}

fn parse_dtype(name: &str) -> DType {
    if name == "f64" {
        DType::F64
    } else {
        DType::F32
    }
}

/// Builds everything a run needs. The config must be validated.
pub fn prepare(config: &RunConfig, data: TrainTest, device: Device) -> Result<Prepared, RunError> {
    let dtype = parse_dtype(&config.dtype);
    let TrainTest { train, test } = data;
    let num_classes = train.num_classes;
    let (mut train_idx, val_idx) =
        validation_split(train.len(), config.data.val_size, config.seed)?;
    if let Some(n) = config.data.subset {
        train_idx = first_n(&train_idx, n).map_err(|e| invalid("data.subset", e))?;
    }
    let norm = Normalization::from_dataset(&train, Some(&train_idx))?;
    let eval_cfg = |batch_size| LoaderConfig {
        batch_size,
        shuffle: false,
        drop_last: false,
        augment: None,
        normalization: norm.clone(),
        mixup: None,
        seed: config.seed,
    };
    let train = Arc::new(train);
    let test = Arc::new(test);
    let eval_set =
        |data: &Arc<Dataset>, idx: Vec<usize>, batch: usize| -> Result<EvalSet, RunError> {
            let len = idx.len();
            let mut loader = Loader::new(data.clone(), idx, eval_cfg(batch))?;
            let batches = (0..loader.batches_per_epoch())
                .map(|_| {
                    let b = loader.next_batch(&device)?;
                    Ok((b.images.to_dtype(dtype)?, b.labels))
                })
                .collect::<Result<Vec<_>, RunError>>()?;
            Ok(EvalSet { batches, len })
        };

    let measure_n = config.tracking.measure_subset.min(train_idx.len());
    let perm = epoch_permutation(train_idx.len(), config.seed ^ MEASURE_SEED_OFFSET, 0);
    let measure_idx: Vec<usize> = perm[..measure_n].iter().map(|&k| train_idx[k]).collect();
    // Batches of 128 bound the memory of a Hessian-vector product (double backprop keeps the
    // graph of the gradient: ~2.9 GB for SimpleCNN at 128, SCIENCE.md §7).
    let measure = eval_set(&train, measure_idx, 128)?;
    let val = if val_idx.is_empty() {
        None
    } else {
        Some(eval_set(&train, val_idx, EVAL_BATCH)?)
    };
    let test_idx: Vec<usize> = (0..config
        .data
        .test_subset
        .unwrap_or(test.len())
        .min(test.len()))
        .collect();
    let test = eval_set(&test, test_idx, EVAL_BATCH)?;
    // The whole training set is evaluated once, at the end: streamed, not kept on the device.
    let train_eval = StreamedSet {
        loader: Loader::new(train.clone(), train_idx.clone(), eval_cfg(EVAL_BATCH))?,
        dtype,
    };

    let loader_cfg = LoaderConfig {
        batch_size: config.data.batch_size,
        shuffle: true,
        drop_last: false,
        augment: (config.data.augment == "flip-crop").then_some(Augment::CIFAR),
        normalization: norm,
        mixup: None,
        seed: config.seed,
    };
    let mut loader = Loader::new(train.clone(), train_idx, loader_cfg)
        .map_err(|e| invalid("data.batch_size", e))?;
    if config.data.label_noise > 0.0 {
        let noisy = symmetric_label_noise(
            &train.labels,
            num_classes,
            config.data.label_noise,
            config.seed,
        )?;
        loader = loader.with_labels(noisy.labels)?;
    }
    let steps_per_epoch = loader.batches_per_epoch() as u64;

    let input = (train.channels, train.height, train.width);
    let model = build(
        &config.model,
        input,
        num_classes,
        dtype,
        &device,
        config.seed,
    )?;
    let vars: Vec<_> = model.params().iter().map(|p| p.var.clone()).collect();
    let sgd = Sgd::new(sgd_config(config, steps_per_epoch), vars.len())?;
    Ok(Prepared {
        device,
        dtype,
        loader,
        steps_per_epoch,
        num_classes,
        model,
        sgd,
        measure,
        val,
        test,
        train_eval,
    })
}

/// The optimizer config with the epoch-based schedule converted to steps.
pub fn sgd_config(config: &RunConfig, steps_per_epoch: u64) -> SgdConfig {
    let o = &config.optim;
    let s = &config.schedule;
    let base = match s.kind.as_str() {
        "step" => LrSchedule::MultiStep {
            milestones: s.milestones.iter().map(|&m| m as u64).collect(),
            gamma: s.gamma,
        },
        "cosine" => LrSchedule::Cosine {
            t_max: config.stop.max_epochs as u64,
            min_lr: 0.0,
        },
        _ => LrSchedule::Constant,
    };
    let schedule = if s.warmup_epochs > 0 {
        // Start at one warm-up step's share of the rate, not at 0 (a zero step is wasted).
        let start_factor = 1.0 / (s.warmup_epochs as u64 * steps_per_epoch.max(1)) as f64;
        LrSchedule::Warmup {
            steps: s.warmup_epochs as u64,
            start_factor,
            then: Box::new(base),
        }
    } else {
        base
    };
    SgdConfig {
        lr: o.lr,
        momentum: o.momentum,
        dampening: 0.0,
        weight_decay: o.weight_decay,
        nesterov: o.nesterov,
        schedule: schedule.epochs_to_steps(steps_per_epoch),
    }
}

fn invalid(key: &str, e: impl std::fmt::Display) -> RunError {
    RunError::Invalid {
        key: key.into(),
        message: e.to_string(),
    }
}
