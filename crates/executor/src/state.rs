//! The execution as the runner sees it while it runs: what the child's frames mean (events,
//! log lines, the result), which node runs, the log budget, and the events that follow.

use crate::ledger::Ledger;
use crate::protocol::Frame;
use crate::redact::{Carry, Redactor};
use crate::sink::{NodeDetail, Sink};
use crate::spec::RunSpec;
use flowrun_events::json::{MAX_DEPTH, parse_bounded};
use flowrun_events::{Envelope, ErrorInfo, ErrorKind, Event, NodeStatus, Stream, now_ms, preview};
use serde::Deserialize;
use serde_json::Value;
use std::time::Instant;

/// What the runtime prints, as the executor reads it.
#[derive(Debug, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
// Parsed and matched at once, one at a time: boxing the big variant would buy nothing.
#[allow(clippy::large_enum_variant)]
enum ChildEvent {
    NodeStart {
        node: String,
        #[serde(default)]
        attempt: u32,
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
    },
    Log {
        #[serde(default)]
        node: Option<String>,
        #[serde(default)]
        level: Option<String>,
        #[serde(default)]
        message: String,
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
fn redacted(mut ev: ChildEvent, r: &Redactor) -> ChildEvent {
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
        ChildEvent::Log { message, .. } => *message = r.string(std::mem::take(message)),
        ChildEvent::NodeStart { .. } => {}
    }
    ev
}

/// What a stored log line costs against `--max-log-bytes` besides its own bytes: the record that
/// holds it. Without it a flood of empty lines (zero bytes each) would never reach the budget and
/// would be stored one row per line without end.
pub const LOG_LINE_OVERHEAD: u64 = 64;

/// Tracks the execution while it runs.
pub(crate) struct State<'a> {
    pub(crate) spec: &'a RunSpec,
    pub(crate) sink: &'a mut dyn Sink,
    pub(crate) seq: u64,
    pub(crate) started: Instant,
    /// The node running now: id, attempt, when it started (runner clock), its deadline.
    pub(crate) running: Option<(String, u32, i64, Option<Instant>)>,
    /// What the plan allows, and what the child reported of each node.
    pub(crate) ledger: Ledger,
    pub(crate) log_bytes: u64,
    /// Log lines kept (each also costs [`LOG_LINE_OVERHEAD`] of the budget).
    pub(crate) log_lines: u64,
    pub(crate) log_bytes_cut: u64,
    pub(crate) log_cap_announced: bool,
    pub(crate) result_lines: Vec<u8>,
    pub(crate) result: Option<Result<ChildResult, String>>,
    pub(crate) in_result: bool,
    /// The result went past its size limit: what came of it was dropped.
    pub(crate) result_cut: bool,
    /// A second result came after the first: something forged one.
    pub(crate) second_result: bool,
    /// The node stderr lines belong to, from the runtime's `at` marks on stderr; `None` until
    /// the first mark (then the running node is the best guess).
    pub(crate) stderr_node: Option<Option<String>>,
    /// Per stream (stdout, stderr): the start of a secret the last line may have ended with.
    line_carry: [Carry; 2],
}

