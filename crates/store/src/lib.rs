//! The store: executions, node executions, events and definition snapshots in SQLite.
//!
//! One connection per process, WAL mode, `synchronous=NORMAL`, a busy timeout, and write
//! transactions that take the write lock up front (`BEGIN IMMEDIATE`), so several flowrun
//! processes can record at once without "database is locked". This module knows SQL, not
//! processes: it stores what it is given.

mod schema;

use crate::events::{ErrorInfo, ExecStatus, NodeStatus};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("database {path}: could not bring the schema up to date: {message}")]
    Migrate { path: PathBuf, message: String },
    #[error(transparent)]
    Sql(#[from] rusqlite::Error),
    #[error("no execution matches '{0}'")]
    NotFound(String),
    #[error("'{prefix}' matches several executions: {}{}", .candidates.join(", "), if *.more { ", …" } else { "" })]
    Ambiguous {
        prefix: String,
        candidates: Vec<String>,
        more: bool,
    },
}

pub type Result<T> = std::result::Result<T, StoreError>;

pub struct Store {
    conn: Connection,
    path: PathBuf,
    /// Longest stored input/output/error/log text; longer ones are truncated with a marker.
    pub max_field_bytes: usize,
}

/// Default cap on any stored input, output or log field.
pub const DEFAULT_MAX_FIELD_BYTES: usize = 1 << 20;

/// A value as JSON text, replaced by a truncation marker when longer than `max` bytes: the
/// marker says how many bytes the full value had and keeps a preview.
pub fn json_text(v: &Value, max: usize) -> String {
    let text = v.to_string();
    if text.len() <= max {
        return text;
    }
    let mut cut = (max / 2).min(4096);
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    serde_json::json!({
        "$flowrun_truncated": true,
        "bytes": text.len(),
        "preview": &text[..cut],
    })
    .to_string()
}

/// A new execution, as written at its start.
#[derive(Debug, Clone)]
pub struct NewExecution<'a> {
    pub id: &'a str,
    pub workflow_id: &'a str,
    pub workflow_name: &'a str,
    pub snapshot_hash: &'a str,
    pub definition: &'a Value,
    pub source_file: Option<&'a str>,
    pub mode: &'a str,
    pub status: ExecStatus,
    pub trigger: &'a Value,
    pub started_at: i64,
    pub parent_id: Option<&'a str>,
    pub relation: Option<&'a str>,
    pub runner_pid: i32,
    pub runner_start_time: Option<u64>,
}

/// An execution as stored.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Execution {
    pub id: String,
    pub workflow_id: String,
    pub workflow_name: String,
    pub status: ExecStatus,
    pub mode: String,
    pub started_at: i64,
    pub finished_at: Option<i64>,
    pub duration_ms: Option<f64>,
    pub trigger: Value,
    pub output: Option<Value>,
    pub error: Option<ErrorInfo>,
    pub exit: Option<String>,
    pub snapshot_hash: String,
    pub source_file: Option<String>,
    pub parent_id: Option<String>,
    pub relation: Option<String>,
    pub log_bytes: i64,
    pub log_bytes_cut: i64,
    #[serde(flatten)]
    pub usage: Usage,
    #[serde(skip)]
    pub process: Option<ProcessRow>,
    #[serde(skip)]
    pub runner: Option<(i32, Option<u64>)>,
    #[serde(skip)]
    pub stop_requested_at: Option<i64>,
}

/// The process group recorded for a running execution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcessRow {
    pub pid: i32,
    pub pgid: i32,
    pub start_time: Option<u64>,
}

/// One node of one execution, as stored.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct NodeRow {
    pub node_id: String,
    pub position: i64,
    pub status: NodeStatus,
    pub attempt: u32,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    pub duration_ms: Option<f64>,
    pub input: Option<Value>,
    pub output: Option<Value>,
    pub error: Option<ErrorInfo>,
    pub from_execution: Option<String>,
}

/// A stored event: its sequence number and JSON (`{"event": ..., ...}`).
#[derive(Debug, Clone, PartialEq)]
pub struct StoredEvent {
    pub seq: u64,
    pub kind: String,
    pub node_id: Option<String>,
    pub ts: i64,
    pub data: Value,
}

