//! The execution as the runner sees it while it runs: what the child's frames mean (events,
//! log lines, the result), which node runs, the log budget, and the events that follow.

use crate::child::{ChildEvent, ChildResult, DeltaBuf, Running, redacted};
use crate::ledger::{Ledger, Rules};
use crate::protocol::Frame;
use crate::redact::Carry;
use crate::sink::{NodeDetail, Sink};
use crate::spec::RunSpec;
use flowrun_events::json::{MAX_DEPTH, parse_bounded};
use flowrun_events::{Envelope, Event, Part, Stream, now_ms};
use std::collections::BTreeMap;
use std::time::Instant;

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
    /// What runs now: nodes, and items or iterations of nodes.
    pub(crate) running: BTreeMap<(String, Option<Part>), Running>,
    /// What waits for a retry (its last attempt ended `retrying`): that attempt's record, which
    /// stands as the last if the retry never comes.
    pub(crate) awaiting_retry: BTreeMap<(String, Option<Part>), NodeDetail>,
    /// Looping nodes seen running two items or iterations at once.
    pub(crate) side_by_side: std::collections::HashSet<String>,
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
    /// A pause was asked of the runtime (so a `paused` result may be true).
    pub(crate) pause_requested: bool,
    /// The node (and item or iteration) stderr lines belong to, from the runtime's `at` marks on
    /// stderr; `None` until the first mark (then the running node is the best guess).
    pub(crate) stderr_node: Option<Option<(String, Option<Part>)>>,
    /// Per stream (stdout, stderr): the start of a secret the last line may have ended with.
    line_carry: [Carry; 2],
    /// Streamed text (`node_delta`) of what runs, not sent yet.
    pub(crate) deltas: BTreeMap<(String, Option<Part>), DeltaBuf>,
}

/// A stderr mark's node and part: `each` or `each item 3` / `draft iteration 2` (node ids hold
/// no spaces).
fn at_mark(mark: String) -> (String, Option<Part>) {
    let mut words = mark.splitn(3, ' ');
    let node = words.next().unwrap_or_default().to_string();
    let number = |w: Option<&str>| w.and_then(|n| n.parse::<u32>().ok());
    let part = match words.next() {
        Some("item") => number(words.next()).map(Part::Item),
        Some("iteration") => number(words.next()).map(Part::Iteration),
        _ => None,
    };
    (node, part)
}

impl<'a> State<'a> {
    pub(crate) fn new(spec: &'a RunSpec, sink: &'a mut dyn Sink, started: Instant) -> State<'a> {
        State {
            spec,
            sink,
            seq: 0,
            started,
            running: BTreeMap::new(),
            awaiting_retry: BTreeMap::new(),
            side_by_side: Default::default(),
            ledger: Ledger::new(
                &spec.nodes,
                Rules {
                    continue_on_error: spec.continue_on_error.clone(),
                    upstream: spec.upstream.clone(),
                    looping: spec.looping.clone(),
                    max_parallel: spec.max_parallel,
                    mocked: spec.mocked.clone(),
                    not_run: spec.not_run.clone(),
                },
            ),
            log_bytes: 0,
            log_lines: 0,
            log_bytes_cut: 0,
            log_cap_announced: false,
            result_lines: Vec::new(),
            result: None,
            in_result: false,
            result_cut: false,
            second_result: false,
            pause_requested: false,
            stderr_node: None,
            line_carry: Default::default(),
            deltas: BTreeMap::new(),
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

    pub(crate) fn log(
        &mut self,
        stream: Stream,
        level: Option<String>,
        node: Option<String>,
        line: String,
        cut: u64,
    ) {
        self.log_part(stream, level, node, None, line, cut);
    }

    /// A log line of an item or iteration of a node (`part`), or of the node itself.
    pub(crate) fn log_part(
        &mut self,
        stream: Stream,
        level: Option<String>,
        node: Option<String>,
        part: Option<Part>,
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
                // In the terms `show` uses (bytes kept, bytes cut): the budget also counts what
                // storing each line costs, which is not text that was kept.
                let (kept, lines) = (self.log_bytes, self.log_lines);
                self.emit(Event::Log {
                    node: None,
                    stream: Stream::Stderr,
                    level: Some("warning".into()),
                    line: format!(
                        "flowrun: log limit reached (--max-log-bytes {limit}, which counts {LOG_LINE_OVERHEAD} bytes a line besides its text): {kept} bytes of {lines} lines kept; further output is counted, not kept"
                    ),
                    ts: now_ms(),
                    item: None,
                    iteration: None,
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
        let (item, iteration) = Part::fields(part);
        self.emit(Event::Log {
            node,
            stream,
            level,
            line,
            ts: now_ms(),
            item,
            iteration,
        });
    }

    /// Is there room in the log budget for a line of `len` bytes?
    fn log_fits(&self, len: u64) -> bool {
        let used = self.log_bytes + self.log_lines * LOG_LINE_OVERHEAD;
        used + len + LOG_LINE_OVERHEAD <= self.spec.max_log_bytes
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
            Frame::At(mark) => {
                if stream == Stream::Stderr {
                    self.stderr_node = Some(mark.map(at_mark));
                }
            }
            Frame::Line { text, cut } => {
                if self.in_result && stream == Stream::Stdout {
                    self.add_result_bytes(text.as_bytes());
                } else {
                    // Past the log budget the line is only counted: skip copying the node id.
                    let (node, part) = if !self.log_fits(text.len() as u64 + cut + 1) {
                        (None, None)
                    } else if stream == Stream::Stderr && self.stderr_node.is_some() {
                        // The runtime marks stderr at each node, item and iteration boundary:
                        // exact attribution (what runs now, as stdout's events tell, may be
                        // ahead of or behind this pipe).
                        match self.stderr_node.clone().flatten() {
                            Some((node, part)) => (Some(node), part),
                            None => (None, None),
                        }
                    } else {
                        // stdout carries the events too: what runs now is what printed it.
                        let node = self.current_node();
                        let part = node.as_deref().and_then(|n| self.current_part(n));
                        (node, part)
                    };
                    self.log_part(stream, None, node, part, text, cut);
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

    pub(crate) fn protocol_error(&mut self, msg: String) {
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
}

/// Milliseconds to the microsecond: more digits are float noise, not information.
pub(crate) fn round_ms(ms: f64) -> f64 {
    (ms * 1000.0).round() / 1000.0
}
