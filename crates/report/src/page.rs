//! A results page as data: its Markdown and the plots it links (written by `xtask`), the head
//! every generated page shares, and the finished runs' metrics logs a page reads.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;

use breakeven_runner::metrics::{read_metrics, MetricsRecord};
use breakeven_runner::table::{RowOutcome, RowState};
use breakeven_runner::{RunDir, RunError};

use crate::claims::Verdict;
use crate::evidence::Evidence;
use crate::plot::Plot;
use crate::table::hardware_description;

/// A page: `<stem>.md` and its plots, each `(file name of the SVG, plot)` in the page's folder
/// (every plot is written as SVG and PNG).
#[derive(Debug)]
pub struct Page {
    pub stem: String,
    pub markdown: String,
    pub plots: Vec<(String, Plot)>,
}

impl Page {
    /// An empty page named `<stem>.md` that starts with `head`.
    pub fn new(stem: String, head: String) -> Self {
        Self {
            stem,
            markdown: head,
            plots: Vec::new(),
        }
    }

    /// Adds a plot as `<stem>-<suffix>.svg` and returns its file name.
    pub fn plot(&mut self, suffix: &str, plot: Plot) -> String {
        let file = format!("{}-{suffix}.svg", self.stem);
        self.plots.push((file.clone(), plot));
        file
    }
}

/// Where and how a page was made: what its head says that the runs do not.
#[derive(Debug, Clone)]
pub struct Stamp {
    pub profile: String,
    /// The command that made the page.
    pub command: String,
    pub generated_utc: String,
    pub git_revision: String,
    /// `--device`, in place of the profile's own.
    pub device: Option<String>,
}

impl Stamp {
    /// The device a run of a profile with this base config uses: `--device`, else the profile's
    /// `device`, else CPU.
    pub fn device(&self, base: &toml::Table) -> String {
        self.device.clone().unwrap_or_else(|| {
            base.get("device")
                .and_then(|d| d.as_str())
                .unwrap_or("cpu")
                .to_string()
        })
    }

    /// The head every generated results page shares: title, do-not-edit marker, the exact
    /// command, date and git revision, hardware, profile and the definition
    /// (`experiments/<definition>.toml`).
    pub fn head(
        &self,
        definition: &str,
        title: &str,
        device: &str,
        profile_description: &str,
        source: &str,
    ) -> String {
        let mut page = format!("# {title} — profile `{}`\n\n", self.profile);
        page.push_str("<!-- Generated file: do not edit; rerun the command below. -->\n\n");
        page.push_str(&format!("- Command: `{}`\n", self.command));
        page.push_str(&format!(
            "- Generated: {} (git {})\n",
            self.generated_utc, self.git_revision
        ));
        page.push_str(&format!(
            "- Rendered on: {}\n",
            hardware_description(device)
        ));
        page.push_str(&format!("- Profile: {profile_description}\n"));
        page.push_str(&format!(
            "- Definition: `experiments/{definition}.toml`; source: {source}\n"
        ));
        page
    }
}

impl Stamp {
    /// An empty page `<stem>-<profile>.md` that starts with the shared [`Stamp::head`], for a
    /// profile with base config `base` (its device) and `description`.
    pub fn page(
        &self,
        stem: &str,
        definition: &str,
        (title, source): (&str, &str),
        base: &toml::Table,
        description: &str,
    ) -> Page {
        let device = self.device(base);
        let head = self.head(definition, title, &device, description, source);
        Page::new(format!("{stem}-{}", self.profile), head)
    }
}

/// A claim's verdict line on a results page: what was measured and the verdict, or, without a
/// verdict, the reproduction's reason the runs cannot decide (`undecided`).
pub fn claim_line(page: &mut String, claim: &str, v: Option<&Verdict>, undecided: &str) {
    let _ = match v {
        Some(v) => writeln!(page, "- **{claim}**: {} → **{}**.", v.explanation, v.word()),
        None => writeln!(page, "- **{claim}**: {undecided}"),
    };
}

/// A claim's verdict line from [`Evidence`]: the estimate (`what`, e.g. "mean signed ρ"), its
/// interval, p, the word and its reason; `undecided` when no verdict could be computed.
pub fn evidence_line(
    page: &mut String,
    claim: &str,
    what: &str,
    e: Option<&Evidence>,
    undecided: &str,
) {
    let _ = match e {
        Some(e) => writeln!(
            page,
            "- **{claim}**: {what} = {:.2}, 95% interval {}, p = {} → **{}** ({}).",
            e.estimate,
            e.interval
                .map_or("—".into(), |(lo, hi)| format!("[{lo:.2}, {hi:.2}]")),
            e.p_value.map_or("—".into(), |p| format!("{p:.4}")),
            e.word.as_str(),
            e.reason
        ),
        None => writeln!(page, "- **{claim}**: {undecided}"),
    };
}

