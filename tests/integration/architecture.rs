//! The invariants of docs/ARCHITECTURE.md, checked on the manifests.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// The `[dependencies]` names of a workspace crate's manifest (normal dependencies only).
fn normal_dependencies(crate_dir: &str) -> Vec<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(crate_dir)
        .join("Cargo.toml");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut names = Vec::new();
    let mut in_deps = false;
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            in_deps = line == "[dependencies]";
            continue;
        }
        if in_deps && !line.is_empty() && !line.starts_with('#') {
            let name = line.split(['=', '.', ' ']).next().unwrap_or_default();
            names.push(name.trim().to_string());
        }
    }
    names
}

fn ours(deps: &[String]) -> Vec<&String> {
    deps.iter()
        .filter(|d| d.starts_with("breakeven-"))
        .collect()
}

#[test]
fn curvature_depends_on_nothing_of_ours() {
    let deps = normal_dependencies("crates/curvature");
    assert!(
        deps.iter().any(|d| d == "candle-core"),
        "curvature must use candle-core: {deps:?}"
    );
    assert!(
        ours(&deps).is_empty(),
        "curvature must not depend on our crates: {deps:?}"
    );
}

#[test]
fn science_crates_point_one_way() {
    for (dir, allowed) in [
        ("crates/data", &[][..]),
        // Candle's second-order switch has one home, in curvature (issue 14).
        ("crates/models", &["breakeven-curvature"][..]),
        ("crates/optim", &[][..]),
        ("crates/curvature", &[][..]),
        (
            "crates/penalties",
            &["breakeven-models", "breakeven-curvature"][..],
        ),
    ] {
        let deps = normal_dependencies(dir);
        for dep in ours(&deps) {
            assert!(
                allowed.contains(&dep.as_str()),
                "{dir} may not depend on {dep}"
            );
        }
    }
}

#[test]
fn the_slurm_executor_sits_between_runner_and_xtask() {
    let deps = normal_dependencies("crates/slurm");
    assert_eq!(
        ours(&deps),
        [&"breakeven-runner".to_string()],
        "breakeven-slurm drives runs through the runner alone"
    );
    assert!(
        !deps.iter().any(|d| d.starts_with("candle")),
        "breakeven-slurm holds no tensor code: {deps:?}"
    );
    for dir in [
        "crates/data",
        "crates/models",
        "crates/optim",
        "crates/curvature",
        "crates/penalties",
        "crates/runner",
    ] {
        assert!(
            !normal_dependencies(dir)
                .iter()
                .any(|d| d == "breakeven-slurm"),
            "{dir} may not depend on breakeven-slurm"
        );
    }
}

/// One documented table of `docs/ARCHITECTURE.md` (`<!-- dependency-graph: KIND -->`): crate →
/// the crates of ours it depends on.
fn documented_graph(kind: &str) -> BTreeMap<String, BTreeSet<String>> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/ARCHITECTURE.md");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let start = format!("<!-- dependency-graph: {kind} -->");
    let body = text
        .split_once(&start)
        .and_then(|(_, rest)| rest.split_once("<!-- /dependency-graph -->"))
        .unwrap_or_else(|| panic!("{}: no table marked {start}", path.display()))
        .0;
    body.lines()
        .filter(|l| l.starts_with("| ") && !l.starts_with("| crate"))
        .map(|l| {
            let cells: Vec<&str> = l.trim_matches('|').split('|').map(str::trim).collect();
            let deps = cells[1]
                .split(',')
                .map(str::trim)
                .filter(|d| !d.is_empty())
                .map(String::from)
                .collect();
            (cells[0].to_string(), deps)
        })
        .collect()
}

