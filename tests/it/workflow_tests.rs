//! `flowrun test`: assertions, mocks, `--offline` and snapshots, with the real
//! binary, real Python and a real (counting) HTTP server on 127.0.0.1 standing in for the LLM.

use crate::support::llm_server::{Reply, Server};
use crate::support::*;
use serde_json::{Value, json};

const KEY: &str = "gsk_test_key_for_workflow_tests";

/// `flowrun test ARGS... --json`: the exit code and the JSON report.
pub(crate) fn test_json(env: &Env, args: &[&str], envs: &[(&str, &str)]) -> (i32, Value, String) {
    let mut cmd = env.flowrun();
    cmd.arg("test").args(args).arg("--json");
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let out = output(&mut cmd);
    let report: Value = serde_json::from_str(&stdout(&out))
        .unwrap_or_else(|e| panic!("--json prints JSON ({e})\n{}", describe(&out)));
    (out.status.code().unwrap_or(-1), report, stderr(&out))
}

/// The case named `name` in a JSON report.
pub(crate) fn case<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["files"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|f| f["cases"].as_array().into_iter().flatten())
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no case {name} in {report:#}"))
}

/// The paths of the failed assertions of a case's last attempt.
fn failed_paths(c: &Value) -> Vec<String> {
    let last = c["attempts"]
        .as_array()
        .and_then(|a| a.last())
        .expect("an attempt");
    last["failures"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|f| f["path"].as_str().unwrap_or("?").to_string())
        .collect()
}

fn code_workflow(env: &Env) {
    env.write_workflow(
        "calc.json",
        &json!({"id": "calc", "nodes": [
            {"id": "calc", "type": "code",
             "code": "log('computing', trigger['x'])\nreturn {'text': 'A directed acyclic graph', 'n': trigger['x'] * 2, 'items': [1, 2, 3], 'obj': {'a': 1, 'b': 'two'}}"}
        ]}),
    );
}