/// The page line giving the share of the runs' wall time spent measuring curvature: Σ of the
/// logged `curvature.wall_s` over Σ of the runs' wall times, from `(records, wall_s)` per
/// finished run; `None` without wall time.
pub fn tracking_overhead_line<'a>(
    runs: impl IntoIterator<Item = (&'a [MetricsRecord], f64)>,
) -> Option<String> {
    let (mut tracking, mut wall, mut n) = (0.0, 0.0, 0usize);
    for (records, wall_s) in runs {
        tracking += records
            .iter()
            .filter_map(|r| r.curvature.as_ref().map(|c| c.wall_s))
            .sum::<f64>();
        wall += wall_s;
        n += 1;
    }
    (wall > 0.0).then(|| {
        format!(
            "- Curvature tracking: {:.1}% of the wall time of the {n} finished runs ({:.1} of {:.1} min: the logged Tr(F), λ_K^1, Tr(K), λ_H measurements; validation and test evaluation not counted)",
            100.0 * tracking / wall,
            tracking / 60.0,
            wall / 60.0
        )
    })
}

/// The page lines naming the machines the finished runs trained on and the git revisions that
/// trained them (each run's summary names both as of when it finished), with how many runs each;
/// `None` without finished runs.
pub fn trained_on_line<'a>(
    summaries: impl IntoIterator<Item = &'a breakeven_runner::Summary>,
) -> Option<String> {
    fn count(tally: &mut Vec<(String, usize)>, key: String) {
        match tally.iter_mut().find(|m| m.0 == key) {
            Some(m) => m.1 += 1,
            None => tally.push((key, 1)),
        }
    }
    fn join(tally: &[(String, usize)]) -> String {
        let parts: Vec<String> = tally
            .iter()
            .map(|(m, n)| format!("{m} ({n} run{})", if *n == 1 { "" } else { "s" }))
            .collect();
        parts.join("; ")
    }
    let (mut machines, mut revisions) = (Vec::new(), Vec::new());
    for s in summaries {
        let name = s.hardware.clone().unwrap_or_else(|| {
            "not recorded (finished before summaries named their machine)".into()
        });
        count(&mut machines, name);
        let rev = match s.git_revision.split_once('-') {
            _ if s.git_revision.is_empty() => "not recorded".to_string(),
            Some((sha, suffix)) => format!("{}-{suffix}", &sha[..sha.len().min(7)]),
            None => s.git_revision[..s.git_revision.len().min(7)].to_string(),
        };
        count(&mut revisions, rev);
    }
    (!machines.is_empty()).then(|| {
        format!(
            "- Trained on: {}\n- Trained at git: {}",
            join(&machines),
            join(&revisions)
        )
    })
}

/// The finished runs of `outcomes`: each run's spec and summary.
fn finished(
    outcomes: &[RowOutcome],
) -> impl Iterator<
    Item = (
        &breakeven_runner::sweep::RunSpec,
        &breakeven_runner::Summary,
    ),
> {
    outcomes
        .iter()
        .filter_map(|o| match &o.state {
            RowState::Ran { runs, .. } => Some(runs),
            RowState::Missing { .. } => None,
        })
        .flatten()
        .filter_map(|(spec, summary)| Some((spec, summary.as_ref()?)))
}

/// [`trained_on_line`] of every finished run of `outcomes`.
pub fn outcomes_trained_on_line(outcomes: &[RowOutcome]) -> Option<String> {
    trained_on_line(finished(outcomes).map(|(_, s)| s))
}

/// [`tracking_overhead_line`] of every finished run of `outcomes`, reading their metrics (for a
/// page that has not read them already; see [`run_lines`]).
pub fn outcomes_overhead_line(outcomes: &[RowOutcome]) -> Option<String> {
    let runs: Vec<(Vec<MetricsRecord>, f64)> = finished(outcomes)
        .map(|(spec, s)| {
            let path = RunDir::new(&spec.dir).metrics_path();
            (read_metrics(&path).unwrap_or_default(), s.wall_s)
        })
        .collect();
    tracking_overhead_line(runs.iter().map(|(r, w)| (r.as_slice(), *w)))
}

