//! `resume` of a parent whose children's files changed since they ran; a child's record kept while
//! its parent runs.

use super::{put, top_level_ids};
use crate::support::serve::World;
use crate::support::*;
use serde_json::json;

/// A grandchild's file changed: every item of the parent's node runs again (only the direct
/// child's file was compared, and the output mixed v1 and v2).
#[test]
fn a_changed_grandchild_runs_every_item_again() {
    let env = Env::new();
    let code = |v: &str| {
        format!(
            "if '{v}' == 'v1' and trigger['n'] == 1:\n    raise ValueError('v1 fails on 1')\nreturn '{v}-%d' % trigger['n']"
        )
    };
    let leaf =
        |v: &str| json!({"id": "leaf", "nodes": [{"id": "say", "type": "code", "code": code(v)}]});
    put(&env, "leaf.json", &leaf("v1"));
    put(
        &env,
        "mid.json",
        &json!({"id": "mid", "nodes": [{"id": "down", "type": "workflow", "workflow": "./leaf.json",
                                        "inputs": {"n": "{{ trigger.n }}"}}]}),
    );
    let parent = put(
        &env,
        "top.json",
        &json!({"id": "top", "nodes": [{"id": "each", "type": "workflow", "workflow": "./mid.json",
            "for_each": [0, 1, 2], "fail_fast": false, "inputs": {"n": "{{ item }}"}}]}),
    );
    let out = env.run(&parent, "{}", &[]);
    assert_code(&out, 1, "item 1 fails");
    let first = top_level_ids(&env).pop().unwrap();
    put(&env, "leaf.json", &leaf("v2"));
    let out = env.cmd(["resume", first.as_str()]);
    assert_success(&out, "resume");
    assert_eq!(
        stdout(&out).trim(),
        r#"["v2-0","v2-1","v2-2"]"#,
        "{}",
        describe(&out)
    );
}

