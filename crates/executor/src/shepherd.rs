//! The shepherd: the small process between the runner and the interpreter that holds an
//! execution's processes together, whatever they do.
//!
//! The runner spawns `flowrun __shepherd <lifeline-fd> [--max-memory BYTES] -- PROGRAM ARGS…`
//! (the same binary, so nothing else has to be installed). The shepherd:
//!
//! 1. starts a new session (`setsid`): the execution has no controlling terminal, so nothing in
//!    it can write to the user's terminal or push keystrokes into it (`TIOCSTI`), and its process
//!    group id is the shepherd's pid;
//! 2. becomes a child subreaper, so a process that leaves the group (`setsid`, `setpgid`, a double
//!    fork) and is orphaned becomes the shepherd's child, not init's — still in the tree;
//! 3. forks and execs the interpreter with default signal handling and no lifeline;
//! 4. waits, without a thread and without Python, for one of: the interpreter exits (then it
//!    kills what is left of the tree and exits with the interpreter's status), the lifeline pipe
//!    closes (the runner died or wants everything gone: it kills the whole tree and exits), or a
//!    SIGTERM/SIGINT/SIGHUP (it passes SIGTERM on to every process of the tree, wherever its
//!    group, and keeps waiting — the runner follows with the lifeline after its grace period), or
//!    a SIGUSR1 (a pause request: passed on to the interpreter alone).
//!
//! It reaps every child it adopts, so a long-lived `flowrun serve` gathers no zombies. (A warm
//! execution has no shepherd of its own: its template does all this for the executions it forks,
//! `runtime/warm/supervise.py`.) Being a
//! separate process, it ends the tree even while the interpreter holds the GIL in a long C call.

use crate::tree;
use nix::sys::signal::{SigSet, SigmaskHow, Signal, kill, sigprocmask};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{ForkResult, Pid, fork, getpid};
use std::ffi::{CString, OsString};
use std::io::Write as _;
use std::os::fd::{AsFd, BorrowedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::time::Duration;

/// The first argument that makes `flowrun` act as the shepherd.
pub const ARG: &str = "__shepherd";

/// What the runner asks of the shepherd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub lifeline: RawFd,
    /// Address-space limit (RLIMIT_AS) for the interpreter, in bytes.
    pub max_memory: Option<u64>,
    pub program: OsString,
    pub args: Vec<OsString>,
}

impl Request {
    /// The arguments after [`ARG`].
    pub fn to_args(&self) -> Vec<OsString> {
        let mut a: Vec<OsString> = vec![self.lifeline.to_string().into()];
        if let Some(m) = self.max_memory {
            a.push("--max-memory".into());
            a.push(m.to_string().into());
        }
        a.push("--".into());
        a.push(self.program.clone());
        a.extend(self.args.iter().cloned());
        a
    }

    /// Parses the arguments after [`ARG`].
    pub fn parse(args: &[OsString]) -> Result<Request, String> {
        let mut it = args.iter();
        let lifeline = it
            .next()
            .and_then(|a| a.to_str()?.parse().ok())
            .ok_or("expected the lifeline descriptor")?;
        let mut max_memory = None;
        loop {
            match it.next().and_then(|a| a.to_str()) {
                Some("--") => break,
                Some("--max-memory") => {
                    max_memory = Some(
                        it.next()
                            .and_then(|a| a.to_str()?.parse().ok())
                            .ok_or("--max-memory expects bytes")?,
                    )
                }
                other => return Err(format!("unexpected argument {other:?}")),
            }
        }
        let program = it.next().ok_or("expected the program to run")?.clone();
        Ok(Request {
            lifeline,
            max_memory,
            program,
            args: it.cloned().collect(),
        })
    }
}

/// Signals the shepherd waits for instead of dying of them.
pub(crate) fn handled() -> SigSet {
    let mut s = SigSet::empty();
    for sig in [
        Signal::SIGCHLD,
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGHUP,
        Signal::SIGQUIT,
        Signal::SIGUSR1,
    ] {
        s.add(sig);
    }
    s
}

