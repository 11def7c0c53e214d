//! The break-even sweep (`experiments/break-even.toml`: η × S, plain SGD, dense curvature
//! tracking) read back as trajectories; shared by the `break-even` and `batch-variance`
//! pages, which read the same runs.

use std::fmt::Write as _;

use breakeven_runner::rundir::RunStatus;
use breakeven_runner::sweep::Profile;
use breakeven_runner::table::{RowOutcome, RowState};
use breakeven_runner::RunError;

use crate::claims::sig4;
use crate::evidence::Stratum;
use crate::matched::{matched_levels, value_at_accuracy, AccPoint};
use crate::page::{records_of, Records};
use crate::plot::{line_chart_with_bounds, Plot};

/// The experiment file both pages read.
pub const DEFINITION: &str = "break-even";

/// One finished run, at its logged points that carry curvature.
#[derive(Debug, Clone)]
pub struct Trajectory {
    pub label: String,
    pub lr: f64,
    pub batch: usize,
    pub seed: u64,
    pub step: Vec<f64>,
    pub epoch: Vec<f64>,
    /// Accuracy on the fixed measurement subset of the training set (eval mode), in [0, 1].
    pub acc: Vec<f64>,
    pub lambda_h: Vec<f64>,
    pub lambda_k: Vec<f64>,
    pub k_trace: Vec<f64>,
    pub k_ratio: Vec<f64>,
    /// The largest true relative Lanczos residual of λ_H^1..k at each point (NaN where the run
    /// did not log residuals: `tracking.lanczos_tol` unset).
    pub lanczos_residual: Vec<f64>,
    /// Whether the run reached its stopping accuracy (not capped, not diverged).
    pub converged: bool,
}

impl Trajectory {
    /// (accuracy, metric) points in step order.
    pub fn points(&self, metric: &[f64]) -> Vec<AccPoint> {
        self.acc
            .iter()
            .zip(metric)
            .map(|(&acc, &value)| AccPoint { acc, value })
            .collect()
    }

    /// (x, metric) pairs, e.g. (epoch, λ_H^1), without unmeasured (NaN) values.
    pub fn curve(x: &[f64], metric: &[f64]) -> Vec<(f64, f64)> {
        x.iter()
            .zip(metric)
            .filter(|p| p.1.is_finite())
            .map(|(&a, &b)| (a, b))
            .collect()
    }

    pub fn acc_points(&self) -> Vec<AccPoint> {
        self.points(&self.acc)
    }
}

/// The sweep's finished runs, and page notes on rows or runs that did not run.
#[derive(Debug, Clone, Default)]
pub struct Sweep {
    pub runs: Vec<Trajectory>,
    pub notes: Vec<String>,
    /// Runs of the sweep that have not finished (or failed): while any is left, every verdict
    /// is undecided (runs are compared at convergence, all of them).
    pub unfinished: usize,
}

impl Sweep {
    /// Whether every planned run has finished and reached its stopping accuracy: the verdicts'
    /// precondition (runs are compared at convergence, all of them).
    pub fn converged(&self) -> bool {
        self.unfinished == 0 && self.runs.iter().all(|t| t.converged)
    }

    /// [`crate::page::run_lines`] of `outcomes`' finished runs (where they trained, the share of
    /// their wall time spent on curvature), first among the notes.
    pub fn with_run_lines(mut self, outcomes: &[RowOutcome], records: &Records) -> Self {
        let lines = crate::page::run_lines(outcomes, records);
        // Notes are printed as list items: drop the lines' own "- ".
        self.notes.splice(
            0..0,
            lines.iter().map(|l| l.trim_start_matches("- ").to_string()),
        );
        self
    }
}

