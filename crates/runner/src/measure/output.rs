//! How `measure` shows its results to people: a plain-text table (`--format table`), and the
//! SLQ spectral density as CSV plus a plot (the project's `plot` module; SVG and PNG).

use std::fmt::Write as _;
use std::path::Path;

use breakeven_curvature::SpectralDensity;

use super::{Density, Measurement, Settings};
use crate::atomic::write_atomic;
use crate::atomic::write_svg_and_png;
use crate::error::RunError;
use breakeven_plot::line_chart;

/// Writes `<out_dir>/<checkpoint stem>-density.csv` (eigenvalue, density) and the plot beside
/// it (`.svg`, `.png`; log density, the tails span decades).
pub fn write_density(
    d: &SpectralDensity,
    settings: &Settings,
    out_dir: &Path,
    checkpoint: &Path,
) -> Result<Density, RunError> {
    std::fs::create_dir_all(out_dir).map_err(|e| RunError::io(out_dir, e))?;
    let stem = checkpoint
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "checkpoint".into());
    let csv_path = out_dir.join(format!("{stem}-density.csv"));
    let mut csv = String::from("eigenvalue,density\n");
    for (x, y) in d.grid.iter().zip(&d.density) {
        writeln!(csv, "{x:e},{y:e}").expect("writing to a String");
    }
    write_atomic(&csv_path, csv.as_bytes())?;
    // Below 1e-8 of the peak the Gaussian tails only stretch the log axis.
    let peak = d.density.iter().cloned().fold(0.0, f64::max);
    let points: Vec<(f64, f64)> = d
        .grid
        .iter()
        .zip(&d.density)
        .filter(|(_, y)| **y > 1e-8 * peak)
        .map(|(x, y)| (*x, *y))
        .collect();
    let plot = line_chart(
        &format!(
            "Hessian spectral density (SLQ, {} probes × {} steps): {stem}",
            settings.slq_probes, settings.slq_steps
        ),
        "eigenvalue λ of H",
        "density (Gaussian kernel σ, per unit λ)",
        &[(format!("σ = {:.3e}", d.sigma), points)],
    )
    .log_y();
    let png = write_svg_and_png(&out_dir.join(format!("{stem}-density.svg")), &plot)?;
    Ok(Density {
        csv: csv_path.display().to_string(),
        png: png.display().to_string(),
        probes: settings.slq_probes,
        lanczos_steps: settings.slq_steps,
        sigma: d.sigma,
        integral: d.integral,
        matvecs: d.matvecs,
    })
}

/// `value ± se` with the relative error, or `value (exact)`.
fn pm(value: f64, se: f64) -> String {
    if se == 0.0 {
        format!("{value:.6e} (exact)")
    } else {
        format!(
            "{value:.6e} ± {se:.2e} ({:.1}%)",
            100.0 * se / value.abs().max(f64::MIN_POSITIVE)
        )
    }
}

/// The measurement as an aligned plain-text table.
pub fn table(m: &Measurement) -> String {
    let mut rows: Vec<(String, String)> = Vec::new();
    let mut row = |k: &str, v: String| rows.push((k.to_string(), v));
    row(
        "checkpoint",
        match m.step {
            Some(step) => format!("{} (step {step})", m.checkpoint),
            None => format!("{} ({})", m.checkpoint, m.kind),
        },
    );
    row(
        "model / data",
        format!("{} on {}, {}", m.model.arch(), m.data, m.settings.dtype),
    );
    let sets: Vec<String> = [&m.examples.hessian, &m.examples.gradient]
        .into_iter()
        .filter(|e| !e.used_by.is_empty())
        .map(|e| format!("{} for {}", e.count, e.used_by.join(", ")))
        .collect();
    row(
        "examples",
        format!(
            "{} (the first N of the run's measurement subset; indices in JSON)",
            sets.join("; ")
        ),
    );
    if let Some(l) = &m.loss {
        row(
            "loss",
            format!("{:.6} (accuracy {:.4}, eval mode)", l.value, l.accuracy),
        );
    }
    if let Some(e) = &m.lambda_h {
        let values: Vec<String> = e
            .values
            .iter()
            .zip(&e.residuals)
            .map(|(v, r)| format!("{v:.6e} (res {r:.1e})"))
            .collect();
        row(&format!("λ_H^1..{}", e.values.len()), values.join(", "));
        row(
            "  Lanczos",
            format!(
                "{} after {} steps (tol {:.0e}), {} HVPs",
                if e.converged {
                    "converged"
                } else {
                    "NOT converged"
                },
                e.iterations,
                m.settings.tol,
                e.matvecs
            ),
        );
    }
    if let Some(t) = &m.trace_h {
        row(
            "Tr(H)",
            format!(
                "{} [{}, {} probes, {} HVPs]",
                pm(t.value, t.std_error),
                t.method,
                t.probes,
                t.matvecs
            ),
        );
    }
    if let Some(f) = &m.trace_f {
        row(
            "Tr(F)",
            format!(
                "{} [{}, {} label(s) per example]; ± {:.2e} over the choice of examples",
                pm(f.value, f.std_error),
                f.method,
                f.labels_per_example,
                f.std_error_over_examples
            ),
        );
    }
    if let Some(k) = &m.k {
        row(
            "λ_K^1",
            format!("{:.6e} (exact on these examples)", k.lambda_k1),
        );
        row(
            "Tr(K)",
            format!("{:.6e} (exact on these examples)", k.trace_k),
        );
    }
    if let Some(d) = &m.density {
        row(
            "density",
            format!(
                "{} and {} (σ {:.2e}, ∫ = {:.3})",
                d.csv, d.png, d.sigma, d.integral
            ),
        );
    }
    if let Some(blocks) = &m.per_layer {
        row(
            "per layer",
            "λ_1 and Tr of each tensor's diagonal block of H".into(),
        );
        for b in blocks {
            row(
                &format!("  {}", b.name),
                format!(
                    "λ_1 {:.4e}{} | Tr {} ({} params)",
                    b.lambda_1.values[0],
                    if b.lambda_1.converged {
                        ""
                    } else {
                        " (not converged)"
                    },
                    pm(b.trace.value, b.trace.std_error),
                    b.dim
                ),
            );
        }
    }
    let c = &m.cost;
    row(
        "cost",
        format!(
            "{} HVPs, {} per-example gradients, {} forward passes, {:.1} s",
            c.passes.hvp, c.passes.per_example_gradients, c.passes.forward_passes, c.wall_s
        ),
    );
    for (from, to) in &m.key_map {
        row("key map", format!("{from} → {to}"));
    }
    for n in &m.notes {
        row("note", n.clone());
    }
    let width = rows
        .iter()
        .map(|(k, _)| k.chars().count())
        .max()
        .unwrap_or(0);
    let mut out = String::new();
    for (k, v) in rows {
        let pad = width - k.chars().count();
        writeln!(out, "{k}{}  {v}", " ".repeat(pad)).expect("writing to a String");
    }
    out
}
