//! The typed run configuration (TOML) and its validation into a runnable plan.
//!
//! Every section rejects unknown keys, and `validate` rejects impossible values naming the key,
//! so a typo or a negative learning rate is ONE clear error before any training starts.

use breakeven_data::DatasetName;
use breakeven_models::ModelSpec;
use breakeven_penalties::PenaltyKind;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::path::Path;

use crate::device::{parse_device_name, DeviceName};
use crate::error::RunError;

/// One training run: data, model, optimizer, schedule, penalty, stopping rule and tracking.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    /// Human-readable name (also the default run directory name in sweeps).
    #[serde(default = "default_name")]
    pub name: String,
    /// Seed of every random draw of the run (init, shuffling, augmentation, penalty labels).
    #[serde(default)]
    pub seed: u64,
    /// `cpu` or `cuda[:N]`.
    #[serde(default)]
    pub device: DeviceName,
    /// Floating-point type of parameters and activations: `f32` or `f64`.
    #[serde(default)]
    pub dtype: Precision,
    pub data: DataConfig,
    /// The architecture, passed to `breakeven_models::build` (e.g. `{ arch = "simple_cnn" }`).
    pub model: ModelSpec,
    pub optim: OptimConfig,
    #[serde(default)]
    pub schedule: ScheduleConfig,
    #[serde(default)]
    pub penalty: PenaltyConfig,
    pub stop: StopConfig,
    #[serde(default)]
    pub tracking: TrackingConfig,
    /// Written by the runner into the run directory's resolved config; absent in user configs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provenance: Option<Provenance>,
}

/// Where a run came from: the code revision and the data it read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Provenance {
    /// `git rev-parse HEAD` of the working tree (with `-dirty` if tracked files outside
    /// `docs/results` have changes), or `unknown`.
    pub git_revision: String,
    /// The data directory the data set was read from.
    pub data_dir: String,
    /// `breakeven-runner` version.
    pub version: String,
}

/// Which data set, how much of it, and how it is presented.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    /// `cifar10`, `cifar100`, `fashion-mnist`, `mnist`, `tiny-imagenet` or `synthetic`
    /// (seeded Gaussian blobs, for tests and smoke runs without data).
    pub name: DataName,
    /// Use only N training examples (after the validation split): a class-balanced draw seeded
    /// by the run's seed; absent = all.
    #[serde(default)]
    pub subset: Option<usize>,
    /// Examples held out of the training set (seeded draw) for choosing η* and α.
    #[serde(default)]
    pub val_size: usize,
    /// Use only N test examples: a class-balanced draw, the same for every run; absent = all.
    #[serde(default)]
    pub test_subset: Option<usize>,
    /// `none` or `flip-crop` (random horizontal flip + 4-pixel-padded random crop).
    #[serde(default)]
    pub augment: Augmentation,
    /// Fraction of training labels replaced by a uniformly drawn different class.
    #[serde(default)]
    pub label_noise: f64,
    /// Mixup (Zhang et al. 2018): Beta(α, α) mixing weight of each training batch with a
    /// shuffled copy of itself, loss on the mixed targets; 0 = off.
    #[serde(default)]
    pub mixup_alpha: f64,
    /// Mini-batch size S.
    pub batch_size: usize,
    /// Draw training and validation examples from distinct images only: drop records whose
    /// bytes repeat an earlier training image or a test image. Off by default: published numbers
    /// use every record of the official releases, which hold a few genuine repeats (CIFAR-100: 14
    /// within train, 10 train images equal to test images); every run logs what this would drop.
    #[serde(default)]
    pub dedup: bool,
    /// Seed of the mini-batch order (and of augmentation and Mixup draws) alone; absent: the
    /// run's `seed`. The same seed with another `order_seed` starts from the same weights on the
    /// same examples and differs only in SGD's noise: the early-phase page's control.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order_seed: Option<u64>,
}

/// SGD with `torch.optim.SGD` semantics.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OptimConfig {
    /// Learning rate η (> 0).
    pub lr: f64,
    #[serde(default)]
    pub momentum: f64,
    #[serde(default)]
    pub weight_decay: f64,
    #[serde(default)]
    pub nesterov: bool,
    /// Clip the global gradient norm to this value; absent = no clipping.
    #[serde(default)]
    pub clip_grad_norm: Option<f64>,
}

/// Learning-rate schedule, stepped per epoch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleConfig {
    /// `constant`, `step` (×gamma at each milestone epoch) or `cosine` (to 0 at `stop.max_epochs`).
    #[serde(default)]
    pub kind: ScheduleKind,
    #[serde(default)]
    pub milestones: Vec<usize>,
    #[serde(default = "default_gamma")]
    pub gamma: f64,
    /// Linear warm-up from 0 over this many epochs.
    #[serde(default)]
    pub warmup_epochs: usize,
}

