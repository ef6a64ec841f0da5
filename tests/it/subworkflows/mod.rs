//! `workflow` nodes: a parent execution calling child workflow files, each child its own
//! execution (run by `flowrun __sub` inside the parent's process tree), linked to the node that
//! called it, nested in `show`, `history` and the API; stopped with its parent; failing its
//! node by name; re-run alone by `resume`; checked at validation (cycles, depth, inputs).

use crate::support::faults::{Fx, alive, assert_group_gone, code, read_pids, wait_pids};
use crate::support::serve::World;
use crate::support::*;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

mod pause;
mod records;
mod resume;
mod start_check;

/// The child used by most tests: doubles `n`; fails for `n == fail_on` unless the file
/// `trigger.ok_file` exists (so a resume after creating it succeeds).
fn doubler() -> Value {
    json!({
        "id": "doubler",
        "inputs": {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]},
        "nodes": [{"id": "double", "type": "code", "code":
            "import os\nif trigger.get('fail_on') == trigger['n'] and not os.path.exists(trigger.get('ok_file') or ''):\n    raise ValueError('no good: %d' % trigger['n'])\nreturn {'twice': 2 * trigger['n']}"}]
    })
}

/// A parent that calls `child` once per item of `trigger.ns`.
fn fan_parent(child: &str, fail_fast: bool) -> Value {
    json!({
        "id": "fan",
        "nodes": [
            {"id": "each", "type": "workflow", "workflow": child,
             "for_each": "{{ trigger.ns }}", "fail_fast": fail_fast,
             "inputs": {"n": "{{ item }}", "fail_on": "{{ trigger.fail_on }}",
                        "ok_file": "{{ trigger.ok_file }}"}},
            {"id": "sum", "type": "code",
             "code": "return sum(o['twice'] for o in nodes['each']['output'])"}
        ]
    })
}

/// `(id, parent_node, parent_item, status)` of the children of `parent`, by item.
fn children(env: &Env, parent: &str) -> Vec<(String, String, Option<i64>, String)> {
    let db = env.db();
    let mut stmt = db
        .prepare(
            "SELECT id, parent_node, parent_item, status FROM executions
             WHERE parent_id = ?1 AND relation = 'sub' ORDER BY parent_item, started_at",
        )
        .unwrap();
    stmt.query_map([parent], |r| {
        Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
    })
    .unwrap()
    .map(Result::unwrap)
    .collect()
}

/// Writes a workflow at `rel` (under the test's directory), creating its directory.
fn put(env: &Env, rel: &str, def: &Value) -> PathBuf {
    let path = env.path(rel);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    env.write_workflow(rel, def)
}

