//! `agent` nodes against the stand-in CLIs of `tests/standins/` (each prints its CLI's documented
//! event format): output, usage and cost, the false endings, a hang after the result, timeouts,
//! resumed sessions and totals; [`setup`]: what surrounds a run (a missing CLI, secrets,
//! validation, `doctor` and a real CLI's `--version`, the API, the example).

mod setup;

use crate::support::agents::{World, agent, workflow};
use crate::support::{assert_close, assert_code, assert_success, describe, stderr};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

/// A prompt that would be trouble anywhere near a shell or an option parser.
const TRICKY: &str = "-- don't $(touch pwned) `id`; echo \"hi\"\nsecond line";

#[test]
fn claude_output_usage_once_per_message_reported_cost_and_its_command_line() {
    let w = World::new();
    let rec = w.record_file("claude.rec");
    let wf = workflow(vec![agent(
        "plan",
        "claude_code",
        json!({"prompt": TRICKY, "model": "sonnet", "max_turns": 5,
               "permission_mode": "plan", "allowed_tools": ["Read", "Bash(git log:*)"],
               "args": ["--verbose"], "env": {"STANDIN_RECORD": rec}}),
    )]);
    let out = w.run_wf("wf.json", &wf, &[]);
    assert_success(&out, "run");
    assert!(
        !w.path("pwned").exists(),
        "the prompt reached a shell:\n{}",
        describe(&out)
    );
    let id = w.only_execution_id();
    let o = w.node(&id, "plan").output().clone();
    assert_eq!(o["text"], format!("Done: {}", TRICKY.trim()));
    assert_eq!(o["model"], "claude-sonnet-4-5-20250929");
    assert_eq!(o["session_id"].as_str().unwrap().len(), 36, "{o}");
    // Message 1's usage comes on two events (one per content block) and counts once.
    assert_eq!(
        o["usage"],
        json!({"input_tokens": 20, "output_tokens": 80, "cache_read_tokens": 1000,
               "cache_write_tokens": 1000})
    );
    assert_close(&o["cost_usd"], 0.0123, "the cost Claude reported");
    assert_eq!(o["cost_source"], "reported");
    assert_eq!(o["turns"], 2);
    assert_eq!(o["exit_code"], 0);
    assert!(o["duration_ms"].as_i64().unwrap() > 0, "{o}");

    // The flags as Claude spells them; the prompt on stdin, as it is.
    let r = w.records("claude.rec");
    assert_eq!(r.len(), 1);
    assert_eq!(
        r[0]["argv"],
        json!([
            "-p",
            "--allowedTools",
            "Read",
            "Bash(git log:*)",
            "--output-format",
            "stream-json",
            "--verbose",
            "--model",
            "sonnet",
            "--max-turns",
            "5",
            "--permission-mode",
            "plan",
            "--verbose"
        ])
    );
    assert_eq!(r[0]["stdin"], TRICKY);

    // Live: a summary line per event, and the event's JSON (level debug) in the stored logs.
    let logs = w.node_logs(&id, "plan");
    let info: Vec<&str> = logs
        .iter()
        .filter(|(l, _)| l == "info")
        .map(|(_, t)| t.as_str())
        .collect();
    for want in [
        "session ",
        "says: I'll look at the files first.",
        "tool Bash: ls",
        "tool result: ",
        "result: success · 2 turns · $0.0123",
    ] {
        assert!(
            info.iter().any(|l| l.starts_with(want)),
            "no `{want}` in {info:#?}"
        );
    }
    let raw: Vec<Value> = logs
        .iter()
        .filter(|(l, _)| l == "debug")
        .map(|(_, t)| serde_json::from_str(t).expect("a debug line is the event's JSON"))
        .collect();
    assert_eq!(raw.first().unwrap()["subtype"], "init");
    assert_eq!(raw.last().unwrap()["type"], "result");
    // The terminal shows the summaries, not the raw JSON.
    let shown = stderr(&out);
    assert!(shown.contains("plan │ tool Bash: ls"), "{shown}");
    assert!(!shown.contains("\"type\":\"result\""), "{shown}");
}

