//! What escaped an execution to this process, and how it is ended.
//!
//! An execution's shepherd is a child subreaper: whatever its tree orphans becomes its child,
//! and it ends all of it before it exits. A shepherd that is killed (by SIGKILL, which it cannot
//! handle — a node can send it to its own parent) ends nothing: its children, and later theirs,
//! are re-parented to the nearest subreaper above it, the runner (`flowrun serve`, `run` and
//! `test` are subreapers). The runner then has children it never started: [`sweep`] finds and
//! ends them, when an execution's shepherd ended by a signal. (A shepherd that cannot see its
//! whole tree, or end it, ends by SIGKILL itself for that reason: `shepherd::finish`.) A warm
//! template is the subreaper of the executions it forks, and the same holds of it: when it
//! dies, they and what they leave come to the runner (`warm::Supervised`).
//!
//! Telling them from the runner's own children: the runner's own are in its session (what it
//! runs besides executions) or [`Own`]ed — registered as they are spawned (cold shepherds, warm
//! templates) or started (warm executions, which become the runner's children only if their
//! template dies). A process of an execution is in another session (its shepherd or its
//! interpreter started one, and nothing can join a session from outside) and owned by nobody.
//! A child is taken for a stray only once it is [`MIN_AGE`] old, a margin for a child spawned
//! and not registered yet; a younger one is frozen meanwhile, so that a stray cannot stay young
//! by forking anew and letting its parent exit.

use crate::tree::{self, ProcStat};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Children this process started, by pid (a count: a pid may be registered twice).
static OWNED: Mutex<Option<HashMap<i32, u32>>> = Mutex::new(None);

/// How old a child not owned and not of our session must be to be taken for a stray: a margin
/// for a child spawned and not yet registered, short enough not to keep the end of an
/// execution whose shepherd was killed waiting long.
pub const MIN_AGE: Duration = Duration::from_secs(1);

/// A child of this process that [`sweep`] must not touch, for as long as this lives.
#[derive(Debug)]
pub(crate) struct Own(i32);

impl Own {
    pub(crate) fn new(pid: i32) -> Own {
        let mut owned = OWNED.lock().unwrap_or_else(|e| e.into_inner());
        *owned
            .get_or_insert_with(HashMap::new)
            .entry(pid)
            .or_default() += 1;
        Own(pid)
    }

    /// The process registered.
    pub(crate) fn pid(&self) -> i32 {
        self.0
    }
}

impl Drop for Own {
    fn drop(&mut self) {
        let mut owned = OWNED.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(map) = owned.as_mut()
            && let Some(n) = map.get_mut(&self.0)
        {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.0);
            }
        }
    }
}

fn owned(pid: i32) -> bool {
    let owned = OWNED.lock().unwrap_or_else(|e| e.into_inner());
    owned.as_ref().is_some_and(|m| m.contains_key(&pid))
}

/// Clock ticks since boot, the unit of a process's start time in `/proc/<pid>/stat`.
fn ticks_now() -> Option<u64> {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into the local we pass.
    if unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut t) } != 0 {
        return None;
    }
    let ns = u64::try_from(t.tv_sec).ok()? * 1_000_000_000 + u64::try_from(t.tv_nsec).ok()?;
    Some(ns / (1_000_000_000 / hz()))
}

/// Clock ticks per second.
fn hz() -> u64 {
    // SAFETY: sysconf only reads a configuration value.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(hz).ok().filter(|&h| h > 0).unwrap_or(100)
}

/// Is `p` a child of ours that no part of this process started or adopted?
fn is_stray(p: &ProcStat, session: i32) -> bool {
    p.session != session && !owned(p.pid)
}

/// How long after `max` a sweep goes on trying to end what it found before it gives up (a
/// process that does not die: frozen by a cgroup, in an uninterruptible wait).
const GIVE_UP_AFTER: Duration = Duration::from_secs(5);

