//! Workflows that are not straight chains: independent nodes side by side (`max_parallel`), a
//! node after an if/else (the join rule), a node per item (`for_each`) and a node again until
//! it is good enough (`repeat`) — run by real Python, recorded in real SQLite.

use crate::support::*;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

fn delay(id: &str, ms: u64) -> Value {
    json!({ "id": id, "type": "delay", "ms": ms })
}

/// `(node, event, ts)` of every node_start and node_end of an execution, in order.
fn node_events(env: &Env, id: &str) -> Vec<(String, String, i64)> {
    env.events(id)
        .into_iter()
        .filter(|e| e.kind == "node_start" || e.kind == "node_end")
        .filter(|e| e.data.get("item").is_none() && e.data.get("iteration").is_none())
        .map(|e| {
            (
                e.data["node"].as_str().unwrap().to_string(),
                e.kind.clone(),
                e.data["ts"].as_i64().unwrap(),
            )
        })
        .collect()
}

#[test]
fn independent_nodes_run_side_by_side_up_to_max_parallel() {
    let env = Env::new();
    let wf = env.write_workflow(
        "par.json",
        &json!({ "id": "par", "max_parallel": 3,
                 "nodes": [delay("a", 700), delay("b", 700), delay("c", 700)] }),
    );
    let out = env.run(&wf, "{}", &[]);
    assert_success(&out, "parallel run");
    let id = env.only_execution_id();
    let ev = node_events(&env, &id);
    let starts: Vec<&str> = ev
        .iter()
        .filter(|e| e.1 == "node_start")
        .map(|e| e.0.as_str())
        .collect();
    assert_eq!(starts, ["a", "b", "c"], "plan order among ready nodes");
    let first_end = ev.iter().position(|e| e.1 == "node_end").unwrap();
    // Side by side, shown by the order of the recorded events rather than by a duration (a
    // busy machine makes timings flaky): all three started before any ended.
    assert_eq!(first_end, 3, "all three started before any ended: {ev:?}");

    // --max-parallel 1: one after another, in order, whatever the file says.
    let out = env.run(&wf, "{}", &["--max-parallel", "1"]);
    assert_success(&out, "sequential run");
    let id = env.execution_ids().pop().unwrap();
    let kinds: Vec<(String, String)> = node_events(&env, &id)
        .into_iter()
        .map(|(n, k, _)| (n, k))
        .collect();
    let want: Vec<(String, String)> = ["a", "b", "c"]
        .iter()
        .flat_map(|n| {
            [
                (n.to_string(), "node_start".into()),
                (n.to_string(), "node_end".into()),
            ]
        })
        .collect();
    assert_eq!(kinds, want);
}

#[test]
fn output_of_nodes_side_by_side_stays_with_its_node() {
    let env = Env::new();
    let printer = |id: &str| {
        json!({ "id": id, "type": "code", "code": format!(
            "import sys, time\nfor i in range(200):\n    print('{id}', i)\n    if i % 50 == 0:\n        print('{id} err', i, file=sys.stderr)\n        time.sleep(0.01)\nlog('{id} logged')\nreturn '{id}'"
        ) })
    };
    let wf = env.write_workflow(
        "printers.json",
        &json!({ "id": "printers", "max_parallel": 2,
                 "nodes": [printer("left"), printer("right")] }),
    );
    let out = env.run(&wf, "{}", &[]);
    assert_success(&out, "printers");
    let id = env.only_execution_id();
    let logs: Vec<Value> = env
        .events(&id)
        .into_iter()
        .filter(|e| e.kind == "log")
        .map(|e| e.data)
        .collect();
    for node in ["left", "right"] {
        let mine: Vec<&Value> = logs.iter().filter(|l| l["node"] == node).collect();
        let numbered: Vec<&str> = mine
            .iter()
            .filter(|l| l["stream"] == "stdout")
            .map(|l| l["line"].as_str().unwrap())
            .collect();
        let want: Vec<String> = (0..200).map(|i| format!("{node} {i}")).collect();
        assert_eq!(numbered, want, "stdout lines of {node}");
        assert_eq!(
            mine.iter().filter(|l| l["stream"] == "stderr").count(),
            4,
            "stderr lines of {node}"
        );
        assert!(mine.iter().any(|l| l["line"] == format!("{node} logged")));
    }
    // No line was attributed to the wrong node, or to none.
    for l in &logs {
        let line = l["line"].as_str().unwrap();
        if let Some(owner) = line
            .split(' ')
            .next()
            .filter(|w| *w == "left" || *w == "right")
        {
            assert_eq!(l["node"], owner, "{l}");
        }
    }
}

