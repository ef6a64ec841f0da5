//! What an execution hands a warm start never stays in its template: every later execution is a
//! fork of the template and can read all of the template's memory as its own.

use crate::support::serve::World;
use crate::warm::{code_workflow, templates};
use serde_json::json;

/// Whether `needle` is anywhere in the writable memory of process `pid` (read through
/// /proc/PID/mem, which this test may: it is the process's ancestor).
fn in_memory(pid: i32, needle: &[u8]) -> bool {
    use std::io::{Read, Seek, SeekFrom};
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).expect("maps");
    let mut mem = std::fs::File::open(format!("/proc/{pid}/mem")).expect("mem");
    let mut read_any = false;
    for line in maps.lines() {
        let mut parts = line.split_whitespace();
        let (Some(range), Some(perms)) = (parts.next(), parts.next()) else {
            continue;
        };
        if !perms.starts_with("rw") {
            continue;
        }
        let (lo, hi) = range.split_once('-').unwrap();
        let lo = u64::from_str_radix(lo, 16).unwrap();
        let hi = u64::from_str_radix(hi, 16).unwrap();
        let mut buf = vec![0u8; (hi - lo) as usize];
        if mem.seek(SeekFrom::Start(lo)).is_err() || mem.read_exact(&mut buf).is_err() {
            continue; // [vvar] and the like
        }
        read_any = true;
        if buf.windows(needle.len()).any(|w| w == needle) {
            return true;
        }
    }
    assert!(read_any, "could not read the memory of process {pid}");
    false
}

#[test]
fn an_executions_environment_never_reaches_its_template() {
    let w = World::new();
    w.save(
        "probe.json",
        &code_workflow("probe", "import os\nreturn os.environ.get('PROBE_SECRET')"),
    );
    let srv = w.serve(&[]);
    let secret = format!("probe-{:016x}-secret", rand_u64());
    // The first execution of a script goes through the template (no spare holds it yet), the
    // second to a spare: both get the value, the template never.
    for _ in 0..2 {
        let r = srv.post(
            "/api/workflows/probe/executions?wait=true",
            &json!({"trigger": {}, "env": {"PROBE_SECRET": secret}}),
        );
        assert_eq!(r.status, 200, "{}", r.text);
        assert_eq!(r.body["status"], "success", "{}", r.text);
        assert_eq!(r.body["start"], "warm", "{}", r.text);
        assert_eq!(r.body["output"], json!(secret));
    }
    let found = templates(srv.pid());
    assert_eq!(found.len(), 1, "one template: {found:?}");
    assert!(
        !in_memory(found[0], secret.as_bytes()),
        "the template holds an execution's environment"
    );
    // The check itself finds what is there: the template's own name (its argv).
    assert!(in_memory(found[0], b"flowrun-warm-template"));
    // Its command line is a name, not its ~43 KB source (`-c SOURCE` filled `ps`), and the
    // memory file the source was read from is not kept open.
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", found[0])).unwrap();
    let shown = String::from_utf8_lossy(&cmdline).replace('\0', " ");
    assert!(
        cmdline.len() < 300 && shown.ends_with("/flowrun-warm-template "),
        "{shown}"
    );
    let held: Vec<String> = std::fs::read_dir(format!("/proc/{}/fd", found[0]))
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .map(|l| l.display().to_string())
        .filter(|l| l.contains("memfd:"))
        .collect();
    assert!(held.is_empty(), "the template holds {held:?}");
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(std::process::id() as u64);
    h.finish()
}

#[test]
fn an_environment_larger_than_a_pipe_still_starts_warm() {
    // The environment travels on the warm start's stdin before anything reads it: past the
    // 64 KiB a pipe holds, the pipe is made larger (to 1 MiB by default). Each variable stays
    // under the 128 KiB an exec takes, for the cold start the check compares with.
    let w = World::new();
    w.save(
        "probe.json",
        &code_workflow(
            "probe",
            "import os\nreturn sum(len(v) for k, v in os.environ.items() if k.startswith('BIG'))",
        ),
    );
    let srv = w.serve(&[]);
    let big: serde_json::Map<String, serde_json::Value> = (0..3)
        .map(|i| (format!("BIG{i}"), json!("x".repeat(100_000))))
        .collect();
    for env in [json!(big), json!({}), json!(big)] {
        let want = env.as_object().unwrap().len() as u64 * 100_000;
        let r = srv.post(
            "/api/workflows/probe/executions?wait=true",
            &json!({"trigger": {}, "env": env}),
        );
        assert_eq!(r.status, 200, "{}", r.text);
        assert_eq!(r.body["status"], "success", "{}", r.text);
        assert_eq!(r.body["start"], "warm", "{}", r.text);
        assert_eq!(r.body["output"].as_u64(), Some(want));
    }
}

