//! `--scaling`: how the cost of SimpleCNN grows (item 5 of issue 18), breakeven and PyTorch
//! side by side: (a) training-step time against batch size, (b) step time against width
//! multiplier, (c) one Hessian-vector product and 20 Lanczos iterations against parameter
//! count (several widths). With `--write PAGE`, the points go to `cpu-scaling-<cpu>.csv` and
//! one figure (`cpu-scaling-<cpu>.{svg,png}`) beside the page: three panels stacked, since the
//! three questions have three x axes (batch size, width, parameter count) and each panel
//! answers one of them (STYLE.md).

use std::path::Path;

use breakeven_plot::line_chart;

use super::{cpu_name, git_rev, simd_features, Args, Children, Outcome};

/// The section's heading, per CPU model.
pub const HEADING: &str = "## How cost grows, CPU: ";

const BATCHES: [usize; 5] = [32, 64, 128, 256, 512];
const WIDTHS: [f64; 4] = [0.25, 0.5, 1.0, 2.0];
/// Batch size of the HVP and Lanczos points: the tracker's products are on a measurement batch
/// of this order, and 20 products at width 2 stay within a minute on a shared 2-core machine.
const CURVATURE_BATCH: usize = 64;

/// One measured point of both implementations.
struct Point {
    panel: &'static str,
    kind: &'static str,
    width: f64,
    batch: usize,
    ours: Outcome,
    torch: Option<Outcome>,
}

impl Point {
    fn params(&self) -> Option<usize> {
        self.ours.as_ref().ok().and_then(|m| m.params)
    }
}

fn spec(width: f64) -> String {
    format!(r#"{{"arch":"simple_cnn","width_mult":{width}}}"#)
}

fn measure_point(
    args: &Args,
    children: &Children,
    panel: &'static str,
    kind: &'static str,
    width: f64,
    batch: usize,
) -> Point {
    // 20 Lanczos iterations are 20 products already: one run, without a warm-up run.
    let reps = if kind == "lanczos" { 1 } else { args.reps };
    eprintln!("{panel}: {kind}, width {width}, batch {batch} ...");
    let ours = children.ours(args, &spec(width), kind, reps, batch);
    let torch = children.torch(args, "simple_cnn", width, kind, reps, batch);
    Point {
        panel,
        kind,
        width,
        batch,
        ours,
        torch,
    }
}

pub fn section(args: &Args, children: &Children) -> anyhow::Result<String> {
    let mut points = Vec::new();
    for b in BATCHES {
        points.push(measure_point(args, children, "a", "step", 1.0, b));
    }
    for w in WIDTHS {
        points.push(measure_point(args, children, "b", "step", w, args.batch));
    }
    for w in WIDTHS {
        for kind in ["hvp", "lanczos"] {
            points.push(measure_point(args, children, "c", kind, w, CURVATURE_BATCH));
        }
    }
    let cpu = cpu_name();
    let stem = format!("cpu-scaling-{}", slug(&cpu));
    let mut links = String::new();
    if let Some(page) = &args.write {
        let dir = Path::new(page).parent().unwrap_or(Path::new("."));
        std::fs::write(dir.join(format!("{stem}.csv")), csv(&points))?;
        let figure = breakeven_plot::stack(plots(&points, &cpu));
        std::fs::write(dir.join(format!("{stem}.svg")), figure.svg()?)?;
        std::fs::write(dir.join(format!("{stem}.png")), figure.png()?)?;
        links.push_str(&format!(
            "![SimpleCNN cost against (a) batch size, (b) width, (c) parameter count, \
             breakeven and PyTorch]({stem}.png) ([SVG]({stem}.svg); the points: \
             [{stem}.csv]({stem}.csv))\n\n"
        ));
    }
    Ok(render(
        args,
        children.torch_version.as_deref(),
        &points,
        &links,
    ))
}

/// `Intel(R) Xeon(R) Processor` → `intel-xeon-processor`.
fn slug(cpu: &str) -> String {
    cpu.replace("(R)", "")
        .replace("(TM)", "")
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_ascii_lowercase)
        .collect::<Vec<_>>()
        .join("-")
}

fn ms(o: Option<&Outcome>) -> Option<f64> {
    o.and_then(|o| o.as_ref().ok()).map(|m| m.median_ms)
}

fn csv(points: &[Point]) -> String {
    let mut s = String::from("panel,kind,width_mult,batch,params,breakeven_ms,pytorch_ms\n");
    let f = |x: Option<f64>| x.map_or(String::new(), |v| format!("{v:.1}"));
    for p in points {
        s.push_str(&format!(
            "{},{},{},{},{},{},{}\n",
            p.panel,
            p.kind,
            p.width,
            p.batch,
            p.params().map_or(String::new(), |n| n.to_string()),
            f(ms(Some(&p.ours))),
            f(ms(p.torch.as_ref())),
        ));
    }
    s
}

/// A named line of (x, milliseconds).
type Series = (String, Vec<(f64, f64)>);

