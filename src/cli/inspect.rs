//! `flowrun history` and `show` (`flowrun logs` is `logs.rs`).

use super::inspect_parts::{part_failed, print_parts};
use super::progress::duration;
use super::text::{clean, clean_line, json_pretty};
use super::timefmt;
use super::{Exit, open_store};
use clap::Args;
use flowrun_events::{ErrorInfo, ExecStatus, NodeStatus, now_ms};
use flowrun_store::{Execution, HistoryFilter, NodeRow};
use serde_json::Value;
use std::path::Path;

#[derive(Args, Debug)]
pub struct HistoryArgs {
    /// Only executions of this workflow id.
    #[arg(long)]
    pub workflow: Option<String>,
    /// Only executions with this status (success, error, timeout, cancelled, interrupted, running, queued).
    #[arg(long)]
    pub status: Option<String>,
    /// Only executions started at or after this time (`2026-11-25`, `2026-11-25T10:00:00Z`, or an age like `2h`).
    #[arg(long)]
    pub since: Option<String>,
    /// Only executions started before this time (same forms as --since).
    #[arg(long)]
    pub until: Option<String>,
    /// How many to list (0: all of them); when there are more, stderr says how many.
    #[arg(long, short = 'n', default_value_t = 20)]
    pub limit: usize,
    /// One JSON array of execution summaries on stdout.
    #[arg(long)]
    pub json: bool,
    /// Every execution, flat: include those of `flowrun test` (mode test-suite) and list the
    /// child executions of `workflow` nodes as rows of their own (otherwise they are shown
    /// indented under their parent).
    #[arg(long)]
    pub all: bool,
}

