//! Third-party packages a workflow's nodes declare (`requirements`): checking them in an
//! interpreter's environment, and installing them into a managed virtual environment.
//!
//! The check runs one short Python process that reads the installed distributions with
//! `importlib.metadata` and compares versions with `packaging` when it is importable (pip vendors
//! it), else with a small comparator for plain `1.2.3`-style versions. Managed environments live
//! in `<cache>/venvs/<hash>`, one per interpreter and requirement set, so workflows that need
//! different versions do not fight.

use crate::python::Interpreter;
use flowrun_executor::process::{run_helper, spawn_helper};
use sha2::{Digest, Sha256};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// A requirement that is not satisfied, and why.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Missing {
    pub requirement: String,
    /// `not installed`, or `found 1.0`.
    pub reason: String,
}

/// How long the requirement check may take: a few hundred milliseconds with site, seconds for
/// a huge environment on a slow disk.
const CHECK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(20);

/// The most of the check's answer read: the missing requirements and the `sys.path` entries.
const MAX_CHECK_ANSWER: usize = 4 << 20;

const CHECK: &str = r#"
import json, re, sys
from importlib import metadata
try:
    from packaging.requirements import Requirement
except Exception:
    try:
        from pip._vendor.packaging.requirements import Requirement
    except Exception:
        Requirement = None

def simple(spec):
    m = re.match(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(\[[^\]]*\])?\s*(.*)$", spec)
    name, rest = m.group(1), m.group(3).split(";")[0].strip()
    clauses = [c.strip() for c in rest.split(",") if c.strip()]
    return name, clauses

def key(v):
    return [int(x) if x.isdigit() else x for x in re.split(r"[.+-]", v)]

def ok(version, clause):
    m = re.match(r"^(===|==|!=|~=|>=|<=|>|<)\s*(\S+)$", clause)
    if not m:
        return True
    op, want = m.groups()
    if want.endswith(".*"):
        return (version + ".").startswith(want[:-1]) == (op == "==")
    a, b = key(version), key(want)
    try:
        return {"==": a == b, "===": version == want, "!=": a != b, ">=": a >= b, "<=": a <= b,
                ">": a > b, "<": a < b, "~=": a >= b and a[:len(b) - 1] == b[:len(b) - 1]}[op]
    except TypeError:
        return True

out = []
for spec in json.loads(sys.stdin.read()):
    try:
        if Requirement is not None:
            r = Requirement(spec)
            if r.marker is not None and not r.marker.evaluate():
                continue
            name, check = r.name, (lambda v, r=r: r.specifier.contains(v, prereleases=True))
        else:
            name, clauses = simple(spec)
            check = lambda v, c=clauses: all(ok(v, x) for x in c)
        try:
            version = metadata.version(name)
        except metadata.PackageNotFoundError:
            out.append([spec, "not installed"])
            continue
        if not check(version):
            out.append([spec, "found " + version])
    except Exception as e:
        out.append([spec, "cannot check: %s" % e])
import os
print(json.dumps({"missing": out, "paths": [p for p in sys.path if p and os.path.isdir(p)]}))
"#;

/// Which of `requirements` the interpreter's environment does not satisfy, and its `sys.path`
/// directories (what a cached answer depends on; see [`check_cached`]).
fn check_with_paths(
    interp: &Interpreter,
    requirements: &[String],
) -> Result<(Vec<Missing>, Vec<PathBuf>), String> {
    if requirements.is_empty() {
        return Ok((Vec::new(), Vec::new()));
    }
    // Bounded in time and output: a shim or a site hook that hangs or floods must not hang
    // `run`, `validate` or a server's request.
    let input = serde_json::to_vec(requirements).expect("strings serialize");
    let stdin = flowrun_executor::helper::stdin_of(&input)
        .map_err(|e| format!("cannot write a temporary file: {e}"))?;
    // Isolated from the user's environment variables and cwd, but with site: that is where
    // packages live.
    let mut cmd = Command::new(&interp.executable);
    cmd.args(["-I", "-c", CHECK]).stdin(stdin);
    let out = flowrun_executor::helper::run_bounded(&mut cmd, CHECK_TIMEOUT, MAX_CHECK_ANSWER)
        .map_err(|e| {
            format!(
                "checking requirements with {}: {e}",
                interp.executable.display()
            )
        })?;
    if !out.status.success() {
        return Err(format!(
            "checking requirements with {} failed: {}",
            interp.executable.display(),
            out.stderr_tail.trim()
        ));
    }
    #[derive(serde::Deserialize)]
    struct Answer {
        missing: Vec<(String, String)>,
        paths: Vec<PathBuf>,
    }
    let answer: Answer = serde_json::from_slice(&out.stdout)
        .map_err(|e| format!("unexpected answer from the requirement check: {e}"))?;
    let missing = answer
        .missing
        .into_iter()
        .map(|(requirement, reason)| Missing {
            requirement,
            reason,
        })
        .collect();
    Ok((missing, answer.paths))
}

