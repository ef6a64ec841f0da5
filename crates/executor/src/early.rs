//! Early starts: a cold execution's interpreter started before the execution is known.
//!
//! Starting Python is most of a cold run (~11 ms of a three-step workflow's ~17), and what the
//! runner does before it can spawn — compile and check the workflow and the trigger, find its
//! script, open the store: 3–5 ms idle, twice that with both cores busy — used to come first.
//! A one-shot run (`flowrun run`) that can tell how its execution will be launched (the
//! interpreter and its flags, the working directory, the memory limit, the variables a process
//! reads as it starts: `warm::at_start`) starts the shepherd and the interpreter with [`start`]
//! before any of that, on a bootstrap (`runtime/early.py`) that waits on stdin. When the
//! execution's launch is the one told, [`process::spawn`](crate::process) hands it the
//! execution ([`take`]): it writes the script's path and the execution's environment on that
//! stdin, then what the execution reads, and the interpreter runs the script as `python FILE`
//! would. Otherwise the early interpreter is ended and the execution starts cold as before: an
//! early start can make an execution start sooner, never fail it. The execution is cold in
//! every other way (its own shepherd, `start: cold`).
//!
//! Until it is taken, the early interpreter runs nothing of the workflow and holds nothing only
//! the prepared run knows (connections' secrets, the execution's id); [`discard`] ends it (a
//! run that failed to prepare), and so does this process's end (its lifeline closes).

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
    /// Opened as it starts: without one (a kernel before 5.3, a filter refusing it) there is no
    /// early start, rather than one every run would end.
    pidfd: OwnedFd,
    lifeline: OwnedFd,
    start_time: Option<u64>,
}

impl Early {
    fn end(self, wait: Wait) {
        end(self.child, self.lifeline, self.own, wait);
    }
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
    let (child, own, lifeline) = crate::process::spawn_shepherd(&launch, |mut cmd| {
        let child = cmd.spawn()?;
        let pid = child.id() as i32;
        Ok((child, pid))
    })?;
    // The shepherd is our child, not reaped yet: its pid is still its own.
    let pidfd = match crate::warm::pidfd_open(own.pid()) {
        Ok(fd) => fd,
        Err(e) => {
            end(child, lifeline, own, Wait::Here);
            return Err(e);
        }
    };
    let start_time = crate::process::process_start_time(own.pid());
    let early = Early {
        launch: guessed,
        child,
        own,
        pidfd,
        lifeline,
        start_time,
    };
    *EARLY.lock().unwrap_or_else(|e| e.into_inner()) = Some(Box::new(early));
    Ok(())
}

/// Where an ended early start is waited for.
enum Wait {
    /// Before returning: the caller is about to exit, and leaves nothing behind.
    Here,
    /// On a thread of its own: the caller is an async task starting the execution cold.
    Aside,
}

/// Ends the interpreter started early, if no execution took it, before returning: its
/// lifeline closes (the shepherd kills it) and its shepherd is waited for.
pub fn discard() {
    let early = EARLY.lock().unwrap_or_else(|e| e.into_inner()).take();
    if let Some(early) = early {
        early.end(Wait::Here);
    }
}

/// Ends an early start's shepherd (its lifeline and the interpreter's stdin closed) and waits
/// for it, a second at most (then kills it).
fn end(mut child: Child, lifeline: OwnedFd, own: crate::strays::Own, wait: Wait) {
    drop(lifeline);
    drop(child.stdin.take());
    let reap = move || {
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
    };
    match wait {
        Wait::Here => reap(),
        Wait::Aside => {
            std::thread::spawn(reap);
        }
    }
}

/// The execution of `launch`, in the interpreter started early if that is how it would start
/// cold; `stdin` as [`process::spawn`](crate::process::spawn) takes it. `None`: it starts cold
/// (the interpreter started early, if any, is ended first).
pub(crate) fn take(launch: &Launch, stdin: &[&[u8]]) -> Option<Spawned> {
    let early = EARLY.lock().unwrap_or_else(|e| e.into_inner()).take()?;
    match hand_over(early, launch, stdin) {
        Ok(spawned) => Some(spawned),
        Err((early, why)) => {
            tracing::debug!("the interpreter started early is ended: {why}; starting cold");
            early.end(Wait::Aside);
            None
        }
    }
}

