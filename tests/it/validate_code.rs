//! `flowrun validate` and `POST /api/validate` compile code nodes with the interpreter a run
//! would use: a source that does not compile (which a run refuses before any node runs) is
//! invalid, at its node's `code` field, in the file it is written in; compiling runs none of the
//! code; without an interpreter the check says it was not made.

use crate::support::serve::World;
use crate::support::*;
use serde_json::{Value, json};

fn code(id: &str, source: &str) -> Value {
    json!({"id": id, "type": "code", "code": source})
}

/// The line of `file` that `message` (`file:LINE:COL: …`) points at.
fn line_of<'a>(message: &str, file: &str, text: &'a str) -> &'a str {
    let rest = message
        .split(&format!("{file}:"))
        .nth(1)
        .unwrap_or_else(|| panic!("{file} is not named with a line in:\n{message}"));
    let n: usize = rest
        .chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .unwrap_or_else(|_| panic!("no line after {file}: in:\n{message}"));
    text.lines().nth(n - 1).expect("the line is in the file")
}

#[test]
fn code_that_does_not_compile_is_invalid_where_it_is_written_and_nothing_runs() {
    let env = Env::new();
    let mark = env.path("ran");
    // Valid code that would leave a mark if it ran, and two sources that do not compile.
    let writes = format!(
        "open({:?}, 'w').write('x')\nreturn 1",
        mark.display().to_string()
    );
    let wf = json!({"id": "wf", "nodes": [
        code("fine", &writes),
        code("open_paren", "x = (1,\ny = 2\nreturn x"),
        {"id": "pinned", "type": "code", "code": "return (", "pinned": {"v": 1}},
        code("bad_return", "if True:\nreturn 1"),
    ]});
    let path = env.write_workflow("wf.json", &wf);
    let text = std::fs::read_to_string(&path).unwrap();
    let out = env.cmd(["validate", "wf.json"]);
    assert_code(&out, 2, "validate");
    let err = stderr(&out);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(
        lines.len(),
        2,
        "one line per source that does not compile:\n{err}"
    );
    assert!(
        lines[0].contains(
            "node 'open_paren', field 'code': does not compile: '(' was never closed (line 1"
        ),
        "{err}"
    );
    assert!(
        line_of(lines[0], "wf.json", &text).contains("x = (1,"),
        "{err}"
    );
    assert!(
        lines[1].contains(
            "node 'bad_return', field 'code': does not compile: expected an indented block"
        ) && lines[1].contains("(line 2"),
        "{err}"
    );
    assert!(
        !err.contains("'pinned'"),
        "a pinned node is not run, so not compiled:\n{err}"
    );
    assert!(!mark.exists(), "compiling ran a node's code");

    // The same as JSON: the file invalid, each diagnostic located, nothing skipped.
    let out = env.cmd(["validate", "--json", "wf.json"]);
    assert_code(&out, 2, "validate --json");
    let doc: Value = serde_json::from_str(&stdout(&out)).unwrap();
    let file = &doc["files"][0];
    assert_eq!(file["valid"], false, "{doc}");
    assert_eq!(file["compile_skipped"], Value::Null, "{doc}");
    let diags = file["diagnostics"].as_array().unwrap();
    assert_eq!(diags.len(), 2, "{doc}");
    assert_eq!(diags[0]["node"], "open_paren");
    assert_eq!(diags[0]["field"], "code");
    assert_eq!(diags[0]["node_index"], 1);
    assert!(diags[0]["line"].as_u64().is_some(), "{doc}");

    // Mended, it is valid, and a run agrees.
    let mut wf = wf;
    wf["nodes"][1] = code("open_paren", "x = (1,\n)\nreturn x");
    wf["nodes"][3] = code("bad_return", "if True:\n    return 1");
    env.write_workflow("wf.json", &wf);
    let out = env.cmd(["validate", "wf.json"]);
    assert_code(&out, 0, "validate after the mend");
    assert!(!mark.exists(), "compiling ran a node's code");
    assert_code(&env.run(&path, "{}", &[]), 0, "run after the mend");
    assert!(
        mark.exists(),
        "the run ran the node: the mark proves it would have shown"
    );
}

