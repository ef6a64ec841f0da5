//! The items of a `for_each` node and the iterations of a `repeat` node, as `show` prints them
//! under their node.

use super::inspect::{mark, traceback};
use super::progress::duration;
use super::text::clean_line;
use flowrun_events::NodeStatus;
use flowrun_store::NodeRow;

/// The most item or iteration lines `show` prints under a node (`show --json` has them all).
const SHOWN_PARTS: usize = 50;

/// `item 3`, `iteration 2`: which part of its node a row is; None for the node's own row.
pub(super) fn part_name(part: Option<flowrun_events::Part>) -> Option<String> {
    match part? {
        flowrun_events::Part::Item(i) => Some(format!("item {i}")),
        flowrun_events::Part::Iteration(k) => Some(format!("iteration {k}")),
    }
}

/// Failed items or iterations whose input and traceback `show` prints under their line: which
/// value failed, and where, is what one reads `show` for; past these, `show --json` has them.
const DETAILED_FAILURES: usize = 5;

/// An item or iteration that failed by itself (not one cancelled because another did).
pub(super) fn part_failed(p: &NodeRow) -> bool {
    matches!(p.status, NodeStatus::Error | NodeStatus::Timeout)
}

/// One line per item or iteration of a node, under it; a failed one's input and traceback
/// under that. `items`: how many items the node has (its start said), for the line naming
/// those that have no row: not started when the execution `ended` (a timeout, a stop, a killed
/// runner: a pause and `fail_fast` record them `skipped`), else waiting.
pub(super) fn print_parts(parts: &[&NodeRow], items: Option<u64>, ended: bool) {
    let mut detailed = 0;
    for p in parts.iter().take(SHOWN_PARTS) {
        let Some(what) = part_name(p.part) else {
            continue;
        };
        let mut line = format!("    {} {what}  {}", mark(p.status.as_str()), p.status);
        if p.attempt > 1 {
            line.push_str(&format!("  attempt {}", p.attempt));
        }
        if let Some(d) = p.duration_ms {
            line.push_str(&format!("  {}", duration(d)));
        }
        if let Some(o) = p.output.as_ref().filter(|_| p.status.has_output()) {
            line.push_str(&format!(
                "  → {}",
                clean_line(&flowrun_events::preview(o, 80))
            ));
        }
        if let Some(e) = &p.error {
            line.push_str(&format!("  {}: {}", e.kind, clean_line(&e.message)));
        }
        if let Some(r) = &p.reason {
            line.push_str(&format!("  ({})", clean_line(r)));
        }
        out!("{line}");
        if part_failed(p) && detailed < DETAILED_FAILURES {
            detailed += 1;
            if let Some(i) = &p.input {
                out!(
                    "        input: {}",
                    clean_line(&flowrun_events::preview(i, 200))
                );
            }
            for l in p
                .error
                .as_ref()
                .and_then(traceback)
                .into_iter()
                .flat_map(str::lines)
            {
                out!("          {}", clean_line(l));
            }
        }
    }
    let failed = parts.iter().filter(|p| part_failed(p)).count();
    if failed > detailed {
        out!(
            "    (the input and traceback of {} more failed: show --json)",
            failed - detailed
        );
    }
    if parts.len() > SHOWN_PARTS {
        out!(
            "    … {} more (show --json lists them all)",
            parts.len() - SHOWN_PARTS
        );
    }
    if let Some(n) = items {
        let missing = without_rows(parts, n);
        if !missing.is_empty() {
            let count: u64 = missing.iter().map(|(a, b)| b - a + 1).sum();
            let what = if ended { "did not start" } else { "waiting" };
            out!(
                "    · {count} of {n} item{} {what}: {}",
                if n == 1 { "" } else { "s" },
                ranges(&missing)
            );
        }
    }
}

/// The item indices below `n` that no row of `parts` is, as inclusive ranges: the gaps between
/// the rows' indices, sorted (exact for any count, in memory as the rows are).
fn without_rows(parts: &[&NodeRow], n: u64) -> Vec<(u64, u64)> {
    let mut have: Vec<u64> = parts
        .iter()
        .filter_map(|p| match p.part {
            Some(flowrun_events::Part::Item(i)) if u64::from(i) < n => Some(u64::from(i)),
            _ => None,
        })
        .collect();
    have.sort_unstable();
    have.dedup();
    let mut out = Vec::new();
    let mut next = 0u64;
    for i in have.into_iter().chain(std::iter::once(n)) {
        if i > next {
            out.push((next, i - 1));
        }
        next = i + 1;
    }
    out
}

/// `3–5, 8, 10–12`, the first ten ranges, then how many more.
fn ranges(r: &[(u64, u64)]) -> String {
    const SHOWN: usize = 10;
    let mut parts: Vec<String> = r
        .iter()
        .take(SHOWN)
        .map(|&(a, b)| {
            if a == b {
                a.to_string()
            } else {
                format!("{a}–{b}")
            }
        })
        .collect();
    if r.len() > SHOWN {
        parts.push(format!("… ({} more ranges)", r.len() - SHOWN));
    }
    parts.join(", ")
}

#[cfg(test)]
mod tests {
    use super::{ranges, without_rows};
    use flowrun_events::{NodeStatus, Part};
    use flowrun_store::NodeRow;

    fn item(i: u32) -> NodeRow {
        NodeRow {
            node_id: "each".into(),
            part: Some(Part::Item(i)),
            position: 0,
            status: NodeStatus::Success,
            attempt: 1,
            started_at: None,
            finished_at: None,
            duration_ms: None,
            input: None,
            output: None,
            error: None,
            from_execution: None,
            reason: None,
        }
    }

    #[test]
    fn items_without_rows_are_the_gaps_whatever_the_count() {
        let rows: Vec<NodeRow> = [9, 0, 5, 1, 5, 12].into_iter().map(item).collect();
        let refs: Vec<&NodeRow> = rows.iter().collect();
        assert_eq!(without_rows(&refs, 10), [(2, 4), (6, 8)]);
        assert_eq!(
            without_rows(&refs[..2], 1_100_000),
            [(1, 8), (10, 1_099_999)]
        );
        assert_eq!(without_rows(&[], 3), [(0, 2)]);
        assert!(without_rows(&refs, 2).is_empty());
    }

    #[test]
    fn ranges_are_joined_and_cut_after_ten() {
        assert_eq!(ranges(&[(3, 5), (8, 8), (10, 12)]), "3–5, 8, 10–12");
        let many: Vec<(u64, u64)> = (0..12).map(|i| (i * 2, i * 2)).collect();
        assert_eq!(
            ranges(&many),
            "0, 2, 4, 6, 8, 10, 12, 14, 16, 18, … (2 more ranges)"
        );
    }
}