fn top_level_ids(env: &Env) -> Vec<String> {
    let db = env.db();
    let mut stmt = db
        .prepare("SELECT id FROM executions WHERE relation IS NULL OR relation != 'sub' ORDER BY started_at")
        .unwrap();
    stmt.query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

#[test]
fn a_parent_calls_a_child_per_item_all_linked_and_nested() {
    let env = Env::new();
    put(&env, "kids/doubler.json", &doubler());
    let parent = put(&env, "fan.json", &fan_parent("./kids/doubler.json", true));
    let out = env.run(
        &parent,
        r#"{"ns": [1, 2, 3], "fail_on": null, "ok_file": ""}"#,
        &[],
    );
    assert_success(&out, "the parent");
    assert_eq!(stdout(&out).trim(), "12");
    let ids = top_level_ids(&env);
    assert_eq!(ids.len(), 1, "one top-level execution");
    let parent_id = &ids[0];
    let kids = children(&env, parent_id);
    assert_eq!(kids.len(), 3, "{kids:?}");
    for (i, (_, node, item, status)) in kids.iter().enumerate() {
        assert_eq!(
            (node.as_str(), *item, status.as_str()),
            ("each", Some(i as i64), "success")
        );
    }

    // show --json nests the children's records, and each item names its child.
    let record = env.show_json(parent_id);
    let nested = record["children"].as_array().expect("children");
    assert_eq!(nested.len(), 3, "{record:#}");
    for (i, child) in nested.iter().enumerate() {
        assert_eq!(child["id"], kids[i].0.as_str());
        assert_eq!(child["parent_id"], parent_id.as_str());
        assert_eq!(child["relation"], "sub");
        assert_eq!(child["parent_node"], "each");
        assert_eq!(child["parent_item"], i as i64);
        assert_eq!(child["workflow_id"], "doubler");
        assert_eq!(child["output"], json!({"twice": 2 * (i as i64 + 1)}));
        assert_eq!(child["nodes"][0]["node_id"], "double");
    }
    let items = record["nodes"][0]["items"].as_array().expect("items");
    for (i, item) in items.iter().enumerate() {
        assert_eq!(item["child_executions"], json!([kids[i].0]), "{item}");
    }
    // The child's own record points back.
    let child = env.show_json(&kids[1].0);
    assert_eq!(child["parent_id"], parent_id.as_str());
    assert_eq!(child["parent_node"], "each");
    assert_eq!(child["children"], json!([]));

    // show (text) lists them under the parent; the child says who called it.
    let text = stdout(&env.cmd(["show", parent_id.as_str()]));
    assert!(text.contains("sub-workflow executions"), "{text}");
    for (id, ..) in &kids {
        assert!(
            text.contains(&format!("↳ {id}  doubler  success")),
            "{text}"
        );
    }
    let text = stdout(&env.cmd(["show", kids[2].0.as_str()]));
    assert!(
        text.contains(&format!("sub        of {parent_id}")),
        "{text}"
    );
    assert!(text.contains("called by  node 'each' item 2"), "{text}");

    // history: the parent, its children indented under it; --all lists all four flat.
    let text = stdout(&env.cmd(["history"]));
    let rows: Vec<&str> = text.lines().skip(1).collect();
    assert_eq!(rows.len(), 4, "{text}");
    assert!(rows[0].starts_with(parent_id.as_str()), "{text}");
    for row in &rows[1..] {
        assert!(row.trim_start().starts_with("└ "), "{text}");
        assert!(row.contains("node 'each' item"), "{text}");
    }
    let list = env.history_json(&[]);
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["children"].as_array().map(Vec::len), Some(3));
    assert_eq!(env.history_json(&["--all"]).len(), 4);

    // The log of the parent's node names each child as it starts.
    let logs = stdout(&env.cmd(["logs", parent_id.as_str()]));
    for (id, ..) in &kids {
        assert!(
            logs.contains(&format!("child execution {id} started")),
            "{logs}"
        );
    }
}

#[test]
fn the_api_record_lists_the_children() {
    let w = World::new();
    put(&w.env, "workflows/kids/doubler.json", &doubler());
    w.save("fan.json", &fan_parent("./kids/doubler.json", true));
    let srv = w.serve(&[]);
    let id = srv.start(
        "/api/workflows/fan/executions",
        &json!({"trigger": {"ns": [5, 6, 7], "fail_on": null, "ok_file": ""}}),
    );
    let record = srv.wait_final(&id);
    assert_eq!(record["status"], "success", "{record:#}");
    assert_eq!(record["output"], json!(36));
    let nested = record["children"].as_array().expect("children");
    assert_eq!(nested.len(), 3, "{record:#}");
    for (i, child) in nested.iter().enumerate() {
        assert_eq!(child["parent_id"], id.as_str());
        assert_eq!(child["relation"], "sub");
        assert_eq!(child["parent_item"], i as i64);
        let got = srv.get(&format!(
            "/api/executions/{}",
            child["id"].as_str().unwrap()
        ));
        assert_eq!(got.status, 200);
        assert_eq!(got.body["parent_node"], "each");
        assert_eq!(got.body["output"], json!({"twice": 2 * (i as i64 + 5)}));
    }
    // The list has all four; `top_level=true` only the parent.
    assert_eq!(srv.get("/api/executions").body["total"], 4);
    let top = srv.get("/api/executions?top_level=true").body;
    assert_eq!(top["total"], 1, "{top}");
    assert_eq!(top["executions"][0]["id"], id.as_str());
    assert_eq!(srv.get("/api/executions?top_level=yes").status, 400);
}

