//! Stopping, killing and recovering executions, from any process: the one place that decides
//! whether a recorded process group may be signalled, and that records an execution ended when
//! its runner cannot.
//!
//! - [`open_store`]: every flowrun command opens the store through here, which first
//!   [`recover`]s: executions left `running` by a dead runner become `interrupted`, and whatever
//!   of their process group still lives is killed. A runner counts as gone when no process has
//!   its recorded pid with its recorded start time (so a reused pid is not mistaken for it).
//! - [`stop`]: asks an execution's runner through the store and waits; kills the group itself
//!   when the runner is gone or does not answer.
//! - [`pause`]: asks an execution's runner through the store to pause it, and waits a while.
//! - [`watch_requests`]: the one poller of those requests, in the runners.

use crate::SharedStore;
use flowrun_events::{ErrorInfo, ErrorKind, ExecStatus, NodeStatus, now_ms};
use flowrun_executor::process::{is_same_process, signal_group};
use flowrun_executor::tree;
use flowrun_store::{EndTime, Request, Store, StoreError};
use nix::sys::signal::Signal;
use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

/// Opens the store (`db`, else the default path) and brings its schema up to date. Before
/// using it, a front end runs [`recover`] (apart, so that opening can overlap other work that
/// may still fail and must then change nothing).
pub fn open(db: Option<&Path>) -> Result<Store, StoreError> {
    Store::open(&crate::paths::database(db))
}

/// Marks executions of dead runners `interrupted` (ending what is left of their processes).
/// Returns their ids.
pub fn recover(store: &mut Store) -> Vec<String> {
    let Ok(unfinished) = store.unfinished() else {
        return Vec::new();
    };
    let mut done = Vec::new();
    for e in unfinished {
        let Some((pid, start)) = e.runner else {
            continue;
        };
        if is_same_process(pid, start) {
            continue;
        }
        if let Some(p) = e.process {
            end_process_tree(p);
        }
        let err = ErrorInfo::of(
            ErrorKind::Interrupted,
            format!(
                "the flowrun process running this execution (pid {pid}) ended before it did, at a moment not recorded: its duration is not known"
            ),
        );
        let found = EndTime::Unknown { found: now_ms() };
        if let Ok(true) = abandon_at(store, &e.id, ExecStatus::Interrupted, &err, found) {
            done.push(e.id);
        }
    }
    done
}

/// Ends an execution's processes from outside its runner: the tree under its shepherd (wherever
/// in it a process went: the shepherd is their subreaper), then its process group — each only
/// while it is still the execution's.
fn end_process_tree(p: flowrun_store::ProcessRow) {
    if is_same_process(p.pid, p.start_time) {
        tree::kill_tree(p.pid, p.start_time, Duration::from_secs(2));
    }
    if group_is_ours(p.pid, p.start_time) {
        signal_group(p.pgid, Signal::SIGKILL);
    }
}

/// May the group led by `pid` be signalled? Yes when its leader is still the recorded process,
/// and yes when no process has that pid any more: the kernel never hands out a pid that is still
/// in use as a process group id, so a group without its leader can only hold the execution's own
/// survivors. No when the pid now belongs to a different process (the group is gone and the pid
/// was reused).
pub(crate) fn group_is_ours(pid: i32, start_time: Option<u64>) -> bool {
    match flowrun_executor::process::process_start_time(pid) {
        None => true,
        Some(_) => is_same_process(pid, start_time),
    }
}

/// Makes this process the reaper of orphaned descendants, so what an execution leaves behind is
/// re-parented here, where it can be found, killed and reaped.
pub fn become_subreaper() {
    flowrun_executor::process::become_subreaper();
}

/// What an execution does while the warm template for it is starting: goes cold (`serve`) or,
/// after the first, waits for it (`test`).
pub use flowrun_executor::warm::Policy as WarmPolicy;

/// Turns on warm starts for this process: executions are forked from a template interpreter
/// (see `flowrun_executor::warm`) and fall back to cold starts. Call [`become_subreaper`] first:
/// a warm execution becomes this process's child by being re-parented to it.
pub fn enable_warm_starts(policy: WarmPolicy) {
    // The templates' compiled code goes beside the scripts' (see `flowrun_executor::warm`);
    // without a private cache directory, each template compiles its source as it starts.
    let cache = crate::paths::cache_dir();
    let cache = crate::paths::private_dir(&cache).ok().map(|()| cache);
    flowrun_executor::warm::enable(policy, cache);
}

/// Records the end of an execution its runner cannot end (dead, unresponsive, or a bug): the
/// execution ends `status` with `error`, its running nodes `cancelled`, and its event stream gets
/// their `node_end`s and an `execution_end` (see [`crate::synthetic::abandoned`]). False when it
/// had ended already.
pub(crate) fn abandon(
    store: &mut Store,
    id: &str,
    status: ExecStatus,
    error: &ErrorInfo,
) -> Result<bool, StoreError> {
    abandon_at(store, id, status, error, EndTime::Now(now_ms()))
}

