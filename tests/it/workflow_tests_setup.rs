//! `flowrun test` where a CI job is least careful: a case that fails keeps no snapshot of its
//! failure, and a suite that cannot run at all (no store, no interpreter, a filter that matches
//! nothing) says why in `--junit` and `--json`, with the exit code of what is wrong.

use crate::support::*;
use crate::workflow_tests::{case, test_json};
use crate::workflow_tests_ci::check_junit;
use serde_json::{Value, json};

fn shouting(env: &Env, code: &str) {
    env.write_workflow(
        "shout.json",
        &json!({"id": "shout", "nodes": [{"id": "up", "type": "code", "code": code}]}),
    );
}

#[test]
fn a_failing_case_keeps_no_snapshot_of_its_failure() {
    let env = Env::new();
    shouting(&env, "return trigger['text'].upper(");
    env.write_file(
        "shout.test.yaml",
        "workflow: ./shout.json\ncases:\n  - name: loud\n    trigger: { text: hi }\n    snapshot: true\n",
    );
    let snap_file = env.path("__snapshots__/shout.test.yaml.snap.json");
    let (code, report, err) = test_json(&env, &["."], &[]);
    assert_eq!(code, 1, "{err}");
    assert_eq!(case(&report, "loud")["verdict"], "failed");
    assert!(
        !snap_file.exists(),
        "the failure was written as the baseline: {}",
        std::fs::read_to_string(&snap_file).unwrap_or_default()
    );
    // Mended, the case passes and its snapshot is written then.
    shouting(&env, "return trigger['text'].upper()");
    let (code, report, err) = test_json(&env, &["."], &[]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(case(&report, "loud")["snapshot"], "written");
    let stored = || -> Value {
        serde_json::from_str(&std::fs::read_to_string(&snap_file).unwrap()).unwrap()
    };
    assert_eq!(stored()["loud"]["output"], "HI");
    // Broken again: `--update-snapshots` does not take the failure as the new baseline, and
    // says why the snapshot stays.
    shouting(&env, "return trigger['text'].lower() + 1");
    let (code, _, err) = test_json(&env, &[".", "--update-snapshots"], &[]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("the snapshot differs, and is not updated while the case fails"),
        "{err}"
    );
    assert_eq!(stored()["loud"]["output"], "HI");
}

#[test]
fn a_suite_that_cannot_run_says_why_in_its_reports() {
    let env = Env::new();
    shouting(&env, "return trigger['text'].upper()");
    env.write_file(
        "shout.test.yaml",
        "workflow: ./shout.json\ncases:\n  - name: loud\n    trigger: { text: hi }\n",
    );
    let says = |junit: &std::path::Path, what: &str| {
        let check = format!(
            "import sys, xml.etree.ElementTree as E\nr = E.parse(sys.argv[1]).getroot()\nassert r.get('errors') == '1', r.attrib\ne = r.find('testsuite/testcase/error')\nassert {what:?} in e.get('message'), e.attrib\nprint('ok')\n"
        );
        check_junit(junit, &check);
    };
    // A store that cannot be opened: exit 3, and a report a CI job can parse (it was empty).
    let junit = env.path("reports/store.xml");
    let out = output(
        env.flowrun()
            .args(["test", ".", "--junit", junit.to_str().unwrap(), "--json"])
            .env("FLOWRUN_DB", "/proc/flowrun.db"),
    );
    assert_code(&out, 3, "an unopenable store");
    says(&junit, "unable to open database file");
    let doc: Value = serde_json::from_str(&stdout(&out)).expect("--json prints its document");
    assert!(
        doc["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("/proc/flowrun.db"),
        "{doc}"
    );

    // No interpreter: the environment, exit 3 as for `run`, not every case failing (exit 1).
    let junit = env.path("reports/python.xml");
    let out = env.cmd([
        "test",
        ".",
        "--python",
        "/nonexistent/python3",
        "--junit",
        junit.to_str().unwrap(),
    ]);
    assert_code(&out, 3, "no interpreter");
    assert!(
        stderr(&out).contains("/nonexistent/python3"),
        "{}",
        describe(&out)
    );
    says(&junit, "does not work as a Python interpreter");
    // A suite whose cases run nothing (a refused trigger) needs none.
    env.write_workflow(
        "strict.json",
        &json!({"id": "strict", "inputs": {"type": "object", "required": ["n"]},
                "nodes": [{"id": "s", "type": "set", "fields": {}}]}),
    );
    env.write_file(
        "strict.test.yaml",
        "workflow: ./strict.json\ncases:\n  - name: no n\n    trigger: {}\n    refused: true\n",
    );
    let out = env.cmd([
        "test",
        "strict.test.yaml",
        "--python",
        "/nonexistent/python3",
    ]);
    assert_code(&out, 0, "refused cases only");

    // A filter that matches nothing: exit 2, and the report says so (no file was written).
    let junit = env.path("reports/filter.xml");
    let out = env.cmd([
        "test",
        ".",
        "--filter",
        "nosuch",
        "--junit",
        junit.to_str().unwrap(),
    ]);
    assert_code(&out, 2, "a filter that matches nothing");
    says(&junit, "--filter nosuch");
}

/// The rows of a `for_each` node's items and a `repeat` node's iterations, as `show --json` has
/// them, can be asserted: which input each item had, that one was retried.
#[test]
fn a_case_asserts_on_each_item_and_iteration() {
    let env = Env::new();
    env.write_workflow(
        "loop.json",
        &json!({"id": "loop", "nodes": [
            {"id": "get", "type": "http_request", "url": "http://127.0.0.1:9/u/{{ item }}",
             "for_each": [1, 2, 3], "retry": {"max_attempts": 2, "backoff_ms": 1}},
            {"id": "again", "type": "set", "fields": {"n": "{{ iteration }}"},
             "repeat": {"until": {"op": "ge", "left": "{{ output.n }}", "right": 2},
                        "max_iterations": 5}, "after": ["get"]}
        ]}),
    );
    env.write_file(
        "loop.test.yaml",
        concat!(
            "workflow: ./loop.json\ncases:\n  - name: items\n    mock:\n",
            "      get: [{error: {type: HTTPError, message: busy}}, {output: {status: 200}}]\n",
            "    expect:\n",
            "      nodes.get.items[2].input.url: http://127.0.0.1:9/u/3\n",
            "      nodes.get.items[2].index: 2\n",
            "      nodes.get.items[0].attempt: 2\n",
            "      nodes.again.iterations[1].output.n: 2\n",
        ),
    );
    let (code, report, err) = test_json(&env, &["."], &[]);
    assert_eq!(code, 0, "{err}\n{report:#}");
    // A node without `for_each` has no items: refused as the file loads, not a run's "missing".
    env.write_file(
        "loop.test.yaml",
        "workflow: ./loop.json\ncases:\n  - name: typo\n    expect:\n      nodes.again.items[0].status: success\n",
    );
    let (code, _, err) = test_json(&env, &["."], &[]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("node 'again' has no `for_each`, so no items"),
        "{err}"
    );
}

#[test]
fn the_examples_pass_offline() {
    // What .ci/run runs: flowrun tests itself the way its users will.
    let env = Env::new();
    let out = env.cmd([
        "test".as_ref(),
        example("").as_os_str(),
        "--offline".as_ref(),
        "--junit".as_ref(),
        env.path("junit.xml").as_os_str(),
    ]);
    assert_code(&out, 0, "examples");
    let text = stdout(&out);
    let last = text.trim_end().lines().last().unwrap_or("");
    assert!(last.ends_with(" passed, 0 failed"), "{text}");
    // Every workflow in examples/ has a test file.
    for e in std::fs::read_dir(example("")).unwrap().flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        let is_workflow =
            (name.ends_with(".json") || name.ends_with(".yaml")) && !name.contains(".test.");
        if is_workflow {
            let stem = name.rsplit_once('.').unwrap().0;
            assert!(
                example(&format!("{stem}.test.yaml")).exists(),
                "{name} has no test file"
            );
        }
    }
}
