//! By default no request to `flowrun serve` waits for a warm template: while one starts, and
//! while it prepares a script it has not run yet, executions start cold
//! (`crates/executor/src/warm/mod.rs`, `Pool::with_template`); the ones after start warm.
//! `flowrun test` starts its first case cold and has the cases after it wait for the template
//! that case started (`Policy::Batch`). (The other warm tests set `FLOWRUN_WARM_WAIT=1`, which
//! waits for everything.) Nothing here is timed but for that wait's bound (2 s, against a start
//! of 30-50 ms): which executions start cold is decided by what the template holds, not by how
//! fast it gets there.

use crate::support::serve::{Server, World};
use crate::support::*;
use crate::warm::{code_workflow, run_wait, templates};

/// `FLOWRUN_WARM_WAIT` set to anything but `1` is the default.
const DEFAULT: &[(&str, &str)] = &[("FLOWRUN_WARM_WAIT", "0")];

/// Runs `workflow` until an execution of it starts warm.
fn until_warm(srv: &Server, workflow: &str) {
    wait_for(&format!("a warm execution of {workflow}"), || {
        let r = run_wait(srv, workflow);
        assert_eq!(r["status"], "success", "{r:#}");
        (r["start"] == "warm").then_some(())
    });
}

#[test]
fn a_server_runs_cold_until_its_template_holds_the_script_then_warm() {
    let w = World::new();
    w.save("one.json", &code_workflow("one", "return 1"));
    w.save("two.json", &code_workflow("two", "return 2"));
    let srv = w.serve_with(&[], DEFAULT);
    // No template yet: this one starts one, and does not wait for it.
    let first = run_wait(&srv, "one");
    assert_eq!(first["status"], "success", "{first:#}");
    assert_eq!(first["start"], "cold", "{first:#}");
    assert_eq!(first["output"], 1);
    until_warm(&srv, "one");
    for _ in 0..3 {
        let next = run_wait(&srv, "one");
        assert_eq!(next["start"], "warm", "warm from then on: {next:#}");
        assert_eq!(next["output"], 1);
    }
    assert_eq!(templates(srv.pid()).len(), 1);
    // The template is ready, but has not prepared this script: it does now, while this
    // execution starts cold; the next ones are warm.
    let other = run_wait(&srv, "two");
    assert_eq!(other["start"], "cold", "{other:#}");
    assert_eq!(other["output"], 2);
    until_warm(&srv, "two");
    // And the first script is still held.
    let again = run_wait(&srv, "one");
    assert_eq!(again["start"], "warm", "{again:#}");
    assert_eq!(templates(srv.pid()).len(), 1, "one template served both");
}

/// A suite of one case takes no longer than its cold start: it does not wait for a template,
/// and the template it started is gone with it, its private directory too.
#[test]
fn a_suite_does_not_wait_for_its_template_and_leaves_nothing() {
    let env = Env::new();
    std::fs::copy(example("hello.json"), env.path("hello.json")).unwrap();
    env.write_file(
        "hello.test.yaml",
        "workflow: ./hello.json\ncases:\n  - name: one\n    trigger: { name: a }\n",
    );
    let dir = env.path(".");
    let out = output(env.flowrun().env("FLOWRUN_WARM_WAIT", "0").args([
        "test",
        dir.to_str().unwrap(),
        "--offline",
    ]));
    assert_success(&out, "flowrun test");
    let starts = env.execution_starts();
    assert_eq!(starts, ["cold"], "the only case started cold");
    wait_for("the template's private directory to go", || {
        let left: Vec<String> = std::fs::read_dir(env.tmp_dir())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("flowrun-warm-"))
            .collect();
        left.is_empty().then_some(())
    });
    let marked = |pid: i32| {
        std::fs::read(format!("/proc/{pid}/environ"))
            .map(|e| contains_bytes(&e, env.tmp_dir().to_string_lossy().as_bytes()))
            .unwrap_or(false)
    };
    wait_for("no process of the suite to be left", || {
        let left: Vec<i32> = std::fs::read_dir("/proc")
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .filter(|&pid| marked(pid))
            .collect();
        left.is_empty().then_some(())
    });
}

/// `flowrun test` of the suite in `env`'s directory, one case at a time, `FLOWRUN_WARM_WAIT`
/// set to `wait`; it must pass.
fn test_one_at_a_time(env: &Env, wait: &str) {
    let dir = env.path(".");
    let out = output(env.flowrun().env("FLOWRUN_WARM_WAIT", wait).args([
        "test",
        dir.to_str().unwrap(),
        "--offline",
        "-j",
        "1",
    ]));
    assert_success(&out, "flowrun test");
}

