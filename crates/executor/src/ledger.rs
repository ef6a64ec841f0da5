//! What the plan makes possible, checked against what the child reports.
//!
//! The protocol's nonce keeps stray and echoed markers out, but code running in the workflow's
//! own process can always print a line that looks like an event. The runner therefore accepts
//! only events the plan allows — a node of this workflow, one start per attempt, attempts in
//! order, one end per start, nothing after a node's last end — and a result only if it agrees
//! with the events it saw. What it refuses is logged as a protocol error and never recorded, so
//! a row cannot be forged and a failed node cannot be turned into a success after the fact.

use flowrun_events::NodeStatus;
use std::collections::{HashMap, HashSet};

#[derive(Debug, Default, Clone)]
struct NodeState {
    /// The last attempt started.
    attempt: u32,
    /// That attempt is running (started, not ended).
    running: bool,
    /// The node's last `node_end` came (no retry follows): nothing more may come for it.
    ended: Option<NodeStatus>,
}

/// Why an event was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refusal {
    pub(crate) message: String,
    /// The event contradicts one already accepted (a second end of an ended attempt): one of
    /// the two was forged, and nothing says which, so the node's output cannot be trusted.
    pub(crate) conflict: bool,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

fn refuse<T>(message: String) -> Result<T, Refusal> {
    Err(Refusal {
        message,
        conflict: false,
    })
}

/// Every node of the plan and what the child has said of it so far.
#[derive(Debug)]
pub(crate) struct Ledger {
    nodes: HashMap<String, NodeState>,
    /// Nodes with `on_error: continue`: their failure does not fail the execution.
    continue_on_error: HashSet<String>,
    /// Nodes a workflow test mocked: only they end `mocked`, and they never end `success`
    /// (their handler does not run).
    mocked: HashSet<String>,
}