#[test]
fn each_operator_passes_and_fails_with_path_operator_expected_and_actual() {
    let env = Env::new();
    code_workflow(&env);
    env.write_file(
        "calc.test.yaml",
        r#"workflow: ./calc.json
cases:
  - name: every operator holds
    trigger: { x: 21 }
    expect:
      status: success
      output.n: 42
      output.obj: { equals: { a: 1, b: two } }
      output.text: { contains: acyclic }
      output.items: { contains: 2 }
      output.obj.a: { exists: true }
      output.missing: { exists: false }
      output.text["nope"]: { exists: false }
      output.text.x: { not: { exists: true } }
      nodes.calc.output.text: { matches: "^A [a-z]+ acyclic" }
      output: { schema: { type: object, required: [n, text], properties: { n: { type: integer } } } }
      output.items[2]: { lt: 4, le: 3, gt: 2, ge: 3 }
      nodes.calc.status: { not: error }
      logs: { contains: computing 21 }
      duration_ms: { gt: 0 }
  - name: every operator fails
    trigger: { x: 1 }
    expect:
      output.n: 3
      output.obj: { equals: { a: 2 } }
      output.text: { contains: cyclic tree }
      output.items: { contains: 9 }
      output.missing: { exists: true }
      output.n.deeper: { matches: "x" }
      output["text"]: { matches: "^B" }
      output: { schema: { type: object, required: [absent] } }
      output.items[0]: { gt: 1 }
      output.items[1]: { lt: 2 }
      output.items[2]: { ge: 4 }
      output["n"]: { le: 1 }
      nodes.calc.status: { not: success }
"#,
    );
    let (code, report, err) = test_json(&env, &["calc.test.yaml"], &[]);
    assert_eq!(code, 1, "a case failed: exit 1\n{err}");
    assert_eq!(report["summary"], "1 passed, 1 failed", "{report:#}");
    let good = case(&report, "every operator holds");
    assert_eq!(good["verdict"], "passed", "{good:#}");
    let bad = case(&report, "every operator fails");
    assert_eq!(bad["verdict"], "failed");
    let mut paths = failed_paths(bad);
    paths.sort();
    assert_eq!(
        paths,
        [
            "nodes.calc.status",
            "output",
            "output.items",
            "output.items[0]",
            "output.items[1]",
            "output.items[2]",
            "output.missing",
            "output.n",
            "output.n.deeper",
            "output.obj",
            "output.text",
            "output[\"n\"]",
            "output[\"text\"]",
        ],
        "{bad:#}"
    );
    let f = &bad["attempts"][0]["failures"];
    let by_path = |p: &str| {
        f.as_array()
            .unwrap()
            .iter()
            .find(|x| x["path"] == p)
            .unwrap()
            .clone()
    };
    let items0 = by_path("output.items[0]");
    assert_eq!(
        (
            items0["operator"].as_str(),
            items0["expected"].as_str(),
            items0["actual"].as_str()
        ),
        (Some("gt"), Some("a number > 1"), Some("1"))
    );
    // For a script: what was there as JSON, not as the report's text; nothing when nothing was.
    assert_eq!(items0["actual_value"], json!(1), "{items0:#}");
    assert_eq!(
        by_path("output.obj")["actual_value"]["a"],
        json!(1),
        "{bad:#}"
    );
    assert!(by_path("output.missing").get("actual_value").is_none());
    assert_eq!(by_path("nodes.calc.status")["expected"], "not \"success\"");
    assert_eq!(
        by_path("output.missing")["actual"],
        "(missing: `output` has no 'missing'; it has text, n, items, obj)"
    );
    // The terminal report says the same, with the line each assertion is on (the ✗ line has the
    // case's), and which execution to look at.
    let id = bad["attempts"][0]["execution_id"].as_str().unwrap();
    assert!(
        err.contains("✗ calc.test.yaml:21 › every operator fails"),
        "{err}"
    );
    assert!(
        err.contains(
            "output.items[0] (line 32): gt\n      expected: a number > 1\n      actual:   1"
        ),
        "{err}"
    );
    assert!(
        err.contains(&format!("details: flowrun show {id}")),
        "{err}"
    );
    assert!(
        err.trim_end().ends_with("1 passed, 1 failed"),
        "the last line: {err}"
    );
    let shown = env.show_json(id);
    assert_eq!(shown["mode"], "test-suite");
}

/// An LLM workflow whose provider is the counting server, which then calls `trigger.target`
/// (the server's `/data`) with an `http_request` node.
pub(crate) fn llm_workflow(env: &Env) {
    env.write_workflow(
        "ask.json",
        &json!({"id": "ask", "connections": {"groq": {"env": "GROQ_API_KEY"}}, "nodes": [
            {"id": "ask", "type": "llm", "provider": "groq", "model": "llama-3.1-8b-instant",
             "connection": "groq", "prompt": "{{ trigger.q }}",
             "retry": {"max_attempts": 3, "backoff_ms": 10, "factor": 1}},
            {"id": "fetch", "type": "http_request", "url": "{{ trigger.target }}", "after": ["ask"]},
            {"id": "answer", "type": "set", "fields": {"text": "{{ nodes.ask.output.content }}", "data": "{{ nodes.fetch.output.body }}"}}
        ]}),
    );
}

/// The counting server: `/data` answers JSON, anything else an OpenAI-style chat answer.
pub(crate) fn counting_server() -> Server {
    Server::start(|req| {
        if req.path() == "/data" {
            return Reply::json(200, &json!({"rows": 3}));
        }
        let q = req
            .json
            .as_ref()
            .and_then(|b| b["messages"][0]["content"].as_str());
        let q = q.unwrap_or("").to_string();
        Reply::openai_chat("llama-3.1-8b-instant", &format!("answer to {q}"), 7, 3)
    })
}

pub(crate) fn groq(server: &Server) -> Vec<(&'static str, String)> {
    vec![
        ("FLOWRUN_GROQ_BASE_URL", server.url("/openai/v1")),
        ("GROQ_API_KEY", KEY.to_string()),
    ]
}

