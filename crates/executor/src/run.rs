//! The executor: runs one generated script as a child process and turns what it prints into
//! [`Event`]s, enforcing the execution and node deadlines and stop requests.
//!
//! It knows processes and the stdout protocol; it knows nothing of SQL. Everything it learns goes
//! to a [`Sink`] (the store recorder, the terminal, a JSONL writer, the HTTP server) in order.
//!
//! Concurrency: stdin is written by its own task while two reader tasks frame stdout and stderr
//! into a bounded channel, so a child that prints a lot while we still write a large trigger
//! cannot deadlock us, and memory stays bounded (backpressure stops the child, not us).

pub mod process;
pub mod protocol;

use crate::events::{Envelope, ErrorInfo, Event, ExecStatus, NodeStatus, Stream, now_ms, preview};
use nix::sys::signal::Signal;
use process::{Launch, ProcessInfo};
use protocol::{Frame, Framer};
use serde::Deserialize;
use serde_json::Value;
use std::collections::HashMap;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, watch};
use tokio::time::sleep_until;

/// Everything needed to run one execution.
#[derive(Debug, Clone)]
pub struct RunSpec {
    pub execution_id: String,
    pub workflow_id: String,
    pub workflow_name: String,
    pub mode: String,
    /// Node ids in execution order.
    pub nodes: Vec<String>,
    /// Per-node deadlines, enforced from the node's `node_start`.
    pub node_timeouts: HashMap<String, Duration>,
    /// Extra time past its deadline before the runner kills a node that times its own call
    /// (HTTP, LLM, command), so the node's own timeout fires first and is an ordinary,
    /// retryable node error.
    pub node_grace: HashMap<String, Duration>,
    pub launch: Launch,
    /// Trigger data, written to stdin.
    pub trigger: Vec<u8>,
    pub nonce: String,
    pub timeout: Duration,
    /// Between SIGTERM and SIGKILL.
    pub kill_grace: Duration,
    /// Budget for stored log lines: each costs its bytes plus [`LOG_LINE_OVERHEAD`]; once it is
    /// used up, further lines are counted, not kept.
    pub max_log_bytes: u64,
    /// Longest log line kept.
    pub max_line_bytes: usize,
    /// Secrets to cut out of everything the child prints.
    pub redactor: crate::redact::Redactor,
}

impl RunSpec {
    /// Longest protocol line accepted; the runtime caps each payload well below this.
    pub const MAX_FRAME: usize = 64 << 20;
}

/// Why the runner stops an execution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// Someone asked: `flowrun stop`, the HTTP API, a server shutting down.
    Cancel,
    /// Ctrl-C on the terminal running `flowrun run`.
    Interrupt,
    /// SIGTERM to the `flowrun run` process.
    Terminate,
}

impl StopReason {
    /// How the execution's error says it was stopped.
    pub fn describe(self) -> &'static str {
        match self {
            StopReason::Cancel => "stopped by request",
            StopReason::Interrupt => "stopped by Ctrl-C",
            StopReason::Terminate => "stopped: flowrun received SIGTERM",
        }
    }
}

/// The full record of a finished node, for the store (events carry only a preview).
#[derive(Debug, Clone, PartialEq)]
pub struct NodeDetail {
    pub node: String,
    pub status: NodeStatus,
    pub attempt: u32,
    pub duration_ms: f64,
    pub started_at: Option<i64>,
    pub finished_at: i64,
    pub input: Option<Value>,
    pub output: Option<Value>,
    pub error: Option<ErrorInfo>,
    pub from_execution: Option<String>,
}

/// Receives what happens during an execution, in order.
pub trait Sink: Send {
    /// The child is running; `info` identifies its process group.
    fn spawned(&mut self, _info: &ProcessInfo) {}
    /// Full input/output of a node attempt, just before its `node_end` event.
    fn node_detail(&mut self, _detail: &NodeDetail) {}
    fn event(&mut self, envelope: &Envelope);
    /// Nothing else is pending right now: a good moment to write batched work.
    fn flush(&mut self) {}
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
    fn event(&mut self, e: &Envelope) {
        self.0.iter_mut().for_each(|s| s.event(e));
    }
    fn flush(&mut self) {
        self.0.iter_mut().for_each(|s| s.flush());
    }
}

