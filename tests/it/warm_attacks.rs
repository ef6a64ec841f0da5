//! Executions that turn on their warm template — the parent and supervisor of every execution
//! it forks (`runtime/warm/supervise.py`) — in `flowrun serve`: killing it, taking its
//! descriptors away, or leaving it a fork storm to end. Whatever one execution does to it, no
//! other execution of the same template fails for it, and nothing any of them started outlives
//! its execution.

use crate::escapes::{ESCAPEE, KILL_TEMPLATE};
use crate::support::faults::*;
use crate::support::serve::{Server, World};
use crate::support::wait_for;
use crate::warm::node_running;
use serde_json::json;

/// A warm execution whose node killed its template (its parent) came to the server (a
/// subreaper), and so did its escapees: the execution goes on and is recorded as ended only once
/// they are gone, none is left a zombie, and the next executions start warm from a new template.
#[test]
fn processes_of_a_node_that_kills_its_template_end_with_the_execution_in_serve() {
    let world = crate::support::serve::World::new();
    let scratch = world.path("scratch");
    std::fs::create_dir_all(&scratch).unwrap();
    let pids_file = world.path("pids");
    let body = format!("{ESCAPEE}\nescape_all()\n{KILL_TEMPLATE}");
    world.save(
        "killer.json",
        &json!({ "id": "killer", "nodes": [ code_node("escaper", &body) ]}),
    );
    world.save(
        "quick.json",
        &json!({ "id": "quick", "nodes": [ { "id": "s", "type": "set", "fields": { "ok": true } } ]}),
    );
    let srv = world.serve(&[]);
    let quick = |srv: &crate::support::serve::Server| {
        let id = srv.start("/api/workflows/quick/executions", &json!({"trigger": {}}));
        srv.wait_final(&id)
    };
    // Spares exist once a warm execution has ended.
    assert_eq!(quick(&srv)["start"], "warm");
    let trig =
        json!({ "pids": pids_file.display().to_string(), "dir": scratch.display().to_string() });
    let id = srv.start(
        "/api/workflows/killer/executions",
        &json!({ "trigger": trig }),
    );
    let rec = srv.wait_final(&id);
    assert_eq!(rec["status"], "success", "{rec:#}");
    assert_eq!(rec["start"], "warm", "{rec:#}");
    let p = read_pids(&pids_file);
    assert_eq!(p.len(), 3, "{p:?} {rec:#}");
    let left: Vec<_> = p.iter().filter(|&&pid| alive(pid)).collect();
    assert!(
        left.is_empty(),
        "alive after the end was recorded: {left:?}"
    );
    let z = zombie_children(srv.pid());
    assert!(z.is_empty(), "zombies under flowrun serve: {z:?}");
    for _ in 0..3 {
        let r = quick(&srv);
        assert_eq!(
            (&r["status"], &r["start"]),
            (&json!("success"), &json!("warm")),
            "{r:#}"
        );
    }
}

/// Runs `attack` (a workflow of one code node) while `victim`, a two-second sleep started first,
/// runs from the same template: both must succeed.
fn beside_a_victim(world: &World, srv: &Server, attack: &str, trigger: serde_json::Value) {
    world.save(
        "victim.json",
        &json!({ "id": "victim", "nodes": [ code_node("n", "import time\ntime.sleep(2.5)\nreturn 'slept'") ]}),
    );
    let victim = srv.start("/api/workflows/victim/executions", &json!({"trigger": {}}));
    node_running(srv, &victim);
    let id = srv.start(
        &format!("/api/workflows/{attack}/executions"),
        &json!({ "trigger": trigger }),
    );
    let rec = srv.wait_final(&id);
    assert_eq!(rec["status"], "success", "{rec:#}");
    assert_eq!(rec["start"], "warm", "{rec:#}");
    let rec = srv.wait_final(&victim);
    assert_eq!(rec["status"], "success", "the victim: {rec:#}");
    assert_eq!(rec["output"], "slept");
}

/// A node that sets its template's descriptor limit to zero (it cannot raise it again) leaves
/// it unable to watch anything: the template gives up, itself alone, and its executions — the
/// one that did it and one beside it — come to the server and end as they would have.
#[test]
fn a_node_that_takes_its_templates_descriptors_fails_no_other_execution() {
    let world = World::new();
    world.save(
        "lim.json",
        &json!({ "id": "lim", "nodes": [ code_node("n",
            "import os, resource\nresource.prlimit(os.getppid(), resource.RLIMIT_NOFILE, (0, 0))\nreturn 'done'") ]}),
    );
    let srv = world.serve(&["--max-concurrent", "4"]);
    beside_a_victim(&world, &srv, "lim", json!({}));
}

