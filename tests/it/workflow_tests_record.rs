//! `flowrun test --record-from`: a case written from a stored execution, replayed offline with
//! the real binary, real Python and a real (counting) HTTP server on 127.0.0.1.

use crate::support::llm_server::{Reply, Server};
use crate::support::*;
use crate::workflow_tests::{case, counting_server, groq, llm_workflow, test_json};
use serde_json::{Value, json};

#[test]
fn record_from_then_replay_offline_gives_the_same_output() {
    let env = Env::new();
    llm_workflow(&env);
    let server = counting_server();
    let envs = groq(&server);
    let envs: Vec<(&str, &str)> = envs.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let trigger = json!({"q": "What is a DAG?", "target": server.url("/data")}).to_string();
    let out = env.run_with(&env.path("ask.json"), &trigger, &envs, &[]);
    assert_code(&out, 0, "the real run");
    let id = env.only_execution_id();
    let original = env.show_json(&id);
    assert_eq!(server.requests().len(), 2);
    // Record it (by a prefix of its id, as `show` takes), into a new test file.
    let out = env.cmd([
        "test",
        "--record-from",
        &id[..8],
        "recorded.test.yaml",
        "--name",
        "a DAG",
    ]);
    assert_code(&out, 0, "record-from");
    assert!(
        stdout(&out).contains("mocked: ask, fetch"),
        "{}",
        describe(&out)
    );
    let text = std::fs::read_to_string(env.path("recorded.test.yaml")).unwrap();
    assert!(text.starts_with("workflow: ./ask.json\ncases:\n"), "{text}");
    // Replay offline: no request, the same output.
    let (code, report, err) = test_json(
        &env,
        &["recorded.test.yaml", "--offline"],
        &[("CI", "true")],
    );
    assert_eq!(code, 0, "{err}\n{text}");
    assert_eq!(case(&report, "a DAG")["snapshot"], "matched");
    assert_eq!(server.requests().len(), 2, "the replay made no request");
    let replay = case(&report, "a DAG")["attempts"][0]["execution_id"]
        .as_str()
        .unwrap()
        .to_string();
    let replayed = env.show_json(&replay);
    assert_eq!(replayed["output"], original["output"]);
    assert_eq!(
        replayed["output"],
        json!({"text": "answer to What is a DAG?", "data": {"rows": 3}})
    );
    assert_eq!(replayed["input_tokens"], original["input_tokens"]);
    // A second recording is appended to the same file and replays too.
    let out = env.cmd(["test", "--record-from", &id, "recorded.test.yaml"]);
    assert_code(&out, 0, "record-from again");
    assert!(
        stdout(&out).starts_with("added to recorded.test.yaml"),
        "{}",
        describe(&out)
    );
    let (code, report, err) = test_json(&env, &["recorded.test.yaml", "--offline"], &[]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(report["summary"], "2 passed, 0 failed");
    // The same name again is refused.
    let out = env.cmd([
        "test",
        "--record-from",
        &id,
        "recorded.test.yaml",
        "--name",
        "a DAG",
    ]);
    assert_code(&out, 2, "a duplicate name");
    assert!(
        stderr(&out)
            .contains("has a case named \"a DAG\" already (name the new one with `--name`)"),
        "{}",
        describe(&out)
    );
}

#[test]
fn record_from_keeps_the_failed_attempts_of_a_retried_node() {
    let env = Env::new();
    let server = Server::scripted([
        Reply::text(503, "busy"),
        Reply::json(200, &json!({"ok": true})),
    ]);
    env.write_workflow(
        "fetch.json",
        &json!({"id": "fetch",
                "inputs": {"type": "object", "properties": {
                    "tag": {"type": "string", "default": "a"},
                    "page": {"type": "integer", "default": 1}}},
                "nodes": [
            {"id": "get", "type": "http_request", "url": server.url("/x"),
             "query": {"tag": "{{ trigger.tag }}", "page": "{{ trigger.page }}"},
             "retry": {"max_attempts": 2, "backoff_ms": 1}}
        ]}),
    );
    let out = env.run(&env.path("fetch.json"), r#"{"tag": "b"}"#, &[]);
    assert_code(&out, 0, "the real run: 503, then 200");
    let id = env.only_execution_id();
    let out = env.cmd(["test", "--record-from", &id, "--name", "retried"]);
    assert_code(&out, 0, "record-from");
    // The default file: beside the workflow, named after it.
    let text = std::fs::read_to_string(env.path("fetch.test.yaml")).unwrap();
    let file: Value = serde_yaml_ng::from_str(&text).expect("the test file is YAML");
    // The trigger as the execution ran with it, defaults filled in: the store cannot tell a
    // default from a value given, and a replay must not change when a default does.
    assert_eq!(
        file["cases"][0]["trigger"],
        json!({"tag": "b", "page": 1}),
        "{text}"
    );
    let mock = &file["cases"][0]["mock"]["get"];
    assert_eq!(mock[0]["error"]["type"], "HttpError", "{text}");
    assert_eq!(mock[1]["body"], json!({"ok": true}), "{text}");
    let (code, report, err) = test_json(&env, &["fetch.test.yaml", "--offline"], &[("CI", "true")]);
    assert_eq!(code, 0, "{err}\n{text}");
    // Once the workflow's schema refuses that trigger, recording it again is refused: the case
    // would make the whole test file invalid.
    let mut changed: Value =
        serde_json::from_str(&std::fs::read_to_string(env.path("fetch.json")).unwrap()).unwrap();
    changed["inputs"]["required"] = json!(["user"]);
    env.write_workflow("fetch.json", &changed);
    let out = env.cmd(["test", "--record-from", &id, "--name", "again"]);
    assert_code(&out, 2, "a trigger the workflow now refuses");
    assert!(
        stderr(&out).contains("(as it is now) refuses the trigger of execution")
            && stderr(&out).contains("\"user\" is a required property"),
        "{}",
        describe(&out)
    );
    assert_eq!(
        std::fs::read_to_string(env.path("fetch.test.yaml")).unwrap(),
        text,
        "the test file is left as it was"
    );
    let replay = case(&report, "retried")["attempts"][0]["execution_id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(env.node(&replay, "get").attempt, 2, "the retry is replayed");
    assert_eq!(
        env.show_json(&replay)["trigger"],
        json!({"tag": "b", "page": 1}),
        "the replay's trigger is the recorded one's"
    );
    assert_eq!(server.requests().len(), 2, "the replay made no request");
}

/// A for_each node's mock is each item's outcome: recorded once when every item went the same
/// way (retries included), refused when they did not (helper-53: the recorder wrote all items'
/// failed attempts then the last item's output, a case its own file then refused).
#[test]
fn record_from_a_for_each_node_records_its_items_outcome_or_says_they_differ() {
    let env = Env::new();
    let workflow = |server: &Server| {
        json!({"id": "each", "nodes": [
            {"id": "get", "type": "http_request", "url": server.url("/x"),
             "for_each": "{{ trigger.ids }}",
             "retry": {"max_attempts": 2, "backoff_ms": 1}}
        ]})
    };
    let same = Server::scripted([
        Reply::text(503, "busy"),
        Reply::json(200, &json!({"ok": true})),
        Reply::text(503, "busy"),
        Reply::json(200, &json!({"ok": true})),
    ]);
    env.write_workflow("each.json", &workflow(&same));
    let out = env.run(&env.path("each.json"), r#"{"ids": [1, 2]}"#, &[]);
    assert_code(&out, 0, "each item: 503, then 200");
    let id = env.only_execution_id();
    let out = env.cmd(["test", "--record-from", &id, "--name", "same"]);
    assert_code(&out, 0, "record-from");
    let text = std::fs::read_to_string(env.path("each.test.yaml")).unwrap();
    let file: Value = serde_yaml_ng::from_str(&text).expect("the test file is YAML");
    let mock = file["cases"][0]["mock"]["get"]
        .as_array()
        .expect("attempts")
        .clone();
    assert_eq!(
        mock.len(),
        2,
        "one item's attempts, not all of them: {text}"
    );
    assert_eq!(mock[0]["error"]["type"], "HttpError", "{text}");
    assert_eq!(mock[1]["body"], json!({"ok": true}), "{text}");
    let (code, _report, err) = test_json(&env, &["each.test.yaml", "--offline"], &[]);
    assert_eq!(code, 0, "the case replays: {err}\n{text}");
    assert_eq!(same.requests().len(), 4, "the replay made no request");

    let differ = Server::scripted([
        Reply::json(200, &json!({"n": 1})),
        Reply::json(200, &json!({"n": 2})),
    ]);
    env.write_workflow("each.json", &workflow(&differ));
    let out = env.run(&env.path("each.json"), r#"{"ids": [1, 2]}"#, &[]);
    assert_code(&out, 0, "two items, two answers");
    let listed = env.history_json(&[]);
    let id = listed[0]["id"].as_str().unwrap().to_string();
    let out = env.cmd(["test", "--record-from", &id, "--name", "differ"]);
    assert_code(&out, 2, "items that differ");
    assert!(
        stderr(&out).contains(&format!(
            "node 'get' of execution {id} ran for_each items that ended differently, and a mock gives each the same outcome"
        )),
        "{}",
        describe(&out)
    );
    assert_eq!(
        std::fs::read_to_string(env.path("each.test.yaml")).unwrap(),
        text,
        "the test file is left as it was"
    );

    // Every item that ran failed the same way; those after the first were skipped (fail_fast)
    // and never ran: recorded as the failing item's attempts (helper-54).
    let failing = Server::scripted([Reply::text(500, "down"), Reply::text(500, "down")]);
    env.write_workflow("each.json", &workflow(&failing));
    let out = env.run(&env.path("each.json"), r#"{"ids": [1, 2, 3]}"#, &[]);
    assert_code(
        &out,
        1,
        "the first item fails twice, the others are skipped",
    );
    let listed = env.history_json(&[]);
    let id = listed[0]["id"].as_str().unwrap().to_string();
    let out = env.cmd([
        "test",
        "--record-from",
        &id,
        "failing.test.yaml",
        "--name",
        "down",
    ]);
    assert_code(&out, 0, "record-from a fail_fast loop");
    let text = std::fs::read_to_string(env.path("failing.test.yaml")).unwrap();
    let file: Value = serde_yaml_ng::from_str(&text).expect("the test file is YAML");
    let mock = file["cases"][0]["mock"]["get"]
        .as_array()
        .expect("attempts")
        .clone();
    assert_eq!(mock.len(), 2, "{text}");
    let (code, _report, err) = test_json(&env, &["failing.test.yaml", "--offline"], &[]);
    assert_eq!(code, 0, "the case replays: {err}\n{text}");
    assert_eq!(failing.requests().len(), 2, "the replay made no request");
}

/// A sub-workflow's requests are its child's nodes', which a case of the parent cannot mock:
/// the `workflow` node is recorded as a mock, so the replay runs offline (helper-54: the
/// recorder said "replay it offline", and the replay failed on the child's request).
#[test]
fn record_from_mocks_the_node_that_runs_a_sub_workflow() {
    let env = Env::new();
    let server = Server::scripted([Reply::json(200, &json!({"ok": true}))]);
    env.write_workflow(
        "child.json",
        &json!({"id": "child", "nodes": [
            {"id": "get", "type": "http_request", "url": server.url("/x")}]}),
    );
    env.write_workflow(
        "parent.json",
        &json!({"id": "parent", "nodes": [
            {"id": "sub", "type": "workflow", "workflow": "./child.json"}]}),
    );
    let out = env.run(&env.path("parent.json"), "{}", &[]);
    assert_code(&out, 0, "the real run");
    let listed = env.history_json(&[]);
    let id = listed[0]["id"].as_str().unwrap().to_string();
    let out = env.cmd(["test", "--record-from", &id, "--name", "sub"]);
    assert_code(&out, 0, "record-from");
    let text = std::fs::read_to_string(env.path("parent.test.yaml")).unwrap();
    let file: Value = serde_yaml_ng::from_str(&text).expect("the test file is YAML");
    assert!(file["cases"][0]["mock"]["sub"].is_object(), "{text}");
    let (code, _report, err) = test_json(&env, &["parent.test.yaml", "--offline"], &[]);
    assert_eq!(code, 0, "the case replays offline: {err}\n{text}");
    assert_eq!(server.requests().len(), 1, "the replay made no request");
}

/// A test's world with one execution of a one-node workflow `w.json` in it, and its id.
fn one_run() -> (Env, String) {
    let env = Env::new();
    env.write_workflow(
        "w.json",
        &json!({"id": "w", "nodes": [{"id": "a", "type": "template", "template": "hi"}]}),
    );
    let out = env.run_with(&env.path("w.json"), "{}", &[], &[]);
    assert_code(&out, 0, "the run");
    let id = env.only_execution_id();
    (env, id)
}

/// The test file a case is added to is read as every file flowrun reads: a pipe in its place is
/// refused, not read for ever.
#[test]
fn record_from_into_a_pipe_is_refused_not_waited_on() {
    let (env, id) = one_run();
    nix::unistd::mkfifo(
        &env.path("pipe.test.yaml"),
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )
    .unwrap();
    let out = env.cmd(["test", "--record-from", &id, "pipe.test.yaml"]);
    assert_code(&out, 2, "record-from into a pipe");
    assert!(
        stderr(&out).contains("pipe.test.yaml"),
        "{}",
        describe(&out)
    );
}

/// A link to a test file counts as the test file: a recorded case is added to its target, and
/// the link stays a link.
#[test]
fn record_from_into_a_linked_test_file_writes_its_target() {
    let (env, id) = one_run();
    env.write_file(
        "real.test.yaml",
        "workflow: ./w.json\ncases:\n  - name: first\n",
    );
    std::os::unix::fs::symlink("real.test.yaml", env.path("linked.test.yaml")).unwrap();
    let out = env.cmd([
        "test",
        "--record-from",
        &id,
        "linked.test.yaml",
        "--name",
        "second",
    ]);
    assert_code(&out, 0, "record-from into a link");
    let link = std::fs::symlink_metadata(env.path("linked.test.yaml")).unwrap();
    assert!(link.file_type().is_symlink(), "the link was replaced");
    let text = std::fs::read_to_string(env.path("real.test.yaml")).unwrap();
    assert!(
        text.contains("name: first") && text.contains("second"),
        "{text}"
    );
}
