//! The event stream: to the end like `show`, reconnects, equal to `--events jsonl`, a slow reader.

use super::{check_stream, example, node_statuses, record_statuses, steps};
use crate::support::serve::World;
use serde_json::{Value, json};

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

/// A `Last-Event-ID` past every event there can be, on a running execution: nothing is
/// repeated, the stream ends with `end` as the execution does (a debug build's addition
/// overflowed and the stream's task panicked, the client left without `end`).
#[test]
fn the_largest_last_event_id_on_a_running_execution_ends_it_quietly() {
    let w = World::new();
    w.save("steps.json", &steps());
    let srv = w.serve(&[]);
    let id = srv.start("/api/workflows/steps/executions", &json!({}));
    let msgs = srv.events(&id, Some(u64::MAX)).read_to_end();
    assert_eq!(msgs.len(), 1, "{msgs:?}");
    assert_eq!(srv.wait_final(&id)["status"], "success");
    assert!(!srv.stderr().contains("panicked"), "{}", srv.stderr());
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
