//! The training loop: steps, trajectory logging, periodic checkpoints, divergence handling, the
//! stopping rule, and resumption from the last checkpoint bit-identically on CPU.

use std::path::{Path, PathBuf};
use std::time::Instant;

use breakeven_optim::{clip_grad_norm, global_grad_norm};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::checkpoint::{list_checkpoints, prune_checkpoints};
use crate::config::{Provenance, RunConfig};
use crate::device::open_device;
use crate::error::RunError;
use crate::evaluate::{evaluate, evaluate_streamed, weight_norm};
use crate::metrics::{MetricsLog, MetricsRecord};
use crate::objective::{mixup_objective, step_objective};
use crate::rundir::{git_revision, FinalMetrics, RunDir, RunStatus, Summary};
use crate::setup::{load_data, prepare, Prepared, STEP_SEED_OFFSET};
use crate::state::{restore, save, Accum, TrainState};
use crate::track::{measure_curvature, noise_fit, should_log};
use crate::validate::ValidConfig;

/// Checkpoints kept on disk (the newest ones); older ones are deleted.
const KEEP_CHECKPOINTS: usize = 2;

/// How to run (not part of the run's identity).
#[derive(Debug, Clone, Default)]
pub struct TrainOptions {
    /// Where data sets are looked for (see `breakeven_data::locate`).
    pub data_dir: Option<PathBuf>,
    /// Show a progress bar of this run's steps (with ETA).
    pub progress: bool,
    /// Drive this bar instead of creating one (e.g. a line of a sweep's `MultiProgress`).
    pub bar: Option<indicatif::ProgressBar>,
    /// Test hook: return `Interrupted` right after this step, as if the process were killed.
    pub stop_after_step: Option<u64>,
    /// Keep every checkpoint instead of only the newest few (analyses of the whole trajectory,
    /// e.g. the early-phase embedding, read them all back).
    pub keep_all_checkpoints: bool,
}

/// How a call to [`train`] ended.
// One value per run, returned once: boxing the summary would only add noise at every match.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Finished(Summary),
    /// Stopped by `stop_after_step` (the run directory is left as a kill would leave it).
    Interrupted {
        step: u64,
    },
}

/// `config` as a run directory records it: with its provenance (this checkout's git revision,
/// the data directory, the runner's version). A sweep that writes run directories ahead of
/// training (the Slurm executor) writes exactly what [`train`] would.
pub fn resolved_config(config: &RunConfig, data_dir: Option<&Path>) -> RunConfig {
    RunConfig {
        provenance: Some(Provenance {
            git_revision: git_revision(),
            data_dir: data_dir.map_or_else(
                || "(default search path)".into(),
                |d| d.display().to_string(),
            ),
            version: env!("CARGO_PKG_VERSION").into(),
        }),
        ..config.clone()
    }
}

