//! Work a process does beside its executions and waits for as it ends: the bytecode compiles
//! (a script's `.pyc`, `flowrun_app`'s `runner::bytecode`; the warm template's code,
//! [`crate::warm`]).
//!
//! Each job writes one file, through a private file of its own renamed into place, and is keyed
//! by it: one job per file at a time, however many executions ask for it meanwhile (the cases of
//! a `flowrun test`). A job runs on a thread of its own, which spawns its helper process and
//! waits for it, so that the helper is reaped as soon as it ends (no zombie under a server that
//! runs for days). A process that runs executions sweeps what it leaves as it ends
//! (`flowrun_executor::strays`), which would kill a compile cut short and waste it: it calls
//! [`finish`] first, which waits for the jobs still running and starts none after.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// The files being written, and whether the process is ending ([`finish`]).
struct Jobs {
    closed: bool,
    running: BTreeSet<PathBuf>,
}

static JOBS: Mutex<Jobs> = Mutex::new(Jobs {
    closed: false,
    running: BTreeSet::new(),
});
static ENDED: Condvar = Condvar::new();

fn jobs() -> MutexGuard<'static, Jobs> {
    JOBS.lock().unwrap_or_else(|e| e.into_inner())
}

/// Runs `job`, which writes `file`, on a thread named `name`, unless a job for that file is
/// running already or the process is ending. True when it started. Nothing fails if it cannot:
/// its file is only ever a shortcut (a `.pyc` beside its source).
pub fn start(file: &Path, name: &str, job: impl FnOnce() + Send + 'static) -> bool {
    let mut all = jobs();
    if all.closed || !all.running.insert(file.to_path_buf()) {
        return false;
    }
    drop(all);
    let key = file.to_path_buf();
    let thread = std::thread::Builder::new()
        .name(name.to_string())
        .spawn(move || {
            // Ended however the job ends, a panic too: else its file would never be written
            // again in this process, and `finish` would wait its whole limit.
            let _ended = Ended(key);
            job();
        });
    match thread {
        Ok(_) => true,
        Err(e) => {
            tracing::debug!("no thread to write {file:?}: {e}");
            ended(file);
            false
        }
    }
}

/// Says its job has ended when dropped.
struct Ended(PathBuf);

impl Drop for Ended {
    fn drop(&mut self) {
        ended(&self.0);
    }
}

fn ended(file: &Path) {
    jobs().running.remove(file);
    ENDED.notify_all();
}

/// Waits up to `limit` for the jobs still running, and starts none after: for a process about
/// to end. True when none is left.
pub fn finish(limit: Duration) -> bool {
    let until = Instant::now() + limit;
    let mut all = jobs();
    all.closed = true;
    while !all.running.is_empty() {
        let Some(left) = until.checked_duration_since(Instant::now()) else {
            return false;
        };
        all = ENDED
            .wait_timeout(all, left)
            .unwrap_or_else(|e| e.into_inner())
            .0;
    }
    true
}

#[cfg(test)]
fn running(file: &Path) -> bool {
    jobs().running.contains(file)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    /// One test for the whole lifecycle: [`finish`] closes the registry for the process (this
    /// test binary: a later test here that starts a job would find it closed).
    #[test]
    fn one_job_per_file_waited_for_as_the_process_ends_and_none_after() {
        let file = Path::new("/nonexistent/one.pyc");
        let (go, wait) = mpsc::channel::<()>();
        let (ran, count) = mpsc::channel::<&str>();
        let first = ran.clone();
        assert!(start(file, "test-job", move || {
            wait.recv().unwrap();
            first.send("first").unwrap();
        }));
        assert!(running(file));
        // A second job for the same file while the first runs: not started.
        let second = ran.clone();
        assert!(!start(file, "test-job", move || second
            .send("second")
            .unwrap()));
        // Another file: started, and done.
        let other = ran.clone();
        assert!(start(
            Path::new("/nonexistent/two.pyc"),
            "test-job",
            move || { other.send("other").unwrap() }
        ));
        assert_eq!(count.recv().unwrap(), "other");
        // A job that panics has ended too: its file can have another.
        let boom = Path::new("/nonexistent/boom.pyc");
        assert!(start(boom, "test-job", || panic!("a job that panics")));
        let t = Instant::now();
        while running(boom) && t.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(2));
        }
        assert!(!running(boom), "a panicked job's file is free again");
        // The first is still blocked: a short finish gives up and says so.
        assert!(!finish(Duration::from_millis(20)));
        // Closed now: nothing starts, even for a file with no job.
        let late = ran.clone();
        assert!(!start(
            Path::new("/nonexistent/three.pyc"),
            "test-job",
            move || { late.send("late").unwrap() }
        ));
        // Released, the first ends and finish sees it before its limit.
        go.send(()).unwrap();
        let t = Instant::now();
        assert!(finish(Duration::from_secs(10)));
        assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
        assert!(!running(file));
        drop(ran);
        let rest: Vec<_> = count.iter().collect();
        assert_eq!(rest, ["first"]);
    }
}
