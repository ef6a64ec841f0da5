//! The rows the store reads and writes.

use flowrun_events::{ErrorInfo, ExecStatus, NodeStatus, Part, Relation};
use serde_json::Value;

/// A new execution, as written at its start.
#[derive(Debug, Clone)]
pub struct NewExecution<'a> {
    pub id: &'a str,
    pub workflow_id: &'a str,
    pub workflow_name: &'a str,
    pub snapshot_hash: &'a str,
    pub definition: &'a Value,
    pub source_file: Option<&'a str>,
    pub mode: &'a str,
    pub status: ExecStatus,
    pub trigger: &'a Value,
    pub started_at: i64,
    pub parent_id: Option<&'a str>,
    pub relation: Option<Relation>,
    /// The parent's node (and item) that started it, for a child execution (`relation` `sub`):
    /// written with the row, so no reader sees a child without it.
    pub sub_link: Option<&'a SubLink>,
    pub runner_pid: i32,
    pub runner_start_time: Option<u64>,
    /// The directory the execution's nodes run in.
    pub cwd: Option<&'a str>,
}

/// An execution as stored.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Execution {
    pub id: String,
    pub workflow_id: String,
    pub workflow_name: String,
    pub status: ExecStatus,
    pub mode: String,
    pub started_at: i64,
    pub finished_at: Option<i64>,
    pub duration_ms: Option<f64>,
    pub trigger: Value,
    pub output: Option<Value>,
    pub error: Option<ErrorInfo>,
    pub exit: Option<String>,
    pub snapshot_hash: String,
    pub source_file: Option<String>,
    pub parent_id: Option<String>,
    pub relation: Option<Relation>,
    pub log_bytes: i64,
    pub log_bytes_cut: i64,
    #[serde(flatten)]
    pub usage: Usage,
    /// `warm` or `cold`: how the interpreter started (None before it did, and for executions
    /// recorded before this was).
    pub start: Option<String>,
    #[serde(skip)]
    pub process: Option<ProcessRow>,
    #[serde(skip)]
    pub runner: Option<(i32, Option<u64>)>,
    #[serde(skip)]
    pub stop_requested_at: Option<i64>,
    pub pause_requested_at: Option<i64>,
    /// The directory the execution's nodes ran in.
    pub cwd: Option<String>,
}

/// The process group recorded for a running execution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcessRow {
    pub pid: i32,
    pub pgid: i32,
    pub start_time: Option<u64>,
}

/// One node of one execution, as stored.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct NodeRow {
    pub node_id: String,
    /// The item (of a `for_each` node) or iteration (of a `repeat` node) this row is; `None`
    /// for the node's own row.
    #[serde(skip)]
    pub part: Option<Part>,
    pub position: i64,
    pub status: NodeStatus,
    pub attempt: u32,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    pub duration_ms: Option<f64>,
    pub input: Option<Value>,
    pub output: Option<Value>,
    pub error: Option<ErrorInfo>,
    pub from_execution: Option<String>,
    /// Why the node was skipped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// A stored event: its sequence number and JSON (`{"event": ..., ...}`).
#[derive(Debug, Clone, PartialEq)]
pub struct StoredEvent {
    pub seq: u64,
    pub kind: String,
    pub node_id: Option<String>,
    pub ts: i64,
    pub data: Value,
}

/// What started a child execution: the parent's `workflow` node, and the `for_each` item.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SubLink {
    pub parent_node: String,
    pub item: Option<u64>,
}

/// Which executions `history` lists.
#[derive(Debug, Clone, Default)]
pub struct HistoryFilter {
    pub workflow: Option<String>,
    pub status: Option<ExecStatus>,
    pub since: Option<i64>,
    pub until: Option<i64>,
    /// Cursor: only executions that sort after this `(started_at, id)`.
    pub before: Option<(i64, String)>,
    /// Leave out executions of these modes (`history` hides `test-suite` unless `--all`).
    pub exclude_modes: Vec<String>,
    /// Only executions whose id starts with this.
    pub id_prefix: Option<String>,
    pub limit: usize,
    /// Leave out child executions of `workflow` nodes (`relation` `sub`).
    pub top_level: bool,
}

