//! Weights of any checkpoint into a model for `breakeven measure`: a run checkpoint (optimizer
//! tensors ignored), our bare weights file, or a PyTorch `state_dict` saved with
//! `safetensors.torch.save_file`, with names renamed (`--rename c1=conv1`) or paired by shape
//! (`--map-by-shape`). A mismatch lists the file's keys and shapes beside the model's.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use breakeven_models::Model;
use candle_core::{Device, Tensor};
use safetensors::SafeTensors;
use serde::Serialize;

use crate::error::RunError;
use crate::state::OPTIMIZER_PREFIX;

/// Metadata key of a run checkpoint's state JSON (see `checkpoint.rs`).
const STATE_KEY: &str = "breakeven.state";

/// What a weights file is, read from its header alone.
#[derive(Debug, Clone, PartialEq)]
pub struct FileKind {
    /// The step of a run checkpoint (`None`: a bare weights file).
    pub step: Option<u64>,
    /// Keys and shapes of every tensor, sorted by key.
    pub keys: Vec<(String, Vec<usize>)>,
}

impl FileKind {
    /// Whether the file is a run checkpoint (it carries the runner's state metadata).
    pub fn is_run_checkpoint(&self) -> bool {
        self.step.is_some()
    }
}

/// How file keys are turned into the model's keys.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct KeyMap {
    /// `(from, to)` prefixes: a key equal to `from` or starting with `from.` gets `to` instead.
    pub rename: Vec<(String, String)>,
    /// Pair the keys still unmatched after renaming by shape (see [`pair_by_shape`]).
    pub by_shape: bool,
}

impl KeyMap {
    /// Parses `c1=conv1,fc=linear` (the `--rename` flag).
    pub fn parse_rename(text: &str) -> Result<Vec<(String, String)>, RunError> {
        text.split(',')
            .filter(|s| !s.trim().is_empty())
            .map(|pair| match pair.split_once('=') {
                Some((a, b)) if !a.trim().is_empty() && !b.trim().is_empty() => {
                    Ok((a.trim().to_string(), b.trim().to_string()))
                }
                _ => Err(RunError::Invalid {
                    key: "--rename".into(),
                    message: format!("`{pair}` is not FROM=TO (e.g. `c1=conv1,fc=linear`)"),
                }),
            })
            .collect()
    }

    fn renamed(&self, key: &str) -> String {
        for (from, to) in &self.rename {
            if key == from {
                return to.clone();
            }
            if let Some(rest) = key.strip_prefix(from.as_str()) {
                if rest.starts_with('.') {
                    return format!("{to}{rest}");
                }
            }
        }
        key.to_string()
    }
}

/// What loading did: the notes a user should read, and the key pairs that were not the
/// identity (to confirm a rename or a by-shape pairing).
#[derive(Debug, Clone, Default, Serialize)]
pub struct LoadReport {
    /// `file key → model key` for every key whose name changed.
    pub key_map: BTreeMap<String, String>,
    /// Human-readable notes (ignored optimizer tensors, widened dtypes, pairings by shape).
    pub notes: Vec<String>,
}

/// Reads the header of `path`: its keys, shapes and, for a run checkpoint, the step.
pub fn inspect(path: &Path) -> Result<FileKind, RunError> {
    let bytes = std::fs::read(path).map_err(|e| RunError::io(path, e))?;
    let err = |message: String| RunError::Checkpoint {
        path: path.into(),
        message,
    };
    let (_, meta) = SafeTensors::read_metadata(&bytes).map_err(|e| {
        // torch.save writes a zip archive (or, before PyTorch 1.6, a bare pickle).
        if bytes.starts_with(b"PK\x03\x04") || bytes.starts_with(b"\x80\x02") {
            err(
                "this is a PyTorch file (torch.save), not safetensors: export it with \
                 `safetensors.torch.save_file(model.state_dict(), \"weights.safetensors\")` \
                 (see the README, \"Measuring a PyTorch model\")"
                    .into(),
            )
        } else {
            err(format!("not a safetensors file: {e}"))
        }
    })?;
    let step = match meta.metadata().as_ref().and_then(|m| m.get(STATE_KEY)) {
        Some(state) => {
            let v: serde_json::Value = serde_json::from_str(state)
                .map_err(|e| err(format!("`{STATE_KEY}` metadata: {e}")))?;
            Some(
                v["step"]
                    .as_u64()
                    .ok_or_else(|| err(format!("`{STATE_KEY}` metadata has no integer `step`")))?,
            )
        }
        None => None,
    };
    let mut keys: Vec<(String, Vec<usize>)> = meta
        .tensors()
        .into_iter()
        .map(|(k, info)| (k, info.shape.clone()))
        .collect();
    keys.sort();
    Ok(FileKind { step, keys })
}

