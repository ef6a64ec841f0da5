//! The script compiled to bytecode, next to it in the cache
//! (`<sha256>.<impl>-<major><minor>-<magic>.pyc`: see [`pyc_path`]).
//!
//! Running the `.pyc` saves the interpreter compiling the ~40 KB script on every run (~7 ms
//! here). Compiling it takes a Python of its own (~35-45 ms), which the first run of a new
//! script used to wait for.
//!
//! - **A one-shot run** (`flowrun run`, a sub-workflow's `flowrun __sub`; every run on a fresh
//!   CI machine is a first run) does not wait: it runs the `.py` while the `.pyc` is compiled
//!   beside it ([`start`], from `runner::run`, so that a run that fails before it starts leaves
//!   nothing behind), and waits for that compile only as it ends (`background::finish`, from
//!   `control::end_strays`, which then kills what is left under it): a w3 first run 62 -> 48 ms.
//!   The compile runs at the default priority: at a lower one a busy machine starved it for
//!   seconds, all of them waited for.
//! - **A process with warm starts** (`flowrun serve`, `flowrun test`) compiles before the first
//!   run, as before: its template then prepares the script from the `.pyc` for every later run
//!   (from the `.py` it costs the template ~7 ms and then the `.pyc` appears under another
//!   name, to prepare again). Measured the other way through `serve`, the first run after an
//!   edit was ~5 ms faster and a second one right after it 5-10 ms slower.
//!
//! The compile writes a file of its own (its pid in the name) and renames it into place, so a
//! compile cut short leaves no `.pyc` for a run to load and stands in the way of no later one.
//! It is one of the process's background jobs (`flowrun_executor::background`, with the warm
//! template's compile): one per `.pyc` however many runs of its script start meanwhile (the
//! cases of a `flowrun test --cold`), waited for as the process ends. The compiling Python is a
//! child of this process and in its session, so the stray sweep (`flowrun_executor::strays`)
//! counts it as the runner's own.

use crate::python::Interpreter;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Compiles the script to `pyc` through a file of its own, read back and synced before it is
/// renamed into place: `py_compile` writes through an unbuffered file and ignores a short write
/// (a full disk), and a truncated `.pyc` in place failed every later run of its workflow; a
/// crash after a rename of a file not yet on disk can leave it empty. A compile that fails
/// removes its file.
const COMPILE: &str = "import marshal, os, py_compile, sys
tmp = '%s.tmp-%d' % (sys.argv[2], os.getpid())
try:
    py_compile.compile(sys.argv[1], cfile=tmp, doraise=True)
    with open(tmp, 'rb') as f:
        marshal.loads(f.read()[16:])
        os.fsync(f.fileno())
    os.replace(tmp, sys.argv[2])
except BaseException:
    try:
        os.unlink(tmp)
    except OSError:
        pass
    raise";

/// A `.pyc` to compile once the run that found none starts.
#[derive(Debug, Clone)]
pub struct PendingBytecode {
    python: PathBuf,
    script: PathBuf,
    pyc: PathBuf,
}

/// What the interpreter should run: the `.pyc` when it is there, or compiled now in a process
/// with warm starts; else the script itself, and the `.pyc` to compile for the runs after it.
pub(super) fn run_path(interp: &Interpreter, script: &Path) -> (PathBuf, Option<PendingBytecode>) {
    let pyc = pyc_path(interp, script);
    if usable(&pyc, interp.bytecode_magic.as_deref()) {
        return (pyc, None);
    }
    let pending = PendingBytecode {
        python: interp.executable.clone(),
        script: script.to_path_buf(),
        pyc,
    };
    if flowrun_executor::warm::enabled() {
        let compiled = flowrun_executor::process::run_helper(&mut compile_command(&pending))
            .is_ok_and(|s| s.success())
            && pending.pyc.is_file();
        let run = if compiled { &pending.pyc } else { script };
        return (run.to_path_buf(), None);
    }
    (script.to_path_buf(), Some(pending))
}

/// What to run now: the prepared `run_path` unless it is a `.pyc` that has gone or gone bad
/// since it was prepared (an execution before this one failed to load it and removed it:
/// [`Watch`]; a suite prepares its next case while one runs): then the script itself.
pub(super) fn path_now<'a>(run_path: &'a Path, script: &'a Path, magic: Option<&str>) -> &'a Path {
    if run_path != script && !usable(run_path, magic) {
        script
    } else {
        run_path
    }
}

/// Whether `pyc` looks like bytecode the interpreter can load: a regular file with a header
/// and something after it, and the interpreter's magic number when it is known. An empty file
/// (a crash), a short one or another magic number failed every run of its workflow ("Bad magic
/// number in .pyc file"); such a file is compiled again, as a missing one is. What the header
/// cannot tell (marshal data cut short) is caught as it fails to load ([`Watch`]).
fn usable(pyc: &Path, magic: Option<&str>) -> bool {
    use std::io::Read;
    let mut head = [0u8; 17];
    let Ok(mut file) = std::fs::File::open(pyc) else {
        return false;
    };
    if !file.metadata().is_ok_and(|m| m.is_file()) || file.read_exact(&mut head).is_err() {
        return false;
    }
    let hex: String = head[..4].iter().map(|b| format!("{b:02x}")).collect();
    magic.is_none_or(|m| m.eq_ignore_ascii_case(&hex))
}

