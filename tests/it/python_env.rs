//! The Python environment (issue 6), end to end with the real `flowrun` binary: interpreter
//! discovery and its cache, the version check, isolated mode, requirements, and `doctor --fix`
//! installing a wheel built in the test with real pip and no network.
//!
//! Fake interpreters are real executable scripts in the test's temp dir, found through a `PATH`
//! that each command sets explicitly (`FLOWRUN_PYTHON` and `VIRTUAL_ENV` are removed unless a
//! test sets them). A fake that should work `exec`s the real interpreter after appending a line
//! to a trace file, so the trace says which candidate was asked, and how often.

use crate::support::*;
use assert_cmd::Command;
use serde_json::{Value, json};
use std::ffi::OsString;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// The real interpreter behind `python3` on the test's own PATH, and its `X.Y`.
struct RealPython {
    exe: PathBuf,
    xy: String,
}

fn real_python() -> &'static RealPython {
    static REAL: OnceLock<RealPython> = OnceLock::new();
    REAL.get_or_init(|| {
        let out = std::process::Command::new("python3")
            .args([
                "-c",
                "import sys; print(sys.executable); print('%d.%d' % sys.version_info[:2])",
            ])
            .output()
            .expect("python3 is on the test's PATH");
        assert!(out.status.success(), "python3 -c failed: {out:?}");
        let text = String::from_utf8(out.stdout).unwrap();
        let mut lines = text.lines();
        RealPython {
            exe: PathBuf::from(lines.next().expect("sys.executable")),
            xy: lines.next().expect("version").to_string(),
        }
    })
}