#[test]
fn mocks_of_an_output_an_error_and_attempts_make_no_request() {
    let env = Env::new();
    llm_workflow(&env);
    let server = counting_server();
    env.write_file(
        "ask.test.yaml",
        r#"workflow: ./ask.json
mock:
  fetch: { status: 200, headers: {}, body: { rows: 1 } }
cases:
  - name: output
    trigger: { q: "What is a DAG?", target: "http://127.0.0.1:9/never" }
    mock:
      ask: { content: "A directed acyclic graph.", model: stub, usage: { input_tokens: 9, output_tokens: 6 } }
    expect:
      status: success
      output.text: { contains: acyclic }
      nodes.ask.status: mocked
      nodes.ask.attempt: 1
      nodes.ask.input.prompt: "What is a DAG?"
      nodes.fetch.status: mocked
      output.data: { equals: { rows: 1 } }
      input_tokens: 9
      cost_usd: { lt: 0.01 }
  - name: error
    trigger: { q: x }
    mock:
      ask: { error: { type: RateLimited, message: "429 slow down" } }
    expect:
      status: error
      error: { contains: { type: RateLimited, node: ask } }
      nodes.ask.attempt: 3
      nodes.answer: { exists: false }
  - name: a retry exercised
    trigger: { q: x, target: "http://127.0.0.1:9/never" }
    mock:
      ask:
        - { error: { type: Timeout, message: "timed out" } }
        - { content: second, usage: { input_tokens: 1, output_tokens: 2 }, cost_usd: 0.5 }
    expect:
      output.text: second
      nodes.ask.status: mocked
      nodes.ask.attempt: 2
      cost_usd: 0.5
"#,
    );
    let envs = groq(&server);
    let envs: Vec<(&str, &str)> = envs.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (code, report, err) = test_json(&env, &["ask.test.yaml", "-j", "3"], &envs);
    assert_eq!(code, 0, "{err}\n{report:#}");
    assert_eq!(report["summary"], "3 passed, 0 failed");
    assert_eq!(
        server.requests().len(),
        0,
        "mocked llm and http_request nodes make no request"
    );
    // The retry went through the runtime's retry loop: two starts, two ends.
    let id = case(&report, "a retry exercised")["attempts"][0]["execution_id"]
        .as_str()
        .unwrap()
        .to_string();
    let ends: Vec<(String, Option<bool>)> = env
        .events(&id)
        .iter()
        .filter(|e| e.kind == "node_end" && e.node_id.as_deref() == Some("ask"))
        .map(|e| {
            (
                e.data["status"].as_str().unwrap().to_string(),
                e.data["retrying"].as_bool(),
            )
        })
        .collect();
    assert_eq!(
        ends,
        [
            ("error".to_string(), Some(true)),
            ("mocked".to_string(), None)
        ]
    );
    let starts = env
        .events(&id)
        .iter()
        .filter(|e| e.kind == "node_start" && e.node_id.as_deref() == Some("ask"))
        .count();
    assert_eq!(starts, 2);
    // Without the mock, the same workflow does call the server: the count above means something.
    let trigger = json!({"q": "hi", "target": server.url("/data")}).to_string();
    let out = env.run_with(&env.path("ask.json"), &trigger, &envs, &[]);
    assert_code(&out, 0, "a real run");
    assert_eq!(server.requests().len(), 2);
}

