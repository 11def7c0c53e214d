//! The edge-of-stability page (`cargo xtask reproduce edge-of-stability`): full-batch GD
//! (Cohen et al. 2021, SCIENCE.md §5.5) on the first n CIFAR-10 images for each loss × η of the
//! profile (`breakeven_runner::edge_of_stability`), λ_H^1 by Lanczos every few steps, plots of
//! λ_H^1 against 2/η and of the training loss, and verdicts computed by
//! `claims::edge_of_stability_verdict`.

use std::fmt::Write as _;

use breakeven_runner::edge_of_stability::{Definition, Profile, StoredRun};

use crate::claims::{edge_of_stability_setting, edge_of_stability_verdict, sig4, EOS_BAND};
use crate::evidence::Word;
use crate::page::{Page, Stamp};
use crate::plot::line_chart;

/// The experiment file (`experiments/edge-of-stability.toml`).
pub const DEFINITION: &str = "edge-of-stability";

/// The runs of one network and loss: per learning rate, its run (`None`: not run yet).
#[derive(Debug, Clone)]
pub struct Section {
    /// The network's name ("" for a profile with one unnamed network).
    pub network: String,
    pub loss: String,
    pub runs: Vec<(f64, Option<StoredRun>)>,
}

impl Section {
    fn title(&self) -> String {
        if self.network.is_empty() {
            format!("Loss: {}", self.loss)
        } else {
            format!("{}, loss: {}", self.network, self.loss)
        }
    }

    /// The stem of the section's plot files.
    fn key(&self) -> String {
        if self.network.is_empty() {
            self.loss.clone()
        } else {
            format!("{}-{}", self.network, self.loss)
        }
    }
}

