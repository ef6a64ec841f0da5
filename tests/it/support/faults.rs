//! What only `tests/faults.rs` needs on top of `tests/common`: a sandbox ([`Fx`], a common
//! [`Env`] whose test process is a subreaper) whose `flowrun` processes run with a watchdog and
//! their peak RSS sampled, and the proofs that no process of an execution's group is left.

#![allow(dead_code)]

use crate::support::{Env, ExecRow};
use nix::errno::Errno;
use nix::sys::signal::{Signal, kill, killpg};
use nix::sys::wait::{WaitPidFlag, waitpid};
use nix::unistd::Pid;
use serde_json::{Value, json};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long any single `flowrun` command may take before the test calls it hung.
pub const WATCHDOG: Duration = Duration::from_secs(60);

/// One test's private world: a common [`Env`] (database, cache, empty `TMPDIR`), whose rows and
/// paths it derefs to. Its `run` and `flowrun` start processes as [`Running`] and give
/// [`Finished`] results (elapsed time, peak RSS) instead of the common `Output`.
pub struct Fx {
    pub env: Env,
}

crate::support::derefs_to_env!(Fx);

impl Fx {
    pub fn new() -> Fx {
        become_subreaper();
        Fx { env: Env::new() }
    }

    /// Writes a workflow definition to `<name>.json` and returns its path.
    pub fn workflow(&self, name: &str, def: &Value) -> PathBuf {
        self.write_workflow(&format!("{name}.json"), def)
    }

    /// Starts `flowrun ARGS` without waiting.
    pub fn spawn(&self, args: &[&str]) -> Running {
        let mut c = self.command();
        c.args(args);
        Running::spawn(c)
    }

    /// Runs `flowrun ARGS` to its end (with the watchdog).
    pub fn flowrun(&self, args: &[&str]) -> Finished {
        self.spawn(args).wait(WATCHDOG)
    }

    /// `flowrun run FILE --input JSON EXTRA…`.
    pub fn run(&self, file: &Path, input: &Value, extra: &[&str]) -> Finished {
        self.spawn_run(file, input, extra).wait(WATCHDOG)
    }

    pub fn spawn_run(&self, file: &Path, input: &Value, extra: &[&str]) -> Running {
        let input = input.to_string();
        let mut args = vec!["run", file.to_str().unwrap(), "--input", &input];
        args.extend_from_slice(extra);
        self.spawn(&args)
    }

    /// Ids of the executions so far, oldest first (none while the database or its schema does
    /// not exist yet).
    pub fn ids(&self) -> Vec<String> {
        self.try_execution_ids().unwrap_or_default()
    }

