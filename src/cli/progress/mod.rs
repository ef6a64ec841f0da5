//! What a person (or a program) sees while an execution runs.
//!
//! - [`Terminal`]: a spinner for the running node (its type, its step in the plan, its own
//!   elapsed time), then one line per finished node with a checkmark or cross, its duration and
//!   a short output preview cut to the terminal's width; node output lines are shown under
//!   their node. On a non-terminal it prints the same lines without the spinner. Text from the
//!   workflow is neutralised (`super::text`).
//! - [`Jsonl`]: one JSON object per event on stdout (`--events jsonl`, see docs/events.md).

mod jsonl;
mod lines;
use super::text::{clean, clean_line};
use flowrun_events::{Envelope, ErrorInfo, Event, NodeStatus, Stream};
use flowrun_executor::{Sink, StopReason};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle, TermLike};
pub use jsonl::Jsonl;
pub use lines::{NodeEndLine, duration, level_tag, node_end_line, part_label, stopping_line};
use lines::{fit, running_label, running_message};
use std::collections::HashMap;
use std::io::Write;
use std::time::Duration;

/// Columns left free at the right edge of the spinner's line for the terminal's echo of
/// Ctrl-C (`^C`, even twice). See [`Narrower`].
const RIGHT_MARGIN: u16 = 4;

/// stderr as indicatif draws on it, with room at the right edge.
///
/// indicatif pads each line it draws with spaces to the terminal's width, so the cursor waits
/// at the edge and the next line starts below by wrapping. The terminal's echo of Ctrl-C then
/// wraps too: `^C` lands on a new line, indicatif (which counts one line) clears only that one,
/// and the spinner's line stays on the screen. Here the width is a few columns less, the padding
/// is replaced by "erase to the end of the line" (which also wipes an echoed `^C` at the next
/// redraw), and the line break the padding would have caused is written when the next line
/// starts, unless a cursor move or `\r` comes first.
#[derive(Debug)]
struct Narrower {
    term: console::Term,
    newline_due: std::sync::atomic::AtomicBool,
}

impl Narrower {
    fn new() -> Narrower {
        Narrower {
            term: console::Term::stderr(),
            newline_due: false.into(),
        }
    }

    fn no_newline(&self) {
        self.newline_due
            .store(false, std::sync::atomic::Ordering::Relaxed);
    }

    fn newline_if_due(&self) -> std::io::Result<()> {
        if self
            .newline_due
            .swap(false, std::sync::atomic::Ordering::Relaxed)
        {
            self.term.write_str("\r\n")?;
        }
        Ok(())
    }
}

impl TermLike for Narrower {
    fn width(&self) -> u16 {
        self.term.size().1.saturating_sub(RIGHT_MARGIN).max(20)
    }
    fn height(&self) -> u16 {
        self.term.size().0
    }
    fn move_cursor_up(&self, n: usize) -> std::io::Result<()> {
        self.no_newline();
        self.term.move_cursor_up(n)
    }
    fn move_cursor_down(&self, n: usize) -> std::io::Result<()> {
        self.no_newline();
        self.term.move_cursor_down(n)
    }
    fn move_cursor_right(&self, n: usize) -> std::io::Result<()> {
        self.term.move_cursor_right(n)
    }
    fn move_cursor_left(&self, n: usize) -> std::io::Result<()> {
        self.term.move_cursor_left(n)
    }
    fn write_line(&self, s: &str) -> std::io::Result<()> {
        self.newline_if_due()?;
        self.term.write_line(s)
    }
    fn write_str(&self, s: &str) -> std::io::Result<()> {
        if s.bytes().all(|b| b == b' ') {
            // indicatif's padding after a line.
            self.newline_due
                .store(true, std::sync::atomic::Ordering::Relaxed);
            return self.term.write_str("\x1b[K");
        }
        if s.starts_with('\r') {
            self.no_newline();
        } else {
            self.newline_if_due()?;
        }
        self.term.write_str(s)
    }
    fn clear_line(&self) -> std::io::Result<()> {
        self.no_newline();
        self.term.clear_line()
    }
    fn flush(&self) -> std::io::Result<()> {
        self.term.flush()
    }
}

