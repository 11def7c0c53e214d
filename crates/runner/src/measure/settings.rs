//! The command line of `breakeven measure` ([`MeasureArgs`], clap derive) and the settings it
//! resolves to against a run config ([`Settings`], printed with every measurement).

use std::path::PathBuf;
use std::str::FromStr;

use serde::{Serialize, Serializer};

use crate::config::TrackingConfig;
use crate::error::RunError;

/// The quantities `measure` can compute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Quantity {
    /// Loss and accuracy (eval mode) on the Hessian examples.
    Loss,
    /// λ_H^1..k by Lanczos.
    LambdaH,
    /// Tr(H) by Hutchinson or Hutch++.
    TraceH,
    /// Tr(F) with labels from the model (exact or Monte Carlo).
    TraceF,
    /// λ_K^1 (and λ_K^*/λ_K^1) of the gradient covariance.
    LambdaK,
    /// Tr(K).
    TraceK,
}

impl Quantity {
    pub const ALL: [Quantity; 6] = [
        Quantity::Loss,
        Quantity::LambdaH,
        Quantity::TraceH,
        Quantity::TraceF,
        Quantity::LambdaK,
        Quantity::TraceK,
    ];
    const NAMES: [&'static str; 6] = [
        "loss", "lambda_h", "trace_h", "trace_f", "lambda_k", "trace_k",
    ];
}

impl FromStr for Quantity {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::NAMES
            .iter()
            .position(|n| *n == s.trim())
            .map(|i| Self::ALL[i])
            .ok_or_else(|| {
                format!(
                    "unknown quantity `{s}`; choose from {} (or `all`)",
                    Self::NAMES.join(", ")
                )
            })
    }
}

/// A list of quantities (one clap value: `loss,lambda_h`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quantities(pub Vec<Quantity>);

/// `--quantities loss,lambda_h` (or `all`).
fn parse_quantities(s: &str) -> Result<Quantities, String> {
    if s.trim() == "all" {
        return Ok(Quantities(Quantity::ALL.to_vec()));
    }
    let mut q = s
        .split(',')
        .map(Quantity::from_str)
        .collect::<Result<Vec<_>, _>>()?;
    q.sort();
    q.dedup();
    Ok(Quantities(q))
}

/// How Tr(F)'s expectation over the model's labels is taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FisherSampling {
    /// Summed over all classes, weighted by the model's probabilities (C backward passes per
    /// example; no sampling error).
    Exact,
    /// K labels per example drawn from the model's softmax.
    MonteCarlo(usize),
}

impl FromStr for FisherSampling {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim() {
            "exact" => Ok(Self::Exact),
            "mc" => Ok(Self::MonteCarlo(1)),
            other => match other.strip_prefix("mc:").map(str::parse::<usize>) {
                Some(Ok(k)) if k >= 1 => Ok(Self::MonteCarlo(k)),
                _ => Err(format!(
                    "`{s}`: expected `exact` or `mc:K` with K ≥ 1 labels per example"
                )),
            },
        }
    }
}

impl std::fmt::Display for FisherSampling {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Exact => write!(f, "exact"),
            Self::MonteCarlo(k) => write!(f, "mc:{k}"),
        }
    }
}

impl Serialize for FisherSampling {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// The BatchNorm statistics of the curvature passes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum BnMode {
    /// Each batch's own statistics (training's view; training-time tracking uses it).
    Batch,
    /// The running statistics (PyHessian's `model.eval()`): per-example and batched passes agree.
    Eval,
}

/// How Tr(H) is estimated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "method", rename_all = "snake_case")]
pub enum TraceMethod {
    /// Hutchinson with this many Rademacher probes.
    Hutchinson { probes: usize },
    /// Hutch++ with this budget of products.
    #[serde(rename = "hutch++")]
    HutchPlusPlus { matvecs: usize },
}

