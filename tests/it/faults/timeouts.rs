//! Timeouts (execution, node, SIGTERM ignored) and grandchildren that outlive their node.

use super::{SLEEP_FOREVER, now_secs};
use crate::support::faults::*;
use serde_json::json;
use std::time::Duration;

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
