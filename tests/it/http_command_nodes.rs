//! `http_request` and `command` nodes end to end: the real binary runs real Python, which calls
//! a real HTTP server in this test process (127.0.0.1 only) or runs real programs.

use crate::support::llm_server::{Reply, Server, closed_port};
use crate::support::*;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

/// A workflow of the given nodes after an explicit trigger node.
fn workflow(id: &str, nodes: Vec<Value>) -> Value {
    let mut all = vec![json!({"id": "trigger", "type": "trigger"})];
    all.extend(nodes);
    json!({ "id": id, "timeout_ms": 20000, "nodes": all })
}

/// Runs a one-node workflow and returns (exit output, execution id, the node's row).
fn run_node(env: &Env, node: Value, input: &str) -> (std::process::Output, String, NodeRow) {
    let node_id = node["id"].as_str().unwrap().to_string();
    let file = env.write_workflow("wf.json", &workflow("nodes", vec![node]));
    let out = env.run_with(&file, input, &[], &[]);
    let id = env.only_execution_id();
    let row = env.node(&id, &node_id);
    (out, id, row)
}

// ---------------------------------------------------------------------------------------------
// http_request
// ---------------------------------------------------------------------------------------------

#[test]
fn http_get_sends_query_and_headers_and_parses_json() {
    let env = Env::new();
    let server = Server::start(|_| {
        Reply::json(200, &json!({"ok": true, "items": [1, 2]})).header("X-Server", "test")
    });
    let (out, _, row) = run_node(
        &env,
        json!({
            "id": "fetch", "type": "http_request", "method": "get",
            "url": server.url("/api/items?fixed=1"),
            "query": { "q": "{{ trigger.q }}", "tags": ["a", "b"], "n": 5 },
            "headers": { "X-Trace": "t-{{ trigger.q }}", "Accept": "application/json" }
        }),
        r#"{"q": "hello world & more"}"#,
    );
    assert_code(&out, 0, "run");
    let req = server.only_request();
    assert_eq!(req.method, "GET");
    assert_eq!(req.path(), "/api/items");
    let q = req.query();
    for pair in [
        ("fixed", "1"),
        ("q", "hello world & more"),
        ("tags", "a"),
        ("tags", "b"),
        ("n", "5"),
    ] {
        assert!(
            q.iter().any(|(k, v)| k == pair.0 && v == pair.1),
            "query lacks {pair:?}: {q:?} ({})",
            req.target
        );
    }
    assert_eq!(req.header("x-trace"), Some("t-hello world & more"));
    assert_eq!(req.header("accept"), Some("application/json"));
    assert!(req.body.is_empty());

    assert_eq!(row.status, "success");
    let o = row.output();
    assert_eq!(o["status"], 200);
    assert_eq!(o["body"], json!({"ok": true, "items": [1, 2]}));
    let headers = o["headers"].as_object().expect("headers object");
    let server_header = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("x-server"))
        .map(|(_, v)| v.clone());
    assert_eq!(server_header, Some(json!("test")), "{headers:?}");
}

#[test]
fn http_post_sends_a_json_body_with_typed_values() {
    let env = Env::new();
    let server = Server::start(|req| {
        Reply::json(
            201,
            &json!({"created": req.json.clone().unwrap_or(Value::Null)}),
        )
    });
    let (out, _, row) = run_node(
        &env,
        json!({
            "id": "create", "type": "http_request", "method": "POST",
            "url": server.url("/things"),
            "json": { "name": "{{ trigger.name }}", "count": "{{ trigger.count }}",
                      "nested": { "tags": ["x", "{{ trigger.name }}"] } }
        }),
        r#"{"name": "Ada", "count": 3}"#,
    );
    assert_code(&out, 0, "run");
    let req = server.only_request();
    assert_eq!(req.method, "POST");
    assert_eq!(req.path(), "/things");
    assert!(
        req.header("content-type")
            .is_some_and(|c| c.starts_with("application/json")),
        "{:?}",
        req.headers
    );
    let sent = json!({"name": "Ada", "count": 3, "nested": {"tags": ["x", "Ada"]}});
    assert_eq!(req.body_json(), &sent);
    let o = row.output();
    assert_eq!(o["status"], 201);
    assert_eq!(o["body"], json!({"created": sent}));
}

