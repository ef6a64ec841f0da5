//! Warm starts: executions forked from a loaded interpreter instead of starting Python.
//!
//! `flowrun serve` and `flowrun test` call [`enable`]; `flowrun run`, a one-shot, does not (its
//! one execution would pay for the template and gain nothing). Then every execution first asks
//! the [`Pool`] for a warm start, and starts cold when that fails for any reason: a warm start
//! can make an execution faster, never fail it.
//!
//! A warm execution's interpreter is forked from a template instead of exec'd, and the
//! template is its parent and supervisor: it does for all its executions what a cold
//! execution's `flowrun __shepherd` does for one (new session, subreaper, lifeline, a stop
//! passed on to the whole tree, what is left ended when the interpreter ends), in one process
//! and one poll, so that no shepherd is exec'd per execution; fds 0/1/2 are the runner's pipes,
//! as cold. `runtime/warm/template.py` and `supervise.py` say how; this module keeps the
//! templates: one per interpreter and requirement set ([`Key`]), started on first use in the
//! background; executions start cold until it is ready, and until it has prepared their script
//! (see [`Pool::with_template`]) — but under [`Policy::Batch`] those of the script the template
//! is being started for wait for it rather than start cold. The runner waits for a warm execution
//! through the template's report of its end ([`Supervised`]); a template that dies hands its
//! executions to the runner, a child subreaper, which then waits for them and ends what they
//! leave itself.
//!
//! When a warm execution ends, its template is told (a nudge, see `template::Nudge`) and makes
//! *spares*, up to two: an execution's interpreter, already forked and waiting on a socket,
//! which the template hands to the runner. A request for a script a spare holds goes straight
//! to it, without the template; the runner writes the execution's stdin as soon as the
//! execution is its own, in the spawn, not in a task that starts later. So such a request costs
//! no message to the template and no fork before the workflow's first line. Spares are made
//! then, and not right after a request is answered, because on two cores their CPU (the fork,
//! and the copy-on-write faults a spare takes while it waits) would otherwise be taken from the
//! execution that is running. A spare the runner lets go sees its descriptors close and ends.
//!
//! A template is retired when
//!
//! - the requirement set changed under it: the interpreter's venv was rebuilt or packages were
//!   added ([`fingerprint`]: the interpreter's inode and mtime, the mtimes of its
//!   `site-packages`), since its preloaded modules may be stale;
//! - it started [`MAX_USES`] executions, or its resident memory grew [`MAX_GROWTH_KIB`] past
//!   what it had when ready (it never runs workflow code, so growth means a leak of its own or
//!   a cache of large scripts, and every fork copies its page tables and counts its address
//!   space against the execution's memory limit);
//! - it died or misbehaved (no answer, a wrong answer): the execution goes cold, and the next
//!   one starts a new template. One that misbehaved is killed, its executions handed to the
//!   runner; one retired for any other reason ends only once the executions it runs have.
//! - more than [`MAX_TEMPLATES`] interpreters are in use: the least recently used goes, once it
//!   has gone unused for [`IDLE_BEFORE_REPLACED`]; until then the other keys start cold, and no
//!   more than [`MAX_TEMPLATES`] templates are ever ready or starting.

mod compiled;
mod handle;
mod key;
mod message;
mod spawn;
mod supervised;
mod template;

pub(crate) use handle::{pidfd_kill, pidfd_open, reap_if_ours};
pub(crate) use key::{Key, at_start, fingerprint};
pub(crate) use spawn::spawn;
pub(crate) use supervised::Supervised;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::SystemTime;
use template::Template;

/// Executions per template before it is replaced. A template starts in ~25 ms (plus what the
/// scripts it prepares import, and preparing them again), so replacing it every 500 executions
/// costs ~0.1 ms per execution; it is a bound on anything the template's own loop might
/// accumulate (it keeps the 16 scripts it prepared last).
pub const MAX_USES: u32 = 500;

/// Growth of a template's resident memory (over its size when ready) that retires it: 64 MiB.
/// A ready template holds ~25 MiB; forking copies page tables in proportion, and a child's
/// `--max-memory-mb` limit counts the address space it inherits.
pub const MAX_GROWTH_KIB: u64 = 64 << 10;

