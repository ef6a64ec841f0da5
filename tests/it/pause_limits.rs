//! Pause and breakpoints, cost limits, the workflow's `output` and working directories — run by
//! real Python, recorded in real SQLite, LLM calls against a real HTTP stand-in that counts them.

use crate::support::*;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

/// Node statuses of an execution's own rows (items and iterations left out), by id.
fn statuses(env: &Env, id: &str) -> Vec<(String, String)> {
    record_node_statuses(&env.show_json(id))
}

fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// No process of the execution's group is left.
fn group_gone(env: &Env, id: &str) -> bool {
    let pgid = env.execution(id).pgid.expect("a recorded process group");
    nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pgid), None).is_err()
}

/// Starts `flowrun run WF` and returns once its execution has recorded an event that `seen`
/// picks: the run, and the execution's id.
fn run_until(
    env: &Env,
    wf: &std::path::Path,
    what: &str,
    seen: impl Fn(&EventRow) -> bool,
) -> (std::process::Child, String) {
    let child = env
        .command()
        .arg("run")
        .arg(wf)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Through the CLI until the execution exists (the runner may be migrating the database).
    wait_for("the execution to start", || {
        let out = env.cmd(["history", "--json"]);
        serde_json::from_slice::<Value>(&out.stdout)
            .is_ok_and(|v| v.as_array().is_some_and(|a| !a.is_empty()))
    });
    wait_for(what, || {
        env.execution_ids()
            .first()
            .is_some_and(|id| env.events(id).iter().any(&seen))
    });
    (child, env.only_execution_id())
}

fn three_steps(env: &Env) -> std::path::PathBuf {
    // Node two starts a process of its own that would outlive it if nothing ended it.
    env.write_workflow(
        "three.json",
        &json!({ "id": "three", "nodes": [
            { "id": "one", "type": "code", "code": "return 1" },
            { "id": "two", "type": "code", "code":
                "import subprocess, time\nsubprocess.Popen(['sleep', '300'])\ntime.sleep(1.0)\nreturn nodes['one']['output'] + 1" },
            { "id": "three", "type": "code", "code": "return nodes['two']['output'] + 1" }
        ]}),
    )
}

#[test]
fn pause_lets_the_running_node_finish_and_resume_reuses_it() {
    let env = Env::new();
    let wf = three_steps(&env);
    let (child, id) = run_until(&env, &wf, "node two to start", |e| {
        e.kind == "node_start" && e.data["node"] == "two"
    });
    let out = env.cmd(["pause", &id]);
    assert_success(&out, "pause");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("paused"),
        "{}",
        describe(&out)
    );
    let run = child.wait_with_output().unwrap();
    assert_eq!(run.status.code(), Some(75), "{}", describe(&run));
    assert!(String::from_utf8_lossy(&run.stderr).contains(&format!("flowrun resume {id}")));

    let e = env.execution(&id);
    assert_eq!(e.status, "paused");
    assert_eq!(e.error.as_ref().unwrap()["type"], "Paused");
    assert!(
        group_gone(&env, &id),
        "a process of the paused execution is alive"
    );
    let record = env.show_json(&id);
    assert_eq!(
        record["nodes"][1]["output"], 2,
        "node two's output is stored"
    );
    assert_eq!(
        statuses(&env, &id),
        [
            ("one".into(), "success".into()),
            ("two".into(), "success".into())
        ]
    );
    let listed = env.cmd(["history", "--status", "paused", "--json"]);
    let listed: Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(listed[0]["id"], id.as_str());

    let out = env.cmd(["resume", &id]);
    assert_success(&out, "resume");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "3");
    let resumed = env.execution_ids().into_iter().find(|x| *x != id).unwrap();
    assert_eq!(
        statuses(&env, &resumed),
        [
            ("one".into(), "reused".into()),
            ("two".into(), "reused".into()),
            ("three".into(), "success".into())
        ]
    );
}

