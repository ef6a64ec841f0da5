//! The store: executions, node executions, events and definition snapshots in SQLite.
//!
//! One connection per process, WAL mode, `synchronous=NORMAL`, a busy timeout, and write
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

/// How long a writer waits for another connection to let go of the database: 30 s in all.
const BUSY_FOR: Duration = Duration::from_secs(30);

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
        e.map(|e| self.json_text(&serde_json::to_value(e).expect("an error serializes")))
    }

    /// Raw access for tests and maintenance commands.
    pub fn connection(&self) -> &Connection {
        &self.conn
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