#[test]
fn a_node_timeout_holds_while_other_nodes_run() {
    let env = Env::new();
    let wf = env.write_workflow(
        "timeouts.json",
        &json!({ "id": "timeouts", "max_parallel": 2, "nodes": [
            { "id": "slow", "type": "code", "timeout_ms": 500,
              "code": "import time\ntime.sleep(30)" },
            { "id": "other", "type": "code", "code": "import time\ntime.sleep(30)" },
        ]}),
    );
    let t0 = Instant::now();
    let out = env.run(&wf, "{}", &["--kill-grace-ms", "200"]);
    assert_code(&out, 124, "node timeout");
    assert!(t0.elapsed() < Duration::from_secs(6), "{:?}", t0.elapsed());
    let id = env.only_execution_id();
    let e = env.execution(&id);
    assert!(
        e.error_message().contains("'slow' exceeded its timeout"),
        "{e:?}"
    );
    assert_eq!(env.node(&id, "slow").status, "timeout");
    assert_eq!(env.node(&id, "other").status, "cancelled");
}

/// A `for_each` node's timeout applies to each item: the item that ran past it ends `timeout`,
/// its siblings stopped with it `cancelled` (one had run ~1 s and was recorded as having
/// exceeded the 1500 ms itself).
#[test]
fn an_item_past_its_timeout_times_out_alone_and_its_siblings_are_cancelled() {
    let env = Env::new();
    let wf = env.write_workflow(
        "items.json",
        &json!({ "id": "items", "nodes": [
            { "id": "each", "type": "code", "timeout_ms": 1500, "max_concurrent": 2,
              "for_each": [0.1, 30, 0.2, 30],
              "code": "import time\ntime.sleep(item)\nreturn item" },
        ]}),
    );
    let out = env.run(&wf, "{}", &["--kill-grace-ms", "200"]);
    assert_code(&out, 124, "an item's timeout");
    let id = env.only_execution_id();
    let e = env.execution(&id);
    assert!(
        e.error_message()
            .contains("item 1 of node 'each' exceeded its timeout of 1500 ms"),
        "{e:?}"
    );
    let items = env.items(&id, "each");
    let status = |i: i64| {
        items
            .iter()
            .find(|(k, _)| *k == i)
            .map(|(_, r)| r.status.clone())
            .unwrap_or_default()
    };
    assert_eq!(status(0), "success", "{items:?}");
    assert_eq!(status(1), "timeout", "{items:?}");
    assert_eq!(status(2), "success", "{items:?}");
    assert_eq!(status(3), "cancelled", "{items:?}");
    assert_eq!(env.node(&id, "each").status, "timeout");
}

/// An item's input is its own (the item and its index), not its node's upstream outputs: the
/// value that made an item fail is in its row; and a list from an earlier node is not copied
/// and recorded once per item (quadratic: 8,000 items took 14 s, now a quarter of a second).
#[test]
fn an_items_input_is_its_item() {
    let env = Env::new();
    let wf = env.write_workflow(
        "items.json",
        &json!({ "id": "items", "nodes": [
            { "id": "mk", "type": "code", "code": "return ['a', 'two', 'c']" },
            { "id": "each", "type": "code", "for_each": "{{ nodes.mk.output }}",
              "fail_fast": false,
              "code": "if item == 'two':\n    raise ValueError(item)\nreturn index" },
        ]}),
    );
    let out = env.run(&wf, "{}", &[]);
    assert_code(&out, 1, "item 1 fails");
    let id = env.only_execution_id();
    let items = env.items(&id, "each");
    let inputs: Vec<Option<Value>> = items.iter().map(|(_, r)| r.input.clone()).collect();
    assert_eq!(
        inputs,
        [
            Some(json!({"item": "a", "index": 0})),
            Some(json!({"item": "two", "index": 1})),
            Some(json!({"item": "c", "index": 2})),
        ]
    );
}

