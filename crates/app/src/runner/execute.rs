//! Recording an execution's start, running it, and recording its end.

use super::error::RunError;
use super::launch::spec;
use super::prepare::Prepared;
use crate::SharedStore;
use crate::recorder::Recorder;
use flowrun_events::{ErrorInfo, ErrorKind, ExecStatus, now_ms};
use flowrun_executor::{Fanout, Outcome, Sink, StopReason};
use flowrun_store::{Finish, NewExecution};
use serde_json::Value;
use tokio::sync::watch;

/// Writes the execution row (`running`), so it is visible before the child starts.
pub fn record_start(
    store: &SharedStore,
    p: &Prepared,
    execution_id: &str,
    status: ExecStatus,
) -> Result<(), RunError> {
    let wf = &p.plan.workflow;
    let (runner_pid, runner_start_time) = flowrun_executor::process::own_start();
    let mut trigger: Value = p.trigger.clone();
    p.redactor.value(&mut trigger);
    let sub_link = p.options.sub.as_ref().map(|sub| flowrun_store::SubLink {
        parent_node: sub.parent_node.clone(),
        item: sub.item,
    });
    store
        .lock()
        .insert_execution(&NewExecution {
            id: execution_id,
            workflow_id: &wf.id,
            workflow_name: wf.display_name(),
            snapshot_hash: &p.snapshot_hash,
            definition: &p.definition,
            source_file: p.source_file.as_deref(),
            mode: &p.options.mode,
            status,
            trigger: &trigger,
            started_at: now_ms(),
            parent_id: p.options.parent.as_ref().map(|(id, _)| id.as_str()),
            relation: p.options.parent.as_ref().map(|(_, r)| *r),
            sub_link: sub_link.as_ref(),
            runner_pid,
            runner_start_time,
            cwd: p.options.cwd.as_deref().and_then(|d| d.to_str()),
        })
        .map_err(RunError::Store)?;
    Ok(())
}

/// How a run ended, as recorded.
#[derive(Debug, Clone)]
pub struct Finished {
    /// The end the store holds: the executor's, or the one another process recorded first.
    pub outcome: Outcome,
    /// Another process ended the execution first (`flowrun stop` or recovery, for a runner that
    /// did not answer); `outcome` is that end.
    pub ended_elsewhere: bool,
    /// What the store could not write: what it holds of this execution is incomplete.
    pub store_error: Option<String>,
}

/// Runs a prepared execution whose row exists, recording everything; `viewers` see the events
/// too. Returns once the row holds the final state (or the store failed, which the result says:
/// an execution whose record is incomplete never counts as a success).
pub async fn run(
    store: &SharedStore,
    p: &Prepared,
    execution_id: &str,
    viewers: &mut dyn Sink,
    stop: watch::Receiver<Option<StopReason>>,
) -> Finished {
    let mut spec = spec(p, execution_id);
    let db = store.path().to_path_buf();
    crate::subflow::add_env(&mut spec, p, &db);
    let metered = crate::recorder::metered(&p.plan.workflow);
    let mut recorder = Recorder::new(
        store.clone(),
        execution_id,
        &spec.nodes,
        metered,
        spec.looping.clone(),
    );
    if let Some(missing) = &p.bytecode {
        super::bytecode::start(missing);
    }
    // What the spec runs (its last argument: the `.pyc` unless it went bad since `prepare`).
    let mut watch = spec
        .launch
        .args
        .last()
        .and_then(|run| super::bytecode::Watch::of(std::path::Path::new(run)));
    let mut outcome = {
        let mut sinks = Fanout(vec![&mut recorder, viewers]);
        if let Some(w) = watch.as_mut() {
            sinks.0.push(w);
        }
        flowrun_executor::execute(&spec, &mut sinks, stop).await
    };
    if let Some(w) = &watch {
        w.repair(outcome.status);
    }
    let mut store_error = recorder.error.take();
    if let Some(e) = &store_error {
        tracing::warn!("recording execution {execution_id}: {e}");
        unrecorded(&mut outcome, e);
    }
    let usage = recorder.usage();
    let last = recorder.take_last(outcome.status, outcome.error.as_ref());
    let mut res = finish(store, execution_id, &last, &outcome, usage);
    if let (Err(e), false) = (&res, last.is_empty()) {
        // The end could not be written with the last events: the row's end at least, which
        // says so, rather than a record left `running` until a recovery.
        tracing::warn!("recording the last events of execution {execution_id}: {e}");
        let e = e.to_string();
        unrecorded(&mut outcome, &e);
        store_error.get_or_insert(e);
        res = finish(store, execution_id, &[], &outcome, usage);
    }
    if crate::subflow::has_sub_workflows(&p.plan.workflow) {
        crate::subflow::end_left_children(store, execution_id, outcome.status);
    }
    let mut ended_elsewhere = recorder.ended_elsewhere;
    match res {
        Ok(true) => {}
        Ok(false) => ended_elsewhere = true,
        Err(e) => {
            tracing::error!("recording the end of execution {execution_id}: {e}");
            store_error.get_or_insert_with(|| e.to_string());
            outcome.status = ExecStatus::Error;
            outcome.output = None;
        }
    }
    if ended_elsewhere {
        // The first end recorded stays; report that one.
        if let Ok(e) = store.lock().execution(execution_id) {
            outcome.status = e.status;
            outcome.error = e.error;
            outcome.output = e.output;
        }
    }
    Finished {
        outcome,
        ended_elsewhere,
        store_error,
    }
}

/// An execution the store did not take all of: an error, whatever it did.
fn unrecorded(outcome: &mut Outcome, why: &str) {
    outcome.status = ExecStatus::Error;
    outcome.output = None;
    outcome.error = Some(ErrorInfo::of(
        ErrorKind::StoreError,
        format!("the execution could not be recorded completely: {why}"),
    ));
}

/// Records the execution's end, `last` (its last events) with it.
fn finish(
    store: &SharedStore,
    id: &str,
    last: &[flowrun_store::Write],
    outcome: &Outcome,
    usage: flowrun_store::Usage,
) -> Result<bool, flowrun_store::StoreError> {
    store.lock().finish_execution(
        id,
        last,
        &Finish {
            status: outcome.status,
            output: outcome.output.as_ref(),
            error: outcome.error.as_ref(),
            finished_at: now_ms(),
            duration_ms: outcome.duration_ms,
            exit: outcome.exit.as_deref(),
            log_bytes: outcome.log_bytes,
            log_bytes_cut: outcome.log_bytes_cut,
            usage,
        },
    )
}
