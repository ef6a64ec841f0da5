//! The events of an execution, as every viewer sees them.

use crate::{ErrorInfo, ExecStatus, NodeStatus};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Which stream a log line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stream {
    Stdout,
    Stderr,
    /// `log(...)` called by a code node.
    Log,
}

/// One event of an execution.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    ExecutionStart {
        workflow_id: String,
        workflow_name: String,
        mode: String,
        /// Node ids in execution order.
        nodes: Vec<String>,
        ts: i64,
    },
    NodeStart {
        node: String,
        attempt: u32,
        ts: i64,
        /// The item of a `for_each` node this start is for (0-based).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        item: Option<u32>,
        /// The iteration of a `repeat` node this start is for (1-based).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        iteration: Option<u32>,
        /// On the start of a `for_each` node itself: how many items it has.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        items: Option<u32>,
    },
    NodeEnd {
        node: String,
        status: NodeStatus,
        attempt: u32,
        /// `None` (absent) when it is not known: the node was running when its execution's
        /// runner died, at a moment nobody recorded.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        duration_ms: Option<f64>,
        ts: i64,
        /// The first ~200 characters of the output as JSON.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        output_preview: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<ErrorInfo>,
        /// This attempt failed and another one follows.
        #[serde(default, skip_serializing_if = "is_false")]
        retrying: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        item: Option<u32>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        iteration: Option<u32>,
        /// Why a node was skipped: `branch not taken by <condition>`, `every upstream skipped`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    Log {
        #[serde(default)]
        node: Option<String>,
        stream: Stream,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        level: Option<String>,
        line: String,
        ts: i64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        item: Option<u32>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        iteration: Option<u32>,
    },
    /// Text of a node's answer as it arrives (an `llm` node with `stream: true`). Sent live to
    /// the viewers of the execution only: never stored, and not numbered (its envelope's `seq`
    /// is that of the event before it). The node's output holds the whole answer.
    NodeDelta {
        node: String,
        /// Text to append to what came before for this node (or item or iteration).
        text: String,
        ts: i64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        item: Option<u32>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        iteration: Option<u32>,
        /// `text` is everything so far, not a continuation: what a viewer that joins while the
        /// answer arrives gets first.
        #[serde(default, skip_serializing_if = "is_false")]
        so_far: bool,
    },
    ExecutionEnd {
        status: ExecStatus,
        /// `None` (absent) when it has none: it never started (cancelled while queued), or its
        /// runner died at a moment nobody recorded.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        duration_ms: Option<f64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<ErrorInfo>,
        /// The execution's output (a success's; over the store's field limit: a truncation
        /// marker).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        output: Option<Value>,
        ts: i64,
    },
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// Which part of a node an event is about: one item of a `for_each` node, or one iteration of a
/// `repeat` node. The wire format has two optional fields, `item` and `iteration`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Part {
    Item(u32),
    Iteration(u32),
}

impl Part {
    /// The part from the wire fields (an item wins if both are given).
    pub fn from_fields(item: Option<u32>, iteration: Option<u32>) -> Option<Part> {
        item.map(Part::Item).or(iteration.map(Part::Iteration))
    }

    /// `(item, iteration)` for the wire.
    pub fn fields(part: Option<Part>) -> (Option<u32>, Option<u32>) {
        match part {
            Some(Part::Item(i)) => (Some(i), None),
            Some(Part::Iteration(k)) => (None, Some(k)),
            None => (None, None),
        }
    }

    /// `item` or `iteration`, as stored.
    pub fn kind(self) -> &'static str {
        match self {
            Part::Item(_) => "item",
            Part::Iteration(_) => "iteration",
        }
    }

    /// The item index or the iteration number.
    pub fn number(self) -> u32 {
        match self {
            Part::Item(n) | Part::Iteration(n) => n,
        }
    }
}

impl Event {
    /// The name in the `event` field.
    pub fn kind(&self) -> &'static str {
        match self {
            Event::ExecutionStart { .. } => "execution_start",
            Event::NodeStart { .. } => "node_start",
            Event::NodeEnd { .. } => "node_end",
            Event::Log { .. } => "log",
            Event::NodeDelta { .. } => "node_delta",
            Event::ExecutionEnd { .. } => "execution_end",
        }
    }

    /// Sent live only, never stored or numbered (`node_delta`).
    pub fn is_live_only(&self) -> bool {
        matches!(self, Event::NodeDelta { .. })
    }

    /// When the runner saw it (ms since the epoch).
    pub fn ts(&self) -> i64 {
        match self {
            Event::ExecutionStart { ts, .. }
            | Event::NodeStart { ts, .. }
            | Event::NodeEnd { ts, .. }
            | Event::Log { ts, .. }
            | Event::NodeDelta { ts, .. }
            | Event::ExecutionEnd { ts, .. } => *ts,
        }
    }

    pub fn node(&self) -> Option<&str> {
        match self {
            Event::NodeStart { node, .. }
            | Event::NodeEnd { node, .. }
            | Event::NodeDelta { node, .. } => Some(node),
            Event::Log { node, .. } => node.as_deref(),
            _ => None,
        }
    }
}

/// An event with its place in the execution: what `--events jsonl` prints and SSE sends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    /// 1, 2, 3, … within one execution; the SSE event id.
    pub seq: u64,
    pub execution_id: String,
    #[serde(flatten)]
    pub event: Event,
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The first `max` characters of a value as compact JSON, with `…` when cut.
pub fn preview(v: &Value, max: usize) -> String {
    let s = v.to_string();
    if s.chars().count() <= max {
        s
    } else {
        let mut p: String = s.chars().take(max).collect();
        p.push('…');
        p
    }
}