/// How long after a template failed to start its key starts cold without trying another.
const START_AGAIN_AFTER: std::time::Duration = std::time::Duration::from_secs(30);

/// Templates kept at once (interpreter and requirement sets in use); each holds ~25 MiB.
/// Templates being started count too: a burst of executions for many keys starts no more.
pub const MAX_TEMPLATES: usize = 4;

/// How long a template must have gone unused (no execution started from it; one may still be
/// running, and goes on) before one for another key may be started to take its place, once
/// [`MAX_TEMPLATES`] are in use. Replacing the least recently used one at once would, with more
/// keys than that in rotation, start a template (~25 ms of CPU) for nearly every execution and
/// evict each before it was used; so the keys beyond the first few start cold until one of
/// those goes idle.
const IDLE_BEFORE_REPLACED: std::time::Duration = std::time::Duration::from_secs(10);

struct Slot {
    template: Template,
    fingerprint: Vec<(u64, Option<SystemTime>)>,
    last_used: u64,
    used_at: std::time::Instant,
}

/// How long an execution may wait for a template being started for it under
/// [`Policy::Batch`] before it starts cold after all. A template is ready in 25-50 ms here, a
/// cold start takes ~20 ms; one that takes this long is on a machine so busy that a cold start
/// would be slow too, and a stop (Ctrl-C) waits no longer than this for the execution to be
/// started and then stopped.
const WAIT_FOR_START: std::time::Duration = std::time::Duration::from_secs(2);

/// What an execution does when the template for its interpreter is not ready yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// Starts cold meanwhile, whatever comes after it (`flowrun serve`: a request never waits
    /// for what a cold start does not).
    Latency,
    /// Many executions of a few workflows, one after another (`flowrun test`): the execution
    /// that finds no template starts one and goes cold; those for the same script that come
    /// while it starts wait for it (up to [`WAIT_FOR_START`] and what the caller allows),
    /// since it is ready about when another cold start would be done and each cold start taken
    /// on two cores slows the template's own. (Before, `flowrun test`'s second and third cases
    /// started cold too: ~20 ms each.) Those for another script start cold.
    Batch,
    /// Waits for a template to start and for a script to be prepared in it, rather than start
    /// any execution cold (`FLOWRUN_WARM_WAIT=1`, whatever the caller asked): every execution
    /// warm, for measurements and tests that need each one to be.
    Wait,
}

/// The templates of this process.
pub struct Pool {
    slots: tokio::sync::Mutex<Slots>,
    /// What an execution does while its template is not ready.
    policy: Policy,
    /// Told when a template has started or failed to: executions waiting for one
    /// ([`Policy::Batch`]) look again.
    settled: tokio::sync::Notify,
    /// Where the templates' compiled code is kept (`compiled`), if anywhere.
    cache: Option<PathBuf>,
    /// Set by [`retire_all`]: the process is ending, and a template that finishes starting now
    /// is dropped rather than kept (kept, it would outlive the sweep of what the process
    /// leaves, and its private directory with it).
    closed: std::sync::atomic::AtomicBool,
    /// Templates started and retired so far (for `flowrun serve`'s logs and the tests).
    stats: std::sync::Mutex<Stats>,
}

/// Counts of what the pool did.
#[derive(Debug, Default, Clone, Copy)]
pub struct Stats {
    pub started: u64,
    pub retired: u64,
    pub failed: u64,
}

static POOL: OnceLock<Pool> = OnceLock::new();

/// Turns warm starts on for this process, executions waiting for a template as `policy` says
/// (`FLOWRUN_WARM_WAIT=1` makes it [`Policy::Wait`]), the templates' code compiled and kept in
/// `cache` (a private directory) if given. The caller must be a child subreaper
/// (`process::become_subreaper`): that is how a warm execution whose template died becomes its
/// child.
pub fn enable(policy: Policy, cache: Option<PathBuf>) {
    let wait = std::env::var_os("FLOWRUN_WARM_WAIT").is_some_and(|v| v == "1");
    POOL.get_or_init(|| Pool {
        slots: tokio::sync::Mutex::new(Slots::default()),
        policy: if wait { Policy::Wait } else { policy },
        settled: tokio::sync::Notify::new(),
        cache,
        closed: Default::default(),
        stats: std::sync::Mutex::new(Stats::default()),
    });
}