/// A storm of processes that fork and fork again, in a session of their own, capped at 120 more
/// tasks on the machine, for 20 s: left behind when its execution ends, it is frozen and ended
/// with everything under it, before that end is recorded; an execution beside it succeeds.
const STORM: &str = r#"
import subprocess, sys, time
script = (
    "import os, sys, time\n"
    "os.setsid()\n"
    "def tasks():\n"
    "    return int(open('/proc/loadavg').read().split()[3].split('/')[1])\n"
    "cap, end = tasks() + 120, time.time() + 20\n"
    "with open(sys.argv[1], 'a') as f:\n"
    "    f.write('%d\\n' % os.getpid())\n"
    "while time.time() < end:\n"
    "    if tasks() < cap:\n"
    "        try:\n"
    "            os.fork()\n"
    "        except OSError:\n"
    "            pass\n"
    "    else:\n"
    "        time.sleep(0.002)\n")
subprocess.Popen([sys.executable, '-I', '-S', '-c', script, trigger['pids']],
                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
time.sleep(1)
return 'stormed'
"#;

#[test]
fn a_fork_storm_left_behind_ends_before_its_execution_and_fails_no_other() {
    let world = World::new();
    world.save(
        "storm.json",
        &json!({ "id": "storm", "nodes": [ code_node("n", STORM) ]}),
    );
    let pids = world.path("pids");
    let srv = world.serve(&["--max-concurrent", "4"]);
    beside_a_victim(
        &world,
        &srv,
        "storm",
        json!({ "pids": pids.display().to_string() }),
    );
    let first = read_pids(&pids);
    assert_eq!(first.len(), 1, "{first:?}");
    // Its processes are in a session of their own, the first one's pid: none is left.
    let left: Vec<i32> = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&p| alive(p) && session(p) == Some(first[0]))
        .collect();
    assert!(
        left.is_empty(),
        "the storm outlived its execution: {} processes",
        left.len()
    );
    let z = zombie_children(srv.pid());
    assert!(z.is_empty(), "zombies under flowrun serve: {z:?}");
}

/// A node that stops its interpreter being a subreaper, then double-forks a sleeper: the
/// sleeper is re-parented to the template while its execution still runs. It is that
/// execution's (its session), so it lives as long as the execution does — as under a cold
/// execution's shepherd — even when another execution ends meanwhile, and is ended with it.
const LEAVES_ITS_INTERPRETER: &str = r#"
import ctypes, os, time
ctypes.CDLL(None).prctl(36, 0, 0, 0, 0)
if os.fork() == 0:
    if os.fork() == 0:
        with open(trigger['pids'], 'a') as f:
            f.write('%d\n' % os.getpid())
        time.sleep(300)
    os._exit(0)
time.sleep(2.5)
return 'went on'
"#;

#[test]
fn a_process_that_leaves_its_interpreter_for_the_template_lives_as_long_as_its_execution() {
    let world = World::new();
    world.save(
        "leaver.json",
        &json!({ "id": "leaver", "nodes": [ code_node("n", LEAVES_ITS_INTERPRETER) ]}),
    );
    world.save(
        "quick.json",
        &json!({ "id": "quick", "nodes": [ { "id": "s", "type": "set", "fields": { "ok": true } } ]}),
    );
    let pids = world.path("pids");
    let srv = world.serve(&["--max-concurrent", "4"]);
    let id = srv.start(
        "/api/workflows/leaver/executions",
        &json!({ "trigger": { "pids": pids.display().to_string() } }),
    );
    let sleeper = wait_for("the sleeper to start", || read_pids(&pids).first().copied());
    let quick = srv.post(
        "/api/workflows/quick/executions?wait=true",
        &json!({"trigger": {}}),
    );
    assert_eq!(quick.body["status"], "success", "{}", quick.text);
    let rec = srv.get(&format!("/api/executions/{id}"));
    assert_eq!(
        rec.body["status"], "running",
        "the leaver ended early: {}",
        rec.text
    );
    assert!(
        alive(sleeper),
        "the sleeper was ended while its execution still ran"
    );
    let rec = srv.wait_final(&id);
    assert_eq!(rec["status"], "success", "{rec:#}");
    assert!(!alive(sleeper), "the sleeper outlived its execution");
}
