//! The child process: spawning the execution's shepherd with a lifeline, and ending its group.
//! (A warm execution has no shepherd: its template supervises it, `crate::warm`.)
//!
//! The runner's child is the [`shepherd`](crate::shepherd) (`flowrun __shepherd … -- python …`),
//! which starts a new session — so its pid is the execution's process group and session id, and
//! nothing in the execution has a controlling terminal — and runs the interpreter under it. Ctrl-C
//! reaches only flowrun, which then stops the execution in order. The runner keeps the write end
//! of a "lifeline" pipe and the shepherd watches the read end: when it closes — the runner died,
//! or the runner's grace period is over — the shepherd kills the whole tree, which it can find
//! because it is a child subreaper.

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::pin::Pin;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::process::{Child, Command};

/// What the store records to find and verify the process later.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcessInfo {
    pub pid: i32,
    /// Process group id (equal to `pid`: the child leads its own group).
    pub pgid: i32,
    /// Start time in clock ticks since boot (`/proc/<pid>/stat` field 22), so a reused pid is
    /// never mistaken for this process.
    pub start_time: Option<u64>,
    /// Forked from a warm template (`crate::warm`) rather than started cold.
    pub warm: bool,
}

/// The variables of flowrun's own environment a child starts with (unless it inherits all of
/// them): what a program expects to find, nothing of the user's.
pub const BASE_ENV: [&str; 6] = ["PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR"];

/// `env` as a cold start's exec passes it (`std::process::Command` keeps a map): sorted by
/// name, the last value of a name given twice. A warm or early start gives the interpreter
/// its environment in this order too, so that `os.environ` lists it as a cold one does.
pub(crate) fn exec_env(env: &[(String, String)]) -> Vec<(&str, &str)> {
    let map: std::collections::BTreeMap<&str, &str> =
        env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    map.into_iter().collect()
}

/// Whether the environment and arguments are more than an exec of them takes (`ARG_MAX`: the
/// strings, their NULs and pointers), which a cold start would fail on: a warm or early start,
/// which passes the environment on stdin, must not run what a cold one could not.
pub(crate) fn over_exec_limit(launch: &Launch) -> bool {
    // SAFETY: sysconf reads a limit and touches no memory of ours.
    let max = unsafe { libc::sysconf(libc::_SC_ARG_MAX) };
    let size: usize = launch
        .env
        .iter()
        .map(|(k, v)| k.len() + v.len() + 2 + 8)
        .sum::<usize>()
        + launch.args.iter().map(|a| a.len() + 1 + 8).sum::<usize>()
        + launch.program.as_os_str().len()
        + 9;
    max > 0 && size > max as usize
}

/// What a new pipe holds: 16 pages.
const PIPE_HOLDS: usize = 64 << 10;

/// Makes the empty pipe of `fd` hold `len` bytes when a new one holds less: up to the system's
/// limit (1 MiB by default, /proc/sys/fs/pipe-max-size; the kernel rounds up to a power of two
/// pages, so no more than `len` is asked for). A warm or early start writes an execution's
/// environment whole before anything reads it; past that limit, this fails and it starts cold.
pub(crate) fn hold_in_pipe(fd: &impl std::os::fd::AsFd, len: usize) -> std::io::Result<()> {
    if len > PIPE_HOLDS {
        let size = len.min(i32::MAX as usize) as i32;
        nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_SETPIPE_SZ(size))?;
    }
    Ok(())
}

/// Writes what of `parts` fits in the pipe now (never blocking: tokio's sender is
/// non-blocking); returns how many bytes.
pub(crate) fn prefill(pipe: &tokio::net::unix::pipe::Sender, parts: &[&[u8]]) -> usize {
    let mut total = 0;
    for part in parts {
        let mut rest = *part;
        while !rest.is_empty() {
            match nix::unistd::write(pipe, rest) {
                Ok(n) if n > 0 => {
                    total += n;
                    rest = &rest[n..];
                }
                _ => return total,
            }
        }
    }
    total
}

/// How to start the interpreter on the script.
#[derive(Debug, Clone)]
pub struct Launch {
    /// The executable that acts as the shepherd when given [`crate::shepherd::ARG`] first (the
    /// `flowrun` binary itself).
    pub shepherd: PathBuf,
    pub program: PathBuf,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub cwd: Option<PathBuf>,
    /// Address-space limit for the child, in bytes.
    pub max_memory: Option<u64>,
}

