//! The fault suite: real `flowrun` processes running real Python that misbehaves — sleeps
//! forever, ignores SIGTERM, forks grandchildren and daemons, floods stdout, eats memory — plus
//! stop requests from other processes, a SIGKILLed runner, stale rows with reused pids and
//! concurrent runners on one database.
//!
//! Every test runs in its own temp dir (database, script cache and an empty `TMPDIR`) and ends by
//! proving that no process of the execution's process group is left: `kill(-pgid, 0)` must fail
//! with ESRCH, and every grandchild pid the workflow wrote down must be gone.

use crate::support::faults::*;
use crate::support::mode;
use nix::sys::signal::Signal;
use serde_json::json;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

fn now_secs() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// A node that records its pid, starts a plain sleeping grandchild and sleeps forever.
const SLEEP_FOREVER: &str = r#"
note(os.getpid())
grandchild('sleeper')
while True:
    time.sleep(1)
"#;

// ---------------------------------------------------------------------------------------------
// Timeouts
// ---------------------------------------------------------------------------------------------

#[test]
fn execution_timeout_kills_a_node_that_sleeps_forever() {
    let fx = Fx::new();
    let wf = fx.workflow(
        "forever",
        &json!({ "id": "forever", "nodes": [
            { "id": "first", "type": "code", "code": "return 'done'" },
            code_node("sleeper", SLEEP_FOREVER),
            { "id": "never", "type": "code", "code": "return 'unreachable'" },
        ]}),
    );
    // Long enough for the node to start its grandchild even on a busy machine.
    let out = fx.run(&wf, &trigger(&fx), &["--timeout-ms", "2500"]);
    out.assert_code(124);
    // SIGTERM ends the sleeping node at once: no grace period needed.
    assert!(out.elapsed < Duration::from_secs(8), "{out}");

    let id = fx.only_execution_id();
    let e = fx.execution(&id);
    assert_eq!(e.status, "timeout", "{e:?}");
    assert!(e.error_message().contains("timeout of 2500 ms"), "{e:?}");
    assert_eq!(fx.node(&id, "first").status, "success");
    let sleeper = fx.node(&id, "sleeper");
    assert_eq!(sleeper.status, "timeout", "{sleeper:?}");
    assert!(
        fx.nodes(&id).iter().all(|n| n.node_id != "never"),
        "a node after the timeout ran: {:?}",
        fx.nodes(&id)
    );

    let p = pids(&fx);
    assert_eq!(p.len(), 2, "node and grandchild pids: {p:?}");
    assert_pids_gone(&p, e.pgid.unwrap());
    fx.assert_clean(&id);
}

#[test]
fn node_timeout_ends_the_execution_and_names_the_node() {
    let fx = Fx::new();
    let mut slow = code_node("slow", SLEEP_FOREVER);
    slow["timeout_ms"] = json!(300);
    let wf = fx.workflow(
        "node-timeout",
        &json!({ "id": "node-timeout", "nodes": [
            { "id": "first", "type": "code", "code": "return 1" },
            slow,
            { "id": "never", "type": "code", "code": "return 2" },
        ]}),
    );
    let out = fx.run(&wf, &trigger(&fx), &["--timeout-ms", "30000"]);
    out.assert_code(124);
    assert!(out.elapsed < Duration::from_secs(10), "{out}");
    assert!(out.stderr.contains("slow"), "{out}");

    let id = fx.only_execution_id();
    let e = fx.execution(&id);
    assert_eq!(e.status, "timeout");
    let err = e.error.clone().unwrap();
    assert_eq!(err["node"], "slow", "{err}");
    assert!(
        e.error_message().contains("node 'slow'") && e.error_message().contains("300 ms"),
        "{err}"
    );
    assert_eq!(fx.node(&id, "first").status, "success");
    let slow = fx.node(&id, "slow");
    assert_eq!(slow.status, "timeout");
    let msg = slow.error.unwrap()["message"].as_str().unwrap().to_string();
    assert!(msg.contains("'slow'") && msg.contains("300 ms"), "{msg}");
    assert!(fx.nodes(&id).iter().all(|n| n.node_id != "never"));

    assert_pids_gone(&pids(&fx), e.pgid.unwrap());
    fx.assert_clean(&id);
}

