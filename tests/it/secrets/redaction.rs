//! Redaction: a bound secret appears nowhere in the store or the CLI output.

use super::{MARK, SECRET};
use crate::support::llm_server::{Reply, Server};
use crate::support::*;
use serde_json::{Value, json};
use std::path::Path;

// ---------------------------------------------------------------------------------------------
// Redaction
// ---------------------------------------------------------------------------------------------

/// Every file under `dir`, recursively, with its bytes.
fn all_files(dir: &Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let p = entry.unwrap().path();
        if p.is_dir() {
            out.extend(all_files(&p));
        } else if let Ok(b) = std::fs::read(&p) {
            out.push((p, b));
        }
    }
    out
}

fn assert_no_secret(what: &str, bytes: &[u8]) {
    assert!(
        !contains_bytes(bytes, SECRET.as_bytes()),
        "the secret leaked into {what}:\n{}",
        String::from_utf8_lossy(bytes)
    );
}

/// A workflow whose nodes do everything they can to leak MY_SECRET.
fn leaky_workflow(server: &Server) -> Value {
    json!({
        "id": "leaky",
        "connections": { "vault": { "env": "MY_SECRET" } },
        "timeout_ms": 30000,
        "nodes": [
            { "id": "trigger", "type": "trigger" },
            { "id": "leak_code", "type": "code",
              "code": "import os, sys\ns = os.environ['MY_SECRET']\nprint('printed:', s)\nsys.stderr.write('stderr: ' + s + '\\n')\nlog('logged:', s)\nreturn {'secret': s, 'nested': {'list': [s, 'x' + s + 'y']}}" },
            { "id": "boom", "type": "code", "on_error": "continue", "after": ["leak_code"],
              "code": "import os\nraise ValueError('bad key ' + os.environ['MY_SECRET'])" },
            { "id": "api", "type": "http_request", "on_error": "continue", "after": ["boom"],
              "url": server.url("/whoami"), "connection": "vault" },
            { "id": "api_query", "type": "http_request", "on_error": "continue", "after": ["api"],
              "url": server.url("/q"), "connection": "vault",
              "auth": { "type": "query", "name": "api_key" } },
            { "id": "llm_denied", "type": "llm", "on_error": "continue", "after": ["api_query"],
              "provider": "openai_compatible", "base_url": server.url("/llm/v1"),
              "model": "m", "connection": "vault", "prompt": "hi", "max_retries": 0 },
            { "id": "shell_echo", "type": "command", "on_error": "continue", "after": ["llm_denied"],
              "shell": true, "connections": ["vault"],
              "command": "echo \"cmd: $MY_SECRET\"; echo \"cmd-err: $MY_SECRET\" >&2; exit 4" },
            { "id": "argv_echo", "type": "command", "after": ["shell_echo"],
              "argv": ["python3", "-c", "import os; print('argv-cmd', os.environ['MY_SECRET'])"],
              "connections": ["vault"] },
            { "id": "final", "type": "set", "after": ["argv_echo"],
              "fields": { "leaked": "{{ nodes.leak_code.output.secret }}",
                          "note": "{{ trigger.note }}" } }
        ]
    })
}

/// 401/403 answers that echo the credentials they got, as real APIs sometimes do.
fn echoing_server() -> Server {
    Server::start(|req| {
        let auth = req.header("authorization").unwrap_or("none").to_string();
        match req.path() {
            "/q" => Reply::text(403, &format!("forbidden: {}", req.target)),
            "/llm/v1/chat/completions" => {
                Reply::openai_error(401, &format!("Incorrect API key provided: {auth}"))
            }
            _ => Reply::text(401, &format!("invalid credentials: {auth}")),
        }
    })
}

