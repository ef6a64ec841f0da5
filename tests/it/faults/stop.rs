//! Stop requests from other processes, stale rows with reused pids, Ctrl-C/SIGTERM to the runner.

use super::{SLEEP_FOREVER, stop_workflow};
use crate::support::faults::*;
use nix::sys::signal::Signal;
use serde_json::json;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::time::Duration;

// ---------------------------------------------------------------------------------------------
// Stop requests
// ---------------------------------------------------------------------------------------------

/// Starts a run of `wf`, waits until `sleeper` runs with `n_pids` pids written, stops it with
/// `flowrun stop <id_arg(id)>` and checks everything that must hold afterwards.
fn stop_and_check(fx: &Fx, wf: &Path, extra: &[&str], n_pids: usize, id_arg: fn(&str) -> String) {
    let mut args = vec!["--timeout-ms", "30000"];
    args.extend_from_slice(extra);
    let mut run = fx.spawn_run(wf, &trigger(fx), &args);
    let row = fx.wait_running(Some("sleeper"), &mut run);
    wait_pids(&fx.path("pids"), n_pids);
    assert!(alive(row.pid.unwrap()));

    // Without an id: a usage error that lists what could be stopped, stopping nothing.
    let which = fx.flowrun(&["stop"]);
    which.assert_code(2);
    assert!(
        which
            .stderr
            .contains("say which execution to stop: flowrun stop ID")
            && which
                .stderr
                .contains(&format!("  {}  stoppable  running  started ", row.id)),
        "{which}"
    );
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

/// [`stop_workflow`] whose sleeper and its grandchild ignore SIGTERM: they end only when the
/// grace period is over.
fn stubborn_workflow(fx: &Fx) -> std::path::PathBuf {
    stop_workflow(
        fx,
        r#"
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        note(os.getpid())
        grandchild('stubborn', ignore_term=True)
        while True:
            time.sleep(1)
        "#,
    )
}

#[test]
fn stop_by_id_prefix_also_kills_what_ignores_sigterm() {
    let fx = Fx::new();
    let wf = stubborn_workflow(&fx);
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
    // must stop the group itself. SIGTERM (a service manager, `kill`) does the same, and SIGHUP
    // (the terminal closed, an ssh session dropped).
    for sig in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
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
        let expected = match sig {
            Signal::SIGINT => "stopped by Ctrl-C",
            Signal::SIGTERM => "stopped: flowrun received SIGTERM",
            _ => "stopped: flowrun's terminal closed (SIGHUP)",
        };
        assert!(message.starts_with(expected), "{sig}: {message}");
        // It names the node it was stopped in (where a hung run hung), as `history` shows.
        assert_eq!(e.error.as_ref().unwrap()["node"], "sleeper", "{sig}: {e:?}");
        let history = fx.flowrun(&["history", "-n", "1"]);
        assert!(
            history.stdout.contains("Cancelled in node 'sleeper'"),
            "{sig}: {history}"
        );
        // The display said it was stopping, and why.
        assert!(out.stderr.contains("stopping ("), "{sig}: {out}");
        assert_eq!(fx.node(&row.id, "sleeper").status, "cancelled", "{sig}");
        assert_pids_gone(&p, row.pgid.unwrap());
        fx.assert_clean(&row.id);
    }
}

