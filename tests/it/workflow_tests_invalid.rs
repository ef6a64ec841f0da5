//! `flowrun test` with test files that are wrong: what is refused before anything runs, and
//! what the reports a CI job reads (`--junit`, `--json`) say then.

use crate::support::*;
use serde_json::{Value, json};

/// `w.json`: a workflow of one node, `a`.
fn one_node_workflow(env: &Env) {
    env.write_workflow(
        "w.json",
        &json!({"id": "w", "nodes": [{"id": "a", "type": "set", "fields": {}}]}),
    );
}

#[test]
fn invalid_test_files_still_give_the_junit_and_json_reports() {
    let env = Env::new();
    one_node_workflow(&env);
    env.write_file(
        "bad.test.yaml",
        "workflow: ./w.json\ncases:\n  - name: one\n    mock:\n      ghost: 1\n",
    );
    env.write_file("broken.test.yaml", "workflow: ./w.json\ncases: [\n");
    env.write_file(
        "ok.test.yaml",
        "workflow: ./w.json\ncases:\n  - name: fine\n",
    );
    let junit = env.path("reports/junit.xml");
    let out = env.cmd(["test", ".", "--json", "--junit", junit.to_str().unwrap()]);
    assert_code(&out, 2, "invalid test files");
    assert_eq!(env.execution_count(), 0, "nothing ran");
    let doc: Value = serde_json::from_str(&stdout(&out))
        .unwrap_or_else(|e| panic!("--json gives one JSON document ({e}): {}", describe(&out)));
    assert_eq!(doc["summary"], "2 invalid test file(s); nothing was run");
    assert_eq!(doc["files"], json!([]));
    let errors = doc["errors"].as_array().expect("errors");
    let ghost = errors
        .iter()
        .find(|e| e["file"] == "./bad.test.yaml")
        .unwrap_or_else(|| panic!("{doc}"));
    assert_eq!(ghost["line"], 5);
    assert_eq!(ghost["case"], "one");
    assert_eq!(
        ghost["message"],
        "the workflow has no node 'ghost' to mock; its nodes are: a"
    );
    assert!(
        errors.iter().any(|e| e["file"] == "./broken.test.yaml"),
        "{doc}"
    );

    // The JUnit report, read back by Python's XML parser: an error per invalid file.
    let check = r#"
import sys, xml.etree.ElementTree as ET
root = ET.parse(sys.argv[1]).getroot()
assert root.tag == "testsuites" and root.get("errors") == "2", root.attrib
suites = {s.get("name"): s for s in root.findall("testsuite")}
assert set(suites) == {"./bad.test.yaml", "./broken.test.yaml"}, suites
case = suites["./bad.test.yaml"].find("testcase")
assert case.get("name") == "invalid test file" and case.get("line") == "5", case.attrib
e = case.find("error")
assert e.get("message") == "the workflow has no node 'ghost' to mock; its nodes are: a", e.attrib
assert "bad.test.yaml:5" in e.text, e.text
print("ok")
"#;
    crate::workflow_tests_ci::check_junit(&junit, check);
}

