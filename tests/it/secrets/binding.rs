//! Binding connections: environment, `--env`, `--env-file`, the exit-3 refusal, the child's env.

use super::{groq_server, groq_workflow};
use crate::support::*;
use serde_json::{Value, json};

// ---------------------------------------------------------------------------------------------
// Binding
// ---------------------------------------------------------------------------------------------

#[test]
fn unbound_connection_exits_3_before_anything_runs() {
    let env = Env::new();
    let server = groq_server();
    let marker = env.path("ran.txt");
    let file = env.write_workflow("wf.json", &groq_workflow(&marker));
    let base = server.url("/openai/v1");
    // GROQ_API_KEY is removed from the command's environment by `common::Env`.
    let out = env.run_with(
        &file,
        "{}",
        &[("FLOWRUN_GROQ_BASE_URL", base.as_str())],
        &[],
    );
    assert_code(&out, 3, "run without GROQ_API_KEY");
    let err = stderr(&out);
    assert!(err.contains("groq"), "names the connection: {err}");
    assert!(err.contains("GROQ_API_KEY"), "names the variable: {err}");
    assert!(err.contains("ask"), "names the node that uses it: {err}");
    assert_eq!(env.execution_count(), 0, "no execution row");
    assert!(!marker.exists(), "the script must not have run");
    assert!(
        server.requests().is_empty(),
        "no request reached the provider"
    );

    // An empty value is not a binding either.
    let out = env.run_with(
        &file,
        "{}",
        &[
            ("FLOWRUN_GROQ_BASE_URL", base.as_str()),
            ("GROQ_API_KEY", ""),
        ],
        &[],
    );
    assert_code(&out, 3, "run with GROQ_API_KEY empty");
    assert_eq!(env.execution_count(), 0);
    assert!(!marker.exists());

    // The same workflow with the variable set runs (so the refusal above was about binding).
    let out = env.run_with(
        &file,
        "{}",
        &[
            ("FLOWRUN_GROQ_BASE_URL", base.as_str()),
            ("GROQ_API_KEY", "gsk_env_bound_1"),
        ],
        &[],
    );
    assert_code(&out, 0, "run with GROQ_API_KEY");
    assert!(marker.exists());
    assert_eq!(
        env.execution_count(),
        1,
        "this database is the one runs go to"
    );
    assert_eq!(
        server.only_request().header("authorization"),
        Some("Bearer gsk_env_bound_1")
    );
}

#[test]
fn every_unbound_connection_is_listed_in_one_message() {
    let env = Env::new();
    let file = env.write_workflow(
        "wf.json",
        &json!({
            "id": "three-conns",
            "connections": {
                "groq": { "env": "GROQ_API_KEY" },
                "claude": { "env": "ANTHROPIC_API_KEY" },
                "openai": { "env": "OPENAI_API_KEY" }
            },
            "nodes": [
                { "id": "a", "type": "llm", "provider": "groq", "model": "m", "connection": "groq", "prompt": "x" },
                { "id": "b", "type": "llm", "provider": "anthropic", "model": "m", "connection": "claude", "prompt": "x" },
                { "id": "c", "type": "llm", "provider": "openai", "model": "m", "connection": "openai", "prompt": "x" },
                { "id": "d", "type": "command", "argv": ["true"], "connections": ["groq"] }
            ]
        }),
    );
    let out = env.run_with(&file, "{}", &[("OPENAI_API_KEY", "sk-bound")], &[]);
    assert_code(&out, 3, "run");
    let err = stderr(&out);
    for needle in ["groq", "GROQ_API_KEY", "claude", "ANTHROPIC_API_KEY"] {
        assert!(err.contains(needle), "missing {needle:?} in: {err}");
    }
    assert!(
        !err.contains("OPENAI_API_KEY"),
        "a bound connection is not listed: {err}"
    );
    // Both in one message: the groq line names both nodes that use it.
    let groq_line = err
        .lines()
        .find(|l| l.contains("GROQ_API_KEY"))
        .unwrap_or_default();
    assert!(
        groq_line.contains("'a'") && groq_line.contains("'d'"),
        "{groq_line}"
    );
    assert_eq!(env.execution_count(), 0);
}

#[test]
fn env_flag_binds_a_connection() {
    let env = Env::new();
    let server = groq_server();
    let marker = env.path("ran.txt");
    let file = env.write_workflow("wf.json", &groq_workflow(&marker));
    let base = server.url("/openai/v1");
    let out = env.run_with(
        &file,
        "{}",
        &[("FLOWRUN_GROQ_BASE_URL", base.as_str())],
        &["--env", "GROQ_API_KEY=gsk_from_flag_77"],
    );
    assert_code(&out, 0, "run --env");
    assert_eq!(
        server.only_request().header("authorization"),
        Some("Bearer gsk_from_flag_77")
    );
}

