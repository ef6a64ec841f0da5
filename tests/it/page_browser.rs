//! The web page in a real browser: Debian's Chromium driven by playwright-core
//! (`tests/browser/scenarios.js`, the keyboard's scenarios in `keyboard.js`) against the real
//! `flowrun serve`, real Python and, for the streamed LLM answer, the provider stand-in.
//! Screenshots of the run view and the node panel go to `target/screenshots/`
//! (`FLOWRUN_SCREENSHOTS_DIR=docs/screenshots` refreshes the README's). These tests fail — never
//! skip — when Chromium, Node.js or npm is missing. They run in the `browser` nextest group (one
//! at a time).

use crate::support::browser::{Scenario, run};
use crate::support::llm_server::{Reply, Server as Llm};
use crate::support::serve::{ServeOpts, Server, World};
use serde_json::{Value, json};
use std::time::Duration;

const ANSWER: &str =
    "Once upon a time, a workflow ran in three steps and every one of them was seen.";
const KEY: &str = "sk-page-test-3b8d0c1e";

/// The saved workflows every scenario can use.
fn world() -> World {
    let w = World::new();
    w.save(
        "greet.json",
        &json!({"id": "greet", "name": "Greeter", "description": "says hello",
            "inputs": {"type": "object", "required": ["name"], "properties": {
                "name": {"type": "string", "title": "Your name"},
                "times": {"type": "integer", "default": 2, "minimum": 1}}},
            "nodes": [
                {"id": "hello", "name": "Say hello", "type": "template", "template": "Hello, {{ trigger.name }} x{{ trigger.times }}"},
                {"id": "done", "type": "set", "fields": {"greeting": "{{ nodes.hello.output.text }}"}}]}),
    );
    w.save(
        "fails.json",
        &json!({"id": "fails", "name": "Fails", "nodes": [
            {"id": "ok", "type": "template", "template": "fine"},
            {"id": "bad", "name": "Check the input", "type": "code",
             "code": "print('about to fail')\nraise ValueError('the input was bad')"}]}),
    );
    w.save(
        "echo-child.json",
        &json!({"id": "echo-child", "name": "Echo child", "nodes": [
            {"id": "say", "type": "template", "template": "{{ trigger.word }}!"}]}),
    );
    w.save(
        "family.json",
        &json!({"id": "family", "name": "Family", "nodes": [
            {"id": "each", "type": "workflow", "workflow": "./echo-child.json",
             "for_each": ["hi", "yo"], "inputs": {"word": "{{ item }}"}}]}),
    );
    w.save(
        "slow.json",
        &json!({"id": "slow", "name": "Slow", "nodes": [
            {"id": "begin", "type": "template", "template": "go"},
            {"id": "sleep", "name": "Wait a long time", "type": "delay", "ms": 30000}]}),
    );
    // Short delays, then a last step: ~10 s in all to press Pause in on a busy machine (one
    // delay of 2.5 s was too short for a CI run), and the pause lands at most 2 s after it, once
    // the delay running ends.
    w.save(
        "pausable.json",
        &json!({"id": "pausable", "name": "Pausable", "nodes": [
            {"id": "d1", "type": "delay", "ms": 2000},
            {"id": "d2", "type": "delay", "ms": 2000},
            {"id": "d3", "type": "delay", "ms": 2000},
            {"id": "d4", "type": "delay", "ms": 2000},
            {"id": "d5", "type": "delay", "ms": 2000},
            {"id": "then", "type": "template", "template": "after"}]}),
    );
    // Input the form cannot check for itself: a minimum inside a list's items, and a rule about
    // the input as a whole (no field of it).
    w.save(
        "order.json",
        &json!({"id": "order", "name": "Order", "inputs": {"type": "object", "minProperties": 1,
                "properties": {
                    "note": {"type": "string"},
                    "lines": {"type": "array", "items": {"type": "object", "required": ["qty"],
                        "properties": {"qty": {"type": "integer", "minimum": 1}}}}}},
            "nodes": [{"id": "say", "type": "template", "template": "{{ trigger.lines }}"}]}),
    );
    // A list field first, with a default longer than its box: it opens at its start.
    w.save(
        "batch.json",
        &json!({"id": "batch", "name": "Batch", "inputs": {"type": "object", "properties": {
                    "numbers": {"type": "array", "items": {"type": "integer"},
                        "default": [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]}}},
            "nodes": [{"id": "say", "type": "template", "template": "{{ trigger.numbers }}"}]}),
    );
    // A branch not taken: one of three steps is skipped.
    w.save(
        "route.json",
        &json!({"id": "route", "name": "Route", "nodes": [
            {"id": "check", "type": "condition", "if": {"op": "eq", "left": "a", "right": "a"},
             "then": ["yes"], "else": ["no"]},
            {"id": "yes", "type": "template", "template": "took yes"},
            {"id": "no", "type": "template", "template": "took no"}]}),
    );
    w.save(
        "needs-key.json",
        &json!({"id": "needs-key", "name": "Needs a key",
            "connections": {"k": {"env": "FLOWRUN_PAGE_MISSING_KEY"}},
            "nodes": [{"id": "call", "type": "http_request", "url": "http://127.0.0.1:9/", "connection": "k"}]}),
    );
    w
}

