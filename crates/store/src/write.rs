//! Writing an execution as it happens: its row at start, node rows and events in batches, its
//! end; stop requests; and ending what a dead runner left behind.

use crate::types::*;
use crate::{Result, Store, error_json, json_text};
use flowrun_events::{ErrorInfo, ErrorKind, ExecStatus, NodeStatus, Part, Relation};
use rusqlite::{OptionalExtension, TransactionBehavior, params};
use serde_json::Value;

impl Store {
    /// Writes the definition snapshot (once per hash) and the execution row.
    pub fn insert_execution(&mut self, e: &NewExecution<'_>) -> Result<()> {
        let definition = e.definition.to_string();
        let trigger = self.json_text(e.trigger);
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        // Statements a server runs for every execution are prepared once per connection.
        tx.prepare_cached(
            "INSERT OR IGNORE INTO snapshots (hash, workflow_id, definition, created_at) VALUES (?1, ?2, ?3, ?4)",
        )?
        .execute(params![e.snapshot_hash, e.workflow_id, definition, e.started_at])?;
        tx.prepare_cached(
            "INSERT INTO executions (id, workflow_id, workflow_name, snapshot_hash, source_file, mode, status, trigger,
                                     started_at, parent_id, relation, runner_pid, runner_start_time, cwd,
                                     parent_node, parent_item)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)",
        )?
        .execute(params![
                e.id,
                e.workflow_id,
                e.workflow_name,
                e.snapshot_hash,
                e.source_file,
                e.mode,
                e.status.as_str(),
                trigger,
                e.started_at,
                e.parent_id,
                e.relation.map(Relation::as_str),
                e.runner_pid,
                e.runner_start_time.map(|t| t as i64),
                e.cwd,
                e.sub_link.map(|l| &l.parent_node),
                e.sub_link.and_then(|l| l.item).map(|i| i as i64),
            ],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Marks a queued execution running under this runner.
    pub fn set_running(
        &mut self,
        id: &str,
        runner_pid: i32,
        runner_start_time: Option<u64>,
    ) -> Result<()> {
        self.conn
            .prepare_cached(
                "UPDATE executions SET status = 'running', runner_pid = ?2, runner_start_time = ?3 WHERE id = ?1",
            )?
            .execute(params![id, runner_pid, runner_start_time.map(|t| t as i64)])?;
        Ok(())
    }

    /// Records the execution's process and how its interpreter started: `warm` or `cold`.
    pub fn set_process(&mut self, id: &str, p: ProcessRow, start: &str) -> Result<()> {
        self.conn
            .prepare_cached(
                "UPDATE executions SET pid = ?2, pgid = ?3, process_start_time = ?4, start = ?5
                 WHERE id = ?1",
            )?
            .execute(params![
                id,
                p.pid,
                p.pgid,
                p.start_time.map(|t| t as i64),
                start
            ])?;
        Ok(())
    }

    /// Applies batched writes of one execution in one transaction.
    ///
    /// An ended execution is final: once its status is no longer `running` or `queued` (its
    /// runner finished it, or `flowrun stop` or recovery ended it for a runner that could not),
    /// nothing more is written and this returns false. Events are only ever appended.
    pub fn apply(&mut self, execution_id: &str, writes: &[Write]) -> Result<bool> {
        if writes.is_empty() {
            return Ok(true);
        }
        let max = self.max_field_bytes;
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        if !is_open(&tx, execution_id)? {
            return Ok(false);
        }
        write_in(&tx, max, execution_id, writes)?;
        tx.commit()?;
        Ok(true)
    }

    /// Records how an execution ended, with `last`, the writes its runner made since its last
    /// [`Store::apply`] (its `execution_end` event), in the same transaction: the end of a
    /// short execution is one commit, not two (each writes the execution's row and its index
    /// pages to the log again). Nodes still recorded `running` end `cancelled` (an ended
    /// execution has no running node). False, and nothing written, `last` included, when it had
    /// ended already (see [`Store::apply`]): the first end recorded is the one that stays.
    pub fn finish_execution(&mut self, id: &str, last: &[Write], f: &Finish<'_>) -> Result<bool> {
        let output = self.opt_json(f.output);
        let error = self.error_text(f.error);
        let max = self.max_field_bytes;
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let n = tx.prepare_cached(
            "UPDATE executions SET status = ?2, output = ?3, error = ?4, finished_at = ?5, duration_ms = ?6, exit = ?7,
                                   log_bytes = ?8, log_bytes_cut = ?9, input_tokens = ?10, output_tokens = ?11, cost_usd = ?12
             WHERE id = ?1 AND status IN ('running', 'queued')",
        )?
        .execute(params![
                id,
                f.status.as_str(),
                output,
                error,
                f.finished_at,
                f.duration_ms,
                f.exit,
                f.log_bytes as i64,
                f.log_bytes_cut as i64,
                f.usage.input_tokens,
                f.usage.output_tokens,
                f.usage.cost_usd,
            ],
        )?;
        if n > 0 {
            write_in(&tx, max, id, last)?;
            tx.prepare_cached(
                "UPDATE node_executions SET status = 'cancelled', finished_at = ?2,
                        duration_ms = CAST(?2 - started_at AS REAL)
                 WHERE execution_id = ?1 AND status = 'running'",
            )?
            .execute(params![id, f.finished_at])?;
        }
        tx.commit()?;
        Ok(n > 0)
    }

    /// Ends an execution its runner cannot end: if it is still `running` or `queued`, it
    /// becomes `status` with `error`, its running nodes `node_status`, and the events `events`
    /// makes from what is left open (see `flowrun_app::synthetic`) are appended to its stream.
    /// One transaction; returns false (and writes nothing) when it had ended already.
    pub fn end_abandoned(
        &mut self,
        id: &str,
        status: ExecStatus,
        error: &ErrorInfo,
        node_status: NodeStatus,
        end: EndTime,
        events: impl FnOnce(&Abandoned, &ErrorInfo) -> Vec<flowrun_events::Event>,
    ) -> Result<bool> {
        let at = end.at();
        let timed = matches!(end, EndTime::Now(_));
        let max_bytes = self.max_field_bytes;
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let state = {
            let mut stmt = tx.prepare(
                "SELECT node_id, attempt, started_at, part, part_kind FROM node_executions
                 WHERE execution_id = ?1 AND status = 'running' ORDER BY position, part DESC",
            )?;
            let running = stmt
                .query_map([id], |r| {
                    Ok(RunningNode {
                        node_id: r.get(0)?,
                        attempt: r.get(1)?,
                        started_at: r.get(2)?,
                        part: part_of(r.get(3)?, r.get::<_, Option<String>>(4)?.as_deref()),
                    })
                })?
                .collect::<std::result::Result<Vec<_>, _>>()?;
            // The last end of each node, item or iteration said `retrying`, and nothing of it
            // came after.
            let mut stmt = tx.prepare(
                "SELECT e.node_id, json_extract(e.data, '$.item'), json_extract(e.data, '$.iteration'),
                        json_extract(e.data, '$.attempt'), json_extract(e.data, '$.duration_ms'),
                        json_extract(e.data, '$.ts'), json_extract(e.data, '$.error')
                 FROM events e
                 WHERE e.execution_id = ?1 AND e.kind = 'node_end'
                   AND json_extract(e.data, '$.retrying') = 1
                   AND NOT EXISTS (
                     SELECT 1 FROM events f
                     WHERE f.execution_id = e.execution_id AND f.seq > e.seq
                       AND f.node_id = e.node_id AND f.kind IN ('node_start', 'node_end')
                       AND json_extract(f.data, '$.item') IS json_extract(e.data, '$.item')
                       AND json_extract(f.data, '$.iteration') IS json_extract(e.data, '$.iteration'))
                 ORDER BY e.seq",
            )?;
            let awaiting_retry = stmt
                .query_map([id], |r| {
                    let error: Option<String> = r.get(6)?;
                    Ok(AwaitingRetry {
                        node_id: r.get(0)?,
                        part: Part::from_fields(r.get(1)?, r.get(2)?),
                        attempt: r.get(3)?,
                        duration_ms: r.get::<_, Option<f64>>(4)?.unwrap_or(0.0),
                        ts: r.get::<_, Option<i64>>(5)?.unwrap_or(at),
                        error: error.and_then(|t| serde_json::from_str(&t).ok()),
                    })
                })?
                .collect::<std::result::Result<Vec<_>, _>>()?;
            let ended: bool = tx.query_row(
                "SELECT EXISTS (SELECT 1 FROM events WHERE execution_id = ?1 AND kind = 'execution_end')",
                [id],
                |r| r.get(0),
            )?;
            // From its start until `at`: none for one still queued, which never ran (its
            // `started_at` is when it was queued: the time it waited is no duration of its).
            let duration_ms: Option<f64> = tx
                .query_row(
                    "SELECT CASE WHEN status = 'queued' THEN NULL ELSE CAST(?2 - started_at AS REAL) END
                     FROM executions WHERE id = ?1",
                    params![id, at],
                    |r| r.get(0),
                )
                .optional()?
                .flatten()
                .filter(|_| timed);
            Abandoned {
                running,
                awaiting_retry,
                duration_ms,
                ended,
            }
        };
        // A stop or a dead runner names the node it came in, as the runner names a stopped
        // one (`Cancelled in node 'x'`), when the error does not say; in the execution's error
        // (and `execution_end`) only, not in its nodes' own.
        let stop = error.is(ErrorKind::Cancelled) || error.is(ErrorKind::Interrupted);
        let named = match (&error.node, state.only_node()) {
            (None, Some(node)) if stop => Some(ErrorInfo {
                node: Some(node.to_string()),
                ..error.clone()
            }),
            _ => None,
        };
        let ended_with = named.as_ref().unwrap_or(error);
        let error_text = error_json(ended_with, max_bytes);
        let node_error_text = error_json(error, max_bytes);
        // Its duration as worked out above (none when queued, or when not `timed`).
        let n = tx.execute(
            "UPDATE executions SET status = ?2, error = ?3, finished_at = ?4, duration_ms = ?5
             WHERE id = ?1 AND status IN ('running', 'queued')",
            params![id, status.as_str(), error_text, at, state.duration_ms],
        )?;
        if n > 0 {
            tx.execute(
                "UPDATE node_executions SET status = ?2, finished_at = ?3,
                        duration_ms = CASE WHEN ?5 THEN CAST(?3 - started_at AS REAL) END, error = ?4
                 WHERE execution_id = ?1 AND status = 'running'",
                params![id, node_status.as_str(), at, node_error_text, timed],
            )?;
            let mut seq: i64 = tx.query_row(
                "SELECT event_seq FROM executions WHERE id = ?1",
                [id],
                |r| r.get(0),
            )?;
            for event in events(&state, ended_with) {
                // A retry that will not come: its attempt's row says why.
                if let flowrun_events::Event::NodeEnd {
                    node,
                    reason: Some(reason),
                    item,
                    iteration,
                    status: NodeStatus::Error,
                    ..
                } = &event
                {
                    tx.execute(
                        "UPDATE node_executions SET reason = ?4
                         WHERE execution_id = ?1 AND node_id = ?2 AND part = ?3",
                        params![
                            id,
                            node,
                            part_number(Part::from_fields(*item, *iteration)),
                            reason
                        ],
                    )?;
                }
                seq += 1;
                tx.execute(
                    "INSERT INTO events (execution_id, seq, kind, node_id, ts, data) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    params![
                        id,
                        seq,
                        event.kind(),
                        event.node(),
                        at,
                        serde_json::to_string(&event).expect("events serialize")
                    ],
                )?;
            }
            tx.execute(
                "UPDATE executions SET event_seq = ?2 WHERE id = ?1",
                params![id, seq],
            )?;
        }
        tx.commit()?;
        Ok(n > 0)
    }

    /// Asks a running execution to pause (its runner polls for this as for a stop). False when
    /// it is not running.
    pub fn request_pause(&mut self, id: &str, at: i64) -> Result<bool> {
        let n = self.conn.execute(
            "UPDATE executions SET pause_requested_at = COALESCE(pause_requested_at, ?2) WHERE id = ?1 AND status = 'running'",
            params![id, at],
        )?;
        Ok(n > 0)
    }

    pub fn request_stop(&mut self, id: &str, at: i64) -> Result<bool> {
        let n = self.conn.execute(
            "UPDATE executions SET stop_requested_at = COALESCE(stop_requested_at, ?2) WHERE id = ?1 AND status IN ('running', 'queued')",
            params![id, at],
        )?;
        Ok(n > 0)
    }
}