#[test]
fn a_sub_workflows_code_is_reported_in_its_own_file_with_the_node_that_runs_it() {
    let env = Env::new();
    env.write_file(
        "child.yaml",
        "id: child\nnodes:\n  - id: ok\n    type: set\n    fields: {a: 1}\n  - id: broken\n    type: code\n    code: |\n      x = [1,\n      return x\n",
    );
    let parent = json!({"id": "parent", "nodes": [
        {"id": "first", "type": "set", "fields": {"a": 1}},
        {"id": "sub", "type": "workflow", "workflow": "./child.yaml"},
    ]});
    env.write_workflow("parent.json", &parent);
    let out = env.cmd(["validate", "parent.json"]);
    assert_code(&out, 2, "validate");
    let err = stderr(&out);
    let child = env.path("child.yaml").display().to_string();
    assert!(
        err.contains("node 'broken', field 'code': does not compile: '[' was never closed (line 1")
            && err.contains("run by node 'sub' of parent.json"),
        "{err}"
    );
    // Written as a literal block (`code: |`): the file's line of the source's line 1, and its
    // column there.
    let text = std::fs::read_to_string(env.path("child.yaml")).unwrap();
    assert_eq!(line_of(&err, &child, &text), "      x = [1,", "{err}");
    assert!(err.contains(&format!("{child}:9:11: ")), "{err}");
}

#[test]
fn without_an_interpreter_the_code_is_said_not_compiled_not_passed() {
    let env = Env::new();
    env.write_workflow(
        "wf.json",
        &json!({"id": "wf", "nodes": [code("c", "return (")]}),
    );
    let out = env.cmd(["validate", "wf.json", "--python", "/nonexistent/python3"]);
    assert_code(
        &out,
        0,
        "validate without an interpreter: nothing else is wrong",
    );
    let err = stderr(&out);
    assert!(
        err.contains("warning: wf.json: code nodes not compiled: no Python to compile them with")
            && err.contains("/nonexistent/python3"),
        "{err}"
    );
    let out = env.cmd([
        "validate",
        "--json",
        "wf.json",
        "--python",
        "/nonexistent/python3",
    ]);
    let doc: Value = serde_json::from_str(&stdout(&out)).unwrap();
    let skipped = doc["files"][0]["compile_skipped"]
        .as_str()
        .unwrap_or_default();
    assert!(skipped.contains("no Python to compile them with"), "{doc}");

    // A workflow without code nodes needs no interpreter: nothing is skipped.
    env.write_workflow(
        "plain.json",
        &json!({"id": "p", "nodes": [{"id": "s", "type": "set", "fields": {}}]}),
    );
    let out = env.cmd([
        "validate",
        "--json",
        "plain.json",
        "--python",
        "/nonexistent/python3",
    ]);
    assert_code(&out, 0, "validate a workflow without code");
    let doc: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(doc["files"][0]["compile_skipped"], Value::Null, "{doc}");
}

