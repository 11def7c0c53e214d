//! The last backward pass of a computation, run where Candle keeps no graph.
//!
//! Double backprop needs Candle's `CANDLE_GRAD_DO_NOT_DETACH`, which Candle latches per thread
//! at the thread's first backward pass. With it every gradient of every backward pass keeps its
//! graph, also the gradients of the LAST pass, which nothing differentiates again: a
//! Hessian-vector product's second backward then holds every intermediate gradient until the
//! product is read out (measured +1.9 GB for SimpleCNN at batch 128 against PyTorch's +0.28 GB).
//!
//! So [`enable_double_backprop`](crate::enable_double_backprop) first starts one worker thread
//! and lets it latch the flag while the variable is still unset; [`backward_detached`] runs a
//! backward pass on that worker, where Candle detaches each gradient once it is used and frees
//! it. Same numbers (detaching changes which graph is kept, never a value), less memory. Where
//! the worker could not latch the flag off (the variable was exported before the process
//! started, or set by another thread first), the pass runs on the calling thread, as before.

use std::sync::mpsc::{channel, Sender};
use std::sync::{Mutex, OnceLock};

use candle_core::backprop::GradStore;
use candle_core::Tensor;

use crate::second_order::candle_keeps_graphs;

type Job = Box<dyn FnOnce() + Send>;

/// The worker's queue: `None` when no worker detaches (see the module docs).
static WORKER: OnceLock<Option<Mutex<Sender<Job>>>> = OnceLock::new();

/// Starts the worker (once per process) and records whether it detaches. Call before setting
/// the variable; later calls are free.
pub(crate) fn start_worker() {
    WORKER.get_or_init(|| {
        let (jobs, queue) = channel::<Job>();
        let (ready, latched) = channel();
        let spawned = std::thread::Builder::new()
            .name("breakeven-detached-backward".into())
            .spawn(move || {
                let _ = ready.send(candle_keeps_graphs());
                for job in queue {
                    job();
                }
            });
        match (spawned, latched.recv()) {
            (Ok(_), Ok(Ok(false))) => Some(Mutex::new(jobs)),
            _ => {
                tracing::debug!("no detaching backward worker: Candle keeps graphs on it");
                None
            }
        }
    });
}

/// Whether [`backward_detached`] runs on a worker that keeps no graph.
pub fn detached_worker_available() -> bool {
    matches!(WORKER.get(), Some(Some(_)))
}

/// `t.backward()`, on the detaching worker when there is one and `t` is on the CPU (see the
/// module docs): for a backward pass whose gradients are read, not differentiated again
/// (the second pass of a Hessian-vector product, per-example gradients, plain gradients).
pub fn backward_detached(t: &Tensor) -> candle_core::Result<GradStore> {
    let Some(Some(queue)) = WORKER.get() else {
        return t.backward();
    };
    // A CUDA context is bound per thread; keep GPU passes where their context is.
    if !t.device().is_cpu() {
        return t.backward();
    }
    let (reply, answer) = channel();
    let t = t.clone();
    let job: Job = Box::new(move || {
        // A panic inside Candle's backward becomes an error here and the worker lives on.
        let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| t.backward()))
            .unwrap_or_else(|_| {
                Err(candle_core::Error::Msg(
                    "backward pass panicked on the detached worker".into(),
                ))
            });
        let _ = reply.send(out);
    });
    let sent = queue
        .lock()
        .map_err(|_| candle_core::Error::Msg("detached backward worker lock poisoned".into()))?
        .send(job);
    if sent.is_err() {
        candle_core::bail!("the detached backward worker has stopped");
    }
    answer
        .recv()
        .map_err(|_| candle_core::Error::Msg("the detached backward worker dropped a job".into()))?
}
