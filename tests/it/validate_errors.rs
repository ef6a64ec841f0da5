//! `flowrun validate`: every kind of invalid workflow exits 2 with a message that names the file
//! and, where it applies, the line (and column), the node and the field.

use crate::support::*;
use serde_json::{Value, json};

/// Runs `flowrun validate NAME` (relative to the env's dir) and returns stderr, after checking
/// the exit code is 2 and every message line names the file.
fn invalid(env: &Env, name: &str) -> String {
    let out = env.cmd(["validate", name]);
    assert_code(&out, 2, &format!("validate {name}"));
    let err = stderr(&out);
    assert!(
        err.starts_with(&format!("error: {name}")),
        "the message does not start with the file name:\n{err}"
    );
    assert!(stdout(&out).is_empty(), "{}", describe(&out));
    err
}

/// Writes `workflow` as pretty JSON and validates it, expecting failure.
fn invalid_json(env: &Env, name: &str, workflow: &Value) -> (String, String) {
    let path = env.write_workflow(name, workflow);
    let text = std::fs::read_to_string(path).unwrap();
    (invalid(env, name), text)
}

/// The `LINE` of a `file:LINE[:COL]: ` prefix.
fn line_in(message: &str, file: &str) -> Option<usize> {
    let rest = message.split(&format!("{file}:")).nth(1)?;
    let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
    digits.parse().ok()
}

/// Asserts the message names node and field, and points at a line that holds `key`.
fn assert_located(message: &str, text: &str, file: &str, node: &str, field: &str, key: &str) {
    assert!(
        message.contains(&format!("node '{node}', field '{field}'")),
        "node '{node}' and field '{field}' are not named:\n{message}"
    );
    let line = line_in(message, file).unwrap_or_else(|| panic!("no line number in:\n{message}"));
    let at = text
        .lines()
        .nth(line - 1)
        .unwrap_or_else(|| panic!("line {line} is past the end of the file"));
    assert!(
        at.contains(key),
        "line {line} ({at:?}) does not hold {key:?}:\n{message}"
    );
}

fn set(id: &str, fields: Value) -> Value {
    json!({"id": id, "type": "set", "fields": fields})
}

fn workflow(nodes: Value) -> Value {
    json!({"id": "wf", "nodes": nodes})
}

#[test]
fn malformed_json_names_line_and_column() {
    let env = Env::new();
    env.write_file(
        "broken.json",
        "{\"id\": \"x\",\n  \"nodes\": [ {\"id\": \"a\", \"type\": \"set\" \"fields\": {}} ]}\n",
    );
    let err = invalid(&env, "broken.json");
    assert!(err.contains("broken.json:2:40:"), "{err}");
    assert!(err.contains("invalid JSON"), "{err}");
}

#[test]
fn truncated_json_is_invalid() {
    let env = Env::new();
    env.write_file("cut.json", "{\"id\": \"x\", \"nodes\": [\n");
    let err = invalid(&env, "cut.json");
    assert!(err.contains("invalid JSON"), "{err}");
    assert!(line_in(&err, "cut.json").is_some(), "{err}");
}

#[test]
fn malformed_yaml_names_the_line() {
    let env = Env::new();
    env.write_file(
        "broken.yaml",
        "id: x\nnodes:\n  - id: a\n    type: set\n    fields: {a: [1, 2}\n",
    );
    let err = invalid(&env, "broken.yaml");
    assert!(err.contains("broken.yaml:5:"), "{err}");
}

#[test]
fn unknown_top_level_field() {
    let env = Env::new();
    let (err, text) = invalid_json(
        &env,
        "top.json",
        &json!({"id": "wf", "nodez": [], "nodes": [set("a", json!({}))]}),
    );
    assert!(err.contains("unknown field `nodez`"), "{err}");
    let line = line_in(&err, "top.json").expect("a line");
    assert!(
        text.lines().nth(line - 1).unwrap().contains("\"nodez\""),
        "{err}"
    );
}

#[test]
fn unknown_node_field_typo() {
    let env = Env::new();
    let (err, text) = invalid_json(
        &env,
        "typo.json",
        &workflow(json!([
            set("a", json!({})),
            {"id": "b", "type": "set", "feilds": {"x": 1}}
        ])),
    );
    assert_located(&err, &text, "typo.json", "b", "feilds", "\"feilds\"");
    assert!(err.contains("unknown field `feilds`"), "{err}");
    assert!(
        err.contains("`fields`"),
        "the message suggests the right name:\n{err}"
    );
}

