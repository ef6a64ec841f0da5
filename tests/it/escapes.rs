//! Processes that try to get away: grandchildren that leave the execution's process group
//! (`setsid`, `setpgid`, a double-forked daemon), an interpreter that leaves it itself, a node
//! that holds the GIL when the runner dies, a node that reaches for the user's terminal, and a
//! runner that is stopped with Ctrl-Z. None of them outlives its execution.

use crate::support::faults::*;
use nix::sys::signal::Signal;
use serde_json::json;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Python for a node: `escapee(kind)` starts a sleeping process that leaves the execution's
/// process group — `setsid` (a new session), `setpgid` (a new group), `daemon` (a double fork
/// whose grandchild starts a session and whose middle process exits) — notes its pid and
/// returns it.
pub(crate) const ESCAPEE: &str = r#"
def escapee(kind):
    path = os.path.join(trigger['dir'], kind + '.pid')
    script = (
        "import os, sys, time\n"
        "kind, path = sys.argv[1], sys.argv[2]\n"
        "if kind == 'daemon':\n"
        "    if os.fork():\n"
        "        os._exit(0)\n"
        "    os.setsid()\n"
        "    if os.fork():\n"
        "        os._exit(0)\n"
        "elif kind == 'setpgid':\n"
        "    os.setpgid(0, 0)\n"
        "else:\n"
        "    os.setsid()\n"
        "with open(path + '.tmp', 'w') as f:\n"
        "    f.write(str(os.getpid()))\n"
        "os.rename(path + '.tmp', path)\n"
        "time.sleep(300)\n")
    p = subprocess.Popen([sys.executable, '-I', '-S', '-c', script, kind, path],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if kind == 'daemon':
        p.wait()
    wait_file(path)
    pid = int(open(path).read())
    note(pid)
    return pid

def escape_all():
    return [escapee(k) for k in ('setsid', 'setpgid', 'daemon')]
"#;

fn escaping_workflow(fx: &Fx, then: &str) -> PathBuf {
    let body = format!("{ESCAPEE}\nescape_all()\n{then}");
    fx.workflow(
        "escapes",
        &json!({ "id": "escapes", "nodes": [ code_node("escaper", &body) ]}),
    )
}

/// Every pid is gone (or a zombie about to be reaped) within a few seconds.
#[track_caller]
fn assert_dead(pids: &[i32]) {
    let deadline = Instant::now() + Duration::from_secs(5);
    for &pid in pids {
        while alive(pid) {
            assert!(
                Instant::now() < deadline,
                "process {pid} survived its execution: {:?}",
                proc_stat(pid)
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

#[test]
fn processes_that_leave_the_group_end_with_a_normal_run() {
    let fx = Fx::new();
    let wf = escaping_workflow(&fx, "return 'left them running'");
    let out = fx.run(&wf, &trigger(&fx), &["--timeout-ms", "30000"]);
    out.assert_code(0);
    let p = pids(&fx);
    assert_eq!(p.len(), 3, "{p:?} {out}");
    assert_dead(&p);
    fx.assert_clean(&fx.only_execution_id());
}

#[test]
fn processes_that_leave_the_group_end_with_a_timeout() {
    let fx = Fx::new();
    let wf = escaping_workflow(&fx, "time.sleep(300)");
    let out = fx.run(
        &wf,
        &trigger(&fx),
        &["--timeout-ms", "3000", "--kill-grace-ms", "300"],
    );
    out.assert_code(124);
    let p = pids(&fx);
    assert_eq!(p.len(), 3, "{p:?} {out}");
    assert_dead(&p);
    fx.assert_clean(&fx.only_execution_id());
}

#[test]
fn processes_that_leave_the_group_end_with_a_stop() {
    let fx = Fx::new();
    let wf = escaping_workflow(&fx, "time.sleep(300)");
    let mut run = fx.spawn_run(&wf, &trigger(&fx), &["--timeout-ms", "30000"]);
    let row = fx.wait_running(Some("escaper"), &mut run);
    let p = wait_pids(&fx.path("pids"), 3);
    let stop = fx.flowrun(&["stop", &row.id]);
    stop.assert_code(0);
    // `stop` says stopped only once it is: nothing of the execution is left by then.
    assert!(p.iter().all(|&pid| !alive(pid)), "{p:?} after {stop}");
    run.wait(Duration::from_secs(20)).assert_code(130);
    assert_eq!(fx.execution(&row.id).status, "cancelled");
    fx.assert_clean(&row.id);
}

#[test]
fn processes_that_leave_the_group_end_with_a_killed_runner() {
    let fx = Fx::new();
    let wf = escaping_workflow(&fx, "time.sleep(300)");
    let mut run = fx.spawn_run(&wf, &trigger(&fx), &["--timeout-ms", "30000"]);
    let row = fx.wait_running(Some("escaper"), &mut run);
    let p = wait_pids(&fx.path("pids"), 3);
    signal(run.pid(), Signal::SIGKILL);
    run.wait(Duration::from_secs(10));
    assert_dead(&p);
    assert_group_gone_reaping(row.pgid.unwrap(), Duration::from_secs(5));
    fx.flowrun(&["history"]).assert_code(0);
    assert_eq!(fx.execution(&row.id).status, "interrupted");
}

#[test]
fn an_interpreter_that_leaves_its_group_still_times_out_and_stops() {
    let fx = Fx::new();
    // The interpreter moves itself to a new process group and ignores SIGTERM.
    let wf = fx.workflow(
        "leaver",
        &json!({ "id": "leaver", "nodes": [ code_node("sleeper", r#"
            os.setpgid(0, 0)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            note(os.getpid())
            time.sleep(300)
        "#) ]}),
    );
    let out = fx.run(
        &wf,
        &trigger(&fx),
        &["--timeout-ms", "1000", "--kill-grace-ms", "300"],
    );
    out.assert_code(124);
    // The deadline held: SIGTERM ignored, then the whole tree went at the end of the grace.
    assert!(out.elapsed < Duration::from_secs(8), "{out}");
    let id = fx.only_execution_id();
    assert_eq!(fx.execution(&id).status, "timeout");
    assert_dead(&pids(&fx));

    // A stop from another process reports `cancelled` only once the interpreter is gone.
    std::fs::remove_file(fx.path("pids")).unwrap();
    let mut run = fx.spawn_run(&wf, &trigger(&fx), &["--timeout-ms", "30000"]);
    let row = fx.wait_running(Some("sleeper"), &mut run);
    let p = wait_pids(&fx.path("pids"), 1);
    let (_, _, pgid, _) = proc_stat(p[0]).expect("the interpreter runs");
    assert_ne!(
        Some(pgid),
        row.pgid,
        "the interpreter did not leave the group"
    );
    let stop = fx.flowrun(&["stop", &row.id]);
    stop.assert_code(0);
    assert!(stop.stdout.contains("stopped: cancelled"), "{stop}");
    assert!(!alive(p[0]), "the interpreter outlived the stop: {stop}");
    run.wait(Duration::from_secs(20)).assert_code(130);
}

#[test]
fn a_node_holding_the_gil_dies_with_its_runner() {
    let fx = Fx::new();
    // Catastrophic backtracking: one C call that holds the GIL for far longer than the test.
    let wf = fx.workflow(
        "gil",
        &json!({ "id": "gil", "nodes": [ code_node("hog", r#"
            import re
            note(os.getpid())
            re.match(r'(a+)+$', 'a' * 64 + 'b')
        "#) ]}),
    );
    let mut run = fx.spawn_run(&wf, &trigger(&fx), &["--timeout-ms", "60000"]);
    let row = fx.wait_running(Some("hog"), &mut run);
    let p = wait_pids(&fx.path("pids"), 1);
    std::thread::sleep(Duration::from_millis(200));
    assert!(alive(p[0]));
    let t0 = Instant::now();
    signal(run.pid(), Signal::SIGKILL);
    while alive(p[0]) {
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "the interpreter outlived its runner by 5 s"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    eprintln!(
        "time to death of a GIL-holding node after its runner's SIGKILL: {:?}",
        t0.elapsed()
    );
    run.wait(Duration::from_secs(10));
    assert_group_gone_reaping(row.pgid.unwrap(), Duration::from_secs(5));
}

#[test]
fn nothing_in_an_execution_has_a_controlling_terminal() {
    let fx = Fx::new();
    let wf = fx.workflow(
        "tty",
        &json!({ "id": "tty", "nodes": [ code_node("reach", r#"
            import fcntl, termios
            try:
                fd = os.open('/dev/tty', os.O_RDWR)
            except OSError as e:
                return {'tty': 'refused', 'errno': e.errno}
            try:
                fcntl.ioctl(fd, termios.TIOCSTI, b'x')
                return {'tty': 'opened', 'tiocsti': 'worked'}
            except OSError as e:
                return {'tty': 'opened', 'tiocsti': e.errno}
        "#) ]}),
    );
    // flowrun runs with a pseudo-terminal as its controlling terminal, as in a shell.
    let pty = nix::pty::openpty(None, None).expect("openpty");
    let slave = std::os::fd::AsRawFd::as_raw_fd(&pty.slave);
    let mut cmd = fx.command();
    cmd.args(["run", wf.to_str().unwrap(), "--input"])
        .arg(trigger(&fx).to_string())
        .arg("--json");
    // SAFETY: setsid and ioctl are async-signal-safe; nothing is allocated.
    unsafe {
        cmd.pre_exec(move || {
            libc::setsid();
            if libc::ioctl(slave, libc::TIOCSCTTY, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let out = Running::spawn(cmd).wait(WATCHDOG);
    out.assert_code(0);
    let id = fx.only_execution_id();
    let output = fx.node(&id, "reach").output.expect("an output");
    assert_eq!(output["tty"], "refused", "{output}");
    assert_eq!(output["errno"], json!(libc::ENXIO), "{output}");
    drop(pty);
}

/// Starts a run whose node sleeps, and stops the runner (as Ctrl-Z does) once it runs.
fn run_then_suspend(fx: &Fx, extra: &[&str]) -> (Running, crate::support::ExecRow, Vec<i32>) {
    let wf = fx.workflow(
        "suspended",
        &json!({ "id": "suspended", "nodes": [ code_node("sleeper", r#"
            note(os.getpid())
            time.sleep(300)
        "#) ]}),
    );
    let mut run = fx.spawn_run(&wf, &trigger(fx), extra);
    let row = fx.wait_running(Some("sleeper"), &mut run);
    let p = wait_pids(&fx.path("pids"), 1);
    signal(run.pid(), Signal::SIGSTOP);
    (run, row, p)
}

#[test]
fn after_ctrl_z_and_fg_the_deadline_is_enforced_at_once() {
    let fx = Fx::new();
    let (run, row, p) = run_then_suspend(&fx, &["--timeout-ms", "1500", "--kill-grace-ms", "200"]);
    // The deadline passes while the runner is stopped; the node keeps running meanwhile.
    std::thread::sleep(Duration::from_millis(2500));
    assert!(alive(p[0]));
    let t0 = Instant::now();
    signal(run.pid(), Signal::SIGCONT);
    let out = run.wait(Duration::from_secs(20));
    out.assert_code(124);
    assert!(
        t0.elapsed() < Duration::from_secs(5),
        "the runner took {:?} after fg to enforce a deadline that had passed",
        t0.elapsed()
    );
    assert!(!alive(p[0]));
    assert_eq!(fx.execution(&row.id).status, "timeout");
}

#[test]
fn stop_while_the_runner_is_suspended_ends_it_and_the_first_end_stays() {
    let fx = Fx::new();
    let (run, row, p) = run_then_suspend(&fx, &["--timeout-ms", "2000"]);
    let t0 = Instant::now();
    let stop = fx.flowrun(&["stop", &row.id]);
    stop.assert_code(0);
    assert!(stop.stdout.contains("stopped: cancelled"), "{stop}");
    // A stopped runner cannot answer: `stop` does not wait for it (it used to take 10 s).
    assert!(t0.elapsed() < Duration::from_secs(6), "{:?}", t0.elapsed());
    assert!(!alive(p[0]), "the node outlived the stop");
    // Resumed after its deadline has passed, the runner finds the execution ended: the
    // recorded end stays, and the event log keeps its one `execution_end`.
    std::thread::sleep(Duration::from_millis(2200));
    signal(run.pid(), Signal::SIGCONT);
    let out = run.wait(Duration::from_secs(20));
    out.assert_code(130);
    let e = fx.execution(&row.id);
    assert_eq!(e.status, "cancelled", "{e:?}");
    let ends: Vec<_> = fx
        .events(&row.id)
        .into_iter()
        .filter(|ev| ev.kind == "execution_end")
        .collect();
    assert_eq!(ends.len(), 1, "{ends:?}");
    assert_eq!(ends[0].data["status"], "cancelled");
    assert_eq!(fx.node(&row.id, "sleeper").status, "cancelled");
}

/// Zombie children of `pid`: processes it should have reaped and did not.
fn zombies_of(pid: i32) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&p| matches!(proc_stat(p), Some(('Z', ppid, ..)) if ppid == pid))
        .collect()
}

#[test]
fn a_long_lived_server_reaps_what_daemonising_nodes_leave() {
    let world = crate::support::serve::World::new();
    let scratch = world.path("scratch");
    std::fs::create_dir_all(&scratch).unwrap();
    // Each run leaves a daemon (double fork, new session) that ends on its own shortly after.
    world.save(
        "daemons.json",
        &json!({ "id": "daemons", "nodes": [ { "id": "spawn", "type": "code", "code": dedent(r#"
            import os, sys, subprocess
            script = ("import os, time\n"
                      "if os.fork():\n    os._exit(0)\n"
                      "os.setsid()\n"
                      "if os.fork():\n    os._exit(0)\n"
                      "time.sleep(0.05)\n")
            subprocess.run([sys.executable, '-I', '-S', '-c', script])
            return 'spawned'
        "#) } ]}),
    );
    let srv = world.serve(&[]);
    for _ in 0..10 {
        let id = srv.start("/api/workflows/daemons/executions", &json!({}));
        assert_eq!(srv.wait_final(&id)["status"], "success");
    }
    // The daemons have ended by now; none of them may be left as a zombie of the server.
    std::thread::sleep(Duration::from_millis(500));
    let z = zombies_of(srv.pid());
    assert!(z.is_empty(), "zombies under flowrun serve: {z:?}");
}

/// A node's last word: kill its own shepherd with the one signal it cannot handle, so that
/// nothing ends the tree for it, then linger.
const KILL_SHEPHERD: &str = "os.kill(os.getppid(), signal.SIGKILL)\ntime.sleep(60)";

/// A warm execution's parent is its template (`runtime/warm/supervise.py`), which supervises the
/// others too: killing it ends none of them. The execution goes on, its runner waiting for it
/// (`warm::Supervised`), and what it leaves is ended all the same.
pub(crate) const KILL_TEMPLATE: &str =
    "os.kill(os.getppid(), signal.SIGKILL)\ntime.sleep(1)\nreturn 'went on'";

/// How a suite of [`escapees_are_gone_before_the_next_case`] starts its executions.
#[derive(Clone, Copy)]
enum Start {
    Warm,
    Cold,
}

/// Python for a node: `detached(script)` runs `script` in an interpreter of its own, given the
/// file of pids to note its own in, and gives it half a second to get there.
const DETACHED: &str = r#"
def detached(script):
    subprocess.Popen([sys.executable, '-I', '-S', '-c', script, trigger['pids']],
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)
"#;

/// Python for a node, after [`DETACHED`]: `hopper()` starts a process in a new session that
/// forks every 0.1 s and lets its parent exit (so it never grows old under one pid), noting each
/// pid.
const HOPPER: &str = r#"
def hopper():
    detached(
        "import os, sys, time\n"
        "path = sys.argv[1]\n"
        "os.setsid()\n"
        "while True:\n"
        "    with open(path, 'a') as f:\n"
        "        f.write('%d\\n' % os.getpid())\n"
        "    time.sleep(0.1)\n"
        "    if os.fork():\n"
        "        os._exit(0)\n")
"#;

/// Python for a node, after [`DETACHED`]: `headless()` starts a process in a new session whose
/// main thread exits while another thread runs on (`Zl` in ps: a zombie to whoever reads only
/// its state), noting its pid.
const HEADLESS: &str = r#"
def headless():
    detached(
        "import ctypes, os, sys, threading, time\n"
        "os.setsid()\n"
        "threading.Thread(target=time.sleep, args=(300,)).start()\n"
        "with open(sys.argv[1], 'a') as f:\n"
        "    f.write('%d\\n' % os.getpid())\n"
        "ctypes.CDLL(None).syscall(60, 0)\n")
"#;

/// A `flowrun test` suite of two cases: `escaper` runs `body` (its status expected to be
/// `status`), then `look` finds whether any process it noted is alive: none may be, before the
/// next case runs, not only once the suite ends. Returns how long the first case took (ms).
fn escapees_are_gone_before_the_next_case(start: Start, body: &str, status: &str) -> f64 {
    let fx = Fx::new();
    let trig = trigger(&fx);
    fx.workflow(
        "escaper",
        &json!({ "id": "escaper", "nodes": [ code_node("escaper", body) ]}),
    );
    fx.workflow(
        "look",
        &json!({ "id": "look", "nodes": [ code_node("look", r#"
            pids = [int(l) for l in open(trigger['pids']).read().split()]
            def alive(pid):
                try:
                    fields = open('/proc/%d/stat' % pid).read().rsplit(')', 1)[1].split()
                except OSError:
                    return False
                # A zombie whose other threads still run ('Zl') is alive.
                return fields[0] not in ('Z', 'X') or int(fields[17]) > 1
            
            return {'noted': len(pids), 'alive': [p for p in pids if alive(p)]}
        "#) ]}),
    );
    let yaml = |wf: &str, expect: &str| {
        format!(
            "workflow: ./{wf}.json\ncases:\n  - name: {wf}\n    trigger: {trig}\n    expect: {expect}\n"
        )
    };
    fx.write_file(
        "a_escaper.test.yaml",
        &yaml("escaper", &format!("{{ status: {status} }}")),
    );
    fx.write_file(
        "b_look.test.yaml",
        &yaml("look", "{ output.noted: { gt: 2 }, output.alive: [] }"),
    );
    let dir = fx.path(".");
    let mut args = vec!["test", dir.to_str().unwrap(), "-j", "1", "--json"];
    if let Start::Cold = start {
        args.push("--cold");
    }
    let out = fx.flowrun(&args);
    out.assert_code(0);
    let report: serde_json::Value = serde_json::from_str(&out.stdout).expect("a JSON report");
    crate::workflow_tests::case(&report, "escaper")["attempts"][0]["duration_ms"]
        .as_f64()
        .expect("a duration")
}

#[test]
fn processes_of_a_node_that_kills_its_shepherd_end_before_the_next_case() {
    escapees_are_gone_before_the_next_case(
        Start::Cold,
        &format!("{ESCAPEE}\nescape_all()\n{KILL_SHEPHERD}"),
        "error",
    );
}

#[test]
fn processes_of_a_node_that_kills_its_template_end_before_the_next_case() {
    escapees_are_gone_before_the_next_case(
        Start::Warm,
        &format!("{ESCAPEE}\nescape_all()\n{KILL_TEMPLATE}"),
        "success",
    );
}

/// A process that keeps taking a new pid is frozen while it is too young to be judged (a second),
/// and ended: not waited for until the runner gives up waiting (ten seconds) and ends whatever
/// is left. Warm, the template ends it as it ends what an execution left, whatever its pid.
#[test]
fn a_process_that_keeps_changing_its_pid_ends_before_the_next_case() {
    let ms = escapees_are_gone_before_the_next_case(
        Start::Cold,
        &format!("{DETACHED}\n{HOPPER}\nhopper()\n{KILL_SHEPHERD}"),
        "error",
    );
    assert!(ms < 8000.0, "the case took {ms} ms");
    for end in ["return 'left it'", KILL_TEMPLATE] {
        let ms = escapees_are_gone_before_the_next_case(
            Start::Warm,
            &format!("{DETACHED}\n{HOPPER}\nhopper()\n{end}"),
            "success",
        );
        assert!(ms < 8000.0, "the case took {ms} ms");
    }
}

/// A node that takes its shepherd's descriptors away (its limit set to zero) leaves it unable to
/// read /proc: the shepherd ends by SIGKILL rather than as if nothing were left, the execution
/// is an error, and what it left is ended. Warm, the node takes its template's away: the
/// template raises its limit again if it can; here it cannot (the hard limit is zero too), so it
/// gives up, itself alone, and the execution and what it left fall to the runner: the execution
/// ends as it would have, and what it left is ended all the same.
#[test]
fn a_shepherd_that_cannot_see_its_tree_does_not_end_as_if_it_were_empty() {
    let body = format!(
        "{ESCAPEE}\nescape_all()\nimport resource\n\
         resource.prlimit(os.getppid(), resource.RLIMIT_NOFILE, (0, 0))\nreturn 'done'"
    );
    escapees_are_gone_before_the_next_case(Start::Cold, &body, "error");
    escapees_are_gone_before_the_next_case(Start::Warm, &body, "success");
}

/// A process whose main thread exited while others run is not taken for a zombie: the shepherd
/// (or the template) ends it when the run ends, and so does the runner when the shepherd (or the
/// template) was killed.
#[test]
fn a_process_whose_main_thread_exited_is_ended_all_the_same() {
    let left = format!("{ESCAPEE}\nescape_all()\n{DETACHED}\n{HEADLESS}\nheadless()\n");
    escapees_are_gone_before_the_next_case(
        Start::Cold,
        &format!("{left}return 'left them'"),
        "success",
    );
    escapees_are_gone_before_the_next_case(
        Start::Warm,
        &format!("{left}return 'left them'"),
        "success",
    );
    escapees_are_gone_before_the_next_case(Start::Cold, &format!("{left}{KILL_SHEPHERD}"), "error");
    escapees_are_gone_before_the_next_case(
        Start::Warm,
        &format!("{left}{KILL_TEMPLATE}"),
        "success",
    );
}

/// The runner and the warm template are not dumpable (an execution, the same user, cannot trace
/// them or open their descriptors); an execution's interpreter is, warm as cold, as a process
/// started by hand would be.
#[test]
fn an_interpreter_is_dumpable_warm_and_cold() {
    let world = crate::support::serve::World::new();
    world.save(
        "dumpable.json",
        &json!({ "id": "dumpable", "nodes": [ { "id": "d", "type": "code", "code": dedent(r#"
            import ctypes
            libc = ctypes.CDLL(None)
            return {'me': libc.prctl(3, 0, 0, 0, 0)}
        "#) } ]}),
    );
    for extra in [&[][..], &["--cold"][..]] {
        let srv = world.serve(extra);
        let id = srv.start(
            "/api/workflows/dumpable/executions",
            &json!({"trigger": {}}),
        );
        let r = srv.wait_final(&id);
        assert_eq!(r["output"]["me"], 1, "{extra:?}: {r:#}");
    }
}