/// Every finished run of the sweep's `outcomes` read back (from `records`) as a trajectory.
pub fn sweep(
    profile: &Profile,
    outcomes: &[RowOutcome],
    records: &Records,
) -> Result<Sweep, RunError> {
    let (mut runs, mut notes, mut unfinished) = (Vec::new(), Vec::new(), 0);
    for o in outcomes {
        let specs = match &o.state {
            RowState::Missing { message, .. } => {
                notes.push(format!("{}: not run: {message}", o.row.setting));
                unfinished += 1;
                continue;
            }
            RowState::Ran { runs, errors, .. } => {
                for (dir, e) in errors {
                    notes.push(format!("run {} failed: {e}", dir.display()));
                }
                runs
            }
        };
        for (spec, summary) in specs {
            if summary.is_none() {
                notes.push(format!("run {} has not finished", spec.dir.display()));
                unfinished += 1;
                continue;
            }
            let nan = f64::NAN;
            let mut t = Trajectory {
                label: format!(
                    "η={}, S={}",
                    spec.config.optim.lr, spec.config.data.batch_size
                ),
                lr: spec.config.optim.lr,
                batch: spec.config.data.batch_size,
                seed: spec.seed,
                step: vec![],
                epoch: vec![],
                acc: vec![],
                lambda_h: vec![],
                lambda_k: vec![],
                k_trace: vec![],
                k_ratio: vec![],
                lanczos_residual: vec![],
                converged: summary
                    .as_ref()
                    .is_some_and(|s| s.status == RunStatus::Converged),
            };
            if profile.seeds.len() > 1 {
                t.label.push_str(&format!(", seed {}", spec.seed));
            }
            for r in records_of(records, &spec.dir)? {
                let (Some(c), Some(acc)) = (&r.curvature, r.measure_acc) else {
                    continue;
                };
                t.step.push(r.step as f64);
                t.epoch.push(r.epoch);
                t.acc.push(acc);
                t.lambda_h.push(c.lambda_h.first().copied().unwrap_or(nan));
                t.lambda_k.push(c.lambda_k1.unwrap_or(nan));
                t.k_trace.push(c.k_trace.unwrap_or(nan));
                t.k_ratio.push(c.k_ratio.unwrap_or(nan));
                t.lanczos_residual.push(
                    c.lambda_h_residuals
                        .iter()
                        .copied()
                        .reduce(f64::max)
                        .unwrap_or(nan),
                );
            }
            runs.push(t);
        }
    }
    Ok(Sweep {
        runs,
        notes,
        unfinished,
    }
    .with_run_lines(outcomes, records))
}
/// Step between compared accuracy levels: 5 points, 10 when the runs span more than 40.
pub fn level_step(runs: &[Trajectory]) -> f64 {
    let best = runs
        .iter()
        .flat_map(|r| r.acc.iter().copied())
        .fold(0.0, f64::max);
    let start = runs
        .iter()
        .filter_map(|r| r.acc.first().copied())
        .fold(1.0, f64::min);
    if best - start > 0.4 {
        0.1
    } else {
        0.05
    }
}

/// Every level at which at least one run can be read (above every run's start, up to the
/// best accuracy of any run), for the per-level tables.
pub fn table_levels(runs: &[Trajectory], step: f64) -> Vec<f64> {
    let start = runs
        .iter()
        .filter_map(|r| r.acc.first().copied())
        .fold(f64::NEG_INFINITY, f64::max);
    let best = runs
        .iter()
        .flat_map(|r| r.acc.iter().copied())
        .fold(f64::NEG_INFINITY, f64::max);
    if !(start.is_finite() && best.is_finite()) {
        return vec![];
    }
    // One stand-in run from the latest start to the best accuracy.
    let span = [
        AccPoint {
            acc: start,
            value: 0.0,
        },
        AccPoint {
            acc: best,
            value: 0.0,
        },
    ];
    matched_levels(&[&span], step)
}

/// Groups of run indices that share everything but one setting: `key` gives what they share.
pub fn group_by<K: PartialEq + Clone>(
    runs: &[Trajectory],
    key: impl Fn(&Trajectory) -> K,
) -> Vec<(K, Vec<usize>)> {
    let mut groups: Vec<(K, Vec<usize>)> = Vec::new();
    for (i, r) in runs.iter().enumerate() {
        let k = key(r);
        match groups.iter_mut().find(|g| g.0 == k) {
            Some(g) => g.1.push(i),
            None => groups.push((k, vec![i])),
        }
    }
    groups
}

/// The accuracy levels all runs of a group reach (see `matched_levels`).
pub fn group_levels(runs: &[Trajectory], idx: &[usize], step: f64) -> Vec<f64> {
    let pts: Vec<Vec<AccPoint>> = idx.iter().map(|&i| runs[i].acc_points()).collect();
    let refs: Vec<&[AccPoint]> = pts.iter().map(Vec::as_slice).collect();
    matched_levels(&refs, step)
}