#[test]
fn unknown_node_field_in_yaml_has_a_line() {
    let env = Env::new();
    env.write_file(
        "typo.yaml",
        "id: wf\nnodes:\n  - id: a\n    type: set\n    fields: {}\n  - id: b\n    type: set\n    feilds: {}\n",
    );
    let err = invalid(&env, "typo.yaml");
    assert!(
        err.contains("typo.yaml:8: node 'b', field 'feilds'"),
        "{err}"
    );
}

#[test]
fn unknown_node_type() {
    let env = Env::new();
    let (err, text) = invalid_json(
        &env,
        "type.json",
        &workflow(json!([{"id": "a", "type": "sett", "fields": {}}])),
    );
    assert_located(&err, &text, "type.json", "a", "type", "\"sett\"");
    assert!(err.contains("unknown node type 'sett'"), "{err}");
    assert!(err.contains("set"), "{err}");
}

#[test]
fn missing_node_type() {
    let env = Env::new();
    let (err, text) = invalid_json(
        &env,
        "notype.json",
        &workflow(json!([{"id": "a", "fields": {}}])),
    );
    // No `type` line exists: the node's first line is the place to fix.
    assert_located(&err, &text, "notype.json", "a", "type", "{");
    let line = line_in(&err, "notype.json").unwrap();
    assert!(text.lines().nth(line).unwrap().contains("\"a\""), "{err}");
    assert!(err.contains("missing `type`"), "{err}");
}

#[test]
fn duplicate_node_id() {
    let env = Env::new();
    let (err, text) = invalid_json(
        &env,
        "dup.json",
        &workflow(json!([
            set("a", json!({"x": 1})),
            set("a", json!({"y": 2}))
        ])),
    );
    assert_located(&err, &text, "dup.json", "a", "id", "\"id\": \"a\"");
    assert!(err.contains("duplicate node id 'a'"), "{err}");
}

#[test]
fn invalid_node_id() {
    let env = Env::new();
    let (err, text) = invalid_json(
        &env,
        "badid.json",
        &workflow(json!([set("Bad Id", json!({}))])),
    );
    assert_located(&err, &text, "badid.json", "Bad Id", "id", "\"Bad Id\"");
    assert!(err.contains("invalid node id 'Bad Id'"), "{err}");
}

#[test]
fn invalid_workflow_id() {
    let env = Env::new();
    let (err, _) = invalid_json(
        &env,
        "wfid.json",
        &json!({"id": "My Workflow", "nodes": [set("a", json!({}))]}),
    );
    assert!(err.contains("field 'id'"), "{err}");
    assert!(err.contains("'My Workflow'"), "{err}");
}

#[test]
fn cycle_prints_the_cycle() {
    let env = Env::new();
    let (err, text) = invalid_json(
        &env,
        "cycle.json",
        &workflow(json!([
            {"id": "a", "type": "set", "fields": {}, "after": ["b"]},
            {"id": "b", "type": "set", "fields": {}, "after": ["a"]}
        ])),
    );
    assert!(err.contains("a → b → a"), "{err}");
    assert_located(&err, &text, "cycle.json", "b", "after", "\"after\"");
}

#[test]
fn unknown_template_root() {
    let env = Env::new();
    let (err, text) = invalid_json(
        &env,
        "root.json",
        &workflow(json!([set("a", json!({"v": "{{ foo.x }}"}))])),
    );
    assert_located(
        &err,
        &text,
        "root.json",
        "a",
        "fields.v",
        "\"v\": \"{{ foo.x }}\"",
    );
    assert!(err.contains("unknown root 'foo'"), "{err}");
    assert!(err.contains("{{ foo.x }}"), "{err}");
}

#[test]
fn a_misspelled_field_after_a_node_gets_a_suggestion() {
    let env = Env::new();
    let (err, _) = invalid_json(
        &env,
        "typo.json",
        &workflow(json!([
            set("a", json!({"v": "x"})),
            set("b", json!({"v": "{{ nodes.a.ouput.v }}"}))
        ])),
    );
    assert!(
        err.contains("after `nodes.a` comes one of output, error, status, did you mean 'output'?"),
        "{err}"
    );
}

