//! Reading a case's execution back: the record its assertions see, and what a report shows of
//! why it failed.

use flowrun_events::{ErrorInfo, ExecStatus};
use flowrun_store::{Store, StoreError};
use serde_json::{Map, Value};

/// The most lines of a failed execution's traceback, and of what its failing node printed, a
/// report shows (the record has them all).
pub(super) const TRACEBACK_LINES: usize = 30;
const LOG_LINES: usize = 10;

/// The most characters of one line a report shows (a 200 KB error line made a 400 KB report).
const LINE_CHARS: usize = 500;

/// `line` cut at [`LINE_CHARS`] characters, saying so.
fn short(line: &str) -> String {
    match line.char_indices().nth(LINE_CHARS) {
        Some((at, _)) => format!("{}… ({} bytes in all)", &line[..at], line.len()),
        None => line.to_string(),
    }
}

/// The last `n` lines of `text`, each cut short, with a line saying how many came before when
/// some did.
pub(super) fn last_of(text: &str, n: usize) -> String {
    let lines: Vec<String> = text.lines().map(short).collect();
    match lines.len().checked_sub(n) {
        Some(cut) if cut > 0 => format!("… {cut} line(s) before\n{}", lines[cut..].join("\n")),
        _ => lines.join("\n"),
    }
}

/// The last [`LOG_LINES`] lines node `node` of execution `id` printed (any item's).
pub(super) fn last_lines_of(store: &Store, id: &str, node: &str) -> Vec<String> {
    let Ok(events) = store.events(id, 0, Some("log")) else {
        return Vec::new();
    };
    let mut lines: Vec<String> = events
        .iter()
        .filter(|e| e.data.get("node").and_then(Value::as_str) == Some(node))
        .filter_map(|e| e.data.get("line").and_then(Value::as_str).map(short))
        .collect();
    let cut = lines.len().saturating_sub(LOG_LINES);
    lines.drain(..cut);
    lines
}

/// What a report shows of why execution `id` failed with `error`: the last lines of its
/// traceback and of what its failing node printed. A failed `workflow` node's are its child's
/// (and so on down, a few levels): the child is where the error was raised, and a CI job has
/// no database to look in afterwards. The traceback then starts with the child it is from.
pub(super) fn why_failed(
    store: &Store,
    id: &str,
    error: Option<&ErrorInfo>,
) -> (Option<String>, Vec<String>) {
    let mut at = id.to_string();
    let mut error = error.cloned();
    let mut from = None;
    for _ in 0..8 {
        let Some(e) = error.as_ref().filter(|e| e.kind == "SubWorkflow") else {
            break;
        };
        let Some(node) = e.node.clone() else { break };
        // A `workflow` node fails `SubWorkflow` by itself, not by an item (that is `ItemsFailed`).
        let Some(child) = crate::subflow::latest_child(store, &at, &node, None)
            .filter(|c| c.status == ExecStatus::Error)
        else {
            break;
        };
        from = Some(format!(
            "(in sub-workflow execution {}, called by node '{node}')",
            child.id
        ));
        at = child.id;
        error = child.error;
    }
    let traceback = error.as_ref().and_then(|e| {
        let t = e.traceback.as_deref()?.trim_end();
        (!t.is_empty()).then(|| last_of(t, TRACEBACK_LINES))
    });
    let traceback = match (from, traceback) {
        (Some(from), Some(t)) => Some(format!("{from}\n{t}")),
        (_, t) => t,
    };
    let logs = match error.as_ref().and_then(|e| e.node.as_deref()) {
        Some(node) => last_lines_of(store, &at, node),
        None => Vec::new(),
    };
    (traceback, logs)
}

/// The most events, and log bytes, of an execution read back on the suite's own thread
/// ([`read_back`]): a hello case has 12 events; a few hundred read in well under a millisecond,
/// while one of 100,000 log lines takes a few hundred, during which no other case's output
/// would be read.
const INLINE_EVENTS: u64 = 256;
const INLINE_LOG_BYTES: u64 = 64 << 10;

/// What a case's assertions and report read of its execution `id`: the record
/// ([`record_view`]) and why it failed ([`why_failed`]). Read where it costs the suite least: a
/// small execution (`events`, `log_bytes`: at most [`INLINE_EVENTS`], [`INLINE_LOG_BYTES`]), on
/// a runtime of one thread (`flowrun test` at `-j 1`, or on two CPUs or fewer), on that thread
/// after the tasks woken meanwhile — the next case, when this one has given up its turn, starts
/// first, and the reading runs beside its interpreter. Handed to the blocking pool, it cost two
/// wake-ups between threads per case, and on two cores a thread more to schedule beside the
/// interpreter, the template and its next spare (100 warm cases: 3.5–4.5% slower). A larger
/// one, or on a runtime of several threads, goes to the blocking pool, off the thread that reads
/// the running cases' output.
pub(super) async fn read_back(
    store: crate::SharedStore,
    id: String,
    error: Option<ErrorInfo>,
    (events, log_bytes): (u64, u64),
) -> (Result<Value, StoreError>, (Option<String>, Vec<String>)) {
    let read = move || {
        let store = store.lock();
        let why = why_failed(&store, &id, error.as_ref());
        (record_view(&store, &id), why)
    };
    let one_thread = tokio::runtime::Handle::current().runtime_flavor()
        == tokio::runtime::RuntimeFlavor::CurrentThread;
    if one_thread && events <= INLINE_EVENTS && log_bytes <= INLINE_LOG_BYTES {
        tokio::task::yield_now().await;
        read()
    } else {
        tokio::task::spawn_blocking(read)
            .await
            .expect("reading does not panic")
    }
}

/// The execution record as assertions see it: `show --json`'s fields, `nodes` by id, and `logs`
/// (every log line, joined by newlines).
pub fn record_view(store: &Store, id: &str) -> Result<Value, StoreError> {
    let mut v = crate::views::record_json(store, id)?;
    let mut nodes = Map::new();
    if let Some(Value::Array(rows)) = v.get_mut("nodes").map(Value::take) {
        for mut row in rows {
            if let Value::Object(m) = &mut row {
                m.remove("position");
                if let Some(Value::String(id)) = m.remove("node_id") {
                    nodes.insert(id, row);
                }
            }
        }
    }
    v["nodes"] = Value::Object(nodes);
    let lines: Vec<String> = store
        .events(id, 0, Some("log"))?
        .iter()
        .filter_map(|e| e.data.get("line").and_then(Value::as_str).map(String::from))
        .collect();
    v["logs"] = Value::String(lines.join("\n"));
    Ok(v)
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_report_shows_the_last_lines_each_cut_short() {
        let text = format!("one\ntwo\n{}\nfour", "x".repeat(2000));
        let shown = super::last_of(&text, 2);
        let lines: Vec<&str> = shown.lines().collect();
        assert_eq!(lines[0], "… 2 line(s) before");
        assert!(
            lines[1].ends_with("… (2000 bytes in all)") && lines[1].len() < 600,
            "{}",
            lines[1]
        );
        assert_eq!(lines[2], "four");
    }
}