#[test]
fn costs_without_a_reported_one_come_from_the_price_table_or_are_null() {
    let w = World::new();
    let wf = workflow(vec![
        agent(
            "claude_table",
            "claude_code",
            json!({"env": {"STANDIN_SCENARIO": "no_cost"}}),
        ),
        agent("codex_priced", "codex", json!({"model": "gpt-5-codex"})),
        agent("codex_unknown", "codex", json!({})),
        agent("gemini_priced", "gemini", json!({})),
        agent(
            "gemini_unlisted",
            "gemini",
            json!({"model": "gemini-0-imaginary"}),
        ),
    ]);
    let out = w.run_wf("wf.json", &wf, &[]);
    assert_success(&out, "run");
    let id = w.only_execution_id();
    let o = |n: &str| w.node(&id, n).output().clone();

    // Claude without total_cost_usd: Sonnet 4.5 at $3 / $15, cache reads $0.30, writes $3.75.
    let c = o("claude_table");
    assert_eq!(c["cost_source"], "price_table");
    let want = (20.0 * 3.0 + 80.0 * 15.0 + 1000.0 * 0.30 + 1000.0 * 3.75) / 1e6;
    assert_close(&c["cost_usd"], want, "claude priced by the table");

    // Codex reports no cost and no model: the node's model prices it ($1.25, $10, cached
    // $0.125); without one the cost is unknown, not a guess. Usage is there either way.
    let c = o("codex_priced");
    assert_eq!(
        c["usage"],
        json!({"input_tokens": 400, "output_tokens": 120, "cache_read_tokens": 2000,
               "cache_write_tokens": 0})
    );
    assert_eq!(c["cost_source"], "price_table");
    assert_close(
        &c["cost_usd"],
        (400.0 * 1.25 + 120.0 * 10.0 + 2000.0 * 0.125) / 1e6,
        "codex",
    );
    assert_eq!(c["model"], "gpt-5-codex");
    assert_eq!(c["turns"], 1);
    let c = o("codex_unknown");
    assert_eq!(
        (&c["cost_usd"], &c["cost_source"]),
        (&json!(null), &json!(null))
    );
    assert_eq!(c["model"], Value::Null);
    assert_eq!(c["usage"]["output_tokens"], 120);

    // Gemini: the model its init event names (gemini-2.5-pro: $1.25, $10, cached $0.31).
    let g = o("gemini_priced");
    assert_eq!(g["model"], "gemini-2.5-pro");
    assert_eq!(
        g["usage"],
        json!({"input_tokens": 2000, "output_tokens": 200, "cache_read_tokens": 1000,
               "cache_write_tokens": 0})
    );
    assert_eq!(g["cost_source"], "price_table");
    assert_close(
        &g["cost_usd"],
        (2000.0 * 1.25 + 200.0 * 10.0 + 1000.0 * 0.31) / 1e6,
        "gemini",
    );
    assert_eq!(g["turns"], 2);
    assert_eq!(g["text"], "Done: task of gemini_priced");
    let g = o("gemini_unlisted");
    assert_eq!(
        (&g["cost_usd"], &g["cost_source"]),
        (&json!(null), &json!(null))
    );

    // One node of unknown cost makes the execution's total unknown; tokens still add up.
    let h = &w.history_json(&[])[0];
    assert_eq!(h["cost_usd"], Value::Null, "{h}");
    assert_eq!(h["input_tokens"], 2020 + 2 * 2400 + 2 * 3000);
}

#[test]
fn agent_tokens_and_cost_are_summed_in_history_show_and_the_record() {
    let w = World::new();
    let wf = workflow(vec![
        agent("a", "claude_code", json!({})),
        agent("b", "gemini", json!({})),
        agent("c", "codex", json!({"model": "gpt-5.1-codex-mini"})),
    ]);
    assert_success(&w.run_wf("wf.json", &wf, &[]), "run");
    let id = w.only_execution_id();
    let cost = 0.0123
        + (2000.0 * 1.25 + 200.0 * 10.0 + 1000.0 * 0.31) / 1e6
        + (400.0 * 0.25 + 120.0 * 2.0 + 2000.0 * 0.025) / 1e6;
    // Input counts every token the models read: not cached, cache reads and cache writes.
    let (input, output) = (2020 + 3000 + 2400, 80 + 200 + 120);
    let h = &w.history_json(&[])[0];
    assert_eq!(
        (h["input_tokens"].clone(), h["output_tokens"].clone()),
        (json!(input), json!(output))
    );
    assert_close(&h["cost_usd"], cost, "history --json");
    let s = w.show_json(&id);
    assert_eq!(s["input_tokens"], input);
    assert_close(&s["cost_usd"], cost, "show --json");
    let text = crate::support::stdout(&w.cmd(["history"]));
    assert!(text.contains(&format!("{input}/{output}")), "{text}");
}

