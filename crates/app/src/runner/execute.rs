//! Recording an execution's start, running it, and recording its end.

use super::error::RunError;
use super::launch::spec;
use super::prepare::Prepared;
use crate::SharedStore;
use crate::recorder::Recorder;
use flowrun_codegen::model::NodeKind;
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
    let runner_pid = std::process::id() as i32;
    let mut trigger: Value = p.trigger.clone();
    p.redactor.value(&mut trigger);
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
            runner_pid,
            runner_start_time: flowrun_executor::process::process_start_time(runner_pid),
        })
        .map_err(RunError::Store)
}

/// Runs a prepared execution whose row exists, recording everything; `viewers` see the events
/// too. Returns the outcome once the row holds the final state.
pub async fn run(
    store: &SharedStore,
    p: &Prepared,
    execution_id: &str,
    viewers: &mut dyn Sink,
    stop: watch::Receiver<Option<StopReason>>,
) -> Outcome {
    let spec = spec(p, execution_id);
    let metered = p
        .plan
        .workflow
        .nodes
        .iter()
        .filter(|n| matches!(n.kind, NodeKind::Llm(_)))
        .map(|n| n.id.clone())
        .collect();
    let mut recorder = Recorder::new(store.clone(), execution_id, &spec.nodes, metered);
    let outcome = {
        let mut sinks = Fanout(vec![&mut recorder, viewers]);
        flowrun_executor::execute(&spec, &mut sinks, stop).await
    };
    let mut outcome = outcome;
    if let Some(e) = recorder.error.take() {
        tracing::warn!("recording execution {execution_id}: {e}");
        if outcome.error.is_none() {
            outcome.error = Some(ErrorInfo::of(ErrorKind::StoreError, e));
        }
    }
    let res = store.lock().finish_execution(
        execution_id,
        &Finish {
            status: outcome.status,
            output: outcome.output.as_ref(),
            error: outcome.error.as_ref(),
            finished_at: now_ms(),
            duration_ms: outcome.duration_ms,
            exit: outcome.exit.as_deref(),
            log_bytes: outcome.log_bytes,
            log_bytes_cut: outcome.log_bytes_cut,
            usage: recorder.usage(),
        },
    );
    if let Err(e) = res {
        tracing::error!("recording the end of execution {execution_id}: {e}");
    }
    outcome
}
