//! What the runner holds of an execution a warm template forked ([`Handle`]) or made ahead of
//! its request ([`Spare`]), and the pidfd calls that act on such processes without ever
//! touching a pid reused since.

use nix::sys::socket::{ControlMessage, MsgFlags, sendmsg};
use serde_json::Value;
use std::io::IoSlice;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::time::Duration;

/// An execution the template forked and supervises, as the runner holds it.
pub(crate) struct Handle {
    /// The interpreter, W: the execution's process group and session.
    pub pid: i32,
    /// The write end of W's lifeline: closed, the template kills W's tree; a `t` written, it
    /// passes SIGTERM to all of it.
    pub lifeline: OwnedFd,
    /// The read end of W's status pipe: W's wait status as text, once W and what it left are
    /// gone; closed without it when the template died.
    pub status: OwnedFd,
    /// A pidfd of W.
    pub pidfd: OwnedFd,
    /// The template, to end one that does not report W's end because it is stopped.
    pub template: Option<TemplateRef>,
    /// W is never a stray (`crate::strays`): should the template die, it is our child.
    pub own: crate::strays::Own,
}

/// A template as its executions' waiters know it: its pid, and a pidfd opened while it was our
/// unreaped child (so it is that process for good).
#[derive(Clone)]
pub(crate) struct TemplateRef {
    pub pid: i32,
    pub pidfd: Arc<OwnedFd>,
}

impl Handle {
    /// From the three descriptors the template sends with an execution, in its order.
    pub(super) fn of(
        pid: i32,
        fds: &mut Vec<OwnedFd>,
        template: Option<TemplateRef>,
    ) -> Option<Handle> {
        if fds.len() != 3 {
            return None;
        }
        let pidfd = fds.pop()?;
        let status = fds.pop()?;
        let lifeline = fds.pop()?;
        Some(Handle {
            pid,
            lifeline,
            status,
            pidfd,
            template,
            own: crate::strays::Own::new(pid),
        })
    }
}

/// A spare in our hands: W (waiting for its request on `w`), which holds `scripts` prepared, and
/// its supervision. Its descriptors closed, W ends.
pub(super) struct Spare {
    pub scripts: Vec<String>,
    w: OwnedFd,
    pub handle: Handle,
}

impl Spare {
    /// From the template's `{"spare": W, "scripts": […]}` and its four descriptors (W's socket,
    /// then its [`Handle`]'s).
    pub(super) fn of(
        pid: i32,
        v: &Value,
        mut fds: Vec<OwnedFd>,
        template: Option<TemplateRef>,
    ) -> Option<Spare> {
        if fds.len() != 4 {
            return None;
        }
        let w = fds.remove(0);
        let handle = Handle::of(pid, &mut fds, template)?;
        let scripts = v["scripts"].as_array().map_or_else(Vec::new, |a| {
            a.iter()
                .filter_map(|p| p.as_str().map(str::to_string))
                .collect()
        });
        Some(Spare { scripts, w, handle })
    }

    /// Gives it the execution: the request and the execution's three pipes. Nothing of the
    /// workflow runs before its stdin is written (by the caller, after this), so after a
    /// failure the spare is let go and the same descriptors given to another.
    ///
    /// A node of an earlier execution (the same user) may have changed it from outside. Stopped
    /// (SIGSTOP), it is continued, or this execution would wait for its deadline; with a hard
    /// limit, a scheduling policy or a niceness other than ours (what a cold interpreter would
    /// have), which it could not put back, it is refused, so this execution goes to another
    /// spare or the template (a descriptor limit of 5 left it unable to take its pipes: the
    /// execution failed; SCHED_IDLE ran it at idle priority). What an
    /// execution running beside it does to it after that, it could do to any running execution.
    pub(super) fn give(&self, body: &[u8], fds: &[RawFd; 3]) -> std::io::Result<()> {
        if !as_ours(self.handle.pid) {
            return Err(std::io::Error::other(
                "its limits or scheduling were changed",
            ));
        }
        pidfd_signal(&self.handle.pidfd, libc::SIGCONT);
        let flags = MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL;
        let iov = [IoSlice::new(body)];
        let cmsg = [ControlMessage::ScmRights(fds)];
        sendmsg::<()>(self.w.as_raw_fd(), &iov, &cmsg, flags, None)?;
        Ok(())
    }

    /// Closes its descriptors: W ends, and the template reaps it — or, if the template is gone
    /// and W was re-parented to us, we do, off the runtime's threads.
    pub(super) fn let_go(self) {
        let Spare { w, handle, .. } = self;
        drop(w);
        reap_if_ours(handle.pid, handle.pidfd);
    }
}