/// Whether `launch` would start the interpreter `early` has: the same shepherd, interpreter,
/// flags, directory, memory limit and variables read at a process's start, and an exec of it
/// would not fail for its size (a cold start's error is the execution's).
fn fits(early: &Launch, launch: &Launch) -> Result<(), &'static str> {
    let Some((_, flags)) = launch.args.split_last() else {
        return Err("no script");
    };
    let same = early.shepherd == launch.shepherd
        && early.program == launch.program
        && early.args == flags
        && early.cwd == launch.cwd
        && early.max_memory == launch.max_memory;
    if !same {
        return Err("another interpreter, flags, directory or memory limit");
    }
    if crate::warm::at_start(&early.env) != crate::warm::at_start(&launch.env) {
        return Err("other variables read as a process starts");
    }
    if crate::process::over_exec_limit(launch) {
        return Err("more environment than an exec takes");
    }
    // What an exec passes as it is but `os.environ` refuses (`=x`, from --inherit-env).
    let settable = launch
        .env
        .iter()
        .all(|(k, v)| !k.is_empty() && !k.contains(['=', '\0']) && !v.contains('\0'));
    if !settable {
        return Err("a variable os.environ cannot set");
    }
    Ok(())
}

/// Whether the shepherd `pid` (and the interpreter it started there) is in the directory `cwd`
/// names now: a cold start would go wherever the name leads at its spawn (a link switched, a
/// directory made anew since the early start).
fn same_directory(pid: i32, cwd: Option<&std::path::Path>) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Some(cwd) = cwd else {
        return false;
    };
    let (Ok(theirs), Ok(named)) = (
        std::fs::metadata(format!("/proc/{pid}/cwd")),
        std::fs::metadata(cwd),
    ) else {
        return false;
    };
    (theirs.dev(), theirs.ino()) == (named.dev(), named.ino())
}

/// What the bootstrap reads first: the script's path and the environment, NUL-separated,
/// after their length in 8 bytes, big-endian; the environment as a cold start's exec has it.
fn header(script: &str, env: &[(String, String)]) -> Vec<u8> {
    let mut body = script.as_bytes().to_vec();
    for (k, v) in crate::process::exec_env(env) {
        body.push(0);
        body.extend_from_slice(k.as_bytes());
        body.push(0);
        body.extend_from_slice(v.as_bytes());
    }
    let mut out = (body.len() as u64).to_be_bytes().to_vec();
    out.extend(body);
    out
}

/// Why an execution did not take the interpreter started early.
type Refused = (Box<Early>, String);

fn hand_over(mut early: Box<Early>, launch: &Launch, stdin: &[&[u8]]) -> Result<Spawned, Refused> {
    if let Err(why) = fits(&early.launch, launch) {
        return Err((early, why.to_string()));
    }
    if !matches!(early.child.try_wait(), Ok(None)) {
        return Err((early, "its shepherd has ended".into()));
    }
    if !same_directory(early.own.pid(), launch.cwd.as_deref()) {
        return Err((early, "its directory is no longer the one named".into()));
    }
    let script = launch.args.last().expect("fits: a script");
    let header = header(script, &launch.env);
    let (Some(stdin_fd), Some(stdout), Some(stderr)) = (
        early.child.stdin.take().map(OwnedFd::from),
        early.child.stdout.take().map(OwnedFd::from),
        early.child.stderr.take().map(OwnedFd::from),
    ) else {
        return Err((early, "its pipes are gone".into()));
    };
    let pid = early.own.pid();
    let pidfd = early.pidfd.try_clone();
    let pipes = (|| {
        use tokio::net::unix::pipe;
        crate::process::hold_in_pipe(&stdin_fd, header.len())?;
        let stdin = pipe::Sender::from_owned_fd(stdin_fd)?;
        let stdout = pipe::Receiver::from_owned_fd(stdout)?;
        let stderr = pipe::Receiver::from_owned_fd(stderr)?;
        // SAFETY: the descriptor is owned by the AsyncFd and closed only when it drops.
        let pidfd = unsafe {
            tokio::io::unix::AsyncFd::register_with_interest(pidfd?, tokio::io::Interest::READABLE)?
        };
        std::io::Result::Ok((stdin, stdout, stderr, pidfd))
    })();
    let (stdin_pipe, stdout, stderr, pidfd) = match pipes {
        Ok(p) => p,
        Err(e) => return Err((early, format!("its pipes: {e}"))),
    };
    // All of the header, in the empty pipe, before anything else: else the interpreter would
    // read the execution's stdin as its environment. One too large for it starts cold (the
    // interpreter, which reads only whole headers, is ended).
    if crate::process::prefill(&stdin_pipe, &[&header]) != header.len() {
        return Err((early, "its environment does not fit in its pipe".into()));
    }
    let stdin_written = crate::process::prefill(&stdin_pipe, stdin);
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