#[test]
fn reference_to_unknown_node() {
    let env = Env::new();
    let (err, text) = invalid_json(
        &env,
        "ghost.json",
        &workflow(json!([
            set("a", json!({})),
            {"id": "b", "type": "template", "template": "x {{ nodes.ghost.output.y }}"}
        ])),
    );
    assert_located(
        &err,
        &text,
        "ghost.json",
        "b",
        "template",
        "\"template\": \"x",
    );
    assert!(err.contains("unknown node 'ghost'"), "{err}");
}

#[test]
fn reference_to_own_output() {
    let env = Env::new();
    let (err, text) = invalid_json(
        &env,
        "own.json",
        &workflow(json!([set("a", json!({"v": "{{ nodes.a.output.v }}"}))])),
    );
    assert_located(&err, &text, "own.json", "a", "fields.v", "\"v\":");
    assert!(err.contains("its own output"), "{err}");
}

#[test]
fn reference_to_later_node_that_makes_a_cycle() {
    let env = Env::new();
    let (err, _) = invalid_json(
        &env,
        "later.json",
        &workflow(json!([
            set("a", json!({"v": "{{ nodes.b.output.w }}"})),
            set("b", json!({"w": "{{ nodes.a.output.v }}"}))
        ])),
    );
    assert!(err.contains("cycle"), "{err}");
    assert!(
        err.contains("a → b → a") || err.contains("b → a → b"),
        "{err}"
    );
    assert!(err.contains("field 'fields."), "{err}");
}

#[test]
fn after_naming_unknown_node() {
    let env = Env::new();
    let (err, text) = invalid_json(
        &env,
        "after.json",
        &workflow(json!([
            set("a", json!({})),
            {"id": "b", "type": "set", "fields": {}, "after": ["a", "ghost"]}
        ])),
    );
    assert_located(&err, &text, "after.json", "b", "after[1]", "\"ghost\"");
    assert!(err.contains("unknown node 'ghost'"), "{err}");
}

#[test]
fn condition_then_naming_unknown_node() {
    let env = Env::new();
    let (err, text) = invalid_json(
        &env,
        "then.json",
        &workflow(json!([
            {"id": "c", "type": "condition", "if": "{{ trigger.ok }}", "then": ["ghost"]}
        ])),
    );
    assert_located(&err, &text, "then.json", "c", "then[0]", "\"ghost\"");
    assert!(err.contains("unknown node 'ghost'"), "{err}");
}

#[test]
fn bad_template_syntax() {
    let env = Env::new();
    let (err, text) = invalid_json(
        &env,
        "syntax.json",
        &workflow(json!([set("a", json!({"v": "{{ trigger.a + 1 }}"}))])),
    );
    assert_located(&err, &text, "syntax.json", "a", "fields.v", "\"v\":");
    assert!(err.contains("invalid template"), "{err}");
}

#[test]
fn unclosed_template() {
    let env = Env::new();
    let (err, _) = invalid_json(
        &env,
        "open.json",
        &workflow(json!([{"id": "t", "type": "template", "template": "hi {{ trigger.name"}])),
    );
    assert!(err.contains("node 't', field 'template'"), "{err}");
    assert!(err.contains("not closed"), "{err}");
}

#[test]
fn invalid_inputs_schema() {
    let env = Env::new();
    let (err, _) = invalid_json(
        &env,
        "schema.json",
        &json!({
            "id": "wf",
            "inputs": {"type": "objekt", "properties": {"n": {"type": "integer"}}},
            "nodes": [set("a", json!({}))]
        }),
    );
    assert!(err.contains("inputs"), "{err}");
    assert!(err.contains("JSON Schema"), "{err}");
}

#[test]
fn every_problem_is_reported_at_once() {
    let env = Env::new();
    let (err, _) = invalid_json(
        &env,
        "many.json",
        &workflow(json!([
            {"id": "a", "type": "set", "fields": {}, "after": ["ghost"]},
            set("b", json!({"v": "{{ foo.x }}"}))
        ])),
    );
    assert!(err.contains("node 'a', field 'after[0]'"), "{err}");
    assert!(err.contains("node 'b', field 'fields.v'"), "{err}");
}

#[test]
fn run_of_an_invalid_workflow_exits_2_without_an_execution() {
    let env = Env::new();
    let wf = env.write_workflow(
        "bad.json",
        &workflow(json!([set("a", json!({"v": "{{ foo.x }}"}))])),
    );
    let out = env.run(&wf, "{}", &[]);
    assert_code(&out, 2, "run of an invalid workflow");
    assert!(
        stderr(&out).contains("unknown root 'foo'"),
        "{}",
        describe(&out)
    );
    assert_eq!(env.execution_count(), 0);
}