/// As [`abandon`], for an execution that ended at `end` — one whose runner died at an unknown
/// moment has no duration ([`EndTime::Unknown`]), rather than the time until it was found.
pub(crate) fn abandon_at(
    store: &mut Store,
    id: &str,
    status: ExecStatus,
    error: &ErrorInfo,
    end: EndTime,
) -> Result<bool, StoreError> {
    store.end_abandoned(
        id,
        status,
        error,
        NodeStatus::Cancelled,
        end,
        |state, ended_with| {
            let errors = (error, ended_with);
            crate::synthetic::abandoned(state, status, NodeStatus::Cancelled, errors, end)
        },
    )
}

/// What [`stop`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopOutcome {
    /// It had ended before the request, with this status.
    AlreadyEnded(ExecStatus),
    /// Its runner stopped it; it ended with this status.
    Stopped(ExecStatus),
    /// Its runner was gone or did not answer in time: the group was killed here (if it was
    /// still the execution's) and the execution recorded `cancelled`.
    Forced,
}

/// How long a stop may take before [`stop`]'s caller is told it waits: a runner answers in
/// ~100 ms, and its nodes end at once unless one ignores SIGTERM.
pub const STOP_SLOW_AFTER: Duration = Duration::from_millis(500);

/// How long [`stop`] waits for a live runner to answer: it polls every 100 ms and then takes
/// at most its kill grace period (default 2 s).
pub const STOP_ANSWER_WAIT: Duration = Duration::from_secs(10);

