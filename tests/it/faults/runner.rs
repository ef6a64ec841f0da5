//! The runner itself: SIGKILLed, the lifeline across exec, concurrent runners, private scripts.

use super::stop_workflow;
use crate::support::faults::*;
use crate::support::mode;
use nix::sys::signal::Signal;
use serde_json::json;
use std::os::unix::process::ExitStatusExt;
use std::time::Duration;

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
    // When the runner died is not recorded: no duration, rather than the time until the next
    // command found it (which could be days later); the node that ran keeps its own.
    assert_eq!(e.duration_ms, None, "{e:?}");
    assert!(e.finished_at.is_some(), "{e:?}");
    assert_eq!(fx.node(&row.id, "sleeper").duration_ms, None);
    // Nor has the stream what the row does not: the synthetic `node_end` and `execution_end`.
    for ev in fx.events(&row.id) {
        let ends_it =
            (ev.kind == "node_end" && ev.data["node"] == "sleeper") || ev.kind == "execution_end";
        assert!(
            !ends_it || ev.data.get("duration_ms").is_none(),
            "{}",
            ev.data
        );
    }
    assert!(fx.node(&row.id, "first").duration_ms.is_some());
    let message = e.error.as_ref().unwrap()["message"].as_str().unwrap_or("");
    assert!(message.contains("its duration is not known"), "{message}");
    // It names the node it was in, as an execution its runner ended does; so does its stream.
    assert_eq!(e.error.as_ref().unwrap()["node"], "sleeper", "{e:?}");
    let end = fx
        .events(&row.id)
        .into_iter()
        .find(|ev| ev.kind == "execution_end");
    assert_eq!(end.expect("execution_end").data["error"]["node"], "sleeper");
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
    let py = cached(&fx, "py").len();
    assert_eq!(py, 2, "one cached script per workflow");
    assert!(n >= 2);
}

/// A new script's first run does not wait for its bytecode: it runs the `.py`, while the `.pyc`
/// is compiled beside it in the background (private, like the script) and waited for before
/// `flowrun run` ends; the next run runs the `.pyc`.
#[test]
fn a_new_scripts_first_run_runs_its_source_and_leaves_its_pyc_for_the_next() {
    let fx = Fx::new();
    let wf = fx.workflow(
        "argv",
        &json!({ "id": "argv", "nodes": [
            { "id": "which", "type": "code", "code": "import sys\nreturn sys.argv[0]" }
        ] }),
    );
    let ran = |fx: &Fx| {
        fx.run(&wf, &json!({}), &[]).assert_code(0);
        let id = fx.ids().pop().expect("an execution");
        fx.node(&id, "which").output().as_str().unwrap().to_string()
    };
    let first = ran(&fx);
    assert!(first.ends_with(".py"), "the first run ran {first}");
    let pyc = cached(&fx, "pyc");
    assert_eq!(
        pyc.len(),
        1,
        "the .pyc is there once the first run has ended"
    );
    assert_eq!(mode(&pyc[0]), 0o600);
    let second = ran(&fx);
    assert_eq!(
        second,
        pyc[0].display().to_string(),
        "the second run ran the .pyc"
    );
    fx.assert_tmp_empty();
}

