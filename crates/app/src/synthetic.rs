//! Events flowrun makes itself, for executions its executor did not see to the end: one queued
//! and cancelled before it started, one whose runner died or never answered a stop. Every other
//! event comes from the executor, which reads it off the child (or, for a node still running when
//! the process ended, closes it itself).
//!
//! Whatever the cause, a viewer (SSE, `logs --follow`, the JSONL stream) sees the same shape:
//! a `node_end` for every node left waiting for a retry ("not retried: …") or running, then
//! one `execution_end`.

use flowrun_events::{ErrorInfo, Event, ExecStatus, NodeStatus};
use flowrun_store::{Abandoned, EndTime};

/// `execution_start` and `execution_end` of an execution that never started.
pub fn never_started(
    workflow_id: &str,
    workflow_name: &str,
    mode: &str,
    nodes: Vec<String>,
    status: ExecStatus,
    error: ErrorInfo,
    at: i64,
) -> Vec<Event> {
    vec![
        Event::ExecutionStart {
            workflow_id: workflow_id.to_string(),
            workflow_name: workflow_name.to_string(),
            mode: mode.to_string(),
            nodes,
            ts: at,
        },
        Event::ExecutionEnd {
            output: None,
            status,
            // It never ran.
            duration_ms: None,
            error: Some(error),
            ts: at,
        },
    ]
}

/// The end of an execution whose runner cannot record it: each node still running ends
/// `node_status` with `error`, then the execution ends `status` with `ended_with` (the same
/// error, naming the node it was in where the store found one: `Store::end_abandoned`).
/// Nothing is added to a stream that already has its `execution_end`.
pub fn abandoned(
    state: &Abandoned,
    status: ExecStatus,
    node_status: NodeStatus,
    (error, ended_with): (&ErrorInfo, &ErrorInfo),
    end: EndTime,
) -> Vec<Event> {
    let at = end.at();
    if state.ended {
        return Vec::new();
    }
    // What waited for a retry first: its failed attempt is its last, and says why.
    let mut events: Vec<Event> = state
        .awaiting_retry
        .iter()
        .map(|n| {
            let (item, iteration) = flowrun_events::Part::fields(n.part);
            Event::NodeEnd {
                node: n.node_id.clone(),
                status: NodeStatus::Error,
                attempt: n.attempt,
                duration_ms: Some(n.duration_ms),
                ts: n.ts,
                output_preview: None,
                error: n.error.clone(),
                retrying: false,
                item,
                iteration,
                reason: Some(format!("not retried: {}", error.message)),
            }
        })
        .collect();
    events.extend(state.running.iter().map(|n| {
        let (item, iteration) = flowrun_events::Part::fields(n.part);
        Event::NodeEnd {
            node: n.node_id.clone(),
            status: node_status,
            attempt: n.attempt,
            // Not the time until a dead runner was found: unknown, as the row says.
            duration_ms: match end {
                EndTime::Now(_) => Some(n.started_at.map_or(0.0, |s| (at - s).max(0) as f64)),
                EndTime::Unknown { .. } => None,
            },
            ts: at,
            output_preview: None,
            error: Some(error.clone()),
            retrying: false,
            item,
            iteration,
            reason: None,
        }
    }));
    events.push(Event::ExecutionEnd {
        output: None,
        status,
        duration_ms: state.duration_ms,
        error: Some(ended_with.clone()),
        ts: at,
    });
    events
}

#[cfg(test)]
mod tests {
    use super::*;
    use flowrun_events::ErrorKind;
    use flowrun_store::RunningNode;

    #[test]
    fn abandoned_closes_retries_and_running_nodes_then_the_execution() {
        let state = Abandoned {
            running: vec![RunningNode {
                node_id: "slow".into(),
                part: None,
                attempt: 2,
                started_at: Some(1_000),
            }],
            awaiting_retry: vec![flowrun_store::AwaitingRetry {
                node_id: "each".into(),
                part: Some(flowrun_events::Part::Item(3)),
                attempt: 1,
                duration_ms: 12.0,
                ts: 1_100,
                error: Some(ErrorInfo::of(ErrorKind::Error, "flaky")),
            }],
            duration_ms: Some(1_500.0),
            ended: false,
        };
        let err = ErrorInfo::of(ErrorKind::Interrupted, "runner gone");
        let named = ErrorInfo {
            node: Some("slow".into()),
            ..err.clone()
        };
        let ev = abandoned(
            &state,
            ExecStatus::Interrupted,
            NodeStatus::Cancelled,
            (&err, &named),
            EndTime::Now(2_500),
        );
        assert_eq!(ev.len(), 3);
        assert!(
            matches!(&ev[0], Event::NodeEnd { node, status: NodeStatus::Error, attempt: 1, duration_ms, ts: 1_100, item: Some(3), retrying: false, reason: Some(r), error: Some(e), .. }
                if node == "each" && *duration_ms == Some(12.0) && r == "not retried: runner gone" && e.message == "flaky"),
            "{:?}",
            ev[0]
        );
        // The node's own end carries the error as given; the execution's names the node.
        assert!(
            matches!(&ev[1], Event::NodeEnd { node, status: NodeStatus::Cancelled, attempt: 2, duration_ms, error: Some(e), .. } if node == "slow" && *duration_ms == Some(1_500.0) && e.node.is_none())
        );
        // A runner that died at a moment nobody recorded: the node that ran has no duration.
        let found = abandoned(
            &state,
            ExecStatus::Interrupted,
            NodeStatus::Cancelled,
            (&err, &err),
            EndTime::Unknown { found: 9_000 },
        );
        assert!(
            matches!(&found[1], Event::NodeEnd { node, duration_ms: None, ts: 9_000, .. } if node == "slow"),
            "{:?}",
            found[1]
        );
        assert!(matches!(
            &ev[2],
            Event::ExecutionEnd {
                status: ExecStatus::Interrupted,
                error: Some(e),
                ..
            } if e.node.as_deref() == Some("slow")
        ));
        let ended = Abandoned {
            ended: true,
            ..state
        };
        assert!(
            abandoned(
                &ended,
                ExecStatus::Interrupted,
                NodeStatus::Cancelled,
                (&err, &err),
                EndTime::Now(1)
            )
            .is_empty()
        );
    }
}
