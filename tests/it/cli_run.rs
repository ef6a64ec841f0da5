//! `flowrun run` for people and scripts: stdin is read only when asked, the output goes to
//! stdout, input files are bounded, `--env KEY` keeps secrets off the command line.

use crate::support::faults::{Fx, WATCHDOG};
use crate::support::*;
use serde_json::{Value, json};
use std::io::Write;
use std::process::Stdio;
use std::time::Duration;

const MIB: u64 = 1 << 20;

/// A workflow whose output is its trigger data.
fn echo(env: &Env) -> std::path::PathBuf {
    env.write_workflow(
        "echo.json",
        &json!({ "id": "echo", "nodes": [
            { "id": "t", "type": "trigger" },
            { "id": "out", "type": "code", "code": "return trigger", "after": ["t"] }
        ]}),
    )
}

#[test]
fn run_does_not_read_an_open_stdin_unless_asked() {
    let env = Env::new();
    let wf = echo(&env);
    // stdin is a pipe nobody writes to or closes (a CI runner's): `run` must not wait on it.
    let mut child = env
        .command()
        .args(["run", wf.to_str().unwrap()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdin = child.stdin.take().unwrap();
    let deadline = std::time::Instant::now() + TIMEOUT;
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("run waited for stdin to close");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    assert_success(&out, "run with an open stdin");
    assert_eq!(env.execution(&env.only_execution_id()).trigger, json!({}));
}

#[test]
fn run_in_a_while_read_loop_leaves_the_list_alone() {
    let env = Env::new();
    let wf = echo(&env);
    let base = env.command();
    let mut sh = std::process::Command::new("sh");
    for (k, v) in base.get_envs() {
        match v {
            Some(v) => sh.env(k, v),
            None => sh.env_remove(k),
        };
    }
    sh.current_dir(env.dir.path())
        .env("FLOWRUN_BIN", env!("CARGO_BIN_EXE_flowrun"))
        .env("WF", &wf)
        .arg("-c")
        .arg(r#"printf 'a\nb\nc\n' | while read f; do "$FLOWRUN_BIN" run "$WF" >/dev/null 2>&1; echo "did $f"; done"#)
        .stdin(Stdio::null());
    let out = sh.output().unwrap();
    assert_success(&out, "the loop");
    assert_eq!(stdout(&out), "did a\ndid b\ndid c\n", "{}", describe(&out));
    assert_eq!(env.execution_ids().len(), 3);
}

#[test]
fn input_file_dash_reads_the_trigger_from_stdin() {
    let env = Env::new();
    let wf = echo(&env);
    let input = env.write_file("in.json", r#"{"from": "stdin"}"#);
    let out = output(
        env.flowrun()
            .args(["run", wf.to_str().unwrap(), "--input-file", "-"])
            .pipe_stdin(&input)
            .unwrap(),
    );
    assert_success(&out, "run --input-file -");
    assert_eq!(stdout(&out), "{\"from\":\"stdin\"}\n");
    // -i is --input.
    let out = env.cmd(["run", wf.to_str().unwrap(), "-i", r#"{"from": "-i"}"#]);
    assert_success(&out, "run -i");
    assert_eq!(stdout(&out), "{\"from\":\"-i\"}\n");
}

#[test]
fn a_successful_run_prints_its_output_as_one_json_line_on_stdout() {
    let env = Env::new();
    let out = env.run(&example("hello.json"), r#"{"name": "Ada"}"#, &[]);
    assert_success(&out, "run hello.json");
    let id = env.only_execution_id();
    let text = stdout(&out);
    assert_eq!(text.lines().count(), 1, "one line: {text:?}");
    let printed: Value = serde_json::from_str(&text).expect("stdout is JSON");
    assert_eq!(Some(printed), env.execution(&id).output);
    // Progress stays on stderr.
    assert!(stderr(&out).contains("✓"), "{}", describe(&out));
    assert!(stderr(&out).contains(&format!("details: flowrun show {id}")));

    // A failed run prints nothing on stdout.
    let wf = env.write_workflow(
        "fail.json",
        &json!({ "id": "fail", "nodes": [ { "id": "boom", "type": "code", "code": "raise ValueError('no')" } ] }),
    );
    let out = env.run(&wf, "{}", &[]);
    assert_code(&out, 1, "a failing run");
    assert_eq!(stdout(&out), "", "{}", describe(&out));
}

#[test]
fn a_reader_of_stderr_that_goes_away_changes_no_exit_code() {
    // `flowrun run wf.json 2>&1 | head -1` in a CI script: what is told on stderr after the
    // reader left must not turn the run's status into a panic (it exited 101).
    let env = Env::new();
    let fail = env.write_workflow(
        "fail.json",
        &json!({ "id": "fail", "nodes": [ { "id": "boom", "type": "code", "code": "raise ValueError('no')" } ] }),
    );
    env.write_file(
        "hello.test.yaml",
        &format!(
            "workflow: {}\ncases:\n  - name: ada\n    trigger: {{ name: Ada }}\n",
            example("hello.json").display()
        ),
    );
    let suite = env.dir.path().join("hello.test.yaml");
    let hello = example("hello.json");
    let cases: [(&[&str], i32); 3] = [
        (
            &["run", hello.to_str().unwrap(), "-i", r#"{"name": "Ada"}"#],
            0,
        ),
        (&["run", fail.to_str().unwrap()], 1),
        (&["test", suite.to_str().unwrap(), "--offline"], 0),
    ];
    for (args, code) in cases {
        let mut child = env
            .command()
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stderr.take());
        let status = child.wait().unwrap();
        assert_eq!(
            status.code(),
            Some(code),
            "flowrun {args:?} with stderr closed"
        );
    }
    let ids = env.execution_ids();
    assert_eq!(ids.len(), 3, "every run recorded: {ids:?}");
    // Output that cannot be written for another reason (a full disk) is an error, exit 3: it
    // exited 0, and `flowrun run wf > out.json && use out.json` went on with an empty file.
    let ada = ["run", hello.to_str().unwrap(), "-i", r#"{"name": "Ada"}"#];
    let events = [&ada[..], &["--events", "jsonl"]].concat();
    let test = ["test", suite.to_str().unwrap(), "--offline", "--json"];
    for args in [&ada[..], &events, &test] {
        let full = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .unwrap();
        let out = env.command().args(args).stdout(full).output().unwrap();
        assert_code(&out, 3, &format!("flowrun {args:?} > /dev/full"));
        assert!(
            stderr(&out).contains("cannot write to stdout: No space left on device"),
            "{}",
            describe(&out)
        );
    }
}

#[test]
fn output_json_on_stdout_is_exact_and_terminal_safe() {
    let env = Env::new();
    let wf = env.write_workflow(
        "nasty.json",
        &json!({ "id": "nasty", "nodes": [ { "id": "n", "type": "code",
            "code": "return {'s': 'a\\x1b[2Jb\\x7fc\\u009bd\\u202ee\\nf'}" } ] }),
    );
    let out = env.run(&wf, "{}", &[]);
    assert_success(&out, "run");
    let text = stdout(&out);
    for raw in ['\u{1b}', '\u{7f}', '\u{9b}', '\u{202e}'] {
        assert!(!text.contains(raw), "{raw:?} written raw: {text:?}");
    }
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v, json!({"s": "a\u{1b}[2Jb\u{7f}c\u{9b}d\u{202e}e\nf"}));
    // --events jsonl and --json are exact JSON as well.
    for flag in [&["--events", "jsonl"][..], &["--json"][..]] {
        let out = env.run(&wf, "{}", flag);
        assert_success(&out, &format!("{flag:?}"));
        let text = stdout(&out);
        assert!(
            !text.contains('\u{1b}') && !text.contains('\u{202e}'),
            "{text}"
        );
        let found = if flag[0] == "--json" {
            serde_json::from_str::<Value>(&text).unwrap()["output"].clone()
        } else {
            text.lines()
                .map(|l| serde_json::from_str::<Value>(l).unwrap())
                .find(|e| e["event"] == "node_end")
                .and_then(|e| serde_json::from_str(e["output_preview"].as_str()?).ok())
                .unwrap()
        };
        assert_eq!(found, v, "{flag:?}");
    }
}

/// A sparse file of `len` bytes (no disk used).
fn sparse(env: &Env, name: &str, len: u64) -> String {
    let p = env.path(name);
    std::fs::File::create(&p).unwrap().set_len(len).unwrap();
    p.display().to_string()
}

#[test]
fn special_and_oversized_files_are_refused_at_once() {
    let env = Env::new();
    let wf = echo(&env);
    let wf = wf.to_str().unwrap();
    let fifo = env.path("fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
    let fifo = fifo.display().to_string();
    let big_trigger = sparse(&env, "big.json", 256 * MIB + 1);
    let big_env = sparse(&env, "big.env", MIB + 1);
    let big_pin = sparse(&env, "big-pin.json", MIB + 1);
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec!["--input-file".into(), "/dev/zero".into()],
            "is a device",
        ),
        (vec!["--input-file".into(), fifo.clone()], "is a FIFO"),
        (
            vec!["--input-file".into(), env.path("").display().to_string()],
            "is a directory",
        ),
        (
            vec!["--input-file".into(), big_trigger],
            "larger than the limit of 256 MiB",
        ),
        (vec!["--env-file".into(), "/dev/zero".into()], "is a device"),
        (vec!["--env-file".into(), fifo.clone()], "is a FIFO"),
        (
            vec!["--env-file".into(), big_env],
            "larger than the limit of 1 MiB",
        ),
        (vec!["--pin".into(), "out=/dev/zero".into()], "is a device"),
        (
            vec!["--pin".into(), format!("out={big_pin}")],
            "larger than the limit of 1 MiB",
        ),
    ];
    for (args, want) in cases {
        let started = std::time::Instant::now();
        let out = env.cmd(
            ["run", wf]
                .into_iter()
                .chain(args.iter().map(String::as_str)),
        );
        assert_code(&out, 2, &format!("{args:?}"));
        assert!(
            stderr(&out).contains(want),
            "{args:?}: want {want:?}\n{}",
            describe(&out)
        );
        // Refused without reading: generous, a loaded machine still answers well within this.
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{args:?} took {:?}",
            started.elapsed()
        );
    }
    assert_eq!(env.execution_count(), 0);
}

#[test]
fn trigger_on_stdin_over_the_limit_is_refused() {
    let env = Env::new();
    let wf = echo(&env);
    let mut child = env
        .command()
        .args(["run", wf.to_str().unwrap(), "--input-file", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || {
        let chunk = vec![b' '; MIB as usize];
        // Ends when flowrun stops reading (broken pipe) or after 300 MiB.
        for _ in 0..300 {
            if stdin.write_all(&chunk).is_err() {
                break;
            }
        }
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    assert_code(&out, 2, "a trigger of 300 MiB on stdin");
    assert!(
        stderr(&out).contains("stdin (--input-file -) is larger than the limit of 256 MiB"),
        "{}",
        describe(&out)
    );
}

#[test]
fn trigger_nesting_is_bounded_like_the_runtime() {
    let env = Env::new();
    let wf = echo(&env);
    let nested = |n: usize| format!("{}1{}", "[".repeat(n), "]".repeat(n));
    // Deeper than serde_json's default 128, as deep as the runtime allows.
    let file = env.write_file("deep.json", &nested(300));
    let out = env.cmd([
        "run",
        wf.to_str().unwrap(),
        "--input-file",
        file.to_str().unwrap(),
    ]);
    assert_success(&out, "300 levels");
    let file = env.write_file("hostile.json", &nested(100_000));
    let out = env.cmd([
        "run",
        wf.to_str().unwrap(),
        "--input-file",
        file.to_str().unwrap(),
    ]);
    assert_code(&out, 2, "100000 levels");
    assert!(
        stderr(&out).contains("hostile.json")
            && stderr(&out).contains("nested more than 420 levels deep"),
        "{}",
        describe(&out)
    );
    let out = env.run(&wf, "{\"a\": ", &[]);
    assert_code(&out, 2, "bad --input");
    assert!(
        stderr(&out).contains("--input: invalid input"),
        "{}",
        describe(&out)
    );
}

fn connection_workflow(env: &Env) -> std::path::PathBuf {
    env.write_workflow(
        "conn.json",
        &json!({ "id": "conn",
            "connections": { "svc": { "env": "MY_SECRET" } },
            "nodes": [ { "id": "c", "type": "command", "connections": ["svc"],
                "argv": ["sh", "-c", "test \"$MY_SECRET\" = from-env-0123456789 && test \"$PLAIN\" = plain-value && echo ok"] } ] }),
    )
}

#[test]
fn env_key_takes_the_value_from_flowruns_environment() {
    let env = Env::new();
    let wf = connection_workflow(&env);
    let vars = [
        ("MY_SECRET", "from-env-0123456789"),
        ("PLAIN", "plain-value"),
    ];
    let out = env.run_with(&wf, "{}", &vars, &["--env", "MY_SECRET", "--env", "PLAIN"]);
    assert_success(&out, "--env KEY");
    assert!(!stderr(&out).contains("warning"), "{}", describe(&out));
    let id = env.only_execution_id();
    assert_eq!(env.node(&id, "c").status, "success");

    // A connection's value on the command line works, with a warning that says what to do.
    let out = env.run_with(
        &wf,
        "{}",
        &[("PLAIN", "plain-value")],
        &["--env", "MY_SECRET=from-env-0123456789", "--env", "PLAIN"],
    );
    assert_success(&out, "--env KEY=VALUE");
    let err = stderr(&out);
    assert!(
        err.contains("warning: --env MY_SECRET=… puts a secret on the command line")
            && err.contains("use --env MY_SECRET (its value from your environment) or --env-file"),
        "{err}"
    );
    assert!(
        !err.contains("from-env-0123456789"),
        "the secret is not echoed: {err}"
    );
    // A variable that is not a connection's: no warning.
    let out = env.run_with(
        &wf,
        "{}",
        &[("MY_SECRET", "from-env-0123456789")],
        &["--env", "MY_SECRET", "--env", "PLAIN=plain-value"],
    );
    assert_success(&out, "--env PLAIN=…");
    assert!(!stderr(&out).contains("warning"), "{}", describe(&out));

    // --env KEY with KEY unset is a usage error.
    let out = env.run(&wf, "{}", &["--env", "PLAIN"]);
    assert_code(&out, 2, "--env of an unset variable");
    assert!(
        stderr(&out).contains("--env PLAIN: PLAIN is not set in flowrun's environment"),
        "{}",
        describe(&out)
    );
}

/// Runs a trigger file through `echo`-like workflow and returns the runner's peak RSS (kB).
fn peak_rss_kb(fx: &Fx, input: &std::path::Path) -> u64 {
    let wf = fx.workflow(
        "len",
        &json!({ "id": "len", "nodes": [
            { "id": "n", "type": "code", "code": "return len(trigger['data'])" } ] }),
    );
    let out = fx
        .spawn(&[
            "run",
            wf.to_str().unwrap(),
            "--input-file",
            input.to_str().unwrap(),
        ])
        .wait(WATCHDOG);
    out.assert_code(0);
    out.peak_hwm_kb
}

#[test]
fn a_large_trigger_is_held_once() {
    let fx = Fx::new();
    // 200 MiB in one string: the runner held ~615 MiB (text, value, re-serialized bytes, the
    // store's copy); now the file's bytes once.
    let n = 200 * MIB as usize;
    let input = fx.path("str.json");
    {
        let mut f = std::io::BufWriter::new(std::fs::File::create(&input).unwrap());
        f.write_all(b"{\"data\": \"").unwrap();
        let chunk = vec![b'a'; MIB as usize];
        for _ in 0..200 {
            f.write_all(&chunk).unwrap();
        }
        f.write_all(b"\"}").unwrap();
    }
    let peak = peak_rss_kb(&fx, &input);
    eprintln!(
        "200 MiB string trigger: runner peak RSS {} MiB",
        peak / 1024
    );
    assert!(
        peak < 350 * 1024,
        "peak RSS {peak} kB for a {n}-byte trigger"
    );
    let id = fx.only_execution_id();
    let e = fx.execution(&id);
    assert_eq!(e.output, Some(json!(n)));
    // The store keeps a marker, not the 200 MiB.
    assert_eq!(
        e.trigger["$flowrun_truncated"],
        json!(true),
        "{}",
        &e.trigger.to_string()[..200]
    );
    assert_eq!(e.trigger["bytes"], json!(n + 12));

    // 10 million small numbers (20 MiB of text): ~1.5 GiB as a parsed value before.
    let input = fx.path("arr.json");
    {
        let mut f = std::io::BufWriter::new(std::fs::File::create(&input).unwrap());
        f.write_all(b"{\"data\": [1").unwrap();
        for _ in 1..10_000_000 {
            f.write_all(b",1").unwrap();
        }
        f.write_all(b"]}").unwrap();
    }
    let peak = peak_rss_kb(&fx, &input);
    eprintln!(
        "10M-number trigger (20 MiB): runner peak RSS {} MiB",
        peak / 1024
    );
    assert!(peak < 200 * 1024, "peak RSS {peak} kB");
}

/// `run` opens an existing database while it prepares the workflow; a run that fails to prepare
/// creates none, changes nothing in an existing one (no recovery of executions left by dead
/// runners: the next run that starts does that, and says so), and leaves it whole.
#[test]
fn a_run_that_fails_to_prepare_creates_no_database_and_changes_none() {
    let env = Env::new();
    let good = echo(&env);
    let bad = env.write_workflow(
        "bad.json",
        &json!({ "id": "bad", "nodes": [
            { "id": "a", "type": "set", "fields": { "v": "{{ foo.x }}" } }
        ]}),
    );
    for i in 0..20 {
        let out = env.run(&bad, "{}", &[]);
        assert_code(&out, 2, &format!("invalid run {i}"));
        assert!(!env.db_path().exists(), "invalid run {i} made a database");
    }
    // A timeout of 0 would end the execution at once: refused as the workflow's own would be.
    // So is an address-space limit of 0 MiB (the interpreter crashed as it started: exit 1 and a
    // recorded execution, helper report of Dec 5).
    for flag in ["--timeout-ms", "--max-memory-mb"] {
        let out = env.run(&good, r#"{"n": 1}"#, &[flag, "0"]);
        assert_code(&out, 2, &format!("{flag} 0"));
        assert!(
            stderr(&out).contains(&format!("'0' for '{flag}")),
            "{}",
            describe(&out)
        );
        assert!(!env.db_path().exists(), "{flag} 0 made a database");
    }

    assert_code(
        &env.run(&good, r#"{"n": 1}"#, &[]),
        0,
        "run of a valid workflow",
    );
    // Its row as a runner that is gone left it: `running`.
    let id = env.only_execution_id();
    let mut gone = std::process::Command::new("true").spawn().unwrap();
    gone.wait().unwrap();
    env.db_rw()
        .execute(
            "UPDATE executions SET status = 'running', finished_at = NULL, runner_pid = ?2,
             runner_start_time = 1 WHERE id = ?1",
            rusqlite::params![id, gone.id() as i64],
        )
        .unwrap();
    for i in 0..10 {
        let out = env.run(&bad, "{}", &[]);
        assert_code(&out, 2, &format!("invalid run {i} on an existing database"));
        let err = stderr(&out);
        assert!(err.contains("unknown root 'foo'"), "{}", describe(&out));
        assert!(!err.contains("marked interrupted"), "{}", describe(&out));
    }
    assert_eq!(env.execution(&id).status, "running");
    let check: String = env
        .db()
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");

    let out = env.run(&good, r#"{"n": 2}"#, &[]);
    assert_code(&out, 0, "a run after them");
    assert!(
        stderr(&out).contains("marked interrupted"),
        "{}",
        describe(&out)
    );
    assert_eq!(env.execution(&id).status, "interrupted");
    assert_eq!(env.execution_count(), 2);
}

/// `--help` of the commands a script or CI job branches on lists their exit codes (they were
/// only in the README).
#[test]
fn help_lists_the_exit_codes() {
    let env = Env::new();
    for (command, codes) in [
        (
            "run",
            &["0 success", "75 paused", "124 timeout", "130 stopped"][..],
        ),
        (
            "resume",
            &["1 the workflow failed", "3 environment problem"][..],
        ),
        (
            "test",
            &[
                "1 a case failed",
                "2 an invalid test file",
                "130 interrupted",
            ][..],
        ),
    ] {
        let out = env.cmd([command, "--help"]);
        assert_code(&out, 0, command);
        // As clap wraps it: words, whatever the line breaks.
        let text = stdout(&out)
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        for code in codes {
            assert!(
                text.contains(code),
                "{command} --help has no {code:?}:\n{text}"
            );
        }
    }
}
