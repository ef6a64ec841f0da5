//! Process trees: finding every descendant of a process and ending them all.
//!
//! A process group is not enough to hold an execution: anything can leave it with `setsid` or
//! `setpgid`, and a double fork hands a daemon to the nearest subreaper. The tree of parent links
//! still holds them — the shepherd is a child subreaper, so an orphan of the execution becomes its
//! child instead of init's — so ending an execution means ending the tree under its shepherd.
//!
//! The kernel's `/proc/<pid>/task/<tid>/children` is often compiled out, so the tree is read from
//! the `ppid` field of every `/proc/<pid>/stat` (a few hundred small reads).

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// One process as `/proc/<pid>/stat` describes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcStat {
    pub pid: i32,
    pub ppid: i32,
    /// `R`, `S`, `D`, `T` (stopped), `t` (traced), `Z` (zombie), …
    pub state: char,
    /// Session id: an execution's processes are never in the runner's (its shepherd starts a
    /// new one, and no process can join a session it was not born in).
    pub session: i32,
    /// Threads that have not exited (field 20).
    pub threads: u32,
    /// Start time in clock ticks since boot.
    pub start_time: u64,
}

impl ProcStat {
    /// Does anything of it still run? A zombie does not — unless its main thread exited and
    /// other threads go on (`Zl` in ps), which only a signal to the process ends.
    pub fn runs(&self) -> bool {
        !matches!(self.state, 'Z' | 'X') || self.threads > 1
    }
}

/// Parses the text of `/proc/<pid>/stat`. The command name (field 2) may hold spaces and
/// parentheses, so the fields are counted from the last `)`.
pub fn parse_stat(pid: i32, text: &str) -> Option<ProcStat> {
    let rest = text.get(text.rfind(')')? + 2..)?;
    let mut fields = rest.split(' ');
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    let _pgrp = fields.next()?;
    let session = fields.next()?.parse().ok()?;
    // After state, ppid, pgrp and session: the thread count is the 14th of the remaining fields
    // (field 20 overall), the start time the 16th (field 22).
    let threads = fields.nth(13)?.parse().ok()?;
    let start_time = fields.nth(1)?.parse().ok()?;
    Some(ProcStat {
        pid,
        ppid,
        state,
        session,
        threads,
        start_time,
    })
}

/// `/proc/<pid>/stat` of one process, if it exists.
pub fn stat(pid: i32) -> Option<ProcStat> {
    read_stat(pid).ok().flatten()
}

/// `/proc/<pid>/stat`: an error when it cannot be opened, `None` when it cannot be read or
/// parsed (the process ended meanwhile).
fn read_stat(pid: i32) -> std::io::Result<Option<ProcStat>> {
    use std::io::Read;
    // One read: a stat line is ~300 bytes, and read_to_string would start at 32 and grow.
    let mut text = String::with_capacity(1024);
    let mut file = std::fs::File::open(format!("/proc/{pid}/stat"))?;
    Ok(file
        .read_to_string(&mut text)
        .ok()
        .and_then(|_| parse_stat(pid, &text)))
}

/// Every process visible in `/proc`.
fn all() -> Vec<ProcStat> {
    all_checked().unwrap_or_default()
}

/// Every process visible in `/proc`, or `None` when `/proc` could not be read whole: it cannot
/// be listed, or a process's `stat` cannot be opened for another reason than the process having
/// ended (no descriptor left, as when a process's `RLIMIT_NOFILE` was set to 0 from outside).
pub fn all_checked() -> Option<Vec<ProcStat>> {
    let dir = std::fs::read_dir("/proc").ok()?;
    let mut out = Vec::new();
    for e in dir {
        let Some(pid) = e
            .ok()?
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        match read_stat(pid) {
            Ok(p) => out.extend(p),
            // It ended since the directory was listed.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(_) => return None,
        }
    }
    Some(out)
}

/// Every descendant of `root` (not `root` itself), parents before their children.
pub fn descendants(root: i32) -> Vec<ProcStat> {
    descendants_in(&[root], all())
}

/// As [`descendants`], or `None` when `/proc` could not be read whole (see [`all_checked`]):
/// for the shepherd, which must not take "could not look" for "nothing left".
pub fn descendants_checked(root: i32) -> Option<Vec<ProcStat>> {
    all_checked().map(|all| descendants_in(&[root], all))
}

/// Every descendant of any of `roots` (not the roots themselves) among `all`, one listing of
/// `/proc`, parents before their children.
pub fn descendants_in(roots: &[i32], all: Vec<ProcStat>) -> Vec<ProcStat> {
    let mut children: HashMap<i32, Vec<ProcStat>> = HashMap::new();
    for p in all {
        children.entry(p.ppid).or_default().push(p);
    }
    let mut out = Vec::new();
    let mut next = roots.to_vec();
    while let Some(pid) = next.pop() {
        for c in children.remove(&pid).unwrap_or_default() {
            next.push(c.pid);
            out.push(c);
        }
    }
    out
}