/// A node the display shows as running.
#[derive(Debug, Clone, Default)]
struct Running {
    attempt: u32,
    /// `for_each`: items ended so far, of how many.
    items: Option<(u32, u32)>,
    /// `repeat`: the iteration running.
    iteration: Option<u32>,
}

pub struct Terminal {
    bar: Option<ProgressBar>,
    /// What runs now, in the order it started.
    running: Vec<(String, Running)>,
    types: HashMap<String, String>,
    /// The nodes in plan order (from `execution_start`), for "step 2 of 5".
    order: Vec<String>,
    width: usize,
    type_width: usize,
    color: bool,
}

impl Terminal {
    /// `tty`: draw a spinner (stderr is a terminal). `types`: node id → node type, for display.
    pub fn new(tty: bool, types: HashMap<String, String>) -> Terminal {
        let width = types
            .keys()
            .map(|k| console::measure_text_width(&clean_line(k)))
            .max()
            .unwrap_or(4)
            .clamp(4, 24);
        let type_width = types.values().map(|t| t.len()).max().unwrap_or(4);
        Terminal {
            bar: tty.then(|| {
                let bar = ProgressBar::with_draw_target(
                    None,
                    ProgressDrawTarget::term_like(Box::new(Narrower::new())),
                );
                // `elapsed` is the running node's: reset at each node_start.
                bar.set_style(
                    ProgressStyle::with_template("{spinner:.cyan} {msg} {elapsed:.dim}")
                        .expect("valid template"),
                );
                bar
            }),
            types,
            running: Vec::new(),
            order: Vec::new(),
            width,
            type_width,
            color: colors(tty),
        }
    }

    /// Columns available for one line, when drawing on a terminal.
    fn columns(&self) -> Option<usize> {
        self.bar.as_ref()?;
        let cols = console::Term::stderr().size_checked()?.1;
        Some(cols.saturating_sub(RIGHT_MARGIN).max(20) as usize)
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
        paint(self.color, code, s)
    }
}

impl Terminal {
    /// The spinner's message: the node running, with its step, or every node running side by
    /// side.
    fn redraw(&self) {
        let Some(bar) = &self.bar else { return };
        let label = |(node, r): &(String, Running)| {
            running_label(
                node,
                self.types.get(node).map(String::as_str).unwrap_or(""),
                r,
            )
        };
        let msg = match self.running.as_slice() {
            [] => return,
            [(node, r)] => {
                let step = self
                    .order
                    .iter()
                    .position(|n| n == node)
                    .map(|i| (i + 1, self.order.len()));
                let ty = self.types.get(node).map(String::as_str).unwrap_or("");
                running_message(node, ty, r, step)
            }
            many => format!(
                "{} running: {}",
                many.len(),
                many.iter().map(label).collect::<Vec<_>>().join(" | ")
            ),
        };
        // Room for the spinner and the elapsed time.
        let msg = match self.columns() {
            Some(c) => fit(&msg, c.saturating_sub(10)),
            None => msg,
        };
        bar.set_message(msg);
        bar.enable_steady_tick(Duration::from_millis(80));
    }
}

