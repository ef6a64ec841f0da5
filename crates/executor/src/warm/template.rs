//! One warm template process (`runtime/warm/template.py`) and the conversation with it.
//!
//! The template is the runner's direct child — it must be: the execution it forks is the
//! runner's child too, made with `clone(CLONE_PARENT)` (or, where the template cannot make that
//! call, handed over by re-parenting: the template's intermediate process exits, and the orphan
//! goes to the nearest child subreaper above it, the runner). It lives in its own process group, so a
//! Ctrl-C on the terminal reaches flowrun only, and it exits by itself when the runner's end of
//! its socket closes (the runner died or retired it).
//!
//! The socket is a `SOCK_SEQPACKET` pair: one message per request and per answer, with the
//! execution's descriptors attached to the request (`SCM_RIGHTS`).

use nix::sys::socket::{
    AddressFamily, ControlMessage, MsgFlags, SockFlag, SockType, recv, sendmsg, socketpair,
};
use serde_json::Value;
use std::io::IoSlice;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::time::Duration;
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

/// The template's source, run with `-c`: embedded, so nothing is written to disk for it.
/// Its parts, in this order (`template.py` says what each holds).
const SOURCE: &str = concat!(
    include_str!("../../../../runtime/warm/template.py"),
    include_str!("../../../../runtime/warm/spares.py"),
    include_str!("../../../../runtime/warm/serve.py"),
);

/// How long a new template may take to import what it preloads and say it is ready. It starts
/// in a few tens of ms on an idle machine; several seconds means something is wrong (a broken
/// venv, a machine swapping), and the execution goes cold.
const READY_WITHIN: Duration = Duration::from_secs(10);

/// How long a template may take to answer a request (a clone, or two forks and a pipe read: ~1 ms).
const ANSWER_WITHIN: Duration = Duration::from_secs(2);

/// What one warm start asks of the template.
pub(crate) struct Request<'a> {
    pub shepherd: &'a std::path::Path,
    pub program: &'a std::path::Path,
    pub args: &'a [String],
    pub script: &'a str,
    pub env: &'a [(String, String)],
    pub cwd: PathBuf,
    pub max_memory: Option<u64>,
}

pub(crate) struct Template {
    pub pid: i32,
    sock: AsyncFd<OwnedFd>,
    child: Option<std::process::Child>,
    /// Executions started from it.
    pub uses: u32,
    /// The spares it made (see `_make_spare` in the template) and has not used or retired: the
    /// runner's children, which nobody else waits for — killed and reaped when it goes.
    spares: Vec<i32>,
    /// Resident memory right after it said ready, in KiB.
    pub base_rss_kib: u64,
}