/// `x%` for a level in [0, 1].
pub fn pct(level: f64) -> String {
    format!("{:.0}%", 100.0 * level)
}

/// Which metric of a trajectory.
pub type Metric = fn(&Trajectory) -> &[f64];

/// One plot series per run: (scale · x, metric) at the points where the metric was measured.
pub fn series(
    runs: &[Trajectory],
    x: fn(&Trajectory) -> Vec<f64>,
    m: Metric,
    scale: f64,
) -> Vec<(String, Vec<(f64, f64)>)> {
    runs.iter()
        .map(|t| {
            let pts = Trajectory::curve(&x(t), m(t))
                .into_iter()
                .map(|(a, b)| (scale * a, b))
                .collect();
            (t.label.clone(), pts)
        })
        .collect()
}

/// A line chart without bounds (its x ticks sit at round values also when x starts anywhere),
/// on a log y axis when its values span more than two decades.
pub fn plain_chart(
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[(String, Vec<(f64, f64)>)],
) -> Plot {
    let plot = line_chart_with_bounds(title, x_label, y_label, series, &[], "");
    if spans_decades(series) {
        plot.log_y()
    } else {
        plot
    }
}

/// The x label of the plots against training accuracy: the accuracy measured at each logged
/// point itself (a curve may turn back where accuracy falls).
pub const ACC_AXIS: &str = "training accuracy at the point (%, measurement subset)";

/// The one accuracy level every verdict of a page reads: the highest multiple of `step` above
/// every run's start that every run of the sweep reaches. Reading one level, not each level a
/// group reaches, keeps each run one observation (levels read from the same runs are not
/// independent evidence).
pub fn verdict_level(runs: &[Trajectory], step: f64) -> Option<f64> {
    let idx: Vec<usize> = (0..runs.len()).collect();
    group_levels(runs, &idx, step).last().copied()
}

/// The strata of a trend claim: runs grouped by `key` (the settings they share, with the seed),
/// named by `name`, with (x, y) per run; a run whose y is undefined (never reached the level, a
/// diverged value) leaves its stratum out, and the page lists it.
pub fn strata<K: PartialEq + Clone>(
    runs: &[Trajectory],
    key: impl Fn(&Trajectory) -> K,
    name: impl Fn(&Trajectory) -> String,
    x: impl Fn(&Trajectory) -> f64,
    y: impl Fn(&Trajectory) -> Option<f64>,
) -> Vec<Stratum> {
    group_by(runs, key)
        .into_iter()
        .filter_map(|(_, idx)| {
            let points = idx
                .iter()
                .map(|&i| Some((x(&runs[i]), y(&runs[i])?)))
                .collect::<Option<Vec<_>>>()?;
            Some(Stratum {
                name: name(&runs[idx[0]]),
                seed: runs[idx[0]].seed,
                points,
            })
        })
        .collect()
}

/// One list item per stratum under a claim line: its name, then `x_prefix x → y` per run.
pub fn write_strata(page: &mut String, strata: &[Stratum], x_prefix: &str) {
    for g in strata {
        let vals: Vec<String> = g
            .points
            .iter()
            .map(|(x, y)| format!("{x_prefix}{x} → {}", sig4(*y)))
            .collect();
        let _ = writeln!(page, "  - {}: {}", g.name, vals.join(", "));
    }
}

/// Whether the positive values of `series` span more than two decades (then a log y axis).
pub fn spans_decades(series: &[(String, Vec<(f64, f64)>)]) -> bool {
    let ys = series
        .iter()
        .flat_map(|s| s.1.iter().map(|p| p.1))
        .filter(|y| y.is_finite() && *y > 0.0);
    let (lo, hi) = ys.fold((f64::INFINITY, 0.0f64), |(lo, hi), y| {
        (lo.min(y), hi.max(y))
    });
    lo.is_finite() && hi / lo > 100.0
}

