//! The start check reaches into sub-workflows: a code node that does not compile, in a child
//! file or a file below it, fails the parent before any of its nodes runs — not once the child
//! starts, after the parent's earlier nodes (requests, commands) were made for a run bound to
//! fail.

use super::put;
use crate::support::*;
use serde_json::json;

#[test]
fn a_grandchilds_code_that_does_not_compile_fails_the_parent_before_any_node_runs() {
    let env = Env::new();
    let marker = env.path("first-ran");
    let parent = put(
        &env,
        "parent.json",
        &json!({ "id": "parent", "nodes": [
            { "id": "first", "type": "command", "argv": ["touch", marker] },
            // A node of the parent with the id of the broken one: neither is taken for the other.
            { "id": "broken", "type": "code", "code": "return 'fine'" },
            { "id": "child", "type": "workflow", "workflow": "./kids/child.json" },
        ]}),
    );
    put(
        &env,
        "kids/child.json",
        &json!({ "id": "child", "nodes": [
            { "id": "ok", "type": "code", "code": "return 1" },
            { "id": "grand", "type": "workflow", "workflow": "./grand.json" },
        ]}),
    );
    let grand = |code: &str| {
        put(
            &env,
            "kids/grand.json",
            &json!({ "id": "grand", "nodes": [
                { "id": "broken", "type": "code", "code": code },
                // Pinned: it never runs, so its source is not checked.
                { "id": "pinned", "type": "code", "code": "return (", "pinned": 7 },
            ]}),
        )
    };
    let grand_file = std::fs::canonicalize(grand("x = 1\nreturn (x +\n")).unwrap();
    let check = |id: &str| {
        let e = env.execution(id);
        assert_eq!(e.status, "error", "{e:?}");
        let err = e.error.as_ref().unwrap();
        assert_eq!(
            (&err["type"], &err["node"]),
            (&json!("SyntaxError"), &json!("child"))
        );
        assert_eq!(
            e.error_message(),
            format!(
                "code node 'broken' of {} does not compile, so no node ran: '(' was never \
                 closed (line 2)",
                grand_file.display()
            )
        );
        assert!(
            err["traceback"].as_str().unwrap().contains("return (x +"),
            "{err}"
        );
        assert_eq!(env.nodes(id).len(), 0, "no node started");
        assert_eq!(super::children(&env, id), [], "no child execution started");
    };
    let out = env.run(&parent, "{}", &[]);
    assert_code(&out, 1, "a grandchild that does not compile");
    assert!(!marker.exists(), "a node of the parent ran");
    check(&env.only_execution_id());

    // Warm alike; and a case whose `workflow` node is mocked runs no child: nothing to check.
    env.write_file(
        "parent.test.yaml",
        "workflow: ./parent.json\ncases:\n  - name: refused\n    expect: { status: error, error.node: child }\n  - name: mocked\n    mock: { child: 5 }\n    expect: { status: success, output: 5 }\n",
    );
    let out = env.cmd(["test", "parent.test.yaml"]);
    assert_success(&out, "both cases");
    let ids = super::top_level_ids(&env);
    check(&ids[ids.len() - 2]);
    // (The mocked case ran the parent's other nodes.)
    std::fs::remove_file(&marker).unwrap();

    // Mended, the whole family runs; the parent's own `broken` is its own.
    grand("x = 1\nreturn (x + 1)\n");
    let out = env.run(&parent, "{}", &[]);
    assert_success(&out, "the mended family");
    let id = super::top_level_ids(&env).pop().unwrap();
    assert_eq!(env.execution(&id).status, "success");
    assert_eq!(env.node(&id, "broken").output(), &json!("fine"));
    assert_eq!(
        env.node(&id, "child").output(),
        &json!(7),
        "grand's last node, pinned"
    );
    assert!(marker.exists());
}

/// What never runs is not checked: below a `workflow` node pinned in its file, nothing runs.
/// And a source too long to compile twice cheaply (over 100,000 characters) is left to the
/// child, which finds its error as it starts, as before.
#[test]
fn what_a_child_never_runs_or_a_huge_source_is_left_to_the_child() {
    let env = Env::new();
    put(
        &env,
        "broken.json",
        &json!({ "id": "broken", "nodes": [{ "id": "g", "type": "code", "code": "return )" }]}),
    );
    put(
        &env,
        "pins.json",
        &json!({ "id": "pins", "nodes": [
            { "id": "inner", "type": "workflow", "workflow": "./broken.json", "pinned": {"ok": true} },
            { "id": "after", "type": "code", "code": "return nodes['inner']['output']['ok']" },
        ]}),
    );
    let parent = put(
        &env,
        "parent.json",
        &json!({ "id": "parent", "nodes": [
            { "id": "sub", "type": "workflow", "workflow": "./pins.json" },
        ]}),
    );
    let out = env.run(&parent, "{}", &[]);
    assert_success(
        &out,
        "a pinned sub-workflow's file is never run, so never checked",
    );

    let huge = format!("{}return (\n", "x = 1\n".repeat(20_000));
    put(
        &env,
        "huge.json",
        &json!({ "id": "huge", "nodes": [{ "id": "h", "type": "code", "code": huge }]}),
    );
    let marker = env.path("first-ran");
    let parent = put(
        &env,
        "parent-huge.json",
        &json!({ "id": "parent-huge", "nodes": [
            { "id": "first", "type": "command", "argv": ["touch", marker] },
            { "id": "sub", "type": "workflow", "workflow": "./huge.json" },
        ]}),
    );
    let out = env.run(&parent, "{}", &[]);
    assert_code(&out, 1, "the child fails as it starts");
    assert!(
        marker.exists(),
        "the parent's first node ran: the child was not checked"
    );
    let id = super::top_level_ids(&env).pop().unwrap();
    let e = env.execution(&id);
    assert_eq!(e.error.as_ref().unwrap()["node"], "sub", "{e:?}");
    assert!(e.error_message().contains("does not compile"), "{e:?}");
}
