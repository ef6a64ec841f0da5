//! What a failed case's report says of why, where CI shows it (the terminal, JUnit, `--json`)
//! and the database is gone after the job: the execution's traceback and the last lines its
//! failing node printed.

use crate::support::*;
use crate::workflow_tests::{case, test_json};
use serde_json::json;

#[test]
fn a_failed_case_shows_its_traceback_and_what_the_node_printed() {
    let env = Env::new();
    env.write_workflow(
        "items.json",
        &json!({"id": "items", "nodes": [{"id": "each", "type": "code",
            "for_each": "{{ trigger.items }}", "fail_fast": false,
            "code": "print('working on %r' % (item,))\nif not isinstance(item, int):\n    raise ValueError('not a number: %r' % (item,))\nreturn item"}]}),
    );
    env.write_file(
        "items.test.yaml",
        "workflow: ./items.json\ncases:\n  - name: mixed\n    trigger: {items: [1, \"two\"]}\n",
    );
    let junit = env.path("junit.xml");
    let out = env.cmd([
        "test",
        "items.test.yaml",
        "--junit",
        junit.to_str().unwrap(),
    ]);
    assert_code(&out, 1, "a failing case");
    let text = stdout(&out);
    for want in [
        "traceback:",
        "raise ValueError('not a number: %r' % (item,))",
        "ValueError: not a number: 'two'",
        "the failing node printed (last lines):",
        "working on 'two'",
    ] {
        assert!(text.contains(want), "no {want:?} in\n{text}");
    }
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert!(
        xml.contains("ValueError: not a number: &apos;two&apos;") && xml.contains("working on"),
        "{xml}"
    );
    let (_, report, _) = test_json(&env, &["items.test.yaml"], &[]);
    let attempt = &case(&report, "mixed")["attempts"][0];
    assert!(
        attempt["traceback"]
            .as_str()
            .is_some_and(|t| t.contains("<node each>")),
        "{attempt:#}"
    );
    assert_eq!(
        attempt["last_logs"],
        json!(["working on 1", "working on 'two'"]),
        "{attempt:#}"
    );
}

/// A case that fails in a sub-workflow shows the child's traceback and what the child's failing
/// node printed, not the parent's one-line message again: the child is where it was raised.
#[test]
fn a_case_failing_in_a_sub_workflow_shows_the_childs_traceback() {
    let env = Env::new();
    env.write_workflow(
        "child.json",
        &json!({"id": "child", "nodes": [{"id": "upper", "type": "code",
            "code": "print('upper got %r' % (trigger,))\nraise KeyError('no word in the trigger')"}]}),
    );
    env.write_workflow(
        "parent.json",
        &json!({"id": "parent", "nodes": [{"id": "sub", "type": "workflow",
            "workflow": "./child.json", "inputs": {"n": 1}}]}),
    );
    env.write_file(
        "parent.test.yaml",
        "workflow: ./parent.json\ncases:\n  - name: crash\n",
    );
    let out = env.cmd(["test", "parent.test.yaml"]);
    assert_code(&out, 1, "a failing case");
    let text = stdout(&out);
    for want in [
        "(in sub-workflow execution ",
        ", called by node 'sub')",
        "File \"<node upper>\", line 2",
        "KeyError: 'no word in the trigger'",
        "upper got {'n': 1}",
    ] {
        assert!(text.contains(want), "no {want:?} in\n{text}");
    }
    let (_, report, _) = test_json(&env, &["parent.test.yaml"], &[]);
    let attempt = &case(&report, "crash")["attempts"][0];
    assert!(
        attempt["traceback"]
            .as_str()
            .is_some_and(|t| t.contains("<node upper>")),
        "{attempt:#}"
    );
    assert_eq!(
        attempt["last_logs"],
        json!(["upper got {'n': 1}"]),
        "{attempt:#}"
    );
}
