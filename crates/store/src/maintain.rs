//! Deleting executions and giving the space back.

use crate::types::*;
use crate::{Result, Store};
use flowrun_events::ExecStatus;
use rusqlite::{OptionalExtension, TransactionBehavior, params};

impl Store {
    /// Deletes executions (with their nodes and events) and the snapshots no execution uses any
    /// more, then gives the space back. Running and queued executions are never deleted.
    pub fn delete(&mut self, ids: &[String]) -> Result<Deleted> {
        // A sub-workflow's execution goes with its parent: it is part of it; and stays while its
        // parent (at any depth) runs, whose record it is part of.
        let mut mine = Vec::with_capacity(ids.len());
        for id in ids {
            if self.unfinished_ancestor(id)?.is_none() {
                mine.push(id.clone());
            }
        }
        let with_children = self.with_sub_executions(&mine)?;
        let ids = with_children.as_slice();
        let mut out = Deleted::default();
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        for chunk in ids.chunks(500) {
            let marks = vec!["?"; chunk.len()].join(",");
            let args = rusqlite::params_from_iter(chunk.iter());
            out.nodes += tx.execute(&format!("DELETE FROM node_executions WHERE execution_id IN ({marks}) AND execution_id IN (SELECT id FROM executions WHERE status NOT IN ('running', 'queued'))"), args)?;
            let args = rusqlite::params_from_iter(chunk.iter());
            out.events += tx.execute(&format!("DELETE FROM events WHERE execution_id IN ({marks}) AND execution_id IN (SELECT id FROM executions WHERE status NOT IN ('running', 'queued'))"), args)?;
            let args = rusqlite::params_from_iter(chunk.iter());
            out.executions += tx.execute(&format!("DELETE FROM executions WHERE id IN ({marks}) AND status NOT IN ('running', 'queued')"), args)?;
        }
        out.snapshots = tx.execute("DELETE FROM snapshots WHERE hash NOT IN (SELECT DISTINCT snapshot_hash FROM executions)", [])?;
        tx.commit()?;
        if out.executions > 0 {
            self.reclaim()?;
        }
        Ok(out)
    }

    /// The nearest execution above `id` (it a sub-workflow's, at any depth) that is queued or
    /// running, with its status: `id` is part of its record, not to be deleted yet.
    pub fn unfinished_ancestor(&self, id: &str) -> Result<Option<(String, ExecStatus)>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT p.id, p.status FROM executions c JOIN executions p ON p.id = c.parent_id \
             WHERE c.id = ?1 AND c.relation = 'sub'",
        )?;
        let mut at = id.to_string();
        // Depth is bounded (sub-workflows nest at most a few levels); the bound guards a cycle.
        for _ in 0..64 {
            let up: Option<(String, String)> = stmt
                .query_row([&at], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()?;
            let Some((parent, status)) = up else {
                return Ok(None);
            };
            if let Some(status) = ExecStatus::parse(&status).filter(|s| !s.is_final()) {
                return Ok(Some((parent, status)));
            }
            at = parent;
        }
        Ok(None)
    }

    /// `ids` and, at any depth, the child executions of their `workflow` nodes.
    fn with_sub_executions(&self, ids: &[String]) -> Result<Vec<String>> {
        let mut all: Vec<String> = ids.to_vec();
        let mut seen: std::collections::HashSet<String> = ids.iter().cloned().collect();
        let mut frontier: Vec<String> = ids.to_vec();
        let mut stmt = self.conn.prepare_cached(
            "SELECT id FROM executions WHERE parent_id = ?1 AND relation = 'sub'",
        )?;
        while let Some(parent) = frontier.pop() {
            let kids: Vec<String> = stmt
                .query_map([&parent], |r| r.get(0))?
                .collect::<std::result::Result<_, _>>()?;
            for k in kids {
                if seen.insert(k.clone()) {
                    all.push(k.clone());
                    frontier.push(k);
                }
            }
        }
        Ok(all)
    }

    /// Gives freed pages back to the file system: incremental vacuum where enabled (new
    /// databases), a full VACUUM otherwise; then truncates the WAL.
    fn reclaim(&mut self) -> Result<()> {
        let mode: i64 = self
            .conn
            .query_row("PRAGMA auto_vacuum", [], |r| r.get(0))?;
        if mode == 2 {
            // The pragma frees one page per step (it yields a row for each), so it must be
            // stepped to the end; `execute_batch` steps once and would free a single page.
            let mut stmt = self.conn.prepare("PRAGMA incremental_vacuum")?;
            let mut rows = stmt.query([])?;
            while rows.next()?.is_some() {}
        } else {
            self.conn.execute_batch("VACUUM;")?;
        }
        self.conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
        Ok(())
    }

    /// Ids of finished executions to prune: older than `before` (ms) and/or beyond the newest
    /// `keep` (per the filter), optionally of one workflow.
    pub fn prune_candidates(
        &self,
        before: Option<i64>,
        keep: Option<usize>,
        workflow: Option<&str>,
    ) -> Result<Vec<String>> {
        let mut stmt = self.conn.prepare(
            "SELECT id, started_at FROM executions
             WHERE status NOT IN ('running', 'queued') AND (?1 IS NULL OR workflow_id = ?1)
               AND relation IS NOT 'sub'  -- a sub-workflow's execution goes with its parent
             ORDER BY started_at DESC, id DESC",
        )?;
        let rows: Vec<(String, i64)> = stmt
            .query_map(params![workflow], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<std::result::Result<_, _>>()?;
        Ok(rows
            .into_iter()
            .enumerate()
            .filter(|(i, (_, started))| {
                let old = before.is_some_and(|b| *started < b);
                let beyond = keep.is_some_and(|k| *i >= k);
                match (before.is_some(), keep.is_some()) {
                    (true, true) => old && beyond,
                    (true, false) => old,
                    (false, true) => beyond,
                    (false, false) => false,
                }
            })
            .map(|(_, (id, _))| id)
            .collect())
    }
}