#[test]
fn http_raw_body_and_text_response() {
    let env = Env::new();
    let server = Server::start(|req| Reply::text(200, &format!("got {} bytes", req.body.len())));
    let (out, _, row) = run_node(
        &env,
        json!({
            "id": "put", "type": "http_request", "method": "PUT",
            "url": server.url("/raw"),
            "headers": { "Content-Type": "text/plain" },
            "body": "plain {{ trigger.name }}"
        }),
        r#"{"name": "Ada"}"#,
    );
    assert_code(&out, 0, "run");
    let req = server.only_request();
    assert_eq!(req.method, "PUT");
    assert_eq!(String::from_utf8_lossy(&req.body), "plain Ada");
    assert_eq!(req.header("content-type"), Some("text/plain"));
    assert_eq!(row.output()["body"], json!("got 9 bytes"));
}

#[test]
fn http_404_fails_the_node_with_status_and_body_excerpt() {
    let env = Env::new();
    let server = Server::start(|req| Reply::text(404, &format!("no such thing: {}", req.path())));
    let (out, id, row) = run_node(
        &env,
        json!({ "id": "fetch", "type": "http_request", "url": server.url("/missing") }),
        "{}",
    );
    assert_code(&out, 1, "run");
    assert_eq!(env.execution(&id).status, "error");
    assert_eq!(row.status, "error");
    assert_eq!(row.error_type(), "HttpError");
    let msg = row.error_message();
    assert!(msg.contains("404"), "{msg}");
    assert!(msg.contains("no such thing: /missing"), "{msg}");
}

#[test]
fn http_allow_status_lets_a_404_succeed() {
    let env = Env::new();
    let server = Server::start(|_| Reply::json(404, &json!({"error": "not found"})));
    let (out, _, row) = run_node(
        &env,
        json!({ "id": "fetch", "type": "http_request", "url": server.url("/missing"),
                "allow_status": [404] }),
        "{}",
    );
    assert_code(&out, 0, "run");
    assert_eq!(row.status, "success");
    assert_eq!(row.output()["status"], 404);
    assert_eq!(row.output()["body"], json!({"error": "not found"}));
}

#[test]
fn http_redirect_is_followed_on_the_same_server() {
    let env = Env::new();
    let server = Server::start(|req| match req.path() {
        "/old" => Reply::redirect(302, "/new?from=old"),
        "/new" => Reply::json(200, &json!({"at": "new"})),
        other => Reply::text(500, &format!("unexpected {other}")),
    });
    let (out, _, row) = run_node(
        &env,
        json!({ "id": "fetch", "type": "http_request", "url": server.url("/old") }),
        "{}",
    );
    assert_code(&out, 0, "run");
    let reqs = server.requests();
    let targets: Vec<&str> = reqs.iter().map(|r| r.target.as_str()).collect();
    assert_eq!(targets, ["/old", "/new?from=old"]);
    assert_eq!(row.output()["status"], 200);
    assert_eq!(row.output()["body"], json!({"at": "new"}));
}

#[test]
fn http_redirect_not_followed_when_disabled() {
    let env = Env::new();
    let server = Server::start(|req| match req.path() {
        "/old" => Reply::redirect(302, "/new"),
        _ => Reply::json(200, &json!({"at": "new"})),
    });
    let (out, _, row) = run_node(
        &env,
        json!({ "id": "fetch", "type": "http_request", "url": server.url("/old"),
                "follow_redirects": false }),
        "{}",
    );
    assert_code(&out, 0, "run");
    assert_eq!(server.requests().len(), 1);
    assert_eq!(row.output()["status"], 302);
    let headers = row.output()["headers"].as_object().unwrap().clone();
    let location = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("location"))
        .map(|(_, v)| v.clone());
    assert_eq!(location, Some(json!("/new")), "{headers:?}");
}

#[test]
fn http_connection_refused_is_a_clear_connection_error() {
    let env = Env::new();
    let url = format!("http://127.0.0.1:{}/x", closed_port());
    let started = Instant::now();
    let (out, id, row) = run_node(
        &env,
        json!({ "id": "fetch", "type": "http_request", "url": url }),
        "{}",
    );
    assert_code(&out, 1, "run");
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(env.execution(&id).status, "error");
    assert_eq!(row.error_type(), "ConnectionError");
    let msg = row.error_message();
    assert!(msg.contains(&url), "names the URL: {msg}");
    assert!(
        msg.to_lowercase().contains("refused"),
        "says the connection was refused: {msg}"
    );
}

