//! Failing nodes: the traceback, `on_error: continue`, retries with backoff, a missing interpreter.

use super::{by_id, node_ids};
use crate::support::*;
use serde_json::json;

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

/// A code node whose source does not parse fails the execution before any node runs, cold and
/// warm, wherever it sits: the command before it, which would leave a file, never starts.
#[test]
fn a_code_node_that_does_not_compile_fails_the_run_before_any_node_runs() {
    let env = Env::new();
    let marker = env.path("first-ran");
    env.write_workflow(
        "broken.json",
        &json!({
            "id": "broken",
            "nodes": [
                {"id": "first", "type": "command", "argv": ["touch", marker]},
                {"id": "fine", "type": "code", "code": "return 1"},
                {"id": "bad", "type": "code", "code": "x = 1\nreturn (x +\n"}
            ]
        }),
    );
    let check = |id: &str, start: &str| {
        assert!(
            !marker.exists(),
            "a node ran before the broken one was found"
        );
        let e = env.execution(id);
        assert_eq!(e.status, "error");
        let err = e.error.as_ref().expect("execution error");
        assert_eq!(err["type"], "SyntaxError", "{err}");
        assert_eq!(err["node"], "bad", "{err}");
        let message = e.error_message();
        assert!(
            message.starts_with("its source does not compile, so no node ran: ")
                && message.contains("line 2"),
            "{message}"
        );
        assert!(
            err["traceback"].as_str().unwrap().contains("return (x +"),
            "{err}"
        );
        assert_eq!(env.nodes(id).len(), 0, "no node has a row: none started");
        let how: String = env
            .db()
            .query_row("SELECT start FROM executions WHERE id = ?1", [id], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(how, start);
    };

    let out = env.run(&env.path("broken.json"), "{}", &[]);
    assert_code(
        &out,
        1,
        "run of a workflow with a code node that does not compile",
    );
    let id = env.only_execution_id();
    check(&id, "cold");
    let out = env.cmd(["show", &id]);
    let text = stdout(&out);
    assert!(
        text.contains(
            "error      SyntaxError in node 'bad': its source does not compile, so no node ran: "
        ),
        "{text}"
    );
    assert!(
        text.contains("  File \"<node bad>\", line 2\n") && text.contains("  return (x +\n"),
        "the traceback, which no node carries: {text}"
    );
    let logs = stderr(&env.cmd(["logs", &id]));
    assert!(
        logs.contains(
            "flowrun: the execution failed in node 'bad': SyntaxError: its source does not compile"
        ),
        "{logs}"
    );

    env.write_file(
        "broken.test.yaml",
        "workflow: ./broken.json\ncases:\n  - name: refused\n    expect: { status: error }\n",
    );
    let out = env.cmd(["test", "broken.test.yaml"]);
    assert_success(
        &out,
        "flowrun test of the broken workflow, expecting its error",
    );
    let warm: String = env
        .db()
        .query_row("SELECT id FROM executions WHERE id != ?1", [&id], |r| {
            r.get(0)
        })
        .unwrap();
    check(&warm, "warm");
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

/// A node's input is in its row while it runs, and stays when the runner ends it (a timeout):
/// it was written only with the node's end, so the node a reader most needed to see (one that
/// hangs) showed no input, in `show`, the API and the page alike.
#[test]
fn a_running_or_timed_out_node_shows_what_it_was_given() {
    let env = Env::new();
    let wf = env.write_workflow(
        "hang.json",
        &json!({"id": "hang", "nodes": [
            {"id": "wait", "type": "command", "argv": ["sleep", "{{ trigger.secs }}"]}]}),
    );
    let run = env
        .command()
        .args(["run", wf.to_str().unwrap(), "--input", r#"{"secs": "30"}"#])
        .args(["--timeout-ms", "4000"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let argv = json!(["sleep", "30"]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        assert!(
            std::time::Instant::now() < deadline,
            "no input while it ran"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
        let Ok(db) = std::panic::catch_unwind(|| env.db()) else {
            continue;
        };
        let row: Option<(String, Option<String>)> = db
            .query_row(
                "SELECT status, input FROM node_executions WHERE node_id = 'wait'",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .ok();
        if let Some((status, Some(input))) = row {
            assert_eq!(status, "running");
            let input: serde_json::Value = serde_json::from_str(&input).unwrap();
            assert_eq!(input["argv"], argv, "{input}");
            break;
        }
    }
    // And how long it has run so far, in show and history (it said only "running" and "-").
    let id = env.only_execution_id();
    let shown = stdout(&env.cmd(["show", &id]));
    assert!(shown.contains(", running for "), "{shown}");
    assert!(shown.contains("wait  running  for "), "{shown}");
    assert!(shown.contains("\"sleep\""), "the input in show: {shown}");
    let listed = stdout(&env.cmd(["history"]));
    assert!(
        listed
            .lines()
            .any(|l| l.contains(" running ") && l.contains("…")),
        "{listed}"
    );
    let out = run.wait_with_output().unwrap();
    assert!(!out.status.success());
    assert_eq!(env.execution(&id).status, "timeout");
    let node = env.node(&id, "wait");
    assert_eq!(node.status, "timeout");
    assert_eq!(node.input.expect("the input kept")["argv"], argv);
}