/// Loads the weights of `path` into `model` (values converted to the model's dtype: an f32
/// file measured in f64 is widened exactly). Run-checkpoint optimizer tensors are skipped with
/// a note; every model key must be found (after `map`) with the model's shape.
pub fn load_weights(model: &dyn Model, path: &Path, map: &KeyMap) -> Result<LoadReport, RunError> {
    let mut tensors: HashMap<String, Tensor> = candle_core::safetensors::load(path, &Device::Cpu)
        .map_err(|e| RunError::Checkpoint {
        path: path.into(),
        message: e.to_string(),
    })?;
    let mut report = LoadReport::default();
    let optimizer: Vec<String> = tensors
        .keys()
        .filter(|k| k.starts_with(OPTIMIZER_PREFIX))
        .cloned()
        .collect();
    if !optimizer.is_empty() {
        for k in &optimizer {
            tensors.remove(k);
        }
        report.notes.push(format!(
            "{} optimizer tensors (`{OPTIMIZER_PREFIX}*`) ignored: curvature needs the weights only",
            optimizer.len()
        ));
    }
    let expected: Vec<(String, Vec<usize>)> = breakeven_models::io::state_dict(model)
        .into_iter()
        .map(|(k, v)| (k, v.dims().to_vec()))
        .collect();
    let file: Vec<(String, Vec<usize>)> = {
        let mut f: Vec<_> = tensors
            .iter()
            .map(|(k, t)| (k.clone(), t.dims().to_vec()))
            .collect();
        f.sort();
        f
    };
    let pairs = match_keys(&file, &expected, map)
        .map_err(|message| mismatch(path, &message, &file, &expected))?;
    let mut renamed = HashMap::with_capacity(pairs.len());
    for (from, to) in pairs {
        if from != to {
            report.key_map.insert(from.clone(), to.clone());
        }
        let t = tensors.remove(&from).expect("matched keys are in the file");
        renamed.insert(to, t);
    }
    if map.by_shape && !report.key_map.is_empty() {
        report.notes.push(format!(
            "{} keys paired by shape (see key_map): check the pairing before citing the numbers",
            report.key_map.len()
        ));
    }
    let model_dtype = model.params().first().map(|p| p.var.dtype());
    if let (Some(dt), Some(t)) = (model_dtype, renamed.values().find(|t| t.dtype().is_float())) {
        if t.dtype() != dt {
            let how = if dt.size_in_bytes() > t.dtype().size_in_bytes() {
                "widened: exact"
            } else {
                "rounded: pass --dtype f64 to measure them as stored"
            };
            report.notes.push(format!(
                "weights stored as {:?}, measured as {:?} ({how})",
                t.dtype(),
                dt
            ));
        }
    }
    breakeven_models::io::load_tensors(model, renamed, path)?;
    Ok(report)
}

/// Pairs every expected key with one file key: by name after renaming, then (with
/// `map.by_shape`) by shape. Returns `(file key, model key)` pairs or what went wrong.
pub fn match_keys(
    file: &[(String, Vec<usize>)],
    expected: &[(String, Vec<usize>)],
    map: &KeyMap,
) -> Result<Vec<(String, String)>, String> {
    let mut by_new_name: BTreeMap<String, &(String, Vec<usize>)> = BTreeMap::new();
    for entry in file {
        let new = map.renamed(&entry.0);
        if let Some(prev) = by_new_name.insert(new.clone(), entry) {
            return Err(format!(
                "`{}` and `{}` both become `{new}` after --rename",
                prev.0, entry.0
            ));
        }
    }
    let mut pairs = Vec::new();
    let mut unmatched_expected = Vec::new();
    for (key, shape) in expected {
        match by_new_name.remove(key) {
            Some((from, fshape)) if fshape == shape => pairs.push((from.clone(), key.clone())),
            Some((from, fshape)) => {
                return Err(format!(
                    "`{from}` (for `{key}`) has shape {fshape:?}, the model expects {shape:?}"
                ))
            }
            None => unmatched_expected.push((key.clone(), shape.clone())),
        }
    }
    let left: Vec<(String, Vec<usize>)> = by_new_name.into_values().cloned().collect();
    if map.by_shape {
        pairs.extend(pair_by_shape(&left, &unmatched_expected)?);
        return Ok(pairs);
    }
    if let Some((key, shape)) = unmatched_expected.first() {
        return Err(format!(
            "missing key `{key}` {shape:?} ({} model keys unmatched; pass --rename FROM=TO,… or \
             --map-by-shape)",
            unmatched_expected.len()
        ));
    }
    if let Some((key, _)) = left.first() {
        return Err(format!(
            "unexpected key `{key}` ({} file keys unmatched)",
            left.len()
        ));
    }
    Ok(pairs)
}

