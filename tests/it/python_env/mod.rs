//! The Python environment (issue 6), end to end with the real `flowrun` binary: interpreter
//! discovery and its cache, the version check, isolated mode, requirements, and `doctor --fix`
//! installing a wheel built in the test with real pip and no network.
//!
//! Fake interpreters are real executable scripts in the test's temp dir, found through a `PATH`
//! that each command sets explicitly (`FLOWRUN_PYTHON` and `VIRTUAL_ENV` are removed unless a
//! test sets them). A fake that should work `exec`s the real interpreter after appending a line
//! to a trace file, so the trace says which candidate was asked, and how often.

mod discovery;
mod requirements;
mod unusable;

use crate::support::*;
use assert_cmd::Command;
use serde_json::{Value, json};
use std::ffi::OsString;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// The real interpreter behind `python3` on the test's own PATH, and its `X.Y`.
pub(super) struct RealPython {
    exe: PathBuf,
    xy: String,
}

pub(super) fn real_python() -> &'static RealPython {
    static REAL: OnceLock<RealPython> = OnceLock::new();
    REAL.get_or_init(|| {
        let out = std::process::Command::new("python3")
            .args([
                "-c",
                "import sys; print(sys.executable); print('%d.%d' % sys.version_info[:2])",
            ])
            .output()
            .expect("python3 is on the test's PATH");
        assert!(out.status.success(), "python3 -c failed: {out:?}");
        let text = String::from_utf8(out.stdout).unwrap();
        let mut lines = text.lines();
        RealPython {
            exe: PathBuf::from(lines.next().expect("sys.executable")),
            xy: lines.next().expect("version").to_string(),
        }
    })
}