#[test]
fn a_traceback_shows_its_own_workflows_source_whatever_the_template_prepared() {
    // Two workflows with a code node of the same id: the template prepares both, and each puts
    // its node's source in the one `linecache` (tracebacks read it) under the same name.
    let w = World::new();
    let lx = json!({"id": "lx", "nodes": [
        {"id": "probe", "type": "code",
         "code": "import linecache\nreturn linecache.getline('<node d>', 1)"},
        {"id": "c", "type": "code", "code": "x = 1\ny = 2\nraise ValueError('lx fails here')\n"}
    ]});
    let ly = json!({"id": "ly", "nodes": [
        {"id": "c", "type": "code", "code": "a = 1\nb = 2\nreturn 'ly line three'\n"},
        {"id": "d", "type": "code", "code": "return 'only ly has d'"}
    ]});
    w.save("lx.json", &lx);
    w.save("ly.json", &ly);
    let srv = w.serve(&[]);
    let run = |id: &str| {
        let r = srv.post(
            &format!("/api/workflows/{id}/executions?wait=true"),
            &json!({"trigger": {}}),
        );
        assert_eq!(r.status, 200, "{}", r.text);
        assert_eq!(r.body["start"], "warm", "{}", r.text);
        r.body
    };
    run("lx");
    run("ly");
    let node = |r: &serde_json::Value, id: &str| {
        let nodes = r["nodes"].as_array().unwrap();
        nodes.iter().find(|n| n["node_id"] == id).unwrap().clone()
    };
    for r in [run("lx"), run("lx")] {
        let c = node(&r, "c");
        let tb = c["error"]["traceback"].as_str().unwrap_or_default();
        assert!(tb.contains("raise ValueError('lx fails here')"), "{tb}");
        assert!(!tb.contains("ly line three"), "{tb}");
        let probe = node(&r, "probe");
        assert_eq!(
            probe["output"], "",
            "another workflow's node source is visible: {r:#}"
        );
    }
}

#[test]
fn signals_flowrun_was_started_ignoring_are_not_ignored_by_a_warm_execution() {
    // `nohup flowrun serve` ignores HUP, a shell's background job INT: a cold execution's
    // shepherd gives its interpreter the default for both, so must a warm start.
    const PROBE: &str = "import signal\nreturn {s.name: signal.getsignal(s) == signal.SIG_IGN for s in (signal.SIGHUP, signal.SIGINT, signal.SIGQUIT, signal.SIGTERM)}";
    let w = World::new();
    w.save("sig.json", &code_workflow("sig", PROBE));
    let srv = w.serve_opts(crate::support::serve::ServeOpts {
        ignored: &[libc::SIGHUP, libc::SIGINT, libc::SIGQUIT],
        ..Default::default()
    });
    let none = json!({"SIGHUP": false, "SIGINT": false, "SIGQUIT": false, "SIGTERM": false});
    for _ in 0..2 {
        let r = srv.post(
            "/api/workflows/sig/executions?wait=true",
            &json!({"trigger": {}}),
        );
        assert_eq!(r.body["start"], "warm", "{}", r.text);
        assert_eq!(r.body["output"], none, "{}", r.text);
    }
    let r = w
        .serve_opts(crate::support::serve::ServeOpts {
            extra: &["--cold"],
            ignored: &[libc::SIGHUP, libc::SIGINT, libc::SIGQUIT],
            ..Default::default()
        })
        .post(
            "/api/workflows/sig/executions?wait=true",
            &json!({"trigger": {}}),
        );
    assert_eq!(r.body["start"], "cold", "{}", r.text);
    assert_eq!(r.body["output"], none, "{}", r.text);
}

