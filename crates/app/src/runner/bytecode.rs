//! The script compiled to bytecode, next to it in the cache
//! (`<sha256>.<impl>-<major><minor>.pyc`).
//!
//! Running the `.pyc` saves the interpreter compiling the ~40 KB script on every run (~7 ms
//! here). Compiling it takes a Python of its own (~35-45 ms), which the first run of a new
//! script — every run after an edit in an editor, every run on a fresh CI machine — used to
//! wait for. Now that run starts on the `.py` at once while the `.pyc` is written beside it in
//! the background; later runs find it. `py_compile` writes it atomically (a temporary file, then
//! a rename), so a compile cut short leaves no `.pyc` for a run to load, only a stray temporary
//! file.
//!
//! The compiling Python is a child of this process and in its session, so the stray sweep
//! (`flowrun_executor::strays`) counts it as the runner's own. [`wait`] lets a process that is about to end (and kill
//! what is left under it: `control::end_strays`) finish what it started first.

use crate::python::Interpreter;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

/// `.pyc` files being written by this process: one compile per script however many of its runs
/// start meanwhile (a suite's cases, an editor's Run pressed again).
static COMPILING: Mutex<Option<HashSet<PathBuf>>> = Mutex::new(None);
static DONE: Condvar = Condvar::new();
/// The compile's niceness: ~10% of a core against a busy one, ~40 ms become ~400.
const NICE: libc::c_int = 10;

/// What the interpreter should run: the `.pyc` when it is there; else the script itself, while
/// the `.pyc` is compiled in the background for the runs after this one.
pub(super) fn run_path(interp: &Interpreter, script: &Path) -> PathBuf {
    let (major, minor, _) = interp.version;
    let tag = format!("{}-{major}{minor}", interp.implementation);
    let pyc = script.with_extension(format!("{tag}.pyc"));
    if pyc.is_file() {
        return pyc;
    }
    start(&interp.executable, script, pyc);
    script.to_path_buf()
}

/// Starts compiling `script` into `pyc` unless this process already is. Nothing fails if it
/// cannot: the `.py` runs instead.
fn start(python: &Path, script: &Path, pyc: PathBuf) {
    let mut compiling = COMPILING.lock().unwrap_or_else(|e| e.into_inner());
    let set = compiling.get_or_insert_with(HashSet::new);
    if set.contains(&pyc) {
        return;
    }
    let child = Command::new(python)
        .args([
            "-I",
            "-S",
            "-c",
            "import py_compile, sys; py_compile.compile(sys.argv[1], cfile=sys.argv[2], doraise=True)",
        ])
        .arg(script)
        .arg(&pyc)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    let Ok(mut child) = child else { return };
    // Behind the run that goes on meanwhile (and, under `serve` or `test`, its template
    // preparing the same script): the compile is for the runs after it. Not so far behind that
    // a busy machine starves it: a one-shot run waits for it before it ends.
    // SAFETY: setpriority takes no pointer; a failure (the process gone) changes nothing.
    unsafe {
        libc::setpriority(libc::PRIO_PROCESS, child.id(), NICE);
    }
    set.insert(pyc.clone());
    let key = pyc.clone();
    // A thread waits for it, so that it is reaped as soon as it ends (no zombie under a server
    // that runs for days) and [`wait`] hears of it.
    let waiter = std::thread::Builder::new()
        .name("flowrun-pyc".into())
        .spawn(move || {
            let _ = child.wait();
            finished(&pyc);
        });
    if let Err(e) = waiter {
        // No thread: the compile is left to run on and be reaped by the last sweep.
        tracing::debug!("cannot wait for the .pyc compile: {e}");
        set.remove(&key);
    }
}

fn finished(pyc: &Path) {
    let mut compiling = COMPILING.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(set) = compiling.as_mut() {
        set.remove(pyc);
    }
    DONE.notify_all();
}

/// Waits up to `limit` for the compiles this process started to end: before it ends and kills
/// what is left under it, which would waste them. True when none is left.
pub fn wait(limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    let mut compiling = COMPILING.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        if compiling.as_ref().is_none_or(HashSet::is_empty) {
            return true;
        }
        let Some(left) = deadline.checked_duration_since(Instant::now()) else {
            return false;
        };
        compiling = DONE
            .wait_timeout(compiling, left)
            .unwrap_or_else(|e| e.into_inner())
            .0;
    }
}