/// Starts the run of `config` in `run_dir`, or continues it from its last checkpoint; a
/// finished run is returned as is. The config must equal the one already in `run_dir`.
pub fn train(
    config: &ValidConfig,
    run_dir: &RunDir,
    opts: &TrainOptions,
) -> Result<Outcome, RunError> {
    if let Some(summary) = run_dir.summary()? {
        run_dir.check_same(config)?;
        if !summary.continues_under(&config.stop) {
            tracing::info!(run = %run_dir.root.display(), "already finished");
            return Ok(Outcome::Finished(summary));
        }
        tracing::info!(
            run = %run_dir.root.display(),
            capped_at_epoch = summary.epochs,
            max_epochs = config.stop.max_epochs,
            "cap raised: the capped run trains on"
        );
        run_dir.reopen(config)?;
    }
    if config.tracking.curvature || config.penalty.kind.is_some() {
        enable_second_order()?;
    }
    // Data before anything is written: a missing data set is one clear error.
    let data = load_data(config, opts.data_dir.as_deref())?;
    run_dir.create(&resolved_config(config, opts.data_dir.as_deref()))?;
    let device = open_device(config.device)?;
    let mut p = prepare(config, data, device)?;
    let mut rng = ChaCha8Rng::seed_from_u64(config.seed ^ STEP_SEED_OFFSET);

    let ckpt_dir = run_dir.checkpoint_dir();
    let mut state = match list_checkpoints(&ckpt_dir)?.pop() {
        Some((step, path)) => {
            tracing::info!(step, path = %path.display(), "resuming");
            let mut state = restore(&path, &mut p, &mut rng)?;
            // A run reopened under a raised cap goes on from its checkpoint at the old cap;
            // the loop below stops it again if the cap is where it was.
            if state.stop == Some(RunStatus::Capped) {
                state.stop = None;
            }
            state
        }
        None => TrainState::fresh(&p),
    };
    let mut metrics = MetricsLog::open(
        &run_dir.metrics_path(),
        Some(state.step).filter(|_| state.step > 0 || state.logged_initial),
    )?;
    if !state.logged_initial {
        // A fresh run: drop whatever a killed first session logged, then log the initial point.
        metrics = MetricsLog::create(&run_dir.metrics_path())?;
        let record = log_record(config, &mut p, &mut state, true)?;
        metrics.append(&record)?;
        state.logged_initial = true;
        save(
            &crate::checkpoint::checkpoint_path(&ckpt_dir, 0),
            &p,
            &state,
            &rng,
        )?;
    }

    let session = Instant::now();
    let wall_before = state.wall_s;
    let max_steps = config
        .stop
        .max_steps
        .unwrap_or(u64::MAX)
        .min(config.stop.max_epochs as u64 * p.steps_per_epoch);
    let bar = progress_bar(opts, max_steps, state.step, &config.name);
    while state.stop.is_none() {
        if state.step >= max_steps {
            state.stop = Some(RunStatus::Capped);
            break;
        }
        let t0 = Instant::now();
        let batch = p.loader.next_batch(&p.device)?;
        let x = batch.images.to_dtype(p.dtype)?;
        let out = match &batch.mix {
            // Validation refuses Mixup with a penalty, so a mixed batch is a plain step.
            Some((labels_b, lambda)) => {
                mixup_objective(p.model.as_ref(), &x, &batch.labels, labels_b, *lambda)?
            }
            None => step_objective(
                p.model.as_ref(),
                &x,
                &batch.labels,
                &config.penalty,
                state.step,
                &mut rng,
            )?,
        };
        let diverged = !out.loss.is_finite() || out.penalty.is_some_and(|v| !v.is_finite());
        let mut grads = out.grads;
        let grad_norm = if diverged {
            f64::NAN
        } else {
            global_grad_norm(&grads)?
        };
        if diverged || !grad_norm.is_finite() {
            tracing::warn!(step = state.step, loss = out.loss, grad_norm, "diverged");
            state.stop = Some(RunStatus::Diverged);
            state.diverged_at_step = Some(state.step);
            break;
        }
        if let Some(max) = config.optim.clip_grad_norm {
            clip_grad_norm(&mut grads, max)?;
        }
        state.lr = p.sgd.current_lr();
        let vars: Vec<_> = p.model.params().iter().map(|q| q.var.clone()).collect();
        p.sgd.step(&vars, &grads)?;
        state.step += 1;
        state.grad_norm = grad_norm;
        let dt = t0.elapsed().as_secs_f64();
        for acc in [&mut state.window, &mut state.epoch] {
            acc.add(out.loss, out.correct, out.n, out.penalty, dt);
        }
        let epoch_end = state.step % p.steps_per_epoch == 0;
        if epoch_end {
            let epoch_acc = state.epoch.acc();
            if config.stop.train_acc.is_some_and(|t| epoch_acc >= t) {
                tracing::info!(
                    step = state.step,
                    epoch_acc,
                    "training-accuracy threshold reached"
                );
                state.stop = Some(RunStatus::Converged);
            }
            state.epoch = Accum::default();
        }
        let last = state.stop.is_some() || state.step >= max_steps;
        if last || should_log(&config.tracking, state.step, p.steps_per_epoch) {
            let record = log_record(config, &mut p, &mut state, epoch_end || last)?;
            tracing::debug!(
                step = record.step,
                loss = record.train_loss,
                acc = record.train_acc,
                "logged"
            );
            metrics.append(&record)?;
        }
        let epoch = state.step / p.steps_per_epoch;
        let ckpt_due = (epoch_end && epoch % config.tracking.checkpoint_every_epochs as u64 == 0)
            || (config.tracking.checkpoint_every_steps > 0
                && state.step % config.tracking.checkpoint_every_steps == 0);
        if ckpt_due || last {
            state.wall_s = wall_before + session.elapsed().as_secs_f64();
            save(
                &crate::checkpoint::checkpoint_path(&ckpt_dir, state.step),
                &p,
                &state,
                &rng,
            )?;
            if !opts.keep_all_checkpoints {
                prune_checkpoints(&ckpt_dir, KEEP_CHECKPOINTS)?;
            }
        }
        if let Some(b) = &bar {
            b.set_position(state.step);
        }
        if opts.stop_after_step == Some(state.step) {
            return Ok(Outcome::Interrupted { step: state.step });
        }
    }
    if let Some(b) = bar.filter(|_| opts.bar.is_none()) {
        b.finish_and_clear();
    }
    let summary = finish(
        config,
        &mut p,
        &state,
        wall_before + session.elapsed().as_secs_f64(),
    )?;
    run_dir.write_summary(&summary)?;
    tracing::info!(run = %run_dir.root.display(), status = ?summary.status, test_acc = ?summary.final_metrics.test_acc, "finished");
    Ok(Outcome::Finished(summary))
}

