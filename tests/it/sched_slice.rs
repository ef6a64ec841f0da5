//! flowrun's own processes (the runner, a cold execution's shepherd) ask for the kernel's
//! shortest scheduler slice, so that their wakeups run at once on a busy machine
//! (`crates/executor/src/sched.rs`); the interpreter that runs a workflow, cold or warm, and a
//! warm template (whose forks are the interpreters) have the default slice, as every process
//! they compete with.

use crate::support::serve::World;
use crate::support::*;
use crate::warm::{code_workflow, run_wait};

/// The runner's slice (`crates/executor/src/sched.rs`, SHORT_SLICE_NS).
const SHORT: i64 = 100_000;

/// A code node that returns its own slice and its parent's (`/proc/PID/sched`, `se.slice`).
const PROBE: &str = "import os\ndef slice_of(p):\n    for line in open('/proc/%s/sched' % p):\n        if line.startswith('se.slice'):\n            return int(line.split(':')[1])\nreturn {'self': slice_of('self'), 'parent': slice_of(os.getppid())}";

/// The slice of `pid` (`self` or a number): needs a kernel with custom slices (6.12) and
/// `/proc/PID/sched` (scheduler debugging, on in common kernels).
fn slice_of(pid: &str) -> i64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/sched"))
        .expect("this test needs /proc/PID/sched (CONFIG_SCHED_DEBUG)");
    text.lines()
        .find(|l| l.starts_with("se.slice"))
        .and_then(|l| l.split(':').nth(1))
        .and_then(|v| v.trim().parse().ok())
        .expect("this test needs a kernel that shows se.slice (Linux 6.6 or later)")
}

#[test]
fn a_workflow_runs_with_the_default_slice_and_flowrun_with_a_short_one() {
    let default = slice_of("self");
    assert_ne!(
        default, SHORT,
        "the test itself runs with the default slice"
    );
    // Cold: the interpreter's parent is its shepherd.
    let env = Env::new();
    let wf = env.write_workflow("probe.json", &code_workflow("probe", PROBE));
    let out = env.run(&wf, "{}", &[]);
    assert_success(&out, "flowrun run");
    let cold = env.node(&env.only_execution_id(), "probe");
    assert_eq!(cold.output()["self"], default, "{:?}", cold.output());
    assert_eq!(cold.output()["parent"], SHORT, "the shepherd's slice");
    // Warm: the interpreter's parent is its template; the server is the runner.
    let w = World::new();
    w.save("probe.json", &code_workflow("probe", PROBE));
    let srv = w.serve(&[]);
    assert_eq!(
        slice_of(&srv.pid().to_string()),
        SHORT,
        "the server's slice"
    );
    let warm = run_wait(&srv, "probe");
    assert_eq!(warm["start"], "warm", "{warm:#}");
    assert_eq!(warm["output"]["self"], default, "{warm:#}");
    assert_eq!(
        warm["output"]["parent"], default,
        "the template's slice: {warm:#}"
    );
}