/// Nodes that ignore SIGTERM have the grace period to end once a stop begins — unless the stop
/// is asked again: a second Ctrl-C (or SIGTERM) ends them at once. The display says both; and
/// `flowrun stop` from another terminal says what it waits for when it takes a while.
#[test]
fn a_second_signal_ends_the_grace_period_and_the_wait_is_announced() {
    let fx = Fx::new();
    let wf = stubborn_workflow(&fx);
    let grace = ["--timeout-ms", "120000", "--kill-grace-ms", "60000"];
    for sig in [Signal::SIGINT, Signal::SIGTERM] {
        let _ = std::fs::remove_file(fx.path("pids"));
        let mut run = fx.spawn_run(&wf, &trigger(&fx), &grace);
        let row = fx.wait_running(Some("sleeper"), &mut run);
        let p = wait_pids(&fx.path("pids"), 2);
        signal(run.pid(), sig);
        // The first signal has been taken once its execution's nodes are told to stop: the
        // display says so (the record's stop comes with the end).
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while !run.stderr_so_far().contains("stopping (") {
            assert!(
                std::time::Instant::now() < deadline,
                "{sig}: no stopping line: {}",
                run.stderr_so_far()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let begun = std::time::Instant::now();
        signal(run.pid(), sig);
        // Well inside the minute of grace: the second signal ended it.
        let out = run.wait(Duration::from_secs(30));
        assert!(begun.elapsed() < Duration::from_secs(30), "{sig}");
        out.assert_code(130);
        let again = if sig == Signal::SIGINT {
            "stopping (Ctrl-C): the running nodes have 1 m 00 s to end; Ctrl-C again ends them now"
        } else {
            "stopping (SIGTERM): the running nodes have 1 m 00 s to end; a second SIGTERM ends them now"
        };
        assert!(out.stderr.contains(again), "{sig}: {out}");
        assert_eq!(fx.execution(&row.id).status, "cancelled", "{sig}");
        assert_pids_gone(&p, row.pgid.unwrap());
        fx.assert_clean(&row.id);
    }

    // From another terminal: a stop that takes a while says what it waits for.
    let _ = std::fs::remove_file(fx.path("pids"));
    let mut run = fx.spawn_run(&wf, &trigger(&fx), &["--kill-grace-ms", "1500"]);
    let row = fx.wait_running(Some("sleeper"), &mut run);
    let p = wait_pids(&fx.path("pids"), 2);
    let stop = fx.flowrun(&["stop", &row.id]);
    stop.assert_code(0);
    assert!(
        stop.stderr.contains(&format!(
            "stopping execution {}: waiting for its runner",
            row.id
        )),
        "{stop}"
    );
    run.wait(Duration::from_secs(20)).assert_code(130);
    assert_pids_gone(&p, row.pgid.unwrap());
    fx.assert_clean(&row.id);
}

/// A runner frozen (Ctrl-Z) while `flowrun stop` ends its execution for it finds, once
/// continued, its child killed by a signal it did not send: what it shows is the stop that
/// was asked (as recorded), not a crash of the script that the record contradicts.
#[test]
fn a_frozen_runner_continued_after_a_stop_shows_the_stop_not_a_crash() {
    let fx = Fx::new();
    let wf = stop_workflow(&fx, SLEEP_FOREVER);
    let mut run = fx.spawn_run(&wf, &trigger(&fx), &["--timeout-ms", "30000"]);
    let row = fx.wait_running(Some("sleeper"), &mut run);
    let p = wait_pids(&fx.path("pids"), 2);
    signal(run.pid(), Signal::SIGSTOP);
    let stop = fx.flowrun(&["stop", &row.id]);
    stop.assert_code(0);
    signal(run.pid(), Signal::SIGCONT);
    let out = run.wait(Duration::from_secs(20));
    out.assert_code(130);
    assert_eq!(fx.execution(&row.id).status, "cancelled");
    for crash in ["ProtocolError", "ProcessExited", "error in "] {
        assert!(!out.stderr.contains(crash), "{crash}: {out}");
    }
    assert!(out.stderr.contains("cancelled in "), "{out}");
    assert_pids_gone(&p, row.pgid.unwrap());
    fx.assert_clean(&row.id);
}

/// A closing terminal sends SIGHUP twice (the kernel, then the shell to its jobs): the second
/// does not cut the nodes' grace period short, as a second Ctrl-C does. And under `nohup`
/// (SIGHUP ignored as flowrun starts) a hangup stops nothing.
#[test]
fn sighup_twice_keeps_the_grace_period_and_nohup_is_kept() {
    let fx = Fx::new();
    let wf = stubborn_workflow(&fx);
    let grace = ["--timeout-ms", "60000", "--kill-grace-ms", "1500"];
    let mut run = fx.spawn_run(&wf, &trigger(&fx), &grace);
    let row = fx.wait_running(Some("sleeper"), &mut run);
    let p = wait_pids(&fx.path("pids"), 2);
    signal(run.pid(), Signal::SIGHUP);
    let hung_up = std::time::Instant::now();
    std::thread::sleep(Duration::from_millis(100));
    signal(run.pid(), Signal::SIGHUP);
    let out = run.wait(Duration::from_secs(20));
    // Not before the grace period was over: the second SIGHUP asked for nothing more.
    assert!(hung_up.elapsed() >= Duration::from_millis(1400), "{out}");
    out.assert_code(130);
    assert_eq!(fx.execution(&row.id).status, "cancelled");
    assert_pids_gone(&p, row.pgid.unwrap());
    fx.assert_clean(&row.id);

    // `nohup flowrun run …`: the hangup is ignored, as the user asked.
    let _ = std::fs::remove_file(fx.path("pids"));
    let mut c = fx.command();
    c.args([
        "run",
        wf.to_str().unwrap(),
        "--input",
        &trigger(&fx).to_string(),
    ]);
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        c.pre_exec(|| {
            libc::signal(libc::SIGHUP, libc::SIG_IGN);
            Ok(())
        });
    }
    let mut run = Running::spawn(c);
    let row = fx.wait_running(Some("sleeper"), &mut run);
    let p = wait_pids(&fx.path("pids"), 2);
    signal(run.pid(), Signal::SIGHUP);
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        run.child.try_wait().unwrap().is_none(),
        "a hangup under nohup ended flowrun"
    );
    assert_eq!(fx.execution(&row.id).status, "running");
    signal(run.pid(), Signal::SIGINT);
    signal(run.pid(), Signal::SIGINT);
    run.wait(Duration::from_secs(20)).assert_code(130);
    assert_pids_gone(&p, row.pgid.unwrap());
    fx.assert_clean(&row.id);
}

