//! `resume` of a parent whose children's files changed since they ran.

use super::{put, top_level_ids};
use crate::support::*;
use serde_json::json;

/// A grandchild's file changed: every item of the parent's node runs again (only the direct
/// child's file was compared, and the output mixed v1 and v2).
#[test]
fn a_changed_grandchild_runs_every_item_again() {
    let env = Env::new();
    let code = |v: &str| {
        format!(
            "if '{v}' == 'v1' and trigger['n'] == 1:\n    raise ValueError('v1 fails on 1')\nreturn '{v}-%d' % trigger['n']"
        )
    };
    let leaf =
        |v: &str| json!({"id": "leaf", "nodes": [{"id": "say", "type": "code", "code": code(v)}]});
    put(&env, "leaf.json", &leaf("v1"));
    put(
        &env,
        "mid.json",
        &json!({"id": "mid", "nodes": [{"id": "down", "type": "workflow", "workflow": "./leaf.json",
                                        "inputs": {"n": "{{ trigger.n }}"}}]}),
    );
    let parent = put(
        &env,
        "top.json",
        &json!({"id": "top", "nodes": [{"id": "each", "type": "workflow", "workflow": "./mid.json",
            "for_each": [0, 1, 2], "fail_fast": false, "inputs": {"n": "{{ item }}"}}]}),
    );
    let out = env.run(&parent, "{}", &[]);
    assert_code(&out, 1, "item 1 fails");
    let first = top_level_ids(&env).pop().unwrap();
    put(&env, "leaf.json", &leaf("v2"));
    let out = env.cmd(["resume", first.as_str()]);
    assert_success(&out, "resume");
    assert_eq!(
        stdout(&out).trim(),
        r#"["v2-0","v2-1","v2-2"]"#,
        "{}",
        describe(&out)
    );
}

/// A resume of a resume: the node reused in the second execution has its children in the
/// first, and a change of their file is seen there (it was not: the output stayed v1).
#[test]
fn a_changed_child_is_seen_through_a_reused_node() {
    let env = Env::new();
    let child = |v: &str| json!({"id": "child", "nodes": [{"id": "say", "type": "code", "code": format!("return '{v}'")}]});
    put(&env, "child.json", &child("v1"));
    let ok = env.path("ok.flag").display().to_string();
    let parent = put(
        &env,
        "parent.json",
        &json!({"id": "parent", "nodes": [
            {"id": "a", "type": "workflow", "workflow": "./child.json"},
            {"id": "b", "type": "code", "code": format!(
                "import os\nif not os.path.exists({ok:?}):\n    raise ValueError('not yet')\nreturn nodes['a']['output']")}
        ]}),
    );
    let out = env.run(&parent, "{}", &[]);
    assert_code(&out, 1, "b fails");
    let first = top_level_ids(&env).pop().unwrap();
    let out = env.cmd(["resume", first.as_str()]);
    assert_code(&out, 1, "b fails again, a reused");
    let second = top_level_ids(&env).pop().unwrap();
    put(&env, "child.json", &child("v2"));
    std::fs::write(&ok, "").unwrap();
    let out = env.cmd(["resume", second.as_str()]);
    assert_success(&out, "resume of the resume");
    assert_eq!(stdout(&out).trim(), r#""v2""#, "{}", describe(&out));
}
