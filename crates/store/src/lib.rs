//! The store: executions, node executions, events and definition snapshots in SQLite.
//!
//! One connection per process for all it reads and writes (and, once the log has grown, a
//! second on a thread of the store's own that copies it back: `wal.rs`), WAL mode,
//! `synchronous=NORMAL`, a busy timeout, and write
//! transactions that take the write lock up front (`BEGIN IMMEDIATE`), so several flowrun
//! processes can record at once without "database is locked". This module knows SQL, not
//! processes: it stores what it is given.

mod maintain;
mod read;
mod schema;
mod subs;
mod types;
mod wal;
mod write;

pub use types::*;

use flowrun_events::ErrorInfo;
use rusqlite::Connection;
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
    pub(crate) conn: Connection,
    path: PathBuf,
    /// Longest stored input/output/error/log text; longer ones are truncated with a marker.
    pub max_field_bytes: usize,
    /// The thread that copies the log back for [`Store::checkpoint_in_background`], once started.
    background: Option<wal::Background>,
    /// The database file's device and inode as opened: that thread opens it by path, later.
    file: Option<(u64, u64)>,
}

/// Default cap on any stored input, output or log field.
pub const DEFAULT_MAX_FIELD_BYTES: usize = 1 << 20;

/// A value as JSON text, replaced by a truncation marker when longer than `max` bytes: the
/// marker says how many bytes the full value had and keeps a preview.
pub(crate) fn json_text(v: &Value, max: usize) -> String {
    let text = v.to_string();
    if text.len() <= max {
        return text;
    }
    let mut cut = (max / 2).min(4096);
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    flowrun_events::truncated::marker(text.len(), &text[..cut]).to_string()
}

/// An error as JSON text, cut as [`json_text`] cuts.
pub(crate) fn error_json(e: &ErrorInfo, max: usize) -> String {
    json_text(&serde_json::to_value(e).expect("an error serializes"), max)
}

/// How long a writer waits for another connection to let go of the database: 30 s in all.
const BUSY_FOR: Duration = Duration::from_secs(30);

/// Prepared statements a connection keeps (rusqlite keeps 16 by default). An execution's
/// recording and a test case's readback use ~25 distinct ones: with 16, each case evicted what
/// the next needed and prepared ~10 statements again (parsing SQL and reading the schema, ~0.1
/// ms of the runner's CPU a case). Every statement of the store fits.
const STATEMENTS_KEPT: usize = 96;

