//! Sweeps: the experiment definitions expand and validate, selection happens on validation
//! accuracy, and a small table runs end to end (missing data reported, finished runs reused).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::temp_dir;
use crate::rundir::{FinalMetrics, RunStatus, Summary};
use crate::sweep::{mean_std, reduce, Experiment, RunSpec};
use crate::table::{run_table, RowState, Silent};

fn table1() -> Experiment {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../experiments/table1.toml");
    Experiment::load(&path).unwrap()
}

#[test]
fn table1_profiles_expand_into_valid_runs() {
    let exp = table1();
    assert_eq!(
        exp.rows.iter().filter(|r| !r.paper.is_empty()).count(),
        5,
        "the paper's five rows"
    );
    for profile in ["smoke", "cpu", "paper"] {
        for row in exp.rows_in(profile) {
            let p = &exp.row_profile(profile, row).unwrap();
            let specs = exp.expand_row(profile, row, Path::new("/tmp/x")).unwrap();
            // A staged profile plans the η* grid on its tuning seeds first; the others all at once.
            let expected = if p.small_lr_divisor.is_some() {
                p.lr_grid.len() * p.tune_seeds_of("eta_star").len()
            } else {
                let per_seed =
                    p.lr_grid.len() + 1 + p.alpha_grid.values().map(Vec::len).sum::<usize>();
                per_seed * p.seeds.len()
            };
            assert_eq!(specs.len(), expected, "{profile}/{}", row.key);
            let dirs: std::collections::BTreeSet<&PathBuf> = specs.iter().map(|s| &s.dir).collect();
            assert_eq!(dirs.len(), specs.len(), "run directories must be distinct");
        }
    }
    assert_eq!(exp.rows_in("paper").len(), 5);
    let smoke = exp
        .expand_row("smoke", exp.rows_in("smoke")[0], Path::new("/r"))
        .unwrap();
    let fp = smoke.iter().find(|s| s.column == "fp").unwrap();
    assert_eq!(
        (fp.config.penalty.kind, fp.config.penalty.alpha),
        (Some(breakeven_penalties::PenaltyKind::Fp), 0.1)
    );
    assert_eq!(
        Some(fp.config.optim.lr),
        exp.profile("smoke").unwrap().small_lr
    );
    // Selection needs a validation split.
    let mut row = exp.rows_in("smoke")[1].clone();
    let over = row.overrides.get_mut("smoke").unwrap();
    over["data"]
        .as_table_mut()
        .unwrap()
        .insert("val_size".into(), 0.into());
    let err = exp
        .expand_row("smoke", &row, Path::new("/r"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("val_size"), "{err}");
}

fn fake(
    column: &str,
    hyper: f64,
    seed: u64,
    val: f64,
    test: f64,
    status: RunStatus,
) -> (RunSpec, Option<Summary>) {
    let exp = table1();
    let mut spec = exp
        .expand_row("smoke", exp.rows_in("smoke")[0], Path::new("/r"))
        .unwrap()
        .remove(0);
    (spec.column, spec.hyper, spec.seed) = (column.into(), hyper, seed);
    let summary = Summary {
        name: "x".into(),
        status,
        diverged_at_step: None,
        steps: 1,
        epochs: 1.0,
        final_metrics: FinalMetrics {
            val_acc: Some(val),
            test_acc: Some(test),
            train_acc: Some(1.0),
            ..Default::default()
        },
        wall_s: 0.0,
        git_revision: String::new(),
        hardware: None,
    };
    (spec, Some(summary))
}

/// Marks `spec` finished with validation accuracy `val` (test = val, training 100%).
fn finish(spec: &RunSpec, val: f64) {
    let run = crate::RunDir::new(&spec.dir);
    run.create(&spec.config).unwrap();
    let (_, summary) = fake(
        &spec.column,
        spec.hyper,
        spec.seed,
        val,
        val,
        RunStatus::Converged,
    );
    run.write_summary(&summary.unwrap()).unwrap();
}

#[test]
fn a_staged_profile_runs_the_baseline_at_eta_star_over_ten_and_extra_seeds_after_each_grid() {
    let exp = table1();
    let dir = temp_dir("staged");
    let row = exp
        .rows_in("cpu")
        .into_iter()
        .find(|r| r.key == "cifar10-simplecnn")
        .unwrap()
        .clone();
    // The row's settings (a row may change the profile's seeds and grids).
    let p = exp.row_profile("cpu", &row).unwrap();
    let seeds = |col: &str| p.seeds_of(col).len();
    assert!(seeds("eta_star") >= 3 && seeds("baseline") >= 3 && seeds("fp") >= 3);
    let plan = exp.plan_row("cpu", &row, &dir).unwrap();
    assert!(plan
        .specs
        .iter()
        .all(|s| s.column == "eta_star" && s.tuning && s.seed == 0));
    assert_eq!(plan.specs.len(), p.lr_grid.len());
    assert!(
        plan.waiting.iter().any(|w| w.contains("Baseline")),
        "{:?}",
        plan.waiting
    );
    // The grid finishes; the second value is best on validation.
    let best = p.lr_grid[1];
    for s in &plan.specs {
        finish(s, if s.hyper == best { 0.6 } else { 0.5 });
    }
    let plan = exp.plan_row("cpu", &row, &dir).unwrap();
    let of = |col: &str| {
        plan.specs
            .iter()
            .filter(|s| s.column == col)
            .collect::<Vec<_>>()
    };
    let eta: Vec<_> = of("eta_star").into_iter().filter(|s| !s.tuning).collect();
    assert!(eta.iter().all(|s| s.hyper == best) && eta.len() == seeds("eta_star") - 1);
    let baseline = of("baseline");
    assert_eq!(baseline.len(), seeds("baseline"));
    assert!(baseline.iter().all(|s| s.config.optim.lr == best / 10.0));
    assert!(baseline[0]
        .dir
        .to_string_lossy()
        .contains(&format!("-lr{}", best / 10.0)));
    // FP tunes α on seed 0 at η*/10 and waits with its other seeds; GP runs one seed only.
    let fp = of("fp");
    assert_eq!(fp.len(), p.alpha_grid["fp"].len());
    assert!(fp
        .iter()
        .all(|s| s.tuning && s.seed == 0 && s.config.optim.lr == best / 10.0));
    assert!(
        plan.waiting.iter().any(|w| w.starts_with("FP")),
        "{:?}",
        plan.waiting
    );
    assert!(
        !plan.waiting.iter().any(|w| w.starts_with("GP:")),
        "{:?}",
        plan.waiting
    );
    let alpha = p.alpha_grid["fp"][2];
    for s in &fp {
        finish(s, if s.hyper == alpha { 0.7 } else { 0.4 });
    }
    let plan = exp.plan_row("cpu", &row, &dir).unwrap();
    let fp_extra: Vec<_> = plan
        .specs
        .iter()
        .filter(|s| s.column == "fp" && !s.tuning)
        .collect();
    assert_eq!(fp_extra.len(), seeds("fp") - 1);
    assert!(fp_extra.iter().all(|s| s.hyper == alpha));
    // Selection uses the tuning runs only, so extra seeds never move the choice.
    for s in plan.specs.iter().filter(|s| !s.tuning) {
        finish(s, 0.1);
    }
    let runs = crate::sweep::collect(&exp.plan_row("cpu", &row, &dir).unwrap().specs).unwrap();
    let cells = reduce(&exp.columns, &runs);
    assert_eq!(cells[0].chosen, Some(best));
    assert_eq!(cells[0].seeds, seeds("eta_star"));
    let mut expected = vec![10.0; seeds("eta_star")];
    expected[0] = 60.0;
    assert_eq!(cells[0].test_by_seed, expected);
    assert!(cells[0].converged);
    // A seed that hit the epoch cap makes its cell "not converged" (this profile stops at a
    // training accuracy).
    let mut runs = runs;
    let capped = runs
        .iter_mut()
        .find(|(s, _)| s.column == "eta_star" && s.seed == 2)
        .unwrap();
    capped.1.as_mut().unwrap().status = RunStatus::Capped;
    assert!(!reduce(&exp.columns, &runs)[0].converged);
    // So does one that diverged (it leaves the cell's seeds, not its convergence mark).
    let seed2 = runs
        .iter_mut()
        .find(|(s, _)| s.column == "eta_star" && s.seed == 2)
        .unwrap();
    seed2.1.as_mut().unwrap().status = RunStatus::Diverged;
    let cell = &reduce(&exp.columns, &runs)[0];
    assert!(
        !cell.converged && cell.seeds == seeds("eta_star") - 1,
        "{cell:?}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Where the protocol stops at a training accuracy, a value whose tuning run hit the epoch cap
/// first is not a candidate however high its validation accuracy (runs are compared at
/// convergence); in a fixed-epoch protocol every run ends at its cap and stays eligible.
#[test]
fn a_value_that_did_not_converge_within_the_cap_is_not_chosen() {
    use crate::select::Excluded;
    let exp = table1();
    let fp = exp.columns.iter().position(|c| c.key == "fp").unwrap();
    let run = |alpha: f64, val: f64, status: RunStatus, criterion: Option<f64>| {
        let mut r = fake("fp", alpha, 0, val, val, status);
        r.0.tuning = true;
        r.0.config.stop.train_acc = criterion;
        r
    };
    let grid = |criterion: Option<f64>| {
        vec![
            run(0.1, 0.54, RunStatus::Converged, criterion),
            run(0.3, 0.57, RunStatus::Converged, criterion),
            run(1.0, 0.60, RunStatus::Capped, criterion),
        ]
    };
    let cell = &reduce(&exp.columns, &grid(Some(0.99)))[fp];
    assert_eq!(cell.chosen, Some(0.3));
    assert_eq!(cell.excluded, vec![(1.0, Excluded::NotConverged)]);
    // Its validation accuracy stays on the record.
    assert!(cell
        .val_by_hyper
        .iter()
        .any(|&(h, v)| h == 1.0 && v == Some(60.0)));
    let fixed_epochs = &reduce(&exp.columns, &grid(None))[fp];
    assert_eq!(
        (fixed_epochs.chosen, fixed_epochs.excluded.len()),
        (Some(1.0), 0)
    );
    // Nothing converged: nothing is chosen.
    let none = vec![run(1.0, 0.60, RunStatus::Capped, Some(0.99))];
    assert_eq!(reduce(&exp.columns, &none)[fp].chosen, None);
    // A diverged value is named as such.
    let diverged = vec![
        run(0.1, 0.54, RunStatus::Converged, Some(0.99)),
        run(0.3, 0.0, RunStatus::Diverged, Some(0.99)),
    ];
    let cell = &reduce(&exp.columns, &diverged)[fp];
    assert_eq!(
        (cell.chosen, cell.excluded.clone()),
        (Some(0.1), vec![(0.3, Excluded::Diverged)])
    );
}

#[test]
fn selection_uses_validation_and_skips_settings_that_diverged() {
    let exp = table1();
    let results = vec![
        fake("eta_star", 0.1, 0, 0.80, 0.50, RunStatus::Converged),
        fake("eta_star", 0.1, 1, 0.90, 0.60, RunStatus::Converged),
        fake("eta_star", 0.3, 0, 0.99, 0.99, RunStatus::Converged),
        fake("eta_star", 0.3, 1, 0.0, 0.0, RunStatus::Diverged),
        fake("eta_star", 0.03, 0, 0.70, 0.95, RunStatus::Capped),
        fake("eta_star", 0.03, 1, 0.70, 0.95, RunStatus::Capped),
    ];
    let cells = reduce(&exp.columns, &results);
    let eta = &cells[0];
    assert_eq!(
        eta.chosen,
        Some(0.1),
        "best mean validation among settings with no divergence"
    );
    let (m, s) = mean_std(&[50.0, 60.0]);
    assert!((eta.test_mean.unwrap() - m).abs() < 1e-9 && (eta.test_std.unwrap() - s).abs() < 1e-9);
    assert_eq!((eta.seeds, eta.diverged, eta.pending), (2, 1, 0));
    assert!(cells[1].chosen.is_none() && cells[1].test_mean.is_none());
}

#[test]
fn a_small_table_runs_reports_missing_data_and_reuses_finished_runs() {
    let dir = temp_dir("table");
    let mut exp = table1();
    exp.columns
        .retain(|c| c.key == "eta_star" || c.key == "baseline");
    let profile = exp.profiles.get_mut("smoke").unwrap();
    profile.seeds = vec![0, 1];
    profile
        .base
        .insert("stop".into(), toml::toml! { max_epochs = 1 }.into());
    // The CIFAR-10 row looks for its data only in an empty folder.
    let empty = dir.join("no-data");
    std::fs::create_dir_all(&empty).unwrap();
    for row in &mut exp.rows {
        if row.key == "cifar10-simplecnn" {
            row.overrides
                .get_mut("smoke")
                .unwrap()
                .insert("data".into(), toml::toml! { name = "cifar100" }.into());
        }
    }
    let root = dir.join("runs");
    // The table of `exp`'s smoke profile, trained (`execute`) or only read back.
    let table = |exp: &Experiment, execute: bool| {
        run_table(
            exp,
            "smoke",
            &root,
            std::slice::from_ref(&empty),
            execute,
            &mut Silent,
        )
        .unwrap()
    };
    let outcomes = table(&exp, true);
    assert_eq!(outcomes.len(), 2);
    let RowState::Missing { message, .. } = &outcomes[0].state else {
        panic!("cifar100 should be missing")
    };
    assert!(
        message.contains("cargo xtask data fetch cifar100"),
        "{message}"
    );
    let RowState::Ran {
        cells,
        runs,
        errors,
        ..
    } = &outcomes[1].state
    else {
        panic!("synthetic row should run")
    };
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(runs.len(), (2 + 1) * 2);
    assert!(
        cells.iter().all(|c| c.seeds == 2 && c.test_mean.is_some()),
        "{cells:?}"
    );

    // A report-only pass and a second full invocation find every run finished and change nothing.
    let before: BTreeMap<_, _> = runs
        .iter()
        .map(|(s, r)| (s.dir.clone(), r.clone()))
        .collect();
    let again = table(&exp, false);
    let RowState::Ran { runs: reported, .. } = &again[1].state else {
        panic!()
    };
    assert!(reported
        .iter()
        .all(|(s, r)| r.as_ref() == before[&s.dir].as_ref() && r.is_some()));
    let again = table(&exp, true);
    let RowState::Ran { runs, .. } = &again[1].state else {
        panic!()
    };
    for (s, r) in runs {
        assert_eq!(&before[&s.dir], r);
    }

    // A raised cap: every run stopped at the one-epoch cap, so every run trains on to two.
    exp.profiles
        .get_mut("smoke")
        .unwrap()
        .base
        .insert("stop".into(), toml::toml! { max_epochs = 2 }.into());
    let grown = table(&exp, true);
    let RowState::Ran { runs, errors, .. } = &grown[1].state else {
        panic!()
    };
    assert!(errors.is_empty(), "{errors:?}");
    for (s, r) in runs {
        let (old, new) = (before[&s.dir].as_ref().unwrap(), r.as_ref().unwrap());
        assert_eq!(old.status, RunStatus::Capped);
        assert_eq!((new.status, new.steps), (RunStatus::Capped, 2 * old.steps));
    }

    // The page rendered from these outcomes: `breakeven_report::table`'s tests.
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Records the order in which a table starts its runs.
struct Order(Vec<(String, bool, u64)>);
impl crate::table::TableProgress for Order {
    fn run_started(&mut self, _: usize, _: usize, spec: &RunSpec) {
        self.0.push((spec.column.clone(), spec.tuning, spec.seed));
    }
}

/// A staged sweep plans again after every run: FP's extra seeds, unlocked when its α grid
/// finishes, train before the one-seed columns' grids (the headline first), trained for real on
/// the synthetic row.
#[test]
fn seeds_unlocked_by_a_finished_grid_go_ahead_of_other_columns_grids() {
    let dir = temp_dir("order");
    let mut exp = table1();
    exp.rows.retain(|r| r.key == "synthetic-fc");
    let profile = exp.profiles.get_mut("smoke").unwrap();
    profile.seeds = vec![0, 1];
    profile.tune_seeds = Some(vec![0]);
    profile.column_seeds = ["gpx", "gp", "gpr"]
        .into_iter()
        .map(|k| (k.to_string(), vec![0]))
        .collect();
    profile.lr_grid = vec![0.05, 0.1];
    profile.small_lr = None;
    profile.small_lr_divisor = Some(10.0);
    for grid in profile.alpha_grid.values_mut() {
        *grid = vec![0.01, 0.1];
    }
    profile
        .base
        .insert("stop".into(), toml::toml! { max_epochs = 1 }.into());
    let mut order = Order(Vec::new());
    let outcomes = run_table(&exp, "smoke", &dir.join("runs"), &[], true, &mut order).unwrap();
    let RowState::Ran { errors, .. } = &outcomes[0].state else {
        panic!("the synthetic row should run")
    };
    assert!(errors.is_empty(), "{errors:?}");
    let at = |f: &dyn Fn(&(String, bool, u64)) -> bool| order.0.iter().position(f);
    let fp_seed = at(&|(c, tuning, seed)| c == "fp" && !tuning && *seed == 1)
        .unwrap_or_else(|| panic!("{:?}", order.0));
    let one_seed_grids = at(&|(c, _, _)| ["gpx", "gp", "gpr"].contains(&c.as_str()))
        .unwrap_or_else(|| panic!("{:?}", order.0));
    assert!(fp_seed < one_seed_grids, "{:?}", order.0);
    // Every run trained once: 2 η + 1 η* seed + 2 Baseline + 2 FP α + 1 FP seed + 3 × 2 α.
    assert_eq!(order.0.len(), 14, "{:?}", order.0);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn label_noise_experiments_expand_into_valid_runs() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../experiments");
    for name in ["memorization", "table2"] {
        let exp = Experiment::load(&dir.join(format!("{name}.toml"))).unwrap();
        for profile in ["smoke", "cpu", "paper"] {
            let rows = exp.rows_in(profile);
            assert!(!rows.is_empty(), "{name}/{profile}");
            for row in rows {
                let specs = exp.expand_row(profile, row, Path::new("/r")).unwrap();
                assert!(
                    specs.iter().all(|s| s.config.data.label_noise > 0.0),
                    "{name}/{profile}/{}: every run has noisy labels",
                    row.key
                );
                // Table 2's Mixup column gets Mixup from its column overrides, no other does.
                for s in &specs {
                    assert_eq!(
                        s.config.data.mixup_alpha > 0.0,
                        s.column == "mixup",
                        "{name}/{profile}/{}/{}",
                        row.key,
                        s.column
                    );
                }
            }
        }
    }
    let table2 = Experiment::load(&dir.join("table2.toml")).unwrap();
    let paper_rows: Vec<_> = table2.rows.iter().filter(|r| !r.paper.is_empty()).collect();
    assert_eq!(paper_rows.len(), 4, "two noise levels × two architectures");
    assert!(paper_rows.iter().all(|r| r.paper.len() == 5));
}

#[test]
fn fisher_explosion_cpu_runs_five_plain_learning_rates_on_three_seeds_to_one_stopping_rule() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../experiments");
    let exp = Experiment::load(&dir.join("fisher-explosion.toml")).unwrap();
    let rows = exp.rows_in("cpu");
    assert_eq!(rows.len(), 1);
    let specs = exp.expand_row("cpu", rows[0], Path::new("/r")).unwrap();
    let plain: Vec<_> = specs
        .iter()
        .filter(|s| s.config.penalty.kind.is_none())
        .collect();
    let mut cells: Vec<(u64, u64)> = plain
        .iter()
        .map(|s| (s.config.optim.lr.to_bits(), s.seed))
        .collect();
    cells.sort_unstable();
    cells.dedup();
    assert_eq!(cells.len(), 15, "5 learning rates × 3 seeds, each once");
    let mut lrs: Vec<u64> = cells.iter().map(|c| c.0).collect();
    lrs.dedup();
    assert_eq!(lrs.len(), 5);
    for s in &specs {
        let c = &s.config;
        assert_eq!(
            (c.stop.train_acc, c.stop.max_epochs),
            (Some(0.99), 500),
            "one stopping rule"
        );
        assert!(c.tracking.curvature && c.tracking.k_examples >= 128);
        assert!(c.tracking.dense_epochs >= 5 && c.tracking.dense_every <= 5);
        c.validate().unwrap();
    }
}

#[test]
fn fd_vs_db_cpu_runs_fp_three_ways_from_one_seed_and_setting() {
    use crate::config::PenaltyMethod;
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../experiments");
    let exp = Experiment::load(&dir.join("fd-vs-db.toml")).unwrap();
    let rows = exp.rows_in("cpu");
    let specs = exp.expand_row("cpu", rows[0], Path::new("/r")).unwrap();
    let mut methods: Vec<_> = specs
        .iter()
        .map(|s| {
            let p = &s.config.penalty;
            (p.method, p.one_sided, p.fd_check)
        })
        .collect();
    methods.sort_by_key(|m| format!("{m:?}"));
    assert_eq!(
        methods,
        [
            (PenaltyMethod::DoubleBackprop, false, true),
            (PenaltyMethod::FiniteDifference, false, false),
            (PenaltyMethod::FiniteDifference, true, false),
        ]
    );
    // Everything but the method is one setting.
    let strip = |s: &RunSpec| {
        let mut c = s.config.clone();
        c.penalty.method = PenaltyMethod::DoubleBackprop;
        c.penalty.one_sided = false;
        c.penalty.fd_check = true;
        c.name = String::new();
        c
    };
    assert!(specs.iter().all(|s| strip(s) == strip(&specs[0])));
    assert_eq!(specs[0].config.optim.lr, 0.002);
    for s in &specs {
        s.config.validate().unwrap();
    }
}

/// A row may change its profile's sweep settings (seeds, grids) and nothing else of it; other
/// rows keep the profile's.
#[test]
fn a_row_changes_its_seeds_and_grids_without_touching_other_rows() {
    let mut exp = table1();
    let row = exp
        .rows
        .iter_mut()
        .find(|r| r.key == "synthetic-fc")
        .unwrap();
    row.sweep.insert(
        "smoke".into(),
        toml::toml! {
            seeds = [3, 4]
            lr_grid = [0.05]
            alpha_grid = { fp = [0.2, 0.3] }
        },
    );
    let row = exp.rows.iter().find(|r| r.key == "synthetic-fc").unwrap();
    let p = exp.row_profile("smoke", row).unwrap();
    let base = exp.profile("smoke").unwrap();
    assert_eq!(
        (p.seeds.as_slice(), p.lr_grid.as_slice()),
        (&[3, 4][..], &[0.05][..])
    );
    assert_eq!(p.alpha_grid["fp"], [0.2, 0.3]);
    assert_eq!(
        p.alpha_grid["gp"], base.alpha_grid["gp"],
        "other penalties kept"
    );
    assert_eq!(p.base, base.base);
    let specs = exp.expand_row("smoke", row, Path::new("/r")).unwrap();
    assert!(specs.iter().all(|s| s.seed == 3 || s.seed == 4));
    assert!(specs
        .iter()
        .filter(|s| s.column == "eta_star")
        .all(|s| s.config.optim.lr == 0.05));
    // Another row still runs the profile's seeds.
    let other = exp
        .rows
        .iter()
        .find(|r| r.key == "cifar10-simplecnn")
        .unwrap();
    assert_eq!(exp.row_profile("smoke", other).unwrap().seeds, base.seeds);

    // The run config changes through `overrides`, not here.
    let mut bad = row.clone();
    bad.sweep
        .insert("smoke".into(), toml::toml! { base = { device = "cuda" } });
    let err = exp.row_profile("smoke", &bad).unwrap_err().to_string();
    assert!(
        err.contains("rows.synthetic-fc.sweep.smoke") && err.contains("overrides"),
        "{err}"
    );
    bad.sweep
        .insert("smoke".into(), toml::toml! { seeds = "all" });
    let err = exp.row_profile("smoke", &bad).unwrap_err().to_string();
    assert!(err.contains("rows.synthetic-fc.sweep.smoke"), "{err}");
}