#[test]
fn snapshot_ignores_are_checked_and_a_node_status_path_is_the_node() {
    let env = Env::new();
    env.write_workflow(
        "w.json",
        &json!({"id": "w", "nodes": [{"id": "a", "type": "set", "fields": {"v": 1}}]}),
    );
    // What a snapshot does not hold is an error before anything runs, not an ignore that
    // silently checks nothing.
    env.write_file(
        "bad.test.yaml",
        "workflow: ./w.json\ncases:\n  - name: one\n    snapshot:\n      ignore: [output.v, nodes.nope, nodes.a.output, outptu, error.trace, status.x]\n",
    );
    let out = env.cmd(["test", "bad.test.yaml"]);
    assert_code(&out, 2, "invalid ignores");
    let err = stderr(&out);
    for want in [
        "cases[0].snapshot.ignore[1]: the workflow has no node 'nope'; its nodes are: a",
        "cases[0].snapshot.ignore[2]: a snapshot keeps only each node's status: ignore `nodes.a`",
        "cases[0].snapshot.ignore[3]: unknown field 'outptu' of a snapshot, did you mean 'output'? (one of: status, output, error, nodes)",
        "cases[0].snapshot.ignore[4]: a snapshot keeps an error's type, message, node",
        "cases[0].snapshot.ignore[5]: a snapshot's `status` is a string",
    ] {
        assert!(err.contains(want), "missing {want:?} in:\n{err}");
    }
    assert!(!err.contains("ignore[0]"), "output.v is fine: {err}");
    assert_eq!(env.execution_count(), 0, "nothing ran");
    // Typos of a case's keys and of an expectation's path, operator and node field.
    env.write_file(
        "typos.test.yaml",
        "workflow: ./w.json\ncases:\n  - name: one\n    expects: {}\n    expect:\n      outptu.v: 1\n      output.v: {contain: 1}\n      nodes.a.statsu: success\n",
    );
    let err = stderr(&env.cmd(["test", "typos.test.yaml"]));
    for want in [
        "cases[0].expects: unknown field 'expects', did you mean 'expect'?",
        "unknown field 'outptu' of the execution record, did you mean 'output'?",
        "unknown operator 'contain', did you mean 'contains'?",
        "unknown field 'statsu' of a node, did you mean 'status'?",
    ] {
        assert!(err.contains(want), "missing {want:?} in:\n{err}");
    }

    // `nodes.a.status` ignores the node's status, which is how a snapshot keeps a node.
    env.write_file(
        "ok.test.yaml",
        "workflow: ./w.json\ncases:\n  - name: one\n    snapshot: { ignore: [nodes.a.status] }\n",
    );
    let out = env.cmd(["test", "ok.test.yaml"]);
    assert_code(&out, 0, "written");
    let snap: Value = serde_json::from_str(
        &std::fs::read_to_string(env.path("__snapshots__/ok.test.yaml.snap.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(snap["one"]["nodes"], json!({"a": "[ignored]"}), "{snap}");

    // A snapshot file that is no JSON (a bad hand edit) is named once, before anything runs.
    std::fs::write(
        env.path("__snapshots__/ok.test.yaml.snap.json"),
        "{\"one\": ",
    )
    .unwrap();
    let out = env.cmd(["test", "ok.test.yaml"]);
    assert_code(&out, 2, "a broken snapshot file");
    let err = stderr(&out);
    assert!(
        err.contains("__snapshots__/ok.test.yaml.snap.json: not valid JSON")
            && err.matches("ok.test.yaml.snap.json").count() == 1,
        "{err}"
    );
    assert!(
        err.contains("`flowrun test --update-snapshots` writes it anew"),
        "{err}"
    );
    // A merge's conflict markers are named as such.
    std::fs::write(
        env.path("__snapshots__/ok.test.yaml.snap.json"),
        "{\n<<<<<<< HEAD\n  \"one\": 1\n=======\n  \"one\": 2\n>>>>>>> topic\n}\n",
    )
    .unwrap();
    let out = env.cmd(["test", "ok.test.yaml"]);
    assert_code(&out, 2, "a snapshot file with conflict markers");
    assert!(
        stderr(&out).contains("it holds a merge's conflict markers (<<<<<<<)"),
        "{}",
        describe(&out)
    );
    // `--update-snapshots` writes it anew (a merge's conflict markers, say), and says so.
    let out = env.cmd(["test", "ok.test.yaml", "--update-snapshots"]);
    assert_code(&out, 0, "a broken snapshot file, updated");
    assert!(
        stderr(&out).contains("replacing __snapshots__/ok.test.yaml.snap.json: not valid JSON"),
        "{}",
        describe(&out)
    );
    let snap: Value = serde_json::from_str(
        &std::fs::read_to_string(env.path("__snapshots__/ok.test.yaml.snap.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(snap["one"]["nodes"], json!({"a": "[ignored]"}), "{snap}");
}

#[test]
fn a_workflow_given_as_a_test_file_and_a_report_directory_are_named_as_such() {
    let env = Env::new();
    one_node_workflow(&env);
    let out = env.cmd(["test", "w.json"]);
    assert_code(&out, 2, "a workflow file");
    let err = stderr(&out);
    assert!(
        err.contains("w.json:1: this is a workflow, not a test file")
            && !err.contains("unknown field"),
        "{err}"
    );
    // A --junit directory is refused before any case runs.
    env.write_file(
        "ok.test.yaml",
        "workflow: ./w.json\ncases:\n  - name: fine\n",
    );
    std::fs::create_dir(env.path("reports")).unwrap();
    for given in ["reports", "new-dir/"] {
        let out = env.cmd(["test", "ok.test.yaml", "--junit", given]);
        assert_code(&out, 2, "--junit DIR");
        assert!(
            stderr(&out).contains(&format!(
                "--junit {given}: a directory; give the report's file name"
            )),
            "{}",
            describe(&out)
        );
    }
    // So is a file that cannot be written (a directory on its path is a file).
    env.write_file("plain", "");
    let out = env.cmd(["test", "ok.test.yaml", "--junit", "plain/junit.xml"]);
    assert_code(&out, 2, "--junit under a file");
    assert!(
        stderr(&out).contains("--junit plain/junit.xml: cannot be written:")
            && stderr(&out).contains("nothing was run"),
        "{}",
        describe(&out)
    );
    assert_eq!(env.execution_count(), 0, "nothing ran");
}

#[test]
fn annotations_name_the_file_from_the_repository_root_however_it_was_given() {
    let env = Env::new();
    one_node_workflow(&env);
    env.write_file(
        "bad.test.yaml",
        "workflow: ./w.json\ncases:\n  - name: one\n    mock:\n      ghost: 1\n",
    );
    let abs = env.path("bad.test.yaml");
    let dir = env.path("");
    let dir_name = dir.file_name().unwrap().to_str().unwrap().to_string();
    let annotation = |given: &str, workspace: Option<&std::path::Path>| {
        let mut cmd = env.flowrun();
        cmd.args(["test", given])
            .env("GITHUB_ACTIONS", "true")
            .env_remove("GITHUB_WORKSPACE");
        if let Some(w) = workspace {
            cmd.env("GITHUB_WORKSPACE", w);
        }
        let out = output(&mut cmd);
        assert_code(&out, 2, "invalid");
        let text = stdout(&out);
        text.lines()
            .find(|l| l.starts_with("::error file="))
            .unwrap_or_else(|| panic!("an annotation: {}", describe(&out)))
            .split(",line=")
            .next()
            .unwrap()
            .to_string()
    };
    assert_eq!(
        annotation("./bad.test.yaml", None),
        "::error file=bad.test.yaml"
    );
    assert_eq!(
        annotation(abs.to_str().unwrap(), None),
        "::error file=bad.test.yaml"
    );
    // The repository's root is GITHUB_WORKSPACE when set, also when reached through a link.
    assert_eq!(
        annotation("./bad.test.yaml", dir.parent()),
        format!("::error file={dir_name}/bad.test.yaml")
    );
    let link = env.path("link-to-parent");
    std::os::unix::fs::symlink(dir.parent().unwrap(), &link).unwrap();
    assert_eq!(
        annotation("./bad.test.yaml", Some(&link)),
        format!("::error file={dir_name}/bad.test.yaml")
    );
    // With --json, annotations go to stderr: stdout stays one JSON document.
    let mut cmd = env.flowrun();
    cmd.args(["test", "bad.test.yaml", "--json"])
        .env("GITHUB_ACTIONS", "true");
    let out = output(&mut cmd);
    assert_code(&out, 2, "invalid");
    let doc: Result<Value, _> = serde_json::from_str(&stdout(&out));
    assert!(doc.is_ok(), "{}", describe(&out));
    assert!(
        stderr(&out).contains("::error file=bad.test.yaml,line=5"),
        "{}",
        describe(&out)
    );
}

#[test]
fn an_assertion_on_a_status_no_execution_or_node_has_is_refused_at_load() {
    let env = Env::new();
    one_node_workflow(&env);
    env.write_file(
        "bad.test.yaml",
        "workflow: ./w.json\ncases:\n  - name: one\n    expect:\n      status: succes\n      nodes.a.status: { not: mock }\n",
    );
    let out = env.cmd(["test", "bad.test.yaml"]);
    assert_code(&out, 2, "unknown statuses");
    let err = stderr(&out);
    for want in [
        "bad.test.yaml:5: case \"one\": cases[0].expect.status: no status is \"succes\" (one of: queued, running, success, error, timeout, cancelled, interrupted, paused)",
        "bad.test.yaml:6: case \"one\": cases[0].expect[\"nodes.a.status\"]: no status is \"mock\" (one of: pending, running, success, error, skipped, pinned, reused, mocked, timeout, cancelled)",
    ] {
        assert!(err.contains(want), "missing {want:?} in:\n{err}");
    }
    env.write_file(
        "ok.test.yaml",
        "workflow: ./w.json\ncases:\n  - name: one\n    expect:\n      status: success\n      nodes.a.status: { not: error }\n",
    );
    assert_code(&env.cmd(["test", "ok.test.yaml"]), 0, "known statuses");
}

/// A list mocks one outcome per attempt: one that cannot be attempts is refused with how to
/// write an output that is a list (helper-50 mocked `ids: [1]` for a `for_each` over it, and met
/// "for_each: expected a list, got a number" at run time; helper-53 the same with `[1, 2]` and a
/// retry), and a loop node's mock is said to be each item's.
#[test]
fn a_list_mock_that_cannot_be_attempts_says_how_to_mock_a_list_output() {
    let env = Env::new();
    one_node_workflow(&env);
    env.write_workflow(
        "loop.json",
        &json!({"id": "loop", "nodes": [{"id": "each", "type": "set", "fields": {},
                "for_each": "{{ trigger.xs }}", "retry": {"max_attempts": 3}}]}),
    );
    env.write_file(
        "bad.test.yaml",
        "workflow: ./w.json\ncases:\n  - name: one\n    mock:\n      a: [1]\n  - name: two\n    mock:\n      a: [{ error: { message: x } }, 2]\n",
    );
    env.write_file(
        "loop.test.yaml",
        "workflow: ./loop.json\ncases:\n  - name: three\n    mock:\n      each: [1, 2]\n",
    );
    let out = env.cmd(["test", "bad.test.yaml", "loop.test.yaml"]);
    assert_code(&out, 2, "list mocks that are no attempts");
    assert_eq!(env.execution_count(), 0, "nothing ran");
    let err = stderr(&out);
    for want in [
        "bad.test.yaml:5: case \"one\": cases[0].mock.a: a list of one outcome: a list gives one outcome per attempt (the last repeats); for the output [1], write {\"output\":[1]}; for 1 at every attempt, write 1",
        "bad.test.yaml:8: case \"two\": cases[1].mock.a: 2 attempts are mocked, but node 'a' makes at most 1 (its retry.max_attempts): a list gives one outcome per attempt; write {output: [...]} for an output that is a list",
        "loop.test.yaml:5: case \"three\": cases[0].mock.each: attempt 2 is never made: attempt 1 is an output, which ends the node (a list gives one outcome per attempt, the failures before the output); the node's mock is the outcome of every item alike, not a list of them: for one mock per item in order, write {\"each\":[1,2]}; if every item's output is [1,2], write {\"output\":[1,2]}",
    ] {
        assert!(err.contains(want), "missing {want:?} in:\n{err}");
    }
    env.write_file(
        "ok.test.yaml",
        "workflow: ./w.json\ncases:\n  - name: one\n    mock:\n      a: { output: [1] }\n    expect:\n      nodes.a.output[0]: 1\n",
    );
    let out = env.cmd(["test", "ok.test.yaml"]);
    assert_code(&out, 0, "a list output");
}

#[test]
fn an_invalid_workflow_is_annotated_in_its_own_file_at_each_problem() {
    let env = Env::new();
    std::fs::create_dir(env.path("flows")).unwrap();
    env.write_file(
        "flows/w.json",
        "{\"id\": \"w\",\n \"nodes\": [\n  {\"id\": \"a\", \"type\": \"sett\"}\n ]}\n",
    );
    env.write_file(
        "flows/t.test.yaml",
        "workflow: ./w.json\ncases:\n  - name: one\n",
    );
    let mut cmd = env.flowrun();
    cmd.args(["test", "flows"]).env("GITHUB_ACTIONS", "true");
    let out = output(&mut cmd);
    assert_code(&out, 2, "invalid workflow");
    let text = stdout(&out);
    assert!(
        text.contains(
            "::error file=flows/w.json,line=3,title=invalid workflow (of flows/t.test.yaml)::node 'a', field 'type': unknown node type 'sett'"
        ),
        "{}",
        describe(&out)
    );
    assert!(!text.contains("file=flows/t.test.yaml"), "{text}");
}

/// `email` is required; `n` defaults to 3.
fn email_workflow(env: &Env) {
    env.write_workflow(
        "w.json",
        &json!({"id": "w",
                "inputs": {"type": "object", "required": ["email"],
                           "properties": {"email": {"type": "string"},
                                          "n": {"type": "integer", "default": 3}}},
                "nodes": [{"id": "a", "type": "set", "fields": {"to": "{{ trigger.email }}"}}]}),
    );
}

#[test]
fn a_trigger_the_inputs_schema_refuses_is_invalid_unless_the_case_expects_the_refusal() {
    let env = Env::new();
    email_workflow(&env);
    // Refused without saying so: a mistake of the test file, found before anything runs (it
    // was a case that "could not run", exit 1, found only by running it).
    env.write_file(
        "bad.test.yaml",
        "workflow: ./w.json\ncases:\n  - name: no email\n    trigger: { n: 1 }\n  - name: both\n    trigger: {}\n    refused: true\n    expect: { status: success }\n    mock: { a: 1 }\n  - name: never\n    trigger: {}\n    refused: { exists: false }\n",
    );
    let out = env.cmd(["test", "bad.test.yaml"]);
    assert_code(&out, 2, "a refused trigger");
    let err = stderr(&out);
    for want in [
        "bad.test.yaml:4: case \"no email\": cases[0].trigger: the workflow's `inputs` schema refuses this trigger, so the case cannot run; to test that it is refused, add `refused: true` to the case. invalid input:",
        "\"email\" is a required property",
        "bad.test.yaml:8: case \"both\": cases[1].expect: a refused trigger starts no execution, so `expect` has nothing to check",
        "bad.test.yaml:9: case \"both\": cases[1].mock: a refused trigger starts no execution, so `mock` does nothing",
        "bad.test.yaml:12: case \"never\": cases[2].refused: exists: false can never hold",
    ] {
        assert!(err.contains(want), "missing {want:?} in:\n{err}");
    }
    assert_eq!(env.execution_count(), 0, "nothing ran");
}

#[test]
fn an_expected_refusal_is_checked_as_a_run_checks_the_trigger_and_starts_nothing() {
    let env = Env::new();
    email_workflow(&env);
    // Expected: checked as a run checks it (defaults applied first), with no execution.
    env.write_file(
        "ok.test.yaml",
        "workflow: ./w.json\ncases:\n  - name: email is required\n    trigger: { n: 1 }\n    refused: { contains: email }\n  - name: refused at all\n    trigger: { email: 7 }\n    refused: true\n  - name: runs\n    trigger: { email: a@b.c }\n",
    );
    let out = env.cmd(["test", "ok.test.yaml", "--json"]);
    assert_code(&out, 0, "refused as expected");
    let doc: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(doc["totals"]["passed"], 3, "{doc:#}");
    assert_eq!(
        doc["files"][0]["cases"][0]["attempts"][0]["execution_id"],
        Value::Null,
        "{doc:#}"
    );
    assert_eq!(env.execution_count(), 1, "only the case that runs ran");
    // The same trigger given to `flowrun run` is refused too (exit 2), with the same words.
    let run = env.run(&env.path("w.json"), r#"{"n": 1}"#, &[]);
    assert_code(&run, 2, "a run refuses it");
    assert!(
        stderr(&run).contains("\"email\" is a required property"),
        "{}",
        describe(&run)
    );

    // A refusal that does not come, or says something else, fails the case (exit 1) on the
    // line of its `refused`.
    env.write_file(
        "fails.test.yaml",
        "workflow: ./w.json\ncases:\n  - name: accepted\n    trigger: { email: a@b.c }\n    refused: true\n  - name: other reason\n    trigger: {}\n    refused: { contains: phone }\n",
    );
    let out = env.cmd(["test", "fails.test.yaml"]);
    assert_code(&out, 1, "refusals that did not hold");
    let text = stdout(&out);
    for want in [
        "✗ fails.test.yaml:3 › accepted",
        "refused (line 5): exists\n      expected: a refusal by the workflow's `inputs` schema\n      actual:   (none: the workflow's `inputs` schema accepts the trigger; nothing was run)",
        "✗ fails.test.yaml:6 › other reason",
        "refused (line 8): contains\n      expected: a text or list containing \"phone\"",
    ] {
        assert!(
            text.contains(want),
            "missing {want:?} in:\n{}",
            describe(&out)
        );
    }
    assert!(!text.contains("details: flowrun show"), "{text}");
    assert_eq!(env.execution_count(), 1, "still only the one");
}

#[test]
fn refusals_need_a_valid_inputs_schema_and_a_trigger_may_be_any_json_value() {
    let env = Env::new();
    // A case expecting a refusal, against workflows that cannot refuse it.
    env.write_file(
        "fails.test.yaml",
        "workflow: ./w.json\ncases:\n  - name: accepted\n    trigger: { email: a@b.c }\n    refused: true\n",
    );
    // An `inputs` that is not a valid JSON Schema makes the workflow invalid, as `validate`
    // says: it neither refuses nor accepts.
    env.write_workflow(
        "w.json",
        &json!({"id": "w", "inputs": {"type": "bogus"},
                "nodes": [{"id": "a", "type": "set", "fields": {}}]}),
    );
    let out = env.cmd(["test", "fails.test.yaml"]);
    assert_code(&out, 2, "an invalid inputs schema");
    assert!(
        stderr(&out).contains("the workflow ./w.json is invalid:")
            && stderr(&out).contains("field 'inputs': not a valid JSON Schema"),
        "{}",
        describe(&out)
    );
    assert_code(
        &env.cmd(["validate", "w.json"]),
        2,
        "validate says the same",
    );

    // A trigger is any JSON value, as `flowrun run --input` takes: a list for a list's schema.
    env.write_workflow(
        "list.json",
        &json!({"id": "list", "inputs": {"type": "array", "items": {"type": "integer"}},
                "nodes": [{"id": "a", "type": "set", "fields": {"first": "{{ trigger[0] }}"}}]}),
    );
    env.write_file(
        "list.test.yaml",
        "workflow: ./list.json\ncases:\n  - name: a list\n    trigger: [4, 5]\n    expect: { output.first: 4 }\n  - name: not numbers\n    trigger: [x]\n    refused: { contains: integer }\n",
    );
    assert_code(&env.cmd(["test", "list.test.yaml"]), 0, "a list trigger");

    // A workflow without `inputs` refuses nothing.
    one_node_workflow(&env);
    env.write_file(
        "none.test.yaml",
        "workflow: ./w.json\ncases:\n  - name: x\n    refused: true\n",
    );
    let out = env.cmd(["test", "none.test.yaml"]);
    assert_code(&out, 2, "nothing to refuse");
    assert!(
        stderr(&out).contains(
            "cases[0].refused: the workflow has no `inputs` schema, so it refuses no trigger"
        ),
        "{}",
        describe(&out)
    );
}

/// `flowrun validate` given a test file checks it as `flowrun test` would before running
/// anything (its cases, mocks and the workflow it names), rather than as a workflow it is not
/// ("unknown field `workflow`", "missing field `nodes`").
#[test]
fn validate_checks_a_test_file_as_a_test_file() {
    let env = Env::new();
    one_node_workflow(&env);
    env.write_file(
        "ok.test.yaml",
        "workflow: ./w.json\ncases:\n  - name: fine\n  - name: also\n",
    );
    env.write_file(
        "bad.test.yaml",
        "workflow: ./w.json\ncases:\n  - name: one\n    mock:\n      ghost: { output: 1 }\n",
    );
    env.write_file(
        "gone.test.yaml",
        "workflow: ./gone.json\ncases:\n  - name: one\n",
    );
    let out = env.cmd(["validate", "ok.test.yaml", "w.json"]);
    assert_code(&out, 0, "a valid test file and its workflow");
    assert!(
        stdout(&out).starts_with("ok: ok.test.yaml — 2 cases of w.json — workflow 'w'"),
        "{}",
        describe(&out)
    );
    let out = env.cmd(["validate", "bad.test.yaml", "gone.test.yaml"]);
    assert_code(&out, 2, "invalid test files");
    let err = stderr(&out);
    assert!(
        err.contains("bad.test.yaml:5: field 'cases[0].mock.ghost': case \"one\": the workflow has no node 'ghost' to mock"),
        "{err}"
    );
    assert!(
        err.contains("gone.test.yaml:1: field 'workflow': the workflow ./gone.json is invalid"),
        "{err}"
    );
    assert!(
        !err.contains("unknown field `workflow`"),
        "read as a workflow:\n{err}"
    );
    let out = env.cmd(["validate", "--json", "ok.test.yaml", "bad.test.yaml"]);
    let doc: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(
        doc["files"][0]["file"], "ok.test.yaml",
        "the file given: {doc}"
    );
    assert_eq!(doc["files"][0]["workflow_id"], "w", "{doc}");
    let doc = json!({"files": [doc["files"][1].clone()]});
    assert_eq!(doc["files"][0]["valid"], false, "{doc}");
    assert_eq!(
        doc["files"][0]["diagnostics"][0]["field"], "cases[0].mock.ghost",
        "{doc}"
    );
}

/// `validate` of a test file checks what `flowrun test` checks before running; the workflow's
/// code is compiled by `validate` of the workflow file: a case may mock a node that does not
/// compile, or expect the run to fail because of it.
#[test]
fn validate_of_a_test_file_leaves_the_workflows_code_to_the_workflow() {
    let env = Env::new();
    env.write_workflow(
        "mk.json",
        &json!({"id": "mk", "nodes": [{"id": "c", "type": "code", "code": "return ("}]}),
    );
    env.write_file(
        "mk.test.yaml",
        "workflow: ./mk.json\ncases:\n  - name: mocked\n    mock: { c: 1 }\n  - name: refused at start\n    expect:\n      status: error\n      error.message: { contains: does not compile }\n",
    );
    assert_code(&env.cmd(["validate", "mk.test.yaml"]), 0, "the test file");
    assert_code(&env.cmd(["test", "mk.test.yaml"]), 0, "and its cases pass");
    let out = env.cmd(["validate", "mk.test.yaml", "mk.json"]);
    assert_code(&out, 2, "the workflow file");
    let err = stderr(&out);
    assert_eq!(
        err.matches("node 'c', field 'code': does not compile")
            .count(),
        1,
        "{err}"
    );
}