/// A requirement set found satisfied, and what that answer depends on: the interpreter file and
/// the modification times of the directories on its `sys.path` (pip adds or removes a
/// directory there for every package it installs, upgrades or uninstalls, which changes them).
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Satisfied {
    executable: PathBuf,
    executable_stamp: Option<(u64, i64)>,
    requirements: Vec<String>,
    paths: Vec<(PathBuf, Option<i64>)>,
}

fn stamp(p: &Path) -> Option<(u64, i64)> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(p).ok()?;
    Some((m.size(), m.mtime() * 1_000_000_000 + m.mtime_nsec()))
}

fn dir_mtime(p: &Path) -> Option<i64> {
    stamp(p).map(|(_, t)| t)
}

/// The requirement check, remembering satisfied answers in `<cache>/requirements.json` so that a workflow
/// with requirements does not pay a Python start and a metadata scan (~100 ms) on every run.
/// Unsatisfied answers are never cached: they are checked again each time.
pub(crate) fn check_cached(
    cache: &Path,
    interp: &Interpreter,
    requirements: &[String],
) -> Result<Vec<Missing>, String> {
    if requirements.is_empty() {
        return Ok(Vec::new());
    }
    let mut reqs = requirements.to_vec();
    reqs.sort();
    reqs.dedup();
    let file = cache.join("requirements.json");
    let mut entries: Vec<Satisfied> = std::fs::read(&file)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    let exe_stamp = stamp(&interp.executable);
    let fresh = |e: &Satisfied| {
        e.executable == interp.executable
            && e.executable_stamp == exe_stamp
            && e.requirements == reqs
            && e.paths.iter().all(|(p, t)| dir_mtime(p) == *t)
    };
    if entries.iter().any(fresh) {
        return Ok(Vec::new());
    }
    let (missing, paths) = check_with_paths(interp, &reqs)?;
    if missing.is_empty() {
        entries.retain(|e| !(e.executable == interp.executable && e.requirements == reqs));
        entries.push(Satisfied {
            executable: interp.executable.clone(),
            executable_stamp: exe_stamp,
            requirements: reqs,
            paths: paths.iter().map(|p| (p.clone(), dir_mtime(p))).collect(),
        });
        // Keep the file small: the most recent answers are the useful ones.
        if entries.len() > 64 {
            entries.drain(..entries.len() - 64);
        }
        if crate::paths::private_dir(cache).is_ok() {
            let bytes = serde_json::to_vec_pretty(&entries).expect("entries serialize");
            let _ = crate::paths::write_private(&file, &bytes);
        }
    }
    Ok(missing)
}

/// Where the managed environment for this interpreter and requirement set lives.
pub(crate) fn venv_dir(cache: &Path, interp: &Interpreter, requirements: &[String]) -> PathBuf {
    let mut reqs = requirements.to_vec();
    reqs.sort();
    reqs.dedup();
    let mut h = Sha256::new();
    h.update(interp.executable.to_string_lossy().as_bytes());
    h.update(interp.version_string().as_bytes());
    for r in &reqs {
        h.update(b"\n");
        h.update(r.as_bytes());
    }
    let hash: String = h
        .finalize()
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect();
    cache.join("venvs").join(hash)
}

/// The managed environment's interpreter, if the environment exists.
pub(crate) fn venv_interpreter(dir: &Path, base: &Interpreter) -> Option<Interpreter> {
    let exe = dir.join("bin").join("python");
    exe.exists().then(|| Interpreter {
        executable: exe.clone(),
        version: base.version,
        implementation: base.implementation.clone(),
        candidate: exe,
        found_by: format!("managed environment {}", dir.display()),
        bytecode_magic: base.bytecode_magic.clone(),
    })
}

