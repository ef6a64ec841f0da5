//! The script cache (`<cache>/scripts/`): a workflow that ran before runs the script it made
//! then, found by its key (plan, run options, build) without rendering it again; anything that
//! changes the script is another key; the cache stays bounded.

use crate::support::*;
use serde_json::{Value, json};
use std::path::Path;

/// The keys in `keys/` and the script each links to.
fn keys(cache: &Path) -> Vec<(String, String)> {
    let mut found: Vec<(String, String)> = std::fs::read_dir(cache.join("scripts/keys"))
        .map(|d| {
            d.map(|e| {
                let e = e.unwrap();
                let target = std::fs::read_link(e.path()).unwrap();
                (
                    e.file_name().to_string_lossy().into_owned(),
                    target.to_string_lossy().into_owned(),
                )
            })
            .collect()
        })
        .unwrap_or_default();
    found.sort();
    found
}

fn output(out: &std::process::Output) -> Value {
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.lines().last().unwrap_or("")).unwrap_or(Value::Null)
}

#[test]
fn a_workflow_run_again_finds_its_script_by_key_and_a_changed_one_makes_its_own() {
    let env = Env::new();
    let wf = |text: &str| json!({"id": "w", "nodes": [{"id": "a", "type": "template", "template": text}]});
    let file = env.write_workflow("w.json", &wf("first"));
    let out = env.run(&file, "{}", &[]);
    assert_success(&out, "first run");
    assert_eq!(output(&out), json!({"text": "first"}));
    let first = keys(&env.cache_dir());
    assert_eq!(first.len(), 1, "{first:?}");
    let (key, script) = first[0].clone();
    assert!(
        script.starts_with("../") && script.ends_with(".py"),
        "{script}"
    );
    assert!(env.cache_dir().join("scripts/keys").join(&script).is_file());

    // Again: the same key, the same script, nothing new.
    let out = env.run(&file, "{}", &[]);
    assert_success(&out, "second run");
    assert_eq!(output(&out), json!({"text": "first"}));
    assert_eq!(keys(&env.cache_dir()), first);

    // Another definition under the same id and file: its own key and script, its own output.
    env.write_workflow("w.json", &wf("second"));
    let out = env.run(&file, "{}", &[]);
    assert_success(&out, "changed workflow");
    assert_eq!(output(&out), json!({"text": "second"}));
    let second = keys(&env.cache_dir());
    assert_eq!(second.len(), 2, "{second:?}");
    assert!(second.iter().all(|(k, s)| k == &key || s != &script));

    // A run option that goes into the script (a pin) is another key too.
    let pinned = env.path("pinned.json");
    std::fs::write(&pinned, r#"{"pinned": 1}"#).unwrap();
    let pin = format!("a={}", pinned.display());
    let out = env.run(&file, "{}", &["--pin", &pin]);
    assert_success(&out, "pinned run");
    assert_eq!(output(&out), json!({"pinned": 1}));
    assert_eq!(keys(&env.cache_dir()).len(), 3);

    // A script removed from under its key (another process evicted it) is made again.
    for e in std::fs::read_dir(env.cache_dir().join("scripts")).unwrap() {
        let p = e.unwrap().path();
        if p.is_file() {
            std::fs::remove_file(p).unwrap();
        }
    }
    let out = env.run(&file, "{}", &[]);
    assert_success(&out, "run after the scripts were removed");
    assert_eq!(output(&out), json!({"text": "second"}));
    let after = keys(&env.cache_dir());
    assert!(
        after
            .iter()
            .any(|(_, s)| env.cache_dir().join("scripts/keys").join(s).is_file()),
        "{after:?}"
    );
}

/// The script cache keeps at most 500 scripts: adding one past that removes the oldest (with
/// their bytecode) down to 400, never one written in the last hour (a run may be about to start
/// it); an editor that runs every edit filled it without end.
#[test]
fn the_script_cache_keeps_the_newest_scripts() {
    let env = Env::new();
    let dir = env.cache_dir().join("scripts");
    std::fs::create_dir_all(&dir).unwrap();
    let now = std::time::SystemTime::now();
    let hours = |h: u64| now - std::time::Duration::from_secs(3600 * h);
    let put = |sha: &str, at: std::time::SystemTime| {
        for name in [
            format!("{sha}.py"),
            format!("{sha}.cpython-311-a70d0d0a.pyc"),
        ] {
            let f = std::fs::File::create(dir.join(name)).unwrap();
            f.set_modified(at).unwrap();
        }
    };
    for i in 0..550 {
        put(&format!("old{i:04}"), hours(2 + i as u64));
    }
    for i in 0..50 {
        put(&format!("new{i:04}"), now);
    }
    let wf = env.write_workflow(
        "w.json",
        &json!({"id": "w", "nodes": [{"id": "a", "type": "template", "template": "hi"}]}),
    );
    assert_code(&env.run(&wf, "{}", &[]), 0, "a run writing a new script");
    let left: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".py"))
        .collect();
    assert_eq!(left.len(), 400, "{}", left.len());
    assert_eq!(left.iter().filter(|n| n.starts_with("new")).count(), 50);
    // The oldest went, with their bytecode; the newest of the old stayed.
    assert!(
        !dir.join("old0549.py").exists() && !dir.join("old0549.cpython-311-a70d0d0a.pyc").exists()
    );
    assert!(dir.join("old0000.py").exists());
}

