//! Early starts (`flowrun_executor::early`): `flowrun run` starts its interpreter while it
//! prepares the run; the execution it then runs there sees what a cold start's sees, one whose
//! launch turns out other than the one told starts cold, and a run that fails to prepare leaves
//! no interpreter behind. Real processes, real Python; nothing here is timed.

use crate::support::serve::World;
use crate::support::*;
use crate::warm::{code_workflow, normalized, run_wait};
use serde_json::{Value, json};
use std::io::Write as _;
use std::path::Path;
use std::process::Stdio;

/// What an execution sees of how it was started.
const PROBE: &str = r#"
import os, sys, subprocess, time
main = sys.modules['__main__']
cmdline = open('/proc/self/cmdline', 'rb').read().split(b'\0')
return {
    'script_arg': os.path.basename(cmdline[4].decode()),
    'environ': list(os.environ.items()),
    'child_env': sorted(subprocess.run(['env', '-0'], capture_output=True).stdout.decode().split('\0')),
    'cwd': os.getcwd(),
    'argv': sys.argv,
    'path': sys.path,
    'flags': list(sys.flags),
    'executable': sys.executable,
    'main_names': sorted(vars(main)),
    'main_file': main.__file__,
    'loader': type(main.__loader__).__name__,
    'spec': repr(main.__spec__),
    'encodings': [sys.stdin.encoding, sys.stdout.encoding, sys.getfilesystemencoding()],
    'tz': list(time.tzname),
    'modules': sorted(sys.modules),
}
"#;

/// `flowrun run FILE --json` in `env`, with `FLOWRUN_EARLY_START` as given: its JSON result.
fn run_json(env: &Env, file: &std::path::Path, early: &str, extra: &[&str]) -> Value {
    let mut args = vec!["--json"];
    args.extend_from_slice(extra);
    let out = env.run_with(file, "{}", &[("FLOWRUN_EARLY_START", early)], &args);
    assert_success(&out, "flowrun run");
    serde_json::from_slice(&out.stdout).expect("--json prints JSON")
}

/// Removes the compiled scripts of `env`'s cache: the next run runs the `.py` (and compiles).
fn forget_bytecode(env: &Env) {
    for e in std::fs::read_dir(env.cache_dir().join("scripts"))
        .unwrap()
        .flatten()
    {
        if e.path().extension().is_some_and(|x| x == "pyc") {
            std::fs::remove_file(e.path()).unwrap();
        }
    }
}

/// Asserts that `early` ran in the interpreter started early and `plain` did not, and that
/// each saw the same of how it was started, and recorded the same events.
fn same_start(env: &Env, plain: &Value, early: &Value) {
    same_start_without(env, plain, early, &["EARLY_PROBE"]);
}

/// [`same_start`], the execution's environment holding each of `given`.
fn same_start_without(env: &Env, plain: &Value, early: &Value, given: &[&str]) {
    let mask = |run: &Value| {
        let id = run["id"].as_str().unwrap();
        let text = run["output"].to_string().replace(id, "<id>");
        serde_json::from_str::<Value>(&text).unwrap()
    };
    let (p, e) = (&mask(plain), &mask(early));
    // The interpreter ran the bootstrap first (`ps` shows its file), and was given the script.
    let arg = |v: &Value| v["script_arg"].as_str().unwrap().to_string();
    assert!(!arg(p).starts_with("early-"), "{p}");
    assert!(arg(e).starts_with("early-"), "{e}");
    assert_eq!(
        (&plain["start"], &early["start"]),
        (&json!("cold"), &json!("cold"))
    );
    for key in [
        "environ",
        "child_env",
        "cwd",
        "argv",
        "path",
        "flags",
        "executable",
        "main_names",
        "main_file",
        "loader",
        "spec",
        "encodings",
        "tz",
        "modules",
    ] {
        assert_eq!(
            p[key], e[key],
            "{key} differs: plain {} early {}",
            p[key], e[key]
        );
    }
    let environ: Vec<(String, String)> = serde_json::from_value(e["environ"].clone()).unwrap();
    for name in given {
        assert!(
            environ.iter().any(|(k, _)| k == name),
            "{name} in {environ:?}"
        );
    }
    // The same events, but for the process that ran them.
    let (pid, eid) = (plain["id"].as_str().unwrap(), early["id"].as_str().unwrap());
    let mut pe = normalized(&env.events(pid), pid);
    let mut ee = normalized(&env.events(eid), eid);
    for events in [&mut pe, &mut ee] {
        for ev in events.iter_mut() {
            if let Some(out) = ev["data"]["output"].as_object_mut() {
                out.remove("script_arg");
            }
            // Its preview starts with that name.
            ev["data"].as_object_mut().unwrap().remove("output_preview");
        }
    }
    assert_eq!(pe, ee);
}