/// Watches an execution run from a `.pyc` for the interpreter saying it could not load it (its
/// marshal data cut short or damaged: it fails before the script's first line, so every run of
/// the workflow failed the same way): a line of its own stderr before any node started, in an
/// execution that then failed. [`Watch::repair`] then removes the file, so that the next run
/// compiles it again, and tells the user.
pub(super) struct Watch {
    pyc: PathBuf,
    /// Its device and inode as the execution starts: only that file is removed, not one
    /// compiled again meanwhile for another execution.
    id: Option<(u64, u64)>,
    said: Option<String>,
    /// A node started: the script was loaded, and whatever is printed after is the workflow's.
    ran: bool,
}

/// What the interpreter prints when it cannot load a `.pyc` it was told to run
/// (`run_pyc_file` in CPython's `pythonrun.c`: a bad magic number or code object; its marshal
/// reader: data cut short or damaged).
const LOAD_ERRORS: [&str; 4] = [
    "in .pyc file",
    "marshal data",
    "EOF read where object expected",
    "NULL object in marshal data",
];

impl Watch {
    /// A watch for an execution that runs `run_path`, if that is a `.pyc`.
    pub(super) fn of(run_path: &Path) -> Option<Watch> {
        (run_path.extension().is_some_and(|e| e == "pyc")).then(|| Watch {
            pyc: run_path.to_path_buf(),
            id: file_id(run_path),
            said: None,
            ran: false,
        })
    }

    /// After the execution: when it failed to load its `.pyc`, the file is removed (the
    /// record keeps what the interpreter said, as the child's own output) and the user told.
    pub(super) fn repair(&self, status: flowrun_events::ExecStatus) {
        let Some(said) = self
            .said
            .as_ref()
            .filter(|_| status == flowrun_events::ExecStatus::Error)
        else {
            return;
        };
        // Gone already (removed by another execution that failed on it), or another file now:
        // nothing to remove.
        let removed = match file_id(&self.pyc) {
            Some(id) if Some(id) == self.id => std::fs::remove_file(&self.pyc),
            _ => Ok(()),
        };
        match removed {
            Ok(()) => tracing::warn!(
                "the script's cached bytecode {} could not be loaded ({}): it is removed, and the next run compiles it again",
                self.pyc.display(),
                said.trim()
            ),
            Err(e) => tracing::warn!(
                "the script's cached bytecode {} could not be loaded ({}) nor removed ({e}): remove it by hand",
                self.pyc.display(),
                said.trim()
            ),
        }
    }
}

fn file_id(p: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::symlink_metadata(p)
        .ok()
        .map(|m| (m.dev(), m.ino()))
}

impl flowrun_executor::Sink for Watch {
    fn event(&mut self, envelope: &flowrun_events::Envelope) {
        use flowrun_events::Event;
        match &envelope.event {
            Event::NodeStart { .. } => self.ran = true,
            Event::Log {
                node: None, line, ..
            } if !self.ran
                && self.said.is_none()
                && LOAD_ERRORS.iter().any(|m| line.contains(m)) =>
            {
                self.said = Some(line.clone());
            }
            _ => {}
        }
    }
}

/// Where `script`'s bytecode for `interp` goes: named by the interpreter's implementation,
/// version and bytecode magic number, so that two builds of one version whose bytecode differs
/// (a pre-release and the release, sharing a cache) never load each other's `.pyc` — that
/// fails every run ("Bad magic number"). Without a known magic number, the name has none.
fn pyc_path(interp: &Interpreter, script: &Path) -> PathBuf {
    let (major, minor, _) = interp.version;
    let mut tag = format!("{}-{major}{minor}", interp.implementation);
    if let Some(magic) = &interp.bytecode_magic {
        tag.push('-');
        tag.push_str(magic);
    }
    script.with_extension(format!("{tag}.pyc"))
}

/// The Python that compiles `p`, its output thrown away.
fn compile_command(p: &PendingBytecode) -> Command {
    let mut cmd = Command::new(&p.python);
    cmd.args(["-I", "-S", "-c", COMPILE])
        .arg(&p.script)
        .arg(&p.pyc)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    cmd
}

/// Starts compiling `m` in the background unless this process already is
/// ([`flowrun_executor::background`]). Nothing fails if it cannot: the `.py` runs instead.
pub(super) fn start(m: &PendingBytecode) {
    let job = m.clone();
    flowrun_executor::background::start(&m.pyc, "flowrun-pyc", move || {
        let _ = flowrun_executor::process::run_helper(&mut compile_command(&job));
    });
}

#[cfg(test)]
mod tests {
    use super::COMPILE;

    /// Runs the compile on `script` to `pyc`, after `before` (Python run first in the same
    /// interpreter).
    fn compile(before: &str, script: &std::path::Path, pyc: &std::path::Path) -> bool {
        std::process::Command::new("python3")
            .args(["-I", "-S", "-c", &format!("{before}\n{COMPILE}")])
            .arg(script)
            .arg(pyc)
            .stderr(std::process::Stdio::null())
            .status()
            .expect("python3 runs")
            .success()
    }

    #[test]
    fn a_short_write_leaves_no_pyc_in_place_and_nothing_of_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("s.py");
        let body: String = (0..2000).map(|i| format!("x{i} = {i}\n")).collect();
        std::fs::write(&script, body).unwrap();
        let pyc = dir.path().join("s.pyc");
        // What a full disk does to py_compile's write: a third of the bytes, and no error.
        let short = "import importlib._bootstrap_external as b\n\
                     def w(path, data, mode=0o666):\n    \
                     with open(path, 'wb') as f:\n        f.write(data[:len(data) // 3])\n\
                     b._write_atomic = w";
        assert!(!compile(short, &script, &pyc), "the compile says it failed");
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, [std::ffi::OsString::from("s.py")]);
        // And whole: in place, and it loads.
        assert!(compile("", &script, &pyc));
        let code = std::fs::read(&pyc).unwrap();
        assert!(code.len() > 16);
    }
}
