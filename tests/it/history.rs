//! History you can work with (issue 5): `rerun`, `resume` (from the failed node, with a changed
//! file, with pins), `logs --follow` and `show` of a running execution from a second process,
//! id prefixes, `history` filters and `--json`, `prune`/`delete` with exact row counts and a
//! shrinking database, and truncation of oversized outputs.
//!
//! Everything runs the real `flowrun` binary with real Python against a SQLite file per test.
//! Nodes that must be proved to run (or not) append their id to a "trail" file named in the
//! trigger data, so the trail says exactly which nodes ran, in which execution, in which order.

use crate::support::*;
use rusqlite::params;
use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Output, Stdio};
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// A code node.
fn code(id: &str, src: &str) -> Value {
    json!({"id": id, "type": "code", "code": src})
}

/// A code node that first appends its id to the trail file (`trigger['trail']`), then runs `body`.
fn tracked(id: &str, body: &str) -> Value {
    code(
        id,
        &format!("with open(trigger['trail'], 'a') as f:\n    f.write('{id}\\n')\n{body}"),
    )
}

/// The node ids the trail file holds, in the order they ran.
fn trail(env: &Env) -> Vec<String> {
    match std::fs::read_to_string(env.path("trail.txt")) {
        Ok(t) => t.lines().map(str::to_string).collect(),
        Err(_) => Vec::new(),
    }
}

/// Trigger data naming the trail file (and a flag file nodes may look at).
fn trail_input(env: &Env) -> String {
    json!({
        "trail": env.path("trail.txt"),
        "flag": env.path("fail.flag"),
    })
    .to_string()
}

/// The execution record a command printed with `--json`.
fn record(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("--json prints the record ({e})\n{}", describe(out)))
}

/// The id of the execution a command printed with `--json`.
fn id_of(out: &Output) -> String {
    record(out)["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no id in the record\n{}", describe(out)))
        .to_string()
}

