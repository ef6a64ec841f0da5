//! `llm` nodes end to end: the real `flowrun` binary runs real Python, which talks to a real
//! HTTP server in this test process speaking the providers' wire formats (OpenAI chat
//! completions for groq/openai/openai_compatible, Anthropic messages). The server records what
//! it receives, so each test checks both sides: the request flowrun sent and what it recorded.

mod retries;

use crate::support::llm_server::{Reply, Server, closed_port};
use crate::support::*;
use serde_json::{Value, json};

const GROQ_KEY: &str = "gsk_test_4f8e2a91c7";
const OPENAI_KEY: &str = "sk-proj-test-b71c0d93";
const ANTHROPIC_KEY: &str = "sk-ant-test-5e2d8c40";

/// A workflow with one trigger-templated llm node `ask` (plus whatever `extra` nodes).
fn llm_workflow(id: &str, conn: (&str, &str), ask: Value, extra: Vec<Value>) -> Value {
    let mut nodes = vec![json!({"id": "trigger", "type": "trigger"}), ask];
    nodes.extend(extra);
    json!({
        "id": id,
        "connections": { conn.0: { "env": conn.1 } },
        "timeout_ms": 20000,
        "nodes": nodes
    })
}

/// An OpenAI-style server answering every request with `content` and the given token counts,
/// echoing the model it was asked for.
fn openai_echo_server(content: &'static str, prompt_tokens: u64, completion: u64) -> Server {
    Server::start(move |req| {
        let model = req
            .json
            .as_ref()
            .and_then(|b| b["model"].as_str())
            .unwrap_or("?")
            .to_string();
        Reply::openai_chat(&model, content, prompt_tokens, completion)
    })
}

// ---------------------------------------------------------------------------------------------
// groq / openai: success, token usage and cost
// ---------------------------------------------------------------------------------------------

#[test]
fn groq_chat_sends_the_openai_wire_format_and_records_usage_and_cost() {
    let env = Env::new();
    let server = openai_echo_server("Rust is a systems language.", 12345, 6789);
    let wf = llm_workflow(
        "groq-chat",
        ("groq", "GROQ_API_KEY"),
        json!({
            "id": "ask", "type": "llm", "provider": "groq",
            "model": "llama-3.1-8b-instant", "connection": "groq",
            "system": "You answer briefly.",
            "messages": [ { "role": "user", "content": "Question: {{ trigger.query }}" } ],
            "temperature": 0.2, "max_tokens": 64
        }),
        vec![json!({
            "id": "answer", "type": "set",
            "fields": { "text": "{{ nodes.ask.output.content }}", "tokens": "{{ nodes.ask.output.usage }}" }
        })],
    );
    let file = env.write_workflow("wf.json", &wf);
    let base = server.url("/openai/v1");
    let out = env.run_with(
        &file,
        r#"{"query": "What is Rust?"}"#,
        &[
            ("FLOWRUN_GROQ_BASE_URL", base.as_str()),
            ("GROQ_API_KEY", GROQ_KEY),
        ],
        &[],
    );
    assert_code(&out, 0, "run");

    // What the provider received.
    let req = server.only_request();
    assert_eq!(req.method, "POST");
    assert_eq!(req.target, "/openai/v1/chat/completions");
    assert_eq!(
        req.header("authorization"),
        Some(format!("Bearer {GROQ_KEY}").as_str())
    );
    assert!(
        req.header("content-type")
            .is_some_and(|c| c.starts_with("application/json")),
        "{:?}",
        req.headers
    );
    let body = req.body_json();
    assert_eq!(body["model"], "llama-3.1-8b-instant");
    assert_eq!(
        body["messages"],
        json!([
            { "role": "system", "content": "You answer briefly." },
            { "role": "user", "content": "Question: What is Rust?" }
        ])
    );
    assert_eq!(body["temperature"], json!(0.2));
    assert_eq!(body["max_tokens"], json!(64));

    // What flowrun recorded.
    let id = env.only_execution_id();
    let ExecRow { status, output, .. } = env.execution(&id);
    assert_eq!(status, "success");
    let ask = env.node(&id, "ask");
    assert_eq!(ask.status, "success");
    let o = ask.output();
    assert_eq!(o["content"], "Rust is a systems language.");
    assert_eq!(o["model"], "llama-3.1-8b-instant");
    assert_eq!(
        o["usage"],
        json!({ "input_tokens": 12345, "output_tokens": 6789 })
    );
    // llama-3.1-8b-instant: 0.05 / 0.08 USD per million tokens.
    let cost = (12345.0 * 0.05 + 6789.0 * 0.08) / 1e6;
    assert_close(&o["cost_usd"], cost, "ask.cost_usd");
    assert_eq!(
        output.expect("execution output"),
        json!({
            "text": "Rust is a systems language.",
            "tokens": { "input_tokens": 12345, "output_tokens": 6789 }
        })
    );

    // Totals in history and show.
    let h = env.history_json(&[]);
    assert_eq!(h.len(), 1);
    assert_eq!(h[0]["id"], json!(id));
    assert_eq!(h[0]["input_tokens"], json!(12345));
    assert_eq!(h[0]["output_tokens"], json!(6789));
    assert_close(&h[0]["cost_usd"], cost, "history cost_usd");

    let show = env.cmd(["show", &id]);
    assert_code(&show, 0, "show");
    let text = stdout(&show);
    assert!(text.contains("12345/6789"), "show lacks tokens:\n{text}");
    assert!(text.contains("$0.001160"), "show lacks cost:\n{text}");

    let show_json: Value = serde_json::from_slice(&env.cmd(["show", &id, "--json"]).stdout)
        .expect("show --json prints JSON");
    assert_eq!(show_json["input_tokens"], json!(12345), "{show_json}");
    assert_eq!(show_json["output_tokens"], json!(6789), "{show_json}");
    assert_close(&show_json["cost_usd"], cost, "show --json cost_usd");
}

