//! Stopping, the queue, shutdown, and executions of `flowrun run` seen through the server.

use super::{check_stream, quick, record_statuses, slow, steps, wait_for_running};
use crate::support::serve::{Message, World};
use serde_json::{Value, json};

fn sleeping(rec: &Value) -> bool {
    rec["nodes"].as_array().is_some_and(|n| {
        n.iter()
            .any(|n| n["node_id"] == "sleep" && n["status"] == "running")
    })
}

#[test]
fn stopping_over_the_api_and_with_flowrun_stop() {
    let w = World::new();
    w.save("slow.json", &slow());
    let srv = w.serve(&["--kill-grace-ms", "500"]);

    // Through the API, with a stream open.
    let id = srv.start("/api/workflows/slow/executions", &json!({}));
    srv.wait_until(&id, "sleeping", sleeping);
    let mut sse = srv.events(&id, None);
    let r = srv.post(&format!("/api/executions/{id}/stop?wait=true"), &json!({}));
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["status"], "cancelled");
    assert_eq!(record_statuses(&r.body)["sleep"], "cancelled");
    let msgs = sse.read_to_end();
    let events = check_stream(&msgs, &id);
    assert_eq!(events.last().unwrap()["status"], "cancelled");
    // Stopping it again: it already ended.
    let r = srv.post(&format!("/api/executions/{id}/stop"), &json!({}));
    assert_eq!(r.status, 409, "{}", r.text);
    assert_eq!(r.body["error"], "already_ended");

    // From the CLI: `flowrun stop` asks through the store, the server stops it.
    let id2 = srv.start("/api/workflows/slow/executions", &json!({}));
    srv.wait_until(&id2, "sleeping", sleeping);
    let t = std::time::Instant::now();
    let out = w.cli_ok(&["stop", &id2]);
    assert!(out.contains("cancelled"), "{out}");
    assert!(t.elapsed() < std::time::Duration::from_secs(5));
    let rec = srv.wait_final(&id2);
    assert_eq!(rec["status"], "cancelled");
    assert_eq!(rec["error"]["type"], "Cancelled");

    // Without ?wait the answer is immediate.
    let id3 = srv.start("/api/workflows/slow/executions", &json!({}));
    srv.wait_until(&id3, "sleeping", sleeping);
    let r = srv.post(&format!("/api/executions/{id3}/stop"), &json!({}));
    assert_eq!(r.status, 202, "{}", r.text);
    assert_eq!(srv.wait_final(&id3)["status"], "cancelled");
}

#[test]
fn queue_runs_in_order_and_stopping_a_queued_execution_cancels_it() {
    let w = World::new();
    let mut first = slow();
    first["id"] = json!("first");
    first["nodes"][1]["ms"] = json!(1500);
    w.save("first.json", &first);
    w.save("quick.json", &quick());
    let srv = w.serve(&["--max-concurrent", "1"]);

    let a = srv.start("/api/workflows/first/executions", &json!({}));
    let r = srv.post(
        "/api/workflows/quick/executions",
        &json!({"trigger": {"n": 1}}),
    );
    assert_eq!(r.status, 202);
    assert_eq!(r.body["status"], "queued");
    let b = r.body["id"].as_str().unwrap().to_string();
    let c = srv.start(
        "/api/workflows/quick/executions",
        &json!({"trigger": {"n": 2}}),
    );
    let d = srv.start(
        "/api/workflows/quick/executions",
        &json!({"trigger": {"n": 3}}),
    );
    assert_eq!(
        srv.get(&format!("/api/executions/{b}")).body["status"],
        "queued"
    );
    let history: Value =
        serde_json::from_str(&w.cli_ok(&["history", "--status", "queued", "--json"])).unwrap();
    assert_eq!(history.as_array().unwrap().len(), 3, "{history}");
    let info = srv.get("/api").body;
    assert_eq!(info["running"], 1);
    assert_eq!(info["queued"], 3);

    // Stop c over the API and d with the CLI while they wait: both cancelled, never run.
    let mut c_events = srv.events(&c, None);
    let r = srv.post(&format!("/api/executions/{c}/stop"), &json!({}));
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["status"], "cancelled");
    assert_eq!(r.body["nodes"], json!([]));
    let msgs = c_events.read_to_end();
    let events = check_stream(&msgs, &c);
    assert_eq!(events.len(), 2, "{events:?}");
    assert_eq!(events[1]["status"], "cancelled");
    let out = w.cli_ok(&["stop", &d]);
    assert!(out.contains("cancelled"), "{out}");
    assert_eq!(
        srv.get(&format!("/api/executions/{d}")).body["status"],
        "cancelled"
    );

    // b runs once a has ended.
    let b_msgs = srv.events(&b, None).read_to_end();
    let b_events = check_stream(&b_msgs, &b);
    let a_rec = srv.wait_final(&a);
    let b_rec = srv.wait_final(&b);
    assert_eq!(a_rec["status"], "success");
    assert_eq!(b_rec["status"], "success");
    assert_eq!(b_rec["output"], json!({"n": 1}));
    let b_started = b_events[0]["ts"].as_i64().unwrap();
    assert!(
        b_started >= a_rec["finished_at"].as_i64().unwrap(),
        "b started at {b_started}, before a ended: {a_rec}"
    );
    // Never started, so no duration: the time they waited in the queue is none of theirs (it
    // was recorded as theirs, and the stream's end said 0 ms).
    assert_eq!(events[1].get("duration_ms"), None, "{:?}", events[1]);
    let history = w.cli_ok(&["history", "--status", "cancelled"]);
    for id in [&c, &d] {
        let rec = srv.get(&format!("/api/executions/{id}")).body;
        assert_eq!(rec["status"], "cancelled");
        assert_eq!(rec["nodes"], json!([]));
        assert_eq!(rec["duration_ms"], Value::Null, "{rec}");
        let row: Vec<&str> = history
            .lines()
            .find(|l| l.starts_with(id.as_str()))
            .unwrap_or_else(|| panic!("no {id} in\n{history}"))
            .split_whitespace()
            .collect();
        assert_eq!(row[2..4], ["cancelled", "-"], "{history}");
    }
}