/// Code nodes failing side by side each report their own error: the first to fail imports
/// what formats tracebacks while the others register their sources with it (a half-imported
/// module made 21 of 40 such errors an AttributeError in a cold run).
#[test]
fn code_nodes_failing_side_by_side_each_report_their_own_error() {
    let env = Env::new();
    let nodes: Vec<Value> = ["a", "b", "c", "d"]
        .iter()
        .map(|id| {
            json!({"id": id, "type": "code", "on_error": "continue",
                        "code": "raise ValueError('mine')"})
        })
        .collect();
    let wf = env.write_workflow(
        "side.json",
        &json!({"id": "side", "max_parallel": 4, "nodes": nodes}),
    );
    for _ in 0..8 {
        let out = env.run(&wf, "{}", &[]);
        assert_success(&out, "failures that continue");
        let id = env.execution_ids().pop().unwrap();
        for n in ["a", "b", "c", "d"] {
            let row = env.node(&id, n);
            assert!(row.error_message().contains("mine"), "{row:?}");
        }
    }
}

#[test]
fn a_node_after_an_if_else_runs_and_skips_say_why() {
    let env = Env::new();
    let wf = env.write_workflow(
        "join.json",
        &json!({ "id": "join", "nodes": [
            { "id": "check", "type": "condition", "if": "{{ trigger.big }}",
              "then": ["yes"], "else": ["no"] },
            { "id": "yes", "type": "set", "fields": { "size": "big" } },
            { "id": "no", "type": "set", "fields": { "size": "small" } },
            { "id": "after_no", "type": "set", "fields": { "x": "{{ nodes.no.output.size }}" } },
            { "id": "joined", "type": "code", "after": ["yes", "no"],
              "code": "return [nodes['yes']['output'], nodes['no']['output']]" },
        ]}),
    );
    let out = env.run(&wf, r#"{"big": true}"#, &["--json"]);
    assert_success(&out, "join");
    let id = env.only_execution_id();
    assert_eq!(env.node(&id, "joined").status, "success");
    assert_eq!(
        env.node(&id, "joined").output,
        Some(json!([{"size": "big"}, null]))
    );
    let ends: Vec<Value> = env
        .events(&id)
        .into_iter()
        .filter(|e| e.kind == "node_end" && e.data["status"] == "skipped")
        .map(|e| e.data)
        .collect();
    let reason = |node: &str| {
        ends.iter()
            .find(|e| e["node"] == node)
            .map(|e| e["reason"].clone())
            .unwrap_or(Value::Null)
    };
    assert_eq!(reason("no"), "branch not taken by check");
    assert_eq!(reason("after_no"), "every upstream skipped");
    let record: Value = serde_json::from_slice(&out.stdout).unwrap();
    let no = record["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["node_id"] == "no")
        .unwrap();
    assert_eq!(no["reason"], "branch not taken by check", "{no}");
    let shown = env.cmd(["show", &id]);
    assert!(
        stdout(&shown).contains("branch not taken by check"),
        "{}",
        stdout(&shown)
    );
}

fn items_workflow(env: &Env, fail_fast: bool) -> std::path::PathBuf {
    env.write_workflow(
        &format!("items-{fail_fast}.json"),
        &json!({ "id": "items", "nodes": [
            { "id": "each", "type": "code", "for_each": "{{ trigger.items }}",
              "max_concurrent": 4, "fail_fast": fail_fast,
              "code": "import os, time\nwith open(trigger['counter'], 'a') as f:\n    f.write('%d\\n' % index)\ntime.sleep(0.05 * (index % 3))\nif item in trigger.get('bad', []):\n    raise ValueError('bad item %s' % item)\nreturn {'index': index, 'double': item * 2}" },
        ]}),
    )
}

fn counted(path: &std::path::Path) -> Vec<u64> {
    let mut v: Vec<u64> = std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| l.parse().unwrap())
        .collect();
    v.sort_unstable();
    v
}

#[test]
fn for_each_stores_one_row_per_item_in_index_order() {
    let env = Env::new();
    let counter = env.path("counter");
    let trigger = json!({ "items": (0..10).collect::<Vec<u64>>(), "counter": counter });
    let out = env.run(&items_workflow(&env, true), &trigger.to_string(), &[]);
    assert_success(&out, "for_each");
    let id = env.only_execution_id();
    let items = env.items(&id, "each");
    assert_eq!(
        items.iter().map(|(i, _)| *i).collect::<Vec<_>>(),
        (0..10).collect::<Vec<i64>>()
    );
    for (i, row) in &items {
        assert_eq!(row.status, "success");
        assert_eq!(row.output, Some(json!({"index": i, "double": i * 2})));
    }
    let node = env.node(&id, "each");
    let want: Vec<Value> = (0..10)
        .map(|i| json!({"index": i, "double": i * 2}))
        .collect();
    assert_eq!(node.output, Some(Value::Array(want)));
    assert_eq!(counted(&counter), (0..10).collect::<Vec<u64>>());
    // show --json lists the items under their node.
    let record = env.show_json(&id);
    let each = &record["nodes"][0];
    assert_eq!(each["items"].as_array().unwrap().len(), 10, "{each}");
    assert_eq!(each["items"][3]["index"], 3);
}

#[test]
fn fail_fast_stops_new_items_and_without_it_every_item_runs() {
    let env = Env::new();
    let counter = env.path("counter-ff");
    let trigger = json!({ "items": (0..10).collect::<Vec<u64>>(), "bad": [1],
                          "counter": counter });
    let out = env.run(&items_workflow(&env, true), &trigger.to_string(), &[]);
    assert_code(&out, 1, "an item failed");
    let id = env.only_execution_id();
    let items = env.items(&id, "each");
    assert_eq!(items.len(), 10, "every item has a row");
    assert_eq!(items[1].1.status, "error");
    // No item starts after the failure: every item that ran had started by then.
    let failed_at = items[1].1.finished_at.unwrap();
    let skipped = items.iter().filter(|(_, r)| r.status == "skipped").count();
    assert!(skipped >= 1, "{items:?}");
    for (i, r) in items.iter().filter(|(_, r)| r.status != "skipped") {
        assert!(
            r.started_at.unwrap() <= failed_at,
            "item {i} started after the failure: {items:?}"
        );
    }
    assert_eq!(counted(&counter).len(), 10 - skipped);
    assert_eq!(env.node(&id, "each").status, "error");
    assert!(
        env.execution(&id)
            .error_message()
            .contains("1 of 10 items failed")
    );

    let counter = env.path("counter-all");
    let trigger = json!({ "items": (0..10).collect::<Vec<u64>>(), "bad": [1, 7],
                          "counter": counter });
    let out = env.run(&items_workflow(&env, false), &trigger.to_string(), &[]);
    assert_code(&out, 1, "two items failed");
    let id = env.execution_ids().pop().unwrap();
    let statuses: Vec<String> = env
        .items(&id, "each")
        .into_iter()
        .map(|(_, r)| r.status)
        .collect();
    assert_eq!(statuses.iter().filter(|s| *s == "error").count(), 2);
    assert_eq!(statuses.iter().filter(|s| *s == "success").count(), 8);
    assert_eq!(counted(&counter), (0..10).collect::<Vec<u64>>());
}

#[test]
fn resume_runs_only_the_items_that_failed() {
    let env = Env::new();
    let counter = env.path("counter");
    let bad = env.path("bad");
    std::fs::write(&bad, "[2, 6]").unwrap();
    let wf = env.write_workflow(
        "retry-items.json",
        &json!({ "id": "retry-items", "nodes": [
            { "id": "each", "type": "code", "for_each": "{{ trigger.items }}",
              "fail_fast": false, "max_concurrent": 3,
              "code": "import json\nwith open(trigger['counter'], 'a') as f:\n    f.write('%d\\n' % index)\nif item in json.load(open(trigger['bad'])):\n    raise ValueError('bad %s' % item)\nreturn item * 10" },
            { "id": "sum", "type": "code", "code": "return sum(nodes['each']['output'])" },
        ]}),
    );
    let trigger = json!({ "items": (0..10).collect::<Vec<u64>>(), "counter": counter,
                          "bad": bad });
    let out = env.run(&wf, &trigger.to_string(), &[]);
    assert_code(&out, 1, "two items fail");
    let first = env.only_execution_id();
    assert_eq!(counted(&counter).len(), 10);

    std::fs::write(&counter, "").unwrap();
    std::fs::write(&bad, "[]").unwrap();
    let out = env.cmd(["resume", &first]);
    assert_success(&out, "resume");
    assert!(
        stderr(&out)
            .contains("resume: 'each' reuses its items 0, 1, 3, 4, 5, 7, 8, 9 and runs the others"),
        "{}",
        stderr(&out)
    );
    let again = env.execution_ids().pop().unwrap();
    assert_eq!(counted(&counter), [2, 6], "only the failed items ran again");
    let items = env.items(&again, "each");
    let reused = items.iter().filter(|(_, r)| r.status == "reused").count();
    assert_eq!(reused, 8, "{items:?}");
    assert_eq!(env.node(&again, "sum").output, Some(json!(450)));

    // One item reused is said so.
    std::fs::write(&bad, "[1]").unwrap();
    let two = json!({ "items": [0, 1], "counter": counter, "bad": bad });
    assert_code(&env.run(&wf, &two.to_string(), &[]), 1, "item 1 fails");
    let failed = env.execution_ids().pop().unwrap();
    std::fs::write(&bad, "[]").unwrap();
    let out = env.cmd(["resume", &failed]);
    assert_success(&out, "resume of one");
    assert!(
        stderr(&out).contains("resume: 'each' reuses its item 0 and runs the others"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn repeat_stops_when_until_holds_or_fails_at_max_iterations() {
    let env = Env::new();
    let wf = |max: u64| {
        json!({ "id": "refine", "nodes": [
            { "id": "draft", "type": "code",
              "repeat": { "until": { "op": "ge", "left": "{{ output.score }}", "right": 3 },
                          "max_iterations": max },
              "code": "return {'score': iteration, 'prev': previous}" },
        ]})
    };
    let file = env.write_workflow("refine.json", &wf(5));
    let out = env.run(&file, "{}", &[]);
    assert_success(&out, "repeat until");
    let id = env.only_execution_id();
    let its = env.iterations(&id, "draft");
    assert_eq!(its.iter().map(|(k, _)| *k).collect::<Vec<_>>(), [1, 2, 3]);
    assert_eq!(
        its[1].1.output,
        Some(json!({"score": 2, "prev": {"score": 1, "prev": null}}))
    );
    assert_eq!(
        env.node(&id, "draft").output.unwrap()["score"],
        json!(3),
        "the node's output is the last iteration's"
    );

    let file = env.write_workflow("refine2.json", &wf(2));
    let out = env.run(&file, "{}", &[]);
    assert_code(&out, 1, "limit reached");
    let id = env.execution_ids().pop().unwrap();
    let e = env.execution(&id);
    assert_eq!(e.error.as_ref().unwrap()["type"], "RepeatLimit", "{e:?}");
    assert_eq!(env.iterations(&id, "draft").len(), 2);
}

#[test]
fn loops_are_validated_with_precise_errors() {
    let env = Env::new();
    let cases = [
        (
            json!({ "id": "v", "nodes": [{ "id": "a", "type": "set", "fields": {},
                    "repeat": { "until": "{{ output }}" } }]}),
            "max_iterations",
        ),
        (
            json!({ "id": "v", "nodes": [{ "id": "a", "type": "set", "fields": {},
                    "repeat": { "until": "{{ output }}", "max_iterations": 5000 } }]}),
            "between 1 and 1000",
        ),
        (
            json!({ "id": "v", "max_parallel": 0, "nodes": [{ "id": "a", "type": "set", "fields": {} }]}),
            "max_parallel",
        ),
        (
            json!({ "id": "v", "nodes": [{ "id": "a", "type": "set", "fields": { "x": "{{ item }}" } }]}),
            "only in scope in a node with `for_each`",
        ),
        (
            json!({ "id": "v", "nodes": [{ "id": "a", "type": "set", "fields": {},
                    "max_concurrent": 2 }]}),
            "only applies to a node with `for_each`",
        ),
        (
            json!({ "id": "v", "nodes": [{ "id": "a", "type": "set", "fields": {},
                    "for_each": "not a template" }]}),
            "template yielding a list",
        ),
    ];
    for (i, (def, want)) in cases.iter().enumerate() {
        let file = env.write_workflow(&format!("bad{i}.json"), def);
        let out = env.cmd(["validate", file.to_str().unwrap()]);
        assert_code(&out, 2, &format!("case {i}"));
        assert!(stderr(&out).contains(want), "case {i}: {}", stderr(&out));
    }
    // A for_each template that is not a list fails the node naming what it got.
    let file = env.write_workflow(
        "notalist.json",
        &json!({ "id": "v", "nodes": [{ "id": "a", "type": "set", "fields": {},
                 "for_each": "{{ trigger.x }}" }]}),
    );
    let out = env.run(&file, r#"{"x": {"k": 1}}"#, &[]);
    assert_code(&out, 1, "not a list");
    let id = env.only_execution_id();
    let err = env.node(&id, "a").error.unwrap();
    assert!(
        err["message"]
            .as_str()
            .unwrap()
            .contains("expected a list, got an object"),
        "{err}"
    );
}