/// Pairs file keys with model keys of the same shape and the same last name component
/// (`weight`, `bias`, `running_mean`, …); within a group of equal shapes, in natural name order
/// (`layer2` before `layer10`), which is the module order of both PyTorch and our models.
pub fn pair_by_shape(
    file: &[(String, Vec<usize>)],
    expected: &[(String, Vec<usize>)],
) -> Result<Vec<(String, String)>, String> {
    let group = |(k, s): &(String, Vec<usize>)| {
        let leaf = k.rsplit('.').next().unwrap_or(k).to_string();
        (s.clone(), leaf)
    };
    let mut file_groups: BTreeMap<(Vec<usize>, String), Vec<String>> = BTreeMap::new();
    for e in file {
        file_groups.entry(group(e)).or_default().push(e.0.clone());
    }
    let mut model_groups: BTreeMap<(Vec<usize>, String), Vec<String>> = BTreeMap::new();
    for e in expected {
        model_groups.entry(group(e)).or_default().push(e.0.clone());
    }
    let mut pairs = Vec::new();
    for (g, mut want) in model_groups {
        let mut have = file_groups.remove(&g).unwrap_or_default();
        if have.len() != want.len() {
            return Err(format!(
                "by shape: the model has {} `{}` tensors of shape {:?} left to match ({}), the \
                 file {} ({})",
                want.len(),
                g.1,
                g.0,
                want.join(", "),
                have.len(),
                if have.is_empty() {
                    "none".to_string()
                } else {
                    have.join(", ")
                }
            ));
        }
        want.sort_by(|a, b| natural_cmp(a, b));
        have.sort_by(|a, b| natural_cmp(a, b));
        pairs.extend(have.into_iter().zip(want));
    }
    if let Some(((shape, leaf), keys)) = file_groups.into_iter().next() {
        return Err(format!(
            "by shape: the file's `{}` ({leaf} {shape:?}) matches no model tensor",
            keys.join(", ")
        ));
    }
    Ok(pairs)
}

/// Compares names with runs of digits as numbers (`layer2.1` < `layer10.0`).
fn natural_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    fn chunks(s: &str) -> Vec<(bool, &str)> {
        let mut out = Vec::new();
        let mut start = 0;
        let bytes = s.as_bytes();
        for i in 1..=bytes.len() {
            if i == bytes.len() || bytes[i].is_ascii_digit() != bytes[start].is_ascii_digit() {
                out.push((bytes[start].is_ascii_digit(), &s[start..i]));
                start = i;
            }
        }
        out
    }
    let (ca, cb) = (chunks(a), chunks(b));
    for (x, y) in ca.iter().zip(&cb) {
        let ord = match (x, y) {
            ((true, p), (true, q)) => p
                .parse::<u64>()
                .unwrap_or(u64::MAX)
                .cmp(&q.parse::<u64>().unwrap_or(u64::MAX))
                .then(p.cmp(q)),
            ((_, p), (_, q)) => p.cmp(q),
        };
        if ord != std::cmp::Ordering::Equal {
            return ord;
        }
    }
    ca.len().cmp(&cb.len())
}

