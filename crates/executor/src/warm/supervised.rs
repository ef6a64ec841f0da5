//! Waiting for a warm execution: the template that forked it is its parent and reports how it
//! ended once it and what it left are gone (`runtime/warm/supervise.py`); the runner reads that
//! report. A template that dies first hands its executions to the runner (a child subreaper),
//! which then waits for them itself; one that does not report an ended execution in time
//! (stopped, stuck) is killed so that they are handed over.

use super::handle::{TemplateRef, pidfd_exited, pidfd_kill, reap_if_ours};
use super::template::Nudge;
use nix::sys::wait::{Id, WaitPidFlag, WaitStatus, waitid};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::time::Duration;
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncReadExt, Interest};
use tokio::net::unix::pipe;
use tokio::time::Instant;

/// How long the template may take to report an execution's end once its interpreter has ended
/// before it is looked at: it reaps it and ends what it left in a millisecond or two (a second
/// at most, against a fork storm). One found stopped then is killed; one that runs (a busy
/// machine) is waited for as long again.
const REPORT_WITHIN: Duration = Duration::from_secs(2);

/// How long a template that is ending (its status pipes closed) may take to be gone, and so to
/// have handed its executions over.
const HANDOVER_WITHIN: Duration = Duration::from_secs(2);

/// A warm execution being waited for.
pub(crate) struct Supervised {
    pid: i32,
    phase: Phase,
    /// The template's report: W's wait status as text.
    report: Vec<u8>,
    /// W's status, reported by a template that then gave up (`lost`).
    reported: Option<i32>,
    pidfd: AsyncFd<OwnedFd>,
    /// The template's pid and pidfd (registered to learn when it is gone).
    template: Option<(i32, AsyncFd<OwnedFd>)>,
    /// When the interpreter was seen to end, the report not read yet.
    ended_at: Option<Instant>,
    status: Option<ExitStatus>,
    /// Sent once it has ended: the template may make a spare now.
    nudge: Option<Nudge>,
    /// Never a stray: should the template die, this one is our child.
    _own: crate::strays::Own,
}

enum Phase {
    /// Reading the template's report.
    Reported(pipe::Receiver),
    /// The template is ending (its end of the status pipe closed): until it is gone.
    Handover(Instant),
    /// The template is gone: the interpreter is our child, or was reaped with it.
    Orphan,
}

impl Supervised {
    pub(crate) fn new(
        pid: i32,
        status: OwnedFd,
        pidfd: OwnedFd,
        template: Option<TemplateRef>,
        nudge: Option<Nudge>,
        own: crate::strays::Own,
    ) -> std::io::Result<Supervised> {
        let template = match template.map(|t| (t.pid, t.pidfd.try_clone())) {
            Some((pid, Ok(fd))) => {
                // SAFETY: the descriptor is owned by the AsyncFd and closed only when it drops.
                Some((pid, unsafe {
                    AsyncFd::register_with_interest(fd, Interest::READABLE)?
                }))
            }
            _ => None,
        };
        Ok(Supervised {
            pid,
            phase: Phase::Reported(pipe::Receiver::from_owned_fd(status)?),
            report: Vec::new(),
            reported: None,
            // SAFETY: as above.
            pidfd: unsafe { AsyncFd::register_with_interest(pidfd, Interest::READABLE)? },
            template,
            ended_at: None,
            status: None,
            nudge,
            _own: own,
        })
    }

    /// Whether the template did not see the execution to its end, so that what it left may
    /// have come to us (`crate::strays`).
    pub(crate) fn lost(&self) -> bool {
        !matches!(self.phase, Phase::Reported(_))
    }

