//! What surrounds an agent run: a missing CLI (before anything is spawned, in the CLI and the
//! API), the connections the agent gets, validation, `doctor` with the stand-ins and with a real
//! CLI from npm, and `examples/agent-review.yaml`.

use crate::support::agents::{
    World, agent, path_with_standins, path_without_agents, standins, workflow,
};
use crate::support::{
    assert_close, assert_code, assert_success, contains_bytes, describe, repo_root, stderr, stdout,
};
use serde_json::{Value, json};

#[test]
fn a_missing_cli_fails_before_anything_is_spawned() {
    let w = World::new();
    let path = path_without_agents();
    let wf = workflow(vec![
        agent("plan", "claude_code", json!({})),
        agent("review", "claude_code", json!({})),
        agent("g", "gemini", json!({"command": "./bin/gemini"})),
    ]);
    let out = w.run_path("wf.json", &wf, &path, &[]);
    assert_code(&out, 3, "run");
    let msg = stderr(&out);
    assert!(
        msg.contains("2 agent CLIs that the workflow runs are not installed"),
        "{msg}"
    );
    assert!(
        msg.contains("claude (Claude Code, for nodes 'plan', 'review'): not found on PATH; install it with `npm install -g @anthropic-ai/claude-code`"),
        "{msg}"
    );
    assert!(
        msg.contains("./bin/gemini (Gemini CLI, for node 'g'): no executable file there; install it with `npm install -g @google/gemini-cli`"),
        "{msg}"
    );
    assert!(msg.contains("--env PATH="), "{msg}");
    assert_eq!(w.execution_count(), 0, "nothing was recorded");

    // The PATH given with --env is the one the check uses (it is the one the child gets); a
    // pinned node needs no CLI.
    let pin = w.write_file("pin.json", r#"{"text": "pinned"}"#);
    let wf = workflow(vec![agent("plan", "claude_code", json!({}))]);
    let p = format!("PATH={}", path_with_standins());
    assert_success(
        &w.run_path("ok.json", &wf, &path, &["--env", &p]),
        "run with --env PATH",
    );
    let pin_arg = format!("plan={}", pin.display());
    assert_success(
        &w.run_path("ok.json", &wf, &path, &["--pin", &pin_arg]),
        "run pinned",
    );
}

#[test]
fn the_agent_gets_only_the_connections_it_names_and_its_transcript_is_redacted() {
    let w = World::new();
    let key = "sk-ant-standin-7f3a9c2e5b1d8f40";
    let other = "other-secret-c0ffee-1234567890";
    let wf = json!({"id": "secrets", "timeout_ms": 40000,
    "connections": {"anthropic": {"env": "ANTHROPIC_API_KEY"}, "other": {"env": "OTHER_SECRET"}},
    "nodes": [
        {"id": "uses_other", "type": "code", "connections": ["other"],
         "code": "import os\nreturn len(os.environ['OTHER_SECRET'])"},
        agent("a", "claude_code", json!({"connections": ["anthropic"], "env": {
            "STANDIN_SCENARIO": "env", "STANDIN_SHOW_ENV": "ANTHROPIC_API_KEY,OTHER_SECRET"}})),
    ]});
    let file = w.write_workflow("wf.json", &wf);
    let mut cmd = w.flowrun();
    cmd.args(["run", file.to_str().unwrap(), "--input", "{}"])
        .env("PATH", path_with_standins())
        .env("HOME", w.home())
        .env("ANTHROPIC_API_KEY", key)
        .env("OTHER_SECRET", other);
    let out = crate::support::output(&mut cmd);
    assert_success(&out, "run");
    let id = w.only_execution_id();
    assert_eq!(w.node(&id, "uses_other").output(), &json!(other.len()));
    let text = w.node(&id, "a").output()["text"].clone();
    assert_eq!(
        text,
        "environment: ANTHROPIC_API_KEY=[REDACTED:ANTHROPIC_API_KEY], OTHER_SECRET=<unset>"
    );
    assert!(
        w.node_logs(&id, "a")
            .iter()
            .any(|(_, l)| l.contains("[REDACTED:ANTHROPIC_API_KEY]")),
        "the transcript has the value, redacted"
    );
    let bytes = w.db_bytes();
    assert!(
        !contains_bytes(&bytes, key.as_bytes()),
        "the key is in the store's bytes"
    );
    assert!(!contains_bytes(&bytes, other.as_bytes()));
    assert!(!stderr(&out).contains(key));
}

#[test]
fn invalid_agent_fields_are_reported_by_validate() {
    let w = World::new();
    let wf = workflow(vec![
        agent("a", "aider", json!({})),
        agent(
            "b",
            "codex",
            json!({"max_turns": 3, "allowed_tools": ["Read"]}),
        ),
        agent(
            "c",
            "gemini",
            json!({"command": "{{ trigger.exe }}", "max_turns": 2}),
        ),
    ]);
    let file = w.write_workflow("wf.json", &wf);
    let out = w.cmd(["validate", file.to_str().unwrap()]);
    assert_code(&out, 2, "validate");
    let e = stderr(&out);
    for want in [
        "node 'a', field 'agent': unknown agent 'aider'; one of: claude_code, codex, gemini",
        "node 'b', field 'max_turns': codex has no command-line option for a turn limit",
        "node 'b', field 'allowed_tools': codex has no allowed-tools option",
        "node 'c', field 'command': the executable is not templated",
        "node 'c', field 'max_turns': gemini has no command-line option",
    ] {
        assert!(e.contains(want), "no `{want}` in {e}");
    }
}

#[test]
fn doctor_lists_the_agent_clis_it_finds_with_their_versions() {
    let w = World::new();
    let out = w.cmd_path(&["doctor", "--json"], &path_with_standins());
    let report: Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("{}", describe(&out)));
    let agents = report["agents"].as_array().expect("an agents list");
    let by = |a: &str| agents.iter().find(|e| e["agent"] == a).unwrap().clone();
    for (a, exe, version) in [
        ("claude_code", "claude", "2.0.37 (Claude Code)"),
        ("codex", "codex", "codex-cli 0.58.0"),
        ("gemini", "gemini", "0.15.0"),
    ] {
        let e = by(a);
        assert_eq!(e["version"], version, "{e}");
        assert_eq!(
            e["path"],
            json!(crate::support::agents::standins().join(exe)),
            "{e}"
        );
    }
    let text = stdout(&w.cmd_path(&["doctor"], &path_with_standins()));
    assert!(text.contains("agent     ✓ codex: "), "{text}");
    assert!(text.contains("codex-cli 0.58.0"), "{text}");

    let out = w.cmd_path(&["doctor", "--json"], &path_without_agents());
    let report: Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("{}", describe(&out)));
    let claude = report["agents"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["agent"] == "claude_code")
        .unwrap()
        .clone();
    assert_eq!(claude["path"], Value::Null);
    assert_eq!(claude["npm_package"], "@anthropic-ai/claude-code");
    let text = stdout(&w.cmd_path(&["doctor"], &path_without_agents()));
    assert!(
        text.contains("agent     - claude_code: `claude` not found on PATH (install Claude Code: npm install -g @anthropic-ai/claude-code)"),
        "{text}"
    );
}