/// Training objective L_B + α·P (SCIENCE.md §3).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PenaltyConfig {
    /// `none`, `fp`, `gp`, `gpr` or `gpx` (`None` for `none`).
    #[serde(default, with = "penalty_name")]
    pub kind: Option<PenaltyKind>,
    /// Penalty weight α (≥ 0).
    #[serde(default)]
    pub alpha: f64,
    /// Apply the penalty every k steps [unverified: reportedly 10].
    #[serde(default = "default_every")]
    pub every: usize,
    /// Penalty evaluated on the first N examples of the batch [unverified: reportedly 128].
    #[serde(default)]
    pub sub_batch: Option<usize>,
    /// Squared gradient norm (the papers' form) or the plain norm (the seed's).
    #[serde(default = "default_true")]
    pub squared: bool,
    /// How ∇P is computed: `double_backprop` (exact) or `finite_difference` (cheaper).
    #[serde(default)]
    pub method: PenaltyMethod,
    /// With `finite_difference`: the relative step h of curvature's rule ε = h·(1 + ‖θ‖)/‖v‖
    /// (absent = √u one-sided, ∛u central, u the dtype's unit roundoff; see
    /// `breakeven_curvature::fd_step`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rel_step: Option<f64>,
    /// With `finite_difference`: one-sided differences (one extra pass, error O(ε)) instead of
    /// central ones (two extra passes, error O(ε²)).
    #[serde(default, skip_serializing_if = "is_false")]
    pub one_sided: bool,
    /// With `finite_difference`: the first penalized step checks the difference against one
    /// at a quarter of the step and refuses the method beyond 5% disagreement. `false` trains
    /// on it anyway, to measure what an unreliable difference does to training (issue 18).
    #[serde(default = "default_true", skip_serializing_if = "is_true")]
    pub fd_check: bool,
}

/// When a run ends. SCIENCE.md §4: compare at convergence, so stop at a training-accuracy
/// threshold, with an epoch cap.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StopConfig {
    /// Hard cap on epochs.
    pub max_epochs: usize,
    /// Stop once the epoch's running training accuracy reaches this (in [0, 1]).
    #[serde(default)]
    pub train_acc: Option<f64>,
    /// Hard cap on optimizer steps (tests, smoke runs).
    #[serde(default)]
    pub max_steps: Option<u64>,
}

/// What is measured along the trajectory and when.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrackingConfig {
    /// In the first `dense_epochs` epochs, log every `dense_every` steps ...
    #[serde(default = "default_one")]
    pub dense_epochs: usize,
    #[serde(default = "default_dense_every")]
    pub dense_every: u64,
    /// ... then at the end of every `every_epochs`-th epoch.
    #[serde(default = "default_one")]
    pub every_epochs: usize,
    /// Measure curvature at logged steps: Tr(F), λ_K^1, Tr(K) (per-example loops over
    /// `k_examples`), and λ_H^1..k / Tr(H) unless their budgets are 0. Losses and norms are
    /// always logged.
    #[serde(default)]
    pub curvature: bool,
    /// With `curvature`: also λ_K^1, Tr(K) and λ_K^*/λ_K^1 from `k_examples` per-example
    /// gradients (as many backward passes again as Tr(F)); false measures Tr(F) (and λ_H, Tr(H))
    /// alone, for experiments that read only those.
    #[serde(default = "default_true", skip_serializing_if = "is_true")]
    pub covariance: bool,
    /// Size of the fixed seeded measurement subset of the training set.
    #[serde(default = "default_measure_subset")]
    pub measure_subset: usize,
    /// Number of Hessian eigenvalues from Lanczos (λ_H^1..k; λ_H^k is the conditioning λ^*).
    #[serde(default = "default_top_k")]
    pub top_k: usize,
    /// Lanczos iterations (Hessian-vector products for λ_H; 0 = skip the Hessian spectrum).
    /// With `lanczos_tol` this is a cap, not a budget.
    #[serde(default = "default_lanczos_iters")]
    pub lanczos_iters: usize,
    /// Run Lanczos until every wanted pair's residual estimate β|s|/|θ| is at most this (capped at
    /// `lanczos_iters`), spend `top_k` more products on the true relative residuals
    /// ‖H y − θ y‖/|θ|, and log those with the iterations and whether the tolerance was met. Absent: stop at the Ritz
    /// estimate 1e-3 and log no residuals (the behaviour of runs made before the option).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lanczos_tol: Option<f64>,
    /// Rademacher probes for Tr(H) by Hutchinson (0 = skip).
    #[serde(default = "default_hutchinson")]
    pub hutchinson_samples: usize,
    /// Per-example gradients used for λ_K^1 and Tr(K) (Gram trick, SCIENCE.md §2).
    #[serde(default = "default_k_examples")]
    pub k_examples: usize,
    /// λ_K^* of the logged ratio λ_K^*/λ_K^1: the `k_star`-th largest eigenvalue of the Gram
    /// matrix (at most `k_examples` − 1, its rank). Absent: the smallest non-zero eigenvalue
    /// (the behaviour of runs made before the option), which over a few dozen examples is
    /// mostly noise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub k_star: Option<usize>,
    /// With `data.label_noise` > 0: size of the fixed seeded subset of the training set on
    /// which training accuracy is logged separately for clean and noisy examples (SCIENCE.md
    /// §5.3, memorization).
    #[serde(default = "default_noise_subset")]
    pub noise_subset: usize,
    /// Evaluate test loss/accuracy at logged steps (always at the end).
    #[serde(default = "default_true")]
    pub eval_test: bool,
    /// Write a checkpoint every N epochs (and always at the end).
    #[serde(default = "default_one")]
    pub checkpoint_every_epochs: usize,
    /// Also write a checkpoint every N steps (0 = only per epoch).
    #[serde(default)]
    pub checkpoint_every_steps: u64,
}