impl Template {
    /// Starts `program args… -c SOURCE` with the socket as its fd 3 and waits until it is ready.
    pub async fn start(program: &std::path::Path, args: &[String]) -> std::io::Result<Template> {
        let (ours, theirs) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        )?;
        let theirs_fd = theirs.as_raw_fd();
        let mut cmd = std::process::Command::new(program);
        cmd.args(args)
            .arg("-c")
            .arg(SOURCE)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .process_group(0);
        // SAFETY: between fork and exec only async-signal-safe calls: dup2 and fcntl.
        unsafe {
            cmd.pre_exec(move || {
                if libc::dup2(theirs_fd, 3) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // dup2 clears close-on-exec; the template's end must also block (it is a
                // plain loop around recvmsg).
                let fl = libc::fcntl(3, libc::F_GETFL);
                libc::fcntl(3, libc::F_SETFL, fl & !libc::O_NONBLOCK);
                Ok(())
            });
        }
        let child = cmd.spawn()?;
        drop(theirs);
        let mut t = Template {
            pid: child.id() as i32,
            // SAFETY: the socket is owned by the AsyncFd and closed only when it drops.
            sock: unsafe {
                AsyncFd::register_with_interest(ours, Interest::READABLE | Interest::WRITABLE)?
            },
            child: Some(child),
            uses: 0,
            spares: Vec::new(),
            base_rss_kib: 0,
        };
        let ready = tokio::time::timeout(READY_WITHIN, t.receive()).await;
        match ready {
            Ok(Ok(v)) if v.get("ready").is_some() => {
                t.base_rss_kib = rss_kib(t.pid).unwrap_or(0);
                Ok(t)
            }
            Ok(Ok(v)) => Err(other(format!(
                "the warm template said {v} instead of ready"
            ))),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(other("the warm template was not ready in time".into())),
        }
    }

    /// Asks for one execution: returns the pid of its shepherd, which is this process's child
    /// by the time the answer arrives. `fds` are the child's stdin, stdout, stderr and lifeline.
    pub async fn fork(&mut self, req: &Request<'_>, fds: [RawFd; 4]) -> std::io::Result<i32> {
        let seq = self.uses;
        let body = serde_json::json!({
            "seq": seq,
            "shepherd": req.shepherd,
            "program": req.program,
            "args": req.args,
            "script": req.script,
            "env": req.env,
            "cwd": req.cwd,
            "max_memory": req.max_memory,
        })
        .to_string();
        self.uses += 1;
        let sent = tokio::time::timeout(ANSWER_WITHIN, self.send(body.as_bytes(), &fds)).await;
        match sent {
            Ok(r) => r?,
            Err(_) => return Err(other("the warm template did not take the request".into())),
        }
        let deadline = tokio::time::Instant::now() + ANSWER_WITHIN;
        loop {
            let msg = match tokio::time::timeout_at(deadline, self.receive()).await {
                Ok(r) => r?,
                Err(_) => return Err(other("the warm template did not answer in time".into())),
            };
            match Message::of(&msg) {
                Message::Spare(pid) => self.spares.push(pid),
                // Only a spare it reported (and we did not hand to an execution or reap).
                Message::Retired(pid) if self.spares.contains(&pid) => {
                    self.spares.retain(|&p| p != pid);
                    end_spare(pid);
                }
                Message::Retired(_) => {}
                // The answer to a request whose runner gave up waiting (its execution was
                // dropped as it started): nobody supervises what it started.
                Message::Answer(n, Some(pid)) if n != i64::from(seq) => {
                    self.spares.retain(|&p| p != pid);
                    end_spare(pid);
                }
                Message::Answer(n, None) if n != i64::from(seq) => {}
                Message::Answer(_, Some(pid)) => {
                    // A spare put to use is an execution now: waited for as one.
                    self.spares.retain(|&p| p != pid);
                    return Ok(pid);
                }
                Message::Answer(_, None) | Message::Other => {
                    return Err(other(format!("the warm template answered {msg}")));
                }
            }
        }
    }

    async fn send(&self, body: &[u8], fds: &[RawFd]) -> std::io::Result<()> {
        loop {
            let mut guard = self.sock.writable().await?;
            let res = guard.try_io(|s| {
                let iov = [IoSlice::new(body)];
                let cmsg = [ControlMessage::ScmRights(fds)];
                sendmsg::<()>(s.as_raw_fd(), &iov, &cmsg, MsgFlags::MSG_NOSIGNAL, None)
                    .map_err(std::io::Error::from)
            });
            match res {
                Ok(r) => return r.map(|_| ()),
                Err(_would_block) => continue,
            }
        }
    }

    async fn receive(&self) -> std::io::Result<Value> {
        let mut buf = vec![0u8; 16 << 10];
        loop {
            let mut guard = self.sock.readable().await?;
            let res = guard.try_io(|s| {
                recv(s.as_raw_fd(), &mut buf, MsgFlags::empty()).map_err(std::io::Error::from)
            });
            match res {
                Ok(Ok(0)) => return Err(other("the warm template is gone".into())),
                Ok(Ok(n)) => {
                    return serde_json::from_slice(&buf[..n])
                        .map_err(|e| other(format!("the warm template said nonsense: {e}")));
                }
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => continue,
            }
        }
    }

    /// What [`Nudge::send`] tells the template through: a copy of our end of its socket.
    pub fn nudge(&self) -> Option<Nudge> {
        self.sock.get_ref().try_clone().ok().map(Nudge)
    }

    /// Is the template process still there (not exited, not a zombie)?
    pub fn alive(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
            && crate::tree::stat(self.pid).is_some_and(|s| s.state != 'Z')
    }

    /// Resident memory now, in KiB.
    pub fn rss_kib(&self) -> Option<u64> {
        rss_kib(self.pid)
    }
}

/// Tells a template that an execution it started has ended: the moment to make the next one's
/// spare (`_make_spare` in the template), when the machine has room for it.
pub(crate) struct Nudge(OwnedFd);

impl Nudge {
    /// Never blocks nor fails: a template that is gone or busy just makes no spare.
    pub fn send(self) {
        let _ = nix::sys::socket::send(
            self.0.as_raw_fd(),
            b"spare",
            MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL,
        );
    }
}

/// What the template says on its socket.
enum Message {
    /// `{"seq", "pid"}` or `{"seq", "error"}`: the answer to request `seq`.
    Answer(i64, Option<i32>),
    /// `{"spare": S}`: it made a spare, S being our child.
    Spare(i32),
    /// `{"retired": S}`: it let go of a spare that could not serve.
    Retired(i32),
    Other,
}