/// `breakeven measure`: the flags of every estimator setting (a flag overrides the run
/// config's `[tracking]` value; without either, the defaults below).
#[derive(Debug, Clone, clap::Args)]
pub struct MeasureArgs {
    /// A run checkpoint (`<run>/checkpoints/step-*.safetensors`), a bare safetensors weights
    /// file (ours, or a PyTorch `state_dict`: pass --arch or --config), or a run directory
    /// (batch mode: every checkpoint, appended to `<run>/curvature.jsonl`, resumable).
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// A run config (TOML) naming the model and data (default for a run checkpoint: its run's
    /// `config.toml`).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Architecture of a bare weights file, e.g. `simple_cnn`, `resnet32`, `fc_relu` (instead
    /// of --config; options with --model-option).
    #[arg(long)]
    pub arch: Option<String>,
    /// An option of --arch as KEY=VALUE (TOML value), repeatable: `width_mult=0.5`,
    /// `widths=[200,200]`, `width=16`.
    #[arg(long = "model-option", value_name = "KEY=VALUE")]
    pub model_options: Vec<String>,
    /// Rename file keys before matching: `c1=conv1,fc=linear` (a key equal to FROM or starting
    /// with `FROM.` gets TO instead).
    #[arg(long)]
    pub rename: Option<String>,
    /// Pair file keys left unmatched with model keys of the same shape and kind, in module
    /// order; the pairing is printed (`key_map`) for you to confirm.
    #[arg(long)]
    pub map_by_shape: bool,
    /// Data set to measure on (default: the run's; required with --arch).
    #[arg(long)]
    pub data: Option<String>,
    /// Device (`cpu`, `cuda:N`; default: the run's).
    #[arg(long)]
    pub device: Option<String>,
    /// Precision of the measurement: `f32` or `f64` (f32 weights and inputs are widened
    /// exactly; default: the run's).
    #[arg(long)]
    pub dtype: Option<String>,
    /// Examples for EVERY quantity: the first N of the run's seeded measurement permutation of
    /// the training split.
    #[arg(long, conflicts_with = "subset")]
    pub examples: Option<usize>,
    /// Deprecated name of --examples (it sets every quantity's examples).
    #[arg(long, hide = true)]
    pub subset: Option<usize>,
    /// Examples of the loss, λ_H, Tr(H), the density and per-layer curvature (overrides
    /// --examples; default: `tracking.measure_subset`, 256).
    #[arg(long)]
    pub hessian_examples: Option<usize>,
    /// Examples of the per-example-gradient quantities Tr(F), λ_K^1 and Tr(K) (overrides
    /// --examples; default: `tracking.k_examples`, 64).
    #[arg(long)]
    pub gradient_examples: Option<usize>,
    /// Rademacher probes of Hutchinson's Tr(H) (default: `tracking.hutchinson_samples`, 10).
    #[arg(long, conflicts_with = "hutch_pp")]
    pub hutchinson_probes: Option<usize>,
    /// Estimate Tr(H) by Hutch++ with this budget of Hessian-vector products instead.
    #[arg(long = "hutch++", value_name = "MATVECS")]
    pub hutch_pp: Option<usize>,
    /// Lanczos steps (Krylov dimension) for λ_H (default: `tracking.lanczos_iters`, 20).
    #[arg(long)]
    pub lanczos_steps: Option<usize>,
    /// Lanczos stops early once every wanted Ritz pair has β|s| ≤ tol·|θ| (default:
    /// `tracking.lanczos_tol`, else 1e-3).
    #[arg(long)]
    pub tol: Option<f64>,
    /// λ_K^* of the ratio λ_K^*/λ_K^1: the k-th largest eigenvalue of the Gram matrix (default:
    /// `tracking.k_star`, else the smallest non-zero one).
    #[arg(long)]
    pub k_star: Option<usize>,
    /// Number of Hessian eigenvalues λ_H^1..k (default: `tracking.top_k`, 3).
    #[arg(long)]
    pub top_k: Option<usize>,
    /// Tr(F): `exact` (all classes, weighted by the model's probabilities) or `mc:K` (K labels
    /// sampled per example).
    #[arg(long, default_value = "mc:1")]
    pub fisher: FisherSampling,
    /// BatchNorm during the curvature passes: `batch` (each batch's statistics, as tracked in
    /// training; a per-example pass normalizes by its one example) or `eval` (running
    /// statistics). The loss is always in eval mode.
    #[arg(long, value_enum, default_value_t = BnMode::Batch)]
    pub bn: BnMode,
    /// Also estimate the Hessian's spectral density by stochastic Lanczos quadrature: CSV and
    /// PNG plot written to --out-dir.
    #[arg(long)]
    pub slq: bool,
    /// SLQ probes (independent Lanczos runs).
    #[arg(long, default_value_t = 10)]
    pub slq_probes: usize,
    /// SLQ Lanczos steps per probe.
    #[arg(long, default_value_t = 80)]
    pub slq_steps: usize,
    /// Also give λ_H^1 and Tr(H) of each parameter tensor's diagonal block (block-diagonal H).
    #[arg(long)]
    pub per_layer: bool,
    /// Seed of the estimators' random draws (default: the run's seed; the subset of examples
    /// always follows the run's seed).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Quantities to compute, comma-separated: loss, lambda_h, trace_h, trace_f, lambda_k,
    /// trace_k (default: all).
    #[arg(long, value_parser = parse_quantities)]
    pub quantities: Option<Quantities>,
    /// Output format.
    #[arg(long, default_value = "json", value_parser = ["json", "table"])]
    pub format: String,
    /// Where the density CSV/PNG go (default: the current directory).
    #[arg(long)]
    pub out_dir: Option<PathBuf>,
    /// Batch mode: measure every N-th checkpoint of the run (the last one always).
    #[arg(long, default_value_t = 1)]
    pub stride: usize,
    /// Batch mode: the JSON-lines file to append to (default: `<run>/curvature.jsonl`).
    #[arg(long)]
    pub output: Option<PathBuf>,
}