#[test]
fn a_node_that_ignores_sigterm_is_killed_after_the_grace_period() {
    let fx = Fx::new();
    // The node and its grandchild both ignore SIGTERM; the node writes down when SIGTERM came.
    let wf = fx.workflow(
        "stubborn",
        &json!({ "id": "stubborn", "nodes": [
            code_node("stubborn", r#"
                term_file = os.path.join(trigger['dir'], 'term')
                def on_term(signum, frame):
                    with open(term_file, 'w') as f:
                        f.write(repr(time.time()))
                signal.signal(signal.SIGTERM, on_term)
                note(os.getpid())
                grandchild('stubborn-grandchild', ignore_term=True)
                open(os.path.join(trigger['dir'], 'armed'), 'w').close()
                while True:
                    time.sleep(0.05)
            "#),
        ]}),
    );
    let out = fx.run(
        &wf,
        &trigger(&fx),
        &["--timeout-ms", "1500", "--kill-grace-ms", "200"],
    );
    let ended = now_secs();
    out.assert_code(124);
    assert!(
        fx.path("scratch/armed").exists(),
        "the node was not set up before the timeout: {out}"
    );
    let term: f64 = std::fs::read_to_string(fx.path("scratch/term"))
        .expect("the node saw SIGTERM")
        .parse()
        .unwrap();
    let after_term = ended - term;
    // It waited the grace period before SIGKILL, and not much longer.
    assert!(
        after_term >= 0.19,
        "SIGKILL came {after_term:.3} s after SIGTERM"
    );
    assert!(
        after_term < 3.0,
        "SIGKILL came {after_term:.3} s after SIGTERM"
    );
    assert!(out.elapsed >= Duration::from_millis(1700), "{out}");
    assert!(out.elapsed < Duration::from_secs(8), "{out}");

    let id = fx.only_execution_id();
    let e = fx.execution(&id);
    assert_eq!(e.status, "timeout");
    assert_eq!(e.exit.as_deref(), Some("killed by SIGKILL"), "{e:?}");
    assert_eq!(fx.node(&id, "stubborn").status, "timeout");
    let p = pids(&fx);
    assert_eq!(p.len(), 2, "{p:?}");
    assert_pids_gone(&p, e.pgid.unwrap());
    fx.assert_clean(&id);
}

// ---------------------------------------------------------------------------------------------
// Grandchildren that outlive their node
// ---------------------------------------------------------------------------------------------

#[test]
fn a_grandchild_holding_stdout_does_not_hang_the_run() {
    let fx = Fx::new();
    // The grandchild ignores SIGTERM and keeps the stdout pipe open; the node returns at once.
    let wf = fx.workflow(
        "holder",
        &json!({ "id": "holder", "nodes": [
            code_node("spawn", r#"
                pid = grandchild('holder', ignore_term=True, hold_stdout=True)
                print('started', pid)
                return pid
            "#),
            { "id": "after", "type": "code", "code": "return 'after'" },
        ]}),
    );
    let out = fx.run(&wf, &trigger(&fx), &["--timeout-ms", "30000"]);
    out.assert_code(0);
    // A bounded drain after the child exits, not the 120 s the grandchild sleeps.
    assert!(out.elapsed < Duration::from_secs(6), "{out}");

    let id = fx.only_execution_id();
    let e = fx.execution(&id);
    assert_eq!(e.status, "success", "{e:?}");
    let p = pids(&fx);
    assert_eq!(p.len(), 1);
    assert_eq!(fx.node(&id, "spawn").output, Some(json!(p[0])));
    assert_eq!(fx.node(&id, "after").status, "success");
    assert_pids_gone(&p, e.pgid.unwrap());
    fx.assert_clean(&id);
}

#[test]
fn a_double_forked_daemon_is_killed_after_the_run() {
    let fx = Fx::new();
    let wf = fx.workflow(
        "daemon",
        &json!({ "id": "daemon", "nodes": [
            code_node("fork", r#"
                r, w = os.pipe()
                pid = os.fork()
                if pid == 0:
                    if os.fork() == 0:
                        # The daemon: same process group, stdio on /dev/null, parent gone.
                        null = os.open(os.devnull, os.O_RDWR)
                        for fd in (0, 1, 2):
                            os.dup2(null, fd)
                        os.write(w, b'%d\n' % os.getpid())
                        os.close(w)
                        while True:
                            time.sleep(1)
                    os._exit(0)
                os.close(w)
                os.waitpid(pid, 0)
                daemon = int(os.read(r, 64))
                note(daemon)
                return daemon
            "#),
            { "id": "after", "type": "code", "code": "return 'after'" },
        ]}),
    );
    let out = fx.run(&wf, &trigger(&fx), &["--timeout-ms", "30000"]);
    out.assert_code(0);
    assert!(out.elapsed < Duration::from_secs(6), "{out}");

    let id = fx.only_execution_id();
    let e = fx.execution(&id);
    assert_eq!(e.status, "success");
    let p = pids(&fx);
    assert_eq!(p.len(), 1);
    assert_eq!(fx.node(&id, "fork").output, Some(json!(p[0])));
    assert_pids_gone(&p, e.pgid.unwrap());
    fx.assert_clean(&id);
}

// ---------------------------------------------------------------------------------------------
// Stop requests
// ---------------------------------------------------------------------------------------------

fn stop_workflow(fx: &Fx, body: &str) -> std::path::PathBuf {
    fx.workflow(
        "stoppable",
        &json!({ "id": "stoppable", "nodes": [
            { "id": "first", "type": "code", "code": "return 'first'" },
            code_node("sleeper", body),
            { "id": "never", "type": "code", "code": "return 'never'" },
        ]}),
    )
}

/// Starts a run of `wf`, waits until `sleeper` runs with `n_pids` pids written, stops it with
/// `flowrun stop <id_arg(id)>` and checks everything that must hold afterwards.
fn stop_and_check(fx: &Fx, wf: &Path, extra: &[&str], n_pids: usize, id_arg: fn(&str) -> String) {
    let mut args = vec!["--timeout-ms", "30000"];
    args.extend_from_slice(extra);
    let mut run = fx.spawn_run(wf, &trigger(fx), &args);
    let row = fx.wait_running(Some("sleeper"), &mut run);
    wait_pids(&fx.path("pids"), n_pids);
    assert!(alive(row.pid.unwrap()));

    let stop = fx.flowrun(&["stop", &id_arg(&row.id)]);
    stop.assert_code(0);
    assert!(
        stop.stdout
            .contains(&format!("execution {} stopped", row.id)),
        "{stop}"
    );
    let out = run.wait(Duration::from_secs(20));
    out.assert_code(130);

    let e = fx.execution(&row.id);
    assert_eq!(e.status, "cancelled", "{e:?}");
    assert_eq!(e.error.as_ref().unwrap()["type"], "Cancelled");
    let message = e.error.as_ref().unwrap()["message"].as_str().unwrap_or("");
    assert!(message.starts_with("stopped by request"), "{message}");
    assert_eq!(fx.node(&row.id, "first").status, "success");
    assert_eq!(fx.node(&row.id, "sleeper").status, "cancelled");
    assert!(fx.nodes(&row.id).iter().all(|n| n.node_id != "never"));
    assert_pids_gone(&pids(fx), row.pgid.unwrap());
    fx.assert_clean(&row.id);
}

#[test]
fn stop_from_another_process_cancels_the_run() {
    let fx = Fx::new();
    let wf = stop_workflow(&fx, SLEEP_FOREVER);
    stop_and_check(&fx, &wf, &[], 2, |id| id.to_string());
}

#[test]
fn stop_by_id_prefix_also_kills_what_ignores_sigterm() {
    let fx = Fx::new();
    let wf = stop_workflow(
        &fx,
        r#"
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        note(os.getpid())
        grandchild('stubborn', ignore_term=True)
        while True:
            time.sleep(1)
        "#,
    );
    stop_and_check(&fx, &wf, &["--kill-grace-ms", "200"], 2, |id| {
        id[..6].to_string()
    });
}

#[test]
fn stop_racing_the_start_still_cancels() {
    let fx = Fx::new();
    let wf = stop_workflow(&fx, SLEEP_FOREVER);
    let mut run = fx.spawn_run(&wf, &trigger(&fx), &["--timeout-ms", "30000"]);
    // Stop as soon as the row exists, before the child is (surely) spawned.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let id = loop {
        if let Some(id) = fx.ids().pop() {
            break id;
        }
        assert!(
            run.child.try_wait().unwrap().is_none(),
            "flowrun ended early"
        );
        assert!(std::time::Instant::now() < deadline, "no execution row");
        std::thread::sleep(Duration::from_millis(2));
    };
    let stop = fx.flowrun(&["stop", &id]);
    stop.assert_code(0);
    assert!(stop.stdout.contains("stopped: cancelled"), "{stop}");
    let out = run.wait(Duration::from_secs(20));
    out.assert_code(130);
    let e = fx.execution(&id);
    assert_eq!(e.status, "cancelled", "{e:?}");
    assert!(
        fx.nodes(&id).iter().all(|n| n.status != "running"),
        "{:?}",
        fx.nodes(&id)
    );
    assert_pids_gone(&pids(&fx), e.pgid.expect("the child was spawned"));
    fx.assert_clean(&id);
}

/// A process in its own process group (pgid == pid), like an unrelated program that was handed
/// a pid an execution once had.
fn unrelated_process() -> std::process::Child {
    std::process::Command::new("sleep")
        .arg("30")
        .process_group(0)
        .spawn()
        .expect("spawn sleep")
}

fn quick_run(fx: &Fx) -> String {
    let wf = fx.workflow(
        "quick",
        &json!({ "id": "quick", "nodes": [{ "id": "one", "type": "code", "code": "return 1" }] }),
    );
    let before = fx.ids();
    fx.run(&wf, &json!({}), &[]).assert_code(0);
    let id = fx
        .ids()
        .into_iter()
        .find(|i| !before.contains(i))
        .expect("a new execution");
    fx.assert_clean(&id);
    id
}

/// Points a stored execution at `pid` as its process group, with the given start time, and
/// optionally sets its status and runner.
fn point_row_at(fx: &Fx, id: &str, pid: i32, start_time: u64, runner: Option<(i32, u64)>) {
    let c = fx.db_rw();
    c.execute(
        "UPDATE executions SET pid = ?2, pgid = ?2, process_start_time = ?3 WHERE id = ?1",
        rusqlite::params![id, pid, start_time as i64],
    )
    .unwrap();
    if let Some((rpid, rstart)) = runner {
        c.execute(
            "UPDATE executions SET status = 'running', finished_at = NULL, duration_ms = NULL,
                    error = NULL, runner_pid = ?2, runner_start_time = ?3 WHERE id = ?1",
            rusqlite::params![id, rpid, rstart as i64],
        )
        .unwrap();
    }
}

fn start_time(pid: i32) -> u64 {
    proc_stat(pid).expect("process exists").3
}

/// A pid with no process behind it (a runner that is gone).
fn dead_pid() -> i32 {
    let mut c = std::process::Command::new("true").spawn().unwrap();
    c.wait().unwrap();
    c.id() as i32
}

fn kill_unrelated(mut p: std::process::Child) {
    let _ = p.kill();
    let _ = p.wait();
}

#[test]
fn stop_of_a_finished_execution_signals_nothing() {
    let fx = Fx::new();
    let id = quick_run(&fx);
    // Even with a live process recorded under the right start time, a finished execution is
    // not signalled.
    let victim = unrelated_process();
    let vpid = victim.id() as i32;
    point_row_at(&fx, &id, vpid, start_time(vpid), None);

    let out = fx.flowrun(&["stop", &id]);
    out.assert_code(0);
    assert!(
        out.stdout
            .contains(&format!("execution {id} already ended: success")),
        "{out}"
    );
    std::thread::sleep(Duration::from_millis(100));
    assert!(
        alive(vpid),
        "stop signalled the process of a finished execution"
    );
    assert_eq!(fx.execution(&id).status, "success");
    kill_unrelated(victim);
    fx.assert_tmp_empty();
}

#[test]
fn a_stale_row_whose_pid_was_reused_is_not_signalled() {
    let fx = Fx::new();
    let a = quick_run(&fx);
    let b = quick_run(&fx);
    let victim = unrelated_process();
    let vpid = victim.id() as i32;
    let wrong = start_time(vpid) + 4321;
    // Both rows: `running`, their runner gone, their process group now an unrelated process
    // with a different start time.
    point_row_at(&fx, &a, vpid, wrong, Some((dead_pid(), 1)));
    point_row_at(&fx, &b, vpid, wrong, Some((dead_pid(), 1)));

    // Any command recovers them.
    let out = fx.flowrun(&["history"]);
    out.assert_code(0);
    assert!(
        out.stderr
            .contains(&format!("execution {a} was left running"))
            && out.stderr.contains("marked interrupted"),
        "{out}"
    );
    for id in [&a, &b] {
        let e = fx.execution(id);
        assert_eq!(e.status, "interrupted", "{e:?}");
        assert_eq!(e.error.unwrap()["type"], "Interrupted");
    }
    assert!(alive(vpid), "recovery signalled a reused pid");

    // `flowrun stop` on such a row (made stale again) does not signal it either.
    point_row_at(&fx, &b, vpid, wrong, Some((dead_pid(), 1)));
    let out = fx.flowrun(&["stop", &b]);
    out.assert_code(0);
    assert!(out.stdout.contains("already ended: interrupted"), "{out}");
    std::thread::sleep(Duration::from_millis(100));
    assert!(alive(vpid), "stop signalled a reused pid");
    kill_unrelated(victim);
    fx.assert_tmp_empty();
}

#[test]
fn stop_with_an_unresponsive_runner_never_signals_a_reused_pid() {
    let fx = Fx::new();
    let id = quick_run(&fx);
    let victim = unrelated_process();
    let vpid = victim.id() as i32;
    // The runner looks alive (it is this test process) but never answers the stop request; the
    // recorded group is now someone else's.
    let me = std::process::id() as i32;
    point_row_at(
        &fx,
        &id,
        vpid,
        start_time(vpid) + 4321,
        Some((me, start_time(me))),
    );
    let out = fx.flowrun(&["stop", &id]);
    out.assert_code(0);
    assert!(out.stdout.contains("stopped: cancelled"), "{out}");
    assert!(alive(vpid), "stop signalled a reused pid");
    assert_eq!(fx.execution(&id).status, "cancelled");
    kill_unrelated(victim);
    fx.assert_tmp_empty();
}

#[test]
fn ctrl_c_or_sigterm_to_the_runner_cancels_its_execution() {
    let fx = Fx::new();
    let wf = stop_workflow(&fx, SLEEP_FOREVER);
    // The child runs in its own process group, so a terminal's Ctrl-C reaches only the runner, which
    // must stop the group itself. SIGTERM (a service manager, `kill`) does the same.
    for sig in [Signal::SIGINT, Signal::SIGTERM] {
        let _ = std::fs::remove_file(fx.path("pids"));
        let mut run = fx.spawn_run(&wf, &trigger(&fx), &["--timeout-ms", "30000"]);
        let row = fx.wait_running(Some("sleeper"), &mut run);
        let p = wait_pids(&fx.path("pids"), 2);
        signal(run.pid(), sig);
        let out = run.wait(Duration::from_secs(20));
        out.assert_code(130);
        let e = fx.execution(&row.id);
        assert_eq!(e.status, "cancelled", "{sig}: {e:?}");
        // The record says how it was stopped: Ctrl-C and SIGTERM are told apart from a request.
        let message = e.error.as_ref().unwrap()["message"]
            .as_str()
            .unwrap_or("")
            .to_string();
        let expected = if sig == Signal::SIGINT {
            "stopped by Ctrl-C"
        } else {
            "stopped: flowrun received SIGTERM"
        };
        assert!(message.starts_with(expected), "{sig}: {message}");
        assert_eq!(fx.node(&row.id, "sleeper").status, "cancelled", "{sig}");
        assert_pids_gone(&p, row.pgid.unwrap());
        fx.assert_clean(&row.id);
    }
}

// ---------------------------------------------------------------------------------------------
// The runner dies
// ---------------------------------------------------------------------------------------------

#[test]
fn sigkill_of_the_runner_takes_the_group_down_and_is_recovered() {
    let fx = Fx::new();
    let wf = stop_workflow(
        &fx,
        r#"
        note(os.getpid())
        grandchild('plain')
        grandchild('stubborn', ignore_term=True)
        while True:
            time.sleep(1)
        "#,
    );
    let mut run = fx.spawn_run(&wf, &trigger(&fx), &["--timeout-ms", "30000"]);
    let row = fx.wait_running(Some("sleeper"), &mut run);
    let p = wait_pids(&fx.path("pids"), 3);
    let pgid = row.pgid.unwrap();

    signal(run.pid(), Signal::SIGKILL);
    let out = run.wait(Duration::from_secs(10));
    assert_eq!(out.status.signal(), Some(9), "{out}");
    // The lifeline: the shepherd sees EOF and kills the execution's tree.
    let took = assert_group_gone_reaping(pgid, Duration::from_secs(5));
    eprintln!("group gone {took:?} after the runner was killed");
    assert_pids_gone(&p, pgid);
    assert_eq!(
        fx.execution(&row.id).status,
        "running",
        "nobody recorded the end yet"
    );

    let out = fx.flowrun(&["history"]);
    out.assert_code(0);
    assert!(
        out.stderr
            .contains(&format!("execution {} was left running", row.id)),
        "{out}"
    );
    let e = fx.execution(&row.id);
    assert_eq!(e.status, "interrupted", "{e:?}");
    assert_eq!(fx.node(&row.id, "first").status, "success");
    assert_eq!(fx.node(&row.id, "sleeper").status, "cancelled");
    fx.assert_clean(&row.id);
}

#[test]
fn the_lifeline_holds_after_the_node_execs_another_program() {
    let fx = Fx::new();
    // The node replaces the Python process by another program. The lifeline is watched by the
    // shepherd, not by the interpreter, so nothing of the execution outlives the runner anyway.
    let wf = stop_workflow(
        &fx,
        r#"
        import shutil
        note(os.getpid())
        grandchild('plain')
        os.execv(shutil.which('sleep'), ['sleep', '120'])
        "#,
    );
    let mut run = fx.spawn_run(&wf, &trigger(&fx), &["--timeout-ms", "30000"]);
    let row = fx.wait_running(Some("sleeper"), &mut run);
    let p = wait_pids(&fx.path("pids"), 2);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !std::fs::read_to_string(format!("/proc/{}/comm", p[0]))
        .is_ok_and(|c| c.trim() == "sleep")
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the node never exec'd"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    signal(run.pid(), Signal::SIGKILL);
    run.wait(Duration::from_secs(10));
    let pgid = row.pgid.unwrap();
    let took = assert_group_gone_reaping(pgid, Duration::from_secs(5));
    eprintln!("group gone {took:?} after the runner was killed");
    assert_pids_gone(&p, pgid);

    // The next command finds the dead runner and marks the execution interrupted.
    let out = fx.flowrun(&["history"]);
    out.assert_code(0);
    assert!(out.stderr.contains("marked interrupted"), "{out}");
    assert_eq!(fx.execution(&row.id).status, "interrupted");
    fx.assert_tmp_empty();
}

// ---------------------------------------------------------------------------------------------
// Bounded resources
// ---------------------------------------------------------------------------------------------

const MIB: u64 = 1 << 20;
/// Generous bound on the runner's peak RSS whatever the child prints.
const MAX_RUNNER_RSS_KB: u64 = 100 * 1024;

#[test]
fn stdout_flood_and_a_huge_line_keep_memory_and_logs_bounded() {
    let fx = Fx::new();
    // 1 GiB of 1 KiB lines, then one 200 MiB line without a newline (1 MiB writes), plus 16 MiB
    // on stderr; then the node returns and a later node uses its output.
    let wf = fx.workflow(
        "flood",
        &json!({ "id": "flood", "nodes": [
            code_node("flood", r#"
                out = sys.stdout.buffer
                lines = (b'y' * 1023 + b'\n') * 1024
                for _ in range(1024):
                    out.write(lines)
                sys.stderr.buffer.write((b'e' * 1023 + b'\n') * (16 * 1024))
                chunk = b'x' * (1 << 20)
                for _ in range(200):
                    out.write(chunk)
                out.flush()
                return 'flooded'
            "#),
            { "id": "after", "type": "code", "code": "return nodes['flood']['output'] + '!'" },
        ]}),
    );
    let cap = 1_000_000u64;
    let out = fx
        .spawn_run(
            &wf,
            &trigger(&fx),
            &["--timeout-ms", "60000", "--max-log-bytes", &cap.to_string()],
        )
        .wait(WATCHDOG);
    out.assert_code(0);
    let total = (1024 + 16 + 200) * MIB;
    let secs = out.elapsed.as_secs_f64();
    eprintln!(
        "flood: {} MiB in {secs:.2} s = {:.0} MiB/s; runner peak RSS {} kB",
        total / MIB,
        (total / MIB) as f64 / secs,
        out.peak_hwm_kb
    );
    assert!(out.peak_hwm_kb > 0, "RSS was never sampled");
    assert!(
        out.peak_hwm_kb < MAX_RUNNER_RSS_KB,
        "runner peak RSS {} kB",
        out.peak_hwm_kb
    );

    let id = fx.only_execution_id();
    let e = fx.execution(&id);
    assert_eq!(e.status, "success", "{e:?}");
    assert_eq!(e.output, Some(json!("flooded!")));
    assert_eq!(fx.node(&id, "flood").status, "success");
    assert_eq!(fx.node(&id, "after").status, "success");
    assert!(e.log_bytes as u64 <= cap, "{e:?}");
    assert!(e.log_bytes_cut as u64 > 1024 * MIB, "{e:?}");
    let stored: u64 = fx.log_lines(&id).iter().map(|(_, l)| l.len() as u64).sum();
    assert!(stored <= cap + 64 * 1024, "stored {stored} log bytes");
    fx.assert_clean(&id);
}

#[test]
fn an_endless_flood_of_empty_lines_is_cut_and_times_out_on_time() {
    let fx = Fx::new();
    // Empty lines have no bytes of their own: they must still use up the log budget, or every
    // one becomes a stored row and the runner falls ever further behind (and past its timeout).
    let wf = fx.workflow(
        "newlines",
        &json!({ "id": "newlines", "nodes": [
            code_node("newlines", r#"
                note(os.getpid())
                chunk = b'\n' * (1 << 20)
                while True:
                    sys.stdout.buffer.write(chunk)
            "#),
        ]}),
    );
    let cap = 200_000u64;
    let out = fx
        .spawn_run(
            &wf,
            &trigger(&fx),
            &["--timeout-ms", "2000", "--max-log-bytes", &cap.to_string()],
        )
        .wait(WATCHDOG);
    out.assert_code(124);
    eprintln!(
        "empty lines: timed out after {:.2} s; runner peak RSS {} kB",
        out.elapsed.as_secs_f64(),
        out.peak_hwm_kb
    );
    assert!(out.elapsed < Duration::from_secs(8), "{out}");
    assert!(out.peak_hwm_kb < MAX_RUNNER_RSS_KB, "{}", out.peak_hwm_kb);
    let id = fx.only_execution_id();
    let e = fx.execution(&id);
    assert_eq!(e.status, "timeout", "{e:?}");
    assert_eq!(fx.node(&id, "newlines").status, "timeout");
    let kept = fx.log_lines(&id).len() as u64;
    assert!(kept > 0, "no lines kept");
    assert!(
        kept <= cap / 64 + 1,
        "{kept} log lines stored under a {cap} byte budget"
    );
    assert!(e.log_bytes as u64 <= cap, "{e:?}");
    assert!(e.log_bytes_cut > 1_000_000, "{e:?}");
    assert_pids_gone(&pids(&fx), e.pgid.unwrap());
    fx.assert_clean(&id);
}

#[test]
fn a_huge_unterminated_line_on_fd1_does_not_swallow_the_node_end() {
    let fx = Fx::new();
    // Written straight to fd 1, as a subprocess would: the runtime cannot know the line is
    // unfinished, so its node_end marker follows 200 MiB of output on the same line.
    let wf = fx.workflow(
        "rawline",
        &json!({ "id": "rawline", "nodes": [
            code_node("raw", r#"
                chunk = b'x' * (1 << 20)
                for _ in range(200):
                    os.write(1, chunk)
                return 'raw'
            "#),
            code_node("after", r#"
                os.write(1, b'partial output without newline')
                return nodes['raw']['output'] + '!'
            "#),
        ]}),
    );
    let out = fx
        .spawn_run(&wf, &trigger(&fx), &["--max-log-bytes", "100000"])
        .wait(WATCHDOG);
    out.assert_code(0);
    eprintln!(
        "raw line: 200 MiB in {:.2} s; runner peak RSS {} kB",
        out.elapsed.as_secs_f64(),
        out.peak_hwm_kb
    );
    assert!(out.peak_hwm_kb < MAX_RUNNER_RSS_KB, "{}", out.peak_hwm_kb);
    let id = fx.only_execution_id();
    let e = fx.execution(&id);
    assert_eq!(e.status, "success", "{e:?}");
    assert_eq!(e.output, Some(json!("raw!")));
    let nodes = fx.nodes(&id);
    assert_eq!(fx.node(&id, "raw").status, "success", "{nodes:?}");
    assert_eq!(fx.node(&id, "raw").output, Some(json!("raw")));
    assert_eq!(fx.node(&id, "after").status, "success", "{nodes:?}");
    assert!(e.log_bytes_cut as u64 >= 200 * MIB - 100_000, "{e:?}");
    fx.assert_clean(&id);
}

#[test]
fn a_100_mb_trigger_on_stdin_does_not_deadlock() {
    let fx = Fx::new();
    let wf = fx.workflow(
        "big-input",
        &json!({ "id": "big-input", "nodes": [
            { "id": "len", "type": "code", "code": "return len(trigger['blob'])" },
        ]}),
    );
    let n = 100_000_000usize;
    let input = fx.path("input.json");
    {
        use std::io::Write;
        let mut f = std::io::BufWriter::new(std::fs::File::create(&input).unwrap());
        f.write_all(b"{\"blob\": \"").unwrap();
        let chunk = vec![b'a'; 1 << 20];
        let mut left = n;
        while left > 0 {
            let k = left.min(chunk.len());
            f.write_all(&chunk[..k]).unwrap();
            left -= k;
        }
        f.write_all(b"\"}").unwrap();
    }
    let out = fx
        .spawn(&[
            "run",
            wf.to_str().unwrap(),
            "--input-file",
            input.to_str().unwrap(),
            "--timeout-ms",
            "60000",
        ])
        .wait(WATCHDOG);
    out.assert_code(0);
    eprintln!("100 MB trigger: {:.2} s", out.elapsed.as_secs_f64());
    let id = fx.only_execution_id();
    let e = fx.execution(&id);
    assert_eq!(e.status, "success", "{e:?}");
    assert_eq!(e.output, Some(json!(n)));
    fx.assert_clean(&id);
}

#[test]
fn non_utf8_output_is_recorded_lossily() {
    let fx = Fx::new();
    let wf = fx.workflow(
        "bytes",
        &json!({ "id": "bytes", "nodes": [
            code_node("bytes", r#"
                sys.stdout.buffer.write(b'out \xff\xfe end\n')
                sys.stdout.flush()
                sys.stderr.buffer.write(b'err \xc3\x28 end\n')
                sys.stderr.flush()
                os.write(1, b'raw \x80\n')
                return 'ok'
            "#),
        ]}),
    );
    let out = fx.run(&wf, &trigger(&fx), &[]);
    out.assert_code(0);
    let id = fx.only_execution_id();
    assert_eq!(fx.execution(&id).status, "success");
    let logs = fx.log_lines(&id);
    for want in [
        ("stdout", "out \u{fffd}\u{fffd} end"),
        ("stderr", "err \u{fffd}( end"),
        ("stdout", "raw \u{fffd}"),
    ] {
        assert!(
            logs.iter().any(|(s, l)| s == want.0 && l == want.1),
            "no {want:?} in {logs:?}"
        );
    }
    let shown = fx.flowrun(&["logs", &id]);
    shown.assert_code(0);
    assert!(shown.stdout.contains("out \u{fffd}\u{fffd} end"), "{shown}");
    fx.assert_clean(&id);
}

#[test]
fn max_memory_reports_memory_error_with_the_limit() {
    let fx = Fx::new();
    let wf = fx.workflow(
        "hog",
        &json!({ "id": "hog", "nodes": [
            { "id": "hog", "type": "code", "code": "block = bytearray(1 << 30)\nreturn len(block)" },
        ]}),
    );
    let out = fx.run(&wf, &json!({}), &["--max-memory-mb", "200"]);
    out.assert_code(1);
    let id = fx.only_execution_id();
    let e = fx.execution(&id);
    assert_eq!(e.status, "error", "{e:?}");
    let hog = fx.node(&id, "hog");
    assert_eq!(hog.status, "error");
    let err = hog.error.unwrap();
    assert_eq!(err["type"], "MemoryError", "{err}");
    let msg = err["message"].as_str().unwrap();
    assert!(
        msg.contains("200 MiB") && msg.contains("--max-memory-mb"),
        "the message does not explain the limit: {msg}"
    );
    assert!(out.stderr.contains("MemoryError"), "{out}");
    fx.assert_clean(&id);

    // Code that does not handle a failed allocation crashes instead: the error still points at
    // the limit.
    let crash = fx.workflow(
        "crash",
        &json!({ "id": "crash", "nodes": [
            { "id": "crash", "type": "code",
              "code": "import os, signal\nos.kill(os.getpid(), signal.SIGSEGV)" },
        ]}),
    );
    fx.run(&crash, &json!({}), &["--max-memory-mb", "200"])
        .assert_code(1);
    let id = fx.ids().pop().unwrap();
    let e = fx.execution(&id);
    assert_eq!(e.status, "error");
    assert_eq!(e.exit.as_deref(), Some("killed by SIGSEGV"));
    let msg = e.error_message();
    assert!(
        msg.contains("killed by SIGSEGV")
            && msg.contains("200 MiB")
            && msg.contains("--max-memory-mb"),
        "{msg}"
    );
    assert_eq!(fx.node(&id, "crash").status, "error");
    fx.assert_clean(&id);
}

// ---------------------------------------------------------------------------------------------
// Concurrency and temp files
// ---------------------------------------------------------------------------------------------

#[test]
fn eight_concurrent_runs_on_one_fresh_database() {
    let fx = Fx::new();
    let wf = fx.workflow(
        "concurrent",
        &json!({ "id": "concurrent", "nodes": [
            { "id": "a", "type": "code", "code": "print('a' * 100)\nreturn trigger['n']" },
            { "id": "b", "type": "code", "code": "log('b', nodes['a']['output'])\nreturn nodes['a']['output'] * 2" },
            { "id": "c", "type": "set", "fields": { "n": "{{ nodes.b.output }}" } },
        ]}),
    );
    assert!(!fx.db_path().exists());
    let runs: Vec<Running> = (0..8)
        .map(|n| fx.spawn_run(&wf, &json!({ "n": n }), &[]))
        .collect();
    let outs: Vec<Finished> = runs.into_iter().map(|r| r.wait(WATCHDOG)).collect();
    for out in &outs {
        out.assert_code(0);
        assert!(!out.stderr.to_lowercase().contains("locked"), "{out}");
    }
    let ids = fx.ids();
    assert_eq!(ids.len(), 8);
    let mut seen = Vec::new();
    for id in &ids {
        let e = fx.execution(id);
        assert_eq!(e.status, "success", "{e:?}");
        let nodes = fx.nodes(id);
        assert_eq!(
            nodes.iter().map(|n| n.node_id.as_str()).collect::<Vec<_>>(),
            ["a", "b", "c"]
        );
        assert!(nodes.iter().all(|n| n.status == "success"), "{nodes:?}");
        seen.push(e.output.unwrap()["n"].as_i64().unwrap());
        fx.assert_clean(id);
    }
    seen.sort();
    assert_eq!(seen, (0..8).map(|n| n * 2).collect::<Vec<_>>());
}

#[test]
fn scripts_are_private_and_tmpdir_stays_empty() {
    let fx = Fx::new();
    let ok = fx.workflow(
        "ok",
        &json!({ "id": "ok", "nodes": [{ "id": "one", "type": "code", "code": "return 1" }] }),
    );
    let bad = fx.workflow(
        "bad",
        &json!({ "id": "bad", "nodes": [{ "id": "boom", "type": "code", "code": "raise ValueError('boom')" }] }),
    );
    fx.run(&ok, &json!({}), &[]).assert_code(0);
    fx.assert_tmp_empty();
    fx.run(&bad, &json!({}), &[]).assert_code(1);
    fx.assert_tmp_empty();
    for id in fx.ids() {
        fx.assert_clean(&id);
    }

    let cache = fx.cache_dir();
    assert_eq!(mode(&cache), 0o700);
    let scripts = cache.join("scripts");
    assert_eq!(mode(&scripts), 0o700);
    let mut n = 0;
    for dir in [&cache, &scripts] {
        for entry in std::fs::read_dir(dir).unwrap() {
            let p = entry.unwrap().path();
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            assert!(!name.starts_with(".tmp"), "temp file left: {}", p.display());
            if p.is_file() {
                assert_eq!(mode(&p), 0o600, "{}", p.display());
                n += 1;
            }
        }
    }
    let py = std::fs::read_dir(&scripts)
        .unwrap()
        .filter(|e| e.as_ref().unwrap().path().extension() == Some("py".as_ref()))
        .count();
    assert_eq!(py, 2, "one cached script per workflow");
    assert!(n >= 2);
}