/// The pause before attempt `attempt` (0 for the first) to use a database another connection
/// holds, or `None` once [`BUSY_FOR`] has been waited: short at first, as a write of another
/// process is over in a millisecond or two, then 100 ms (SQLite's own schedule).
pub fn busy_pause(attempt: i32) -> Option<Duration> {
    const FIRST: [u64; 12] = [1, 2, 5, 10, 15, 20, 25, 25, 25, 50, 50, 100];
    let n = usize::try_from(attempt).unwrap_or(0);
    let waited: u64 =
        FIRST.iter().take(n).sum::<u64>() + 100 * n.saturating_sub(FIRST.len()) as u64;
    let pause = FIRST.get(n).copied().unwrap_or(100);
    (waited + pause <= BUSY_FOR.as_millis() as u64).then(|| Duration::from_millis(pause))
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
        conn.busy_timeout(BUSY_FOR).map_err(open_err)?;
        conn.set_prepared_statement_cache_capacity(STATEMENTS_KEPT);
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
        // Keep the log short, and copy it back when the runner would otherwise wait (wal.rs).
        wal::install(&conn);
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
            background: None,
            file: wal::file_id(path),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Replaces the busy timeout: while another connection holds the database, SQLite calls
    /// `handler` with the number of times it has been called for this statement, and gives up
    /// when it returns `false`. A handler that waits [`busy_pause`] and returns whether there
    /// was one waits as the timeout does. A process that runs many tasks on a few threads
    /// waits in its own way, so that one writer waiting does not hold up the others.
    pub fn on_busy(&self, handler: fn(i32) -> bool) -> Result<()> {
        Ok(self.conn.busy_handler(Some(handler))?)
    }

    pub(crate) fn json_text(&self, v: &Value) -> String {
        json_text(v, self.max_field_bytes)
    }

    pub(crate) fn opt_json(&self, v: Option<&Value>) -> Option<String> {
        v.map(|v| self.json_text(v))
    }

    pub(crate) fn error_text(&self, e: Option<&ErrorInfo>) -> Option<String> {
        e.map(|e| error_json(e, self.max_field_bytes))
    }

    /// Raw access for tests and maintenance commands.
    pub fn connection(&self) -> &Connection {
        &self.conn
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flowrun_events::ExecStatus;

    #[test]
    fn busy_pauses_add_up_to_the_timeout() {
        let pauses: Vec<Duration> = (0..).map_while(busy_pause).collect();
        let total: Duration = pauses.iter().sum();
        assert_eq!(pauses[0], Duration::from_millis(1));
        assert!(
            total <= BUSY_FOR && total > BUSY_FOR - Duration::from_millis(100),
            "{total:?}"
        );
        assert_eq!(busy_pause(-1), Some(Duration::from_millis(1)));
    }

    /// The statements `conn` holds prepared (its cache's), with how often each has run.
    fn held(conn: &Connection) -> Vec<(String, i32)> {
        let mut out = Vec::new();
        // SAFETY: the connection is ours and used by no other thread meanwhile; each statement
        // pointer comes from sqlite3_next_stmt and is only read (its SQL and a counter).
        unsafe {
            let db = conn.handle();
            let mut stmt = rusqlite::ffi::sqlite3_next_stmt(db, std::ptr::null_mut());
            while !stmt.is_null() {
                let sql = std::ffi::CStr::from_ptr(rusqlite::ffi::sqlite3_sql(stmt));
                let runs = rusqlite::ffi::sqlite3_stmt_status(
                    stmt,
                    rusqlite::ffi::SQLITE_STMTSTATUS_RUN,
                    0,
                );
                out.push((sql.to_string_lossy().into_owned(), runs));
                stmt = rusqlite::ffi::sqlite3_next_stmt(db, stmt);
            }
        }
        out
    }

    /// What a runner writes of one execution and what `flowrun test` reads back of it.
    fn record_and_read(store: &mut Store, id: &str) {
        let definition = serde_json::json!({"id": "wf", "nodes": []});
        let trigger = serde_json::json!({"name": "n"});
        store
            .insert_execution(&NewExecution {
                id,
                workflow_id: "wf",
                workflow_name: "wf",
                snapshot_hash: "h",
                definition: &definition,
                source_file: None,
                mode: "test-suite",
                status: ExecStatus::Running,
                trigger: &trigger,
                started_at: 1,
                parent_id: None,
                relation: None,
                sub_link: None,
                runner_pid: 1,
                runner_start_time: None,
                cwd: None,
            })
            .unwrap();
        let process = ProcessRow {
            pid: 2,
            pgid: 2,
            start_time: None,
        };
        store.set_process(id, process, "warm").unwrap();
        store.requested(id).unwrap(); // a stop or pause asked for (flowrun test, serve)
        let node = |status| NodeRow {
            node_id: "a".into(),
            part: None,
            position: 0,
            status,
            attempt: 1,
            started_at: Some(2),
            finished_at: Some(3),
            duration_ms: Some(1.0),
            input: Some(trigger.clone()),
            output: Some(trigger.clone()),
            error: None,
            from_execution: None,
            reason: None,
        };
        let writes = [
            Write::NodeStarted {
                node_id: "a".into(),
                part: None,
                position: 0,
                attempt: 1,
                started_at: 2,
            },
            Write::NodeInput {
                node_id: "a".into(),
                part: None,
                input: trigger.clone(),
            },
            Write::Event {
                seq: 1,
                kind: "log".into(),
                node_id: Some("a".into()),
                ts: 2,
                data: r#"{"type":"log","node":"a","line":"hi"}"#.into(),
            },
            Write::NodeFinished(Box::new(node(flowrun_events::NodeStatus::Success))),
        ];
        assert!(store.apply(id, &writes).unwrap());
        let finish = Finish {
            status: ExecStatus::Success,
            output: Some(&trigger),
            error: None,
            finished_at: 4,
            duration_ms: 3.0,
            exit: Some("0"),
            log_bytes: 2,
            log_bytes_cut: 0,
            usage: Usage::default(),
        };
        assert!(store.finish_execution(id, &[], &finish).unwrap());
        store.execution(id).unwrap();
        store.nodes(id).unwrap();
        store.retried_attempts(id).unwrap();
        store.events(id, 0, Some("log")).unwrap();
        store.snapshot("h").unwrap();
        store.children(id).unwrap();
        store.sub_link(id).unwrap();
        store.has_events_after(id, 1).unwrap();
        store.checkpoint_if_due();
    }

    /// Recording an execution and reading it back takes more statements than rusqlite keeps by
    /// default (16): with that, every execution of a `flowrun test` or `serve` evicted and
    /// prepared again what the next one needed.
    #[test]
    fn a_second_execution_prepares_none_of_its_statements_again() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&dir.path().join("s.db")).unwrap();
        record_and_read(&mut store, "e1");
        let first = held(store.connection());
        record_and_read(&mut store, "e2");
        let second = held(store.connection());
        let again: Vec<_> = second.iter().filter(|(_, runs)| *runs < 2).collect();
        assert!(again.is_empty(), "prepared again: {again:#?}");
        assert_eq!(first.len(), second.len());
        assert!(
            first.len() > 16,
            "{} statements: the test no longer needs more than rusqlite's default",
            first.len()
        );
    }
}