pub fn history(args: HistoryArgs, db: Option<&Path>) -> Result<i32, Exit> {
    let store = open_store(db)?;
    let now = now_ms();
    let status = match &args.status {
        Some(s) => Some(ExecStatus::parse(s).ok_or_else(|| {
            let all: Vec<&str> = ExecStatus::ALL.iter().map(|s| s.as_str()).collect();
            Exit::new(
                2,
                format!("unknown status '{s}'; one of: {}", all.join(", ")),
            )
        })?),
        None => None,
    };
    let when = |s: &Option<String>, flag: &str| -> Result<Option<i64>, Exit> {
        s.as_ref()
            .map(|s| {
                timefmt::parse_when(s, now).ok_or_else(|| {
                    Exit::new(
                        2,
                        format!("{flag} {s}: expected a date like 2026-11-25 or an age like 2h"),
                    )
                })
            })
            .transpose()
    };
    let filter = HistoryFilter {
        workflow: args.workflow.clone(),
        status,
        since: when(&args.since, "--since")?,
        until: when(&args.until, "--until")?,
        before: None,
        id_prefix: None,
        limit: if args.limit == 0 {
            usize::MAX
        } else {
            args.limit
        },
        exclude_modes: if args.all {
            Vec::new()
        } else {
            vec![flowrun_app::testing::MODE.to_string()]
        },
        top_level: !args.all,
    };
    let rows = store.history(&filter)?;
    // Not silently the newest 20 of many: say how many more there are.
    let more = if rows.len() == filter.limit {
        store
            .history_count(&filter)?
            .saturating_sub(rows.len() as u64)
    } else {
        0
    };
    let note_more = || {
        if more > 0 {
            flowrun_app::say!(
                "… and {more} more execution{} (-n {} or -n 0 lists all)",
                if more == 1 { "" } else { "s" },
                rows.len() as u64 + more
            );
        }
    };
    if args.json {
        let list: Vec<Value> = if args.all {
            rows.iter().map(flowrun_app::views::summary_json).collect()
        } else {
            rows.iter()
                .map(|e| super::inspect_subs::summary_with_children(&store, e, None))
                .collect::<Result<_, _>>()?
        };
        out!("{}", json_pretty(&list));
        note_more();
        return Ok(0);
    }
    if rows.is_empty() {
        let filtered = args.workflow.is_some()
            || args.status.is_some()
            || args.since.is_some()
            || args.until.is_some();
        if filtered {
            flowrun_app::say!("no executions match these filters");
            // A workflow id that none has: most likely a typo of one that has some.
            if let Some(w) = &args.workflow {
                let known = store.workflow_ids(1000)?;
                if !known.is_empty() && !known.contains(w) {
                    let hint = clean_line(&flowrun_codegen::did_you_mean(
                        w,
                        known.iter().map(String::as_str),
                    ))
                    .into_owned();
                    let some: Vec<&str> = known.iter().take(10).map(String::as_str).collect();
                    flowrun_app::say!(
                        "no execution is of a workflow '{}'{hint} (workflows: {}{})",
                        clean_line(w),
                        clean_line(&some.join(", ")),
                        if known.len() > 10 { ", …" } else { "" }
                    );
                }
            }
        } else {
            flowrun_app::say!("no executions yet — start one with: flowrun run WORKFLOW_FILE");
        }
        if !args.all {
            flowrun_app::say!("(executions of `flowrun test` are listed with --all)");
        }
        return Ok(0);
    }
    let wid = rows
        .iter()
        .map(|e| clean_line(&e.workflow_id).chars().count())
        .max()
        .unwrap_or(8)
        .max(8);
    let metered = rows
        .iter()
        .any(|e| e.usage.input_tokens.is_some() || e.usage.cost_usd.is_some());
    let llm_head = if metered {
        format!("  {:>13}  {:>10}", "TOKENS IN/OUT", "COST")
    } else {
        String::new()
    };
    // With --all, flowrun test's executions (mode test-suite) and children are rows among the
    // rest: their mode (and a child's relation) tells them apart.
    let kind = |e: &Execution| match (&e.relation, args.all) {
        (_, false) => String::new(),
        (Some(r), true) if *r == flowrun_events::Relation::Sub => format!("  {:<10}", "sub"),
        (_, true) => format!("  {:<10}", clean_line(&e.mode)),
    };
    // Why the failed ones failed, in a word: the error's type and node (`show` has the rest).
    // Last, after the time, so that a long one does not push the columns apart. A paused one
    // did not fail (its "error" says where it paused, before that node ran).
    let failed = |e: &Execution| {
        e.error
            .as_ref()
            .filter(|_| e.status != ExecStatus::Paused)
            .map(|err| clean_line(&format!("{}{}", err.kind, in_node(err))).into_owned())
    };
    // Each row's start and error, made once: the start's width lines the errors up.
    let ends: Vec<(String, Option<String>)> =
        rows.iter().map(|e| (started(e, now), failed(e))).collect();
    let any_failed = ends.iter().any(|(_, f)| f.is_some());
    let started_width = if any_failed {
        ends.iter()
            .map(|(s, _)| s.chars().count())
            .max()
            .unwrap_or(0)
    } else {
        0
    };
    out!(
        "{:<16}  {:<wid$}{}  {:<11}  {:>9}{llm_head}  {}",
        "ID",
        "WORKFLOW",
        if args.all {
            format!("  {:<10}", "MODE")
        } else {
            String::new()
        },
        "STATUS",
        "DURATION",
        if any_failed {
            format!("{:<started_width$}  ERROR", "STARTED")
        } else {
            "STARTED".into()
        }
    );
    for (e, (start, failure)) in rows.iter().zip(&ends) {
        let llm = if metered {
            format!("  {:>13}  {:>10}", tokens(e), cost(e))
        } else {
            String::new()
        };
        let tail = match failure {
            Some(f) => format!("{start:<started_width$}  {f}"),
            None => start.clone(),
        };
        out!(
            "{:<16}  {:<wid$}{}  {:<11}  {:>9}{llm}  {}",
            e.id,
            clean_line(&e.workflow_id),
            kind(e),
            e.status.as_str(),
            e.duration_ms
                .map(duration)
                .or_else(|| running_for(e.status, e.started_at, now))
                .unwrap_or_else(|| "-".into()),
            tail.trim_end(),
        );
        if !args.all {
            super::inspect_subs::print_history_children(&store, &e.id, 1)?;
        }
    }
    note_more();
    Ok(0)
}

fn tokens(e: &Execution) -> String {
    match (e.usage.input_tokens, e.usage.output_tokens) {
        (None, None) => "-".into(),
        (i, o) => format!("{}/{}", i.unwrap_or(0), o.unwrap_or(0)),
    }
}

fn cost(e: &Execution) -> String {
    match e.usage.cost_usd {
        Some(c) => format!("${c:.6}"),
        None if e.usage.input_tokens.is_some() => "unknown".into(),
        None => "-".into(),
    }
}

fn pretty(v: &Value, indent: &str) -> String {
    let text = match v {
        v if flowrun_events::truncated::is_marker(v) => {
            let bytes = flowrun_events::truncated::original_bytes(v).unwrap_or(0);
            let preview = v["preview"].as_str().unwrap_or("");
            format!("{preview}… [truncated: {bytes} bytes in all; stored fields are capped]")
        }
        _ => {
            let compact = v.to_string();
            if compact.chars().count() <= 100 {
                compact
            } else {
                serde_json::to_string_pretty(v).expect("json")
            }
        }
    };
    clean(&text)
        .lines()
        .collect::<Vec<_>>()
        .join(&format!("\n{indent}"))
}

