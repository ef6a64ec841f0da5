//! `prune` and `delete`: exact row counts, and a database that shrinks.

use super::{
    DAY, HOUR, code, finish, gated, history_ids, id_of, now_ms, path_str, record, rows_of,
    set_started_at, spawn, table_counts,
};
use crate::support::*;
use serde_json::{Value, json};
use std::path::Path;

// ---------------------------------------------------------------------------------------------
// 8. prune and delete
// ---------------------------------------------------------------------------------------------

fn logged(version: &str) -> Value {
    json!({
        "id": "wf-a",
        "nodes": [
            code("hello", &format!("print('hello {version}')\nreturn '{version}'")),
            {"id": "echo", "type": "set", "fields": {"said": "{{ nodes.hello.output }}"}}
        ]
    })
}

#[test]
fn prune_by_age_and_count_and_delete_remove_exactly_what_they_say() {
    let env = Env::new();
    let a = env.write_workflow("a.json", &logged("v2"));
    let a_old = env.write_workflow("a-old.json", &logged("v1"));
    let b = env.write_workflow(
        "b.json",
        &json!({"id": "wf-b", "nodes": [code("b", "print('b')\nreturn 'b'")]}),
    );
    let run = |f: &Path| {
        let out = env.run(f, "{}", &["--json"]);
        assert_success(&out, "run");
        id_of(&out)
    };
    let e1 = run(&a_old);
    let e2 = run(&a);
    let e3 = run(&b);
    let e4 = run(&a);
    let e5 = run(&b);
    let e6 = run(&a);
    let e7 = run(&a);
    // A running execution of wf-a (its own definition), held at a gate, older than them all.
    let gate_wf = env.write_workflow(
        "a-gated.json",
        &json!({"id": "wf-a", "nodes": [gated("wait", "print('waiting')")]}),
    );
    let input = json!({"gate": env.path("gate")}).to_string();
    let running = spawn(&env, &["run", path_str(&gate_wf), "--input", &input]);
    let r = wait_for("the running execution", || {
        env.try_execution_ids()?
            .into_iter()
            .find(|id| ![&e1, &e2, &e3, &e4, &e5, &e6, &e7].contains(&id))
    });
    // Its rows are complete until the gate opens once its log line is stored.
    wait_for("the running execution's log line", || {
        env.events(&r).iter().any(|e| e.kind == "log").then_some(())
    });
    let now = now_ms();
    for (id, age) in [
        (&r, 50 * DAY),
        (&e1, 40 * DAY),
        (&e2, 35 * DAY),
        (&e3, 31 * DAY),
        (&e4, 10 * DAY),
        (&e5, 2 * DAY),
        (&e6, HOUR),
        (&e7, 0),
    ] {
        set_started_at(&env, id, now - age);
    }
    let hash = |id: &str| env.execution(id).snapshot_hash;
    let (h_old, h_a, h_b, h_gate) = (hash(&e1), hash(&e2), hash(&e3), hash(&r));
    assert_eq!(hash(&e7), h_a);
    assert_eq!(hash(&e5), h_b);
    let mut counts = table_counts(&env);
    assert_eq!(counts[0], 8);
    assert_eq!(counts[3], 4, "four distinct definitions");

    // Nothing to prune without a criterion.
    let out = env.cmd(["prune"]);
    assert_code(&out, 2, "prune without criteria");
    let out = env.cmd(["prune", "--older-than", "soon"]);
    assert_code(&out, 2, "prune with a bad age");

    // --dry-run lists, deletes nothing.
    let out = env.cmd(["prune", "--older-than", "30d", "--dry-run"]);
    assert_success(&out, "prune --dry-run");
    assert_eq!(
        stdout(&out),
        format!("would delete 3 executions\n  {e3}\n  {e2}\n  {e1}\n")
    );
    assert_eq!(table_counts(&env), counts);
    // Both: old *and* beyond the newest 6 finished ones.
    let out = env.cmd(["prune", "--older-than", "30d", "--keep", "6", "--dry-run"]);
    assert_success(&out, "prune --older-than --keep --dry-run");
    assert_eq!(stdout(&out), format!("would delete 1 execution\n  {e1}\n"));
    let out = env.cmd(["prune", "--keep", "5", "--dry-run"]);
    assert_eq!(
        stdout(&out),
        format!("would delete 2 executions\n  {e2}\n  {e1}\n")
    );
    assert_eq!(table_counts(&env), counts);

    // --older-than 30d: e1, e2, e3 (not the running one, older still); e1's definition goes.
    let (n, ev) = rows_of(&env, &[&e1, &e2, &e3]);
    assert!(n >= 5 && ev > 0, "nodes {n} events {ev}");
    let out = env.cmd(["prune", "--older-than", "30d"]);
    assert_success(&out, "prune --older-than 30d");
    assert!(
        stdout(&out).starts_with(&format!(
            "deleted 3 executions, {n} node rows, {ev} events, 1 unused definition snapshot; database "
        )),
        "{}",
        stdout(&out)
    );
    counts = [counts[0] - 3, counts[1] - n, counts[2] - ev, counts[3] - 1];
    assert_eq!(table_counts(&env), counts);
    assert!(
        env.snapshot_text(&h_old).is_none(),
        "unreferenced snapshot kept"
    );
    for h in [&h_a, &h_b, &h_gate] {
        assert!(
            env.snapshot_text(h).is_some(),
            "referenced snapshot removed"
        );
    }
    assert_eq!(
        history_ids(&env, &[]),
        vec![e7.clone(), e6.clone(), e5.clone(), e4.clone(), r.clone()]
    );

    // --workflow wf-a --keep 1: the newest finished wf-a execution stays; the running one is
    // neither counted nor deleted; wf-b is untouched.
    let out = env.cmd(["prune", "--workflow", "wf-a", "--keep", "1", "--dry-run"]);
    assert_eq!(
        stdout(&out),
        format!("would delete 2 executions\n  {e6}\n  {e4}\n")
    );
    let (n, ev) = rows_of(&env, &[&e4, &e6]);
    let out = env.cmd(["prune", "--workflow", "wf-a", "--keep", "1"]);
    assert_success(&out, "prune --workflow --keep");
    assert!(
        stdout(&out).starts_with(&format!(
            "deleted 2 executions, {n} node rows, {ev} events, 0 unused definition snapshots;"
        )),
        "{}",
        stdout(&out)
    );
    counts = [counts[0] - 2, counts[1] - n, counts[2] - ev, counts[3]];
    assert_eq!(table_counts(&env), counts);
    assert_eq!(
        history_ids(&env, &[]),
        vec![e7.clone(), e5.clone(), r.clone()]
    );

    // delete ID: one execution with its rows; its definition is no longer used.
    let (n, ev) = rows_of(&env, &[&e5]);
    let out = env.cmd(["delete", &e5]);
    assert_success(&out, "delete");
    assert!(
        stdout(&out).starts_with(&format!(
            "deleted 1 execution, {n} node rows, {ev} events, 1 unused definition snapshot;"
        )),
        "{}",
        stdout(&out)
    );
    counts = [counts[0] - 1, counts[1] - n, counts[2] - ev, counts[3] - 1];
    assert_eq!(table_counts(&env), counts);
    assert!(env.snapshot_text(&h_b).is_none());

    // A running execution is never deleted: delete refuses, prune skips it.
    let out = env.cmd(["delete", &r]);
    assert_code(&out, 2, "delete of a running execution");
    assert!(
        stderr(&out).contains("is running; stop it first"),
        "{}",
        describe(&out)
    );
    let out = env.cmd(["delete", &e7, &r]);
    assert_code(&out, 2, "delete of a finished and a running execution");
    assert_eq!(
        table_counts(&env),
        counts,
        "a refused delete deleted something"
    );
    let (n, ev) = rows_of(&env, &[&e7]);
    let out = env.cmd(["prune", "--keep", "0"]);
    assert_success(&out, "prune --keep 0");
    assert!(
        stdout(&out).starts_with(&format!(
            "deleted 1 execution, {n} node rows, {ev} events, 1 unused definition snapshot;"
        )),
        "{}",
        stdout(&out)
    );
    counts = [1, counts[1] - n, counts[2] - ev, 1];
    assert_eq!(table_counts(&env), counts);
    assert_eq!(env.execution(&r).status, "running");
    assert!(env.snapshot_text(&h_gate).is_some());
    let out = env.cmd(["prune", "--older-than", "1s"]);
    assert_success(&out, "prune with only a running execution");
    assert!(stdout(&out).starts_with("deleted 0 executions, 0 node rows, 0 events, 0 unused"));
    assert_eq!(table_counts(&env), counts);

    // Once it has ended it can go, and the tables are empty.
    env.write_file("gate", "");
    assert!(finish(running, "the gated run").success());
    let out = env.cmd(["delete", &r[..6]]);
    assert_success(&out, "delete after the end");
    assert_eq!(table_counts(&env), [0, 0, 0, 0]);
}