/// Installs `@google/gemini-cli` (the agent CLI whose npm package is the quickest to install:
/// one bundled package, ~3 s here) into `target/agent-clis` once, and returns its `.bin`
/// directory; `Err` says why it could not be (no npm, no registry).
fn real_gemini_cli() -> Result<std::path::PathBuf, String> {
    let prefix = repo_root().join("target/agent-clis");
    let bin = prefix.join("node_modules/.bin");
    if bin.join("gemini").exists() {
        return Ok(bin);
    }
    std::fs::create_dir_all(&prefix).map_err(|e| e.to_string())?;
    let out = std::process::Command::new("npm")
        .args([
            "install",
            "--no-save",
            "--no-audit",
            "--no-fund",
            "--omit=optional",
        ])
        .args(["--ignore-scripts", "--prefix"])
        .arg(&prefix)
        .arg("@google/gemini-cli")
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| format!("npm cannot run: {e}"))?;
    if !out.status.success() || !bin.join("gemini").exists() {
        return Err(format!(
            "npm install @google/gemini-cli failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(bin)
}

#[test]
fn doctor_runs_a_real_agent_cli_for_its_version() {
    // Like the other tests that need npm and the registry, this one fails when they are not
    // there: a check that passes without checking would hide a broken `doctor`.
    let bin = real_gemini_cli().unwrap_or_else(|why| {
        panic!("this test needs npm and the npm registry to install the Gemini CLI: {why}")
    });
    let package: Value = serde_json::from_str(
        &std::fs::read_to_string(bin.join("../@google/gemini-cli/package.json")).unwrap(),
    )
    .unwrap();
    let w = World::new();
    let path = format!("{}:{}", bin.display(), path_without_agents());
    let out = w.cmd_path(&["doctor", "--json"], &path);
    let report: Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("{}", describe(&out)));
    let gemini = report["agents"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["agent"] == "gemini")
        .unwrap()
        .clone();
    assert_eq!(gemini["path"], json!(bin.join("gemini")), "{gemini}");
    assert_eq!(gemini["version"], package["version"], "{gemini}");
    eprintln!(
        "doctor ran the real Gemini CLI {} for its version",
        gemini["version"]
    );
}

#[test]
fn the_api_refuses_a_missing_agent_cli_and_records_agent_totals() {
    let w = crate::support::serve::World::new();
    let home = w.path("home");
    std::fs::create_dir(&home).unwrap();
    let path = path_with_standins();
    let srv = w.serve_with(&[], &[("PATH", &path), ("HOME", home.to_str().unwrap())]);
    let missing = workflow(vec![agent(
        "fix",
        "codex",
        json!({"command": "no-such-codex"}),
    )]);
    let r = srv.post("/api/executions", &json!({"workflow": missing}));
    assert_eq!(r.status, 503, "{}", r.text);
    assert_eq!(r.body["error"], "agent_cli_missing");
    assert_eq!(
        r.body["missing"],
        json!([{"agent": "codex", "command": "no-such-codex", "nodes": ["fix"],
                "npm_package": "@openai/codex"}])
    );
    let message = r.body["message"].as_str().unwrap();
    assert!(
        message.contains("npm install -g @openai/codex") && !message.contains("--env"),
        "{message}"
    );

    let ok = workflow(vec![agent("a", "claude_code", json!({}))]);
    let id = srv.start("/api/executions", &json!({"workflow": ok}));
    let rec = srv.wait_final(&id);
    assert_eq!(rec["status"], "success", "{rec}");
    assert_eq!(rec["input_tokens"], 2020);
    assert_eq!(rec["output_tokens"], 80);
    assert_close(&rec["cost_usd"], 0.0123, "the API record");
}

#[test]
fn the_agent_review_example_runs_against_the_standins() {
    let w = World::new();
    // A copy of the example project, so the run changes nothing in the repository.
    let project = w.path("project");
    std::fs::create_dir(&project).unwrap();
    for f in ["calc.py", "test_calc.py"] {
        std::fs::copy(
            repo_root().join("examples/agent-project").join(f),
            project.join(f),
        )
        .unwrap();
    }
    let input = json!({"project": project}).to_string();
    let mut cmd = w.flowrun();
    cmd.arg("run")
        .arg(repo_root().join("examples/agent-review.yaml"))
        .args(["--input", &input])
        .env("PATH", path_with_standins())
        .env("HOME", w.home());
    let out = crate::support::output(&mut cmd);
    assert_success(&out, "the example");
    let id = w.only_execution_id();
    let plan = w.node(&id, "plan").output().clone();
    let implement = w.node(&id, "implement").output().clone();
    assert_eq!(implement["session_id"], plan["session_id"]);
    assert!(
        implement["text"]
            .as_str()
            .unwrap()
            .starts_with("Continuing session "),
        "{implement}"
    );
    assert_eq!(w.node(&id, "check").output()["exit_code"], 0);
    let summary = w.node(&id, "summary").output().clone();
    assert!(
        summary["tests"].as_str().unwrap().contains("Ran 1 test"),
        "{summary}"
    );
    assert!(standins().join("claude").exists());
}

#[test]
fn validate_and_the_workflow_list_say_which_agent_clis_are_found() {
    let w = crate::support::serve::World::new();
    let wf = json!({"id": "review", "nodes": [
        agent("plan", "claude_code", json!({})),
        agent("fix", "claude_code", json!({})),
        agent("held", "gemini", json!({"pinned": {"text": "kept"}}))]});
    w.save("review.json", &wf);
    let srv = w.serve_with(&[], &[("PATH", &path_without_agents())]);
    assert_eq!(srv.get("/api").body["features"]["agents"], true);

    // Not on the server's PATH: the list and validate say so, and the workflow is not ready
    // (the page's Run button says why). A pinned node's CLI is not needed.
    let missing = json!([{"agent": "claude_code", "name": "Claude Code", "command": "claude",
                          "npm_package": "@anthropic-ai/claude-code", "nodes": ["plan", "fix"],
                          "available": false, "path": null}]);
    let list = srv.get("/api/workflows").body;
    let listed = list["workflows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["id"] == "review");
    let listed = listed.unwrap_or_else(|| panic!("review is listed: {list}"));
    assert_eq!(listed["agents"], missing, "{listed}");
    assert_eq!(listed["ready"], false);
    let r = srv.post("/api/validate", &json!({"workflow": wf}));
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["valid"], true);
    assert_eq!(r.body["agents"], missing);
    assert_eq!(r.body["ready"], false);

    // On the PATH a run with this `env` would have: found, and ready.
    let r = srv.post(
        "/api/validate",
        &json!({"workflow": wf, "env": {"PATH": path_with_standins()}}),
    );
    let found = &r.body["agents"][0];
    assert_eq!(found["available"], true, "{}", r.body);
    assert_eq!(
        found["path"],
        standins().join("claude").display().to_string()
    );
    assert_eq!(r.body["ready"], true);

    // A command given as a path is looked for from the request's `cwd`, as a run's would be.
    let bin = w.path("tools/bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::copy(standins().join("claude"), bin.join("claude")).unwrap();
    let local = json!({"id": "local", "nodes": [
        agent("plan", "claude_code", json!({"command": "./bin/claude"}))]});
    let r = srv.post("/api/validate", &json!({"workflow": local}));
    assert_eq!(r.body["agents"][0]["available"], false, "{}", r.body);
    let r = srv.post(
        "/api/validate",
        &json!({"workflow": local, "cwd": w.path("tools").to_str().unwrap()}),
    );
    assert_eq!(r.body["agents"][0]["available"], true, "{}", r.body);
    assert_eq!(r.body["ready"], true);
}
