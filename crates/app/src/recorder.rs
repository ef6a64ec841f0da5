//! The sink that records an execution in the store as it happens.
//!
//! Node rows and events are batched and written when the executor has handled all the output
//! there was to read, every 512 writes, and at the execution's end: a flood of log lines costs
//! one transaction per batch, the nodes that ended within one read share one, and a node's end
//! is in the store while the next node runs. A crash of the runner loses at most the batch it
//! was handling; recovery ends what it left running.

use crate::SharedStore;
use flowrun_codegen::model::NodeKind;
use flowrun_events::{Envelope, ErrorInfo, Event, ExecStatus};
use flowrun_executor::process::ProcessInfo;
use flowrun_executor::{NodeDetail, Sink};
use flowrun_store::{NodeRow, ProcessRow, Usage, Write};
use serde_json::Value;
use std::borrow::Cow;
use std::collections::{HashMap, HashSet};

pub struct Recorder {
    store: SharedStore,
    execution_id: String,
    positions: HashMap<String, i64>,
    pending: Vec<Write>,
    /// Nodes whose outputs carry `usage` and `cost_usd` (LLM and agent nodes).
    metered: HashSet<String>,
    /// Nodes with `for_each` or `repeat`.
    looping: HashSet<String>,
    usage: Usage,
    /// A metered node succeeded without a known cost: the total cost is unknown too (a sum of
    /// the known ones would be an undercount passed off as the total).
    cost_unknown: bool,
    /// The first store error: recording goes on as far as it can, and the run reports it.
    pub error: Option<String>,
    /// The store refused a write because the execution had ended already (`flowrun stop` or
    /// recovery ended it for a runner that did not answer): it keeps that end.
    pub ended_elsewhere: bool,
    /// The execution's end (its `execution_end`, with its seq), once the executor has said it:
    /// written with the execution's row's end, in one transaction ([`Recorder::take_last`]).
    end: Option<(u64, Event)>,
}

const BATCH: usize = 512;

/// The nodes whose token usage and cost count in the execution's totals: `llm` and `agent`
/// nodes, whose outputs carry `usage` and `cost_usd`.
pub fn metered(workflow: &flowrun_codegen::Workflow) -> HashSet<String> {
    workflow
        .nodes
        .iter()
        .filter(|n| matches!(n.kind, NodeKind::Llm(_) | NodeKind::Agent(_)))
        .map(|n| n.id.clone())
        .collect()
}

/// The tokens a metered node's output counts for: `(input, output)`. Input counts every token
/// the model read: an agent's `input_tokens` (not cached) plus its `cache_read_tokens` and
/// `cache_write_tokens`; an LLM node has only `input_tokens`.
fn tokens(out: &Value) -> (Option<i64>, Option<i64>) {
    let usage = out.get("usage");
    // What the child or a mock says: a count below zero is none, and sums saturate (an
    // overflow panicked in debug builds and wrapped negative in release).
    let tok = |k: &str| {
        usage
            .and_then(|u| u.get(k))
            .and_then(Value::as_i64)
            .filter(|n| *n >= 0)
    };
    let input = ["input_tokens", "cache_read_tokens", "cache_write_tokens"]
        .iter()
        .filter_map(|k| tok(k))
        .reduce(i64::saturating_add);
    (input, tok("output_tokens"))
}

/// An event as the store keeps it.
fn event_write(seq: u64, event: &Event) -> Write {
    Write::Event {
        seq,
        kind: event.kind().to_string(),
        node_id: event.node().map(str::to_string),
        ts: event.ts(),
        data: serde_json::to_string(event).expect("events serialize"),
    }
}

impl Recorder {
    /// `metered`: the LLM and agent nodes ([`metered`]), whose token usage and cost are summed;
    /// `looping`: the nodes with `for_each` or `repeat`, whose calls are their items or
    /// iterations.
    pub fn new(
        store: SharedStore,
        execution_id: &str,
        nodes: &[String],
        metered: HashSet<String>,
        looping: HashSet<String>,
    ) -> Recorder {
        Recorder {
            metered,
            looping,
            usage: Usage::default(),
            cost_unknown: false,
            store,
            execution_id: execution_id.to_string(),
            positions: nodes
                .iter()
                .enumerate()
                .map(|(i, n)| (n.clone(), i as i64))
                .collect(),
            pending: Vec::new(),
            error: None,
            ended_elsewhere: false,
            end: None,
        }
    }

