//! What a node can change of its warm template, or of a spare waiting beside it, from outside —
//! by system calls on another process of its user: stop it, lower its limits (`prlimit`),
//! change its CPUs or its scheduling policy — and what a warm interpreter inherits from the
//! template's start. A later execution sees none of it: it starts, and sees the limits,
//! scheduling and standard streams a cold execution does.

use crate::support::*;
use serde_json::{Value, json};
use std::os::unix::process::CommandExt;

/// What an execution sees of its process: limits, scheduling, and its standard streams; with
/// `tamper` in its trigger, after it changed its template and the spares (as below).
const PROBE: &str = r#"import os, resource, sys
spares = tamper() if trigger.get('tamper') else None
limits = {n: list(resource.getrlimit(getattr(resource, n)))
          for n in ('RLIMIT_FSIZE', 'RLIMIT_NOFILE', 'RLIMIT_CORE', 'RLIMIT_NPROC')}
try:
    sys.stdout.tell()
    tell = 'ok'
except Exception as e:
    tell = type(e).__name__
return {'limits': limits, 'cpus': sorted(os.sched_getaffinity(0)),
        'policy': os.sched_getscheduler(0), 'nice': os.getpriority(os.PRIO_PROCESS, 0),
        'seekable': [s.seekable() for s in (sys.stdin, sys.stdout, sys.stderr)], 'tell': tell,
        'spares': spares}"#;

/// `find_spares(template, me)`: the template's children other than `me` — the spares it made
/// for the next executions — waited for up to 10 s (the template makes them as the execution
/// before this one ends: on a busy machine, maybe only after this one started).
const SPARES: &str = r#"def find_spares(template, me):
  import os, time
  found = []
  deadline = time.monotonic() + 10
  while not found and time.monotonic() < deadline:
    for p in os.listdir('/proc'):
      if p.isdigit() and int(p) != me:
        try:
          stat = open('/proc/%s/stat' % p).read().rpartition(')')[2].split()
        except OSError:
          continue
        if int(stat[1]) == template:
          found.append(int(p))
    if not found:
      time.sleep(0.02)
  return found
"#;

/// Changes its template (its parent) and every spare beside it (the template's other children),
/// lowers the spares' descriptor limit and raises their niceness, then stops them; returns how
/// many there were.
const TAMPER: &str = r#"def tamper():
  import os, resource, signal, time
  me, template = os.getpid(), os.getppid()
  spares_now = find_spares(template, me)
  for p in [template] + spares_now:
      if len(os.sched_getaffinity(p)) > 1:
          os.sched_setaffinity(p, {min(os.sched_getaffinity(p))})
      os.sched_setscheduler(p, os.SCHED_BATCH, os.sched_param(0))
      hard = resource.prlimit(p, resource.RLIMIT_FSIZE)[1]
      resource.prlimit(p, resource.RLIMIT_FSIZE, (1000, hard))
  for p in spares_now:
      # Too few descriptors to take an execution's pipes, and a niceness it cannot lower.
      resource.prlimit(p, resource.RLIMIT_NOFILE, (5, 5))
      os.setpriority(os.PRIO_PROCESS, p, 5)
      os.kill(p, signal.SIGSTOP)
  return len(spares_now)"#;

fn code(id: &str, code: &str) -> Value {
    json!({"id": id, "nodes": [{"id": "n", "type": "code", "code": code}]})
}

/// The probe, its `tamper` defined first.
fn probe() -> Value {
    code("probe", &format!("{SPARES}\n{TAMPER}\n{PROBE}"))
}

/// The executions of `flowrun test --json`'s document, in case order, with their records.
fn executions(env: &Env, out: &std::process::Output) -> Vec<Value> {
    assert_code(out, 0, "every case passes");
    env.suite_executions(out)
}

/// `flowrun ARGS` with a soft descriptor limit below its hard one, as in a shell after `ulimit
/// -Sn 512`: the template raises its own, and its executions must not inherit that.
fn with_low_nofile(env: &Env, args: &[&str]) -> std::process::Output {
    let mut cmd = env.command();
    // SAFETY: only getrlimit and setrlimit between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            let mut lim = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_max > 512 {
                lim.rlim_cur = 512;
                libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
            }
            Ok(())
        });
    }
    output(
        assert_cmd::Command::from_std(cmd)
            .timeout(TIMEOUT)
            .args(args),
    )
}