impl Drop for Terminal {
    /// However the run ended, no spinner is left on the screen.
    fn drop(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}

/// Whether to colour what goes to a stream: a terminal, unless `NO_COLOR` is set.
pub fn colors(tty: bool) -> bool {
    tty && std::env::var_os("NO_COLOR").is_none()
}

pub fn paint(color: bool, code: &str, s: &str) -> String {
    if color {
        format!("\x1b[{code}m{s}\x1b[0m")
    } else {
        s.to_string()
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

impl Sink for Terminal {
    fn stopping(&mut self, reason: StopReason, grace: Duration) {
        let line = stopping_line(reason, grace);
        self.line(&self.paint("33", &line));
    }

    fn event(&mut self, env: &Envelope) {
        match &env.event {
            Event::ExecutionStart {
                workflow_id,
                workflow_name,
                nodes,
                ..
            } => {
                self.order = nodes.clone();
                let title = if workflow_name == workflow_id {
                    clean_line(workflow_id).into_owned()
                } else {
                    format!(
                        "{} ({})",
                        clean_line(workflow_name),
                        clean_line(workflow_id)
                    )
                };
                self.line(&format!(
                    "{} {title} · execution {} · {} node{}",
                    self.paint("1", "▶"),
                    env.execution_id,
                    nodes.len(),
                    if nodes.len() == 1 { "" } else { "s" }
                ));
            }
            Event::NodeStart {
                node,
                attempt,
                item,
                iteration,
                items,
                ..
            } => {
                match (item, iteration) {
                    (Some(_), _) => {}
                    (None, Some(k)) => {
                        if let Some((_, r)) = self.running.iter_mut().find(|(n, _)| n == node) {
                            r.iteration = Some(*k);
                        }
                    }
                    (None, None) => {
                        let r = Running {
                            attempt: *attempt,
                            items: items.map(|n| (0, n)),
                            iteration: None,
                        };
                        match self.running.iter_mut().find(|(n, _)| n == node) {
                            Some(slot) => slot.1 = r,
                            None => self.running.push((node.clone(), r)),
                        }
                        if self.running.len() == 1 {
                            if let Some(bar) = &self.bar {
                                bar.reset_elapsed();
                            }
                        }
                    }
                }
                self.redraw();
            }
            Event::NodeEnd {
                node,
                status,
                attempt,
                duration_ms,
                output_preview,
                error,
                retrying,
                item,
                iteration,
                reason,
                ..
            } => {
                if item.is_some() || iteration.is_some() {
                    // An item or iteration: counted on its node's spinner line, not a line of
                    // its own (show lists them).
                    if let (Some(_), Some((_, r))) =
                        (item, self.running.iter_mut().find(|(n, _)| n == node))
                    {
                        if let Some((done, _)) = &mut r.items {
                            *done += 1;
                        }
                    }
                    self.redraw();
                    if status.has_output() || *status == flowrun_events::NodeStatus::Skipped {
                        return;
                    }
                }
                if item.is_none() && iteration.is_none() && !retrying {
                    self.running.retain(|(n, _)| n != node);
                    self.redraw();
                }
                let ty = self.types.get(node).map(String::as_str).unwrap_or("");
                // A failed item or iteration says which: `each[2]`, `draft#3`.
                let node = &part_label(node, *item, *iteration);
                let line = node_end_line(
                    &NodeEndLine {
                        node,
                        ty,
                        status: *status,
                        retrying: *retrying,
                        attempt: *attempt,
                        duration_ms: *duration_ms,
                        preview: output_preview.as_deref(),
                        error: error.as_ref(),
                        reason: reason.as_deref(),
                    },
                    (self.width, self.type_width),
                    self.columns(),
                    self.color,
                );
                self.line(&line);
            }
            Event::Log {
                node,
                stream,
                line,
                level,
                item,
                iteration,
                ..
            } => {
                if self.agent_action(node.as_deref(), level.as_deref(), line) {
                    return;
                }
                let who = part_label(node.as_deref().unwrap_or("-"), *item, *iteration);
                let who = clean_line(&who);
                let bar = if *stream == Stream::Stderr {
                    "┃"
                } else {
                    "│"
                };
                // A warning or error is tagged (and coloured): `talk warning │ disk full`.
                let level = level_tag(level.as_deref())
                    .map(|(tag, code)| format!(" {}", self.paint(code, &tag)))
                    .unwrap_or_default();
                self.line(&format!(
                    "  {}{level} {} {}",
                    self.paint("2", &who),
                    self.paint("2", bar),
                    clean_line(line)
                ));
            }
            // Streamed LLM text goes to live viewers (`Sink::delta`), not to the terminal.
            Event::NodeDelta { .. } => {}
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
                let mut s = self.paint(code, status.as_str());
                if let Some(d) = duration_ms {
                    s.push_str(&format!(" in {}", duration(*d)));
                }
                if let Some(e) = error {
                    s.push_str(&format!(" — {}: {}", e.kind, clean(&e.message)));
                }
                self.line(&s);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plain(s: &str) -> String {
        console::strip_ansi_codes(s).into_owned()
    }

    #[test]
    fn durations_read_true_at_every_size() {
        for (ms, shown) in [
            (0.0, "0 µs"),
            (0.0004, "0 µs"),
            (0.02, "20 µs"),
            (0.049, "49 µs"),
            (0.0994, "99 µs"),
            (0.0996, "0.1 ms"),
            (1.23, "1.2 ms"),
            (340.0, "340 ms"),
            (2410.0, "2.41 s"),
            (185_000.0, "3 m 05 s"),
        ] {
            assert_eq!(duration(ms), shown, "{ms}");
        }
    }

    #[test]
    fn a_node_line_fits_a_narrow_terminal() {
        let preview = format!("\"{}\"", "x".repeat(300));
        let n = NodeEndLine {
            node: "fetch",
            ty: "http_request",
            status: NodeStatus::Success,
            retrying: false,
            reason: None,
            attempt: 1,
            duration_ms: Some(12.0),
            preview: Some(&preview),
            error: None,
        };
        for cols in [20, 40, 60, 200] {
            let line = node_end_line(&n, (5, 12), Some(cols), true);
            let w = console::measure_text_width(&plain(&line));
            assert!(w <= cols, "{cols} columns: {w}: {line:?}");
            assert!(plain(&line).starts_with("✓ fetch"), "{line:?}");
        }
        // Not on a terminal: the usual 60-odd characters of preview.
        let line = node_end_line(&n, (5, 12), None, false);
        assert!(line.contains("→ \"xxx") && line.ends_with('…'), "{line}");
    }

    #[test]
    fn workflow_text_in_a_node_line_is_neutralised() {
        let err = ErrorInfo::of(
            flowrun_events::ErrorKind::Timeout,
            "bad \x1b[2J\nsecond line",
        );
        let n = NodeEndLine {
            node: "n",
            ty: "code",
            status: NodeStatus::Error,
            retrying: false,
            reason: None,
            attempt: 2,
            duration_ms: Some(1.0),
            preview: Some("\x1b]0;title\x07\u{202e}"),
            error: Some(&err),
        };
        let line = node_end_line(&n, (4, 4), None, false);
        assert!(
            !line.contains('\x1b') && !line.contains('\u{202e}'),
            "{line:?}"
        );
        assert!(line.contains("\\x1b]0;title\\x07\\u{202e}"), "{line}");
        assert!(
            line.contains("bad \\x1b[2J") && !line.contains("second"),
            "{line}"
        );
        assert!(line.contains("(attempt 2)"), "{line}");
    }

    #[test]
    fn the_running_message_says_which_step() {
        let first = Running {
            attempt: 1,
            ..Running::default()
        };
        assert_eq!(
            running_message("fetch", "http_request", &first, Some((2, 5))),
            "fetch http_request · step 2 of 5"
        );
        let third = Running {
            attempt: 3,
            ..Running::default()
        };
        assert_eq!(
            running_message("a\x1bb", "code", &third, None),
            "a\\x1bb code (attempt 3)"
        );
        let looping = Running {
            attempt: 1,
            items: Some((3, 10)),
            iteration: None,
        };
        assert_eq!(
            running_message("each", "llm", &looping, Some((1, 2))),
            "each llm (3/10 items) · step 1 of 2"
        );
    }
}