#[test]
fn a_secret_appears_nowhere_in_the_store_or_the_cli_output() {
    let env = Env::new();
    let server = echoing_server();
    let file = env.write_workflow("wf.json", &leaky_workflow(&server));
    let input = format!(r#"{{"note": "the key is {SECRET}"}}"#);
    let secret_env = [("MY_SECRET", SECRET)];

    // 1. Plain run (progress display on stderr).
    let run1 = env.run_with(&file, &input, &secret_env, &[]);
    // 2. JSONL events on stdout.
    let run2 = env.run_with(&file, &input, &secret_env, &["--events", "jsonl"]);
    // 3. The execution record on stdout.
    let run3 = env.run_with(&file, &input, &secret_env, &["--json"]);
    for (what, out) in [
        ("run", &run1),
        ("run --events jsonl", &run2),
        ("run --json", &run3),
    ] {
        assert_code(out, 0, what);
        assert_no_secret(&format!("{what} stdout"), &out.stdout);
        assert_no_secret(&format!("{what} stderr"), &out.stderr);
    }

    // The secret really was used: the server got it, from every node that sends it.
    let reqs = server.requests();
    assert_eq!(reqs.len(), 9, "3 runs × (api, api_query, llm_denied)");
    let bearer = format!("Bearer {SECRET}");
    assert!(
        reqs.iter()
            .filter(|r| r.path() == "/whoami" || r.path().starts_with("/llm"))
            .all(|r| r.header("authorization") == Some(bearer.as_str()))
    );
    assert!(reqs.iter().filter(|r| r.path() == "/q").all(|r| {
        r.query()
            .contains(&("api_key".to_string(), SECRET.to_string()))
    }));

    let jsonl = stdout(&run2);
    assert!(
        jsonl.contains(MARK),
        "the JSONL events show the redaction:\n{jsonl}"
    );

    // Every CLI view of every execution.
    let ids = env.execution_ids();
    assert_eq!(ids.len(), 3);
    for id in &ids {
        for args in [
            vec!["show", id.as_str()],
            vec!["show", id.as_str(), "--json"],
            vec!["logs", id.as_str()],
        ] {
            let out = env.cmd(&args);
            assert_code(&out, 0, &args.join(" "));
            assert_no_secret(&format!("{args:?} stdout"), &out.stdout);
            assert_no_secret(&format!("{args:?} stderr"), &out.stderr);
        }
    }
    let history = env.cmd(["history", "--json"]);
    assert_no_secret("history --json", &history.stdout);

    // The redaction marker is where the secret was.
    let id = &ids[0];
    let ExecRow { status, output, .. } = env.execution(id);
    assert_eq!(status, "success", "on_error: continue carried it through");
    assert_eq!(
        output.expect("execution output"),
        json!({ "leaked": MARK, "note": format!("the key is {MARK}") })
    );
    let leak = env.node(id, "leak_code");
    assert_eq!(
        leak.output(),
        &json!({ "secret": MARK, "nested": { "list": [MARK, format!("x{MARK}y")] } })
    );
    let boom = env.node(id, "boom");
    assert_eq!(boom.status, "error");
    assert!(
        boom.error_message().contains(&format!("bad key {MARK}")),
        "{:?}",
        boom.error
    );
    let tb = boom.error.as_ref().unwrap()["traceback"]
        .as_str()
        .unwrap_or("");
    assert!(tb.contains(MARK), "traceback: {tb}");
    let api = env.node(id, "api");
    assert_eq!(api.status, "error");
    assert!(api.error_message().contains("401"), "{:?}", api.error);
    assert!(
        api.error_message().contains(&format!("Bearer {MARK}")),
        "the echoed credentials are redacted: {:?}",
        api.error
    );
    assert!(
        env.node(id, "api_query").error_message().contains(MARK),
        "{:?}",
        env.node(id, "api_query").error
    );
    assert!(
        env.node(id, "llm_denied").error_message().contains(MARK),
        "{:?}",
        env.node(id, "llm_denied").error
    );
    let shell = env.node(id, "shell_echo");
    assert_eq!(shell.status, "error");
    assert!(
        shell.error_message().contains(&format!("cmd-err: {MARK}")),
        "{:?}",
        shell.error
    );
    assert_eq!(
        env.node(id, "argv_echo").output()["stdout"],
        json!(format!("argv-cmd {MARK}\n"))
    );

    let logs = stdout(&env.cmd(["logs", id]));
    for line in [
        format!("printed: {MARK}"),
        format!("stderr: {MARK}"),
        format!("logged: {MARK}"),
        format!("cmd: {MARK}"),
    ] {
        assert!(logs.contains(&line), "logs lack {line:?}:\n{logs}");
    }
    let show = stdout(&env.cmd(["show", id]));
    assert!(show.contains(MARK), "{show}");

    // Finally the bytes on disk: the database, its WAL and shm files, the script cache —
    // everything in the test's directory.
    let files = all_files(env.dir.path());
    assert!(
        files.iter().any(|(p, _)| p == &env.db_path()),
        "the database is among the files searched"
    );
    for (path, bytes) in &files {
        assert_no_secret(&path.display().to_string(), bytes);
    }
    assert!(contains_bytes(&env.db_bytes(), MARK.as_bytes()));
}

#[test]
fn secrets_with_quotes_and_backslashes_are_redacted_raw_and_json_escaped() {
    let env = Env::new();
    let secret = r#"p"w\d-91c3e"#;
    let file = env.write_workflow(
        "wf.json",
        &json!({
            "id": "odd-secret",
            "connections": { "odd": { "env": "OTHER_SECRET" } },
            "nodes": [
                { "id": "echo", "type": "command", "connections": ["odd"],
                  "argv": ["python3", "-c", "import os; print(os.environ['OTHER_SECRET'])"] },
                { "id": "ret", "type": "code",
                  "code": "import os\ns = os.environ['OTHER_SECRET']\nprint(s)\nreturn {'s': s, 'json': '{\"k\": \"%s\"}' % s}" }
            ]
        }),
    );
    let out = env.run_with(
        &file,
        "{}",
        &[("OTHER_SECRET", secret)],
        &["--events", "jsonl"],
    );
    assert_code(&out, 0, "run");
    let escaped = serde_json::to_string(secret).unwrap();
    let escaped = &escaped[1..escaped.len() - 1];
    let mark = "[REDACTED:OTHER_SECRET]";
    let id = env.only_execution_id();
    assert_eq!(
        env.node(&id, "echo").output()["stdout"],
        json!(format!("{mark}\n"))
    );
    assert_eq!(env.node(&id, "ret").output()["s"], json!(mark));
    let logs = env.cmd(["logs", &id]);
    let show = env.cmd(["show", &id, "--json"]);
    let bytes = env.db_bytes();
    for (what, b) in [
        ("run stdout", &out.stdout),
        ("run stderr", &out.stderr),
        ("logs", &logs.stdout),
        ("show --json", &show.stdout),
        ("db", &bytes),
    ] {
        for needle in [secret, escaped] {
            assert!(
                !contains_bytes(b, needle.as_bytes()),
                "{needle:?} leaked into {what}:\n{}",
                String::from_utf8_lossy(b)
            );
        }
    }
    assert!(stdout(&logs).contains(mark));
}

#[test]
fn a_secret_cut_by_a_length_limit_leaves_no_prefix_behind() {
    // Two cuts a secret can straddle: a log line over the 64 KiB line limit, and the preview
    // the runtime keeps of an output over the payload limit (1 MiB), cut at 1024 characters.
    // And a secret with a quote and a backslash inside such a preview is escaped twice.
    let env = Env::new();
    let odd = r#"o"dd\s3cret-4c1a"#;
    let file = env.write_workflow(
        "wf.json",
        &json!({
            "id": "cuts",
            "connections": { "vault": { "env": "MY_SECRET" }, "odd": { "env": "OTHER_SECRET" } },
            "nodes": [
                { "id": "bind", "type": "command", "argv": ["true"], "connections": ["vault", "odd"] },
                { "id": "long_line", "type": "code",
                  "code": "import os\nprint('a' * (65536 - 9) + os.environ['MY_SECRET'] + 'b' * 10)\nreturn 1" },
                { "id": "big_output", "type": "code",
                  "code": "import os\n# the output's JSON text starts with {\"p\":\" (6 characters)\nreturn {'p': 'a' * (1024 - 6 - 9) + os.environ['MY_SECRET'] + 'z' * 1100000}" },
                { "id": "big_odd", "type": "code",
                  "code": "import os\nreturn {'s': os.environ['OTHER_SECRET'], 'z': 'z' * 1100000}" }
            ]
        }),
    );
    let out = env.run_with(
        &file,
        "{}",
        &[("MY_SECRET", SECRET), ("OTHER_SECRET", odd)],
        &["--events", "jsonl"],
    );
    assert_code(&out, 0, "run");
    let id = env.only_execution_id();
    let logs = env.cmd(["logs", &id]);
    let show = env.cmd(["show", &id]);
    let show_json = env.cmd(["show", &id, "--json"]);
    let db = env.db_bytes();
    // Whatever the exact cut positions, the first 7 characters of the secret are gone, and the
    // odd secret appears in none of its forms.
    let odd_once = serde_json::to_string(odd).unwrap();
    let odd_once = &odd_once[1..odd_once.len() - 1];
    let odd_twice = serde_json::to_string(odd_once).unwrap();
    let odd_twice = &odd_twice[1..odd_twice.len() - 1];
    for (what, bytes) in [
        ("run stdout", &out.stdout),
        ("run stderr", &out.stderr),
        ("logs", &logs.stdout),
        ("show", &show.stdout),
        ("show --json", &show_json.stdout),
        ("database", &db),
    ] {
        for needle in [
            &SECRET[..7],
            odd,
            odd_once,
            odd_twice,
            "dd\\s3cret",
            "s3cret-4c1a",
        ] {
            assert!(
                !contains_bytes(bytes, needle.as_bytes()),
                "{needle:?} leaked into {what}"
            );
        }
    }
    // The cuts are still there and marked.
    let logs = stdout(&logs);
    let long = logs
        .lines()
        .find(|l| l.contains("aaaa"))
        .expect("the long line is logged");
    assert!(
        long.contains(MARK) && long.contains("bytes cut"),
        "{}",
        &long[long.len() - 80..]
    );
    let preview = env.node(&id, "big_output").output()["preview"]
        .as_str()
        .expect("the oversized output is stored as a preview")
        .to_string();
    assert!(
        preview.ends_with(MARK),
        "{}",
        &preview[preview.len() - 40..]
    );
    let odd_preview = env.node(&id, "big_odd").output()["preview"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        odd_preview.contains("[REDACTED:OTHER_SECRET]"),
        "{}",
        &odd_preview[..60]
    );
}

#[test]
fn a_secret_passed_down_to_sub_workflows_is_redacted_in_every_child() {
    // A parent hands its secret to a child in its inputs, and the child to a grandchild: each
    // child's runner redacts the secrets of the executions above it (they were stored in clear
    // in the children's triggers, outputs, logs and events), cold and warm.
    let env = Env::new();
    env.write_workflow(
        "leaf.json",
        &json!({ "id": "leaf", "inputs": { "type": "object" }, "nodes": [
            { "id": "echo", "type": "code", "code": "print('leaf got', trigger['key'])\nreturn trigger" }
        ]}),
    );
    env.write_workflow(
        "mid.json",
        &json!({ "id": "mid", "inputs": { "type": "object" }, "nodes": [
            { "id": "say", "type": "code", "code": "log('mid got', trigger['key'])\nreturn trigger" },
            { "id": "deeper", "type": "workflow", "workflow": "./leaf.json", "after": ["say"],
              "inputs": { "key": "{{ trigger.key }}" } }
        ]}),
    );
    // A child that is not given the secret, and runs a sub-workflow itself (so its runner
    // passes what it redacts on): the parent's secret must not reach its code that way.
    env.write_workflow(
        "nosy.json",
        &json!({ "id": "nosy", "nodes": [
            { "id": "look", "type": "code",
              "code": "import os\nv = os.environ.get('FLOWRUN_SUB_SECRETS') or ''\nreturn {'seen': v[::-1]}" },
            { "id": "more", "type": "workflow", "workflow": "./leaf.json", "after": ["look"],
              "inputs": { "key": "none" } }
        ]}),
    );
    let parent = env.write_workflow(
        "parent.json",
        &json!({ "id": "parent", "connections": { "vault": { "env": "MY_SECRET" } }, "nodes": [
            { "id": "get", "type": "code", "connections": ["vault"],
              "code": "import os\nreturn {'k': os.environ['MY_SECRET']}" },
            { "id": "sub", "type": "workflow", "workflow": "./mid.json", "after": ["get"],
              "inputs": { "key": "{{ nodes.get.output.k }}" } },
            { "id": "nosy", "type": "workflow", "workflow": "./nosy.json", "after": ["sub"] }
        ]}),
    );
    let run = env.run_with(&parent, "{}", &[("MY_SECRET", SECRET)], &[]);
    assert_code(&run, 0, "the parent run");
    env.write_file(
        "parent.test.yaml",
        "workflow: ./parent.json\ncases:\n  - name: passes it down\n    trigger: {}\n",
    );
    let mut test = env.flowrun();
    test.env("MY_SECRET", SECRET)
        .args(["test", env.path("parent.test.yaml").to_str().unwrap()]);
    let test = output(&mut test);
    assert_code(&test, 0, "the suite");
    for (what, out) in [("run", &run), ("test", &test)] {
        assert_no_secret(&format!("{what} stdout"), &out.stdout);
        assert_no_secret(&format!("{what} stderr"), &out.stderr);
    }
    let leaves: Vec<String> = env
        .execution_ids()
        .into_iter()
        .filter(|id| {
            let e = env.execution(id);
            e.workflow_id == "leaf" && e.trigger != json!({ "key": "none" })
        })
        .collect();
    assert_eq!(leaves.len(), 2, "a grandchild under mid per run");
    for id in &leaves {
        let leaf = env.execution(id);
        assert_eq!(leaf.trigger, json!({ "key": MARK }), "{id}");
        assert_eq!(leaf.output, Some(json!({ "key": MARK })), "{id}");
    }
    for (path, bytes) in &all_files(env.dir.path()) {
        assert_no_secret(&path.display().to_string(), bytes);
    }
    let reversed: String = SECRET.chars().rev().collect();
    for id in env.execution_ids() {
        let e = env.execution(&id);
        if e.workflow_id == "nosy" {
            assert_eq!(
                env.node(&id, "look").output(),
                &json!({ "seen": "" }),
                "nothing passed to nosy"
            );
        }
        let text = e.output.map(|o| o.to_string()).unwrap_or_default();
        assert!(!text.contains(&reversed), "{id}: {text}");
    }
}

#[test]
fn a_secret_too_long_to_pass_down_leaves_the_others_passed() {
    // Only the pairs that fit an exec's variable (32 pages) go to a child's runner: one long
    // value (a certificate) left every other secret out, and the child stored them in clear.
    let env = Env::new();
    env.write_workflow(
        "child.json",
        &json!({ "id": "child", "inputs": { "type": "object" }, "nodes": [
            { "id": "echo", "type": "code", "code": "return trigger" }
        ]}),
    );
    let parent = env.write_workflow(
        "parent.json",
        &json!({ "id": "parent", "connections": { "vault": { "env": "MY_SECRET" }, "cert": { "env": "BIG_CERT" } },
          "nodes": [
            // The long one first: what is left out is the longest, whatever the order.
            { "id": "get", "type": "code", "connections": ["cert", "vault"],
              "code": "import os\nreturn {'k': os.environ['MY_SECRET'], 'n': len(os.environ['BIG_CERT'])}" },
            { "id": "sub", "type": "workflow", "workflow": "./child.json", "after": ["get"],
              "inputs": { "key": "{{ nodes.get.output.k }}" } }
        ]}),
    );
    // As long as an exec takes for BIG_CERT=…, too long beside another secret in one variable.
    let big = "A".repeat(32 * 4096 - 40);
    let run = env.run_with(
        &parent,
        "{}",
        &[("MY_SECRET", SECRET), ("BIG_CERT", &big)],
        &[],
    );
    assert_code(&run, 0, "the parent run");
    assert!(
        stderr(&run).contains("BIG_CERT is too long to pass to this execution's sub-workflows"),
        "{}",
        describe(&run)
    );
    let child = env
        .execution_ids()
        .into_iter()
        .find(|id| env.execution(id).workflow_id == "child")
        .expect("the child ran");
    assert_eq!(env.execution(&child).trigger, json!({ "key": MARK }));
    assert_no_secret("the database", &env.db_bytes());
    // That warning on a stderr whose reader went away: the run's own exit code, no panic.
    let mut cmd = env.command();
    cmd.args(["run", parent.to_str().unwrap()])
        .env("MY_SECRET", SECRET)
        .env("BIG_CERT", &big)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    drop(child.stderr.take());
    assert_eq!(child.wait().unwrap().code(), Some(0), "stderr closed");
}
