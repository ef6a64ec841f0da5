//! Links between executions in `history` and `show`: child executions of sub-workflows listed
//! under their parent, and the re-runs and resumes of an execution.

use super::progress::duration;
use super::text::clean_line;
use flowrun_events::Relation;
use flowrun_store::{Execution, Store, StoreError, SubLink};
use serde_json::Value;

/// `node 'x'` or `node 'x' item 2`.
fn called_by(link: &SubLink) -> String {
    match link.item {
        Some(i) => format!("node '{}' item {i}", clean_line(&link.parent_node)),
        None => format!("node '{}'", clean_line(&link.parent_node)),
    }
}

/// `history`: the children of `parent` (and theirs), one indented line each.
pub(crate) fn print_history_children(
    store: &Store,
    parent: &str,
    depth: usize,
) -> Result<(), StoreError> {
    for (child, link) in store.children(parent)? {
        out!(
            "{}└ {}  {}  {}  {}  {}",
            "  ".repeat(depth),
            child.id,
            clean_line(&child.workflow_id),
            child.status.as_str(),
            child
                .duration_ms
                .map(duration)
                .unwrap_or_else(|| "-".into()),
            called_by(&link),
        );
        print_history_children(store, &child.id, depth + 1)?;
    }
    Ok(())
}

/// `history --json`: the summaries of the children of `parent`, each with its own `children`
/// when it has any.
pub(crate) fn children_json(store: &Store, parent: &str) -> Result<Value, StoreError> {
    let mut out = Vec::new();
    for (child, link) in store.children(parent)? {
        out.push(summary_with_children(store, &child, Some(&link))?);
    }
    Ok(Value::Array(out))
}

/// An execution's summary with its `parent_node`/`parent_item` and nested `children`.
pub(crate) fn summary_with_children(
    store: &Store,
    e: &Execution,
    link: Option<&SubLink>,
) -> Result<Value, StoreError> {
    let mut v = flowrun_app::views::summary_json(e);
    if let Some(link) = link {
        v["parent_node"] = link.parent_node.clone().into();
        v["parent_item"] = link.item.into();
    }
    // Only when there are some: the summary of an execution without children stays as it was.
    let children = children_json(store, &e.id)?;
    if children.as_array().is_some_and(|c| !c.is_empty()) {
        v["children"] = children;
    }
    Ok(v)
}

/// `show`: which node of the parent started this execution, under the `sub of PARENT` line.
pub(crate) fn print_called_by(store: &Store, e: &Execution) -> Result<(), StoreError> {
    if let Some(link) = store.sub_link(&e.id)? {
        out!("called by  {}", called_by(&link));
    }
    Ok(())
}

/// `show`: the executions that re-ran or resumed this one, one line per kind (`resumed as X
/// (success), Y (error)`). A paused execution stays `paused` once resumed: this says it was.
pub(crate) fn print_later_runs(store: &Store, id: &str) -> Result<(), StoreError> {
    let later = store.later_runs(id)?;
    for (relation, label) in [(Relation::Resume, "resumed"), (Relation::Rerun, "re-run")] {
        let runs: Vec<String> = later
            .iter()
            .filter(|e| e.relation == Some(relation))
            .map(|e| format!("{} ({})", e.id, e.status.as_str()))
            .collect();
        if !runs.is_empty() {
            out!("{label:<10} as {}", runs.join(", "));
        }
    }
    Ok(())
}

/// `show`: the child executions, nested, after the nodes.
pub(crate) fn print_show_children(store: &Store, id: &str) -> Result<(), StoreError> {
    let children = store.children(id)?;
    if children.is_empty() {
        return Ok(());
    }
    out!();
    out!("sub-workflow executions (flowrun show ID for one)");
    print_tree(store, children, 1)
}

fn print_tree(
    store: &Store,
    children: Vec<(Execution, SubLink)>,
    depth: usize,
) -> Result<(), StoreError> {
    for (child, link) in children {
        let mut line = format!(
            "{}↳ {}  {}  {}",
            "  ".repeat(depth),
            child.id,
            clean_line(&child.workflow_id),
            child.status.as_str()
        );
        if let Some(d) = child.duration_ms {
            line.push_str(&format!("  {}", duration(d)));
        }
        line.push_str(&format!("  ({})", called_by(&link)));
        if let Some(err) = &child.error {
            // One line of a listing: the message's first, the rest in the child's own `show`.
            let mut lines = err.message.lines();
            let first = lines.next().unwrap_or_default();
            let more = if lines.next().is_some() { " …" } else { "" };
            line.push_str(&format!("  {}: {}{more}", err.kind, clean_line(first)));
        }
        out!("{line}");
        let grandchildren = store.children(&child.id)?;
        print_tree(store, grandchildren, depth + 1)?;
    }
    Ok(())
}