/// The error of a mismatch: the reason, then the model's keys and shapes beside the file's.
fn mismatch(
    path: &Path,
    reason: &str,
    file: &[(String, Vec<usize>)],
    expected: &[(String, Vec<usize>)],
) -> RunError {
    let width = expected
        .iter()
        .map(|(k, s)| k.len() + format!("{s:?}").len() + 1)
        .max()
        .unwrap_or(0)
        .max(20);
    let mut table = format!("{:<width$} | in the file\n", "the model expects");
    for i in 0..expected.len().max(file.len()) {
        let cell = |e: Option<&(String, Vec<usize>)>| {
            e.map(|(k, s)| format!("{k} {s:?}")).unwrap_or_default()
        };
        table.push_str(&format!(
            "{:<width$} | {}\n",
            cell(expected.get(i)),
            cell(file.get(i))
        ));
    }
    RunError::Checkpoint {
        path: path.into(),
        message: format!("{reason}\n{table}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(list: &[(&str, &[usize])]) -> Vec<(String, Vec<usize>)> {
        list.iter()
            .map(|(k, s)| (k.to_string(), s.to_vec()))
            .collect()
    }

    #[test]
    fn rename_replaces_whole_name_components_only() {
        let map = KeyMap {
            rename: KeyMap::parse_rename("c1=conv1, fc=linear").unwrap(),
            by_shape: false,
        };
        assert_eq!(map.renamed("c1.weight"), "conv1.weight");
        assert_eq!(map.renamed("c10.weight"), "c10.weight");
        assert_eq!(map.renamed("fc"), "linear");
        assert!(KeyMap::parse_rename("c1").is_err());
        assert!(KeyMap::parse_rename("=conv1").is_err());
    }

    #[test]
    fn renamed_keys_match_and_mismatches_say_what_to_pass() {
        let model = keys(&[("conv1.weight", &[4, 3]), ("conv1.bias", &[4])]);
        let file = keys(&[("c1.bias", &[4]), ("c1.weight", &[4, 3])]);
        let err = match_keys(&file, &model, &KeyMap::default()).unwrap_err();
        assert!(
            err.contains("missing key `conv1.weight`") && err.contains("--rename"),
            "{err}"
        );
        let map = KeyMap {
            rename: vec![("c1".into(), "conv1".into())],
            by_shape: false,
        };
        let mut pairs = match_keys(&file, &model, &map).unwrap();
        pairs.sort();
        assert_eq!(
            pairs,
            vec![
                ("c1.bias".to_string(), "conv1.bias".to_string()),
                ("c1.weight".to_string(), "conv1.weight".to_string())
            ]
        );
        let bad = keys(&[("c1.bias", &[5]), ("c1.weight", &[4, 3])]);
        let err = match_keys(&bad, &model, &map).unwrap_err();
        assert!(
            err.contains("`c1.bias` (for `conv1.bias`) has shape [5]"),
            "{err}"
        );
    }

    #[test]
    fn pairing_by_shape_follows_module_order_and_refuses_leftovers() {
        let model = keys(&[
            ("layer2.weight", &[8, 8]),
            ("layer10.weight", &[8, 8]),
            ("head.weight", &[2, 8]),
            ("head.bias", &[2]),
        ]);
        let file = keys(&[
            ("module.b10.weight", &[8, 8]),
            ("module.b2.weight", &[8, 8]),
            ("module.out.weight", &[2, 8]),
            ("module.out.bias", &[2]),
        ]);
        let map = KeyMap {
            rename: vec![],
            by_shape: true,
        };
        let mut pairs = match_keys(&file, &model, &map).unwrap();
        pairs.sort();
        assert_eq!(
            pairs,
            vec![
                ("module.b10.weight".into(), "layer10.weight".into()),
                ("module.b2.weight".into(), "layer2.weight".into()),
                ("module.out.bias".into(), "head.bias".into()),
                ("module.out.weight".into(), "head.weight".into()),
            ]
        );
        let mut extra = file.clone();
        extra.push(("module.extra.bias".into(), vec![3]));
        let err = match_keys(&extra, &model, &map).unwrap_err();
        assert!(err.contains("module.extra.bias"), "{err}");
    }

    #[test]
    fn natural_order_compares_numbers_as_numbers() {
        let mut v = vec!["layer10.0", "layer2.1", "layer2.0", "conv1"];
        v.sort_by(|a, b| natural_cmp(a, b));
        assert_eq!(v, vec!["conv1", "layer2.0", "layer2.1", "layer10.0"]);
    }
}
