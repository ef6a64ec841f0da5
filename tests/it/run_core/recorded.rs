//! A successful run recorded completely, `show`, `--events jsonl`, `--json` and the YAML example.

use super::{by_id, hex, node_ids};
use crate::support::*;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::collections::BTreeSet;

#[test]
fn an_executions_end_event_and_its_rows_end_are_written_together() {
    let env = Env::new();
    assert_success(&env.cmd(["history"]), "history (creates the store)");
    // The store refuses, from here on, an `execution_end` event written while the execution's
    // row still says it runs: a reader between two commits would have seen the one without
    // the other (the end in the stream, `running` in the record).
    rusqlite::Connection::open(env.db_path())
        .unwrap()
        .execute_batch(
            "CREATE TRIGGER end_with_its_row BEFORE INSERT ON events
             WHEN NEW.kind = 'execution_end' AND (SELECT status FROM executions
                 WHERE id = NEW.execution_id) IN ('running', 'queued')
             BEGIN SELECT RAISE(ABORT, 'an execution_end before its row ended'); END;",
        )
        .unwrap();
    let out = env.run(&example("hello.json"), r#"{"name":"Ada"}"#, &["--json"]);
    assert_success(&out, "run hello.json");
    let record: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(record["status"], "success", "{record:#}");
    let last: String = rusqlite::Connection::open(env.db_path())
        .unwrap()
        .query_row(
            "SELECT kind FROM events WHERE execution_id = ?1 ORDER BY seq DESC LIMIT 1",
            [record["id"].as_str().unwrap()],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(last, "execution_end");
}

/// The execution's row (checked to end an error: the store failed) and the `execution_end`
/// events stored for it, after a run of hello.json on a store given `trigger` (SQL run on the
/// store before the run) that refuses some of what the run writes.
fn hello_with_store_trigger(trigger: &str) -> (Value, Vec<Value>) {
    let env = Env::new();
    assert_success(&env.cmd(["history"]), "history (creates the store)");
    let db = rusqlite::Connection::open(env.db_path()).unwrap();
    db.execute_batch(trigger).unwrap();
    let out = env.run(&example("hello.json"), r#"{"name":"Ada"}"#, &[]);
    // 3: an environment problem, the store.
    assert_code(&out, 3, "a run whose record the store refused in part");
    let (status, error): (String, String) = db
        .query_row("SELECT status, error FROM executions", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    let row = json!({"status": status, "error": serde_json::from_str::<Value>(&error).unwrap()});
    // Whatever the store refused, the row ends, an error that says why.
    assert_eq!(row["status"], "error", "{row:#}");
    assert_eq!(row["error"]["type"], "StoreError", "{row:#}");
    let ends = db
        .prepare("SELECT data FROM events WHERE kind = 'execution_end'")
        .unwrap()
        .query_map([], |r| r.get::<_, String>(0))
        .unwrap()
        .map(|d| serde_json::from_str(&d.unwrap()).unwrap())
        .collect();
    (row, ends)
}

#[test]
fn an_end_the_store_refuses_with_its_event_is_still_recorded_an_error() {
    let (_, ends) = hello_with_store_trigger(
        "CREATE TRIGGER no_end BEFORE INSERT ON events WHEN NEW.kind = 'execution_end'
         BEGIN SELECT RAISE(ABORT, 'no room for the end'); END;",
    );
    assert!(ends.is_empty(), "{ends:?}");
}

#[test]
fn an_execution_the_store_took_in_part_ends_an_error_in_its_event_too() {
    let (row, ends) = hello_with_store_trigger(
        "CREATE TRIGGER no_node_end BEFORE INSERT ON events WHEN NEW.kind = 'node_end'
         BEGIN SELECT RAISE(ABORT, 'no room for a node'); END;",
    );
    assert_eq!(ends.len(), 1, "{ends:?}");
    assert_eq!(
        ends[0]["status"], "error",
        "the stream tells the record's end: {ends:?}"
    );
    assert_eq!(ends[0]["error"], row["error"], "{ends:?}");
}

// ---------------------------------------------------------------------------------------------
// 1. A successful multi-node run
// ---------------------------------------------------------------------------------------------

#[test]
fn hello_run_is_recorded_completely() {
    let env = Env::new();
    let file = example("hello.json");
    let out = env.run(&file, r#"{"name":"Ada"}"#, &[]);
    assert_success(&out, "run hello.json");

    // Progress on stderr: one finished line per node.
    let err = stderr(&out);
    for node in ["trigger", "greet", "shout", "answer"] {
        assert!(
            err.lines()
                .any(|l| l.starts_with('✓') && l.split_whitespace().nth(1) == Some(node)),
            "no progress line for node {node}:\n{err}"
        );
    }
    assert!(err.contains("success"), "{err}");

    let id = env.only_execution_id();
    let e = env.execution(&id);
    assert_eq!(e.status, "success");
    assert_eq!(e.workflow_id, "hello");
    assert_eq!(e.workflow_name, "Hello");
    // The trigger as run: the input plus the schema's defaults.
    assert_eq!(e.trigger, json!({"name": "Ada", "excited": true}));
    assert_eq!(
        e.output,
        Some(json!({"message": "Hello, Ada!", "length": 11, "execution": id}))
    );
    assert!(e.error.is_none(), "{:?}", e.error);
    let finished = e.finished_at.expect("finished_at");
    assert!(finished >= e.started_at);
    assert!(e.duration_ms.expect("duration") > 0.0);
    assert_eq!(e.exit.as_deref(), Some("exit code 0"));

    // The snapshot is the file's definition, stored under its content hash.
    let snap = env
        .snapshot_text(&e.snapshot_hash)
        .expect("snapshot row for the execution's hash");
    let stored: Value = serde_json::from_str(&snap).unwrap();
    let on_disk: Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    assert_eq!(stored, on_disk);
    assert_eq!(e.snapshot_hash, hex(&Sha256::digest(snap.as_bytes())));

    // Node rows.
    let nodes = env.nodes(&id);
    assert_eq!(node_ids(&nodes), ["trigger", "greet", "shout", "answer"]);
    for n in &nodes {
        assert_eq!(n.status, "success", "{n:?}");
        assert_eq!(n.attempt, 1, "{n:?}");
        let (s, f) = (
            n.started_at.expect("started_at"),
            n.finished_at.expect("finished_at"),
        );
        assert!(
            s >= e.started_at && f >= s && f <= finished,
            "{n:?} in {e:?}"
        );
        assert!(n.duration_ms.expect("duration") >= 0.0, "{n:?}");
        assert!(n.error.is_none(), "{n:?}");
    }
    let trigger = by_id(&nodes, "trigger");
    assert_eq!(trigger.input, Some(json!({"name": "Ada", "excited": true})));
    assert_eq!(
        trigger.output,
        Some(json!({"name": "Ada", "excited": true}))
    );
    let greet = by_id(&nodes, "greet");
    assert_eq!(greet.input, Some(json!({"template": "Hello, Ada"})));
    assert_eq!(greet.output, Some(json!({"text": "Hello, Ada"})));
    let shout = by_id(&nodes, "shout");
    assert_eq!(shout.input, Some(json!({"greet": {"text": "Hello, Ada"}})));
    assert_eq!(
        shout.output,
        Some(json!({"text": "Hello, Ada!", "length": 11}))
    );
    let answer = by_id(&nodes, "answer");
    let answer_out = json!({"message": "Hello, Ada!", "length": 11, "execution": id});
    assert_eq!(answer.input, Some(json!({ "fields": answer_out })));
    assert_eq!(answer.output, Some(answer_out));

    // Events: seq 1, 2, 3, … from execution_start to execution_end.
    let events = env.events(&id);
    let seqs: Vec<i64> = events.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (1..=events.len() as i64).collect::<Vec<_>>());
    assert_eq!(events.first().unwrap().kind, "execution_start");
    assert_eq!(events.last().unwrap().kind, "execution_end");
    assert_eq!(events.last().unwrap().data["status"], "success");
    for w in events.windows(2) {
        assert!(w[1].ts >= w[0].ts, "timestamps go back: {w:?}");
    }
    for node in ["trigger", "greet", "shout", "answer"] {
        let kinds: Vec<&str> = events
            .iter()
            .filter(|e| e.node_id.as_deref() == Some(node) && e.kind != "log")
            .map(|e| e.kind.as_str())
            .collect();
        assert_eq!(kinds, ["node_start", "node_end"], "events of {node}");
    }
    let logs: Vec<&EventRow> = events.iter().filter(|e| e.kind == "log").collect();
    assert_eq!(logs.len(), 1, "{logs:?}");
    assert_eq!(logs[0].node_id.as_deref(), Some("shout"));
    assert_eq!(logs[0].data["line"], "punctuating Hello, Ada");
    assert_eq!(logs[0].data["stream"], "log");
    // …and the log line sits between shout's start and end.
    let pos = |kind: &str| {
        events
            .iter()
            .position(|e| e.kind == kind && e.node_id.as_deref() == Some("shout"))
            .unwrap()
    };
    assert!(pos("node_start") < pos("log") && pos("log") < pos("node_end"));

    // `show` lists every node as success.
    let out = env.cmd(["show", &id]);
    assert_success(&out, "show");
    let text = stdout(&out);
    assert!(text.contains(&format!("execution {id}  success")), "{text}");
    for node in ["trigger", "greet", "shout", "answer"] {
        assert!(
            text.lines()
                .any(|l| l.starts_with(&format!("✓ {node}  success"))),
            "show does not list {node} as success:\n{text}"
        );
    }

    // `show --json` has the nodes.
    let record = env.show_json(&id);
    assert_eq!(record["id"], id.as_str());
    assert_eq!(record["status"], "success");
    let rec_nodes: Vec<(&str, &str)> = record["nodes"]
        .as_array()
        .expect("nodes array")
        .iter()
        .map(|n| {
            (
                n["node_id"].as_str().unwrap(),
                n["status"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        rec_nodes,
        [
            ("trigger", "success"),
            ("greet", "success"),
            ("shout", "success"),
            ("answer", "success")
        ]
    );
    assert_eq!(
        record["nodes"][2]["output"],
        json!({"text": "Hello, Ada!", "length": 11})
    );

    // `history --json` lists it.
    let out = env.cmd(["history", "--json"]);
    assert_success(&out, "history --json");
    let list: Value = serde_json::from_slice(&out.stdout).expect("history --json is JSON");
    let list = list.as_array().expect("an array");
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["id"], id.as_str());
    assert_eq!(list[0]["status"], "success");
    assert_eq!(list[0]["workflow_id"], "hello");

    // An id prefix works for `show`.
    let out = env.cmd(["show", &id[..6]]);
    assert_success(&out, "show PREFIX");
    assert!(stdout(&out).contains(&format!("execution {id}")));
    let out = env.cmd(["show", &id[..6], "--json"]);
    assert_success(&out, "show PREFIX --json");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["id"], id.as_str());
}

#[test]
fn show_of_an_unknown_id_exits_2() {
    let env = Env::new();
    let out = env.run(&example("hello.json"), "{}", &[]);
    assert_success(&out, "run");
    let out = env.cmd(["show", "zzzzzz"]);
    assert_code(&out, 2, "show unknown id");
    assert!(stderr(&out).contains("zzzzzz"), "{}", describe(&out));
}

// ---------------------------------------------------------------------------------------------
// 13. --events jsonl and --json
// ---------------------------------------------------------------------------------------------

#[test]
fn events_jsonl_prints_every_event() {
    let env = Env::new();
    let out = env.run(
        &example("hello.json"),
        r#"{"name":"Ada"}"#,
        &["--events", "jsonl"],
    );
    assert_success(&out, "run --events jsonl");
    let text = stdout(&out);
    let events: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l:?}: {e}")))
        .collect();
    assert!(events.len() >= 10, "{text}");
    let id = env.only_execution_id();
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e["seq"], json!(i + 1), "{e}");
        assert_eq!(e["execution_id"], id.as_str(), "{e}");
        assert!(e["event"].is_string(), "{e}");
    }
    assert_eq!(events.first().unwrap()["event"], "execution_start");
    assert_eq!(
        events.first().unwrap()["nodes"],
        json!(["trigger", "greet", "shout", "answer"])
    );
    assert_eq!(events.last().unwrap()["event"], "execution_end");
    assert_eq!(events.last().unwrap()["status"], "success");
    for node in ["trigger", "greet", "shout", "answer"] {
        let kinds: Vec<&str> = events
            .iter()
            .filter(|e| e["node"] == node && e["event"] != "log")
            .map(|e| e["event"].as_str().unwrap())
            .collect();
        assert_eq!(kinds, ["node_start", "node_end"], "{node}");
    }
    assert!(
        events
            .iter()
            .any(|e| e["event"] == "log" && e["node"] == "shout"),
        "{text}"
    );
    // The same events are in the store.
    let stored: Vec<(i64, String)> = env
        .events(&id)
        .into_iter()
        .map(|e| (e.seq, e.kind))
        .collect();
    let printed: Vec<(i64, String)> = events
        .iter()
        .map(|e| {
            (
                e["seq"].as_i64().unwrap(),
                e["event"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(stored, printed);
}

#[test]
fn json_flag_prints_the_record_with_nodes() {
    let env = Env::new();
    let out = env.run(&example("hello.json"), r#"{"name":"Ada"}"#, &["--json"]);
    assert_success(&out, "run --json");
    let record: Value =
        serde_json::from_slice(&out.stdout).expect("run --json prints one JSON document");
    let id = env.only_execution_id();
    assert_eq!(record["id"], id.as_str());
    assert_eq!(record["status"], "success");
    assert_eq!(record["output"]["message"], "Hello, Ada!");
    let nodes: BTreeSet<&str> = record["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["node_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        nodes,
        BTreeSet::from(["trigger", "greet", "shout", "answer"])
    );
    // It is the same record `show --json` prints.
    assert_eq!(record, env.show_json(&id));
}

#[test]
fn yaml_example_runs() {
    let env = Env::new();
    let out = env.run(&example("branch.yaml"), "{}", &[]);
    assert_success(&out, "run branch.yaml");
    let id = env.only_execution_id();
    let nodes = env.nodes(&id);
    assert_eq!(by_id(&nodes, "review").status, "success");
    assert_eq!(by_id(&nodes, "approve").status, "skipped");
    assert_eq!(
        env.execution(&id).output,
        Some(json!({"branch": "review", "decision": "review"}))
    );
}

/// A node's end is in the store while the node after it still runs and keeps printing: ends are
/// written as soon as the runner has handled what there was to read, not with the execution's.
#[test]
fn a_nodes_end_is_recorded_while_the_next_node_runs_and_prints() {
    let env = Env::new();
    let gate = env.path("gate");
    let code = format!(
        "import os, time\nwhile not os.path.exists({gate:?}):\n    print('waiting', flush=True)\n    time.sleep(0.05)\nreturn {{'through': True}}",
        gate = gate.display().to_string()
    );
    let file = env.write_workflow(
        "gated.json",
        &json!({"id": "gated", "nodes": [
            {"id": "trigger", "type": "trigger"},
            {"id": "first", "type": "set", "fields": {"x": 1}},
            {"id": "gate", "type": "code", "code": code},
        ]}),
    );
    let mut child = env
        .command()
        .arg("run")
        .arg(&file)
        .args(["--input", "{}"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let id = wait_for("the execution's row", || {
        env.try_execution_ids().and_then(|ids| ids.first().cloned())
    });
    let first = wait_for("first's end in the store while gate runs", || {
        let rows = env.nodes(&id);
        let gate = rows.iter().find(|n| n.node_id == "gate")?;
        let first = rows.iter().find(|n| n.node_id == "first")?;
        (gate.status == "running" && first.status == "success").then(|| first.clone())
    });
    assert_eq!(first.output, Some(json!({"x": 1})));
    assert_eq!(env.execution(&id).status, "running");
    std::fs::write(&gate, "").unwrap();
    assert!(child.wait().unwrap().success());
    assert_eq!(env.node(&id, "gate").status, "success");
}

/// `flowrun run wf --events jsonl | head -1`: the reader goes away after the first event. The
/// execution is not stopped by it (only Ctrl-C or `flowrun stop` stop one): it runs to its end,
/// is recorded whole, and `run` exits with its status.
#[test]
fn a_reader_that_goes_away_does_not_stop_the_execution() {
    use std::io::BufRead;
    let env = Env::new();
    let file = env.write_workflow(
        "ticks.json",
        &json!({"id": "ticks", "nodes": [
            {"id": "a", "type": "code",
             "code": "import time\ntime.sleep(0.3)\nfor i in range(200):\n    print('tick', i)\nreturn {'n': 200}"},
            {"id": "b", "type": "set", "fields": {"done": true}, "after": ["a"]}
        ]}),
    );
    let mut child = env
        .command()
        .args(["run", file.to_str().unwrap(), "--events", "jsonl"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut reader = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    reader.read_line(&mut first).unwrap();
    let first: Value = serde_json::from_str(&first).unwrap();
    assert_eq!(first["event"], "execution_start");
    drop(reader);
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "the execution succeeded");
    let id = env.only_execution_id();
    let record = env.show_json(&id);
    assert_eq!(record["status"], "success", "{record:#}");
    assert_eq!(record["output"], json!({"done": true}));
    let ticks: Vec<String> = env
        .events(&id)
        .into_iter()
        .filter(|e| e.kind == "log")
        .map(|e| e.data["line"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(ticks.len(), 200, "every log line is stored");
    assert_eq!(ticks[199], "tick 199");
}
