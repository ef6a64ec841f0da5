//! `llm` retries and timeouts: 429 with Retry-After, 5xx, `max_retries`, a slow provider, a
//! provider that comes up late.

use super::{GROQ_KEY, llm_workflow};
use crate::support::llm_server::{Reply, Server, closed_port};
use crate::support::*;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

fn groq_node(extra: Value) -> Value {
    let mut node = json!({
        "id": "ask", "type": "llm", "provider": "groq",
        "model": "llama-3.1-8b-instant", "connection": "groq",
        "messages": [ { "role": "user", "content": "{{ trigger.query }}" } ]
    });
    for (k, v) in extra.as_object().unwrap() {
        node[k] = v.clone();
    }
    node
}

fn run_groq(env: &Env, server: &Server, node: Value) -> (std::process::Output, Duration) {
    run_groq_with(env, server, node, &[])
}

/// `run_groq` with more arguments for `flowrun run`.
fn run_groq_with(
    env: &Env,
    server: &Server,
    node: Value,
    extra: &[&str],
) -> (std::process::Output, Duration) {
    let wf = llm_workflow("groq-retry", ("groq", "GROQ_API_KEY"), node, vec![]);
    let file = env.write_workflow("wf.json", &wf);
    let base = server.url("/openai/v1");
    let started = Instant::now();
    let out = env.run_with(
        &file,
        r#"{"query": "q"}"#,
        &[
            ("FLOWRUN_GROQ_BASE_URL", base.as_str()),
            ("GROQ_API_KEY", GROQ_KEY),
        ],
        extra,
    );
    (out, started.elapsed())
}

#[test]
fn rate_limited_429_honours_retry_after_then_succeeds() {
    let env = Env::new();
    let server = Server::scripted([
        Reply::openai_error(429, "Rate limit reached, slow down").header("Retry-After", "1"),
        Reply::openai_chat("llama-3.1-8b-instant", "finally", 10, 2),
    ]);
    let (out, _) = run_groq(&env, &server, groq_node(json!({})));
    assert_code(&out, 0, "run");
    let reqs = server.requests();
    assert_eq!(reqs.len(), 2, "one 429, one retry");
    let gap = reqs[1].at.duration_since(reqs[0].at);
    assert!(
        gap >= Duration::from_millis(990),
        "the retry came {gap:?} after the 429, before Retry-After: 1 elapsed"
    );
    // Both attempts are the same request.
    assert_eq!(reqs[0].body, reqs[1].body);
    assert_eq!(
        reqs[1].header("authorization"),
        reqs[0].header("authorization")
    );

    let id = env.only_execution_id();
    let ask = env.node(&id, "ask");
    assert_eq!(ask.status, "success");
    assert_eq!(ask.output()["content"], "finally");
    assert_eq!(
        ask.output()["usage"],
        json!({ "input_tokens": 10, "output_tokens": 2 })
    );
    // The wait is visible in the logs.
    let logs = stdout(&env.cmd(["logs", &id]));
    assert!(
        logs.contains("429"),
        "logs should tell about the 429:\n{logs}"
    );
}

#[test]
fn http_500_on_every_attempt_fails_after_one_plus_max_retries() {
    let env = Env::new();
    // Retry-After: 0 keeps the test fast; the count is what matters here.
    let server =
        Server::start(|_| Reply::openai_error(500, "upstream exploded").header("Retry-After", "0"));
    let (out, _) = run_groq(&env, &server, groq_node(json!({})));
    assert_code(&out, 1, "run");
    assert_eq!(server.requests().len(), 3, "1 + max_retries (default 2)");

    let id = env.only_execution_id();
    let ExecRow { status, error, .. } = env.execution(&id);
    assert_eq!(status, "error");
    let error = error.expect("execution error");
    assert_eq!(error["node"], "ask", "{error}");
    let ask = env.node(&id, "ask");
    assert_eq!(ask.status, "error");
    assert_eq!(ask.error_type(), "HttpError");
    let msg = ask.error_message();
    assert!(msg.contains("500"), "{msg}");
    assert!(
        msg.contains("upstream exploded"),
        "body excerpt missing: {msg}"
    );
    assert!(msg.contains("3 tries"), "{msg}");
}

#[test]
fn max_retries_zero_means_one_request() {
    let env = Env::new();
    let server = Server::start(|_| Reply::openai_error(503, "overloaded"));
    let (out, elapsed) = run_groq(&env, &server, groq_node(json!({ "max_retries": 0 })));
    assert_code(&out, 1, "run");
    assert_eq!(server.requests().len(), 1);
    let id = env.only_execution_id();
    let msg = env.node(&id, "ask").error_message().to_string();
    assert!(msg.contains("503") && msg.contains("overloaded"), "{msg}");
    assert!(elapsed < Duration::from_secs(5), "{elapsed:?}");
}