#[test]
fn false_endings_fail_the_node_saying_which() {
    let w = World::new();
    let mut nodes = Vec::new();
    for cli in ["claude_code", "codex", "gemini"] {
        for s in ["is_error", "no_result", "empty_result", "exit_nonzero"] {
            nodes.push(agent(
                &format!("{cli}-{s}"),
                cli,
                json!({"env": {"STANDIN_SCENARIO": s}, "on_error": "continue"}),
            ));
        }
    }
    nodes.push(agent(
        "claude-max-turns",
        "claude_code",
        json!({"max_turns": 1, "on_error": "continue"}),
    ));
    let out = w.run_wf("wf.json", &workflow(nodes), &[]);
    assert_success(&out, "run (every node continues on error)");
    let id = w.only_execution_id();
    let check = |node: &str, kind: &str, says: &[&str]| {
        let n = w.node(&id, node);
        assert_eq!(n.status, "error", "{node}: {n:?}");
        assert_eq!(n.output, None, "{node}: a failed agent has no output");
        assert_eq!(n.error_type(), kind, "{node}: {}", n.error_message());
        for s in says {
            assert!(
                n.error_message().contains(s),
                "{node}: no `{s}` in {}",
                n.error_message()
            );
        }
    };
    check(
        "claude_code-is_error",
        "AgentFailed",
        &[
            "claude reported an error: is_error: true (subtype success): API Error: 529",
            "(exit code 1)",
        ],
    );
    check(
        "claude-max-turns",
        "AgentFailed",
        &["subtype error_max_turns"],
    );
    // A run that failed after using tokens still cost them: its error says what it spent, and
    // the execution's totals count it.
    let failed = w.node(&id, "claude-max-turns");
    let err = failed.error.as_ref().unwrap();
    let spent = err["cost_usd"].as_f64().expect("the failed run's cost");
    assert!(spent > 0.0, "{err}");
    assert!(err["usage"]["output_tokens"].as_i64().unwrap() > 0, "{err}");
    let total = w.show_json(&id)["cost_usd"].as_f64().unwrap();
    assert!(
        total >= spent,
        "total {total} counts the failed run's {spent}"
    );
    check(
        "codex-is_error",
        "AgentFailed",
        &["codex reported an error: turn.failed: unexpected status 401"],
    );
    check(
        "gemini-is_error",
        "AgentFailed",
        &["gemini reported an error: status \"error\": [API Error: got status: UNAVAILABLE"],
    );
    check(
        "claude_code-no_result",
        "AgentNoResult",
        &["claude ended (exit code 0) without its final result event"],
    );
    check(
        "codex-no_result",
        "AgentNoResult",
        &[
            "codex ended (exit code 1) without its final result event (its last error: stream disconnected",
        ],
    );
    check(
        "gemini-no_result",
        "AgentNoResult",
        &["gemini ended (exit code 0) without its final result event"],
    );
    for cli in ["claude_code", "codex", "gemini"] {
        let exe = if cli == "claude_code" { "claude" } else { cli };
        check(
            &format!("{cli}-empty_result"),
            "AgentEmptyResult",
            &[&format!("{exe}'s final result is empty")],
        );
        check(
            &format!("{cli}-exit_nonzero"),
            "AgentExitCode",
            &[&format!("{exe} exited with code 2 after its final result")],
        );
    }
}

#[test]
fn a_cli_still_running_after_its_result_is_ended_and_the_node_keeps_the_result() {
    let w = World::new();
    // The stand-in ignores SIGTERM and leaves a child holding its stdout: only a kill of its
    // whole process group ends it, 5 s after its result.
    let wf = workflow(vec![
        agent(
            "hang",
            "claude_code",
            json!({"env": {"STANDIN_SCENARIO": "hang_after_result"}}),
        ),
        json!({"id": "after", "type": "template", "template": "{{ nodes.hang.output.text }}"}),
    ]);
    let started = Instant::now();
    let out = w.run_wf("wf.json", &wf, &[]);
    let took = started.elapsed();
    assert_success(&out, "run");
    let id = w.only_execution_id();
    let n = w.node(&id, "hang");
    assert_eq!(n.output()["text"], "Done: task of hang");
    assert_eq!(
        n.output()["exit_code"],
        -9,
        "SIGTERM was ignored, so SIGKILL ended it"
    );
    let ms = n.duration_ms.unwrap();
    assert!((5000.0..30000.0).contains(&ms), "the node took {ms} ms");
    assert!(took < Duration::from_secs(35), "the run took {took:?}");
    assert!(
        w.node_logs(&id, "hang").iter().any(|(l, t)| l == "warning"
            && t == "claude was still running 5 s after its final result: ending its process group"),
        "{:?}",
        w.node_logs(&id, "hang")
    );
    assert_eq!(w.node(&id, "after").output()["text"], "Done: task of hang");
}

#[test]
fn timeout_ms_bounds_the_whole_agent_run() {
    let w = World::new();
    let wf = workflow(vec![agent(
        "slow",
        "codex",
        json!({"timeout_ms": 1500, "env": {"STANDIN_SCENARIO": "slow", "STANDIN_SLEEP": "60"}}),
    )]);
    let started = Instant::now();
    let out = w.run_wf("wf.json", &wf, &[]);
    assert_code(&out, 1, "run");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
    let id = w.only_execution_id();
    let n = w.node(&id, "slow");
    assert_eq!(n.error_type(), "Timeout", "{}", n.error_message());
    assert!(
        n.error_message()
            .contains("codex did not finish within the node's timeout of 1500 ms; its process group was killed"),
        "{}",
        n.error_message()
    );
    // The node's own timeout fired (a node error that could be retried), not the runner's.
    assert_eq!(w.execution(&id).status, "error");
}

