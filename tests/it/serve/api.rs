//! The API: `wait=true`, rerun, resume, paging, and 422/409 for invalid requests.

use super::{quick, record_statuses};
use crate::support::serve::World;
use serde_json::{Value, json};
use std::collections::HashMap;

#[test]
fn wait_true_rerun_resume_and_paging() {
    let w = World::new();
    w.save("quick.json", &quick());
    let flaky = json!({
        "id": "flaky",
        "nodes": [
            {"id": "a", "type": "code", "code": "return 41"},
            {"id": "b", "type": "code",
             "code": "if trigger.get('fail'):\n    raise ValueError('boom')\nreturn nodes['a']['output'] + 1"}
        ]
    });
    w.save("flaky.json", &flaky);
    let srv = w.serve(&[]);

    // ?wait=true answers with the finished record.
    let r = srv.post(
        "/api/workflows/quick/executions?wait=true",
        &json!({"trigger": {"n": 7}}),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["status"], "success");
    assert_eq!(r.body["output"], json!({"n": 7}));
    assert_eq!(r.body["nodes"][0]["status"], "success");
    let q1 = r.body["id"].as_str().unwrap().to_string();
    // It is the record the store holds (the execution's task made it as the execution ended).
    let stored = srv.get(&format!("/api/executions/{q1}"));
    assert_eq!(stored.body, r.body);
    let r = srv.post(
        "/api/executions?wait=true",
        &json!({"workflow": quick(), "trigger": {"n": 8}}),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["output"], json!({"n": 8}));

    // Rerun: same definition and trigger, linked to its parent.
    let r = srv.post(&format!("/api/executions/{q1}/rerun?wait=true"), &json!({}));
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["relation"], "rerun");
    assert_eq!(r.body["parent_id"], json!(q1));
    assert_eq!(r.body["output"], json!({"n": 7}));
    // What a rerun says besides comes with the record it waited for, as with its 202.
    assert!(r.body["notes"].is_array(), "{}", r.text);
    // A query an endpoint does not take is refused, on every endpoint, in the API's words.
    for (method, path) in [
        ("GET", format!("/api/executions/{q1}?foo=1")),
        ("GET", format!("/api/executions/{q1}/events?foo=1")),
        ("GET", "/api/executions?foo=1".to_string()),
        ("GET", "/api?foo=1".to_string()),
        ("GET", "/api/openapi.json?foo=1".to_string()),
        ("GET", "/api/events?foo=1".to_string()),
        ("GET", "/api/workflows?foo=1".to_string()),
        ("GET", "/api/workflows/flaky?foo=1".to_string()),
        ("PUT", "/api/workflows/flaky?foo=1".to_string()),
        ("DELETE", "/api/workflows/flaky?foo=1".to_string()),
        ("POST", "/api/validate?foo=1".to_string()),
        // `?dry_run=true` must not delete.
        ("DELETE", format!("/api/executions/{q1}?foo=1")),
    ] {
        let r = srv.request(
            method,
            &path,
            Some("{}".into()),
            &[("Authorization", &srv.auth())],
        );
        assert_eq!(r.status, 400, "{path}: {}", r.text);
        let m = r.body["message"].as_str().unwrap();
        assert!(
            m.starts_with("the query string is not valid: ") && m.contains("unknown field `foo`"),
            "{method} {path}: {m}"
        );
    }
    assert_eq!(
        srv.get(&format!("/api/executions/{q1}")).status,
        200,
        "not deleted"
    );
    let r = srv.post("/api/executions", &json!([1]));
    assert!(!r.text.contains("struct"), "{}", r.text);
    let r = srv.post(
        "/api/workflows/flaky/executions",
        &json!({"timeout_ms": -1}),
    );
    assert!(r.text.contains("expected a whole number ≥ 0"), "{}", r.text);

    // Resume: a failed execution again from the failed node, with new trigger data.
    let r = srv.post(
        "/api/workflows/flaky/executions?wait=true",
        &json!({"trigger": {"fail": true}}),
    );
    assert_eq!(r.body["status"], "error", "{}", r.text);
    let failed = r.body["id"].as_str().unwrap().to_string();
    let r = srv.post(
        &format!("/api/executions/{failed}/resume"),
        &json!({"trigger": {"fail": false}}),
    );
    assert_eq!(r.status, 202, "{}", r.text);
    assert_eq!(r.body["relation"], "resume");
    assert_eq!(r.body["parent_id"], json!(failed));
    let notes: Vec<&str> = r.body["notes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap())
        .collect();
    assert!(notes.iter().any(|n| n.contains("'b' runs")), "{notes:?}");
    assert!(notes.iter().any(|n| n.contains("reusing a")), "{notes:?}");
    let resumed = srv.wait_final(r.body["id"].as_str().unwrap());
    assert_eq!(resumed["status"], "success", "{resumed}");
    assert_eq!(resumed["output"], json!(42));
    let st = record_statuses(&resumed);
    assert_eq!((st["a"].as_str(), st["b"].as_str()), ("reused", "success"));
    // Unknown execution: 404.
    let r = srv.post("/api/executions/ffffffffffffffff/rerun", &json!({}));
    assert_eq!(r.status, 404, "{}", r.text);

    // Paging: 5 executions, newest first, 2 per page.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let path = match &cursor {
            Some(c) => format!("/api/executions?limit=2&cursor={c}"),
            None => "/api/executions?limit=2".to_string(),
        };
        let r = srv.get(&path);
        assert_eq!(r.status, 200, "{}", r.text);
        pages += 1;
        for e in r.body["executions"].as_array().unwrap() {
            seen.push((
                e["started_at"].as_i64().unwrap(),
                e["id"].as_str().unwrap().to_string(),
            ));
        }
        match r.body["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    assert_eq!(seen.len(), 5, "{seen:?}");
    assert_eq!(pages, 3);
    let mut sorted = seen.clone();
    sorted.sort_by(|a, b| b.cmp(a));
    assert_eq!(seen, sorted, "newest first");
    let r = srv.get("/api/executions?workflow=quick&status=success");
    assert_eq!(
        r.body["executions"].as_array().unwrap().len(),
        3,
        "{}",
        r.text
    );
    assert_eq!(r.body["next_cursor"], Value::Null);
    let r = srv.get("/api/executions?status=error");
    assert_eq!(r.body["executions"][0]["id"], json!(failed));
    assert_eq!(srv.get("/api/executions?status=bogus").status, 400);
    assert_eq!(srv.get("/api/executions?cursor=zz").status, 400);
    assert_eq!(srv.get("/api/executions?limit=0").status, 400);
    // An unknown query parameter is a mistake to report, not to ignore.
    let r = srv.get("/api/executions?foo=1");
    assert_eq!(r.status, 400, "{}", r.text);
    assert!(r.text.contains("foo"), "{}", r.text);
    // A known path with another method: 405, with a JSON error like every other one.
    let r = srv.get("/api/executions/x/stop");
    assert_eq!(r.status, 405, "{}", r.text);
    assert_eq!(r.body["error"], json!("method_not_allowed"), "{}", r.text);
}

