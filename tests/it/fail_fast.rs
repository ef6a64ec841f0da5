//! A failure that ends the execution does not wait for what runs beside it: nodes side by side
//! (`max_parallel`) and the items of a `for_each` node get a short grace, then are stopped and
//! recorded `cancelled` — cold and warm, with nothing of them left running.

use crate::support::*;
use serde_json::json;
use std::time::{Duration, Instant};

/// The last execution recorded, which `flowrun test` started warm.
fn last_warm(env: &Env) -> String {
    let id = env.execution_ids().pop().unwrap();
    let start: String = env
        .db()
        .query_row("SELECT start FROM executions WHERE id = ?1", [&id], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(start, "warm");
    id
}

/// No `sleep MARKER` is left: the process a stopped node or item ran ended with it.
fn assert_no_sleep(marker: &str) {
    let left = std::process::Command::new("pgrep")
        .args(["-f", &format!("^sleep {marker}$")])
        .output()
        .unwrap();
    assert!(left.stdout.is_empty(), "left running: {left:?}");
}

/// A node that fails for good ends the execution with its error: the nodes running beside it
/// (code asleep, a command's process) are stopped with it after a moment, not waited for —
/// they would have held it until its timeout, which would then have been its error.
#[test]
fn a_failure_stops_the_nodes_running_beside_it() {
    let env = Env::new();
    let marker = format!("{}", 900 + std::process::id() % 97);
    let wf = env.write_workflow(
        "failfast.json",
        &json!({ "id": "failfast", "max_parallel": 3, "timeout_ms": 60000, "nodes": [
            { "id": "slow", "type": "code", "code": "import time\ntime.sleep(60)\nreturn 1" },
            { "id": "cmd", "type": "command", "argv": ["sleep", marker] },
            { "id": "bad", "type": "code",
              "code": "import time\ntime.sleep(0.5)\nraise ValueError('broken')" },
            { "id": "after", "type": "set", "fields": {}, "after": ["slow", "cmd", "bad"] },
        ]}),
    );
    let t0 = Instant::now();
    let out = env.run(&wf, "{}", &[]);
    assert_code(&out, 1, "a failed node");
    assert!(t0.elapsed() < Duration::from_secs(30), "{:?}", t0.elapsed());
    let id = env.only_execution_id();
    let e = env.execution(&id);
    assert_eq!(e.status, "error", "{e:?}");
    assert!(e.error_message().contains("broken"), "{e:?}");
    assert_eq!(env.node(&id, "bad").status, "error");
    for n in ["slow", "cmd"] {
        let row = env.node(&id, n);
        assert_eq!(row.status, "cancelled", "{row:?}");
        assert!(
            row.error_message()
                .contains("stopped because node 'bad' failed"),
            "{row:?}"
        );
    }
    assert!(
        env.nodes(&id).iter().all(|n| n.node_id != "after"),
        "the node after them never started"
    );
    // The command's process ended with the execution.
    assert_no_sleep(&marker);
    // The same, warm (`flowrun test` forks its executions from a template).
    env.write_file(
        "failfast.test.yaml",
        "workflow: ./failfast.json\ncases:\n  - name: fails fast\n    expect:\n      status: error\n      error.node: bad\n      nodes.slow.status: cancelled\n      nodes.cmd.status: cancelled\n",
    );
    let out = env.cmd(["test", "failfast.test.yaml"]);
    assert_success(&out, "the case");
    last_warm(&env);
}

/// A failed item of a `for_each` node with `fail_fast` (the default) ends the execution without
/// waiting for an item that hangs: the node fails with the items' error, the hung item is
/// cancelled with its process, the items not started are skipped. Cold and warm.
#[test]
fn a_failed_item_does_not_wait_for_a_hung_one() {
    let env = Env::new();
    let marker = format!("{}", 700 + std::process::id() % 97);
    env.write_workflow(
        "items.json",
        &json!({ "id": "items", "timeout_ms": 60000, "nodes": [
            { "id": "each", "type": "command", "for_each": ["hang", "fail", "later"],
              "max_concurrent": 2, "shell": true,
              "command": "if [ {{ item }} = hang ]; then exec sleep {{ trigger.marker }}; else sleep 0.5; exit 3; fi" },
            { "id": "after", "type": "set", "fields": {}, "after": ["each"] },
        ]}),
    );
    let check = |id: &str| {
        let e = env.execution(id);
        assert_eq!(e.status, "error", "{e:?}");
        let err = e.error.as_ref().unwrap();
        assert_eq!(
            (&err["node"], &err["type"]),
            (&json!("each"), &json!("ItemsFailed"))
        );
        let node = env.node(id, "each");
        assert_eq!(node.status, "error", "{node:?}");
        assert!(
            node.error_message()
                .starts_with("1 of 3 items failed; item 1:"),
            "{node:?}"
        );
        let items: Vec<(i64, String)> = env
            .items(id, "each")
            .into_iter()
            .map(|(i, row)| (i, row.status))
            .collect();
        assert_eq!(
            items,
            [
                (0, "cancelled".into()),
                (1, "error".into()),
                (2, "skipped".into())
            ]
        );
        let hung = &env.items(id, "each")[0].1;
        assert!(
            hung.error_message()
                .contains("stopped because node 'each' failed"),
            "{hung:?}"
        );
        assert!(
            env.try_node(id, "after").is_none(),
            "the node after it never started"
        );
        let logs = stderr(&env.cmd(["logs", id]));
        // A traceback is pointed to where there is one: not for the item that was stopped.
        assert!(
            logs.contains(
                "node 'each' item 0 was stopped: Cancelled: stopped because node 'each' failed\n"
            ) && logs.contains("node 'each' item 1 failed:")
                && logs.contains("(the traceback: flowrun show")
                && logs.contains("node 'each' failed: ItemsFailed: 1 of 3 items failed"),
            "{logs}"
        );
        assert_no_sleep(&marker);
    };
    let t0 = Instant::now();
    let trigger = format!(r#"{{"marker": "{marker}"}}"#);
    let out = env.run(&env.path("items.json"), &trigger, &[]);
    assert_code(&out, 1, "a failed item");
    assert!(t0.elapsed() < Duration::from_secs(30), "{:?}", t0.elapsed());
    check(&env.only_execution_id());
    env.write_file(
        "items.test.yaml",
        &format!("workflow: ./items.json\ncases:\n  - name: fails fast\n    trigger: {{ marker: \"{marker}\" }}\n    expect: {{ status: error }}\n"),
    );
    let out = env.cmd(["test", "items.test.yaml"]);
    assert_success(&out, "the case");
    let warm = last_warm(&env);
    check(&warm);
}

/// The node_end events of `node` (or of its item `item`), as (attempt, retrying, reason).
fn ends(env: &Env, id: &str, node: &str, item: Option<i64>) -> Vec<(i64, bool, Option<String>)> {
    env.events(id)
        .into_iter()
        .filter(|e| e.kind == "node_end" && e.node_id.as_deref() == Some(node))
        .filter(|e| e.data["item"].as_i64() == item)
        .map(|e| {
            (
                e.data["attempt"].as_i64().unwrap(),
                e.data["retrying"] == true,
                e.data["reason"].as_str().map(String::from),
            )
        })
        .collect()
}

/// A node waiting out its retry's backoff when another node fails for good is not retried:
/// the execution ends at once instead of after the backoff and a new attempt, and the record
/// says so — the failed attempt is its last, `error`, "not retried: node 'bad' failed" — where
/// it used to stay as the attempt that was to be retried. Items alike, when an item fails for
/// good beside one waiting for its retry.
#[test]
fn a_retry_waiting_when_another_node_fails_is_withdrawn_and_says_why() {
    let env = Env::new();
    let wf = env.write_workflow(
        "withdrawn.json",
        &json!({ "id": "withdrawn", "max_parallel": 2, "timeout_ms": 60000, "nodes": [
            { "id": "flaky", "type": "code", "code": "raise ValueError('flaky')",
              "retry": { "max_attempts": 3, "backoff_ms": 30000 } },
            { "id": "bad", "type": "code",
              "code": "import time\ntime.sleep(0.3)\nraise ValueError('broken')" },
        ]}),
    );
    let out = env.run(&wf, "{}", &[]);
    assert_code(&out, 1, "a failed node");
    let id = env.only_execution_id();
    let e = env.execution(&id);
    assert!(e.error_message().contains("broken"), "{e:?}");
    // Not the 30 s of the backoff, nor the 2 s nodes beside a failure are given.
    assert!(e.duration_ms.unwrap() < 1900.0, "{e:?}");
    let flaky = env.node(&id, "flaky");
    assert_eq!(
        (flaky.status.as_str(), flaky.attempt),
        ("error", 1),
        "{flaky:?}"
    );
    assert!(flaky.error_message().contains("flaky"), "{flaky:?}");
    let why = "not retried: node 'bad' failed";
    assert_eq!(flaky.reason.as_deref(), Some(why), "{flaky:?}");
    assert_eq!(
        ends(&env, &id, "flaky", None),
        [(1, true, None), (1, false, Some(why.into()))]
    );
    let show = stdout(&env.cmd(["show", &id]));
    assert!(show.contains(&format!("reason: {why}")), "{show}");

    // An item waiting for its retry (attempt 1 failed at ~1 s, retry due at ~3 s) when another
    // item fails for good (its retry at ~2 s fails too).
    let wf = env.write_workflow(
        "items-withdrawn.json",
        &json!({ "id": "items-withdrawn", "timeout_ms": 60000, "nodes": [
            { "id": "each", "type": "code", "for_each": [0, 1], "max_concurrent": 2,
              "retry": { "max_attempts": 2, "backoff_ms": 2000, "factor": 1 },
              "code": "import time\nif item == 1:\n    time.sleep(1)\nraise ValueError('item %d' % item)" },
        ]}),
    );
    let out = env.run(&wf, "{}", &[]);
    assert_code(&out, 1, "failed items");
    let id = env.execution_ids().pop().unwrap();
    let items = env.items(&id, "each");
    let (first, second) = (&items[0].1, &items[1].1);
    assert_eq!(
        (first.status.as_str(), first.attempt),
        ("error", 2),
        "{first:?}"
    );
    assert_eq!(first.reason, None, "{first:?}");
    let why = "not retried: item 0 of node 'each' failed";
    assert_eq!(
        (
            second.status.as_str(),
            second.attempt,
            second.reason.as_deref()
        ),
        ("error", 1, Some(why)),
        "{second:?}"
    );
    assert_eq!(
        ends(&env, &id, "each", Some(1)),
        [(1, true, None), (1, false, Some(why.into()))]
    );
    let node = env.node(&id, "each");
    assert!(
        node.error_message().starts_with("2 of 2 items failed"),
        "{node:?}"
    );
}

/// The runner ends a retry that never came, as it ends what runs: an execution that times out
/// while a node waits for its retry records the node's failed attempt as its last, "not
/// retried: the execution timed out" — not as an attempt still to be retried.
#[test]
fn a_retry_cut_by_the_execution_timeout_is_recorded_not_retried() {
    let env = Env::new();
    let wf = env.write_workflow(
        "cut.json",
        &json!({ "id": "cut", "timeout_ms": 1000, "nodes": [
            { "id": "flaky", "type": "code", "code": "raise ValueError('flaky')",
              "retry": { "max_attempts": 3, "backoff_ms": 30000 } },
        ]}),
    );
    let out = env.run(&wf, "{}", &[]);
    assert_code(&out, 124, "a timeout");
    let id = env.only_execution_id();
    assert_eq!(env.execution(&id).status, "timeout");
    let flaky = env.node(&id, "flaky");
    let why = "not retried: the execution timed out";
    assert_eq!(
        (
            flaky.status.as_str(),
            flaky.attempt,
            flaky.reason.as_deref()
        ),
        ("error", 1, Some(why)),
        "{flaky:?}"
    );
    assert!(flaky.error_message().contains("flaky"), "{flaky:?}");
    assert_eq!(
        ends(&env, &id, "flaky", None),
        [(1, true, None), (1, false, Some(why.into()))]
    );
}

/// A sub-workflow's node waiting for its retry when the parent fails ends with the child,
/// recorded "not retried", whether the child's own runner stops it (the parent's SIGTERM) or
/// the parent's runner records the child's end after the fact.
#[test]
fn a_childs_retry_cut_by_its_parent_is_recorded_not_retried() {
    let env = Env::new();
    env.write_workflow(
        "child.json",
        &json!({ "id": "child", "nodes": [
            { "id": "flaky", "type": "code", "code": "raise ValueError('flaky')",
              "retry": { "max_attempts": 3, "backoff_ms": 30000 } },
        ]}),
    );
    let parent = env.write_workflow(
        "parent.json",
        &json!({ "id": "parent", "max_parallel": 2, "timeout_ms": 60000, "nodes": [
            { "id": "sub", "type": "workflow", "workflow": "./child.json" },
            { "id": "bad", "type": "code",
              "code": "import time\ntime.sleep(1)\nraise ValueError('broken')" },
        ]}),
    );
    let out = env.run(&parent, "{}", &[]);
    assert_code(&out, 1, "a failed node");
    let ids = env.execution_ids();
    assert_eq!(ids.len(), 2, "{ids:?}");
    let child = ids
        .iter()
        .find(|id| env.execution(id).workflow_id == "child")
        .unwrap();
    assert_eq!(env.execution(child).status, "cancelled");
    let flaky = env.node(child, "flaky");
    assert_eq!(
        (flaky.status.as_str(), flaky.attempt),
        ("error", 1),
        "{flaky:?}"
    );
    let why = flaky.reason.clone().unwrap_or_default();
    assert!(
        why.starts_with("not retried: ") && why.contains("with its parent execution"),
        "{flaky:?}"
    );
    let ends = ends(&env, child, "flaky", None);
    assert_eq!(ends.len(), 2, "{ends:?}");
    assert_eq!((ends[1].0, ends[1].1), (1, false));
    assert_eq!(ends[1].2.as_deref(), Some(why.as_str()));
}

/// A looping node beside a node that fails for good starts nothing more, and says why rather
/// than ending as if it had finished: a `for_each` node's unstarted items are skipped "not
/// started: node 'bad' failed" (not "an earlier item failed"), and the node ends `cancelled`
/// without the list of outputs it never had; a `repeat` node ends `cancelled` after its
/// iteration, not with a RepeatLimit its `until` never reached.
#[test]
fn a_loop_beside_a_failed_node_stops_and_says_why() {
    let env = Env::new();
    let wf = env.write_workflow(
        "loops.json",
        &json!({ "id": "loops", "max_parallel": 3, "timeout_ms": 60000, "nodes": [
            { "id": "each", "type": "code", "for_each": [0, 1, 2, 3], "fail_fast": false,
              "code": "import time\ntime.sleep(0.4)\nreturn item" },
            { "id": "again", "type": "code",
              "repeat": { "until": { "op": "ge", "left": "{{ output }}", "right": 100 },
                          "max_iterations": 50 },
              "code": "import time\ntime.sleep(0.4)\nreturn iteration" },
            { "id": "bad", "type": "code",
              "code": "import time\ntime.sleep(0.6)\nraise ValueError('broken')" },
        ]}),
    );
    let out = env.run(&wf, "{}", &[]);
    assert_code(&out, 1, "a failed node");
    let id = env.only_execution_id();
    let each = env.node(&id, "each");
    assert_eq!(each.status, "cancelled", "{each:?}");
    assert_eq!(each.output, None, "{each:?}");
    let items = env.items(&id, "each");
    let started: Vec<_> = items
        .iter()
        .filter(|(_, r)| r.status == "success")
        .collect();
    let skipped: Vec<_> = items
        .iter()
        .filter(|(_, r)| r.status == "skipped")
        .collect();
    assert_eq!(started.len() + skipped.len(), 4, "{items:?}");
    assert!(!skipped.is_empty() && started.len() >= 2, "{items:?}");
    for (_, r) in &skipped {
        assert_eq!(
            r.reason.as_deref(),
            Some("not started: node 'bad' failed"),
            "{r:?}"
        );
    }
    assert_eq!(
        each.error_message(),
        format!(
            "{} of 4 items did not start: node 'bad' failed",
            skipped.len()
        )
    );
    let again = env.node(&id, "again");
    assert_eq!(again.status, "cancelled", "{again:?}");
    let n = env.iterations(&id, "again").len();
    assert!((1..50).contains(&n), "{n}");
    assert!(
        again.error_message().starts_with("no iteration after the ")
            && again.error_message().ends_with(": node 'bad' failed"),
        "{again:?}"
    );
}
