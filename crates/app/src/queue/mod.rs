//! The executions this server runs: at most `--max-concurrent` at once, the rest queued in
//! FIFO order, each with a live event buffer that SSE clients follow.
//!
//! Every execution started here has a [`Live`] from the moment its row is written until it has
//! ended and its final state is in the store. The `Live` keeps the execution's latest events in
//! memory (~16 MiB of them, or the last 4,096 when those hold more, up to 64 MiB) next to a broadcast
//! channel: a subscriber copies the buffer and subscribes under one lock, so it misses nothing
//! and sees nothing twice, even for events the recorder has not written to the store yet (it
//! batches log lines); the events before those kept, the store has, and a late subscriber
//! reads them there first (`crates/server/src/sse.rs`).
//!
//! Locks: `Executions::inner` may be held while the store is locked, never the other way round.

use crate::SharedStore;
use crate::runner::{self, Prepared, RunError};
use flowrun_events::{Envelope, ErrorInfo, ErrorKind, ExecStatus, NodeStatus, now_ms};
use flowrun_executor::StopReason;
use flowrun_store::Request;
use futures_util::FutureExt;
use std::collections::{HashMap, VecDeque};
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::{Notify, watch};

mod live;

pub use live::Live;
use live::LiveSink;

struct Job {
    prepared: Prepared,
    live: Arc<Live>,
    stop_rx: watch::Receiver<Option<StopReason>>,
    /// Its definition's and trigger's bytes, as JSON: what it holds while it waits.
    bytes: usize,
}

/// The most executions that may wait to start, and the most memory they may hold by
/// [`held_by`]'s estimate: past either, a submission is refused rather than held, whatever a
/// client sends.
pub const MAX_QUEUED: usize = 10_000;
pub const MAX_QUEUED_BYTES: usize = 256 << 20;

/// What a queued execution's prepared form holds for each byte of its definition's text (the
/// parsed definition, its plan, the rendered script: each has the strings), and for each node
/// beyond its strings (measured: a 3.7 MB definition of 40,000 small nodes held ~120 MB while
/// queued; one with a 9 MiB name, about three times that).
const PREPARED_PER_DEFINITION_BYTE: usize = 4;
const PREPARED_PER_NODE: usize = 3 << 10;

/// The memory a queued execution holds, estimated: its prepared definition, its trigger, and the
/// environment variables and secrets its request gave (which the definition's size says nothing
/// of: up to ~2 MiB).
fn held_by(prepared: &runner::Prepared) -> usize {
    let env: usize = prepared
        .options
        .env
        .iter()
        .map(|(k, v)| k.len() + v.len())
        .sum();
    let secrets: usize = prepared
        .redacted
        .iter()
        .map(|(k, v)| k.len() + v.len())
        .sum();
    prepared.definition.to_string().len() * PREPARED_PER_DEFINITION_BYTE
        + prepared.plan.workflow.nodes.len() * PREPARED_PER_NODE
        + prepared.trigger_json.len()
        + env
        + secrets
}

#[derive(Default)]
struct Inner {
    /// Queued and running executions of this server.
    live: HashMap<String, Arc<Live>>,
    queue: VecDeque<(String, Job)>,
    running: usize,
    /// Shutting down: nothing new is accepted or started.
    closed: bool,
}

/// Why an execution was not accepted.
#[derive(Debug)]
pub enum SubmitError {
    ShuttingDown,
    /// The queue holds [`MAX_QUEUED`] executions or [`MAX_QUEUED_BYTES`] already.
    QueueFull {
        waiting: usize,
        bytes: usize,
    },
    Run(RunError),
}

/// What a stop request did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    /// It was queued: it is now `cancelled`, never started.
    Dequeued,
    /// It runs here and is being stopped.
    Stopping,
    /// It runs in another flowrun process, which was asked through the store.
    Requested,
    /// It had already ended with this status.
    AlreadyEnded(ExecStatus),
}

/// What [`Executions::pause`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Paused {
    /// It runs here: it pauses once the nodes running now have ended.
    Pausing,
    /// It runs in another flowrun process, which was asked through the store.
    Requested,
    /// It is still queued: nothing of it runs, so there is nothing to pause.
    Queued,
    /// It is not running (it ended with this status).
    NotRunning(ExecStatus),
}

pub struct Executions {
    store: SharedStore,
    max_concurrent: usize,
    inner: Mutex<Inner>,
    /// `(running, queued)` as of the last change, read without `inner`: that lock is held while
    /// the store is written, which can wait up to 30 s for another process, and `GET /api`
    /// answers meanwhile.
    counts: [AtomicUsize; 2],
    /// Wakes `shutdown` when an execution ends.
    ended: Notify,
}

