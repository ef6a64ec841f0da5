//! `history`, `doctor`, `rerun`, `resume` and `logs` as people and scripts use them: no silent
//! limits, `doctor` agreeing with `run`, resumes of the same workflow only, files found from
//! anywhere, a failed step's logs that say it failed.

use crate::support::*;
use serde_json::{Value, json};

fn quick(env: &Env, name: &str, id: &str) -> std::path::PathBuf {
    env.write_workflow(
        name,
        &json!({ "id": id, "nodes": [ { "id": "n", "type": "code", "code": "return 1" } ] }),
    )
}

#[test]
fn history_says_how_many_more_there_are_and_n_0_lists_all() {
    let env = Env::new();
    let wf = quick(&env, "wf.json", "wf");
    for _ in 0..3 {
        assert_success(&env.run(&wf, "{}", &[]), "run");
    }
    let out = env.cmd(["history", "-n", "2"]);
    assert_success(&out, "history -n 2");
    assert_eq!(
        stdout(&out).lines().count(),
        3,
        "a header and 2 rows\n{}",
        describe(&out)
    );
    assert!(
        stderr(&out).contains("… and 1 more execution (-n 3 or -n 0 lists all)"),
        "{}",
        describe(&out)
    );
    // --json: the array on stdout, the note on stderr.
    let out = env.cmd(["history", "--json", "-n", "1"]);
    let list: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(list.len(), 1);
    assert!(
        stderr(&out).contains("… and 2 more executions"),
        "{}",
        describe(&out)
    );
    // -n 0 lists every one (it said "no executions yet").
    let out = env.cmd(["history", "-n", "0"]);
    assert_success(&out, "history -n 0");
    assert_eq!(stdout(&out).lines().count(), 4, "{}", describe(&out));
    assert_eq!(stderr(&out), "", "{}", describe(&out));
    assert_eq!(env.history_json(&["-n", "0"]).len(), 3);
    // All shown: no note.
    let out = env.cmd(["history", "-n", "3"]);
    assert_eq!(stderr(&out), "", "{}", describe(&out));
    // A workflow id no execution has: most likely a typo of one that has some.
    let out = env.cmd(["history", "--workflow", "wg"]);
    assert_success(&out, "history --workflow wg");
    assert!(
        stderr(&out)
            .contains("no execution is of a workflow 'wg', did you mean 'wf'? (workflows: wf)"),
        "{}",
        describe(&out)
    );
    let out = env.cmd(["history", "--workflow", "wf", "--status", "error"]);
    assert!(!stderr(&out).contains("did you mean"), "{}", describe(&out));
}

fn needs_connection(env: &Env) -> std::path::PathBuf {
    env.write_workflow(
        "conn.json",
        &json!({ "id": "conn",
            "connections": { "svc": { "env": "MY_SECRET" } },
            "nodes": [ { "id": "c", "type": "command", "connections": ["svc"], "argv": ["true"] } ] }),
    )
}

#[test]
fn doctor_and_run_agree_on_unbound_connections() {
    let env = Env::new();
    let wf = needs_connection(&env);
    let file = wf.to_str().unwrap();
    let run = env.run(&wf, "{}", &[]);
    assert_code(&run, 3, "run with an unbound connection");
    let out = env.cmd(["doctor", file]);
    assert_code(&out, 3, "doctor with an unbound connection");
    let text = stdout(&out);
    assert!(
        !text.lines().any(|l| l.starts_with("workflow  ✓")),
        "{text}"
    );
    assert!(
        text.contains(&format!("workflow  ✗ {file}: a connection is not bound:"))
            && text.contains("svc: set MY_SECRET (used by node 'c')")
            && text.contains("--env KEY"),
        "{text}"
    );
    let out = env.cmd(["doctor", "--json", file]);
    assert_code(&out, 3, "doctor --json");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        report["workflows"][0]["unbound"],
        json!([{ "connection": "svc", "env": "MY_SECRET", "nodes": ["c"] }])
    );
    // Bound as run would bind it: from the environment, --env KEY or an --env-file.
    let mut cmd = env.flowrun();
    cmd.args(["doctor", file])
        .env("MY_SECRET", "value-1234567890");
    let out = output(&mut cmd);
    assert_success(&out, "doctor with MY_SECRET set");
    assert!(
        stdout(&out).contains(&format!("workflow  ✓ {file}")),
        "{}",
        describe(&out)
    );
    let dotenv = env.write_file(".env", "MY_SECRET=value-1234567890\n");
    let out = env.cmd(["doctor", file, "--env-file", dotenv.to_str().unwrap()]);
    assert_success(&out, "doctor --env-file");
}