/// How an execution ended.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub status: ExecStatus,
    pub output: Option<Value>,
    pub error: Option<ErrorInfo>,
    pub duration_ms: f64,
    /// How the child process ended, in words (`exit code 1`, `killed by SIGKILL`).
    pub exit: Option<String>,
    pub log_bytes: u64,
    pub log_bytes_cut: u64,
    pub log_lines_cut: u64,
}

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
struct ChildResult {
    status: String,
    #[serde(default)]
    output: Option<Value>,
    #[serde(default)]
    error: Option<ErrorInfo>,
}

/// What a stored log line costs against `--max-log-bytes` besides its own bytes: the record that
/// holds it. Without it a flood of empty lines (zero bytes each) would never reach the budget and
/// would be stored one row per line without end.
pub const LOG_LINE_OVERHEAD: u64 = 64;

/// Most frames in one channel message (about: one more piece may add up to [`FRAME_PIECE`]). A
/// 64 KiB read of empty lines frames into 65536 lines; sent in batches, the bounded channel holds
/// a bounded number of frames.
const MAX_FRAMES_PER_MSG: usize = 1024;

/// Reads are framed in pieces this size, so a batch never grows far past the limit above.
const FRAME_PIECE: usize = 1024;

enum Msg {
    Frames(Stream, Vec<Frame>),
    Closed,
}

async fn read_stream<R: AsyncRead + Unpin>(
    mut r: R,
    mut framer: Framer,
    stream: Stream,
    tx: mpsc::Sender<Msg>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match r.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let mut frames = Vec::new();
        for piece in buf[..n].chunks(FRAME_PIECE) {
            framer.push(piece, &mut frames);
            if frames.len() >= MAX_FRAMES_PER_MSG {
                let batch = std::mem::take(&mut frames);
                if tx.send(Msg::Frames(stream, batch)).await.is_err() {
                    return;
                }
            }
        }
        if !frames.is_empty() && tx.send(Msg::Frames(stream, frames)).await.is_err() {
            return;
        }
    }
    let mut frames = Vec::new();
    framer.finish(&mut frames);
    if !frames.is_empty() {
        let _ = tx.send(Msg::Frames(stream, frames)).await;
    }
    let _ = tx.send(Msg::Closed).await;
}

/// Tracks the execution while it runs.
struct State<'a> {
    spec: &'a RunSpec,
    sink: &'a mut dyn Sink,
    seq: u64,
    started: Instant,
    /// The node running now: id, attempt, when it started (runner clock), its deadline.
    running: Option<(String, u32, i64, Option<Instant>)>,
    node_status: HashMap<String, NodeStatus>,
    log_bytes: u64,
    /// Log lines kept (each also costs [`LOG_LINE_OVERHEAD`] of the budget).
    log_lines: u64,
    log_bytes_cut: u64,
    log_lines_cut: u64,
    log_cap_announced: bool,
    result_lines: Vec<u8>,
    result: Option<Result<ChildResult, String>>,
    in_result: bool,
    protocol_errors: Vec<String>,
    /// The node stderr lines belong to, from the runtime's `at` marks on stderr; `None` until
    /// the first mark (then the running node is the best guess).
    stderr_node: Option<Option<String>>,
}