/// Runs the shepherd; never returns. `args` are the arguments after [`ARG`].
pub fn main(args: &[OsString]) -> ! {
    let req = match Request::parse(args) {
        Ok(r) => r,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "flowrun shepherd: {e}");
            std::process::exit(2);
        }
    };
    // SAFETY: plain system calls on this single-threaded process.
    unsafe {
        libc::setsid();
        libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
        // Not to be traced or have its descriptors opened through /proc by the execution's
        // processes (same user, not root): what it supervises must not be able to steer it.
        // The interpreter it execs is dumpable again.
        libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0);
        // The interpreter must not inherit the lifeline: only the shepherd watches it.
        libc::fcntl(req.lifeline, libc::F_SETFD, libc::FD_CLOEXEC);
    }
    let mask = handled();
    // An ignored signal never reaches the signalfd: take back the default for each (flowrun
    // may have been started ignoring some: HUP under nohup, INT in a shell's background job).
    for sig in mask.iter() {
        // SAFETY: setting a disposition on this single-threaded process.
        unsafe {
            libc::signal(sig as libc::c_int, libc::SIG_DFL);
        }
    }
    if sigprocmask(SigmaskHow::SIG_BLOCK, Some(&mask), None).is_err() {
        std::process::exit(70);
    }
    let Ok(signals) = SignalFd::with_flags(&mask, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
    else {
        std::process::exit(70);
    };
    let child = spawn(&req);
    let lifeline = req.lifeline;
    let end = supervise(child, lifeline, &signals);
    finish(end, child)
}

/// Forks and execs the program with default signal handling.
fn spawn(req: &Request) -> Pid {
    let cstr = |s: &OsString| CString::new(s.as_bytes()).unwrap_or_default();
    let program = cstr(&req.program);
    let mut argv: Vec<CString> = vec![program.clone()];
    argv.extend(req.args.iter().map(cstr));
    let mut argv_ptrs: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    argv_ptrs.push(std::ptr::null());
    // SAFETY: single-threaded; the child only makes async-signal-safe calls before exec.
    match unsafe { fork() } {
        Ok(ForkResult::Child) => unsafe {
            let empty = SigSet::empty();
            libc::sigprocmask(libc::SIG_SETMASK, empty.as_ref(), std::ptr::null_mut());
            // A pause request that comes before the runtime installed its handler is ignored,
            // not fatal (SIGUSR1's default action ends the process), and asked again at the
            // runtime's first event (`run.rs`). The runtime's handler
            // replaces this, so what the nodes start gets the default again.
            libc::signal(libc::SIGUSR1, libc::SIG_IGN);
            // The interpreter competes for the CPU as any process does, not with the
            // runner's short slice (crate::sched).
            crate::sched::reset();
            if let Some(bytes) = req.max_memory {
                let lim = libc::rlimit {
                    rlim_cur: bytes as libc::rlim_t,
                    rlim_max: bytes as libc::rlim_t,
                };
                libc::setrlimit(libc::RLIMIT_AS, &lim);
            }
            libc::execvp(program.as_ptr(), argv_ptrs.as_ptr());
            let msg = b"flowrun shepherd: cannot start the interpreter\n";
            libc::write(2, msg.as_ptr().cast(), msg.len());
            libc::_exit(127);
        },
        Ok(ForkResult::Parent { child }) => {
            // Stdin is the interpreter's alone: once it is gone, a write to it fails rather than
            // fill a pipe no one reads (an early start handed to a dead interpreter,
            // `crate::early`, starts cold instead).
            // SAFETY: closes a descriptor this process never uses again.
            unsafe { libc::close(0) };
            child
        }
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "flowrun shepherd: cannot fork: {e}");
            std::process::exit(71);
        }
    }
}

/// How the supervised program ended, or that the runner is gone.
enum End {
    Exited(WaitStatus),
    LifelineClosed,
}

fn supervise(child: Pid, lifeline: RawFd, signals: &SignalFd) -> End {
    // SAFETY: the lifeline descriptor stays open for the shepherd's whole life.
    let lifeline = unsafe { BorrowedFd::borrow_raw(lifeline) };
    // The child may have ended before its SIGCHLD could reach the signalfd.
    if let Some(status) = reap(Some(child)) {
        return End::Exited(status);
    }
    loop {
        // A shepherd that cannot wait any more ends everything (see `poll_two`).
        let Some((line, signalled)) = poll_two(std::os::fd::AsRawFd::as_raw_fd(&lifeline), signals)
        else {
            return End::LifelineClosed;
        };
        if line && lifeline_closed(lifeline) {
            return End::LifelineClosed;
        }
        if signalled {
            while let Ok(Some(info)) = signals.read_signal() {
                if info.ssi_signo == Signal::SIGUSR1 as u32 {
                    // A pause request, for the interpreter alone (see the runtime's main).
                    let _ = nix::sys::signal::kill(child, Signal::SIGUSR1);
                } else if info.ssi_signo != Signal::SIGCHLD as u32 {
                    // Passed on to the whole tree, wherever its processes' groups are.
                    tree::signal_descendants(getpid().as_raw(), Signal::SIGTERM);
                }
            }
            if let Some(status) = reap(Some(child)) {
                return End::Exited(status);
            }
        }
    }
}

