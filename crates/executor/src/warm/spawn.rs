//! A warm start: the runner's pipes and lifeline go to the template, which forks the execution;
//! its shepherd becomes the runner's child, which waits for it through a pidfd.

use super::template::Request;
use super::{Key, Pool};
use crate::process::{Launch, Proc, ProcessInfo, Spawned};
use nix::fcntl::OFlag;
use nix::unistd::pipe2;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::net::unix::pipe;

/// Starts the execution from the template for its interpreter. Any error means: start it cold.
/// Nothing of the workflow runs before its stdin is written, which is the last thing done here,
/// once the execution is ours: the interpreter may be up already (it does not wait for its
/// shepherd, and a spare's is up before the request), so an error until then kills what the
/// template forked ([`abandon`]) before the cold start can run the workflow again.
pub(crate) async fn spawn(
    pool: &Pool,
    launch: &Launch,
    stdin: &[&[u8]],
) -> std::io::Result<Spawned> {
    let Some((script, flags)) = launch.args.split_last() else {
        return Err(std::io::Error::other("no script to run"));
    };
    if !crate::process::is_subreaper() {
        // The shepherd would be re-parented past us, and we could not wait for it.
        return Err(std::io::Error::other(
            "this process is not a child subreaper",
        ));
    }
    let key = Key {
        program: launch.program.clone(),
        flags: flags.to_vec(),
        env: super::at_start(&launch.env),
    };
    if over_exec_limit(launch) {
        // A cold start cannot exec it (E2BIG): neither may a warm one run it.
        return Err(std::io::Error::other(
            "the environment and arguments are over what an exec takes",
        ));
    }
    // The environment goes to the interpreter on its own stdin, ahead of what the workflow
    // reads there, never through the template: what the template has held, every later fork
    // can read in its own memory (secrets included).
    let env = env_block(&launch.env);
    let (in_r, in_w) = pipe2(OFlag::O_CLOEXEC)?;
    // All of the environment must fit in the empty pipe (written before anything can read it):
    // a pipe holds 64 KiB, and may be made larger up to the system's limit (1 MiB by default,
    // /proc/sys/fs/pipe-max-size; the kernel rounds up to a power of two pages, so ask for no
    // more than the environment); a larger environment starts cold.
    if env.len() > PIPE_HOLDS {
        let size = env.len().min(i32::MAX as usize) as i32;
        nix::fcntl::fcntl(&in_w, nix::fcntl::FcntlArg::F_SETPIPE_SZ(size))?;
    }
    let (out_r, out_w) = pipe2(OFlag::O_CLOEXEC)?;
    let (err_r, err_w) = pipe2(OFlag::O_CLOEXEC)?;
    let (life_r, life_w) = pipe2(OFlag::O_CLOEXEC)?;
    let cwd = match &launch.cwd {
        Some(c) => c.clone(),
        None => std::env::current_dir()?,
    };
    let req = Request {
        shepherd: &launch.shepherd,
        program: &launch.program,
        args: &launch.args,
        script,
        cwd,
        max_memory: launch.max_memory,
    };
    let fds = [
        in_r.as_raw_fd(),
        out_w.as_raw_fd(),
        err_w.as_raw_fd(),
        life_r.as_raw_fd(),
    ];
    let ((pid, own), nudge) = pool
        .with_template(&key, async |t| Ok((t.fork(&req, fds).await?, t.nudge())))
        .await?;
    // The execution has its own copies now; ours would keep its pipes open past its end.
    drop((in_r, out_w, err_w, life_r));
    let ours = crate::tree::stat(pid).is_some_and(|s| s.ppid == std::process::id() as i32);
    if !ours {
        abandon(pid, false);
        return Err(std::io::Error::other(
            "the warm execution did not become this process's child",
        ));
    }
    let waiter = match Adopted::new(pid, nudge, own) {
        Ok(w) => w,
        Err(e) => {
            abandon(pid, true);
            return Err(e);
        }
    };
    let info = ProcessInfo {
        pid,
        pgid: pid,
        start_time: crate::process::process_start_time(pid),
        warm: true,
    };
    let pipes = (|| {
        Ok::<_, std::io::Error>((
            pipe::Sender::from_owned_fd(in_w)?,
            pipe::Receiver::from_owned_fd(out_r)?,
            pipe::Receiver::from_owned_fd(err_r)?,
        ))
    })();
    let (stdin_pipe, stdout_pipe, stderr_pipe) = match pipes {
        Ok(p) => p,
        Err(e) => {
            drop(waiter); // kills the shepherd and reaps it
            abandon(pid, false);
            return Err(e);
        }
    };
    // Now, not when a writer task gets to it: the interpreter is waiting for it.
    if prefill(&stdin_pipe, &[&env]) != env.len() {
        drop(waiter);
        abandon(pid, false);
        return Err(std::io::Error::other(
            "the environment did not fit in the warm start's stdin",
        ));
    }
    let stdin_written = prefill(&stdin_pipe, stdin);
    let proc = Proc::warm(
        Box::pin(stdin_pipe),
        Box::pin(stdout_pipe),
        Box::pin(stderr_pipe),
        waiter,
    );
    Ok(Spawned {
        child: proc,
        info,
        lifeline: life_w,
        stdin_written,
    })
}