impl Executions {
    pub fn new(store: SharedStore, max_concurrent: usize) -> Arc<Executions> {
        Arc::new(Executions {
            store,
            max_concurrent: max_concurrent.max(1),
            inner: Mutex::new(Inner::default()),
            counts: Default::default(),
            ended: Notify::new(),
        })
    }

    pub fn max_concurrent(&self) -> usize {
        self.max_concurrent
    }

    /// `(running, queued)` counts.
    pub fn counts(&self) -> (usize, usize) {
        let [running, queued] = &self.counts;
        (
            running.load(Ordering::Relaxed),
            queued.load(Ordering::Relaxed),
        )
    }

    /// Makes `inner`'s counts what [`counts`](Self::counts) reads; called after each change.
    fn publish(&self, inner: &Inner) {
        self.counts[0].store(inner.running, Ordering::Relaxed);
        self.counts[1].store(inner.queue.len(), Ordering::Relaxed);
    }

    /// The live view of an execution this server has queued or running.
    pub fn live(&self, id: &str) -> Option<Arc<Live>> {
        crate::lock(&self.inner).live.get(id).cloned()
    }

    /// Records a prepared execution and starts it, or queues it when `max_concurrent` run
    /// already. Blocking (writes the store): call from a blocking thread. Must be called from
    /// within the runtime (it spawns the execution's task).
    pub fn submit(
        self: &Arc<Self>,
        prepared: Prepared,
    ) -> Result<(String, ExecStatus), SubmitError> {
        let id = runner::new_execution_id();
        let mut inner = crate::lock(&self.inner);
        if inner.closed {
            return Err(SubmitError::ShuttingDown);
        }
        let start_now = inner.running < self.max_concurrent && inner.queue.is_empty();
        let bytes = if start_now {
            0
        } else {
            let bytes = held_by(&prepared);
            let held: usize = inner.queue.iter().map(|(_, j)| j.bytes).sum();
            if inner.queue.len() >= MAX_QUEUED || held + bytes > MAX_QUEUED_BYTES {
                return Err(SubmitError::QueueFull {
                    waiting: inner.queue.len(),
                    bytes: held,
                });
            }
            bytes
        };
        let status = if start_now {
            ExecStatus::Running
        } else {
            ExecStatus::Queued
        };
        runner::record_start(&self.store, &prepared, &id, status).map_err(SubmitError::Run)?;
        let (live, stop_rx) = Live::new(&id);
        inner.live.insert(id.clone(), live.clone());
        let job = Job {
            prepared,
            live,
            stop_rx,
            bytes,
        };
        if start_now {
            inner.running += 1;
            self.publish(&inner);
            drop(inner);
            self.spawn_run(id.clone(), job);
        } else {
            inner.queue.push_back((id.clone(), job));
            self.publish(&inner);
        }
        Ok((id, status))
    }

    /// Runs the execution in a task of its own, which, once the end is recorded, makes the
    /// record a caller waits for, frees the execution's slot (starting what is queued) and
    /// then says it is done: all in that one task, since every hand-over to another task or
    /// thread is a wake-up on the way of a `?wait=true` answer.
    fn spawn_run(self: &Arc<Self>, id: String, job: Job) {
        let this = self.clone();
        tokio::runtime::Handle::current().spawn(async move {
            let Job {
                prepared,
                live,
                stop_rx,
                ..
            } = job;
            let mut sink = LiveSink(live.clone());
            let run = runner::run(&this.store, &prepared, &id, &mut sink, stop_rx);
            let status = match AssertUnwindSafe(run).catch_unwind().await {
                Ok(finished) => {
                    if let Some(e) = &finished.store_error {
                        this.settle_unrecorded(&id, e);
                    }
                    finished.outcome.status
                }
                Err(panic) => {
                    // A bug, not the workflow: record it rather than leave the row running and
                    // the queue one slot short.
                    let what = crate::shared::panic_message(&*panic);
                    tracing::error!("execution {id}: {what}");
                    let err = ErrorInfo::of(
                        ErrorKind::InternalError,
                        format!("flowrun serve: the execution's task panicked: {what}"),
                    );
                    // In the task, as its other writes are (a wait for the store is off the
                    // workers).
                    let _ = crate::control::abandon(
                        &mut this.store.lock(),
                        &id,
                        ExecStatus::Error,
                        &err,
                    );
                    ExecStatus::Error
                }
            };
            // The store has the final state now: subscribers that come later read it there.
            // Whatever happens in between, `done` is sent: a caller waits for it.
            let _ = std::panic::catch_unwind(AssertUnwindSafe(|| {
                live.make_record(&this.store);
                this.finished(&id);
            }));
            live.done.send_replace(Some(status));
            this.ended.notify_waiters();
            live.trim_after();
        });
    }

