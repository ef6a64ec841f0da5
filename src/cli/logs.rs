//! `flowrun logs`: an execution's log lines, as text or JSON lines, followed while it runs;
//! after those of an execution that failed, on stderr, what failed and why.

use super::inspect::{carried_by_no_row, in_node};
use super::inspect_parts::part_name;
use super::progress::{colors, level_tag, paint, part_label};
use super::text::{clean_line, json_line};
use super::timefmt;
use super::{Exit, open_store};
use flowrun_events::{ExecStatus, NodeStatus};
use serde_json::Value;
use std::path::Path;
use std::time::Duration;

/// One line: `TIME NODE [STREAM] LEVEL | LINE`, the stream when not stdout, the level when not
/// `info` (coloured when stdout is a terminal, as `run`'s display colours it).
fn print_log(ev: &flowrun_store::StoredEvent, color: bool) {
    // The item or iteration that printed it: `each[2]`, `draft#3`, as the live display writes.
    let number = |k: &str| ev.data.get(k).and_then(Value::as_u64).map(|n| n as u32);
    let node = part_label(
        ev.node_id.as_deref().unwrap_or("-"),
        number("item"),
        number("iteration"),
    );
    let node = clean_line(&node);
    let stream = ev.data.get("stream").and_then(Value::as_str).unwrap_or("");
    let line = ev.data.get("line").and_then(Value::as_str).unwrap_or("");
    let tag = if stream == "stdout" {
        String::new()
    } else {
        format!(" [{stream}]")
    };
    let level = level_tag(ev.data.get("level").and_then(Value::as_str))
        .map(|(tag, code)| format!(" {}", paint(color, code, &tag)))
        .unwrap_or_default();
    out!(
        "{} {node}{}{level} | {}",
        timefmt::utc(ev.ts),
        clean_line(&tag),
        clean_line(line)
    );
}

/// After `logs` of an ended execution, on stderr: each node, item or iteration that failed or
/// was stopped, and the execution's error when no node carries it (a code node that does not
/// compile fails it before any node starts).
/// `--node each[2]` or `--node draft#3`: the node and the item or iteration, as `logs` labels
/// lines (node ids have neither `[` nor `#`); anything else is a node id.
fn node_part(arg: &str) -> (&str, (Option<u32>, Option<u32>)) {
    if let Some((node, i)) = arg.strip_suffix(']').and_then(|a| a.split_once('['))
        && let Ok(i) = i.parse()
    {
        return (node, (Some(i), None));
    }
    if let Some((node, k)) = arg.split_once('#')
        && let Ok(k) = k.parse()
    {
        return (node, (None, Some(k)));
    }
    (arg, (None, None))
}

/// Whether a row is the one `--node` asked for (any row when it asked for none).
fn wanted(
    n: &flowrun_store::NodeRow,
    node: Option<&str>,
    part: (Option<u32>, Option<u32>),
) -> bool {
    let Some(id) = node else { return true };
    n.node_id == id
        && match part {
            (Some(i), _) => n.part == Some(flowrun_events::Part::Item(i)),
            (_, Some(k)) => n.part == Some(flowrun_events::Part::Iteration(k)),
            _ => true,
        }
}

/// `--node each[7]` or `--node draft#9`: an item or iteration the node did not run is an error,
/// as an unknown node is, naming those it ran (it printed nothing and exited 0, which reads as a
/// part without output). Only once it is known: a running node may start more iterations, and
/// a node's items are known when it starts.
fn check_part(
    store: &flowrun_store::Store,
    id: &str,
    node: &str,
    part: (Option<u32>, Option<u32>),
) -> Result<(), Exit> {
    let Some(part) = flowrun_events::Part::from_fields(part.0, part.1) else {
        return Ok(());
    };
    match flowrun_app::views::part_not_run(store, id, node, part)? {
        Some(not_run) => Err(Exit::new(2, clean_line(&not_run))),
        None => Ok(()),
    }
}

