//! Where an execution's events go: every viewer (store recorder, terminal, JSONL, HTTP) is a
//! [`Sink`] and gets the same events in the same order.

use crate::StopReason;
use crate::process::ProcessInfo;
use flowrun_events::{Envelope, ErrorInfo, NodeStatus, Part};
use serde_json::Value;

/// The full record of a finished node, for the store (events carry only a preview).
#[derive(Debug, Clone, PartialEq)]
pub struct NodeDetail {
    pub node: String,
    /// The item or iteration this is the record of; `None` for the node itself.
    pub part: Option<Part>,
    pub status: NodeStatus,
    pub attempt: u32,
    pub duration_ms: f64,
    pub started_at: Option<i64>,
    pub finished_at: i64,
    pub input: Option<Value>,
    pub output: Option<Value>,
    pub error: Option<ErrorInfo>,
    pub from_execution: Option<String>,
    /// Why it was skipped.
    pub reason: Option<String>,
}

/// Receives what happens during an execution, in order.
pub trait Sink: Send {
    /// The child is running; `info` identifies its process group.
    fn spawned(&mut self, _info: &ProcessInfo) {}
    /// Full input/output of a node attempt, just before its `node_end` event.
    fn node_detail(&mut self, _detail: &NodeDetail) {}
    /// What a running node (or item or iteration: `part`) was given, for the store: its row
    /// shows it while it runs, and keeps it if the runner has to end it. No event.
    fn node_input(&mut self, _node: &str, _part: Option<Part>, _input: &Value) {}
    fn event(&mut self, envelope: &Envelope);
    /// A `node_delta` (streamed text of a running node): for live viewers only, never stored.
    /// Its `seq` is that of the last event before it.
    fn delta(&mut self, _envelope: &Envelope) {}
    /// Nothing else is pending right now: a good moment to write batched work.
    fn flush(&mut self) {}
    /// The execution is being stopped for `reason`: its processes were sent SIGTERM and are
    /// killed after `grace`, or at once if a stop comes again meanwhile (a second Ctrl-C). For
    /// a viewer to say so: the nodes' ends come only once they have ended.
    fn stopping(&mut self, _reason: StopReason, _grace: std::time::Duration) {}
    /// Whether a stop of this execution was asked from outside (`flowrun stop`, through the
    /// store) that has not reached the executor: asked when its process was killed by a signal
    /// nobody here sent, which such a stop does itself for a runner that does not answer.
    fn asked_to_stop(&mut self) -> Option<StopReason> {
        None
    }
}

/// Views nothing: for runs whose events only the store's recorder needs (a test case, a
/// sub-workflow's child).
pub struct Quiet;

impl Sink for Quiet {
    fn event(&mut self, _envelope: &Envelope) {}
}

/// Sends everything to several sinks.
pub struct Fanout<'a>(pub Vec<&'a mut dyn Sink>);

impl Sink for Fanout<'_> {
    fn spawned(&mut self, info: &ProcessInfo) {
        self.0.iter_mut().for_each(|s| s.spawned(info));
    }
    fn node_detail(&mut self, d: &NodeDetail) {
        self.0.iter_mut().for_each(|s| s.node_detail(d));
    }
    fn node_input(&mut self, node: &str, part: Option<Part>, input: &Value) {
        self.0
            .iter_mut()
            .for_each(|s| s.node_input(node, part, input));
    }
    fn stopping(&mut self, reason: StopReason, grace: std::time::Duration) {
        self.0.iter_mut().for_each(|s| s.stopping(reason, grace));
    }
    fn asked_to_stop(&mut self) -> Option<StopReason> {
        self.0.iter_mut().find_map(|s| s.asked_to_stop())
    }
    fn event(&mut self, e: &Envelope) {
        self.0.iter_mut().for_each(|s| s.event(e));
    }
    fn delta(&mut self, e: &Envelope) {
        self.0.iter_mut().for_each(|s| s.delta(e));
    }
    fn flush(&mut self) {
        self.0.iter_mut().for_each(|s| s.flush());
    }
}