/// The running execution: its pipes and a way to wait for its end — its shepherd's exit (cold)
/// or its template's report (warm).
pub(crate) struct Proc {
    pub stdin: Option<Pin<Box<dyn AsyncWrite + Send>>>,
    pub stdout: Option<Pin<Box<dyn AsyncRead + Send>>>,
    pub stderr: Option<Pin<Box<dyn AsyncRead + Send>>>,
    waiter: Waiter,
    /// A cold shepherd is ours from its spawn (a warm execution's `Supervised` owns it).
    _own: Option<crate::strays::Own>,
}

enum Waiter {
    Cold(Child),
    /// A cold shepherd spawned before its execution was known (`crate::early`).
    Early(crate::early::EarlyChild),
    Warm(crate::warm::Supervised),
}

impl Proc {
    pub(crate) fn warm(
        stdin: Pin<Box<dyn AsyncWrite + Send>>,
        stdout: Pin<Box<dyn AsyncRead + Send>>,
        stderr: Pin<Box<dyn AsyncRead + Send>>,
        supervised: crate::warm::Supervised,
    ) -> Proc {
        Proc {
            stdin: Some(stdin),
            stdout: Some(stdout),
            stderr: Some(stderr),
            waiter: Waiter::Warm(supervised),
            _own: None,
        }
    }

    pub(crate) fn early(
        stdin: Pin<Box<dyn AsyncWrite + Send>>,
        stdout: Pin<Box<dyn AsyncRead + Send>>,
        stderr: Pin<Box<dyn AsyncRead + Send>>,
        child: crate::early::EarlyChild,
        own: crate::strays::Own,
    ) -> Proc {
        Proc {
            stdin: Some(stdin),
            stdout: Some(stdout),
            stderr: Some(stderr),
            waiter: Waiter::Early(child),
            _own: Some(own),
        }
    }

    /// Whether what the execution left may have come to this process (`crate::strays`): a
    /// warm execution whose template did not see it to its end.
    pub(crate) fn lost(&self) -> bool {
        match &self.waiter {
            Waiter::Cold(_) | Waiter::Early(_) => false,
            Waiter::Warm(s) => s.lost(),
        }
    }

    /// Waits for the shepherd to exit (cancel-safe).
    pub(crate) async fn wait(&mut self) -> std::io::Result<std::process::ExitStatus> {
        match &mut self.waiter {
            Waiter::Cold(c) => c.wait().await,
            Waiter::Early(c) => c.wait().await,
            Waiter::Warm(a) => a.wait().await,
        }
    }
}

pub(crate) struct Spawned {
    pub child: Proc,
    pub info: ProcessInfo,
    /// Dropping this closes the lifeline: the shepherd then kills the execution's whole tree.
    pub lifeline: OwnedFd,
    /// Bytes of the stdin given to [`spawn`] already in the pipe: the rest is the caller's to
    /// write.
    pub stdin_written: usize,
}

/// Serializes spawns in this process: the lifeline's read end is made inheritable only for the
/// moment of one spawn, so no other child (another execution in `flowrun serve`) inherits it.
/// A cold shepherd is registered (`strays::Own`) before it is released, and `strays::sweep`
/// lists this process's children under it.
pub(crate) static SPAWN_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Spawns a helper of this process's own (not an execution: it stays in this session, where
/// [`crate::strays`] counts it as the runner's) under [`SPAWN_LOCK`], so that it cannot inherit
/// the lifeline an execution's spawn makes inheritable for a moment.
pub fn spawn_helper(cmd: &mut std::process::Command) -> std::io::Result<std::process::Child> {
    let _spawning = SPAWN_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    cmd.spawn()
}