    /// An execution ended: forget it and start what the queue allows (a store write for each
    /// one started, as the runner's own writes are, in the task).
    fn finished(self: &Arc<Self>, id: &str) {
        let mut inner = crate::lock(&self.inner);
        inner.live.remove(id);
        inner.running = inner.running.saturating_sub(1);
        self.start_queued(inner);
    }

    /// Starts queued executions while there is room. Takes the lock guard and releases it.
    fn start_queued(self: &Arc<Self>, mut inner: MutexGuard<'_, Inner>) {
        let mut start = Vec::new();
        while !inner.closed && inner.running < self.max_concurrent {
            let Some((id, job)) = inner.queue.pop_front() else {
                break;
            };
            let (pid, start_time) = flowrun_executor::process::own_start();
            let res = self.store.lock().set_running(&id, pid, start_time);
            if let Err(e) = res {
                tracing::warn!("marking execution {id} running: {e}");
            }
            inner.running += 1;
            start.push((id, job));
        }
        self.publish(&inner);
        drop(inner);
        for (id, job) in start {
            self.spawn_run(id, job);
        }
    }

    /// Stops an execution: dequeues it, stops it here, or asks its runner through the store.
    /// Blocking (store access).
    pub fn stop(self: &Arc<Self>, id: &str) -> Result<Stopped, flowrun_store::StoreError> {
        let inner = crate::lock(&self.inner);
        let Some(inner) = self.cancel_if_queued(inner, id) else {
            return Ok(Stopped::Dequeued);
        };
        if let Some(live) = inner.live.get(id).cloned() {
            drop(inner);
            // Recorded in the store too, like `flowrun stop` does.
            let _ = self.store.lock().request_stop(id, now_ms());
            live.cancel();
            return Ok(Stopped::Stopping);
        }
        drop(inner);
        let mut store = self.store.lock();
        let e = store.execution(id)?;
        if e.status.is_final() {
            return Ok(Stopped::AlreadyEnded(e.status));
        }
        // Not ours to run (any more): a runner in another process, or this server's run whose
        // end the store did not take (see `settle_unrecorded`), which nothing else would end.
        // This very process: its pid and its start time (another process in another pid
        // namespace, a container sharing the database, may have the same pid).
        if e.runner == Some(flowrun_executor::process::own_start()) {
            let err = ErrorInfo::of(ErrorKind::Cancelled, "stopped by request");
            crate::control::abandon(&mut store, id, ExecStatus::Cancelled, &err)?;
            return Ok(Stopped::AlreadyEnded(ExecStatus::Cancelled));
        }
        store.request_stop(id, now_ms())?;
        // A runner that is gone will never answer: record what recovery would.
        crate::control::recover(&mut store);
        Ok(Stopped::Requested)
    }

    /// Pauses an execution: a running one here, or through the store (its runner is another
    /// process). Blocking (store access). A queued one has nothing to pause yet.
    pub fn pause(self: &Arc<Self>, id: &str) -> Result<Paused, flowrun_store::StoreError> {
        let inner = crate::lock(&self.inner);
        if inner.queue.iter().any(|(q, _)| q == id) {
            return Ok(Paused::Queued);
        }
        if let Some(live) = inner.live.get(id).cloned() {
            drop(inner);
            let _ = crate::control::request_pause(&mut self.store.lock(), id);
            live.pause();
            return Ok(Paused::Pausing);
        }
        drop(inner);
        let mut store = self.store.lock();
        let e = store.execution(id)?;
        if e.status != ExecStatus::Running {
            return Ok(Paused::NotRunning(e.status));
        }
        crate::control::request_pause(&mut store, id)?;
        Ok(Paused::Requested)
    }

    /// Records a queued execution `cancelled` without starting it: its events are
    /// `execution_start` and `execution_end` (no node ran).
    fn cancel_queued(&self, id: &str, job: Job, why: &str) {
        let p = &job.prepared;
        let wf = &p.plan.workflow;
        let at = now_ms();
        let events = crate::synthetic::never_started(
            &wf.id,
            wf.display_name(),
            &p.options.mode,
            p.plan.ordered_nodes().map(|n| n.id.clone()).collect(),
            ExecStatus::Cancelled,
            ErrorInfo::of(ErrorKind::Cancelled, why),
            at,
        );
        let error = ErrorInfo::of(ErrorKind::Cancelled, why);
        let res = self.store.lock().end_abandoned(
            id,
            ExecStatus::Cancelled,
            &error,
            NodeStatus::Cancelled,
            flowrun_store::EndTime::Now(at),
            |_, _| events.clone(),
        );
        if let Err(e) = res {
            tracing::warn!("recording the cancellation of {id}: {e}");
        }
        for (i, event) in events.into_iter().enumerate() {
            job.live.push(Envelope {
                seq: i as u64 + 1,
                execution_id: id.to_string(),
                event,
            });
        }
        job.live.done.send_replace(Some(ExecStatus::Cancelled));
        crate::lock(&self.inner).live.remove(id);
        self.ended.notify_waiters();
    }

