//! A warm template's spare (`_make_spare` in `runtime/warm/spares.py`): the next execution's
//! shepherd and interpreter, made when an execution ends and handed to the runner, serve the
//! next request of a script they hold; one that cannot is let go, and whatever way a template
//! goes, its spares go too and are reaped — `flowrun serve` gathers no process and no zombie.
//! Nothing here is timed.

use crate::support::serve::Server;
use crate::support::serve::World;
use crate::support::*;
use crate::warm::{code_workflow, run_wait, templates};
use serde_json::json;

/// The children of a process (each thread's, as /proc lists them).
fn children(pid: i32) -> Vec<i32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("children")).ok())
        .flat_map(|k| {
            k.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect::<Vec<i32>>()
        })
        .collect()
}

/// The server's spares once its template has made both and handed them over: its children
/// while nothing runs (a spare is an execution's interpreter, forked ahead and waiting for its
/// request), the template back in its loop (`poll`): a spare is visible as a child as soon as it
/// is forked, before the template has sent it to the runner, and a template killed in between
/// leaves a spare the runner never heard of. (Which one the next request gets is the runner's
/// business: the oldest, which pids do not tell once they wrap.)
pub(crate) fn ready(srv: &Server) -> Vec<i32> {
    wait_for("two spares", || {
        let t = templates(srv.pid());
        let kids = children(*t.first()?);
        let waiting = std::fs::read_to_string(format!("/proc/{}/wchan", t[0]))
            .is_ok_and(|w| w.contains("poll"));
        (t.len() == 1 && kids.len() == 2 && waiting).then_some(kids)
    })
}

/// The spare among `ready` that an execution started from.
#[track_caller]
fn taken(w: &World, ready: &[i32], r: &serde_json::Value) -> i32 {
    let pid = recorded_pid(w, r["id"].as_str().unwrap());
    assert!(
        ready.contains(&pid),
        "interpreter {pid} is none of the spares {ready:?}"
    );
    pid
}

/// The interpreter pid the store recorded for an execution.
fn recorded_pid(w: &World, id: &str) -> i32 {
    w.db()
        .query_row("SELECT pid FROM executions WHERE id = ?1", [id], |r| {
            r.get(0)
        })
        .unwrap()
}

/// Each spare reaped.
fn assert_all_reaped(spares: &[i32]) {
    for &s in spares {
        assert_reaped(s);
    }
}

/// Gone from /proc: ended and reaped (a zombie would still be listed).
fn assert_reaped(pid: i32) {
    wait_for(&format!("process {pid} to be reaped"), || {
        (!std::path::Path::new(&format!("/proc/{pid}")).exists()).then_some(())
    });
}

#[test]
fn the_next_execution_starts_from_the_spare_made_when_one_ended() {
    let w = World::new();
    w.save("quick.json", &code_workflow("quick", "return 42"));
    let srv = w.serve(&[]);
    let first = run_wait(&srv, "quick");
    assert_eq!(first["start"], "warm");
    for _ in 0..3 {
        let spares = ready(&srv);
        let r = run_wait(&srv, "quick");
        assert_eq!(r["status"], "success", "{r:#}");
        assert_eq!(r["output"], 42);
        assert_eq!(r["start"], "warm");
        // The execution's interpreter is a spare, which ended and was reaped.
        assert_reaped(taken(&w, &spares, &r));
    }
}

#[test]
fn a_spare_serves_only_the_scripts_its_template_had_prepared() {
    let w = World::new();
    w.save("quick.json", &code_workflow("quick", "return 42"));
    w.save("other.json", &code_workflow("other", "return 'other'"));
    let srv = w.serve(&[]);
    assert_eq!(run_wait(&srv, "quick")["start"], "warm");
    let spares = ready(&srv);
    // A script the spares' interpreters do not hold: they are let go, and the execution is
    // forked by the template, with the new script prepared.
    let r = run_wait(&srv, "other");
    assert_eq!(r["status"], "success", "{r:#}");
    assert_eq!(r["output"], "other");
    assert_eq!(r["start"], "warm");
    let pid = recorded_pid(&w, r["id"].as_str().unwrap());
    assert!(!spares.contains(&pid), "{pid} {spares:?}");
    assert_all_reaped(&spares);
    // The spares made after it hold both.
    let next = ready(&srv);
    taken(&w, &next, &run_wait(&srv, "other"));
    let next = ready(&srv);
    taken(&w, &next, &run_wait(&srv, "quick"));
}