/// Marks every descriptor this process was started with beyond 0, 1 and 2 close-on-exec: a
/// wrapper's open credential file or a make jobserver's pipe would otherwise reach every process
/// flowrun starts — a cold execution's interpreter and all it runs, a warm template (whose
/// executions close them, so the same workflow saw them cold and not warm), a helper. For a
/// process's start, before it opens anything of its own. Linux 5.11's `close_range`, else each
/// descriptor in `/proc/self/fd`.
pub fn close_inherited_on_exec() {
    // SAFETY: close_range with CLOSE_RANGE_CLOEXEC only sets a flag on descriptors; no memory.
    let r = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            3u32,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    };
    if r == 0 {
        return;
    }
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return;
    };
    let fds: Vec<i32> = dir
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .filter(|fd| *fd > 2)
        .collect();
    for fd in fds {
        // The directory's own descriptor is closed by now: EBADF, nothing else.
        let _ = set_cloexec(fd, true);
    }
}

/// [`spawn_helper`], then waits for it to end.
pub fn run_helper(cmd: &mut std::process::Command) -> std::io::Result<std::process::ExitStatus> {
    spawn_helper(cmd)?.wait()
}

fn set_cloexec(fd: i32, on: bool) -> std::io::Result<()> {
    // SAFETY: fcntl on an fd we own, no memory involved.
    let r = unsafe { libc::fcntl(fd, libc::F_SETFD, if on { libc::FD_CLOEXEC } else { 0 }) };
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Starts the execution: forked from a warm template when warm starts are on and that works
/// (`crate::warm`), else cold — in the interpreter started early for it if there is one
/// (`crate::early`) — a template can make an execution faster, never fail it.
///
/// `stdin` is what the child will read: a warm start puts what fits in its pipe before the
/// interpreter is given the execution, so that it does not wait for the caller to write it.
/// `wait`: the most a warm start may wait for a template being started for it (part of the
/// execution's time, so a small share of its timeout; see `warm::Policy::Batch`).
pub(crate) async fn spawn(
    launch: &Launch,
    stdin: &[&[u8]],
    wait: std::time::Duration,
) -> std::io::Result<Spawned> {
    if let Some(pool) = crate::warm::pool() {
        match crate::warm::spawn(pool, launch, stdin, wait).await {
            Ok(s) => return Ok(s),
            Err(e) => tracing::debug!("warm start failed, starting cold: {e}"),
        }
    }
    if let Some(spawned) = crate::early::take(launch, stdin) {
        return Ok(spawned);
    }
    spawn_cold(launch)
}

/// Starts the shepherd, which starts the interpreter in a new session under it, with the
/// lifeline's read end inherited (its number is the shepherd's first argument).
///
/// There is no code to run between fork and exec here, so the standard library uses
/// `posix_spawn` (a vfork-style clone), several milliseconds cheaper than forking this process;
/// the session and an address-space limit are set up by the shepherd.
fn spawn_cold(launch: &Launch) -> std::io::Result<Spawned> {
    let (mut child, own, lifeline) = spawn_shepherd(launch, |cmd| {
        let mut cmd = Command::from(cmd);
        cmd.kill_on_drop(true);
        let child = cmd.spawn()?;
        let pid = child.id().expect("a just-spawned child has a pid") as i32;
        Ok((child, pid))
    })?;
    let pid = own.pid();
    let proc = Proc {
        stdin: child
            .stdin
            .take()
            .map(|s| Box::pin(s) as Pin<Box<dyn AsyncWrite + Send>>),
        stdout: child
            .stdout
            .take()
            .map(|s| Box::pin(s) as Pin<Box<dyn AsyncRead + Send>>),
        stderr: child
            .stderr
            .take()
            .map(|s| Box::pin(s) as Pin<Box<dyn AsyncRead + Send>>),
        waiter: Waiter::Cold(child),
        _own: Some(own),
    };
    Ok(Spawned {
        child: proc,
        info: ProcessInfo {
            pid,
            pgid: pid,
            start_time: process_start_time(pid),
            warm: false,
        },
        lifeline,
        stdin_written: 0,
    })
}

/// Spawns the shepherd of `launch` with `spawn` (given its command, with the standard streams
/// piped), a new lifeline's read end inherited for that moment only; returns the child, the
/// shepherd registered as ours, and the lifeline's write end.
pub(crate) fn spawn_shepherd<C>(
    launch: &Launch,
    spawn: impl FnOnce(std::process::Command) -> std::io::Result<(C, i32)>,
) -> std::io::Result<(C, crate::strays::Own, OwnedFd)> {
    let (read_end, write_end) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    let read_fd = read_end.as_raw_fd();
    let request = crate::shepherd::Request {
        lifeline: read_fd,
        max_memory: launch.max_memory,
        program: launch.program.clone().into_os_string(),
        args: launch.args.iter().map(Into::into).collect(),
    };
    let mut cmd = std::process::Command::new(&launch.shepherd);
    cmd.arg(crate::shepherd::ARG)
        .args(request.to_args())
        .env_clear()
        .envs(launch.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(cwd) = &launch.cwd {
        cmd.current_dir(cwd);
    }
    let (child, own) = {
        let _guard = SPAWN_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        set_cloexec(read_fd, false)?;
        let spawned = spawn(cmd);
        // Closing our copy right after the spawn (drop below) is what matters; restoring the
        // flag keeps the window closed if anything goes wrong in between.
        let _ = set_cloexec(read_fd, true);
        let (child, pid) = spawned?;
        (child, crate::strays::Own::new(pid))
    };
    drop(read_end);
    Ok((child, own, write_end))
}

/// Field 22 of `/proc/<pid>/stat`: when the process started, in clock ticks since boot.
pub fn process_start_time(pid: i32) -> Option<u64> {
    crate::tree::stat(pid).map(|s| s.start_time)
}

/// This process's pid and [`process_start_time`], read from `/proc` once per process (a runner
/// records them with every execution it starts; `serve` and `test` start hundreds).
pub fn own_start() -> (i32, Option<u64>) {
    static OWN: std::sync::OnceLock<(i32, Option<u64>)> = std::sync::OnceLock::new();
    let pid = std::process::id() as i32;
    let own = *OWN.get_or_init(|| (pid, process_start_time(pid)));
    if own.0 == pid {
        own
    } else {
        // A fork of the process that read it: another process.
        (pid, process_start_time(pid))
    }
}

/// Is the process `pid` still the one that started at `start_time`?
pub fn is_same_process(pid: i32, start_time: Option<u64>) -> bool {
    match (process_start_time(pid), start_time) {
        (Some(now), Some(then)) => now == then,
        // Without a recorded start time we cannot prove identity: do not touch it.
        _ => false,
    }
}

/// Sends `sig` to every process of the group. Returns false when the group is gone.
pub fn signal_group(pgid: i32, sig: Signal) -> bool {
    killpg(Pid::from_raw(pgid), sig).is_ok()
}

/// Does any process of the group still exist (zombies included)?
pub(crate) fn group_alive(pgid: i32) -> bool {
    killpg(Pid::from_raw(pgid), None).is_ok()
}

/// SIGKILLs the group and reaps what was reparented to us, waiting at most `max` for the group to
/// be gone. Returns whether it is gone.
pub(crate) async fn kill_group_and_wait(pgid: i32, max: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + max;
    loop {
        signal_group(pgid, Signal::SIGKILL);
        reap_group(pgid);
        if !group_alive(pgid) {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Reaps finished members of the group that are our children (orphans reparented to us as
/// subreaper). Only call once the direct child has been waited for, so its status is not taken.
fn reap_group(pgid: i32) {
    use nix::sys::wait::{WaitPidFlag, waitpid};
    while let Ok(status) = waitpid(Pid::from_raw(-pgid), Some(WaitPidFlag::WNOHANG)) {
        if status == nix::sys::wait::WaitStatus::StillAlive {
            break;
        }
    }
}

/// Is this process a child subreaper ([`become_subreaper`])?
pub(crate) fn is_subreaper() -> bool {
    let mut v: libc::c_int = 0;
    // SAFETY: PR_GET_CHILD_SUBREAPER writes one int to the pointer we pass.
    let r = unsafe { libc::prctl(libc::PR_GET_CHILD_SUBREAPER, &mut v as *mut libc::c_int) };
    r == 0 && v != 0
}

/// Makes this process the reaper of orphaned descendants, so processes that outlive their parent
/// inside an execution's group are reparented here and can be reaped, not left as zombies.
pub fn become_subreaper() {
    // SAFETY: prctl with PR_SET_CHILD_SUBREAPER takes an integer and touches no memory.
    unsafe {
        libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_start_is_this_process_read_once() {
        let pid = std::process::id() as i32;
        let first = own_start();
        assert_eq!(first, (pid, process_start_time(pid)));
        assert!(first.1.is_some(), "/proc gives this process's start time");
        assert_eq!(own_start(), first);
    }
}