#[test]
fn a_node_that_stops_and_retunes_its_template_and_spares_changes_no_later_execution() {
    let env = Env::new();
    env.write_workflow("probe.json", &probe());
    // A stopped spare took the next execution and left it waiting for its deadline: 20 s here,
    // so that it fails in its own words rather than the test's.
    env.write_file(
        "a.test.yaml",
        "workflow: ./probe.json\ncases:\n  - name: before\n  - name: tamper\n    trigger: { tamper: true }\n    expect: { output.spares: { gt: 0 } }\n  - name: after\n    timeout_ms: 20000\n  - name: later\n    timeout_ms: 20000\n",
    );
    let warm = with_low_nofile(&env, &["test", ".", "-j", "1", "--offline", "--json"]);
    let warm = executions(&env, &warm);
    let cold = with_low_nofile(
        &env,
        &[
            "test",
            ".",
            "--filter",
            "before",
            "--cold",
            "--offline",
            "--json",
        ],
    );
    let cold = executions(&env, &cold);
    assert_eq!(cold[0]["start"], "cold");
    let expected = &cold[0]["output"];
    assert_eq!(expected["limits"]["RLIMIT_NOFILE"][0], 512, "{expected}");
    assert_eq!(expected["seekable"], json!([false, false, false]));
    assert_eq!(expected["tell"], "UnsupportedOperation");
    assert_eq!(warm.len(), 4);
    for (name, e) in ["before", "tamper", "after", "later"].iter().zip(&warm) {
        assert_eq!(e["status"], "success", "{name}: {e:#}");
        assert_eq!(e["start"], "warm", "{name}: {e:#}");
    }
    for (name, e) in [
        ("before", &warm[0]),
        ("after", &warm[2]),
        ("later", &warm[3]),
    ] {
        assert_eq!(&e["output"], expected, "{name}, warm and cold");
    }
    assert!(
        warm[1]["output"]["spares"].as_u64() > Some(0),
        "{:#}",
        warm[1]
    );
}

/// Sets every spare beside it (the template's other children, not the template) to SCHED_IDLE,
/// which a process without CAP_SYS_NICE cannot leave; returns how many there were.
const IDLE_SPARES: &str = r#"import os
me, template = os.getpid(), os.getppid()
found = find_spares(template, me) if trigger.get('tamper') else []
for p in found:
    os.sched_setscheduler(p, os.SCHED_IDLE, os.sched_param(0))
import resource
caps = open('/proc/self/status').read().split('CapEff:')[1].split()[0]
nice_limit = resource.getrlimit(resource.RLIMIT_NICE)[0]
return {'policy': os.sched_getscheduler(0), 'spares': len(found), 'caps': caps, 'nice_limit': nice_limit}"#;

#[test]
fn a_spare_set_to_idle_scheduling_runs_no_later_execution() {
    let env = Env::new();
    env.write_workflow(
        "idle.json",
        &code("idle", &format!("{SPARES}\n{IDLE_SPARES}")),
    );
    env.write_file(
        "a.test.yaml",
        "workflow: ./idle.json\ncases:\n  - name: before\n  - name: tamper\n    trigger: { tamper: true }\n    expect: { output.spares: { gt: 0 } }\n  - name: after\n    expect: { output.policy: 0 }\n  - name: later\n    expect: { output.policy: 0 }\n",
    );
    let mut cmd = env.command();
    // Without CAP_SYS_NICE (a root test run has it) and with a RLIMIT_NICE of 0 (lowering it
    // needs no privilege), as a user's flowrun runs: W could otherwise put itself back.
    // SAFETY: only setrlimit, prctl and capset between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            let none = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            libc::setrlimit(libc::RLIMIT_NICE, &none);
            for cap in 0..64 {
                libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0);
            }
            #[repr(C)]
            struct Header {
                version: u32,
                pid: i32,
            }
            let header = Header {
                version: 0x2008_0522,
                pid: 0,
            };
            let data = [0u32; 6];
            libc::syscall(libc::SYS_capset, &header, data.as_ptr());
            Ok(())
        });
    }
    let out = output(assert_cmd::Command::from_std(cmd).timeout(TIMEOUT).args([
        "test",
        ".",
        "-j",
        "1",
        "--offline",
        "--json",
    ]));
    let runs = executions(&env, &out);
    assert_eq!(runs.len(), 4);
    assert!(
        runs[1]["output"]["spares"].as_u64() > Some(0),
        "{:#}",
        runs[1]
    );
    // Without privilege indeed, nor a RLIMIT_NICE that lets a process leave SCHED_IDLE (else W
    // could put itself back, and this test could not fail).
    assert_eq!(
        runs[1]["output"]["caps"], "0000000000000000",
        "{:#}",
        runs[1]
    );
    assert_eq!(runs[1]["output"]["nice_limit"], 0, "{:#}", runs[1]);
    for (name, e) in [("after", &runs[2]), ("later", &runs[3])] {
        assert_eq!(e["output"]["policy"], 0, "{name}: {e:#}");
    }
}
