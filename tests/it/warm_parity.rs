//! A warm execution sees what a cold one of the same workflow sees, and leaves what a cold one
//! leaves — where they differed (found by an attack on warm starts): a TLS policy given to the
//! execution (`OPENSSL_CONF`, read as libcrypto starts: in the template), descriptors flowrun's
//! caller left open (a cold interpreter inherited them), the exit status of a script that exits
//! with an odd code, and a template's private directory with a directory made in it.

use crate::support::*;
use serde_json::{Value, json};
use std::os::unix::process::CommandExt;

/// `flowrun test --json ARGS` in `env`: its executions, in case order, as `show --json` has
/// them.
fn executions(env: &Env, args: &[&str]) -> Vec<Value> {
    env.suite_executions(&env.cmd([&["test", "--json"], args].concat()))
}

/// An OpenSSL configuration that changes what a default TLS context is: one TLS 1.3 suite, and
/// no session tickets.
const STRICT_TLS: &str = "openssl_conf = openssl_init
[openssl_init]
ssl_conf = ssl_sect
[ssl_sect]
system_default = system_default_sect
[system_default_sect]
CipherSuites = TLS_AES_256_GCM_SHA384
Options = -SessionTicket
";

#[test]
fn a_tls_policy_given_to_an_execution_holds_warm_as_cold() {
    let env = Env::new();
    let conf = env.write_file("strict.cnf", STRICT_TLS);
    // The HTTP node makes the template import `ssl` (its node modules, loaded ahead): libcrypto
    // reads its configuration then.
    env.write_workflow(
        "tls.json",
        &json!({"id": "tls", "nodes": [
            {"id": "ctx", "type": "code", "code":
                "import ssl\nc = ssl.create_default_context()\nreturn {'ciphers': len(c.get_ciphers()), 'no_ticket': bool(c.options & ssl.OP_NO_TICKET)}"},
            {"id": "fetch", "type": "http_request", "url": "http://127.0.0.1:9/none",
             "on_error": "continue", "after": ["ctx"]}]}),
    );
    let strict = format!(
        "    env: {{ OPENSSL_CONF: {} }}\n    expect: {{ nodes.ctx.output.no_ticket: true }}\n",
        conf.display()
    );
    let plain = "    expect: { nodes.ctx.output.no_ticket: false }\n";
    let cases: String = [
        ("strict 1", strict.as_str()),
        ("strict 2", &strict),
        ("strict 3", &strict),
        ("plain 1", plain),
        ("plain 2", plain),
    ]
    .iter()
    .map(|(name, body)| format!("  - name: {name}\n{body}"))
    .collect();
    env.write_file(
        "tls.test.yaml",
        &format!("workflow: ./tls.json\ncases:\n{cases}"),
    );
    for how in [&["-j", "1"][..], &["-j", "1", "--cold"]] {
        let got = executions(&env, &[&["tls.test.yaml"], how].concat());
        let seen: Vec<_> = got
            .iter()
            .map(|e| (e["start"].clone(), e["nodes"][0]["output"].clone()))
            .collect();
        assert!(
            got.iter().all(|e| e["status"] == "success"),
            "{how:?}: {seen:?}"
        );
        let strict_out = &got[0]["nodes"][0]["output"];
        assert_eq!(strict_out["no_ticket"], true, "{how:?}: {seen:?}");
        for (i, e) in got.iter().enumerate() {
            let want = if i < 3 {
                strict_out
            } else {
                &got[3]["nodes"][0]["output"]
            };
            assert_eq!(
                &e["nodes"][0]["output"], want,
                "{how:?}, case {i}: {seen:?}"
            );
        }
        assert_ne!(got[3]["nodes"][0]["output"], *strict_out, "{seen:?}");
        if how.len() == 2 {
            // Warm: each policy's cases after its first ran in a template of their own.
            assert_eq!(got[2]["start"], "warm", "{seen:?}");
            assert_eq!(got[4]["start"], "warm", "{seen:?}");
        }
    }
}

