//! Finding the Python interpreter, once, and remembering the answer.
//!
//! Order: `--python PATH`, `$FLOWRUN_PYTHON`, an active `$VIRTUAL_ENV`, `python3` then `python` on
//! `PATH`. A candidate may be a shim (pyenv, asdf) that costs ~100 ms per start, so it is asked
//! once for the real executable (`sys.executable`), and that answer is cached in the cache
//! directory, keyed by the candidate's path, size and modification time, and checked against the
//! real executable's size and mtime, so a changed interpreter is noticed.

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Oldest Python the runtime supports.
pub const MIN_VERSION: (u32, u32) = (3, 9);

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Interpreter {
    /// The real executable to spawn.
    pub executable: PathBuf,
    pub version: (u32, u32, u32),
    pub implementation: String,
    /// What was found before resolving (a shim, a symlink, the executable itself).
    pub candidate: PathBuf,
    /// How the candidate was found (`--python`, `FLOWRUN_PYTHON`, `VIRTUAL_ENV`, `PATH`).
    pub found_by: String,
    /// The magic number of its bytecode (`importlib.util.MAGIC_NUMBER`, in hex), which names
    /// the scripts' `.pyc` files: builds of one version can differ in it (a pre-release and
    /// the release), and a `.pyc` of the other one fails every run. `None` in a cache entry
    /// written before it was asked, or from an interpreter that does not say.
    #[serde(default)]
    pub bytecode_magic: Option<String>,
}

impl Interpreter {
    pub fn version_string(&self) -> String {
        format!("{}.{}.{}", self.version.0, self.version.1, self.version.2)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PythonError {
    #[error(
        "no Python interpreter found (looked at --python, FLOWRUN_PYTHON, VIRTUAL_ENV, and python3/python on PATH)\n{}",
        INSTALL_HINT
    )]
    NotFound,
    #[error("{path} (from {found_by}) does not work as a Python interpreter: {message}")]
    Broken {
        path: PathBuf,
        found_by: String,
        message: String,
    },
    #[error(
        "{path} is Python {version}, but flowrun needs Python {}.{} or newer\n{}",
        MIN_VERSION.0, MIN_VERSION.1, INSTALL_HINT
    )]
    TooOld { path: PathBuf, version: String },
}

const INSTALL_HINT: &str = "Install Python 3.9 or newer and point flowrun at it with --python PATH or FLOWRUN_PYTHON:\n  \
Debian/Ubuntu: sudo apt install python3\n  macOS: brew install python@3.12\n  Windows: winget install Python.Python.3.12";

/// An interpreter the user named (`--python`, `FLOWRUN_PYTHON`): a bare name (`python3.12`) is
/// looked up on `PATH` as a shell would, and a relative path is made absolute, so it can be
/// spawned whatever the working directory and its cache entry does not depend on it.
fn user_named(p: &Path) -> PathBuf {
    let bare = !p.is_absolute() && p.components().count() == 1;
    if bare {
        if let Ok(found) = which::which(p) {
            return found;
        }
        if !p.exists() {
            return p.to_path_buf();
        }
    }
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

fn candidates(explicit: Option<&Path>) -> Vec<(PathBuf, String)> {
    let mut out = Vec::new();
    if let Some(p) = explicit {
        out.push((user_named(p), "--python".to_string()));
        return out;
    }
    if let Some(p) = std::env::var_os("FLOWRUN_PYTHON").filter(|v| !v.is_empty()) {
        out.push((user_named(Path::new(&p)), "FLOWRUN_PYTHON".to_string()));
        return out;
    }
    if let Some(venv) = std::env::var_os("VIRTUAL_ENV").filter(|v| !v.is_empty()) {
        let p = PathBuf::from(venv).join("bin").join("python");
        if p.exists() {
            out.push((p, "VIRTUAL_ENV".to_string()));
        }
    }
    for name in ["python3", "python"] {
        if let Ok(p) = which::which(name) {
            out.push((p, "PATH".to_string()));
        }
    }
    out
}

#[derive(Debug, Serialize, Deserialize)]
struct CacheEntry {
    candidate: PathBuf,
    candidate_stamp: (u64, i64),
    executable_stamp: (u64, i64),
    interpreter: Interpreter,
}

fn stamp(p: &Path) -> Option<(u64, i64)> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(p).ok()?;
    Some((m.size(), m.mtime_nsec() + m.mtime() * 1_000_000_000))
}

fn cache_file(cache_dir: &Path) -> PathBuf {
    cache_dir.join("interpreters.json")
}