#[test]
fn an_early_start_is_the_cold_start_a_workflow_sees() {
    let env = Env::new();
    let file = env.write_workflow("probe.json", &code_workflow("probe", PROBE));
    let extra = ["--env", "TZ=Asia/Tokyo", "--env", "EARLY_PROBE=given"];
    // The script's source (its first runs, while it is compiled), then its bytecode.
    let early = run_json(&env, &file, "1", &extra);
    forget_bytecode(&env);
    let plain = run_json(&env, &file, "0", &extra);
    assert!(
        plain["output"]["main_file"]
            .as_str()
            .unwrap()
            .ends_with(".py")
    );
    same_start(&env, &plain, &early);
    let plain = run_json(&env, &file, "0", &extra);
    let early = run_json(&env, &file, "1", &extra);
    assert!(
        plain["output"]["main_file"]
            .as_str()
            .unwrap()
            .ends_with(".pyc")
    );
    same_start(&env, &plain, &early);
}

#[test]
fn without_a_locale_an_early_start_keeps_what_python_sets_as_a_cold_one_does() {
    // No LANG, no LC_ALL: Python sets LC_CTYPE=C.UTF-8 as it starts (PEP 538), in os.environ
    // and for what it starts; the execution's environment, handed over later, must keep it.
    let env = Env::new();
    let file = env.write_workflow("probe.json", &code_workflow("probe", PROBE));
    let run = |early: &str| {
        let mut cmd = env.flowrun();
        cmd.arg("run").arg(&file).args(["--input", "{}", "--json"]);
        cmd.env_remove("LANG")
            .env_remove("LC_ALL")
            .env_remove("LC_CTYPE");
        cmd.env("FLOWRUN_EARLY_START", early);
        let out = output(&mut cmd);
        assert_success(&out, "flowrun run without a locale");
        serde_json::from_slice::<Value>(&out.stdout).unwrap()
    };
    let early = run("1");
    forget_bytecode(&env);
    let plain = run("0");
    same_start_without(&env, &plain, &early, &["LC_CTYPE"]);
}

#[test]
fn without_a_locale_a_warm_start_keeps_what_python_sets_too() {
    // The warm template sets the execution's environment in a fork the same way.
    let env = Env::new();
    let code = "import os, subprocess\nreturn {'here': os.environ.get('LC_CTYPE'), 'child': subprocess.run(['sh', '-c', 'echo $LC_CTYPE'], capture_output=True, text=True).stdout.strip()}";
    env.write_workflow("lc.json", &code_workflow("lc", code));
    env.write_file(
        "lc.test.yaml",
        "workflow: ./lc.json\ncases:\n  - name: as a cold start has it\n    expect:\n      output.here: C.UTF-8\n      output.child: C.UTF-8\n",
    );
    for cold in [false, true] {
        let mut cmd = env.flowrun();
        cmd.args(["test", "-j1", "--json"])
            .arg(env.path("lc.test.yaml"));
        cmd.env_remove("LANG")
            .env_remove("LC_ALL")
            .env_remove("LC_CTYPE");
        if cold {
            cmd.arg("--cold");
        }
        let out = output(&mut cmd);
        assert_success(&out, "flowrun test lc.test.yaml");
    }
    let starts: Vec<String> = env
        .db()
        .prepare("SELECT start FROM executions ORDER BY started_at, rowid")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(starts, ["warm", "cold"]);
}

/// Code that says where it runs and what is there.
const WHERE: &str = r#"
import os
cmdline = open('/proc/self/cmdline', 'rb').read().split(b'\0')
return {'script_arg': os.path.basename(cmdline[4].decode()), 'cwd': os.getcwd(), 'ls': sorted(os.listdir('.'))}
"#;

#[test]
fn a_directory_made_anew_after_the_early_start_is_where_the_execution_runs() {
    let env = Env::new();
    let file = env.write_workflow("where.json", &code_workflow("where", WHERE));
    let dir = env.path("work");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("old"), "").unwrap();
    let dir_arg = dir.display().to_string();
    let running = held_run(&env, &file, &[], &["--json", "--cwd", &dir_arg]);
    // The early interpreter is in the old directory; the name now leads to another.
    std::fs::rename(&dir, env.path("work-old")).unwrap();
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("new"), "").unwrap();
    let out = finish(running, "{}");
    assert_success(&out, "flowrun run where");
    let run: Value = serde_json::from_slice(&out.stdout).unwrap();
    let o = &run["output"];
    assert_eq!(o["ls"], json!(["new"]), "{o}");
    assert!(
        !o["script_arg"].as_str().unwrap().starts_with("early-"),
        "{o}"
    );
    assert_eq!(running_from(&env.cache_dir()), Vec::<i32>::new());
    // Left alone, it runs there, started early.
    let out = finish(
        held_run(&env, &file, &[], &["--json", "--cwd", &dir_arg]),
        "{}",
    );
    let run: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        run["output"]["script_arg"]
            .as_str()
            .unwrap()
            .starts_with("early-"),
        "{run}"
    );
    assert_eq!(run["output"]["ls"], json!(["new"]));
}