#[test]
fn http_timeout_fails_inside_the_node() {
    let env = Env::new();
    let server = Server::start(|_| Reply::json(200, &json!({})).delay(Duration::from_secs(3)));
    let started = Instant::now();
    let (out, id, row) = run_node(
        &env,
        json!({ "id": "fetch", "type": "http_request", "url": server.url("/slow"),
                "timeout_ms": 300 }),
        "{}",
    );
    let elapsed = started.elapsed();
    assert_code(&out, 1, "run");
    assert!(elapsed < Duration::from_secs(2), "took {elapsed:?}");
    assert_eq!(
        env.execution(&id).status,
        "error",
        "not the runner's hard kill"
    );
    assert_eq!(row.error_type(), "Timeout", "{:?}", row.error);
    assert!(row.error_message().contains("timed out"), "{:?}", row.error);
}

#[test]
fn http_trickled_headers_time_out_inside_the_node() {
    let env = Env::new();
    // A byte every 200 ms: each read returns quickly, the headers alone take ~18 s.
    let server = Server::start(|_| {
        Reply::json(200, &json!({"ok": true})).trickle(Duration::from_millis(200))
    });
    let started = Instant::now();
    let (out, id, row) = run_node(
        &env,
        json!({ "id": "fetch", "type": "http_request", "url": server.url("/trickle"),
                "timeout_ms": 1000 }),
        "{}",
    );
    let elapsed = started.elapsed();
    assert_code(&out, 1, "run");
    assert!(elapsed < Duration::from_secs(8), "took {elapsed:?}");
    assert_eq!(
        env.execution(&id).status,
        "error",
        "the node's own timeout, not the runner's hard kill"
    );
    assert_eq!(row.error_type(), "Timeout", "{:?}", row.error);
    assert!(
        row.error_message().contains("timed out after 1000 ms"),
        "{:?}",
        row.error
    );
}

#[test]
fn http_goes_through_the_proxy_the_environment_names() {
    let env = Env::new();
    let proxy = Server::start(|req| Reply::json(200, &json!({"proxied": req.target})));
    let file = env.write_workflow(
        "wf.json",
        &workflow(
            "proxied",
            vec![json!({ "id": "fetch", "type": "http_request",
                         "url": "http://example.invalid/path?q=1" })],
        ),
    );
    let setting = format!("http_proxy={}", proxy.url(""));
    let out = env.run_with(&file, "{}", &[], &["--env", &setting]);
    assert_code(&out, 0, "run");
    let req = proxy.only_request();
    // `.invalid` never resolves: only the proxy can have answered.
    assert_eq!(req.target, "http://example.invalid/path?q=1");
    assert_eq!(req.header("host"), Some("example.invalid"));
    let row = env.node(&env.only_execution_id(), "fetch");
    assert_eq!(
        row.output()["body"],
        json!({"proxied": "http://example.invalid/path?q=1"})
    );
}

// ---------------------------------------------------------------------------------------------
// command
// ---------------------------------------------------------------------------------------------

#[test]
fn command_argv_elements_reach_the_program_unchanged() {
    let env = Env::new();
    let (out, _, row) = run_node(
        &env,
        json!({
            "id": "cmd", "type": "command",
            "argv": ["python3", "-c", "import sys, json; print(json.dumps(sys.argv[1:]))",
                     "a b", "it's \"quoted\"", "{{ trigger.word }}", ""]
        }),
        r#"{"word": "$HOME; echo `id` > pwned"}"#,
    );
    assert_code(&out, 0, "run");
    assert_eq!(row.status, "success");
    let o = row.output();
    assert_eq!(o["exit_code"], 0);
    assert_eq!(o["stderr"], "");
    let argv: Value = serde_json::from_str(o["stdout"].as_str().unwrap().trim())
        .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {o}"));
    assert_eq!(
        argv,
        json!(["a b", "it's \"quoted\"", "$HOME; echo `id` > pwned", ""])
    );
    assert!(!env.path("pwned").exists(), "no shell ran");
}

#[test]
fn command_nonzero_exit_fails_with_code_and_stderr() {
    let env = Env::new();
    let (out, id, row) = run_node(
        &env,
        json!({
            "id": "cmd", "type": "command",
            "argv": ["python3", "-c",
                     "import sys; print('partial'); sys.stderr.write('boom: disk full\\n'); sys.exit(3)"]
        }),
        "{}",
    );
    assert_code(&out, 1, "run");
    assert_eq!(env.execution(&id).status, "error");
    assert_eq!(row.status, "error");
    let msg = row.error_message();
    assert!(msg.contains("code 3"), "{msg}");
    assert!(msg.contains("boom: disk full"), "{msg}");
}

