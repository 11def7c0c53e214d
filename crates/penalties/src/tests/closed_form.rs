//! Softmax regression in f64: every penalty's value and gradient against closed forms that do
//! not use autodiff: g = Xᵀ(P − Y)/N, ∇‖g‖² = 2Hg with H = (1/N) Σ (diag p − ppᵀ) ⊗ x̃x̃ᵀ
//! (x̃ = (x, 1) for the bias), and the input-gradient penalty's gradient by hand.

// Index loops mirror the subscripts of the formulas.
#![allow(clippy::needless_range_loop)]

use candle_core::{DType, Tensor};

use super::nets::{batch, enable_double_backprop, flat, Arch, Net, D, K};
use crate::{GradMethod, Penalizer, PenaltyConfig, PenaltyKind, PenaltyNorm};

struct Problem {
    w: Vec<Vec<f64>>,
    b: Vec<f64>,
    x: Vec<Vec<f64>>,
}

impl Problem {
    fn of(net: &Net, x: &Tensor) -> Problem {
        let v = net.vars();
        Problem {
            w: v[0].as_tensor().to_vec2().unwrap(),
            b: v[1].as_tensor().to_vec1().unwrap(),
            x: x.to_vec2().unwrap(),
        }
    }

    fn probs(&self, n: usize) -> Vec<f64> {
        let z: Vec<f64> = (0..K)
            .map(|k| self.b[k] + (0..D).map(|d| self.w[k][d] * self.x[n][d]).sum::<f64>())
            .collect();
        let max = z.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let e: Vec<f64> = z.iter().map(|v| (v - max).exp()).collect();
        let s: f64 = e.iter().sum();
        e.iter().map(|v| v / s).collect()
    }

    /// r_n = p_n − onehot(y_n) for the first `m` examples.
    fn residuals(&self, labels: &[u32], m: usize) -> Vec<Vec<f64>> {
        (0..m)
            .map(|n| {
                let mut r = self.probs(n);
                r[labels[n] as usize] -= 1.0;
                r
            })
            .collect()
    }

    /// θ-gradient of the mean loss over the first m examples, as [W (K×D) row-major, b (K)].
    fn grad(&self, labels: &[u32], m: usize) -> Vec<f64> {
        let r = self.residuals(labels, m);
        let mut g = vec![0.0; K * D + K];
        for n in 0..m {
            for k in 0..K {
                for d in 0..D {
                    g[k * D + d] += r[n][k] * self.x[n][d] / m as f64;
                }
                g[K * D + k] += r[n][k] / m as f64;
            }
        }
        g
    }

    /// H v for the mean loss over the first m examples (H does not depend on the labels).
    fn hvp(&self, v: &[f64], m: usize) -> Vec<f64> {
        let xt = |n: usize, i: usize| if i == D { 1.0 } else { self.x[n][i] };
        let vt = |k: usize, i: usize| if i == D { v[K * D + k] } else { v[k * D + i] };
        let mut out = vec![0.0; K * D + K];
        for n in 0..m {
            let p = self.probs(n);
            let s: Vec<f64> = (0..K)
                .map(|l| (0..=D).map(|j| xt(n, j) * vt(l, j)).sum())
                .collect();
            let ps: f64 = (0..K).map(|l| p[l] * s[l]).sum();
            for k in 0..K {
                let a = p[k] * s[k] - p[k] * ps;
                for i in 0..=D {
                    let idx = if i == D { K * D + k } else { k * D + i };
                    out[idx] += xt(n, i) * a / m as f64;
                }
            }
        }
        out
    }

    /// GPx: P = Σ_n ‖Wᵀr_n‖²/m² and ∂P/∂W = (2/m²) Σ [r_n u_nᵀ + (J_n W u_n) x_nᵀ],
    /// ∂P/∂b = (2/m²) Σ J_n W u_n, with u_n = Wᵀ r_n, J_n = diag p_n − p_n p_nᵀ.
    fn input_penalty(&self, labels: &[u32], m: usize) -> (f64, Vec<f64>) {
        let r = self.residuals(labels, m);
        let mm = (m * m) as f64;
        let mut value = 0.0;
        let mut g = vec![0.0; K * D + K];
        for n in 0..m {
            let u: Vec<f64> = (0..D)
                .map(|d| (0..K).map(|k| self.w[k][d] * r[n][k]).sum())
                .collect();
            value += u.iter().map(|a| a * a).sum::<f64>() / mm;
            let wu: Vec<f64> = (0..K)
                .map(|k| (0..D).map(|d| self.w[k][d] * u[d]).sum())
                .collect();
            let p = self.probs(n);
            let pwu: f64 = (0..K).map(|k| p[k] * wu[k]).sum();
            for k in 0..K {
                let jwu = p[k] * wu[k] - p[k] * pwu;
                for d in 0..D {
                    g[k * D + d] += 2.0 / mm * (r[n][k] * u[d] + jwu * self.x[n][d]);
                }
                g[K * D + k] += 2.0 / mm * jwu;
            }
        }
        (value, g)
    }
}