/// `(node_id, status)` of every node row, in plan order.
fn statuses(env: &Env, id: &str) -> Vec<(String, String)> {
    env.nodes(id)
        .into_iter()
        .map(|n| (n.node_id, n.status))
        .collect()
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

/// `from_execution` of one node row.
fn from_execution(env: &Env, id: &str, node: &str) -> Option<String> {
    env.node(id, node).from_execution
}

/// `(parent_id, relation)` of an execution row.
fn parent(env: &Env, id: &str) -> (Option<String>, Option<String>) {
    let e = env.execution(id);
    (e.parent_id, e.relation)
}

fn output_of(env: &Env, id: &str, node: &str) -> Value {
    env.node(id, node).output.unwrap_or(Value::Null)
}

/// One integer from the database.
fn count(env: &Env, sql: &str) -> i64 {
    env.db().query_row(sql, [], |r| r.get(0)).unwrap()
}

/// Row counts of the four tables: executions, node_executions, events, snapshots.
fn table_counts(env: &Env) -> [i64; 4] {
    [
        count(env, "SELECT COUNT(*) FROM executions"),
        count(env, "SELECT COUNT(*) FROM node_executions"),
        count(env, "SELECT COUNT(*) FROM events"),
        count(env, "SELECT COUNT(*) FROM snapshots"),
    ]
}

/// Node and event rows of these executions: what deleting them must remove.
fn rows_of(env: &Env, ids: &[&str]) -> (i64, i64) {
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

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

const HOUR: i64 = 3_600_000;
const DAY: i64 = 24 * HOUR;

fn set_started_at(env: &Env, id: &str, at: i64) {
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
fn rename_execution(env: &Env, from: &str, to: &str) {
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
fn spawn(env: &Env, args: &[&str]) -> Child {
    env.command()
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("flowrun starts")
}

/// Waits for a background process, killing it if it takes more than 20 s.
fn finish(mut child: Child, what: &str) -> std::process::ExitStatus {
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
fn gated(id: &str, before: &str) -> Value {
    code(
        id,
        &format!(
            "import os, time\n{before}\nfor _ in range(2000):\n    if os.path.exists(trigger['gate']):\n        break\n    time.sleep(0.01)\nelse:\n    raise RuntimeError('the gate never opened')\nreturn 'through'"
        ),
    )
}

fn history_ids(env: &Env, args: &[&str]) -> Vec<String> {
    env.history_json(args)
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_string())
        .collect()
}

fn ids(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

fn write_json(env: &Env, name: &str, v: &Value) -> PathBuf {
    env.write_file(name, &v.to_string())
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("utf-8 temp path")
}

// ---------------------------------------------------------------------------------------------
// 1. rerun
// ---------------------------------------------------------------------------------------------

fn deterministic(factor: i64, version: &str) -> Value {
    json!({
        "id": "det",
        "name": "Deterministic",
        "nodes": [
            code("double", &format!("return trigger['n'] * {factor}")),
            {"id": "label", "type": "set",
             "fields": {"value": "{{ nodes.double.output }}", "version": version}},
            code("sum", "return {'sum': nodes['label']['output']['value'] + 1, 'v': nodes['label']['output']['version']}")
        ]
    })
}

fn outputs(env: &Env, id: &str) -> Vec<(String, String, Value)> {
    env.nodes(id)
        .into_iter()
        .map(|n| (n.node_id, n.status, n.output.unwrap_or(Value::Null)))
        .collect()
}

#[test]
fn rerun_reproduces_outputs_links_its_parent_and_uses_the_snapshot() {
    let env = Env::new();
    let wf = env.write_workflow("det.json", &deterministic(2, "v1"));
    let out = env.run(&wf, r#"{"n": 21}"#, &["--json"]);
    assert_success(&out, "run");
    let first = id_of(&out);
    assert_eq!(
        outputs(&env, &first),
        vec![
            ("double".into(), "success".into(), json!(42)),
            (
                "label".into(),
                "success".into(),
                json!({"value": 42, "version": "v1"})
            ),
            (
                "sum".into(),
                "success".into(),
                json!({"sum": 43, "v": "v1"})
            ),
        ]
    );

    // Same node outputs, a new execution that says which one it re-ran.
    let out = env.cmd(["rerun", &first, "--json"]);
    assert_success(&out, "rerun");
    let again = id_of(&out);
    assert_ne!(again, first);
    assert_eq!(outputs(&env, &again), outputs(&env, &first));
    assert_eq!(
        parent(&env, &again),
        (Some(first.clone()), Some("rerun".into()))
    );
    assert_eq!(parent(&env, &first), (None, None));
    let rec = record(&out);
    assert_eq!(rec["parent_id"], json!(first));
    assert_eq!(rec["relation"], "rerun");
    assert_eq!(env.execution(&again).trigger, json!({"n": 21}));
    assert_eq!(
        env.execution(&again).snapshot_hash,
        env.execution(&first).snapshot_hash
    );
    let shown = env.cmd(["show", &again]);
    assert_success(&shown, "show");
    assert!(
        stdout(&shown).contains(&format!("rerun      of {first}")),
        "show names the parent\n{}",
        stdout(&shown)
    );
    let shown = env.show_json(&again);
    assert_eq!(shown["parent_id"], json!(first));
    assert_eq!(shown["relation"], "rerun");
    let listed = env.history_json(&[]);
    let row = listed.iter().find(|e| e["id"] == json!(again)).unwrap();
    assert_eq!(row["parent_id"], json!(first));
    assert_eq!(row["relation"], "rerun");

    // --input overrides the trigger data.
    let out = env.cmd(["rerun", &first, "--input", r#"{"n": 5}"#, "--json"]);
    assert_success(&out, "rerun --input");
    let overridden = id_of(&out);
    assert_eq!(env.execution(&overridden).trigger, json!({"n": 5}));
    assert_eq!(output_of(&env, &overridden, "double"), json!(10));
    assert_eq!(
        output_of(&env, &overridden, "sum"),
        json!({"sum": 11, "v": "v1"})
    );
    assert_eq!(
        parent(&env, &overridden),
        (Some(first.clone()), Some("rerun".into()))
    );

    // The file changes on disk: rerun still runs the definition the execution ran…
    env.write_workflow("det.json", &deterministic(3, "v2"));
    let out = env.cmd(["rerun", &first, "--json"]);
    assert_success(&out, "rerun after the file changed");
    let snap = id_of(&out);
    assert_eq!(outputs(&env, &snap), outputs(&env, &first));
    assert_eq!(
        env.execution(&snap).snapshot_hash,
        env.execution(&first).snapshot_hash
    );

    // …and `--file` runs the file as it is now, still recorded as a rerun of the first.
    let out = env.cmd(["rerun", &first, "--file", path_str(&wf), "--json"]);
    assert_success(&out, "rerun --file");
    let fresh = id_of(&out);
    assert_eq!(env.execution(&fresh).trigger, json!({"n": 21}));
    assert_eq!(output_of(&env, &fresh, "double"), json!(63));
    assert_eq!(
        output_of(&env, &fresh, "sum"),
        json!({"sum": 64, "v": "v2"})
    );
    assert_ne!(
        env.execution(&fresh).snapshot_hash,
        env.execution(&first).snapshot_hash
    );
    assert_eq!(
        parent(&env, &fresh),
        (Some(first.clone()), Some("rerun".into()))
    );
    let new_def = env
        .snapshot_text(&env.execution(&fresh).snapshot_hash)
        .unwrap();
    assert!(new_def.contains("v2"), "{new_def}");
}

#[test]
fn rerun_of_a_running_or_unknown_execution_is_refused() {
    let env = Env::new();
    let out = env.cmd(["rerun", "0123456789abcdef"]);
    assert_code(&out, 2, "rerun of an unknown id");
    assert!(stderr(&out).contains("no execution matches '0123456789abcdef'"));
    let out = env.cmd(["resume", "0123456789abcdef"]);
    assert_code(&out, 2, "resume of an unknown id");
    assert_eq!(env.execution_count(), 0);

    let wf = env.write_workflow(
        "gate.json",
        &json!({"id": "gate", "nodes": [gated("wait", "")]}),
    );
    let input = json!({"gate": env.path("gate")}).to_string();
    let run = spawn(&env, &["run", path_str(&wf), "--input", &input]);
    let id = wait_for("the execution row", || {
        env.try_execution_ids().and_then(|ids| ids.first().cloned())
    });
    for verb in ["rerun", "resume"] {
        let out = env.cmd([verb, &id]);
        assert_code(&out, 2, &format!("{verb} of a running execution"));
        assert!(
            stderr(&out).contains("is still running"),
            "{}",
            describe(&out)
        );
    }
    env.write_file("gate", "");
    assert!(finish(run, "the gated run").success());
    assert_eq!(env.execution_count(), 1);
}

// ---------------------------------------------------------------------------------------------
// 2. resume from the failed node
// ---------------------------------------------------------------------------------------------

/// n1 → n2 → n3 → n4, each appending to the trail; n3 fails while the flag file exists. n1's
/// output is different on every run (so a reused output is told from a recomputed one).
fn chain(env: &Env) -> PathBuf {
    env.write_workflow(
        "chain.json",
        &json!({
            "id": "chain",
            "nodes": [
                tracked("n1", "import uuid\nreturn {'token': uuid.uuid4().hex}"),
                tracked("n2", "return {'token': nodes['n1']['output']['token'], 'step': 2}"),
                tracked("n3", "import os\nif os.path.exists(trigger['flag']):\n    raise ValueError('flag is set')\nreturn nodes['n2']['output']['step'] + 1"),
                tracked("n4", "return {'token': nodes['n2']['output']['token'], 'step': nodes['n3']['output'] + 1}")
            ]
        }),
    )
}

#[test]
fn resume_reruns_only_the_failed_node_and_later_ones() {
    let env = Env::new();
    let wf = chain(&env);
    env.write_file("fail.flag", "");
    let out = env.run(&wf, &trail_input(&env), &["--json"]);
    assert_code(&out, 1, "run with n3 failing");
    let first = id_of(&out);
    assert_eq!(trail(&env), ids(&["n1", "n2", "n3"]));
    assert_eq!(
        statuses(&env, &first),
        pairs(&[("n1", "success"), ("n2", "success"), ("n3", "error")])
    );
    let token = output_of(&env, &first, "n1")["token"].clone();
    assert!(token.is_string());

    // Still failing: only n3 runs again, n1 and n2 come from the first execution.
    let out = env.cmd(["resume", &first, "--json"]);
    assert_code(&out, 1, "resume while n3 still fails");
    let second = id_of(&out);
    assert_eq!(trail(&env), ids(&["n1", "n2", "n3", "n3"]));
    assert_eq!(
        statuses(&env, &second),
        pairs(&[("n1", "reused"), ("n2", "reused"), ("n3", "error")])
    );
    assert_eq!(from_execution(&env, &second, "n1"), Some(first.clone()));
    assert_eq!(from_execution(&env, &second, "n2"), Some(first.clone()));
    assert_eq!(from_execution(&env, &second, "n3"), None);
    assert_eq!(
        parent(&env, &second),
        (Some(first.clone()), Some("resume".into()))
    );
    let err = stderr(&out);
    assert!(
        err.contains(&format!("resume: 'n3' runs (it ended error in {first})")),
        "{err}"
    );
    assert!(
        err.contains(&format!("resume: 'n4' runs (it did not run in {first})")),
        "{err}"
    );
    assert!(
        err.contains(&format!("resume: reusing n1, n2 from {first}")),
        "{err}"
    );

    // Fixed: resuming the resume runs n3 and n4 once; the reused nodes still point at the
    // execution that really produced them, not at the resume in between.
    std::fs::remove_file(env.path("fail.flag")).unwrap();
    let out = env.cmd(["resume", &second, "--json"]);
    assert_success(&out, "resume after the fix");
    let third = id_of(&out);
    assert_eq!(trail(&env), ids(&["n1", "n2", "n3", "n3", "n3", "n4"]));
    assert_eq!(
        statuses(&env, &third),
        pairs(&[
            ("n1", "reused"),
            ("n2", "reused"),
            ("n3", "success"),
            ("n4", "success")
        ])
    );
    assert_eq!(from_execution(&env, &third, "n1"), Some(first.clone()));
    assert_eq!(from_execution(&env, &third, "n2"), Some(first.clone()));
    assert_eq!(from_execution(&env, &third, "n3"), None);
    assert_eq!(
        parent(&env, &third),
        (Some(second.clone()), Some("resume".into()))
    );
    // Downstream saw the reused outputs, not recomputed ones.
    assert_eq!(output_of(&env, &third, "n1")["token"], token);
    assert_eq!(
        output_of(&env, &third, "n4"),
        json!({"token": token, "step": 4})
    );
    assert_eq!(
        env.execution(&third).output,
        Some(json!({"token": token, "step": 4}))
    );
    let shown = env.cmd(["show", &third]);
    assert_success(&shown, "show of the resume");
    let text = stdout(&shown);
    assert!(text.contains(&format!("resume     of {second}")), "{text}");
    for node in ["n1", "n2"] {
        let line = text
            .lines()
            .find(|l| l.starts_with(&format!("● {node}  reused")))
            .unwrap_or_else(|| panic!("no reused line for {node}\n{text}"));
        assert!(
            line.ends_with(&format!("(from execution {first})")),
            "{line}"
        );
    }
    let shown = env.show_json(&third);
    let nodes = shown["nodes"].as_array().unwrap();
    assert_eq!(nodes[0]["from_execution"], json!(first));
    assert_eq!(nodes[3]["from_execution"], Value::Null);

    // Resuming a success reuses everything, each from its producer; nothing runs.
    let out = env.cmd(["resume", &third, "--json"]);
    assert_success(&out, "resume of a success");
    let fourth = id_of(&out);
    assert_eq!(trail(&env).len(), 6, "nothing ran: {:?}", trail(&env));
    assert_eq!(
        statuses(&env, &fourth),
        pairs(&[
            ("n1", "reused"),
            ("n2", "reused"),
            ("n3", "reused"),
            ("n4", "reused")
        ])
    );
    assert_eq!(from_execution(&env, &fourth, "n1"), Some(first.clone()));
    assert_eq!(from_execution(&env, &fourth, "n3"), Some(third.clone()));
    assert_eq!(from_execution(&env, &fourth, "n4"), Some(third.clone()));
    assert_eq!(env.execution(&fourth).output, env.execution(&third).output);
}

#[test]
fn resume_with_input_gives_the_running_nodes_the_new_trigger() {
    let env = Env::new();
    // `a` does not read the trigger (it is reused); `b` and `c` do (they run again, since the
    // trigger data changed: same definition, different inputs).
    let wf = env.write_workflow(
        "inp.json",
        &json!({
            "id": "inp",
            "nodes": [
                { "id": "a", "type": "set", "fields": { "k": "constant" } },
                tracked("b", "return 'b'"),
                tracked("c", "if trigger['fail']:\n    raise ValueError('asked to fail')\nreturn trigger['fail']"),
            ]
        }),
    );
    let mut input: Value = serde_json::from_str(&trail_input(&env)).unwrap();
    input["fail"] = json!(true);
    let out = env.run(&wf, &input.to_string(), &["--json"]);
    assert_code(&out, 1, "run asked to fail");
    let first = id_of(&out);
    input["fail"] = json!(false);
    let out = env.cmd(["resume", &first, "--input", &input.to_string(), "--json"]);
    assert_success(&out, "resume with fail: false");
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("'b' runs (it reads the trigger data, which changed)"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let second = id_of(&out);
    assert_eq!(trail(&env), ids(&["b", "c", "b", "c"]));
    assert_eq!(
        statuses(&env, &second),
        pairs(&[("a", "reused"), ("b", "success"), ("c", "success")])
    );
    assert_eq!(output_of(&env, &second, "c"), json!(false));
    assert_eq!(env.execution(&second).trigger["fail"], json!(false));

    // The same trigger again: nothing that succeeded runs again.
    let out = env.cmd(["resume", &second, "--input", &input.to_string(), "--json"]);
    assert_success(&out, "resume with the same input");
    let third = id_of(&out);
    assert_eq!(trail(&env), ids(&["b", "c", "b", "c"]));
    assert_eq!(
        statuses(&env, &third),
        pairs(&[("a", "reused"), ("b", "reused"), ("c", "reused")])
    );
}

// ---------------------------------------------------------------------------------------------
// 3. resume with a changed file
// ---------------------------------------------------------------------------------------------

/// a → b → c, and d (after a only, independent of b and c); c fails until fixed.
fn diamond(b_body: &str, c_body: &str) -> Value {
    json!({
        "id": "edit",
        "nodes": [
            tracked("a", "return 10"),
            tracked("b", b_body),
            tracked("c", c_body),
            tracked("d", "return nodes['a']['output'] * 100")
        ]
    })
}

#[test]
fn resume_with_a_changed_file_reruns_the_changed_node_and_its_dependants_only() {
    let env = Env::new();
    let b1 = "return nodes['a']['output'] + 1";
    let c_bug = "return nodes['b']['output'] / 0";
    let c_fixed = "return nodes['b']['output'] * 2";
    let wf = env.write_workflow("edit.json", &diamond(b1, c_bug));
    let out = env.run(&wf, &trail_input(&env), &["--json"]);
    assert_code(&out, 1, "run with a bug in c");
    let first = id_of(&out);
    assert_eq!(trail(&env), ids(&["a", "b", "c"]));

    // Fix c in the file: c runs (changed and failed), d never ran; a and b are reused.
    env.write_workflow("edit.json", &diamond(b1, c_fixed));
    let out = env.cmd(["resume", &first, "--file", path_str(&wf), "--json"]);
    assert_success(&out, "resume with c fixed");
    let second = id_of(&out);
    assert_eq!(trail(&env), ids(&["a", "b", "c", "c", "d"]));
    assert_eq!(
        statuses(&env, &second),
        pairs(&[
            ("a", "reused"),
            ("b", "reused"),
            ("c", "success"),
            ("d", "success")
        ])
    );
    assert_eq!(output_of(&env, &second, "c"), json!(22));
    assert!(
        stderr(&out).contains("resume: 'c' runs (its definition changed)"),
        "{}",
        stderr(&out)
    );

    // Change b: b and c (its dependant) run; a and d (independent of b) are reused, pointing
    // at the executions that produced them.
    let b2 = "return nodes['a']['output'] + 5";
    env.write_workflow("edit.json", &diamond(b2, c_fixed));
    let out = env.cmd(["resume", &second, "--file", path_str(&wf), "--json"]);
    assert_success(&out, "resume with b changed");
    let third = id_of(&out);
    assert_eq!(trail(&env), ids(&["a", "b", "c", "c", "d", "b", "c"]));
    assert_eq!(
        statuses(&env, &third),
        pairs(&[
            ("a", "reused"),
            ("b", "success"),
            ("c", "success"),
            ("d", "reused")
        ])
    );
    assert_eq!(from_execution(&env, &third, "a"), Some(first.clone()));
    assert_eq!(from_execution(&env, &third, "d"), Some(second.clone()));
    assert_eq!(output_of(&env, &third, "b"), json!(15));
    assert_eq!(output_of(&env, &third, "c"), json!(30));
    assert_eq!(output_of(&env, &third, "d"), json!(1000));
    let err = stderr(&out);
    assert!(
        err.contains("resume: 'b' runs (its definition changed)"),
        "{err}"
    );
    assert!(err.contains("resume: 'c' runs ('b' runs again)"), "{err}");
    // The new definition is what the execution ran.
    let def = env
        .snapshot_text(&env.execution(&third).snapshot_hash)
        .unwrap();
    assert!(def.contains("+ 5"), "{def}");

    // A new node in the file runs; everything unchanged is reused.
    let mut wf3 = diamond(b2, c_fixed);
    wf3["nodes"].as_array_mut().unwrap().push(tracked(
        "e",
        "return nodes['c']['output'] + nodes['d']['output']",
    ));
    env.write_workflow("edit.json", &wf3);
    let out = env.cmd(["resume", &third, "--file", path_str(&wf), "--json"]);
    assert_success(&out, "resume with a new node");
    let fourth = id_of(&out);
    assert_eq!(trail(&env).last().map(String::as_str), Some("e"));
    assert_eq!(trail(&env).len(), 8);
    assert_eq!(output_of(&env, &fourth, "e"), json!(1030));
    assert!(stderr(&out).contains("resume: 'e' runs (it is new)"));
}

// ---------------------------------------------------------------------------------------------
// 4. pins
// ---------------------------------------------------------------------------------------------

#[test]
fn a_definition_pinned_node_stays_pinned_on_resume_and_is_never_run() {
    let env = Env::new();
    let marker = env.path("pinned-ran");
    let mut src = code(
        "src",
        &format!(
            "open({:?}, 'w').write('ran')\nreturn {{'v': 'real'}}",
            marker.display().to_string()
        ),
    );
    src["pinned"] = json!({"v": "pinned-value"});
    let wf = env.write_workflow(
        "pinres.json",
        &json!({
            "id": "pinres",
            "nodes": [
                src,
                tracked("mid", "return nodes['src']['output']['v'] + '!'"),
                tracked("gate", "import os\nif os.path.exists(trigger['flag']):\n    raise ValueError('flag')\nreturn nodes['mid']['output']")
            ]
        }),
    );
    env.write_file("fail.flag", "");
    let out = env.run(&wf, &trail_input(&env), &["--json"]);
    assert_code(&out, 1, "run failing at gate");
    let first = id_of(&out);
    assert_eq!(
        statuses(&env, &first),
        pairs(&[("src", "pinned"), ("mid", "success"), ("gate", "error")])
    );
    std::fs::remove_file(env.path("fail.flag")).unwrap();
    let out = env.cmd(["resume", &first, "--json"]);
    assert_success(&out, "resume");
    let second = id_of(&out);
    assert_eq!(
        statuses(&env, &second),
        pairs(&[("src", "pinned"), ("mid", "reused"), ("gate", "success")])
    );
    assert_eq!(from_execution(&env, &second, "src"), None);
    assert_eq!(from_execution(&env, &second, "mid"), Some(first.clone()));
    assert_eq!(
        output_of(&env, &second, "src"),
        json!({"v": "pinned-value"})
    );
    assert_eq!(output_of(&env, &second, "gate"), json!("pinned-value!"));
    assert_eq!(trail(&env), ids(&["mid", "gate", "gate"]));
    assert!(!marker.exists(), "the pinned node's code ran");
    let shown = stdout(&env.cmd(["show", &second]));
    assert!(shown.contains("● src  pinned"), "{shown}");

    // A new pinned value in the file: the node stays pinned, what reads it runs again.
    let mut changed: Value = serde_json::from_str(&std::fs::read_to_string(&wf).unwrap()).unwrap();
    changed["nodes"][0]["pinned"] = json!({"v": "new-pin"});
    env.write_workflow("pinres.json", &changed);
    let out = env.cmd(["resume", &second, "--file", path_str(&wf), "--json"]);
    assert_success(&out, "resume with a new pinned value");
    let third = id_of(&out);
    assert_eq!(
        statuses(&env, &third),
        pairs(&[("src", "pinned"), ("mid", "success"), ("gate", "success")])
    );
    assert_eq!(output_of(&env, &third, "gate"), json!("new-pin!"));
    assert_eq!(trail(&env), ids(&["mid", "gate", "gate", "mid", "gate"]));
    assert!(
        stderr(&out).contains("resume: 'mid' runs ('src' is pinned to a new output)"),
        "{}",
        stderr(&out)
    );
    assert!(!marker.exists(), "the pinned node's code ran");
}

#[test]
fn pin_on_rerun_and_resume_replaces_the_node_and_downstream_sees_it() {
    let env = Env::new();
    let wf = env.write_workflow(
        "pins.json",
        &json!({
            "id": "pins",
            "nodes": [
                tracked("src", "return {'v': 1}"),
                tracked("mid", "return nodes['src']['output']['v'] * 10"),
                tracked("gate", "import os\nif os.path.exists(trigger['flag']):\n    raise ValueError('flag')\nreturn 'open'"),
                tracked("end", "return nodes['mid']['output'] + 1")
            ]
        }),
    );
    let pin = write_json(&env, "src.json", &json!({"v": 5}));
    let pin_arg = format!("src={}", pin.display());
    let out = env.run(&wf, &trail_input(&env), &["--json"]);
    assert_success(&out, "run");
    let first = id_of(&out);
    assert_eq!(output_of(&env, &first, "end"), json!(11));

    // rerun --pin: src does not run, everything downstream sees the pinned output.
    std::fs::remove_file(env.path("trail.txt")).unwrap();
    let out = env.cmd(["rerun", &first, "--pin", &pin_arg, "--json"]);
    assert_success(&out, "rerun --pin");
    let pinned = id_of(&out);
    assert_eq!(trail(&env), ids(&["mid", "gate", "end"]));
    assert_eq!(
        statuses(&env, &pinned),
        pairs(&[
            ("src", "pinned"),
            ("mid", "success"),
            ("gate", "success"),
            ("end", "success")
        ])
    );
    assert_eq!(output_of(&env, &pinned, "end"), json!(51));

    // resume --pin of a failed execution: the pin wins over reuse, and the nodes that read the
    // pinned node run again instead of reusing outputs computed from the old value.
    env.write_file("fail.flag", "");
    let out = env.run(&wf, &trail_input(&env), &["--json"]);
    assert_code(&out, 1, "run failing at gate");
    let failed = id_of(&out);
    std::fs::remove_file(env.path("fail.flag")).unwrap();
    std::fs::remove_file(env.path("trail.txt")).unwrap();
    let out = env.cmd(["resume", &failed, "--pin", &pin_arg, "--json"]);
    assert_success(&out, "resume --pin");
    let resumed = id_of(&out);
    assert_eq!(
        statuses(&env, &resumed),
        pairs(&[
            ("src", "pinned"),
            ("mid", "success"),
            ("gate", "success"),
            ("end", "success")
        ])
    );
    assert_eq!(trail(&env), ids(&["mid", "gate", "end"]));
    assert_eq!(output_of(&env, &resumed, "mid"), json!(50));
    assert_eq!(output_of(&env, &resumed, "end"), json!(51));
    assert_eq!(from_execution(&env, &resumed, "src"), None);
    assert!(
        stderr(&out).contains("resume: 'mid' runs ('src' is pinned to a new output)"),
        "{}",
        stderr(&out)
    );

    // Pinned to the output it had: what read it is reused.
    env.write_file("fail.flag", "");
    let out = env.run(&wf, &trail_input(&env), &["--json"]);
    assert_code(&out, 1, "run failing at gate");
    let failed = id_of(&out);
    std::fs::remove_file(env.path("fail.flag")).unwrap();
    std::fs::remove_file(env.path("trail.txt")).unwrap();
    let same = write_json(&env, "same.json", &json!({"v": 1}));
    let out = env.cmd([
        "resume",
        &failed,
        "--pin",
        &format!("src={}", same.display()),
        "--json",
    ]);
    assert_success(&out, "resume --pin with the recorded output");
    let resumed = id_of(&out);
    assert_eq!(
        statuses(&env, &resumed),
        pairs(&[
            ("src", "pinned"),
            ("mid", "reused"),
            ("gate", "success"),
            ("end", "success")
        ])
    );
    assert_eq!(trail(&env), ids(&["gate", "end"]));
    assert_eq!(output_of(&env, &resumed, "end"), json!(11));

    // A pin for a node that never ran in the resumed execution.
    let end_pin = write_json(&env, "end.json", &json!("pinned end"));
    env.write_file("fail.flag", "");
    let out = env.run(&wf, &trail_input(&env), &["--json"]);
    assert_code(&out, 1, "run failing at gate");
    let failed = id_of(&out);
    std::fs::remove_file(env.path("fail.flag")).unwrap();
    std::fs::remove_file(env.path("trail.txt")).unwrap();
    let out = env.cmd([
        "resume",
        &failed,
        "--pin",
        &format!("end={}", end_pin.display()),
        "--json",
    ]);
    assert_success(&out, "resume --pin of a node that did not run");
    let resumed = id_of(&out);
    assert_eq!(
        statuses(&env, &resumed),
        pairs(&[
            ("src", "reused"),
            ("mid", "reused"),
            ("gate", "success"),
            ("end", "pinned")
        ])
    );
    assert_eq!(trail(&env), ids(&["gate"]));
    assert_eq!(env.execution(&resumed).output, Some(json!("pinned end")));
}

// ---------------------------------------------------------------------------------------------
// 5. logs --follow and show of a running execution, from a second process
// ---------------------------------------------------------------------------------------------

#[test]
fn follow_and_show_a_running_execution_from_another_process() {
    let env = Env::new();
    let wf = env.write_workflow(
        "live.json",
        &json!({
            "id": "live",
            "nodes": [
                code("first", "print('line 1')\nreturn 1"),
                gated("slow", "import sys\nfor i in (2, 3, 4):\n    print('line %d' % i)\n    time.sleep(0.05)\nsys.stderr.write('line 5\\n')"),
                code("last", "import time\nfor i in (6, 7, 8):\n    print('line %d' % i)\n    time.sleep(0.05)\nreturn 3")
            ]
        }),
    );
    let input = json!({"gate": env.path("gate")}).to_string();
    let run = spawn(&env, &["run", path_str(&wf), "--input", &input]);
    let id = wait_for("the execution row", || {
        env.try_execution_ids().and_then(|ids| ids.first().cloned())
    });
    // The run is held at the gate inside `slow`.
    wait_for("'slow' to start", || {
        env.try_node(&id, "slow").filter(|n| n.status == "running")
    });

    let out = env.cmd(["show", &id]);
    assert_success(&out, "show during the run");
    let text = stdout(&out);
    assert!(
        text.starts_with(&format!("execution {id}  running")),
        "{text}"
    );
    assert!(text.contains("✓ first  success"), "{text}");
    assert!(text.contains("… slow  running"), "{text}");
    // The node still to come is listed as waiting, in plan order after the running one.
    assert!(text.contains("· last  waiting"), "{text}");
    assert!(
        text.find("… slow").unwrap() < text.find("· last").unwrap(),
        "{text}"
    );
    let shown = env.show_json(&id);
    assert_eq!(shown["status"], "running");
    let nodes = record_node_statuses(&shown);
    // The JSON view lists the planned node still to come as pending.
    assert_eq!(
        nodes,
        pairs(&[
            ("first", "success"),
            ("slow", "running"),
            ("last", "pending")
        ])
    );
    assert_eq!(shown["nodes"][0]["output"], json!(1));

    // Follow by a unique prefix; it prints what is there and keeps going while the run waits.
    let mut follow = spawn(&env, &["logs", &id[..8], "--follow"]);
    let mut reader = BufReader::new(follow.stdout.take().unwrap());
    let mut seen = Vec::new();
    while !seen.iter().any(|l: &String| l.ends_with("| line 5")) {
        let mut line = String::new();
        assert!(
            reader.read_line(&mut line).unwrap() > 0,
            "follow ended early: {seen:?}"
        );
        seen.push(line.trim_end().to_string());
    }
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        follow.try_wait().unwrap().is_none(),
        "logs --follow ended while the execution was running"
    );
    assert_eq!(env.execution(&id).status, "running");

    // Let the run end; follow prints the rest and exits by itself.
    env.write_file("gate", "");
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut reader, &mut rest).unwrap();
    assert!(finish(follow, "logs --follow").success());
    assert!(finish(run, "the run").success());
    seen.extend(rest.lines().map(str::to_string));
    let expected = [
        "first | line 1",
        "slow | line 2",
        "slow | line 3",
        "slow | line 4",
        "slow [stderr] | line 5",
        "last | line 6",
        "last | line 7",
        "last | line 8",
    ];
    assert_eq!(seen.len(), expected.len(), "{seen:#?}");
    for (line, want) in seen.iter().zip(expected) {
        assert!(line.ends_with(want), "{line:?} should end with {want:?}");
    }
    let plain = env.cmd(["logs", &id]);
    assert_success(&plain, "logs");
    assert_eq!(stdout(&plain).lines().collect::<Vec<_>>(), seen);
    assert_eq!(env.execution(&id).status, "success");
    let shown = stdout(&env.cmd(["show", &id]));
    assert!(shown.contains("✓ last  success"), "{shown}");
}

// ---------------------------------------------------------------------------------------------
// 6. id prefixes
// ---------------------------------------------------------------------------------------------

#[test]
fn prefixes_resolve_when_unique_and_fail_when_ambiguous_or_unknown() {
    let env = Env::new();
    let wf = env.write_workflow(
        "p.json",
        &json!({"id": "p", "nodes": [code("say", "print('said ' + trigger['w'])\nreturn trigger['w']")]}),
    );
    for (w, new_id) in [
        ("one", "abc1000000000001"),
        ("two", "abc2000000000002"),
        ("three", "fed3000000000003"),
    ] {
        let out = env.run(&wf, &json!({"w": w}).to_string(), &["--json"]);
        assert_success(&out, "run");
        rename_execution(&env, &id_of(&out), new_id);
    }

    // Unique prefixes.
    let out = env.cmd(["show", "abc1", "--json"]);
    assert_success(&out, "show by prefix");
    assert_eq!(record(&out)["id"], "abc1000000000001");
    assert_eq!(record(&out)["trigger"], json!({"w": "one"}));
    let out = env.cmd(["show", "fed"]);
    assert_success(&out, "show by a short prefix");
    assert!(stdout(&out).starts_with("execution fed3000000000003"));
    let out = env.cmd(["logs", "abc2"]);
    assert_success(&out, "logs by prefix");
    assert!(
        stdout(&out).trim_end().ends_with("say | said two"),
        "{}",
        stdout(&out)
    );
    let out = env.cmd(["rerun", "abc2", "--json"]);
    assert_success(&out, "rerun by prefix");
    let rerun = id_of(&out);
    assert_eq!(
        parent(&env, &rerun),
        (Some("abc2000000000002".into()), Some("rerun".into()))
    );
    assert_eq!(env.execution(&rerun).output, Some(json!("two")));
    // A known id for it too, so the prefixes below mean the same on every run.
    rename_execution(&env, &rerun, "fed4000000000004");

    // Ambiguous: exit 2, naming the candidates, for every command that takes an id.
    for args in [
        vec!["show", "abc"],
        vec!["logs", "abc"],
        vec!["rerun", "abc"],
        vec!["resume", "abc"],
        vec!["delete", "abc"],
        vec!["stop", "abc"],
    ] {
        let out = env.cmd(&args);
        assert_code(&out, 2, &format!("{args:?} with an ambiguous prefix"));
        assert!(
            stderr(&out).lines().any(|l| l
                == "error: 'abc' matches several executions: abc1000000000001, abc2000000000002"),
            "{args:?}\n{}",
            describe(&out)
        );
    }
    // Unknown: exit 2, "no execution matches".
    for args in [
        vec!["show", "nosuch"],
        vec!["logs", "nosuch"],
        vec!["rerun", "nosuch"],
        vec!["delete", "nosuch"],
        vec!["show", "0123456789abcdef"],
    ] {
        let out = env.cmd(&args);
        assert_code(&out, 2, &format!("{args:?} with an unknown id"));
        assert!(
            stderr(&out).contains(&format!("no execution matches '{}'", args[1])),
            "{args:?}\n{}",
            describe(&out)
        );
    }
    // Nothing was deleted or started by the refused commands.
    assert_eq!(env.execution_count(), 4);

    // More than five candidates: the first five, then "…".
    {
        let db = env.db_rw();
        for i in 3..=7 {
            db.execute_batch(&format!(
                "CREATE TEMP TABLE t AS SELECT * FROM executions WHERE id = 'abc1000000000001';
                 UPDATE t SET id = 'abc{i}00000000000{i}';
                 INSERT INTO executions SELECT * FROM t;
                 DROP TABLE t;"
            ))
            .unwrap();
        }
    }
    let out = env.cmd(["show", "abc"]);
    assert_code(&out, 2, "show with seven candidates");
    assert!(
        stderr(&out).contains(
            "abc1000000000001, abc2000000000002, abc3000000000003, abc4000000000004, abc5000000000005, …"
        ),
        "{}",
        describe(&out)
    );

    // delete by prefix; afterwards a shorter prefix can become unique.
    let out = env.cmd(["delete", "abc2", "abc3", "abc4", "abc5", "abc6", "abc7"]);
    assert_success(&out, "delete by prefixes");
    assert!(
        stdout(&out).starts_with("deleted 6 executions"),
        "{}",
        stdout(&out)
    );
    assert_eq!(rows_of(&env, &["abc2000000000002"]), (0, 0));
    assert_eq!(env.execution_count(), 3);
    let out = env.cmd(["show", "ab", "--json"]);
    assert_success(&out, "show with a prefix that became unique");
    assert_eq!(record(&out)["id"], "abc1000000000001");
}

// ---------------------------------------------------------------------------------------------
// 7. history filters and --json
// ---------------------------------------------------------------------------------------------

#[test]
fn history_filters_by_workflow_status_and_time_and_prints_stable_json() {
    let env = Env::new();
    let ok = env.write_workflow(
        "ok.json",
        &json!({"id": "wf-ok", "name": "OK flow", "nodes": [code("x", "return 1")]}),
    );
    let bad = env.write_workflow(
        "bad.json",
        &json!({"id": "wf-bad", "nodes": [code("boom", "raise ValueError('nope')")]}),
    );
    let mut made = Vec::new();
    for (f, code_) in [(&ok, 0), (&ok, 0), (&bad, 1), (&ok, 0)] {
        let out = env.run(f, "{}", &["--json"]);
        assert_code(&out, code_, "run");
        made.push(id_of(&out));
    }
    let (old_2020, three_h, bad_id, newest) = (&made[0], &made[1], &made[2], &made[3]);
    let t2020 = 1_579_082_400_000; // 2020-01-15T10:00:00Z
    set_started_at(&env, old_2020, t2020);
    set_started_at(&env, three_h, now_ms() - 3 * HOUR);

    // Newest first.
    assert_eq!(
        history_ids(&env, &[]),
        vec![
            newest.clone(),
            bad_id.clone(),
            three_h.clone(),
            old_2020.clone()
        ]
    );
    assert_eq!(
        history_ids(&env, &["-n", "2"]),
        vec![newest.clone(), bad_id.clone()]
    );
    assert_eq!(history_ids(&env, &["--limit", "1"]), vec![newest.clone()]);
    assert_eq!(
        history_ids(&env, &["--workflow", "wf-ok"]),
        vec![newest.clone(), three_h.clone(), old_2020.clone()]
    );
    assert_eq!(
        history_ids(&env, &["--workflow", "wf-bad"]),
        vec![bad_id.clone()]
    );
    assert!(history_ids(&env, &["--workflow", "nosuch"]).is_empty());
    assert_eq!(
        history_ids(&env, &["--status", "error"]),
        vec![bad_id.clone()]
    );
    assert_eq!(
        history_ids(&env, &["--status", "success", "-n", "2"]),
        vec![newest.clone(), three_h.clone()]
    );
    assert!(history_ids(&env, &["--status", "running"]).is_empty());
    assert_eq!(
        history_ids(&env, &["--since", "1h"]),
        vec![newest.clone(), bad_id.clone()]
    );
    assert_eq!(
        history_ids(&env, &["--since", "4h", "--until", "1h"]),
        vec![three_h.clone()]
    );
    assert_eq!(
        history_ids(&env, &["--until", "1h"]),
        vec![three_h.clone(), old_2020.clone()]
    );
    assert_eq!(
        history_ids(&env, &["--since", "2020-01-15", "--until", "2020-01-16"]),
        vec![old_2020.clone()]
    );
    assert_eq!(
        history_ids(
            &env,
            &[
                "--since",
                "2020-01-15T10:00:00Z",
                "--until",
                "2020-01-15T10:00:01Z"
            ]
        ),
        vec![old_2020.clone()],
        "--since is inclusive"
    );
    assert!(
        history_ids(
            &env,
            &["--since", "2020-01-15T10:00:01Z", "--until", "2021-01-01"]
        )
        .is_empty()
    );
    assert!(
        history_ids(
            &env,
            &["--since", "2020-01-01", "--until", "2020-01-15T10:00:00Z"]
        )
        .is_empty(),
        "--until is exclusive"
    );
    assert_eq!(
        history_ids(
            &env,
            &[
                "--workflow",
                "wf-ok",
                "--status",
                "success",
                "--since",
                "2021-01-01"
            ]
        ),
        vec![newest.clone(), three_h.clone()]
    );

    // The documented fields, exactly.
    let listed = env.history_json(&[]);
    let want: std::collections::BTreeSet<&str> = [
        "id",
        "workflow_id",
        "workflow_name",
        "status",
        "mode",
        "started_at",
        "finished_at",
        "duration_ms",
        "error",
        "parent_id",
        "relation",
        "input_tokens",
        "output_tokens",
        "cost_usd",
    ]
    .into_iter()
    .collect();
    for e in &listed {
        let keys: std::collections::BTreeSet<&str> =
            e.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(keys, want, "{e}");
    }
    let okrow = &listed[0];
    assert_eq!(okrow["workflow_id"], "wf-ok");
    assert_eq!(okrow["workflow_name"], "OK flow");
    assert_eq!(okrow["status"], "success");
    assert_eq!(okrow["mode"], "test");
    assert!(okrow["started_at"].as_i64().unwrap() > t2020);
    assert!(okrow["finished_at"].as_i64().unwrap() >= okrow["started_at"].as_i64().unwrap());
    assert!(okrow["duration_ms"].as_f64().unwrap() > 0.0);
    for k in [
        "error",
        "parent_id",
        "relation",
        "input_tokens",
        "output_tokens",
        "cost_usd",
    ] {
        assert_eq!(okrow[k], Value::Null, "{k}: {okrow}");
    }
    let badrow = &listed[1];
    assert_eq!(badrow["status"], "error");
    assert_eq!(badrow["workflow_name"], "wf-bad");
    assert_eq!(badrow["error"]["type"], "ValueError", "{badrow}");
    assert!(
        badrow["error"]["message"]
            .as_str()
            .unwrap()
            .contains("nope")
    );
    assert_eq!(listed[3]["started_at"], json!(t2020));

    // The table: one line per execution plus the header, filters applied.
    let out = env.cmd(["history", "--workflow", "wf-ok", "--since", "2021-01-01"]);
    assert_success(&out, "history");
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert!(lines[0].starts_with("ID"), "{text}");
    assert!(
        lines[1].starts_with(newest.as_str()) && lines[1].contains("success"),
        "{text}"
    );
    assert!(
        lines[2].starts_with(three_h.as_str()) && lines[2].contains("3 h ago"),
        "{text}"
    );

    // Bad filter values are usage errors.
    for args in [
        ["history", "--status", "nosuch"],
        ["history", "--since", "yesterday"],
        ["history", "--until", "3x"],
    ] {
        let out = env.cmd(args);
        assert_code(&out, 2, &format!("{args:?}"));
    }
}

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
    assert!(
        file_size(&wal) > 1 << 20,
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

// ---------------------------------------------------------------------------------------------
// 9. truncation
// ---------------------------------------------------------------------------------------------

#[test]
fn an_oversized_output_is_stored_truncated_but_downstream_gets_it_whole() {
    let env = Env::new();
    let size = 1_200_000;
    let wf = env.write_workflow(
        "huge.json",
        &json!({
            "id": "huge",
            "nodes": [
                tracked("big", &format!("return 'x' * {size}")),
                tracked("measure", "return len(nodes['big']['output'])"),
                tracked("gate", "import os\nif os.path.exists(trigger['flag']):\n    raise ValueError('flag')\nreturn nodes['measure']['output']")
            ]
        }),
    );
    env.write_file("fail.flag", "");
    let out = env.run(&wf, &trail_input(&env), &["--json"]);
    assert_code(&out, 1, "run failing at gate");
    let first = id_of(&out);
    let stored = output_of(&env, &first, "big");
    assert_eq!(
        stored["$flowrun_truncated"],
        json!(true),
        "{}",
        &stored.to_string()[..200.min(stored.to_string().len())]
    );
    assert!(
        stored["bytes"].as_u64().unwrap() >= size,
        "bytes: {}",
        stored["bytes"]
    );
    assert!(stored["preview"].as_str().unwrap().starts_with("\"xxx"));
    let raw: i64 = count(
        &env,
        &format!("SELECT MAX(LENGTH(output)) FROM node_executions WHERE execution_id = '{first}'"),
    );
    assert!(raw < 64 * 1024, "a stored output is {raw} bytes");
    assert_eq!(output_of(&env, &first, "measure"), json!(size));
    let shown = env.cmd(["show", &first]);
    assert_success(&shown, "show");
    let text = stdout(&shown);
    assert!(
        text.contains(&format!("[truncated: {} bytes in all", stored["bytes"])),
        "{}",
        &text[..text.len().min(2000)]
    );

    // A truncated output cannot be reused: resume runs the node again, and downstream again
    // gets the whole value.
    std::fs::remove_file(env.path("fail.flag")).unwrap();
    let out = env.cmd(["resume", &first, "--json"]);
    assert_success(&out, "resume");
    let second = id_of(&out);
    assert_eq!(
        trail(&env),
        ids(&["big", "measure", "gate", "big", "measure", "gate"])
    );
    assert_eq!(
        statuses(&env, &second),
        pairs(&[
            ("big", "success"),
            ("measure", "success"),
            ("gate", "success")
        ])
    );
    assert_eq!(output_of(&env, &second, "gate"), json!(size));
    assert_eq!(env.execution(&second).output, Some(json!(size)));
}

#[test]
fn rerun_of_an_execution_whose_trigger_was_truncated_asks_for_the_data() {
    let env = Env::new();
    let wf = env.write_workflow(
        "bigin.json",
        &json!({"id": "bigin", "nodes": [code("n", "return len(trigger['s'])")]}),
    );
    let size = 1_100_000;
    let input = write_json(&env, "in.json", &json!({"s": "y".repeat(size)}));
    let out = env.cmd([
        "run",
        path_str(&wf),
        "--input-file",
        path_str(&input),
        "--json",
    ]);
    assert_success(&out, "run with a big trigger");
    let first = id_of(&out);
    assert_eq!(env.execution(&first).output, Some(json!(size)));
    let stored = env.execution(&first).trigger;
    assert_eq!(stored["$flowrun_truncated"], json!(true));
    let bytes = stored["bytes"].as_u64().unwrap();
    assert!(bytes > size as u64);

    // The stored marker is not the data: rerun and resume refuse to run with it…
    for verb in ["rerun", "resume"] {
        let out = env.cmd([verb, &first]);
        assert_code(&out, 2, &format!("{verb} of a truncated trigger"));
        assert!(
            stderr(&out).contains(&format!(
                "the trigger data of execution {first} ({bytes} bytes) was over the storage limit"
            )),
            "{}",
            describe(&out)
        );
    }
    assert_eq!(env.execution_count(), 1);
    // …and run when it is given again.
    let out = env.cmd(["rerun", &first, "--input-file", path_str(&input), "--json"]);
    assert_success(&out, "rerun with the trigger given again");
    assert_eq!(env.execution(&id_of(&out)).output, Some(json!(size)));
}

#[test]
fn resume_after_a_node_timeout_runs_from_the_timed_out_node() {
    let env = Env::new();
    let mut slow = tracked(
        "slow",
        "import os, time\nif os.path.exists(trigger['flag']):\n    time.sleep(30)\nreturn 'done'",
    );
    slow["timeout_ms"] = json!(300);
    let wf = env.write_workflow(
        "to.json",
        &json!({
            "id": "to",
            "nodes": [
                tracked("before", "return 'b'"),
                slow,
                tracked("after", "return nodes['slow']['output'] + '!'")
            ]
        }),
    );
    env.write_file("fail.flag", "");
    let out = env.run(
        &wf,
        &trail_input(&env),
        &["--json", "--kill-grace-ms", "200"],
    );
    assert_code(&out, 124, "run with a node timing out");
    let first = id_of(&out);
    assert_eq!(env.execution(&first).status, "timeout");
    assert_eq!(
        statuses(&env, &first),
        pairs(&[("before", "success"), ("slow", "timeout")])
    );
    std::fs::remove_file(env.path("fail.flag")).unwrap();
    let out = env.cmd(["resume", &first, "--json"]);
    assert_success(&out, "resume after the timeout");
    let second = id_of(&out);
    assert_eq!(trail(&env), ids(&["before", "slow", "slow", "after"]));
    assert_eq!(
        statuses(&env, &second),
        pairs(&[
            ("before", "reused"),
            ("slow", "success"),
            ("after", "success")
        ])
    );
    assert_eq!(output_of(&env, &second, "after"), json!("done!"));
    assert!(
        stderr(&out).contains(&format!(
            "resume: 'slow' runs (it ended timeout in {first})"
        )),
        "{}",
        stderr(&out)
    );
}
