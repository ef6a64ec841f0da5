//! What the child prints: fake markers, exits without a result, `logs --follow`, stderr by node.

use super::{by_id, node_ids};
use crate::support::*;
use serde_json::{Value, json};

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

// ---------------------------------------------------------------------------------------------
// stderr: attributed to the node that wrote it, and kept in its place
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

/// Every log line among an execution's stored `events` lies between its node's `node_start`
/// and `node_end` (the order `logs`, `show`, the event stream and SSE give). Returns the
/// misplaced ones.
fn misplaced_lines(events: &[EventRow]) -> Vec<String> {
    let mut running: Option<String> = None;
    let mut wrong = Vec::new();
    for e in events {
        match e.kind.as_str() {
            "node_start" => running = e.node_id.clone(),
            "node_end" => running = None,
            "log" => {
                let line = e.data["line"].as_str().unwrap_or_default().to_string();
                if e.node_id.is_none() || e.node_id != running {
                    wrong.push(format!(
                        "{line:?} (of {:?}, seq {}) while {running:?} ran",
                        e.node_id, e.seq
                    ));
                }
            }
            _ => {}
        }
    }
    wrong
}

/// 40 nodes, each writing a line to stderr and one to stdout: stdout carries the events, stderr
/// is another pipe, read by another task. Before the streams were put back in order by the
/// runtime's marks, a node's stderr line was often recorded after the next nodes had ended
/// (helper report, Dec 5), warm and cold.
#[test]
fn stderr_lines_keep_their_place_between_their_node_s_start_and_end() {
    let env = Env::new();
    let nodes: Vec<Value> = (0..40)
        .map(|i| {
            json!({"id": format!("n{i}"), "type": "code",
                   "code": format!("import sys\nprint('err n{i}', file=sys.stderr)\nprint('out n{i}')\nreturn {i}")})
        })
        .collect();
    let wf = env.write_workflow("order.json", &json!({"id": "order", "nodes": nodes}));
    for _ in 0..3 {
        assert_success(&env.run(&wf, "{}", &[]), "run");
    }
    env.write_file(
        "order.test.yaml",
        "workflow: ./order.json\ncases:\n  - name: a\n  - name: b\n  - name: c\n",
    );
    // Every case warm: `Env` sets FLOWRUN_WARM_WAIT=1 (else the first case of a suite starts
    // cold while its template starts).
    assert_success(&env.cmd(["test", "order.test.yaml", "-j", "1"]), "test");
    let ids = env.execution_ids();
    assert!(ids.len() >= 6, "{ids:?}");
    for id in ids {
        let events = env.events(&id);
        let lines = events.iter().filter(|e| e.kind == "log").count();
        if lines == 0 {
            continue; // the suite's own row
        }
        assert_eq!(lines, 80, "{id}");
        let wrong = misplaced_lines(&events);
        let first: Vec<String> = events
            .iter()
            .take(12)
            .map(|e| format!("{} {:?} {}", e.kind, e.node_id, e.data["line"]))
            .collect();
        assert!(wrong.is_empty(), "{id}: {wrong:?}\nfirst events: {first:?}");
    }
}

/// A node that points fd 2 elsewhere takes the runtime's marks with it: the events that wait for
/// them are released after a moment, not when the interpreter exits.
#[test]
fn a_node_that_redirects_stderr_does_not_hold_the_events_back() {
    use std::io::BufRead;
    let env = Env::new();
    let wf = env.write_workflow(
        "away.json",
        &json!({"id": "away", "nodes": [
            {"id": "away", "type": "code",
             "code": "import os\nos.dup2(os.open(os.devnull, os.O_WRONLY), 2)\nreturn 1"},
            {"id": "slow", "type": "code", "code": "import time\ntime.sleep(4)\nreturn 2"}]}),
    );
    let t0 = std::time::Instant::now();
    let mut child = env
        .command()
        .args(["run"])
        .arg(&wf)
        .args(["--events", "jsonl"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut seen_at = None;
    for line in std::io::BufReader::new(child.stdout.take().unwrap()).lines() {
        let v: Value = serde_json::from_str(&line.unwrap()).unwrap();
        if v["event"] == "node_start" && v["node"] == "slow" {
            seen_at = Some(t0.elapsed());
        }
    }
    assert!(child.wait().unwrap().success());
    let seen_at = seen_at.expect("slow's node_start");
    let total = t0.elapsed();
    // Held until the interpreter exits, it would come after slow's 4 s sleep.
    assert!(
        total - seen_at > std::time::Duration::from_secs(2),
        "slow's start came {seen_at:?} into a run of {total:?}"
    );
}