fn default_name() -> String {
    "run".into()
}
fn default_gamma() -> f64 {
    0.1
}
fn default_every() -> usize {
    1
}
fn default_true() -> bool {
    true
}
fn is_false(b: &bool) -> bool {
    !*b
}
fn is_true(b: &bool) -> bool {
    *b
}
fn default_one() -> usize {
    1
}
fn default_dense_every() -> u64 {
    10
}
fn default_measure_subset() -> usize {
    256
}
fn default_top_k() -> usize {
    3
}
fn default_lanczos_iters() -> usize {
    20
}
fn default_hutchinson() -> usize {
    10
}
fn default_k_examples() -> usize {
    64
}
fn default_noise_subset() -> usize {
    512
}

impl Default for ScheduleConfig {
    fn default() -> Self {
        Self {
            kind: ScheduleKind::Constant,
            milestones: vec![],
            gamma: default_gamma(),
            warmup_epochs: 0,
        }
    }
}

impl Default for PenaltyConfig {
    fn default() -> Self {
        Self {
            kind: None,
            alpha: 0.0,
            every: 1,
            sub_batch: None,
            squared: true,
            method: PenaltyMethod::DoubleBackprop,
            rel_step: None,
            one_sided: false,
            fd_check: true,
        }
    }
}

impl Default for TrackingConfig {
    fn default() -> Self {
        Self {
            dense_epochs: 1,
            dense_every: default_dense_every(),
            every_epochs: 1,
            curvature: false,
            covariance: true,
            measure_subset: default_measure_subset(),
            top_k: default_top_k(),
            lanczos_iters: default_lanczos_iters(),
            lanczos_tol: None,
            hutchinson_samples: default_hutchinson(),
            k_examples: default_k_examples(),
            k_star: None,
            noise_subset: default_noise_subset(),
            eval_test: true,
            checkpoint_every_epochs: 1,
            checkpoint_every_steps: 0,
        }
    }
}

/// `data.name`: a data set read from files, or the seeded synthetic blobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum DataName {
    #[serde(rename = "cifar10")]
    Cifar10,
    #[serde(rename = "cifar100")]
    Cifar100,
    #[serde(rename = "fashion-mnist")]
    FashionMnist,
    #[serde(rename = "mnist")]
    Mnist,
    #[serde(rename = "tiny-imagenet")]
    TinyImageNet,
    /// Seeded Gaussian blobs generated in memory (no files).
    #[serde(rename = "synthetic")]
    Synthetic,
}

impl DataName {
    /// Every accepted value, in the order error messages list them.
    pub const ALL: [DataName; 6] = [
        DataName::Cifar10,
        DataName::Cifar100,
        DataName::FashionMnist,
        DataName::Mnist,
        DataName::TinyImageNet,
        DataName::Synthetic,
    ];

    /// The data set on disk, or `None` for the synthetic one.
    pub fn files(self) -> Option<DatasetName> {
        match self {
            DataName::Cifar10 => Some(DatasetName::Cifar10),
            DataName::Cifar100 => Some(DatasetName::Cifar100),
            DataName::FashionMnist => Some(DatasetName::FashionMnist),
            DataName::Mnist => Some(DatasetName::Mnist),
            DataName::TinyImageNet => Some(DatasetName::TinyImageNet),
            DataName::Synthetic => None,
        }
    }

    /// The name as written in configs (and on `cargo xtask data fetch`).
    pub fn as_str(self) -> &'static str {
        self.files().map_or("synthetic", DatasetName::as_str)
    }
}