#[test]
fn shutdown_cancels_running_and_queued_executions_and_exits_0() {
    let w = World::new();
    w.save("slow.json", &slow());
    let mut srv = w.serve(&["--max-concurrent", "1", "--kill-grace-ms", "500"]);
    let a = srv.start("/api/workflows/slow/executions", &json!({}));
    srv.wait_until(&a, "sleeping", sleeping);
    let r = srv.post("/api/workflows/slow/executions", &json!({}));
    assert_eq!(r.body["status"], "queued");
    let b = r.body["id"].as_str().unwrap().to_string();
    let mut sse = srv.events(&a, None);

    let t = std::time::Instant::now();
    assert_eq!(srv.terminate(), Some(0), "{}", srv.stderr());
    assert!(t.elapsed() < std::time::Duration::from_secs(10));
    // The open stream got the end of the execution.
    let events = check_stream(&sse.read_to_end(), &a);
    assert_eq!(events.last().unwrap()["status"], "cancelled");
    let a_rec = w.show_json(&a);
    assert_eq!(a_rec["status"], "cancelled", "{a_rec}");
    let why = a_rec["error"]["message"].as_str().unwrap();
    assert!(
        why.starts_with("stopped: the server shut down after"),
        "{a_rec}"
    );
    assert_eq!(record_statuses(&a_rec)["sleep"], "cancelled");
    let b_rec = w.show_json(&b);
    assert_eq!(b_rec["status"], "cancelled", "{b_rec}");
    assert_eq!(
        b_rec["error"]["message"], "the server shut down before it started",
        "{b_rec}"
    );
    assert_eq!(b_rec["nodes"], json!([]));
    // The default token file of a port picked at random (`--port 0`) goes with the server: no
    // later start can use it (a fixed port keeps it, see serve_security.rs).
    assert!(!srv.token_file.exists());
}

/// SIGHUP (the terminal the server runs in closed) shuts it down as SIGTERM does: what runs is
/// stopped and recorded, and it exits 0 taking its token file along — also when the hangup
/// comes twice (the kernel's, then the shell's), which is not a second Ctrl-C.
#[test]
fn a_closed_terminal_shuts_the_server_down_cleanly() {
    let w = World::new();
    // A node that ignores SIGTERM: the shutdown takes the grace period, and the second hangup
    // comes during it.
    let stubborn = json!({"id": "slow", "nodes": [{"id": "sleep", "type": "code",
        "code": "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\ntime.sleep(60)\nreturn 1"}]});
    w.save("slow.json", &stubborn);
    let mut srv = w.serve(&["--kill-grace-ms", "1500"]);
    let a = srv.start("/api/workflows/slow/executions", &json!({}));
    srv.wait_until(&a, "sleeping", sleeping);
    // SAFETY: signalling our own child by pid.
    unsafe {
        libc::kill(srv.pid(), libc::SIGHUP);
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(srv.end_with(libc::SIGHUP), Some(0), "{}", srv.stderr());
    let rec = w.show_json(&a);
    assert_eq!(rec["status"], "cancelled", "{rec}");
    assert!(!srv.token_file.exists());
}

#[test]
fn executions_of_flowrun_run_stream_and_stop_through_the_server() {
    let w = World::new();
    let steps_file = w.save("steps.json", &steps());
    let slow_file = w.save("slow.json", &slow());
    let srv = w.serve(&[]);

    // `flowrun run --events jsonl` in another process; the server follows it through the store.
    let run = w
        .command()
        .args(["run", steps_file.to_str().unwrap(), "--events", "jsonl"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let id = wait_for_running(&srv, "steps");
    let msgs = srv.events(&id, None).read_to_end();
    check_stream(&msgs, &id);
    let out = run.wait_with_output().unwrap();
    assert!(out.status.success());
    // The very same events the CLI printed.
    let cli: Vec<Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let api: Vec<Value> = msgs[..msgs.len() - 1].iter().map(Message::json).collect();
    assert_eq!(api, cli);

    // Stopping a `flowrun run` execution over the API: its runner stops it.
    let mut run = w
        .command()
        .args(["run", slow_file.to_str().unwrap()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let id = wait_for_running(&srv, "slow");
    srv.wait_until(&id, "sleeping", sleeping);
    let r = srv.post(&format!("/api/executions/{id}/stop?wait=true"), &json!({}));
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["status"], "cancelled");
    assert_eq!(run.wait().unwrap().code(), Some(130));
}