#[test]
fn what_flowruns_caller_left_open_reaches_no_execution() {
    let env = Env::new();
    let secret = env.write_file("secret.txt", "secret-data");
    env.write_workflow(
        "fds.json",
        &json!({"id": "fds", "nodes": [{"id": "look", "type": "code", "code":
            "import os\nout = []\nfor f in os.listdir('/proc/self/fd'):\n    try:\n        if os.readlink('/proc/self/fd/' + f).endswith('secret.txt'):\n            out.append(int(f))\n    except OSError:\n        pass\nreturn out"}]}),
    );
    env.write_file(
        "fds.test.yaml",
        "workflow: ./fds.json\ncases:\n  - name: a\n    expect: { output: [] }\n  - name: b\n    expect: { output: [] }\n",
    );
    // As after `exec 7<secret.txt` in a shell: descriptor 7, not close-on-exec.
    let with_fd_7 = |args: &[&str]| {
        let file = std::fs::File::open(&secret).unwrap();
        let mut cmd = env.command();
        let raw = std::os::fd::IntoRawFd::into_raw_fd(file);
        // SAFETY: dup2 and close between fork and exec, on descriptors this process owns.
        unsafe {
            cmd.pre_exec(move || {
                if libc::dup2(raw, 7) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let out = output(
            assert_cmd::Command::from_std(cmd)
                .timeout(TIMEOUT)
                .args(args),
        );
        // SAFETY: the descriptor is this test's, and used by nothing after the spawn.
        unsafe { libc::close(raw) };
        out
    };
    let out = with_fd_7(&["run", "fds.json"]);
    assert_success(&out, "run");
    assert_eq!(stdout(&out).trim(), "[]", "{}", describe(&out));
    for extra in [&[][..], &["--cold"]] {
        let out = with_fd_7(&[&["test", "fds.test.yaml", "-j", "1"], extra].concat());
        assert_code(&out, 0, "both cases see no descriptor of the caller's");
    }
}

#[test]
fn an_exit_status_is_the_same_warm_and_cold() {
    let env = Env::new();
    // The script's own last `sys.exit` gets the trigger's code.
    env.write_workflow(
        "exit.json",
        &json!({"id": "exit", "nodes": [{"id": "n", "type": "code", "code":
            "import sys\ncode = trigger['code']\nreal = sys.exit\nsys.exit = lambda c=0: real(code)\nreturn {'code': code}"}]}),
    );
    let codes = [
        json!(-1),
        json!(-9),
        json!(300),
        json!("interrupt"),
        json!(3),
    ];
    let cases: String = codes
        .iter()
        .map(|c| format!("  - name: code {c}\n    trigger: {{ code: {c} }}\n"))
        .collect();
    env.write_file(
        "exit.test.yaml",
        &format!("workflow: ./exit.json\ncases:\n{cases}"),
    );
    let exits = |extra: &[&str]| -> Vec<(Value, Value)> {
        executions(&env, &[&["exit.test.yaml", "-j", "1"], extra].concat())
            .iter()
            .map(|e| (e["start"].clone(), e["exit"].clone()))
            .collect()
    };
    let warm = exits(&[]);
    let cold = exits(&["--cold"]);
    assert!(warm.iter().all(|(s, _)| s == "warm"), "{warm:?}");
    let exit_of = |v: &[(Value, Value)]| v.iter().map(|(_, e)| e.clone()).collect::<Vec<_>>();
    assert_eq!(
        exit_of(&warm),
        exit_of(&cold),
        "warm {warm:?}\ncold {cold:?}"
    );
    // What CPython does: the code's low byte; a string printed, and 1.
    let want: Vec<Value> = [255, 247, 44, 1, 3]
        .iter()
        .map(|c| json!(format!("exit code {c}")))
        .collect();
    assert_eq!(exit_of(&cold), want);
}

/// The template's private directory in `TMPDIR` goes with it when its runner is killed, with
/// what an execution made in it: files, and a directory with a file in it.
#[test]
fn a_killed_runner_leaves_no_template_directory_whatever_an_execution_made_in_it() {
    let env = Env::new();
    env.write_workflow(
        "plant.json",
        &json!({"id": "plant", "nodes": [{"id": "n", "type": "code", "code":
            "import os, time\nenv = dict(l.split('=', 1) for l in open('/proc/self/environ').read().split('\\0') if '=' in l)\nd = env.get('FLOWRUN_WARM_DIR')\nif d and os.path.isdir(d):\n    os.makedirs(os.path.join(d, 'sub', 'deeper'), exist_ok=True)\n    open(os.path.join(d, 'sub', 'deeper', 'f'), 'w').close()\nif trigger.get('hang'):\n    time.sleep(60)\nreturn d"}]}),
    );
    env.write_file(
        "plant.test.yaml",
        "workflow: ./plant.json\ncases:\n  - name: plants\n  - name: plants again\n  - name: hangs\n    trigger: { hang: true }\n",
    );
    let mut child = env
        .command()
        .args(["test", "plant.test.yaml", "-j", "1"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let tmp = env.tmp_dir();
    let planted = || {
        std::fs::read_dir(&tmp)
            .unwrap()
            .flatten()
            .find(|e| e.path().join("sub/deeper/f").exists())
            .map(|e| e.path())
    };
    let dir = wait_for("a directory planted in the template's", planted);
    child.kill().unwrap();
    child.wait().unwrap();
    wait_for("the template's directory to be removed", || {
        (!dir.exists()).then_some(())
    });
    let left: Vec<_> = std::fs::read_dir(&tmp)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert!(left.is_empty(), "left in TMPDIR: {left:?}");
}

/// A warning a code node causes is printed as a cold run prints it, warm too: the template had
/// linecache loaded (for its code nodes) and the node's source in it, so a warm run showed the
/// warning's source line and a cold one did not.
#[test]
fn a_warning_reads_the_same_warm_and_cold() {
    let env = Env::new();
    env.write_workflow(
        "warn.json",
        &json!({"id": "warn", "nodes": [
            // Mocked in every case: it never runs, and its source (which may format
            // tracebacks) decides nothing, warm or cold.
            {"id": "logme", "type": "code", "code": "import logging\nreturn 1"},
            {"id": "coro", "type": "code", "code": "async def f():\n    return 1\nf()\nreturn 1"},
            {"id": "fetch", "type": "http_request", "url": "http://127.0.0.1:9/none",
             "on_error": "continue", "after": ["coro"]}]}),
    );
    env.write_file(
        "warn.test.yaml",
        "workflow: ./warn.json\ncases:\n  - name: a\n    mock: { logme: 5 }\n  - name: b\n    mock: { logme: 5 }\n",
    );
    let logs = |extra: &[&str]| -> (Vec<String>, Value) {
        let got = executions(&env, &[&["warn.test.yaml", "-j", "1"], extra].concat());
        let e = &got[1];
        let out = env.cmd([
            "logs",
            e["id"].as_str().unwrap(),
            "--node",
            "coro",
            "--json",
        ]);
        assert_success(&out, "logs");
        let lines = stdout(&out)
            .lines()
            .map(|l| {
                serde_json::from_str::<Value>(l).unwrap()["line"]
                    .as_str()
                    .unwrap_or("")
                    .to_string()
            })
            .collect();
        (lines, e["start"].clone())
    };
    let (warm, start) = logs(&[]);
    assert_eq!(start, "warm");
    let (cold, _) = logs(&["--cold"]);
    assert!(
        warm.iter().any(|l| l.contains("was never awaited")),
        "{warm:?}"
    );
    assert_eq!(warm, cold);
}

/// Modules a cold start of a plain workflow does without (tests/it/codegen_script.rs keeps it so):
/// each costs its import and, loaded in a template, pages every fork maps and every exit unmaps.
/// (Two names split: a code node that mentions them is one that may format tracebacks itself,
/// for which the runtime loads `linecache` at once.)
const SLOW: &str = "['re', 'enum', 'json', 'socket', 'selectors', 'signal', 'trace' 'back', \
                    'line' 'cache', 'tokenize', 'functools', 'collections', 'array']";

#[test]
fn a_plain_workflow_finds_no_slow_module_loaded_warm_or_cold() {
    let env = Env::new();
    // A code node (its template once preloaded `traceback` for it) after a template node.
    env.write_workflow(
        "plain.json",
        &json!({"id": "plain", "nodes": [
            {"id": "greet", "type": "template", "template": "hi"},
            {"id": "probe", "type": "code", "after": ["greet"], "code":
                format!("import sys\nreturn [m for m in {SLOW} if m in sys.modules]")}]}),
    );
    env.write_file(
        "plain.test.yaml",
        "workflow: ./plain.json\ncases:\n  - name: a\n  - name: b\n  - name: c\n",
    );
    for extra in [&[][..], &["--cold"]] {
        let got = executions(&env, &[&["plain.test.yaml", "-j", "1"], extra].concat());
        let want = if extra.is_empty() { "warm" } else { "cold" };
        assert_eq!(got.len(), 3);
        for e in &got {
            assert_eq!(e["status"], "success", "{e:#}");
            assert_eq!(e["start"], want, "{e:#}");
            assert_eq!(e["nodes"][1]["output"], json!([]), "{want}: {e:#}");
        }
    }
}