#[test]
fn openai_unknown_model_costs_null_not_a_guess() {
    let env = Env::new();
    let server = openai_echo_server("ok", 1000, 500);
    let wf = llm_workflow(
        "openai-unknown",
        ("openai", "OPENAI_API_KEY"),
        json!({
            "id": "ask", "type": "llm", "provider": "openai",
            "model": "gpt-test-unlisted", "connection": "openai",
            "prompt": "Say {{ trigger.word }}"
        }),
        vec![],
    );
    let file = env.write_workflow("wf.json", &wf);
    let base = server.url("/v1");
    let out = env.run_with(
        &file,
        r#"{"word": "ok"}"#,
        &[
            ("FLOWRUN_OPENAI_BASE_URL", base.as_str()),
            ("OPENAI_API_KEY", OPENAI_KEY),
        ],
        &[],
    );
    assert_code(&out, 0, "run");
    let req = server.only_request();
    assert_eq!(req.path(), "/v1/chat/completions");
    assert_eq!(
        req.header("authorization"),
        Some(format!("Bearer {OPENAI_KEY}").as_str())
    );
    // `prompt` becomes the one user message; no system message when none is given.
    assert_eq!(
        req.body_json()["messages"],
        json!([{ "role": "user", "content": "Say ok" }])
    );
    assert!(req.body_json().get("max_tokens").is_none());

    let id = env.only_execution_id();
    let o = env.node(&id, "ask").output().clone();
    assert_eq!(o["model"], "gpt-test-unlisted");
    assert_eq!(
        o["usage"],
        json!({ "input_tokens": 1000, "output_tokens": 500 })
    );
    assert!(o.get("cost_usd").is_some(), "cost_usd must be present: {o}");
    assert_eq!(o["cost_usd"], Value::Null);

    let h = env.history_json(&[]);
    assert_eq!(h[0]["input_tokens"], json!(1000));
    assert_eq!(h[0]["output_tokens"], json!(500));
    assert_eq!(h[0]["cost_usd"], Value::Null);
    let show = stdout(&env.cmd(["show", &id]));
    assert!(show.contains("1000/500"), "{show}");
    assert!(
        show.contains("unknown"),
        "show must say the cost is unknown:\n{show}"
    );
}

