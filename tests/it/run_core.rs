//! `flowrun run` end to end: the real binary runs real Python, and everything it records is
//! checked in the SQLite file and through `show`, `history` and `logs`.

use crate::support::*;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::collections::BTreeSet;

fn node_ids(rows: &[NodeRow]) -> Vec<&str> {
    rows.iter().map(|n| n.node_id.as_str()).collect()
}

fn by_id<'a>(rows: &'a [NodeRow], id: &str) -> &'a NodeRow {
    rows.iter()
        .find(|n| n.node_id == id)
        .unwrap_or_else(|| panic!("no row for node '{id}' in {:?}", node_ids(rows)))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
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
        Some(json!({"message": "Hello, Ada!", "length": 10, "execution": id}))
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
        Some(json!({"text": "Hello, Ada!", "length": 10}))
    );
    let answer = by_id(&nodes, "answer");
    let answer_out = json!({"message": "Hello, Ada!", "length": 10, "execution": id});
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
        json!({"text": "Hello, Ada!", "length": 10})
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
// 2. A failing code node
// ---------------------------------------------------------------------------------------------

#[test]
fn failing_code_node_stops_the_run_with_its_traceback() {
    let env = Env::new();
    let wf = env.write_workflow(
        "fail.json",
        &json!({
            "id": "fail",
            "nodes": [
                {"id": "first", "type": "set", "fields": {"x": 1}},
                {"id": "divide", "type": "code", "code": "x = 1\nreturn 1/0\n"},
                {"id": "later", "type": "set", "fields": {"y": 2}},
                {"id": "last", "type": "code", "code": "return 3"}
            ]
        }),
    );
    let out = env.run(&wf, "{}", &[]);
    assert_code(&out, 1, "run with a failing node");
    assert!(
        stderr(&out).contains("ZeroDivisionError"),
        "{}",
        describe(&out)
    );

    let id = env.only_execution_id();
    let e = env.execution(&id);
    assert_eq!(e.status, "error");
    let err = e.error.expect("execution error");
    assert_eq!(err["type"], "ZeroDivisionError");
    assert_eq!(err["node"], "divide");

    let nodes = env.nodes(&id);
    assert_eq!(
        node_ids(&nodes),
        ["first", "divide"],
        "later nodes must not run"
    );
    assert_eq!(by_id(&nodes, "first").status, "success");
    let n = by_id(&nodes, "divide");
    assert_eq!(n.status, "error");
    assert_eq!(n.attempt, 1);
    let nerr = n.error.as_ref().expect("node error");
    assert_eq!(nerr["type"], "ZeroDivisionError");
    let tb = nerr["traceback"].as_str().expect("traceback");
    assert!(tb.contains("<node divide>"), "{tb}");
    assert!(tb.contains("line 2"), "{tb}");
    assert!(tb.contains("return 1/0"), "{tb}");

    let events = env.events(&id);
    assert!(
        events
            .iter()
            .all(|e| !matches!(e.node_id.as_deref(), Some("later") | Some("last"))),
        "events of nodes that never ran: {events:?}"
    );

    let out = env.cmd(["show", &id]);
    assert_success(&out, "show");
    let text = stdout(&out);
    assert!(text.contains(&format!("execution {id}  error")), "{text}");
    assert!(text.contains("✗ divide  error"), "{text}");
    assert!(text.contains("Traceback (most recent call last)"), "{text}");
    assert!(text.contains("File \"<node divide>\", line 2"), "{text}");
    assert!(
        text.contains("ZeroDivisionError: division by zero"),
        "{text}"
    );
}

// ---------------------------------------------------------------------------------------------
// 3. on_error: continue
// ---------------------------------------------------------------------------------------------