#[test]
fn sub_workflows_start_early_from_the_same_cache_or_not_at_all() {
    let env = Env::new();
    let child = code_workflow(
        "child",
        "return open('/proc/self/cmdline', 'rb').read().split(b'\\0')[4].decode()",
    );
    env.write_workflow("child.json", &child);
    let parent = json!({"id": "parent", "nodes": [
        {"id": "call", "type": "workflow", "workflow": "./child.json", "inputs": {}}]});
    let file = env.write_workflow("parent.json", &parent);
    let cache = env.cache_dir().display().to_string();
    for (early, from) in [
        ("1", format!("{cache}/early-")),
        ("0", format!("{cache}/scripts/")),
    ] {
        let out = env.run_with(&file, "{}", &[("FLOWRUN_EARLY_START", early)], &["--json"]);
        assert_success(&out, "flowrun run parent");
        let run: Value = serde_json::from_slice(&out.stdout).unwrap();
        let ran = run["output"].as_str().unwrap_or_default();
        assert!(
            ran.starts_with(&from),
            "FLOWRUN_EARLY_START={early}: the child ran {run}"
        );
    }
}

/// Pids of live processes whose command line names a file of `cache` (an early interpreter's
/// bootstrap is `<cache>/early-<hash>.py`).
fn running_from(cache: &std::path::Path) -> Vec<i32> {
    let needle = cache.display().to_string();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(&format!("{needle}/early-")))
        })
        .collect()
}