/// Stands in for the interpreter: says it is its own executable (so executions start it, not
/// the real one), and holds an execution's start until a SIGUSR1 — a pause — has reached it,
/// then runs the real interpreter with the signal ignored again, as it was given. Files beside
/// it say it is waiting and that the signal came.
const HELD_PYTHON: &str = r#"#!/usr/bin/env python3
import importlib.util, os, signal, sys, time
here = os.path.dirname(os.path.abspath(__file__))
if sys.argv[1:3] == ["-I", "-S"] and "print(sys.executable)" in " ".join(sys.argv):
    print("\n%d.%d.%d\n%s\n%s" % (sys.version_info[:3] + (sys.implementation.name,
                                       importlib.util.MAGIC_NUMBER.hex())))
    sys.exit(0)
if os.environ.get("FLOWRUN_EXECUTION_ID"):
    got = []
    signal.signal(signal.SIGUSR1, lambda *_: got.append(1))
    open(os.path.join(here, "waiting"), "w").close()
    deadline = time.monotonic() + 30
    while not got and time.monotonic() < deadline:
        time.sleep(0.01)
    open(os.path.join(here, "usr1" if got else "no-usr1"), "w").close()
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)
os.execv(sys.executable, [sys.executable] + sys.argv[1:])
"#;

/// A pause asked for while the interpreter is still starting — before the runtime has
/// installed its handler, while SIGUSR1 is ignored — pauses the run all the same: the runner
/// asks again when the runtime first speaks. (Such a pause was lost, and the run went on to the
/// end: the page's Pause pressed right after Run, on a busy machine.)
#[test]
fn a_pause_asked_for_while_the_interpreter_starts_is_not_lost() {
    use std::os::unix::fs::PermissionsExt;
    let env = Env::new();
    std::fs::create_dir(env.path("held")).unwrap();
    let python = env.write_file("held/python", HELD_PYTHON);
    std::fs::set_permissions(&python, std::fs::Permissions::from_mode(0o755)).unwrap();
    let held = |name: &str| python.parent().unwrap().join(name);
    let wf = env.write_workflow(
        "two.json",
        &json!({ "id": "two", "nodes": [
            { "id": "first", "type": "delay", "ms": 300 },
            { "id": "second", "type": "template", "template": "done" }
        ]}),
    );
    // Not started early: an early start's interpreter gets the execution's variables later.
    let child = env
        .command()
        .env("FLOWRUN_EARLY_START", "0")
        .arg("run")
        .arg(&wf)
        .arg("--python")
        .arg(&python)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_for("the interpreter to hold its start", || {
        held("waiting").exists()
    });
    let id = env.only_execution_id();
    let out = env.cmd(["pause", &id]);
    assert_success(&out, "pause");
    let run = child.wait_with_output().unwrap();
    assert!(
        held("usr1").exists(),
        "the pause reached the interpreter before its runtime: {}",
        describe(&run)
    );
    assert_eq!(run.status.code(), Some(75), "{}", describe(&run));
    let e = env.execution(&id);
    assert_eq!(e.status, "paused");
    assert_eq!(e.error.as_ref().unwrap()["node"], "second");
}

/// A pause during a retry's backoff: the retry never starts (it was waited for, and ran, before
/// the run paused), the attempt is recorded cancelled saying why, and resume runs the node again.
/// A pause during a `for_each` lets the running item finish and starts no other: the node says
/// how many items did not start (not that they "did not finish").
#[test]
fn a_pause_during_a_for_each_says_how_many_items_did_not_start() {
    let env = Env::new();
    let wf = env.write_workflow(
        "items.json",
        &json!({ "id": "items", "nodes": [
            { "id": "each", "type": "code", "for_each": [1, 2, 3],
              "code": "import time\ntime.sleep(0.5)\nreturn item" }
        ]}),
    );
    let (child, id) = run_until(&env, &wf, "item 0 to start", |e| {
        e.kind == "node_start" && e.data["node"] == "each" && e.data["item"] == 0
    });
    assert_success(&env.cmd(["pause", &id]), "pause");
    let run = child.wait_with_output().unwrap();
    assert_eq!(run.status.code(), Some(75), "{}", describe(&run));
    let each = env.node(&id, "each");
    let message = each.error.as_ref().map(|e| e["message"].to_string());
    assert_eq!(
        message.as_deref(),
        Some("\"2 of 3 items did not start (the execution is pausing)\""),
        "{each:?}"
    );
}