#[test]
fn a_second_node_resumes_the_first_ones_session() {
    let w = World::new();
    let rec = w.record_file("resume.rec");
    let mut nodes = Vec::new();
    for cli in ["claude_code", "codex", "gemini"] {
        let env = json!({"STANDIN_RECORD": rec});
        nodes.push(agent(
            &format!("{cli}_plan"),
            cli,
            json!({"prompt": format!("plan the {cli} change"), "env": env}),
        ));
        nodes.push(agent(
            &format!("{cli}_build"),
            cli,
            json!({
            "prompt": "now implement it", "env": env,
            "resume_session": format!("{{{{ nodes.{cli}_plan.output.session_id }}}}")}),
        ));
    }
    assert_success(&w.run_wf("wf.json", &workflow(nodes), &[]), "run");
    let id = w.only_execution_id();
    for cli in ["claude_code", "codex", "gemini"] {
        let plan = w.node(&id, &format!("{cli}_plan")).output().clone();
        let build = w.node(&id, &format!("{cli}_build")).output().clone();
        let sid = plan["session_id"].as_str().unwrap();
        assert_eq!(build["session_id"], sid, "{cli}");
        // The stand-in found the session by the id it was given: it quotes its first prompt.
        assert_eq!(
            build["text"],
            format!(
                "Continuing session {sid} (earlier: 'plan the {cli} change'). Done: now implement it"
            )
        );
    }
    let argvs: Vec<Value> = w
        .records("resume.rec")
        .into_iter()
        .map(|r| r["argv"].clone())
        .collect();
    let has = |pair: &[&str]| {
        argvs.iter().any(|a| {
            let a: Vec<&str> = a
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap())
                .collect();
            a.windows(pair.len()).any(|w| w == pair)
        })
    };
    let sid = |n: &str| {
        w.node(&id, n).output()["session_id"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert!(has(&["--resume", &sid("claude_code_plan")]), "{argvs:?}");
    assert!(has(&["resume", &sid("codex_plan"), "-"]), "{argvs:?}");
    assert!(has(&["--resume", &sid("gemini_plan")]), "{argvs:?}");

    // A session the CLI does not know, and a template that yields no session, are errors.
    let wf = workflow(vec![
        agent(
            "unknown",
            "claude_code",
            json!({"resume_session": "no-such-session", "on_error": "continue"}),
        ),
        json!({"id": "empty", "type": "set", "fields": {"sid": null}}),
        agent(
            "none",
            "gemini",
            json!({"resume_session": "{{ nodes.empty.output.sid }}"}),
        ),
    ]);
    assert_code(&w.run_wf("wf2.json", &wf, &[]), 1, "run");
    let id = w.execution_ids().pop().unwrap();
    let n = w.node(&id, "unknown");
    assert!(
        n.error_message()
            .contains("No conversation found with session ID: no-such-session"),
        "{}",
        n.error_message()
    );
    let n = w.node(&id, "none");
    assert!(
        n.error_message().contains("resume_session is empty"),
        "{}",
        n.error_message()
    );
}

#[test]
fn the_terminal_shows_the_agents_latest_action_on_the_running_node() {
    // On a terminal (a pseudo-terminal from util-linux's `script`), the running node's spinner
    // says what the agent did last: here its session started, then it thinks for 2 s.
    let w = World::new();
    let wf = workflow(vec![agent(
        "plan",
        "claude_code",
        json!({"env": {"STANDIN_SCENARIO": "slow", "STANDIN_SLEEP": "2"}}),
    )]);
    let file = w.write_workflow("wf.json", &wf);
    let quote =
        |p: &std::path::Path| format!("'{}'", p.display().to_string().replace('\'', r"'\''"));
    let line = format!(
        "{} run {} --input '{{}}'",
        quote(std::path::Path::new(env!("CARGO_BIN_EXE_flowrun"))),
        quote(&file)
    );
    let out = std::process::Command::new("script")
        .args(["-qec", &line, "/dev/null"])
        .current_dir(w.dir.path())
        .env("PATH", crate::support::agents::path_with_standins())
        .env("HOME", w.home())
        .env("FLOWRUN_DB", w.db_path())
        .env("FLOWRUN_CACHE_DIR", w.cache_dir())
        .env("TMPDIR", w.tmp_dir())
        .env("NO_COLOR", "1")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("util-linux `script` runs (apt-get install util-linux)");
    let screen = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{screen}");
    assert!(
        screen.contains("plan agent · session "),
        "the spinner does not show the agent's action:\n{screen}"
    );
    assert!(!screen.contains("\"subtype\":\"init\""), "{screen}");
}
