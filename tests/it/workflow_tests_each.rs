//! Mocks item by item and iteration by iteration (`mock: {node: {each: [...]}}`): a poll that
//! succeeds at its second try, an item that fails among others, with no request made.

use crate::support::*;
use crate::workflow_tests::{case, test_json};
use serde_json::json;

#[test]
fn each_item_and_each_iteration_can_have_its_own_mock() {
    let env = Env::new();
    // Port 9 (discard): a request that were made would fail, and the cases would say so.
    env.write_workflow(
        "poll.json",
        &json!({"id": "poll", "nodes": [{"id": "poll", "type": "http_request",
            "url": "http://127.0.0.1:9/status",
            "repeat": {"until": "{{ output.ready }}", "max_iterations": 5}}]}),
    );
    env.write_workflow(
        "items.json",
        &json!({"id": "items", "nodes": [{"id": "each", "type": "http_request",
            "url": "http://127.0.0.1:9/{{ item }}", "for_each": ["a", "b", "c", "d"],
            "fail_fast": false, "retry": {"max_attempts": 2}}]}),
    );
    env.write_file(
        "poll.test.yaml",
        "workflow: ./poll.json
cases:
  - name: ready at the second try
    mock:
      poll:
        each: [{ready: false, n: 1}, {ready: true, n: 2}]
    expect:
      output.n: 2
      nodes.poll.iterations[0].output.ready: false
      nodes.poll.iterations[1].status: mocked
  - name: the last mock repeats
    mock:
      poll:
        each: [{ready: false, n: 1}]
    expect:
      status: error
      error.type: RepeatLimit
",
    );
    env.write_file(
        "items.test.yaml",
        "workflow: ./items.json
cases:
  - name: one item fails, once retried
    mock:
      each:
        each:
          - {v: 0}
          - [{error: {type: Boom, message: b is down}}, {error: {type: Boom, message: still down}}]
          - [{error: {type: Blip, message: once}}, {v: 2}]
          - {v: 3}
    expect:
      status: error
      nodes.each.items[0].output.v: 0
      nodes.each.items[1].status: error
      nodes.each.items[1].error.message: still down
      nodes.each.items[2].attempt: 2
      nodes.each.items[2].output.v: 2
      nodes.each.items[3].output.v: 3
",
    );
    let (code, report, err) = test_json(&env, &["poll.test.yaml", "items.test.yaml"], &[]);
    assert_eq!(code, 0, "{report:#}\n{err}");
    for name in [
        "ready at the second try",
        "the last mock repeats",
        "one item fails, once retried",
    ] {
        assert_eq!(case(&report, name)["verdict"], "passed", "{report:#}");
    }

    // `each` is for a node with for_each or repeat; its own mistakes are said where they are.
    env.write_file(
        "bad.test.yaml",
        "workflow: ./items.json
cases:
  - name: bad
    mock:
      each:
        each: [{v: 0}, [{v: 1}, {v: 2}]]
  - name: empty
    mock:
      each:
        each: []
  - name: too many attempts
    mock:
      each:
        each: [{v: 0}, [{error: {message: x}}, {error: {message: y}}, {v: 1}]]
",
    );
    let out = env.cmd(["test", "bad.test.yaml"]);
    assert_code(&out, 2, "refused mocks");
    let err = stderr(&out);
    for want in [
        "cases[0].mock.each: each[1]: attempt 2 is never made",
        "cases[1].mock.each: each: an empty list: give one mock per item",
        "cases[2].mock.each: 3 attempts are mocked, but node 'each' makes at most 2",
    ] {
        assert!(err.contains(want), "missing {want:?} in:\n{err}");
    }
}
