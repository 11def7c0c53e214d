//! The invariants of docs/ARCHITECTURE.md, checked on the manifests.

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