/// A command line of `measure` alone (for tests and tools that call it in-process).
#[derive(Debug, clap::Parser)]
#[command(name = "measure")]
struct MeasureCli {
    #[command(flatten)]
    args: MeasureArgs,
}

impl MeasureArgs {
    /// Parses `measure`'s flags, e.g. `["--checkpoint", "w.safetensors", "--dtype", "f64"]`.
    pub fn parse_flags<I, T>(flags: I) -> Result<Self, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        use clap::Parser;
        let argv = std::iter::once(std::ffi::OsString::from("measure"))
            .chain(flags.into_iter().map(Into::into));
        Ok(MeasureCli::try_parse_from(argv)?.args)
    }
}

/// Every setting a measurement used, resolved (recorded with its output; batch mode refuses to
/// append results of other settings to a file).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Settings {
    pub dtype: String,
    /// Examples of the loss, λ_H, Tr(H), the density and per-layer curvature.
    pub hessian_examples: usize,
    /// Examples of Tr(F), λ_K^1, Tr(K).
    pub gradient_examples: usize,
    pub top_k: usize,
    pub lanczos_steps: usize,
    pub tol: f64,
    /// λ_K^* = the k-th largest eigenvalue of the Gram matrix; absent: the smallest non-zero.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub k_star: Option<usize>,
    pub trace: TraceMethod,
    pub fisher: FisherSampling,
    pub bn: BnMode,
    pub slq: bool,
    pub slq_probes: usize,
    pub slq_steps: usize,
    pub per_layer: bool,
    /// Seed of the estimators' draws (streams keyed by (seed, step) as in training).
    pub seed: u64,
    pub quantities: Vec<Quantity>,
}

