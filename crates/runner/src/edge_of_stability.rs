//! The edge-of-stability experiment as data (`experiments/edge-of-stability.toml`, Cohen et
//! al. 2021, SCIENCE.md §5.5): per profile, one full-batch GD run (`full_batch`) for each loss
//! × η, each stored as `<runs>/<loss>-lr<η>/run.json` and reused while its spec is unchanged.
//! Its page is `breakeven_report::pages::edge_of_stability`.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::atomic::write_atomic;
use crate::error::RunError;
use crate::full_batch::{run_full_batch_from_disk, FullBatchPoint, FullBatchSpec};
use crate::sweep::merge;

/// `experiments/edge-of-stability.toml`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Definition {
    pub title: String,
    pub source: String,
    pub profiles: BTreeMap<String, Profile>,
}

/// One scale: the losses and learning rates, and the base spec of every run.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    pub description: String,
    pub losses: Vec<String>,
    pub lrs: Vec<f64>,
    /// A `FullBatchSpec` without `loss` and `lr`.
    pub base: toml::Table,
    /// Overrides of `base` per loss (e.g. a stopping rule only for cross-entropy).
    #[serde(default)]
    pub per_loss: BTreeMap<String, toml::Table>,
}

/// A run's spec and points, stored as `<runs>/<loss>-lr<η>/run.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredRun {
    pub spec: FullBatchSpec,
    pub points: Vec<FullBatchPoint>,
    pub wall_s: f64,
}

impl Definition {
    /// Reads and parses the definition; `path` names the file in errors.
    pub fn load(path: &Path) -> Result<Self, RunError> {
        crate::config::load_toml(path)
    }

    /// The named profile, or an error listing the defined ones.
    pub fn profile(&self, name: &str) -> Result<&Profile, RunError> {
        crate::config::named_profile(&self.profiles, name)
    }
}

impl Profile {
    /// The data set every run reads (`base.data`, CIFAR-10 by default).
    pub fn data_name(&self) -> String {
        self.base
            .get("data")
            .and_then(|d| d.as_str())
            .unwrap_or("cifar10")
            .to_string()
    }

    /// The spec of the run with `loss` and `lr` (`device` in place of the profile's).
    pub fn spec(
        &self,
        loss: &str,
        lr: f64,
        device: Option<&str>,
    ) -> Result<FullBatchSpec, RunError> {
        let mut t = self.base.clone();
        if let Some(o) = self.per_loss.get(loss) {
            merge(&mut t, o);
        }
        let mut over = toml::Table::new();
        over.insert("loss".into(), loss.into());
        over.insert("lr".into(), lr.into());
        if let Some(d) = device {
            over.insert("device".into(), d.into());
        }
        merge(&mut t, &over);
        toml::Value::Table(t)
            .try_into()
            .map_err(|e: toml::de::Error| RunError::Config {
                origin: format!("edge-of-stability run {loss} η={lr}: profile base"),
                message: e.to_string(),
            })
    }
}

/// The run of `spec` in `dir`: the stored one when its spec is identical, else (when
/// `execute`) run now and stored, else `None`.
pub fn run_or_reuse(
    spec: &FullBatchSpec,
    dir: &Path,
    data_dir: Option<&Path>,
    execute: bool,
) -> Result<Option<StoredRun>, RunError> {
    let file = dir.join("run.json");
    let json = |e: serde_json::Error| RunError::Other(format!("{}: {e}", file.display()));
    if let Ok(text) = std::fs::read_to_string(&file) {
        let stored: StoredRun = serde_json::from_str(&text).map_err(json)?;
        if serde_json::to_value(&stored.spec).map_err(json)?
            == serde_json::to_value(spec).map_err(json)?
        {
            return Ok(Some(stored));
        }
    }
    if !execute {
        return Ok(None);
    }
    tracing::info!(
        "full-batch GD: {} loss, η = {}, n = {}",
        serde_json::to_string(&spec.loss).map_err(json)?,
        spec.lr,
        spec.n
    );
    let t0 = std::time::Instant::now();
    let points = run_full_batch_from_disk(spec, data_dir, &mut |p| {
        tracing::debug!(step = p.step, loss = p.loss, lambda = ?p.lambda_h1, "point");
    })?;
    let stored = StoredRun {
        spec: spec.clone(),
        points,
        wall_s: t0.elapsed().as_secs_f64(),
    };
    std::fs::create_dir_all(dir).map_err(|e| RunError::io(dir, e))?;
    write_atomic(
        &file,
        serde_json::to_string_pretty(&stored)
            .map_err(json)?
            .as_bytes(),
    )?;
    Ok(Some(stored))
}