/// The templates in use, by key, and those being started.
#[derive(Default)]
struct Slots {
    ready: HashMap<Key, Slot>,
    /// The keys whose template is being started, and the script each is started for.
    starting: HashMap<Key, String>,
    /// Keys whose template being started an execution waited for until its time was up: the
    /// executions after it do not wait for that start (one that never ends would otherwise
    /// cost each of them its wait).
    waited_out: std::collections::HashSet<Key>,
    /// When a template of each key last failed to start: none is started again for
    /// [`START_AGAIN_AFTER`] (one that cannot start here, without `pidfd_open` say, would
    /// otherwise cost every execution a Python started for nothing).
    failed: HashMap<Key, std::time::Instant>,
    /// Counts uses, for the least recently used template to go first.
    clock: u64,
}

impl Slots {
    /// Makes room for another template to start, if there may be one: while fewer than
    /// [`MAX_TEMPLATES`] are ready or starting; beyond that by retiring now the least recently
    /// used of those unused for [`IDLE_BEFORE_REPLACED`] (it ends once the executions it runs
    /// have), so that no more than [`MAX_TEMPLATES`] are ever ready or starting. False: no room,
    /// and the key starts cold.
    fn make_room(&mut self, pool: &Pool) -> bool {
        self.ready.len() + self.starting.len() < MAX_TEMPLATES
            || self.retire_least_recent(pool, |s| s.used_at.elapsed() >= IDLE_BEFORE_REPLACED)
    }

    /// Retires the least recently used of the ready templates that `eligible` picks, if any.
    fn retire_least_recent(&mut self, pool: &Pool, eligible: impl Fn(&Slot) -> bool) -> bool {
        let oldest = self
            .ready
            .iter()
            .filter(|(_, s)| eligible(s))
            .min_by_key(|(_, s)| s.last_used)
            .map(|(k, _)| k.clone());
        let Some(key) = oldest else {
            return false;
        };
        tracing::debug!("retiring the least recently used warm template, for another key");
        self.ready.remove(&key);
        pool.count(|s| s.retired += 1);
        true
    }
}