/// The page of `profile`'s runs, in the profile's order of networks, losses and learning rates.
pub fn page(stamp: &Stamp, def: &Definition, profile: &Profile, sections: &[Section]) -> Page {
    let mut out = stamp.page(
        DEFINITION,
        DEFINITION,
        (&def.title, &def.source),
        &profile.base,
        &profile.description,
    );
    let page = &mut out.markdown;
    let _ = writeln!(
        page,
        "- Rule: a run supports the claim when the median of λ_H^1·η/2 over the measurements in the second half of the run lies in [{lo}, {hi}] (hovering at 2/η) and, if λ_H^1·η/2 starts below {lo}, it reaches {lo} (progressive sharpening; a run starting above cannot sharpen and is judged on hovering alone). Each run's verdict gives that median with the interquartile range of the same measurements (how tightly it hovers). Runs stop at the training-accuracy target `stop_acc` where the profile sets one (Cohen et al. stop at 99%). One run alone could sit in the band by chance at any η, so the claim is judged per network and loss: it *supports* \"λ_H^1 tracks 2/η\" when at least two runs at learning rates further apart than the band is wide (max η / min η > {ratio:.3}) all support it, *does not support* when a run does not, and is *undecided* otherwise (one learning rate, or runs pending). A unit test (`claims::tests`) simulates sharpness unrelated to η and shows this rule says *supports* for at most 5% of draws. One run per learning rate (full-batch GD: the seed fixes only the initialization), so there is no interval over seeds; each run's interquartile range shows how tightly it hovers.",
        lo = EOS_BAND.0,
        hi = EOS_BAND.1,
        ratio = EOS_BAND.1 / EOS_BAND.0
    );
    let mut settings: Vec<(String, Word, String)> = Vec::new();
    let (mut supported, mut decided) = (0, 0);
    for section in sections {
        let (runs, key) = (&section.runs, section.key());
        let page = &mut out.markdown;
        let _ = writeln!(page, "\n## {}\n", section.title());
        page.push_str("| η | 2/η | steps | final loss | final acc. (%) | λ_H^1 first → max → last | verdict | wall (s) |\n|---|---|---|---|---|---|---|---|\n");
        let (mut sharp, mut losses) = (Vec::new(), Vec::new());
        let (mut judged, mut pending) = (Vec::new(), 0);
        for (lr, run) in runs {
            let lr = *lr;
            let Some(run) = run else {
                let _ = writeln!(page, "| {lr} | {} | pending | | | | | |", sig4(2.0 / lr));
                pending += 1;
                continue;
            };
            let lambda: Vec<(u64, f64)> = run
                .points
                .iter()
                .filter_map(|p| Some((p.step, p.lambda_h1?)))
                .collect();
            let last = run.points.last();
            let diverged = last.is_some_and(|p| !p.loss.is_finite());
            let verdict = if diverged {
                None
            } else {
                edge_of_stability_verdict(&lambda, lr)
            };
            let cell = match (&verdict, diverged) {
                (_, true) => "diverged (not counted)".to_string(),
                (Some(v), _) => {
                    decided += 1;
                    supported += usize::from(v.supports);
                    judged.push((lr, v.supports));
                    format!("{}: {}", v.word(), v.explanation)
                }
                (None, _) => {
                    pending += 1;
                    "too few measurements".to_string()
                }
            };
            let lam = |p: Option<&(u64, f64)>| p.map_or("—".into(), |p| sig4(p.1));
            let max = lambda.iter().map(|p| p.1).fold(f64::NEG_INFINITY, f64::max);
            let _ = writeln!(
                page,
                "| {lr} | {} | {} | {} | {} | {} → {} → {} | {cell} | {:.0} |",
                sig4(2.0 / lr),
                last.map_or(0, |p| p.step),
                last.map_or("—".into(), |p| sig4(p.loss)),
                last.and_then(|p| p.accuracy)
                    .map_or("—".into(), |a| format!("{:.1}", 100.0 * a)),
                lam(lambda.first()),
                if max.is_finite() {
                    sig4(max)
                } else {
                    "—".into()
                },
                lam(lambda.last()),
                run.wall_s
            );
            let end = last.map_or(1, |p| p.step.max(1)) as f64;
            sharp.push((
                format!("λ_H^1, η={lr}"),
                lambda
                    .iter()
                    .map(|&(s, l)| (s as f64, l))
                    .collect::<Vec<_>>(),
            ));
            sharp.push((
                format!("2/η, η={lr}"),
                vec![(0.0, 2.0 / lr), (end, 2.0 / lr)],
            ));
            losses.push((
                format!("η={lr}"),
                run.points
                    .iter()
                    .filter(|p| p.loss.is_finite())
                    .map(|p| (p.step as f64, p.loss))
                    .collect(),
            ));
        }
        let (mut word, mut reason) = edge_of_stability_setting(&judged);
        if pending > 0 && word == Word::Supports {
            word = Word::Undecided;
        }
        if pending > 0 {
            reason.push_str(&format!("; {pending} run(s) pending"));
        }
        let _ = writeln!(
            page,
            "\n**λ_H^1 tracks 2/η ({})**: {} ({reason}).",
            section.title(),
            word.as_str()
        );
        settings.push((section.title(), word, reason));
        for (suffix, title, y, series) in [
            (
                "sharpness",
                "top Hessian eigenvalue λ_H^1 and 2/η",
                "λ_H^1",
                &sharp,
            ),
            ("loss", "training loss (full batch)", "loss", &losses),
        ] {
            if series.is_empty() {
                continue;
            }
            let title = format!("Full-batch GD, {}: {title}", section.title());
            let plot = line_chart(&title, "step", y, series);
            // The loss falls by decades; λ_H^1 is read against 2/η on a linear axis.
            let plot = if suffix == "loss" { plot.log_y() } else { plot };
            let file = out.plot(&format!("{key}-{suffix}"), plot);
            let _ = writeln!(out.markdown, "\n![{suffix}]({file})");
        }
    }
    let page = &mut out.markdown;
    let _ = writeln!(page, "\n## Verdict\n");
    let count = |w: Word| settings.iter().filter(|s| s.1 == w).count();
    let _ = writeln!(
        page,
        "**λ_H^1 rises to ≈ 2/η and hovers there, tracking 2/η**: {} of {} network × loss settings support it, {} do not, {} undecided; per run, {supported} of {decided} non-diverged runs hover in the band (each run's verdict, with its median and interquartile range, is in the tables above).\n",
        count(Word::Supports),
        settings.len(),
        count(Word::DoesNotSupport),
        count(Word::Undecided),
    );
    for (title, word, reason) in &settings {
        let _ = writeln!(page, "- {title}: **{}** ({reason})", word.as_str());
    }
    out
}

#[cfg(test)]
mod tests {
    use breakeven_runner::full_batch::FullBatchPoint;

    use super::*;
    use crate::pages::testing::stamp;

    fn definition() -> Definition {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../experiments")
            .join(format!("{DEFINITION}.toml"));
        Definition::load(&path).unwrap()
    }

