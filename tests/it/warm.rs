//! Warm starts (`flowrun_executor::warm`): executions forked from a template interpreter in
//! `flowrun serve` and `flowrun test` behave exactly like cold ones, share no state, survive the
//! template's death, and a changed requirement set gets a new template. Real processes, real
//! Python; nothing here is timed.

use crate::support::serve::{Server, World};
use crate::support::*;
use serde_json::{Value, json};
use std::path::Path;

/// The name of the script a template runs, on its command line (`SCRIPT_NAME` in
/// crates/executor/src/warm/template.rs).
const TEMPLATE_MARK: &str = "flowrun-warm-template";

/// Pids of the warm templates of `parent` (its children running the template source, each the
/// leader of its own process group; not the copy of one a warm start makes, in the moment
/// before it execs the shepherd: that one is in its template's group until it leads a session
/// of its own).
pub(crate) fn templates(parent: i32) -> Vec<i32> {
    faults::children_with(parent, &[TEMPLATE_MARK])
        .into_iter()
        .filter(|&pid| {
            let group = faults::proc_stat(pid).map(|(_, _, pgid, _)| pgid);
            group == Some(pid) && faults::session(pid) != Some(pid)
        })
        .collect()
}

/// What must be equal between a warm and a cold execution: the events without times, durations
/// and ids, in order per node (and item or iteration): nodes that run in parallel interleave
/// differently from run to run, warm or cold.
pub(crate) fn normalized(events: &[EventRow], id: &str) -> Vec<Value> {
    fn scrub(v: &mut Value, id: &str) {
        match v {
            Value::Object(m) => {
                for k in [
                    "ts",
                    "duration_ms",
                    "execution_id",
                    "started_at",
                    "finished_at",
                ] {
                    m.remove(k);
                }
                m.values_mut().for_each(|x| scrub(x, id));
            }
            Value::Array(a) => a.iter_mut().for_each(|x| scrub(x, id)),
            Value::String(s) => *s = mask_children(&mask_seconds(&s.replace(id, "<id>"))),
            _ => {}
        }
    }
    let mut out: Vec<Value> = events
        .iter()
        .map(|e| {
            let mut d = e.data.clone();
            scrub(&mut d, id);
            json!({"kind": e.kind, "node": e.node_id, "data": d})
        })
        .collect();
    out.sort_by_key(|e| {
        let d = &e["data"];
        format!("{}/{}/{}", e["node"], d["item"], d["iteration"])
    });
    out
}

/// `child execution 1b2b85cab4f6af0e` → `child execution <child>`: a sub-workflow's own id.
fn mask_children(s: &str) -> String {
    const SAYS: &str = "child execution ";
    match s.find(SAYS) {
        Some(at) if s.len() >= at + SAYS.len() + 16 => {
            let end = at + SAYS.len() + 16;
            format!(
                "{}<child>{}",
                &s[..at + SAYS.len()],
                mask_children(&s[end..])
            )
        }
        _ => s.to_string(),
    }
}

/// `0.003s` → `#s`: what a program a node runs says of its own timing (`Ran 1 test in 0.003s`).
fn mask_seconds(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while i < b.len() {
        let start = i;
        while i < b.len() && (b[i].is_ascii_digit() || b[i] == b'.') {
            i += 1;
        }
        if i > start {
            let number = &s[start..i];
            if number.contains('.') && b.get(i) == Some(&b's') {
                out.push('#');
            } else {
                out.push_str(number);
            }
            continue;
        }
        let ch = s[i..].chars().next().expect("in bounds");
        out.push(ch);
        i += ch.len_utf8();
    }
    out
}