/// Retires every template of this process now (each one's private directory in `$TMPDIR` goes
/// with it, and each is told to end): for a process about to end, which would otherwise kill
/// its templates with whatever else it leaves before they could remove that directory. Its
/// caller waits for the process's background compiles first ([`crate::background::finish`],
/// as `control::end_strays` does), so that a template's code being compiled for the cache is
/// not cut short by the sweep that follows.
pub fn retire_all() {
    let Some(pool) = pool() else {
        return;
    };
    pool.closed.store(true, std::sync::atomic::Ordering::SeqCst);
    // Held only for moments once no execution runs (a template that finished starting being
    // kept): waited for that long, not for an execution's request.
    for _ in 0..50 {
        if let Ok(mut guard) = pool.slots.try_lock() {
            let slots = &mut *guard;
            let n = slots.ready.len() as u64;
            slots.ready.clear();
            pool.count(|s| s.retired += n);
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

/// Retires the templates that died (reaping them): for an execution whose template was lost,
/// so that a dead one is not left a zombie until the next execution asks for it.
pub(crate) fn retire_dead() {
    let Some(pool) = pool() else {
        return;
    };
    // Not waited for: a request holds the lock while its template answers (or, with
    // FLOWRUN_WARM_WAIT=1, while one starts), and the next request finds a dead one anyway.
    let Ok(mut guard) = pool.slots.try_lock() else {
        return;
    };
    let before = guard.ready.len();
    guard.ready.retain(|_, slot| slot.template.alive());
    let n = (before - guard.ready.len()) as u64;
    pool.count(|s| s.retired += n);
}

/// Are warm starts on in this process?
pub fn enabled() -> bool {
    pool().is_some()
}

/// The pool, when warm starts are on.
pub(crate) fn pool() -> Option<&'static Pool> {
    POOL.get()
}

/// What the pool did so far, when warm starts are on.
pub fn stats() -> Option<Stats> {
    pool().map(|p| *p.stats.lock().unwrap_or_else(|e| e.into_inner()))
}

/// Why a template goes, if it must.
fn stale(slot: &mut Slot, fingerprint: &[(u64, Option<SystemTime>)]) -> Option<&'static str> {
    if slot.fingerprint != fingerprint {
        return Some("its requirement set changed");
    }
    if slot.template.uses >= MAX_USES {
        return Some("it started its share of executions");
    }
    if !slot.template.alive() {
        return Some("it is gone");
    }
    let grown = slot
        .template
        .rss_kib()
        .is_some_and(|now| now > slot.template.base_rss_kib + MAX_GROWTH_KIB);
    if grown {
        return Some("its memory grew");
    }
    None
}

impl Pool {
    /// Starts a template for `key`, from its compiled code when this process has a cache (and
    /// has that compiled when it had to start from source, unless the process is ending).
    async fn start(&self, key: &Key) -> std::io::Result<Template> {
        let (template, compile) =
            compiled::start(self.cache.as_deref(), &key.program, &key.flags, &key.env).await?;
        if let Some(compile) = compile {
            compiled::begin(compile);
        }
        Ok(template)
    }

    fn count(&self, f: impl FnOnce(&mut Stats)) {
        f(&mut self.stats.lock().unwrap_or_else(|e| e.into_inner()));
    }

    /// Runs `f` with the template for `key`. When there is none, or the one there is stale,
    /// another is started in the background (when there is room: [`Slots::make_room`]) and this
    /// call fails (the execution starts cold), as do those that come before it is ready
    /// ([`Policy::Latency`]; under [`Policy::Batch`] those for the script it is started for wait
    /// for it, at most `wait` and [`WAIT_FOR_START`]); so does one for a `script` the template
    /// has not been asked to prepare, which it is asked to prepare now.
    /// Under [`Policy::Latency`] a warm start never makes an execution wait for what a cold
    /// one does not; under [`Policy::Wait`] the start and the preparing are waited for. A
    /// template `f` fails with is retired: the next call starts another.
    pub(crate) async fn with_template<T>(
        &'static self,
        key: &Key,
        script: &str,
        wait: std::time::Duration,
        f: impl AsyncFnOnce(&mut Template) -> std::io::Result<T>,
    ) -> std::io::Result<T> {
        if self.closed.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(std::io::Error::other(
                "warm starts are over for this process",
            ));
        }
        let print = fingerprint(&key.program);
        let mut guard = self.slots.lock().await;
        if self.policy == Policy::Batch {
            // For a template being started for this script: the others go cold (it would not
            // hold theirs once ready). Every template that settles wakes every waiter, so each
            // looks again until its own has, or `wait` is over.
            let until = tokio::time::Instant::now() + wait.min(WAIT_FOR_START);
            let pending = |slots: &Slots| {
                !slots.ready.contains_key(key)
                    && slots.starting.get(key).is_some_and(|s| s == script)
                    && !slots.waited_out.contains(key)
                    && !self.closed.load(std::sync::atomic::Ordering::SeqCst)
            };
            while pending(&guard) {
                if tokio::time::Instant::now() >= until {
                    // Only a whole wait says the start is slow (not a short one, a case's
                    // small timeout's).
                    if wait >= WAIT_FOR_START {
                        guard.waited_out.insert(key.clone());
                    }
                    break;
                }
                // Registered before the lock goes, so that telling cannot come between.
                let settled = self.settled.notified();
                drop(guard);
                let _ = tokio::time::timeout_at(until, settled).await;
                guard = self.slots.lock().await;
            }
            if self.closed.load(std::sync::atomic::Ordering::SeqCst) {
                return Err(std::io::Error::other(
                    "warm starts are over for this process",
                ));
            }
        }
        let slots = &mut *guard;
        slots.clock += 1;
        let now = slots.clock;
        let why = slots
            .ready
            .get_mut(key)
            .and_then(|slot| stale(slot, &print));
        if let Some(why) = why {
            tracing::debug!(why, "retiring a warm template");
            slots.ready.remove(key);
            self.count(|s| s.retired += 1);
        }
        if !slots.ready.contains_key(key) {
            if self.policy != Policy::Wait {
                let failed_lately = slots
                    .failed
                    .get(key)
                    .is_some_and(|t| t.elapsed() < START_AGAIN_AFTER);
                if !failed_lately && !slots.starting.contains_key(key) && slots.make_room(self) {
                    slots.starting.insert(key.clone(), script.to_string());
                    let (key, script) = (key.clone(), script.to_string());
                    tokio::spawn(async move {
                        let started = self.start(&key).await;
                        let started = started.map(|mut t| {
                            t.prepare(&script);
                            t
                        });
                        let mut guard = self.slots.lock().await;
                        guard.starting.remove(&key);
                        guard.waited_out.remove(&key);
                        if self.closed.load(std::sync::atomic::Ordering::SeqCst) {
                            drop(guard);
                            self.settled.notify_waiters();
                            return; // dropped: it ends, and its directory goes
                        }
                        if let Err(e) = self.keep(&mut guard, key.clone(), started, print) {
                            tracing::debug!("a warm template did not start: {e}");
                            guard.failed.insert(key, std::time::Instant::now());
                        }
                        drop(guard);
                        self.settled.notify_waiters();
                    });
                }
                return Err(std::io::Error::other("the warm template is starting"));
            }
            let started = self.start(key).await;
            if let Err(e) = self.keep(slots, key.clone(), started, print) {
                return Err(std::io::Error::other(e));
            }
        }
        let slot = slots.ready.get_mut(key).expect("kept above");
        slot.last_used = now;
        slot.used_at = std::time::Instant::now();
        if self.policy != Policy::Wait && !slot.template.holds(script) {
            // Prepared in the background too: what preparing costs the template (compiling
            // the script, running its top level, importing what its nodes need) would be this
            // execution's wait, longer than a cold start.
            slot.template.prepare(script);
            return Err(std::io::Error::other(
                "the warm template is preparing the script",
            ));
        }
        let res = f(&mut slot.template).await;
        if res.is_err() && slot.template.broken {
            // Killed, not left to end what it runs: those executions come to us.
            slots.ready.remove(key);
            self.count(|s| {
                s.failed += 1;
                s.retired += 1;
            });
        }
        res
    }

    /// Retires a template as soon as its process ends, whatever it was doing (killed while
    /// idle, say): reaped, and the spares it made let go, rather than left a zombie with two
    /// spares waiting until the next execution asks for it.
    fn watch_death(&'static self, death: Option<std::os::fd::OwnedFd>) {
        let Some(fd) = death else {
            return;
        };
        // SAFETY: the descriptor is owned by the AsyncFd and closed only when it drops.
        let registered = unsafe {
            tokio::io::unix::AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE)
        };
        let Ok(fd) = registered else {
            return;
        };
        tokio::spawn(async move {
            let _ = fd.readable().await;
            let mut guard = self.slots.lock().await;
            let before = guard.ready.len();
            guard.ready.retain(|_, slot| slot.template.alive());
            let n = (before - guard.ready.len()) as u64;
            self.count(|s| s.retired += n);
        });
    }

    /// Keeps a template that started (the least recently used one going, when
    /// [`MAX_TEMPLATES`] are in use already), or counts the failure.
    fn keep(
        &'static self,
        slots: &mut Slots,
        key: Key,
        started: std::io::Result<Template>,
        fingerprint: Vec<(u64, Option<SystemTime>)>,
    ) -> Result<(), String> {
        let template = match started {
            Ok(t) => t,
            Err(e) => {
                self.count(|s| s.failed += 1);
                return Err(e.to_string());
            }
        };
        self.count(|s| s.started += 1);
        slots.failed.remove(&key);
        self.watch_death(template.death());
        if slots.ready.len() >= MAX_TEMPLATES {
            slots.retire_least_recent(self, |_| true);
        }
        let slot = Slot {
            template,
            fingerprint,
            last_used: slots.clock,
            used_at: std::time::Instant::now(),
        };
        slots.ready.insert(key, slot);
        Ok(())
    }
}
