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
const SOURCE: &str = include_str!("../../../../runtime/warm/template.py");

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
        let body = serde_json::json!({
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
        let answer = match tokio::time::timeout(ANSWER_WITHIN, self.receive()).await {
            Ok(r) => r?,
            Err(_) => return Err(other("the warm template did not answer in time".into())),
        };
        match answer.get("pid").and_then(Value::as_i64) {
            Some(pid) if pid > 0 => Ok(pid as i32),
            _ => Err(other(format!("the warm template answered {answer}"))),
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
        let mut buf = vec![0u8; 64 << 10];
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

impl Drop for Template {
    /// Retiring a template kills it and reaps it off the runtime's threads. Executions it
    /// started are not its children and are not touched.
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            std::thread::spawn(move || child.wait());
        }
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