fn config(s: &Server) -> Value {
    json!({"url": s.url, "token": s.token, "answer": ANSWER})
}

#[test]
fn the_form_validates_before_anything_starts_and_a_double_click_runs_once() {
    let w = world();
    let s = w.serve(&[]);
    run("form_run", config(&s), &w.tmp_dir());
}

/// The Run button's reason for an agent CLI the server cannot find (`GET /api/workflows` lists
/// each workflow's `agents`): an install hint, or the path that has no executable file.
#[test]
fn run_is_disabled_with_how_to_get_a_missing_agent_cli() {
    use crate::support::agents::{agent, path_without_agents, standins};
    let w = world();
    let found = standins().join("claude");
    for (file, name, fields) in [
        ("review.json", "Reviews code", json!({})),
        (
            "local.json",
            "Local tool",
            json!({"command": "./bin/no-such-claude"}),
        ),
        (
            "found.json",
            "Found tool",
            json!({"command": found.to_str().unwrap()}),
        ),
    ] {
        w.save(
            file,
            &json!({"id": file.trim_end_matches(".json"), "name": name,
                    "nodes": [agent("review", "claude_code", fields)]}),
        );
    }
    let s = w.serve_with(&[], &[("PATH", &path_without_agents())]);
    run("agent_reason", config(&s), &w.tmp_dir());
}

#[test]
fn a_three_step_run_shows_its_steps_and_the_llm_text_as_it_streams() {
    let w = world();
    // The answer in pieces, 150 ms apart: the page must show part of it before the end.
    let words: Vec<String> = ANSWER.split_inclusive(' ').map(str::to_string).collect();
    let pieces: Vec<&str> = words.iter().map(String::as_str).collect();
    let llm = Llm::scripted([Reply::openai_stream(
        "gpt-4o-mini",
        &pieces,
        12,
        9,
        Duration::from_millis(150),
    )]);
    w.save(
        "story.json",
        &json!({"id": "story", "name": "Story",
            "connections": {"openai": {"env": "OPENAI_API_KEY"}},
            "nodes": [
                {"id": "prep", "name": "Prepare the prompt", "type": "template", "template": "Tell a story"},
                {"id": "ask", "name": "Ask the model", "type": "llm", "provider": "openai", "model": "gpt-4o-mini",
                 "connection": "openai", "prompt": "{{ nodes.prep.output.text }}", "stream": true, "base_url": llm.url("")},
                {"id": "finish", "name": "Finish", "type": "set", "fields": {"story": "{{ nodes.ask.output.content }}"}}]}),
    );
    let s = w.serve_with(&[], &[("OPENAI_API_KEY", KEY)]);
    let started = std::time::SystemTime::now();
    let result = run("watch_stream", config(&s), &w.tmp_dir());
    let partial = result["partial"].as_str().unwrap();
    assert!(
        !partial.is_empty() && partial.len() < ANSWER.len(),
        "{partial}"
    );
    crate::support::browser::assert_saved("run-view.png", started);
}

#[test]
fn a_breakpoint_from_the_run_options_pauses_the_run() {
    let w = world();
    let s = w.serve(&[]);
    run("breakpoint", config(&s), &w.tmp_dir());
    let paused = w
        .execution_ids()
        .into_iter()
        .filter(|id| w.execution(id).status == "paused")
        .count();
    assert_eq!(paused, 1, "one execution paused, recorded in the store");
}

#[test]
fn a_parent_lists_its_sub_workflow_executions_and_each_links_back() {
    let w = world();
    let s = w.serve(&[]);
    run("family", config(&s), &w.tmp_dir());
}

#[test]
fn a_failed_nodes_panel_shows_its_traceback() {
    let w = world();
    let s = w.serve(&[]);
    let started = std::time::SystemTime::now();
    run("traceback", config(&s), &w.tmp_dir());
    crate::support::browser::assert_saved("node-panel.png", started);
}

