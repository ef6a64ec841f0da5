//! What the plan makes possible, checked against what the child reports.
//!
//! The protocol's nonce keeps stray and echoed markers out, but code running in the workflow's
//! own process can always print a line that looks like an event. The runner therefore accepts
//! only events the plan allows — a node of this workflow, started only once every node it
//! depends on has ended and while fewer than `max_parallel` nodes run, one start per attempt,
//! attempts in order, one end per start, nothing after a node's last end; items and iterations
//! only inside their node's own start and end, no item past the node's count; an end without a
//! start (`pinned`, `reused`, `skipped`) only where the plan explains it ([`NotRun`]) — and a
//! result only if it agrees with the events it saw. What it refuses is logged as a protocol
//! error and never recorded, so a row cannot be forged and a failed node cannot be turned into
//! a success after the fact.

use crate::spec::NotRun;
use flowrun_events::{NodeStatus, Part};
use std::collections::{HashMap, HashSet};

/// One node, or one item or iteration of it: its attempts so far.
#[derive(Debug, Default, Clone)]
struct Track {
    /// The last attempt started.
    attempt: u32,
    /// That attempt is running (started, not ended).
    running: bool,
    /// The last `node_end` came (no retry follows): nothing more may come for it.
    ended: Option<NodeStatus>,
    /// The last attempt ended saying another follows (`retrying`), and none has started yet.
    retrying: bool,
}

