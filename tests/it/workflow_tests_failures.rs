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