#[test]
fn deleting_big_executions_shrinks_the_database() {
    let env = Env::new();
    // A database path without an extension (its WAL is `history-store-wal`), given with --db.
    let db = env.path("history-store");
    let wal = env.path("history-store-wal");
    let flow = |args: &[&str]| output(env.flowrun().arg("--db").arg(&db).args(args));
    let wf = env.write_workflow(
        "big.json",
        &json!({
            "id": "big",
            "nodes": [
                code("blob", "import os\nreturn os.urandom(200000).hex()"),
                code("size", "return len(nodes['blob']['output'])")
            ]
        }),
    );
    let mut made = Vec::new();
    for _ in 0..8 {
        let out = flow(&["run", path_str(&wf), "--input", "{}", "--json"]);
        assert_success(&out, "run");
        assert_eq!(record(&out)["nodes"][1]["output"], json!(400_000));
        made.push(id_of(&out));
    }
    assert!(!env.db_path().exists(), "--db was not used");
    let before = db_and_wal_size(&db);
    assert!(before > 8 * 400_000, "database only {before} bytes");
    // The WAL is in use (checkpointed every 200 frames, it keeps the size it reached).
    assert!(
        file_size(&wal) > 512 << 10,
        "the WAL holds {} bytes",
        file_size(&wal)
    );

    let out = flow(&["prune", "--keep", "1"]);
    assert_success(&out, "prune --keep 1");
    let text = stdout(&out);
    assert!(text.starts_with("deleted 7 executions"), "{text}");
    let after = db_and_wal_size(&db);
    assert!(
        after < 2 * 1024 * 1024 && after * 3 < before,
        "database did not shrink: {before} → {after} bytes"
    );
    // The summary reports the sizes of the database and its WAL, before and after.
    let (said_before, said_after) = reported_sizes(&text);
    assert!(
        close_to(said_before, before),
        "{text} (before: {before} bytes)"
    );
    assert!(close_to(said_after, after), "{text} (after: {after} bytes)");

    let out = flow(&["history", "--json"]);
    let left: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0]["id"], json!(made[7]));
    let out = flow(&["delete", &made[7]]);
    assert_success(&out, "delete the last one");
    assert!(stdout(&out).starts_with("deleted 1 execution, 2 node rows, "));
    let last = db_and_wal_size(&db);
    assert!(
        last < after && last < 256 * 1024,
        "database did not shrink: {after} → {last} bytes"
    );
}

fn file_size(p: &Path) -> u64 {
    std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
}

/// A database file plus its WAL.
fn db_and_wal_size(db: &Path) -> u64 {
    let mut wal = db.as_os_str().to_owned();
    wal.push("-wal");
    file_size(db) + file_size(Path::new(&wal))
}

/// The `database A → B` sizes that `prune` and `delete` print, in bytes.
fn reported_sizes(text: &str) -> (f64, f64) {
    let tail = text
        .split("; database ")
        .nth(1)
        .unwrap_or_else(|| panic!("no sizes in {text:?}"));
    let (a, b) = tail.trim().split_once(" → ").unwrap();
    let bytes = |s: &str| {
        let (n, unit) = s.split_once(' ').unwrap();
        let n: f64 = n.parse().unwrap();
        n * match unit {
            "B" => 1.0,
            "KiB" => 1024.0,
            "MiB" => 1_048_576.0,
            u => panic!("unit {u:?} in {text:?}"),
        }
    };
    (bytes(a), bytes(b))
}

/// Whether a printed size (one decimal) is the actual one.
fn close_to(printed: f64, actual: u64) -> bool {
    (printed - actual as f64).abs() <= 0.051 * 1_048_576.0
}