#[test]
fn the_editors_validate_compiles_code_too() {
    let w = World::new();
    let s = w.serve(&[]);
    let broken = json!({"id": "e", "nodes": [
        {"id": "t", "type": "template", "template": "hi"},
        code("c", "def f(:\n    pass"),
    ]});
    let r = s.post("/api/validate", &json!({"workflow": broken}));
    assert_eq!(r.status, 200, "{}", r.text);
    let v = &r.body;
    assert_eq!(v["valid"], false, "{v}");
    assert_eq!(v["ready"], false, "{v}");
    assert_eq!(v["compile_skipped"], Value::Null, "{v}");
    let d = &v["diagnostics"][0];
    assert_eq!(
        (&d["node"], &d["field"]),
        (&json!("c"), &json!("code")),
        "{v}"
    );
    assert!(
        d["message"]
            .as_str()
            .unwrap()
            .starts_with("does not compile: "),
        "{v}"
    );
    assert!(
        d["line"].as_u64().is_some(),
        "located in the request's layout: {v}"
    );
    assert_eq!(
        v["nodes"].as_array().unwrap().len(),
        2,
        "the nodes are still listed: {v}"
    );

    let mut fixed = broken;
    fixed["nodes"][1] = code("c", "def f():\n    pass\nreturn 1");
    let r = s.post("/api/validate", &json!({"workflow": fixed}));
    assert_eq!(r.body["valid"], true, "{}", r.body);
    assert_eq!(r.body["diagnostics"], json!([]));
}

#[test]
fn a_workflow_with_other_errors_says_its_code_was_not_compiled() {
    // Code is compiled only once the rest of the workflow is valid (it needs the plan): with a
    // typo elsewhere, validate said nothing of the code that did not compile either, and
    // `--json` had `compile_skipped: null`, which reads as compiled (helper-55).
    let env = Env::new();
    let typo = json!({"id": "t", "nodes": [
        {"id": "a", "type": "set", "feilds": {}},
        code("b", "return {'y': 1"),
    ]});
    env.write_workflow("typo.json", &typo);
    let out = env.cmd(["validate", "typo.json"]);
    assert_code(&out, 2, "validate a workflow with a typo");
    assert!(
        stderr(&out).contains("feilds")
            && stderr(&out).contains("code nodes not compiled: the workflow has other errors"),
        "{}",
        describe(&out)
    );
    let out = env.cmd(["validate", "--json", "typo.json"]);
    let doc: Value = serde_json::from_str(&stdout(&out)).unwrap();
    let skipped = doc["files"][0]["compile_skipped"]
        .as_str()
        .unwrap_or_default();
    assert!(skipped.contains("compiled once they are fixed"), "{doc}");
    // Without code nodes there is nothing left to compile: null.
    env.write_workflow(
        "plain.json",
        &json!({"id": "p", "nodes": [{"id": "a", "type": "set", "feilds": {}}]}),
    );
    let out = env.cmd(["validate", "--json", "plain.json"]);
    let doc: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(doc["files"][0]["valid"], false, "{doc}");
    assert_eq!(doc["files"][0]["compile_skipped"], Value::Null, "{doc}");

    // The editor's check says the same.
    let w = World::new();
    let s = w.serve(&[]);
    let r = s.post("/api/validate", &json!({"workflow": typo}));
    assert_eq!(r.body["valid"], false, "{}", r.text);
    let skipped = r.body["compile_skipped"].as_str().unwrap_or_default();
    assert!(
        skipped.contains("compiled once they are fixed"),
        "{}",
        r.body
    );
}

/// A fake interpreter: answers the probe as Python 3.11 would, and runs `then` for the check.
fn fake_python(env: &Env, name: &str, then: &str) -> String {
    let path = env.write_file(
        name,
        &format!(
            "#!/bin/sh\nif [ \"$3\" = \"-c\" ]; then echo \"$0\"; echo 3.11.7; echo cpython; echo a70d0d0a; exit 0; fi\n{then}\n"
        ),
    );
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    path.display().to_string()
}