    /// Tokens and cost of the LLM and agent nodes that succeeded so far.
    pub fn usage(&self) -> Usage {
        let mut u = self.usage;
        if self.cost_unknown {
            u.cost_usd = None;
        }
        u
    }

    /// What is left to write once the execution has ended — its `execution_end` event, and
    /// what came with it — for `Store::finish_execution` to write with the row's end; none when
    /// the store had ended the execution already. The event says `status` and `error`, the
    /// row's, when they are not what the executor said (a store that failed to take some of the
    /// execution makes it an error): the stream and the record never tell two ends.
    pub fn take_last(&mut self, status: ExecStatus, error: Option<&ErrorInfo>) -> Vec<Write> {
        let mut last = std::mem::take(&mut self.pending);
        let end = self.end.take();
        if self.ended_elsewhere {
            return Vec::new();
        }
        if let Some((seq, mut event)) = end {
            if let Event::ExecutionEnd {
                status: said,
                error: why,
                output,
                ..
            } = &mut event
                && *said != status
            {
                *said = status;
                *why = error.cloned();
                *output = None;
            }
            last.push(event_write(seq, &event));
        }
        last
    }

    fn position(&self, node: &str) -> i64 {
        self.positions.get(node).copied().unwrap_or(i64::MAX / 2)
    }

    fn write_pending(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let writes = std::mem::take(&mut self.pending);
        if self.ended_elsewhere {
            return;
        }
        let mut store = self.store.lock();
        let res = store.apply(&self.execution_id, &writes);
        // The child is running: a long execution's log is copied back as it grows, not left for
        // its end or the next one's start (by the store's thread: see crates/store/src/wal.rs).
        store.checkpoint_in_background();
        drop(store);
        match res {
            Ok(true) => {}
            Ok(false) => self.ended_elsewhere = true,
            Err(e) => {
                self.error.get_or_insert_with(|| e.to_string());
            }
        }
    }
}

impl Sink for Recorder {
    fn spawned(&mut self, info: &ProcessInfo) {
        let row = ProcessRow {
            pid: info.pid,
            pgid: info.pgid,
            start_time: info.start_time,
        };
        let start = if info.warm { "warm" } else { "cold" };
        let res = {
            let mut store = self.store.lock();
            let res = store.set_process(&self.execution_id, row, start);
            // The moment to copy the log back, by the store's thread, beside the execution (see
            // `crates/store/src/wal.rs`).
            store.checkpoint_in_background();
            res
        };
        if let Err(e) = res {
            self.error.get_or_insert_with(|| e.to_string());
        }
    }