#[test]
fn a_pause_during_a_backoff_starts_no_retry() {
    let env = Env::new();
    let count = env.path("attempts");
    let code = format!(
        "p = {:?}\nopen(p, 'a').write('x')\nif len(open(p).read()) < 2:\n    raise TimeoutError('slow service')\nreturn 'ok'",
        count.display().to_string()
    );
    let wf = env.write_workflow(
        "retry.json",
        &json!({ "id": "retry", "nodes": [
            { "id": "call", "type": "code", "retry": { "max_attempts": 3, "backoff_ms": 20000 }, "code": code }
        ]}),
    );
    let (child, id) = run_until(&env, &wf, "the first attempt to fail", |e| {
        e.kind == "node_end" && e.data["retrying"] == true
    });
    assert_success(&env.cmd(["pause", &id]), "pause");
    let started = Instant::now();
    let run = child.wait_with_output().unwrap();
    assert_eq!(run.status.code(), Some(75), "{}", describe(&run));
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "it waited out the backoff"
    );
    assert_eq!(
        std::fs::read_to_string(&count).unwrap(),
        "x",
        "no second attempt"
    );
    let call = env.node(&id, "call");
    assert_eq!((call.status.as_str(), call.attempt), ("cancelled", 1));
    let error = call.error.as_ref().unwrap();
    assert_eq!(error["type"], "Paused", "{error}");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("attempt 1 failed: TimeoutError: slow service"),
        "{error}"
    );
    let out = env.cmd(["resume", &id]);
    assert_success(&out, "resume");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "\"ok\"");
}

#[test]
fn break_before_pauses_before_the_named_node_and_a_pause_is_never_forged() {
    let env = Env::new();
    let wf = env.write_workflow(
        "bp.json",
        &json!({ "id": "bp", "nodes": [
            { "id": "one", "type": "code", "code": "return 1" },
            { "id": "two", "type": "code", "code": "return 2" },
            { "id": "three", "type": "code", "code": "return 3" }
        ]}),
    );
    let out = env.run(&wf, "{}", &["--break-before", "three"]);
    assert_code(&out, 75, "run --break-before three");
    let id = env.only_execution_id();
    let e = env.execution(&id);
    assert_eq!(e.status, "paused");
    assert_eq!(e.error.as_ref().unwrap()["node"], "three");
    assert_eq!(statuses(&env, &id).len(), 2, "three never started");
    let out = env.cmd(["resume", &id]);
    assert_success(&out, "resume");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "3");

    // Unknown nodes are refused before anything runs.
    let out = env.run(&wf, "{}", &["--break-before", "nope"]);
    assert_code(&out, 2, "unknown breakpoint");
    assert!(String::from_utf8_lossy(&out.stderr).contains("--break-before"));

    // A node cannot fake a pause: SIGUSR1 to itself with nobody asking ends in success (the
    // runtime pauses, the runner does not believe it).
    let forged = env.write_workflow(
        "forged.json",
        &json!({ "id": "forged", "nodes": [
            { "id": "a", "type": "code", "code": "import os, signal\nos.kill(os.getpid(), signal.SIGUSR1)\nreturn 1" },
            { "id": "b", "type": "code", "code": "return 2" }
        ]}),
    );
    let out = env.run(&forged, "{}", &[]);
    assert_code(&out, 1, "a pause nobody asked for");
    let last = env.execution_ids().pop().unwrap();
    let e = env.execution(&last);
    assert_eq!(e.status, "error");
    assert!(
        e.error.as_ref().unwrap()["message"]
            .as_str()
            .unwrap()
            .contains("nobody asked for a pause"),
        "{e:?}"
    );
}

