//! Pausing a family: the parent with its children, or a child on its own.

use super::{children, put, top_level_ids};
use crate::support::*;
use serde_json::json;
use std::path::PathBuf;
use std::process::Child;
use std::time::{Duration, Instant};

/// A parent calling `kids/slow.json` for each of 1, 2, 3, whose second call's first node
/// waits 3 s; started, and returned once that second child runs: (parent id, the run). With
/// `retry`, the calls are retried (`max_attempts: 2`).
fn start_family(env: &Env, retry: bool) -> (String, Child) {
    put(
        env,
        "kids/slow.json",
        // Only the second call waits, and long enough for the pause to reach it on a busy
        // machine.
        &json!({"id": "slow", "nodes": [
            {"id": "wait", "type": "code", "code":
                "import time\nif trigger['n'] == 2:\n    time.sleep(3)\nreturn 1"},
            {"id": "answer", "type": "code", "code": "return {'twice': 2 * trigger['n']}"}
        ]}),
    );
    let mut each = json!({"id": "each", "type": "workflow", "workflow": "./kids/slow.json",
        "for_each": "{{ trigger.ns }}", "inputs": {"n": "{{ item }}"}});
    if retry {
        each["retry"] = json!({"max_attempts": 2, "backoff_ms": 1});
    }
    let parent: PathBuf = put(
        env,
        "fan.json",
        &json!({"id": "fan", "nodes": [
            each,
            {"id": "sum", "type": "code",
             "code": "return sum(o['twice'] for o in nodes['each']['output'])"}
        ]}),
    );
    let run = env
        .command()
        .args([
            "run",
            parent.to_str().unwrap(),
            "--input",
            r#"{"ns": [1, 2, 3]}"#,
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Until the second child runs its first node.
    let deadline = Instant::now() + Duration::from_secs(20);
    let parent_id = loop {
        assert!(Instant::now() < deadline, "the second child never started");
        std::thread::sleep(Duration::from_millis(30));
        if !env.db_path().exists() {
            continue;
        }
        let Some(top) = std::panic::catch_unwind(|| top_level_ids(env))
            .ok()
            .and_then(|ids| ids.first().cloned())
        else {
            continue;
        };
        if children(env, &top).len() == 2 {
            break top;
        }
    };
    (parent_id, run)
}

#[test]
fn pausing_the_parent_pauses_its_running_child_and_resume_finishes_both() {
    let env = Env::new();
    // Retried: a call cut short by the pause is not retried (a new child ran to its end).
    let (parent_id, run) = start_family(&env, true);
    let out = env.cmd(["pause", &parent_id]);
    assert_success(&out, "flowrun pause");
    let run = run.wait_with_output().unwrap();
    assert_eq!(run.status.code(), Some(75), "{}", describe(&run));
    assert_eq!(env.execution(&parent_id).status, "paused");
    let kids = children(&env, &parent_id);
    let statuses: Vec<&str> = kids.iter().map(|k| k.3.as_str()).collect();
    assert_eq!(statuses, ["success", "paused"], "the third never started");
    // The node and the item that paused with the run did not fail: they are `cancelled`, with
    // why (they read `error`, under an execution that did not fail; resume runs them again).
    let rows: Vec<(i64, String, Option<String>)> = env
        .db()
        .prepare(
            "SELECT part, status, json_extract(error, '$.type') FROM node_executions
             WHERE execution_id = ?1 AND node_id = 'each' ORDER BY part",
        )
        .unwrap()
        .query_map([&parent_id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let row = |part: i64| {
        rows.iter()
            .find(|r| r.0 == part)
            .map(|r| (r.1.as_str(), r.2.as_deref().unwrap_or("")))
    };
    assert_eq!(row(-1), Some(("cancelled", "Paused")), "the node: {rows:?}");
    assert_eq!(
        row(1),
        Some(("cancelled", "ChildPaused")),
        "its paused item: {rows:?}"
    );

    let paused_child = kids[1].0.clone();
    let out = env.cmd(["resume", &parent_id]);
    assert_success(&out, "resume");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "12");
    let resumed = top_level_ids(&env).pop().unwrap();
    // Item 0's child is reused; items 1 and 2 run new children.
    let kids = children(&env, &resumed);
    let items: Vec<Option<i64>> = kids.iter().map(|k| k.2).collect();
    assert_eq!(items, [Some(1), Some(2)]);
    // Item 1's continues the child that paused: what that one finished (its 3 s node) is
    // reused, not run again.
    let wait = env.node(&kids[0].0, "wait");
    assert_eq!(wait.status, "reused", "{wait:?}");
    assert_eq!(wait.from_execution.as_deref(), Some(paused_child.as_str()));
    assert_eq!(env.node(&kids[0].0, "answer").status, "success");
    assert_eq!(
        env.node(&kids[1].0, "wait").status,
        "success",
        "item 2 runs afresh"
    );
}

/// A child paused on its own (`flowrun pause CHILD`) fails its parent's node, saying so: the
/// parent was said to be pausing ("1 of 3 items did not finish (the execution is pausing)")
/// while it ended `error`.
#[test]
fn a_child_paused_on_its_own_fails_its_parents_node_saying_so() {
    let env = Env::new();
    let (parent_id, run) = start_family(&env, false);
    let child = children(&env, &parent_id)[1].0.clone();
    let out = env.cmd(["pause", &child]);
    assert_success(&out, "flowrun pause CHILD");
    let run = run.wait_with_output().unwrap();
    assert_eq!(run.status.code(), Some(1), "{}", describe(&run));
    assert_eq!(env.execution(&child).status, "paused");
    let parent = env.execution(&parent_id);
    assert_eq!(parent.status, "error");
    let message = parent.error.unwrap()["message"].to_string();
    assert!(
        message.contains("was paused on its own") && !message.contains("is pausing"),
        "{message}"
    );
}
