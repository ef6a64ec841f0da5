//! Finding the interpreter: discovery order, the shim cache, `--python`, a changed interpreter.

use super::{
    WHERE_CODE, code_workflow, doctor_json, flowrun, last_probe_output, path_of, probe_output,
    real_python, trace, write_exec, write_fake_python, write_shim,
};
use crate::support::*;
use serde_json::{Value, json};
use std::ffi::OsString;
use std::path::{Path, PathBuf};

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