#[test]
fn doctor_exits_2_for_an_invalid_file_as_validate_does() {
    let env = Env::new();
    let bad = env.write_file(
        "bad.json",
        r#"{"id": "bad", "nodes": [{"id": "x", "type": "nope"}]}"#,
    );
    let validate = env.cmd(["validate", bad.to_str().unwrap()]);
    assert_code(&validate, 2, "validate");
    let out = env.cmd(["doctor", bad.to_str().unwrap()]);
    assert_code(&out, 2, "doctor of an invalid file");
    assert!(stdout(&out).contains("workflow  ✗"), "{}", describe(&out));
    // A valid file beside it does not change that.
    let good = quick(&env, "good.json", "good");
    let out = env.cmd(["doctor", good.to_str().unwrap(), bad.to_str().unwrap()]);
    assert_code(&out, 2, "doctor of a valid and an invalid file");
    let out = env.cmd(["doctor", good.to_str().unwrap()]);
    assert_success(&out, "doctor of a valid file");
}

#[test]
fn resume_refuses_a_file_of_another_workflow() {
    let env = Env::new();
    let a = env.write_workflow(
        "a.json",
        &json!({ "id": "wf-a", "nodes": [
            { "id": "one", "type": "code", "code": "return 1" },
            { "id": "two", "type": "code", "code": "raise ValueError('x')", "after": ["one"] } ] }),
    );
    let b = env.write_workflow(
        "b.json",
        &json!({ "id": "wf-b", "nodes": [
            { "id": "one", "type": "code", "code": "return 'other'" },
            { "id": "two", "type": "code", "code": "return 2", "after": ["one"] } ] }),
    );
    assert_code(&env.run(&a, "{}", &[]), 1, "run a");
    let id = env.only_execution_id();
    let out = env.cmd(["resume", &id, "--file", b.to_str().unwrap()]);
    assert_code(&out, 2, "resume with another workflow's file");
    assert!(
        stderr(&out).contains("ran workflow 'wf-a'") && stderr(&out).contains("is workflow 'wf-b'"),
        "{}",
        describe(&out)
    );
    assert_eq!(env.execution_ids().len(), 1, "nothing ran");
}

#[test]
fn the_file_changed_note_shows_from_another_directory() {
    let env = Env::new();
    let wf = quick(&env, "wf.json", "wf");
    // Run with a relative path from the file's directory.
    let out = output(env.flowrun().args(["run", "wf.json"]));
    assert_success(&out, "run wf.json");
    let id = env.only_execution_id();
    let shown = env.show_json(&id);
    let stored = shown["source_file"].as_str().map(str::to_string);
    let stored = stored.unwrap_or_else(|| stdout(&env.cmd(["show", &id])));
    assert!(
        stored.contains(&wf.display().to_string()),
        "stored: {stored}"
    );
    std::fs::write(
        &wf,
        json!({ "id": "wf", "nodes": [ { "id": "n", "type": "code", "code": "return 2" } ] })
            .to_string(),
    )
    .unwrap();
    let elsewhere = env.path("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    let out = output(env.flowrun().current_dir(&elsewhere).args(["rerun", &id]));
    assert_success(&out, "rerun from another directory");
    assert!(
        stderr(&out).contains(&format!(
            "note: {} has changed since execution {id} ran",
            wf.display()
        )),
        "{}",
        describe(&out)
    );
}

/// Someone reading a failed step's logs: one node's lines, as JSON for a script, and (on stderr)
/// which node failed and why, which its printed lines seldom say.
#[test]
fn logs_of_one_node_as_json_and_the_failure_named() {
    let env = Env::new();
    let wf = env.write_workflow(
        "boom.json",
        &json!({"id": "boom", "nodes": [
            {"id": "a", "type": "code", "code": "print('step a')\nreturn 1"},
            {"id": "b", "type": "code", "code": "print('about to divide')\nreturn 1/0", "after": ["a"]}]}),
    );
    let out = env.run(&wf, "{}", &[]);
    assert_code(&out, 1, "the workflow fails");
    let id = env.execution_ids().remove(0);
    let out = env.cmd(["logs", &id]);
    assert_code(&out, 0, "logs");
    assert!(
        stdout(&out).contains("a | step a") && stdout(&out).contains("b | about to divide"),
        "{}",
        describe(&out)
    );
    assert!(
        stderr(&out).contains("node 'b' failed: ZeroDivisionError: division by zero"),
        "{}",
        describe(&out)
    );
    let out = env.cmd(["logs", &id, "--node", "b", "--json"]);
    let lines: Vec<serde_json::Value> = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1, "{}", describe(&out));
    assert_eq!(lines[0]["event"], "log");
    assert_eq!(lines[0]["node"], "b");
    assert_eq!(lines[0]["line"], "about to divide");
    assert_eq!(lines[0]["execution_id"], id.as_str());
    // A node the workflow does not have is an error, as the API's 404 unknown_node: it printed
    // nothing and exited 0, which reads as a node without output.
    let out = env.cmd(["logs", &id, "--node", "nosuch"]);
    assert_code(&out, 2, "logs of a node the workflow does not have");
    assert_eq!(stdout(&out), "", "{}", describe(&out));
    assert!(
        stderr(&out).contains("has no node 'nosuch' (its nodes: a, b)"),
        "{}",
        describe(&out)
    );
}