#[test]
fn price_on_the_node_overrides_the_table() {
    let env = Env::new();
    let server = openai_echo_server("ok", 1000, 500);
    let wf = json!({
        "id": "openai-prices",
        "connections": { "openai": { "env": "OPENAI_API_KEY" } },
        "nodes": [
            { "id": "listed", "type": "llm", "provider": "openai", "model": "gpt-4o-mini",
              "connection": "openai", "prompt": "a" },
            { "id": "overridden", "type": "llm", "provider": "openai", "model": "gpt-4o-mini",
              "connection": "openai", "prompt": "b",
              "price": { "input_per_mtok": 1.0, "output_per_mtok": 2.0 } },
            { "id": "unlisted_priced", "type": "llm", "provider": "openai", "model": "my-finetune",
              "connection": "openai", "prompt": "c",
              "price": { "input_per_mtok": 3.0, "output_per_mtok": 4.0 } }
        ]
    });
    let file = env.write_workflow("wf.json", &wf);
    let base = server.url("/v1");
    let out = env.run_with(
        &file,
        "{}",
        &[
            ("FLOWRUN_OPENAI_BASE_URL", base.as_str()),
            ("OPENAI_API_KEY", OPENAI_KEY),
        ],
        &[],
    );
    assert_code(&out, 0, "run");
    assert_eq!(server.requests().len(), 3);
    let id = env.only_execution_id();
    // gpt-4o-mini in the table: 0.15 / 0.60.
    let listed = (1000.0 * 0.15 + 500.0 * 0.60) / 1e6;
    let overridden = (1000.0 * 1.0 + 500.0 * 2.0) / 1e6;
    let unlisted = (1000.0 * 3.0 + 500.0 * 4.0) / 1e6;
    assert_close(
        &env.node(&id, "listed").output()["cost_usd"],
        listed,
        "listed",
    );
    assert_close(
        &env.node(&id, "overridden").output()["cost_usd"],
        overridden,
        "overridden",
    );
    assert_close(
        &env.node(&id, "unlisted_priced").output()["cost_usd"],
        unlisted,
        "unlisted_priced",
    );
    let h = env.history_json(&[]);
    assert_eq!(h[0]["input_tokens"], json!(3000));
    assert_eq!(h[0]["output_tokens"], json!(1500));
    assert_close(
        &h[0]["cost_usd"],
        listed + overridden + unlisted,
        "total cost",
    );
}

#[test]
fn a_total_with_an_unpriced_node_is_unknown_not_an_undercount() {
    let env = Env::new();
    let server = openai_echo_server("ok", 1000, 500);
    let wf = json!({
        "id": "openai-mixed",
        "connections": { "openai": { "env": "OPENAI_API_KEY" } },
        "nodes": [
            { "id": "priced", "type": "llm", "provider": "openai", "model": "gpt-4o-mini",
              "connection": "openai", "prompt": "a" },
            { "id": "unpriced", "type": "llm", "provider": "openai", "model": "my-finetune",
              "connection": "openai", "prompt": "b" }
        ]
    });
    let file = env.write_workflow("wf.json", &wf);
    let base = server.url("/v1");
    let out = env.run_with(
        &file,
        "{}",
        &[
            ("FLOWRUN_OPENAI_BASE_URL", base.as_str()),
            ("OPENAI_API_KEY", OPENAI_KEY),
        ],
        &[],
    );
    assert_code(&out, 0, "run");
    let id = env.only_execution_id();
    assert!(env.node(&id, "priced").output()["cost_usd"].is_number());
    assert_eq!(env.node(&id, "unpriced").output()["cost_usd"], Value::Null);
    let h = env.history_json(&[]);
    assert_eq!(h[0]["input_tokens"], json!(2000));
    assert_eq!(
        h[0]["cost_usd"],
        Value::Null,
        "the priced node's cost alone is not the execution's cost"
    );
}

// ---------------------------------------------------------------------------------------------
// anthropic and openai_compatible
// ---------------------------------------------------------------------------------------------

