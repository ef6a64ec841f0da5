//! One warm template process (`runtime/warm/template.py`) and the conversation with it.
//!
//! The template is the runner's direct child, in its own process group (a Ctrl-C on the
//! terminal reaches flowrun only), and the parent and supervisor of the executions it forks
//! (`runtime/warm/supervise.py`). It stops taking requests when the runner's end of its socket
//! closes (the runner died or retired it) and exits once the last of its executions has ended.
//!
//! The socket is a `SOCK_SEQPACKET` pair: one message per request and per answer, with the
//! execution's pipes attached to the request and the runner's ends of its supervision
//! ([`Handle`]) to the answer (`SCM_RIGHTS`).

use super::compiled::{SOURCE, memory_file};
use super::handle::{Handle, Spare, TemplateRef, pidfd_open};
use super::message::{Message, receive_from, send_now};
use nix::sys::socket::{
    AddressFamily, ControlMessage, MsgFlags, SockFlag, SockType, sendmsg, socketpair,
};
use serde_json::Value;
use std::io::IoSlice;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

/// The descriptor the interpreter reads the template's source from: not `-c SOURCE`, which put
/// ~43 KB of source on the command line of the template and of every process forked from it,
/// all of `ps`.
const SOURCE_FD: RawFd = 4;

/// The script the interpreter is given: a link by this name to `/proc/self/fd/4` (not
/// `/dev/fd/4`: a minimal container may have no `/dev/fd`, and flowrun needs `/proc`) in the
/// template's private directory, so `ps` shows `python3 -I -S -u
/// /tmp/flowrun-warm-…/flowrun-warm-template`.
/// Once running, the template closes the descriptor and removes the link: the name its frames
/// carry then opens nothing (with `/dev/fd/4` itself as the name, a node's
/// `traceback.extract_stack()` read whatever file the execution had at descriptor 4).
pub(crate) const SCRIPT_NAME: &str = "flowrun-warm-template";

/// How long a new template may take to import what it preloads and say it is ready. It starts
/// in a few tens of ms on an idle machine; several seconds means something is wrong (a broken
/// venv, a machine swapping), and the execution goes cold.
const READY_WITHIN: Duration = Duration::from_secs(10);

/// Scripts a template keeps prepared (`_PREPARED_MAX` in `runtime/warm/template.py`).
const PREPARED_MAX: usize = 16;

/// How long a template may take to answer a request (a fork and a few pipes: ~1 ms).
const ANSWER_WITHIN: Duration = Duration::from_secs(2);

/// What one warm start asks of the template.
pub(crate) struct Request<'a> {
    pub script: &'a str,
    pub cwd: PathBuf,
    pub max_memory: Option<u64>,
}

pub(crate) struct Template {
    pub pid: i32,
    sock: AsyncFd<OwnedFd>,
    child: Option<std::process::Child>,
    /// Itself as its executions' waiters know it (no pidfd, no such reference).
    me: Option<TemplateRef>,
    /// Executions started from it.
    pub uses: u32,
    /// The spares it made (see `_make_spare` in the template) and handed to us, not used or let
    /// go yet.
    spares: Vec<Spare>,
    /// The spares used or let go since the last nudge: the template counts the spares in our
    /// hands so as to make no more than two.
    gone: Arc<Mutex<Vec<i32>>>,
    /// The scripts it was asked to prepare or to run, the latest last: as many as it keeps
    /// prepared (`_PREPARED_MAX` in `runtime/warm/template.py`).
    asked: std::collections::VecDeque<String>,
    /// Resident memory right after it said ready, in KiB.
    pub base_rss_kib: u64,
    /// Retired for misbehaving (no answer in time, a malformed one): killed, not left to end its
    /// executions. (An answer that it could not start an execution — no descriptors or
    /// processes left for now — sends that execution cold and keeps the template.)
    pub broken: bool,
    _own: crate::strays::Own,
    /// Where its executions tell it which pages they write (`_learn_pages` in
    /// `runtime/warm/spares.py`): private to this user, removed with the template.
    _pages: Option<tempfile::TempDir>,
}