/// An llm node the runner ends (the execution's timeout) keeps its input: the request it was
/// making (it was set only once the answer came, so a hung call showed none).
#[test]
fn an_llm_call_cut_by_the_executions_timeout_keeps_its_request() {
    let env = Env::new();
    let server = Server::start(|_| {
        Reply::openai_chat("llama-3.1-8b-instant", "too late", 1, 1).delay(Duration::from_secs(5))
    });
    let (out, _) = run_groq_with(
        &env,
        &server,
        groq_node(json!({})),
        &["--timeout-ms", "1500"],
    );
    assert!(!out.status.success(), "{}", describe(&out));
    let id = env.only_execution_id();
    assert_eq!(env.execution(&id).status, "timeout");
    let ask = env.node(&id, "ask");
    let input = ask.input.expect("the request kept");
    assert_eq!(input["provider"], "groq", "{input}");
    assert!(input["request"]["messages"].is_array(), "{input}");
}

#[test]
fn a_slow_provider_times_out_inside_the_node() {
    let env = Env::new();
    let server = Server::start(|_| {
        Reply::openai_chat("llama-3.1-8b-instant", "too late", 1, 1).delay(Duration::from_secs(3))
    });
    let (out, elapsed) = run_groq(
        &env,
        &server,
        groq_node(json!({ "timeout_ms": 300, "max_retries": 0 })),
    );
    assert_code(&out, 1, "run");
    assert!(
        elapsed < Duration::from_secs(2),
        "the run took {elapsed:?}: it waited for the slow server"
    );
    assert_eq!(server.requests().len(), 1);
    let id = env.only_execution_id();
    let ExecRow { status, .. } = env.execution(&id);
    // The node's own call timed out (an error of the node), not the runner's hard kill
    // (which would make the execution `timeout`).
    assert_eq!(status, "error", "{}", describe(&out));
    let ask = env.node(&id, "ask");
    assert_eq!(ask.status, "error");
    assert_eq!(ask.error_type(), "Timeout", "{:?}", ask.error);
    assert!(
        ask.error_message().contains("timed out"),
        "{}",
        ask.error_message()
    );
}

#[test]
fn a_connection_error_is_retried_after_milliseconds_until_a_late_server_answers() {
    let env = Env::new();
    // Nothing listens on the port yet: the first tries are refused.
    let port = closed_port();
    let wf = llm_workflow(
        "late-server",
        ("groq", "GROQ_API_KEY"),
        groq_node(json!({ "max_retries": 3 })),
        vec![],
    );
    let file = env.write_workflow("wf.json", &wf);
    let child = env
        .command()
        .arg("run")
        .arg(&file)
        .args(["--input", r#"{"query": "q"}"#])
        .env(
            "FLOWRUN_GROQ_BASE_URL",
            format!("http://127.0.0.1:{port}/openai/v1"),
        )
        .env("GROQ_API_KEY", GROQ_KEY)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn flowrun");
    // The provider (a proxy, a local model server) comes up once the first try was refused and
    // the node said it waits 500 ms; the retries after it wait 1 s and 2 s.
    let first_wait = |env: &Env| -> Option<()> {
        let id = env.try_execution_ids()?.into_iter().next()?;
        env.events(&id)
            .iter()
            .any(|e| e.kind == "log" && e.data.to_string().contains("retrying in 500 ms"))
            .then_some(())
    };
    wait_for("the first refused try", || first_wait(&env));
    let server = Server::start_on(port, |_| {
        Reply::openai_chat("llama-3.1-8b-instant", "up now", 3, 2)
    });
    let up = Instant::now();
    let out = child.wait_with_output().expect("flowrun ends");
    let elapsed = up.elapsed();
    assert_code(&out, 0, "run");
    // At most 1 s + 2 s of waiting; with waits in seconds the run would end at the workflow's
    // 20 s timeout.
    assert!(
        elapsed < Duration::from_secs(12),
        "retries wait milliseconds, not seconds: the run ended {elapsed:?} after the server came up"
    );
    assert_eq!(server.requests().len(), 1, "one try reached the server");
    let id = env.only_execution_id();
    let ask = env.node(&id, "ask");
    assert_eq!(ask.status, "success");
    assert_eq!(ask.output()["content"], "up now");
    let logs = stdout(&env.cmd(["logs", &id]));
    assert!(logs.contains("retrying in 500 ms"), "{logs}");
}