/// `type "Name"` of each node, from the definition the execution ran.
fn node_labels(definition: Option<&Value>) -> std::collections::HashMap<String, String> {
    let mut out = std::collections::HashMap::new();
    for n in definition
        .and_then(|d| d.get("nodes"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let (Some(id), Some(ty)) = (
            n.get("id").and_then(Value::as_str),
            n.get("type").and_then(Value::as_str),
        ) else {
            continue;
        };
        let label = match n.get("name").and_then(Value::as_str) {
            Some(name) => format!("{ty} {}", Value::String(name.to_string())),
            None => ty.to_string(),
        };
        out.insert(id.to_string(), label);
    }
    out
}

pub(super) fn mark(status: &str) -> &'static str {
    match status {
        "success" => "✓",
        "pinned" | "reused" | "mocked" => "●",
        "skipped" => "○",
        "running" => "…",
        "cancelled" => "■",
        _ => "✗",
    }
}

/// When `e` started: `2026-12-04 13:12:16 (6 min ago)`.
fn started(e: &Execution, now: i64) -> String {
    format!(
        "{} ({})",
        timefmt::utc(e.started_at),
        timefmt::ago(e.started_at, now)
    )
}

/// How long a running execution has run so far, ending `…` (not its duration yet).
fn running_for(status: ExecStatus, started_at: i64, now: i64) -> Option<String> {
    (status == ExecStatus::Running)
        .then(|| format!("{}…", duration((now - started_at).max(0) as f64)))
}

/// A node's lines; `items`, `ended`: see [`print_parts`].
fn print_node(
    n: &NodeRow,
    label: Option<&String>,
    parts: &[&NodeRow],
    items: Option<u64>,
    ended: bool,
    earlier: &[&Value],
) {
    let mut head = format!(
        "{} {}  {}",
        mark(n.status.as_str()),
        clean_line(&n.node_id),
        n.status
    );
    if n.attempt > 1 {
        head.push_str(&format!("  attempt {}", n.attempt));
    }
    if let Some(d) = n.duration_ms {
        head.push_str(&format!("  {}", duration(d)));
    } else if let (NodeStatus::Running, Some(at)) = (n.status, n.started_at) {
        head.push_str(&format!(
            "  for {}",
            duration((now_ms() - at).max(0) as f64)
        ));
    }
    if let Some(l) = label {
        head.push_str(&format!("  · {}", clean_line(l)));
    }
    if let Some(from) = &n.from_execution {
        head.push_str(&format!("  (from execution {from})"));
    }
    out!("{head}");
    // The attempts before the last, which the row does not keep: why a retried node failed
    // the first times (a timeout, then a 429) is often what one is looking for.
    for a in earlier {
        let error = a["error"]
            .as_object()
            .map(|e| {
                let text = |k: &str| e.get(k).and_then(Value::as_str).unwrap_or("");
                format!("  {}: {}", text("type"), text("message"))
            })
            .unwrap_or_default();
        out!(
            "    attempt {}: {}{}{}",
            a["attempt"],
            a["status"].as_str().unwrap_or("?"),
            a["duration_ms"]
                .as_f64()
                .map(|d| format!("  {}", duration(d)))
                .unwrap_or_default(),
            clean_line(&error)
        );
    }
    if let Some(r) = &n.reason {
        let what = if n.status == NodeStatus::Skipped {
            "skipped"
        } else {
            "reason"
        };
        out!("    {what}: {}", clean_line(r));
    }
    if let Some(i) = &n.input {
        out!("    input:  {}", pretty(i, "            "));
    }
    if let Some(o) = &n.output {
        out!("    output: {}", pretty(o, "            "));
    }
    if let Some(e) = &n.error {
        out!(
            "    error:  {}: {}",
            e.kind,
            clean(&e.message).replace('\n', "\n            ")
        );
        // A node whose items or iterations failed has their tracebacks under them.
        if !parts.iter().any(|p| part_failed(p)) {
            for l in traceback(e).into_iter().flat_map(str::lines) {
                out!("      {}", clean_line(l));
            }
        }
    }
    print_parts(parts, items, ended);
}