#[test]
fn a_retired_or_killed_template_takes_its_spare_with_it() {
    let w = World::new();
    w.save("quick.json", &code_workflow("quick", "return 42"));
    let srv = w.serve(&[]);
    assert_eq!(run_wait(&srv, "quick")["start"], "warm");
    let template = templates(srv.pid());
    assert_eq!(template.len(), 1);
    let spares = ready(&srv);
    // Its template killed: the next execution finds it gone, a new one serves it, and the old
    // one's spares, not used, are let go and reaped.
    faults::signal(template[0], nix::sys::signal::Signal::SIGKILL);
    // Dead (a zombie until the server reaps it): a request that finds it half-dead goes cold.
    wait_for("the killed template to be dead", || {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", template[0]));
        stat.map_or(true, |s| {
            s.rsplit(')')
                .next()
                .is_some_and(|r| r.trim_start().starts_with('Z'))
        })
        .then_some(())
    });
    let r = run_wait(&srv, "quick");
    assert_eq!(r["status"], "success", "{r:#}");
    assert_eq!(r["start"], "warm");
    assert!(!spares.contains(&recorded_pid(&w, r["id"].as_str().unwrap())));
    assert_all_reaped(&spares);
    wait_for("no zombie left under the server", || {
        faults::zombie_children(srv.pid()).is_empty().then_some(())
    });

    // Stuck (SIGSTOP): a spare it made before serves the next execution (it needs nothing of
    // the template to start). Its end goes unreported: the server kills the stuck template and
    // waits for the execution itself. The next one is served by a new template, and everything
    // of the old one is reaped.
    let spares = ready(&srv);
    let stuck = templates(srv.pid());
    faults::signal(stuck[0], nix::sys::signal::Signal::SIGSTOP);
    let r = run_wait(&srv, "quick");
    assert_eq!(r["status"], "success", "{r:#}");
    assert_eq!(r["start"], "warm");
    taken(&w, &spares, &r);
    let r = run_wait(&srv, "quick");
    assert_eq!(r["status"], "success", "{r:#}");
    assert_eq!(r["start"], "warm");
    assert!(!spares.contains(&recorded_pid(&w, r["id"].as_str().unwrap())));
    assert_all_reaped(&spares);
    wait_for("the stuck template to be gone", || {
        (!templates(srv.pid()).contains(&stuck[0])).then_some(())
    });
    wait_for("no zombie left under the server", || {
        faults::zombie_children(srv.pid()).is_empty().then_some(())
    });
}

/// A template killed while it makes its spares — the second forked, maybe not yet handed over:
/// then only the template knew of it — leaves nothing under the server once the next request
/// has found it dead. (The moment is not forced: killed as soon as two children show, the
/// template had not sent the second in 6 of 10 runs of this test before the fix.)
#[test]
fn a_template_killed_while_it_makes_a_spare_leaves_no_zombie() {
    let w = World::new();
    w.save("quick.json", &code_workflow("quick", "return 42"));
    let srv = w.serve(&[]);
    for _ in 0..8 {
        // A warm execution's end is when its template makes spares (the one after a killed
        // template starts cold, a new template meanwhile).
        wait_for("a warm execution", || {
            (run_wait(&srv, "quick")["start"] == "warm").then_some(())
        });
        // Looked for without a pause between looks: the second spare is sent moments after
        // it is forked.
        let template = templates(srv.pid())[0];
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while children(template).len() < 2 {
            assert!(std::time::Instant::now() < deadline, "no second spare");
        }
        faults::signal(template, nix::sys::signal::Signal::SIGKILL);
        let r = run_wait(&srv, "quick");
        assert_eq!(r["status"], "success", "{r:#}");
        wait_for("no zombie left under the server", || {
            faults::zombie_children(srv.pid()).is_empty().then_some(())
        });
    }
}

/// A template killed while nothing runs is reaped and its spares let go at once, not when the
/// next request comes: no zombie waits under the server meanwhile.
#[test]
fn a_template_killed_while_idle_is_reaped_without_waiting_for_a_request() {
    let w = World::new();
    w.save("quick.json", &code_workflow("quick", "return 42"));
    let srv = w.serve(&[]);
    assert_eq!(run_wait(&srv, "quick")["start"], "warm");
    let spares = ready(&srv);
    let template = templates(srv.pid())[0];
    faults::signal(template, nix::sys::signal::Signal::SIGKILL);
    assert_reaped(template);
    assert_all_reaped(&spares);
    wait_for("no zombie left under the server", || {
        faults::zombie_children(srv.pid()).is_empty().then_some(())
    });
    // And the next execution is served as ever.
    assert_eq!(run_wait(&srv, "quick")["status"], "success");
}

#[test]
fn a_stop_right_after_a_spare_takes_its_execution_ends_it() {
    let w = World::new();
    w.save(
        "sleeper.json",
        &code_workflow("sleeper", "import time\ntime.sleep(60)"),
    );
    let srv = w.serve(&[]);
    let stop = |id: &str| {
        let r = srv.post(&format!("/api/executions/{id}/stop?wait=true"), &json!({}));
        assert_eq!(r.status, 200, "{}", r.text);
        let end = srv.wait_final(id);
        assert_eq!(end["status"], "cancelled", "{end:#}");
    };
    // Once, so that the template has the script prepared when it makes the spares below.
    stop(&srv.start("/api/workflows/sleeper/executions", &json!({"trigger": {}})));
    for _ in 0..3 {
        let spares = ready(&srv);
        let id = srv.start("/api/workflows/sleeper/executions", &json!({"trigger": {}}));
        stop(&id);
        assert_reaped(taken(&w, &spares, &json!({ "id": id })));
    }
}