/// The script's `.pyc` (written in the background after a first run, and waited for as that run
/// ends) in the cache.
fn pyc(env: &Env) -> std::path::PathBuf {
    let found: Vec<_> = std::fs::read_dir(env.cache_dir().join("scripts"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "pyc"))
        .collect();
    assert_eq!(found.len(), 1, "{found:?}");
    found[0].clone()
}

/// A damaged `.pyc` failed every run of its workflow, warm and cold, until removed by hand: one
/// that is empty (a crash after its rename) or of another magic number is compiled again before
/// it is used; one whose code is cut short fails the run that loads it, which removes it and
/// says so, and the next run compiles it again.
#[test]
fn a_damaged_pyc_is_compiled_again() {
    let env = Env::new();
    let file = env.write_workflow(
        "w.json",
        &json!({"id": "w", "nodes": [{"id": "a", "type": "code", "code": "return 41 + 1"}]}),
    );
    let ok = |what: &str| {
        let out = env.run(&file, "{}", &[]);
        assert_success(&out, what);
        assert_eq!(output(&out), json!(42), "{what}");
    };
    ok("first run");
    let p = pyc(&env);
    let good = std::fs::read(&p).unwrap();
    for (what, bytes) in [
        ("empty", Vec::new()),
        (
            "another magic number",
            [b"\x00\x00\x0d\x0a".as_slice(), &good[4..]].concat(),
        ),
    ] {
        std::fs::write(&p, &bytes).unwrap();
        ok(what);
        assert_eq!(std::fs::read(&p).unwrap(), good, "{what}: compiled again");
    }
    std::fs::write(&p, &good[..good.len() / 2]).unwrap();
    let out = env.run(&file, "{}", &[]);
    assert_code(&out, 1, "the run that loads a .pyc cut short");
    assert!(
        stderr(&out).contains("could not be loaded") && stderr(&out).contains("it is removed"),
        "{}",
        describe(&out)
    );
    ok("the run after it");
    assert_eq!(std::fs::read(pyc(&env)).unwrap(), good, "compiled again");
    // The same in a suite: its first cases may fail on it, the next run's none.
    std::fs::write(&p, &good[..good.len() / 2]).unwrap();
    env.write_file(
        "w.test.yaml",
        "workflow: ./w.json\ncases:\n  - name: a\n    expect: { output: 42 }\n  - name: b\n    expect: { output: 42 }\n  - name: c\n    expect: { output: 42 }\n",
    );
    let out = env.cmd(["test", "w.test.yaml", "-j", "1"]);
    assert!(
        stdout(&out).contains("2 passed, 1 failed"),
        "the case that loads it fails, not the next one (prepared meanwhile, it runs the .py): {}",
        describe(&out)
    );
    let out = env.cmd(["test", "w.test.yaml", "-j", "1"]);
    assert_code(&out, 0, "the suite run again");
    // A workflow that prints those words itself, after its nodes ran, keeps its `.pyc`.
    let file = env.write_workflow(
        "loud.json",
        &json!({"id": "loud", "nodes": [{"id": "a", "type": "code", "code":
            "import atexit, os\natexit.register(lambda: os.write(2, b'ValueError: bad marshal data (unknown type code)\\n'))\nreturn 1"}]}),
    );
    for what in ["first run", "second run"] {
        let out = env.run(&file, "{}", &[]);
        assert_success(&out, what);
        assert!(
            !stderr(&out).contains("could not be loaded"),
            "{what}: {}",
            describe(&out)
        );
    }
    let loud: Vec<_> = std::fs::read_dir(env.cache_dir().join("scripts"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".pyc"))
        .collect();
    assert_eq!(loud.len(), 2, "both workflows' .pyc are there: {loud:?}");
}