fn print_failures(
    store: &flowrun_store::Store,
    id: &str,
    node: Option<&str>,
    part: (Option<u32>, Option<u32>),
) -> Result<(), Exit> {
    let short = &id[..8.min(id.len())];
    let rows = store.nodes(id)?;
    for n in &rows {
        let Some(e) = n.error.as_ref() else { continue };
        if !wanted(n, node, part) {
            continue;
        }
        let part = part_name(n.part)
            .map(|p| format!(" {p}"))
            .unwrap_or_default();
        let how = if n.status == NodeStatus::Cancelled {
            "was stopped"
        } else {
            "failed"
        };
        // Pointed to only where there is one (a node stopped with others has none), and for a
        // failed sub-workflow in the child's record.
        let item = match n.part {
            Some(flowrun_events::Part::Item(i)) => Some(u64::from(i)),
            _ => None,
        };
        // A failed child's traceback is in the child's own record: pointed to there.
        let child = (e.kind == "SubWorkflow")
            .then(|| flowrun_app::subflow::latest_child(store, id, &n.node_id, item))
            .flatten()
            .filter(|c| c.status == ExecStatus::Error);
        let hint = match child {
            Some(c) => {
                format!(
                    " (its traceback: flowrun show {})",
                    &c.id[..8.min(c.id.len())]
                )
            }
            _ if e.traceback.as_deref().is_some_and(|t| !t.trim().is_empty()) => {
                format!(" (the traceback: flowrun show {short})")
            }
            _ => String::new(),
        };
        flowrun_app::say!(
            "flowrun: node '{}'{part} {how}: {}: {}{hint}",
            clean_line(&n.node_id),
            clean_line(&e.kind),
            clean_line(&e.message),
        );
    }
    let exec = store.execution(id)?;
    if exec.status != ExecStatus::Error {
        return Ok(());
    }
    if let Some(e) = exec.error.as_ref().filter(|e| {
        node.is_none_or(|want| e.node.as_deref() == Some(want)) && carried_by_no_row(e, &rows)
    }) {
        flowrun_app::say!(
            "flowrun: the execution failed{}: {}: {} (flowrun show {short})",
            in_node(e),
            clean_line(&e.kind),
            clean_line(&e.message),
        );
    }
    Ok(())
}

/// `flowrun logs ID [--node NODE] [--json] [-f]`. After the lines of an execution that failed,
/// stderr names the nodes that failed and why: the logs of a failed step seldom say it (the
/// error is not printed by the node), and `show` has the traceback.
pub fn logs(
    id: &str,
    follow: bool,
    node: Option<&str>,
    json: bool,
    db: Option<&Path>,
) -> Result<i32, Exit> {
    let store = open_store(db)?;
    let id = store.resolve_id(id)?;
    let (only, part) = match node {
        Some(arg) => {
            let (node, part) = node_part(arg);
            (Some(node), part)
        }
        None => (None, (None, None)),
    };
    if let Some(node) = only {
        // As the API answers (404 unknown_node): a node the workflow does not have is a typo,
        // not an execution without lines.
        let exec = store.execution(&id)?;
        if let Some(plan) = flowrun_app::views::plan_json(&store, &exec) {
            let ids = flowrun_app::views::plan_node_ids(&plan);
            if !ids.contains(&node) {
                return Err(Exit::new(
                    2,
                    format!(
                        "execution {id}'s workflow has no node '{}' (its nodes: {})",
                        clean_line(node),
                        clean_line(&ids.join(", "))
                    ),
                ));
            }
        }
        check_part(&store, &id, node, part)?;
    }
    let color = colors(std::io::IsTerminal::is_terminal(&std::io::stdout()));
    let print = |ev: &flowrun_store::StoredEvent| {
        if json {
            out!("{}", json_line(&flowrun_app::views::log_json(&id, ev)));
        } else {
            print_log(ev, color);
        }
    };
    // Every line after `after` (the node's only, in SQL), a page at a time; the last seq.
    let print_after = |mut after: u64| -> Result<u64, Exit> {
        loop {
            let (page, more) =
                store.log_page(&id, after, only, part, flowrun_app::views::LOG_PAGE_BYTES)?;
            for ev in &page {
                after = ev.seq;
                print(ev);
            }
            if !more {
                return Ok(after);
            }
        }
    };
    let mut after = 0;
    loop {
        after = print_after(after)?;
        let ended = store.execution(&id)?.status.is_final();
        if !follow || ended {
            // One more pass picks up lines written just before the end.
            if follow {
                print_after(after)?;
            }
            if ended {
                print_failures(&store, &id, only, part)?;
            }
            return Ok(0);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