impl Message {
    fn of(v: &Value) -> Message {
        let pid = |k: &str| {
            v.get(k)
                .and_then(Value::as_i64)
                .filter(|&p| p > 0 && p <= i64::from(i32::MAX))
                .map(|p| p as i32)
        };
        if let Some(p) = pid("spare") {
            Message::Spare(p)
        } else if let Some(p) = pid("retired") {
            Message::Retired(p)
        } else if let Some(seq) = v.get("seq").and_then(Value::as_i64) {
            Message::Answer(seq, pid("pid"))
        } else {
            Message::Other
        }
    }
}

/// Reaps, off the runtime's threads, a spare (or an execution nobody waits for) that the
/// template reported, if it is our child. Each pid comes here once, while not reaped (so not
/// reused): a spare is taken off the list when it is handed to an execution or ended. It
/// ends by itself: its shepherd ends its interpreter and reaps it when the template closes its
/// end of their socket (it retired the spare, or it went away), or when its lifeline closes.
/// Killed after [`SPARE_ENDS_WITHIN`] if it has not; then its interpreter, orphaned to us, is
/// reaped too.
fn end_spare(pid: i32) {
    use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
    let me = std::process::id() as i32;
    if crate::tree::stat(pid).is_none_or(|s| s.ppid != me) {
        return;
    }
    let s = nix::unistd::Pid::from_raw(pid);
    std::thread::spawn(move || {
        let reaped = || {
            !matches!(
                waitpid(s, Some(WaitPidFlag::WNOHANG)),
                Ok(WaitStatus::StillAlive)
            )
        };
        if !ends_within(SPARE_ENDS_WITHIN, reaped) {
            // Our child, not reaped: its pid and group id cannot have been reused.
            let _ = nix::sys::signal::killpg(s, nix::sys::signal::Signal::SIGKILL);
            let _ = nix::sys::signal::kill(s, nix::sys::signal::Signal::SIGKILL);
            let _ = waitpid(s, None);
        }
        // What of its group is left to us: nothing, unless the shepherd died before its
        // interpreter (then that one is re-parented here, the subreaper).
        for _ in 0..400 {
            match waitpid(nix::unistd::Pid::from_raw(-pid), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) => std::thread::sleep(Duration::from_millis(5)),
                Ok(_) => {}
                Err(_) => break,
            }
        }
    });
}

/// Polls `ended` until it says so (true) or `limit` has passed (false). For the waits of a
/// thread that must not block for good on a process that does not end.
fn ends_within(limit: Duration, mut ended: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + limit;
    loop {
        if ended() {
            return true;
        }
        if std::time::Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// How long a spare may take to end once its template let it go.
const SPARE_ENDS_WITHIN: Duration = Duration::from_secs(5);

impl Drop for Template {
    /// Retiring a template: its socket is shut for writing, so that it ends by itself once it
    /// has made and reported any spare it was making (killed if it takes more than a second);
    /// then the spares it reported — read off the socket, also those not read yet — are ended
    /// and reaped, off the runtime's threads. Executions it started are not its children and
    /// are not touched.
    fn drop(&mut self) {
        let mut spares = std::mem::take(&mut self.spares);
        let child = self.child.take();
        let sock = self.sock.get_ref().try_clone().ok();
        std::thread::spawn(move || {
            if let Some(s) = &sock {
                let _ =
                    nix::sys::socket::shutdown(s.as_raw_fd(), nix::sys::socket::Shutdown::Write);
            }
            if let Some(mut child) = child {
                if !ends_within(Duration::from_secs(1), || {
                    !matches!(child.try_wait(), Ok(None))
                }) {
                    let _ = child.kill();
                    let _ = child.wait();
                }
            }
            if let Some(s) = &sock {
                let mut buf = vec![0u8; 16 << 10];
                while let Ok(n) = recv(s.as_raw_fd(), &mut buf, MsgFlags::MSG_DONTWAIT) {
                    if n == 0 {
                        break;
                    }
                    let Ok(v) = serde_json::from_slice::<Value>(&buf[..n]) else {
                        continue;
                    };
                    match Message::of(&v) {
                        Message::Spare(p) | Message::Answer(_, Some(p)) => spares.push(p),
                        // Its report came first and put it on the list, or it is not ours.
                        _ => {}
                    }
                }
            }
            spares.sort_unstable();
            spares.dedup();
            for pid in spares {
                end_spare(pid);
            }
        });
    }
}

fn other(msg: String) -> std::io::Error {
    std::io::Error::other(msg)
}

/// `VmRSS` of `/proc/<pid>/status`, in KiB.
fn rss_kib(pid: i32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = text.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}