/// Is the execution still `running` or `queued` (so still written to)?
fn is_open(tx: &rusqlite::Transaction<'_>, id: &str) -> Result<bool> {
    let status: Option<String> = tx
        .prepare_cached("SELECT status FROM executions WHERE id = ?1")?
        .query_row([id], |r| r.get(0))
        .optional()?;
    Ok(matches!(status.as_deref(), Some("running" | "queued")))
}

/// The `part` column: the item index or iteration number, -1 for the node's own row.
pub(crate) fn part_number(part: Option<Part>) -> i64 {
    part.map_or(-1, |p| i64::from(p.number()))
}

/// The part a row is, from its `part` and `part_kind` columns.
pub(crate) fn part_of(number: i64, kind: Option<&str>) -> Option<Part> {
    let n = u32::try_from(number).ok()?;
    match kind? {
        "item" => Some(Part::Item(n)),
        "iteration" => Some(Part::Iteration(n)),
        _ => None,
    }
}

/// Writes `writes` of one execution within `tx` (see [`Store::apply`]); `max`: the store's
/// limit on one stored JSON field.
fn write_in(
    tx: &rusqlite::Transaction<'_>,
    max: usize,
    execution_id: &str,
    writes: &[Write],
) -> Result<()> {
    let this = |v: &Value| json_text(v, max);
    let mut ev = tx.prepare_cached(
        "INSERT INTO events (execution_id, seq, kind, node_id, ts, data) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?;
    let mut started = tx.prepare_cached(
        "INSERT INTO node_executions (execution_id, node_id, position, status, attempt, started_at, part, part_kind)
         VALUES (?1, ?2, ?3, 'running', ?4, ?5, ?6, ?7)
         ON CONFLICT (execution_id, node_id, part) DO UPDATE SET
            status = 'running', attempt = excluded.attempt, started_at = excluded.started_at,
            finished_at = NULL, duration_ms = NULL, error = NULL",
    )?;
    let mut finished = tx.prepare_cached(
        "INSERT INTO node_executions (execution_id, node_id, position, status, attempt, started_at, finished_at,
                                      duration_ms, input, output, error, from_execution, part, part_kind, reason)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)
         ON CONFLICT (execution_id, node_id, part) DO UPDATE SET
            status = excluded.status, attempt = excluded.attempt,
            started_at = COALESCE(excluded.started_at, node_executions.started_at),
            finished_at = excluded.finished_at, duration_ms = excluded.duration_ms,
            input = COALESCE(excluded.input, node_executions.input),
            output = excluded.output, error = excluded.error, from_execution = excluded.from_execution,
            reason = excluded.reason",
    )?;
    let mut input = tx.prepare_cached(
        "UPDATE node_executions SET input = ?4
         WHERE execution_id = ?1 AND node_id = ?2 AND part = ?3 AND status = 'running'",
    )?;
    let mut last_seq = None;
    for w in writes {
        match w {
            Write::Event {
                seq,
                kind,
                node_id,
                ts,
                data,
            } => {
                ev.execute(params![execution_id, *seq as i64, kind, node_id, ts, data])?;
                last_seq = Some(*seq);
            }
            Write::NodeStarted {
                node_id,
                part,
                position,
                attempt,
                started_at,
            } => {
                started.execute(params![
                    execution_id,
                    node_id,
                    position,
                    attempt,
                    started_at,
                    part_number(*part),
                    part.map(Part::kind),
                ])?;
            }
            Write::NodeInput {
                node_id,
                part,
                input: value,
            } => {
                input.execute(params![
                    execution_id,
                    node_id,
                    part_number(*part),
                    this(value)
                ])?;
            }
            Write::NodeFinished(n) => {
                finished.execute(params![
                    execution_id,
                    n.node_id,
                    n.position,
                    n.status.as_str(),
                    n.attempt,
                    n.started_at,
                    n.finished_at,
                    n.duration_ms,
                    n.input.as_ref().map(&this),
                    n.output.as_ref().map(&this),
                    n.error.as_ref().map(|e| error_json(e, max)),
                    n.from_execution,
                    part_number(n.part),
                    n.part.map(Part::kind),
                    n.reason,
                ])?;
            }
        }
    }
    if let Some(seq) = last_seq {
        tx.prepare_cached("UPDATE executions SET event_seq = MAX(event_seq, ?2) WHERE id = ?1")?
            .execute(params![execution_id, seq as i64])?;
    }
    Ok(())
}