#[test]
fn a_workflow_cannot_point_its_templates_directory_elsewhere() {
    // W knows the template's private directory (it writes what it learned there): one that puts
    // a link to another directory in its place must not have the template empty that one.
    const SWAP: &str = "import os\nenv = dict(l.split('=', 1) for l in open('/proc/self/environ').read().split('\\0') if '=' in l)\nd = env.get('FLOWRUN_WARM_DIR') or __import__('sys').modules['__main__'].__dict__.get('_PAGES_DIR')\nif not d:\n    return None\nos.rename(d, d + '.moved')\nos.symlink(trigger['victim'], d)\nreturn d";
    let w = World::new();
    w.save("swap.json", &code_workflow("swap", SWAP));
    let victim = w.path("victim");
    std::fs::create_dir_all(&victim).unwrap();
    std::fs::write(victim.join("keep.txt"), "mine").unwrap();
    let mut srv = w.serve(&[]);
    let r = srv.post(
        "/api/workflows/swap/executions?wait=true",
        &json!({"trigger": {"victim": victim}}),
    );
    assert_eq!(r.body["status"], "success", "{}", r.text);
    assert_eq!(r.body["start"], "warm", "{}", r.text);
    let dir = r.body["output"]
        .as_str()
        .expect("the directory was found")
        .to_string();
    let template = templates(srv.pid());
    srv.terminate(); // the template sees its socket close and cleans up
    crate::support::wait_for("the template to end", || {
        let ended = |p: i32| {
            std::fs::read_to_string(format!("/proc/{p}/stat"))
                .map(|s| {
                    s.rsplit(')')
                        .next()
                        .unwrap_or("")
                        .trim_start()
                        .starts_with('Z')
                })
                .unwrap_or(true)
        };
        template.iter().all(|&p| ended(p)).then_some(())
    });
    assert!(
        victim.join("keep.txt").exists(),
        "the template emptied {victim:?} through {dir}"
    );
    let _ = std::fs::remove_file(&dir);
    let _ = std::fs::remove_dir_all(format!("{dir}.moved"));
}

#[test]
fn what_an_interpreter_reads_as_it_starts_is_the_executions_own() {
    // The locale decides the interpreter's UTF-8 mode and its streams' encoding as it starts:
    // a warm execution asking for LC_ALL=C gets a template started with it, as a cold one
    // starts with it.
    const PROBE: &str = "import sys, locale, os\nreturn {'utf8_mode': sys.flags.utf8_mode, 'ctype': locale.setlocale(locale.LC_CTYPE), 'fs': sys.getfilesystemencoding(), 'environ': sorted(l.split('=')[0] for l in open('/proc/self/environ').read().split('\\0') if l and not l.startswith('FLOWRUN_WARM_DIR='))}";
    let w = World::new();
    w.save("loc.json", &code_workflow("loc", PROBE));
    let warm = w.serve(&[]);
    let cold = w.serve(&["--cold"]);
    for env in [
        json!({"LC_ALL": "C"}),
        json!({}),
        json!({"LC_ALL": "C.UTF-8"}),
    ] {
        let body = json!({"trigger": {}, "env": env});
        let path = "/api/workflows/loc/executions?wait=true";
        let (a, b) = (warm.post(path, &body).body, cold.post(path, &body).body);
        assert_eq!(
            (a["start"].as_str(), b["start"].as_str()),
            (Some("warm"), Some("cold"))
        );
        for k in ["utf8_mode", "ctype", "fs"] {
            assert_eq!(
                a["output"][k], b["output"][k],
                "{k} with {env}: warm {a:#} cold {b:#}"
            );
        }
        // Of the environment block the kernel shows, nothing but what the interpreter reads
        // as it starts (a cold one shows all of its environment there).
        for name in a["output"]["environ"].as_array().unwrap() {
            let name = name.as_str().unwrap();
            assert!(name == "LANG" || name.starts_with("LC_"), "{name} in {a:#}");
        }
    }
}

#[test]
fn an_environment_no_exec_takes_fails_warm_as_it_does_cold() {
    // Each variable under the 128 KiB an exec takes for one, all of them over what it takes in
    // all (ARG_MAX, a quarter of the stack limit: 256 KiB with a 1 MiB stack) though within
    // what a pipe may hold (1 MiB): a cold start could not spawn it, and a warm one must not
    // run it: both refuse it with the request, before any execution.
    let w = World::new();
    w.save("probe.json", &code_workflow("probe", "return 1"));
    let env: serde_json::Map<String, serde_json::Value> = (0..4)
        .map(|i| (format!("BIG{i}"), json!("x".repeat(100_000))))
        .collect();
    let body = json!({"trigger": {}, "env": env});
    let path = "/api/workflows/probe/executions?wait=true";
    let serve = |extra: &'static [&'static str]| {
        w.serve_opts(crate::support::serve::ServeOpts {
            extra,
            stack: Some(1 << 20),
            ..Default::default()
        })
    };
    for extra in [&["--cold"][..], &[][..]] {
        let s = serve(extra);
        let r = s.post(path, &body);
        assert_eq!(r.status, 422, "{extra:?}: {}", r.text);
        assert!(r.text.contains("KiB together"), "{}", r.text);
        assert_eq!(s.get("/api/executions").body["executions"], json!([]));
    }
    // And what it does take runs warm there too.
    let fits = json!({"trigger": {}, "env": {"BIG": "x".repeat(100_000)}});
    let r = serve(&[]).post(path, &fits).body;
    assert_eq!(
        (r["status"].as_str(), r["start"].as_str()),
        (Some("success"), Some("warm")),
        "{r:#}"
    );
}