/// A resume of a resume: the node reused in the second execution has its children in the
/// first, and a change of their file is seen there (it was not: the output stayed v1).
#[test]
fn a_changed_child_is_seen_through_a_reused_node() {
    let env = Env::new();
    let child = |v: &str| json!({"id": "child", "nodes": [{"id": "say", "type": "code", "code": format!("return '{v}'")}]});
    put(&env, "child.json", &child("v1"));
    let ok = env.path("ok.flag").display().to_string();
    let parent = put(
        &env,
        "parent.json",
        &json!({"id": "parent", "nodes": [
            {"id": "a", "type": "workflow", "workflow": "./child.json"},
            {"id": "b", "type": "code", "code": format!(
                "import os\nif not os.path.exists({ok:?}):\n    raise ValueError('not yet')\nreturn nodes['a']['output']")}
        ]}),
    );
    let out = env.run(&parent, "{}", &[]);
    assert_code(&out, 1, "b fails");
    let first = top_level_ids(&env).pop().unwrap();
    let out = env.cmd(["resume", first.as_str()]);
    assert_code(&out, 1, "b fails again, a reused");
    let second = top_level_ids(&env).pop().unwrap();
    put(&env, "child.json", &child("v2"));
    std::fs::write(&ok, "").unwrap();
    let out = env.cmd(["resume", second.as_str()]);
    assert_success(&out, "resume of the resume");
    assert_eq!(stdout(&out).trim(), r#""v2""#, "{}", describe(&out));
}

/// A child execution is part of its parent's record: not deleted while the parent (at any
/// depth) runs — by the CLI or the API — and deleted with it, or alone, once it has ended.
#[test]
fn a_child_is_not_deleted_while_its_parent_runs() {
    let w = World::new();
    w.save(
        "child.json",
        &json!({"id": "child", "nodes": [{"id": "say", "type": "template", "template": "hi"}]}),
    );
    w.save(
        "parent.json",
        &json!({"id": "parent", "nodes": [
            {"id": "call", "type": "workflow", "workflow": "./child.json"},
            {"id": "wait", "type": "delay", "ms": 30000, "after": ["call"]}]}),
    );
    let s = w.serve(&[]);
    let parent = s.start("/api/workflows/parent/executions", &json!({}));
    let rec = s.wait_until(&parent, "its delay running", |r| {
        r["nodes"][1]["status"] == "running"
    });
    let child = rec["nodes"][0]["child_execution"]
        .as_str()
        .or_else(|| rec["children"][0]["id"].as_str())
        .unwrap_or_else(|| panic!("no child in {rec}"))
        .to_string();
    let r = s.delete(&format!("/api/executions/{child}"));
    assert_eq!(r.status, 409, "{}", r.text);
    assert_eq!(r.body["error"], "not_finished", "{}", r.text);
    assert_eq!(r.body["parent"], parent.as_str(), "{}", r.text);
    let out = w.command().args(["delete", &child]).output().unwrap();
    assert_code(&out, 2, "delete of a running parent's child");
    assert!(
        stderr(&out).contains(&format!("part of execution {parent}")),
        "{}",
        stderr(&out)
    );
    assert_eq!(s.get(&format!("/api/executions/{child}")).status, 200);
    let stopped = s.post(
        &format!("/api/executions/{parent}/stop?wait=true"),
        &json!({}),
    );
    assert_eq!(stopped.status, 200, "{}", stopped.text);
    assert_eq!(s.delete(&format!("/api/executions/{child}")).status, 200);
}

/// An LLM call of $0.05 (1M prompt tokens of llama-3.1-8b-instant) after the nodes `after`.
fn ask(id: &str, after: &[&str]) -> serde_json::Value {
    json!({ "id": id, "type": "llm", "provider": "groq", "model": "llama-3.1-8b-instant",
            "connection": "groq", "after": after,
            "messages": [ { "role": "user", "content": format!("call {id}") } ] })
}

/// A code node that fails while `file` exists (`once`: and removes it as it fails).
fn fails_while(id: &str, after: &[&str], file: &std::path::Path, once: bool) -> serde_json::Value {
    let remove = if once { "    os.remove(p)\n" } else { "" };
    json!({ "id": id, "type": "code", "after": after, "code": format!(
        "import os\np = {:?}\nif os.path.exists(p):\n{remove}    raise RuntimeError('{id}')\nreturn 1",
        file.display().to_string()) })
}

/// Runs `flowrun ARGS` with the priced stand-in's variables; its output.
fn priced(
    env: &Env,
    server: &crate::support::llm_server::Server,
    args: &[&str],
) -> std::process::Output {
    env.command()
        .args(args)
        .env("FLOWRUN_GROQ_BASE_URL", server.url("/openai/v1"))
        .env("GROQ_API_KEY", "gsk-resume-test-0123456789")
        .output()
        .unwrap()
}

fn priced_server() -> crate::support::llm_server::Server {
    use crate::support::llm_server::{Reply, Server};
    Server::start(|_| Reply::openai_chat("llama-3.1-8b-instant", "ok", 1_000_000, 0))
}

/// A resumed child's reused calls count toward its parent's limit, as the parent's own reused
/// calls do: the call after the child, which a run with those nodes in one file refuses, is
/// refused after the resume too (it ran, past the limit, when the child reported nothing).
#[test]
fn a_resumed_childs_reused_calls_count_toward_the_parents_limit() {
    let env = Env::new();
    let server = priced_server();
    let fail = env.path("fail");
    std::fs::write(&fail, "").unwrap();
    let conn = json!({ "groq": { "env": "GROQ_API_KEY" } });
    put(
        &env,
        "child.json",
        &json!({ "id": "child", "connections": conn,
            "nodes": [ask("a", &[]), fails_while("k", &["a"], &fail, false)] }),
    );
    let parent = put(
        &env,
        "parent.json",
        &json!({ "id": "parent", "max_cost_usd": 0.05, "connections": conn, "nodes": [
            { "id": "w", "type": "workflow", "workflow": "./child.json" },
            ask("b", &["w"]) ]}),
    );
    let out = priced(&env, &server, &["run", parent.to_str().unwrap()]);
    assert_code(&out, 1, "the child fails");
    std::fs::remove_file(&fail).unwrap();
    let first = top_level_ids(&env).pop().unwrap();
    let out = priced(&env, &server, &["resume", &first]);
    assert_code(&out, 1, "b would start at the limit");
    assert_eq!(
        server.requests().len(),
        1,
        "only the first run's call: {}",
        describe(&out)
    );
    let resumed = top_level_ids(&env).pop().unwrap();
    let err = env.execution(&resumed).error.unwrap();
    assert_eq!(
        (err["type"].as_str(), err["node"].as_str()),
        (Some("CostLimit"), Some("b"))
    );
}

/// A retried `workflow` node in a resume continues its own previous attempt's child, not the
/// earlier run's again: a call that attempt made is not made twice.
#[test]
fn a_retry_in_a_resume_continues_the_attempt_before_it() {
    let env = Env::new();
    let server = priced_server();
    let (fail_k, fail_d) = (env.path("fail_k"), env.path("fail_d"));
    std::fs::write(&fail_k, "").unwrap();
    let conn = json!({ "groq": { "env": "GROQ_API_KEY" } });
    put(
        &env,
        "child.json",
        &json!({ "id": "child", "connections": conn, "nodes": [
            ask("a", &[]),
            fails_while("k", &["a"], &fail_k, false),
            ask("c", &["k"]),
            fails_while("d", &["c"], &fail_d, true) ]}),
    );
    let parent = put(
        &env,
        "parent.json",
        &json!({ "id": "parent", "connections": conn, "nodes": [
            { "id": "w", "type": "workflow", "workflow": "./child.json",
              "retry": { "max_attempts": 2, "backoff_ms": 1 } } ]}),
    );
    let out = priced(&env, &server, &["run", parent.to_str().unwrap()]);
    assert_code(&out, 1, "k fails in both attempts");
    assert_eq!(server.requests().len(), 2, "a, in each attempt's child");
    std::fs::remove_file(&fail_k).unwrap();
    std::fs::write(&fail_d, "").unwrap();
    let first = top_level_ids(&env).pop().unwrap();
    let out = priced(&env, &server, &["resume", &first]);
    assert_code(&out, 0, "d fails once, the retry finishes");
    // c was called once: the retry reused it from the attempt before.
    let calls: Vec<String> = server
        .requests()
        .iter()
        .map(|r| {
            r.body_json()["messages"][0]["content"]
                .as_str()
                .unwrap_or("")
                .to_string()
        })
        .collect();
    assert_eq!(calls, ["call a", "call a", "call c"], "{}", describe(&out));
}