#[test]
fn offline_fails_an_unmocked_llm_node_at_once_without_a_request() {
    let env = Env::new();
    llm_workflow(&env);
    let server = counting_server();
    env.write_file(
        "ask.test.yaml",
        "workflow: ./ask.json\ncases:\n  - name: unmocked\n    trigger: { q: x }\n    expect: { status: success }\n",
    );
    let envs = groq(&server);
    let envs: Vec<(&str, &str)> = envs.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (code, report, err) = test_json(&env, &["ask.test.yaml", "--offline"], &envs);
    assert_eq!(code, 1, "{err}");
    let c = case(&report, "unmocked");
    let a = &c["attempts"][0];
    assert_eq!(a["status"], "error");
    let e = a["error"].as_str().unwrap();
    assert!(
        e.starts_with(
            "Offline in node 'ask': node ask (llm) is not mocked and this run is offline"
        ),
        "{e}"
    );
    assert!(
        err.contains("the execution failed: Offline in node 'ask'"),
        "{err}"
    );
    assert_eq!(server.requests().len(), 0, "offline: no request");
    let id = a["execution_id"].as_str().unwrap();
    assert_eq!(env.node(id, "ask").attempt, 1, "not retried");
    // Offline needs no key either; without --offline (and without a key) the case cannot run.
    let (code, report, _) = test_json(&env, &["ask.test.yaml"], &[]);
    assert_eq!(code, 1);
    let setup = &case(&report, "unmocked")["attempts"][0]["failures"][0];
    assert_eq!(setup["kind"], "setup");
    assert!(
        setup["message"].as_str().unwrap().contains("GROQ_API_KEY"),
        "{setup}"
    );
}

#[test]
fn snapshots_are_written_compared_and_updated_with_ignores() {
    let env = Env::new();
    let wf = |greeting: &str| {
        json!({"id": "snap", "nodes": [
            {"id": "hi", "type": "set", "fields": {"text": format!("{greeting}, {{{{ trigger.name }}}}"), "run": "{{ execution.id }}"}}
        ]})
    };
    env.write_workflow("snap.json", &wf("Hello"));
    env.write_file(
        "snap.test.yaml",
        "workflow: ./snap.json\ncases:\n  - name: greets\n    trigger: { name: Ada }\n    snapshot: { ignore: [output.run] }\n",
    );
    let snap_file = env.path("__snapshots__/snap.test.yaml.snap.json");
    let stored = || -> Value {
        serde_json::from_str(&std::fs::read_to_string(&snap_file).unwrap()).unwrap()
    };
    // On CI a missing snapshot fails.
    let (code, report, err) = test_json(&env, &["."], &[("CI", "true")]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("no snapshot is stored for this case") && err.contains("--update-snapshots"),
        "{err}"
    );
    assert!(!snap_file.exists());
    assert_eq!(case(&report, "greets")["verdict"], "failed");
    // Locally it is written, with the ignored path marked.
    let (code, report, _) = test_json(&env, &["."], &[]);
    assert_eq!(code, 0);
    assert_eq!(case(&report, "greets")["snapshot"], "written");
    let s = stored();
    assert_eq!(
        s["greets"],
        json!({"status": "success", "output": {"text": "Hello, Ada", "run": "[ignored]"}, "error": null, "nodes": {"hi": "success"}})
    );
    // Compared (the execution id differs every run: ignored).
    let (code, report, _) = test_json(&env, &["."], &[("CI", "true")]);
    assert_eq!(code, 0);
    assert_eq!(case(&report, "greets")["snapshot"], "matched");
    // A change fails with a diff, and leaves the snapshot alone.
    env.write_workflow("snap.json", &wf("Hi"));
    let (code, _, err) = test_json(&env, &["."], &[]);
    assert_eq!(code, 1);
    assert!(
        err.contains("snapshot: the snapshot differs")
            && err.contains("accept it with `flowrun test --update-snapshots`"),
        "{err}"
    );
    assert!(
        err.contains("-    \"text\": \"Hello, Ada\"") && err.contains("+    \"text\": \"Hi, Ada\""),
        "{err}"
    );
    assert_eq!(stored()["greets"]["output"]["text"], "Hello, Ada");
    // --update-snapshots writes it (and drops snapshots of cases that are gone).
    let mut s = stored();
    s["a case that is gone"] = json!(1);
    std::fs::write(&snap_file, s.to_string()).unwrap();
    let (code, report, err) = test_json(&env, &[".", "--update-snapshots"], &[]);
    assert_eq!(code, 0);
    assert_eq!(case(&report, "greets")["snapshot"], "updated");
    // Said as what it is: a snapshot replaced, not a new one.
    assert!(err.contains("1 snapshot(s) updated"), "{err}");
    assert_eq!(stored()["greets"]["output"]["text"], "Hi, Ada");
    assert_eq!(stored().as_object().unwrap().len(), 1);
    let (code, _, _) = test_json(&env, &["."], &[("CI", "true")]);
    assert_eq!(code, 0);
    // A case that no longer keeps a snapshot loses it on update, also when nothing else is
    // written; with none left, the file goes.
    env.write_file(
        "snap.test.yaml",
        "workflow: ./snap.json\ncases:\n  - name: greets\n    trigger: { name: Ada }\n",
    );
    let (code, _, _) = test_json(&env, &[".", "--update-snapshots"], &[]);
    assert_eq!(code, 0);
    assert!(!snap_file.exists(), "{}", stored());
}

