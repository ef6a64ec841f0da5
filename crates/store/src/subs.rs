//! Links between executions: which node (and `for_each` item) of a parent execution started a
//! child execution (`relation` `sub`), a parent's children, and the re-runs and resumes of an
//! execution (`relation` `rerun`, `resume`).

use crate::types::{Execution, SubLink};
use crate::{Result, Store};
use rusqlite::OptionalExtension;

impl Store {
    /// The parent node (and item) that started this execution, if a `workflow` node did.
    pub fn sub_link(&self, id: &str) -> Result<Option<SubLink>> {
        let row: Option<(Option<String>, Option<i64>)> = self
            .conn
            .prepare_cached("SELECT parent_node, parent_item FROM executions WHERE id = ?1")?
            .query_row([id], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        Ok(row.and_then(|(node, item)| {
            node.map(|parent_node| SubLink {
                parent_node,
                item: item.map(|i| i as u64),
            })
        }))
    }

    /// The child executions a parent's `workflow` nodes started, in the order they started,
    /// each with its link.
    pub fn children(&self, parent_id: &str) -> Result<Vec<(Execution, SubLink)>> {
        let ids: Vec<(String, Option<String>, Option<i64>)> = {
            let mut stmt = self.conn.prepare_cached(
                "SELECT id, parent_node, parent_item FROM executions
                 WHERE parent_id = ?1 AND relation = 'sub' ORDER BY started_at, parent_item, id",
            )?;
            stmt.query_map([parent_id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                .collect::<std::result::Result<_, _>>()?
        };
        let mut out = Vec::with_capacity(ids.len());
        for (id, node, item) in ids {
            let link = SubLink {
                parent_node: node.unwrap_or_default(),
                item: item.map(|i| i as u64),
            };
            out.push((self.execution(&id)?, link));
        }
        Ok(out)
    }

    /// The executions that re-ran or resumed this one (`flowrun rerun`, `flowrun resume`), in
    /// the order they started: the way on from an execution, as `parent_id` is the way back.
    pub fn later_runs(&self, id: &str) -> Result<Vec<Execution>> {
        let sql = format!(
            "SELECT {} FROM executions
             WHERE parent_id = ?1 AND relation IN ('rerun', 'resume') ORDER BY started_at, id",
            Self::EXEC_COLS
        );
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let rows = stmt.query_map([id], Self::execution_from_row)?;
        Ok(rows.collect::<std::result::Result<_, _>>()?)
    }
}