/// The lines a sweep page states about its finished runs: where they trained
/// ([`trained_on_line`]) and the share of their wall time spent on curvature
/// ([`tracking_overhead_line`], from the `records` the page has read).
pub fn run_lines(outcomes: &[RowOutcome], records: &Records) -> Vec<String> {
    let overhead = tracking_overhead_line(
        finished(outcomes)
            .filter_map(|(spec, s)| Some((records.get(&spec.dir)?.as_slice(), s.wall_s))),
    );
    [outcomes_trained_on_line(outcomes), overhead]
        .into_iter()
        .flatten()
        .collect()
}

/// The metrics log of every finished run of a sweep, by run directory.
pub type Records = BTreeMap<PathBuf, Vec<MetricsRecord>>;

/// Reads the metrics log of every finished run of `outcomes`.
pub fn read_records(outcomes: &[RowOutcome]) -> Result<Records, RunError> {
    let mut out = Records::new();
    for o in outcomes {
        let RowState::Ran { runs, .. } = &o.state else {
            continue;
        };
        for (spec, _) in runs.iter().filter(|(_, s)| s.is_some()) {
            let path = RunDir::new(&spec.dir).metrics_path();
            out.insert(spec.dir.clone(), read_metrics(&path)?);
        }
    }
    Ok(out)
}

/// The records of the run in `dir` (an error naming the run when they were not read).
pub fn records_of<'a>(
    records: &'a Records,
    dir: &std::path::Path,
) -> Result<&'a [MetricsRecord], RunError> {
    records
        .get(dir)
        .map(Vec::as_slice)
        .ok_or_else(|| RunError::Other(format!("no metrics read for run {}", dir.display())))
}

/// Writes the row's heading to `page`, then why it did not run or which of its runs failed;
/// returns its runs when it ran.
pub fn row_runs<'a>(
    page: &mut String,
    o: &'a RowOutcome,
) -> Option<
    &'a [(
        breakeven_runner::sweep::RunSpec,
        Option<breakeven_runner::Summary>,
    )],
> {
    let _ = writeln!(page, "\n## {}\n", o.row.setting);
    match &o.state {
        RowState::Missing { message, .. } => {
            let _ = writeln!(page, "Not run: {message}");
            None
        }
        RowState::Ran { runs, errors, .. } => {
            for (dir, e) in errors {
                let _ = writeln!(page, "- run {} failed: {e}", dir.display());
            }
            Some(runs)
        }
    }
}

/// The label of a run's column in its experiment definition (its key if the column is gone).
pub fn column_label<'a>(
    exp: &'a breakeven_runner::sweep::Experiment,
    spec: &'a breakeven_runner::sweep::RunSpec,
) -> &'a str {
    exp.columns
        .iter()
        .find(|c| c.key == spec.column)
        .map_or(spec.column.as_str(), |c| c.label.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pages::testing::record;

    #[test]
    fn the_overhead_line_is_the_share_of_wall_time_spent_on_curvature() {
        // Two runs of 60 s and 120 s; curvature 1 s at each of 3 and 6 logged points (9 s).
        let run = |points: u64| -> Vec<MetricsRecord> {
            (0..points)
                .map(|k| {
                    let mut r = record(k, k as f64, 0.5, Some(1.0));
                    r.curvature.as_mut().unwrap().wall_s = 1.0;
                    r
                })
                .chain(std::iter::once(record(points, 9.0, 0.5, None)))
                .collect()
        };
        let (a, b) = (run(3), run(6));
        let line = tracking_overhead_line([(a.as_slice(), 60.0), (b.as_slice(), 120.0)]).unwrap();
        assert!(
            line.starts_with("- Curvature tracking: 5.0% of the wall time of the 2 finished runs (0.1 of 3.0 min"),
            "{line}"
        );
        assert_eq!(tracking_overhead_line([]), None);
    }

    #[test]
    fn the_trained_on_line_counts_runs_per_machine() {
        let mut a = crate::pages::testing::summary(0.5, 1.0);
        let b = a.clone();
        let mut c = a.clone();
        c.hardware = None;
        a.hardware = Some("Other CPU".into());
        a.git_revision = "0123456789abcdef".into();
        c.git_revision = "fedcba9876543210-dirty".into();
        let line = trained_on_line([&a, &b, &c, &b]).unwrap();
        assert_eq!(
            line,
            "- Trained on: Other CPU (1 run); Test CPU, 2 logical cores available, linux (x86_64); device cpu (2 runs); not recorded (finished before summaries named their machine) (1 run)\n\
             - Trained at git: 0123456 (1 run); not recorded (2 runs); fedcba9-dirty (1 run)"
        );
        assert_eq!(trained_on_line([]), None);
    }
}