#[test]
fn break_before_through_the_api() {
    let w = crate::support::serve::World::new();
    let s = w.serve(&[]);
    let wf = json!({ "id": "bp", "nodes": [
        { "id": "one", "type": "code", "code": "return 1" },
        { "id": "two", "type": "code", "code": "return 2" }
    ]});
    let id = s.start(
        "/api/executions",
        &json!({"workflow": wf, "break_before": ["two"]}),
    );
    assert_eq!(paused_then_resumed(&s, &id), json!(2));
}

/// Waits for `id` to end `paused`, resumes it through the API and returns the resumed output.
fn paused_then_resumed(s: &crate::support::serve::Server, id: &str) -> Value {
    let record = s.wait_final(id);
    assert_eq!(record["status"], "paused", "{record}");
    let r = s.post(
        &format!("/api/executions/{id}/resume?wait=true"),
        &json!({}),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["status"], "success", "{}", r.text);
    r.body["output"].clone()
}

#[test]
fn pause_through_the_api_and_from_another_process() {
    let w = crate::support::serve::World::new();
    let s = w.serve(&[]);
    let wf = json!({ "id": "slowish", "nodes": [
        { "id": "one", "type": "delay", "ms": 50 },
        { "id": "two", "type": "delay", "ms": 800 },
        { "id": "three", "type": "template", "template": "done" }
    ]});
    let running_two = |r: &Value| {
        r["nodes"].as_array().is_some_and(|n| {
            n.iter()
                .any(|x| x["node_id"] == "two" && x["status"] == "running")
        })
    };
    // Through this server.
    let id = s.start("/api/executions", &json!({"workflow": wf}));
    s.wait_until(&id, "running node two", running_two);
    let r = s.post(&format!("/api/executions/{id}/pause?wait=true"), &json!({}));
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["status"], "paused", "{}", r.text);
    assert_eq!(r.body["error"]["node"], "three");
    let again = s.post(&format!("/api/executions/{id}/pause"), &json!({}));
    assert_eq!(again.status, 409, "{}", again.text);
    // From another process (`flowrun pause`), which the server's poller passes on. Node two
    // runs longer here: a process to start and a poll to wait for must both fit in it while
    // the rest of the suite keeps both cores busy (800 ms did not, once in a full run).
    let mut wf = wf;
    wf["nodes"][1]["ms"] = json!(2500);
    let id = s.start("/api/executions", &json!({"workflow": wf}));
    s.wait_until(&id, "running node two", running_two);
    let out = w.cmd(["pause", &id]);
    assert_success(&out, "flowrun pause");
    assert_eq!(paused_then_resumed(&s, &id), json!({"text": "done"}));
}

/// Without an `output` field, nodes side by side give the output of the last in order, however
/// they finish (it was the last to finish: a test's snapshot of it flaked).
#[test]
fn the_default_output_is_the_last_nodes_in_order_not_the_last_to_finish() {
    let env = Env::new();
    let wf = env.write_workflow(
        "side.json",
        &json!({ "id": "side", "max_parallel": 2, "nodes": [
           { "id": "slow", "type": "code", "code": "import time\ntime.sleep(0.3)\nreturn 'slow'" },
           { "id": "quick", "type": "code", "code": "return 'quick'" }
        ]}),
    );
    let out = env.run(&wf, "{}", &[]);
    assert_success(&out, "run");
    let printed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(printed, json!("quick"));
}

