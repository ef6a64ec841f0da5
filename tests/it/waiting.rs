//! A runner that waits for its child uses no CPU meanwhile. The case that matters: a child that
//! outlives its output streams. Every warm execution does for a moment (its end is reported once
//! its interpreter has been torn down, after its last event), and a workflow may do so for as
//! long as it likes by pointing its stdout and stderr elsewhere. A busy wait there takes a core
//! from the very teardown it waits for: on a 2-core machine a warm `flowrun test` case was 9%
//! slower for it. (A cold execution's streams stay open until its shepherd, which holds them,
//! has exited, so its runner learns of both together.) What the child printed before its
//! streams closed is in the store meanwhile, not held back until its exit.

use crate::support::serve::World;
use crate::support::wait_for;
use serde_json::json;
use std::path::Path;
use std::time::Duration;

/// Prints a line, points stdout and stderr at /dev/null (the pipes to the runner close: nothing
/// else of the execution holds them), says so in a file, then lives on for `hold` seconds.
fn outlive_streams(hold: f64) -> String {
    format!(
        r#"
import os, time
print('the last line before the streams close', flush=True)
null = os.open(os.devnull, os.O_WRONLY)
os.dup2(null, 1)
os.dup2(null, 2)
open(os.path.join(trigger['dir'], 'streams-closed'), 'w').close()
time.sleep({hold})
return 'done'
"#
    )
}

/// CPU time (user + system, all threads) that process `pid` has used so far.
fn cpu_time(pid: i32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("the runner is alive");
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
    // utime and stime: fields 14 and 15 of the line, 12 and 13 after the command.
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    // SAFETY: sysconf reads a constant of the system and touches no memory of ours.
    let per_sec = unsafe { nix::libc::sysconf(nix::libc::_SC_CLK_TCK) } as u64;
    Duration::from_millis(ticks * 1000 / per_sec)
}

/// The CPU the runner `pid` uses over `window` once the child has closed its streams (the file
/// in `dir` says so). Waiting, it uses next to none (a wake-up or two); busy, it would use a
/// share of a core for the whole window, however loaded the machine.
fn cpu_while_waiting(pid: i32, dir: &Path, window: Duration) -> Duration {
    wait_for("the child to close its streams", || {
        dir.join("streams-closed").exists().then_some(())
    });
    // Past the last frames of the streams and the runner's writing of them.
    std::thread::sleep(Duration::from_millis(200));
    let before = cpu_time(pid);
    std::thread::sleep(window);
    cpu_time(pid) - before
}

const WINDOW: Duration = Duration::from_millis(1500);
/// A tenth of the window: 150 ms of CPU, where a runner that waits uses a few milliseconds and
/// one that polls uses a share of a core for all of it (a quarter of a core, on a machine with
/// eight busy processes on two cores, is 375 ms).
const AT_MOST: Duration = Duration::from_millis(150);

#[test]
fn a_warm_runner_waits_without_spinning_while_its_child_outlives_its_streams() {
    let w = World::new();
    let dir = w.path("scratch");
    std::fs::create_dir_all(&dir).unwrap();
    w.save(
        "outlive.json",
        &json!({"id": "outlive", "nodes": [
            {"id": "hold", "type": "code", "code": outlive_streams(2.5)}
        ]}),
    );
    // (The tests' `serve` waits for its template to start: this execution starts warm.)
    let srv = w.serve(&[]);
    let id = srv.start(
        "/api/workflows/outlive/executions",
        &json!({"trigger": {"dir": dir.display().to_string()}}),
    );
    let used = cpu_while_waiting(srv.pid(), &dir, WINDOW);
    // What the child printed before its streams closed is recorded while it lives on, not
    // held back until its exit.
    let printed: i64 = rusqlite::Connection::open(w.db_path())
        .unwrap()
        .query_row(
            "SELECT count(*) FROM events WHERE execution_id = ?1 AND kind = 'log'
             AND data LIKE '%the last line before the streams close%'",
            [&id],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(
        srv.get(&format!("/api/executions/{id}")).body["status"],
        "running"
    );
    assert_eq!(
        printed, 1,
        "the line printed before the streams closed, in the store"
    );
    let end = srv.wait_final(&id);
    assert_eq!(end["start"], "warm", "{end:#}");
    assert!(
        used <= AT_MOST,
        "the server used {used:?} of CPU in {WINDOW:?} of waiting for {id}"
    );
}
