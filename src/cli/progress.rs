//! What a person (or a program) sees while an execution runs.
//!
//! - [`Terminal`]: a spinner for the running node, then one line per finished node with a
//!   checkmark or cross, its duration and a short output preview; node output lines are shown
//!   under their node. On a non-terminal it prints the same lines without the spinner.
//! - [`Jsonl`]: one JSON object per event on stdout (`--events jsonl`, see docs/events.md).

use flowrun_events::{Envelope, Event, NodeStatus, Stream};
use flowrun_executor::Sink;
use indicatif::{ProgressBar, ProgressStyle};
use std::collections::HashMap;
use std::io::Write;
use std::time::Duration;

pub struct Terminal {
    bar: Option<ProgressBar>,
    types: HashMap<String, String>,
    width: usize,
    type_width: usize,
    color: bool,
}

impl Terminal {
    /// `tty`: draw a spinner (stderr is a terminal). `types`: node id → node type, for display.
    pub fn new(tty: bool, types: HashMap<String, String>) -> Terminal {
        let width = types
            .keys()
            .map(|k| k.len())
            .max()
            .unwrap_or(4)
            .clamp(4, 24);
        let type_width = types.values().map(|t| t.len()).max().unwrap_or(4);
        Terminal {
            bar: tty.then(|| {
                let bar = ProgressBar::new_spinner();
                bar.set_style(
                    ProgressStyle::with_template("{spinner:.cyan} {msg} {elapsed:.dim}")
                        .expect("valid template"),
                );
                bar
            }),
            types,
            width,
            type_width,
            color: tty && std::env::var_os("NO_COLOR").is_none(),
        }
    }

    fn line(&self, s: &str) {
        match &self.bar {
            Some(bar) => bar.println(s),
            None => {
                let _ = writeln!(std::io::stderr(), "{s}");
            }
        }
    }

    fn paint(&self, code: &str, s: &str) -> String {
        if self.color {
            format!("\x1b[{code}m{s}\x1b[0m")
        } else {
            s.to_string()
        }
    }
}

impl Terminal {
    /// An `agent` node's log line: its summaries (what the agent just did) become the running
    /// node's spinner text as well as a line; the raw event JSON (level `debug`) is left to
    /// `flowrun logs`. Returns whether the line is not to be printed.
    fn agent_action(&self, node: Option<&str>, level: Option<&str>, line: &str) -> bool {
        let Some(node) = node.filter(|n| self.types.get(*n).is_some_and(|t| t == "agent")) else {
            return false;
        };
        if level == Some("debug") {
            return true;
        }
        if let Some(bar) = &self.bar {
            let action: String = if line.chars().count() > 60 {
                line.chars().take(59).chain(std::iter::once('…')).collect()
            } else {
                line.to_string()
            };
            bar.set_message(format!("{node} agent · {action}"));
        }
        false
    }
}

/// `1.2 ms`, `340 ms`, `2.41 s`, `3 m 05 s`.
pub fn duration(ms: f64) -> String {
    if ms < 10.0 {
        format!("{ms:.1} ms")
    } else if ms < 1000.0 {
        format!("{ms:.0} ms")
    } else if ms < 60_000.0 {
        format!("{:.2} s", ms / 1000.0)
    } else {
        let s = (ms / 1000.0) as u64;
        format!("{} m {:02} s", s / 60, s % 60)
    }
}

impl Sink for Terminal {
    fn event(&mut self, env: &Envelope) {
        match &env.event {
            Event::ExecutionStart {
                workflow_id,
                workflow_name,
                nodes,
                ..
            } => {
                let title = if workflow_name == workflow_id {
                    workflow_id.clone()
                } else {
                    format!("{workflow_name} ({workflow_id})")
                };
                self.line(&format!(
                    "{} {title} · execution {} · {} node{}",
                    self.paint("1", "▶"),
                    env.execution_id,
                    nodes.len(),
                    if nodes.len() == 1 { "" } else { "s" }
                ));
            }
            Event::NodeStart { node, attempt, .. } => {
                if let Some(bar) = &self.bar {
                    let ty = self.types.get(node).map(String::as_str).unwrap_or("");
                    let att = if *attempt > 1 {
                        format!(" (attempt {attempt})")
                    } else {
                        String::new()
                    };
                    bar.set_message(format!("{node} {ty}{att}"));
                    bar.enable_steady_tick(Duration::from_millis(80));
                }
            }
            Event::NodeEnd {
                node,
                status,
                attempt,
                duration_ms,
                output_preview,
                error,
                retrying,
                ..
            } => {
                let (mark, code) = match status {
                    NodeStatus::Success => ("✓", "32"),
                    NodeStatus::Pinned | NodeStatus::Reused => ("●", "34"),
                    NodeStatus::Skipped => ("○", "2"),
                    NodeStatus::Error if *retrying => ("↻", "33"),
                    _ => ("✗", "31"),
                };
                let ty = self.types.get(node).map(String::as_str).unwrap_or("");
                let mut s = format!(
                    "{} {:<w$} {:<tw$} {:>9}",
                    self.paint(code, mark),
                    node,
                    ty,
                    if *status == NodeStatus::Skipped {
                        String::new()
                    } else {
                        duration(*duration_ms)
                    },
                    w = self.width,
                    tw = self.type_width
                );
                if !matches!(status, NodeStatus::Success) {
                    s.push_str(&format!("  {status}"));
                }
                if *attempt > 1 {
                    s.push_str(&format!(" (attempt {attempt})"));
                }
                if let Some(p) = output_preview {
                    let p: String = if p.chars().count() > 60 {
                        p.chars().take(59).chain(std::iter::once('…')).collect()
                    } else {
                        p.clone()
                    };
                    s.push_str(&format!("  {}", self.paint("2", &format!("→ {p}"))));
                }
                if let Some(e) = error {
                    let first = e.message.lines().next().unwrap_or("");
                    s.push_str(&format!(
                        "  {}",
                        self.paint("31", &format!("{}: {first}", e.kind))
                    ));
                }
                self.line(&s);
            }
            Event::Log {
                node,
                stream,
                line,
                level,
                ..
            } => {
                if self.agent_action(node.as_deref(), level.as_deref(), line) {
                    return;
                }
                let who = node.as_deref().unwrap_or("-");
                let bar = if *stream == Stream::Stderr {
                    "┃"
                } else {
                    "│"
                };
                self.line(&format!(
                    "  {} {}",
                    self.paint("2", &format!("{who} {bar}")),
                    line
                ));
            }
            Event::ExecutionEnd {
                status,
                duration_ms,
                error,
                ..
            } => {
                if let Some(bar) = self.bar.take() {
                    bar.finish_and_clear();
                }
                let code = if status.as_str() == "success" {
                    "32"
                } else {
                    "31"
                };
                let mut s = format!(
                    "{} in {}",
                    self.paint(code, status.as_str()),
                    duration(*duration_ms)
                );
                if let Some(e) = error {
                    s.push_str(&format!(" — {}: {}", e.kind, e.message));
                }
                self.line(&s);
            }
        }
    }
}

/// `--events jsonl`: each event as one line of JSON on stdout, flushed at once.
pub struct Jsonl<W: Write> {
    out: W,
}

impl<W: Write> Jsonl<W> {
    pub fn new(out: W) -> Self {
        Jsonl { out }
    }
}

impl<W: Write + Send> Sink for Jsonl<W> {
    fn event(&mut self, env: &Envelope) {
        let _ = serde_json::to_writer(&mut self.out, env);
        let _ = self.out.write_all(b"\n");
        let _ = self.out.flush();
    }
}
