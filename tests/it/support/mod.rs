//! Shared helpers for the integration tests: every test gets its own [`Env`] (a temp dir with
//! its own database, script cache and empty `TMPDIR`), runs the real `flowrun` binary, which
//! runs real Python, and reads what was recorded straight from the SQLite file.
//!
//! Every command starts from the same clean slate: provider keys, secrets, endpoints, proxies,
//! interpreter and package-index settings and any `FLOWRUN_*` variable set in the developer's
//! shell are removed (see [`SCRUBBED`]), so nothing leaks into a test.
//!
//! What only one suite needs stays in its own module beside this one (`agents`, `faults`, `httpbin`, `llm_server`, `serve`).

#![allow(dead_code)]

pub mod agents;
pub mod browser;
pub mod faults;
pub mod httpbin;
pub mod llm_server;
pub mod serve;

use assert_cmd::Command;
use rusqlite::{Connection, OpenFlags, OptionalExtension};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};
use tempfile::TempDir;

/// How long any one `flowrun` command run to its end may take before the test calls it hung.
pub const TIMEOUT: Duration = Duration::from_secs(60);

/// Variables removed from every `flowrun` command (besides every inherited `FLOWRUN_*` one):
/// keys and endpoints a developer may have set, proxies, and what could pick another Python
/// interpreter, change its behaviour or point pip at another index.
pub const SCRUBBED: &[&str] = &[
    "GROQ_API_KEY",
    "OPENAI_API_KEY",
    "ANTHROPIC_API_KEY",
    "LOCAL_LLM_KEY",
    "MY_SECRET",
    "OTHER_SECRET",
    "FLOWRUN_GROQ_BASE_URL",
    "FLOWRUN_OPENAI_BASE_URL",
    "FLOWRUN_ANTHROPIC_BASE_URL",
    "FLOWRUN_OPENAI_COMPATIBLE_BASE_URL",
    "FLOWRUN_LOG",
    "FLOWRUN_PYTHON",
    "FLOWRUN_DB",
    "FLOWRUN_CACHE_DIR",
    "FLOWRUN_SERVE_TEST_KEY",
    "http_proxy",
    "https_proxy",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "all_proxy",
    "VIRTUAL_ENV",
    "PYTHONPATH",
    "PYTHONHOME",
    "PYTHONUSERBASE",
    "PYTHONSTARTUP",
    "PYENV_VERSION",
    "PIP_NO_INDEX",
    "PIP_FIND_LINKS",
    "PIP_INDEX_URL",
    "PIP_EXTRA_INDEX_URL",
];

/// The repository root (where `examples/` lives).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A file in `examples/`.
pub fn example(name: &str) -> PathBuf {
    repo_root().join("examples").join(name)
}