impl Template {
    /// Starts `program args… DIR/flowrun-warm-template` ([`SCRIPT_NAME`]) with the socket as its
    /// fd 3, `code` at fd 4 ([`memory_file`]: the source, or it compiled, which the interpreter
    /// tells by its magic number, see `super::compiled`) and `env` alone (see
    /// [`super::at_start`]), and waits until it is ready.
    pub async fn start(
        program: &std::path::Path,
        args: &[String],
        env: &[(String, String)],
        code: &[u8],
    ) -> std::io::Result<Template> {
        let (ours, theirs) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        )?;
        let theirs_fd = theirs.as_raw_fd();
        // Without it (no writable temporary directory) its spares copy nothing ahead, and the
        // source goes on the command line as before.
        let pages = tempfile::Builder::new()
            .prefix("flowrun-warm-")
            .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .tempdir()
            .ok();
        let script = pages.as_ref().and_then(|dir| {
            let link = dir.path().join(SCRIPT_NAME);
            std::os::unix::fs::symlink(format!("/proc/self/fd/{SOURCE_FD}"), &link)
                .ok()
                .map(|()| link)
        });
        let source = match script {
            Some(_) => Some(memory_file(code, SOURCE_FD)?),
            None => None,
        };
        let source_fd = source.as_ref().map_or(-1, AsRawFd::as_raw_fd);
        let mut cmd = std::process::Command::new(program);
        // Not this process's environment: every execution forked from the template replaces
        // its own (os.environ and the C one), but the block the kernel shows as
        // /proc/self/environ is the template's, and a workflow must not read flowrun's there;
        // what is read as a process starts is its executions' own.
        cmd.env_clear().envs(env.iter().map(|(k, v)| (k, v)));
        match &pages {
            Some(dir) => cmd.env("FLOWRUN_WARM_DIR", dir.path()),
            None => cmd.env_remove("FLOWRUN_WARM_DIR"),
        };
        cmd.args(args);
        match &script {
            Some(link) => cmd.arg(link),
            None => cmd.arg("-c").arg(SOURCE),
        };
        cmd.stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .process_group(0);
        // What flowrun itself was started with ignored (HUP under nohup, INT in a shell's
        // background job) the template and every fork of it would keep: a cold execution's
        // shepherd gives its interpreter the default for these, and so does this.
        let defaults: Vec<libc::c_int> = crate::shepherd::handled()
            .iter()
            .map(|s| s as libc::c_int)
            .collect();
        // SAFETY: between fork and exec only async-signal-safe calls: signal, pipe2, dup2, close,
        // fcntl and the two system calls of sched::reset.
        unsafe {
            cmd.pre_exec(move || {
                for &sig in &defaults {
                    libc::signal(sig, libc::SIG_DFL);
                }
                // Its executions are forks of it: the default slice, as a cold one's
                // interpreter has (crate::sched).
                crate::sched::reset();
                non_seekable_stdio();
                if libc::dup2(theirs_fd, 3) < 0
                    || (source_fd >= 0 && libc::dup2(source_fd, SOURCE_FD) < 0)
                {
                    return Err(std::io::Error::last_os_error());
                }
                // dup2 clears close-on-exec; the template's end must also block (it is a
                // plain loop around recvmsg).
                let fl = libc::fcntl(3, libc::F_GETFL);
                libc::fcntl(3, libc::F_SETFL, fl & !libc::O_NONBLOCK);
                Ok(())
            });
        }
        // Under the lock every spawn takes: no other execution's pipes are open across this
        // fork without close-on-exec, to be inherited by the template.
        let child = crate::process::spawn_helper(&mut cmd)?;
        drop((theirs, source));
        let pid = child.id() as i32;
        let mut t = Template {
            pid,
            // SAFETY: the socket is owned by the AsyncFd and closed only when it drops.
            sock: unsafe {
                AsyncFd::register_with_interest(ours, Interest::READABLE | Interest::WRITABLE)?
            },
            child: Some(child),
            me: pidfd_open(pid).ok().map(|fd| TemplateRef {
                pid,
                pidfd: Arc::new(fd),
            }),
            uses: 0,
            spares: Vec::new(),
            gone: Arc::default(),
            asked: Default::default(),
            base_rss_kib: 0,
            // Until it says it is ready.
            broken: true,
            _pages: pages,
            _own: crate::strays::Own::new(pid),
        };
        let ready = tokio::time::timeout(READY_WITHIN, t.receive()).await;
        match ready.map(|r| r.map(|(v, _fds)| v)) {
            Ok(Ok(v)) if v.get("ready").is_some() => {
                t.base_rss_kib = crate::tree::rss_kib(t.pid).unwrap_or(0);
                t.broken = false;
                Ok(t)
            }
            Ok(Ok(v)) => Err(other(format!(
                "the warm template said {v} instead of ready"
            ))),
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof && t.killed().await => {
                // Not what it was given to run: something ended it (the process's own sweep
                // as it ends, a Ctrl-C to the group).
                Err(std::io::Error::new(
                    std::io::ErrorKind::Interrupted,
                    "the warm template was killed as it started",
                ))
            }
            Ok(Err(e)) => Err(e),
            Err(_) => Err(other("the warm template was not ready in time".into())),
        }
    }

    /// For a template whose socket closed before it was ready: was it ended by a signal (as
    /// opposed to exiting, as an interpreter does on code it cannot run)? Waits for its end
    /// at most 200 ms; not known then: no. Reaped already by another than its `Child` (the
    /// sweep of a process that ends, which kills and reaps what it leaves): yes.
    async fn killed(&mut self) -> bool {
        use std::os::unix::process::ExitStatusExt;
        let Some(child) = self.child.as_mut() else {
            return false;
        };
        for _ in 0..200 {
            match child.try_wait() {
                Ok(Some(status)) => return status.signal().is_some(),
                Ok(None) => tokio::time::sleep(Duration::from_millis(1)).await,
                Err(_) => return true,
            }
        }
        false
    }

    /// Asks for one execution: returns its [`Handle`]. `fds` are the child's stdin, stdout and
    /// stderr. A spare that holds the script takes it directly; otherwise the template forks it.
    pub async fn fork(&mut self, req: &Request<'_>, fds: [RawFd; 3]) -> std::io::Result<Handle> {
        let seq = self.uses;
        let body = serde_json::json!({
            "seq": seq,
            "script": req.script,
            "cwd": req.cwd,
            "max_memory": req.max_memory,
        })
        .to_string();
        self.uses += 1;
        self.asked_now(req.script);
        // What the template said since the last request: the spares it made meanwhile.
        loop {
            match self.receive_now() {
                Ok(Some(msg)) => _ = self.take(msg, None),
                Ok(None) => break,
                Err(e) => {
                    self.broken = true;
                    return Err(e);
                }
            }
        }
        // Spares that lack the script are of no use to what runs now: let go, so that the next
        // ones, made with it prepared, take their place.
        let (fit, unfit): (Vec<Spare>, Vec<Spare>) = std::mem::take(&mut self.spares)
            .into_iter()
            .partition(|s| s.scripts.iter().any(|p| p == req.script));
        self.spares = fit;
        for spare in unfit {
            self.let_go(spare);
        }
        while !self.spares.is_empty() {
            let spare = self.spares.remove(0);
            self.gone_now(spare.handle.pid);
            if spare.give(body.as_bytes(), &fds).is_ok() {
                return Ok(spare.handle);
            }
            spare.let_go();
        }
        // Any failure from here on but an answer saying so is the template's: it is broken.
        self.broken = true;
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
            self.broken = false;
            if let Some(handle) = self.take(msg, Some(seq)) {
                return handle;
            }
        }
    }

    /// Has it been asked to prepare `script` (or to run it, which prepares it)? A script it
    /// holds no longer (it keeps the latest few) is prepared again when next asked for.
    pub fn holds(&self, script: &str) -> bool {
        self.asked.iter().any(|s| s == script)
    }

    /// Asks it to prepare `script` now, without waiting: the request that comes next for it
    /// waits at most for what is left of that. Never fails: a template that is gone or busy
    /// prepares it on that request instead.
    pub fn prepare(&mut self, script: &str) {
        self.asked_now(script);
        send_now(
            self.sock.get_ref().as_raw_fd(),
            &serde_json::json!({ "prepare": script }),
        );
    }

    fn asked_now(&mut self, script: &str) {
        self.asked.retain(|s| s != script);
        if self.asked.len() >= PREPARED_MAX {
            self.asked.pop_front();
        }
        self.asked.push_back(script.to_string());
    }

    /// Takes in one message of the template's: a spare is kept, the answer to request `seq`
    /// returned (`Some`). An answer to an earlier request, whose runner gave up waiting (its
    /// execution was dropped as it started), is dropped: its lifeline closes, and the template
    /// ends what it forked.
    fn take(
        &mut self,
        (v, mut fds): (Value, Vec<OwnedFd>),
        seq: Option<u32>,
    ) -> Option<std::io::Result<Handle>> {
        match Message::of(&v) {
            Message::Spare(pid) if fds.len() == 4 => {
                let spare = Spare::of(pid, &v, fds, self.me.clone())?;
                if self.spares.len() < MAX_SPARES {
                    self.spares.push(spare);
                } else {
                    self.let_go(spare);
                }
            }
            // Without its descriptors it cannot be used, and ends (its lifeline closed).
            Message::Spare(pid) => self.gone_now(pid),
            Message::Answer(n, _) if Some(n) != seq.map(i64::from) => {}
            Message::Answer(_, Some(pid)) => {
                let handle = Handle::of(pid, &mut fds, self.me.clone());
                self.broken |= handle.is_none();
                return Some(handle.ok_or_else(|| {
                    other(format!(
                        "the warm template answered {v} without its descriptors"
                    ))
                }));
            }
            // It could not start this one (no descriptors or processes to spare, say): this
            // execution goes cold, and the template stays.
            Message::Answer(_, None) => {
                return Some(Err(other(format!("the warm template answered {v}"))));
            }
            Message::Other => {
                self.broken = true;
                return Some(Err(other(format!("the warm template answered {v}"))));
            }
        }
        None
    }

    /// Lets a spare go: its descriptors close, so its interpreter ends and the template reaps
    /// it (or we do, when the template is gone and it was re-parented here).
    fn let_go(&self, spare: Spare) {
        self.gone_now(spare.handle.pid);
        spare.let_go();
    }

    fn gone_now(&self, pid: i32) {
        self.gone
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(pid);
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

    /// The template's next message, with the descriptors that came with it.
    async fn receive(&self) -> std::io::Result<(Value, Vec<OwnedFd>)> {
        loop {
            let mut guard = self.sock.readable().await?;
            match guard.try_io(|s| receive_from(s.as_raw_fd())) {
                Ok(r) => return r,
                Err(_would_block) => continue,
            }
        }
    }

    /// A message the template has sent already, if any.
    fn receive_now(&self) -> std::io::Result<Option<(Value, Vec<OwnedFd>)>> {
        match receive_from(self.sock.get_ref().as_raw_fd()) {
            Ok(m) => Ok(Some(m)),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// What [`Nudge::send`] tells the template through: a copy of our end of its socket.
    pub fn nudge(&self) -> Option<Nudge> {
        let sock = self.sock.get_ref().try_clone().ok()?;
        Some(Nudge {
            sock,
            gone: self.gone.clone(),
        })
    }

    /// Is the template process still there (not exited, not a zombie)?
    pub fn alive(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
            && crate::tree::stat(self.pid).is_some_and(|s| s.runs())
    }

    /// A descriptor that turns readable when the template process ends (a duplicate of its
    /// pidfd), when there is one.
    pub fn death(&self) -> Option<OwnedFd> {
        self.me.as_ref()?.pidfd.try_clone().ok()
    }

    /// Resident memory now, in KiB.
    pub fn rss_kib(&self) -> Option<u64> {
        crate::tree::rss_kib(self.pid)
    }
}

/// Tells a template that an execution it started has ended: the moment to make the next ones'
/// spares (`_make_spare` in the template), when the machine has room for them; with the spares
/// used or let go since the last nudge (`{"gone": [W, …]}`).
pub(crate) struct Nudge {
    sock: OwnedFd,
    gone: Arc<Mutex<Vec<i32>>>,
}

impl Nudge {
    /// Never blocks nor fails: a template that is gone or busy just makes no spare (and hears
    /// of the spares gone with the next nudge).
    pub fn send(self) {
        let mut gone = self.gone.lock().unwrap_or_else(|e| e.into_inner());
        if send_now(self.sock.as_raw_fd(), &serde_json::json!({ "gone": *gone })) {
            gone.clear();
        }
    }
}

/// The most spares kept per template (the template makes no more than this either).
const MAX_SPARES: usize = 2;

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

impl Drop for Template {
    /// Retiring a template: its socket is shut for writing, so that it takes no more requests
    /// and exits once the executions it runs have ended (they go on: retiring it ends none of
    /// them); its spares are let go — those we held and those in messages not read yet, read
    /// until it exits — and it is reaped, off the runtime's threads. A template retired for
    /// failing is killed instead: its executions are re-parented to us (`supervised`).
    fn drop(&mut self) {
        for spare in self.spares.drain(..) {
            spare.let_go();
        }
        let child = self.child.take();
        let sock = self.sock.get_ref().try_clone().ok();
        let failed = self.broken;
        std::thread::spawn(move || {
            let Some(mut child) = child else {
                return;
            };
            if failed {
                let _ = child.kill();
            }
            if let Some(s) = &sock {
                let _ =
                    nix::sys::socket::shutdown(s.as_raw_fd(), nix::sys::socket::Shutdown::Write);
            }
            loop {
                if let Some(s) = &sock {
                    // Their descriptors close as they are read: the spares end.
                    while let Ok((v, fds)) = receive_from(s.as_raw_fd()) {
                        if let Message::Spare(pid) = Message::of(&v)
                            && let Some(spare) = Spare::of(pid, &v, fds, None)
                        {
                            spare.let_go();
                        }
                    }
                }
                let mut status = None;
                if ends_within(Duration::from_millis(100), || {
                    let r = child.try_wait();
                    status = r.as_ref().ok().copied().flatten();
                    !matches!(r, Ok(None))
                }) {
                    // Killed, it may have forked a spare it never handed over: that spare is
                    // ours now (we are their subreaper), known to nobody, and it ends as it
                    // finds its socket closed. Reaped then; ended by a sweep if it does not.
                    use std::os::unix::process::ExitStatusExt;
                    if status.is_some_and(|s| s.signal().is_some())
                        && crate::process::is_subreaper()
                        && !crate::strays::reap_exited(Duration::from_secs(2))
                    {
                        crate::strays::sweep(Duration::from_secs(10));
                    }
                    return;
                }
            }
        });
    }
}

fn other(msg: String) -> std::io::Error {
    std::io::Error::other(msg)
}

/// The template's stdin, stdout and stderr become pipes (a read end at end of file, a write end
/// without a reader) where they were `/dev/null`: Python decides as it starts whether
/// `sys.stdout` and the others can seek, and every W keeps those stream objects over its own
/// pipes (on `/dev/null`, `tell()` failed with `OSError`, not a cold run's
/// `UnsupportedOperation`). The template writes nothing there.
///
/// # Safety
/// Async-signal-safe: for a `pre_exec` hook, before anything is put on descriptor 3.
unsafe fn non_seekable_stdio() {
    for (end, onto) in [(0, &[0][..]), (1, &[1, 2][..])] {
        let mut p = [-1; 2];
        // SAFETY: pipe2 fills two descriptors; dup2 and close take descriptors we own.
        unsafe {
            if libc::pipe2(p.as_mut_ptr(), 0) != 0 {
                continue;
            }
            for &fd in onto {
                libc::dup2(p[end], fd);
            }
            for fd in p {
                if !onto.contains(&fd) {
                    libc::close(fd);
                }
            }
        }
    }
}