/// Many cases: the first starts cold and starts the template, the others wait for it and are
/// warm, each with the output its case expects.
#[test]
fn a_suite_waits_for_the_template_its_first_case_started() {
    let env = Env::new();
    env.write_workflow(
        "echo.json",
        &code_workflow("echo", "return {'n': trigger['n'] * 2}"),
    );
    let mut suite = String::from("workflow: ./echo.json\ncases:\n");
    for n in 0..30 {
        suite.push_str(&format!(
            "  - name: c{n}\n    trigger: {{ n: {n} }}\n    expect: {{ output.n: {} }}\n",
            n * 2
        ));
    }
    env.write_file("echo.test.yaml", &suite);
    test_one_at_a_time(&env, "0");
    let starts = env.execution_starts();
    assert_eq!(starts.len(), 30);
    assert_eq!(starts[0], "cold", "{starts:?}");
    assert!(
        starts[1..].iter().all(|s| s == "warm"),
        "a case after the first started cold: {starts:?}"
    );
}

/// A template runs its code compiled by its interpreter, kept in the cache directory after the
/// first template started from source (its frames then carry `/flowrun-warm-template`, not the
/// link in its private directory); a compiled file that is damaged is not run: the template
/// starts from source, every case is still warm, and the file is written anew.
#[test]
fn a_template_starts_from_its_compiled_code_and_not_from_a_damaged_one() {
    let env = Env::new();
    env.write_workflow(
        "frame.json",
        &code_workflow(
            "frame",
            "import traceback\nreturn traceback.extract_stack()[0].filename",
        ),
    );
    let mut suite = String::from("workflow: ./frame.json\ncases:\n");
    for n in 0..30 {
        suite.push_str(&format!("  - name: c{n}\n"));
    }
    env.write_file("frame.test.yaml", &suite);
    let suite_run = || {
        test_one_at_a_time(&env, "1");
        let frames = env
            .db()
            .prepare("SELECT start, output FROM executions")
            .map(|mut st| {
                st.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
                    .unwrap()
                    .collect::<Result<Vec<_>, _>>()
                    .unwrap()
            });
        let frames = frames.unwrap();
        env.db_rw().execute("DELETE FROM executions", []).ok();
        assert!(frames.iter().all(|(s, _)| s == "warm"), "{frames:?}");
        let names: std::collections::BTreeSet<String> =
            frames.into_iter().map(|(_, o)| o).collect();
        names
    };
    assert!(compiled(&env).is_empty());
    let first = suite_run();
    assert_eq!(first.len(), 1, "{first:?}");
    let from_source = first.into_iter().next().unwrap();
    assert!(
        from_source.ends_with("/flowrun-warm-template\"")
            && from_source != "\"/flowrun-warm-template\"",
        "{from_source}"
    );
    let pyc = wait_for("the template's code to be compiled", || {
        let found = compiled(&env);
        (found.len() == 1).then(|| found[0].clone())
    });
    let good = std::fs::read(&pyc).unwrap();
    let second = suite_run();
    assert_eq!(
        second.into_iter().collect::<Vec<_>>(),
        ["\"/flowrun-warm-template\""],
        "started from the compiled code"
    );
    // Damaged three ways: a magic number of no interpreter (read as source then), one close to
    // this interpreter's (read as compiled code, refused), code cut short.
    let mut not_magic = good.clone();
    not_magic[..4].copy_from_slice(b"\xff\xff\r\n");
    let mut other_magic = good.clone();
    other_magic[2] ^= 0x5a;
    let cut = good[..good.len() / 2].to_vec();
    for bad in [not_magic, other_magic, cut] {
        std::fs::write(&pyc, &bad).unwrap();
        let again = suite_run();
        assert_eq!(again.len(), 1, "{again:?}");
        assert!(!again.contains("\"/flowrun-warm-template\""), "{again:?}");
        // Written anew: this interpreter's magic number and whole (not byte for byte the
        // first: marshal's output may differ from one interpreter process to the next).
        wait_for("the compiled code to be written anew", || {
            let now = std::fs::read(&pyc).ok()?;
            (now != bad && now[..4] == good[..4] && now.len() > good.len() / 2).then_some(())
        });
    }
}

/// The compiled template code files in `env`'s cache directory.
fn compiled(env: &Env) -> Vec<std::path::PathBuf> {
    let Ok(dir) = std::fs::read_dir(env.cache_dir()) else {
        return Vec::new(); // made by the first run
    };
    dir.flatten()
        .map(|e| e.path())
        .filter(|p| {
            let n = p.file_name().unwrap().to_string_lossy();
            n.starts_with("warm-") && n.ends_with(".pyc")
        })
        .collect()
}

