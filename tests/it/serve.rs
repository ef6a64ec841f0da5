//! `flowrun serve`: the real server on an ephemeral port, a real HTTP client, real Python.
//!
//! Every test starts its own server with its own database, cache and workflows directory; the
//! [`Server`] guard kills it at the end, also when the test fails.

use crate::support::serve::{Message, World};
use crate::support::{record_node_statuses, wait_for};
use serde_json::{Value, json};
use std::collections::HashMap;

fn example(name: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(crate::support::example(name)).unwrap()).unwrap()
}

/// A workflow whose stream is long enough to cut in the middle: logs between delays.
fn steps() -> Value {
    json!({
        "id": "steps",
        "name": "Steps",
        "nodes": [
            {"id": "one", "type": "code", "code": "print('one')\nlog('first')\nreturn 1"},
            {"id": "pause1", "type": "delay", "ms": 250},
            {"id": "two", "type": "code", "code": "print('two')\nreturn nodes['one']['output'] + 1"},
            {"id": "pause2", "type": "delay", "ms": 250},
            {"id": "three", "type": "code", "code": "print('three')\nreturn nodes['two']['output'] + 1"},
            {"id": "pause3", "type": "delay", "ms": 250},
            {"id": "done", "type": "set", "fields": {"total": "{{ nodes.three.output }}"}}
        ]
    })
}

/// Runs until stopped.
pub(crate) fn slow() -> Value {
    json!({
        "id": "slow",
        "nodes": [
            {"id": "begin", "type": "code", "code": "print('begin')\nreturn 1"},
            {"id": "sleep", "type": "delay", "ms": 30000}
        ]
    })
}

pub(crate) fn quick() -> Value {
    json!({"id": "quick", "nodes": [{"id": "only", "type": "set", "fields": {"n": "{{ trigger.n }}"}}]})
}

/// Checks the shape every stream has: ids 1..N without gaps, `event` equal to the data's kind,
/// `execution_start` first, `execution_end` last, then `end`. Returns the event data.
fn check_stream(msgs: &[Message], id: &str) -> Vec<Value> {
    let (end, events) = msgs.split_last().expect("messages");
    assert_eq!(end.event, "end");
    assert_eq!(end.id, None);
    assert_eq!(end.json()["execution_id"], id);
    let data: Vec<Value> = events.iter().map(Message::json).collect();
    for (i, (m, d)) in events.iter().zip(&data).enumerate() {
        assert_eq!(m.seq(), i as u64 + 1, "ids without gaps: {msgs:?}");
        assert_eq!(d["seq"], json!(i + 1));
        assert_eq!(d["execution_id"], id);
        assert_eq!(d["event"], json!(m.event));
    }
    assert_eq!(data.first().unwrap()["event"], "execution_start");
    let last = data.last().unwrap();
    assert_eq!(last["event"], "execution_end");
    assert_eq!(end.json()["status"], last["status"]);
    data
}