impl Settings {
    /// Resolves the flags against the run config's tracking values and dtype.
    pub fn resolve(
        args: &MeasureArgs,
        tracking: &TrackingConfig,
        run_dtype: &str,
        run_seed: u64,
    ) -> Result<Self, RunError> {
        let invalid = |key: &str, message: String| RunError::Invalid {
            key: key.into(),
            message,
        };
        let all = args.examples.or(args.subset);
        let dtype = args.dtype.clone().unwrap_or_else(|| run_dtype.to_string());
        if dtype != "f32" && dtype != "f64" {
            return Err(invalid(
                "--dtype",
                format!("`{dtype}`: expected f32 or f64"),
            ));
        }
        let trace = match (args.hutch_pp, args.hutchinson_probes) {
            (Some(m), _) => TraceMethod::HutchPlusPlus { matvecs: m },
            (None, Some(p)) => TraceMethod::Hutchinson { probes: p },
            (None, None) => TraceMethod::Hutchinson {
                probes: tracking.hutchinson_samples,
            },
        };
        let s = Self {
            dtype,
            hessian_examples: args
                .hessian_examples
                .or(all)
                .unwrap_or(tracking.measure_subset),
            gradient_examples: args
                .gradient_examples
                .or(all)
                .unwrap_or(tracking.k_examples),
            top_k: args.top_k.unwrap_or(tracking.top_k),
            lanczos_steps: args.lanczos_steps.unwrap_or(tracking.lanczos_iters),
            tol: args.tol.or(tracking.lanczos_tol).unwrap_or(1e-3),
            k_star: args.k_star.or(tracking.k_star),
            trace,
            fisher: args.fisher,
            bn: args.bn,
            slq: args.slq,
            slq_probes: args.slq_probes,
            slq_steps: args.slq_steps,
            per_layer: args.per_layer,
            seed: args.seed.unwrap_or(run_seed),
            quantities: args
                .quantities
                .clone()
                .map_or_else(|| Quantity::ALL.to_vec(), |q| q.0),
        };
        s.validate()?;
        Ok(s)
    }

    fn validate(&self) -> Result<(), RunError> {
        let invalid = |key: &str, message: String| {
            Err(RunError::Invalid {
                key: key.into(),
                message,
            })
        };
        if self.hessian_examples == 0 || self.gradient_examples == 0 {
            return invalid("--examples", "need at least one example".into());
        }
        if self.wants_lanczos() && (self.top_k == 0 || self.lanczos_steps < self.top_k) {
            return invalid(
                "--lanczos-steps/--top-k",
                format!(
                    "need 1 ≤ top-k ≤ lanczos-steps, got top-k {} and {} steps",
                    self.top_k, self.lanczos_steps
                ),
            );
        }
        if self.tol.is_nan() || self.tol <= 0.0 {
            return invalid("--tol", format!("must be positive, got {}", self.tol));
        }
        if let Some(k) = self
            .k_star
            .filter(|&k| k == 0 || k >= self.gradient_examples)
        {
            return invalid(
                "--k-star",
                format!(
                    "must be in 1..{} (the Gram matrix of {} gradients has rank at most {}), got {k}",
                    self.gradient_examples,
                    self.gradient_examples,
                    self.gradient_examples.saturating_sub(1)
                ),
            );
        }
        // Tr(H) (whole or per layer) is the only user of the trace method: a run that tracked no
        // Tr(H) (0 probes in its config) can still be measured for the rest.
        let wants_trace = self.wants(Quantity::TraceH) || self.per_layer;
        match self.trace {
            _ if !wants_trace => Ok(()),
            TraceMethod::Hutchinson { probes } if probes < 2 => invalid(
                "--hutchinson-probes",
                format!("need at least 2 probes for a standard error, got {probes}"),
            ),
            TraceMethod::HutchPlusPlus { matvecs } if matvecs < 6 => invalid(
                "--hutch++",
                format!("need a budget of at least 6 products (3 for the stochastic part to have an error), got {matvecs}"),
            ),
            _ => Ok(()),
        }?;
        if let FisherSampling::MonteCarlo(0) = self.fisher {
            return invalid("--fisher", "mc:K needs K ≥ 1".into());
        }
        if self.slq && (self.slq_probes == 0 || self.slq_steps == 0) {
            return invalid("--slq-probes/--slq-steps", "must be at least 1".into());
        }
        if self.quantities.is_empty() && !self.slq && !self.per_layer {
            return invalid("--quantities", "nothing to measure".into());
        }
        Ok(())
    }