/// Writes an executable file (mode 0755), creating its directory.
fn write_exec(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// A shim like pyenv's: appends `label` to `trace`, then `exec`s `target`.
fn write_shim(path: &Path, trace: &Path, label: &str, target: &Path) {
    write_exec(
        path,
        &format!(
            "#!/bin/sh\necho '{label}' >> '{}'\nexec '{}' \"$@\"\n",
            trace.display(),
            target.display()
        ),
    );
}

/// A fake interpreter that answers flowrun's probe (`-I -S -c SCRIPT`, printing
/// `sys.executable`, the version and the implementation) as Python `version` would, reporting
/// itself as the executable. Anything else fails.
fn write_fake_python(path: &Path, trace: &Path, label: &str, version: &str) {
    write_exec(
        path,
        &format!(
            "#!/bin/sh\necho '{label}' >> '{trace}'\n\
             if [ \"$1\" = -I ] && [ \"$2\" = -S ] && [ \"$3\" = -c ]; then\n  \
             echo '{exe}'\n  echo '{version}'\n  echo cpython\n  exit 0\nfi\n\
             echo \"fake python: unexpected arguments $*\" >&2\nexit 2\n",
            trace = trace.display(),
            exe = path.display(),
        ),
    );
}

/// Lines of a trace file (none when it does not exist yet).
fn trace(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// A `PATH` made of these directories only.
fn path_of(dirs: &[&Path]) -> OsString {
    std::env::join_paths(dirs).unwrap()
}

/// `flowrun` with this env's database and cache and `PATH` set to `path`. Nothing else that could
/// pick an interpreter or change Python's behaviour is inherited from the test's environment:
/// the common command removes `FLOWRUN_PYTHON`, `VIRTUAL_ENV`, `PYTHON*`, `PYENV_VERSION` and
/// pip's index variables (`common::SCRUBBED`).
fn flowrun(env: &Env, path: &OsString) -> Command {
    let mut cmd = env.flowrun();
    cmd.env("PATH", path);
    cmd
}

/// `flowrun doctor --json ARGS`, parsed, with its exit code.
fn doctor_json(mut cmd: Command, args: &[&str]) -> (Option<i32>, Value) {
    let out = output(cmd.arg("doctor").arg("--json").args(args));
    let report = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("doctor --json prints JSON ({e})\n{}", describe(&out)));
    (out.status.code(), report)
}

/// A one-node workflow whose code node runs `code`.
fn code_workflow(env: &Env, name: &str, code: &str, requirements: &[&str]) -> PathBuf {
    let mut node = json!({ "id": "probe", "type": "code", "code": code });
    if !requirements.is_empty() {
        node["requirements"] = json!(requirements);
    }
    env.write_workflow(name, &json!({ "id": "pyenv-test", "nodes": [node] }))
}

/// Reports which interpreter ran the node and how.
const WHERE_CODE: &str = "import sys\nreturn {'executable': sys.executable, 'prefix': sys.prefix, \
     'isolated': sys.flags.isolated, 'no_site': sys.flags.no_site}";

/// The output of node `probe` of the only execution, asserting it succeeded.
fn probe_output(env: &Env) -> Value {
    let id = env.only_execution_id();
    let node = env.node(&id, "probe");
    assert_eq!(node.status, "success", "{node:?}");
    node.output.expect("node output")
}

/// The output of node `probe` of the newest execution, asserting it succeeded.
fn last_probe_output(env: &Env) -> Value {
    let id = env.execution_ids().pop().expect("an execution");
    let node = env.node(&id, "probe");
    assert_eq!(node.status, "success", "{node:?}");
    node.output.expect("node output")
}

/// Builds `flowrun_test_pkg-1.0.0-py3-none-any.whl` (module `flowrun_test_pkg` with
/// `VALUE = "ok"`) into `dir` with Python's zipfile, as a build backend would.
fn build_wheel(dir: &Path) -> PathBuf {
    const BUILD: &str = r#"
import base64, hashlib, os, sys, zipfile
files = {
    "flowrun_test_pkg/__init__.py": 'VALUE = "ok"\n',
    "flowrun_test_pkg-1.0.0.dist-info/METADATA":
        "Metadata-Version: 2.1\nName: flowrun-test-pkg\nVersion: 1.0.0\n",
    "flowrun_test_pkg-1.0.0.dist-info/WHEEL":
        "Wheel-Version: 1.0\nGenerator: flowrun-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
}
record = []
for name, text in files.items():
    data = text.encode()
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    record.append("%s,sha256=%s,%d" % (name, digest, len(data)))
record.append("flowrun_test_pkg-1.0.0.dist-info/RECORD,,")
files["flowrun_test_pkg-1.0.0.dist-info/RECORD"] = "\n".join(record) + "\n"
path = os.path.join(sys.argv[1], "flowrun_test_pkg-1.0.0-py3-none-any.whl")
with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
    for name, text in files.items():
        z.writestr(name, text)
print(path)
"#;
    std::fs::create_dir_all(dir).unwrap();
    let out = std::process::Command::new(&real_python().exe)
        .args(["-I", "-c", BUILD])
        .arg(dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "building the wheel failed: {out:?}");
    let wheel = PathBuf::from(String::from_utf8(out.stdout).unwrap().trim());
    assert!(wheel.is_file());
    wheel
}

/// Managed environments under `<cache>/venvs/`.
/// A wheel of the test package in `<env>/wheels`, and a PATH whose only `python3` is the real
/// interpreter: what the install tests start from.
fn offline_setup(env: &Env) -> (PathBuf, OsString) {
    let wheels = env.path("wheels");
    build_wheel(&wheels);
    let bin = env.path("bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::os::unix::fs::symlink(&real_python().exe, bin.join("python3")).unwrap();
    (wheels, path_of(&[&bin]))
}

fn venvs(env: &Env) -> Vec<PathBuf> {
    match std::fs::read_dir(env.cache_dir().join("venvs")) {
        Ok(rd) => rd.map(|e| e.unwrap().path()).collect(),
        Err(_) => Vec::new(),
    }
}

const PKG: &str = "flowrun-test-pkg>=1.0";
const PKG_CODE: &str = "import sys\nimport flowrun_test_pkg\n\
     return {'value': flowrun_test_pkg.VALUE, 'prefix': sys.prefix, \
     'isolated': sys.flags.isolated, 'no_site': sys.flags.no_site}";

/// `PIP_NO_INDEX=1 PIP_FIND_LINKS=dir`: pip installs only from `dir`, no network.
fn offline_pip(cmd: &mut Command, find_links: &Path) {
    cmd.env("PIP_NO_INDEX", "1")
        .env("PIP_FIND_LINKS", find_links)
        .env("PIP_DISABLE_PIP_VERSION_CHECK", "1");
}

// ---------------------------------------------------------------------------------------------
// 1. Discovery order and the shim cache
// ---------------------------------------------------------------------------------------------

#[test]
fn discovery_order_flag_then_env_then_venv_then_python3_then_python() {
    let env = Env::new();
    let real = &real_python().exe;
    let log = env.path("trace.log");
    let explicit = env.path("explicit/python");
    let from_env = env.path("flowrun-python/python");
    let venv = env.path("venv");
    let path_dir = env.path("path-bin");
    let only_python_dir = env.path("only-python-bin");
    let empty_venv = env.path("empty-venv");
    std::fs::create_dir_all(&empty_venv).unwrap();
    write_shim(&explicit, &log, "explicit", real);
    write_shim(&from_env, &log, "FLOWRUN_PYTHON", real);
    write_shim(&venv.join("bin/python"), &log, "VIRTUAL_ENV", real);
    write_shim(&path_dir.join("python3"), &log, "PATH python3", real);
    write_shim(&path_dir.join("python"), &log, "PATH python", real);
    write_shim(
        &only_python_dir.join("python"),
        &log,
        "PATH python only",
        real,
    );
    let path = path_of(&[&path_dir]);

    // Each step removes the winner of the step before; each candidate is probed exactly once.
    struct Step<'a> {
        found_by: &'a str,
        vars: Vec<(&'a str, &'a Path)>,
        args: Vec<&'a std::ffi::OsStr>,
        path: OsString,
        label: &'a str,
        candidate: PathBuf,
    }
    let steps = [
        Step {
            found_by: "--python",
            vars: vec![("FLOWRUN_PYTHON", &from_env), ("VIRTUAL_ENV", &venv)],
            args: vec!["--python".as_ref(), explicit.as_os_str()],
            path: path.clone(),
            label: "explicit",
            candidate: explicit.clone(),
        },
        Step {
            found_by: "FLOWRUN_PYTHON",
            vars: vec![("FLOWRUN_PYTHON", &from_env), ("VIRTUAL_ENV", &venv)],
            args: vec![],
            path: path.clone(),
            label: "FLOWRUN_PYTHON",
            candidate: from_env.clone(),
        },
        Step {
            found_by: "VIRTUAL_ENV",
            vars: vec![("VIRTUAL_ENV", &venv)],
            args: vec![],
            path: path.clone(),
            label: "VIRTUAL_ENV",
            candidate: venv.join("bin/python"),
        },
        // A VIRTUAL_ENV without bin/python is passed over.
        Step {
            found_by: "PATH",
            vars: vec![("VIRTUAL_ENV", &empty_venv)],
            args: vec![],
            path: path.clone(),
            label: "PATH python3",
            candidate: path_dir.join("python3"),
        },
        Step {
            found_by: "PATH",
            vars: vec![],
            args: vec![],
            path: path_of(&[&only_python_dir]),
            label: "PATH python only",
            candidate: only_python_dir.join("python"),
        },
    ];
    let mut expected_trace = Vec::new();
    for step in &steps {
        let mut cmd = flowrun(&env, &step.path);
        for (k, v) in &step.vars {
            cmd.env(k, v);
        }
        cmd.arg("doctor").arg("--json").args(&step.args);
        let out = output(&mut cmd);
        assert_success(&out, &format!("doctor, {} step", step.found_by));
        let report: Value = serde_json::from_slice(&out.stdout).unwrap();
        let py = &report["python"];
        assert_eq!(py["found_by"], json!(step.found_by), "{py:#}");
        assert_eq!(py["candidate"], json!(step.candidate), "{py:#}");
        // The shim is resolved to the real executable.
        assert_eq!(py["executable"], json!(real), "{py:#}");
        assert_eq!(py["implementation"], json!("cpython"), "{py:#}");
        assert_eq!(
            py["version"]
                .as_str()
                .map(|v| v.starts_with(&format!("{}.", real_python().xy))),
            Some(true),
            "{py:#}"
        );
        expected_trace.push(step.label.to_string());
        assert_eq!(
            trace(&log),
            expected_trace,
            "after the {} step",
            step.found_by
        );
    }

    // The same order holds for `run`: --python wins over everything, and the run spawns the
    // real executable behind it (the shim was probed once above and is cached).
    let wf = code_workflow(&env, "where.json", WHERE_CODE, &[]);
    let out = output(
        flowrun(&env, &path)
            .env("FLOWRUN_PYTHON", &from_env)
            .env("VIRTUAL_ENV", &venv)
            .args(["run", "--python"])
            .arg(&explicit)
            .arg(&wf),
    );
    assert_success(&out, "run --python");
    assert_eq!(probe_output(&env)["executable"], json!(real));
    assert_eq!(trace(&log), expected_trace, "run used the cached answer");

    // python3 anywhere on PATH beats python earlier on PATH.
    let (code, report) = doctor_json(flowrun(&env, &path_of(&[&only_python_dir, &path_dir])), &[]);
    assert_eq!(code, Some(0), "{report:#}");
    assert_eq!(
        report["python"]["candidate"],
        json!(path_dir.join("python3"))
    );

    // The cache directory and the database are reported too.
    assert_eq!(report["cache_dir"], json!(env.cache_dir()));
    assert_eq!(report["database"]["path"], json!(env.db_path()));
}

#[test]
fn shim_is_resolved_once_and_cached() {
    let env = Env::new();
    let real = &real_python().exe;
    let log = env.path("shim.log");
    let bin = env.path("shims");
    // Like pyenv's shim: a bash script that execs the real binary.
    write_exec(
        &bin.join("python3"),
        &format!(
            "#!/usr/bin/env bash\nset -e\necho \"shim $*\" >> '{}'\nexec '{}' \"$@\"\n",
            log.display(),
            real.display()
        ),
    );
    // `/usr/bin/env bash` needs bash on PATH: the shim dir first, then the system's.
    let path = path_of(&[&bin, Path::new("/usr/bin"), Path::new("/bin")]);
    let wf = code_workflow(&env, "where.json", WHERE_CODE, &[]);

    for run in 1..=2 {
        let out = output(flowrun(&env, &path).arg("run").arg(&wf));
        assert_success(&out, &format!("run {run} through the shim"));
        // Only the first run asked the shim (one probe); the runs spawned the real binary.
        assert_eq!(trace(&log).len(), 1, "run {run}: {:?}", trace(&log));
        assert!(
            trace(&log)[0].starts_with("shim -I -S -c "),
            "{:?}",
            trace(&log)
        );
        let out = last_probe_output(&env);
        assert_eq!(out["executable"], json!(real), "run {run}: {out:#}");
    }

    // The answer is in the cache, keyed by the shim.
    let cache: Value = serde_json::from_slice(
        &std::fs::read(env.cache_dir().join("interpreters.json")).expect("interpreters.json"),
    )
    .unwrap();
    let entries = cache.as_array().expect("a list of entries");
    assert_eq!(entries.len(), 1, "{cache:#}");
    assert_eq!(entries[0]["candidate"], json!(bin.join("python3")));
    assert_eq!(entries[0]["interpreter"]["executable"], json!(real));

    // doctor does not trust the cache: it asks the shim again (a shim's answer can change while
    // the shim does not), says what it resolved to, and refreshes the cache for the next run.
    let (code, report) = doctor_json(flowrun(&env, &path), &[]);
    assert_eq!(code, Some(0), "{report:#}");
    assert_eq!(report["python"]["candidate"], json!(bin.join("python3")));
    assert_eq!(report["python"]["executable"], json!(real));
    assert_eq!(report["python"]["found_by"], json!("PATH"));
    assert_eq!(trace(&log).len(), 2, "{:?}", trace(&log));
    assert_success(
        &output(flowrun(&env, &path).arg("run").arg(&wf)),
        "run after doctor",
    );
    assert_eq!(trace(&log).len(), 2, "{:?}", trace(&log));

    let out = output(flowrun(&env, &path).arg("doctor"));
    assert_success(&out, "doctor");
    let text = stdout(&out);
    assert!(
        text.contains(&format!(
            "{} (cpython {}.",
            real.display(),
            real_python().xy
        )) && text.contains(&format!("via {}", bin.join("python3").display())),
        "{text}"
    );
}

#[test]
fn version_switch_behind_a_shim_is_picked_up_by_doctor() {
    // Like `pyenv global X`: the shim file stays the same, a version file it reads changes.
    let env = Env::new();
    let real = &real_python().exe;
    let log = env.path("trace.log");
    let bin = env.path("shims");
    let version_file = env.path("version");
    let alt = env.path("versions/alt/bin/python3");
    std::fs::create_dir_all(alt.parent().unwrap()).unwrap();
    std::os::unix::fs::symlink(real, &alt).unwrap();
    std::fs::write(&version_file, format!("{}\n", real.display())).unwrap();
    write_exec(
        &bin.join("python3"),
        &format!(
            "#!/bin/sh\necho shim >> '{}'\nread -r target < '{}'\nexec \"$target\" \"$@\"\n",
            log.display(),
            version_file.display()
        ),
    );
    let path = path_of(&[&bin]);
    let wf = code_workflow(&env, "where.json", WHERE_CODE, &[]);
    let run = || {
        let out = output(flowrun(&env, &path).arg("run").arg(&wf));
        assert_success(&out, "run");
        last_probe_output(&env)["executable"].clone()
    };

    assert_eq!(run(), json!(real));
    std::fs::write(&version_file, format!("{}\n", alt.display())).unwrap();
    // The run trusts the cached answer (the shim file did not change): documented.
    assert_eq!(run(), json!(real));
    assert_eq!(trace(&log).len(), 1);
    // doctor asks again, reports the switch and refreshes the cache; runs follow.
    let (code, report) = doctor_json(flowrun(&env, &path), &[]);
    assert_eq!(code, Some(0), "{report:#}");
    assert_eq!(report["python"]["executable"], json!(alt), "{report:#}");
    assert_eq!(run(), json!(alt));
    assert_eq!(trace(&log).len(), 2);
}

#[test]
fn python_flag_takes_a_command_name_or_a_relative_path() {
    let env = Env::new();
    let real = &real_python().exe;
    let log = env.path("trace.log");
    let bin = env.path("bin");
    write_shim(&bin.join("python3.99"), &log, "named", real);
    write_shim(&env.path("here/py"), &log, "relative", real);
    let path = path_of(&[&bin]);
    let wf = code_workflow(&env, "where.json", WHERE_CODE, &[]);

    // A bare name is looked up on PATH, as a shell would.
    for (found_by, mut cmd) in [
        ("--python", {
            let mut c = flowrun(&env, &path);
            c.args(["doctor", "--json", "--python", "python3.99"]);
            c
        }),
        ("FLOWRUN_PYTHON", {
            let mut c = flowrun(&env, &path);
            c.env("FLOWRUN_PYTHON", "python3.99")
                .args(["doctor", "--json"]);
            c
        }),
    ] {
        let out = output(&mut cmd);
        assert_success(&out, found_by);
        let report: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(report["python"]["found_by"], json!(found_by), "{report:#}");
        assert_eq!(
            report["python"]["candidate"],
            json!(bin.join("python3.99")),
            "{report:#}"
        );
        assert_eq!(report["python"]["executable"], json!(real), "{report:#}");
    }
    let out = output(
        flowrun(&env, &path)
            .args(["run", "--python", "python3.99"])
            .arg(&wf),
    );
    assert_success(&out, "run --python python3.99");
    assert_eq!(last_probe_output(&env)["executable"], json!(real));

    // A relative path is taken from the working directory and cached as an absolute path.
    let out = output(
        flowrun(&env, &path)
            .args(["run", "--python", "here/py"])
            .arg(&wf),
    );
    assert_success(&out, "run --python here/py");
    let cache = std::fs::read_to_string(env.cache_dir().join("interpreters.json")).unwrap();
    assert!(
        cache.contains(&format!("{:?}", env.path("here/py").display().to_string())),
        "{cache}"
    );
    assert_eq!(trace(&log), ["named", "named", "relative"]);

    // A name that is neither on PATH nor a file.
    let out = output(
        flowrun(&env, &path)
            .args(["run", "--python", "python2.7"])
            .arg(&wf),
    );
    assert_code(&out, 3, "run --python python2.7");
    assert!(
        stderr(&out).contains(
            "python2.7 (from --python) does not work as a Python interpreter: \
             no such file, and no such command on PATH"
        ),
        "{}",
        describe(&out)
    );
}

// ---------------------------------------------------------------------------------------------
// 2. Too old, missing, broken
// ---------------------------------------------------------------------------------------------

#[test]
fn too_old_interpreter_exits_3_with_install_hints() {
    let env = Env::new();
    let log = env.path("old.log");
    let bin = env.path("old-bin");
    write_fake_python(&bin.join("python3"), &log, "old", "3.8.10");
    let path = path_of(&[&bin]);
    let wf = code_workflow(&env, "wf.json", "return 1", &[]);

    let out = output(flowrun(&env, &path).arg("run").arg(&wf));
    assert_code(&out, 3, "run with Python 3.8");
    let err = stderr(&out);
    for needle in [
        bin.join("python3").display().to_string().as_str(),
        "Python 3.8.10",
        "3.9 or newer",
        "Debian/Ubuntu: sudo apt install python3",
        "macOS: brew install",
        "Windows: winget install",
        "--python",
        "FLOWRUN_PYTHON",
    ] {
        assert!(err.contains(needle), "missing {needle:?} in:\n{err}");
    }
    assert_eq!(env.execution_count(), 0, "nothing may be recorded");
    assert_eq!(trace(&log), ["old"], "probed once, never run");

    // doctor says the same, with exit 3.
    let (code, report) = doctor_json(flowrun(&env, &path), &[]);
    assert_eq!(code, Some(3), "{report:#}");
    let e = report["python"]["error"].as_str().expect("python.error");
    assert!(e.contains("3.8.10") && e.contains("3.9"), "{e}");
}

#[test]
fn missing_interpreter_exits_3_with_a_clear_message() {
    let env = Env::new();
    let wf = code_workflow(&env, "wf.json", "return 1", &[]);
    let empty = env.path("empty-bin");
    std::fs::create_dir_all(&empty).unwrap();

    // --python naming nothing.
    let out = output(
        flowrun(&env, &path_of(&[&empty]))
            .args(["run", "--python", "/nonexistent/python3"])
            .arg(&wf),
    );
    assert_code(&out, 3, "run --python /nonexistent");
    let err = stderr(&out);
    assert!(
        err.contains("/nonexistent/python3")
            && err.contains("--python")
            && err.contains("no such file"),
        "{err}"
    );

    // Nothing on PATH (an empty directory, an empty PATH, no PATH at all).
    let no_path = |cmd: &mut Command| -> std::process::Output { output(cmd.arg("run").arg(&wf)) };
    for (what, out) in [
        (
            "an empty dir",
            no_path(&mut flowrun(&env, &path_of(&[&empty]))),
        ),
        ("PATH=''", no_path(&mut flowrun(&env, &OsString::new()))),
        (
            "no PATH",
            no_path(flowrun(&env, &OsString::new()).env_remove("PATH")),
        ),
    ] {
        assert_code(&out, 3, what);
        let err = stderr(&out);
        assert!(
            err.contains("no Python interpreter found")
                && err.contains("python3/python on PATH")
                && err.contains("Debian/Ubuntu")
                && err.contains("macOS")
                && err.contains("Windows"),
            "{what}: {err}"
        );
    }
    assert_eq!(env.execution_count(), 0);

    // doctor: exit 3 and the error in the report; a workflow given is "not checked" (not
    // reported as missing packages).
    let needs = code_workflow(&env, "needs.json", "return 1", &[PKG]);
    let (code, report) = doctor_json(
        flowrun(&env, &path_of(&[&empty])),
        &[wf.to_str().unwrap(), needs.to_str().unwrap()],
    );
    assert_eq!(code, Some(3), "{report:#}");
    assert!(
        report["python"]["error"]
            .as_str()
            .is_some_and(|e| e.contains("no Python interpreter found")),
        "{report:#}"
    );
    for w in report["workflows"].as_array().unwrap() {
        assert_eq!(w["status"], json!("not checked"), "{report:#}");
    }
    let out = output(flowrun(&env, &path_of(&[&empty])).arg("doctor").arg(&needs));
    assert_code(&out, 3, "doctor FILE without an interpreter");
    let text = stdout(&out);
    assert!(
        text.contains("needs.json: not checked, there is no working Python interpreter")
            && !text.contains("fix with"),
        "{text}"
    );
}

#[test]
fn broken_interpreter_exits_3_naming_it() {
    let env = Env::new();
    let bin = env.path("bin");
    write_exec(
        &bin.join("python3"),
        "#!/bin/sh\necho 'error while loading shared libraries: libpython3.so' >&2\nexit 127\n",
    );
    let wf = code_workflow(&env, "wf.json", "return 1", &[]);
    let out = output(flowrun(&env, &path_of(&[&bin])).arg("run").arg(&wf));
    assert_code(&out, 3, "run with a broken python3");
    let err = stderr(&out);
    assert!(
        err.contains(&bin.join("python3").display().to_string())
            && err.contains("does not work as a Python interpreter")
            && err.contains("libpython3.so"),
        "{err}"
    );
    assert_eq!(env.execution_count(), 0);
}

// ---------------------------------------------------------------------------------------------
// 3. Cache invalidation
// ---------------------------------------------------------------------------------------------

#[test]
fn changed_interpreter_is_probed_again() {
    let env = Env::new();
    let real = &real_python().exe;
    let log = env.path("trace.log");
    let bin = env.path("bin");
    let shim = bin.join("python3");
    let path = path_of(&[&bin]);
    let wf = code_workflow(&env, "where.json", WHERE_CODE, &[]);
    let run = || output(flowrun(&env, &path).arg("run").arg(&wf));

    // 1. The shim execs the real interpreter: probed once, then cached.
    write_shim(&shim, &log, "shim v1", real);
    assert_success(&run(), "first run");
    assert_success(&run(), "second run");
    assert_eq!(trace(&log), ["shim v1"]);
    assert_eq!(last_probe_output(&env)["executable"], json!(real));

    // 2. Rewritten to point at a fake that reports Python 3.8: probed again, and refused.
    let old = env.path("old/python3.8");
    write_fake_python(&old, &log, "fake 3.8", "3.8.10");
    write_shim(&shim, &log, "shim v2 (to an old fake)", &old);
    let out = run();
    assert_code(&out, 3, "run after the shim changed to an old interpreter");
    assert!(stderr(&out).contains("Python 3.8.10"), "{}", describe(&out));
    assert_eq!(trace(&log)[1..], ["shim v2 (to an old fake)", "fake 3.8"]);

    // 3. The shim is unchanged but the executable it resolved to changed (an upgrade in
    //    place): the cached answer is not trusted.
    write_fake_python(&old, &log, "fake 3.8 upgraded", "3.8.20");
    let out = run();
    assert_code(&out, 3, "run after the executable changed");
    assert!(stderr(&out).contains("Python 3.8.20"), "{}", describe(&out));
    assert_eq!(
        trace(&log)[3..],
        ["shim v2 (to an old fake)", "fake 3.8 upgraded"]
    );

    // 4. Rewritten again to exec the real interpreter through another path: the new path is
    //    used to run the workflow, and cached again.
    let alt = env.path("alt/python3");
    std::fs::create_dir_all(alt.parent().unwrap()).unwrap();
    std::os::unix::fs::symlink(real, &alt).unwrap();
    write_shim(&shim, &log, "shim v3 (to another path)", &alt);
    assert_success(&run(), "run after the shim changed to another path");
    assert_success(&run(), "and again");
    assert_eq!(trace(&log)[5..], ["shim v3 (to another path)"]);
    assert_eq!(last_probe_output(&env)["executable"], json!(alt));
    assert_eq!(trace(&log).len(), 6, "{:?}", trace(&log));
    let (_, report) = doctor_json(flowrun(&env, &path), &[]);
    assert_eq!(report["python"]["executable"], json!(alt), "{report:#}");
}

// ---------------------------------------------------------------------------------------------
// 4. Isolated mode
// ---------------------------------------------------------------------------------------------

#[test]
fn requirement_free_workflow_runs_isolated_without_site() {
    let env = Env::new();
    let real = &real_python().exe;
    let xy = &real_python().xy;
    let markers = env.path("markers");
    std::fs::create_dir_all(&markers).unwrap();
    let marker_code = |name: &str| {
        format!(
            "open({:?}, 'w').write('ran')\n",
            markers.join(name).display().to_string()
        )
    };
    // A directory on PYTHONPATH with a module and a sitecustomize.
    let evil = env.path("evil");
    std::fs::create_dir_all(&evil).unwrap();
    std::fs::write(evil.join("sneaky.py"), "VALUE = 'sneaky'\n").unwrap();
    std::fs::write(evil.join("sitecustomize.py"), marker_code("sitecustomize")).unwrap();
    // A user base whose site-packages has a usercustomize and a .pth file that runs code and
    // adds a directory with another module.
    let userbase = env.path("userbase");
    let user_site = userbase.join(format!("lib/python{xy}/site-packages"));
    let user_dir = env.path("user-modules");
    std::fs::create_dir_all(&user_site).unwrap();
    std::fs::create_dir_all(&user_dir).unwrap();
    std::fs::write(user_dir.join("sneaky_user.py"), "VALUE = 1\n").unwrap();
    std::fs::write(
        user_site.join("usercustomize.py"),
        marker_code("usercustomize"),
    )
    .unwrap();
    std::fs::write(
        user_site.join("zz-sneaky.pth"),
        format!(
            "{}\nimport os; open({:?}, 'w').write('ran')\n",
            user_dir.display(),
            markers.join("pth").display().to_string()
        ),
    )
    .unwrap();
    let startup = env.path("startup.py");
    std::fs::write(&startup, marker_code("startup")).unwrap();
    let vars: [(&str, &Path); 3] = [
        ("PYTHONPATH", &evil),
        ("PYTHONUSERBASE", &userbase),
        ("PYTHONSTARTUP", &startup),
    ];
    let marker_files = || -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(&markers)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };

    // Control: this set-up does reach a Python started without -I/-S.
    let mut control = std::process::Command::new(real);
    control
        .args(["-c", "import sneaky, sneaky_user"])
        .env_remove("PYTHONNOUSERSITE")
        .env_remove("PYTHONSAFEPATH");
    for (k, v) in vars {
        control.env(k, v);
    }
    let out = control.output().unwrap();
    assert!(out.status.success(), "control run: {out:?}");
    assert_eq!(marker_files(), ["pth", "sitecustomize", "usercustomize"]);
    for m in marker_files() {
        std::fs::remove_file(markers.join(m)).unwrap();
    }

    let code = "import os, sys\n\
        found = []\n\
        for name in ('sneaky', 'sneaky_user'):\n    \
            try:\n        \
                __import__(name)\n        \
                found.append(name)\n    \
            except ImportError:\n        \
                pass\n\
        return {'found': found, 'isolated': sys.flags.isolated, \
                'no_site': sys.flags.no_site, 'site_imported': 'site' in sys.modules, \
                'pythonpath': os.environ.get('PYTHONPATH')}";
    let wf = code_workflow(&env, "isolated.json", code, &[]);
    let bin = env.path("bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::os::unix::fs::symlink(real, bin.join("python3")).unwrap();
    let path = path_of(&[&bin]);

    // With --inherit-env the variables reach the child, and -I makes them not matter; with
    // --env likewise; by default they do not even reach it.
    let mut runs: Vec<(&str, Command, Option<&Path>)> = Vec::new();
    let mut inherit = flowrun(&env, &path);
    inherit.args(["run", "--inherit-env"]).arg(&wf);
    for (k, v) in vars {
        inherit.env(k, v);
    }
    runs.push(("--inherit-env", inherit, Some(&evil)));
    let mut with_env = flowrun(&env, &path);
    with_env.arg("run").arg(&wf);
    for (k, v) in vars {
        with_env.arg("--env").arg(format!("{k}={}", v.display()));
    }
    runs.push(("--env", with_env, Some(&evil)));
    let mut plain = flowrun(&env, &path);
    plain.arg("run").arg(&wf);
    for (k, v) in vars {
        plain.env(k, v);
    }
    runs.push(("default environment", plain, None));

    for (what, mut cmd, pythonpath) in runs {
        let out = output(&mut cmd);
        assert_success(&out, what);
        let result = last_probe_output(&env);
        assert_eq!(result["found"], json!([]), "{what}: {result:#}");
        assert_eq!(result["isolated"], json!(1), "{what}: {result:#}");
        assert_eq!(result["no_site"], json!(1), "{what}: {result:#}");
        assert_eq!(result["site_imported"], json!(false), "{what}: {result:#}");
        assert_eq!(
            result["pythonpath"],
            json!(pythonpath),
            "{what}: {result:#}"
        );
        assert_eq!(marker_files(), Vec::<String>::new(), "{what}");
    }
}

// ---------------------------------------------------------------------------------------------
// 5. Missing requirements
// ---------------------------------------------------------------------------------------------

#[test]
fn missing_requirement_exits_3_before_spawning() {
    let env = Env::new();
    let real = &real_python().exe;
    let log = env.path("trace.log");
    let bin = env.path("bin");
    write_shim(&bin.join("python3"), &log, "python3", real);
    let path = path_of(&[&bin]);
    let wf = code_workflow(&env, "needs-pkg.json", PKG_CODE, &[PKG]);

    let out = output(flowrun(&env, &path).arg("run").arg(&wf));
    assert_code(&out, 3, "run with a missing requirement");
    let err = stderr(&out);
    for needle in [
        "flowrun-test-pkg>=1.0 (not installed)",
        "flowrun doctor --fix",
        "flowrun run --install-deps",
        "python3 -m pip install 'flowrun-test-pkg>=1.0'",
    ] {
        assert!(err.contains(needle), "missing {needle:?} in:\n{err}");
    }
    assert_eq!(
        env.execution_count(),
        0,
        "nothing spawned, nothing recorded"
    );

    // doctor FILE: exit 3, the package named with the fix command.
    let out = output(flowrun(&env, &path).arg("doctor").arg(&wf));
    assert_code(&out, 3, "doctor FILE");
    let text = stdout(&out);
    assert!(
        text.contains("missing flowrun-test-pkg>=1.0 (not installed)")
            && text.contains("flowrun doctor --fix"),
        "{text}"
    );

    // doctor --json FILE lists it.
    let (code, report) = doctor_json(flowrun(&env, &path), &[wf.to_str().unwrap()]);
    assert_eq!(code, Some(3), "{report:#}");
    let w = &report["workflows"][0];
    assert_eq!(w["file"], json!(wf), "{report:#}");
    assert_eq!(w["status"], json!("missing"), "{report:#}");
    assert_eq!(w["requirements"], json!([PKG]), "{report:#}");
    assert_eq!(
        w["missing"],
        json!([{ "requirement": PKG, "reason": "not installed" }]),
        "{report:#}"
    );
    // No managed environment was created by looking.
    assert!(venvs(&env).is_empty(), "{:?}", venvs(&env));
}

// ---------------------------------------------------------------------------------------------
// 6. Installing into a managed environment (real pip, a wheel built here, no network)
// ---------------------------------------------------------------------------------------------

#[test]
fn doctor_fix_installs_a_local_wheel_then_the_run_succeeds() {
    let env = Env::new();
    let (wheels, path) = offline_setup(&env);
    let wf = code_workflow(&env, "needs-pkg.json", PKG_CODE, &[PKG]);

    let mut fix = flowrun(&env, &path);
    fix.args(["doctor", "--fix"]).arg(&wf);
    offline_pip(&mut fix, &wheels);
    let out = output(&mut fix);
    assert_success(&out, "doctor --fix");
    let err = stderr(&out);
    assert!(
        err.contains("creating a virtual environment")
            && err.contains("installing flowrun-test-pkg>=1.0")
            && err.contains("Successfully installed flowrun-test-pkg-1.0.0"),
        "installation progress is shown:\n{}",
        describe(&out)
    );
    assert!(
        stdout(&out).contains("flowrun-test-pkg>=1.0 satisfied by"),
        "{}",
        describe(&out)
    );

    // One managed environment, under the cache directory.
    let list = venvs(&env);
    assert_eq!(list.len(), 1, "{list:?}");
    let venv = &list[0];
    assert!(venv.join("bin/python").exists(), "{venv:?}");

    // doctor now reports it satisfied by that environment.
    let (code, report) = doctor_json(flowrun(&env, &path), &[wf.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{report:#}");
    assert_eq!(report["workflows"][0]["status"], json!("ok"), "{report:#}");
    assert_eq!(
        report["workflows"][0]["interpreter"],
        json!(venv.join("bin/python")),
        "{report:#}"
    );

    // The check follows pip's rules: names are normalized, versions compared as versions.
    let venv_python = venv.join("bin/python");
    let other = code_workflow(
        &env,
        "spellings.json",
        "return 1",
        &[
            "Flowrun_Test.PKG==1.0.0",
            "flowrun-test-pkg>=1.0.0rc1,<1.1",
            "flowrun-test-pkg>=1.10",
        ],
    );
    let (code, report) = doctor_json(
        flowrun(&env, &path),
        &[
            "--python",
            venv_python.to_str().unwrap(),
            other.to_str().unwrap(),
        ],
    );
    assert_eq!(code, Some(3), "{report:#}");
    assert_eq!(
        report["workflows"][0]["missing"],
        json!([{ "requirement": "flowrun-test-pkg>=1.10", "reason": "found 1.0.0" }]),
        "{report:#}"
    );

    // And the run uses it, with site (packages live there) but still isolated (-I).
    let out = output(flowrun(&env, &path).arg("run").arg(&wf));
    assert_success(&out, "run after doctor --fix");
    let result = probe_output(&env);
    assert_eq!(result["value"], json!("ok"), "{result:#}");
    assert_eq!(result["prefix"], json!(venv), "{result:#}");
    assert_eq!(result["isolated"], json!(1), "{result:#}");
    assert_eq!(result["no_site"], json!(0), "{result:#}");
}

#[test]
fn run_install_deps_installs_on_a_fresh_cache() {
    let env = Env::new();
    let (wheels, path) = offline_setup(&env);
    let wf = code_workflow(&env, "needs-pkg.json", PKG_CODE, &[PKG]);
    assert!(!env.cache_dir().exists());

    let mut run = flowrun(&env, &path);
    run.args(["run", "--install-deps"]).arg(&wf);
    offline_pip(&mut run, &wheels);
    let out = output(&mut run);
    assert_success(&out, "run --install-deps");
    assert!(
        stderr(&out).contains("Successfully installed flowrun-test-pkg-1.0.0"),
        "{}",
        describe(&out)
    );
    let result = probe_output(&env);
    assert_eq!(result["value"], json!("ok"), "{result:#}");
    let list = venvs(&env);
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(result["prefix"], json!(list[0]), "{result:#}");

    // The next run finds the environment without installing (and without pip's variables).
    let out = output(
        flowrun(&env, &path)
            .args(["run", "--install-deps"])
            .arg(&wf),
    );
    assert_success(&out, "second run --install-deps");
    assert!(!stderr(&out).contains("installing"), "{}", describe(&out));
    assert_eq!(last_probe_output(&env)["value"], json!("ok"));
    assert_eq!(venvs(&env).len(), 1);
}

#[test]
fn failed_install_names_the_package_and_pips_error() {
    let env = Env::new();
    let (wheels, path) = offline_setup(&env);
    let absent = "flowrun-absent-pkg==2.0";
    let wf = code_workflow(&env, "needs-absent.json", "return 1", &[PKG, absent]);

    let mut run = flowrun(&env, &path);
    run.args(["run", "--install-deps"]).arg(&wf);
    offline_pip(&mut run, &wheels);
    let out = output(&mut run);
    assert_code(&out, 3, "run --install-deps with a package pip cannot find");
    let err = stderr(&out);
    assert!(
        err.contains("pip could not install")
            && err.contains(absent)
            && err.contains(
                "ERROR: Could not find a version that satisfies the requirement \
                 flowrun-absent-pkg==2.0"
            ),
        "{}",
        describe(&out)
    );
    assert_eq!(
        env.execution_count(),
        0,
        "nothing spawned, nothing recorded"
    );

    // doctor --fix --json says the same, and which requirements are still missing.
    let mut fix = flowrun(&env, &path);
    offline_pip(&mut fix, &wheels);
    let (code, report) = doctor_json(fix, &["--fix", wf.to_str().unwrap()]);
    assert_eq!(code, Some(3), "{report:#}");
    let w = &report["workflows"][0];
    assert_eq!(w["status"], json!("install failed"), "{report:#}");
    let e = w["error"].as_str().unwrap_or_default();
    assert!(
        e.contains(absent) && e.contains("Could not find a version"),
        "{report:#}"
    );
    let missing: Vec<&str> = w["missing"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["requirement"].as_str().unwrap())
        .collect();
    assert!(missing.contains(&absent), "{report:#}");
}

#[test]
fn satisfied_requirements_are_cached_until_site_packages_change() {
    let env = Env::new();
    let (wheels, path) = offline_setup(&env);
    let wf = code_workflow(&env, "needs-pkg.json", PKG_CODE, &[PKG]);
    let mut run = flowrun(&env, &path);
    run.args(["run", "--install-deps"]).arg(&wf);
    offline_pip(&mut run, &wheels);
    assert_success(&output(&mut run), "run --install-deps");
    assert!(env.cache_dir().join("requirements.json").is_file());

    // Take the package's metadata away without touching site-packages itself: a real check
    // would now say "not installed", so a passing run proves the cached answer was used.
    let venv = venvs(&env).remove(0);
    let site = std::fs::read_dir(venv.join("lib"))
        .unwrap()
        .map(|e| e.unwrap().path().join("site-packages"))
        .next()
        .unwrap();
    let dist_info = site.join("flowrun_test_pkg-1.0.0.dist-info");
    let hidden = env.path("hidden-dist-info");
    let site_mtime = std::fs::metadata(&site).unwrap().modified().unwrap();
    std::fs::rename(&dist_info, &hidden).unwrap();
    // Renaming out of site-packages changes its mtime: put the old one back, as if only the
    // files inside the package's own directory had changed.
    std::fs::File::open(&site)
        .unwrap()
        .set_modified(site_mtime)
        .unwrap();
    let out = output(flowrun(&env, &path).arg("run").arg(&wf));
    assert_success(&out, "run with the cached answer");
    assert_eq!(last_probe_output(&env)["value"], json!("ok"));

    // Anything pip does changes site-packages' mtime: then the check runs again and sees it.
    std::fs::File::open(&site)
        .unwrap()
        .set_modified(std::time::SystemTime::now() + std::time::Duration::from_secs(5))
        .unwrap();
    let out = output(flowrun(&env, &path).arg("run").arg(&wf));
    assert_eq!(out.status.code(), Some(3), "{}", describe(&out));
    assert!(
        stderr(&out).contains("flowrun-test-pkg>=1.0 (not installed)"),
        "{}",
        describe(&out)
    );
}
