//! Reading executions back: by id or prefix, their nodes and events, history, snapshots.

use crate::types::*;
use crate::{Result, Store, StoreError};
use flowrun_events::{ExecStatus, NodeStatus, Relation};
use rusqlite::{OptionalExtension, params};
use serde_json::Value;

impl Store {
    /// Resolves a full id or a unique prefix of one.
    pub fn resolve_id(&self, prefix: &str) -> Result<String> {
        let exact: Option<String> = self
            .conn
            .prepare_cached("SELECT id FROM executions WHERE id = ?1")?
            .query_row([prefix], |r| r.get(0))
            .optional()?;
        if let Some(id) = exact {
            return Ok(id);
        }
        // Ids are lowercase hex: `A52D` (copied from somewhere that shouts) is `a52d`, as the
        // list's `id` filter takes it.
        let lower = prefix.to_ascii_lowercase();
        let prefix = lower.as_str();
        if prefix.is_empty()
            || !prefix
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(StoreError::NotFound(prefix.to_string()));
        }
        let mut stmt = self.conn.prepare_cached(
            "SELECT id FROM executions WHERE id >= ?1 AND id < ?2 ORDER BY id LIMIT 6",
        )?;
        let upper = format!("{prefix}\u{10FFFF}");
        let ids: Vec<String> = stmt
            .query_map(params![prefix, upper], |r| r.get(0))?
            .collect::<std::result::Result<_, _>>()?;
        match ids.len() {
            0 => Err(StoreError::NotFound(prefix.to_string())),
            1 => Ok(ids.into_iter().next().expect("one id")),
            n => Err(StoreError::Ambiguous {
                prefix: prefix.to_string(),
                more: n > 5,
                candidates: ids.into_iter().take(5).collect(),
            }),
        }
    }

    pub(crate) const EXEC_COLS: &'static str = "id, workflow_id, workflow_name, status, mode, started_at, finished_at, duration_ms,
        trigger, output, error, exit, snapshot_hash, source_file, parent_id, relation, log_bytes, log_bytes_cut,
        pid, pgid, process_start_time, runner_pid, runner_start_time, stop_requested_at,
        input_tokens, output_tokens, cost_usd, pause_requested_at, cwd, start";

    pub(crate) fn execution_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Execution> {
        let json = |i: usize| -> rusqlite::Result<Option<Value>> {
            Ok(r.get::<_, Option<String>>(i)?.and_then(|s| stored_json(&s)))
        };
        let status: String = r.get(3)?;
        let pid: Option<i32> = r.get(18)?;
        let pgid: Option<i32> = r.get(19)?;
        let runner_pid: Option<i32> = r.get(21)?;
        Ok(Execution {
            id: r.get(0)?,
            workflow_id: r.get(1)?,
            workflow_name: r.get(2)?,
            status: ExecStatus::parse(&status).unwrap_or(ExecStatus::Error),
            mode: r.get(4)?,
            started_at: r.get(5)?,
            finished_at: r.get(6)?,
            duration_ms: r.get(7)?,
            trigger: json(8)?.unwrap_or(Value::Null),
            output: json(9)?,
            error: json(10)?.and_then(|v| serde_json::from_value(v).ok()),
            exit: r.get(11)?,
            snapshot_hash: r.get(12)?,
            source_file: r.get(13)?,
            parent_id: r.get(14)?,
            relation: r
                .get::<_, Option<String>>(15)?
                .and_then(|s| Relation::parse(&s)),
            log_bytes: r.get(16)?,
            log_bytes_cut: r.get(17)?,
            process: match (pid, pgid) {
                (Some(pid), Some(pgid)) => Some(ProcessRow {
                    pid,
                    pgid,
                    start_time: r.get::<_, Option<i64>>(20)?.map(|t| t as u64),
                }),
                _ => None,
            },
            runner: runner_pid
                .map(|p| {
                    Ok::<_, rusqlite::Error>((p, r.get::<_, Option<i64>>(22)?.map(|t| t as u64)))
                })
                .transpose()?,
            stop_requested_at: r.get(23)?,
            pause_requested_at: r.get(27)?,
            cwd: r.get(28)?,
            usage: Usage {
                input_tokens: r.get(24)?,
                output_tokens: r.get(25)?,
                cost_usd: r.get(26)?,
            },
            start: r.get(29)?,
        })
    }

    pub fn execution(&self, id: &str) -> Result<Execution> {
        self.conn
            .prepare_cached(&format!(
                "SELECT {} FROM executions WHERE id = ?1",
                Self::EXEC_COLS
            ))?
            .query_row([id], Self::execution_from_row)
            .optional()?
            .ok_or_else(|| StoreError::NotFound(id.to_string()))
    }

    pub fn nodes(&self, execution_id: &str) -> Result<Vec<NodeRow>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT node_id, position, status, attempt, started_at, finished_at, duration_ms, input, output, error, from_execution,
                    part, part_kind, reason
             FROM node_executions WHERE execution_id = ?1 ORDER BY position, part",
        )?;
        let rows = stmt.query_map([execution_id], |r| {
            let json = |i: usize| -> rusqlite::Result<Option<Value>> {
                Ok(r.get::<_, Option<String>>(i)?.and_then(|s| stored_json(&s)))
            };
            let status: String = r.get(2)?;
            Ok(NodeRow {
                node_id: r.get(0)?,
                position: r.get(1)?,
                status: NodeStatus::parse(&status).unwrap_or(NodeStatus::Error),
                attempt: r.get(3)?,
                started_at: r.get(4)?,
                finished_at: r.get(5)?,
                duration_ms: r.get(6)?,
                input: json(7)?,
                output: json(8)?,
                error: json(9)?.and_then(|v| serde_json::from_value(v).ok()),
                from_execution: r.get(10)?,
                part: crate::write::part_of(r.get(11)?, r.get::<_, Option<String>>(12)?.as_deref()),
                reason: r.get(13)?,
            })
        })?;
        Ok(rows.collect::<std::result::Result<_, _>>()?)
    }

    /// The `WHERE` clause of a history filter (cursor and limit aside) and its arguments.
    fn history_where(f: &HistoryFilter) -> (String, Vec<Box<dyn rusqlite::ToSql>>) {
        let mut sql = String::from(" WHERE 1=1");
        let mut args: Vec<Box<dyn rusqlite::ToSql>> = Vec::new();
        if let Some(w) = &f.workflow {
            args.push(Box::new(w.clone()));
            sql.push_str(&format!(" AND workflow_id = ?{}", args.len()));
        }
        if let Some(p) = &f.id_prefix {
            args.push(Box::new(p.clone()));
            let n = args.len();
            sql.push_str(&format!(" AND substr(id, 1, length(?{n})) = ?{n}"));
        }
        if let Some(s) = f.status {
            args.push(Box::new(s.as_str()));
            sql.push_str(&format!(" AND status = ?{}", args.len()));
        }
        if f.top_level {
            sql.push_str(" AND (relation IS NULL OR relation != 'sub')");
        }
        for m in &f.exclude_modes {
            args.push(Box::new(m.clone()));
            sql.push_str(&format!(" AND mode != ?{}", args.len()));
        }
        if let Some(t) = f.since {
            args.push(Box::new(t));
            sql.push_str(&format!(" AND started_at >= ?{}", args.len()));
        }
        if let Some(t) = f.until {
            args.push(Box::new(t));
            sql.push_str(&format!(" AND started_at < ?{}", args.len()));
        }
        (sql, args)
    }

    /// Executions, newest first.
    pub fn history(&self, f: &HistoryFilter) -> Result<Vec<Execution>> {
        let (filter, mut args) = Self::history_where(f);
        let mut sql = format!("SELECT {} FROM executions{filter}", Self::EXEC_COLS);
        if let Some((t, id)) = &f.before {
            args.push(Box::new(*t));
            let a = args.len();
            args.push(Box::new(id.clone()));
            let b = args.len();
            sql.push_str(&format!(
                " AND (started_at < ?{a} OR (started_at = ?{a} AND id < ?{b}))"
            ));
        }
        // SQLite reads a negative limit as none.
        args.push(Box::new(i64::try_from(f.limit).unwrap_or(-1)));
        sql.push_str(&format!(
            " ORDER BY started_at DESC, id DESC LIMIT ?{}",
            args.len()
        ));
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let rows = stmt.query_map(
            rusqlite::params_from_iter(args.iter().map(|b| b.as_ref())),
            Self::execution_from_row,
        )?;
        Ok(rows.collect::<std::result::Result<_, _>>()?)
    }

    /// Id, status and start of the executions a history filter matches (its cursor aside),
    /// newest first: what a poller compares with what it saw, before it reads a whole row.
    pub fn statuses(&self, f: &HistoryFilter) -> Result<Vec<(String, ExecStatus, i64)>> {
        let (filter, mut args) = Self::history_where(f);
        args.push(Box::new(i64::try_from(f.limit).unwrap_or(-1)));
        let sql = format!(
            "SELECT id, status, started_at FROM executions{filter} ORDER BY started_at DESC, id DESC LIMIT ?{}",
            args.len()
        );
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let rows = stmt.query_map(
            rusqlite::params_from_iter(args.iter().map(|b| b.as_ref())),
            |r| {
                let status: String = r.get(1)?;
                Ok((
                    r.get(0)?,
                    ExecStatus::parse(&status).unwrap_or(ExecStatus::Error),
                    r.get(2)?,
                ))
            },
        )?;
        Ok(rows.collect::<std::result::Result<_, _>>()?)
    }

    /// The ids of the workflows that have executions, sorted (at most `limit`).
    pub fn workflow_ids(&self, limit: usize) -> Result<Vec<String>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT DISTINCT workflow_id FROM executions ORDER BY workflow_id LIMIT ?1",
        )?;
        let rows = stmt.query_map([i64::try_from(limit).unwrap_or(-1)], |r| r.get(0))?;
        Ok(rows.collect::<std::result::Result<_, _>>()?)
    }

    /// How many executions match a history filter (its cursor and limit aside).
    pub fn history_count(&self, f: &HistoryFilter) -> Result<u64> {
        let (filter, args) = Self::history_where(f);
        let n: i64 = self
            .conn
            .prepare_cached(&format!("SELECT COUNT(*) FROM executions{filter}"))?
            .query_row(
                rusqlite::params_from_iter(args.iter().map(|b| b.as_ref())),
                |r| r.get(0),
            )?;
        Ok(n as u64)
    }

    /// The `node_end` events of attempts that were to be retried (`retrying: true`), in order:
    /// picked in SQL, so a record read of a large execution does not parse every node's end.
    pub fn retried_attempts(&self, execution_id: &str) -> Result<Vec<StoredEvent>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT seq, kind, node_id, ts, data FROM events
             WHERE execution_id = ?1 AND kind = 'node_end'
               AND json_extract(data, '$.retrying') = 1 ORDER BY seq",
        )?;
        let rows = stmt.query_map(params![execution_id], event_row)?;
        Ok(rows.collect::<std::result::Result<_, _>>()?)
    }

    /// How many items each `for_each` node of the execution has, as its last start said (the
    /// `items` of its own `node_start`), by node: what its stored items are of. Picked in SQL,
    /// as [`Store::retried_attempts`] is.
    pub fn item_counts(&self, execution_id: &str) -> Result<Vec<(String, u64)>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT node_id, json_extract(data, '$.items') FROM events
             WHERE execution_id = ?1 AND kind = 'node_start'
               AND json_extract(data, '$.items') IS NOT NULL ORDER BY seq",
        )?;
        let rows = stmt.query_map(params![execution_id], |r| {
            Ok((r.get::<_, Option<String>>(0)?, r.get::<_, i64>(1)?))
        })?;
        let mut counts: Vec<(String, u64)> = Vec::new();
        for row in rows {
            let (Some(node), n) = row? else { continue };
            let n = u64::try_from(n).unwrap_or(0);
            match counts.iter_mut().find(|(id, _)| *id == node) {
                Some(c) => c.1 = n,
                None => counts.push((node, n)),
            }
        }
        Ok(counts)
    }

    /// Stored events after `after_seq`, in order.
    pub fn events(
        &self,
        execution_id: &str,
        after_seq: u64,
        kind: Option<&str>,
    ) -> Result<Vec<StoredEvent>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT seq, kind, node_id, ts, data FROM events
             WHERE execution_id = ?1 AND seq > ?2 AND (?3 IS NULL OR kind = ?3) ORDER BY seq",
        )?;
        let rows = stmt.query_map(params![execution_id, seq_key(after_seq), kind], event_row)?;
        Ok(rows.collect::<std::result::Result<_, _>>()?)
    }

    /// Stored events after `after_seq` as `(seq, kind, JSON text)`, the text exactly as it was
    /// recorded (no float goes through a parse and back), for the HTTP server's event stream:
    /// the first ones only, as many as fit in `max_bytes` of text (one at least, however long),
    /// so that a reader holds one page at a time whatever an execution recorded.
    pub fn events_text(
        &self,
        execution_id: &str,
        after_seq: u64,
        max_bytes: usize,
    ) -> Result<Vec<(u64, String, String)>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT seq, kind, data FROM events WHERE execution_id = ?1 AND seq > ?2 ORDER BY seq",
        )?;
        let mut rows = stmt.query(params![execution_id, seq_key(after_seq)])?;
        let (mut page, mut bytes) = (Vec::new(), 0usize);
        while bytes < max_bytes {
            let Some(r) = rows.next()? else { break };
            let data: String = r.get(2)?;
            bytes += data.len();
            page.push((r.get::<_, i64>(0)? as u64, r.get(1)?, data));
        }
        Ok(page)
    }

    /// The `log` events after `after_seq` — of `node` only when given, and of its item or
    /// iteration when given — in order: the first ones only, as many as fit in `max_bytes` of
    /// recorded text (one at least, however long), and whether more follow. A page at a time,
    /// whatever a node printed (`flowrun logs`, `GET /api/executions/{id}/logs`).
    pub fn log_page(
        &self,
        execution_id: &str,
        after_seq: u64,
        node: Option<&str>,
        part: (Option<u32>, Option<u32>),
        max_bytes: usize,
    ) -> Result<(Vec<StoredEvent>, bool)> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT seq, kind, node_id, ts, data FROM events
             WHERE execution_id = ?1 AND seq > ?2 AND kind = 'log'
               AND (?3 IS NULL OR node_id = ?3)
               AND (?4 IS NULL OR json_extract(data, '$.item') = ?4)
               AND (?5 IS NULL OR json_extract(data, '$.iteration') = ?5)
             ORDER BY seq",
        )?;
        let mut rows = stmt.query(params![
            execution_id,
            seq_key(after_seq),
            node,
            part.0,
            part.1
        ])?;
        let (mut page, mut bytes) = (Vec::new(), 0usize);
        while let Some(r) = rows.next()? {
            if bytes >= max_bytes {
                return Ok((page, true));
            }
            let data: String = r.get(4)?;
            bytes += data.len();
            page.push(StoredEvent {
                seq: r.get::<_, i64>(0)? as u64,
                kind: r.get(1)?,
                node_id: r.get(2)?,
                ts: r.get(3)?,
                data: stored_json(&data).unwrap_or(Value::Null),
            });
        }
        Ok((page, false))
    }

    /// Whether any event after `after_seq` is stored.
    pub fn has_events_after(&self, execution_id: &str, after_seq: u64) -> Result<bool> {
        Ok(self
            .conn
            .prepare_cached("SELECT 1 FROM events WHERE execution_id = ?1 AND seq > ?2 LIMIT 1")?
            .query_row(params![execution_id, seq_key(after_seq)], |_| Ok(()))
            .optional()?
            .is_some())
    }

    /// The definition an execution ran.
    pub fn snapshot(&self, hash: &str) -> Result<Option<Value>> {
        let text: Option<String> = self
            .conn
            .prepare_cached("SELECT definition FROM snapshots WHERE hash = ?1")?
            .query_row([hash], |r| r.get(0))
            .optional()?;
        Ok(text.and_then(|t| stored_json(&t)))
    }

    /// Executions still marked `running` (or `queued`), for recovery after a runner died.
    pub fn unfinished(&self) -> Result<Vec<Execution>> {
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {} FROM executions WHERE status IN ('running', 'queued')",
            Self::EXEC_COLS
        ))?;
        let rows = stmt.query_map([], Self::execution_from_row)?;
        Ok(rows.collect::<std::result::Result<_, _>>()?)
    }

    /// What another process asked of a running execution: a stop wins over a pause.
    pub fn requested(&self, id: &str) -> Result<Option<Request>> {
        let v: Option<(Option<i64>, Option<i64>)> = self
            .conn
            .prepare_cached(
                "SELECT stop_requested_at, pause_requested_at FROM executions WHERE id = ?1",
            )?
            .query_row([id], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        Ok(match v {
            Some((Some(_), _)) => Some(Request::Stop),
            Some((None, Some(_))) => Some(Request::Pause),
            _ => None,
        })
    }
}

/// Stored JSON, as deep as flowrun stores it (serde_json alone stops at 128 levels).
fn stored_json(text: &str) -> Option<Value> {
    flowrun_events::json::parse_bounded(text.as_bytes(), flowrun_events::json::MAX_DEPTH).ok()
}

/// A seq as SQLite stores it: past `i64::MAX` (which no execution reaches) it stays the
/// largest, rather than wrapping to a negative number that every seq is after.
fn seq_key(seq: u64) -> i64 {
    i64::try_from(seq).unwrap_or(i64::MAX)
}

/// A row of `SELECT seq, kind, node_id, ts, data FROM events` as a [`StoredEvent`].
fn event_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<StoredEvent> {
    let data: String = r.get(4)?;
    Ok(StoredEvent {
        seq: r.get::<_, i64>(0)? as u64,
        kind: r.get(1)?,
        node_id: r.get(2)?,
        ts: r.get(3)?,
        data: stored_json(&data).unwrap_or(Value::Null),
    })
}