impl<'a> State<'a> {
    pub(crate) fn new(spec: &'a RunSpec, sink: &'a mut dyn Sink, started: Instant) -> State<'a> {
        State {
            spec,
            sink,
            seq: 0,
            started,
            running: None,
            ledger: Ledger::new(&spec.nodes, &spec.continue_on_error, &spec.mocked),
            log_bytes: 0,
            log_lines: 0,
            log_bytes_cut: 0,
            log_cap_announced: false,
            result_lines: Vec::new(),
            result: None,
            in_result: false,
            result_cut: false,
            second_result: false,
            stderr_node: None,
            line_carry: Default::default(),
        }
    }

    pub(crate) fn emit(&mut self, event: Event) {
        self.seq += 1;
        let env = Envelope {
            seq: self.seq,
            execution_id: self.spec.execution_id.clone(),
            event,
        };
        self.sink.event(&env);
    }

    fn log(
        &mut self,
        stream: Stream,
        level: Option<String>,
        node: Option<String>,
        line: String,
        cut: u64,
    ) {
        // A line's bytes include its line break, so that empty lines count too.
        let len = line.len() as u64 + cut + 1;
        if !self.log_fits(len) {
            self.log_bytes_cut += len;
            if !self.log_cap_announced {
                self.log_cap_announced = true;
                let limit = self.spec.max_log_bytes;
                self.emit(Event::Log {
                    node: None,
                    stream: Stream::Stderr,
                    level: Some("warning".into()),
                    line: format!("flowrun: log limit of {limit} bytes reached; further output is counted, not kept"),
                    ts: now_ms(),
                });
            }
            return;
        }
        self.log_bytes += len;
        self.log_lines += 1;
        let line = if cut > 0 {
            format!("{line}… [{cut} bytes cut]")
        } else {
            line
        };
        self.emit(Event::Log {
            node,
            stream,
            level,
            line,
            ts: now_ms(),
        });
    }

    /// Is there room in the log budget for a line of `len` bytes?
    fn log_fits(&self, len: u64) -> bool {
        let used = self.log_bytes + self.log_lines * LOG_LINE_OVERHEAD;
        used + len + LOG_LINE_OVERHEAD <= self.spec.max_log_bytes
    }

    pub(crate) fn current_node(&self) -> Option<String> {
        self.running.as_ref().map(|r| r.0.clone())
    }

    pub(crate) fn frame(&mut self, stream: Stream, frame: Frame) {
        // Redaction. A printed line is text, redacted per stream (so that a secret printed over
        // two lines is caught). Events and the result are redacted once parsed, value by value
        // (`redacted`, `ResultEnd`): the protocol's own JSON is never touched.
        let spec = self.spec;
        let frame = match frame {
            Frame::Line { text, cut } if !(self.in_result && stream == Stream::Stdout) => {
                let carry = &mut self.line_carry[usize::from(stream == Stream::Stderr)];
                Frame::Line {
                    text: spec.redactor.line(text, cut > 0, carry),
                    cut,
                }
            }
            other => other,
        };
        if stream == Stream::Stderr && !matches!(frame, Frame::Line { .. } | Frame::At(_)) {
            self.protocol_error("a protocol line on stderr was ignored".into());
            return;
        }
        match frame {
            Frame::At(node) => {
                if stream == Stream::Stderr {
                    self.stderr_node = Some(node);
                }
            }
            Frame::Line { text, cut } => {
                if self.in_result && stream == Stream::Stdout {
                    self.add_result_bytes(text.as_bytes());
                } else {
                    // Past the log budget the line is only counted: skip copying the node id.
                    let node = if !self.log_fits(text.len() as u64 + cut + 1) {
                        None
                    } else if stream == Stream::Stderr && self.stderr_node.is_some() {
                        // The runtime marks stderr at each node boundary: exact attribution.
                        self.stderr_node.clone().flatten()
                    } else {
                        self.current_node()
                    };
                    self.log(stream, None, node, text, cut);
                }
            }
            Frame::Event(_) if self.result.is_some() || self.in_result => {
                self.protocol_error("an event after the result: ignored".into());
            }
            Frame::Event(json) => match parse_bounded::<ChildEvent>(&json, MAX_DEPTH) {
                Ok(ev) => self.child_event(redacted(ev, &spec.redactor)),
                Err(e) => self.protocol_error(format!("malformed event ignored ({e})")),
            },
            Frame::ResultStart if self.result.is_some() => {
                // Only the runtime's one result counts; another is forged.
                self.protocol_error("a second result: the execution cannot be trusted".into());
                self.second_result = true;
            }
            Frame::ResultStart => {
                self.in_result = true;
                self.result_lines.clear();
            }
            Frame::ResultLine(bytes) => {
                if self.in_result {
                    self.add_result_bytes(&bytes);
                }
            }
            Frame::ResultEnd if !self.in_result => {}
            Frame::ResultEnd => {
                self.in_result = false;
                let lines = std::mem::take(&mut self.result_lines);
                let r = &spec.redactor;
                self.result = Some(if self.result_cut {
                    Err(format!(
                        "the result was larger than {} bytes",
                        RunSpec::MAX_FRAME
                    ))
                } else {
                    parse_bounded::<ChildResult>(&lines, MAX_DEPTH)
                        .map(|mut res| {
                            if let Some(o) = &mut res.output {
                                r.value(o);
                            }
                            if let Some(e) = &mut res.error {
                                r.error(e);
                            }
                            res
                        })
                        .map_err(|e| r.text(format!("the result is not valid JSON ({e})")))
                });
                self.result_cut = false;
            }
            Frame::Oversized { bytes } => self.protocol_error(format!(
                "a protocol line of {bytes} bytes exceeded the limit and was dropped"
            )),
        }
    }

    /// Collects the result's text, at most [`RunSpec::MAX_FRAME`] bytes of it.
    fn add_result_bytes(&mut self, bytes: &[u8]) {
        if self.result_lines.len() + bytes.len() > RunSpec::MAX_FRAME {
            self.result_cut = true;
            self.result_lines = Vec::new();
        } else if !self.result_cut {
            self.result_lines.extend_from_slice(bytes);
        }
    }

    fn protocol_error(&mut self, msg: String) {
        // A parse error may quote the text it choked on.
        let msg = self.spec.redactor.text(msg);
        let node = self.current_node();
        self.log(
            Stream::Stderr,
            Some("warning".into()),
            node,
            format!("flowrun: protocol: {msg}"),
            0,
        );
    }

    fn child_event(&mut self, ev: ChildEvent) {
        match ev {
            ChildEvent::NodeStart { node, attempt } => {
                if let Err(e) = self.ledger.start(&node, attempt) {
                    self.protocol_error(format!("{e}: ignored"));
                    return;
                }
                let deadline = self.spec.node_timeouts.get(&node).map(|d| {
                    let grace = self.spec.node_grace.get(&node).copied().unwrap_or_default();
                    Instant::now() + *d + grace
                });
                self.running = Some((node.clone(), attempt, now_ms(), deadline));
                self.emit(Event::NodeStart {
                    node,
                    attempt,
                    ts: now_ms(),
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
            } => {
                let Some(status) = NodeStatus::parse(&status).filter(|s| *s != NodeStatus::Running)
                else {
                    self.protocol_error(format!(
                        "node_end of '{node}' has an unknown status '{status}'"
                    ));
                    return;
                };
                if let Err(e) = self.ledger.end(&node, attempt, status, retrying) {
                    self.protocol_error(format!("{e}: ignored"));
                    if e.conflict {
                        self.distrust(&node, attempt, &e.message);
                    }
                    return;
                }
                let started_at = match &self.running {
                    Some((n, _, at, _)) if *n == node => Some(*at),
                    _ => None,
                };
                if started_at.is_some() {
                    self.running = None;
                }
                let detail = NodeDetail {
                    node,
                    status,
                    attempt,
                    duration_ms,
                    started_at,
                    finished_at: now_ms(),
                    input,
                    output,
                    error,
                    from_execution,
                };
                self.end_node(detail, retrying);
            }
            ChildEvent::Log {
                node,
                level,
                message,
            } => {
                let node = node.or_else(|| self.current_node());
                for line in message.split('\n') {
                    self.log(
                        Stream::Log,
                        level.clone(),
                        node.clone(),
                        line.to_string(),
                        0,
                    );
                }
            }
        }
    }

    /// Ends the node that was running when the process stopped, so no node stays `running`.
    pub(crate) fn close_running(&mut self, status: NodeStatus, error: ErrorInfo) {
        if let Some((node, attempt, started_at, _)) = self.running.take() {
            self.ledger.close(&node, status);
            let ts = now_ms();
            let detail = NodeDetail {
                node,
                status,
                attempt,
                duration_ms: (ts - started_at) as f64,
                started_at: Some(started_at),
                finished_at: ts,
                input: None,
                output: None,
                error: Some(error),
                from_execution: None,
            };
            self.end_node(detail, false);
        }
    }

    /// Two ends were reported for one attempt of `node`: one was forged, and nothing says which.
    /// The node is recorded as failed with a protocol error instead of either output, so a
    /// forged success can never stand.
    fn distrust(&mut self, node: &str, attempt: u32, why: &str) {
        let ts = now_ms();
        let detail = NodeDetail {
            node: node.to_string(),
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
        };
        self.ledger.close(node, NodeStatus::Error);
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
        self.emit(Event::NodeEnd {
            node: detail.node,
            status: detail.status,
            attempt: detail.attempt,
            duration_ms: detail.duration_ms,
            ts: detail.finished_at,
            output_preview,
            error: detail.error,
            retrying,
        });
    }
}

/// Milliseconds to the microsecond: more digits are float noise, not information.
pub(crate) fn round_ms(ms: f64) -> f64 {
    (ms * 1000.0).round() / 1000.0
}
