//! From a validated config to the things a run needs: data splits and loaders, the fixed
//! measurement subset, evaluation sets, the model and the optimizer.

use std::path::Path;
use std::sync::Arc;

use breakeven_data::{
    balanced_subset, epoch_permutation, exact_duplicates, shared_images, symmetric_label_noise,
    validation_split, Augment, Dataset, Loader, LoaderConfig, Mixup, NoisyLabels, Normalization,
    TrainTest,
};
use breakeven_models::{build, Model};
use breakeven_optim::{LrSchedule, Sgd, SgdConfig};
use candle_core::{DType, Device, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use crate::config::{Augmentation, RunConfig, ScheduleKind};
use crate::error::RunError;

/// Seed offsets so that the model init, the measurement subset and the penalty labels never
/// share a stream with each other or with the data pipeline (which keys its own streams).
pub const MEASURE_SEED_OFFSET: u64 = 0x6d65_6173; // "meas"
/// Seed offset of the training-step generator (penalty label sampling, curvature probes).
pub const STEP_SEED_OFFSET: u64 = 0x7374_6570; // "step"
/// Seed offset of the subset on which clean and noisy training accuracy are tracked.
pub const NOISE_TRACK_SEED_OFFSET: u64 = 0x6e6f_6973; // "nois"

/// A labelled evaluation set, pre-batched on the device.
#[derive(Debug, Clone)]
pub struct EvalSet {
    pub batches: Vec<(Tensor, Tensor)>,
    pub len: usize,
}

impl EvalSet {
    /// The `i`-th example as a batch of one.
    pub fn example(&self, i: usize) -> candle_core::Result<(Tensor, Tensor)> {
        let mut i = i;
        for (x, y) in &self.batches {
            let b = y.dim(0)?;
            if i < b {
                return Ok((x.narrow(0, i, 1)?, y.narrow(0, i, 1)?));
            }
            i -= b;
        }
        candle_core::bail!("example {i} beyond the measurement set")
    }

    /// The first `n` examples as one batch.
    pub fn first(&self, n: usize) -> candle_core::Result<(Tensor, Tensor)> {
        let (mut xs, mut ys, mut left) = (Vec::new(), Vec::new(), n);
        for (x, y) in &self.batches {
            if left == 0 {
                break;
            }
            let b = y.dim(0)?.min(left);
            xs.push(x.narrow(0, 0, b)?);
            ys.push(y.narrow(0, 0, b)?);
            left -= b;
        }
        if left > 0 || n == 0 {
            candle_core::bail!(
                "the first {n} examples of a measurement set of {} as one batch",
                self.len
            );
        }
        Ok((Tensor::cat(&xs, 0)?, Tensor::cat(&ys, 0)?))
    }
}

/// Batch size of evaluation passes.
const EVAL_BATCH: usize = 500;
/// Seed of the `data.test_subset` draw: fixed, so every run of a comparison sees the same images.
const TEST_SUBSET_SEED: u64 = 0;

/// A labelled set evaluated in batches made on the fly (too large to keep on the device).
#[derive(Debug, Clone)]
pub struct StreamedSet {
    pub loader: Loader,
    pub dtype: DType,
}

/// The fixed seeded subset of the training set on which memorization is tracked when labels
/// are noisy (SCIENCE.md §5.3): its clean examples, and its noisy ones labelled with the label
/// the model is trained on, with their true labels beside them batch for batch.
#[derive(Debug, Clone)]
pub struct NoiseSets {
    /// Examples whose training label is their true label (`None` if the subset has none).
    pub clean: Option<EvalSet>,
    /// Examples whose training label was replaced, labelled with that replacement.
    pub noisy: Option<EvalSet>,
    /// The true labels of `noisy`, one tensor per batch of `noisy`.
    pub noisy_true: Vec<Tensor>,
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
    /// The data-set (training split) indices of `measure`'s examples, in order.
    pub measure_idx: Vec<usize>,
    pub val: Option<EvalSet>,
    pub test: EvalSet,
    /// The training examples without augmentation (for the final training accuracy).
    pub train_eval: StreamedSet,
    /// Clean/noisy tracking subsets (only with `data.label_noise` > 0).
    pub noise: Option<NoiseSets>,
}

/// Loads the data set named in the config (or generates the synthetic one).
pub fn load_data(config: &RunConfig, data_dir: Option<&Path>) -> Result<TrainTest, RunError> {
    match config.data.name.files() {
        None => Ok(synthetic(config.seed)),
        Some(name) => Ok(breakeven_data::load(name, data_dir)?),
    }
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

/// The training records a run draws its training and validation examples from, ascending: all
/// of them, or with `dedup` only the first record of every distinct image and none that copies
/// a test image. Repeats are logged either way, with what `dedup` drops or would drop: a
/// validation split holding copies of training images measures memorization (an earlier,
/// corrupted CIFAR-10 copy with most images repeated five times gave 70.8% validation against
/// 49.9% test accuracy).
pub fn training_pool(train: &Dataset, test: Option<&Dataset>, dedup: bool) -> Vec<usize> {
    let dup = exact_duplicates(train);
    let in_test = test.map(|t| shared_images(train, t)).unwrap_or_default();
    let (repeats, conflicts) = (dup.repeats(), dup.label_conflicts);
    if repeats == 0 && in_test.is_empty() {
        return (0..train.len()).collect();
    }
    let (kept, action) = if dedup {
        let mut copy = vec![false; train.len()];
        in_test.iter().for_each(|&i| copy[i] = true);
        let kept: Vec<usize> = dup.unique.into_iter().filter(|&i| !copy[i]).collect();
        (kept, "dropped (data.dedup = true)")
    } else {
        (
            (0..train.len()).collect(),
            "kept (data.dedup = true would drop them)",
        )
    };
    // Information, not a warning: the official releases hold a few genuine repeats.
    tracing::info!(
        "{}: {} of {} records repeat an earlier image ({} with another label), {} copy a test \
         image; {action}: {} records remain",
        train.name,
        repeats,
        train.len(),
        conflicts,
        in_test.len(),
        kept.len()
    );
    kept
}

/// Which records of the data set a run trains, validates and tests on (indices into the
/// data set's train and test splits, ascending), as [`prepare`] draws them from the config.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Split {
    pub train: Vec<usize>,
    pub val: Vec<usize>,
    pub test: Vec<usize>,
}

/// The [`Split`] of `config` over `train` and `test`: the training pool (see
/// [`training_pool`]), the seeded validation split, the class-balanced `data.subset` draw and
/// the fixed `data.test_subset` draw.
pub fn split_indices(
    config: &RunConfig,
    train: &Dataset,
    test: &Dataset,
) -> Result<Split, RunError> {
    let num_classes = train.num_classes;
    let pool = training_pool(train, Some(test), config.data.dedup);
    let (train_pos, val_pos) = validation_split(pool.len(), config.data.val_size, config.seed)
        .map_err(|e| invalid("data.val_size", e))?;
    let mut train_idx: Vec<usize> = train_pos.iter().map(|&p| pool[p]).collect();
    let val_idx: Vec<usize> = val_pos.iter().map(|&p| pool[p]).collect();
    if let Some(n) = config.data.subset {
        train_idx = balanced_subset(&train.labels, num_classes, &train_idx, n, config.seed)
            .map_err(|e| invalid("data.subset", e))?;
    }
    // The same test subset for every run (a fixed seed), balanced over the classes.
    let test_idx: Vec<usize> = match config.data.test_subset {
        Some(n) if n < test.len() => {
            let all: Vec<usize> = (0..test.len()).collect();
            balanced_subset(&test.labels, num_classes, &all, n, TEST_SUBSET_SEED)
                .map_err(|e| invalid("data.test_subset", e))?
        }
        _ => (0..test.len()).collect(),
    };
    Ok(Split {
        train: train_idx,
        val: val_idx,
        test: test_idx,
    })
}

/// A run's data as another framework needs it to train on exactly the same examples: the
/// [`Split`], the per-channel normalization (from the training examples, as [`prepare`] uses
/// it) and, under label noise, the labels of the training set as the model sees them.
#[derive(Debug, Clone, Serialize)]
pub struct SplitExport {
    pub data: String,
    pub seed: u64,
    #[serde(flatten)]
    pub split: Split,
    pub mean: Vec<f64>,
    pub std: Vec<f64>,
    /// Labels of the whole training split as trained on (`None` without label noise).
    pub train_labels: Option<Vec<u32>>,
}

/// The [`SplitExport`] of `config`, reading its data set from `data_dir` (see [`load_data`]).
pub fn export_split(config: &RunConfig, data_dir: Option<&Path>) -> Result<SplitExport, RunError> {
    let TrainTest { train, test } = load_data(config, data_dir)?;
    let split = split_indices(config, &train, &test)?;
    let norm = Normalization::from_dataset(&train, Some(&split.train))?;
    let train_labels = (config.data.label_noise > 0.0)
        .then(|| {
            symmetric_label_noise(
                &train.labels,
                train.num_classes,
                config.data.label_noise,
                config.seed,
            )
        })
        .transpose()?
        .map(|n| n.labels);
    Ok(SplitExport {
        data: config.data.name.to_string(),
        seed: config.seed,
        split,
        mean: norm.mean,
        std: norm.std,
        train_labels,
    })
}

/// Builds everything a run needs. The config must be validated.
pub fn prepare(config: &RunConfig, data: TrainTest, device: Device) -> Result<Prepared, RunError> {
    let dtype = config.dtype.dtype();
    let TrainTest { train, test } = data;
    let num_classes = train.num_classes;
    let Split {
        train: train_idx,
        val: val_idx,
        test: test_idx,
    } = split_indices(config, &train, &test)?;
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
    // Labels of the training set as the model sees them: noisy where `data.label_noise` says.
    let noisy = (config.data.label_noise > 0.0)
        .then(|| {
            symmetric_label_noise(
                &train.labels,
                num_classes,
                config.data.label_noise,
                config.seed,
            )
        })
        .transpose()?;
    let eval_labelled = |data: &Arc<Dataset>,
                         idx: Vec<usize>,
                         batch: usize,
                         labels: Option<&Vec<u32>>|
     -> Result<EvalSet, RunError> {
        let len = idx.len();
        let mut loader = Loader::new(data.clone(), idx, eval_cfg(batch))?;
        if let Some(l) = labels {
            loader = loader.with_labels(l.clone())?;
        }
        let batches = (0..loader.batches_per_epoch())
            .map(|_| {
                let b = loader.next_batch(&device)?;
                Ok((b.images.to_dtype(dtype)?, b.labels))
            })
            .collect::<Result<Vec<_>, RunError>>()?;
        Ok(EvalSet { batches, len })
    };
    let eval_set =
        |data: &Arc<Dataset>, idx: Vec<usize>, batch: usize| eval_labelled(data, idx, batch, None);

    let measure_n = config.tracking.measure_subset.min(train_idx.len());
    let perm = epoch_permutation(train_idx.len(), config.seed ^ MEASURE_SEED_OFFSET, 0);
    let measure_idx: Vec<usize> = perm[..measure_n].iter().map(|&k| train_idx[k]).collect();
    // Batches of 128 bound the memory of a Hessian-vector product (double backprop keeps the
    // graph of the gradient: ~2.9 GB for SimpleCNN at 128, SCIENCE.md §7).
    let measure = eval_set(&train, measure_idx.clone(), 128)?;
    let val = if val_idx.is_empty() {
        None
    } else {
        Some(eval_set(&train, val_idx, EVAL_BATCH)?)
    };
    let test = eval_set(&test, test_idx, EVAL_BATCH)?;
    let noise = match &noisy {
        Some(n) => {
            let (clean_idx, noisy_idx) =
                noise_tracking_split(&train_idx, n, config.tracking.noise_subset, config.seed);
            let noisy_true = noisy_idx
                .chunks(EVAL_BATCH)
                .map(|c| {
                    let y: Vec<u32> = c.iter().map(|&i| train.labels[i]).collect();
                    Tensor::from_vec(y, c.len(), &device)
                })
                .collect::<candle_core::Result<Vec<_>>>()?;
            let set = |idx: Vec<usize>| {
                (!idx.is_empty())
                    .then(|| eval_labelled(&train, idx, EVAL_BATCH, Some(&n.labels)))
                    .transpose()
            };
            Some(NoiseSets {
                clean: set(clean_idx)?,
                noisy: set(noisy_idx)?,
                noisy_true,
            })
        }
        None => None,
    };
    // The whole training set is evaluated once, at the end: streamed, not kept on the device;
    // against the labels trained on (noisy ones included), so it measures the fit.
    let mut train_eval_loader =
        Loader::new(train.clone(), train_idx.clone(), eval_cfg(EVAL_BATCH))?;
    if let Some(n) = &noisy {
        train_eval_loader = train_eval_loader.with_labels(n.labels.clone())?;
    }
    let train_eval = StreamedSet {
        loader: train_eval_loader,
        dtype,
    };

    let mixup = (config.data.mixup_alpha > 0.0)
        .then(|| Mixup::new(config.data.mixup_alpha))
        .transpose()
        .map_err(|e| invalid("data.mixup_alpha", e))?;
    let loader_cfg = LoaderConfig {
        batch_size: config.data.batch_size,
        shuffle: true,
        drop_last: false,
        augment: (config.data.augment == Augmentation::FlipCrop).then_some(Augment::CIFAR),
        normalization: norm,
        mixup,
        seed: config.data.order_seed.unwrap_or(config.seed),
    };
    let mut loader = Loader::new(train.clone(), train_idx, loader_cfg)
        .map_err(|e| invalid("data.batch_size", e))?;
    if let Some(n) = noisy {
        loader = loader.with_labels(n.labels)?;
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
        measure_idx,
        val,
        test,
        train_eval,
        noise,
    })
}

