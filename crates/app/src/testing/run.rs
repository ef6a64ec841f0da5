//! Running the chosen cases: each through [`crate::runner`] (prepare, record, run) as an
//! execution of mode `test-suite`, up to `jobs` at once, with retries; then its record checked
//! against the case's assertions and snapshot.

use super::model::*;
use super::readback::read_back;
use super::snapshot;
use crate::SharedStore;
use crate::runner::{self, RunOptions};
use flowrun_events::ExecStatus;
use flowrun_executor::{Quiet, StopReason};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::{Semaphore, SemaphorePermit, oneshot, watch};
use tokio::task::JoinHandle;

/// The mode test executions are stored with.
pub const MODE: &str = "test-suite";

/// How the cases run.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Cases running at once (at least 1).
    pub jobs: usize,
    /// Runs again a case that failed, up to this many times; one that then passes is flaky.
    pub retries: u32,
    /// Unmocked nodes that make network requests fail at once.
    pub offline: bool,
    /// Write the snapshots that differ (the case passes).
    pub update_snapshots: bool,
    /// Write snapshots a case does not have yet; when false (on CI) a missing one fails.
    pub write_new_snapshots: bool,
    pub python: Option<PathBuf>,
    /// Variables for every case (a case's own `env` wins).
    pub env: Vec<(String, String)>,
    /// Whole-execution timeout of every case without its own.
    pub timeout_ms: Option<u64>,
}

/// Loaded test files and their stored snapshots.
pub struct Suite {
    pub files: Vec<TestFile>,
    pub(crate) snapshots: Vec<Map<String, Value>>,
    /// Snapshot files that held none and are written anew (`--update-snapshots`), a line each.
    pub replaced: Vec<String>,
}

/// What a suite run gave.
pub struct SuiteOutcome {
    /// In file order, then case order.
    pub results: Vec<CaseResult>,
    /// What could not be done to which snapshot file.
    pub snapshot_errors: Vec<String>,
    /// How many snapshots were written (in files written without an error).
    pub snapshots_written: usize,
    /// What `--update-snapshots` dropped, a line each: the entries of cases that no longer
    /// keep a snapshot, the files no case keeps one in.
    pub snapshots_dropped: Vec<String>,
    /// Why the run stopped before its end (Ctrl-C, SIGTERM), if it did: the cases it cut short
    /// are interrupted, those it kept from starting skipped.
    pub interrupted: Option<StopReason>,
}

impl SuiteOutcome {
    /// The last line of the report: the totals, and the interruption if there was one (the
    /// exit status says it too, but a log read later shows this line).
    pub fn summary(&self) -> String {
        let line = Totals::of(&self.results).line();
        match self.interrupted.map(|r| r.signal().unwrap_or("SIGINT")) {
            None => line,
            Some("SIGINT") => format!("{line}; interrupted by Ctrl-C (SIGINT)"),
            Some(signal) => format!("{line}; interrupted by {signal}"),
        }
    }
}

struct Ctx {
    store: SharedStore,
    suite: Arc<Suite>,
    settings: Settings,
    stop: watch::Receiver<Option<StopReason>>,
    /// The cases' executions running now, for stop and pause requests.
    live: Arc<super::live::LiveCases>,
    /// One per case that may run now (`jobs`): held from the execution's row to its end.
    running: Semaphore,
    /// One per case prepared or being prepared and not yet ended (`jobs` + [`AHEAD`]): the
    /// next cases' preparing overlaps the executions that run.
    prepared: Semaphore,
}

/// Cases prepared ahead of those running (validated, their script found or generated): with
/// `-j 1`, the next case is ready when the running one ends, and its preparing (~0.4 ms) and
/// the last case's check run beside an execution instead of between two. Only its preparing:
/// its execution's row is written and its child started once a case ends, so no more than
/// `jobs` executions ever run or show as running.
const AHEAD: usize = 1;

