//! Redaction beyond the exact value, end to end: secrets of one or two characters that must not
//! break the protocol, the encoded forms of a secret (base64 at any alignment, URL-safe base64,
//! hex, percent-encoding) printed by nodes or produced by the HTTP node itself, a secret split
//! over two printed lines, and `code` nodes that declare the connections they read.
//!
//! What to look for is computed by Python's own `base64`, `binascii` and `urllib.parse` (the
//! encoders nodes use), not by flowrun's code, and searched for in the database files, every CLI
//! output and the JSONL events.

use crate::support::llm_server::{Reply, Server};
use crate::support::*;
use serde_json::{Value, json};

/// A secret whose encodings all differ from it and from each other: base64 with `+` and `/`
/// (so URL-safe base64 differs) and padding, characters that percent-encoding changes, a space
/// (`quote` and `quote_plus` differ), and a colon (HTTP basic auth is `user:password`).
const ODD: &str = "ci-bot:p@ss w/rd?~>>>xy+&=9";
const MARK: &str = "[REDACTED:MY_SECRET]";

/// The forms of `secret` nodes are likely to print, as Python computes them: base64 (standard
/// and URL-safe, padded and not), hex (both cases), `quote`, `quote(safe="")`, `quote_plus`,
/// `json.dumps`, and, for base64 of the secret inside longer data (`Basic `, `Bearer `), the
/// characters that encode only the secret's bytes, at each of the three alignments.
fn python_forms(secret: &str) -> Vec<String> {
    let script = r#"
import base64, binascii, json, sys, urllib.parse
s = sys.argv[1]
b = s.encode()
forms = [s, json.dumps(s)[1:-1]]
for enc in (base64.b64encode, base64.urlsafe_b64encode):
    full = enc(b).decode()
    forms += [full, full.rstrip("=")]
    for prefix in (b"x", b"xy", b"Bearer "):
        o = len(prefix)
        text = enc(prefix + b + b"!?").decode()
        forms.append(text)
        forms.append(text[-(-8 * o // 6):8 * (o + len(b)) // 6])
forms += [binascii.hexlify(b).decode(), binascii.hexlify(b).decode().upper()]
forms += [urllib.parse.quote(s), urllib.parse.quote(s, safe=""), urllib.parse.quote_plus(s)]
print(json.dumps(sorted(set(forms))))
"#;
    let out = std::process::Command::new("python3")
        .args(["-c", script, secret])
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("a JSON list")
}

/// Asserts that no needle appears in any of the outputs nor in the database files.
fn assert_nowhere(env: &Env, needles: &[String], outputs: &[(&str, &[u8])]) {
    let db = env.db_bytes();
    for (what, bytes) in outputs.iter().copied().chain([("database", db.as_slice())]) {
        for needle in needles {
            assert!(
                !contains_bytes(bytes, needle.as_bytes()),
                "{needle:?} leaked into {what}:\n{}",
                String::from_utf8_lossy(bytes)
            );
        }
    }
}

/// Runs `file` with MY_SECRET bound, then asserts no needle is in that run's output (JSONL
/// events), in `show --json` or `logs` of its execution, or in the database files.
fn run_and_check(env: &Env, file: &std::path::Path, secret: &str, needles: &[String]) -> String {
    let out = env.run_with(file, "{}", &[("MY_SECRET", secret)], &["--events", "jsonl"]);
    assert_code(&out, 0, "run");
    let id = env.only_execution_id();
    let show = env.cmd(["show", &id, "--json"]);
    let logs = env.cmd(["logs", &id]);
    assert_nowhere(
        env,
        needles,
        &[
            ("run stdout", &out.stdout),
            ("run stderr", &out.stderr),
            ("show --json", &show.stdout),
            ("logs", &logs.stdout),
        ],
    );
    id
}

#[test]
fn secrets_of_one_or_two_characters_are_redacted_without_breaking_the_run() {
    let server = Server::start(|_| Reply::openai_chat("m", "ok: 1 e", 3, 1));
    for secret in ["e", "1", "ok"] {
        let env = Env::new();
        let file = env.write_workflow(
            "wf.json",
            &json!({
                "id": "short",
                "connections": { "vault": { "env": "MY_SECRET" } },
                "nodes": [
                    { "id": "trigger", "type": "trigger" },
                    { "id": "c", "type": "code", "connections": ["vault"],
                      "code": "import os, sys\ns = os.environ['MY_SECRET']\nprint('printed', s)\nsys.stderr.write('err ' + s + '\\n')\nlog('logged', s)\nreturn {'secret': s, 'text': 'hello ok e 1', 'exit_code': 0, 'count': 1, 'true': True}" },
                    { "id": "ask", "type": "llm", "provider": "openai_compatible", "model": "m",
                      "base_url": server.url("/v1"), "connection": "vault", "after": ["c"],
                      "prompt": "hi {{ trigger.q }}" },
                    { "id": "cmd", "type": "command", "connections": ["vault"],
                      "argv": ["python3", "-c", "import os; print(os.environ['MY_SECRET'])"] },
                    { "id": "final", "type": "set",
                      "fields": { "answer": "{{ nodes.ask.output.content }}",
                                  "tokens": "{{ nodes.ask.output.usage.input_tokens }}",
                                  "exit": "{{ nodes.cmd.output.exit_code }}" } }
                ]
            }),
        );
        let input = r#"{"q": "ok e 1", "flag": true, "n": 1}"#;
        let out = env.run_with(
            &file,
            input,
            &[("MY_SECRET", secret)],
            &["--events", "jsonl"],
        );
        let what = format!("secret {secret:?}");
        assert_code(&out, 0, &what);
        let err = stderr(&out);
        assert!(
            err.contains("only 1 characters long") || err.contains("only 2 characters long"),
            "{what}: the warning: {err}"
        );
        let events = stdout(&out);
        for line in events.lines() {
            let ev: Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("{what}: not JSON ({e}): {line}"));
            assert!(ev["event"].is_string(), "{what}: {line}");
        }
        let id = env.only_execution_id();
        let logs = stdout(&env.cmd(["logs", &id]));
        for text in [&err, &events, &logs] {
            assert!(
                !text.contains("protocol"),
                "{what}: a protocol error:\n{text}"
            );
        }
        assert_eq!(env.execution(&id).status, "success", "{what}");
        let c = env.node(&id, "c");
        let o = c.output();
        assert_eq!(o["secret"], MARK, "{what}");
        // The structure is intact: keys, numbers, booleans.
        assert_eq!(o["exit_code"], 0, "{what}: {o}");
        assert_eq!(o["count"], 1, "{what}: {o}");
        assert_eq!(o["true"], true, "{what}: {o}");
        assert_eq!(
            o["text"].as_str().unwrap().replace(MARK, secret),
            "hello ok e 1",
            "{what}: only the secret's text is replaced"
        );
        assert!(o["text"].as_str().unwrap().contains(MARK), "{what}: {o}");
        assert_eq!(
            env.node(&id, "cmd").output()["stdout"],
            format!("{MARK}\n"),
            "{what}"
        );
        // Every occurrence of the secret's text is replaced, and nothing else.
        let restored = logs.replace(MARK, secret);
        for line in [
            format!("printed {secret}"),
            format!("err {secret}"),
            format!("logged {secret}"),
        ] {
            assert!(
                restored.contains(&line),
                "{what}: logs lack {line:?}:\n{logs}"
            );
        }
        assert!(!logs.contains(&format!(" {secret}\n")), "{what}:\n{logs}");
        // flowrun's own bookkeeping reads keys and numbers: still right.
        let final_out = env.execution(&id).output.expect("an output");
        assert_eq!(final_out["tokens"], 3, "{what}: {final_out}");
        assert_eq!(final_out["exit"], 0, "{what}: {final_out}");
        let h = &env.history_json(&[])[0];
        assert_eq!(
            (h["input_tokens"].clone(), h["output_tokens"].clone()),
            (json!(3), json!(1)),
            "{what}: {h}"
        );
        // The trigger is stored redacted, and still the trigger.
        let trigger = env.show_json(&id)["trigger"].clone();
        assert_eq!(trigger["flag"], true, "{what}: {trigger}");
        assert_eq!(trigger["n"], 1, "{what}: {trigger}");
        assert_eq!(
            trigger["q"].as_str().unwrap().replace(MARK, secret),
            "ok e 1",
            "{what}: {trigger}"
        );
        assert!(
            trigger["q"].as_str().unwrap().contains(MARK),
            "{what}: {trigger}"
        );
    }
}

#[test]
fn encoded_forms_of_a_secret_printed_returned_and_logged_are_redacted() {
    let env = Env::new();
    let forms = python_forms(ODD);
    // Every form the oracle knows, computed again by the node itself and printed (stdout and
    // stderr), logged and returned; and by a program a command node runs (its output captured).
    let code = r#"import base64, binascii, json, os, sys, urllib.parse
s = os.environ['MY_SECRET']
b = s.encode()
out = {
    'b64': base64.b64encode(b).decode(),
    'b64_nopad': base64.b64encode(b).decode().rstrip('='),
    'urlsafe': base64.urlsafe_b64encode(b).decode(),
    'basic': 'Basic ' + base64.b64encode(b).decode(),
    'bearer_b64': base64.b64encode(b'Bearer ' + b + b'!?').decode(),
    'x_b64': base64.b64encode(b'x' + b + b'!?').decode(),
    'xy_b64': base64.urlsafe_b64encode(b'xy' + b + b'!?').decode(),
    'hex': binascii.hexlify(b).decode(),
    'HEX': binascii.hexlify(b).decode().upper(),
    'quote': urllib.parse.quote(s),
    'quote_none': urllib.parse.quote(s, safe=''),
    'quote_plus': urllib.parse.quote_plus(s),
    'url': 'https://example.test/cb?' + urllib.parse.urlencode({'token': s, 'b': 1}),
    'json': json.dumps({'k': s}),
}
for k, v in out.items():
    print(k, v)
    sys.stderr.write(k + ' ' + v + '\n')
    log(k, v)
return out"#;
    let file = env.write_workflow(
        "wf.json",
        &json!({
            "id": "forms",
            "connections": { "vault": { "env": "MY_SECRET" } },
            "nodes": [
                { "id": "forms", "type": "code", "connections": ["vault"], "code": code },
                { "id": "cmd", "type": "command", "connections": ["vault"],
                  "argv": ["python3", "-c", "import base64, os; s = os.environ['MY_SECRET'].encode(); print(base64.b64encode(b'Bearer ' + s).decode()); print(s.hex())"] }
            ]
        }),
    );
    let id = run_and_check(&env, &file, ODD, &forms);
    let out = env.node(&id, "forms").output().clone();
    for key in [
        "b64",
        "b64_nopad",
        "urlsafe",
        "hex",
        "HEX",
        "quote",
        "quote_none",
        "quote_plus",
    ] {
        assert_eq!(out[key], MARK, "{key}: {out}");
    }
    assert_eq!(out["basic"], format!("Basic {MARK}"));
    assert_eq!(out["json"], format!("{{\"k\": \"{MARK}\"}}"));
    assert!(
        out["url"]
            .as_str()
            .unwrap()
            .contains(&format!("token={MARK}&b=1")),
        "{out}"
    );
    let logs = stdout(&env.cmd(["logs", &id]));
    assert!(logs.contains(&format!("quote_plus {MARK}")), "{logs}");
}

#[test]
fn a_secret_split_over_two_printed_lines_is_redacted() {
    let env = Env::new();
    // Split at 4 and at 13: each side long enough to be told apart (see the README: a line end
    // of 3 characters or fewer that starts a secret is left).
    let file = env.write_workflow(
        "wf.json",
        &json!({
            "id": "split",
            "connections": { "vault": { "env": "MY_SECRET" } },
            "nodes": [
                { "id": "code", "type": "code", "connections": ["vault"],
                  "code": "import os, sys\ns = os.environ['MY_SECRET']\nprint('key: ' + s[:13])\nprint(s[13:] + ' (end)')\nsys.stderr.write(s[:4] + '\\n' + s[4:] + '\\n')\nreturn 1" },
                { "id": "cmd", "type": "command", "connections": ["vault"],
                  "argv": ["python3", "-c", "import os; s = os.environ['MY_SECRET']; print('key: ' + s[:13]); print(s[13:] + ' (end)')"] }
            ]
        }),
    );
    let needles: Vec<String> = [&ODD[..13], &ODD[13..], &ODD[..4], &ODD[4..]]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let id = run_and_check(&env, &file, ODD, &needles);
    let logs = stdout(&env.cmd(["logs", &id]));
    for line in [format!("key: {MARK}"), format!("{MARK} (end)")] {
        assert!(logs.contains(&line), "logs lack {line:?}:\n{logs}");
    }
    assert_eq!(
        env.node(&id, "cmd").output()["stdout"],
        format!("key: {MARK}\n{MARK} (end)\n")
    );
}

/// Answers 401 with what it got — the request target (query string) and the Authorization
/// header — and, on `/ok`, 200 with the same as JSON.
fn echoing_server() -> Server {
    Server::start(|req| {
        let auth = req.header("authorization").unwrap_or("none").to_string();
        let seen = json!({ "target": req.target, "authorization": auth });
        if req.path() == "/ok" {
            Reply::json(200, &seen)
        } else {
            Reply::text(401, &format!("denied: {seen}"))
        }
    })
}

#[test]
fn the_encodings_the_http_node_sends_are_redacted_when_echoed() {
    let env = Env::new();
    let server = echoing_server();
    let mut nodes = Vec::new();
    for (auth, id) in [
        (json!("basic"), "basic"),
        (json!({ "type": "query", "name": "api_key" }), "query"),
    ] {
        for path in ["/ok", "/denied"] {
            nodes.push(json!({
                "id": format!("{id}{}", path.replace('/', "_")), "type": "http_request",
                "url": server.url(path), "connection": "vault", "auth": auth,
                "on_error": "continue"
            }));
        }
    }
    let file = env.write_workflow(
        "wf.json",
        &json!({ "id": "http-forms", "connections": { "vault": { "env": "MY_SECRET" } },
                 "nodes": nodes }),
    );
    let id = run_and_check(&env, &file, ODD, &python_forms(ODD));
    // The server did get the secret, in those encodings.
    let reqs = server.requests();
    assert_eq!(reqs.len(), 4);
    let basic = reqs.iter().find(|r| {
        r.header("authorization")
            .is_some_and(|a| a.starts_with("Basic "))
    });
    let basic = basic
        .expect("a basic-auth request")
        .header("authorization")
        .unwrap();
    let decoded = python_forms(ODD);
    assert!(
        decoded.iter().any(|f| basic == format!("Basic {f}")),
        "{basic}"
    );
    assert!(
        reqs.iter()
            .any(|r| r.query().contains(&("api_key".into(), ODD.into())))
    );
    // And what it echoed is stored, redacted.
    let ok = env.node(&id, "basic_ok").output()["body"].clone();
    assert_eq!(ok["authorization"], format!("Basic {MARK}"), "{ok}");
    let ok = env.node(&id, "query_ok").output()["body"].clone();
    assert_eq!(ok["target"], format!("/ok?api_key={MARK}"), "{ok}");
    for node in ["basic_denied", "query_denied"] {
        let row = env.node(&id, node);
        assert!(
            row.error_message().contains(MARK),
            "{node}: {:?}",
            row.error
        );
    }
}

#[test]
fn a_code_node_reads_a_connection_it_declares() {
    let env = Env::new();
    let server = echoing_server();
    const KEY: &str = "gsk_code_node_4b9d1e77";
    let code = format!(
        r#"import os, urllib.request
key = os.environ['GROQ_API_KEY']
req = urllib.request.Request({url:?}, headers={{'Authorization': 'Bearer ' + key}})
echoed = urllib.request.urlopen(req, timeout=10).read().decode()
print('key is', key)
return {{'key': key, 'echoed': echoed}}"#,
        url = server.url("/ok")
    );
    let wf = json!({
        "id": "code-conn",
        "connections": { "groq": { "env": "GROQ_API_KEY" } },
        "nodes": [ { "id": "sdk", "type": "code", "connections": ["groq"], "code": code } ]
    });
    let file = env.write_workflow("wf.json", &wf);

    // Unbound: refused before anything runs, naming the node.
    let out = env.run_with(&file, "{}", &[], &[]);
    assert_code(&out, 3, "run without GROQ_API_KEY");
    let err = stderr(&out);
    assert!(
        err.contains("GROQ_API_KEY") && err.contains("'sdk'"),
        "{err}"
    );
    assert!(server.requests().is_empty());

    // Bound: the code reads it, sends it, prints and returns it; none of it is stored as is.
    let out = env.run_with(
        &file,
        "{}",
        &[("GROQ_API_KEY", KEY)],
        &["--events", "jsonl"],
    );
    assert_code(&out, 0, "run");
    assert_eq!(
        server.only_request().header("authorization"),
        Some(format!("Bearer {KEY}").as_str())
    );
    let id = env.only_execution_id();
    let mark = "[REDACTED:GROQ_API_KEY]";
    let o = env.node(&id, "sdk").output().clone();
    assert_eq!(o["key"], mark);
    assert!(
        o["echoed"]
            .as_str()
            .unwrap()
            .contains(&format!("Bearer {mark}")),
        "{o}"
    );
    assert!(stdout(&env.cmd(["logs", &id])).contains(&format!("key is {mark}")));
    let show = env.cmd(["show", &id, "--json"]);
    assert_nowhere(
        &env,
        &[KEY.to_string()],
        &[
            ("run stdout", &out.stdout),
            ("run stderr", &out.stderr),
            ("show", &show.stdout),
        ],
    );

    // A connection the workflow does not declare is a validation error on the node's field.
    let mut undeclared = wf.clone();
    undeclared["nodes"][0]["connections"] = json!(["nope"]);
    let file = env.write_workflow("bad.json", &undeclared);
    let out = env.cmd(["validate", file.to_str().unwrap()]);
    assert_code(&out, 2, "validate");
    let err = stderr(&out);
    assert!(
        err.contains("connections[0]") && err.contains("nope"),
        "{err}"
    );
}
