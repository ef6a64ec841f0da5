//! What state an execution or a node is in.

use serde::{Deserialize, Serialize};
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
    /// Ended on purpose before its last node (`flowrun pause`, a breakpoint): nothing of it
    /// runs, its state is in the store, and `resume` continues it.
    Paused,
}

impl ExecStatus {
    pub const ALL: [ExecStatus; 8] = [
        ExecStatus::Queued,
        ExecStatus::Running,
        ExecStatus::Success,
        ExecStatus::Error,
        ExecStatus::Timeout,
        ExecStatus::Cancelled,
        ExecStatus::Interrupted,
        ExecStatus::Paused,
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
            ExecStatus::Paused => "paused",
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
        f.pad(self.as_str())
    }
}

/// Status of one node in one execution.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeStatus {
    /// Planned and not started yet: only in the views of a queued or running execution (a
    /// node without a row); never stored, never in an event.
    Pending,
    Running,
    Success,
    Error,
    Skipped,
    Pinned,
    Reused,
    /// Its outcome was fixed by a workflow test (`flowrun test`): it was not executed.
    Mocked,
    Timeout,
    Cancelled,
}

impl NodeStatus {
    pub const ALL: [NodeStatus; 10] = [
        NodeStatus::Pending,
        NodeStatus::Running,
        NodeStatus::Success,
        NodeStatus::Error,
        NodeStatus::Skipped,
        NodeStatus::Pinned,
        NodeStatus::Reused,
        NodeStatus::Mocked,
        NodeStatus::Timeout,
        NodeStatus::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            NodeStatus::Pending => "pending",
            NodeStatus::Running => "running",
            NodeStatus::Success => "success",
            NodeStatus::Error => "error",
            NodeStatus::Skipped => "skipped",
            NodeStatus::Pinned => "pinned",
            NodeStatus::Reused => "reused",
            NodeStatus::Mocked => "mocked",
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
            NodeStatus::Success | NodeStatus::Pinned | NodeStatus::Reused | NodeStatus::Mocked
        )
    }
}

impl fmt::Display for NodeStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}