#[test]
fn command_allow_failure_succeeds_with_the_exit_code() {
    let env = Env::new();
    let (out, _, row) = run_node(
        &env,
        json!({
            "id": "cmd", "type": "command", "allow_failure": true,
            "argv": ["python3", "-c",
                     "import sys; print('partial'); sys.stderr.write('boom\\n'); sys.exit(3)"]
        }),
        "{}",
    );
    assert_code(&out, 0, "run");
    assert_eq!(row.status, "success");
    let o = row.output();
    assert_eq!(o["exit_code"], 3);
    assert_eq!(o["stdout"], "partial\n");
    assert_eq!(o["stderr"], "boom\n");
}

#[test]
fn command_runs_in_cwd() {
    let env = Env::new();
    let dir = env.path("work dir");
    std::fs::create_dir(&dir).unwrap();
    let (out, _, row) = run_node(
        &env,
        json!({ "id": "cmd", "type": "command", "argv": ["pwd"], "cwd": dir }),
        "{}",
    );
    assert_code(&out, 0, "run");
    let printed = row.output()["stdout"].as_str().unwrap().trim().to_string();
    assert_eq!(
        std::fs::canonicalize(&printed).unwrap(),
        std::fs::canonicalize(&dir).unwrap(),
        "pwd printed {printed:?}"
    );
    // And the test's own directory is not the answer: the cwd really changed.
    assert_ne!(
        std::fs::canonicalize(&printed).unwrap(),
        std::fs::canonicalize(env.dir.path()).unwrap()
    );
}

#[test]
fn command_missing_cwd_is_a_clear_error() {
    let env = Env::new();
    let (out, _, row) = run_node(
        &env,
        json!({ "id": "cmd", "type": "command", "argv": ["pwd"], "cwd": env.path("nope") }),
        "{}",
    );
    assert_code(&out, 1, "run");
    let message = row.error_message();
    assert!(
        message.contains(&format!(
            "the working directory {} does not exist",
            env.path("nope").display()
        )),
        "{message}"
    );
}

/// A command that exits at once but leaves a process holding its output: the message says so,
/// where it said the command "timed out and was killed".
#[test]
fn a_command_whose_background_process_holds_its_output_says_so() {
    let env = Env::new();
    let (out, _, row) = run_node(
        &env,
        json!({ "id": "cmd", "type": "command", "shell": true, "timeout_ms": 1000,
                "command": "sleep 30 & echo started" }),
        "{}",
    );
    assert_code(&out, 1, "run");
    let message = row.error_message();
    assert!(
        message.contains("command exited (status 0), but its stdout or stderr was still open"),
        "{message}"
    );
}

#[test]
fn command_shell_line_env_and_stdin() {
    let env = Env::new();
    let (out, _, row) = run_node(
        &env,
        json!({
            "id": "cmd", "type": "command", "shell": true,
            "command": "echo \"$GREETING\" | tr a-z A-Z; read line; echo \"in:$line\"; echo err >&2",
            "env": { "GREETING": "hello {{ trigger.name }}" },
            "stdin": "{{ trigger.name }} via stdin\n"
        }),
        r#"{"name": "ada"}"#,
    );
    assert_code(&out, 0, "run");
    let o = row.output();
    assert_eq!(o["exit_code"], 0);
    assert_eq!(o["stdout"], "HELLO ADA\nin:ada via stdin\n");
    assert_eq!(o["stderr"], "err\n");
}

#[test]
fn command_output_is_capped_and_the_cut_counted() {
    let env = Env::new();
    let (out, _, row) = run_node(
        &env,
        json!({
            "id": "cmd", "type": "command", "max_output_bytes": 100,
            "argv": ["python3", "-c",
                     "import sys; sys.stdout.write('x' * 10000); sys.stderr.write('e' * 50)"]
        }),
        "{}",
    );
    assert_code(&out, 0, "run");
    let o = row.output();
    assert_eq!(o["stdout"], "x".repeat(100));
    assert_eq!(o["stdout_cut_bytes"], 9900);
    assert_eq!(o["stderr"], "e".repeat(50));
    assert!(o.get("stderr_cut_bytes").is_none(), "{o}");
}

#[test]
fn command_timeout_kills_the_program_inside_the_node() {
    let env = Env::new();
    let started = Instant::now();
    let (out, id, row) = run_node(
        &env,
        json!({ "id": "cmd", "type": "command", "argv": ["sleep", "5"], "timeout_ms": 300 }),
        "{}",
    );
    let elapsed = started.elapsed();
    assert_code(&out, 1, "run");
    assert!(elapsed < Duration::from_secs(3), "took {elapsed:?}");
    assert_eq!(
        env.execution(&id).status,
        "error",
        "not the runner's hard kill"
    );
    assert_eq!(row.error_type(), "Timeout", "{:?}", row.error);
}