/// A child's multi-line error, in its parent's `show`: the first line, then `…` (it was the
/// whole message on one line, each newline printed as `\x0a`).
#[test]
fn show_lists_a_failed_childs_error_by_its_first_line() {
    let env = Env::new();
    env.write_workflow(
        "child.json",
        &json!({ "id": "child", "nodes": [ { "id": "n", "type": "code",
            "code": "raise ValueError('first line\\nsecond line')" } ] }),
    );
    let parent = env.write_workflow(
        "parent.json",
        &json!({ "id": "parent", "nodes": [
            { "id": "call", "type": "workflow", "workflow": "./child.json" } ] }),
    );
    let out = env.run(&parent, "{}", &[]);
    assert_code(&out, 1, "a failed child");
    let db = env.db();
    let id: String = db
        .query_row(
            "SELECT id FROM executions WHERE parent_id IS NULL",
            [],
            |r| r.get(0),
        )
        .unwrap();
    let shown = stdout(&env.cmd(["show", &id]));
    let line = shown
        .lines()
        .find(|l| l.contains("↳"))
        .unwrap_or_else(|| panic!("no child line:\n{shown}"));
    assert!(line.ends_with("first line …"), "{line}");
    assert!(!line.contains("x0a"), "{line}");
}

/// `logs --node each[1]` and `--node loop#2` give the lines of one item or iteration, labelled
/// as `logs` labels them, and name only its failure.
#[test]
fn logs_of_one_item_or_iteration() {
    let env = Env::new();
    let wf = env.write_workflow(
        "parts.json",
        &json!({"id": "parts", "nodes": [
            {"id": "each", "type": "code", "fail_fast": false, "for_each": ["a", "b", "c"],
             "after": ["loop"],
             "code": "print('item says', item)\nif item != 'a':\n    raise ValueError(item)\nreturn item"},
            {"id": "loop", "type": "code",
             "repeat": {"until": {"op": "ge", "left": "{{ output }}", "right": 2}, "max_iterations": 3},
             "code": "print('iteration', iteration)\nreturn iteration"}]}),
    );
    assert_code(&env.run(&wf, "{}", &[]), 1, "items fail");
    let id = env.only_execution_id();
    let logs = |node: &str| env.cmd(["logs", &id, "--node", node]);
    let one = logs("each[1]");
    assert_code(&one, 0, "logs of item 1");
    let lines = stdout(&one);
    assert!(
        lines.contains(" each[1] | item says b") && lines.lines().count() == 1,
        "{lines}"
    );
    let failed = String::from_utf8_lossy(&one.stderr).into_owned();
    assert!(
        failed.contains("item 1 failed") && !failed.contains("item 2"),
        "{failed}"
    );
    let all = stdout(&logs("each"));
    assert_eq!(all.matches("item says").count(), 3, "{all}");
    let iteration = stdout(&logs("loop#2"));
    assert!(
        iteration.contains(" loop#2 | iteration 2") && iteration.lines().count() == 1,
        "{iteration}"
    );
    // An item or iteration the node did not run is an error, as an unknown node is, naming
    // those it ran: it printed nothing and exited 0, which reads as an item without output.
    for (asked, said) in [
        (
            "each[7]",
            "node 'each' of execution {id} has no item 7: it ran 3 items (each[0] to each[2])",
        ),
        (
            "loop#3",
            "node 'loop' of execution {id} has no iteration 3: it ran 2 iterations (loop#1 to loop#2)",
        ),
        (
            "loop[0]",
            "node 'loop' of execution {id} has no item 0: it ran 2 iterations (loop#1 to loop#2)",
        ),
        (
            "each#1",
            "node 'each' of execution {id} has no iteration 1: it ran 3 items (each[0] to each[2])",
        ),
    ] {
        let out = logs(asked);
        assert_code(&out, 2, asked);
        assert_eq!(stdout(&out), "", "{}", describe(&out));
        assert!(
            stderr(&out).contains(&said.replace("{id}", &id)),
            "{}",
            describe(&out)
        );
    }
    assert_code(&logs("nope[1]"), 2, "no such node");
}

