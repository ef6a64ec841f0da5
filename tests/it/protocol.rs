//! The record stays true whatever the child prints: forged events and results are refused, the
//! nonce is out of reach of other processes, deep values are accepted as deep as the runtime
//! makes them, huge forged frames keep the runner's memory bounded, and a store that cannot
//! write fails the run loudly.

use crate::support::faults::*;
use serde_json::json;
use std::os::unix::process::CommandExt;

/// Python for a node: `forge(line)` prints a protocol line with this execution's real nonce,
/// which code in the workflow's own process can always find.
const FORGER: &str = r#"
import __main__
def forge(rest):
    print(__main__._STATE.prefix.decode() + rest, flush=True)
"#;

fn forging_node(id: &str, body: &str) -> serde_json::Value {
    code_node(id, &format!("{FORGER}\n{}", dedent(body)))
}

#[test]
fn forged_events_never_make_a_failed_node_succeed_or_a_ghost_appear() {
    let fx = Fx::new();
    let wf = fx.workflow(
        "forge",
        &json!({ "id": "forge", "nodes": [
            forging_node("a", r#"
                forge('event {"event":"node_end","node":"ghost","status":"success","attempt":0}')
                forge('event {"event":"node_start","node":"b","attempt":1}')
                forge('event {"event":"node_end","node":"a","status":"success","attempt":1,"output":{"forged":true}}')
                raise ValueError('really failed')
            "#),
            { "id": "b", "type": "code", "code": "return 'b ran'" },
        ]}),
    );
    let out = fx.run(&wf, &trigger(&fx), &[]);
    out.assert_code(1);
    let id = fx.only_execution_id();
    let e = fx.execution(&id);
    assert_eq!(e.status, "error", "{e:?}");
    let nodes = fx.nodes(&id);
    assert!(nodes.iter().all(|n| n.node_id != "ghost"), "{nodes:?}");
    assert!(
        nodes.iter().all(|n| n.node_id != "b"),
        "b never ran: {nodes:?}"
    );
    let a = fx.node(&id, "a");
    assert_eq!(a.status, "error", "{a:?}");
    assert_eq!(a.output, None, "the forged output was kept: {a:?}");
    let logs = fx.log_lines(&id);
    for refused in [
        "not a node of this workflow",
        "node_start of 'b' while 1 node(s) run",
        "a second node_end of 'a'",
    ] {
        assert!(
            logs.iter().any(|(_, l)| l.contains(refused)),
            "no protocol error saying {refused:?}: {logs:?}"
        );
    }
}

#[test]
fn a_node_cannot_write_a_row_for_a_node_that_did_not_run_and_resume_runs_it() {
    let fx = Fx::new();
    let gate = fx.dir.path().join("gate");
    let wf = fx.workflow(
        "forge-unrun",
        &json!({ "id": "forge-unrun", "nodes": [
            // Item 0 writes rows for item 1 (reused) and for an item 7 of a list of two.
            json!({ "for_each": "{{ trigger.items }}" }).as_object().unwrap().clone().into_iter()
                .chain(forging_node("each", r#"
                    if item == 1:
                        forge('event {"event":"node_end","node":"each","status":"reused","attempt":0,"item":1,"output":"FORGED"}')
                        forge('event {"event":"node_end","node":"each","status":"skipped","attempt":0,"item":7}')
                    return item
                "#).as_object().unwrap().clone())
                .collect::<serde_json::Map<_, _>>(),
            forging_node("x", r#"
                for status in ("pinned", "reused", "skipped"):
                    forge('event {"event":"node_end","node":"z","status":"%s","attempt":0,"output":{"real":"FORGED"}}' % status)
                return {"x": 1}
            "#),
            code_node("y", &format!(
                "import os\nif not os.path.exists({:?}):\n    raise ValueError('closed')\nreturn 1",
                gate.display().to_string()
            )),
            { "id": "z", "type": "code", "code": "return {'real': 1}" },
        ]}),
    );
    let out = fx.run(&wf, &json!({ "items": [1, 2] }), &[]);
    out.assert_code(1);
    let id = fx.only_execution_id();
    let rows = fx.nodes(&id);
    assert!(
        rows.iter().all(|n| n.node_id != "z"),
        "z never ran: {rows:?}"
    );
    let items = fx.items(&id, "each");
    assert_eq!(items.len(), 2, "{items:?}");
    assert!(
        items.iter().all(|(_, r)| r.status == "success"),
        "{items:?}"
    );
    assert_eq!(items[1].1.output, Some(json!(2)), "{items:?}");
    let logs = fx.log_lines(&id);
    assert!(
        logs.iter()
            .filter(|(_, l)| l.contains("which the plan does not let end so without running"))
            .count()
            >= 4,
        "{logs:?}"
    );
    std::fs::write(&gate, "").unwrap();
    fx.flowrun(&["resume", &id]).assert_code(0);
    let resumed = fx.ids().pop().unwrap();
    let z = fx.node(&resumed, "z");
    assert_eq!(z.status, "success", "{z:?}");
    assert_eq!(z.output, Some(json!({ "real": 1 })), "{z:?}");
}

#[test]
fn a_forged_result_is_not_believed() {
    let fx = Fx::new();
    let wf = fx.workflow(
        "forged-result",
        &json!({ "id": "forged-result", "nodes": [
            forging_node("a", r#"
                forge('result-start')
                print('{"status":"success","output":{"forged":true},"error":null,"nodes":[]}')
                forge('result-end')
                raise ValueError('really failed')
            "#),
        ]}),
    );
    let out = fx.run(&wf, &trigger(&fx), &[]);
    out.assert_code(1);
    let e = fx.execution(&fx.only_execution_id());
    assert_eq!(e.status, "error", "{e:?}");
    assert_eq!(e.output, None, "{e:?}");
    assert!(e.error_message().contains("second result"), "{e:?}");
}

#[test]
fn no_other_process_can_read_the_nonce() {
    let fx = Fx::new();
    // A program started by a node reads its parent's and its own initial environment.
    let wf = fx.workflow(
        "nonce",
        &json!({ "id": "nonce", "nodes": [
            { "id": "look", "type": "command", "argv": ["sh", "-c",
              "tr '\\0' '\\n' < /proc/$PPID/environ; tr '\\0' '\\n' < /proc/self/environ"] },
        ]}),
    );
    let out = fx.run(&wf, &trigger(&fx), &[]);
    out.assert_code(0);
    let id = fx.only_execution_id();
    let seen = fx.node(&id, "look").output.expect("output")["stdout"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        seen.contains("FLOWRUN_EXECUTION_ID="),
        "read nothing: {seen}"
    );
    assert!(
        !seen.lines().any(|l| l.starts_with("FLOWRUN_NONCE=")),
        "the nonce is readable: {seen}"
    );
}

#[test]
fn deep_outputs_are_recorded_as_deep_as_the_runtime_makes_them() {
    let fx = Fx::new();
    let wf = fx.workflow(
        "deep",
        &json!({ "id": "deep", "nodes": [
            code_node("d300", "v = 1\nfor _ in range(300):\n    v = [v]\nreturn v"),
            // Deeper than the runner reads (420) yet shallow enough for Python's encoder: its
            // event was refused whole, the node never ended and the nodes after it were lost.
            code_node("d500", "v = 1\nfor _ in range(500):\n    v = [v]\nreturn v"),
            code_node("after", "return 'ran'"),
            code_node("d5000", "v = 1\nfor _ in range(5000):\n    v = {'k': v}\nreturn v"),
        ]}),
    );
    let out = fx.run(&wf, &trigger(&fx), &[]);
    out.assert_code(0);
    let id = fx.only_execution_id();
    assert_eq!(fx.execution(&id).status, "success");
    for n in fx.nodes(&id) {
        assert_eq!(n.status, "success", "{}: {:?}", n.node_id, n.error);
    }
    let mut v = &fx.node(&id, "d300").output.expect("d300 output");
    for _ in 0..300 {
        v = &v[0];
    }
    assert_eq!(*v, json!(1), "300 levels kept whole");
    // Deeper than the runtime allows: cut with a marker somewhere down, not dropped.
    let text = fx
        .node(&id, "d5000")
        .output
        .expect("d5000 output")
        .to_string();
    assert!(text.contains("too deep"), "no marker where it was cut");
    let text = fx
        .node(&id, "d500")
        .output
        .expect("d500 output")
        .to_string();
    assert!(text.contains("too deep"), "no marker where d500 was cut");
    assert_eq!(fx.node(&id, "after").output, Some(json!("ran")));
}

#[test]
fn huge_forged_frames_keep_the_runner_small() {
    let fx = Fx::new();
    // 40 protocol lines of 3.5 MiB each (under the 4 MiB frame limit, so each is parsed),
    // then one of 300 MiB (over it), as fast as the child can write them.
    let wf = fx.workflow(
        "huge-frames",
        &json!({ "id": "huge-frames", "nodes": [
            forging_node("a", r#"
                import sys
                big = 'x' * (3500 * 1024)
                for i in range(40):
                    forge('event {"event":"log","node":"a","message":"%s"}' % big)
                prefix = __main__._STATE.prefix
                sys.stdout.flush()
                os.write(1, prefix + b'event {"event":"log","message":"')
                chunk = b'y' * (1 << 20)
                for _ in range(300):
                    os.write(1, chunk)
                os.write(1, b'"}\n')
                return 'done'
            "#),
        ]}),
    );
    let out = fx.run(&wf, &trigger(&fx), &["--max-log-bytes", "1000000"]);
    out.assert_code(0);
    eprintln!(
        "runner peak RSS with huge forged frames: {} kB",
        out.peak_hwm_kb
    );
    assert!(out.peak_hwm_kb > 0, "RSS was never sampled");
    assert!(
        out.peak_hwm_kb < 40 * 1024,
        "runner peak RSS {} kB (target 40 MiB)",
        out.peak_hwm_kb
    );
    let id = fx.only_execution_id();
    assert!(
        fx.log_lines(&id)
            .iter()
            .any(|(_, l)| l.contains("exceeded the limit")),
        "the oversized line was not reported"
    );
}

#[test]
fn a_store_that_cannot_write_fails_the_run_loudly() {
    let fx = Fx::new();
    // 3,000 log lines of 1 KiB: far more than a database limited to 1 MiB can hold.
    let wf = fx.workflow(
        "full",
        &json!({ "id": "full", "nodes": [
            code_node("chatty", "for i in range(3000):\n    print(i, 'z' * 1000)\nreturn 'done'"),
        ]}),
    );
    // The database and its WAL may not grow past 1 MiB, as on a full disk.
    let mut cmd = fx.command();
    cmd.args(["run", wf.to_str().unwrap(), "--input"])
        .arg(trigger(&fx).to_string());
    // SAFETY: signal and setrlimit are async-signal-safe; nothing is allocated.
    unsafe {
        cmd.pre_exec(|| {
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            let lim = libc::rlimit {
                rlim_cur: 1 << 20,
                rlim_max: 1 << 20,
            };
            libc::setrlimit(libc::RLIMIT_FSIZE, &lim);
            Ok(())
        });
    }
    let out = Running::spawn(cmd).wait(WATCHDOG);
    assert_ne!(
        out.code(),
        Some(0),
        "a run that could not be recorded succeeded: {out}"
    );
    out.assert_code(3);
    assert!(
        out.stderr.contains("could not be recorded"),
        "the failure is not said: {out}"
    );
    // Whatever the database holds of it, it is not a success.
    if let Some(id) = fx.ids().last() {
        assert_ne!(fx.execution(id).status, "success");
    }
}