    /// Stops or pauses the executions of this server that someone asked to through the store
    /// (`flowrun stop`/`pause` from another process): queued ones are dequeued, running ones
    /// stopped or paused. Runs until aborted.
    pub async fn watch_requests(self: Arc<Self>) {
        let ids = {
            let this = self.clone();
            move || crate::lock(&this.inner).live.keys().cloned().collect()
        };
        let this = self.clone();
        crate::control::watch_requests(self.store.clone(), ids, move |id, request| {
            let this = this.clone();
            match request {
                // Dequeuing writes the store: off the async threads.
                Request::Stop => drop(tokio::task::spawn_blocking(move || this.stop_here(&id))),
                Request::Pause => {
                    if let Some(live) = crate::lock(&this.inner).live.get(&id) {
                        live.pause();
                    }
                }
            }
        })
        .await
    }

    /// An execution whose end the store did not take: its row must not stay `running`, which
    /// no recovery would end (its runner, this server, is alive). Once more, as an error; if
    /// that fails too, a stop request ends it ([`Executions::stop`]) or the next start of
    /// `serve` does.
    fn settle_unrecorded(&self, id: &str, why: &str) {
        let mut store = self.store.lock();
        if store.execution(id).is_ok_and(|e| !e.status.is_final()) {
            let err = ErrorInfo::of(
                ErrorKind::StoreError,
                format!("the execution could not be recorded completely: {why}"),
            );
            let _ = crate::control::abandon(&mut store, id, ExecStatus::Error, &err);
        }
    }

    /// Stops an execution of this server: dequeues it or stops it. Blocking.
    fn stop_here(self: &Arc<Self>, id: &str) {
        let inner = crate::lock(&self.inner);
        if let Some(inner) = self.cancel_if_queued(inner, id)
            && let Some(live) = inner.live.get(id)
        {
            live.cancel();
        }
    }

    /// A stop request for `id`: when it is queued, takes it out and records it `cancelled`
    /// (the lock released first) and returns `None`; else gives the lock back.
    fn cancel_if_queued<'a>(
        self: &Arc<Self>,
        mut inner: MutexGuard<'a, Inner>,
        id: &str,
    ) -> Option<MutexGuard<'a, Inner>> {
        let Some(pos) = inner.queue.iter().position(|(q, _)| q == id) else {
            return Some(inner);
        };
        let (_, job) = inner.queue.remove(pos).expect("position is in the queue");
        self.publish(&inner);
        drop(inner);
        self.cancel_queued(id, job, "stopped by request before it started");
        None
    }

    /// Ends everything for shutdown: queued executions are cancelled, running ones stopped like
    /// `flowrun stop` stops them; returns when all have ended.
    pub async fn shutdown(self: &Arc<Self>) {
        let this = self.clone();
        let _ = tokio::task::spawn_blocking(move || {
            let (queued, running) = {
                let mut inner = crate::lock(&this.inner);
                inner.closed = true;
                let queued: Vec<(String, Job)> = inner.queue.drain(..).collect();
                this.publish(&inner);
                let running: Vec<Arc<Live>> = inner.live.values().cloned().collect();
                (queued, running)
            };
            for (id, job) in queued {
                this.cancel_queued(&id, job, "the server shut down before it started");
            }
            for live in running {
                let _ = this.store.lock().request_stop(&live.id, now_ms());
                live.shut_down();
            }
        })
        .await;
        loop {
            let ended = self.ended.notified();
            if crate::lock(&self.inner).live.is_empty() {
                return;
            }
            // A notification between the check and the wait is not lost (`notified` was
            // created first); the timeout is a second safety net.
            let _ = tokio::time::timeout(Duration::from_millis(200), ended).await;
        }
    }
}

/// The final status once the execution has ended (`None` if its sender is gone first).
pub async fn wait_done(mut done: watch::Receiver<Option<ExecStatus>>) -> Option<ExecStatus> {
    loop {
        let now = *done.borrow_and_update();
        if now.is_some() {
            return now;
        }
        done.changed().await.ok()?;
    }
}