/// The last `node_end` status of each node in a stream.
fn node_statuses(events: &[Value]) -> HashMap<String, String> {
    events
        .iter()
        .filter(|e| e["event"] == "node_end")
        .map(|e| {
            (
                e["node"].as_str().unwrap().to_string(),
                e["status"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn record_statuses(record: &Value) -> HashMap<String, String> {
    record_node_statuses(record).into_iter().collect()
}

#[test]
fn saved_and_unsaved_executions_stream_to_the_end_like_show() {
    let w = World::new();
    w.save("hello.json", &example("hello.json"));
    let srv = w.serve(&[]);

    // Saved workflow.
    let id = srv.start(
        "/api/workflows/hello/executions",
        &json!({"trigger": {"name": "Ada"}}),
    );
    let msgs = srv.events(&id, None).read_to_end();
    let events = check_stream(&msgs, &id);
    let record = srv.wait_final(&id);
    assert_eq!(record["status"], "success", "{record}");
    assert_eq!(record["output"]["message"], "Hello, Ada!");
    assert!(
        record["source_file"]
            .as_str()
            .unwrap()
            .ends_with("hello.json")
    );
    assert_eq!(node_statuses(&events), record_statuses(&record));
    assert_eq!(record_statuses(&record).len(), 4);
    // The API's record is `flowrun show --json`'s, and history lists it.
    assert_eq!(w.show_json(&id), record);
    let history: Value = serde_json::from_str(&w.cli_ok(&["history", "--json"])).unwrap();
    assert_eq!(history[0]["id"], json!(id));

    // Unsaved definition (the editor's state), with a log line and a delay.
    let mut def = steps();
    def["id"] = json!("draft");
    let id2 = srv.start(
        "/api/executions",
        &json!({"workflow": def, "trigger": {}, "timeout_ms": 20000, "mode": "test"}),
    );
    let msgs = srv.events(&id2, None).read_to_end();
    let events = check_stream(&msgs, &id2);
    let record = srv.wait_final(&id2);
    assert_eq!(record["status"], "success", "{record}");
    assert_eq!(record["workflow_id"], "draft");
    assert_eq!(record["source_file"], Value::Null);
    assert_eq!(record["output"], json!({"total": 3}));
    assert_eq!(node_statuses(&events), record_statuses(&record));
    assert_eq!(w.show_json(&id2), record);
    let logs: Vec<&str> = events
        .iter()
        .filter(|e| e["event"] == "log")
        .map(|e| e["line"].as_str().unwrap())
        .collect();
    assert_eq!(logs, ["one", "first", "two", "three"]);

    // A client that connects after the end gets the stored events, the same ones.
    let again = srv.events(&id2, None).read_to_end();
    assert_eq!(again, msgs);
}

#[test]
fn reconnecting_with_last_event_id_misses_nothing_and_repeats_nothing() {
    let w = World::new();
    w.save("steps.json", &steps());
    let srv = w.serve(&[]);
    let id = srv.start("/api/workflows/steps/executions", &json!({}));

    // Read the first few events live, then drop the connection mid-run.
    let mut first = Vec::new();
    {
        let mut sse = srv.events(&id, None);
        while let Some(m) = sse.next_message() {
            let seq = m.seq();
            first.push(m);
            if seq >= 4 {
                break;
            }
        }
    }
    assert!(
        first.iter().all(|m| m.event != "execution_end"),
        "the first part ended the run already: {first:?}"
    );
    let last = first.last().unwrap().seq();
    // Reconnect the way EventSource does.
    let rest = srv.events(&id, Some(last)).read_to_end();
    assert_eq!(rest[0].seq(), last + 1, "{rest:?}");
    let mut joined = first.clone();
    joined.extend(rest);
    let events = check_stream(&joined, &id);
    assert_eq!(srv.wait_final(&id)["status"], "success");

    // Everything again after the end: the same events, byte for byte.
    let full = srv.events(&id, None).read_to_end();
    assert_eq!(full, joined);
    assert_eq!(events.len() + 1, full.len());

    // `?last_event_id=` works like the header.
    let r = srv.get(&format!(
        "/api/executions/{id}/events?last_event_id={}",
        full.len() - 3
    ));
    assert_eq!(r.status, 200);
    let ids: Vec<&str> = r
        .text
        .lines()
        .filter_map(|l| l.strip_prefix("id: "))
        .collect();
    let n = full.len() - 1;
    assert_eq!(ids, [(n - 1).to_string(), n.to_string()]);
    assert!(r.text.contains("event: end"));
    // One before the end: `execution_end`, then `end`.
    let tail = srv.events(&id, Some(n as u64 - 1)).read_to_end();
    assert_eq!(tail.len(), 2);
    assert_eq!(tail[0].event, "execution_end");
    // At or past the end (what `EventSource` sends when it reconnects after `end`): 204, so it
    // stops reconnecting; by header or by query.
    let auth = format!("Bearer {}", srv.token);
    for (path, last) in [
        (format!("/api/executions/{id}/events"), Some(n.to_string())),
        (
            format!("/api/executions/{id}/events"),
            Some((n + 5).to_string()),
        ),
        (
            format!("/api/executions/{id}/events?last_event_id={n}"),
            None,
        ),
    ] {
        let mut headers = vec![("Authorization", auth.as_str())];
        if let Some(l) = &last {
            headers.push(("Last-Event-ID", l.as_str()));
        }
        let r = srv.request("GET", &path, None, &headers);
        assert_eq!(r.status, 204, "{path} {last:?}: {}", r.text);
        assert_eq!(r.text, "");
    }
    // Not a number: 400.
    let r = srv.request(
        "GET",
        &format!("/api/executions/{id}/events"),
        None,
        &[
            ("Authorization", &format!("Bearer {}", srv.token)),
            ("Last-Event-ID", "abc"),
        ],
    );
    assert_eq!(r.status, 400, "{}", r.text);
}

fn sleeping(rec: &Value) -> bool {
    rec["nodes"].as_array().is_some_and(|n| {
        n.iter()
            .any(|n| n["node_id"] == "sleep" && n["status"] == "running")
    })
}

#[test]
fn stopping_over_the_api_and_with_flowrun_stop() {
    let w = World::new();
    w.save("slow.json", &slow());
    let srv = w.serve(&["--kill-grace-ms", "500"]);

    // Through the API, with a stream open.
    let id = srv.start("/api/workflows/slow/executions", &json!({}));
    srv.wait_until(&id, "sleeping", sleeping);
    let mut sse = srv.events(&id, None);
    let r = srv.post(&format!("/api/executions/{id}/stop?wait=true"), &json!({}));
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["status"], "cancelled");
    assert_eq!(record_statuses(&r.body)["sleep"], "cancelled");
    let msgs = sse.read_to_end();
    let events = check_stream(&msgs, &id);
    assert_eq!(events.last().unwrap()["status"], "cancelled");
    // Stopping it again: it already ended.
    let r = srv.post(&format!("/api/executions/{id}/stop"), &json!({}));
    assert_eq!(r.status, 409, "{}", r.text);
    assert_eq!(r.body["error"], "already_ended");

    // From the CLI: `flowrun stop` asks through the store, the server stops it.
    let id2 = srv.start("/api/workflows/slow/executions", &json!({}));
    srv.wait_until(&id2, "sleeping", sleeping);
    let t = std::time::Instant::now();
    let out = w.cli_ok(&["stop", &id2]);
    assert!(out.contains("cancelled"), "{out}");
    assert!(t.elapsed() < std::time::Duration::from_secs(5));
    let rec = srv.wait_final(&id2);
    assert_eq!(rec["status"], "cancelled");
    assert_eq!(rec["error"]["type"], "Cancelled");

    // Without ?wait the answer is immediate.
    let id3 = srv.start("/api/workflows/slow/executions", &json!({}));
    srv.wait_until(&id3, "sleeping", sleeping);
    let r = srv.post(&format!("/api/executions/{id3}/stop"), &json!({}));
    assert_eq!(r.status, 202, "{}", r.text);
    assert_eq!(srv.wait_final(&id3)["status"], "cancelled");
}

#[test]
fn queue_runs_in_order_and_stopping_a_queued_execution_cancels_it() {
    let w = World::new();
    let mut first = slow();
    first["id"] = json!("first");
    first["nodes"][1]["ms"] = json!(1500);
    w.save("first.json", &first);
    w.save("quick.json", &quick());
    let srv = w.serve(&["--max-concurrent", "1"]);

    let a = srv.start("/api/workflows/first/executions", &json!({}));
    let r = srv.post(
        "/api/workflows/quick/executions",
        &json!({"trigger": {"n": 1}}),
    );
    assert_eq!(r.status, 202);
    assert_eq!(r.body["status"], "queued");
    let b = r.body["id"].as_str().unwrap().to_string();
    let c = srv.start(
        "/api/workflows/quick/executions",
        &json!({"trigger": {"n": 2}}),
    );
    let d = srv.start(
        "/api/workflows/quick/executions",
        &json!({"trigger": {"n": 3}}),
    );
    assert_eq!(
        srv.get(&format!("/api/executions/{b}")).body["status"],
        "queued"
    );
    let history: Value =
        serde_json::from_str(&w.cli_ok(&["history", "--status", "queued", "--json"])).unwrap();
    assert_eq!(history.as_array().unwrap().len(), 3, "{history}");
    let info = srv.get("/api").body;
    assert_eq!(info["running"], 1);
    assert_eq!(info["queued"], 3);

    // Stop c over the API and d with the CLI while they wait: both cancelled, never run.
    let mut c_events = srv.events(&c, None);
    let r = srv.post(&format!("/api/executions/{c}/stop"), &json!({}));
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["status"], "cancelled");
    assert_eq!(r.body["nodes"], json!([]));
    let msgs = c_events.read_to_end();
    let events = check_stream(&msgs, &c);
    assert_eq!(events.len(), 2, "{events:?}");
    assert_eq!(events[1]["status"], "cancelled");
    let out = w.cli_ok(&["stop", &d]);
    assert!(out.contains("cancelled"), "{out}");
    assert_eq!(
        srv.get(&format!("/api/executions/{d}")).body["status"],
        "cancelled"
    );

    // b runs once a has ended.
    let b_msgs = srv.events(&b, None).read_to_end();
    let b_events = check_stream(&b_msgs, &b);
    let a_rec = srv.wait_final(&a);
    let b_rec = srv.wait_final(&b);
    assert_eq!(a_rec["status"], "success");
    assert_eq!(b_rec["status"], "success");
    assert_eq!(b_rec["output"], json!({"n": 1}));
    let b_started = b_events[0]["ts"].as_i64().unwrap();
    assert!(
        b_started >= a_rec["finished_at"].as_i64().unwrap(),
        "b started at {b_started}, before a ended: {a_rec}"
    );
    for id in [&c, &d] {
        let rec = srv.get(&format!("/api/executions/{id}")).body;
        assert_eq!(rec["status"], "cancelled");
        assert_eq!(rec["nodes"], json!([]));
    }
}

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

/// What stays the same between two runs of one workflow with one trigger.
fn normalize(mut v: Value, id: &str) -> Value {
    let obj = v.as_object_mut().unwrap();
    obj.remove("ts");
    obj.remove("duration_ms");
    obj.remove("execution_id");
    let text = v.to_string().replace(id, "EXECUTION");
    serde_json::from_str(&text).unwrap()
}

#[test]
fn sse_events_equal_run_events_jsonl() {
    let w = World::new();
    let hello = example("hello.json");
    let file = w.save("hello.json", &hello);
    let trigger = json!({"name": "Ada", "excited": false});

    let out = w.cmd([
        "run",
        file.to_str().unwrap(),
        "--input",
        &trigger.to_string(),
        "--events",
        "jsonl",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let cli_id = lines[0]["execution_id"].as_str().unwrap().to_string();
    let cli: Vec<Value> = lines.into_iter().map(|l| normalize(l, &cli_id)).collect();

    let srv = w.serve(&[]);
    let id = srv.start(
        "/api/workflows/hello/executions",
        &json!({"trigger": trigger}),
    );
    let msgs = srv.events(&id, None).read_to_end();
    let api: Vec<Value> = msgs[..msgs.len() - 1]
        .iter()
        .map(|m| normalize(m.json(), &id))
        .collect();
    assert_eq!(api, cli);
    assert!(api.iter().any(|e| e["event"] == "log"), "{api:?}");
    // And after the end, from the store: the same again.
    let stored = srv.events(&id, None).read_to_end();
    assert_eq!(stored, msgs);
}

#[test]
fn shutdown_cancels_running_and_queued_executions_and_exits_0() {
    let w = World::new();
    w.save("slow.json", &slow());
    let mut srv = w.serve(&["--max-concurrent", "1", "--kill-grace-ms", "500"]);
    let a = srv.start("/api/workflows/slow/executions", &json!({}));
    srv.wait_until(&a, "sleeping", sleeping);
    let r = srv.post("/api/workflows/slow/executions", &json!({}));
    assert_eq!(r.body["status"], "queued");
    let b = r.body["id"].as_str().unwrap().to_string();
    let mut sse = srv.events(&a, None);

    let t = std::time::Instant::now();
    assert_eq!(srv.terminate(), Some(0), "{}", srv.stderr());
    assert!(t.elapsed() < std::time::Duration::from_secs(10));
    // The open stream got the end of the execution.
    let events = check_stream(&sse.read_to_end(), &a);
    assert_eq!(events.last().unwrap()["status"], "cancelled");
    let a_rec = w.show_json(&a);
    assert_eq!(a_rec["status"], "cancelled", "{a_rec}");
    assert_eq!(record_statuses(&a_rec)["sleep"], "cancelled");
    let b_rec = w.show_json(&b);
    assert_eq!(b_rec["status"], "cancelled", "{b_rec}");
    assert_eq!(b_rec["nodes"], json!([]));
    // The default token file of a port picked at random (`--port 0`) goes with the server: no
    // later start can use it (a fixed port keeps it, see serve_security.rs).
    assert!(!srv.token_file.exists());
}

#[test]
fn executions_of_flowrun_run_stream_and_stop_through_the_server() {
    let w = World::new();
    let steps_file = w.save("steps.json", &steps());
    let slow_file = w.save("slow.json", &slow());
    let srv = w.serve(&[]);

    // `flowrun run --events jsonl` in another process; the server follows it through the store.
    let run = w
        .command()
        .args(["run", steps_file.to_str().unwrap(), "--events", "jsonl"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let id = wait_for_running(&srv, "steps");
    let msgs = srv.events(&id, None).read_to_end();
    check_stream(&msgs, &id);
    let out = run.wait_with_output().unwrap();
    assert!(out.status.success());
    // The very same events the CLI printed.
    let cli: Vec<Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let api: Vec<Value> = msgs[..msgs.len() - 1].iter().map(Message::json).collect();
    assert_eq!(api, cli);

    // Stopping a `flowrun run` execution over the API: its runner stops it.
    let mut run = w
        .command()
        .args(["run", slow_file.to_str().unwrap()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let id = wait_for_running(&srv, "slow");
    srv.wait_until(&id, "sleeping", sleeping);
    let r = srv.post(&format!("/api/executions/{id}/stop?wait=true"), &json!({}));
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["status"], "cancelled");
    assert_eq!(run.wait().unwrap().code(), Some(130));
}

/// The id of the running execution of `workflow`, once the API lists it.
fn wait_for_running(srv: &crate::support::serve::Server, workflow: &str) -> String {
    wait_for(&format!("a running {workflow}"), || {
        let r = srv.get(&format!(
            "/api/executions?workflow={workflow}&status=running"
        ));
        r.body["executions"][0]["id"].as_str().map(str::to_string)
    })
}

#[test]
fn a_flood_of_log_lines_reaches_a_slow_reader_complete_and_in_order() {
    let w = World::new();
    w.save(
        "flood.json",
        &json!({"id": "flood", "nodes": [
            {"id": "talk", "type": "code", "code": "for i in range(6000):\n    print('line %d %s' % (i, 'x' * 60))\nreturn 1"}
        ]}),
    );
    let srv = w.serve(&[]);
    let id = srv.start("/api/workflows/flood/executions", &json!({}));
    let mut sse = srv.events(&id, None);
    // Read nothing while the child prints: buffers fill, the live channel lags behind.
    srv.wait_final(&id);
    let msgs = sse.read_to_end();
    let events = check_stream(&msgs, &id);
    let lines: Vec<&str> = events
        .iter()
        .filter(|e| e["event"] == "log")
        .map(|e| e["line"].as_str().unwrap())
        .collect();
    assert_eq!(lines.len(), 6000);
    assert!(lines[5999].starts_with("line 5999 "));
    assert_eq!(srv.events(&id, None).read_to_end(), msgs);
}
