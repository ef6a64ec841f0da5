//! `flowrun run` end to end: the real binary runs real Python, and everything it records is
//! checked in the SQLite file and through `show`, `history` and `logs`.

mod child_output;
mod control;
mod failures;
mod recorded;

use crate::support::*;

pub(super) fn node_ids(rows: &[NodeRow]) -> Vec<&str> {
    rows.iter().map(|n| n.node_id.as_str()).collect()
}

pub(super) fn by_id<'a>(rows: &'a [NodeRow], id: &str) -> &'a NodeRow {
    rows.iter()
        .find(|n| n.node_id == id)
        .unwrap_or_else(|| panic!("no row for node '{id}' in {:?}", node_ids(rows)))
}

pub(super) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