impl Ledger {
    pub(crate) fn new<'a>(
        plan: impl IntoIterator<Item = &'a String>,
        continue_on_error: &HashSet<String>,
        mocked: &HashSet<String>,
    ) -> Ledger {
        Ledger {
            nodes: plan
                .into_iter()
                .map(|n| (n.clone(), NodeState::default()))
                .collect(),
            continue_on_error: continue_on_error.clone(),
            mocked: mocked.clone(),
        }
    }

    fn node(&mut self, node: &str) -> Result<&mut NodeState, Refusal> {
        match self.nodes.get_mut(node) {
            Some(n) => Ok(n),
            None => refuse(format!(
                "an event for '{node}', which is not a node of this workflow"
            )),
        }
    }

    /// The node running now, if any.
    fn running(&self) -> Option<&String> {
        self.nodes.iter().find(|(_, n)| n.running).map(|(id, _)| id)
    }

    /// A `node_start`: allowed for a node of the plan that is not running and has not ended,
    /// with an attempt after the last one, while no other node runs (the runtime runs one node
    /// at a time).
    pub(crate) fn start(&mut self, node: &str, attempt: u32) -> Result<(), Refusal> {
        if let Some(other) = self.running().filter(|o| *o != node) {
            return refuse(format!("node_start of '{node}' while '{other}' runs"));
        }
        let n = self.node(node)?;
        if let Some(status) = n.ended {
            return refuse(format!(
                "node_start of '{node}', which had already ended {status}"
            ));
        }
        if n.running {
            return refuse(format!(
                "a second node_start of '{node}' while attempt {} runs",
                n.attempt
            ));
        }
        if attempt <= n.attempt {
            return refuse(format!(
                "node_start of '{node}' attempt {attempt} after attempt {}",
                n.attempt
            ));
        }
        n.attempt = attempt;
        n.running = true;
        Ok(())
    }

    /// A `node_end`: the end of the running attempt, or — for a node that does not run
    /// (skipped, pinned, reused) — attempt 0 of a node that never started. A mocked node's
    /// attempts start and end like any others, `mocked` instead of `success`.
    pub(crate) fn end(
        &mut self,
        node: &str,
        attempt: u32,
        status: NodeStatus,
        retrying: bool,
    ) -> Result<(), Refusal> {
        let is_mocked = self.mocked.contains(node);
        match status {
            NodeStatus::Mocked if !is_mocked => {
                return refuse(format!("node_end mocked of '{node}', which is not mocked"));
            }
            NodeStatus::Success if is_mocked => {
                return refuse(format!("node_end success of '{node}', which is mocked"));
            }
            _ => {}
        }
        let n = self.node(node)?;
        if let Some(prev) = n.ended {
            return Err(Refusal {
                message: format!("a second node_end of '{node}', which had ended {prev}"),
                conflict: true,
            });
        }
        let runs = !matches!(
            status,
            NodeStatus::Skipped | NodeStatus::Pinned | NodeStatus::Reused
        );
        if runs {
            if !n.running || attempt != n.attempt {
                return refuse(format!(
                    "node_end of '{node}' attempt {attempt}, which was not running"
                ));
            }
        } else if attempt != 0 || n.attempt != 0 || n.running || retrying {
            return refuse(format!("node_end {status} of '{node}', which had started"));
        }
        n.running = false;
        if !retrying {
            n.ended = Some(status);
        }
        Ok(())
    }

    /// The runner itself ended the attempt that was running (timeout, stop, the process died).
    pub(crate) fn close(&mut self, node: &str, status: NodeStatus) {
        if let Some(n) = self.nodes.get_mut(node) {
            n.running = false;
            n.ended = Some(status);
        }
    }

    /// Why a result of `success` cannot be true, given the events: a node still running, or a
    /// node that failed without `on_error: continue`.
    pub(crate) fn contradicts_success(&self) -> Option<String> {
        let mut ids: Vec<&String> = self.nodes.keys().collect();
        ids.sort();
        for id in ids {
            let n = &self.nodes[id];
            if n.running {
                return Some(format!("node '{id}' never ended"));
            }
            if let Some(s) = n.ended {
                let failed = matches!(
                    s,
                    NodeStatus::Error | NodeStatus::Timeout | NodeStatus::Cancelled
                );
                if failed && !self.continue_on_error.contains(id) {
                    return Some(format!("node '{id}' ended {s}"));
                }
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ledger() -> Ledger {
        let plan = ["a".to_string(), "b".to_string(), "c".to_string()];
        Ledger::new(&plan, &HashSet::from(["c".to_string()]), &HashSet::new())
    }

    #[test]
    fn only_mocked_nodes_end_mocked_and_they_start_like_others() {
        let plan = ["a".to_string(), "m".to_string()];
        let mut l = Ledger::new(&plan, &HashSet::new(), &HashSet::from(["m".to_string()]));
        l.start("a", 1).unwrap();
        assert!(
            l.end("a", 1, NodeStatus::Mocked, false).is_err(),
            "a is not mocked"
        );
        l.end("a", 1, NodeStatus::Success, false).unwrap();
        assert!(
            l.end("m", 0, NodeStatus::Mocked, false).is_err(),
            "a mocked node starts first"
        );
        l.start("m", 1).unwrap();
        l.end("m", 1, NodeStatus::Error, true).unwrap();
        l.start("m", 2).unwrap();
        assert!(
            l.end("m", 2, NodeStatus::Success, false).is_err(),
            "a mocked node's handler never runs"
        );
        l.end("m", 2, NodeStatus::Mocked, false).unwrap();
        assert_eq!(l.contradicts_success(), None);
    }

    #[test]
    fn the_runtimes_own_sequence_is_accepted() {
        let mut l = ledger();
        l.start("a", 1).unwrap();
        l.end("a", 1, NodeStatus::Error, true).unwrap();
        l.start("a", 2).unwrap();
        l.end("a", 2, NodeStatus::Success, false).unwrap();
        l.end("b", 0, NodeStatus::Skipped, false).unwrap();
        l.start("c", 1).unwrap();
        l.end("c", 1, NodeStatus::Error, false).unwrap();
        assert_eq!(
            l.contradicts_success(),
            None,
            "c may fail: on_error continue"
        );
    }

    #[test]
    fn what_the_plan_makes_impossible_is_refused() {
        let mut l = ledger();
        assert!(
            l.start("ghost", 1)
                .unwrap_err()
                .message
                .contains("not a node")
        );
        assert!(
            l.end("a", 1, NodeStatus::Success, false).is_err(),
            "end without start"
        );
        l.start("a", 1).unwrap();
        assert!(l.start("a", 2).is_err(), "second start while running");
        assert!(l.start("b", 1).is_err(), "a start while another node runs");
        l.end("a", 1, NodeStatus::Error, false).unwrap();
        let second = l.end("a", 1, NodeStatus::Success, false).unwrap_err();
        assert!(second.conflict, "second end of an ended attempt: {second}");
        assert!(l.start("a", 2).is_err(), "a start after the last end");
        assert!(l.end("b", 3, NodeStatus::Pinned, false).is_err());
        assert_eq!(
            l.contradicts_success().as_deref(),
            Some("node 'a' ended error")
        );
    }

    #[test]
    fn a_node_left_running_contradicts_success() {
        let mut l = ledger();
        l.start("b", 1).unwrap();
        assert_eq!(
            l.contradicts_success().as_deref(),
            Some("node 'b' never ended")
        );
        l.close("b", NodeStatus::Timeout);
        assert_eq!(
            l.contradicts_success().as_deref(),
            Some("node 'b' ended timeout")
        );
    }
}