#[test]
fn a_compile_warning_is_logged_warm_as_cold() {
    // A SyntaxWarning goes to the stderr of whoever compiles the code: the template must not
    // swallow it by compiling ahead of the execution.
    let w = World::new();
    let def = w.save(
        "warns.json",
        &code_workflow("warns", "x = 1\nreturn x is 1"),
    );
    let srv = w.serve(&[]);
    let log_bytes = |db: &rusqlite::Connection, id: &str| -> i64 {
        db.query_row(
            "SELECT log_bytes FROM executions WHERE id = ?1",
            [id],
            |r| r.get(0),
        )
        .unwrap()
    };
    let first = run_wait(&srv, "warns");
    let spares = ready(&srv);
    let second = run_wait(&srv, "warns");
    taken(&w, &spares, &second);
    let cold = Env::new();
    let run = cold.run(&def, "{}", &["--json"]);
    assert_success(&run, "flowrun run warns");
    let cold_run: serde_json::Value = serde_json::from_slice(&run.stdout).unwrap();
    let cold_bytes = log_bytes(&cold.db(), cold_run["id"].as_str().unwrap());
    assert!(cold_bytes > 0, "the warning is logged cold");
    for r in [&first, &second] {
        assert_eq!(r["start"], "warm");
        assert_eq!(
            log_bytes(&w.db(), r["id"].as_str().unwrap()),
            cold_bytes,
            "{r:#}"
        );
    }
}

#[test]
fn a_large_request_in_any_script_is_given_to_a_spare_as_it_came() {
    // 40,000 CJK characters in a bound connection (an environment string may not pass 128 KiB):
    // 120 KB of UTF-8 in the environment, which travels on the execution's stdin (not in the
    // request, see warm_memory.rs), more than a pipe holds until it is made larger.
    let w = World::new();
    w.save(
        "big.json",
        &json!({
            "id": "big",
            "connections": { "big": { "env": "BIG" } },
            "nodes": [{ "id": "probe", "type": "code", "connections": ["big"],
                        "code": "import os\nreturn len(os.environ['BIG'])" }]
        }),
    );
    let value = "漢".repeat(40_000);
    let srv = w.serve_with(&[], &[("BIG", value.as_str())]);
    assert_eq!(run_wait(&srv, "big")["output"], 40_000);
    let spares = ready(&srv);
    let r = run_wait(&srv, "big");
    assert_eq!(r["status"], "success", "{r:#}");
    assert_eq!(r["output"], 40_000);
    taken(&w, &spares, &r);
}

/// `Private_Dirty` of a process: the pages it has its own copy of, in KiB.
fn private_dirty_kib(pid: i32) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap();
    let line = text
        .lines()
        .find(|l| l.starts_with("Private_Dirty:"))
        .unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// A server that has run `quick` a few times, warm, and its two spares.
fn after_a_few(w: &World, env: &[(&str, &str)]) -> (Server, Vec<i32>) {
    let srv = w.serve_with(&[], env);
    for _ in 0..3 {
        let r = run_wait(&srv, "quick");
        assert_eq!(r["status"], "success", "{r:#}");
        assert_eq!(r["start"], "warm", "{r:#}");
    }
    let spares = ready(&srv);
    (srv, spares)
}

#[test]
fn a_spare_copies_ahead_the_pages_an_execution_writes() {
    let w = World::new();
    w.save("quick.json", &code_workflow("quick", "return 42"));
    // Without a temporary directory to learn through, warm starts work as before, and a
    // spare's interpreter owns only the few pages its own set-up wrote.
    let missing = w.path("no-such-dir");
    let (_srv, spares) = after_a_few(&w, &[("TMPDIR", missing.to_str().unwrap())]);
    let unlearned: Vec<u64> = spares.iter().map(|&i| private_dirty_kib(i)).collect();
    let most = *unlearned.iter().max().unwrap();
    // An execution learns which pages of its template it writes, and the spares made after it
    // write them while they wait (they may still be at it when they are seen), so that the
    // next execution takes no copy-on-write fault there.
    let (_srv, spares) = after_a_few(&w, &[]);
    wait_for(
        &format!("the spares to own 256 KiB more than without learning ({unlearned:?} KiB)"),
        || {
            let learned: Vec<u64> = spares.iter().map(|&i| private_dirty_kib(i)).collect();
            learned.iter().all(|&kib| kib >= most + 256).then_some(())
        },
    );
}