pub fn show(id: &str, json: bool, db: Option<&Path>) -> Result<i32, Exit> {
    let store = open_store(db)?;
    let id = store.resolve_id(id)?;
    if json {
        out!(
            "{}",
            json_pretty(&flowrun_app::views::record_json(&store, &id)?)
        );
        return Ok(0);
    }
    let e = store.execution(&id)?;
    let (nodes, parts): (Vec<NodeRow>, Vec<NodeRow>) = store
        .nodes(&id)?
        .into_iter()
        .partition(|n| n.part.is_none());
    let parts_of =
        |node: &str| -> Vec<&NodeRow> { parts.iter().filter(|p| p.node_id == node).collect() };
    let name = if e.workflow_name == e.workflow_id {
        clean_line(&e.workflow_id).into_owned()
    } else {
        format!(
            "{} ({})",
            clean_line(&e.workflow_name),
            clean_line(&e.workflow_id)
        )
    };
    out!("execution {}  {}", e.id, e.status);
    out!("workflow   {name}");
    out!(
        "started    {} UTC{}",
        timefmt::utc(e.started_at),
        e.duration_ms
            .map(|d| format!(", took {}", duration(d)))
            .or_else(|| running_for(e.status, e.started_at, now_ms())
                .map(|d| format!(", running for {d}")))
            .unwrap_or_default()
    );
    if let Some(f) = &e.source_file {
        out!("file       {}", clean_line(f));
    }
    if let Some(d) = &e.cwd {
        out!("cwd        {}", clean_line(d));
    }
    if let (Some(p), Some(r)) = (&e.parent_id, &e.relation) {
        out!("{r:<10} of {p}");
        super::inspect_subs::print_called_by(&store, &e)?;
    }
    super::inspect_subs::print_later_runs(&store, &id)?;
    out!("trigger    {}", pretty(&e.trigger, "           "));
    if let Some(o) = &e.output {
        out!("output     {}", pretty(o, "           "));
    }
    if let Some(err) = &e.error {
        out!(
            "error      {}{}: {}",
            err.kind,
            in_node(err),
            clean(&err.message).replace('\n', "\n           ")
        );
        // A node's traceback is printed with the node; one no node carries (the error of a
        // node that never started: a code node that does not compile) is printed here.
        if carried_by_no_row(err, &nodes) {
            for l in traceback(err).into_iter().flat_map(str::lines) {
                out!("             {}", clean_line(l));
            }
        }
    }
    if let Some(x) = &e.exit {
        out!("process    {}", clean_line(x));
    }
    if e.usage.input_tokens.is_some() || e.usage.cost_usd.is_some() {
        out!("llm        {} tokens in/out, cost {}", tokens(&e), cost(&e));
    }
    if e.log_bytes_cut > 0 {
        out!(
            "logs       {} bytes kept, {} bytes cut (--max-log-bytes)",
            e.log_bytes,
            e.log_bytes_cut
        );
    }
    out!();
    // Every node of the plan, in order: the ones with a row, and the ones that never ran (after
    // a failure that stopped the run, a timeout or a stop).
    let planned: Vec<String> = store
        .events(&id, 0, Some("execution_start"))?
        .first()
        .and_then(|ev| serde_json::from_value(ev.data.get("nodes")?.clone()).ok())
        .unwrap_or_default();
    if nodes.is_empty() && planned.is_empty() {
        out!("(no node has started)");
    }
    let labels = node_labels(store.snapshot(&e.snapshot_hash)?.as_ref());
    let items = store.item_counts(&id)?;
    let items_of = |node: &str| items.iter().find(|(n, _)| n == node).map(|(_, k)| *k);
    let earlier = flowrun_app::views::earlier_attempts(&store, &id)?;
    let earlier_of = |n: &NodeRow| {
        flowrun_app::views::before(earlier.get(&(n.node_id.clone(), None)), n.attempt.into())
    };
    for p in &planned {
        match nodes.iter().find(|n| &n.node_id == p) {
            Some(n) => print_node(
                n,
                labels.get(p),
                &parts_of(p),
                items_of(p),
                e.status.is_final(),
                &earlier_of(n),
            ),
            None => out!(
                "· {}  {}",
                clean_line(p),
                if e.status.is_final() {
                    "not run"
                } else {
                    "waiting"
                }
            ),
        }
    }
    for n in nodes.iter().filter(|n| !planned.contains(&n.node_id)) {
        print_node(
            n,
            labels.get(&n.node_id),
            &parts_of(&n.node_id),
            items_of(&n.node_id),
            e.status.is_final(),
            &earlier_of(n),
        );
    }
    super::inspect_subs::print_show_children(&store, &id)?;
    Ok(0)
}

/// " in node 'ID'" for an error that names its node, else nothing.
pub(super) fn in_node(e: &ErrorInfo) -> String {
    e.node
        .as_deref()
        .map(|n| format!(" in node '{}'", clean_line(n)))
        .unwrap_or_default()
}

/// An error's traceback, when it says more than the error line above it: a command's or an
/// HTTP request's is only `Type: message` again.
pub(super) fn traceback(e: &ErrorInfo) -> Option<&str> {
    let tb = e.traceback.as_deref()?.trim_end();
    let only_the_line = tb
        .strip_prefix(e.kind.as_str())
        .and_then(|r| r.strip_prefix(": "))
        == Some(e.message.trim_end());
    (!tb.trim().is_empty() && !only_the_line).then_some(tb)
}

/// The execution's error is not one of `rows`' own: it names no node, or one without a row (a
/// code node that does not compile fails the execution before any node starts).
pub(super) fn carried_by_no_row(e: &ErrorInfo, rows: &[NodeRow]) -> bool {
    !e.node
        .as_deref()
        .is_some_and(|n| rows.iter().any(|r| r.node_id == n))
}