fn read_cache(cache_dir: &Path) -> Vec<CacheEntry> {
    std::fs::read(cache_file(cache_dir))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

fn write_cache(cache_dir: &Path, entries: &[CacheEntry]) {
    if crate::paths::private_dir(cache_dir).is_ok() {
        let bytes = serde_json::to_vec_pretty(entries).expect("cache entries serialize");
        let _ = crate::paths::write_private(&cache_file(cache_dir), &bytes);
    }
}

/// How long a candidate may take to say what it is (~15 ms; a pyenv shim ~100 ms).
const PROBE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Asks a candidate what it really is. Runs it isolated and without site, so it is quick.
fn probe(candidate: &Path, found_by: &str) -> Result<Interpreter, PythonError> {
    let script = "import sys, importlib.util; print(sys.executable); print('%d.%d.%d' % sys.version_info[:3]); print(sys.implementation.name); print(getattr(importlib.util, 'MAGIC_NUMBER', b'').hex())";
    let broken = |message: String| PythonError::Broken {
        path: candidate.to_path_buf(),
        found_by: found_by.to_string(),
        message,
    };
    // Bounded: a shim that hangs (or an interpreter that does) must not hang `run`, `validate`
    // or a server's request with it.
    let out = flowrun_executor::helper::run_bounded(
        Command::new(candidate)
            .args(["-I", "-S", "-c", script])
            .stdin(std::process::Stdio::null()),
        PROBE_TIMEOUT,
        64 * 1024,
    )
    .map_err(|e| broken(e.to_string()))?;
    if !out.status.success() {
        return Err(broken(format!(
            "it exited with {} ({})",
            out.status,
            out.stderr_tail.trim()
        )));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines = text.lines();
    let (Some(exe), Some(ver), Some(imp)) = (lines.next(), lines.next(), lines.next()) else {
        return Err(broken(format!("unexpected answer {text:?}")));
    };
    let nums: Vec<u32> = ver.split('.').filter_map(|x| x.parse().ok()).collect();
    if nums.len() != 3 {
        return Err(broken(format!("unexpected version {ver:?}")));
    }
    let executable = if exe.is_empty() {
        candidate.to_path_buf()
    } else {
        PathBuf::from(exe)
    };
    Ok(Interpreter {
        executable,
        version: (nums[0], nums[1], nums[2]),
        implementation: imp.to_string(),
        candidate: candidate.to_path_buf(),
        found_by: found_by.to_string(),
        bytecode_magic: lines
            .next()
            .map(str::trim)
            .filter(|m| !m.is_empty() && m.bytes().all(|b| b.is_ascii_hexdigit()))
            .map(str::to_string),
    })
}

/// Finds the interpreter to run workflows with, using and updating the cache.
pub fn discover(explicit: Option<&Path>, cache_dir: &Path) -> Result<Interpreter, PythonError> {
    find(explicit, cache_dir, true)
}

/// Like [`discover`], but asks the candidate again even when the cache has an answer, and
/// updates the cache (`flowrun doctor`). A shim's answer can change while the shim file does
/// not (`pyenv global 3.12`, a `.python-version`): this is how such a change is picked up.
pub fn rediscover(explicit: Option<&Path>, cache_dir: &Path) -> Result<Interpreter, PythonError> {
    find(explicit, cache_dir, false)
}

fn find(
    explicit: Option<&Path>,
    cache_dir: &Path,
    use_cache: bool,
) -> Result<Interpreter, PythonError> {
    let list = candidates(explicit);
    let Some((candidate, found_by)) = list.into_iter().next() else {
        return Err(PythonError::NotFound);
    };
    if !candidate.exists() {
        let message = if candidate.is_absolute() {
            "no such file"
        } else {
            "no such file, and no such command on PATH"
        };
        return Err(PythonError::Broken {
            path: candidate,
            found_by,
            message: message.into(),
        });
    }
    let mut entries = read_cache(cache_dir);
    let cstamp = stamp(&candidate);
    if let Some(e) = entries
        .iter()
        .find(|e| use_cache && e.candidate == candidate)
    {
        if Some(e.candidate_stamp) == cstamp
            && stamp(&e.interpreter.executable) == Some(e.executable_stamp)
        {
            let mut interp = e.interpreter.clone();
            interp.found_by = found_by;
            return check_version(interp);
        }
    }
    let interp = probe(&candidate, &found_by)?;
    if let (Some(cs), Some(es)) = (cstamp, stamp(&interp.executable)) {
        entries.retain(|e| e.candidate != candidate);
        entries.push(CacheEntry {
            candidate: candidate.clone(),
            candidate_stamp: cs,
            executable_stamp: es,
            interpreter: interp.clone(),
        });
        write_cache(cache_dir, &entries);
    }
    check_version(interp)
}

fn check_version(i: Interpreter) -> Result<Interpreter, PythonError> {
    if (i.version.0, i.version.1) < MIN_VERSION {
        return Err(PythonError::TooOld {
            path: i.candidate.clone(),
            version: i.version_string(),
        });
    }
    Ok(i)
}