/// A child that records its interpreter's pid and its shepherd's, starts a grandchild, and
/// sleeps; a parent that calls it.
fn sleeping_family(fx: &Fx) -> PathBuf {
    let body = r#"
        note(os.getpid())
        note(os.getppid())
        grandchild('kid')
        time.sleep(300)
    "#;
    put(
        &fx.env,
        "kids/sleeper.json",
        &json!({"id": "sleeper", "nodes": [{"id": "nap", "type": "code", "code": code(body)}]}),
    );
    fx.workflow(
        "parent",
        &json!({"id": "parent", "nodes": [
            {"id": "call", "type": "workflow", "workflow": "./kids/sleeper.json",
             "inputs": {"pids": "{{ trigger.pids }}", "dir": "{{ trigger.dir }}"}}
        ]}),
    )
}

fn fx_trigger(fx: &Fx) -> Value {
    crate::support::faults::trigger(fx)
}

/// Every process in `pids` is gone within 5 s.
#[track_caller]
fn assert_all_dead(pids: &[i32]) {
    let deadline = Instant::now() + Duration::from_secs(5);
    for &pid in pids {
        while alive(pid) {
            assert!(Instant::now() < deadline, "process {pid} survived");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

#[test]
fn stopping_the_parent_mid_child_ends_every_process_of_both() {
    let fx = Fx::new();
    let parent = sleeping_family(&fx);
    let mut run = fx.spawn_run(&parent, &fx_trigger(&fx), &["--timeout-ms", "60000"]);
    let row = fx.wait_running(Some("call"), &mut run);
    // The child's interpreter, its shepherd, and the grandchild.
    let pids = wait_pids(&fx.path("pids"), 3);
    let kids = children(&fx.env, &row.id);
    assert_eq!(kids.len(), 1, "{kids:?}");
    let child = fx.execution(&kids[0].0);
    assert_eq!(child.status, "running");
    let child_pgid = child.pgid.expect("the child's group is recorded");
    // The sub runner: the parent of the child's shepherd.
    let sub_runner = std::fs::read_to_string(format!("/proc/{}/stat", pids[1]))
        .ok()
        .and_then(|s| {
            let rest = &s[s.rfind(')')? + 2..];
            rest.split(' ').nth(1)?.parse::<i32>().ok()
        })
        .expect("the child's shepherd has a parent");

    let stop = fx.flowrun(&["stop", &row.id]);
    stop.assert_code(0);
    run.wait(Duration::from_secs(20)).assert_code(130);
    assert_all_dead(&pids);
    assert_all_dead(&[sub_runner]);
    assert_group_gone(child_pgid);
    fx.assert_clean(&row.id);
    assert_eq!(fx.execution(&row.id).status, "cancelled");
    // The child ended with its parent, recorded (by its sub runner, or by the parent's runner
    // when the sub runner died with the parent's tree first), and says so.
    let child = fx.execution(&kids[0].0);
    assert_eq!(child.status, "cancelled", "{child:?}");
    assert!(
        child.error_message().contains("with its parent execution"),
        "{child:?}"
    );
}

#[test]
fn a_parent_timeout_ends_the_child_too() {
    let fx = Fx::new();
    let parent = sleeping_family(&fx);
    let out = fx.run(
        &parent,
        &fx_trigger(&fx),
        &["--timeout-ms", "3000", "--kill-grace-ms", "1000"],
    );
    out.assert_code(124);
    let pids = read_pids(&fx.path("pids"));
    assert_eq!(pids.len(), 3, "{pids:?} {out}");
    assert_all_dead(&pids);
    let id = top_level_ids(&fx.env).pop().unwrap();
    fx.assert_clean(&id);
    let kids = children(&fx.env, &id);
    assert_eq!(kids.len(), 1);
    // Ended with its parent: recorded `cancelled` by its own runner when that one sees the
    // parent's SIGTERM first, else `timeout` by the parent's runner after the tree is gone.
    let status = fx.execution(&kids[0].0).status;
    assert!(status == "timeout" || status == "cancelled", "{status}");
}

#[test]
fn a_failing_child_fails_its_node_by_name_and_resume_reruns_only_it() {
    let env = Env::new();
    put(&env, "kids/doubler.json", &doubler());
    let parent = put(&env, "fan.json", &fan_parent("./kids/doubler.json", false));
    let ok_file = env.path("ok");
    let input = json!({"ns": [1, 2, 3], "fail_on": 2, "ok_file": ok_file.display().to_string()});
    let out = env.run(&parent, &input.to_string(), &[]);
    assert_code(&out, 1, "a child failed");
    let first = top_level_ids(&env).pop().unwrap();
    let kids = children(&env, &first);
    let statuses: Vec<&str> = kids.iter().map(|k| k.3.as_str()).collect();
    assert_eq!(statuses, ["success", "error", "success"]);
    let failed_child = &kids[1].0;
    let item = &env.items(&first, "each")[1].1;
    assert_eq!(item.status, "error");
    assert_eq!(item.error_type(), "SubWorkflow");
    assert!(
        item.error_message()
            .contains(&format!("child execution {failed_child}"))
            && item.error_message().contains("no good: 2"),
        "{}",
        item.error_message()
    );
    assert_eq!(env.node(&first, "each").status, "error");
    // `logs` of the parent points to the traceback where it is: in the failed child.
    let logs = stderr(&env.cmd(["logs", first.as_str()]));
    assert!(
        logs.contains(&format!(
            "item 1 failed: SubWorkflow: child execution {failed_child}"
        )) && logs.contains(&format!(
            "(its traceback: flowrun show {})",
            &failed_child[..8]
        )),
        "{logs}"
    );

    // Fixed: resume runs only the failed item's child; the others are reused.
    std::fs::write(&ok_file, "").unwrap();
    let out = env.cmd(["resume", first.as_str()]);
    assert_success(&out, "resume");
    assert_eq!(stdout(&out).trim(), "12");
    let second = top_level_ids(&env).pop().unwrap();
    assert_ne!(second, first);
    let items = env.items(&second, "each");
    let statuses: Vec<&str> = items.iter().map(|(_, r)| r.status.as_str()).collect();
    assert_eq!(statuses, ["reused", "success", "reused"]);
    let new_kids = children(&env, &second);
    assert_eq!(new_kids.len(), 1, "{new_kids:?}");
    assert_eq!(new_kids[0].2, Some(1));
    assert_eq!(new_kids[0].3, "success");

    // Fixed in the child's file instead: every item runs again (reusing the others would mix
    // what two versions of the child returned).
    let none = env.path("no-such-file").display().to_string();
    let input = json!({"ns": [1, 2, 3], "fail_on": 2, "ok_file": none});
    let out = env.run(&parent, &input.to_string(), &[]);
    assert_code(&out, 1, "a child failed again");
    let third = top_level_ids(&env).pop().unwrap();
    let mut fixed = doubler();
    fixed["nodes"][0]["code"] = json!("return {'twice': 2 * trigger['n'], 'v': 2}");
    put(&env, "kids/doubler.json", &fixed);
    let out = env.cmd(["resume", third.as_str()]);
    assert_success(&out, "resume after the child changed");
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("child workflow's file changed"), "{said}");
    let fourth = top_level_ids(&env).pop().unwrap();
    assert_eq!(children(&env, &fourth).len(), 3, "every item's child ran");
}

fn chain(env: &Env, n: usize) -> PathBuf {
    for i in 0..n {
        let nodes = if i + 1 < n {
            json!([{"id": "down", "type": "workflow", "workflow": format!("./c{}.json", i + 1),
                    "inputs": {"depth": i + 1}}])
        } else {
            json!([{"id": "bottom", "type": "code", "code": "return trigger['depth']"}])
        };
        put(
            env,
            &format!("chain/c{i}.json"),
            &json!({"id": format!("c{i}"), "nodes": nodes}),
        );
    }
    env.path("chain/c0.json")
}

fn validate(env: &Env, file: &Path) -> (i32, String) {
    let out = env.cmd(["validate", file.to_str().unwrap()]);
    (
        out.status.code().unwrap_or(-1),
        stderr(&out) + &stdout(&out),
    )
}

#[test]
fn a_cycle_of_files_is_a_validation_error_naming_both() {
    let env = Env::new();
    let a = put(
        &env,
        "loop/a.json",
        &json!({"id": "a", "nodes": [{"id": "to_b", "type": "workflow", "workflow": "./b.json"}]}),
    );
    put(
        &env,
        "loop/b.json",
        &json!({"id": "b", "nodes": [{"id": "to_a", "type": "workflow", "workflow": "a.json"}]}),
    );
    let (code, text) = validate(&env, &a);
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("a cycle of workflow files"), "{text}");
    assert!(
        text.contains("loop/a.json") && text.contains("loop/b.json"),
        "{text}"
    );
    assert!(
        text.contains("to_a"),
        "the node that closes the cycle: {text}"
    );
    // `run` refuses it the same way, before anything runs.
    let out = env.run(&a, "{}", &[]);
    assert_code(&out, 2, "a cycle");
    assert_eq!(env.execution_count(), 0);

    // A missing child file, and static inputs the child's schema rejects.
    put(&env, "kids/doubler.json", &doubler());
    let bad = put(
        &env,
        "bad.json",
        &json!({"id": "bad", "nodes": [
            {"id": "gone", "type": "workflow", "workflow": "./kids/nope.json"},
            {"id": "wrong", "type": "workflow", "workflow": "./kids/doubler.json",
             "inputs": {"n": "three"}},
            {"id": "missing", "type": "workflow", "workflow": "./kids/doubler.json",
             "inputs": {"m": "{{ trigger.x }}"}},
            {"id": "fine", "type": "workflow", "workflow": "./kids/doubler.json",
             "inputs": {"n": "{{ trigger.x }}"}}
        ]}),
    );
    let (code, text) = validate(&env, &bad);
    assert_eq!(code, 2, "{text}");
    assert!(
        text.contains("node 'gone', field 'workflow'") && text.contains("nope.json"),
        "{text}"
    );
    assert!(
        text.contains("node 'wrong', field 'inputs'") && text.contains("\"three\""),
        "{text}"
    );
    assert!(
        text.contains("node 'missing', field 'inputs'") && text.contains("requires the input n"),
        "{text}"
    );
    assert!(!text.contains("'fine'"), "{text}");
}

#[test]
fn sub_workflows_nest_at_most_eight_deep() {
    let env = Env::new();
    // c0 → … → c8: the bottom is at depth 8, which runs.
    let top = chain(&env, 9);
    let (code, text) = validate(&env, &top);
    assert_eq!(code, 0, "{text}");
    let out = env.run(&top, "{}", &[]);
    assert_success(&out, "eight levels");
    assert_eq!(stdout(&out).trim(), "8");
    assert_eq!(env.execution_count(), 9);

    // One more level is a validation error.
    let env = Env::new();
    let top = chain(&env, 10);
    let (code, text) = validate(&env, &top);
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("nest deeper than 8 levels"), "{text}");

    // The runner refuses past the limit too (a file changed during a run).
    let out = env
        .flowrun()
        .args([
            "__sub", "--parent", "p", "--node", "n", "--depth", "9", "--",
        ])
        .arg(env.path("chain/c9.json"))
        .output()
        .unwrap();
    let line: Value = serde_json::from_str(stdout(&out).trim()).expect("one JSON line");
    assert_eq!(line["status"], "error");
    assert_eq!(line["error"]["type"], "DepthLimit");
    assert_eq!(line["execution_id"], Value::Null);
}