/// Does this process have any child, running or ended (without reaping it)? In a child subreaper
/// that has none, nothing is left below it: any orphan of its tree would have become its child.
/// Cheaper than [`descendants`], which reads every `/proc/<pid>/stat`.
pub fn has_children() -> bool {
    // SAFETY: waitid with WNOWAIT only reports into the local siginfo.
    unsafe {
        let mut info: libc::siginfo_t = std::mem::zeroed();
        let r = libc::waitid(
            libc::P_ALL,
            0,
            &mut info,
            libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
        );
        !(r < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ECHILD))
    }
}

/// Sends `sig` to every descendant of `root` that is not a zombie. Returns how many it signalled.
pub fn signal_descendants(root: i32, sig: Signal) -> usize {
    descendants(root)
        .iter()
        .filter(|p| p.runs() && kill(Pid::from_raw(p.pid), sig).is_ok())
        .count()
}

/// Ends the tree under `root` from outside it (the runner, `flowrun stop`, recovery): stops
/// every descendant with SIGSTOP until no new one appears (a stopped process cannot fork), then
/// SIGKILLs them all and `root` last. `root` itself is killed only while it is still the process
/// that started at `root_start` (so a reused pid is never touched). Returns whether nothing of
/// the tree was left running within `max`.
pub fn kill_tree(root: i32, root_start: Option<u64>, max: Duration) -> bool {
    let root_is_ours = |s: &ProcStat| Some(s.start_time) == root_start;
    let deadline = Instant::now() + max;
    loop {
        let root_alive = stat(root).is_some_and(|s| root_is_ours(&s) && s.runs());
        if root_alive {
            let _ = kill(Pid::from_raw(root), Signal::SIGSTOP);
        }
        // Freeze: repeat until a pass finds nothing new to stop.
        let mut frozen: Vec<i32> = Vec::new();
        for _ in 0..64 {
            let found: Vec<i32> = if root_alive {
                descendants(root)
                    .into_iter()
                    .filter(ProcStat::runs)
                    .map(|p| p.pid)
                    .collect()
            } else {
                Vec::new()
            };
            let new: Vec<i32> = found.into_iter().filter(|p| !frozen.contains(p)).collect();
            if new.is_empty() {
                break;
            }
            for pid in &new {
                let _ = kill(Pid::from_raw(*pid), Signal::SIGSTOP);
            }
            frozen.extend(new);
        }
        for pid in frozen.iter().rev() {
            let _ = kill(Pid::from_raw(*pid), Signal::SIGKILL);
        }
        if root_alive {
            let _ = kill(Pid::from_raw(root), Signal::SIGKILL);
        }
        let left = stat(root).is_some_and(|s| root_is_ours(&s) && s.runs())
            || frozen.iter().any(|p| stat(*p).is_some_and(|s| s.runs()));
        if !left {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Is `pid` stopped (SIGSTOP, SIGTSTP, Ctrl-Z, or a tracer)?
pub fn is_stopped(pid: i32) -> bool {
    stat(pid).is_some_and(|s| matches!(s.state, 'T' | 't'))
}

/// A process's resident memory (`VmRSS`) in KiB, from `statm` (resident pages, its second
/// field): checked before every request, and the kernel writes `status`, ~1.3 KB of fifty
/// lines, for the one line we would read of it.
pub(crate) fn rss_kib(pid: i32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
    let pages: u64 = text.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * page_size() / 1024)
}

fn page_size() -> u64 {
    // SAFETY: sysconf reads a constant of the system.
    match unsafe { libc::sysconf(libc::_SC_PAGESIZE) } {
        n if n > 0 => n as u64,
        _ => 4096,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_lines_with_awkward_names() {
        let line = "4242 (a) b (c)) S 17 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 100";
        let s = parse_stat(4242, line).expect("parses");
        assert_eq!(
            (s.ppid, s.state, s.session, s.threads, s.start_time),
            (17, 'S', 4242, 1, 987654)
        );
        assert_eq!(parse_stat(1, "garbage"), None);
    }

    #[test]
    fn this_process_is_a_descendant_of_its_parent() {
        let me = std::process::id() as i32;
        let parent = stat(me).expect("own stat").ppid;
        assert!(descendants(parent).iter().any(|p| p.pid == me));
        let mine = descendants(parent)
            .into_iter()
            .find(|p| p.pid == me && p.ppid == parent)
            .expect("a child");
        // SAFETY: getsid(0) reads this process's session id.
        assert_eq!(mine.session, unsafe { libc::getsid(0) });
        assert!(!is_stopped(me));
    }
}