#[test]
fn a_check_that_hangs_or_fails_is_cut_and_said_not_made() {
    let env = Env::new();
    env.write_workflow(
        "wf.json",
        &json!({"id": "wf", "nodes": [code("c", "return (")]}),
    );
    // Silent with its stdout open, and with it closed: both cut at 10 s, not waited for.
    let hangs = fake_python(&env, "hangs", "exec sleep 1000");
    let closes = fake_python(&env, "closes", "exec 1>&-; exec sleep 1000");
    // Gone at once without reading anything (it used to take flowrun down with SIGPIPE).
    let dies = fake_python(&env, "dies", "exit 127");
    let started = std::time::Instant::now();
    let runs: Vec<_> = [hangs, closes, dies]
        .into_iter()
        .map(|python| {
            let mut c = env.command();
            c.args(["validate", "--json", "wf.json", "--python", &python]);
            std::thread::spawn(move || c.output().unwrap())
        })
        .collect();
    for (run, why) in runs.into_iter().zip([
        "compiling took longer than 10 s",
        "compiling took longer than 10 s",
        "the interpreter ended with exit status: 127",
    ]) {
        let out = run.join().unwrap();
        assert_code(
            &out,
            0,
            "a check not made leaves the file as valid as it is otherwise",
        );
        let doc: Value = serde_json::from_str(&stdout(&out)).expect("the report is printed");
        let skipped = doc["files"][0]["compile_skipped"]
            .as_str()
            .unwrap_or_default();
        assert_eq!(skipped, why, "{doc}");
    }
    assert!(
        started.elapsed() < std::time::Duration::from_secs(20),
        "the checks were not cut at 10 s: {:?}",
        started.elapsed()
    );
}

#[test]
fn a_large_source_of_a_sub_workflow_or_one_long_line_is_still_checked() {
    let env = Env::new();
    // Over the 100,000 characters a run's start check leaves to the child.
    let big = format!("{}y = (\n", "x = 1\n".repeat(20000));
    env.write_workflow(
        "child.json",
        &json!({"id": "child", "nodes": [code("big", &big)]}),
    );
    // One line of 2.5 MB that does not compile: its traceback (which quotes it) is not sent.
    let long = format!("x = \"{}\" +", "a".repeat(2_500_000));
    env.write_workflow(
        "parent.json",
        &json!({"id": "parent", "nodes": [
            code("long", &long),
            {"id": "sub", "type": "workflow", "workflow": "./child.json"},
        ]}),
    );
    let out = env.cmd(["validate", "--json", "parent.json"]);
    assert_code(&out, 2, "validate");
    let doc: Value = serde_json::from_str(&stdout(&out)).unwrap();
    let file = &doc["files"][0];
    assert_eq!(file["compile_skipped"], Value::Null, "{doc}");
    let nodes: Vec<&str> = file["diagnostics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["node"].as_str().unwrap())
        .collect();
    assert_eq!(nodes, ["long", "big"], "{doc}");
}

#[test]
fn many_sources_that_do_not_compile_are_listed_up_to_a_hundred_and_said_to_be_more() {
    let env = Env::new();
    let nodes: Vec<Value> = (0..150)
        .map(|i| code(&format!("n{i}"), "return ("))
        .collect();
    env.write_workflow("many.json", &json!({"id": "many", "nodes": nodes}));
    let out = env.cmd(["validate", "--json", "many.json"]);
    assert_code(&out, 2, "validate");
    let doc: Value = serde_json::from_str(&stdout(&out)).unwrap();
    let diags = doc["files"][0]["diagnostics"].as_array().unwrap();
    assert_eq!(diags.len(), 101, "{doc}");
    assert!(
        diags.iter().any(
            |d| d["message"] == "more code nodes do not compile: only the first 100 are listed"
        ),
        "{doc}"
    );
}

#[test]
fn a_validate_killed_mid_check_leaves_no_file_behind() {
    let env = Env::new();
    env.write_workflow(
        "wf.json",
        &json!({"id": "wf", "nodes": [code("c", "return (")]}),
    );
    let hangs = fake_python(&env, "hangs", "exec sleep 1000");
    let mut child = env
        .command()
        .args(["validate", "wf.json", "--python", &hangs])
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(700));
    child.kill().unwrap();
    child.wait().unwrap();
    let left: Vec<_> = std::fs::read_dir(env.tmp_dir()).unwrap().collect();
    assert!(left.is_empty(), "left in TMPDIR: {left:?}");
}