    /// Whether `q` is measured.
    pub fn wants(&self, q: Quantity) -> bool {
        self.quantities.contains(&q)
    }

    fn wants_lanczos(&self) -> bool {
        self.wants(Quantity::LambdaH)
    }

    /// Examples the run's measurement subset must hold.
    pub fn examples_needed(&self) -> usize {
        self.hessian_examples.max(self.gradient_examples)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_parse_and_bad_values_say_what_is_expected() {
        let a = MeasureArgs::parse_flags([
            "--checkpoint",
            "w.safetensors",
            "--fisher",
            "exact",
            "--hutch++",
            "90",
            "--quantities",
            "trace_f,loss",
        ])
        .unwrap();
        assert_eq!(a.fisher, FisherSampling::Exact);
        assert_eq!(a.hutch_pp, Some(90));
        assert_eq!(
            a.quantities,
            Some(Quantities(vec![Quantity::Loss, Quantity::TraceF]))
        );
        assert!(MeasureArgs::parse_flags([
            "--checkpoint",
            "w",
            "--examples",
            "3",
            "--subset",
            "4"
        ])
        .is_err());
        assert!(MeasureArgs::parse_flags(["--checkpoint", "w", "--fisher", "mc:0"]).is_err());
        assert_eq!("exact".parse(), Ok(FisherSampling::Exact));
        assert_eq!("mc:8".parse(), Ok(FisherSampling::MonteCarlo(8)));
        assert!("mc:0".parse::<FisherSampling>().is_err());
        assert!("sampled".parse::<FisherSampling>().is_err());
        assert_eq!(
            parse_quantities("trace_k,loss,loss").unwrap().0,
            vec![Quantity::Loss, Quantity::TraceK]
        );
        assert_eq!(parse_quantities("all").unwrap().0, Quantity::ALL.to_vec());
        let err = parse_quantities("lambda_h,tr_h").unwrap_err();
        assert!(err.contains("`tr_h`") && err.contains("trace_h"), "{err}");
    }

    #[test]
    fn one_examples_flag_sets_every_quantity_and_per_quantity_flags_override_it() {
        let tracking = TrackingConfig::default();
        let mut args =
            MeasureArgs::parse_flags(["--checkpoint", "w.safetensors", "--examples", "100"])
                .unwrap();
        let s = Settings::resolve(&args, &tracking, "f32", 0).unwrap();
        assert_eq!((s.hessian_examples, s.gradient_examples), (100, 100));
        args.gradient_examples = Some(10);
        let s = Settings::resolve(&args, &tracking, "f32", 0).unwrap();
        assert_eq!((s.hessian_examples, s.gradient_examples), (100, 10));
        args.examples = None;
        let s = Settings::resolve(&args, &tracking, "f32", 0).unwrap();
        assert_eq!(
            (s.hessian_examples, s.gradient_examples),
            (tracking.measure_subset, 10)
        );
        args.hutchinson_probes = Some(1);
        let err = Settings::resolve(&args, &tracking, "f32", 0).unwrap_err();
        assert!(err.to_string().contains("--hutchinson-probes"), "{err}");
        args.hutchinson_probes = None;
        args.dtype = Some("bf16".into());
        assert!(Settings::resolve(&args, &tracking, "f32", 0).is_err());
    }
}