/// Stops execution `id` (a full id) from any process: records the request, which its runner
/// sees within 100 ms, and waits for the execution to end. If its runner is gone, or does not
/// answer within [`STOP_ANSWER_WAIT`], kills the group itself — only when it is still the
/// execution's (see [`group_is_ours`]) — and records the execution `cancelled`. `slow` is
/// called once if the execution has not ended after [`STOP_SLOW_AFTER`] (its nodes have their
/// grace period): for the caller to say what it waits for.
pub fn stop(store: &mut Store, id: &str, slow: impl FnOnce()) -> Result<StopOutcome, StoreError> {
    let e = store.execution(id)?;
    if e.status.is_final() {
        return Ok(StopOutcome::AlreadyEnded(e.status));
    }
    store.request_stop(id, now_ms())?;
    let asked = Instant::now();
    let deadline = asked + STOP_ANSWER_WAIT;
    let mut slow = Some(slow);
    loop {
        if asked.elapsed() >= STOP_SLOW_AFTER {
            if let Some(f) = slow.take() {
                f();
            }
        }
        let e = store.execution(id)?;
        if e.status.is_final() {
            return Ok(StopOutcome::Stopped(e.status));
        }
        // A runner that is stopped (Ctrl-Z) cannot answer: treat it like a dead one.
        let runner_alive = e.runner.filter(|&(pid, st)| is_same_process(pid, st));
        let runner_answers = runner_alive.is_some_and(|(pid, _)| !tree::is_stopped(pid));
        if !runner_answers || Instant::now() >= deadline {
            if let Some(p) = e.process {
                end_process_tree(p);
            }
            let err = ErrorInfo::of(
                ErrorKind::Cancelled,
                "stopped by request (the runner did not respond)",
            );
            // A runner that died took the execution with it, at a moment nobody recorded.
            let end = match (runner_alive, e.runner) {
                (None, Some(_)) => EndTime::Unknown { found: now_ms() },
                _ => EndTime::Now(now_ms()),
            };
            abandon_at(store, id, ExecStatus::Cancelled, &err, end)?;
            return Ok(StopOutcome::Forced);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// What [`pause`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PauseOutcome {
    /// It was not running (queued, or ended with this status): nothing to pause.
    NotRunning(ExecStatus),
    /// Its runner paused it (or it ended otherwise meanwhile, with this status).
    Ended(ExecStatus),
    /// Asked: it pauses once the nodes running now have ended, which had not happened within
    /// the wait.
    Requested,
}

/// How long [`pause`] waits for the execution to pause before saying it was asked.
pub const PAUSE_ANSWER_WAIT: Duration = Duration::from_secs(10);

/// Pauses execution `id` (a full id) from any process: records the request, which its runner
/// sees within [`REQUEST_POLL`] and passes to the runtime (no new node starts; the running
/// ones finish), and waits up to `wait` for the execution to end. A paused execution keeps its
/// state in the store and has no process left; `resume` continues it.
pub fn pause(store: &mut Store, id: &str, wait: Duration) -> Result<PauseOutcome, StoreError> {
    if !request_pause(store, id)? {
        let e = store.execution(id)?;
        return Ok(PauseOutcome::NotRunning(e.status));
    }
    let deadline = Instant::now() + wait;
    loop {
        let e = store.execution(id)?;
        if e.status.is_final() {
            return Ok(PauseOutcome::Ended(e.status));
        }
        if Instant::now() >= deadline {
            return Ok(PauseOutcome::Requested);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Records a pause request for a running execution and for each of its running child executions
/// (sub-workflows, at any depth): a child pauses with its parent, whose resume runs it again.
/// False when `id` itself is not running.
pub(crate) fn request_pause(store: &mut Store, id: &str) -> Result<bool, StoreError> {
    let at = now_ms();
    if !store.request_pause(id, at)? {
        return Ok(false);
    }
    let mut parents = vec![id.to_string()];
    while let Some(p) = parents.pop() {
        for (child, _) in store.children(&p)? {
            if child.status == ExecStatus::Running {
                store.request_pause(&child.id, at)?;
                parents.push(child.id);
            }
        }
    }
    Ok(true)
}

/// How often a runner looks for stop and pause requests that other processes recorded.
pub const REQUEST_POLL: Duration = Duration::from_millis(100);

/// Every [`REQUEST_POLL`]: which of the executions `ids()` lists someone asked, through the
/// store, to stop or pause (`flowrun stop`/`pause`, the HTTP API of another process);
/// `on_request` is called once per execution and request (a pause, then a stop, are two calls).
/// The one poller of requests, for `flowrun run` (one id) and `flowrun serve` (all it runs).
/// Runs until aborted.
pub async fn watch_requests(
    store: SharedStore,
    ids: impl Fn() -> Vec<String>,
    mut on_request: impl FnMut(String, Request),
) {
    let mut seen: HashMap<String, Request> = HashMap::new();
    // The first look after one period, not at once: a short execution then never starts a
    // blocking thread nor queries the store for requests (one recorded before the start is
    // seen at the first tick, as one recorded during the first period always was).
    let mut tick =
        tokio::time::interval_at(tokio::time::Instant::now() + REQUEST_POLL, REQUEST_POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let current = ids();
        seen.retain(|id, _| current.contains(id));
        // A stop is final: nothing more to ask once it was seen.
        let ask: Vec<String> = current
            .into_iter()
            .filter(|id| seen.get(id) != Some(&Request::Stop))
            .collect();
        if ask.is_empty() {
            continue;
        }
        let store = store.clone();
        let requested = tokio::task::spawn_blocking(move || {
            let store = store.lock();
            ask.into_iter()
                .filter_map(|id| store.requested(&id).ok().flatten().map(|r| (id, r)))
                .collect::<Vec<_>>()
        })
        .await
        .unwrap_or_default();
        for (id, request) in requested {
            if seen.get(&id) != Some(&request) {
                seen.insert(id.clone(), request);
                on_request(id, request);
            }
        }
    }
}

/// Ends every process left under this one. Only for a process that runs executions and is done
/// (`flowrun run`, `flowrun test`): as a child subreaper, whatever escaped an execution's
/// shepherd (a shepherd killed from outside leaves its orphans here) is an execution's. Warm
/// templates are retired first, so that the private directory each has in `$TMPDIR` is removed
/// as it is let go, before the sweep below kills what is left of them; bytecode being compiled in the background (a
/// script's `.pyc`, a warm template's code) is waited for first (up to 10 s), so that the next
/// run finds it.
pub fn end_strays() {
    flowrun_executor::background::finish(Duration::from_secs(10));
    flowrun_executor::warm::retire_all();
    let me = std::process::id() as i32;
    for _ in 0..50 {
        // No child at all means nothing below (an orphan would be our child): most runs end
        // here without reading every `/proc/<pid>/stat` (~1-2 ms, more on a busy machine).
        if !flowrun_executor::tree::has_children() {
            return;
        }
        let left: Vec<i32> = flowrun_executor::tree::descendants(me)
            .into_iter()
            .map(|p| p.pid)
            .collect();
        if left.is_empty() {
            return;
        }
        for pid in &left {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(*pid), Signal::SIGKILL);
        }
        // A killed process is gone in well under a millisecond, most of the time: reaped as they
        // end, and the process ends as soon as none is left, rather than after a fixed pause;
        // what is still there after 2 ms (an orphan of one of them, re-parented here) is
        // looked for again.
        let until = std::time::Instant::now() + Duration::from_millis(2);
        loop {
            while let Ok(s) =
                nix::sys::wait::waitpid(None, Some(nix::sys::wait::WaitPidFlag::WNOHANG))
            {
                if s == nix::sys::wait::WaitStatus::StillAlive {
                    break;
                }
            }
            if !flowrun_executor::tree::has_children() {
                return;
            }
            if std::time::Instant::now() >= until {
                break;
            }
            std::thread::sleep(Duration::from_micros(100));
        }
    }
}