/// `show` prints a node's traceback under its error when it says more: a code node's frames,
/// not a failed command's `Type: message` a second time.
#[test]
fn show_prints_a_traceback_only_when_it_says_more_than_the_error() {
    let env = Env::new();
    let wf = env.write_workflow(
        "two.json",
        &json!({"id": "two", "max_parallel": 2, "nodes": [
            {"id": "cmd", "type": "command", "shell": true, "on_error": "continue",
             "command": "echo oops >&2; exit 3"},
            {"id": "div", "type": "code", "code": "return 1/0"}]}),
    );
    let out = env.run(&wf, "{}", &[]);
    assert_code(&out, 1, "the workflow fails");
    let shown = stdout(&env.cmd(["show", &env.only_execution_id()]));
    assert_eq!(
        shown
            .matches("CommandFailed: command exited with code 3")
            .count(),
        1,
        "the command's error once, no traceback repeating it:\n{shown}"
    );
    assert!(
        shown.contains("Traceback (most recent call last)")
            && shown.contains("ZeroDivisionError: division by zero"),
        "the code node's traceback:\n{shown}"
    );
}

/// Which value failed, and where: `show` prints each failed item's input and traceback under
/// its line (the first five; the node's own error no longer repeats the first one's), and says
/// how many more `show --json` has.
#[test]
fn show_prints_the_input_and_traceback_of_each_failed_item() {
    let env = Env::new();
    let wf = env.write_workflow(
        "each.json",
        &json!({"id": "each", "nodes": [
            {"id": "each", "type": "code", "fail_fast": false,
             "for_each": ["a", "b1", "c", "d2", "e3", "f4", "g5", "h6"],
             "code": "if item[-1].isdigit():\n    raise ValueError('no ' + item)\nreturn item"}]}),
    );
    assert_code(&env.run(&wf, "{}", &[]), 1, "items fail");
    let shown = stdout(&env.cmd(["show", &env.only_execution_id()]));
    for (i, v) in [(1, "b1"), (3, "d2"), (4, "e3"), (5, "f4"), (6, "g5")] {
        let line = format!("item {i}  error");
        let at = shown
            .find(&line)
            .unwrap_or_else(|| panic!("{line}:\n{shown}"));
        let below: Vec<&str> = shown[at..].lines().skip(1).take(4).collect();
        assert_eq!(
            below[0].trim(),
            format!("input: {{\"item\":\"{v}\",\"index\":{i}}}"),
            "{shown}"
        );
        assert!(
            below[1].trim() == "Traceback (most recent call last):"
                && below.iter().any(|l| l.contains("<node each>")),
            "{shown}"
        );
    }
    assert_eq!(
        shown.matches("Traceback (most recent call last)").count(),
        5,
        "{shown}"
    );
    assert!(!shown.contains("\"h6\",\"index\""), "{shown}");
    assert!(
        shown.contains("(the input and traceback of 1 more failed: show --json)"),
        "{shown}"
    );
    assert!(!shown.contains("did not start"), "every item ran:\n{shown}");
}

/// A timeout (or a stop) ends a `for_each` node without a row for the items that had not
/// started: `show` says which (a pause records them `skipped`, and needs no such line).
#[test]
fn show_says_which_items_a_timeout_kept_from_starting() {
    let env = Env::new();
    let wf = env.write_workflow(
        "each.json",
        &json!({"id": "each", "timeout_ms": 1000, "nodes": [
            {"id": "each", "type": "code", "for_each": [0, 1, 2, 3, 4, 5],
             "code": "if index == 1:\n    import time\n    time.sleep(30)\nreturn item"}]}),
    );
    assert_code(&env.run(&wf, "{}", &[]), 124, "the timeout");
    let shown = stdout(&env.cmd(["show", &env.only_execution_id()]));
    assert!(shown.contains("item 0  success"), "{shown}");
    assert!(shown.contains("item 1  timeout"), "{shown}");
    assert!(
        shown.contains("· 4 of 6 items did not start: 2–5\n"),
        "{shown}"
    );
}