/// Whether `pid` has this process's hard limits, scheduling policy and niceness (~15 µs: 35
/// system calls).
fn as_ours(pid: i32) -> bool {
    // SAFETY: prlimit and getrlimit fill the rlimit given; getpriority reads a number (errno is
    // cleared first: -1 is a valid niceness).
    unsafe {
        for resource in [
            libc::RLIMIT_CPU,
            libc::RLIMIT_FSIZE,
            libc::RLIMIT_DATA,
            libc::RLIMIT_STACK,
            libc::RLIMIT_CORE,
            libc::RLIMIT_RSS,
            libc::RLIMIT_NPROC,
            libc::RLIMIT_NOFILE,
            libc::RLIMIT_MEMLOCK,
            libc::RLIMIT_AS,
            libc::RLIMIT_LOCKS,
            libc::RLIMIT_SIGPENDING,
            libc::RLIMIT_MSGQUEUE,
            libc::RLIMIT_NICE,
            libc::RLIMIT_RTPRIO,
            libc::RLIMIT_RTTIME,
        ] {
            let mut theirs: libc::rlimit = std::mem::zeroed();
            let mut ours: libc::rlimit = std::mem::zeroed();
            if libc::prlimit(pid, resource, std::ptr::null(), &mut theirs) != 0
                || libc::getrlimit(resource, &mut ours) != 0
            {
                continue; // a resource this kernel does not know, or `pid` is gone (given, it fails)
            }
            if theirs.rlim_max != ours.rlim_max {
                return false;
            }
        }
        // A scheduling policy other than a child of ours gets: SCHED_IDLE, which an unprivileged
        // W cannot leave (back to SCHED_OTHER needs CAP_SYS_NICE or a RLIMIT_NICE that allows
        // it), ran the execution at idle priority.
        let child = crate::sched::of_a_child();
        let theirs = libc::sched_getscheduler(pid);
        if let Some((policy, _)) = child {
            if theirs >= 0 && theirs & !libc::SCHED_RESET_ON_FORK != policy {
                return false;
            }
        }
        *libc::__errno_location() = 0;
        let theirs = libc::getpriority(libc::PRIO_PROCESS, pid as libc::id_t);
        let ours = libc::getpriority(libc::PRIO_PROCESS, 0);
        let reset = child.is_some_and(|(_, reset)| reset);
        let child = if reset { ours.max(0) } else { ours };
        theirs == child || *libc::__errno_location() != 0
    }
}

/// When `pid` is this process's child (an execution or spare whose template died, re-parented
/// to us), waits off the runtime's threads (at most [`ENDS_WITHIN`], then kills it) for it to
/// end, and reaps it. Through its pidfd, so that a pid reused meanwhile is never touched.
pub(crate) fn reap_if_ours(pid: i32, pidfd: OwnedFd) {
    use nix::sys::wait::{Id, WaitPidFlag, waitid};
    let me = std::process::id() as i32;
    if crate::tree::stat(pid).is_none_or(|s| s.ppid != me) {
        return;
    }
    std::thread::spawn(move || {
        if !pidfd_exited(&pidfd, ENDS_WITHIN) {
            pidfd_kill(&pidfd);
        }
        let _ = waitid(Id::PIDFd(pidfd.as_fd()), WaitPidFlag::WEXITED);
    });
}

/// Whether the process of `pidfd` has exited, waiting at most `limit` for it.
pub(crate) fn pidfd_exited(pidfd: &OwnedFd, limit: Duration) -> bool {
    let mut p = libc::pollfd {
        fd: pidfd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    unsafe { libc::poll(&mut p, 1, limit.as_millis() as libc::c_int) > 0 }
}

/// SIGKILL to the process of `pidfd` (never to a process that took its pid since).
pub(crate) fn pidfd_kill(pidfd: &OwnedFd) {
    pidfd_signal(pidfd, libc::SIGKILL);
}

/// `signal` to the process of `pidfd` (never to a process that took its pid since).
fn pidfd_signal(pidfd: &OwnedFd, signal: libc::c_int) {
    // SAFETY: pidfd_send_signal takes a descriptor, a signal and no siginfo.
    unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            signal,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        );
    }
}

/// How long a spare let go, or an execution dropped before its end, may take to end.
const ENDS_WITHIN: Duration = Duration::from_secs(5);

/// A pidfd of `pid` (pidfd_open).
pub(crate) fn pidfd_open(pid: i32) -> std::io::Result<OwnedFd> {
    use std::os::fd::FromRawFd;
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a descriptor just returned to us, owned from here on.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}