#[test]
fn on_error_continue_runs_the_next_node() {
    let env = Env::new();
    let wf = env.write_workflow(
        "continue.json",
        &json!({
            "id": "cont",
            "nodes": [
                {"id": "boom", "type": "code", "on_error": "continue",
                 "code": "raise ValueError('bad value')"},
                {"id": "next", "type": "code",
                 "code": "return {'saw': nodes['boom']['status'], 'err': nodes['boom']['error']['type']}"}
            ]
        }),
    );
    let out = env.run(&wf, "{}", &[]);
    assert_success(&out, "run with on_error continue");
    let id = env.only_execution_id();
    let e = env.execution(&id);
    assert_eq!(e.status, "success");
    assert_eq!(e.output, Some(json!({"saw": "error", "err": "ValueError"})));
    let nodes = env.nodes(&id);
    assert_eq!(node_ids(&nodes), ["boom", "next"]);
    let boom = by_id(&nodes, "boom");
    assert_eq!(boom.status, "error");
    assert_eq!(boom.error.as_ref().unwrap()["type"], "ValueError");
    assert_eq!(boom.error.as_ref().unwrap()["message"], "bad value");
    let next = by_id(&nodes, "next");
    assert_eq!(next.status, "success");
    assert_eq!(
        next.output,
        Some(json!({"saw": "error", "err": "ValueError"}))
    );
}

// ---------------------------------------------------------------------------------------------
// 4. Retry with backoff
// ---------------------------------------------------------------------------------------------

#[test]
fn retry_succeeds_on_the_third_attempt_after_backoff() {
    let env = Env::new();
    let attempts = env.path("attempts.txt");
    // Each attempt appends its own monotonic clock reading: the gaps between attempts show the
    // backoff as the child saw it, whatever the load on the machine.
    let code = "import time\n\
                path = trigger['attempts_file']\n\
                with open(path, 'a') as f:\n    f.write('%r\\n' % time.monotonic())\n\
                with open(path) as f:\n    n = len(f.read().splitlines())\n\
                if n < 3:\n    raise RuntimeError('attempt %d fails' % n)\n\
                return {'attempts': n}";
    let wf = env.write_workflow(
        "retry.json",
        &json!({
            "id": "retry",
            "nodes": [
                {"id": "flaky", "type": "code", "code": code,
                 "retry": {"max_attempts": 3, "backoff_ms": 20, "factor": 2}},
                {"id": "after", "type": "set", "fields": {"n": "{{ nodes.flaky.output.attempts }}"}}
            ]
        }),
    );
    let input = json!({"attempts_file": attempts}).to_string();
    let out = env.run(&wf, &input, &[]);
    assert_success(&out, "run with retry");

    let id = env.only_execution_id();
    let e = env.execution(&id);
    assert_eq!(e.status, "success");
    assert_eq!(e.output, Some(json!({"n": 3})));
    let flaky = env.node(&id, "flaky");
    assert_eq!(flaky.status, "success");
    assert_eq!(flaky.attempt, 3);
    assert_eq!(flaky.output, Some(json!({"attempts": 3})));
    assert!(flaky.error.is_none());

    let stamps: Vec<f64> = std::fs::read_to_string(&attempts)
        .unwrap()
        .lines()
        .map(|l| l.parse().unwrap())
        .collect();
    assert_eq!(stamps.len(), 3, "the node ran {} times", stamps.len());
    let gap1 = (stamps[1] - stamps[0]) * 1000.0;
    let gap2 = (stamps[2] - stamps[1]) * 1000.0;
    assert!(
        gap1 >= 20.0,
        "first backoff should be ≥ 20 ms, was {gap1:.1} ms"
    );
    assert!(
        gap2 >= 40.0,
        "second backoff should be ≥ 40 ms, was {gap2:.1} ms"
    );
    assert!(e.duration_ms.unwrap() >= 60.0, "{e:?}");

    // The events show three starts and two failed attempts marked as retrying.
    let events = env.events(&id);
    let starts: Vec<i64> = events
        .iter()
        .filter(|e| e.kind == "node_start" && e.node_id.as_deref() == Some("flaky"))
        .map(|e| e.data["attempt"].as_i64().unwrap())
        .collect();
    assert_eq!(starts, [1, 2, 3]);
    let ends: Vec<(i64, &str, bool)> = events
        .iter()
        .filter(|e| e.kind == "node_end" && e.node_id.as_deref() == Some("flaky"))
        .map(|e| {
            (
                e.data["attempt"].as_i64().unwrap(),
                e.data["status"].as_str().unwrap(),
                e.data["retrying"].as_bool().unwrap_or(false),
            )
        })
        .collect();
    assert_eq!(
        ends,
        [
            (1, "error", true),
            (2, "error", true),
            (3, "success", false)
        ]
    );
    let fail1 = events
        .iter()
        .find(|e| {
            e.kind == "node_end" && e.node_id.as_deref() == Some("flaky") && e.data["attempt"] == 1
        })
        .unwrap();
    assert_eq!(fail1.data["error"]["message"], "attempt 1 fails");
}