/// Turns on Candle's double backprop for this process (HVPs, penalties) and checks it works on
/// this thread; must run before the thread's first backward pass (SCIENCE.md §7). Idempotent.
pub fn enable_second_order() -> Result<(), RunError> {
    breakeven_curvature::enable_double_backprop().map_err(|e| {
        RunError::Other(format!(
            "{e}: second-order gradients need CANDLE_GRAD_DO_NOT_DETACH=1 before the first backward pass of the thread"
        ))
    })
}

/// A metrics record for the current step; resets the window accumulator. `full` adds the
/// validation and test sets (expensive on real data, so only at epoch ends).
fn log_record(
    config: &RunConfig,
    p: &mut Prepared,
    state: &mut TrainState,
    full: bool,
) -> Result<MetricsRecord, RunError> {
    let model = p.model.as_ref();
    let (measure_loss, measure_acc) = evaluate(model, &p.measure)?;
    let mut r = MetricsRecord {
        step: state.step,
        epoch: state.step as f64 / p.steps_per_epoch as f64,
        lr: state.lr,
        train_loss: state.window.loss(),
        train_acc: state.window.acc(),
        penalty: state.window.penalty(),
        measure_loss: Some(measure_loss),
        measure_acc: Some(measure_acc),
        grad_norm: state.grad_norm,
        weight_norm: weight_norm(model)?,
        step_time_s: state.window.time_per_step(),
        ..Default::default()
    };
    if full && config.tracking.eval_test {
        if let Some(val) = &p.val {
            let (l, a) = evaluate(model, val)?;
            (r.val_loss, r.val_acc) = (Some(l), Some(a));
        }
        let (l, a) = evaluate(model, &p.test)?;
        (r.test_loss, r.test_acc) = (Some(l), Some(a));
    }
    if let Some(sets) = &p.noise {
        (r.train_acc_clean, r.train_acc_noisy, r.train_acc_noisy_true) = noise_fit(model, sets)?;
    }
    if config.tracking.curvature {
        r.curvature = Some(measure_curvature(config, p, state.step)?);
    }
    state.window = Accum::default();
    Ok(r)
}

/// Final evaluation on train (no augmentation), validation and test, and the summary.
fn finish(
    config: &RunConfig,
    p: &mut Prepared,
    state: &TrainState,
    wall_s: f64,
) -> Result<Summary, RunError> {
    let model = p.model.as_ref();
    let mut f = FinalMetrics::default();
    if state.stop != Some(RunStatus::Diverged) {
        let (l, a) = evaluate_streamed(model, &p.train_eval, &p.device)?;
        (f.train_loss, f.train_acc) = (Some(l), Some(a));
        if let Some(val) = &p.val {
            let (l, a) = evaluate(model, val)?;
            (f.val_loss, f.val_acc) = (Some(l), Some(a));
        }
        let (l, a) = evaluate(model, &p.test)?;
        (f.test_loss, f.test_acc) = (Some(l), Some(a));
    }
    Ok(Summary {
        name: config.name.clone(),
        status: state.stop.unwrap_or(RunStatus::Capped),
        diverged_at_step: state.diverged_at_step,
        steps: state.step,
        epochs: state.step as f64 / p.steps_per_epoch as f64,
        final_metrics: f,
        wall_s,
        git_revision: git_revision(),
        hardware: Some(crate::device::hardware_description(
            &config.device.to_string(),
        )),
    })
}

fn progress_bar(
    opts: &TrainOptions,
    total: u64,
    at: u64,
    name: &str,
) -> Option<indicatif::ProgressBar> {
    let bar = match (&opts.bar, opts.progress) {
        (Some(bar), _) => bar.clone(),
        (None, true) => indicatif::ProgressBar::new(total),
        (None, false) => return None,
    };
    bar.set_length(total);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{msg} [{bar:30}] {pos}/{len} steps, {elapsed} elapsed, ETA {eta}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar.set_message(name.to_string());
    bar.set_position(at);
    Some(bar)
}