impl std::str::FromStr for DataName {
    type Err = RunError;
    fn from_str(s: &str) -> Result<Self, RunError> {
        DataName::ALL
            .into_iter()
            .find(|d| d.as_str() == s)
            .ok_or_else(|| RunError::Invalid {
                key: "data.name".into(),
                message: format!(
                    "unknown data set {s:?}, expected one of {}",
                    DataName::ALL.map(DataName::as_str).join(", ")
                ),
            })
    }
}

impl std::fmt::Display for DataName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `data.augment`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Augmentation {
    #[default]
    None,
    /// Random horizontal flip and 4-pixel-padded random crop.
    FlipCrop,
}

/// `schedule.kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScheduleKind {
    #[default]
    Constant,
    /// ×gamma at each milestone epoch.
    Step,
    /// Cosine decay to 0 at `stop.max_epochs`.
    Cosine,
}

/// `penalty.method`: how ∇P is computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PenaltyMethod {
    /// Exact, by differentiating through the backward pass.
    #[default]
    DoubleBackprop,
    /// Hessian-vector products by differences of gradients (cheaper, approximate).
    FiniteDifference,
}

/// `dtype`: the floating-point type of parameters and activations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    #[default]
    F32,
    F64,
}

impl Precision {
    /// The name as written in configs.
    pub fn as_str(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::F64 => "f64",
        }
    }

    pub fn dtype(self) -> candle_core::DType {
        match self {
            Precision::F32 => candle_core::DType::F32,
            Precision::F64 => candle_core::DType::F64,
        }
    }
}

/// `penalty.kind` as `none` or one of the penalties crate's kinds, in their serde names.
mod penalty_name {
    use super::*;

    const NAMES: [(&str, Option<PenaltyKind>); 5] = [
        ("none", None),
        ("fp", Some(PenaltyKind::Fp)),
        ("gp", Some(PenaltyKind::Gp)),
        ("gpr", Some(PenaltyKind::Gpr)),
        ("gpx", Some(PenaltyKind::Gpx)),
    ];

    pub fn name(kind: Option<PenaltyKind>) -> &'static str {
        NAMES
            .iter()
            .find(|(_, k)| *k == kind)
            .map_or("none", |(n, _)| n)
    }

    pub fn serialize<S: Serializer>(kind: &Option<PenaltyKind>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(name(*kind))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<PenaltyKind>, D::Error> {
        let text = String::deserialize(d)?;
        NAMES
            .iter()
            .find(|(n, _)| *n == text)
            .map(|(_, k)| *k)
            .ok_or_else(|| {
                let names: Vec<&str> = NAMES.iter().map(|(n, _)| *n).collect();
                serde::de::Error::invalid_value(
                    serde::de::Unexpected::Str(&text),
                    &format!("one of {}", names.join(", ")).as_str(),
                )
            })
    }
}

/// The name a penalty kind has in configs (`none` for no penalty).
pub fn penalty_name(kind: Option<PenaltyKind>) -> &'static str {
    penalty_name::name(kind)
}

impl Serialize for DeviceName {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for DeviceName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        parse_device_name(&text).map_err(serde::de::Error::custom)
    }
}

/// Reads and parses a TOML definition file; `path` names the file in errors.
pub fn load_toml<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, RunError> {
    let text = std::fs::read_to_string(path).map_err(|e| RunError::io(path, e))?;
    toml::from_str(&text).map_err(|e| RunError::Config {
        origin: path.display().to_string(),
        message: e.to_string(),
    })
}

/// The profile `name` of a definition, or an error listing the defined ones.
pub fn named_profile<'a, P>(
    profiles: &'a std::collections::BTreeMap<String, P>,
    name: &str,
) -> Result<&'a P, RunError> {
    profiles.get(name).ok_or_else(|| RunError::Invalid {
        key: "profile".into(),
        message: format!(
            "unknown profile {name:?}, expected one of {:?}",
            profiles.keys().collect::<Vec<_>>()
        ),
    })
}

impl RunConfig {
    /// Parses TOML text; `origin` names the file in errors.
    pub fn from_toml(text: &str, origin: &str) -> Result<Self, RunError> {
        toml::from_str(text).map_err(|e| RunError::Config {
            origin: origin.into(),
            message: e.to_string(),
        })
    }

    /// Reads and parses a TOML file.
    pub fn load(path: &Path) -> Result<Self, RunError> {
        let text = std::fs::read_to_string(path).map_err(|e| RunError::io(path, e))?;
        Self::from_toml(&text, &path.display().to_string())
    }

    /// The config as TOML (the resolved config written into every run directory).
    pub fn to_toml(&self) -> Result<String, RunError> {
        toml::to_string_pretty(self).map_err(|e| RunError::Config {
            origin: self.name.clone(),
            message: e.to_string(),
        })
    }
}