/// One stop signals a whole tree: a parent's stop reaches a sub-workflow's runner and that
/// runner's child alike, and on a busy machine the child's death can be seen before the stop
/// is. Here the interpreter dies by SIGTERM and its runner gets the stop's SIGTERM the moment
/// after: the execution is that stop (`cancelled`), not a crash of the script (it was `error`,
/// killed by SIGTERM).
const DIES_BY_SIGTERM: &str = r#"
import signal
note(os.getpid())
wait_file(trigger['dir'] + '/go')
os.kill(os.getpid(), signal.SIGTERM)
time.sleep(30)
"#;

#[test]
fn a_stop_that_reaches_the_child_before_the_runner_is_still_a_stop() {
    let fx = Fx::new();
    let wf = stop_workflow(&fx, DIES_BY_SIGTERM);
    let go = fx.path("scratch").join("go");
    for round in 0..3 {
        let _ = std::fs::remove_file(fx.path("pids"));
        let _ = std::fs::remove_file(&go);
        let run = fx.spawn_run(&wf, &trigger(&fx), &["--timeout-ms", "30000"]);
        let interpreter = wait_pids(&fx.path("pids"), 1)[0];
        std::fs::write(&go, "").unwrap();
        while alive(interpreter) {
            std::thread::sleep(Duration::from_micros(200));
        }
        signal(run.pid(), Signal::SIGTERM);
        let out = run.wait(Duration::from_secs(20));
        let id = fx.execution_ids().last().unwrap().clone();
        let e = fx.execution(&id);
        assert_eq!(e.status, "cancelled", "round {round}: {e:?}");
        let message = e.error.as_ref().unwrap()["message"].as_str().unwrap_or("");
        assert!(
            message.starts_with("stopped: flowrun received SIGTERM"),
            "round {round}: {message}"
        );
        out.assert_code(130);
        fx.assert_clean(&id);
    }
}