/// A run × level table of one metric ("—" where the run never reaches the level).
pub fn level_table(page: &mut String, runs: &[Trajectory], levels: &[f64], m: Metric) {
    if levels.is_empty() {
        page.push_str("No accuracy level above the runs' starting accuracy was reached.\n");
        return;
    }
    let head: Vec<String> = levels.iter().map(|&l| pct(l)).collect();
    let _ = writeln!(
        page,
        "| Run | {} |\n|---|{}",
        head.join(" | "),
        "---|".repeat(levels.len())
    );
    for t in runs {
        let cells: Vec<String> = levels
            .iter()
            .map(|&l| value_at_accuracy(&t.points(m(t)), l).map_or("—".into(), sig4))
            .collect();
        let _ = writeln!(page, "| {} | {} |", t.label, cells.join(" | "));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(lr: f64, batch: usize, acc: &[f64]) -> Trajectory {
        Trajectory {
            label: format!("η={lr}, S={batch}"),
            lr,
            batch,
            seed: 0,
            step: (0..acc.len()).map(|i| i as f64).collect(),
            epoch: (0..acc.len()).map(|i| i as f64).collect(),
            acc: acc.to_vec(),
            lambda_h: vec![1.0; acc.len()],
            lambda_k: vec![1.0; acc.len()],
            k_trace: vec![1.0; acc.len()],
            k_ratio: vec![1.0; acc.len()],
            lanczos_residual: vec![f64::NAN; acc.len()],
            converged: true,
        }
    }

    #[test]
    fn every_profile_is_an_eta_by_batch_grid_of_tracked_plain_sgd_runs() {
        let def = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../experiments")
            .join(format!("{DEFINITION}.toml"));
        let exp = breakeven_runner::sweep::Experiment::load(&def).unwrap();
        for name in ["smoke", "cpu", "paper"] {
            let profile = exp.profile(name).unwrap();
            let mut cells = std::collections::BTreeSet::new();
            for row in exp.rows_in(name) {
                for s in exp
                    .expand_row(name, row, std::path::Path::new("/r"))
                    .unwrap()
                {
                    let c = &s.config;
                    assert_eq!(c.optim.momentum, 0.0, "{name}: plain SGD");
                    assert!(
                        c.tracking.curvature && c.tracking.lanczos_iters > 0,
                        "{name}"
                    );
                    assert!(cells.insert((c.optim.lr.to_bits(), c.data.batch_size, s.seed)));
                }
            }
            let batches = exp.rows_in(name).len();
            assert!(batches >= 2 && profile.lr_grid.len() >= 2, "{name}");
            assert_eq!(
                cells.len(),
                batches * profile.lr_grid.len() * profile.seeds.len()
            );
        }
    }

    #[test]
    fn levels_groups_and_best_accuracy_so_far() {
        let runs = [
            run(0.1, 16, &[0.1, 0.3, 0.25, 0.5]),
            run(0.03, 16, &[0.12, 0.2, 0.33]),
            run(0.1, 64, &[0.09, 0.22]),
        ];
        // Span 0.5 − 0.09 > 0.4: steps of 10 points.
        assert_eq!(level_step(&runs), 0.1);
        assert_eq!(level_step(&runs[1..]), 0.05);
        // Tables: above the latest start (0.12) up to the best of any run (0.5).
        assert_eq!(table_levels(&runs, 0.1), vec![0.2, 0.3, 0.4, 0.5]);
        // Groups by S, and the levels all runs of the S = 16 group reach (up to 0.33).
        let by_s = group_by(&runs, |t| t.batch);
        assert_eq!(by_s, vec![(16, vec![0, 1]), (64, vec![2])]);
        assert_eq!(group_levels(&runs, &by_s[0].1, 0.1), vec![0.2, 0.3]);
        assert_eq!(pct(0.3), "30%");
        // The verdicts' one level: the highest all three runs reach (0.22 caps it at 0.2).
        assert_eq!(verdict_level(&runs, 0.1), Some(0.2));
        assert_eq!(verdict_level(&runs[..2], 0.1), Some(0.3));
        // Strata by S: the S = 64 stratum has one run; y undefined leaves a stratum out.
        let st = strata(
            &runs,
            |t| t.batch,
            |t| format!("S = {}", t.batch),
            |t| t.lr,
            |t| (t.batch == 16).then_some(t.lr * 10.0),
        );
        assert_eq!(st.len(), 1);
        assert_eq!(st[0].points, vec![(0.1, 1.0), (0.03, 0.3)]);
        let flat = vec![("a".to_string(), vec![(0.0, 1.0), (1.0, 50.0)])];
        assert!(!spans_decades(&flat));
        let wide = vec![("a".to_string(), vec![(0.0, 0.1), (1.0, 50.0), (2.0, -3.0)])];
        assert!(spans_decades(&wide));
    }
}