/// One test's world: a temp dir holding the database, the script cache, an empty private
/// `TMPDIR` and any files the test writes.
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
        let env = Env {
            dir: tempfile::Builder::new()
                .prefix("flowrun-test-")
                .tempdir()
                .expect("temp dir"),
        };
        std::fs::create_dir(env.tmp_dir()).expect("private TMPDIR");
        env
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

    /// Given to every command as `TMPDIR`.
    pub fn tmp_dir(&self) -> PathBuf {
        self.path("tmp")
    }

    /// `flowrun` as a plain process command, for tests that start it in the background: this
    /// env's database, cache and `TMPDIR`, the temp dir as working directory, stdin from
    /// `/dev/null`, and a scrubbed environment.
    pub fn command(&self) -> std::process::Command {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_flowrun"));
        for k in SCRUBBED {
            cmd.env_remove(k);
        }
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("FLOWRUN_") {
                cmd.env_remove(k);
            }
        }
        cmd.env("FLOWRUN_DB", self.db_path())
            .env("FLOWRUN_CACHE_DIR", self.cache_dir())
            .env("TMPDIR", self.tmp_dir())
            .current_dir(self.dir.path())
            .stdin(Stdio::null());
        cmd
    }

    /// [`Env::command`] as an `assert_cmd` command, killed after [`TIMEOUT`] so a hung child
    /// cannot hang the suite (run it with [`output`], which then fails the test).
    pub fn flowrun(&self) -> Command {
        let mut cmd = Command::from_std(self.command());
        cmd.timeout(TIMEOUT);
        cmd
    }

    /// Runs `flowrun ARGS...` and returns its output (whatever the exit code).
    pub fn cmd<I, S>(&self, args: I) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        output(self.flowrun().args(args))
    }

    /// `flowrun run FILE --input INPUT EXTRA...`.
    pub fn run(&self, file: &Path, input: &str, extra: &[&str]) -> Output {
        self.run_with(file, input, &[], extra)
    }

    /// `flowrun run FILE --input INPUT EXTRA...` with `envs` set on the command.
    pub fn run_with(
        &self,
        file: &Path,
        input: &str,
        envs: &[(&str, &str)],
        extra: &[&str],
    ) -> Output {
        let mut cmd = self.flowrun();
        cmd.arg("run").arg(file).arg("--input").arg(input);
        cmd.args(extra);
        for (k, v) in envs {
            cmd.env(k, v);
        }
        output(&mut cmd)
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

    /// The database opened for writing, to age rows, give them chosen ids or make them stale.
    /// Never hold it while `flowrun` runs.
    pub fn db_rw(&self) -> Connection {
        let conn = Connection::open(self.db_path()).expect("open the database");
        conn.busy_timeout(Duration::from_secs(10)).unwrap();
        conn
    }

    /// The bytes of the database and its WAL, shared-memory and journal files, concatenated.
    pub fn db_bytes(&self) -> Vec<u8> {
        let mut all = Vec::new();
        let mut found = 0;
        for suffix in ["", "-wal", "-shm", "-journal"] {
            let mut p = self.db_path().into_os_string();
            p.push(suffix);
            if let Ok(b) = std::fs::read(&p) {
                found += 1;
                all.extend(b);
            }
        }
        assert!(
            found >= 1,
            "no database file at {}",
            self.db_path().display()
        );
        all
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

    /// Ids of all executions, oldest first, or `None` while the database or its schema does not
    /// exist yet (for polling while another process creates it).
    pub fn try_execution_ids(&self) -> Option<Vec<String>> {
        if !self.db_path().exists() {
            return None;
        }
        let db =
            Connection::open_with_flags(self.db_path(), OpenFlags::SQLITE_OPEN_READ_ONLY).ok()?;
        db.busy_timeout(Duration::from_secs(10)).ok()?;
        let mut stmt = db
            .prepare("SELECT id FROM executions ORDER BY started_at, rowid")
            .ok()?;
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

    /// The row of an execution; panics when there is none.
    pub fn execution(&self, id: &str) -> ExecRow {
        self.try_execution(id)
            .unwrap_or_else(|| panic!("no execution {id}"))
    }

    /// The row of an execution, if there is one.
    pub fn try_execution(&self, id: &str) -> Option<ExecRow> {
        self.db()
            .query_row(
                "SELECT id, workflow_id, workflow_name, status, trigger, output, error, snapshot_hash,
                        started_at, finished_at, duration_ms, exit, parent_id, relation,
                        pid, pgid, process_start_time, runner_pid, runner_start_time,
                        log_bytes, log_bytes_cut
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
                        parent_id: r.get(12)?,
                        relation: r.get(13)?,
                        pid: r.get(14)?,
                        pgid: r.get(15)?,
                        process_start_time: r.get(16)?,
                        runner_pid: r.get(17)?,
                        runner_start_time: r.get(18)?,
                        log_bytes: r.get(19)?,
                        log_bytes_cut: r.get(20)?,
                    })
                },
            )
            .optional()
            .unwrap()
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

    /// Node rows of an execution (each node's own row, not its items or iterations), in plan
    /// order.
    pub fn nodes(&self, execution_id: &str) -> Vec<NodeRow> {
        self.node_rows(execution_id, "part = -1")
    }

    /// The item rows (`for_each`) of a node, in index order: `(index, row)`.
    pub fn items(&self, execution_id: &str, node: &str) -> Vec<(i64, NodeRow)> {
        self.parts(execution_id, node, "item")
    }

    /// The iteration rows (`repeat`) of a node, in order: `(iteration, row)`.
    pub fn iterations(&self, execution_id: &str, node: &str) -> Vec<(i64, NodeRow)> {
        self.parts(execution_id, node, "iteration")
    }

    fn parts(&self, execution_id: &str, node: &str, kind: &str) -> Vec<(i64, NodeRow)> {
        let db = self.db();
        let mut stmt = db
            .prepare(
                "SELECT part FROM node_executions
                 WHERE execution_id = ?1 AND node_id = ?2 AND part_kind = ?3 ORDER BY part",
            )
            .unwrap();
        let numbers: Vec<i64> = stmt
            .query_map([execution_id, node, kind], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        numbers
            .into_iter()
            .map(|n| {
                let row = self
                    .node_rows(
                        execution_id,
                        &format!("node_id = '{node}' AND part_kind = '{kind}' AND part = {n}"),
                    )
                    .pop()
                    .unwrap();
                (n, row)
            })
            .collect()
    }

    fn node_rows(&self, execution_id: &str, filter: &str) -> Vec<NodeRow> {
        let db = self.db();
        let mut stmt = db
            .prepare(&format!(
                "SELECT node_id, position, status, attempt, started_at, finished_at, duration_ms,
                        input, output, error, from_execution
                 FROM node_executions WHERE execution_id = ?1 AND {filter} ORDER BY position, part"
            ))
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
                from_execution: r.get(10)?,
            })
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
    }

    /// One node's row; panics when the node has none.
    pub fn node(&self, execution_id: &str, node_id: &str) -> NodeRow {
        let rows = self.nodes(execution_id);
        rows.iter()
            .find(|n| n.node_id == node_id)
            .cloned()
            .unwrap_or_else(|| panic!("no row for node '{node_id}' of {execution_id}: {rows:?}"))
    }

    /// One node's row, if the node has one.
    pub fn try_node(&self, execution_id: &str, node_id: &str) -> Option<NodeRow> {
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

    /// `flowrun history --json ARGS...`, parsed (it must succeed and print an array).
    pub fn history_json(&self, args: &[&str]) -> Vec<Value> {
        let mut all = vec!["history", "--json"];
        all.extend_from_slice(args);
        let out = self.cmd(&all);
        assert_success(&out, &format!("history --json {args:?}"));
        serde_json::from_slice::<Vec<Value>>(&out.stdout)
            .unwrap_or_else(|e| panic!("history --json prints an array ({e})\n{}", describe(&out)))
    }

    /// `flowrun show ID --json`, parsed.
    pub fn show_json(&self, id: &str) -> Value {
        let out = self.cmd(["show", id, "--json"]);
        assert_success(&out, "show --json");
        serde_json::from_slice(&out.stdout).expect("show --json prints JSON")
    }
}