#[test]
fn missing_file_exits_2() {
    let env = Env::new();
    let out = env.cmd(["validate", "nope.json"]);
    assert_code(&out, 2, "validate of a missing file");
    assert!(stderr(&out).contains("nope.json"), "{}", describe(&out));
}

#[test]
fn examples_validate_with_a_one_line_summary() {
    let env = Env::new();
    let dir = repo_root().join("examples");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        // Workflows, not their test files (`*.test.yaml`, run by `flowrun test`).
        .filter(|p| {
            matches!(
                p.extension().and_then(|e| e.to_str()),
                Some("json" | "yaml" | "yml")
            ) && !p.to_string_lossy().contains(".test.")
        })
        .collect();
    files.sort();
    assert!(files.len() >= 2, "{files:?}");
    for f in files {
        let out = env.cmd([std::ffi::OsStr::new("validate"), f.as_os_str()]);
        assert_success(&out, &format!("validate {}", f.display()));
        let text = stdout(&out);
        assert_eq!(text.lines().count(), 1, "{text}");
        let line = text.lines().next().unwrap();
        assert!(line.starts_with("ok: "), "{line}");
        assert!(line.contains(&f.display().to_string()), "{line}");
        assert!(line.contains(" node"), "{line}");
    }
    let out = env.cmd([
        std::ffi::OsStr::new("validate"),
        example("hello.json").as_os_str(),
    ]);
    assert!(
        stdout(&out).contains("'hello' (Hello), 4 nodes: trigger → greet → shout → answer"),
        "{}",
        describe(&out)
    );
}

// ---------------------------------------------------------------------------------------------
// Duplicate keys inside a node, and located errors in compact JSON.
// ---------------------------------------------------------------------------------------------

#[test]
fn duplicate_key_inside_a_node_is_an_error() {
    let env = Env::new();
    env.write_file(
        "dupkey.json",
        "{\n  \"id\": \"wf\",\n  \"nodes\": [\n    {\n      \"id\": \"a\",\n      \"type\": \"code\",\n      \"code\": \"return 1\",\n      \"code\": \"return 2\"\n    }\n  ]\n}\n",
    );
    let err = invalid(&env, "dupkey.json");
    assert!(err.contains("node 'a'"), "{err}");
    assert!(err.contains("code"), "{err}");
    env.write_file(
        "dupkey.yaml",
        "id: wf\nnodes:\n  - id: a\n    type: code\n    code: return 1\n    code: return 2\n",
    );
    let err = invalid(&env, "dupkey.yaml");
    assert!(err.contains("code"), "{err}");
}

#[test]
fn node_errors_in_compact_json_have_a_line() {
    let env = Env::new();
    env.write_file(
        "compact.json",
        "{\n  \"id\": \"wf\",\n  \"nodes\": [\n    { \"id\": \"a\", \"type\": \"set\", \"fields\": {} },\n    { \"id\": \"b\", \"type\": \"set\", \"feilds\": {} }\n  ]\n}\n",
    );
    let err = invalid(&env, "compact.json");
    assert!(err.contains("node 'b', field 'feilds'"), "{err}");
    assert!(err.contains("compact.json:5:"), "{err}");
}

#[test]
fn a_top_level_typo_does_not_hide_node_errors() {
    let env = Env::new();
    env.write_file(
        "top.json",
        "{\n  \"id\": \"wf\",\n  \"timout_ms\": 5,\n  \"nodes\": [\n    {\"id\": \"a\", \"type\": \"code\", \"cod\": \"return 1\"}\n  ]\n}\n",
    );
    let err = invalid(&env, "top.json");
    assert!(
        err.contains("top.json:3:3: field 'timout_ms': unknown field `timout_ms`"),
        "{err}"
    );
    assert!(
        err.contains("top.json:5:33: node 'a', field 'cod': unknown field `cod`"),
        "{err}"
    );
}

// ---------------------------------------------------------------------------------------------
// Everything in one pass; code references (several files and --json: workflow_files.rs).
// ---------------------------------------------------------------------------------------------