    /// 11 measurements every 10 steps of λ_H^1 = `lambda(k)`, with a falling loss.
    fn run(def: &Definition, loss: &str, lr: f64, lambda: impl Fn(u64) -> f64) -> StoredRun {
        let profile = def.profile("smoke").unwrap();
        StoredRun {
            spec: profile
                .spec(&profile.networks().unwrap()[0], loss, lr, None)
                .unwrap(),
            points: (0..=10)
                .map(|k| FullBatchPoint {
                    step: 10 * k,
                    loss: 1.0 / (1 + k) as f64,
                    accuracy: Some(0.05 * k as f64),
                    lambda_h1: Some(lambda(k)),
                })
                .collect(),
            wall_s: 1.0,
        }
    }

    #[test]
    fn runs_that_sharpen_to_two_over_eta_support_the_claim_and_pending_ones_are_listed() {
        let def = definition();
        let profile = def.profile("smoke").unwrap();
        // η = 0.01: λ_H^1 rises from 50 to 2/η = 200 and stays; η = 0.1: flat at a quarter of 20.
        let sharpening = run(&def, "mse", 0.01, |k| (50.0 + 30.0 * k as f64).min(200.0));
        let flat = run(&def, "mse", 0.1, |_| 5.0);
        let section = |loss: &str, runs| Section {
            network: String::new(),
            loss: loss.into(),
            runs,
        };
        let runs = vec![
            section("mse", vec![(0.01, Some(sharpening)), (0.1, Some(flat))]),
            section("ce", vec![(0.01, None), (0.1, None)]),
        ];
        let page = page(&stamp("smoke"), &def, profile, &runs);
        let files: Vec<&str> = page.plots.iter().map(|p| p.0.as_str()).collect();
        assert_eq!(
            files,
            [
                "edge-of-stability-smoke-mse-sharpness.svg",
                "edge-of-stability-smoke-mse-loss.svg"
            ]
        );
        let md = &page.markdown;
        assert!(
            md.contains(
                "| 0.01 | 200.0 | 100 | 0.09091 | 50.0 | 50.00 → 200.0 → 200.0 | supports: "
            ),
            "{md}"
        );
        assert!(
            md.contains(
                "| 0.1 | 20.00 | 100 | 0.09091 | 50.0 | 5.000 → 5.000 → 5.000 | does not support: "
            ),
            "{md}"
        );
        assert!(md.contains("| 0.01 | 200.0 | pending | | | | | |"), "{md}");
        assert!(
            md.contains(
                "**λ_H^1 rises to ≈ 2/η and hovers there, tracking 2/η**: 0 of 2 network × loss settings support it, 1 do not, 1 undecided; per run, 1 of 2 non-diverged runs hover in the band"
            ),
            "{md}"
        );
        assert!(
            md.contains("- Loss: mse: **does not support** (1 of 2 runs hover in the band"),
            "{md}"
        );
        assert!(
            md.contains("- Loss: ce: **undecided** (0 of 0 runs hover in the band; learning rates none; 2 run(s) pending)"),
            "{md}"
        );
        assert!(md.contains("interquartile range [1.000, 1.000]"), "{md}");
    }

    /// Both learning rates hovering at their own 2/η support the setting; with one of them
    /// pending it is undecided.
    #[test]
    fn a_setting_is_supported_when_runs_far_enough_apart_in_eta_all_hover() {
        let def = definition();
        let profile = def.profile("smoke").unwrap();
        let at = |lr: f64| {
            run(&def, "mse", lr, move |k| {
                (0.5 + 0.1 * k as f64).min(1.0) * 2.0 / lr
            })
        };
        let section = |runs| Section {
            network: "fc".into(),
            loss: "mse".into(),
            runs,
        };
        let both = page(
            &stamp("smoke"),
            &def,
            profile,
            &[section(vec![(0.01, Some(at(0.01))), (0.1, Some(at(0.1)))])],
        );
        assert!(
            both.markdown.contains("**λ_H^1 tracks 2/η (fc, loss: mse)**: supports (2 of 2 runs hover in the band; learning rates 0.01-0.1, ratio 10.00"),
            "{}",
            both.markdown
        );
        let one = page(
            &stamp("smoke"),
            &def,
            profile,
            &[section(vec![(0.01, Some(at(0.01))), (0.1, None)])],
        );
        assert!(
            one.markdown
                .contains("**λ_H^1 tracks 2/η (fc, loss: mse)**: undecided (1 of 1 runs hover"),
            "{}",
            one.markdown
        );
    }
}