/// A case's place in a line: it takes a permit once the case before it has taken its own (or
/// given up on it), so that the cases are prepared and started in their order (`-j 1` runs
/// them one after another as they are written: a case may count on what the one before it
/// left), however long each takes to prepare.
struct Turn {
    /// Closed by the case before this one when it is this one's turn.
    after: Option<oneshot::Receiver<()>>,
    /// Closed, for the case after this one, by [`Turn::take`] or when this case ends.
    then: Option<oneshot::Sender<()>>,
}

impl Turn {
    /// One turn for each case of `n`, in their order.
    fn line(n: usize) -> Vec<Turn> {
        let mut turns = Vec::with_capacity(n);
        let mut after = None;
        for _ in 0..n {
            let (then, next) = oneshot::channel();
            turns.push(Turn {
                after: after.replace(next),
                then: Some(then),
            });
        }
        turns
    }

    /// A permit of `permits`, taken once the case before this one has taken its own (or given
    /// up on it); then the case after this one may take one.
    async fn take<'s>(&mut self, permits: &'s Semaphore) -> SemaphorePermit<'s> {
        if let Some(after) = self.after.take() {
            let _ = after.await; // the sender closed: the turn is ours
        }
        let permit = permits.acquire().await.expect("never closed");
        self.then = None;
        permit
    }
}

impl Drop for Turn {
    /// A case that ends without waiting for its turn (skipped, refused by its schema, or unable
    /// to start) passes it on only once it would have come: the case after it keeps its place.
    fn drop(&mut self) {
        if let (Some(after), Some(then)) = (self.after.take(), self.then.take()) {
            tokio::spawn(async move {
                let _ = after.await;
                drop(then);
            });
        }
    }
}

/// A case's permits, to prepare and to run, kept for its retry.
struct Permits<'c> {
    ahead: SemaphorePermit<'c>,
    turn: SemaphorePermit<'c>,
}

/// A case's two turns: to take a permit to prepare, and one to run.
struct Turns {
    prepare: Turn,
    run: Turn,
}

/// Runs `chosen`; `on_result` sees each case's result as it ends. Snapshots to write are
/// written at the end, per file.
pub async fn run(
    store: &SharedStore,
    suite: Arc<Suite>,
    chosen: &[CaseRef],
    settings: &Settings,
    stop: watch::Receiver<Option<StopReason>>,
    mut on_result: impl FnMut(&CaseResult),
) -> SuiteOutcome {
    let jobs = settings.jobs.max(1);
    let ctx = Arc::new(Ctx {
        store: store.clone(),
        suite,
        settings: settings.clone(),
        stop: stop.clone(),
        live: Default::default(),
        running: Semaphore::new(jobs),
        prepared: Semaphore::new(jobs + AHEAD),
    });
    let watching = ctx.live.watch(store.clone(), stop);
    let mut tasks = tokio::task::JoinSet::new();
    let mut cases = std::collections::HashMap::new();
    let lines = Turn::line(chosen.len())
        .into_iter()
        .zip(Turn::line(chosen.len()));
    for (&at, (prepare, run)) in chosen.iter().zip(lines) {
        let ctx = ctx.clone();
        let mut turns = Turns { prepare, run };
        let task = tasks.spawn(async move { run_case(&ctx, at, &mut turns).await });
        cases.insert(task.id(), at);
    }
    let mut results = Vec::new();
    while let Some(done) = tasks.join_next_with_id().await {
        // A bug in one case (a panic) fails that case, not the suite and the others' reports.
        let r = match done {
            Ok((_, r)) => r,
            Err(e) => {
                let at = cases[&e.id()];
                let what = match e.try_into_panic() {
                    Ok(p) => crate::shared::panic_message(&*p),
                    Err(e) => e.to_string(),
                };
                CaseResult::broken(at, &ctx.suite.files[at.file].cases[at.case], what)
            }
        };
        on_result(&r);
        results.push(r);
    }
    watching.iter().for_each(JoinHandle::abort);
    results.sort_by_key(|r| r.at);
    let mut outcome = SuiteOutcome {
        results,
        snapshot_errors: Vec::new(),
        snapshots_written: 0,
        snapshots_dropped: Vec::new(),
        interrupted: *ctx.stop.borrow(),
    };
    write_snapshots(&ctx, &mut outcome);
    outcome
}