    /// Stored log events of an execution: `(stream, line)`.
    pub fn log_lines(&self, id: &str) -> Vec<(String, String)> {
        self.events(id)
            .into_iter()
            .filter(|e| e.kind == "log")
            .map(|e| {
                (
                    e.data["stream"].as_str().unwrap_or_default().to_string(),
                    e.data["line"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect()
    }

    /// Polls until the newest top-level execution is `running` with its process recorded and, if given,
    /// `node` has a `running` row. Returns the row.
    pub fn wait_running(&self, node: Option<&str>, run: &mut Running) -> ExecRow {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            // The newest top-level execution (a sub-workflow's child starts after it).
            let newest = self
                .ids()
                .into_iter()
                .rev()
                .find(|id| self.execution(id).relation.as_deref() != Some("sub"));
            if let Some(id) = newest.as_ref() {
                let e = self.execution(id);
                let node_ok = node.is_none_or(|n| {
                    self.nodes(id)
                        .iter()
                        .any(|r| r.node_id == n && r.status == "running")
                });
                if e.status == "running" && e.pgid.is_some() && node_ok {
                    return e;
                }
            }
            if let Some(st) = run.child.try_wait().unwrap() {
                let f = run.collect(st);
                panic!("flowrun ended before the execution was running: {f}");
            }
            assert!(
                Instant::now() < deadline,
                "the execution did not reach running in time"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Asserts the private TMPDIR given to flowrun is still empty.
    pub fn assert_tmp_empty(&self) {
        let left: Vec<_> = std::fs::read_dir(self.tmp_dir())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert!(left.is_empty(), "files left in TMPDIR: {left:?}");
    }

    /// Every check that applies to any finished execution: no process of its group survives,
    /// and nothing is left in TMPDIR.
    pub fn assert_clean(&self, id: &str) {
        let e = self.execution(id);
        let pgid = e
            .pgid
            .unwrap_or_else(|| panic!("execution {id} has no pgid: {e:?}"));
        assert_group_gone(pgid);
        self.assert_tmp_empty();
    }
}

/// A `flowrun` process the test started, its output collected by threads (so it never blocks
/// on a full pipe).
pub struct Running {
    pub child: Child,
    pub started: Instant,
    out: Option<JoinHandle<Vec<u8>>>,
    err: Option<JoinHandle<Vec<u8>>>,
    /// What stderr has given so far (all of it once `err` is joined).
    err_so_far: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
    /// Largest `VmHWM` seen while sampling (kB).
    pub peak_hwm_kb: u64,
}

fn drain(mut r: impl Read + Send + 'static) -> JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = r.read_to_end(&mut v);
        v
    })
}

/// As [`drain`], and what was read so far is in `so_far` as it comes.
fn drain_shared(
    mut r: impl Read + Send + 'static,
    so_far: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
) -> JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut buf = [0u8; 8192];
        while let Ok(n) = r.read(&mut buf) {
            if n == 0 {
                break;
            }
            so_far.lock().unwrap().extend_from_slice(&buf[..n]);
        }
        so_far.lock().unwrap().clone()
    })
}

impl Running {
    pub fn spawn(mut c: Command) -> Running {
        c.stdout(Stdio::piped()).stderr(Stdio::piped());
        let started = Instant::now();
        let mut child = c.spawn().expect("spawn flowrun");
        let out = drain(child.stdout.take().unwrap());
        let err_so_far = std::sync::Arc::default();
        let err = drain_shared(
            child.stderr.take().unwrap(),
            std::sync::Arc::clone(&err_so_far),
        );
        Running {
            child,
            started,
            out: Some(out),
            err: Some(err),
            err_so_far,
            peak_hwm_kb: 0,
        }
    }