#[test]
fn retry_gives_up_after_max_attempts() {
    let env = Env::new();
    let counter = env.path("count.txt");
    let wf = env.write_workflow(
        "giveup.json",
        &json!({
            "id": "giveup",
            "nodes": [
                {"id": "never", "type": "code",
                 "retry": {"max_attempts": 2, "backoff_ms": 1},
                 "code": "open(trigger['f'], 'a').write('x')\nraise RuntimeError('always')"}
            ]
        }),
    );
    let out = env.run(&wf, &json!({"f": counter}).to_string(), &[]);
    assert_code(&out, 1, "run that exhausts its retries");
    let id = env.only_execution_id();
    let n = env.node(&id, "never");
    assert_eq!(n.status, "error");
    assert_eq!(n.attempt, 2);
    assert_eq!(std::fs::read_to_string(&counter).unwrap(), "xx");
}

// ---------------------------------------------------------------------------------------------
// 5. Skipped branch
// ---------------------------------------------------------------------------------------------

#[test]
fn untaken_branch_and_its_downstream_are_skipped() {
    let env = Env::new();
    let wf = env.write_workflow(
        "branch.json",
        &json!({
            "id": "branch",
            "nodes": [
                {"id": "check", "type": "condition",
                 "if": {"op": "gt", "left": "{{ trigger.amount }}", "right": 100},
                 "then": ["big"], "else": ["small"]},
                {"id": "big", "type": "set", "fields": {"kind": "big"}},
                {"id": "small", "type": "set", "fields": {"kind": "small"}},
                {"id": "after_small", "type": "set", "fields": {"from": "{{ nodes.small.output.kind }}"}},
                {"id": "after_small2", "type": "set", "fields": {"x": 1}, "after": ["after_small"]},
                {"id": "end", "type": "set", "fields": {"done": true}, "after": ["check"]}
            ]
        }),
    );
    let out = env.run(&wf, r#"{"amount": 500}"#, &[]);
    assert_success(&out, "run with a branch");
    let id = env.only_execution_id();
    assert_eq!(env.execution(&id).status, "success");
    let nodes = env.nodes(&id);
    let status = |n: &str| by_id(&nodes, n).status.clone();
    assert_eq!(status("check"), "success");
    assert_eq!(by_id(&nodes, "check").output, Some(json!({"result": true})));
    assert_eq!(status("big"), "success");
    assert_eq!(by_id(&nodes, "big").output, Some(json!({"kind": "big"})));
    assert_eq!(status("small"), "skipped");
    assert_eq!(status("after_small"), "skipped");
    assert_eq!(status("after_small2"), "skipped");
    assert_eq!(status("end"), "success");
    for n in ["small", "after_small", "after_small2"] {
        assert!(
            by_id(&nodes, n).output.is_none(),
            "skipped {n} has an output"
        );
    }
    let err = stderr(&out);
    assert!(err.contains("skipped"), "{err}");

    // The other way round.
    let out = env.run(&wf, r#"{"amount": 5}"#, &[]);
    assert_success(&out, "run with the other branch");
    let id2 = env.execution_ids().into_iter().find(|x| *x != id).unwrap();
    let nodes = env.nodes(&id2);
    assert_eq!(by_id(&nodes, "big").status, "skipped");
    assert_eq!(by_id(&nodes, "small").status, "success");
    assert_eq!(by_id(&nodes, "after_small").status, "success");
    assert_eq!(
        by_id(&nodes, "after_small").output,
        Some(json!({"from": "small"}))
    );
}

// ---------------------------------------------------------------------------------------------
// 6. Pinned nodes
// ---------------------------------------------------------------------------------------------

fn pin_workflow(env: &Env, pinned: Option<Value>) -> std::path::PathBuf {
    let mut fetch = json!({
        "id": "fetch", "type": "code",
        "code": "open(trigger['marker'], 'w').write('ran')\nreturn {'items': ['real']}"
    });
    if let Some(p) = pinned {
        fetch["pinned"] = p;
    }
    env.write_workflow(
        "pin.json",
        &json!({
            "id": "pin",
            "nodes": [
                fetch,
                {"id": "use", "type": "set", "fields": {"first": "{{ nodes.fetch.output.items[0] }}"}}
            ]
        }),
    )
}

#[test]
fn pinned_node_is_not_executed() {
    let env = Env::new();
    let marker = env.path("marker");
    let pin = json!({"items": ["pinned", 2], "note": "from the file"});
    let wf = pin_workflow(&env, Some(pin.clone()));
    let out = env.run(&wf, &json!({"marker": marker}).to_string(), &[]);
    assert_success(&out, "run with a pinned node");
    assert!(!marker.exists(), "the pinned node's code ran");
    let id = env.only_execution_id();
    let nodes = env.nodes(&id);
    let fetch = by_id(&nodes, "fetch");
    assert_eq!(fetch.status, "pinned");
    assert_eq!(fetch.output, Some(pin));
    let usen = by_id(&nodes, "use");
    assert_eq!(usen.status, "success");
    assert_eq!(usen.output, Some(json!({"first": "pinned"})));
}

#[test]
fn pin_on_the_command_line_overrides_a_node() {
    let env = Env::new();
    let marker = env.path("marker");
    let wf = pin_workflow(&env, None);
    let pin_file = env.write_file("fetch.json", r#"{"items": ["from-cli"]}"#);
    let pin_arg = format!("fetch={}", pin_file.display());
    let out = env.run(
        &wf,
        &json!({"marker": marker}).to_string(),
        &["--pin", &pin_arg],
    );
    assert_success(&out, "run with --pin");
    assert!(!marker.exists(), "the pinned node's code ran");
    let id = env.only_execution_id();
    let nodes = env.nodes(&id);
    assert_eq!(by_id(&nodes, "fetch").status, "pinned");
    assert_eq!(
        by_id(&nodes, "fetch").output,
        Some(json!({"items": ["from-cli"]}))
    );
    assert_eq!(
        by_id(&nodes, "use").output,
        Some(json!({"first": "from-cli"}))
    );

    // The same workflow without --pin runs the code for real.
    let out = env.run(&wf, &json!({"marker": marker}).to_string(), &[]);
    assert_success(&out, "run without --pin");
    assert!(marker.exists(), "the unpinned node did not run");
}

#[test]
fn pin_of_an_unknown_node_is_a_usage_error() {
    let env = Env::new();
    let wf = pin_workflow(&env, None);
    let pin_file = env.write_file("p.json", "{}");
    let out = env.run(
        &wf,
        "{}",
        &["--pin", &format!("nosuch={}", pin_file.display())],
    );
    assert_code(&out, 2, "--pin of an unknown node");
    assert!(
        stderr(&out).contains("--pin: the workflow has no node 'nosuch'; its nodes are: "),
        "{}",
        describe(&out)
    );
    assert_eq!(env.execution_count(), 0);
}

// ---------------------------------------------------------------------------------------------
// 8. Input validation and defaults
// ---------------------------------------------------------------------------------------------

#[test]
fn invalid_input_fails_before_anything_runs() {
    let env = Env::new();
    let marker = env.path("spawned");
    let wf = env.write_workflow(
        "typed.json",
        &json!({
            "id": "typed",
            "inputs": {
                "type": "object",
                "properties": {
                    "count": {"type": "integer", "minimum": 1},
                    "marker": {"type": "string"}
                },
                "required": ["count", "marker"]
            },
            "nodes": [
                {"id": "touch", "type": "code",
                 "code": "open(trigger['marker'], 'w').write('x')\nreturn trigger['count']"}
            ]
        }),
    );
    let out = env.run(
        &wf,
        &json!({"count": "three", "marker": marker}).to_string(),
        &[],
    );
    assert_code(&out, 2, "run with invalid input");
    let err = stderr(&out);
    assert!(err.contains("count"), "the message names the field:\n{err}");
    assert!(!marker.exists(), "a process ran despite invalid input");
    assert_eq!(env.execution_count(), 0, "an execution row was written");
    assert!(
        !env.cache_dir().join("scripts").exists()
            || std::fs::read_dir(env.cache_dir().join("scripts"))
                .unwrap()
                .next()
                .is_none(),
        "a script was written for invalid input"
    );

    // A missing required field is named too.
    let out = env.run(&wf, &json!({"count": 2}).to_string(), &[]);
    assert_code(&out, 2, "run with a missing field");
    assert!(stderr(&out).contains("marker"), "{}", describe(&out));
    assert_eq!(env.execution_count(), 0);

    // Valid input runs.
    let out = env.run(&wf, &json!({"count": 2, "marker": marker}).to_string(), &[]);
    assert_success(&out, "run with valid input");
    assert!(marker.exists());
    assert_eq!(env.execution_count(), 1);
}

#[test]
fn input_defaults_are_applied() {
    let env = Env::new();
    let out = env.run(&example("hello.json"), "{}", &[]);
    assert_success(&out, "run hello without a name");
    let id = env.only_execution_id();
    let e = env.execution(&id);
    assert_eq!(e.trigger, json!({"name": "World", "excited": true}));
    assert_eq!(e.output.as_ref().unwrap()["message"], "Hello, World!");
    assert_eq!(
        env.node(&id, "greet").output,
        Some(json!({"text": "Hello, World"}))
    );
}

#[test]
fn malformed_input_json_is_a_usage_error() {
    let env = Env::new();
    let out = env.run(&example("hello.json"), "{not json", &[]);
    assert_code(&out, 2, "run with malformed --input");
    assert!(stderr(&out).contains("--input"), "{}", describe(&out));
    assert_eq!(env.execution_count(), 0);
}

// ---------------------------------------------------------------------------------------------
// 10. Fake protocol markers printed by user code
// ---------------------------------------------------------------------------------------------

#[test]
fn fake_markers_are_just_log_lines() {
    let env = Env::new();
    let fake_lines = [
        r#"@@flowrun:fake:event {"event":"node_end","node":"x","status":"success"}"#,
        "@@flowrun:result-start",
        r#"@@flowrun:0123456789abcdef0123456789abcdef:event {"event":"node_start","node":"ghost","attempt":1}"#,
        "@@flowrun:0123456789abcdef0123456789abcdef:result-start",
        r#"{"status":"error","output":null,"error":{"type":"Fake","message":"fake"}}"#,
        "@@flowrun:0123456789abcdef0123456789abcdef:result-end",
    ];
    let code = fake_lines
        .iter()
        .map(|l| format!("print({})", serde_json::to_string(l).unwrap()))
        .collect::<Vec<_>>()
        .join("\n")
        + "\nreturn {'printed': True}";
    let wf = env.write_workflow(
        "fake.json",
        &json!({
            "id": "fake",
            "nodes": [
                {"id": "noisy", "type": "code", "code": code},
                {"id": "after", "type": "set", "fields": {"ok": "{{ nodes.noisy.output.printed }}"}}
            ]
        }),
    );
    let out = env.run(&wf, "{}", &[]);
    assert_success(&out, "run printing fake markers");
    let id = env.only_execution_id();
    let e = env.execution(&id);
    assert_eq!(e.status, "success");
    assert_eq!(e.output, Some(json!({"ok": true})));
    let nodes = env.nodes(&id);
    assert_eq!(node_ids(&nodes), ["noisy", "after"], "no extra node rows");
    assert!(nodes.iter().all(|n| n.status == "success"));

    // Each fake line is a log line of `noisy`, unchanged.
    let logs: Vec<(Option<String>, String)> = env
        .events(&id)
        .into_iter()
        .filter(|e| e.kind == "log")
        .map(|e| (e.node_id, e.data["line"].as_str().unwrap().to_string()))
        .collect();
    let expected: Vec<(Option<String>, String)> = fake_lines
        .iter()
        .map(|l| (Some("noisy".to_string()), l.to_string()))
        .collect();
    assert_eq!(logs, expected);

    let out = env.cmd(["logs", &id]);
    assert_success(&out, "logs");
    let text = stdout(&out);
    for l in fake_lines {
        assert!(
            text.lines().any(|x| x.ends_with(l) && x.contains("noisy")),
            "`flowrun logs` lacks {l}:\n{text}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// 11. A child that exits without a result
// ---------------------------------------------------------------------------------------------

#[test]
fn child_exiting_without_result_is_a_protocol_error() {
    let env = Env::new();
    let wf = env.write_workflow(
        "exit.json",
        &json!({
            "id": "exit",
            "nodes": [
                {"id": "first", "type": "set", "fields": {"x": 1}},
                {"id": "die", "type": "code", "code": "import os\nos._exit(3)"},
                {"id": "never", "type": "set", "fields": {"y": 2}}
            ]
        }),
    );
    let out = env.run(&wf, "{}", &[]);
    assert_code(&out, 1, "run whose child exits early");
    let id = env.only_execution_id();
    let e = env.execution(&id);
    assert_eq!(e.status, "error");
    let err = e.error.expect("execution error");
    assert_eq!(err["type"], "ProtocolError");
    let msg = err["message"].as_str().unwrap();
    assert!(msg.contains("exit code 3"), "{msg}");
    assert!(msg.contains("no result"), "{msg}");
    assert_eq!(e.exit.as_deref(), Some("exit code 3"));

    let nodes = env.nodes(&id);
    assert_eq!(node_ids(&nodes), ["first", "die"]);
    assert_eq!(by_id(&nodes, "first").status, "success");
    let die = by_id(&nodes, "die");
    assert_eq!(
        die.status, "error",
        "the running node must not stay running"
    );
    assert!(die.finished_at.is_some());
    assert!(die.error.is_some());
    assert_eq!(env.events(&id).last().unwrap().kind, "execution_end");
}

#[test]
fn partial_line_before_exit_is_kept() {
    let env = Env::new();
    let wf = env.write_workflow(
        "partial.json",
        &json!({
            "id": "partial",
            "nodes": [
                {"id": "die", "type": "code",
                 "code": "import os, sys\nprint('whole line')\nsys.stderr.write('err partial')\nsys.stdout.write('out partial')\nos._exit(3)"}
            ]
        }),
    );
    let out = env.run(&wf, "{}", &[]);
    assert_code(&out, 1, "run that exits mid-line");
    let id = env.only_execution_id();
    let logs: Vec<(Option<String>, String, String)> = env
        .events(&id)
        .into_iter()
        .filter(|e| e.kind == "log")
        .map(|e| {
            (
                e.node_id,
                e.data["stream"].as_str().unwrap().to_string(),
                e.data["line"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let die = Some("die".to_string());
    for (stream, line) in [
        ("stdout", "whole line"),
        ("stdout", "out partial"),
        ("stderr", "err partial"),
    ] {
        assert!(
            logs.contains(&(die.clone(), stream.to_string(), line.to_string())),
            "missing {stream} line {line:?} of node die in {logs:?}"
        );
    }
    let out = env.cmd(["logs", &id]);
    assert_success(&out, "logs");
    let text = stdout(&out);
    assert!(text.contains("out partial"), "{text}");
    assert!(text.contains("err partial"), "{text}");
}

#[test]
fn raw_fd_write_without_newline_is_kept() {
    let env = Env::new();
    let wf = env.write_workflow(
        "rawfd.json",
        &json!({
            "id": "rawfd",
            "nodes": [
                {"id": "raw", "type": "code",
                 "code": "import os\nos.write(1, b'raw partial')\nos._exit(0)"}
            ]
        }),
    );
    let out = env.run(&wf, "{}", &[]);
    assert_code(&out, 1, "exit 0 without a result is still an error");
    let id = env.only_execution_id();
    let e = env.execution(&id);
    assert_eq!(e.status, "error");
    assert_eq!(e.error.unwrap()["type"], "ProtocolError");
    let lines: Vec<String> = env
        .events(&id)
        .into_iter()
        .filter(|e| e.kind == "log")
        .map(|e| e.data["line"].as_str().unwrap().to_string())
        .collect();
    assert!(lines.iter().any(|l| l == "raw partial"), "{lines:?}");
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

// ---------------------------------------------------------------------------------------------
// logs --follow
// ---------------------------------------------------------------------------------------------

#[test]
fn logs_follow_prints_lines_until_the_execution_ends() {
    let env = Env::new();
    let wf = env.write_workflow(
        "follow.json",
        &json!({
            "id": "follow",
            "nodes": [
                {"id": "talk", "type": "code",
                 "code": "import sys, time\nprint('first')\ntime.sleep(0.15)\nsys.stderr.write('second\\n')\ntime.sleep(0.15)\nlog('third')\nreturn 1"}
            ]
        }),
    );
    let mut run = env
        .command()
        .arg("run")
        .arg(&wf)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("flowrun run starts");
    // Wait for the execution row (written before the child starts).
    let id = wait_for("an execution row to appear", || {
        env.try_execution_ids()
            .and_then(|ids| ids.into_iter().next())
    });
    let followed = env.cmd(["logs", &id, "--follow"]);
    assert!(run.wait().unwrap().success());
    assert_success(&followed, "logs --follow");
    assert_eq!(env.execution(&id).status, "success");
    // --follow returned only after the end, with every line, formatted like plain `logs`.
    let plain = env.cmd(["logs", &id]);
    assert_success(&plain, "logs");
    assert_eq!(stdout(&followed), stdout(&plain));
    let text = stdout(&plain);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert!(lines[0].ends_with("talk | first"), "{text}");
    assert!(lines[1].ends_with(" [stderr] | second"), "{text}");
    assert!(lines[2].ends_with("talk [log] | third"), "{text}");
}

#[test]
fn missing_interpreter_is_an_environment_error() {
    let env = Env::new();
    let out = env.run(
        &example("hello.json"),
        "{}",
        &["--python", "/nonexistent/python3"],
    );
    assert_code(&out, 3, "run with a missing interpreter");
    assert!(
        stderr(&out).contains("/nonexistent/python3"),
        "{}",
        describe(&out)
    );
    assert_eq!(env.execution_count(), 0);
}

// ---------------------------------------------------------------------------------------------
// Known gap: stderr lines attributed to the wrong node
// ---------------------------------------------------------------------------------------------

#[test]
fn stderr_lines_are_attributed_to_the_node_that_wrote_them() {
    let env = Env::new();
    let nodes: Vec<Value> = (0..100)
        .map(|i| {
            json!({"id": format!("n{i}"), "type": "code",
                   "code": format!("import sys\nsys.stderr.write('from n{i}\\n')\nprint('out n{i}')\nreturn {i}")})
        })
        .collect();
    let wf = env.write_workflow("attr.json", &json!({"id": "attr", "nodes": nodes}));
    let out = env.run(&wf, "{}", &[]);
    assert_success(&out, "run");
    let id = env.only_execution_id();
    let wrong: Vec<(Option<String>, String)> = env
        .events(&id)
        .into_iter()
        .filter(|e| e.kind == "log")
        .map(|e| (e.node_id, e.data["line"].as_str().unwrap().to_string()))
        .filter(|(node, line)| node.as_deref() != line.split(' ').next_back())
        .collect();
    assert!(wrong.is_empty(), "misattributed log lines: {wrong:?}");
}