impl State<'_> {
    fn emit(&mut self, event: Event) {
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
            self.log_lines_cut += 1;
            if !self.log_cap_announced {
                self.log_cap_announced = true;
                let limit = self.spec.max_log_bytes;
                self.emit(Event::Log {
                    node: None,
                    stream: Stream::Stderr,
                    level: Some("warning".into()),
                    line: format!("flowrun: log limit of {limit} bytes reached; further output is counted, not kept (--max-log-bytes)"),
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

    fn current_node(&self) -> Option<String> {
        self.running.as_ref().map(|r| r.0.clone())
    }

    fn frame(&mut self, stream: Stream, frame: Frame) {
        let r = &self.spec.redactor;
        let frame = if r.is_empty() {
            frame
        } else {
            match frame {
                // A cut line may end inside a secret: its start is redacted too.
                Frame::Line { text, cut } if cut > 0 => Frame::Line {
                    text: r.cut_tail(text),
                    cut,
                },
                Frame::Line { text, cut } => Frame::Line {
                    text: r.text(text),
                    cut,
                },
                Frame::Event(b) => Frame::Event(r.bytes(b)),
                Frame::ResultLine(b) => Frame::ResultLine(r.bytes(b)),
                other => other,
            }
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
                    self.result_lines.extend_from_slice(text.as_bytes());
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
            Frame::Event(json) => match serde_json::from_slice::<ChildEvent>(&json) {
                Ok(ev) => self.child_event(ev),
                Err(e) => self.protocol_error(format!("malformed event ignored ({e})")),
            },
            Frame::ResultStart => {
                self.in_result = true;
                self.result_lines.clear();
            }
            Frame::ResultLine(bytes) => self.result_lines.extend_from_slice(&bytes),
            Frame::ResultEnd => {
                self.in_result = false;
                let lines = std::mem::take(&mut self.result_lines);
                self.result = Some(
                    serde_json::from_slice::<ChildResult>(&lines)
                        .map_err(|e| format!("the result is not valid JSON ({e})")),
                );
            }
            Frame::Oversized { bytes } => self.protocol_error(format!(
                "a protocol line of {bytes} bytes exceeded the limit and was dropped"
            )),
        }
    }

    fn protocol_error(&mut self, msg: String) {
        let node = self.current_node();
        self.log(
            Stream::Stderr,
            Some("warning".into()),
            node,
            format!("flowrun: protocol: {msg}"),
            0,
        );
        self.protocol_errors.push(msg);
    }

    fn child_event(&mut self, ev: ChildEvent) {
        match ev {
            ChildEvent::NodeStart { node, attempt } => {
                let deadline = self.spec.node_timeouts.get(&node).map(|d| {
                    let grace = self.spec.node_grace.get(&node).copied().unwrap_or_default();
                    Instant::now() + *d + grace
                });
                self.running = Some((node.clone(), attempt, now_ms(), deadline));
                self.node_status.insert(node.clone(), NodeStatus::Running);
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
    fn close_running(&mut self, status: NodeStatus, error: ErrorInfo) {
        if let Some((node, attempt, started_at, _)) = self.running.take() {
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

    /// Records a finished node attempt: the full detail to the sinks that store it, then the
    /// `node_end` event (with only a preview of the output) to everyone.
    fn end_node(&mut self, mut detail: NodeDetail, retrying: bool) {
        detail.duration_ms = round_ms(detail.duration_ms);
        self.sink.node_detail(&detail);
        self.node_status.insert(detail.node.clone(), detail.status);
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
fn round_ms(ms: f64) -> f64 {
    (ms * 1000.0).round() / 1000.0
}

fn describe_exit(status: &std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    if let Some(code) = status.code() {
        format!("exit code {code}")
    } else if let Some(sig) = status.signal() {
        match Signal::try_from(sig) {
            Ok(s) => format!("killed by {}", s.as_str()),
            Err(_) => format!("killed by signal {sig}"),
        }
    } else {
        "ended".into()
    }
}

/// Why the runner is ending the process itself.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Ending {
    Timeout,
    NodeTimeout,
    Cancel(StopReason),
}

/// How long to keep reading after the child exited, for grandchildren that still hold its pipes.
const DRAIN_AFTER_EXIT: Duration = Duration::from_millis(500);

/// Runs the execution to its end. Never panics on anything the child does.
pub async fn execute(
    spec: &RunSpec,
    sink: &mut dyn Sink,
    mut stop: watch::Receiver<Option<StopReason>>,
) -> Outcome {
    let started = Instant::now();
    let mut st = State {
        spec,
        sink,
        seq: 0,
        started,
        running: None,
        node_status: HashMap::new(),
        log_bytes: 0,
        log_lines: 0,
        log_bytes_cut: 0,
        log_lines_cut: 0,
        log_cap_announced: false,
        result_lines: Vec::new(),
        result: None,
        in_result: false,
        protocol_errors: Vec::new(),
        stderr_node: None,
    };
    st.emit(Event::ExecutionStart {
        workflow_id: spec.workflow_id.clone(),
        workflow_name: spec.workflow_name.clone(),
        mode: spec.mode.clone(),
        nodes: spec.nodes.clone(),
        ts: now_ms(),
    });

    let mut launch = spec.launch.clone();
    launch
        .env
        .push(("FLOWRUN_NONCE".into(), spec.nonce.clone()));
    if let Some(bytes) = launch.max_memory {
        // The runtime names the limit when a node hits it (MemoryError).
        launch
            .env
            .push(("FLOWRUN_MAX_MEMORY_MB".into(), (bytes >> 20).to_string()));
    }
    let spawned = match process::spawn(&launch) {
        Ok(s) => s,
        Err(e) => {
            let error = ErrorInfo::new(
                "SpawnError",
                format!("could not start {}: {e}", launch.program.display()),
            );
            return finish(st, ExecStatus::Error, None, Some(error), None);
        }
    };
    let process::Spawned {
        mut child,
        info,
        lifeline,
    } = spawned;
    st.sink.spawned(&info);

    let mut stdin = child.stdin.take().expect("stdin is piped");
    let trigger = spec.trigger.clone();
    let writer = tokio::spawn(async move {
        // A child that exits without reading stdin closes the pipe: that is not our error.
        let _ = stdin.write_all(&trigger).await;
        let _ = stdin.shutdown().await;
    });
    let (tx, mut rx) = mpsc::channel::<Msg>(64);
    let out_framer = Framer::new(&spec.nonce, spec.max_line_bytes, RunSpec::MAX_FRAME);
    // stderr carries only `at` marks (which node the lines after it belong to).
    let err_framer = Framer::new(&spec.nonce, spec.max_line_bytes, RunSpec::MAX_FRAME);
    tokio::spawn(read_stream(
        child.stdout.take().expect("stdout is piped"),
        out_framer,
        Stream::Stdout,
        tx.clone(),
    ));
    tokio::spawn(read_stream(
        child.stderr.take().expect("stderr is piped"),
        err_framer,
        Stream::Stderr,
        tx,
    ));

    let exec_deadline = started + spec.timeout;
    let mut open_streams = 2;
    let mut exit: Option<std::process::ExitStatus> = None;
    let mut drain_deadline: Option<Instant> = None;
    let mut ending: Option<Ending> = None;
    let mut kill_at: Option<Instant> = None;
    let far = started + Duration::from_secs(100 * 365 * 86400);

    while exit.is_none() || open_streams > 0 {
        let node_deadline = st.running.as_ref().and_then(|r| r.3);
        tokio::select! {
            msg = rx.recv() => match msg {
                Some(Msg::Frames(stream, frames)) => {
                    for f in frames {
                        st.frame(stream, f);
                    }
                    if rx.is_empty() {
                        st.sink.flush();
                    }
                }
                Some(Msg::Closed) => open_streams -= 1,
                None => open_streams = 0,
            },
            status = child.wait(), if exit.is_none() => {
                exit = Some(status.unwrap_or_else(|_| std::os::unix::process::ExitStatusExt::from_raw(0)));
                drain_deadline = Some(Instant::now() + DRAIN_AFTER_EXIT);
            }
            _ = sleep_until(exec_deadline.into()), if ending.is_none() && exit.is_none() => {
                ending = Some(Ending::Timeout);
                kill_at = Some(begin_stop(&info, spec.kill_grace));
            }
            _ = sleep_until(node_deadline.unwrap_or(far).into()), if ending.is_none() && exit.is_none() && node_deadline.is_some() => {
                ending = Some(Ending::NodeTimeout);
                kill_at = Some(begin_stop(&info, spec.kill_grace));
            }
            changed = stop.changed(), if ending.is_none() && exit.is_none() => {
                if changed.is_ok() && stop.borrow().is_some() {
                    ending = Some(Ending::Cancel(stop.borrow().unwrap_or(StopReason::Cancel)));
                    kill_at = Some(begin_stop(&info, spec.kill_grace));
                } else if changed.is_err() {
                    // The stop handle is gone; nobody can stop us any more. Keep running.
                    stop = watch::channel(None).1;
                }
            }
            _ = sleep_until(kill_at.unwrap_or(far).into()), if kill_at.is_some() => {
                process::signal_group(info.pgid, Signal::SIGKILL);
                kill_at = None;
            }
            _ = sleep_until(drain_deadline.unwrap_or(far).into()), if drain_deadline.is_some() => {
                // A grandchild holds our pipes open after the child is gone: end the group.
                process::signal_group(info.pgid, Signal::SIGKILL);
                drain_deadline = None;
                open_streams = 0;
                // Take what the readers already framed, without waiting for more (one stream
                // may have closed while frames of the other are still queued behind it).
                while let Ok(msg) = rx.try_recv() {
                    if let Msg::Frames(stream, frames) = msg {
                        for f in frames {
                            st.frame(stream, f);
                        }
                    }
                }
            }
        }
    }
    writer.abort();
    // Nothing of the group outlives the execution, however it ended.
    process::kill_group_and_wait(info.pgid, Duration::from_secs(2)).await;
    drop(lifeline);

    let exit_text = exit.as_ref().map(describe_exit);
    let runtime_secs = started.elapsed().as_secs_f64();
    match ending {
        Some(Ending::Cancel(reason)) => {
            let how = reason.describe();
            st.close_running(NodeStatus::Cancelled, ErrorInfo::new("Cancelled", how));
            let e = ErrorInfo::new("Cancelled", format!("{how} after {runtime_secs:.1} s"));
            finish(st, ExecStatus::Cancelled, None, Some(e), exit_text)
        }
        Some(Ending::Timeout) => {
            let ms = spec.timeout.as_millis();
            let mut e = ErrorInfo::new(
                "Timeout",
                format!("the execution exceeded its timeout of {ms} ms"),
            );
            e.node = st.current_node();
            st.close_running(
                NodeStatus::Timeout,
                ErrorInfo::new(
                    "Timeout",
                    format!("the execution timeout of {ms} ms expired while this node ran"),
                ),
            );
            finish(st, ExecStatus::Timeout, None, Some(e), exit_text)
        }
        Some(Ending::NodeTimeout) => {
            let node = st.current_node().unwrap_or_default();
            let ms = spec
                .node_timeouts
                .get(&node)
                .map(|d| d.as_millis())
                .unwrap_or(0);
            let msg = format!("node '{node}' exceeded its timeout of {ms} ms");
            let mut e = ErrorInfo::new("Timeout", msg.clone());
            e.node = Some(node);
            st.close_running(NodeStatus::Timeout, ErrorInfo::new("Timeout", msg));
            finish(st, ExecStatus::Timeout, None, Some(e), exit_text)
        }
        None => {
            let exit_desc = exit_text.clone().unwrap_or_else(|| "ended".into());
            match st.result.take() {
                Some(Ok(r)) => {
                    let status = match r.status.as_str() {
                        "success" if exit.is_some_and(|e| e.success()) => ExecStatus::Success,
                        "success" => {
                            let e = ErrorInfo::new(
                                "ProtocolError",
                                format!("the script reported success but ended with {exit_desc}"),
                            );
                            return finish(st, ExecStatus::Error, r.output, Some(e), exit_text);
                        }
                        _ => ExecStatus::Error,
                    };
                    if status == ExecStatus::Error && r.error.is_none() {
                        let e =
                            ErrorInfo::new("Error", format!("the workflow failed ({exit_desc})"));
                        return finish(st, status, r.output, Some(e), exit_text);
                    }
                    finish(st, status, r.output, r.error, exit_text)
                }
                other => {
                    let why = match other {
                        Some(Err(e)) => e,
                        _ if st.in_result => "the result was cut off before its end marker".into(),
                        _ => "no result was printed".into(),
                    };
                    let running = st.current_node();
                    let mut msg = format!("the script ended with {exit_desc} and {why}");
                    if let Some(n) = &running {
                        msg.push_str(&format!(" while node '{n}' was running"));
                    }
                    if let Some(bytes) = spec.launch.max_memory {
                        // Past RLIMIT_AS, allocations fail: code that does not handle that
                        // crashes (SIGSEGV, SIGABRT) instead of raising MemoryError.
                        msg.push_str(&format!(
                            " (it ran with an address-space limit of {} MiB, --max-memory-mb: \
                             it may have run out of memory)",
                            bytes >> 20
                        ));
                    }
                    let mut e = ErrorInfo::new("ProtocolError", msg.clone());
                    e.node = running;
                    st.close_running(
                        NodeStatus::Error,
                        ErrorInfo::new(
                            "ProcessExited",
                            format!("the process ended with {exit_desc} during this node"),
                        ),
                    );
                    finish(st, ExecStatus::Error, None, Some(e), exit_text)
                }
            }
        }
    }
}

/// SIGTERM to the group now; returns when to follow with SIGKILL.
fn begin_stop(info: &ProcessInfo, grace: Duration) -> Instant {
    process::signal_group(info.pgid, Signal::SIGTERM);
    Instant::now() + grace
}

fn finish(
    mut st: State<'_>,
    status: ExecStatus,
    output: Option<Value>,
    error: Option<ErrorInfo>,
    exit: Option<String>,
) -> Outcome {
    // The output of an execution is the output of its last node, which only a success has: a
    // failed run's "last successful output" would read as if it were the answer.
    let output = output.filter(|_| status == ExecStatus::Success);
    let duration_ms = round_ms(st.started.elapsed().as_secs_f64() * 1000.0);
    st.emit(Event::ExecutionEnd {
        status,
        duration_ms,
        error: error.clone(),
        ts: now_ms(),
    });
    st.sink.flush();
    Outcome {
        status,
        output,
        error,
        duration_ms,
        exit,
        log_bytes: st.log_bytes,
        log_bytes_cut: st.log_bytes_cut,
        log_lines_cut: st.log_lines_cut,
    }
}