/// The workspace members and their edges to other members, by kind (`normal`, `dev`, `build`),
/// as `cargo metadata` reports them.
fn actual_graph() -> BTreeMap<String, BTreeMap<String, BTreeSet<String>>> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = std::process::Command::new(cargo)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join(".."))
        .output()
        .expect("cargo metadata runs");
    assert!(
        out.status.success(),
        "cargo metadata: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let packages = meta["packages"].as_array().unwrap();
    let members: BTreeSet<String> = packages
        .iter()
        .map(|p| p["name"].as_str().unwrap().to_string())
        .collect();
    let mut graph = BTreeMap::new();
    for p in packages {
        let mut by_kind: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for kind in ["normal", "dev", "build"] {
            by_kind.insert(kind.into(), BTreeSet::new());
        }
        for dep in p["dependencies"].as_array().unwrap() {
            let name = dep["name"].as_str().unwrap();
            if members.contains(name) {
                let kind = dep["kind"].as_str().unwrap_or("normal");
                by_kind.get_mut(kind).unwrap().insert(name.to_string());
            }
        }
        graph.insert(p["name"].as_str().unwrap().to_string(), by_kind);
    }
    graph
}

#[test]
fn the_dependency_graph_is_the_documented_one() {
    let normal = documented_graph("normal");
    let dev = documented_graph("dev");
    let actual = actual_graph();
    let mut wrong = Vec::new();
    for (krate, edges) in &actual {
        let Some(allowed) = normal.get(krate) else {
            wrong.push(format!(
                "{krate}: a workspace member missing from the table"
            ));
            continue;
        };
        let allowed_dev = dev.get(krate).cloned().unwrap_or_default();
        for dep in edges["normal"].iter().chain(&edges["build"]) {
            if !allowed.contains(dep) {
                wrong.push(format!("{krate} → {dep}: not a documented edge"));
            }
        }
        for dep in allowed.difference(&edges["normal"]) {
            wrong.push(format!(
                "{krate} → {dep}: documented, but not in the manifest"
            ));
        }
        for dep in &edges["dev"] {
            if !allowed_dev.contains(dep) && !allowed.contains(dep) {
                wrong.push(format!("{krate} → {dep} (dev): not a documented edge"));
            }
        }
        for dep in allowed_dev.difference(&edges["dev"]) {
            wrong.push(format!(
                "{krate} → {dep} (dev): documented, but not in the manifest"
            ));
        }
    }
    for krate in normal.keys().filter(|k| !actual.contains_key(*k)) {
        wrong.push(format!("{krate}: in the table, not a workspace member"));
    }
    assert!(
        wrong.is_empty(),
        "docs/ARCHITECTURE.md's dependency graph and the manifests disagree:\n{}",
        wrong.join("\n")
    );
}

/// The rules the table must keep, whatever else it says: curvature is usable alone, the science
/// crates never depend upward, and only xtask composes the orchestration crates.
#[test]
fn the_documented_graph_keeps_the_rules() {
    let normal = documented_graph("normal");
    let upper = ["breakeven-runner", "breakeven-slurm", "xtask"];
    assert!(normal["breakeven-curvature"].is_empty());
    for krate in [
        "breakeven-data",
        "breakeven-models",
        "breakeven-optim",
        "breakeven-curvature",
        "breakeven-penalties",
    ] {
        for dep in &normal[krate] {
            assert!(!upper.contains(&dep.as_str()), "{krate} → {dep} points up");
        }
    }
    for (krate, deps) in &normal {
        if deps.contains("breakeven-slurm") {
            assert_eq!(krate, "xtask", "only xtask may drive the Slurm executor");
        }
        if deps.contains("breakeven-report") {
            assert_eq!(krate, "xtask", "only xtask renders pages");
        }
    }
}

#[test]
fn reports_sit_between_runner_and_xtask() {
    let deps = normal_dependencies("crates/report");
    for dep in ours(&deps) {
        assert!(
            ["breakeven-runner", "breakeven-curvature", "breakeven-plot"].contains(&dep.as_str()),
            "breakeven-report reads runs through the runner (and curvature's linear algebra) \
             only, not {dep}"
        );
    }
    assert!(
        !deps.iter().any(|d| d.starts_with("candle")),
        "breakeven-report trains nothing and holds no tensor code: {deps:?}"
    );
    for dir in [
        "crates/data",
        "crates/models",
        "crates/optim",
        "crates/curvature",
        "crates/penalties",
        "crates/runner",
        "crates/slurm",
    ] {
        assert!(
            !normal_dependencies(dir)
                .iter()
                .any(|d| d == "breakeven-report"),
            "{dir} may not depend on breakeven-report (only xtask does)"
        );
    }
}
