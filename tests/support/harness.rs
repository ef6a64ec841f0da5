//! What the node tests need to run the real `flowrun` binary in isolation and read what it
//! recorded: a temp dir per test holding the database (`FLOWRUN_DB`) and the script cache
//! (`FLOWRUN_CACHE_DIR`), and a read-only SQLite view of the rows.
//!
//! Every command starts from a clean slate for the variables these tests care about: provider
//! keys and base URLs set in the developer's shell must not leak into a test.

#![allow(dead_code)]

use assert_cmd::Command;
use rusqlite::{Connection, OpenFlags, OptionalExtension};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;
use tempfile::TempDir;

/// Variables removed from every `flowrun` command: keys and endpoints a developer may have set.
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
    "http_proxy",
    "https_proxy",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "all_proxy",
];

pub struct Env {
    pub dir: TempDir,
}

impl Env {
    pub fn new() -> Env {
        Env {
            dir: tempfile::Builder::new()
                .prefix("flowrun-nodes-")
                .tempdir()
                .expect("temp dir"),
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn db_path(&self) -> PathBuf {
        self.path("flowrun.db")
    }

    /// `flowrun` with this test's database and cache and a scrubbed environment.
    pub fn flowrun(&self) -> Command {
        let mut cmd = Command::cargo_bin("flowrun").expect("the flowrun binary is built");
        for k in SCRUBBED {
            cmd.env_remove(k);
        }
        cmd.env("FLOWRUN_DB", self.db_path())
            .env("FLOWRUN_CACHE_DIR", self.path("cache"))
            .current_dir(self.dir.path())
            .timeout(Duration::from_secs(60));
        cmd
    }

    pub fn cmd<I, S>(&self, args: I) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        self.flowrun().args(args).output().expect("flowrun runs")
    }

    pub fn write_workflow(&self, name: &str, workflow: &Value) -> PathBuf {
        self.write_file(name, &serde_json::to_string_pretty(workflow).unwrap())
    }

    pub fn write_file(&self, name: &str, text: &str) -> PathBuf {
        let p = self.path(name);
        std::fs::write(&p, text).expect("write file");
        p
    }

    pub fn db(&self) -> Connection {
        let c = Connection::open_with_flags(
            self.db_path(),
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .expect("the database exists");
        c.busy_timeout(Duration::from_secs(10)).unwrap();
        c
    }

    /// Rows in `executions`; 0 when no database file exists at all.
    pub fn execution_count(&self) -> i64 {
        if !self.db_path().exists() {
            return 0;
        }
        self.db()
            .query_row("SELECT COUNT(*) FROM executions", [], |r| r.get(0))
            .unwrap_or(0)
    }

    pub fn only_execution_id(&self) -> String {
        let db = self.db();
        let mut stmt = db.prepare("SELECT id FROM executions").unwrap();
        let ids: Vec<String> = stmt
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(ids.len(), 1, "expected one execution, found {ids:?}");
        ids.into_iter().next().unwrap()
    }

    /// `(status, output, error)` of an execution.
    pub fn execution(&self, id: &str) -> (String, Option<Value>, Option<Value>) {
        self.db()
            .query_row(
                "SELECT status, output, error FROM executions WHERE id = ?1",
                [id],
                |r| Ok((r.get::<_, String>(0)?, json(r.get(1)?), json(r.get(2)?))),
            )
            .unwrap()
    }

    /// One node's row.
    pub fn node(&self, execution_id: &str, node_id: &str) -> NodeRow {
        self.db()
            .query_row(
                "SELECT status, attempt, input, output, error FROM node_executions
                 WHERE execution_id = ?1 AND node_id = ?2",
                [execution_id, node_id],
                |r| {
                    Ok(NodeRow {
                        status: r.get(0)?,
                        attempt: r.get(1)?,
                        input: json(r.get(2)?),
                        output: json(r.get(3)?),
                        error: json(r.get(4)?),
                    })
                },
            )
            .optional()
            .unwrap()
            .unwrap_or_else(|| panic!("no row for node '{node_id}' of {execution_id}"))
    }

    /// The bytes of the database and its WAL and shared-memory files, concatenated.
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
}

#[derive(Debug, Clone)]
pub struct NodeRow {
    pub status: String,
    pub attempt: i64,
    pub input: Option<Value>,
    pub output: Option<Value>,
    pub error: Option<Value>,
}

impl NodeRow {
    pub fn output(&self) -> &Value {
        self.output
            .as_ref()
            .unwrap_or_else(|| panic!("node has no output: {self:?}"))
    }

    pub fn error_type(&self) -> &str {
        self.error
            .as_ref()
            .and_then(|e| e["type"].as_str())
            .unwrap_or_else(|| panic!("node has no error: {self:?}"))
    }

    pub fn error_message(&self) -> &str {
        self.error
            .as_ref()
            .and_then(|e| e["message"].as_str())
            .unwrap_or_else(|| panic!("node has no error: {self:?}"))
    }
}

fn json(text: Option<String>) -> Option<Value> {
    text.map(|t| serde_json::from_str(&t).unwrap_or_else(|e| panic!("stored JSON {t:?}: {e}")))
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

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

/// Whether `needle` occurs in `haystack`.
pub fn contains_bytes(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

/// Runs `flowrun run FILE --input INPUT` plus `extra`, with `envs` set on the command.
pub fn run_with(
    env: &Env,
    file: &Path,
    input: &str,
    envs: &[(&str, &str)],
    extra: &[&str],
) -> Output {
    let mut cmd = env.flowrun();
    cmd.arg("run")
        .arg(file)
        .arg("--input")
        .arg(input)
        .args(extra);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd.output().expect("flowrun runs")
}

/// Approximate float equality for costs.
pub fn assert_close(actual: &Value, expected: f64, what: &str) {
    let a = actual
        .as_f64()
        .unwrap_or_else(|| panic!("{what}: expected a number, got {actual}"));
    assert!(
        (a - expected).abs() <= 1e-12 + expected.abs() * 1e-9,
        "{what}: expected {expected}, got {a}"
    );
}
