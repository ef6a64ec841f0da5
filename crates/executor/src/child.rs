//! What the child's events mean: nodes (and items and iterations of nodes) starting and ending,
//! log messages, and what is running at any moment — several nodes at once when the workflow
//! has `max_parallel` > 1, each with its own deadline.

use crate::redact::Redactor;
use crate::sink::NodeDetail;
use crate::state::{State, round_ms};
use flowrun_events::{
    Envelope, ErrorInfo, ErrorKind, Event, NodeStatus, Part, Stream, now_ms, preview,
};
use serde::Deserialize;
use serde_json::Value;
use std::time::{Duration, Instant};

/// What the runtime prints, as the executor reads it.
#[derive(Debug, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
// Parsed and matched at once, one at a time: boxing the big variant would buy nothing.
#[allow(clippy::large_enum_variant)]
pub(crate) enum ChildEvent {
    NodeStart {
        node: String,
        #[serde(default)]
        attempt: u32,
        #[serde(default)]
        item: Option<u32>,
        #[serde(default)]
        iteration: Option<u32>,
        #[serde(default)]
        items: Option<u32>,
    },
    NodeEnd {
        node: String,
        status: String,
        #[serde(default)]
        attempt: u32,
        #[serde(default)]
        duration_ms: f64,
        #[serde(default)]
        input: Option<Value>,
        #[serde(default)]
        output: Option<Value>,
        #[serde(default)]
        error: Option<ErrorInfo>,
        #[serde(default)]
        retrying: bool,
        #[serde(default)]
        from_execution: Option<String>,
        #[serde(default)]
        item: Option<u32>,
        #[serde(default)]
        iteration: Option<u32>,
        #[serde(default)]
        reason: Option<String>,
    },
    /// What a running node (attempt, item or iteration) was given, as soon as it is known.
    NodeInput {
        node: String,
        #[serde(default)]
        attempt: u32,
        input: Value,
        #[serde(default)]
        item: Option<u32>,
        #[serde(default)]
        iteration: Option<u32>,
    },
    /// Text of a streamed answer as it arrives (an `llm` node with `stream: true`).
    NodeDelta {
        node: String,
        #[serde(default)]
        text: String,
        #[serde(default)]
        item: Option<u32>,
        #[serde(default)]
        iteration: Option<u32>,
    },
    Log {
        #[serde(default)]
        node: Option<String>,
        #[serde(default)]
        level: Option<String>,
        #[serde(default)]
        message: String,
        /// `stdout`/`stderr` for a line a node printed while others ran beside it (the runtime
        /// attributes those itself); absent for `log()` messages.
        #[serde(default)]
        stream: Option<String>,
        #[serde(default)]
        item: Option<u32>,
        #[serde(default)]
        iteration: Option<u32>,
    },
}

#[derive(Debug, Deserialize)]
pub(crate) struct ChildResult {
    pub(crate) status: String,
    #[serde(default)]
    pub(crate) output: Option<Value>,
    #[serde(default)]
    pub(crate) error: Option<ErrorInfo>,
}

/// `ev` with the secrets in its values (not in its protocol fields) redacted.
pub(crate) fn redacted(mut ev: ChildEvent, r: &Redactor) -> ChildEvent {
    match &mut ev {
        ChildEvent::NodeEnd {
            input,
            output,
            error,
            ..
        } => {
            for v in [input, output].into_iter().flatten() {
                r.value(v);
            }
            if let Some(e) = error {
                r.error(e);
            }
        }
        ChildEvent::NodeInput { input, .. } => r.value(input),
        ChildEvent::Log { message, .. } => *message = r.string(std::mem::take(message)),
        // Redacted when sent (`send_delta`): a secret may be split across deltas.
        ChildEvent::NodeStart { .. } | ChildEvent::NodeDelta { .. } => {}
    }
    ev
}