/// The executions of an env in the order they started, with how each started.
fn started(env: &Env) -> Vec<(String, Option<String>)> {
    let db = env.db();
    let mut stmt = db
        // Sub-workflow children run in runners of their own (`flowrun __sub`), cold.
        .prepare(
            "SELECT id, start FROM executions WHERE relation IS NOT 'sub'
             ORDER BY started_at, rowid",
        )
        .unwrap();
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

/// `flowrun test -j1 examples/ [--cold]` in a fresh env: its report and the env.
fn test_examples(cold: bool) -> (Env, Value) {
    let env = Env::new();
    let mut cmd = env.flowrun();
    cmd.args(["test", "-j1", "--json"])
        .arg(repo_root().join("examples"))
        .env("CI", "1");
    if cold {
        cmd.arg("--cold");
    }
    let out = output(&mut cmd);
    assert_success(&out, "flowrun test examples/");
    let report = serde_json::from_slice(&out.stdout).expect("--json prints JSON");
    (env, report)
}

#[test]
fn every_example_records_the_same_events_warm_and_cold() {
    let (warm_env, warm_report) = test_examples(false);
    let (cold_env, cold_report) = test_examples(true);
    let warm = started(&warm_env);
    let cold = started(&cold_env);
    assert!(warm.len() >= 10, "the examples ran: {warm:?}");
    assert_eq!(warm.len(), cold.len());
    assert!(
        warm.iter().all(|(_, s)| s.as_deref() == Some("warm")),
        "flowrun test starts every case warm: {warm:?}"
    );
    assert!(
        cold.iter().all(|(_, s)| s.as_deref() == Some("cold")),
        "--cold starts every case cold: {cold:?}"
    );
    for ((w, _), (c, _)) in warm.iter().zip(&cold) {
        let we = normalized(&warm_env.events(w), w);
        let ce = normalized(&cold_env.events(c), c);
        assert!(!we.is_empty());
        assert_eq!(we, ce, "execution {w} (warm) and {c} (cold) differ");
        let (wr, cr) = (warm_env.show_json(w), cold_env.show_json(c));
        assert_eq!(wr["status"], cr["status"]);
        assert_eq!(wr["exit"], cr["exit"], "the processes ended alike");
        assert_eq!(wr["start"], "warm");
    }
    let passed = |r: &Value| r["passed"].clone();
    assert_eq!(passed(&warm_report), passed(&cold_report));
}

/// Mutates every kind of process state an execution could leave to the next one.
const MUTATE: &str = r#"
import os, sys, types, random, threading, time, json, builtins
# The script's own module (prepared once per template, before any fork): what an execution
# leaves in it must not reach the next execution of the same workflow.
main = sys.modules['__main__']
before = getattr(main, 'LEAKED_MAIN', None)
main.LEAKED_MAIN = 'script global'
json.LEAKED = 'module global'
builtins.LEAKED = 'builtin'
mod = types.ModuleType('leaky_module')
sys.modules['leaky_module'] = mod
os.environ['LEAKED_ENV'] = '1'
os.chdir('/')
mod.kept_open = open('/proc/self/status')
threading.Thread(target=time.sleep, args=(30,), daemon=True).start()
random.seed(12345)
return {'seeded_draw': random.random(), 'threads': threading.active_count(), 'main_before': before,
        'main_name': main.__name__, 'runtime_module': main.NodeError.__module__,
        'method_module': main._State.__init__.__module__}
"#;

/// Reports what the execution sees of that state.
const CHECK: &str = r#"
import os, sys, random, threading, json, builtins
fds = sorted(int(f) for f in os.listdir('/proc/self/fd'))
links = {}
for f in fds:
    try: links[f] = os.readlink('/proc/self/fd/%d' % f)
    except OSError: pass
return {
    'module_global': getattr(json, 'LEAKED', None),
    'builtin': getattr(builtins, 'LEAKED', None),
    'module': 'leaky_module' in sys.modules,
    'env': os.environ.get('LEAKED_ENV'),
    'server_env': os.environ.get('SERVER_ONLY_VAR'),
    # The environment block the kernel shows (a fork's is its template's).
    'proc_environ': b'SERVER_ONLY_VAR' in open('/proc/self/environ', 'rb').read(),
    'cwd': os.getcwd(),
    'fds': fds,
    'links': links,
    'threads': threading.active_count(),
    'tasks': len(os.listdir('/proc/self/task')),
    'draw': random.random(),
}
"#;

pub(crate) fn code_workflow(id: &str, code: &str) -> Value {
    json!({"id": id, "nodes": [{"id": "probe", "type": "code", "code": code}]})
}

/// Waits until execution `id`'s first node runs.
pub(crate) fn node_running(srv: &Server, id: &str) {
    wait_for(&format!("execution {id} to run its node"), || {
        let r = srv.get(&format!("/api/executions/{id}"));
        (r.body["nodes"][0]["status"] == "running").then_some(())
    });
}

pub(crate) fn run_wait(srv: &Server, workflow: &str) -> Value {
    let r = srv.post(
        &format!("/api/workflows/{workflow}/executions?wait=true"),
        &json!({"trigger": {}}),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    r.body
}

#[test]
fn a_warm_execution_sees_nothing_of_the_one_before() {
    let w = World::new();
    w.save("mutate.json", &code_workflow("mutate", MUTATE));
    w.save("check.json", &code_workflow("check", CHECK));
    let srv = w.serve_with(&[], &[("SERVER_ONLY_VAR", "server")]);
    let baseline = run_wait(&srv, "check");
    let mutated = run_wait(&srv, "mutate");
    let after = run_wait(&srv, "check");
    let again = run_wait(&srv, "mutate");
    for r in [&baseline, &mutated, &after, &again] {
        assert_eq!(r["status"], "success", "{r:#}");
        assert_eq!(r["start"], "warm", "{r:#}");
    }
    assert_eq!(
        mutated["output"]["threads"], 2,
        "the mutation ran: {mutated:#}"
    );
    for m in [&mutated, &again] {
        assert_eq!(m["output"]["main_before"], Value::Null, "{m:#}");
        // The script runs as `__main__`, its classes too, as under a cold `python script`.
        assert_eq!(m["output"]["main_name"], "__main__");
        assert_eq!(m["output"]["runtime_module"], "__main__");
        assert_eq!(m["output"]["method_module"], "__main__");
    }
    let out = &after["output"];
    assert_eq!(out["module_global"], Value::Null);
    assert_eq!(out["builtin"], Value::Null);
    assert_eq!(out["module"], false);
    assert_eq!(out["env"], Value::Null);
    assert_eq!(
        out["server_env"],
        Value::Null,
        "the environment is the execution's"
    );
    for r in [&baseline, &after] {
        assert_eq!(
            r["output"]["proc_environ"], false,
            "the server's environment is not in /proc/self/environ either: {r:#}"
        );
    }
    // The workflow file's directory, as for every execution (not the previous one's).
    assert_eq!(out["cwd"], json!(w.workflows().canonicalize().unwrap()));
    assert_eq!(
        out["fds"], baseline["output"]["fds"],
        "no descriptor is left open"
    );
    assert_eq!(out["threads"], 1);
    assert_eq!(out["tasks"], 1);
    assert_ne!(out["draw"], mutated["output"]["seeded_draw"]);
    assert_ne!(
        out["draw"], baseline["output"]["draw"],
        "randomness is reseeded per fork"
    );
    // And a cold execution sees the same world (but for its random draw).
    let cold = Env::new();
    let def = w.workflows().join("check.json");
    let run = cold.run(&def, "{}", &["--json"]);
    assert_success(&run, "flowrun run check");
    let cold_out: Value = serde_json::from_slice(&run.stdout).unwrap();
    assert_eq!(cold_out["start"], "cold");
    // The descriptors too: flowrun marks any its caller left open (a make jobserver's under
    // cargo) close-on-exec, as a warm fork closes all but 0, 1 and 2.
    for k in [
        "fds",
        "module_global",
        "builtin",
        "module",
        "env",
        "proc_environ",
        "threads",
        "tasks",
    ] {
        assert_eq!(cold_out["output"][k], out[k], "{k} warm and cold: {out:#}");
    }
}

#[test]
fn a_warm_execution_whose_template_died_leaves_nothing() {
    // The template, killed while the execution runs, hands it to the server (a subreaper): the
    // execution ends as it would have, and the daemon it started, re-parented to the server once
    // the interpreter is gone, is ended with it.
    let w = World::new();
    let body = format!("{DAEMON_IN_DIR}time.sleep(1.5)\nreturn 'slept'\n");
    w.save("daemon.json", &code_workflow("daemon", &body));
    let dir = w.path("pids");
    std::fs::create_dir_all(&dir).unwrap();
    let srv = w.serve(&[]);
    let id = srv.start(
        "/api/workflows/daemon/executions",
        &json!({"trigger": {"dir": dir}}),
    );
    let daemon = wait_for("the daemon to start", || {
        std::fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .find_map(|e| e.file_name().to_string_lossy().parse::<i32>().ok())
    });
    let template = templates(srv.pid());
    assert_eq!(template.len(), 1);
    faults::signal(template[0], nix::sys::signal::Signal::SIGKILL);
    let end = srv.wait_final(&id);
    assert_eq!(end["status"], "success", "{end:#}");
    assert_eq!(end["output"], "slept");
    assert_eq!(end["start"], "warm");
    assert_ends(daemon);
    wait_for("no zombie left under the server", || {
        faults::zombie_children(srv.pid()).is_empty().then_some(())
    });
}

/// The first thing the node does: a double-forked daemon in a session of its own, which notes
/// its pid and sleeps. A warm interpreter runs while its shepherd is still being exec'd, so an
/// escape this early is one that happens before the shepherd is up.
const DAEMON_AT_ONCE: &str = r#"
import os, time
r, w = os.pipe()
if os.fork() == 0:
    os.setsid()
    if os.fork():
        os._exit(0)
    os.write(w, str(os.getpid()).encode())
    time.sleep(300)
    os._exit(0)
os.close(w)
return int(os.read(r, 32))
"#;

#[test]
fn a_daemon_started_at_once_by_a_warm_execution_ends_with_it() {
    let w = World::new();
    w.save("daemon.json", &code_workflow("daemon", DAEMON_AT_ONCE));
    let srv = w.serve(&[]);
    for _ in 0..5 {
        let r = run_wait(&srv, "daemon");
        assert_eq!(r["status"], "success", "{r:#}");
        assert_eq!(r["start"], "warm", "{r:#}");
        assert_ends(r["output"].as_i64().unwrap() as i32);
    }
}

/// The process `pid` is gone (or a zombie about to be reaped) within 5 s.
#[track_caller]
pub(crate) fn assert_ends(pid: i32) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while faults::alive(pid) {
        assert!(
            std::time::Instant::now() < deadline,
            "process {pid} outlived its warm execution: {:?}",
            faults::proc_stat(pid)
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// As DAEMON_AT_ONCE, the daemon's pid in a file of the trigger's directory; what the node does
/// next follows.
const DAEMON_IN_DIR: &str = r#"
import os, time
if os.fork() == 0:
    os.setsid()
    if os.fork():
        os._exit(0)
    path = os.path.join(trigger['dir'], str(os.getpid()))
    open(path + '.tmp', 'w').close()
    os.rename(path + '.tmp', path)
    time.sleep(300)
    os._exit(0)
"#;

#[test]
fn a_stop_right_after_a_warm_start_ends_everything() {
    let w = World::new();
    let body = format!("{DAEMON_IN_DIR}time.sleep(300)\n");
    w.save("sleeper.json", &code_workflow("sleeper", &body));
    let dir = w.path("pids");
    std::fs::create_dir_all(&dir).unwrap();
    let srv = w.serve(&[]);
    for _ in 0..5 {
        // The stop comes while the shepherd may still be starting: it must end the tree all
        // the same (what it handles waits, blocked, until it is in charge).
        let id = srv.start(
            "/api/workflows/sleeper/executions",
            &json!({"trigger": {"dir": dir}}),
        );
        let r = srv.post(&format!("/api/executions/{id}/stop?wait=true"), &json!({}));
        assert_eq!(r.status, 200, "{}", r.text);
        let end = srv.wait_final(&id);
        assert_eq!(end["status"], "cancelled", "{end:#}");
        assert_eq!(end["start"], "warm", "{end:#}");
    }
    for entry in std::fs::read_dir(&dir).unwrap().flatten() {
        if let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() {
            assert_ends(pid);
        }
    }
}

const SLOW: &str = "import time\ntime.sleep(1.5)\nreturn 'slept'";

#[test]
fn killing_the_template_fails_no_execution_and_it_is_replaced() {
    let w = World::new();
    w.save("slow.json", &code_workflow("slow", SLOW));
    w.save("quick.json", &code_workflow("quick", "return 42"));
    let srv = w.serve(&[]);
    assert_eq!(run_wait(&srv, "quick")["start"], "warm");
    let first = templates(srv.pid());
    assert_eq!(first.len(), 1, "one template for one interpreter");

    // An execution forked from it is running when the template is killed.
    let id = srv.start("/api/workflows/slow/executions", &json!({"trigger": {}}));
    node_running(&srv, &id);
    faults::signal(first[0], nix::sys::signal::Signal::SIGKILL);
    let done = wait_for("the slow execution to end", || {
        let r = srv.get(&format!("/api/executions/{id}"));
        (r.body["status"] != "running").then_some(r.body)
    });
    assert_eq!(done["status"], "success", "{done:#}");
    assert_eq!(done["output"], "slept");
    assert_eq!(done["start"], "warm");

    // The next execution gets a new template.
    let next = run_wait(&srv, "quick");
    assert_eq!(next["status"], "success");
    assert_eq!(next["start"], "warm");
    let second = templates(srv.pid());
    assert_eq!(second.len(), 1);
    assert_ne!(second, first);
}

#[test]
fn a_template_that_does_not_answer_is_replaced_and_the_execution_starts_cold() {
    let w = World::new();
    w.save("quick.json", &code_workflow("quick", "return 42"));
    w.save("other.json", &code_workflow("other", "return 'other'"));
    let srv = w.serve(&[]);
    assert_eq!(run_wait(&srv, "quick")["start"], "warm");
    let first = templates(srv.pid());
    assert_eq!(first.len(), 1);
    // Its spares hold `quick` only (see warm_spare): `other` is the template's to start.
    crate::warm_spare::ready(&srv);
    faults::signal(first[0], nix::sys::signal::Signal::SIGSTOP);
    let r = run_wait(&srv, "other");
    assert_eq!(r["status"], "success", "{r:#}");
    assert_eq!(r["output"], "other");
    assert_eq!(
        r["start"], "cold",
        "a stuck template costs a cold start, not the execution"
    );
    let r = run_wait(&srv, "quick");
    assert_eq!(r["start"], "warm");
    wait_for("the stuck template to be gone", || {
        (!templates(srv.pid()).contains(&first[0])).then_some(())
    });
}

#[test]
fn a_changed_requirement_set_recycles_the_template() {
    let w = World::new();
    let venv = w.path("venv");
    let made = std::process::Command::new("python3")
        .args(["-m", "venv", "--without-pip"])
        .arg(&venv)
        .output()
        .expect("python3 -m venv");
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let site = std::fs::read_dir(venv.join("lib"))
        .unwrap()
        .flatten()
        .map(|e| e.path().join("site-packages"))
        .find(|p| p.is_dir())
        .expect("the venv's site-packages");
    w.save("quick.json", &code_workflow("quick", "return 42"));
    w.save("slow.json", &code_workflow("slow", SLOW));
    let python = venv.join("bin").join("python");
    let srv = w.serve(&["--python", python.to_str().unwrap()]);
    assert_eq!(run_wait(&srv, "quick")["start"], "warm");
    assert_eq!(run_wait(&srv, "quick")["start"], "warm");
    let before = templates(srv.pid());
    assert_eq!(before.len(), 1, "one template, used twice");
    // An execution it forked runs through its retirement: the template supervises it to its end.
    let slow = srv.start("/api/workflows/slow/executions", &json!({"trigger": {}}));
    node_running(&srv, &slow);

    // A package appears in the venv: the requirement set the template loaded is gone.
    add_package(&site);
    let r = run_wait(&srv, "quick");
    assert_eq!(r["status"], "success");
    assert_eq!(r["start"], "warm");
    let after = templates(srv.pid());
    assert!(
        after.iter().any(|t| !before.contains(t)),
        "a new template serves the new set: {after:?}"
    );
    let done = srv.wait_final(&slow);
    assert_eq!(done["status"], "success", "{done:#}");
    assert_eq!(done["start"], "warm");
    wait_for(
        "the stale template to be gone once its execution ended",
        || {
            let now = templates(srv.pid());
            (now.len() == 1 && !now.contains(&before[0])).then_some(())
        },
    );
}

fn add_package(site: &Path) {
    let pkg = site.join("warm_marker");
    std::fs::create_dir(&pkg).unwrap();
    std::fs::write(pkg.join("__init__.py"), "MARK = 1\n").unwrap();
}
