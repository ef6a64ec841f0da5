//! Short helper processes of this process's own — an interpreter asked what it is, a workflow's
//! code compiled for `validate`, an agent CLI's `--version` — run with a deadline and their
//! output bounded, killed when they overstay or say too much.
//!
//! Not executions: no lifeline and no process group of their own (a terminal's Ctrl-C reaches
//! them as it reaches us), spawned under [`crate::process::spawn_helper`]'s lock, and they die
//! with the thread that waits for them (PDEATHSIG), so a runner killed meanwhile leaves none.
//! stdout and stderr are read as they come (a helper that fills a pipe is never waited on), and
//! a helper that ends but leaves its stdout open to a child of its own is not waited for past the
//! deadline either.

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use std::io::Read;
use std::os::fd::AsFd;
use std::os::unix::process::CommandExt;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// `bytes` as a helper's stdin: a file without a name, at its start — no pipe to write (whose
/// reader may be gone, or may not read until it has said too much), and nothing left behind in
/// `TMPDIR` whatever ends this process.
pub fn stdin_of(bytes: &[u8]) -> std::io::Result<Stdio> {
    use std::io::{Seek, SeekFrom, Write};
    let mut file = tempfile::tempfile()?;
    file.write_all(bytes)?;
    file.seek(SeekFrom::Start(0))?;
    Ok(Stdio::from(file))
}

/// The end of stderr kept: enough for the last lines of a traceback.
pub const STDERR_TAIL: usize = 2048;

/// A helper that ended within its time.
#[derive(Debug)]
pub struct Finished {
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    /// The last [`STDERR_TAIL`] bytes of its stderr, lossily decoded.
    pub stderr_tail: String,
}

#[derive(Debug)]
pub enum HelperError {
    Spawn(std::io::Error),
    /// Killed at the deadline, after this long.
    TimedOut(Duration),
    /// Killed for printing more than this many bytes on stdout.
    TooLong(usize),
    Read(std::io::Error),
}

impl std::fmt::Display for HelperError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HelperError::Spawn(e) => write!(f, "cannot start it: {e}"),
            HelperError::TimedOut(d) => write!(f, "it took longer than {} s", d.as_secs_f64()),
            HelperError::TooLong(n) => write!(f, "it printed more than {n} bytes"),
            HelperError::Read(e) => write!(f, "cannot read what it printed: {e}"),
        }
    }
}

impl std::error::Error for HelperError {}