    /// What the process has written to stderr so far.
    pub fn stderr_so_far(&self) -> String {
        String::from_utf8_lossy(&self.err_so_far.lock().unwrap()).into_owned()
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Waits at most `max` (then kills it and fails), sampling the process's peak RSS.
    pub fn wait(mut self, max: Duration) -> Finished {
        loop {
            // Sample before try_wait: until we reap it, the pid is surely this process.
            if let Some(kb) = status_field_kb(self.pid(), "VmHWM") {
                self.peak_hwm_kb = self.peak_hwm_kb.max(kb);
            }
            if let Some(st) = self.child.try_wait().unwrap() {
                return self.collect(st);
            }
            if self.started.elapsed() > max {
                let _ = self.child.kill();
                let st = self.child.wait().unwrap();
                let f = self.collect(st);
                panic!("flowrun did not finish within {max:?} (killed): {f}");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn collect(&mut self, status: ExitStatus) -> Finished {
        let elapsed = self.started.elapsed();
        let stdout = self
            .out
            .take()
            .map(|h| h.join().unwrap())
            .unwrap_or_default();
        let stderr = self
            .err
            .take()
            .map(|h| h.join().unwrap())
            .unwrap_or_default();
        Finished {
            status,
            stdout: String::from_utf8_lossy(&stdout).into_owned(),
            stderr: String::from_utf8_lossy(&stderr).into_owned(),
            elapsed,
            peak_hwm_kb: self.peak_hwm_kb,
        }
    }
}

#[derive(Debug)]
pub struct Finished {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
    pub peak_hwm_kb: u64,
}

impl Finished {
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }

    #[track_caller]
    pub fn assert_code(&self, code: i32) -> &Self {
        assert_eq!(self.code(), Some(code), "unexpected exit: {self}");
        self
    }
}

impl std::fmt::Display for Finished {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} after {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.status,
            self.elapsed,
            tail(&self.stdout, 4000),
            tail(&self.stderr, 4000)
        )
    }
}

fn tail(s: &str, n: usize) -> &str {
    let mut at = s.len().saturating_sub(n);
    while !s.is_char_boundary(at) {
        at += 1;
    }
    &s[at..]
}

/// A field of `/proc/<pid>/status` in kB (`VmHWM`, `VmRSS`).
pub fn status_field_kb(pid: i32, field: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// `(state, ppid, pgid, start time)` from `/proc/<pid>/stat`, or None when there is no such pid.
pub fn proc_stat(pid: i32) -> Option<(char, i32, i32, u64)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split(' ').collect();
    Some((
        f[0].chars().next()?,
        f[1].parse().ok()?,
        f[2].parse().ok()?,
        f[19].parse().ok()?,
    ))
}

/// Is `pid` a live (non-zombie) process?
pub fn alive(pid: i32) -> bool {
    matches!(proc_stat(pid), Some((s, ..)) if s != 'Z' && s != 'X')
}

/// Members of process group `pgid`, from /proc: `(pid, state, ppid, command)`.
pub fn group_members(pgid: i32) -> Vec<(i32, char, i32, String)> {
    let mut v = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if let Some((state, ppid, g, _)) = proc_stat(pid) {
            if g == pgid {
                let comm = std::fs::read_to_string(format!("/proc/{pid}/cmdline"))
                    .unwrap_or_default()
                    .replace('\0', " ");
                v.push((pid, state, ppid, comm));
            }
        }
    }
    v
}

/// Orphans are reparented to the nearest subreaper. Making the test process one means the
/// children of a runner that the test SIGKILLs come here (this sandbox's PID 1 does not reap
/// them), so [`assert_group_gone_reaping`] can reap what the lifeline killed.
pub fn become_subreaper() {
    // SAFETY: prctl(PR_SET_CHILD_SUBREAPER) takes an integer and touches no memory.
    unsafe {
        libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
    }
}

fn group_gone_within(pgid: i32, max: Duration, reap: bool) -> Result<Duration, String> {
    assert!(pgid > 1, "bogus pgid {pgid}");
    let t0 = Instant::now();
    loop {
        match killpg(Pid::from_raw(pgid), None) {
            Err(Errno::ESRCH) => return Ok(t0.elapsed()),
            Err(e) => return Err(format!("kill(-{pgid}, 0): unexpected {e}")),
            Ok(()) => {}
        }
        if reap {
            let me = std::process::id() as i32;
            for (pid, state, ppid, _) in group_members(pgid) {
                if state == 'Z' && ppid == me {
                    let _ = waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG));
                }
            }
        }
        if t0.elapsed() > max {
            return Err(format!(
                "process group {pgid} still has members after {max:?}: {:?}",
                group_members(pgid)
            ));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// No process of the group is left: `kill(-pgid, 0)` fails with ESRCH (after a short poll).
/// Zombies count as survivors here: the runner must have reaped everything it was parent of.
#[track_caller]
pub fn assert_group_gone(pgid: i32) {
    if let Err(e) = group_gone_within(pgid, Duration::from_secs(2), false) {
        panic!("{e}");
    }
}

/// Like [`assert_group_gone`] for a group whose runner is dead: its zombies are reparented to
/// the test (a subreaper), which reaps them. Returns how long the group took to disappear.
#[track_caller]
pub fn assert_group_gone_reaping(pgid: i32, max: Duration) -> Duration {
    group_gone_within(pgid, max, true).unwrap_or_else(|e| panic!("{e}"))
}

/// Each pid is gone: no such process, or the pid now belongs to another process group.
#[track_caller]
pub fn assert_pids_gone(pids: &[i32], pgid: i32) {
    let deadline = Instant::now() + Duration::from_secs(2);
    for &pid in pids {
        loop {
            match proc_stat(pid) {
                None => break,
                Some((_, _, g, _)) if g != pgid => break,
                Some(st) => assert!(
                    Instant::now() < deadline,
                    "process {pid} of group {pgid} survived: {st:?}"
                ),
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// Pids a workflow wrote, one per line.
pub fn read_pids(path: &Path) -> Vec<i32> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// Waits until the file lists at least `n` pids.
pub fn wait_pids(path: &Path, n: usize) -> Vec<i32> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let p = read_pids(path);
        if p.len() >= n {
            return p;
        }
        assert!(
            Instant::now() < deadline,
            "only {p:?} in {} after 20 s",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Sends `sig` to `pid` (a process the test owns).
pub fn signal(pid: i32, sig: Signal) {
    kill(Pid::from_raw(pid), sig).unwrap();
}

/// Removes the common leading indentation of a block (Python source in Rust literals).
pub fn dedent(s: &str) -> String {
    let lines: Vec<&str> = s.trim_matches('\n').lines().collect();
    let indent = lines
        .iter()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.len() - l.trim_start().len())
        .min()
        .unwrap_or(0);
    lines
        .iter()
        .map(|l| l.get(indent..).unwrap_or("").trim_end())
        .collect::<Vec<_>>()
        .join("\n")
}

/// Python helpers prepended to code nodes. `trigger['pids']` is a file the node appends the
/// pids of its processes to; `trigger['dir']` is a scratch directory outside TMPDIR.
pub const PY_HELPERS: &str = r#"
import os, sys, time, signal, subprocess

def note(pid):
    with open(trigger['pids'], 'a') as f:
        f.write('%d\n' % pid)

def wait_file(path):
    while not os.path.exists(path):
        time.sleep(0.005)

def grandchild(name, ignore_term=False, hold_stdout=True):
    """Starts a Python grandchild that sleeps (optionally ignoring SIGTERM), waits until it is
    set up, records its pid and returns it."""
    ready = os.path.join(trigger['dir'], name + '.ready')
    code = ("import signal, sys, time\n"
            + ("signal.signal(signal.SIGTERM, signal.SIG_IGN)\n" if ignore_term else "")
            + "open(sys.argv[1], 'w').close()\n"
            + "time.sleep(120)\n")
    p = subprocess.Popen([sys.executable, '-I', '-S', '-c', code, ready],
                         stdout=None if hold_stdout else subprocess.DEVNULL)
    wait_file(ready)
    note(p.pid)
    return p.pid
"#;

pub fn code(body: &str) -> String {
    format!("{}\n{}", dedent(PY_HELPERS), dedent(body))
}

pub fn code_node(id: &str, body: &str) -> Value {
    json!({ "id": id, "type": "code", "code": code(body) })
}

/// Trigger data pointing the helpers at this test's scratch files.
pub fn trigger(fx: &Fx) -> Value {
    let scratch = fx.path("scratch");
    std::fs::create_dir_all(&scratch).unwrap();
    json!({
        "pids": fx.path("pids").display().to_string(),
        "dir": scratch.display().to_string(),
    })
}

pub fn pids(fx: &Fx) -> Vec<i32> {
    read_pids(&fx.path("pids"))
}

/// Live children of `parent` whose command line holds each of `marks`.
pub fn children_with(parent: i32, marks: &[&str]) -> Vec<i32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Some((state, ppid, _, _)) = proc_stat(pid) else {
            continue;
        };
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if ppid == parent
            && state != 'Z'
            && marks
                .iter()
                .all(|m| crate::support::contains_bytes(&cmdline, m.as_bytes()))
        {
            out.push(pid);
        }
    }
    out.sort();
    out
}

/// Zombie children of `parent`.
pub fn zombie_children(parent: i32) -> Vec<i32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if let Some(('Z', ppid, _, _)) = proc_stat(pid) {
            if ppid == parent {
                out.push(pid);
            }
        }
    }
    out
}

/// The session id of `pid`.
pub fn session(pid: i32) -> Option<i32> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    s[s.rfind(')')? + 2..].split(' ').nth(3)?.parse().ok()
}
