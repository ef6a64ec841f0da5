//! Early starts: a cold execution's interpreter started before the execution is known.
//!
//! Starting Python is most of a cold run (~11 ms of a three-step workflow's ~17), and all the
//! runner does before it can spawn — parse and check the workflow, find its script, open the
//! store: 3–5 ms idle, twice that with both cores busy — used to come first. A one-shot run
//! (`flowrun run`) that can tell how its execution will be launched (the interpreter and its
//! flags, the working directory, the memory limit, the variables a process reads as it starts:
//! [`warm::at_start`](crate::warm)) starts the shepherd and the interpreter with [`start`]
//! before any of that, on a bootstrap (`runtime/early.py`) that waits on stdin. When the
//! execution's launch is the one told, [`process::spawn`](crate::process) hands it the
//! execution ([`take`]): it writes the script's path and the execution's environment on that
//! stdin, then what the execution reads, and the interpreter runs the script as `python FILE`
//! would. Otherwise the early interpreter is ended and the execution starts cold as before: an
//! early start can make an execution start sooner, never fail it. The execution is cold in
//! every other way (its own shepherd, `start: cold`).
//!
//! Before it is taken, the early interpreter has none of the execution's environment (secrets
//! included) and runs nothing of the workflow; [`discard`] ends it (a run that failed to
//! prepare), and so does this process's end (its lifeline and stdin close).

use crate::process::{Launch, Proc, ProcessInfo, Spawned};
use std::os::fd::{AsFd, OwnedFd};
use std::process::Child;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The bootstrap the interpreter runs until it is given its execution: the caller keeps it in
/// a file (so that `ps` shows its name, not its source) and passes that file as the script.
pub const BOOTSTRAP: &str = include_str!("../../../runtime/early.py");

/// The interpreter started early, until an execution takes it or it is ended.
struct Early {
    /// How it was launched: the flags of the script's, its environment the one it started with.
    launch: Launch,
    child: Child,
    own: crate::strays::Own,
    lifeline: OwnedFd,
    start_time: Option<u64>,
}

static EARLY: Mutex<Option<Box<Early>>> = Mutex::new(None);

/// Starts the interpreter of `launch` (its `args` the flags before the script's path; its
/// environment what the interpreter starts with, to be replaced by the execution's) on
/// `bootstrap` (a file holding [`BOOTSTRAP`]) under a shepherd of its own, for the next
/// execution of this process to take. Replaces one started before and not taken.
pub fn start(mut launch: Launch, bootstrap: &std::path::Path) -> std::io::Result<()> {
    discard();
    let guessed = launch.clone();
    launch.args.push(bootstrap.display().to_string());
    let (child, own, lifeline) = crate::process::spawn_shepherd(&launch, |cmd| {
        let mut cmd = cmd;
        let child = cmd.spawn()?;
        let pid = child.id() as i32;
        Ok((child, pid))
    })?;
    let start_time = crate::process::process_start_time(own.pid());
    *EARLY.lock().unwrap_or_else(|e| e.into_inner()) = Some(Box::new(Early {
        launch: guessed,
        child,
        own,
        lifeline,
        start_time,
    }));
    Ok(())
}

/// Ends the interpreter started early, if no execution took it: its lifeline closes (the
/// shepherd kills it) and its shepherd is waited for, a second at most (then killed).
pub fn discard() {
    let early = EARLY.lock().unwrap_or_else(|e| e.into_inner()).take();
    if let Some(early) = early {
        end(*early);
    }
}