fn write_snapshots(ctx: &Ctx, outcome: &mut SuiteOutcome) {
    let mut per_file: BTreeMap<usize, Vec<(String, Value)>> = BTreeMap::new();
    for r in &outcome.results {
        if let Some(v) = &r.snapshot_write {
            per_file
                .entry(r.at.file)
                .or_default()
                .push((r.name.clone(), v.clone()));
        }
    }
    if ctx.settings.update_snapshots {
        // Every file: entries of cases that are gone or no longer snapshot-tested are dropped
        // even where nothing new was written. The cases kept are all the file's snapshot
        // cases, not only those run (`--filter`, a partition, `skip`).
        for fi in 0..ctx.suite.files.len() {
            per_file.entry(fi).or_default();
        }
    }
    for (fi, writes) in per_file {
        let f = &ctx.suite.files[fi];
        let names: Vec<String> = f
            .cases
            .iter()
            .filter(|c| c.snapshot.is_some())
            .map(|c| c.name.clone())
            .collect();
        let keep = ctx.settings.update_snapshots.then_some(names.as_slice());
        match snapshot::write(&f.snapshot_file, &writes, keep) {
            Ok(pruned) => {
                outcome.snapshots_written += writes.len();
                let file = f.snapshot_file.display();
                if pruned.removed {
                    outcome.snapshots_dropped.push(format!(
                        "removed {file}: no case of {} keeps a snapshot",
                        f.file
                    ));
                } else if !pruned.dropped.is_empty() {
                    let names: Vec<String> = pruned
                        .dropped
                        .iter()
                        .map(|n| Value::String(n.clone()).to_string())
                        .collect();
                    outcome.snapshots_dropped.push(format!(
                        "dropped from {file} the snapshots of cases that keep none now: {}",
                        names.join(", ")
                    ));
                }
            }
            Err(e) => outcome.snapshot_errors.push(e),
        }
    }
}

async fn run_case(ctx: &Ctx, at: CaseRef, turns: &mut Turns) -> CaseResult {
    let case = &ctx.suite.files[at.file].cases[at.case];
    let mut result = CaseResult {
        at,
        name: case.name.clone(),
        line: case.line,
        verdict: Verdict::Failed,
        skip_reason: None,
        attempts: Vec::new(),
        snapshot: None,
        snapshot_write: None,
    };
    if let Some(reason) = &case.skip {
        result.verdict = Verdict::Skipped;
        result.skip_reason = Some(reason.clone());
        return result;
    }
    // With retries, a case keeps its permits from one attempt to the next: a retry runs right
    // after the attempt that failed, as it did before cases were prepared ahead, not behind the
    // cases prepared meanwhile.
    let mut held = None;
    for _ in 0..=ctx.settings.retries {
        let next = if ctx.stop.borrow().is_some() {
            None
        } else {
            attempt(ctx, at, turns, &mut held).await
        };
        let Some((attempt, snap)) = next else {
            // Interrupted before this attempt, or while it waited for its turn.
            if result.attempts.is_empty() {
                result.verdict = Verdict::Skipped;
                result.skip_reason = Some("interrupted".into());
            }
            return result;
        };
        let passed = attempt.failures.is_empty();
        if !passed && ctx.stop.borrow().is_some() && attempt.status.as_deref() == Some("cancelled")
        {
            // Stopped by the interruption (Ctrl-C), not failed; but it ran, unlike the cases
            // the interruption kept from starting (skipped). A retry cut short of a case that
            // failed already leaves it failed, its last failure reported (the verdict starts
            // as Failed): the interruption only kept it from being tried again, as one between
            // two attempts does.
            if !result.attempts.is_empty() {
                return result;
            }
            result.attempts.push(attempt);
            result.verdict = Verdict::Interrupted;
            return result;
        }
        let setup = attempt.execution_id.is_none();
        result.attempts.push(attempt);
        (result.snapshot, result.snapshot_write) = snap;
        if passed {
            result.verdict = if result.attempts.len() == 1 {
                Verdict::Passed
            } else {
                Verdict::Flaky
            };
            return result;
        }
        if setup {
            // It could not start: another try would not either.
            break;
        }
    }
    result
}