/// The clean and the noisy data-set indices (each in draw order) of the first `n` of a seeded
/// permutation of `train_idx`; `noisy.is_noisy` is indexed by data-set index. The draw has its
/// own stream, so tracking memorization never moves the measurement subset or the batches.
pub fn noise_tracking_split(
    train_idx: &[usize],
    noisy: &NoisyLabels,
    n: usize,
    seed: u64,
) -> (Vec<usize>, Vec<usize>) {
    let perm = epoch_permutation(train_idx.len(), seed ^ NOISE_TRACK_SEED_OFFSET, 0);
    perm.iter()
        .take(n.min(train_idx.len()))
        .map(|&k| train_idx[k])
        .partition(|&i| !noisy.is_noisy[i])
}

/// The optimizer config with the epoch-based schedule converted to steps.
pub fn sgd_config(config: &RunConfig, steps_per_epoch: u64) -> SgdConfig {
    let o = &config.optim;
    let s = &config.schedule;
    let base = match s.kind {
        ScheduleKind::Step => LrSchedule::MultiStep {
            milestones: s.milestones.iter().map(|&m| m as u64).collect(),
            gamma: s.gamma,
        },
        ScheduleKind::Cosine => LrSchedule::Cosine {
            t_max: config.stop.max_epochs as u64,
            min_lr: 0.0,
        },
        ScheduleKind::Constant => LrSchedule::Constant,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn images(pixels: &[u8], name: &str) -> Dataset {
        Dataset {
            name: name.into(),
            images: pixels.to_vec(),
            labels: pixels.iter().map(|&p| u32::from(p % 2)).collect(),
            channels: 1,
            height: 1,
            width: 1,
            num_classes: 2,
            class_names: None,
        }
    }

    #[test]
    fn training_pool_keeps_one_record_per_image_and_none_from_test() {
        let train = images(&[1, 2, 1, 3, 4, 2, 5], "train");
        let test = images(&[4, 9], "test");
        assert_eq!(training_pool(&train, Some(&test), true), vec![0, 1, 3, 6]);
        assert_eq!(training_pool(&train, None, true), vec![0, 1, 3, 4, 6]);
        assert_eq!(
            training_pool(&train, Some(&test), false),
            (0..7).collect::<Vec<_>>()
        );
    }

    #[test]
    fn the_exported_split_is_the_one_a_run_trains_on() {
        let mut config: RunConfig = toml::from_str(
            "[data]\nname = \"synthetic\"\nval_size = 100\nsubset = 400\ntest_subset = 64\nbatch_size = 8\n[model]\narch = \"fc_relu\"\n[optim]\nlr = 0.1\n[stop]\nmax_epochs = 1\n",
        )
        .unwrap();
        config.tracking.measure_subset = 4;
        let export = export_split(&config, None).unwrap();
        let data = synthetic(config.seed);
        let counts = |idx: &[usize], labels: &[u32]| {
            let mut c = vec![0; 4];
            idx.iter().for_each(|&i| c[labels[i] as usize] += 1);
            c
        };
        assert_eq!(
            counts(&export.split.train, &data.train.labels),
            vec![100; 4]
        );
        assert_eq!(counts(&export.split.test, &data.test.labels), vec![16; 4]);
        assert!(export
            .split
            .val
            .iter()
            .all(|i| !export.split.train.contains(i)));
        let prepared = prepare(&config, data, Device::Cpu).unwrap();
        assert_eq!(prepared.loader.len(), 400);
        assert_eq!(prepared.val.as_ref().unwrap().len, 100);
        assert_eq!(prepared.test.len, 64);
        // Another seed draws other examples.
        config.seed = 1;
        assert_ne!(
            export_split(&config, None).unwrap().split.train,
            export.split.train
        );
    }

    #[test]
    fn with_dedup_validation_never_holds_a_copy_of_a_training_image() {
        // 40 distinct images, each repeated 5 times.
        let pixels: Vec<u8> = (0..5).flat_map(|_| 0..40u8).collect();
        let train = images(&pixels, "train");
        let test = images(&[200], "test");
        let mut config: RunConfig = toml::from_str(
            "[data]\nname = \"synthetic\"\nval_size = 10\nbatch_size = 8\n[model]\narch = \"fc_relu\"\n[optim]\nlr = 0.1\n[stop]\nmax_epochs = 1\n",
        )
        .unwrap();
        config.tracking.measure_subset = 4;
        // By default every record is used, repeats included (as published work does).
        let data = TrainTest {
            train: train.clone(),
            test: test.clone(),
        };
        assert_eq!(
            prepare(&config, data, Device::Cpu).unwrap().loader.len(),
            190
        );
        config.data.dedup = true;
        let prepared = prepare(&config, TrainTest { train, test }, Device::Cpu).unwrap();
        assert_eq!(prepared.val.as_ref().unwrap().len, 10);
        // 40 distinct images: 10 validate, 30 train, and no image is on both sides.
        assert_eq!(prepared.loader.len(), 30);
    }
}