/// Which executions `history` lists.
#[derive(Debug, Clone, Default)]
pub struct HistoryFilter {
    pub workflow: Option<String>,
    pub status: Option<ExecStatus>,
    pub since: Option<i64>,
    pub until: Option<i64>,
    /// Cursor: only executions that sort after this `(started_at, id)`.
    pub before: Option<(i64, String)>,
    pub limit: usize,
}

/// Final state of an execution.
#[derive(Debug, Clone)]
pub struct Finish<'a> {
    pub status: ExecStatus,
    pub output: Option<&'a Value>,
    pub error: Option<&'a ErrorInfo>,
    pub finished_at: i64,
    pub duration_ms: f64,
    pub exit: Option<&'a str>,
    pub log_bytes: u64,
    pub log_bytes_cut: u64,
    pub usage: Usage,
}

/// Row counts removed by [`Store::delete`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Deleted {
    pub executions: usize,
    pub nodes: usize,
    pub events: usize,
    pub snapshots: usize,
}

/// Tokens and cost of the LLM calls of an execution.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct Usage {
    pub input_tokens: Option<i64>,
    pub output_tokens: Option<i64>,
    pub cost_usd: Option<f64>,
}

/// A write the recorder batches.
#[derive(Debug, Clone)]
pub enum Write {
    Event {
        seq: u64,
        kind: String,
        node_id: Option<String>,
        ts: i64,
        data: String,
    },
    NodeStarted {
        node_id: String,
        position: i64,
        attempt: u32,
        started_at: i64,
    },
    NodeFinished(Box<NodeRow>),
}