#[test]
fn invalid_workflows_and_inputs_are_422_unbound_connections_409() {
    let w = World::new();
    // A node with a field no node type has.
    let broken = w.save(
        "broken.json",
        &json!({"id": "broken", "nodes": [{"id": "x", "type": "set", "fields": {}, "colour": "red"}]}),
    );
    w.save(
        "asks.json",
        &json!({
            "id": "asks",
            "inputs": {"type": "object", "properties": {"query": {"type": "string", "default": "hi"}}, "required": ["query"]},
            "nodes": [{"id": "echo", "type": "set", "fields": {"q": "{{ trigger.query }}"}}]
        }),
    );
    let needs_key = w.save(
        "needs-key.json",
        &json!({
            "id": "needs-key",
            "connections": {"llm": {"env": "FLOWRUN_SERVE_TEST_KEY"}, "spare": {"env": "HOME"}},
            "nodes": [{"id": "ask", "type": "llm", "provider": "groq", "model": "m", "connection": "llm",
                       "messages": [{"role": "user", "content": "hi"}]}]
        }),
    );
    // A test file kept beside its workflow is not one (nor listed as a broken one).
    w.save_text(
        "asks.test.yaml",
        "workflow: ./asks.json\ncases:\n  - name: one\n",
    );
    let srv = w.serve(&[]);

    // The list says what is wrong and what is missing.
    let r = srv.get("/api/workflows");
    assert_eq!(r.status, 200, "{}", r.text);
    let list = r.body["workflows"].as_array().unwrap();
    let by_id: HashMap<&str, &Value> = list
        .iter()
        .map(|w| (w["id"].as_str().unwrap(), w))
        .collect();
    assert_eq!(by_id.len(), 3, "{list:?}");
    let b = by_id["broken"];
    assert_eq!(b["valid"], false);
    assert_eq!(b["errors"][0]["node"], "x", "{b}");
    assert!(b["errors"][0]["line"].as_u64().is_some(), "{b}");
    let a = by_id["asks"];
    assert_eq!(a["valid"], true);
    assert_eq!(a["defaults"], json!({"query": "hi"}));
    assert_eq!(a["inputs"]["required"], json!(["query"]));
    let k = by_id["needs-key"];
    assert_eq!(k["ready"], false);
    let conns = k["connections"].as_array().unwrap();
    let llm = conns.iter().find(|c| c["name"] == "llm").unwrap();
    assert_eq!(
        (
            llm["bound"].clone(),
            llm["required"].clone(),
            llm["env"].clone()
        ),
        (json!(false), json!(true), json!("FLOWRUN_SERVE_TEST_KEY"))
    );
    let spare = conns.iter().find(|c| c["name"] == "spare").unwrap();
    assert_eq!(
        (spare["bound"].clone(), spare["required"].clone()),
        (json!(true), json!(false))
    );
    let detail = srv.get("/api/workflows/asks").body;
    assert_eq!(detail["nodes"][0]["id"], "echo");
    assert_eq!(detail["nodes"][0]["type"], "set");
    assert_eq!(detail["definition"]["id"], "asks");
    assert_eq!(srv.get("/api/workflows/nope").status, 404);

    // Invalid saved workflow: 422 with `flowrun validate`'s message.
    let r = srv.post("/api/workflows/broken/executions", &json!({}));
    assert_eq!(r.status, 422, "{}", r.text);
    assert_eq!(r.body["error"], "invalid_workflow");
    let out = w.cmd(["validate", broken.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let cli_msg = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        cli_msg.trim().strip_prefix("error: ").unwrap(),
        r.body["message"].as_str().unwrap()
    );
    assert_eq!(r.body["diagnostics"][0]["node"], "x");

    // Invalid unsaved definition: node and field named.
    let r = srv.post(
        "/api/executions",
        &json!({"workflow": {"id": "bad-ref", "nodes": [
            {"id": "a", "type": "set", "fields": {"v": "{{ nodes.ghost.output }}"}}]}}),
    );
    assert_eq!(r.status, 422, "{}", r.text);
    let d = &r.body["diagnostics"][0];
    assert_eq!(d["node"], "a", "{d}");
    assert!(d["field"].as_str().unwrap().contains("fields"), "{d}");
    assert!(d["message"].as_str().unwrap().contains("ghost"), "{d}");

    // Invalid input: 422 naming the field; a default fills a missing one.
    let r = srv.post(
        "/api/workflows/asks/executions",
        &json!({"trigger": {"query": 5}}),
    );
    assert_eq!(r.status, 422, "{}", r.text);
    assert_eq!(r.body["error"], "invalid_input");
    assert_eq!(r.body["diagnostics"][0]["field"], "query");
    let r = srv.post("/api/workflows/asks/executions?wait=true", &json!({}));
    assert_eq!(r.body["output"], json!({"q": "hi"}), "{}", r.text);

    // Unbound connection: 409 listing it; the message says what `flowrun run` says of it, but
    // tells an API client what it can do (no CLI flag: the server has no `--env`).
    let r = srv.post("/api/workflows/needs-key/executions", &json!({}));
    assert_eq!(r.status, 409, "{}", r.text);
    assert_eq!(r.body["error"], "unbound_connections");
    assert_eq!(
        r.body["unbound"],
        json!([{"connection": "llm", "env": "FLOWRUN_SERVE_TEST_KEY", "nodes": ["ask"]}])
    );
    let out = w.cmd(["run", needs_key.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(3));
    let cli = String::from_utf8_lossy(&out.stderr);
    let api = r.body["message"].as_str().unwrap();
    let what = "a connection is not bound:\n  llm: set FLOWRUN_SERVE_TEST_KEY (used by node 'ask')";
    assert!(cli.contains(what) && cli.contains("--env"), "{cli}");
    assert!(api.starts_with(what), "{api}");
    assert!(!api.contains("--env"), "the API names no CLI flag: {api}");

    // Bad bodies: 400.
    let r = srv.request(
        "POST",
        "/api/executions",
        Some("{not json".into()),
        &[("Authorization", &format!("Bearer {}", srv.token))],
    );
    assert_eq!(r.status, 400, "{}", r.text);
    let r = srv.post(
        "/api/executions",
        &json!({"workflow": quick(), "trigerr": {}}),
    );
    assert_eq!(r.status, 400, "{}", r.text);
    assert!(r.body["message"].as_str().unwrap().contains("trigerr"));
    let r = srv.post(
        "/api/workflows/asks/executions",
        &json!({"workflow": quick()}),
    );
    assert_eq!(r.status, 400, "{}", r.text);
    assert_eq!(srv.get("/api/executions/0123456789abcdef").status, 404);
    assert_eq!(srv.get("/api/nothing-here").status, 404);
    // Nothing was recorded for any refused start.
    let history: Value = serde_json::from_str(&w.cli_ok(&["history", "--json"])).unwrap();
    assert_eq!(history.as_array().unwrap().len(), 1, "{history}");
}

/// An editor's unsaved version of a saved workflow is read as its file is: its sub-workflow is
/// found beside the file and its nodes run in the file's directory, whatever directory the
/// server runs in — when it is validated, saved, run, and rerun. A rerun is of the same
/// workflow: a definition with another id is refused.
#[test]
fn an_edited_definition_means_what_its_saved_file_means() {
    let w = World::new();
    std::fs::create_dir(w.workflows().join("parts")).unwrap();
    w.save(
        "parts/child.json",
        &json!({"id": "child", "nodes": [{"id": "say", "type": "set", "fields": {"v": "child ran"}}]}),
    );
    w.save(
        "sub.json",
        &json!({"id": "sub", "nodes": [
            {"id": "where", "type": "command", "argv": ["pwd"]},
            {"id": "child", "type": "workflow", "workflow": "./parts/child.json"}]}),
    );
    let s = w.serve(&[]);
    let here = std::fs::canonicalize(w.workflows()).unwrap();
    let check = |r: &crate::support::serve::Reply, what: &str| {
        assert_eq!(r.status, 200, "{what}: {}", r.text);
        assert_eq!(r.body["status"], "success", "{what}: {}", r.text);
        assert_eq!(r.body["output"]["v"], "child ran", "{what}: {}", r.text);
        let id = r.body["id"].as_str().unwrap();
        let rec = s.get(&format!("/api/executions/{id}")).body;
        let node = rec["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["node_id"] == "where")
            .unwrap();
        let dir = node["output"]["stdout"].as_str().unwrap().trim();
        assert_eq!(std::fs::canonicalize(dir).unwrap(), here, "{what}");
    };
    let edited = json!({"workflow": s.get("/api/workflows/sub").body["definition"]});
    let v = s.post("/api/validate", &edited);
    assert_eq!(v.body["valid"], true, "{}", v.text);
    assert_eq!(s.put("/api/workflows/sub", &edited).status, 200);
    check(
        &s.post("/api/workflows/sub/executions?wait=true", &edited),
        "saved, edited",
    );
    let r = s.post("/api/executions?wait=true", &edited);
    check(&r, "unsaved");
    let first = r.body["id"].as_str().unwrap().to_string();
    check(
        &s.post(&format!("/api/executions/{first}/rerun?wait=true"), &edited),
        "rerun",
    );
    // Its snapshot again (the page's Re-run, a resume, the CLI's rerun), read as it was.
    check(
        &s.post(
            &format!("/api/executions/{first}/rerun?wait=true"),
            &json!({}),
        ),
        "rerun of the snapshot",
    );
    let out = w.cli_ok(&["rerun", &first, "--json"]);
    assert!(out.contains("\"status\": \"success\""), "{out}");
    // A workflow file the server does not have: a rerun with its definition reads it where
    // that file is.
    std::fs::create_dir(w.path("elsewhere")).unwrap();
    w.write_workflow(
        "elsewhere/kid.json",
        &json!({"id": "kid", "nodes": [{"id": "say", "type": "set", "fields": {"v": "kid ran"}}]}),
    );
    let ext = json!({"id": "ext", "nodes": [
        {"id": "child", "type": "workflow", "workflow": "./kid.json"}]});
    w.write_workflow("elsewhere/ext.json", &ext);
    let out = w.cli_ok(&["run", "elsewhere/ext.json", "--json"]);
    let ran: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let ran_id = ran["id"].as_str().unwrap();
    let r = s.post(
        &format!("/api/executions/{ran_id}/rerun?wait=true"),
        &json!({"workflow": ext}),
    );
    assert_eq!(r.body["status"], "success", "{}", r.text);
    let mut other = edited.clone();
    other["workflow"]["id"] = json!("zzz");
    let r = s.post(&format!("/api/executions/{first}/rerun"), &other);
    assert_eq!(r.status, 400, "{}", r.text);
    assert!(
        r.body["message"]
            .as_str()
            .unwrap()
            .contains("a rerun or resume runs the same workflow"),
        "{}",
        r.text
    );
}

/// A server whose `--python` does not work says so as it starts, and refuses runs with a 503
/// that names the problem.
#[test]
fn a_broken_interpreter_is_said_at_start_and_refuses_runs() {
    let w = World::new();
    w.save("quick.json", &quick());
    let srv = w.serve(&["--python", "/nonexistent/python3"]);
    let r = srv.post("/api/workflows/quick/executions", &json!({}));
    assert_eq!(r.status, 503, "{}", r.text);
    assert_eq!(r.body["error"], "python_unavailable", "{}", r.text);
    let said = srv.stderr();
    assert!(
        said.contains("/nonexistent/python3")
            && said.contains("every run will be refused (503 python_unavailable)"),
        "{said}"
    );
}