/// The lines of `panel`/`kind` with x from `x`: (breakeven, PyTorch), named after `label`.
fn series(
    points: &[Point],
    panel: &str,
    kind: &str,
    label: &str,
    x: impl Fn(&Point) -> Option<f64>,
) -> [Series; 2] {
    let pick = |torch: bool| {
        points
            .iter()
            .filter(|p| p.panel == panel && p.kind == kind)
            .filter_map(|p| {
                let y = if torch {
                    ms(p.torch.as_ref())
                } else {
                    ms(Some(&p.ours))
                };
                Some((x(p)?, y?))
            })
            .collect()
    };
    let name = |who: &str| {
        if label.is_empty() {
            who.to_string()
        } else {
            format!("{label}, {who}")
        }
    };
    [
        (name("breakeven"), pick(false)),
        (name("PyTorch"), pick(true)),
    ]
}

/// The three panels, (a) to (c).
fn plots(points: &[Point], cpu: &str) -> Vec<breakeven_plot::Plot> {
    let batch = series(points, "a", "step", "", |p| Some(p.batch as f64));
    let width = series(points, "b", "step", "", |p| Some(p.width));
    let params = |p: &Point| p.params().map(|n| n as f64);
    let mut curv = series(points, "c", "hvp", "one HVP", params).to_vec();
    curv.extend(series(
        points,
        "c",
        "lanczos",
        "20 Lanczos iterations",
        params,
    ));
    let step_batch = points
        .iter()
        .find(|p| p.panel == "b")
        .map_or(0, |p| p.batch);
    vec![
        line_chart(
            &format!("(a) SimpleCNN training step vs batch size (width 1, f32, {cpu})"),
            "batch size (examples)",
            "time per step (ms)",
            &batch,
        )
        .log_x()
        .log_y(),
        line_chart(
            &format!("(b) SimpleCNN training step vs width (batch {step_batch}, f32, {cpu})"),
            "width multiplier",
            "time per step (ms)",
            &width,
        )
        .log_x()
        .log_y(),
        line_chart(
            &format!(
                "(c) Curvature cost vs parameter count (SimpleCNN widths 0.25–2, batch \
                 {CURVATURE_BATCH}, f32, {cpu})"
            ),
            "parameters",
            "time (ms)",
            &curv,
        )
        .log_x()
        .log_y(),
    ]
}

fn render(args: &Args, torch: Option<&str>, points: &[Point], links: &str) -> String {
    let (rev, cpu) = (git_rev(), cpu_name());
    let cmd = std::env::args().skip(1).collect::<Vec<_>>().join(" ");
    let mut s = format!("{HEADING}{cpu} ({})\n\n", simd_features());
    s.push_str(&format!(
        "Generated by `cargo run -p breakeven-models --example bench_step -- {cmd}` at git {rev}; \
         CPU: {cpu}; SimpleCNN, f32, {threads} thread(s) (RAYON_NUM_THREADS / \
         torch.set_num_threads), each point a fresh process per \
         implementation, median of {reps} repetitions after one warm-up (Lanczos: one run of \
         20 iterations, no warm-up run); PyTorch {torch}. (a) training step (forward, \
         backward, SGD update) at width 1 against batch size; (b) the step at batch {batch} \
         against the width multiplier; (c) one Hessian-vector product by double backprop and \
         20 Lanczos iterations (full reorthogonalization, vectors in f64; breakeven: the \
         tracker's `HessianOperator` and `lanczos`) at batch {CURVATURE_BATCH} against the \
         parameter count of widths 0.25, 0.5, 1 and 2.\n\n",
        threads = args.threads,
        reps = args.reps,
        torch = torch.unwrap_or("absent"),
        batch = args.batch,
    ));
    s.push_str(links);
    s.push_str(
        "| panel | measurement | width | batch | parameters | breakeven ms (median) | PyTorch ms \
         (median) | breakeven / PyTorch |\n|---|---|---|---|---|---|---|---|\n",
    );
    for p in points {
        let (o, t) = (ms(Some(&p.ours)), ms(p.torch.as_ref()));
        let cell = |x: Option<f64>, out: Option<&Outcome>| match (x, out) {
            (Some(v), _) => format!("{v:.0}"),
            (None, Some(Err(e))) => format!("failed: {e}"),
            _ => "absent".into(),
        };
        s.push_str(&format!(
            "| ({}) | {} | {} | {} | {} | {} | {} | {} |\n",
            p.panel,
            super::kind_label(p.kind),
            p.width,
            p.batch,
            p.params().map_or(String::new(), |n| n.to_string()),
            cell(o, Some(&p.ours)),
            cell(t, p.torch.as_ref()),
            match (o, t) {
                (Some(o), Some(t)) => format!("{:.2}×", o / t),
                _ => String::new(),
            },
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_names_become_file_names() {
        assert_eq!(slug("Intel(R) Xeon(R) Processor"), "intel-xeon-processor");
        assert_eq!(
            slug("AMD EPYC 7B13 64-Core Processor"),
            "amd-epyc-7b13-64-core-processor"
        );
    }
}