/// Waits until `fd` or the signalfd is readable (or closed): whether each is. None when it
/// cannot wait: poll refuses two descriptors once a process of the execution (the same user)
/// lowered our descriptor limit below that, and the limit is raised again only if it can be —
/// retrying as it is would spin for ever, the program's end and the runner's gone unseen.
fn poll_two(fd: RawFd, signals: &SignalFd) -> Option<(bool, bool)> {
    let mut fds = [
        libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        },
        libc::pollfd {
            fd: std::os::fd::AsRawFd::as_raw_fd(&signals.as_fd()),
            events: libc::POLLIN,
            revents: 0,
        },
    ];
    loop {
        // SAFETY: two valid pollfd entries.
        if unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) } >= 0 {
            return Some((fds[0].revents != 0, fds[1].revents != 0));
        }
        match nix::errno::Errno::last() {
            nix::errno::Errno::EINTR => {}
            nix::errno::Errno::EINVAL if crate::strays::raise_nofile_limit() >= 2 => {}
            _ => return None,
        }
    }
}

/// Reads the lifeline: true once it is closed (EOF or error).
fn lifeline_closed(fd: BorrowedFd<'_>) -> bool {
    let mut buf = [0u8; 64];
    // SAFETY: reading into a local buffer.
    let n = unsafe {
        libc::read(
            std::os::fd::AsRawFd::as_raw_fd(&fd),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    n <= 0
}

/// Reaps every child that has ended; returns the status of `watch` if it was one of them.
fn reap(watch: Option<Pid>) -> Option<WaitStatus> {
    let mut found = None;
    while let Ok(status) = waitpid(None, Some(WaitPidFlag::WNOHANG)) {
        match status.pid() {
            None => break,
            Some(pid) if Some(pid) == watch => found = Some(status),
            Some(_) => {}
        }
    }
    found
}

/// Kills what is left of the tree, reaps it, and ends like the program did (killed by SIGKILL,
/// when the lifeline closed first). A tree it could not see whole, or not end in time (its
/// `/proc` reads refused — a process of the execution can lower the shepherd's descriptor limit
/// to zero — or a fork storm outlasting it), ends it by SIGKILL too, whatever the program did:
/// the runner then ends what is left itself (`crate::strays`), which it does only after a
/// shepherd that ended by a signal.
fn finish(end: End, child: Pid) -> ! {
    let me = getpid().as_raw();
    let mut end = end;
    let mut ended_all = false;
    for _ in 0..500 {
        if let Some(status) = reap(Some(child)) {
            end = End::Exited(status);
        }
        // No child at all (not even a zombie) means no descendant: any orphan below us would
        // have been re-parented to us, the subreaper. Most executions end here, without
        // reading all of /proc.
        if !tree::has_children() {
            ended_all = true;
            break;
        }
        let Some(left) = tree::descendants_checked(me) else {
            break;
        };
        if left.is_empty() {
            ended_all = true;
            break;
        }
        for p in left.iter().filter(|p| p.runs()) {
            let _ = kill(Pid::from_raw(p.pid), Signal::SIGKILL);
        }
        if let Some(status) = reap(Some(child)) {
            end = End::Exited(status);
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    if !ended_all {
        let _ = nix::sys::signal::killpg(getpid(), Signal::SIGKILL);
        end = End::LifelineClosed;
    }
    match end {
        End::Exited(WaitStatus::Exited(_, code)) => std::process::exit(code),
        End::Exited(WaitStatus::Signaled(_, sig, _)) => {
            // End by the same signal, so the runner reports `killed by SIGKILL` and the like.
            // SAFETY: resetting a disposition and unblocking it in this single thread.
            unsafe {
                libc::signal(sig as i32, libc::SIG_DFL);
                let mut one = SigSet::empty();
                one.add(sig);
                let _ = sigprocmask(SigmaskHow::SIG_UNBLOCK, Some(&one), None);
            }
            let _ = kill(getpid(), sig);
            std::process::exit(128 + sig as i32)
        }
        End::Exited(_) => std::process::exit(1),
        End::LifelineClosed => {
            let _ = kill(getpid(), Signal::SIGKILL);
            std::process::exit(137)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip_through_arguments() {
        let r = Request {
            lifeline: 7,
            max_memory: Some(200 << 20),
            program: "/usr/bin/python3".into(),
            args: vec!["-I".into(), "--".into(), "script.pyc".into()],
        };
        assert_eq!(Request::parse(&r.to_args()), Ok(r.clone()));
        let plain = Request {
            max_memory: None,
            ..r
        };
        assert_eq!(Request::parse(&plain.to_args()), Ok(plain.clone()));
        assert!(Request::parse(&["3".into(), "--spare".into(), "--".into(), "p".into()]).is_err());
        assert!(Request::parse(&["x".into()]).is_err());
        assert!(Request::parse(&["3".into(), "--".into()]).is_err());
    }
}