impl Store {
    /// Opens (creating if needed) the database and brings its schema up to date.
    pub fn open(path: &Path) -> Result<Store> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            let _ = std::fs::create_dir_all(dir);
        }
        let open_err = |source| StoreError::Open {
            path: path.to_path_buf(),
            source,
        };
        let mut conn = Connection::open(path).map_err(open_err)?;
        conn.busy_timeout(Duration::from_secs(30))
            .map_err(open_err)?;
        // synchronous first, so nothing below commits with a full sync; auto_vacuum only on a
        // new database (it takes effect only before the first table, and setting it on an
        // existing one rewrites page 1: a WAL and a directory fsync on every open).
        conn.execute_batch("PRAGMA synchronous=NORMAL; PRAGMA foreign_keys=ON;")
            .map_err(open_err)?;
        let pages: i64 = conn
            .query_row("PRAGMA page_count", [], |r| r.get(0))
            .map_err(open_err)?;
        if pages == 0 {
            conn.execute_batch("PRAGMA auto_vacuum=INCREMENTAL;")
                .map_err(open_err)?;
        }
        conn.execute_batch("PRAGMA journal_mode=WAL;")
            .map_err(open_err)?;
        // Leave the WAL in place when this connection closes: checkpointing on close costs two
        // fsyncs per short-lived CLI process; SQLite checkpoints by itself as the WAL grows.
        let _ = conn.set_db_config(
            rusqlite::config::DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE,
            true,
        );
        // Several processes may open a new database at once; a migration that loses the race
        // sees the schema already done when it tries again.
        let migrations = schema::migrations();
        let mut last = None;
        for attempt in 0..20 {
            match migrations.to_latest(&mut conn) {
                Ok(()) => {
                    last = None;
                    break;
                }
                Err(e) => {
                    last = Some(e.to_string());
                    std::thread::sleep(Duration::from_millis(20 + attempt * 10));
                }
            }
        }
        if let Some(message) = last {
            return Err(StoreError::Migrate {
                path: path.to_path_buf(),
                message,
            });
        }
        Ok(Store {
            conn,
            path: path.to_path_buf(),
            max_field_bytes: DEFAULT_MAX_FIELD_BYTES,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn json_text(&self, v: &Value) -> String {
        json_text(v, self.max_field_bytes)
    }

    fn opt_json(&self, v: Option<&Value>) -> Option<String> {
        v.map(|v| self.json_text(v))
    }

    fn error_text(&self, e: Option<&ErrorInfo>) -> Option<String> {
        e.map(|e| self.json_text(&serde_json::to_value(e).expect("an error serializes")))
    }

    /// Writes the definition snapshot (once per hash) and the execution row.
    pub fn insert_execution(&mut self, e: &NewExecution<'_>) -> Result<()> {
        let definition = e.definition.to_string();
        let trigger = self.json_text(e.trigger);
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute(
            "INSERT OR IGNORE INTO snapshots (hash, workflow_id, definition, created_at) VALUES (?1, ?2, ?3, ?4)",
            params![e.snapshot_hash, e.workflow_id, definition, e.started_at],
        )?;
        tx.execute(
            "INSERT INTO executions (id, workflow_id, workflow_name, snapshot_hash, source_file, mode, status, trigger,
                                     started_at, parent_id, relation, runner_pid, runner_start_time)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
            params![
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
                e.relation,
                e.runner_pid,
                e.runner_start_time.map(|t| t as i64),
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
        self.conn.execute(
            "UPDATE executions SET status = 'running', runner_pid = ?2, runner_start_time = ?3 WHERE id = ?1",
            params![id, runner_pid, runner_start_time.map(|t| t as i64)],
        )?;
        Ok(())
    }

    pub fn set_process(&mut self, id: &str, p: ProcessRow) -> Result<()> {
        self.conn.execute(
            "UPDATE executions SET pid = ?2, pgid = ?3, process_start_time = ?4 WHERE id = ?1",
            params![id, p.pid, p.pgid, p.start_time.map(|t| t as i64)],
        )?;
        Ok(())
    }

    /// Applies batched writes of one execution in one transaction.
    pub fn apply(&mut self, execution_id: &str, writes: &[Write]) -> Result<()> {
        if writes.is_empty() {
            return Ok(());
        }
        let max = self.max_field_bytes;
        let this = |v: &Value| json_text(v, max);
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        {
            let mut ev = tx.prepare_cached(
                "INSERT OR REPLACE INTO events (execution_id, seq, kind, node_id, ts, data) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?;
            let mut started = tx.prepare_cached(
                "INSERT INTO node_executions (execution_id, node_id, position, status, attempt, started_at)
                 VALUES (?1, ?2, ?3, 'running', ?4, ?5)
                 ON CONFLICT (execution_id, node_id) DO UPDATE SET
                    status = 'running', attempt = excluded.attempt, started_at = excluded.started_at,
                    finished_at = NULL, duration_ms = NULL, error = NULL",
            )?;
            let mut finished = tx.prepare_cached(
                "INSERT INTO node_executions (execution_id, node_id, position, status, attempt, started_at, finished_at,
                                              duration_ms, input, output, error, from_execution)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)
                 ON CONFLICT (execution_id, node_id) DO UPDATE SET
                    status = excluded.status, attempt = excluded.attempt,
                    started_at = COALESCE(excluded.started_at, node_executions.started_at),
                    finished_at = excluded.finished_at, duration_ms = excluded.duration_ms,
                    input = COALESCE(excluded.input, node_executions.input),
                    output = excluded.output, error = excluded.error, from_execution = excluded.from_execution",
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
                        position,
                        attempt,
                        started_at,
                    } => {
                        started.execute(params![
                            execution_id,
                            node_id,
                            position,
                            attempt,
                            started_at
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
                            n.error.as_ref().map(|e| this(
                                &serde_json::to_value(e).expect("an error serializes")
                            )),
                            n.from_execution,
                        ])?;
                    }
                }
            }
            if let Some(seq) = last_seq {
                tx.execute(
                    "UPDATE executions SET event_seq = MAX(event_seq, ?2) WHERE id = ?1",
                    params![execution_id, seq as i64],
                )?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    pub fn finish_execution(&mut self, id: &str, f: &Finish<'_>) -> Result<()> {
        let output = self.opt_json(f.output);
        let error = self.error_text(f.error);
        self.conn.execute(
            "UPDATE executions SET status = ?2, output = ?3, error = ?4, finished_at = ?5, duration_ms = ?6, exit = ?7,
                                   log_bytes = ?8, log_bytes_cut = ?9, input_tokens = ?10, output_tokens = ?11, cost_usd = ?12
             WHERE id = ?1",
            params![
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
        Ok(())
    }

    /// Resolves a full id or a unique prefix of one.
    pub fn resolve_id(&self, prefix: &str) -> Result<String> {
        let exact: Option<String> = self
            .conn
            .query_row("SELECT id FROM executions WHERE id = ?1", [prefix], |r| {
                r.get(0)
            })
            .optional()?;
        if let Some(id) = exact {
            return Ok(id);
        }
        if prefix.is_empty()
            || !prefix
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(StoreError::NotFound(prefix.to_string()));
        }
        let mut stmt = self
            .conn
            .prepare("SELECT id FROM executions WHERE id >= ?1 AND id < ?2 ORDER BY id LIMIT 6")?;
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

    const EXEC_COLS: &'static str = "id, workflow_id, workflow_name, status, mode, started_at, finished_at, duration_ms,
        trigger, output, error, exit, snapshot_hash, source_file, parent_id, relation, log_bytes, log_bytes_cut,
        pid, pgid, process_start_time, runner_pid, runner_start_time, stop_requested_at,
        input_tokens, output_tokens, cost_usd";

    fn execution_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Execution> {
        let json = |i: usize| -> rusqlite::Result<Option<Value>> {
            Ok(r.get::<_, Option<String>>(i)?
                .and_then(|s| serde_json::from_str(&s).ok()))
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
            relation: r.get(15)?,
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
            usage: Usage {
                input_tokens: r.get(24)?,
                output_tokens: r.get(25)?,
                cost_usd: r.get(26)?,
            },
        })
    }

    pub fn execution(&self, id: &str) -> Result<Execution> {
        self.conn
            .query_row(
                &format!("SELECT {} FROM executions WHERE id = ?1", Self::EXEC_COLS),
                [id],
                Self::execution_from_row,
            )
            .optional()?
            .ok_or_else(|| StoreError::NotFound(id.to_string()))
    }

    pub fn nodes(&self, execution_id: &str) -> Result<Vec<NodeRow>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT node_id, position, status, attempt, started_at, finished_at, duration_ms, input, output, error, from_execution
             FROM node_executions WHERE execution_id = ?1 ORDER BY position",
        )?;
        let rows = stmt.query_map([execution_id], |r| {
            let json = |i: usize| -> rusqlite::Result<Option<Value>> {
                Ok(r.get::<_, Option<String>>(i)?
                    .and_then(|s| serde_json::from_str(&s).ok()))
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
            })
        })?;
        Ok(rows.collect::<std::result::Result<_, _>>()?)
    }

    /// Executions, newest first.
    pub fn history(&self, f: &HistoryFilter) -> Result<Vec<Execution>> {
        let mut sql = format!("SELECT {} FROM executions WHERE 1=1", Self::EXEC_COLS);
        let mut args: Vec<Box<dyn rusqlite::ToSql>> = Vec::new();
        if let Some(w) = &f.workflow {
            args.push(Box::new(w.clone()));
            sql.push_str(&format!(" AND workflow_id = ?{}", args.len()));
        }
        if let Some(s) = f.status {
            args.push(Box::new(s.as_str()));
            sql.push_str(&format!(" AND status = ?{}", args.len()));
        }
        if let Some(t) = f.since {
            args.push(Box::new(t));
            sql.push_str(&format!(" AND started_at >= ?{}", args.len()));
        }
        if let Some(t) = f.until {
            args.push(Box::new(t));
            sql.push_str(&format!(" AND started_at < ?{}", args.len()));
        }
        if let Some((t, id)) = &f.before {
            args.push(Box::new(*t));
            let a = args.len();
            args.push(Box::new(id.clone()));
            let b = args.len();
            sql.push_str(&format!(
                " AND (started_at < ?{a} OR (started_at = ?{a} AND id < ?{b}))"
            ));
        }
        args.push(Box::new(f.limit as i64));
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
        let rows = stmt.query_map(params![execution_id, after_seq as i64, kind], |r| {
            let data: String = r.get(4)?;
            Ok(StoredEvent {
                seq: r.get::<_, i64>(0)? as u64,
                kind: r.get(1)?,
                node_id: r.get(2)?,
                ts: r.get(3)?,
                data: serde_json::from_str(&data).unwrap_or(Value::Null),
            })
        })?;
        Ok(rows.collect::<std::result::Result<_, _>>()?)
    }

    /// Stored events after `after_seq` as `(seq, kind, JSON text)`, the text exactly as it was
    /// recorded (no float goes through a parse and back), for the HTTP server's event stream.
    pub fn events_text(
        &self,
        execution_id: &str,
        after_seq: u64,
    ) -> Result<Vec<(u64, String, String)>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT seq, kind, data FROM events WHERE execution_id = ?1 AND seq > ?2 ORDER BY seq",
        )?;
        let rows = stmt.query_map(params![execution_id, after_seq as i64], |r| {
            Ok((r.get::<_, i64>(0)? as u64, r.get(1)?, r.get(2)?))
        })?;
        Ok(rows.collect::<std::result::Result<_, _>>()?)
    }

    /// The definition an execution ran.
    pub fn snapshot(&self, hash: &str) -> Result<Option<Value>> {
        let text: Option<String> = self
            .conn
            .query_row(
                "SELECT definition FROM snapshots WHERE hash = ?1",
                [hash],
                |r| r.get(0),
            )
            .optional()?;
        Ok(text.and_then(|t| serde_json::from_str(&t).ok()))
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

    /// Ends an execution whose runner is gone: it and its running nodes become `status`.
    /// Only touches it if it is still unfinished. Returns whether it changed.
    pub fn mark_abandoned(
        &mut self,
        id: &str,
        status: ExecStatus,
        error: &ErrorInfo,
        node_status: NodeStatus,
        at: i64,
    ) -> Result<bool> {
        let error_info = error;
        let error = self.error_text(Some(error));
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let n = tx.execute(
            "UPDATE executions SET status = ?2, error = ?3, finished_at = ?4,
                    duration_ms = CAST(?4 - started_at AS REAL)
             WHERE id = ?1 AND status IN ('running', 'queued')",
            params![id, status.as_str(), error, at],
        )?;
        if n > 0 {
            tx.execute(
                "UPDATE node_executions SET status = ?2, finished_at = ?3 WHERE execution_id = ?1 AND status = 'running'",
                params![id, node_status.as_str(), at],
            )?;
            // Every event stream ends with `execution_end`, also one whose runner died: viewers
            // (SSE, `logs --follow`) wait for it.
            let ended: bool = tx.query_row(
                "SELECT EXISTS (SELECT 1 FROM events WHERE execution_id = ?1 AND kind = 'execution_end')",
                [id],
                |r| r.get(0),
            )?;
            if !ended {
                let (seq, duration_ms): (i64, f64) = tx.query_row(
                    "SELECT event_seq + 1, duration_ms FROM executions WHERE id = ?1",
                    [id],
                    |r| Ok((r.get(0)?, r.get::<_, Option<f64>>(1)?.unwrap_or(0.0))),
                )?;
                let event = crate::events::Event::ExecutionEnd {
                    status,
                    duration_ms,
                    error: Some(error_info.clone()),
                    ts: at,
                };
                tx.execute(
                    "INSERT INTO events (execution_id, seq, kind, node_id, ts, data) VALUES (?1, ?2, 'execution_end', NULL, ?3, ?4)",
                    params![id, seq, at, serde_json::to_string(&event).expect("events serialize")],
                )?;
                tx.execute(
                    "UPDATE executions SET event_seq = ?2 WHERE id = ?1",
                    params![id, seq],
                )?;
            }
        }
        tx.commit()?;
        Ok(n > 0)
    }

    pub fn request_stop(&mut self, id: &str, at: i64) -> Result<bool> {
        let n = self.conn.execute(
            "UPDATE executions SET stop_requested_at = COALESCE(stop_requested_at, ?2) WHERE id = ?1 AND status IN ('running', 'queued')",
            params![id, at],
        )?;
        Ok(n > 0)
    }

    pub fn stop_requested(&self, id: &str) -> Result<bool> {
        let v: Option<Option<i64>> = self
            .conn
            .query_row(
                "SELECT stop_requested_at FROM executions WHERE id = ?1",
                [id],
                |r| r.get(0),
            )
            .optional()?;
        Ok(matches!(v, Some(Some(_))))
    }

    /// Deletes executions (with their nodes and events) and the snapshots no execution uses any
    /// more, then gives the space back. Running and queued executions are never deleted.
    pub fn delete(&mut self, ids: &[String]) -> Result<Deleted> {
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

    /// Raw access for tests and maintenance commands.
    pub fn connection(&self) -> &Connection {
        &self.conn
    }
}