/// Ends every stray child of this process (see the module's doc) and what is under it, reaps
/// them, and repeats while any is left (ending one re-parents its children here). A child too
/// young to be judged is frozen (SIGSTOP) at once, so that it can neither fork a new pid nor
/// hand itself on, and let go (SIGCONT) if it turns out to be ours; at [`MIN_AGE`] it is
/// ended. After `max`, whatever is not ours is ended whatever its age; [`GIVE_UP_AFTER`] later
/// the sweep returns whatever is left. Returns how many strays it ended.
pub fn sweep(max: Duration) -> usize {
    use nix::sys::signal::{Signal, kill};
    use nix::sys::wait::{WaitPidFlag, waitpid};
    let me = std::process::id() as i32;
    // SAFETY: getsid(0) reads this process's session id.
    let session = unsafe { libc::getsid(0) };
    let min_age = MIN_AGE.as_millis() as u64;
    let deadline = Instant::now() + max;
    let give_up = deadline + GIVE_UP_AFTER;
    let mut frozen: Vec<i32> = Vec::new();
    let mut ended = 0;
    let signal = |pid: i32, sig| kill(nix::unistd::Pid::from_raw(pid), sig);
    // Every process, read whole (a cold shepherd is registered under this lock as it is spawned:
    // never seen between the two), or None.
    let list = || {
        let _spawning = crate::process::SPAWN_LOCK
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        tree::all_checked()
    };
    loop {
        if Instant::now() >= give_up {
            return ended;
        }
        let Some(all) = list().or_else(|| {
            // A process of the execution may have lowered our descriptor limit.
            raise_nofile_limit();
            list()
        }) else {
            std::thread::sleep(Duration::from_millis(2));
            continue;
        };
        // What was frozen and has been found to be ours since goes on.
        frozen.retain(
            |&pid| match all.iter().find(|p| p.pid == pid && p.ppid == me) {
                None => false,
                Some(p) if !is_stray(p, session) => {
                    let _ = signal(pid, Signal::SIGCONT);
                    false
                }
                Some(_) => true,
            },
        );
        let strays: Vec<&ProcStat> = all
            .iter()
            .filter(|p| p.ppid == me && is_stray(p, session))
            .collect();
        if strays.is_empty() {
            return ended;
        }
        let late = Instant::now() >= deadline;
        let now = ticks_now().unwrap_or(u64::MAX);
        let mut roots = Vec::new();
        for p in strays {
            let age_ms = now.saturating_sub(p.start_time) * 1000 / hz();
            if age_ms < min_age && !late {
                if p.runs() && !frozen.contains(&p.pid) {
                    let _ = signal(p.pid, Signal::SIGSTOP);
                    frozen.push(p.pid);
                }
            } else if p.runs() {
                roots.push(p.pid);
            } else if tree::stat(p.pid)
                .is_some_and(|s| s.ppid == me && s.start_time == p.start_time)
            {
                // Ended, and still the child that was listed (its owner, had it one, might
                // have reaped it since and its pid been reused): reaped.
                let _ = waitpid(
                    nix::unistd::Pid::from_raw(p.pid),
                    Some(WaitPidFlag::WNOHANG),
                );
            }
        }
        // Their trees, found in the same listing (one read of /proc a round, however many
        // there are): frozen, so nothing forks meanwhile, then killed. What they started since
        // comes here as they die, for the next round.
        let below = tree::descendants_in(&roots, all);
        let doomed: Vec<i32> = roots
            .iter()
            .copied()
            .chain(below.iter().map(|p| p.pid))
            .collect();
        for &pid in &doomed {
            let _ = signal(pid, Signal::SIGSTOP);
        }
        for &pid in &doomed {
            let _ = signal(pid, Signal::SIGKILL);
        }
        frozen.retain(|f| !roots.contains(f));
        ended += roots.len();
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Reaps the stray children of this process (see [`sweep`]) as they exit on their own, waiting
/// up to `within` for those still running; true when none is left. For strays that end by
/// themselves — a spare whose template was killed before it handed the spare over sees its
/// socket close and exits — without freezing them: a process frozen by a sweep stays frozen for
/// good if this process dies before the sweep is done with it (nothing continues it then).
pub fn reap_exited(within: Duration) -> bool {
    use nix::sys::wait::{WaitPidFlag, waitpid};
    let me = std::process::id() as i32;
    // SAFETY: getsid(0) reads this process's session id.
    let session = unsafe { libc::getsid(0) };
    let deadline = Instant::now() + within;
    loop {
        let all = {
            let _spawning = crate::process::SPAWN_LOCK
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            tree::all_checked()
        };
        let Some(all) = all else {
            return false;
        };
        let mut running = false;
        for p in all.iter().filter(|p| p.ppid == me && is_stray(p, session)) {
            if p.runs() {
                running = true;
            } else if tree::stat(p.pid)
                .is_some_and(|s| s.ppid == me && s.start_time == p.start_time)
            {
                let _ = waitpid(
                    nix::unistd::Pid::from_raw(p.pid),
                    Some(WaitPidFlag::WNOHANG),
                );
            }
        }
        if !running {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Raises this process's soft limit of open descriptors to its hard limit, for a sweep (or a
/// shepherd) that could not read /proc or poll: a process of the execution (the same user) may
/// have lowered it. Returns the soft limit now (0 if it cannot be read).
pub(crate) fn raise_nofile_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit read and write the local struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 0;
        }
        if lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
            }
        }
    }
    lim.rlim_cur
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_owned_pid_stays_owned_until_its_last_owner_goes() {
        let a = Own::new(-7);
        let b = Own::new(-7);
        assert!(owned(-7));
        drop(a);
        assert!(owned(-7));
        drop(b);
        assert!(!owned(-7));
    }

    #[test]
    fn this_process_started_long_after_boot() {
        let me = tree::stat(std::process::id() as i32).expect("own stat");
        let now = ticks_now().expect("a clock");
        assert!(now >= me.start_time, "{now} < {}", me.start_time);
    }
}