/// Makes a suite's own world type, a struct with an `env: Env` field, deref to that [`Env`]:
/// the common paths, commands and rows are its own, and its methods add what the suite needs.
#[allow(unused_macros)]
macro_rules! derefs_to_env {
    ($world:ty) => {
        impl std::ops::Deref for $world {
            type Target = $crate::support::Env;

            fn deref(&self) -> &$crate::support::Env {
                &self.env
            }
        }
    };
}
#[allow(unused_imports)]
pub(crate) use derefs_to_env;

/// Runs a command built from [`Env::flowrun`] to its end and returns its output (whatever the
/// exit code); fails the test when it had to be killed after [`TIMEOUT`].
pub fn output(cmd: &mut Command) -> Output {
    let started = Instant::now();
    let out = cmd.output().expect("flowrun runs");
    if out.status.code().is_none() && started.elapsed() >= TIMEOUT {
        panic!(
            "flowrun did not end within {TIMEOUT:?} (killed)\n{}",
            describe(&out)
        );
    }
    out
}

/// Stored JSON, as deep as flowrun stores it (deeper than serde_json's default limit of 128).
fn json(text: Option<String>) -> Option<Value> {
    text.map(|t| {
        flowrun_events::json::parse_bounded(t.as_bytes(), flowrun_events::json::MAX_DEPTH)
            .unwrap_or_else(|e| panic!("stored JSON {t:?}: {e}"))
    })
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
    pub parent_id: Option<String>,
    pub relation: Option<String>,
    pub pid: Option<i32>,
    pub pgid: Option<i32>,
    pub process_start_time: Option<i64>,
    pub runner_pid: Option<i32>,
    pub runner_start_time: Option<i64>,
    pub log_bytes: i64,
    pub log_bytes_cut: i64,
}

impl ExecRow {
    /// The error's message; panics when the execution has no error.
    pub fn error_message(&self) -> &str {
        self.error
            .as_ref()
            .and_then(|e| e["message"].as_str())
            .unwrap_or_else(|| panic!("execution has no error: {self:?}"))
    }
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
    pub from_execution: Option<String>,
}

impl NodeRow {
    /// The output; panics when the node has none.
    pub fn output(&self) -> &Value {
        self.output
            .as_ref()
            .unwrap_or_else(|| panic!("node has no output: {self:?}"))
    }

    /// The error's type; panics when the node has no error.
    pub fn error_type(&self) -> &str {
        self.error
            .as_ref()
            .and_then(|e| e["type"].as_str())
            .unwrap_or_else(|| panic!("node has no error: {self:?}"))
    }

    /// The error's message; panics when the node has no error.
    pub fn error_message(&self) -> &str {
        self.error
            .as_ref()
            .and_then(|e| e["message"].as_str())
            .unwrap_or_else(|| panic!("node has no error: {self:?}"))
    }
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

/// Approximate float equality (for costs).
pub fn assert_close(actual: &Value, expected: f64, what: &str) {
    let a = actual
        .as_f64()
        .unwrap_or_else(|| panic!("{what}: expected a number, got {actual}"));
    assert!(
        (a - expected).abs() <= 1e-12 + expected.abs() * 1e-9,
        "{what}: expected {expected}, got {a}"
    );
}

/// Whether `needle` occurs in `haystack`.
pub fn contains_bytes(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

/// The permission bits of a file.
pub fn mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

/// `(node_id, status)` of every node of an execution record (`show --json`, the API), in order.
pub fn record_node_statuses(record: &Value) -> Vec<(String, String)> {
    record["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            (
                n["node_id"].as_str().unwrap().to_string(),
                n["status"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// Polls `f` every 10 ms until it gives a value; fails the test after 20 s.
pub fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}
