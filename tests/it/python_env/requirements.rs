//! Requirements: isolated mode without them, missing ones, installing into a managed environment.

use super::{
    PKG, PKG_CODE, code_workflow, doctor_json, flowrun, last_probe_output, offline_pip,
    offline_setup, path_of, probe_output, real_python, venvs, write_shim,
};
use crate::support::*;
use assert_cmd::Command;
use serde_json::json;
use std::path::Path;

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

    // Two at once: one makes the environment while the other waits for it, then finds it.
    let runs: Vec<_> = (0..2)
        .map(|_| {
            let mut run = flowrun(&env, &path);
            run.args(["run", "--install-deps"]).arg(&wf);
            offline_pip(&mut run, &wheels);
            std::thread::spawn(move || output(&mut run))
        })
        .collect();
    let outs: Vec<_> = runs.into_iter().map(|r| r.join().unwrap()).collect();
    for out in &outs {
        assert_success(out, "run --install-deps");
    }
    assert!(
        outs.iter()
            .any(|o| stderr(o).contains("Successfully installed flowrun-test-pkg-1.0.0")),
        "{}",
        describe(&outs[0])
    );
    let result = last_probe_output(&env);
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

/// The requirement check is bounded like every helper: an interpreter (a shim, a site hook)
/// that floods its output is cut, and said, instead of filling memory; one that hangs is cut
/// at its timeout the same way.
#[test]
fn a_requirement_check_that_floods_is_cut_and_said() {
    let env = Env::new();
    // Answers the probe as Python 3.11 would; floods for anything else (the check).
    let fake = env.write_file(
        "floods",
        "#!/bin/sh\nif [ \"$3\" = \"-c\" ]; then echo \"$0\"; echo 3.11.7; echo cpython; echo a70d0d0a; exit 0; fi\nexec yes flowrun\n",
    );
    std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let wf = code_workflow(&env, "needs-pkg.json", PKG_CODE, &[PKG]);
    let out = env
        .command()
        .args(["run", wf.to_str().unwrap(), "--python"])
        .arg(&fake)
        .output()
        .unwrap();
    assert_code(&out, 3, "a check that floods");
    let err = stderr(&out);
    assert!(err.contains("it printed more than"), "{err}");
    assert_eq!(
        env.execution_count(),
        0,
        "nothing spawned, nothing recorded"
    );
}