/// Writes an executable file (mode 0755), creating its directory.
pub(super) fn write_exec(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// A shim like pyenv's: appends `label` to `trace`, then `exec`s `target`.
pub(super) fn write_shim(path: &Path, trace: &Path, label: &str, target: &Path) {
    write_exec(
        path,
        &format!(
            "#!/bin/sh\necho '{label}' >> '{}'\nexec '{}' \"$@\"\n",
            trace.display(),
            target.display()
        ),
    );
}

/// A fake interpreter that answers flowrun's probe (`-I -S -c SCRIPT`, printing
/// `sys.executable`, the version and the implementation) as Python `version` would, reporting
/// itself as the executable. Anything else fails.
pub(super) fn write_fake_python(path: &Path, trace: &Path, label: &str, version: &str) {
    write_exec(
        path,
        &format!(
            "#!/bin/sh\necho '{label}' >> '{trace}'\n\
             if [ \"$1\" = -I ] && [ \"$2\" = -S ] && [ \"$3\" = -c ]; then\n  \
             echo '{exe}'\n  echo '{version}'\n  echo cpython\n  exit 0\nfi\n\
             echo \"fake python: unexpected arguments $*\" >&2\nexit 2\n",
            trace = trace.display(),
            exe = path.display(),
        ),
    );
}

/// Lines of a trace file (none when it does not exist yet).
pub(super) fn trace(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// A `PATH` made of these directories only.
pub(super) fn path_of(dirs: &[&Path]) -> OsString {
    std::env::join_paths(dirs).unwrap()
}

/// `flowrun` with this env's database and cache and `PATH` set to `path`. Nothing else that could
/// pick an interpreter or change Python's behaviour is inherited from the test's environment:
/// the common command removes `FLOWRUN_PYTHON`, `VIRTUAL_ENV`, `PYTHON*`, `PYENV_VERSION` and
/// pip's index variables (`common::SCRUBBED`).
pub(super) fn flowrun(env: &Env, path: &OsString) -> Command {
    let mut cmd = env.flowrun();
    cmd.env("PATH", path);
    cmd
}

/// `flowrun doctor --json ARGS`, parsed, with its exit code.
pub(super) fn doctor_json(mut cmd: Command, args: &[&str]) -> (Option<i32>, Value) {
    let out = output(cmd.arg("doctor").arg("--json").args(args));
    let report = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("doctor --json prints JSON ({e})\n{}", describe(&out)));
    (out.status.code(), report)
}

/// A one-node workflow whose code node runs `code`.
pub(super) fn code_workflow(env: &Env, name: &str, code: &str, requirements: &[&str]) -> PathBuf {
    let mut node = json!({ "id": "probe", "type": "code", "code": code });
    if !requirements.is_empty() {
        node["requirements"] = json!(requirements);
    }
    env.write_workflow(name, &json!({ "id": "pyenv-test", "nodes": [node] }))
}

/// Reports which interpreter ran the node and how.
pub(super) const WHERE_CODE: &str = "import sys\nreturn {'executable': sys.executable, 'prefix': sys.prefix, \
     'isolated': sys.flags.isolated, 'no_site': sys.flags.no_site}";

/// The output of node `probe` of the only execution, asserting it succeeded.
pub(super) fn probe_output(env: &Env) -> Value {
    let id = env.only_execution_id();
    let node = env.node(&id, "probe");
    assert_eq!(node.status, "success", "{node:?}");
    node.output.expect("node output")
}

/// The output of node `probe` of the newest execution, asserting it succeeded.
pub(super) fn last_probe_output(env: &Env) -> Value {
    let id = env.execution_ids().pop().expect("an execution");
    let node = env.node(&id, "probe");
    assert_eq!(node.status, "success", "{node:?}");
    node.output.expect("node output")
}

/// Builds `flowrun_test_pkg-1.0.0-py3-none-any.whl` (module `flowrun_test_pkg` with
/// `VALUE = "ok"`) into `dir` with Python's zipfile, as a build backend would.
fn build_wheel(dir: &Path) -> PathBuf {
    const BUILD: &str = r#"
import base64, hashlib, os, sys, zipfile
files = {
    "flowrun_test_pkg/__init__.py": 'VALUE = "ok"\n',
    "flowrun_test_pkg-1.0.0.dist-info/METADATA":
        "Metadata-Version: 2.1\nName: flowrun-test-pkg\nVersion: 1.0.0\n",
    "flowrun_test_pkg-1.0.0.dist-info/WHEEL":
        "Wheel-Version: 1.0\nGenerator: flowrun-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
}
record = []
for name, text in files.items():
    data = text.encode()
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    record.append("%s,sha256=%s,%d" % (name, digest, len(data)))
record.append("flowrun_test_pkg-1.0.0.dist-info/RECORD,,")
files["flowrun_test_pkg-1.0.0.dist-info/RECORD"] = "\n".join(record) + "\n"
path = os.path.join(sys.argv[1], "flowrun_test_pkg-1.0.0-py3-none-any.whl")
with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
    for name, text in files.items():
        z.writestr(name, text)
print(path)
"#;
    std::fs::create_dir_all(dir).unwrap();
    let out = std::process::Command::new(&real_python().exe)
        .args(["-I", "-c", BUILD])
        .arg(dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "building the wheel failed: {out:?}");
    let wheel = PathBuf::from(String::from_utf8(out.stdout).unwrap().trim());
    assert!(wheel.is_file());
    wheel
}

/// Managed environments under `<cache>/venvs/`.
/// A wheel of the test package in `<env>/wheels`, and a PATH whose only `python3` is the real
/// interpreter: what the install tests start from.
pub(super) fn offline_setup(env: &Env) -> (PathBuf, OsString) {
    let wheels = env.path("wheels");
    build_wheel(&wheels);
    let bin = env.path("bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::os::unix::fs::symlink(&real_python().exe, bin.join("python3")).unwrap();
    (wheels, path_of(&[&bin]))
}

pub(super) fn venvs(env: &Env) -> Vec<PathBuf> {
    match std::fs::read_dir(env.cache_dir().join("venvs")) {
        Ok(rd) => rd.map(|e| e.unwrap().path()).collect(),
        Err(_) => Vec::new(),
    }
}

pub(super) const PKG: &str = "flowrun-test-pkg>=1.0";
pub(super) const PKG_CODE: &str = "import sys\nimport flowrun_test_pkg\n\
     return {'value': flowrun_test_pkg.VALUE, 'prefix': sys.prefix, \
     'isolated': sys.flags.isolated, 'no_site': sys.flags.no_site}";

/// `PIP_NO_INDEX=1 PIP_FIND_LINKS=dir`: pip installs only from `dir`, no network.
pub(super) fn offline_pip(cmd: &mut Command, find_links: &Path) {
    cmd.env("PIP_NO_INDEX", "1")
        .env("PIP_FIND_LINKS", find_links)
        .env("PIP_DISABLE_PIP_VERSION_CHECK", "1");
}