/// A step that failed twice and then succeeded: its node panel lists the two attempts before
/// its last, each with its error and traceback — as the execution ends with the panel open, and
/// for the past execution; each item of a `for_each` step its own; a step run once lists none.
#[test]
fn a_retried_steps_panel_lists_its_earlier_attempts() {
    let w = world();
    // Counts its attempts in a file of this test's world: fails the first two, differently.
    let call = format!(
        "import os\np = {:?}\nn = int(open(p).read()) if os.path.exists(p) else 0\nopen(p, 'w').write(str(n + 1))\nif n == 0:\n    raise TimeoutError('the service did not answer')\nif n == 1:\n    raise ValueError('rate limited, try later')\nreturn {{'tries': n + 1}}",
        w.path("call-attempts").display().to_string()
    );
    // Each item fails its first attempt.
    let each = format!(
        "import os\np = {:?} + str(item)\nif not os.path.exists(p):\n    open(p, 'w').close()\n    raise KeyError('not ready')\nreturn item",
        w.path("item-seen-").display().to_string()
    );
    w.save(
        "flaky.json",
        &json!({"id": "flaky", "name": "Flaky", "nodes": [
            // Long enough to open the next step's panel before it runs.
            {"id": "wait", "type": "delay", "ms": 1500},
            {"id": "call", "name": "Call the service", "type": "code",
             "retry": {"max_attempts": 3, "backoff_ms": 1}, "code": call},
            {"id": "each", "type": "code", "for_each": [0, 1],
             "retry": {"max_attempts": 2, "backoff_ms": 1}, "code": each},
            {"id": "steady", "type": "template", "template": "once"}]}),
    );
    let s = w.serve(&[]);
    run("earlier_attempts", config(&s), &w.tmp_dir());
}

/// The server refuses input the form could not check: the field it is about is marked and has
/// the focus; a refusal of the input as a whole puts the focus on the message.
#[test]
fn a_refused_input_marks_and_focuses_the_field_it_is_about() {
    let w = world();
    let s = w.serve(&[]);
    run("refused_input", config(&s), &w.tmp_dir());
}

#[test]
fn a_skipped_step_is_counted_apart_from_the_steps_that_ran() {
    let w = world();
    let s = w.serve(&[]);
    run("skipped_step", config(&s), &w.tmp_dir());
}

#[test]
fn stop_rerun_and_delete_from_the_page() {
    let w = world();
    let s = w.serve(&[]);
    run("stop_rerun_delete", config(&s), &w.tmp_dir());
}

/// Also: after Stop or Pause a second Enter starts nothing (the focus is on the status, not on
/// Re-run or Resume).
#[test]
fn run_stop_and_delete_with_the_keyboard_keep_the_focus_where_the_user_is() {
    let w = world();
    let s = w.serve(&[]);
    run("keyboard_stop_delete", config(&s), &w.tmp_dir());
}

#[test]
fn the_history_refreshes_when_the_cli_runs_something() {
    let w = world();
    let s = w.serve(&[]);
    let mut sc = Scenario::start("history_cli", config(&s), &w.tmp_dir());
    sc.expect_step("run_cli");
    let file = w.write_workflow(
        "from-cli.json",
        &json!({"id": "from-cli", "nodes": [{"id": "t", "type": "template", "template": "x"}]}),
    );
    w.cli_ok(&["run", file.to_str().unwrap()]);
    let id = w.only_execution_id();
    sc.answer(json!({"id": id}));
    sc.finish();
}

/// Also: the skip links past the history to the run form and the execution, and Escape closing
/// the node panel when a Tab took the focus out of it.
#[test]
fn keyboard_only_from_load_to_result() {
    let w = world();
    let s = w.serve(&[]);
    run("keyboard", config(&s), &w.tmp_dir());
}

/// Also: an output too large to store shows, in its node panel, the text the store kept (not
/// that text escaped inside the truncation marker).
#[test]
fn a_long_unbroken_workflow_name_never_widens_the_page() {
    let w = world();
    let long = format!("Long{}", "x".repeat(296));
    w.save(
        "long.json",
        &json!({"id": "long", "name": long, "inputs": {"type": "object", "required": ["v"],
                "properties": {"v": {"type": "string"}}},
            "nodes": [{"id": "say", "type": "template", "template": "{{ trigger.v }}"}]}),
    );
    w.save(
        "big.json",
        &json!({"id": "big", "name": "Big", "nodes": [{"id": "rows", "type": "code",
            "code": "return {'rows': [{'i': i, 'text': 'x' * 100} for i in range(15000)]}"}]}),
    );
    let s = w.serve(&[]);
    let mut c = config(&s);
    c["long_name"] = json!(long);
    run("long_names", c, &w.tmp_dir());
}