/// `flowrun run FILE --input-file - EXTRA…` in `env` with `envs`, started with its stdin held
/// open: it has started its interpreter early (seen in `/proc`) and waits for the trigger.
fn held_run(env: &Env, file: &Path, envs: &[(&str, &str)], extra: &[&str]) -> std::process::Child {
    let mut cmd = env.command();
    cmd.arg("run")
        .arg(file)
        .args(["--input-file", "-"])
        .args(extra);
    cmd.envs(envs.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = cmd.spawn().unwrap();
    wait_for("the interpreter started early", || {
        (!running_from(&env.cache_dir()).is_empty()).then_some(())
    });
    child
}

/// Gives a [`held_run`] its trigger and waits for it to end.
fn finish(mut child: std::process::Child, trigger: &str) -> std::process::Output {
    child
        .stdin
        .take()
        .unwrap()
        .write_all(trigger.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn a_run_that_fails_to_prepare_leaves_no_early_interpreter() {
    let env = Env::new();
    let schema = json!({"type": "object", "required": ["name"]});
    let mut wf = code_workflow("refused", "return 1");
    wf["inputs"] = schema;
    let file = env.write_workflow("refused.json", &wf);
    for _ in 0..3 {
        let out = finish(held_run(&env, &file, &[], &[]), "{}");
        assert_eq!(
            out.status.code(),
            Some(2),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(String::from_utf8_lossy(&out.stderr).contains("name"));
        assert_eq!(running_from(&env.cache_dir()), Vec::<i32>::new());
    }
    assert!(!env.db_path().exists(), "a refused run made no database");
}

/// A code node that lists the interpreters started early from the cache `CACHE` that are still
/// there, but itself.
const OTHERS: &str = r#"
import os
me = os.getpid()
found = []
for p in os.listdir('/proc'):
    if p.isdigit() and int(p) != me:
        try:
            if b'CACHE/early-' in open('/proc/%s/cmdline' % p, 'rb').read():
                found.append(int(p))
        except OSError:
            pass
cmdline = open('/proc/self/cmdline', 'rb').read().split(b'\0')
return {'script_arg': os.path.basename(cmdline[4].decode()), 'others': found}
"#;

#[test]
fn a_launch_other_than_the_one_told_starts_cold_and_ends_the_early_interpreter() {
    let env = Env::new();
    // A connection's variable read as a process starts (glibc's tunables), from flowrun's own
    // environment: only the prepared run knows the execution gets it.
    let code = OTHERS.replace("CACHE", &env.cache_dir().display().to_string());
    let mut wf = code_workflow("other", &code);
    wf["connections"] = json!({"tunables": {"env": "GLIBC_TUNABLES"}});
    wf["nodes"][0]["connections"] = json!(["tunables"]);
    let file = env.write_workflow("other.json", &wf);
    let envs = [
        ("GLIBC_TUNABLES", "glibc.malloc.arena_max=2"),
        ("FLOWRUN_LOG", "flowrun_executor=debug"),
    ];
    // It was started (`held_run` saw it), then ended, and why is said.
    let out = finish(held_run(&env, &file, &envs, &["--json"]), "{}");
    assert_success(&out, "flowrun run other");
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("started early is ended: other variables read as a process starts"),
        "{said}"
    );
    let run: Value = serde_json::from_slice(&out.stdout).unwrap();
    let o = &run["output"];
    let arg = o["script_arg"].as_str().unwrap();
    assert!(!arg.starts_with("early-"), "started cold: {o}");
    assert_eq!(
        o["others"],
        json!([]),
        "the interpreter started early was ended"
    );
    assert_eq!(running_from(&env.cache_dir()), Vec::<i32>::new());
}

/// The outermost frames of the stack a node sees: file (its name), function and line.
const STACK: &str = r#"
import os, traceback
return [[os.path.basename(f.filename), f.name, f.lineno] for f in traceback.extract_stack()[:3]]
"#;

#[test]
fn a_warm_or_early_stack_starts_where_a_cold_one_does() {
    let w = World::new();
    w.save("stack.json", &code_workflow("stack", STACK));
    let srv = w.serve(&[]);
    let warm = run_wait(&srv, "stack");
    assert_eq!(warm["start"], "warm", "{warm:#}");
    let env = Env::new();
    let cold_run = |early: &str| {
        let file = w.workflows().join("stack.json");
        let run = env.run_with(&file, "{}", &[("FLOWRUN_EARLY_START", early)], &["--json"]);
        assert_success(&run, "flowrun run stack");
        let cold: Value = serde_json::from_slice(&run.stdout).unwrap();
        assert_eq!(cold["start"], "cold");
        cold["output"].clone()
    };
    let (cold, early) = (cold_run("0"), cold_run("1"));
    // The script's last line, `main(WORKFLOW)`, then main; warm, under the template's one
    // frame (its source, read through a link the template removes), and started early, under
    // the bootstrap's (crates/executor/src/early.rs), which a running interpreter cannot drop.
    let warm = &warm["output"];
    assert_eq!(warm[0][0], "flowrun-warm-template", "{warm}");
    assert!(
        early[0][0].as_str().unwrap().starts_with("early-"),
        "{early}"
    );
    for started in [warm, &early] {
        assert_eq!(started[1], cold[0], "{started}\ncold {cold}");
        assert_eq!(started[2], cold[1], "{started}\ncold {cold}");
    }
    assert_eq!(cold[0][1], "<module>");
    assert_eq!(cold[1][1], "main");

    // The template's frame names a file that opens nothing: a node's own descriptor 4 (the
    // first pipe it makes gets 3 and 4) is not read for that frame's source line, as it was
    // when the name was /dev/fd/4 (the pipe's data was swallowed).
    const FD4: &str = r#"
import os, traceback
r, w = os.pipe()
os.write(w, b'kept')
stack = traceback.extract_stack()
return {'fds': [r, w], 'outer_line': stack[0].line, 'read': os.read(r, 10).decode()}
"#;
    w.save("fd4.json", &code_workflow("fd4", FD4));
    let got = run_wait(&srv, "fd4");
    assert_eq!(got["start"], "warm", "{got:#}");
    let o = &got["output"];
    assert_eq!(
        (&o["fds"][1], &o["read"], &o["outer_line"]),
        (&json!(4), &json!("kept"), &json!(""))
    );
}

#[test]
fn a_damaged_or_replaced_bootstrap_is_written_again_not_run() {
    let env = Env::new();
    let file = env.write_workflow("where.json", &code_workflow("where", WHERE));
    let first = run_json(&env, &file, "1", &[]);
    let boot = std::fs::read_dir(env.cache_dir())
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("early-")
        })
        .expect("the bootstrap is in the cache");
    let good = std::fs::read(&boot).unwrap();
    // Emptied, then a link to a file of someone else's making: each run puts its own back.
    std::fs::write(&boot, "").unwrap();
    let elsewhere = env.path("not-the-bootstrap.py");
    std::fs::write(&elsewhere, "import os\nos._exit(0)\n").unwrap();
    for damage in ["emptied", "linked"] {
        if damage == "linked" {
            std::fs::remove_file(&boot).unwrap();
            std::os::unix::fs::symlink(&elsewhere, &boot).unwrap();
        }
        let run = run_json(&env, &file, "1", &[]);
        assert_eq!(
            run["output"]["script_arg"], first["output"]["script_arg"],
            "{damage}"
        );
        assert_eq!(std::fs::read(&boot).unwrap(), good, "{damage}");
        assert!(!boot.symlink_metadata().unwrap().is_symlink());
    }
}