/// Final state of an execution.
#[derive(Debug, Clone)]
pub struct Finish<'a> {
    pub status: ExecStatus,
    pub output: Option<&'a Value>,
    pub error: Option<&'a ErrorInfo>,
    pub finished_at: i64,
    pub duration_ms: f64,
    pub exit: Option<&'a str>,
    pub log_bytes: u64,
    pub log_bytes_cut: u64,
    pub usage: Usage,
}

/// Row counts removed by [`Store::delete`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Deleted {
    pub executions: usize,
    pub nodes: usize,
    pub events: usize,
    pub snapshots: usize,
}

/// Tokens and cost of the LLM calls of an execution.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct Usage {
    pub input_tokens: Option<i64>,
    pub output_tokens: Option<i64>,
    pub cost_usd: Option<f64>,
}

/// A write the recorder batches.
#[derive(Debug, Clone)]
pub enum Write {
    Event {
        seq: u64,
        kind: String,
        node_id: Option<String>,
        ts: i64,
        data: String,
    },
    NodeStarted {
        node_id: String,
        part: Option<Part>,
        position: i64,
        attempt: u32,
        started_at: i64,
    },
    NodeFinished(Box<NodeRow>),
    /// What a running node (or item or iteration) was given; written only while it runs.
    NodeInput {
        node_id: String,
        part: Option<Part>,
        input: Value,
    },
}

/// When an execution whose runner cannot end it ended, as far as whoever ends it knows (see
/// [`crate::Store::end_abandoned`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndTime {
    /// At this moment (ms): its processes were just ended, or it never started.
    Now(i64),
    /// Its runner died at a moment nobody recorded, noticed `found` (ms) — perhaps long after,
    /// at the next flowrun command. Its duration and its running nodes' are unknown (null),
    /// not the time until it was found; `found` is its `finished_at`.
    Unknown { found: i64 },
}

impl EndTime {
    /// The time recorded as its end (`finished_at`).
    pub fn at(self) -> i64 {
        match self {
            EndTime::Now(at) | EndTime::Unknown { found: at } => at,
        }
    }
}

/// What is left open of an execution whose runner cannot end it (see [`crate::Store::end_abandoned`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Abandoned {
    /// Its nodes still recorded `running`, in plan order.
    pub running: Vec<RunningNode>,
    /// What waited for a retry: its last `node_end` said another attempt follows, and none
    /// started.
    pub awaiting_retry: Vec<AwaitingRetry>,
    /// From its start until now; `None` for one that never started (it was queued), or whose
    /// end is not known ([`EndTime::Unknown`]).
    pub duration_ms: Option<f64>,
    /// Its event stream already has an `execution_end`.
    pub ended: bool,
}

impl Abandoned {
    /// The node it was in: the one node whose rows (its items, iterations) are running, as an
    /// execution its runner ends names it. None when several nodes ran side by side, or none.
    pub fn only_node(&self) -> Option<&str> {
        let first = &self.running.first()?.node_id;
        self.running
            .iter()
            .all(|n| n.node_id == *first)
            .then_some(first.as_str())
    }
}

/// A node (or item or iteration) whose last attempt failed saying a retry follows: that
/// attempt's end, which stands as its last when the retry never comes.
#[derive(Debug, Clone, PartialEq)]
pub struct AwaitingRetry {
    pub node_id: String,
    pub part: Option<Part>,
    pub attempt: u32,
    pub duration_ms: f64,
    pub ts: i64,
    pub error: Option<ErrorInfo>,
}

/// A node recorded `running`.
#[derive(Debug, Clone, PartialEq)]
pub struct RunningNode {
    pub node_id: String,
    pub part: Option<Part>,
    pub attempt: u32,
    pub started_at: Option<i64>,
}

/// What another process asked of a running execution through the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    Stop,
    Pause,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn running(node: &str, part: Option<Part>) -> RunningNode {
        RunningNode {
            node_id: node.into(),
            part,
            attempt: 1,
            started_at: Some(1),
        }
    }

    #[test]
    fn an_abandoned_execution_names_its_node_only_when_one_node_ran() {
        let mut state = Abandoned {
            running: vec![],
            awaiting_retry: vec![],
            duration_ms: None,
            ended: false,
        };
        assert_eq!(state.only_node(), None, "none ran");
        state.running = vec![
            running("each", Some(Part::Item(0))),
            running("each", Some(Part::Item(3))),
        ];
        assert_eq!(state.only_node(), Some("each"), "items of one node");
        state.running.push(running("other", None));
        assert_eq!(state.only_node(), None, "nodes side by side");
    }
}