#[test]
fn deleting_or_pruning_a_parent_takes_its_children_with_it() {
    let env = Env::new();
    put(&env, "kids/doubler.json", &doubler());
    let parent = put(&env, "fan.json", &fan_parent("./kids/doubler.json", true));
    let input = r#"{"ns": [1, 2], "fail_on": null, "ok_file": ""}"#;
    for _ in 0..2 {
        assert_success(&env.run(&parent, input, &[]), "the parent");
    }
    assert_eq!(env.execution_ids().len(), 6, "two parents, four children");
    let first = top_level_ids(&env)[0].clone();
    assert_success(&env.cmd(["delete", &first]), "delete the first parent");
    assert_eq!(env.execution_ids().len(), 3, "its children went with it");
    assert!(children(&env, &first).is_empty());
    // --keep counts top-level executions: the one parent left stays, with its children.
    assert_success(&env.cmd(["prune", "--keep", "1"]), "prune --keep 1");
    assert_eq!(env.execution_ids().len(), 3);
    assert_success(&env.cmd(["prune", "--keep", "0"]), "prune --keep 0");
    assert!(env.execution_ids().is_empty(), "{:?}", env.execution_ids());
}

/// A child's output larger than the protocol carries (1 MiB) reached the parent's next nodes as
/// the truncation marker, with the node a success; it fails the node, saying what to do.
#[test]
fn a_child_output_too_large_to_pass_back_fails_its_node_by_name() {
    let env = Env::new();
    put(
        &env,
        "big.json",
        &json!({"id": "big", "nodes": [
            {"id": "make", "type": "code", "code": "return {'s': 'y' * (2 << 20)}"}]}),
    );
    let parent = put(
        &env,
        "parent.json",
        &json!({"id": "parent", "nodes": [
            {"id": "call", "type": "workflow", "workflow": "./big.json"},
            {"id": "keys", "type": "code", "code": "return sorted(nodes['call']['output'])"}]}),
    );
    let out = env.run(&parent, "{}", &[]);
    assert_code(&out, 1, "a child whose output cannot come back");
    let id = top_level_ids(&env).pop().unwrap();
    let call = env.node(&id, "call");
    assert_eq!(call.status, "error");
    let message = call.error_message();
    assert!(
        message.contains("more than a sub-workflow passes back"),
        "{message}"
    );
}