fn assert_close(got: &[f64], want: &[f64], rel: f64, what: &str) {
    let scale = want.iter().fold(0.0f64, |a, v| a.max(v.abs())).max(1e-300);
    let err = got
        .iter()
        .zip(want)
        .fold(0.0f64, |a, (g, w)| a.max((g - w).abs()));
    assert_eq!(got.len(), want.len(), "{what}");
    assert!(
        err <= rel * scale,
        "{what}: max error {err:e} vs scale {scale:e} (rel {rel:e})\n got {got:?}\nwant {want:?}"
    );
}

fn norm(v: &[f64]) -> f64 {
    v.iter().map(|a| a * a).sum::<f64>().sqrt()
}

const N: usize = 7;
const ALPHA: f64 = 0.3;

fn methods() -> [(GradMethod, f64); 2] {
    [
        (GradMethod::DoubleBackprop, 1e-10),
        (
            GradMethod::FiniteDifference {
                rel_step: None,
                one_sided: false,
                checked: true,
            },
            1e-6,
        ),
    ]
}

/// Runs one penalized step and checks it against (penalty, ∇P) from the closed form.
fn check(
    cfg: PenaltyConfig,
    labels: Option<&[u32]>,
    want: impl Fn(&Problem, &[u32]) -> (f64, Vec<f64>),
    what: &str,
) {
    enable_double_backprop();
    let net = Net::new(Arch::Softmax, DType::F64, 11);
    let (x, y) = batch(&Arch::Softmax, N, DType::F64, 3);
    let prob = Problem::of(&net, &x);
    let y_vec: Vec<u32> = y.to_vec1().unwrap();
    let pen_labels = labels.unwrap_or(&y_vec);
    let (p_want, dp_want) = want(&prob, pen_labels);
    let g_plain = prob.grad(&y_vec, N);
    let total_want: Vec<f64> = g_plain
        .iter()
        .zip(&dp_want)
        .map(|(g, d)| g + cfg.alpha * d)
        .collect();
    let pen = Penalizer::new(cfg, N).unwrap();
    let out = match labels {
        Some(l) => {
            let l = Tensor::from_vec(l.to_vec(), l.len(), &candle_core::Device::Cpu).unwrap();
            pen.step_with_labels(&net, &x, &y, 0, &l).unwrap()
        }
        None => pen
            .step(
                &net,
                &x,
                &y,
                0,
                &mut <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(0),
            )
            .unwrap(),
    };
    let rel = methods()
        .iter()
        .find(|(m, _)| *m == pen.config().method)
        .unwrap()
        .1;
    assert!(out.applied);
    let p = out.penalty.unwrap();
    assert!(
        (p - p_want).abs() <= 1e-12 * p_want.abs().max(1e-300),
        "{what}: penalty {p} vs {p_want}"
    );
    assert_close(&flat(&out.grads), &total_want, rel, what);
    let lw: f64 = (0..N)
        .map(|n| -prob.probs(n)[y_vec[n] as usize].ln())
        .sum::<f64>()
        / N as f64;
    assert!((out.loss - lw).abs() < 1e-12, "{what}: loss");
}

#[test]
fn theta_penalties_match_closed_form() {
    let fixed: Vec<u32> = vec![2, 2, 0, 1, 1, 0, 2];
    for (method, _) in methods() {
        for (kind, m, labels) in [
            (PenaltyKind::Gp, N, None),
            (PenaltyKind::Gp, 4, None),
            (PenaltyKind::Fp, N, Some(&fixed[..])),
            (PenaltyKind::Gpr, 5, Some(&fixed[..5])),
        ] {
            let cfg = PenaltyConfig {
                sub_batch: (m < N).then_some(m),
                method: method.clone(),
                ..PenaltyConfig::new(kind, ALPHA)
            };
            let what = format!("{kind:?} m={m} {method:?}");
            check(
                cfg,
                labels,
                |p, l| {
                    let g = p.grad(l, m);
                    let hg = p.hvp(&g, m);
                    (norm(&g).powi(2), hg.iter().map(|v| 2.0 * v).collect())
                },
                &what,
            );
        }
    }
}

#[test]
fn plain_norm_matches_closed_form() {
    for (method, _) in methods() {
        let cfg = PenaltyConfig {
            norm: PenaltyNorm::Plain,
            method,
            ..PenaltyConfig::new(PenaltyKind::Gp, ALPHA)
        };
        check(
            cfg,
            None,
            |p, l| {
                let g = p.grad(l, N);
                let hg = p.hvp(&g, N);
                let gn = norm(&g);
                (gn, hg.iter().map(|v| v / gn).collect())
            },
            "plain norm",
        );
    }
}

#[test]
fn input_gradient_penalty_matches_closed_form() {
    for (method, _) in methods() {
        for m in [N, 3] {
            let cfg = PenaltyConfig {
                sub_batch: (m < N).then_some(m),
                method: method.clone(),
                ..PenaltyConfig::new(PenaltyKind::Gpx, ALPHA)
            };
            check(
                cfg,
                None,
                |p, l| p.input_penalty(l, m),
                &format!("GPx m={m} {method:?}"),
            );
        }
    }
}
