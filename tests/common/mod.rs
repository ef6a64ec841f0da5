//! Shared helpers for the integration tests: every test gets its own [`Env`] (a temp dir with
//! its own database and script cache), runs the real `flowrun` binary, which runs real Python,
//! and reads what was recorded straight from the SQLite file.

#![allow(dead_code)]

use assert_cmd::Command;
use rusqlite::{Connection, OpenFlags, OptionalExtension};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;
use tempfile::TempDir;

/// The repository root (where `examples/` lives).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A file in `examples/`.
pub fn example(name: &str) -> PathBuf {
    repo_root().join("examples").join(name)
}

/// One test's world: a temp dir holding the database, the script cache and any files it writes.
pub struct Env {
    pub dir: TempDir,
}

impl Default for Env {
    fn default() -> Self {
        Self::new()
    }
}

impl Env {
    pub fn new() -> Env {
        Env {
            dir: tempfile::Builder::new()
                .prefix("flowrun-test-")
                .tempdir()
                .expect("temp dir"),
        }
    }

    /// A path inside the temp dir.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn db_path(&self) -> PathBuf {
        self.path("flowrun.db")
    }

    pub fn cache_dir(&self) -> PathBuf {
        self.path("cache")
    }

    /// `flowrun` with this env's database and cache (and a generous kill-switch timeout so a
    /// hung child cannot hang the suite).
    pub fn flowrun(&self) -> Command {
        let mut cmd = Command::cargo_bin("flowrun").expect("the flowrun binary is built");
        cmd.env("FLOWRUN_DB", self.db_path())
            .env("FLOWRUN_CACHE_DIR", self.cache_dir())
            .env_remove("FLOWRUN_LOG")
            .current_dir(self.dir.path())
            .timeout(Duration::from_secs(60));
        cmd
    }

    /// Runs `flowrun ARGS...` and returns its output (whatever the exit code).
    pub fn cmd<I, S>(&self, args: I) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        self.flowrun().args(args).output().expect("flowrun runs")
    }

    /// `flowrun run FILE --input INPUT EXTRA...`.
    pub fn run(&self, file: &Path, input: &str, extra: &[&str]) -> Output {
        let mut cmd = self.flowrun();
        cmd.arg("run").arg(file).arg("--input").arg(input);
        cmd.args(extra);
        cmd.output().expect("flowrun runs")
    }

    /// Writes a workflow as pretty JSON (one key per line, so locations can be checked).
    pub fn write_workflow(&self, name: &str, workflow: &Value) -> PathBuf {
        self.write_file(
            name,
            &serde_json::to_string_pretty(workflow).expect("json serializes"),
        )
    }

    /// Writes any file into the temp dir and returns its path.
    pub fn write_file(&self, name: &str, text: &str) -> PathBuf {
        let p = self.path(name);
        std::fs::write(&p, text).expect("write file");
        p
    }

    /// The database, opened read-only.
    pub fn db(&self) -> Connection {
        let conn = Connection::open_with_flags(
            self.db_path(),
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .expect("the database exists");
        conn.busy_timeout(Duration::from_secs(10)).unwrap();
        conn
    }

    /// Number of rows in `executions` (0 when there is no database file at all).
    pub fn execution_count(&self) -> i64 {
        if !self.db_path().exists() {
            return 0;
        }
        self.db()
            .query_row("SELECT COUNT(*) FROM executions", [], |r| r.get(0))
            .unwrap()
    }

    /// Ids of all executions, or `None` while the database or its schema does not exist yet
    /// (for polling while another process creates it).
    pub fn try_execution_ids(&self) -> Option<Vec<String>> {
        if !self.db_path().exists() {
            return None;
        }
        let db =
            Connection::open_with_flags(self.db_path(), OpenFlags::SQLITE_OPEN_READ_ONLY).ok()?;
        let mut stmt = db.prepare("SELECT id FROM executions").ok()?;
        let ids = stmt.query_map([], |r| r.get(0)).ok()?;
        ids.collect::<Result<_, _>>().ok()
    }

    /// Ids of all executions, oldest first.
    pub fn execution_ids(&self) -> Vec<String> {
        let db = self.db();
        let mut stmt = db
            .prepare("SELECT id FROM executions ORDER BY started_at, rowid")
            .unwrap();
        stmt.query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    /// The id of the one execution in the database; panics when there is not exactly one.
    pub fn only_execution_id(&self) -> String {
        let ids = self.execution_ids();
        assert_eq!(
            ids.len(),
            1,
            "expected exactly one execution, found {ids:?}"
        );
        ids.into_iter().next().unwrap()
    }

    pub fn execution(&self, id: &str) -> ExecRow {
        self.db()
            .query_row(
                "SELECT id, workflow_id, workflow_name, status, trigger, output, error, snapshot_hash,
                        started_at, finished_at, duration_ms, exit
                 FROM executions WHERE id = ?1",
                [id],
                |r| {
                    Ok(ExecRow {
                        id: r.get(0)?,
                        workflow_id: r.get(1)?,
                        workflow_name: r.get(2)?,
                        status: r.get(3)?,
                        trigger: json(r.get(4)?).unwrap_or(Value::Null),
                        output: json(r.get(5)?),
                        error: json(r.get(6)?),
                        snapshot_hash: r.get(7)?,
                        started_at: r.get(8)?,
                        finished_at: r.get(9)?,
                        duration_ms: r.get(10)?,
                        exit: r.get(11)?,
                    })
                },
            )
            .optional()
            .unwrap()
            .unwrap_or_else(|| panic!("no execution {id}"))
    }

    /// The definition stored in `snapshots` under `hash`, as text.
    pub fn snapshot_text(&self, hash: &str) -> Option<String> {
        self.db()
            .query_row(
                "SELECT definition FROM snapshots WHERE hash = ?1",
                [hash],
                |r| r.get(0),
            )
            .optional()
            .unwrap()
    }

    /// Node rows of an execution, in plan order.
    pub fn nodes(&self, execution_id: &str) -> Vec<NodeRow> {
        let db = self.db();
        let mut stmt = db
            .prepare(
                "SELECT node_id, position, status, attempt, started_at, finished_at, duration_ms,
                        input, output, error
                 FROM node_executions WHERE execution_id = ?1 ORDER BY position",
            )
            .unwrap();
        stmt.query_map([execution_id], |r| {
            Ok(NodeRow {
                node_id: r.get(0)?,
                position: r.get(1)?,
                status: r.get(2)?,
                attempt: r.get(3)?,
                started_at: r.get(4)?,
                finished_at: r.get(5)?,
                duration_ms: r.get(6)?,
                input: json(r.get(7)?),
                output: json(r.get(8)?),
                error: json(r.get(9)?),
            })
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
    }

    /// One node row, if the node has one.
    pub fn node(&self, execution_id: &str, node_id: &str) -> Option<NodeRow> {
        self.nodes(execution_id)
            .into_iter()
            .find(|n| n.node_id == node_id)
    }

    /// Stored events of an execution, by seq.
    pub fn events(&self, execution_id: &str) -> Vec<EventRow> {
        let db = self.db();
        let mut stmt = db
            .prepare(
                "SELECT seq, kind, node_id, ts, data FROM events WHERE execution_id = ?1 ORDER BY seq",
            )
            .unwrap();
        stmt.query_map([execution_id], |r| {
            let data: String = r.get(4)?;
            Ok(EventRow {
                seq: r.get(0)?,
                kind: r.get(1)?,
                node_id: r.get(2)?,
                ts: r.get(3)?,
                data: serde_json::from_str(&data).expect("event data is JSON"),
            })
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
    }

    /// `flowrun show ID --json`, parsed.
    pub fn show_json(&self, id: &str) -> Value {
        let out = self.cmd(["show", id, "--json"]);
        assert_success(&out, "show --json");
        serde_json::from_slice(&out.stdout).expect("show --json prints JSON")
    }
}

fn json(text: Option<String>) -> Option<Value> {
    text.map(|t| serde_json::from_str(&t).unwrap_or_else(|e| panic!("stored JSON {t:?}: {e}")))
}

/// A row of `executions`.
#[derive(Debug, Clone)]
pub struct ExecRow {
    pub id: String,
    pub workflow_id: String,
    pub workflow_name: String,
    pub status: String,
    pub trigger: Value,
    pub output: Option<Value>,
    pub error: Option<Value>,
    pub snapshot_hash: String,
    pub started_at: i64,
    pub finished_at: Option<i64>,
    pub duration_ms: Option<f64>,
    pub exit: Option<String>,
}

/// A row of `node_executions`.
#[derive(Debug, Clone)]
pub struct NodeRow {
    pub node_id: String,
    pub position: i64,
    pub status: String,
    pub attempt: i64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    pub duration_ms: Option<f64>,
    pub input: Option<Value>,
    pub output: Option<Value>,
    pub error: Option<Value>,
}

/// A row of `events`.
#[derive(Debug, Clone)]
pub struct EventRow {
    pub seq: i64,
    pub kind: String,
    pub node_id: Option<String>,
    pub ts: i64,
    pub data: Value,
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Both streams, for assertion messages.
pub fn describe(out: &Output) -> String {
    format!(
        "exit: {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        out.status.code(),
        stdout(out),
        stderr(out)
    )
}

pub fn assert_code(out: &Output, code: i32, what: &str) {
    assert_eq!(
        out.status.code(),
        Some(code),
        "{what}: expected exit code {code}\n{}",
        describe(out)
    );
}

pub fn assert_success(out: &Output, what: &str) {
    assert_code(out, 0, what);
}