/// A connection the parent declares reaches its children though no node of the parent uses
/// it: the child's LLM call is made with the key flowrun was given (it failed, "a connection is
/// not bound", unless the key was passed with `--env`).
#[test]
fn a_childs_connection_is_bound_from_the_parents_declared_one() {
    use crate::support::llm_server::{Reply, Server};
    let env = Env::new();
    let server = Server::start(|_| Reply::openai_chat("llama-3.1-8b-instant", "ok", 10, 2));
    let conn = json!({ "groq": { "env": "GROQ_API_KEY" } });
    put(
        &env,
        "asker.json",
        &json!({ "id": "asker", "connections": conn, "nodes": [
            { "id": "ask", "type": "llm", "provider": "groq", "model": "llama-3.1-8b-instant",
              "connection": "groq", "messages": [ { "role": "user", "content": "hi" } ] }] }),
    );
    let parent = put(
        &env,
        "caller.json",
        &json!({ "id": "caller", "connections": conn, "nodes": [
            { "id": "call", "type": "workflow", "workflow": "./asker.json" }] }),
    );
    let key = "gsk-bound-from-the-parent-7f3a";
    let base = server.url("/openai/v1");
    let vars = [
        ("FLOWRUN_GROQ_BASE_URL", base.as_str()),
        ("GROQ_API_KEY", key),
    ];
    let out = env.run_with(&parent, "{}", &vars, &[]);
    assert_code(&out, 0, "the child's call with the parent's key");
    let sent = server.only_request();
    assert_eq!(
        sent.header("authorization"),
        Some(format!("Bearer {key}").as_str())
    );
}
