//! What decides which nodes run: skipped branches, pinned nodes, input validation and defaults.

use super::by_id;
use crate::support::*;
use serde_json::{Value, json};

// ---------------------------------------------------------------------------------------------
// 5. Skipped branch
// ---------------------------------------------------------------------------------------------

#[test]
fn untaken_branch_and_its_downstream_are_skipped() {
    let env = Env::new();
    let wf = env.write_workflow(
        "branch.json",
        &json!({
            "id": "branch",
            "nodes": [
                {"id": "check", "type": "condition",
                 "if": {"op": "gt", "left": "{{ trigger.amount }}", "right": 100},
                 "then": ["big"], "else": ["small"]},
                {"id": "big", "type": "set", "fields": {"kind": "big"}},
                {"id": "small", "type": "set", "fields": {"kind": "small"}},
                {"id": "after_small", "type": "set", "fields": {"from": "{{ nodes.small.output.kind }}"}},
                {"id": "after_small2", "type": "set", "fields": {"x": 1}, "after": ["after_small"]},
                {"id": "end", "type": "set", "fields": {"done": true}, "after": ["check"]}
            ]
        }),
    );
    let out = env.run(&wf, r#"{"amount": 500}"#, &[]);
    assert_success(&out, "run with a branch");
    let id = env.only_execution_id();
    assert_eq!(env.execution(&id).status, "success");
    let nodes = env.nodes(&id);
    let status = |n: &str| by_id(&nodes, n).status.clone();
    assert_eq!(status("check"), "success");
    assert_eq!(by_id(&nodes, "check").output, Some(json!({"result": true})));
    assert_eq!(status("big"), "success");
    assert_eq!(by_id(&nodes, "big").output, Some(json!({"kind": "big"})));
    assert_eq!(status("small"), "skipped");
    assert_eq!(status("after_small"), "skipped");
    assert_eq!(status("after_small2"), "skipped");
    assert_eq!(status("end"), "success");
    for n in ["small", "after_small", "after_small2"] {
        assert!(
            by_id(&nodes, n).output.is_none(),
            "skipped {n} has an output"
        );
    }
    let err = stderr(&out);
    assert!(err.contains("skipped"), "{err}");

    // The other way round.
    let out = env.run(&wf, r#"{"amount": 5}"#, &[]);
    assert_success(&out, "run with the other branch");
    let id2 = env.execution_ids().into_iter().find(|x| *x != id).unwrap();
    let nodes = env.nodes(&id2);
    assert_eq!(by_id(&nodes, "big").status, "skipped");
    assert_eq!(by_id(&nodes, "small").status, "success");
    assert_eq!(by_id(&nodes, "after_small").status, "success");
    assert_eq!(
        by_id(&nodes, "after_small").output,
        Some(json!({"from": "small"}))
    );
}

// ---------------------------------------------------------------------------------------------
// 6. Pinned nodes
// ---------------------------------------------------------------------------------------------

fn pin_workflow(env: &Env, pinned: Option<Value>) -> std::path::PathBuf {
    let mut fetch = json!({
        "id": "fetch", "type": "code",
        "code": "open(trigger['marker'], 'w').write('ran')\nreturn {'items': ['real']}"
    });
    if let Some(p) = pinned {
        fetch["pinned"] = p;
    }
    env.write_workflow(
        "pin.json",
        &json!({
            "id": "pin",
            "nodes": [
                fetch,
                {"id": "use", "type": "set", "fields": {"first": "{{ nodes.fetch.output.items[0] }}"}}
            ]
        }),
    )
}

#[test]
fn pinned_node_is_not_executed() {
    let env = Env::new();
    let marker = env.path("marker");
    let pin = json!({"items": ["pinned", 2], "note": "from the file"});
    let wf = pin_workflow(&env, Some(pin.clone()));
    let out = env.run(&wf, &json!({"marker": marker}).to_string(), &[]);
    assert_success(&out, "run with a pinned node");
    assert!(!marker.exists(), "the pinned node's code ran");
    let id = env.only_execution_id();
    let nodes = env.nodes(&id);
    let fetch = by_id(&nodes, "fetch");
    assert_eq!(fetch.status, "pinned");
    assert_eq!(fetch.output, Some(pin));
    let usen = by_id(&nodes, "use");
    assert_eq!(usen.status, "success");
    assert_eq!(usen.output, Some(json!({"first": "pinned"})));
}

#[test]
fn pin_on_the_command_line_overrides_a_node() {
    let env = Env::new();
    let marker = env.path("marker");
    let wf = pin_workflow(&env, None);
    let pin_file = env.write_file("fetch.json", r#"{"items": ["from-cli"]}"#);
    let pin_arg = format!("fetch={}", pin_file.display());
    let out = env.run(
        &wf,
        &json!({"marker": marker}).to_string(),
        &["--pin", &pin_arg],
    );
    assert_success(&out, "run with --pin");
    assert!(!marker.exists(), "the pinned node's code ran");
    let id = env.only_execution_id();
    let nodes = env.nodes(&id);
    assert_eq!(by_id(&nodes, "fetch").status, "pinned");
    assert_eq!(
        by_id(&nodes, "fetch").output,
        Some(json!({"items": ["from-cli"]}))
    );
    assert_eq!(
        by_id(&nodes, "use").output,
        Some(json!({"first": "from-cli"}))
    );

    // The same workflow without --pin runs the code for real.
    let out = env.run(&wf, &json!({"marker": marker}).to_string(), &[]);
    assert_success(&out, "run without --pin");
    assert!(marker.exists(), "the unpinned node did not run");
}

#[test]
fn pin_of_an_unknown_node_is_a_usage_error() {
    let env = Env::new();
    let wf = pin_workflow(&env, None);
    let pin_file = env.write_file("p.json", "{}");
    let out = env.run(
        &wf,
        "{}",
        &["--pin", &format!("nosuch={}", pin_file.display())],
    );
    assert_code(&out, 2, "--pin of an unknown node");
    assert!(
        stderr(&out).contains("--pin: the workflow has no node 'nosuch'; its nodes are: "),
        "{}",
        describe(&out)
    );
    assert_eq!(env.execution_count(), 0);
}

// ---------------------------------------------------------------------------------------------
// 8. Input validation and defaults
// ---------------------------------------------------------------------------------------------

#[test]
fn invalid_input_fails_before_anything_runs() {
    let env = Env::new();
    let marker = env.path("spawned");
    let wf = env.write_workflow(
        "typed.json",
        &json!({
            "id": "typed",
            "inputs": {
                "type": "object",
                "properties": {
                    "count": {"type": "integer", "minimum": 1},
                    "marker": {"type": "string"}
                },
                "required": ["count", "marker"]
            },
            "nodes": [
                {"id": "touch", "type": "code",
                 "code": "open(trigger['marker'], 'w').write('x')\nreturn trigger['count']"}
            ]
        }),
    );
    let out = env.run(
        &wf,
        &json!({"count": "three", "marker": marker}).to_string(),
        &[],
    );
    assert_code(&out, 2, "run with invalid input");
    let err = stderr(&out);
    assert!(err.contains("count"), "the message names the field:\n{err}");
    assert!(!marker.exists(), "a process ran despite invalid input");
    assert_eq!(env.execution_count(), 0, "an execution row was written");
    assert!(
        !env.cache_dir().join("scripts").exists()
            || std::fs::read_dir(env.cache_dir().join("scripts"))
                .unwrap()
                .next()
                .is_none(),
        "a script was written for invalid input"
    );

    // A missing required field is named too.
    let out = env.run(&wf, &json!({"count": 2}).to_string(), &[]);
    assert_code(&out, 2, "run with a missing field");
    assert!(stderr(&out).contains("marker"), "{}", describe(&out));
    assert_eq!(env.execution_count(), 0);
    // No trigger data at all: the message says how to give it.
    let out = env.cmd(["run", wf.to_str().unwrap()]);
    assert_code(&out, 2, "run without input");
    assert!(
        stderr(&out).contains(
            r#"no trigger data was given: pass it with --input '{"count": …, "marker": …}'"#
        ),
        "{}",
        describe(&out)
    );

    // Valid input runs.
    let out = env.run(&wf, &json!({"count": 2, "marker": marker}).to_string(), &[]);
    assert_success(&out, "run with valid input");
    assert!(marker.exists());
    assert_eq!(env.execution_count(), 1);
}

#[test]
fn invalid_input_is_reported_before_what_the_environment_lacks() {
    // The trigger is the caller's to fix (exit 2): it is checked before the working directory,
    // the connections and the agent CLIs, as it was before the meta-schema's thread.
    let env = Env::new();
    let inputs = json!({"type": "object", "properties": {"count": {"type": "integer"}}});
    let cases = [
        (
            "unbound.json",
            json!({"id": "unbound", "inputs": inputs,
                   "connections": {"svc": {"env": "FLOWRUN_TEST_NEVER_SET_KEY"}},
                   "nodes": [{"id": "call", "type": "http_request",
                              "url": "http://127.0.0.1:9/", "connection": "svc"}]}),
        ),
        (
            "nowhere.json",
            json!({"id": "nowhere", "inputs": inputs, "cwd": "no-such-directory",
                   "nodes": [{"id": "s", "type": "set", "fields": {"a": "1"}}]}),
        ),
    ];
    for (name, wf) in cases {
        let wf = env.write_workflow(name, &wf);
        let out = env.run(&wf, &json!({"count": "three"}).to_string(), &[]);
        assert_code(&out, 2, name);
        assert!(stderr(&out).contains("count"), "{name}: {}", describe(&out));
        // With valid input, what the environment lacks is what is reported.
        let out = env.run(&wf, &json!({"count": 3}).to_string(), &[]);
        assert_code(&out, 3, name);
    }
    assert_eq!(env.execution_count(), 0);
}

#[test]
fn input_defaults_are_applied() {
    let env = Env::new();
    let out = env.run(&example("hello.json"), "{}", &[]);
    assert_success(&out, "run hello without a name");
    let id = env.only_execution_id();
    let e = env.execution(&id);
    assert_eq!(e.trigger, json!({"name": "World", "excited": true}));
    assert_eq!(e.output.as_ref().unwrap()["message"], "Hello, World!");
    assert_eq!(
        env.node(&id, "greet").output,
        Some(json!({"text": "Hello, World"}))
    );
}

#[test]
fn malformed_input_json_is_a_usage_error() {
    let env = Env::new();
    let out = env.run(&example("hello.json"), "{not json", &[]);
    assert_code(&out, 2, "run with malformed --input");
    assert!(stderr(&out).contains("--input"), "{}", describe(&out));
    assert_eq!(env.execution_count(), 0);
}
