//! The lines the progress display draws: a finished node, a running one, durations.

use super::*;

/// `20 µs`, `1.2 ms`, `340 ms`, `2.41 s`, `3 m 05 s`. Under a tenth of a millisecond in
/// microseconds (durations are recorded to the microsecond), not `0.0 ms`, which reads as
/// nothing done.
pub fn duration(ms: f64) -> String {
    let us = (ms.max(0.0) * 1000.0).round() as u64;
    if us < 100 {
        format!("{us} µs")
    } else if ms < 10.0 {
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

/// `s` cut to at most `cols` columns, with `…` where it was cut.
pub(super) fn fit(s: &str, cols: usize) -> String {
    console::truncate_str(s, cols, "…").into_owned()
}

/// A node, or one of its items or iterations, as the terminal names it: `each[2]`, `draft#3`.
pub fn part_label(node: &str, item: Option<u32>, iteration: Option<u32>) -> String {
    match (item, iteration) {
        (Some(i), _) => format!("{node}[{i}]"),
        (None, Some(k)) => format!("{node}#{k}"),
        (None, None) => node.to_string(),
    }
}

/// The level of a log line when it is not `info` (the default, untagged): `warning`, `error`,
/// `debug` (docs/events.md), as a tag beside the line, with the colour a terminal shows it in.
pub fn level_tag(level: Option<&str>) -> Option<(String, &'static str)> {
    let level = level.filter(|l| !l.is_empty() && *l != "info")?;
    let code = match level {
        "error" => "31",
        "warning" => "33",
        _ => "2",
    };
    Some((clean_line(level).into_owned(), code))
}

/// What a `node_end` line shows, before it is laid out.
pub struct NodeEndLine<'a> {
    pub node: &'a str,
    pub ty: &'a str,
    pub status: NodeStatus,
    pub retrying: bool,
    pub attempt: u32,
    /// None when not known (its runner died at a moment nobody recorded).
    pub duration_ms: Option<f64>,
    pub preview: Option<&'a str>,
    pub error: Option<&'a ErrorInfo>,
    /// Why, for what did not simply end: a retry withdrawn ("not retried: node 'x' failed").
    pub reason: Option<&'a str>,
}

/// One finished node as a line: mark, node, type, duration, status, then the output preview or
/// the error, cut to fit `cols` columns when drawing on a terminal (a wrapped preview would
/// fill a narrow terminal). Everything from the workflow is [`clean_line`]d.
pub fn node_end_line(
    n: &NodeEndLine<'_>,
    widths: (usize, usize),
    cols: Option<usize>,
    color: bool,
) -> String {
    let (mark, code) = match n.status {
        NodeStatus::Success => ("✓", "32"),
        NodeStatus::Pinned | NodeStatus::Reused => ("●", "34"),
        NodeStatus::Skipped => ("○", "2"),
        NodeStatus::Error if n.retrying => ("↻", "33"),
        // Stopped on request: not a failure of the node's.
        NodeStatus::Cancelled => ("■", "33"),
        _ => ("✗", "31"),
    };
    let node = clean_line(n.node);
    let dur = match n.duration_ms {
        Some(ms) if n.status != NodeStatus::Skipped => duration(ms),
        _ => String::new(),
    };
    let mut head = format!(
        "{:<w$} {:<tw$} {:>9}",
        node,
        n.ty,
        dur,
        w = widths.0,
        tw = widths.1
    );
    if !matches!(n.status, NodeStatus::Success) {
        head.push_str(&format!("  {}", n.status));
    }
    if n.attempt > 1 {
        head.push_str(&format!(" (attempt {})", n.attempt));
    }
    if let Some(r) = n.reason.filter(|_| n.status != NodeStatus::Skipped) {
        head.push_str(&format!(" ({})", clean_line(r)));
    }
    // Columns left for the preview or error after the mark, the head and two spaces.
    let room = cols.map(|c| c.saturating_sub(2 + console::measure_text_width(&head) + 2));
    let tail = |text: String, max: usize| match room {
        // Too little room for anything useful: the line ends after the head.
        Some(r) if r < 4 => String::new(),
        Some(r) => fit(&text, r.min(max)),
        None => fit(&text, max),
    };
    let mut s = format!("{} {}", paint(color, code, mark), fit_head(&head, cols));
    if let Some(p) = n.preview {
        let t = tail(format!("→ {}", clean_line(p)), 62);
        if !t.is_empty() {
            s.push_str(&format!("  {}", paint(color, "2", &t)));
        }
    }
    if let Some(e) = n.error {
        let first = e.message.lines().next().unwrap_or("");
        let t = tail(format!("{}: {}", e.kind, clean_line(first)), usize::MAX);
        if !t.is_empty() {
            s.push_str(&format!("  {}", paint(color, "31", &t)));
        }
    }
    s
}

fn fit_head(head: &str, cols: Option<usize>) -> String {
    match cols {
        Some(c) => fit(head, c.saturating_sub(2)),
        None => head.to_string(),
    }
}

/// What the spinner says of one running node: `fetch http_request (3/10 items)`.
pub(super) fn running_label(node: &str, ty: &str, r: &Running) -> String {
    let mut m = format!("{} {ty}", clean_line(node));
    let mut notes = Vec::new();
    if r.attempt > 1 {
        notes.push(format!("attempt {}", r.attempt));
    }
    if let Some((done, total)) = r.items {
        notes.push(format!("{done}/{total} items"));
    }
    if let Some(k) = r.iteration {
        notes.push(format!("iteration {k}"));
    }
    if !notes.is_empty() {
        m.push_str(&format!(" ({})", notes.join(", ")));
    }
    m
}

/// The spinner's message for one running node: `fetch http_request (3/10 items) · step 2 of 5`.
pub(super) fn running_message(
    node: &str,
    ty: &str,
    r: &Running,
    step: Option<(usize, usize)>,
) -> String {
    let mut m = running_label(node, ty, r);
    if let Some((i, n)) = step {
        m.push_str(&format!(" · step {i} of {n}"));
    }
    m
}

/// What a viewer says as an execution starts being stopped: why, how long its nodes are given
/// (`--kill-grace-ms`), and, for a signal, that another one ends them now.
pub fn stopping_line(reason: StopReason, grace: std::time::Duration) -> String {
    let why = match reason {
        StopReason::Interrupt => "Ctrl-C".to_string(),
        StopReason::Cancel => "asked by `flowrun stop` or the API".to_string(),
        r => r.signal().unwrap_or(r.describe()).to_string(),
    };
    if grace.is_zero() {
        return format!("stopping ({why}): ending the running nodes now");
    }
    let again = match reason {
        StopReason::Interrupt => "; Ctrl-C again ends them now",
        StopReason::Terminate => "; a second SIGTERM ends them now",
        _ => "",
    };
    format!(
        "stopping ({why}): the running nodes have {} to end{again}",
        duration(grace.as_secs_f64() * 1000.0)
    )
}