#[test]
fn env_flag_wins_over_the_environment() {
    let env = Env::new();
    let server = groq_server();
    let marker = env.path("ran.txt");
    let file = env.write_workflow("wf.json", &groq_workflow(&marker));
    let base = server.url("/openai/v1");
    let out = env.run_with(
        &file,
        "{}",
        &[
            ("FLOWRUN_GROQ_BASE_URL", base.as_str()),
            ("GROQ_API_KEY", "gsk_from_environment"),
        ],
        &["--env", "GROQ_API_KEY=gsk_from_flag_88"],
    );
    assert_code(&out, 0, "run --env");
    assert_eq!(
        server.only_request().header("authorization"),
        Some("Bearer gsk_from_flag_88")
    );
}

#[test]
fn env_file_binds_a_connection() {
    let env = Env::new();
    let server = groq_server();
    let marker = env.path("ran.txt");
    let file = env.write_workflow("wf.json", &groq_workflow(&marker));
    let dotenv = env.write_file(
        "test.env",
        "# keys for the test\n\nUNRELATED=1\nexport GROQ_API_KEY=\"gsk_from_file 123\"\n",
    );
    let base = server.url("/openai/v1");
    let out = env.run_with(
        &file,
        "{}",
        &[("FLOWRUN_GROQ_BASE_URL", base.as_str())],
        &["--env-file", dotenv.to_str().unwrap()],
    );
    assert_code(&out, 0, "run --env-file");
    assert_eq!(
        server.only_request().header("authorization"),
        Some("Bearer gsk_from_file 123")
    );
}

#[test]
fn a_pinned_node_needs_no_binding() {
    let env = Env::new();
    let marker = env.path("ran.txt");
    let file = env.write_workflow("wf.json", &groq_workflow(&marker));
    let pin = env.write_file(
        "ask.json",
        r#"{"content": "pinned", "model": "m", "usage": {"input_tokens": 0, "output_tokens": 0}, "cost_usd": 0}"#,
    );
    let out = env.run_with(
        &file,
        "{}",
        &[],
        &["--pin", &format!("ask={}", pin.display())],
    );
    assert_code(&out, 0, "run --pin");
    let id = env.only_execution_id();
    assert_eq!(env.node(&id, "ask").status, "pinned");
}

#[test]
fn the_child_gets_a_small_environment_unless_inherit_env() {
    let env = Env::new();
    let file = env.write_workflow(
        "wf.json",
        &json!({
            "id": "envs",
            "nodes": [
                { "id": "vars", "type": "code",
                  "code": "import os\nreturn {k: os.environ.get(k) for k in ['OTHER_SECRET', 'FROM_FLAG', 'PATH']}" }
            ]
        }),
    );
    let out = env.run_with(
        &file,
        "{}",
        &[("OTHER_SECRET", "not-for-the-child")],
        &["--env", "FROM_FLAG=yes"],
    );
    assert_code(&out, 0, "run");
    let id = env.only_execution_id();
    let o = env.node(&id, "vars").output().clone();
    assert_eq!(o["OTHER_SECRET"], Value::Null, "{o}");
    assert_eq!(o["FROM_FLAG"], "yes");
    assert!(o["PATH"].is_string());

    let env2 = Env::new();
    let file2 = env2.write_workflow(
        "wf.json",
        &serde_json::from_str::<Value>(&std::fs::read_to_string(&file).unwrap()).unwrap(),
    );
    let out = env2.run_with(
        &file2,
        "{}",
        &[("OTHER_SECRET", "inherited-value")],
        &["--inherit-env"],
    );
    assert_code(&out, 0, "run --inherit-env");
    let id = env2.only_execution_id();
    assert_eq!(
        env2.node(&id, "vars").output()["OTHER_SECRET"],
        "inherited-value"
    );
}

#[test]
fn a_variable_that_is_not_text_in_flowrun_s_environment_is_left_out_not_a_crash() {
    // It panicked in `std::env::vars` (exit 101), with or without --inherit-env.
    use std::os::unix::ffi::OsStrExt;
    let env = Env::new();
    let file = env.write_workflow(
        "wf.json",
        &json!({"id": "bytes", "nodes": [{"id": "vars", "type": "code",
            "code": "import os\nreturn {'bad': 'NOT_TEXT' in os.environ, 'other': os.environ.get('OTHER')}"}]}),
    );
    for extra in [&[][..], &["--inherit-env"][..]] {
        let mut cmd = env.flowrun();
        cmd.arg("run")
            .arg(&file)
            .args(["--input", "{}", "--json"])
            .args(extra);
        cmd.env(
            std::ffi::OsStr::from_bytes(b"NOT_TEXT"),
            std::ffi::OsStr::from_bytes(b"caf\xe9"),
        )
        .env("OTHER", "kept");
        let out = output(&mut cmd);
        assert_code(&out, 0, "run with a variable that is not UTF-8");
        let run: Value = serde_json::from_slice(&out.stdout).unwrap();
        let inherit = !extra.is_empty();
        assert_eq!(
            run["output"],
            json!({"bad": false, "other": if inherit { json!("kept") } else { Value::Null }})
        );
    }
}