/// A template killed as it starts from the compiled code (its process ending: a Ctrl-C during
/// a suite's first case, the sweep of what the process leaves) says nothing of that file: it
/// is kept, not removed. Here the file is code that never says ready, so nothing but that kill
/// can end the template it starts (it would be removed after the 10 s a template is given).
/// Whatever a compile leaves that it could not put in place (a directory where the file goes)
/// is removed by the compile itself.
#[test]
fn a_template_killed_as_it_starts_leaves_its_compiled_code_alone() {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;
    let env = Env::new();
    env.write_workflow("echo.json", &code_workflow("echo", "return 1"));
    env.write_file(
        "echo.test.yaml",
        "workflow: ./echo.json\ncases:\n  - name: a\n  - name: b\n",
    );
    test_one_at_a_time(&env, "1");
    let pyc = wait_for("the template's code to be compiled", || {
        compiled(&env).into_iter().next()
    });
    let good = std::fs::read(&pyc).unwrap();
    let made = std::process::Command::new("python3")
        .args(["-I", "-S", "-c"])
        .arg(
            "import marshal, sys\nfrom importlib.util import MAGIC_NUMBER as M\n\
             code = compile('import time\\ntime.sleep(3600)', 'hang', 'exec')\n\
             open(sys.argv[1], 'wb').write(M + bytes(12) + marshal.dumps(code))",
        )
        .arg(&pyc)
        .status()
        .unwrap();
    assert!(made.success());
    let hang = std::fs::read(&pyc).unwrap();
    assert_eq!(hang[..4], good[..4], "compiled by the suite's interpreter");
    std::fs::remove_file(env.path("echo.test.yaml")).unwrap();
    env.write_workflow(
        "slow.json",
        &serde_json::json!({"id": "slow", "nodes": [{"id": "wait", "type": "delay", "ms": 30000}]}),
    );
    env.write_file(
        "slow.test.yaml",
        "workflow: ./slow.json\ncases:\n  - name: first\n",
    );
    // The first case starts cold while the template starts from the file (in the background).
    let mut child = env
        .command()
        .env("FLOWRUN_WARM_WAIT", "0")
        .args(["test", "slow.test.yaml", "-j", "1"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_for("the template to start", || {
        (!templates(child.id() as i32).is_empty()).then_some(())
    });
    kill(Pid::from_raw(child.id() as i32), Signal::SIGINT).unwrap();
    assert_eq!(child.wait().unwrap().code(), Some(130));
    assert_eq!(
        std::fs::read(&pyc).unwrap(),
        hang,
        "the compiled code was kept"
    );
    // A directory where the file goes: each compile fails, and leaves nothing of its own.
    std::fs::remove_file(&pyc).unwrap();
    std::fs::create_dir(&pyc).unwrap();
    std::fs::remove_file(env.path("slow.test.yaml")).unwrap();
    env.write_file(
        "echo.test.yaml",
        "workflow: ./echo.json\ncases:\n  - name: a\n  - name: b\n",
    );
    test_one_at_a_time(&env, "1");
    let left: Vec<String> = std::fs::read_dir(env.cache_dir())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp-"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

/// More keys than templates kept (a key: the interpreter, its flags and the variables read as a
/// process starts, here an `LC_*` one per case), in rotation: no more than `MAX_TEMPLATES` (4)
/// templates are ever started, none replaced while others wait — the other keys start cold — and
/// every case passes. Replacing the least recently used at once would start one for nearly
/// every case, each evicted before it was used.
#[test]
fn more_keys_than_templates_start_no_more_templates_than_are_kept() {
    const KEYS: usize = 8;
    let env = Env::new();
    env.write_workflow("echo.json", &code_workflow("echo", "return trigger['n']"));
    let mut suite = String::from("workflow: ./echo.json\ncases:\n");
    for round in 0..4 {
        for key in 0..KEYS {
            suite.push_str(&format!(
                "  - name: r{round}k{key}\n    trigger: {{ n: {key} }}\n    env: {{ LC_FLOWRUN_KEY: \"k{key}\" }}\n    expect: {{ output: {key} }}\n"
            ));
        }
    }
    env.write_file("echo.test.yaml", &suite);
    let dir = env.path(".");
    let mut child = env
        .command()
        .env("FLOWRUN_WARM_WAIT", "0")
        .args(["test", dir.to_str().unwrap(), "--offline", "-j", "1"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id() as i32;
    let (mut seen, mut most) = (std::collections::BTreeSet::new(), 0);
    let deadline = std::time::Instant::now() + TIMEOUT;
    while child.try_wait().unwrap().is_none() {
        assert!(std::time::Instant::now() < deadline, "flowrun test hung");
        let now = templates(pid);
        most = most.max(now.len());
        seen.extend(now);
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    let out = child.wait_with_output().unwrap();
    assert_success(&out, "flowrun test");
    assert_eq!(env.execution_starts().len(), 4 * KEYS);
    assert!(!seen.is_empty(), "no template was seen at all");
    assert!(most <= 4, "{most} templates at once");
    assert!(
        seen.len() <= 4,
        "{} templates started: {seen:?}",
        seen.len()
    );
}