/// Creates (if needed) the managed environment and installs `requirements` into it with pip,
/// streaming pip's output to stderr. pip reads its usual configuration (`PIP_INDEX_URL`,
/// `PIP_FIND_LINKS`, `PIP_NO_INDEX`, pip.conf).
pub fn install(
    cache: &Path,
    base: &Interpreter,
    requirements: &[String],
) -> Result<Interpreter, String> {
    let dir = venv_dir(cache, base, requirements);
    crate::paths::private_dir(&cache.join("venvs")).map_err(|e| e.to_string())?;
    // One install at a time per environment: two runs of one workflow with `--install-deps`
    // would otherwise both create it and run pip in it, and a failure of one would remove the
    // directory the other is installing into. The second waits, then finds it made.
    let _held = {
        let locks = cache.join("venv-locks");
        crate::paths::private_dir(&locks).map_err(|e| e.to_string())?;
        let lock_path = locks.join(dir.file_name().unwrap_or_default());
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| format!("cannot open {}: {e}", lock_path.display()))?;
        nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive)
            .map_err(|(_, e)| format!("cannot lock {}: {e}", lock_path.display()))?
    };
    if venv_interpreter(&dir, base).is_none() {
        crate::say!(
            "flowrun: creating a virtual environment in {}",
            dir.display()
        );
        let status = run_helper(
            Command::new(&base.executable)
                .args(["-m", "venv"])
                .arg(&dir),
        )
        .map_err(|e| format!("cannot run {}: {e}", base.executable.display()))?;
        if !status.success() {
            let _ = std::fs::remove_dir_all(&dir);
            return Err(format!(
                "`{} -m venv` failed ({status}); on Debian/Ubuntu install the venv module: sudo apt install python3-venv",
                base.executable.display()
            ));
        }
    }
    let venv = venv_interpreter(&dir, base).ok_or("the virtual environment has no bin/python")?;
    crate::say!("flowrun: installing {}", requirements.join(" "));
    let mut child = spawn_helper(
        Command::new(&venv.executable)
            .args([
                "-m",
                "pip",
                "install",
                "--disable-pip-version-check",
                "--progress-bar",
                "off",
            ])
            .args(requirements)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    )
    .map_err(|e| format!("cannot run pip: {e}"))?;
    let stderr = child.stderr.take().expect("piped");
    let errors = std::thread::spawn(move || {
        let mut lines = Vec::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            crate::say!("  pip: {line}");
            lines.push(line);
        }
        lines
    });
    for line in BufReader::new(child.stdout.take().expect("piped"))
        .lines()
        .map_while(Result::ok)
    {
        crate::say!("  pip: {line}");
    }
    let status = child.wait().map_err(|e| e.to_string())?;
    let errors = errors.join().unwrap_or_default();
    if !status.success() {
        let why: Vec<&String> = errors.iter().filter(|l| l.contains("ERROR")).collect();
        let why = if why.is_empty() {
            errors.last().cloned().unwrap_or_default()
        } else {
            why.iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join("\n")
        };
        return Err(format!(
            "pip could not install {}:\n{why}",
            requirements.join(" ")
        ));
    }
    let missing = check_cached(cache, &venv, requirements)?;
    if !missing.is_empty() {
        return Err(format!(
            "after installing, still missing: {}",
            describe(&missing)
        ));
    }
    Ok(venv)
}

pub fn describe(missing: &[Missing]) -> String {
    missing
        .iter()
        .map(|m| format!("{} ({})", m.requirement, m.reason))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Picks the interpreter that satisfies `requirements`: the managed environment made for them
/// (`doctor --fix`, `run --install-deps`) if it exists and does, else the discovered one if it
/// does; `Err(missing)` otherwise. The managed environment is checked first: it exists only
/// because the discovered interpreter lacked something, and each check is a Python start that
/// imports `importlib.metadata` and `packaging` (~100 ms), so a fixed workflow pays for one.
pub fn resolve(
    cache: &Path,
    base: &Interpreter,
    requirements: &[String],
) -> Result<Interpreter, Result<Vec<Missing>, String>> {
    if requirements.is_empty() {
        return Ok(base.clone());
    }
    if let Some(venv) = venv_interpreter(&venv_dir(cache, base, requirements), base) {
        if check_cached(cache, &venv, requirements)
            .map(|m| m.is_empty())
            .unwrap_or(false)
        {
            return Ok(venv);
        }
    }
    let missing = check_cached(cache, base, requirements).map_err(Err)?;
    if missing.is_empty() {
        return Ok(base.clone());
    }
    Err(Ok(missing))
}