/// Runs `cmd` (its stdin as the caller set it; stdout and stderr are taken here) for at most
/// `timeout`, keeping at most `max_stdout` bytes of stdout.
pub fn run_bounded(
    cmd: &mut Command,
    timeout: Duration,
    max_stdout: usize,
) -> Result<Finished, HelperError> {
    let deadline = Instant::now() + timeout;
    let parent = nix::unistd::getpid();
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    // SAFETY: only system calls between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            let _ = nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL);
            // The parent may have died before the line above: then nothing would kill us.
            if nix::unistd::getppid() != parent {
                libc::_exit(70);
            }
            Ok(())
        });
    }
    let mut child = crate::process::spawn_helper(cmd).map_err(HelperError::Spawn)?;
    let mut stdout = child.stdout.take();
    let mut stderr = child.stderr.take();
    let mut out = Vec::new();
    let mut err = Vec::new();
    let mut buf = [0u8; 64 * 1024];
    let read: Result<(), HelperError> = loop {
        if stdout.is_none() && stderr.is_none() {
            break Ok(());
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break Err(HelperError::TimedOut(timeout));
        }
        let ms = u16::try_from(left.as_millis().max(1)).unwrap_or(u16::MAX);
        let (ready_out, ready_err) = {
            let mut fds: Vec<PollFd> = [
                stdout.as_ref().map(|s| s.as_fd()),
                stderr.as_ref().map(|s| s.as_fd()),
            ]
            .into_iter()
            .flatten()
            .map(|fd| PollFd::new(fd, PollFlags::POLLIN))
            .collect();
            match poll(&mut fds, PollTimeout::from(ms)) {
                Ok(0) | Err(Errno::EINTR) => continue,
                Err(e) => break Err(HelperError::Read(e.into())),
                Ok(_) => {}
            }
            let ready = |i: usize| {
                fds.get(i)
                    .and_then(PollFd::revents)
                    .is_some_and(|r| !r.is_empty())
            };
            match (stdout.is_some(), stderr.is_some()) {
                (true, true) => (ready(0), ready(1)),
                (true, false) => (ready(0), false),
                _ => (false, ready(0)),
            }
        };
        if ready_out {
            let s = stdout.as_mut().expect("polled");
            match s.read(&mut buf) {
                Ok(0) => stdout = None,
                Ok(n) if out.len() + n > max_stdout => break Err(HelperError::TooLong(max_stdout)),
                Ok(n) => out.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => break Err(HelperError::Read(e)),
            }
        }
        if ready_err {
            let s = stderr.as_mut().expect("polled");
            match s.read(&mut buf) {
                Ok(0) => stderr = None,
                Ok(n) => {
                    err.extend_from_slice(&buf[..n]);
                    if err.len() > 2 * STDERR_TAIL {
                        err.drain(..err.len() - STDERR_TAIL);
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => break Err(HelperError::Read(e)),
            }
        }
    };
    drop((stdout, stderr));
    // Ended, or killed now (not reaped before: its pid is still its own).
    let status = loop {
        match (&read, child.try_wait()) {
            (Ok(()), Ok(Some(status))) => break Ok(status),
            (Ok(()), Ok(None)) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(2));
            }
            (_, wait) => {
                let _ = child.kill();
                let _ = child.wait();
                break Err(match (read, wait) {
                    (Err(e), _) => e,
                    (Ok(()), Err(e)) => HelperError::Read(e),
                    (Ok(()), Ok(_)) => HelperError::TimedOut(timeout),
                });
            }
        }
    }?;
    let tail = &err[err.len().saturating_sub(STDERR_TAIL)..];
    Ok(Finished {
        status,
        stdout: out,
        stderr_tail: String::from_utf8_lossy(tail).into_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> Command {
        let mut c = Command::new("sh");
        c.args(["-c", script]).stdin(Stdio::null());
        c
    }

    #[test]
    fn output_is_read_as_it_comes_and_stderr_keeps_its_end() {
        // More than a pipe holds on both, before the end: read beside each other, not after.
        let f = run_bounded(
            &mut sh("head -c 300000 /dev/zero; head -c 300000 /dev/zero >&2; echo last >&2"),
            Duration::from_secs(20),
            1 << 20,
        )
        .unwrap();
        assert!(f.status.success());
        assert_eq!(f.stdout.len(), 300000);
        assert!(f.stderr_tail.ends_with("last\n") && f.stderr_tail.len() <= STDERR_TAIL);
    }

    #[test]
    fn a_helper_that_overstays_or_says_too_much_is_killed() {
        let t0 = Instant::now();
        let e = run_bounded(&mut sh("exec sleep 30"), Duration::from_millis(300), 10).unwrap_err();
        assert!(matches!(e, HelperError::TimedOut(_)), "{e}");
        // Its stdout closed, then silent: its end is not waited for past the deadline.
        let e = run_bounded(
            &mut sh("exec 1>&- 2>&-; exec sleep 30"),
            Duration::from_millis(300),
            10,
        )
        .unwrap_err();
        assert!(matches!(e, HelperError::TimedOut(_)), "{e}");
        assert!(t0.elapsed() < Duration::from_secs(10), "{:?}", t0.elapsed());
        let e = run_bounded(
            &mut sh("head -c 100 /dev/zero"),
            Duration::from_secs(20),
            10,
        )
        .unwrap_err();
        assert!(matches!(e, HelperError::TooLong(10)), "{e}");
    }
}