    /// Waits for the end. Cancel-safe, like `tokio::process::Child::wait`.
    pub(crate) async fn wait(&mut self) -> std::io::Result<ExitStatus> {
        loop {
            if let Some(s) = self.status {
                return Ok(s);
            }
            match &mut self.phase {
                Phase::Reported(pipe) => {
                    let mut buf = [0u8; 32];
                    let report_due = self.ended_at.map(|t| t + REPORT_WITHIN);
                    tokio::select! {
                        n = pipe.read(&mut buf) => match n {
                            Ok(n) if n > 0 => {
                                self.report.extend_from_slice(&buf[..n]);
                                match parse_report(&self.report) {
                                    Some((raw, false)) => {
                                        self.status = Some(ExitStatus::from_raw(raw));
                                        if let Some(n) = self.nudge.take() {
                                            n.send();
                                        }
                                    }
                                    // It could not end what the interpreter left, and gives
                                    // up: that comes to us once it is gone.
                                    Some((raw, true)) => {
                                        self.reported = Some(raw);
                                        self.phase = Phase::Handover(Instant::now());
                                    }
                                    None => {}
                                }
                            }
                            // The template died before it could report.
                            _ => self.phase = Phase::Handover(Instant::now()),
                        },
                        _ = self.pidfd.readable(), if self.ended_at.is_none() => {
                            self.ended_at = Some(Instant::now());
                        }
                        _ = tokio::time::sleep_until(report_due.unwrap_or_else(Instant::now)),
                            if report_due.is_some() && self.template.is_some() => {
                            // Ended, and the template silent. Stopped, it is killed and hands
                            // its executions to us; running, it is given as long again.
                            let (tpid, tfd) = self.template.as_ref().expect("checked");
                            if stopped(*tpid, tfd.get_ref()) {
                                pidfd_kill(tfd.get_ref());
                                self.phase = Phase::Handover(Instant::now());
                            } else {
                                self.ended_at = Some(Instant::now());
                            }
                        }
                    }
                }
                Phase::Handover(since) => {
                    let by = *since + HANDOVER_WITHIN;
                    if let Some((_, t)) = &self.template {
                        // Readable once it has exited, its children re-parented to us.
                        let _ = tokio::time::timeout_at(by, t.readable()).await;
                    }
                    self.phase = Phase::Orphan;
                }
                Phase::Orphan => {
                    if let Some(raw) = self.reported {
                        self.status = Some(ExitStatus::from_raw(raw));
                        continue;
                    }
                    let mut guard = self.pidfd.readable().await?;
                    let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG;
                    match waitid(Id::PIDFd(self.pidfd.get_ref().as_fd()), flags) {
                        Ok(WaitStatus::StillAlive) => guard.clear_ready(),
                        Ok(ws) => self.status = Some(ExitStatus::from_raw(raw_of(ws))),
                        // Reaped by the template before it died: how it ended is lost.
                        Err(_) => self.status = Some(ExitStatus::from_raw(libc::SIGKILL)),
                    }
                }
            }
        }
    }
}

/// Whether the template (`pid`, while its pidfd says it has not exited: so still that process)
/// is stopped (`T`, `t`: SIGSTOP, a debugger) and so cannot report.
fn stopped(pid: i32, pidfd: &OwnedFd) -> bool {
    pidfd_exited(pidfd, Duration::ZERO) || crate::tree::is_stopped(pid)
}

/// `"<wait status>\n"`, or `"<wait status> lost\n"` when the template could not end what the
/// interpreter left and gives up, as the template writes it: the status, and whether it is lost.
fn parse_report(text: &[u8]) -> Option<(i32, bool)> {
    let line = std::str::from_utf8(text.strip_suffix(b"\n")?).ok()?;
    let (raw, lost) = match line.strip_suffix(" lost") {
        Some(raw) => (raw, true),
        None => (line, false),
    };
    Some((raw.parse().ok()?, lost))
}

/// A wait status as the kernel packs it (what `ExitStatus::from_raw` takes).
fn raw_of(ws: WaitStatus) -> i32 {
    match ws {
        WaitStatus::Exited(_, code) => (code & 0xff) << 8,
        WaitStatus::Signaled(_, sig, core) => sig as i32 | if core { 0x80 } else { 0 },
        _ => libc::SIGKILL,
    }
}

impl Drop for Supervised {
    /// Like `kill_on_drop` for a cold child: an execution dropped before its end is killed (its
    /// lifeline, dropped with it, has the template end the rest), and reaped off the runtime's
    /// threads if it is ours.
    fn drop(&mut self) {
        if self.status.is_some() {
            return;
        }
        let pidfd = match self.pidfd.get_ref().try_clone() {
            Ok(fd) => fd,
            Err(_) => return,
        };
        pidfd_kill(&pidfd);
        reap_if_ours(self.pid, pidfd);
    }
}

#[cfg(test)]
mod tests {
    use super::parse_report;

    #[test]
    fn a_report_is_a_status_and_whether_the_template_gave_up() {
        assert_eq!(parse_report(b"256\n"), Some((256, false)));
        assert_eq!(parse_report(b"9 lost\n"), Some((9, true)));
        assert_eq!(parse_report(b"25"), None);
        assert_eq!(parse_report(b"x\n"), None);
    }
}
