//! `flowrun serve`: the real server on an ephemeral port, a real HTTP client, real Python.
//!
//! Every test starts its own server with its own database, cache and workflows directory; the
//! [`Server`] guard kills it at the end, also when the test fails.

mod api;
mod control;
mod stream;

use crate::support::serve::Message;
use crate::support::{record_node_statuses, wait_for};
use serde_json::{Value, json};
use std::collections::HashMap;

pub(super) fn example(name: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(crate::support::example(name)).unwrap()).unwrap()
}

/// A workflow whose stream is long enough to cut in the middle: logs between delays.
pub(super) fn steps() -> Value {
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
pub(super) fn check_stream(msgs: &[Message], id: &str) -> Vec<Value> {
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
pub(super) fn node_statuses(events: &[Value]) -> HashMap<String, String> {
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

pub(super) fn record_statuses(record: &Value) -> HashMap<String, String> {
    record_node_statuses(record).into_iter().collect()
}

/// The id of the running execution of `workflow`, once the API lists it.
pub(super) fn wait_for_running(srv: &crate::support::serve::Server, workflow: &str) -> String {
    wait_for(&format!("a running {workflow}"), || {
        let r = srv.get(&format!(
            "/api/executions?workflow={workflow}&status=running"
        ));
        r.body["executions"][0]["id"].as_str().map(str::to_string)
    })
}
