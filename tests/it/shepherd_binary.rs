//! Which executable runs as an execution's shepherd: the `flowrun-shepherd` built with this
//! `flowrun` and lying next to it, else `flowrun` itself (`build.rs`: a shepherd of another
//! build is never used). The workflow reads it off its interpreter's parent, the shepherd. And a
//! shepherd crippled by its own execution (its descriptor limit lowered) ends it at once.

use crate::support::*;
use serde_json::json;
use std::path::{Path, PathBuf};

/// The executable of the shepherd that ran a one-node workflow, run by `flowrun` at `program`.
fn shepherd_of_a_run(env: &Env, program: &Path) -> PathBuf {
    let wf = env.write_workflow(
        "parent.json",
        &json!({"id": "parent", "nodes": [{"id": "who", "type": "code",
            "code": "import os\nreturn os.readlink('/proc/%d/exe' % os.getppid())"}]}),
    );
    let out = output(
        assert_cmd::Command::from_std(env.command_of(program))
            .args(["run", wf.to_str().unwrap(), "--json"])
            .timeout(TIMEOUT),
    );
    assert_success(&out, "flowrun run");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    PathBuf::from(v["output"].as_str().unwrap())
}

/// A directory holding a copy of `flowrun`, and the copy's path.
fn copy_of_flowrun(env: &Env, dir: &str) -> PathBuf {
    let dir = env.path(dir);
    std::fs::create_dir_all(&dir).unwrap();
    let copy = dir.join("flowrun");
    std::fs::copy(env!("CARGO_BIN_EXE_flowrun"), &copy).unwrap();
    copy
}

#[test]
fn the_shepherd_binary_of_the_same_build_is_used_and_no_other() {
    let env = Env::new();
    // Built together: the shepherd of this build, next to flowrun.
    let with = copy_of_flowrun(&env, "with");
    let sibling = with.with_file_name("flowrun-shepherd");
    std::fs::copy(env!("CARGO_BIN_EXE_flowrun-shepherd"), &sibling).unwrap();
    assert_eq!(shepherd_of_a_run(&env, &with), sibling);

    // None next to it: flowrun is its own shepherd.
    let alone = copy_of_flowrun(&env, "alone");
    assert_eq!(shepherd_of_a_run(&env, &alone), alone);

    // One of another build (here: a program that would fail every execution): not used.
    let stale = copy_of_flowrun(&env, "stale");
    let other = stale.with_file_name("flowrun-shepherd");
    std::fs::write(&other, "#!/bin/sh\nexit 99\n").unwrap();
    std::fs::set_permissions(&other, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    assert_eq!(shepherd_of_a_run(&env, &stale), stale);
}

/// A node that lowers its shepherd's descriptor limit under what `poll` needs ends its execution
/// at once, as an error: woken after the limit fell (an orphan it adopted ends), a cold shepherd
/// could no longer poll and spun, ending nothing, until the execution's timeout, and for ever
/// once the runner went (a helper found one at 86% of a core, left by the suite).
#[test]
fn a_shepherd_whose_descriptor_limit_fell_ends_the_execution_at_once() {
    use crate::support::faults::{Fx, code_node};
    use std::time::Duration;
    let fx = Fx::new();
    let wf = fx.workflow(
        "crippler",
        &json!({ "id": "crippler", "timeout_ms": 30000, "nodes": [ code_node("c", r#"
            import os, resource, time
            resource.prlimit(os.getppid(), resource.RLIMIT_NOFILE, (0, 0))
            time.sleep(0.2)
            if os.fork() == 0:
                if os.fork() == 0:
                    time.sleep(0.3)  # an orphan, the shepherd's: its end wakes the shepherd
                    os._exit(0)
                os._exit(0)
            os.wait()
            time.sleep(1)
            return 'done'
        "#) ]}),
    );
    let out = fx.flowrun(&["run", wf.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", out.stderr);
    assert!(
        out.elapsed < Duration::from_secs(15),
        "took {:?}",
        out.elapsed
    );
}