#[test]
fn axe_finds_no_serious_problem_at_desktop_width_and_375_px() {
    let w = world();
    let s = w.serve(&[]);
    let report = run("axe", config(&s), &w.tmp_dir());
    assert_eq!(report.as_array().unwrap().len(), 2, "{report}");
}

#[test]
fn after_a_restart_with_the_same_token_the_page_follows_on() {
    let w = world();
    let token_file = w.path("page.token");
    let tf = token_file.to_str().unwrap().to_string();
    let mut s = w.serve(&["--token-file", &tf]);
    let port = s.port();
    let mut sc = Scenario::start("reconnect", config(&s), &w.tmp_dir());
    sc.expect_step("start_cli");
    // Three steps of about 1.2 s each, run by the CLI: they go on while the server restarts.
    let file = w.write_workflow(
        "cli-slow.json",
        &json!({"id": "cli-slow", "nodes": [
            {"id": "a", "type": "delay", "ms": 1200},
            {"id": "b", "type": "delay", "ms": 1200},
            {"id": "c", "type": "delay", "ms": 1200}]}),
    );
    let mut cli = w.command();
    let mut cli = cli
        .arg("run")
        .arg(&file)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let id = crate::support::wait_for("the CLI's execution", || w.try_execution_ids()?.pop());
    sc.answer(json!({"id": id}));
    sc.expect_step("restart");
    s.child.kill().unwrap();
    s.child.wait().unwrap();
    std::thread::sleep(Duration::from_millis(700));
    let s2 = w.serve_opts(ServeOpts {
        extra: &["--token-file", &tf],
        port: Some(port),
        ..Default::default()
    });
    assert_eq!(s2.token, s.token, "the token survives the restart");
    sc.answer(json!({}));
    sc.finish();
    assert!(cli.wait().unwrap().success());
}

#[test]
fn after_a_restart_with_a_new_token_the_page_asks_for_it_and_shows_no_failure() {
    let w = world();
    let token_file = w.path("page.token");
    let tf = token_file.to_str().unwrap().to_string();
    let mut s = w.serve(&["--token-file", &tf]);
    let port = s.port();
    let mut sc = Scenario::start("new_token", config(&s), &w.tmp_dir());
    sc.expect_step("restart");
    std::fs::remove_file(&token_file).unwrap();
    s.child.kill().unwrap();
    s.child.wait().unwrap();
    let s2 = w.serve_opts(ServeOpts {
        extra: &["--token-file", &tf],
        port: Some(port),
        ..Default::default()
    });
    assert_ne!(s2.token, s.token);
    sc.answer(json!({"token": s2.token}));
    sc.finish();
}

/// Numbers the browser's own field could not read (`1e400`, `0,5`, `1e`) are refused and kept,
/// in the form and in the cost limit; nothing starts until they are fixed.
#[test]
fn a_number_the_page_cannot_read_is_refused_not_dropped() {
    let w = world();
    let s = w.serve(&[]);
    run("numbers", config(&s), &w.tmp_dir());
}

/// A live refresh keeps the focus and the rows "Load more" added; a row deleted moves the focus
/// to the next one and says so.
#[test]
fn a_live_history_refresh_keeps_the_focus_and_the_loaded_rows() {
    let w = world();
    let s = w.serve(&[]);
    run("live_history", config(&s), &w.tmp_dir());
}

/// At 400 px the execution's heading is in view after Run; a step after the failure is "not run".
#[test]
fn a_narrow_page_keeps_the_new_execution_in_view() {
    let w = world();
    w.save(
        "fails-early.json",
        &json!({"id": "fails-early", "name": "Fails early", "nodes": [
            {"id": "bad", "type": "code", "code": "raise ValueError('early')"},
            {"id": "after", "type": "template", "template": "never"}]}),
    );
    let s = w.serve(&[]);
    run("narrow", config(&s), &w.tmp_dir());
}

/// Typed values stay with their workflow (and go with the token); a JSON field says what to
/// type; a workflow whose file changed or went is shown as it is now after Reload.
#[test]
fn typed_values_stay_with_their_workflow() {
    let w = world();
    let s = w.serve(&[]);
    let mut c = config(&s);
    c["workflows"] = json!(w.workflows());
    run("typed_values", c, &w.tmp_dir());
}

/// Two pages and more: "Load more" after a live refresh, a double click, the id filter.
#[test]
fn history_pages_stay_whole_through_refreshes_and_filters() {
    let w = world();
    let s = w.serve(&[]);
    run("history_pages", config(&s), &w.tmp_dir());
}

/// The address names the workflow and the execution shown: a reload or the link shows them.
#[test]
fn the_address_brings_back_the_workflow_and_the_execution() {
    let w = world();
    let s = w.serve(&[]);
    run("address", config(&s), &w.tmp_dir());
}