#[test]
fn the_workflow_output_field_gives_the_executions_output() {
    let env = Env::new();
    let wf = env.write_workflow(
        "out.json",
        &json!({ "id": "out",
        "output": { "answer": "{{ nodes.double.output }}", "for": "{{ trigger.name }}" },
        "nodes": [
           { "id": "double", "type": "code", "code": "return 21 * 2" },
           { "id": "last", "type": "set", "fields": { "ignored": true } }
        ]}),
    );
    let out = env.run(&wf, r#"{"name": "Ada"}"#, &[]);
    assert_success(&out, "run");
    let printed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(printed, json!({"answer": 42, "for": "Ada"}));

    let bad = env.write_workflow(
        "bad.json",
        &json!({ "id": "bad", "output": "{{ nodes.nope.output }}",
                 "nodes": [ { "id": "a", "type": "set", "fields": {} } ]}),
    );
    let out = env.cmd(["validate", bad.to_str().unwrap()]);
    assert_code(&out, 2, "unknown node in output");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("unknown node 'nope'"),
        "{}",
        describe(&out)
    );
}

#[test]
fn nodes_run_in_the_workflows_directory_not_the_callers() {
    let env = Env::new();
    let project = env.path("project");
    std::fs::create_dir_all(project.join("sub")).unwrap();
    std::fs::write(project.join("sub/data.txt"), "from sub").unwrap();
    let wf = json!({ "id": "where", "cwd": "sub", "nodes": [
        { "id": "read", "type": "code", "code": "import os\nreturn {'cwd': os.getcwd(), 'data': open('data.txt').read()}" },
        { "id": "cmd", "type": "command", "argv": ["cat", "data.txt"] }
    ]});
    let file = project.join("where.json");
    std::fs::write(&file, wf.to_string()).unwrap();
    let elsewhere = env.path("elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    // Run from another directory, with a relative path to the file.
    let out = output(
        env.flowrun()
            .current_dir(&elsewhere)
            .args(["run", "../project/where.json"]),
    );
    assert_success(&out, "run from elsewhere");
    let id = env.only_execution_id();
    let record = env.show_json(&id);
    let sub = std::fs::canonicalize(project.join("sub")).unwrap();
    assert_eq!(record["nodes"][0]["output"]["data"], "from sub");
    assert_eq!(
        std::fs::canonicalize(record["nodes"][0]["output"]["cwd"].as_str().unwrap()).unwrap(),
        sub
    );
    assert_eq!(record["nodes"][1]["output"]["stdout"], "from sub");
    assert_eq!(
        std::fs::canonicalize(record["cwd"].as_str().unwrap()).unwrap(),
        sub
    );
    let shown = env.cmd(["show", &id]);
    assert!(String::from_utf8_lossy(&shown.stdout).contains("cwd "));

    // --cwd wins, relative to the caller; a missing directory is refused before anything runs.
    std::fs::write(elsewhere.join("data.txt"), "from elsewhere").unwrap();
    let out = output(env.flowrun().current_dir(&elsewhere).args([
        "run",
        "../project/where.json",
        "--cwd",
        ".",
        "--json",
    ]));
    assert_success(&out, "run --cwd .");
    let record: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(record["nodes"][0]["output"]["data"], "from elsewhere");
    let out = output(env.flowrun().current_dir(&elsewhere).args([
        "run",
        "../project/where.json",
        "--cwd",
        "missing",
    ]));
    assert_code(&out, 3, "missing cwd");
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not exist"));
}

#[test]
fn a_code_node_with_its_own_cwd_runs_there_and_alone() {
    let env = Env::new();
    let project = env.path("proj");
    std::fs::create_dir_all(project.join("sub")).unwrap();
    std::fs::write(project.join("sub/data.txt"), "in sub").unwrap();
    let wf = json!({ "id": "cw", "max_parallel": 2, "nodes": [
        { "id": "inside", "type": "code", "cwd": "{{ trigger.dir }}", "code":
            "import os, time\ntime.sleep(0.3)\nreturn {'cwd': os.getcwd(), 'data': open('data.txt').read()}" },
        { "id": "beside", "type": "code", "code": "import os\nreturn os.getcwd()" },
        { "id": "missing", "type": "code", "cwd": "nope", "code": "return 1", "on_error": "continue" }
    ]});
    let file = project.join("cw.json");
    std::fs::write(&file, wf.to_string()).unwrap();
    let out = env.run(&file, r#"{"dir": "sub"}"#, &[]);
    assert_success(&out, "run");
    let id = env.only_execution_id();
    let record = env.show_json(&id);
    let proj = std::fs::canonicalize(&project).unwrap();
    let node = |n: usize| record["nodes"][n].clone();
    assert_eq!(node(0)["output"]["data"], "in sub");
    assert_eq!(
        std::fs::canonicalize(node(0)["output"]["cwd"].as_str().unwrap()).unwrap(),
        proj.join("sub")
    );
    // The other node ran in the execution's directory: not beside the one that changed it.
    assert_eq!(
        std::fs::canonicalize(node(1)["output"].as_str().unwrap()).unwrap(),
        proj
    );
    let ev: Vec<(String, String)> = env
        .events(&id)
        .into_iter()
        .filter(|e| e.kind == "node_start" || e.kind == "node_end")
        .map(|e| (e.kind.clone(), e.data["node"].as_str().unwrap().to_string()))
        .collect();
    let pos = |k: &str, n: &str| ev.iter().position(|e| e.0 == k && e.1 == n).unwrap();
    assert!(
        pos("node_end", "inside") < pos("node_start", "beside"),
        "{ev:?}"
    );
    // A directory that is not there is named whole, with where a relative one is taken from.
    let message = node(2)["error"]["message"].as_str().unwrap().to_string();
    assert!(
        message.contains(&format!(
            "the working directory {} does not exist",
            proj.join("nope").display()
        )) && message.contains("the workflow's directory"),
        "{message}"
    );
}

/// Items of one code node whose `cwd` is a template run in their own directory each, one at a
/// time whatever `max_concurrent` says: the directory is the process's (side by side, both ran
/// in the first item's; then, waiting for each other, an item's wait counted against its
/// `timeout_ms`).
#[test]
fn items_of_a_code_node_each_run_in_their_own_cwd_one_at_a_time() {
    let env = Env::new();
    let project = env.path("items");
    for d in ["one", "two"] {
        std::fs::create_dir_all(project.join(d)).unwrap();
        std::fs::write(project.join(d).join("name.txt"), d).unwrap();
    }
    let wf = json!({ "id": "ic", "nodes": [
        { "id": "each", "type": "code", "cwd": "{{ item }}", "for_each": ["two", "one", "two", "one"],
          "max_concurrent": 4, "code":
            "import os, time\ntime.sleep(0.2)\nreturn [os.path.basename(os.getcwd()), open('name.txt').read(), item]" }
    ]});
    let file = project.join("ic.json");
    std::fs::write(&file, wf.to_string()).unwrap();
    let out = env.run(&file, "{}", &[]);
    assert_success(&out, "run");
    let record = env.show_json(&env.only_execution_id());
    let items = record["output"].as_array().unwrap().clone();
    assert_eq!(items.len(), 4, "{record}");
    // One at a time: no item's time went on waiting for another's directory.
    let ran: Vec<(i64, i64)> = env
        .items(record["id"].as_str().unwrap(), "each")
        .iter()
        .map(|(_, r)| (r.started_at.unwrap(), r.finished_at.unwrap()))
        .collect();
    assert!(
        ran.windows(2).all(|w| w[0].1 <= w[1].0),
        "items overlapped: {ran:?}"
    );
    for it in &items {
        assert_eq!(
            it[0], it[2],
            "an item ran in another item's directory: {items:?}"
        );
        assert_eq!(it[1], it[2], "{items:?}");
    }
}
