//! The edge-of-stability experiment as data (`experiments/edge-of-stability.toml`, Cohen et
//! al. 2021, SCIENCE.md §5.5): per profile, one full-batch GD run (`full_batch`) for each loss
//! × η (× network, where the profile lists several), each stored as
//! `<runs>/[<network>-]<loss>-lr<η>/run.json` and reused while its spec is unchanged; a run
//! stopped part-way resumes from `partial.safetensors` in the same folder.
//! Its page is `breakeven_report::pages::edge_of_stability`.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::atomic::write_atomic;
use crate::error::RunError;
use crate::full_batch::{run_full_batch_from_disk, FullBatchPoint, FullBatchResume, FullBatchSpec};
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
    /// The networks, in page order: each a `name` and overrides of `base` (its `model`, and e.g.
    /// `steps`), and optionally its own `lrs`. Absent: the one network of `base`, whose runs are
    /// named `<loss>-lr<η>` (the layout of runs made before networks existed).
    #[serde(default)]
    pub networks: Vec<toml::Table>,
}

/// One network of a profile: its name ("" for a profile without `networks`), its overrides of
/// the base spec and its learning rates.
#[derive(Debug, Clone, PartialEq)]
pub struct Network {
    pub name: String,
    pub overrides: toml::Table,
    pub lrs: Vec<f64>,
}

impl Network {
    /// The run directory name of `loss` at `lr`.
    pub fn run_name(&self, loss: &str, lr: f64) -> String {
        if self.name.is_empty() {
            format!("{loss}-lr{lr}")
        } else {
            format!("{}-{loss}-lr{lr}", self.name)
        }
    }
}

/// The checkpoint of an unfinished run, in its folder beside where run.json will be.
pub const PARTIAL: &str = "partial.safetensors";

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

    /// The profile's networks with their learning rates (one unnamed network without
    /// `networks`); an entry without a `name`, or with `lrs` that are not numbers, is an error.
    pub fn networks(&self) -> Result<Vec<Network>, RunError> {
        if self.networks.is_empty() {
            return Ok(vec![Network {
                name: String::new(),
                overrides: toml::Table::new(),
                lrs: self.lrs.clone(),
            }]);
        }
        self.networks
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let bad = |message: String| RunError::Config {
                    origin: format!("edge-of-stability networks[{i}]"),
                    message,
                };
                let mut overrides = t.clone();
                let name = match overrides.remove("name") {
                    Some(toml::Value::String(n)) if !n.is_empty() => n,
                    _ => return Err(bad("needs a `name` (a non-empty string)".into())),
                };
                let lrs = match overrides.remove("lrs") {
                    None => self.lrs.clone(),
                    Some(v) => v
                        .try_into::<Vec<f64>>()
                        .map_err(|e| bad(format!("`lrs` of {name}: {e}")))?,
                };
                Ok(Network {
                    name,
                    overrides,
                    lrs,
                })
            })
            .collect()
    }

    /// The spec of the run of `network` with `loss` and `lr` (`device` in place of the
    /// profile's).
    pub fn spec(
        &self,
        network: &Network,
        loss: &str,
        lr: f64,
        device: Option<&str>,
    ) -> Result<FullBatchSpec, RunError> {
        let mut t = self.base.clone();
        // A network's `model` replaces the base's whole (another architecture has other keys).
        if network.overrides.contains_key("model") {
            t.remove("model");
        }
        merge(&mut t, &network.overrides);
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
                origin: format!(
                    "edge-of-stability run {}: profile base",
                    network.run_name(loss, lr)
                ),
                message: e.to_string(),
            })
    }
}