/// Milliseconds, to the microsecond (a report's `65.349`, not `65.34853799999999`).
fn as_ms(d: std::time::Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

type SnapshotResult = (Option<SnapshotNote>, Option<Value>);

/// One execution of a case, checked; None when the suite was interrupted before it was
/// prepared or started. Its duration leaves out the time it waited for its turns. `held`: the
/// permits its last attempt kept for this one (with retries), and where this one keeps them.
async fn attempt<'c>(
    ctx: &'c Ctx,
    at: CaseRef,
    turns: &mut Turns,
    held: &mut Option<Permits<'c>>,
) -> Option<(Attempt, SnapshotResult)> {
    let file = &ctx.suite.files[at.file];
    let case = &file.cases[at.case];
    // An attempt that started no execution: refused as expected (or not), or unable to start.
    let no_execution = Attempt::without_execution;
    let setup_failed = |message: String, took| no_execution(vec![Failure::Setup { message }], took);
    if let Some(want) = &case.refused {
        // Nothing runs: the schema alone decides, as it would before a run.
        let t0 = Instant::now();
        let schema = file.source.workflow.inputs.as_ref();
        let failures = super::refused::check(schema, &case.trigger, want);
        return Some((no_execution(failures, as_ms(t0.elapsed())), (None, None)));
    }
    let (ahead, kept) = match held.take() {
        Some(Permits { ahead, turn }) => (ahead, Some(turn)),
        None => (turns.prepare.take(&ctx.prepared).await, None),
    };
    if ctx.stop.borrow().is_some() {
        return None;
    }
    let t0 = Instant::now();
    let mut env = ctx.settings.env.clone();
    env.extend(case.env.iter().cloned());
    let options = RunOptions {
        python: ctx.settings.python.clone(),
        timeout_ms: case.timeout_ms.or(ctx.settings.timeout_ms),
        env,
        mocks: case.mocks.clone(),
        offline: ctx.settings.offline,
        mode: MODE.into(),
        // Relative paths in the workflow (a command's, a code node's) mean the same wherever
        // the tests are started from: the workflow file's directory.
        cwd: std::path::Path::new(&file.source.file).parent().map(|d| {
            if d.as_os_str().is_empty() {
                PathBuf::from(".")
            } else {
                d.to_path_buf()
            }
        }),
        ..RunOptions::default()
    };
    let (source, trigger) = (file.source.clone(), case.trigger.clone());
    let prepared = tokio::task::spawn_blocking(move || runner::prepare(&source, trigger, options))
        .await
        .expect("prepare does not panic");
    let prepared = match prepared {
        Ok(p) => p,
        Err(e) => {
            return Some((
                setup_failed(e.to_string(), as_ms(t0.elapsed())),
                (None, None),
            ));
        }
    };
    let preparing = t0.elapsed();
    let turn = match kept {
        Some(turn) => turn,
        None => turns.run.take(&ctx.running).await,
    };
    if ctx.stop.borrow().is_some() {
        return None;
    }
    let t1 = Instant::now();
    let took = || as_ms(preparing + t1.elapsed());
    let id = runner::new_execution_id();
    if let Err(e) = runner::record_start(&ctx.store, &prepared, &id, ExecStatus::Running) {
        return Some((setup_failed(e.to_string(), took()), (None, None)));
    }
    let (entered, stop) = ctx.live.enter(&id, &ctx.stop);
    let finished = runner::run(&ctx.store, &prepared, &id, &mut Quiet, stop).await;
    drop(entered);
    if ctx.settings.retries > 0 {
        *held = Some(Permits { ahead, turn });
    } else {
        drop((turn, ahead));
    }
    let (error, size) = (
        finished.outcome.error.clone(),
        (finished.outcome.events, finished.outcome.log_bytes),
    );
    let (record, (traceback, last_logs)) =
        read_back(ctx.store.clone(), id.clone(), error, size).await;
    let mut attempt = Attempt {
        execution_id: Some(id),
        status: Some(finished.outcome.status.to_string()),
        error: finished.outcome.error.as_ref().map(|e| match &e.node {
            Some(n) => format!("{} in node '{n}': {}", e.kind, e.message),
            None => format!("{}: {}", e.kind, e.message),
        }),
        error_expected: false,
        duration_ms: took(),
        failures: Vec::new(),
        traceback,
        last_logs,
    };
    let record = match record {
        Ok(r) => r,
        Err(e) => {
            attempt.failures.push(Failure::Setup {
                message: format!("cannot read the execution back: {e}"),
            });
            return Some((attempt, (None, None)));
        }
    };
    let is_status = |x: &&super::model::Expectation| {
        x.path.0.len() == 1 && x.path.first_key() == Some("status")
    };
    // A case that says nothing of the status expects a success (a smoke test is a trigger).
    let says_status = case.expect.iter().any(|x| is_status(&x));
    if !says_status {
        let status = record.get("status").cloned().unwrap_or(Value::Null);
        if status != "success" {
            attempt.failures.push(Failure::Assertion {
                path: "status".into(),
                line: case.line,
                mismatch: super::expect::Mismatch {
                    operator: "equals".into(),
                    expected: "\"success\" (a case without `status` in `expect` expects a success)"
                        .into(),
                    actual: status.to_string(),
                    actual_value: Some(Box::new(status.clone())),
                },
            });
        }
    }
    let mut status_held = says_status;
    for x in &case.expect {
        if let Err(mut mismatch) = x.check.check(x.path.get(&record)) {
            status_held &= !is_status(&x);
            // A missing value says where the path stopped finding one (a typo's likely place).
            if let Some(why) = x.path.why_missing(&record) {
                mismatch.actual = format!("(missing: {why})");
            }
            attempt.failures.push(Failure::Assertion {
                path: x.text.clone(),
                line: x.line,
                mismatch,
            });
        }
    }
    attempt.error_expected = attempt.error.is_some() && status_held;
    let snap = match &case.snapshot {
        None => (None, None),
        Some(ignore) => check_snapshot(ctx, at, &record, ignore, &mut attempt.failures),
    };
    attempt.duration_ms = took();
    Some((attempt, snap))
}