/// The most `node_delta` events a viewer gets per second for one node: text that arrives
/// faster is sent together.
pub(crate) const DELTA_INTERVAL: Duration = Duration::from_millis(50);

/// Streamed text is sent at once when this much is waiting, whatever the interval.
const DELTA_FLUSH_BYTES: usize = 64 << 10;

/// Streamed text of one running node (or item or iteration) not sent yet.
#[derive(Debug, Default)]
pub(crate) struct DeltaBuf {
    pending: String,
    last_sent: Option<Instant>,
}

/// Something running now: a node, or an item or iteration of one.
#[derive(Debug, Clone)]
pub(crate) struct Running {
    pub(crate) attempt: u32,
    /// When it started (runner clock, ms since the epoch).
    pub(crate) started_at: i64,
    /// When the runner ends the execution if it is still running.
    pub(crate) deadline: Option<Instant>,
    /// What it was given (`node_input`): recorded with it if the runner has to end it.
    pub(crate) input: Option<Value>,
}

impl State<'_> {
    /// The node output belongs to when it cannot say: the one node running, if only one is.
    pub(crate) fn current_node(&self) -> Option<String> {
        let mut nodes = self.running.keys().map(|(n, _)| n);
        let first = nodes.next()?;
        nodes.all(|n| n == first).then(|| first.clone())
    }

    /// The item or iteration of `node` that runs now, when exactly one does: what a raw stdout
    /// line (printed while items run one at a time) comes from. None for a node seen running
    /// several side by side: the runtime names the part of what Python prints then, and a raw
    /// line could be any of them. (stderr has the runtime's marks; `log()` names its part.)
    pub(crate) fn current_part(&self, node: &str) -> Option<Part> {
        if self.side_by_side.contains(node) {
            return None;
        }
        let mut parts = self
            .running
            .keys()
            .filter(|(n, p)| n == node && p.is_some())
            .map(|(_, p)| *p);
        let first = parts.next()?;
        parts.next().is_none().then_some(first).flatten()
    }

    /// The first deadline of what runs, and the node it is for.
    pub(crate) fn next_deadline(&self) -> Option<(Instant, (String, Option<Part>))> {
        self.running
            .iter()
            .filter_map(|((node, part), r)| r.deadline.map(|d| (d, (node.clone(), *part))))
            .min_by_key(|(d, _)| *d)
    }

    /// Where a node's `timeout_ms` applies: to the node's run, or — for a node with `for_each`
    /// or `repeat` — to each item or iteration (each is one call of the node).
    fn deadline(&self, node: &str, part: Option<Part>) -> Option<Instant> {
        let looping = self.spec.looping.contains(node);
        if looping != part.is_some() {
            return None;
        }
        self.spec.node_timeouts.get(node).map(|d| {
            let grace = self.spec.node_grace.get(node).copied().unwrap_or_default();
            Instant::now() + *d + grace
        })
    }

    pub(crate) fn child_event(&mut self, ev: ChildEvent) {
        match ev {
            ChildEvent::NodeStart {
                node,
                attempt,
                item,
                iteration,
                items,
            } => {
                let part = Part::from_fields(item, iteration);
                if let Err(e) = self.ledger.start(&node, attempt, part, items) {
                    self.protocol_error(format!("{e}: ignored"));
                    return;
                }
                let running = Running {
                    attempt,
                    started_at: now_ms(),
                    deadline: self.deadline(&node, part),
                    input: None,
                };
                self.running.insert((node.clone(), part), running);
                self.awaiting_retry.remove(&(node.clone(), part));
                // Two items (or iterations) of one node at once: a raw line can no longer be
                // told to be the one that runs (the runtime attributes what Python prints).
                if part.is_some()
                    && self
                        .running
                        .keys()
                        .filter(|(n, p)| *n == node && p.is_some())
                        .nth(1)
                        .is_some()
                {
                    self.side_by_side.insert(node.clone());
                }
                self.emit(Event::NodeStart {
                    node,
                    attempt,
                    ts: now_ms(),
                    item,
                    iteration,
                    items,
                });
            }
            ChildEvent::NodeEnd {
                node,
                status,
                attempt,
                duration_ms,
                input,
                output,
                error,
                retrying,
                from_execution,
                item,
                iteration,
                reason,
            } => {
                let part = Part::from_fields(item, iteration);
                let Some(status) = NodeStatus::parse(&status).filter(|s| *s != NodeStatus::Running)
                else {
                    self.protocol_error(format!(
                        "node_end of '{node}' has an unknown status '{status}'"
                    ));
                    return;
                };
                if let Err(e) = self.ledger.end(&node, attempt, status, retrying, part) {
                    self.protocol_error(format!("{e}: ignored"));
                    if e.conflict {
                        self.distrust(&node, part, attempt, &e.message);
                    }
                    return;
                }
                // What is left of a streamed answer goes out before the end.
                let key = (node.clone(), part);
                self.send_delta(&key, true);
                self.deltas.remove(&key);
                let withdrawn = self.awaiting_retry.remove(&key);
                let started_at = self.running.remove(&key).map(|r| r.started_at);
                // A retry withdrawn (the ledger allowed it: an error) keeps its attempt's times.
                let (started_at, finished_at) = match &withdrawn {
                    Some(d) => (d.started_at, d.finished_at),
                    None => (started_at, now_ms()),
                };
                let detail = NodeDetail {
                    node,
                    part,
                    status,
                    attempt,
                    duration_ms,
                    started_at,
                    finished_at,
                    input,
                    output,
                    error,
                    from_execution,
                    reason,
                };
                if retrying {
                    self.awaiting_retry.insert(key, detail.clone());
                }
                self.end_node(detail, retrying);
            }
            ChildEvent::NodeInput {
                node,
                attempt,
                input,
                item,
                iteration,
            } => {
                let part = Part::from_fields(item, iteration);
                let Some(r) = self
                    .running
                    .get_mut(&(node.clone(), part))
                    .filter(|r| r.attempt == attempt)
                else {
                    self.protocol_error(format!(
                        "node_input of '{node}' attempt {attempt}, which is not running: ignored"
                    ));
                    return;
                };
                r.input = Some(input);
                let input = r.input.as_ref().expect("just set");
                self.sink.node_input(&node, part, input);
            }
            ChildEvent::NodeDelta {
                node,
                text,
                item,
                iteration,
            } => {
                let part = Part::from_fields(item, iteration);
                if let Err(e) = self.ledger.delta(&node, part) {
                    self.protocol_error(format!("{e}: ignored"));
                    return;
                }
                let key = (node, part);
                let buf = self.deltas.entry(key.clone()).or_default();
                buf.pending.push_str(&text);
                let due = buf.last_sent.is_none_or(|t| t.elapsed() >= DELTA_INTERVAL)
                    || buf.pending.len() >= DELTA_FLUSH_BYTES;
                if due {
                    self.send_delta(&key, false);
                }
            }
            ChildEvent::Log {
                node,
                level,
                message,
                stream,
                item,
                iteration,
            } => {
                // The runtime names the item or iteration of what it logs; a line it attributes
                // to no node is the running node's (see `State::frame` for the raw lines).
                let part = Part::from_fields(item, iteration);
                let node = node.or_else(|| self.current_node());
                let stream = match stream.as_deref() {
                    Some("stdout") => Stream::Stdout,
                    Some("stderr") => Stream::Stderr,
                    _ => Stream::Log,
                };
                for line in message.split('\n') {
                    self.log_part(
                        stream,
                        level.clone(),
                        node.clone(),
                        part,
                        line.to_string(),
                        0,
                    );
                }
            }
        }
    }

    /// Sends what may go of the text streamed by `key` (everything when `last`), redacted, as
    /// one `node_delta` to the live viewers: not stored, not numbered.
    fn send_delta(&mut self, key: &(String, Option<Part>), last: bool) {
        let Some(buf) = self.deltas.get_mut(key) else {
            return;
        };
        let r = &self.spec.redactor;
        let n = r.releasable(&buf.pending, last);
        if n == 0 {
            return;
        }
        let raw: String = buf.pending.drain(..n).collect();
        buf.last_sent = Some(Instant::now());
        let text = r.text(raw);
        let (item, iteration) = Part::fields(key.1);
        let env = Envelope {
            seq: self.seq,
            execution_id: self.spec.execution_id.clone(),
            event: Event::NodeDelta {
                node: key.0.clone(),
                text,
                ts: now_ms(),
                item,
                iteration,
                so_far: false,
            },
        };
        self.sink.delta(&env);
    }

    /// Ends everything that was running when the process stopped, so nothing stays `running`:
    /// items and iterations before their node. `how(node)` gives each one's status and error.
    /// What waited for a retry ends first, as its last attempt did (`error`), with the reason
    /// "not retried: `ending`".
    pub(crate) fn close_running(
        &mut self,
        ending: &str,
        how: impl Fn(&str, Option<Part>) -> (NodeStatus, ErrorInfo),
    ) {
        for ((node, part), mut detail) in std::mem::take(&mut self.awaiting_retry) {
            self.ledger.close(&node, part, detail.status);
            detail.reason = Some(format!("not retried: {ending}"));
            self.end_node(detail, false);
        }
        self.deltas.clear();
        let running = std::mem::take(&mut self.running);
        for ((node, part), r) in running.into_iter().rev() {
            let (status, error) = how(&node, part);
            self.ledger.close(&node, part, status);
            let ts = now_ms();
            let detail = NodeDetail {
                node,
                part,
                status,
                attempt: r.attempt,
                duration_ms: (ts - r.started_at) as f64,
                started_at: Some(r.started_at),
                finished_at: ts,
                input: r.input,
                output: None,
                error: Some(error),
                from_execution: None,
                reason: None,
            };
            self.end_node(detail, false);
        }
    }

    /// Two ends were reported for one attempt of `node`: one was forged, and nothing says which.
    /// The node is recorded as failed with a protocol error instead of either output, so a
    /// forged success can never stand.
    fn distrust(&mut self, node: &str, part: Option<Part>, attempt: u32, why: &str) {
        let ts = now_ms();
        let detail = NodeDetail {
            node: node.to_string(),
            part,
            status: NodeStatus::Error,
            attempt,
            duration_ms: 0.0,
            started_at: None,
            finished_at: ts,
            input: None,
            output: None,
            error: Some(ErrorInfo::of(
                ErrorKind::ProtocolError,
                format!("{why}: its output cannot be trusted"),
            )),
            from_execution: None,
            reason: None,
        };
        self.ledger.close(node, part, NodeStatus::Error);
        self.deltas.remove(&(node.to_string(), part));
        self.end_node(detail, false);
    }

    /// Records a finished node attempt: the full detail to the sinks that store it, then the
    /// `node_end` event (with only a preview of the output) to everyone.
    fn end_node(&mut self, mut detail: NodeDetail, retrying: bool) {
        detail.duration_ms = round_ms(detail.duration_ms);
        self.sink.node_detail(&detail);
        let output_preview = detail
            .output
            .as_ref()
            .filter(|_| detail.status.has_output())
            .map(|v| preview(v, 200));
        let (item, iteration) = Part::fields(detail.part);
        self.emit(Event::NodeEnd {
            node: detail.node,
            status: detail.status,
            attempt: detail.attempt,
            duration_ms: Some(detail.duration_ms),
            ts: detail.finished_at,
            output_preview,
            error: detail.error,
            retrying,
            item,
            iteration,
            reason: detail.reason,
        });
    }
}
