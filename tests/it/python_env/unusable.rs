//! Interpreters that cannot be used: too old, missing, broken (exit 3).

use super::{
    PKG, code_workflow, doctor_json, flowrun, path_of, trace, write_exec, write_fake_python,
};
use crate::support::*;
use assert_cmd::Command;
use serde_json::json;
use std::ffi::OsString;

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