    fn node_detail(&mut self, d: &NodeDetail) {
        // The calls of a node with `for_each` or `repeat` are its items or iterations: its own
        // row repeats them (a list of outputs, or the last one) and counts for nothing.
        use flowrun_events::NodeStatus;
        let a_call = d.part.is_some() || !self.looping.contains(&d.node);
        let mocked = d.status == NodeStatus::Mocked;
        // What the call spent: a success's output, or what a failed call's error says it spent
        // (an agent that used tokens, then failed).
        let spent: Option<Cow<'_, Value>> = match (&d.output, &d.error) {
            (Some(out), _) if d.status == NodeStatus::Success || mocked => Some(Cow::Borrowed(out)),
            (_, Some(e)) if e.usage.is_some() || e.cost_usd.is_some() => Some(Cow::Owned(
                serde_json::json!({"usage": e.usage, "cost_usd": e.cost_usd}),
            )),
            _ => None,
        };
        if let Some(out) = spent.filter(|_| a_call && self.metered.contains(&d.node)) {
            let add = |a: Option<i64>, b: Option<i64>| match (a, b) {
                (None, None) => None,
                (a, b) => Some(a.unwrap_or(0).saturating_add(b.unwrap_or(0))),
            };
            let (input, output) = tokens(&out);
            self.usage.input_tokens = add(self.usage.input_tokens, input);
            self.usage.output_tokens = add(self.usage.output_tokens, output);
            let cost = out.get("cost_usd").and_then(Value::as_f64);
            match cost.filter(|c| c.is_finite() && *c >= 0.0) {
                Some(c) => self.usage.cost_usd = Some(self.usage.cost_usd.unwrap_or(0.0) + c),
                // A mocked call made no request: it costs what its mock says, else nothing.
                None if mocked => self.usage.cost_usd = Some(self.usage.cost_usd.unwrap_or(0.0)),
                None if d.status == NodeStatus::Success => self.cost_unknown = true,
                None => {}
            }
        }
        self.pending.push(Write::NodeFinished(Box::new(NodeRow {
            node_id: d.node.clone(),
            part: d.part,
            reason: d.reason.clone(),
            position: self.position(&d.node),
            status: d.status,
            attempt: d.attempt,
            started_at: d.started_at,
            finished_at: Some(d.finished_at),
            duration_ms: Some(d.duration_ms),
            input: d.input.clone(),
            output: d.output.clone(),
            error: d.error.clone(),
            from_execution: d.from_execution.clone(),
        })));
    }

    fn node_input(&mut self, node: &str, part: Option<flowrun_events::Part>, input: &Value) {
        self.pending.push(Write::NodeInput {
            node_id: node.to_string(),
            part,
            input: input.clone(),
        });
    }

    fn event(&mut self, env: &Envelope) {
        if let Event::NodeStart {
            node,
            attempt,
            ts,
            item,
            iteration,
            ..
        } = &env.event
        {
            self.pending.push(Write::NodeStarted {
                node_id: node.clone(),
                part: flowrun_events::Part::from_fields(*item, *iteration),
                position: self.position(node),
                attempt: *attempt,
                started_at: *ts,
            });
        }
        if env.event.is_live_only() {
            return; // node_delta: for viewers only; the node's output keeps the answer
        }
        // The execution's end (the executor's last event) waits for the row's end, written
        // right after it and with it ([`Recorder::take_last`]).
        if matches!(env.event, Event::ExecutionEnd { .. }) {
            self.end = Some((env.seq, env.event.clone()));
            return;
        }
        self.pending.push(event_write(env.seq, &env.event));
        // Everything else, nodes' ends included, waits for the executor's `flush`, which comes
        // as soon as it has handled all the output that was there to read — so the nodes that
        // ended within one read of the child's output share one transaction, and none waits
        // longer than that read.
        if self.pending.len() >= BATCH {
            self.write_pending();
        }
    }

    fn flush(&mut self) {
        // After the end, what is left goes with it.
        if self.end.is_none() {
            self.write_pending();
        }
    }

    fn asked_to_stop(&mut self) -> Option<flowrun_executor::StopReason> {
        let asked = self.store.lock().requested(&self.execution_id);
        matches!(asked, Ok(Some(flowrun_store::Request::Stop)))
            .then_some(flowrun_executor::StopReason::Cancel)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn agent_tokens_count_every_input_token_once() {
        let agent = json!({"usage": {"input_tokens": 10, "output_tokens": 5,
                                     "cache_read_tokens": 100, "cache_write_tokens": 7}});
        assert_eq!(tokens(&agent), (Some(117), Some(5)));
        let llm = json!({"usage": {"input_tokens": 9, "output_tokens": 6}});
        assert_eq!(tokens(&llm), (Some(9), Some(6)));
        let unknown = json!({"usage": {"input_tokens": null, "output_tokens": null}});
        assert_eq!(tokens(&unknown), (None, None));
        assert_eq!(tokens(&json!("text")), (None, None));
        // What a node or a mock may say: no panic, no wrap, no negative count.
        let huge = json!({"usage": {"input_tokens": i64::MAX, "cache_read_tokens": i64::MAX,
                                    "output_tokens": -5}});
        assert_eq!(tokens(&huge), (Some(i64::MAX), None));
    }

    #[test]
    fn llm_and_agent_nodes_are_metered() {
        let wf = json!({"id": "w", "nodes": [
            {"id": "a", "type": "agent", "agent": "codex", "prompt": "p"},
            {"id": "l", "type": "llm", "provider": "groq", "model": "m", "connection": "c",
             "prompt": "p"},
            {"id": "c", "type": "command", "argv": ["true"]}],
            "connections": {"c": {"env": "C_KEY"}}});
        let source = flowrun_codegen::source::from_value(wf, "<test>").unwrap();
        let m = metered(&source.workflow);
        assert_eq!(m, HashSet::from(["a".to_string(), "l".to_string()]));
    }
}