#[test]
fn anthropic_messages_wire_format() {
    let env = Env::new();
    let server = Server::start(|req| {
        let model = req
            .json
            .as_ref()
            .and_then(|b| b["model"].as_str())
            .unwrap_or("?")
            .to_string();
        Reply::anthropic_message(&model, "Bonjour.", 2000, 300)
    });
    let wf = llm_workflow(
        "anthropic-chat",
        ("claude", "ANTHROPIC_API_KEY"),
        json!({
            "id": "ask", "type": "llm", "provider": "anthropic",
            "model": "claude-3-5-haiku-20241022", "connection": "claude",
            "system": "Be terse.",
            "messages": [
                { "role": "system", "content": "Answer in French." },
                { "role": "user", "content": "Say hello to {{ trigger.name }}" }
            ],
            "max_tokens": 200, "temperature": 0.5
        }),
        vec![json!({
            "id": "again", "type": "llm", "provider": "anthropic",
            "model": "claude-3-5-haiku-20241022", "connection": "claude",
            "prompt": "Repeat: {{ nodes.ask.output.content }}"
        })],
    );
    let file = env.write_workflow("wf.json", &wf);
    let base = server.url("");
    let out = env.run_with(
        &file,
        r#"{"name": "Ada"}"#,
        &[
            ("FLOWRUN_ANTHROPIC_BASE_URL", base.as_str()),
            ("ANTHROPIC_API_KEY", ANTHROPIC_KEY),
        ],
        &[],
    );
    assert_code(&out, 0, "run");
    let reqs = server.requests();
    assert_eq!(reqs.len(), 2, "{reqs:?}");
    let req = &reqs[0];
    assert_eq!(req.method, "POST");
    assert_eq!(req.target, "/v1/messages");
    assert_eq!(req.header("x-api-key"), Some(ANTHROPIC_KEY));
    assert_eq!(req.header("anthropic-version"), Some("2023-06-01"));
    assert_eq!(
        req.header("authorization"),
        None,
        "Anthropic authenticates with x-api-key only"
    );
    let body = req.body_json();
    assert_eq!(body["model"], "claude-3-5-haiku-20241022");
    assert_eq!(body["max_tokens"], json!(200));
    assert_eq!(body["temperature"], json!(0.5));
    // `system` is a top-level field: no system role inside `messages`.
    assert_eq!(
        body["messages"],
        json!([{ "role": "user", "content": "Say hello to Ada" }])
    );
    let system = body["system"].as_str().expect("a top-level system string");
    assert!(
        system.contains("Be terse.") && system.contains("Answer in French."),
        "{system:?}"
    );
    // The second node: a prompt, and max_tokens is still sent (Anthropic requires it).
    let body2 = reqs[1].body_json();
    assert_eq!(
        body2["messages"],
        json!([{ "role": "user", "content": "Repeat: Bonjour." }])
    );
    assert!(
        body2["max_tokens"].as_u64().is_some_and(|n| n > 0),
        "{body2}"
    );
    assert!(body2.get("system").is_none(), "{body2}");

    let id = env.only_execution_id();
    let o = env.node(&id, "ask").output().clone();
    assert_eq!(o["content"], "Bonjour.");
    assert_eq!(o["model"], "claude-3-5-haiku-20241022");
    assert_eq!(
        o["usage"],
        json!({ "input_tokens": 2000, "output_tokens": 300 })
    );
    // claude-3-5-haiku (dated snapshot by prefix): 0.80 / 4.00.
    let cost = (2000.0 * 0.80 + 300.0 * 4.00) / 1e6;
    assert_close(&o["cost_usd"], cost, "cost_usd");
    let h = env.history_json(&[]);
    assert_eq!(h[0]["input_tokens"], json!(4000));
    assert_eq!(h[0]["output_tokens"], json!(600));
    assert_close(&h[0]["cost_usd"], 2.0 * cost, "total cost");
}

#[test]
fn openai_compatible_uses_the_base_url_on_the_node() {
    let env = Env::new();
    let server = openai_echo_server("local answer", 7, 3);
    // The OpenAI endpoint variable points at a dead port: the node's own base_url wins.
    let dead = format!("http://127.0.0.1:{}/v1", closed_port());
    let wf = llm_workflow(
        "local-llm",
        ("local", "LOCAL_LLM_KEY"),
        json!({
            "id": "ask", "type": "llm", "provider": "openai_compatible",
            "base_url": server.url("/compat/v1/"),
            "model": "llama3.2:1b", "connection": "local",
            "messages": [ { "role": "user", "content": "{{ trigger.q }}" } ]
        }),
        vec![],
    );
    let file = env.write_workflow("wf.json", &wf);
    let out = env.run_with(
        &file,
        r#"{"q": "hi"}"#,
        &[
            ("FLOWRUN_OPENAI_BASE_URL", dead.as_str()),
            ("LOCAL_LLM_KEY", "local-key-93b1"),
        ],
        &[],
    );
    assert_code(&out, 0, "run");
    let req = server.only_request();
    assert_eq!(req.target, "/compat/v1/chat/completions");
    assert_eq!(req.header("authorization"), Some("Bearer local-key-93b1"));
    assert_eq!(req.body_json()["model"], "llama3.2:1b");
    assert_eq!(
        req.body_json()["messages"],
        json!([{ "role": "user", "content": "hi" }])
    );
    let id = env.only_execution_id();
    let o = env.node(&id, "ask").output().clone();
    assert_eq!(o["content"], "local answer");
    assert_eq!(o["usage"], json!({ "input_tokens": 7, "output_tokens": 3 }));
    assert_eq!(
        o["cost_usd"],
        Value::Null,
        "no shipped price for a local model"
    );
}