#[derive(Debug, Default, Clone)]
struct NodeState {
    own: Track,
    parts: HashMap<Part, Track>,
    /// A `for_each` node's item count, from its start: no item past it exists.
    items: Option<u32>,
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

/// What the plan says of the nodes.
#[derive(Debug, Clone, Default)]
pub(crate) struct Rules {
    /// Nodes with `on_error: continue`: their failure does not fail the execution.
    pub(crate) continue_on_error: HashSet<String>,
    /// The nodes each node waits for (its deps and the conditions that guard it).
    pub(crate) upstream: HashMap<String, Vec<String>>,
    /// Nodes with `for_each` or `repeat`: their work is done in items or iterations.
    pub(crate) looping: HashSet<String>,
    /// How many nodes may run at once.
    pub(crate) max_parallel: usize,
    /// Nodes a workflow test mocked: only they end `mocked`, and they never end `success`
    /// (their handler does not run).
    pub(crate) mocked: HashSet<String>,
    /// What may end without running (`pinned`, `reused`, `skipped`).
    pub(crate) not_run: NotRun,
}

/// Every node of the plan and what the child has said of it so far.
#[derive(Debug)]
pub(crate) struct Ledger {
    nodes: HashMap<String, NodeState>,
    rules: Rules,
}

fn describe(node: &str, part: Option<Part>) -> String {
    match part {
        None => format!("'{node}'"),
        Some(Part::Item(i)) => format!("item {i} of '{node}'"),
        Some(Part::Iteration(k)) => format!("iteration {k} of '{node}'"),
    }
}

impl Ledger {
    pub(crate) fn new<'a>(plan: impl IntoIterator<Item = &'a String>, rules: Rules) -> Ledger {
        Ledger {
            nodes: plan
                .into_iter()
                .map(|n| (n.clone(), NodeState::default()))
                .collect(),
            rules,
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

    /// The track of a node or of one of its parts (an item or iteration only inside the
    /// node's own start and end).
    fn track(&mut self, node: &str, part: Option<Part>) -> Result<&mut Track, Refusal> {
        let looping = self.rules.looping.contains(node);
        let n = self.node(node)?;
        match part {
            None => Ok(&mut n.own),
            Some(p) => {
                if !looping {
                    return refuse(format!(
                        "an event for {}, which has no items or iterations",
                        describe(node, part)
                    ));
                }
                if !n.own.running {
                    return refuse(format!(
                        "an event for {} outside the node's own start and end",
                        describe(node, part)
                    ));
                }
                if let (Part::Item(i), Some(count)) = (p, n.items)
                    && i >= count
                {
                    return refuse(format!(
                        "an event for {}, of a node with {count} item(s)",
                        describe(node, part)
                    ));
                }
                Ok(n.parts.entry(p).or_default())
            }
        }
    }

    /// Nodes running now (their own start came, their own end not yet).
    fn running_nodes(&self) -> usize {
        self.nodes.values().filter(|n| n.own.running).count()
    }

    /// The first node `node` waits for that has not ended.
    fn waiting_for(&self, node: &str) -> Option<&String> {
        self.rules
            .upstream
            .get(node)
            .into_iter()
            .flatten()
            .find(|u| self.nodes.get(*u).is_none_or(|s| s.own.ended.is_none()))
    }

    /// A `node_start` (with `items`, the item count its own start gives a `for_each` node):
    /// allowed for a node of the plan once everything it depends on has ended, while fewer than
    /// `max_parallel` nodes run, with an attempt after the last one.
    pub(crate) fn start(
        &mut self,
        node: &str,
        attempt: u32,
        part: Option<Part>,
        items: Option<u32>,
    ) -> Result<(), Refusal> {
        let what = describe(node, part);
        if part.is_none() && self.nodes.contains_key(node) {
            if let Some(u) = self.waiting_for(node) {
                return refuse(format!("node_start of {what} before '{u}' ended"));
            }
            let busy = self.running_nodes();
            let already = self.nodes.get(node).is_some_and(|n| n.own.running);
            if !already && busy >= self.rules.max_parallel.max(1) {
                return refuse(format!(
                    "node_start of {what} while {busy} node(s) run (at most {})",
                    self.rules.max_parallel.max(1)
                ));
            }
        }
        let t = self.track(node, part)?;
        if let Some(status) = t.ended {
            return refuse(format!(
                "node_start of {what}, which had already ended {status}"
            ));
        }
        if t.running {
            return refuse(format!(
                "a second node_start of {what} while attempt {} runs",
                t.attempt
            ));
        }
        if attempt <= t.attempt {
            return refuse(format!(
                "node_start of {what} attempt {attempt} after attempt {}",
                t.attempt
            ));
        }
        t.attempt = attempt;
        t.running = true;
        t.retrying = false;
        if part.is_none() && items.is_some() {
            self.node(node)?.items = items;
        }
        Ok(())
    }

    /// Why the plan cannot explain `node` (or its `part`) ending `status` without running, if
    /// it cannot: `pinned` and `reused` only for what the plan pins or a resume reuses; a node
    /// `skipped` only once everything it waits for has ended, and only behind a condition or
    /// when everything it depends on was skipped (the runtime's two reasons). An item may be
    /// skipped (the run ending or pausing before it starts); an iteration never ends unrun.
    fn unexplained(&self, node: &str, part: Option<Part>, status: NodeStatus) -> Option<String> {
        let rules = &self.rules.not_run;
        let what = describe(node, part);
        let allowed = match (part, status) {
            (None, NodeStatus::Pinned) => rules.pinned.contains(node),
            (None, NodeStatus::Reused) => rules.reused.contains(node),
            (Some(Part::Item(i)), NodeStatus::Reused) => rules
                .reused_items
                .get(node)
                .is_some_and(|items| items.contains(&i)),
            (Some(Part::Item(_)), NodeStatus::Skipped) => true,
            (None, NodeStatus::Skipped) => {
                if let Some(u) = self.waiting_for(node) {
                    return Some(format!("node_end skipped of {what} before '{u}' ended"));
                }
                let ups = self
                    .rules
                    .upstream
                    .get(node)
                    .map(Vec::as_slice)
                    .unwrap_or(&[]);
                rules.guarded.contains(node)
                    || (!ups.is_empty()
                        && ups.iter().all(|u| {
                            self.nodes
                                .get(u)
                                .is_some_and(|s| s.own.ended == Some(NodeStatus::Skipped))
                        }))
            }
            _ => false,
        };
        if !allowed {
            return Some(format!(
                "node_end {status} of {what}, which the plan does not let end so without running"
            ));
        }
        if part.is_none()
            && let Some(u) = self.waiting_for(node)
        {
            return Some(format!("node_end {status} of {what} before '{u}' ended"));
        }
        None
    }

    /// A `node_end`: the end of the running attempt, or — for what does not run (skipped,
    /// pinned, reused) — attempt 0 of something that never started. A node ends only after
    /// all of its items or iterations have. A mocked node's attempts start and end like any
    /// others, `mocked` instead of `success`. An attempt that ended `retrying` may end once more,
    /// `error` (or `cancelled`, by a pause) and not retrying, before the next starts: the retry
    /// will not come.
    pub(crate) fn end(
        &mut self,
        node: &str,
        attempt: u32,
        status: NodeStatus,
        retrying: bool,
        part: Option<Part>,
    ) -> Result<(), Refusal> {
        let what = describe(node, part);
        let is_mocked = self.rules.mocked.contains(node);
        match status {
            NodeStatus::Mocked if !is_mocked => {
                return refuse(format!("node_end mocked of {what}, which is not mocked"));
            }
            NodeStatus::Success if is_mocked => {
                return refuse(format!("node_end success of {what}, which is mocked"));
            }
            _ => {}
        }
        if part.is_none() {
            let n = self.node(node)?;
            if let Some(p) = n
                .parts
                .iter()
                .find(|(_, t)| t.running || t.retrying)
                .map(|(p, _)| *p)
            {
                return refuse(format!(
                    "node_end of {what} while {} runs",
                    describe(node, Some(p))
                ));
            }
        }
        let runs = !matches!(
            status,
            NodeStatus::Skipped | NodeStatus::Pinned | NodeStatus::Reused
        );
        if !runs && let Some(why) = self.unexplained(node, part, status) {
            return refuse(why);
        }
        let t = self.track(node, part)?;
        if let Some(prev) = t.ended {
            return Err(Refusal {
                message: format!("a second node_end of {what}, which had ended {prev}"),
                conflict: true,
            });
        }
        // The retry an attempt announced will not come (the run is ending, or pausing): that
        // attempt's failure, said again as the last. Only an error, or cancelled (by the
        // pause): nothing can become a success so.
        let retry_withdrawn = t.retrying
            && !t.running
            && attempt == t.attempt
            && matches!(status, NodeStatus::Error | NodeStatus::Cancelled)
            && !retrying;
        if runs {
            if !retry_withdrawn && (!t.running || attempt != t.attempt) {
                return refuse(format!(
                    "node_end of {what} attempt {attempt}, which was not running"
                ));
            }
        } else if attempt != 0 || t.attempt != 0 || t.running || retrying {
            return refuse(format!("node_end {status} of {what}, which had started"));
        }
        t.running = false;
        t.retrying = retrying;
        if !retrying {
            t.ended = Some(status);
        }
        Ok(())
    }

    /// A `node_delta` (streamed text): allowed only while that node — or that item or
    /// iteration of it — runs.
    pub(crate) fn delta(&self, node: &str, part: Option<Part>) -> Result<(), Refusal> {
        let what = describe(node, part);
        let Some(n) = self.nodes.get(node) else {
            return refuse(format!(
                "an event for '{node}', which is not a node of this workflow"
            ));
        };
        let running = match part {
            None => n.own.running,
            Some(p) => n.own.running && n.parts.get(&p).is_some_and(|t| t.running),
        };
        if running {
            Ok(())
        } else {
            refuse(format!("node_delta of {what}, which is not running"))
        }
    }

    /// The runner itself ended what was running (timeout, stop, the process died).
    pub(crate) fn close(&mut self, node: &str, part: Option<Part>, status: NodeStatus) {
        if let Some(n) = self.nodes.get_mut(node) {
            let t = match part {
                None => &mut n.own,
                Some(p) => n.parts.entry(p).or_default(),
            };
            t.running = false;
            t.retrying = false;
            t.ended = Some(status);
        }
    }

    /// A node (or an item or iteration of one) still running or waiting for its retry, if any:
    /// a `paused` result cannot be true while one is.
    pub(crate) fn still_running(&self) -> Option<String> {
        let mut ids: Vec<&String> = self.nodes.keys().collect();
        ids.sort();
        ids.into_iter()
            .find(|id| {
                let n = &self.nodes[*id];
                n.own.running || n.own.retrying || n.parts.values().any(|t| t.running || t.retrying)
            })
            .cloned()
    }

    /// Why a result of `success` cannot be true, given the events: a node still running, or a
    /// node that failed without `on_error: continue`.
    pub(crate) fn contradicts_success(&self) -> Option<String> {
        let mut ids: Vec<&String> = self.nodes.keys().collect();
        ids.sort();
        for id in ids {
            let n = &self.nodes[id];
            if n.own.running || n.own.retrying {
                return Some(format!("node '{id}' never ended"));
            }
            if let Some(s) = n.own.ended {
                let failed = matches!(
                    s,
                    NodeStatus::Error | NodeStatus::Timeout | NodeStatus::Cancelled
                );
                if failed && !self.rules.continue_on_error.contains(id) {
                    return Some(format!("node '{id}' ended {s}"));
                }
            }
        }
        None
    }
}

#[cfg(test)]
mod tests;