#[test]
fn duplicate_node_id_points_at_the_second_node() {
    let env = Env::new();
    let (err, text) = invalid_json(
        &env,
        "dup2.json",
        &workflow(json!([
            set("a", json!({"x": 1})),
            set("b", json!({})),
            set("a", json!({"y": 2}))
        ])),
    );
    let line = line_in(&err, "dup2.json").unwrap();
    let second = text
        .lines()
        .enumerate()
        .filter(|(_, l)| l.contains("\"id\": \"a\""))
        .nth(1)
        .map(|(i, _)| i + 1)
        .unwrap();
    assert_eq!(line, second, "{err}");
    env.write_file(
        "dup2.yaml",
        "id: wf\nnodes:\n  - id: a\n    type: set\n    fields: {}\n  - type: set\n    id: a\n    fields: {}\n",
    );
    let err = invalid(&env, "dup2.yaml");
    assert!(
        err.contains("dup2.yaml:7: node 'a', field 'id': duplicate node id 'a'"),
        "{err}"
    );
}

#[test]
fn code_reading_an_unknown_node_is_an_error() {
    let env = Env::new();
    let (err, text) = invalid_json(
        &env,
        "code.json",
        &workflow(json!([
            set("a", json!({})),
            {"id": "b", "type": "code", "code": "x = nodes['a']\n# nodes['old'] is gone\ny = nodes[\"missing\"]\nz = nodes.get('gone')\nreturn nodes['b']"}
        ])),
    );
    assert_located(&err, &text, "code.json", "b", "code", "\"code\"");
    assert!(
        err.contains("`nodes[\"missing\"]`: unknown node 'missing'; nodes are: a, b"),
        "{err}"
    );
    assert!(
        err.contains("`nodes.get('gone')`: unknown node 'gone'"),
        "{err}"
    );
    assert!(
        err.contains("`nodes['b']`: a node cannot read its own output"),
        "{err}"
    );
    assert!(!err.contains("'old'") && !err.contains("'a';"), "{err}");
}

/// One run reports the errors that used to take several fix-and-rerun rounds: a top-level typo,
/// two bad fields in one node, an unknown type, a duplicate id, references to unknown nodes from
/// nodes that parse and from nodes that do not, and a cycle.
#[test]
fn everything_is_reported_in_one_pass() {
    let env = Env::new();
    env.write_file(
        "all.yaml",
        "id: wf\n\
         timout_ms: 5\n\
         nodes:\n\
         \x20 - id: a\n    type: set\n    feilds: {}\n    retry: {max_atempts: 2}\n    after: [ghost1]\n\
         \x20 - id: b\n    type: sett\n    after: [c]\n\
         \x20 - id: c\n    type: set\n    fields: {v: '{{ nodes.ghost2.output }}'}\n    after: [b]\n\
         \x20 - id: a\n    type: condition\n    if: '{{ trigger.x }}'\n    then: [ghost3]\n\
         \x20 - id: Bad\n    type: code\n    code: return 1\n    on_error: sometimes\n    after: [ghost4]\n",
    );
    let err = invalid(&env, "all.yaml");
    for expected in [
        "all.yaml:2: field 'timout_ms': unknown field `timout_ms`",
        "all.yaml:6: node 'a', field 'feilds': unknown field `feilds`",
        "all.yaml:7: node 'a', field 'retry.max_atempts': unknown field `max_atempts`",
        "all.yaml:8: node 'a', field 'after[0]': unknown node 'ghost1'",
        "all.yaml:10: node 'b', field 'type': unknown node type 'sett'",
        "all.yaml:14: node 'c', field 'fields.v': `{{ nodes.ghost2.output }}`: unknown node 'ghost2'",
        "all.yaml:16: node 'a', field 'id': duplicate node id 'a'",
        "all.yaml:19: node 'a', field 'then[0]': unknown node 'ghost3'",
        "all.yaml:20: node 'Bad', field 'id': invalid node id 'Bad'",
        "all.yaml:23: node 'Bad', field 'on_error': unknown variant `sometimes`",
        "all.yaml:24: node 'Bad', field 'after[0]': unknown node 'ghost4'",
        "cycle: ",
    ] {
        assert!(err.contains(expected), "missing {expected:?} in:\n{err}");
    }
    assert!(
        err.contains("'b' → 'c'") && err.contains("'c' → 'b'"),
        "{err}"
    );
    // A typo'd field is not also reported missing.
    assert!(!err.contains("missing field `fields`"), "{err}");
}