fn end(early: Early) {
    let Early {
        mut child,
        lifeline,
        own,
        ..
    } = early;
    drop(lifeline);
    drop(child.stdin.take());
    let until = Instant::now() + Duration::from_secs(1);
    while Instant::now() < until {
        match child.try_wait() {
            Ok(None) => std::thread::sleep(Duration::from_millis(1)),
            _ => return,
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    drop(own);
}

/// The execution of `launch`, in the interpreter started early if that is how it would start
/// cold; `stdin` as [`process::spawn`](crate::process::spawn) takes it. `None`: it starts cold
/// (the interpreter started early, if any, is ended first).
pub(crate) fn take(launch: &Launch, stdin: &[&[u8]]) -> Option<Spawned> {
    let early = EARLY.lock().unwrap_or_else(|e| e.into_inner()).take()?;
    match hand_over(early, launch, stdin) {
        Ok(spawned) => Some(spawned),
        Err(early) => {
            end(*early);
            None
        }
    }
}

/// Whether `launch` would start the interpreter `early` has: the same shepherd, interpreter,
/// flags, directory, memory limit and variables read at a process's start, and an exec of it
/// would not fail for its size (a cold start's error is the execution's).
fn fits(early: &Launch, launch: &Launch) -> bool {
    let Some((_, flags)) = launch.args.split_last() else {
        return false;
    };
    early.shepherd == launch.shepherd
        && early.program == launch.program
        && early.args == flags
        && early.cwd == launch.cwd
        && early.max_memory == launch.max_memory
        && crate::warm::at_start(&early.env) == crate::warm::at_start(&launch.env)
        && !crate::warm::over_exec_limit(launch)
}

/// What the bootstrap reads first: the script's path and the environment, NUL-separated,
/// after their length in 8 bytes, big-endian. The environment as a cold start's exec has it:
/// sorted by name, the last value of a name given twice (`std::process::Command`'s).
fn header(script: &str, env: &[(String, String)]) -> Vec<u8> {
    let env: std::collections::BTreeMap<&str, &str> =
        env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let mut body = script.as_bytes().to_vec();
    for (k, v) in env {
        body.push(0);
        body.extend_from_slice(k.as_bytes());
        body.push(0);
        body.extend_from_slice(v.as_bytes());
    }
    let mut out = (body.len() as u64).to_be_bytes().to_vec();
    out.extend(body);
    out
}

fn hand_over(
    mut early: Box<Early>,
    launch: &Launch,
    stdin: &[&[u8]],
) -> Result<Spawned, Box<Early>> {
    if !fits(&early.launch, launch) || !matches!(early.child.try_wait(), Ok(None)) {
        return Err(early);
    }
    let script = launch.args.last().expect("fits: a script");
    let header = header(script, &launch.env);
    let (Some(stdin_fd), Some(stdout), Some(stderr)) = (
        early.child.stdin.take().map(OwnedFd::from),
        early.child.stdout.take().map(OwnedFd::from),
        early.child.stderr.take().map(OwnedFd::from),
    ) else {
        return Err(early);
    };
    let pid = early.own.pid();
    let pipes = (|| {
        use tokio::net::unix::pipe;
        let stdin = pipe::Sender::from_owned_fd(stdin_fd)?;
        let stdout = pipe::Receiver::from_owned_fd(stdout)?;
        let stderr = pipe::Receiver::from_owned_fd(stderr)?;
        let pidfd = crate::warm::pidfd_open(pid)?;
        // SAFETY: the descriptor is owned by the AsyncFd and closed only when it drops.
        let pidfd = unsafe {
            tokio::io::unix::AsyncFd::register_with_interest(pidfd, tokio::io::Interest::READABLE)?
        };
        std::io::Result::Ok((stdin, stdout, stderr, pidfd))
    })();
    let Ok((stdin_pipe, stdout, stderr, pidfd)) = pipes else {
        return Err(early);
    };
    // All of the header, in the empty pipe, before anything else: else the interpreter would
    // read the execution's stdin as its environment. One too large for it starts cold.
    if crate::warm::prefill(&stdin_pipe, &[&header]) != header.len() {
        return Err(early);
    }
    let stdin_written = crate::warm::prefill(&stdin_pipe, stdin);
    let Early {
        child,
        own,
        lifeline,
        start_time,
        ..
    } = *early;
    let proc = Proc::early(
        Box::pin(stdin_pipe),
        Box::pin(stdout),
        Box::pin(stderr),
        EarlyChild::new(child, pidfd),
        own,
    );
    Ok(Spawned {
        child: proc,
        info: ProcessInfo {
            pid,
            pgid: pid,
            start_time,
            warm: false,
        },
        lifeline,
        stdin_written,
    })
}

/// The shepherd of an execution that started early: waited for through its pidfd (it was
/// spawned outside the async runtime). Killed if dropped before it ended, as a cold one is.
pub(crate) struct EarlyChild {
    child: Child,
    pidfd: tokio::io::unix::AsyncFd<OwnedFd>,
    ended: bool,
}

impl EarlyChild {
    fn new(child: Child, pidfd: tokio::io::unix::AsyncFd<OwnedFd>) -> EarlyChild {
        EarlyChild {
            child,
            pidfd,
            ended: false,
        }
    }

    /// Waits for the shepherd to exit, and reaps it (cancel-safe).
    pub(crate) async fn wait(&mut self) -> std::io::Result<std::process::ExitStatus> {
        loop {
            if let Some(status) = self.child.try_wait()? {
                self.ended = true;
                return Ok(status);
            }
            let mut ready = self.pidfd.readable().await?;
            ready.clear_ready();
        }
    }
}

impl Drop for EarlyChild {
    fn drop(&mut self) {
        if !self.ended && matches!(self.child.try_wait(), Ok(None)) {
            crate::warm::pidfd_kill(self.pidfd.get_ref());
            let fd = self.pidfd.get_ref().as_fd().try_clone_to_owned();
            if let Ok(fd) = fd {
                crate::warm::reap_if_ours(self.child.id() as i32, fd);
            }
        }
    }
}
