//! The events of an execution, as every viewer sees them.
//!
//! The executor turns what the child prints into these; the recorder stores them, the terminal
//! progress draws them, `--events jsonl` prints them one per line and the HTTP server streams
//! them as Server-Sent Events. One type, so every viewer sees the same thing (see
//! `docs/events.md`).

use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::fmt;

/// Status of a whole execution.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExecStatus {
    Queued,
    Running,
    Success,
    Error,
    Timeout,
    Cancelled,
    Interrupted,
}

impl ExecStatus {
    pub const ALL: [ExecStatus; 7] = [
        ExecStatus::Queued,
        ExecStatus::Running,
        ExecStatus::Success,
        ExecStatus::Error,
        ExecStatus::Timeout,
        ExecStatus::Cancelled,
        ExecStatus::Interrupted,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ExecStatus::Queued => "queued",
            ExecStatus::Running => "running",
            ExecStatus::Success => "success",
            ExecStatus::Error => "error",
            ExecStatus::Timeout => "timeout",
            ExecStatus::Cancelled => "cancelled",
            ExecStatus::Interrupted => "interrupted",
        }
    }

    pub fn parse(s: &str) -> Option<ExecStatus> {
        ExecStatus::ALL.into_iter().find(|x| x.as_str() == s)
    }

    /// Finished, one way or another.
    pub fn is_final(self) -> bool {
        !matches!(self, ExecStatus::Queued | ExecStatus::Running)
    }
}

impl fmt::Display for ExecStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Status of one node in one execution.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeStatus {
    Running,
    Success,
    Error,
    Skipped,
    Pinned,
    Reused,
    Timeout,
    Cancelled,
}

impl NodeStatus {
    pub const ALL: [NodeStatus; 8] = [
        NodeStatus::Running,
        NodeStatus::Success,
        NodeStatus::Error,
        NodeStatus::Skipped,
        NodeStatus::Pinned,
        NodeStatus::Reused,
        NodeStatus::Timeout,
        NodeStatus::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            NodeStatus::Running => "running",
            NodeStatus::Success => "success",
            NodeStatus::Error => "error",
            NodeStatus::Skipped => "skipped",
            NodeStatus::Pinned => "pinned",
            NodeStatus::Reused => "reused",
            NodeStatus::Timeout => "timeout",
            NodeStatus::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<NodeStatus> {
        NodeStatus::ALL.into_iter().find(|x| x.as_str() == s)
    }

    /// The node produced an output downstream nodes can use.
    pub fn has_output(self) -> bool {
        matches!(
            self,
            NodeStatus::Success | NodeStatus::Pinned | NodeStatus::Reused
        )
    }
}

impl fmt::Display for NodeStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error as recorded: what kind, what it says, and where it came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorInfo {
    /// The node that failed, for execution-level errors.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    #[serde(rename = "type")]
    pub kind: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceback: Option<String>,
}

impl ErrorInfo {
    pub fn new(kind: impl Into<String>, message: impl Into<String>) -> Self {
        ErrorInfo {
            node: None,
            kind: kind.into(),
            message: message.into(),
            traceback: None,
        }
    }
}

/// Which stream a log line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stream {
    Stdout,
    Stderr,
    /// `log(...)` called by a code node.
    Log,
}

impl Stream {
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
            Stream::Log => "log",
        }
    }
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
    },
    NodeEnd {
        node: String,
        status: NodeStatus,
        attempt: u32,
        duration_ms: f64,
        ts: i64,
        /// The first ~200 characters of the output as JSON.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        output_preview: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<ErrorInfo>,
        /// This attempt failed and another one follows.
        #[serde(default, skip_serializing_if = "is_false")]
        retrying: bool,
    },
    Log {
        #[serde(default)]
        node: Option<String>,
        stream: Stream,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        level: Option<String>,
        line: String,
        ts: i64,
    },
    ExecutionEnd {
        status: ExecStatus,
        duration_ms: f64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<ErrorInfo>,
        ts: i64,
    },
}

fn is_false(b: &bool) -> bool {
    !*b
}

impl Event {
    /// The name in the `event` field.
    pub fn kind(&self) -> &'static str {
        match self {
            Event::ExecutionStart { .. } => "execution_start",
            Event::NodeStart { .. } => "node_start",
            Event::NodeEnd { .. } => "node_end",
            Event::Log { .. } => "log",
            Event::ExecutionEnd { .. } => "execution_end",
        }
    }

    pub fn node(&self) -> Option<&str> {
        match self {
            Event::NodeStart { node, .. } | Event::NodeEnd { node, .. } => Some(node),
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
