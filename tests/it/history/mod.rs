//! History you can work with (issue 5): `rerun`, `resume` (from the failed node, with a changed
//! file, with pins), `logs --follow` and `show` of a running execution from a second process,
//! id prefixes, `history` filters and `--json`, `prune`/`delete` with exact row counts and a
//! shrinking database, and truncation of oversized outputs.
//!
//! Everything runs the real `flowrun` binary with real Python against a SQLite file per test.
//! Nodes that must be proved to run (or not) append their id to a "trail" file named in the
//! trigger data, so the trail says exactly which nodes ran, in which execution, in which order.

mod inspect;
mod pins;
mod prune;
mod rerun;
mod resume;
mod truncation;

use crate::support::*;
use rusqlite::params;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::{Child, Output, Stdio};
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// A code node.
pub(super) fn code(id: &str, src: &str) -> Value {
    json!({"id": id, "type": "code", "code": src})
}

/// A code node that first appends its id to the trail file (`trigger['trail']`), then runs `body`.
pub(super) fn tracked(id: &str, body: &str) -> Value {
    code(
        id,
        &format!("with open(trigger['trail'], 'a') as f:\n    f.write('{id}\\n')\n{body}"),
    )
}

/// The node ids the trail file holds, in the order they ran.
pub(super) fn trail(env: &Env) -> Vec<String> {
    match std::fs::read_to_string(env.path("trail.txt")) {
        Ok(t) => t.lines().map(str::to_string).collect(),
        Err(_) => Vec::new(),
    }
}

/// Trigger data naming the trail file (and a flag file nodes may look at).
pub(super) fn trail_input(env: &Env) -> String {
    json!({
        "trail": env.path("trail.txt"),
        "flag": env.path("fail.flag"),
    })
    .to_string()
}

/// The execution record a command printed with `--json`.
pub(super) fn record(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("--json prints the record ({e})\n{}", describe(out)))
}

/// The id of the execution a command printed with `--json`.
pub(super) fn id_of(out: &Output) -> String {
    record(out)["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no id in the record\n{}", describe(out)))
        .to_string()
}

/// `(node_id, status)` of every node row, in plan order.
pub(super) fn statuses(env: &Env, id: &str) -> Vec<(String, String)> {
    env.nodes(id)
        .into_iter()
        .map(|n| (n.node_id, n.status))
        .collect()
}

pub(super) fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

/// `from_execution` of one node row.
pub(super) fn from_execution(env: &Env, id: &str, node: &str) -> Option<String> {
    env.node(id, node).from_execution
}

/// `(parent_id, relation)` of an execution row.
pub(super) fn parent(env: &Env, id: &str) -> (Option<String>, Option<String>) {
    let e = env.execution(id);
    (e.parent_id, e.relation)
}

pub(super) fn output_of(env: &Env, id: &str, node: &str) -> Value {
    env.node(id, node).output.unwrap_or(Value::Null)
}

/// One integer from the database.
pub(super) fn count(env: &Env, sql: &str) -> i64 {
    env.db().query_row(sql, [], |r| r.get(0)).unwrap()
}

/// Row counts of the four tables: executions, node_executions, events, snapshots.
pub(super) fn table_counts(env: &Env) -> [i64; 4] {
    [
        count(env, "SELECT COUNT(*) FROM executions"),
        count(env, "SELECT COUNT(*) FROM node_executions"),
        count(env, "SELECT COUNT(*) FROM events"),
        count(env, "SELECT COUNT(*) FROM snapshots"),
    ]
}

/// Node and event rows of these executions: what deleting them must remove.
pub(super) fn rows_of(env: &Env, ids: &[&str]) -> (i64, i64) {
    let db = env.db();
    let mut nodes = 0;
    let mut events = 0;
    for id in ids {
        nodes += db
            .query_row(
                "SELECT COUNT(*) FROM node_executions WHERE execution_id = ?1",
                [id],
                |r| r.get::<_, i64>(0),
            )
            .unwrap();
        events += db
            .query_row(
                "SELECT COUNT(*) FROM events WHERE execution_id = ?1",
                [id],
                |r| r.get::<_, i64>(0),
            )
            .unwrap();
    }
    (nodes, events)
}

pub(super) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

pub(super) const HOUR: i64 = 3_600_000;
pub(super) const DAY: i64 = 24 * HOUR;

pub(super) fn set_started_at(env: &Env, id: &str, at: i64) {
    let n = env
        .db_rw()
        .execute(
            "UPDATE executions SET started_at = ?2 WHERE id = ?1",
            params![id, at],
        )
        .unwrap();
    assert_eq!(n, 1, "no execution {id}");
}

/// Gives an execution a chosen id (in every table that refers to it).
pub(super) fn rename_execution(env: &Env, from: &str, to: &str) {
    let db = env.db_rw();
    db.execute_batch("PRAGMA foreign_keys = OFF").unwrap();
    db.execute(
        "UPDATE executions SET id = ?2 WHERE id = ?1",
        params![from, to],
    )
    .unwrap();
    db.execute(
        "UPDATE node_executions SET execution_id = ?2 WHERE execution_id = ?1",
        params![from, to],
    )
    .unwrap();
    db.execute(
        "UPDATE events SET execution_id = ?2 WHERE execution_id = ?1",
        params![from, to],
    )
    .unwrap();
}

/// `flowrun ARGS` started in the background (stdout piped, the rest discarded).
pub(super) fn spawn(env: &Env, args: &[&str]) -> Child {
    env.command()
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("flowrun starts")
}

/// Waits for a background process, killing it if it takes more than 20 s.
pub(super) fn finish(mut child: Child, what: &str) -> std::process::ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return st;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} did not end");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A node that waits (at most 20 s) for the gate file in `trigger['gate']` before returning:
/// the test decides when the execution may end.
pub(super) fn gated(id: &str, before: &str) -> Value {
    code(
        id,
        &format!(
            "import os, time\n{before}\nfor _ in range(2000):\n    if os.path.exists(trigger['gate']):\n        break\n    time.sleep(0.01)\nelse:\n    raise RuntimeError('the gate never opened')\nreturn 'through'"
        ),
    )
}

pub(super) fn history_ids(env: &Env, args: &[&str]) -> Vec<String> {
    env.history_json(args)
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_string())
        .collect()
}

pub(super) fn ids(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

pub(super) fn write_json(env: &Env, name: &str, v: &Value) -> PathBuf {
    env.write_file(name, &v.to_string())
}

pub(super) fn path_str(p: &Path) -> &str {
    p.to_str().expect("utf-8 temp path")
}

pub(super) fn outputs(env: &Env, id: &str) -> Vec<(String, String, Value)> {
    env.nodes(id)
        .into_iter()
        .map(|n| (n.node_id, n.status, n.output.unwrap_or(Value::Null)))
        .collect()
}