/// A row keeps a node's last attempt; the ones before it (why it failed the first times) are
/// listed from its events, in `show` and in the record, for a node and for an item.
#[test]
fn show_lists_the_attempts_before_the_last() {
    let env = Env::new();
    let count = env.path("count");
    // Fails until its third attempt; each item fails its first attempt.
    let flaky = format!(
        "p = {:?}\nn = int(open(p).read()) if __import__('os').path.exists(p) else 0\nopen(p, 'w').write(str(n + 1))\nif n < 2:\n    raise ValueError('not yet %d' % n)\nreturn n",
        count.display().to_string()
    );
    let wf = env.write_workflow(
        "retry.json",
        &json!({"id": "retry", "nodes": [
            {"id": "flaky", "type": "code", "retry": {"max_attempts": 3, "backoff_ms": 1}, "code": flaky},
            {"id": "each", "type": "code", "for_each": [0, 1], "after": ["flaky"],
             "retry": {"max_attempts": 2, "backoff_ms": 1},
             "code": format!("import os\np = {:?} + str(item)\nif not os.path.exists(p):\n    open(p, 'w').close()\n    raise KeyError('first')\nreturn item", env.path("item").display().to_string())}]}),
    );
    let out = env.run(&wf, "{}", &[]);
    assert_success(&out, "a run that succeeds on retries");
    let id = env.only_execution_id();
    let text = stdout(&env.cmd(["show", &id]));
    let at = text.find("✓ flaky").expect("the node is shown");
    let lines: Vec<&str> = text[at..].lines().skip(1).take(2).collect();
    assert!(
        lines[0].starts_with("    attempt 1: error") && lines[0].contains("ValueError: not yet 0"),
        "{text}"
    );
    assert!(
        lines[1].contains("attempt 2: error") && lines[1].contains("not yet 1"),
        "{text}"
    );
    let record: Value = serde_json::from_str(&stdout(&env.cmd(["show", &id, "--json"]))).unwrap();
    let flaky = &record["nodes"][0];
    assert_eq!(flaky["attempt"], 3, "{flaky}");
    let earlier = flaky["earlier_attempts"]
        .as_array()
        .expect("earlier attempts");
    assert_eq!(
        earlier
            .iter()
            .map(|a| (a["attempt"].clone(), a["error"]["type"].clone()))
            .collect::<Vec<_>>(),
        [
            (json!(1), json!("ValueError")),
            (json!(2), json!("ValueError"))
        ]
    );
    let items = record["nodes"][1]["items"].as_array().expect("items");
    for item in items {
        let earlier = item["earlier_attempts"]
            .as_array()
            .expect("an item's earlier attempt");
        assert_eq!(earlier.len(), 1, "{item}");
        assert_eq!(earlier[0]["error"]["type"], "KeyError", "{item}");
    }
    // A retry withdrawn (another node failed for good during the backoff) makes that attempt
    // the row's own: it is not listed again as an earlier one.
    let withdrawn = env.write_workflow(
        "withdrawn.json",
        &json!({"id": "withdrawn", "max_parallel": 2, "nodes": [
            {"id": "slow", "type": "code", "retry": {"max_attempts": 2, "backoff_ms": 5000},
             "code": "raise ValueError('again later')"},
            {"id": "boom", "type": "code", "code": "import time\ntime.sleep(0.3)\nraise KeyError('now')"}]}),
    );
    let out = env.run(&withdrawn, "{}", &[]);
    assert_code(&out, 1, "a run that fails during a backoff");
    let last = env.execution_ids().pop().unwrap();
    let record: Value = serde_json::from_str(&stdout(&env.cmd(["show", &last, "--json"]))).unwrap();
    let slow = record["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["node_id"] == "slow")
        .unwrap();
    assert_eq!(slow["attempt"], 1, "{slow}");
    assert!(slow.get("earlier_attempts").is_none(), "{slow}");
    // A node that was not retried has none.
    let plain = env.write_workflow(
        "plain.json",
        &json!({"id": "plain", "nodes": [
        {"id": "a", "type": "code", "code": "return 1"}]}),
    );
    let out = env.run(&plain, "{}", &["--json"]);
    let record: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        record["nodes"][0].get("earlier_attempts").is_none(),
        "{record}"
    );
}