/// Whether the environment and arguments are more than an exec of them takes (`ARG_MAX`: the
/// strings, their NULs and pointers), which a cold start would fail on.
fn over_exec_limit(launch: &Launch) -> bool {
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

/// The environment as the interpreter reads it first on stdin (`_read_env` in
/// runtime/warm/template.py): its length in 8 bytes, big-endian, then `[[name, value], …]`.
fn env_block(env: &[(String, String)]) -> Vec<u8> {
    let json = serde_json::to_vec(env).expect("strings serialize");
    let mut out = (json.len() as u64).to_be_bytes().to_vec();
    out.extend(json);
    out
}

/// Writes what of `parts` fits in the pipe now (never blocking: tokio's sender is
/// non-blocking); returns how many bytes.
fn prefill(pipe: &pipe::Sender, parts: &[&[u8]]) -> usize {
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

/// Kills the process group of a warm start that will not be used (S's session and group are
/// its pid; W is in it) and, when S is our child, reaps it on a blocking thread.
fn abandon(pid: i32, ours: bool) {
    let pid = nix::unistd::Pid::from_raw(pid);
    let _ = nix::sys::signal::killpg(pid, nix::sys::signal::Signal::SIGKILL);
    if ours {
        tokio::task::spawn_blocking(move || nix::sys::wait::waitpid(pid, None));
    }
}

/// A child this process did not spawn but adopted (a warm execution's shepherd), waited for
/// through a pidfd, which becomes readable when it exits.
pub(crate) struct Adopted {
    pid: i32,
    pidfd: AsyncFd<OwnedFd>,
    status: Option<ExitStatus>,
    /// Sent once it has exited: the template may make a spare now.
    nudge: Option<super::template::Nudge>,
    _own: crate::strays::Own,
}

impl Adopted {
    fn new(
        pid: i32,
        nudge: Option<super::template::Nudge>,
        own: crate::strays::Own,
    ) -> std::io::Result<Adopted> {
        // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: a descriptor just returned to us, owned from here on.
        let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        Ok(Adopted {
            pid,
            // SAFETY: the pidfd is owned by the AsyncFd and closed only when it drops.
            pidfd: unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE)? },
            status: None,
            nudge,
            _own: own,
        })
    }

    /// Waits for the exit and reaps it. Cancel-safe, like `tokio::process::Child::wait`.
    pub(crate) async fn wait(&mut self) -> std::io::Result<ExitStatus> {
        loop {
            if let Some(s) = self.status {
                return Ok(s);
            }
            let mut guard = self.pidfd.readable().await?;
            let mut raw: libc::c_int = 0;
            // SAFETY: waitpid on our own child, writing its status into a local.
            let r = unsafe { libc::waitpid(self.pid, &mut raw, libc::WNOHANG) };
            if r == self.pid {
                self.status = Some(ExitStatus::from_raw(raw));
                if let Some(n) = self.nudge.take() {
                    n.send();
                }
            } else if r == 0 {
                guard.clear_ready();
            } else {
                return Err(std::io::Error::last_os_error());
            }
        }
    }
}

impl Drop for Adopted {
    /// Like `kill_on_drop` for a cold child: an execution dropped before its end is killed, and
    /// reaped off the runtime's threads.
    fn drop(&mut self) {
        if self.status.is_none() {
            let pid = self.pid;
            // SAFETY: our own, not yet reaped, child: the pid cannot have been reused.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            std::thread::spawn(move || {
                let mut raw = 0;
                // SAFETY: as above.
                unsafe { libc::waitpid(pid, &mut raw, 0) };
            });
        }
    }
}