/// The run of `spec` in `dir`: the stored one when its spec is identical, else (when
/// `execute`) run now and stored, else `None`. A run killed part-way resumes from its
/// checkpoint (`partial.safetensors`, written after every measurement) with the same points, bit
/// for bit, as an uninterrupted run; its wall time adds up the sessions.
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
    // Resumable: a checkpoint after every measurement, resumed from by a later call with the
    // same spec, removed once run.json is written.
    std::fs::create_dir_all(dir).map_err(|e| RunError::io(dir, e))?;
    let partial = dir.join(PARTIAL);
    let t0 = std::time::Instant::now();
    let resume = FullBatchResume {
        checkpoint: Some(&partial),
        stop_after_step: None,
    };
    let out = run_full_batch_from_disk(spec, data_dir, resume, &mut |p| {
        tracing::debug!(step = p.step, loss = p.loss, lambda = ?p.lambda_h1, "point");
    })?;
    let stored = StoredRun {
        spec: spec.clone(),
        points: out.points,
        wall_s: out.earlier_wall_s + t0.elapsed().as_secs_f64(),
    };
    write_atomic(
        &file,
        serde_json::to_string_pretty(&stored)
            .map_err(json)?
            .as_bytes(),
    )?;
    if partial.exists() {
        std::fs::remove_file(&partial).map_err(|e| RunError::io(&partial, e))?;
    }
    Ok(Some(stored))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn definition() -> Definition {
        let path =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../experiments/edge-of-stability.toml");
        Definition::load(&path).unwrap()
    }

    #[test]
    fn a_run_killed_part_way_resumes_from_its_checkpoint_to_the_same_points() {
        crate::train::enable_second_order().unwrap();
        let spec = FullBatchSpec {
            data: "synthetic".into(),
            n: 48,
            batch: 16,
            model: breakeven_models::ModelSpec::FcTanh { widths: vec![6] },
            loss: crate::full_batch::FullBatchLoss::Ce,
            lr: 0.2,
            steps: 9,
            measure_every: 3,
            lanczos_iters: 6,
            stop_acc: None,
            seed: 3,
            dtype: "f64".into(),
            device: "cpu".into(),
        };
        let tmp = crate::tests::temp_dir("eos-resume");
        let whole = run_or_reuse(&spec, &tmp.join("whole"), None, true)
            .unwrap()
            .unwrap();
        assert_eq!(
            whole.points.iter().map(|p| p.step).collect::<Vec<_>>(),
            [0, 3, 6, 9]
        );
        // Killed after the checkpoint of step 3: the folder holds the checkpoint, no run.json.
        let dir = tmp.join("killed");
        std::fs::create_dir_all(&dir).unwrap();
        let resume = FullBatchResume {
            checkpoint: Some(&dir.join(PARTIAL)),
            stop_after_step: Some(3),
        };
        let out = run_full_batch_from_disk(&spec, None, resume, &mut |_| {}).unwrap();
        assert!(!out.finished);
        assert_eq!(out.points, whole.points[..2]);
        assert!(dir.join(PARTIAL).exists() && !dir.join("run.json").exists());
        // Not executing reads nothing from a checkpoint: the run is not there yet.
        assert!(run_or_reuse(&spec, &dir, None, false).unwrap().is_none());
        // Resumed at step 4, it ends with the uninterrupted run's points, bit for bit.
        let resume = FullBatchResume {
            checkpoint: Some(&dir.join(PARTIAL)),
            stop_after_step: None,
        };
        let out = run_full_batch_from_disk(&spec, None, resume, &mut |_| {}).unwrap();
        assert_eq!((out.resumed_at, out.finished), (Some(4), true));
        assert!(out.earlier_wall_s > 0.0);
        assert_eq!(out.points, whole.points);
        // The sweep's call does the same and removes the checkpoint once run.json is written.
        let resume = FullBatchResume {
            checkpoint: Some(&dir.join(PARTIAL)),
            stop_after_step: Some(6),
        };
        std::fs::remove_file(dir.join(PARTIAL)).unwrap();
        run_full_batch_from_disk(&spec, None, resume, &mut |_| {}).unwrap();
        let resumed = run_or_reuse(&spec, &dir, None, true).unwrap().unwrap();
        assert_eq!(resumed.points, whole.points);
        assert!(!dir.join(PARTIAL).exists() && dir.join("run.json").exists());
        // A checkpoint of another spec is ignored: the run starts over and still agrees.
        let other = FullBatchSpec {
            lr: 0.1,
            ..spec.clone()
        };
        let dir2 = tmp.join("other");
        std::fs::create_dir_all(&dir2).unwrap();
        let resume = FullBatchResume {
            checkpoint: Some(&dir2.join(PARTIAL)),
            stop_after_step: Some(6),
        };
        run_full_batch_from_disk(&other, None, resume, &mut |_| {}).unwrap();
        let resume = FullBatchResume {
            checkpoint: Some(&dir2.join(PARTIAL)),
            stop_after_step: None,
        };
        let fresh = run_full_batch_from_disk(&spec, None, resume, &mut |_| {}).unwrap();
        assert_eq!(fresh.resumed_at, None);
        assert_eq!(fresh.points, whole.points);
        // A damaged checkpoint is an error that names the file.
        let dir3 = tmp.join("damaged");
        std::fs::create_dir_all(&dir3).unwrap();
        std::fs::write(dir3.join(PARTIAL), b"not a safetensors file").unwrap();
        let err = run_or_reuse(&spec, &dir3, None, true)
            .unwrap_err()
            .to_string();
        assert!(err.contains(PARTIAL), "{err}");
        std::fs::remove_dir_all(&tmp).unwrap();
    }

    #[test]
    fn networks_override_the_base_and_keep_the_old_layout_without_them() {
        let def = definition();
        // The smoke profile has one unnamed network: runs keep their `<loss>-lr<η>` names.
        let smoke = def.profile("smoke").unwrap();
        let nets = smoke.networks().unwrap();
        assert_eq!(nets.len(), 1);
        assert_eq!(nets[0].run_name("mse", 0.1), "mse-lr0.1");
        assert_eq!(nets[0].lrs, smoke.lrs);
        // The cpu profile: fc-tanh on every η, the CNN with its own η and step count, both on
        // Cohen et al.'s 5,000 images with λ_H^1 every 50 steps.
        let cpu = def.profile("cpu").unwrap();
        let nets = cpu.networks().unwrap();
        let names: Vec<&str> = nets.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(names, ["fc-tanh", "cnn"]);
        assert_eq!(nets[1].lrs, vec![0.05]);
        assert_eq!(nets[1].run_name("ce", 0.05), "cnn-ce-lr0.05");
        let fc = cpu.spec(&nets[0], "ce", 0.02, None).unwrap();
        let cnn = cpu.spec(&nets[1], "mse", 0.05, None).unwrap();
        assert_eq!((fc.n, fc.steps, fc.measure_every), (5000, 2000, 50));
        assert_eq!(fc.stop_acc, Some(0.99));
        assert_eq!((cnn.n, cnn.steps, cnn.stop_acc), (5000, 800, None));
        assert_eq!(cnn.model.arch(), "simple_cnn");
        // A network without a name is refused, naming its index.
        let mut bad = Profile {
            description: String::new(),
            losses: vec!["mse".into()],
            lrs: vec![0.1],
            base: toml::Table::new(),
            per_loss: BTreeMap::new(),
            networks: vec![toml::Table::new()],
        };
        let err = bad.networks().unwrap_err().to_string();
        assert!(err.contains("networks[0]") && err.contains("name"), "{err}");
        bad.networks = vec![toml::toml! { name = "x" lrs = "fast" }];
        let err = bad.networks().unwrap_err().to_string();
        assert!(err.contains("`lrs` of x"), "{err}");
    }
}