/// A variable name with '=' (which a cold child would see as another variable, and a warm one
/// could not be given) is refused before anything starts, warm and cold alike, with what is
/// wrong; a value with '=' is fine.
#[test]
fn an_environment_variable_that_cannot_be_passed_is_refused_warm_and_cold_alike() {
    let env = Env::new();
    env.write_workflow(
        "e.json",
        &json!({"id": "e", "nodes": [
            {"id": "trigger", "type": "trigger"},
            {"id": "c", "type": "code", "code": "import os\nreturn {'a': os.environ.get('A')}"},
        ]}),
    );
    // Longer than an exec takes (128 KiB for NAME=value): refused too, not passed warm only.
    let long = "x".repeat(200_000);
    env.write_file(
        "e.test.yaml",
        &format!("workflow: ./e.json\ncases:\n  - name: bad name\n    env: {{ \"A=B\": x }}\n    expect: {{ status: success }}\n  - name: good\n    env: {{ A: \"B=x\" }}\n    expect:\n      output.a: \"B=x\"\n  - name: too long\n    env: {{ A: {long} }}\n    expect: {{ status: success }}\n"),
    );
    let dir = env.path(".");
    let dir = dir.to_str().unwrap();
    for mode in [&[][..], &["--cold"][..]] {
        let mut args = vec![dir];
        args.extend_from_slice(mode);
        let (code, report, err) = test_json(&env, &args, &[]);
        assert_eq!(code, 1, "{mode:?}: {report:#}\n{err}");
        assert_eq!(
            case(&report, "good")["verdict"],
            "passed",
            "{mode:?}: {report:#}"
        );
        for name in ["bad name", "too long"] {
            let bad = case(&report, name);
            assert_ne!(bad["verdict"], "passed", "{mode:?}: {name}");
            assert!(
                bad.to_string()
                    .contains("cannot be passed as an environment variable"),
                "{mode:?}: {name}: {}",
                bad.to_string().chars().take(2000).collect::<String>()
            );
        }
    }
}

