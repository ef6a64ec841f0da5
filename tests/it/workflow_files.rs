//! Workflow files as people write them, and files that are not workflows: YAML merge keys and
//! `x-` keys, byte-order marks, hostile nesting, files too big or not regular; `validate` of
//! several files, and its `--json` document.

use crate::support::llm_server::{Reply, Server};
use crate::support::*;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

/// A YAML workflow whose `set` node and `http_request` body are built with merge keys from
/// anchors held in top-level `x-` keys, run for real against a server on 127.0.0.1.
#[test]
fn yaml_merge_keys_reach_the_output_and_the_server_without_a_literal_merge_key() {
    let env = Env::new();
    let server = Server::start(|req| Reply::json(200, req.body_json()));
    let file = env.write_file(
        "merge.yaml",
        &format!(
            "id: merge\n\
             x-common: &common\n  retry: {{max_attempts: 2}}\n  on_error: stop\n\
             x-body: &body\n  source: flowrun\n  tags: [a, b]\n  size: 1\n\
             x-more: &more\n  <<: *body\n  extra: true\n\
             nodes:\n\
             \x20 - id: fields\n    type: set\n    <<: *common\n    fields:\n      <<: *more\n      size: 2\n      name: '{{{{ trigger.name }}}}'\n\
             \x20 - id: post\n    type: http_request\n    <<: *common\n    method: POST\n    url: {}\n    json:\n      <<: [*body, {{kind: list}}]\n      size: 3\n",
            server.url("/echo")
        ),
    );
    let out = env.run(&file, r#"{"name": "Ada"}"#, &[]);
    assert_code(&out, 0, "run of a YAML file with merge keys");
    let id = env.only_execution_id();
    let fields = env.node(&id, "fields").output.expect("an output");
    assert_eq!(
        fields,
        json!({"source": "flowrun", "tags": ["a", "b"], "size": 2, "extra": true, "name": "Ada"})
    );
    let body = server.only_request().body_json().clone();
    assert_eq!(
        body,
        json!({"source": "flowrun", "tags": ["a", "b"], "size": 3, "kind": "list"})
    );
    for text in [fields.to_string(), body.to_string()] {
        assert!(
            !text.contains("<<"),
            "a literal merge key got through: {text}"
        );
    }
    // Nor in the stored definition (what rerun and resume run again).
    let def: String = env
        .db()
        .query_row("SELECT definition FROM snapshots", [], |r| r.get(0))
        .expect("the definition is stored");
    assert!(!def.contains("<<") && !def.contains("x-body"), "{def}");
    assert!(def.contains("\"extra\":true"), "{def}");
}

#[test]
fn x_keys_are_allowed_at_the_top_only() {
    let env = Env::new();
    env.write_file(
        "x.yaml",
        "id: x\nx-anything: {whatever: [1, 2]}\nx-note: text\nnodes:\n  - {id: a, type: set, fields: {}}\n",
    );
    let out = env.cmd(["validate", "x.yaml"]);
    assert_success(&out, "validate with top-level x- keys");
    // Inside a node an `x-` key is a field like any other: a typo is not silently ignored.
    env.write_file(
        "xnode.yaml",
        "id: x\nnodes:\n  - id: a\n    type: set\n    x-note: text\n    fields: {}\n",
    );
    let out = env.cmd(["validate", "xnode.yaml"]);
    assert_code(&out, 2, "x- key inside a node");
    assert!(
        stderr(&out).contains("xnode.yaml:5: node 'a', field 'x-note': unknown field `x-note`"),
        "{}",
        describe(&out)
    );
}

#[test]
fn merge_errors_are_located() {
    let env = Env::new();
    env.write_file(
        "badmerge.yaml",
        "id: m\nnodes:\n  - id: a\n    type: set\n    fields:\n      <<: 3\n",
    );
    let out = env.cmd(["validate", "badmerge.yaml"]);
    assert_code(&out, 2, "merge of a scalar");
    let err = stderr(&out);
    assert!(
        err.contains("badmerge.yaml:6: node 'a', field 'fields.<<':"),
        "{err}"
    );
    assert!(err.contains("merges mappings"), "{err}");
}

#[test]
fn a_byte_order_mark_is_not_an_error() {
    let env = Env::new();
    let bom = "\u{feff}";
    env.write_file(
        "bom.json",
        &format!("{bom}{{\"id\": \"b\", \"nodes\": [{{\"id\": \"a\", \"type\": \"set\", \"fields\": {{}}}}]}}"),
    );
    env.write_file(
        "bom.yaml",
        &format!("{bom}id: b\nnodes:\n  - {{id: a, type: set, fields: {{}}}}\n"),
    );
    // Without an extension the format is found after the mark.
    env.write_file(
        "bom-workflow",
        &format!("{bom}{{\"id\": \"b\", \"nodes\": [{{\"id\": \"a\", \"type\": \"set\", \"fields\": {{}}}}]}}"),
    );
    let out = env.cmd(["validate", "bom.json", "bom.yaml", "bom-workflow"]);
    assert_success(&out, "validate of files with a BOM");
    assert_eq!(stdout(&out).lines().count(), 3, "{}", describe(&out));
    // Errors on the first line keep editor columns (the mark is not one).
    env.write_file(
        "bomerr.json",
        &format!("{bom}{{\"id\": \"b\" \"nodes\": []}}"),
    );
    let out = env.cmd(["validate", "bomerr.json"]);
    assert!(
        stderr(&out).contains("bomerr.json:1:12:"),
        "{}",
        describe(&out)
    );
}

/// Deep nesting is refused at once. The bound is generous for a busy machine: the real time is
/// about 10 ms for each file here (before, the YAML one took 29 s).
#[test]
fn hostile_nesting_is_refused_quickly_with_a_place() {
    let env = Env::new();
    let depth = 100_000;
    let deep = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
    env.write_file(
        "deep.yaml",
        &format!("id: d\nnodes:\n  - id: a\n    type: set\n    fields: {{a: {deep}}}\n"),
    );
    env.write_file(
        "deep.json",
        &format!("{{\"id\": \"d\", \"nodes\": [{{\"id\": \"a\", \"type\": \"set\", \"fields\": {{\"a\": {deep}}}}}]}}"),
    );
    // Block nesting too (each level one more indentation).
    let mut block = String::from("id: d\nnodes:\n  - id: a\n    type: set\n    fields:\n");
    for i in 0..400 {
        block.push_str(&format!("{}k:\n", " ".repeat(6 + i)));
    }
    env.write_file("block.yaml", &block);
    for (file, line) in [("deep.yaml", 5), ("deep.json", 1), ("block.yaml", 0)] {
        let started = Instant::now();
        let out = env.cmd(["validate", file]);
        let took = started.elapsed();
        assert_code(&out, 2, file);
        let err = stderr(&out);
        assert!(err.contains("nesting is deeper than 128 levels"), "{err}");
        if line > 0 {
            assert!(err.contains(&format!("{file}:{line}:")), "{err}");
        }
        assert!(took < Duration::from_secs(5), "{file} took {took:?}");
    }
}

#[test]
fn files_that_are_not_regular_or_too_big_are_refused_at_once() {
    let env = Env::new();
    let started = Instant::now();
    let out = env.cmd(["validate", "/dev/zero"]);
    assert_code(&out, 2, "validate /dev/zero");
    assert!(
        stderr(&out).contains("/dev/zero: cannot read the workflow file: it is not a regular file"),
        "{}",
        describe(&out)
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    let out = env.cmd(["validate", "."]);
    assert!(
        stderr(&out).contains("it is a directory"),
        "{}",
        describe(&out)
    );
    // A named pipe would block a reader forever.
    let fifo = env.path("pipe.json");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("mkfifo runs");
    assert!(made.success());
    let out = env.cmd(["validate", "pipe.json"]);
    assert_code(&out, 2, "validate of a FIFO");
    assert!(
        stderr(&out).contains("not a regular file"),
        "{}",
        describe(&out)
    );
    // One byte over the limit; `run` refuses it the same way, before anything runs.
    let big = env.path("big.json");
    let f = std::fs::File::create(&big).unwrap();
    f.set_len((16 << 20) + 1).unwrap();
    let out = env.cmd(["validate", "big.json"]);
    assert_code(&out, 2, "validate of a file over 16 MiB");
    assert!(
        stderr(&out).contains(
            "big.json: the workflow file is 16777217 bytes; workflow files are at most 16 MiB"
        ),
        "{}",
        describe(&out)
    );
    let out = env.run(&big, "{}", &[]);
    assert_code(&out, 2, "run of a file over 16 MiB");
    assert!(
        stderr(&out).contains("at most 16 MiB"),
        "{}",
        describe(&out)
    );
    // Text that is not UTF-8.
    std::fs::write(env.path("latin1.yaml"), b"id: w\nname: caf\xe9\n").unwrap();
    let out = env.cmd(["validate", "latin1.yaml"]);
    assert!(
        stderr(&out).contains(
            "latin1.yaml: the workflow file is not UTF-8 text (an invalid byte on line 2)"
        ),
        "{}",
        describe(&out)
    );
}

/// An empty workflow file (nothing, white space, or in YAML only comments) is said to be empty,
/// naming it: it was "a workflow is an object with `id` and `nodes`, not null" (or a JSON parse
/// error at its end).
#[test]
fn an_empty_workflow_file_is_said_to_be_empty() {
    let env = Env::new();
    for (name, text, said) in [
        ("empty.yaml", "", "empty"),
        ("blank.json", "  \n\n", "empty"),
        ("blank.yml", "\t\n  \n", "empty"),
        (
            "comments.yaml",
            "# to do\n---\n  # later\n",
            "empty: nothing but comments",
        ),
    ] {
        let file = env.write_file(name, text);
        let out = env.run(&file, "{}", &[]);
        assert_code(&out, 2, name);
        assert!(
            stderr(&out).contains(&format!(
                "{}: the workflow file is {said} (a workflow is an object with `id` and `nodes`)",
                file.display()
            )),
            "{}",
            describe(&out)
        );
        let out = env.cmd(["validate", name]);
        assert_code(&out, 2, name);
        assert!(
            stderr(&out).contains(&format!("{name}: the workflow file is {said} (")),
            "{}",
            describe(&out)
        );
    }
    // YAML that says null is not empty.
    let out = env.run(&env.write_file("null.yaml", "~\n"), "{}", &[]);
    assert!(stderr(&out).contains("not null"), "{}", describe(&out));
}

/// A test file given to `run` (or `validate` under a name that is not `*.test.yaml`) is said to
/// be one, with the command that runs it: it was a workflow with the unknown fields `workflow`
/// and `cases` and without `id` and `nodes`.
#[test]
fn a_test_file_given_to_run_is_told_to_be_run_with_flowrun_test() {
    let env = Env::new();
    env.write_workflow("w.json", &one_node("a"));
    let suite = "workflow: ./w.json\ncases:\n  - name: one\n    expect: {status: success}\n";
    let file = env.write_file("w.test.yaml", suite);
    let out = env.run(&file, "{}", &[]);
    assert_code(&out, 2, "run of a test file");
    let err = stderr(&out);
    assert!(
        err.contains(&format!(
            "{0}: this is a test file (`workflow` and `cases`), not a workflow: run it with `flowrun test {0}`",
            file.display()
        )) && !err.contains("unknown field"),
        "{}",
        describe(&out)
    );
    // A name a shell would split is quoted in the command.
    env.write_file("my suite.yaml", suite);
    let out = env.cmd(["validate", "my suite.yaml"]);
    assert_code(&out, 2, "validate of a test file not named *.test.yaml");
    assert!(
        stderr(&out).contains("run it with `flowrun test 'my suite.yaml'`"),
        "{}",
        describe(&out)
    );
    // A workflow with a stray `cases` key is still a workflow with an unknown field.
    let mut wf = one_node("a");
    wf["cases"] = json!([]);
    let out = env.run(&env.write_workflow("cases.json", &wf), "{}", &[]);
    assert_code(&out, 2, "a workflow with a `cases` field");
    assert!(
        stderr(&out).contains("unknown field `cases`"),
        "{}",
        describe(&out)
    );
}

/// A workflow `wf` of one `set` node.
fn one_node(id: &str) -> Value {
    json!({"id": "wf", "nodes": [{"id": id, "type": "set", "fields": {}}]})
}

#[test]
fn several_files_each_get_their_result() {
    let env = Env::new();
    env.write_workflow("good.json", &one_node("a"));
    env.write_workflow("bad.json", &one_node("A"));
    let good = example("hello.json");
    let out = env.cmd([
        std::ffi::OsStr::new("validate"),
        good.as_os_str(),
        std::ffi::OsStr::new("bad.json"),
        std::ffi::OsStr::new("good.json"),
        std::ffi::OsStr::new("nope.yaml"),
    ]);
    assert_code(&out, 2, "validate of several files, some invalid");
    let ok = stdout(&out);
    assert_eq!(ok.lines().count(), 2, "{}", describe(&out));
    assert!(
        ok.lines().nth(1).unwrap().starts_with("ok: good.json"),
        "{ok}"
    );
    let err = stderr(&out);
    assert!(err.contains("error: bad.json:"), "{err}");
    assert!(err.contains("invalid node id 'A'"), "{err}");
    assert!(err.contains("error: nope.yaml: cannot read"), "{err}");
    let out = env.cmd(["validate", "good.json", "good.json"]);
    assert_success(&out, "validate of valid files");
    // One line a file, whatever its name holds (a newline in a name made it two).
    let mut named = one_node("a");
    named["name"] = json!("two\nlines");
    env.write_workflow("named.json", &named);
    let out = env.cmd(["validate", "named.json"]);
    assert_success(&out, "validate of a name with a newline");
    assert_eq!(stdout(&out).lines().count(), 1, "{}", describe(&out));
}

#[test]
fn json_output_for_editors_and_ci() {
    let env = Env::new();
    env.write_workflow("good.json", &one_node("a"));
    env.write_file(
        "bad.yaml",
        "id: wf\nnodes:\n  - id: a\n    type: set\n    feilds: {}\n",
    );
    let out = env.cmd(["validate", "--json", "good.json", "bad.yaml"]);
    assert_code(&out, 2, "validate --json with an invalid file");
    let doc: Value = serde_json::from_str(&stdout(&out)).expect("one JSON document");
    assert_eq!(doc["valid"], false);
    assert_eq!(
        doc["files"][0],
        json!({"file": "good.json", "valid": true, "workflow_id": "wf", "name": null,
               "order": ["a"], "diagnostics": [], "compile_skipped": null})
    );
    let bad = &doc["files"][1];
    assert_eq!(bad["file"], "bad.yaml");
    assert_eq!(bad["valid"], false);
    assert_eq!(
        bad["diagnostics"],
        json!([{"file": "bad.yaml", "line": 5, "column": null, "node": "a", "field": "feilds",
                "message": "unknown field `feilds`, did you mean `fields`? (a set node takes `fields`; every node takes `id`, `type`, `name`, `notes`, `after`, `timeout_ms`, `retry`, `on_error`, `pinned`, `requirements`, `for_each`, `max_concurrent`, `fail_fast`, `repeat`)",
                "node_index": 0}])
    );
    let out = env.cmd(["validate", "--json", "good.json"]);
    assert_success(&out, "validate --json of a valid file");
    let doc: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(doc["valid"], true);
}

/// A `default` its own schema refuses makes every trigger without that field refused; `validate`
/// (and so the server's list and `flowrun test`, which check a workflow the same way) says so
/// at `inputs`, while a run that gives the field still works.
#[test]
fn a_default_its_own_schema_refuses_makes_the_workflow_invalid() {
    let env = Env::new();
    let file = env.write_workflow(
        "bd.json",
        &json!({"id": "bd", "inputs": {"type": "object", "properties": {
                    "o": {"type": "object", "default": {},
                          "properties": {"n": {"type": "integer", "default": "x"}}},
                    "k": {"type": "string", "enum": ["a", "b"], "default": "a"}}},
                "nodes": [{"id": "a", "type": "set", "fields": {}}]}),
    );
    let out = env.cmd(["validate", "bd.json"]);
    assert_code(&out, 2, "an invalid default");
    assert!(
        stderr(&out).contains(
            "field 'inputs': the default of 'o.n' does not satisfy its own schema: \"x\" is not of type \"integer\""
        ) && !stderr(&out).contains("'k'"),
        "{}",
        describe(&out)
    );
    env.write_file(
        "bd.test.yaml",
        "workflow: ./bd.json\ncases:\n  - name: given\n    trigger: { o: { n: 1 } }\n",
    );
    let out = env.cmd(["test", "bd.test.yaml"]);
    assert_code(&out, 2, "the test file names an invalid workflow");
    assert!(
        stderr(&out).contains("the default of 'o.n'"),
        "{}",
        describe(&out)
    );
    assert_code(
        &env.run(&file, r#"{"o": {"n": 1}}"#, &[]),
        0,
        "a run that gives it",
    );
    let out = env.run(&file, "{}", &[]);
    assert_code(&out, 2, "a run that leaves it to the default");
    assert!(stderr(&out).contains("field 'o.n'"), "{}", describe(&out));
}