fn check_snapshot(
    ctx: &Ctx,
    at: CaseRef,
    record: &Value,
    ignore: &[super::path::Path],
    failures: &mut Vec<Failure>,
) -> SnapshotResult {
    let name = &ctx.suite.files[at.file].cases[at.case].name;
    let actual = snapshot::of_record(record, ignore);
    let s = &ctx.settings;
    // A case that fails otherwise (its status, an assertion) is not a state to keep: its
    // snapshot is neither written nor updated, or the failure would be committed as the
    // baseline and the mended workflow then fail against it.
    let failing = !failures.is_empty();
    match ctx.suite.snapshots[at.file].get(name) {
        Some(stored) => match snapshot::compare(stored, &actual, ignore) {
            Ok(()) => (Some(SnapshotNote::Matched), None),
            Err(_) if s.update_snapshots && !failing => (Some(SnapshotNote::Updated), Some(actual)),
            Err(diff) if s.update_snapshots => {
                failures.push(Failure::Snapshot {
                    message: "the snapshot differs, and is not updated while the case fails".into(),
                    diff,
                });
                (None, None)
            }
            Err(diff) => {
                failures.push(Failure::Snapshot {
                    message: "the snapshot differs (if the change is meant, accept it with \
                              `flowrun test --update-snapshots` and commit the snapshot)"
                        .into(),
                    diff,
                });
                (None, None)
            }
        },
        None if failing => (None, None),
        None if s.update_snapshots || s.write_new_snapshots => {
            (Some(SnapshotNote::Written), Some(actual))
        }
        None => {
            failures.push(Failure::Snapshot {
                message:
                    "no snapshot is stored for this case, and new snapshots are not written on CI"
                        .into(),
                diff: String::new(),
            });
            (None, None)
        }
    }
}