/// `flowrun test` ends its warm templates before it ends whatever is left: the private
/// directory each keeps in `$TMPDIR` (pages learned by its executions) goes with it.
#[test]
fn a_warm_test_run_leaves_nothing_in_tmpdir() {
    let env = Env::new();
    std::fs::copy(example("hello.json"), env.path("hello.json")).unwrap();
    env.write_file(
        "hello.test.yaml",
        "workflow: ./hello.json\ncases:\n  - name: one\n    trigger: { name: a }\n  - name: two\n    trigger: { name: b }\n",
    );
    let dir = env.path(".");
    let (code, report, err) = test_json(&env, &[dir.to_str().unwrap()], &[]);
    assert_eq!(code, 0, "{report:#}\n{err}");
    let warm: i64 = env
        .db()
        .query_row(
            "SELECT count(*) FROM executions WHERE start = 'warm'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(warm, 2, "both cases started warm");
    let left: Vec<String> = std::fs::read_dir(env.tmp_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("flowrun-warm-"))
        .collect();
    assert!(left.is_empty(), "left in TMPDIR: {left:?}");
}

/// `--update-snapshots` drops only what no case keeps: never the snapshot of a case that was
/// not run (`--filter`, a partition, `skip`), and says what it dropped.
#[test]
fn update_snapshots_drops_only_what_no_case_keeps_and_says_so() {
    let env = Env::new();
    code_workflow(&env);
    let cases = |third: &str| {
        format!(
            "workflow: ./calc.json\ncases:\n  - name: one\n    trigger: {{ x: 1 }}\n    snapshot: true\n  - name: two\n    trigger: {{ x: 2 }}\n    snapshot: true\n  - name: parked\n    skip: later\n    trigger: {{ x: 3 }}\n    snapshot: true\n{third}"
        )
    };
    env.write_file(
        "calc.test.yaml",
        &cases("  - name: three\n    trigger: { x: 4 }\n    snapshot: true\n"),
    );
    let snap_file = env.path("__snapshots__/calc.test.yaml.snap.json");
    let stored = || -> Vec<String> {
        let v: Value = serde_json::from_str(&std::fs::read_to_string(&snap_file).unwrap()).unwrap();
        v.as_object().unwrap().keys().cloned().collect()
    };
    let (code, _, err) = test_json(&env, &["."], &[]);
    assert_eq!(code, 0, "{err}");
    // The skipped case's snapshot, as one written before it was parked.
    let mut v: Value = serde_json::from_str(&std::fs::read_to_string(&snap_file).unwrap()).unwrap();
    v["parked"] = json!({"status": "success"});
    std::fs::write(&snap_file, v.to_string()).unwrap();
    // Only some cases run: the others' snapshots stay.
    for only in [
        vec!["--filter", "one"],
        vec!["--partition", "count:1/2"],
        vec!["--partition", "count:2/2"],
    ] {
        let mut args = vec![".", "--update-snapshots"];
        args.extend(only.iter());
        let (code, _, err) = test_json(&env, &args, &[]);
        assert_eq!(code, 0, "{only:?}: {err}");
        assert_eq!(stored(), ["one", "two", "parked", "three"], "{only:?}");
    }
    // `three` no longer keeps one: dropped, and said so.
    env.write_file(
        "calc.test.yaml",
        &cases("  - name: three\n    trigger: { x: 4 }\n"),
    );
    let (code, report, err) = test_json(&env, &[".", "--update-snapshots", "--filter", "one"], &[]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(stored(), ["one", "two", "parked"]);
    assert!(
        err.contains("the snapshots of cases that keep none now: \"three\""),
        "{err}"
    );
    assert_eq!(report["snapshot_errors"], json!([]));
}

/// "the execution failed: …" under a failed case says why the case failed; it is not said when
/// the case expected that failure (its `status` assertion held) and failed for something else
/// (a missing snapshot on CI read as if the error were the cause).
#[test]
fn an_expected_error_is_not_reported_as_the_cause_of_a_failure() {
    let env = Env::new();
    env.write_workflow(
        "boom.json",
        &json!({"id": "boom", "nodes": [{"id": "div", "type": "code", "code": "return 1/0"}]}),
    );
    env.write_file(
        "boom.test.yaml",
        "workflow: ./boom.json\ncases:\n  - name: expected\n    expect: { status: error, error.message: { contains: nope } }\n  - name: unexpected\n    expect: { status: success }\n  - name: bracketed\n    expect: { '[\"status\"]': success }\n",
    );
    let (code, report, err) = test_json(&env, &["boom.test.yaml"], &[]);
    assert_eq!(code, 1, "{err}");
    let said = |name: &str| {
        let at = err
            .find(&format!("› {name} ("))
            .unwrap_or_else(|| panic!("{name}: {err}"));
        let rest = &err[at..];
        let end = rest.find('✗').unwrap_or(rest.len());
        rest[..end].contains("the execution failed: ZeroDivisionError")
    };
    assert!(!said("expected"), "{err}");
    assert!(said("unexpected"), "{err}");
    // The status assertion however it is written: `["status"]` failing is not "as expected".
    assert!(said("bracketed"), "{err}");
    // The JSON report keeps the error either way.
    for name in ["expected", "unexpected"] {
        let e = case(&report, name)["attempts"][0]["error"]
            .as_str()
            .unwrap_or("");
        assert!(
            e.starts_with("ZeroDivisionError in node 'div'"),
            "{name}: {e}"
        );
    }
}