/// A run that fails after its script was written, before it starts (here the store cannot be
/// opened), compiles nothing in the background: no process outlives it and no `.pyc` appears.
#[test]
fn a_run_that_fails_before_it_starts_leaves_no_compile_behind() {
    let fx = Fx::new();
    let wf = fx.workflow(
        "one",
        &json!({ "id": "one", "nodes": [{ "id": "n", "type": "code", "code": "return 1" }] }),
    );
    let junk = fx.write_file("junk.db", "this is not a database");
    let out = fx
        .command()
        .env("FLOWRUN_DB", &junk)
        .arg("run")
        .arg(&wf)
        .args(["--input", "{}"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    let cache = fx.cache_dir().display().to_string();
    let left: Vec<String> = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|pid| std::fs::read(format!("/proc/{pid}/cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .filter(|c| c.contains(&cache))
        .collect();
    assert!(left.is_empty(), "left running: {left:?}");
    let pyc = cached(&fx, "pyc").len();
    assert_eq!(pyc, 0, "nothing was compiled for a run that did not start");
}

/// The `.pyc` is named by the interpreter's bytecode magic number too: one written by another
/// build of the same Python version (a pre-release and the release sharing a cache, or a
/// flowrun that named it by version only), whose magic differs, is never loaded — it would
/// fail every run ("Bad magic number").
#[test]
fn a_pyc_of_another_build_of_the_same_python_is_not_loaded() {
    let fx = Fx::new();
    let wf = fx.workflow(
        "one",
        &json!({ "id": "one", "nodes": [{ "id": "n", "type": "code", "code": "return 1" }] }),
    );
    fx.run(&wf, &json!({}), &[]).assert_code(0);
    let py = cached(&fx, "py").pop().unwrap();
    let ours = cached(&fx, "pyc").pop().unwrap();
    // The other build's name: `<sha>.cpython-311.pyc` (the interpreter's cache tag), holding a
    // `.pyc` whose magic number is not ours.
    let tag = std::process::Command::new("python3")
        .args([
            "-I",
            "-S",
            "-c",
            "import sys; print(sys.implementation.cache_tag)",
        ])
        .output()
        .unwrap();
    let tag = String::from_utf8(tag.stdout).unwrap();
    let theirs = py.with_extension(format!("{}.pyc", tag.trim()));
    let mut bytes = std::fs::read(&ours).unwrap();
    bytes[0] ^= 0xff;
    for p in cached(&fx, "pyc") {
        std::fs::remove_file(p).unwrap();
    }
    std::fs::write(&theirs, &bytes).unwrap();
    fx.run(&wf, &json!({}), &[]).assert_code(0);
    assert_ne!(ours, theirs, "ours is named by the magic number too");
    assert!(ours.is_file(), "ours is compiled again");
}

/// The files of the script cache (`<cache>/scripts`) with extension `ext`.
fn cached(fx: &Fx, ext: &str) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(fx.cache_dir().join("scripts"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension() == Some(ext.as_ref()))
        .collect()
}

/// A node waiting out its retry's backoff when the runner is SIGKILLed: the recovery that
/// records the execution `interrupted` also ends the retry that will never come, with the
/// failed attempt as the node's last, "not retried: …" (its row no longer reads as an
/// attempt about to be retried).
#[test]
fn a_retry_left_waiting_by_a_killed_runner_is_recovered_not_retried() {
    let fx = Fx::new();
    let wf = fx.write_workflow(
        "waits.json",
        &json!({ "id": "waits", "nodes": [
            { "id": "flaky", "type": "code", "code": "raise ValueError('flaky')",
              "retry": { "max_attempts": 2, "backoff_ms": 60000 } },
        ]}),
    );
    let mut run = fx.spawn_run(&wf, &json!({}), &["--timeout-ms", "120000"]);
    let row = fx.wait_running(None, &mut run);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !fx
        .events(&row.id)
        .iter()
        .any(|e| e.kind == "node_end" && e.data["retrying"] == true)
    {
        assert!(std::time::Instant::now() < deadline, "no retrying end");
        std::thread::sleep(Duration::from_millis(20));
    }
    signal(run.pid(), Signal::SIGKILL);
    run.wait(Duration::from_secs(10));
    assert_group_gone_reaping(row.pgid.unwrap(), Duration::from_secs(5));
    fx.flowrun(&["history"]).assert_code(0);
    let e = fx.execution(&row.id);
    assert_eq!(e.status, "interrupted", "{e:?}");
    let flaky = fx.node(&row.id, "flaky");
    assert_eq!(
        (flaky.status.as_str(), flaky.attempt),
        ("error", 1),
        "{flaky:?}"
    );
    assert_eq!(
        flaky.reason,
        Some(format!("not retried: {}", e.error_message())),
        "{flaky:?}"
    );
    let last = fx.events(&row.id).into_iter().rev().nth(1).unwrap();
    assert_eq!(
        (last.kind.as_str(), &last.data["retrying"]),
        ("node_end", &serde_json::Value::Null)
    );
    assert_eq!(last.data["reason"], json!(flaky.reason.unwrap()));
    fx.assert_clean(&row.id);
}