// ---------------------------------------------------------------------------------------------
// validation
// ---------------------------------------------------------------------------------------------

#[test]
fn llm_node_needs_a_declared_connection() {
    let env = Env::new();
    let file = env.write_workflow(
        "wf.json",
        &json!({
            "id": "no-conn",
            "nodes": [
                { "id": "ask", "type": "llm", "provider": "groq", "model": "llama-3.1-8b-instant",
                  "connection": "groq", "prompt": "hi" }
            ]
        }),
    );
    let out = env.cmd(["validate".as_ref(), file.as_os_str()]);
    assert_code(&out, 2, "validate");
    let text = format!("{}{}", stdout(&out), stderr(&out));
    assert!(text.contains("ask"), "names the node: {text}");
    assert!(text.contains("connection"), "names the field: {text}");
    assert!(text.contains("groq"), "names the connection: {text}");
    // `run` refuses the same way, without recording anything.
    let out = env.run_with(&file, "{}", &[("GROQ_API_KEY", GROQ_KEY)], &[]);
    assert_code(&out, 2, "run");
    assert_eq!(env.execution_count(), 0);
}

/// (Not `local-…`: the redactor also replaces a secret's first bytes at the end of a JSON
/// string, and the node id `ask_local` ends so.)
const COMPAT_KEY: &str = "sk-compat-93b1";

/// A workflow with one `openai_compatible` node that has no `base_url`.
fn compat_without_base_url(env: &Env) -> std::path::PathBuf {
    env.write_workflow(
        "wf.json",
        &json!({
            "id": "no-base",
            "connections": { "local": { "env": "LOCAL_LLM_KEY" } },
            "nodes": [
                { "id": "ask_local", "type": "llm", "provider": "openai_compatible", "model": "m",
                  "connection": "local", "prompt": "hi" }
            ]
        }),
    )
}

#[test]
fn openai_compatible_takes_its_base_url_from_the_variable() {
    let env = Env::new();
    let server = openai_echo_server("from the variable", 2, 1);
    let file = compat_without_base_url(&env);
    let out = env.cmd(["validate".as_ref(), file.as_os_str()]);
    assert_code(&out, 0, "validate: the variable may give the base URL");
    let base = server.url("/local/v1");
    let out = env.run_with(
        &file,
        "{}",
        &[
            ("FLOWRUN_OPENAI_COMPATIBLE_BASE_URL", base.as_str()),
            ("LOCAL_LLM_KEY", COMPAT_KEY),
        ],
        &[],
    );
    assert_code(&out, 0, "run");
    assert_eq!(server.only_request().target, "/local/v1/chat/completions");
    let id = env.only_execution_id();
    assert_eq!(
        env.node(&id, "ask_local").output()["content"],
        "from the variable"
    );
}

#[test]
fn openai_compatible_without_any_base_url_fails_naming_the_variable() {
    let env = Env::new();
    let file = compat_without_base_url(&env);
    let out = env.run_with(&file, "{}", &[("LOCAL_LLM_KEY", COMPAT_KEY)], &[]);
    assert_code(&out, 1, "run");
    let id = env.only_execution_id();
    let row = env.node(&id, "ask_local");
    assert_eq!(row.status, "error");
    assert_eq!(row.error_type(), "MissingBaseUrl", "{:?}", row.error);
    let msg = row.error_message();
    assert!(msg.contains("FLOWRUN_OPENAI_COMPATIBLE_BASE_URL"), "{msg}");
    assert!(msg.contains("base_url"), "names the field too: {msg}");
}

#[test]
fn a_valid_llm_workflow_validates() {
    // The counterpart of the two above: the same shapes, complete, pass.
    let env = Env::new();
    let file = env.write_workflow(
        "wf.json",
        &json!({
            "id": "ok",
            "connections": { "local": { "env": "LOCAL_LLM_KEY" } },
            "nodes": [
                { "id": "ask_local", "type": "llm", "provider": "openai_compatible", "model": "m",
                  "base_url": "http://127.0.0.1:1/v1", "connection": "local", "prompt": "hi" }
            ]
        }),
    );
    let out = env.cmd(["validate".as_ref(), file.as_os_str()]);
    assert_code(&out, 0, "validate");
}
