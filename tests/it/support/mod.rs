//! Shared helpers for the integration tests: every test gets its own [`Env`] (a temp dir with
//! its own database, script cache and empty `TMPDIR`), runs the real `flowrun` binary, which
//! runs real Python, and reads what was recorded straight from the SQLite file.
//!
//! Every command starts from the same clean slate: provider keys, secrets, endpoints, proxies,
//! interpreter and package-index settings and any `FLOWRUN_*` variable set in the developer's
//! shell are removed (see [`SCRUBBED`]), so nothing leaks into a test.
//!
//! What only one suite needs stays in its own module beside this one (`agents`, `faults`, `httpbin`, `llm_server`, `serve`).

#![allow(dead_code)]

pub mod agents;
pub mod browser;
pub mod faults;
pub mod httpbin;
pub mod llm_server;
pub mod node;
pub mod serve;

mod db;
pub use db::{EventRow, ExecRow, NodeRow};
pub use node::npm_install;

use assert_cmd::Command;
use rusqlite::{Connection, OpenFlags, OptionalExtension};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};
use tempfile::TempDir;

/// How long any one `flowrun` command run to its end may take before the test calls it hung.
pub const TIMEOUT: Duration = Duration::from_secs(60);

/// Variables removed from every `flowrun` command (besides every inherited `FLOWRUN_*` one):
/// keys and endpoints a developer may have set, proxies, and what could pick another Python
/// interpreter, change its behaviour or point pip at another index, and the CI markers
/// (`flowrun test` fails a missing snapshot and prints annotations on CI: a test that wants that
/// sets them itself, so the suite behaves the same on a laptop and on the CI machine).
pub const SCRUBBED: &[&str] = &[
    "GROQ_API_KEY",
    "OPENAI_API_KEY",
    "ANTHROPIC_API_KEY",
    "LOCAL_LLM_KEY",
    "MY_SECRET",
    "OTHER_SECRET",
    "FLOWRUN_GROQ_BASE_URL",
    "FLOWRUN_OPENAI_BASE_URL",
    "FLOWRUN_ANTHROPIC_BASE_URL",
    "FLOWRUN_OPENAI_COMPATIBLE_BASE_URL",
    "FLOWRUN_LOG",
    "FLOWRUN_PYTHON",
    "FLOWRUN_DB",
    "FLOWRUN_CACHE_DIR",
    "FLOWRUN_SERVE_TEST_KEY",
    "http_proxy",
    "https_proxy",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "all_proxy",
    "VIRTUAL_ENV",
    "PYTHONPATH",
    "PYTHONHOME",
    "PYTHONUSERBASE",
    "PYTHONSTARTUP",
    "PYENV_VERSION",
    "PIP_NO_INDEX",
    "PIP_FIND_LINKS",
    "PIP_INDEX_URL",
    "PIP_EXTRA_INDEX_URL",
    "CI",
    "GITHUB_ACTIONS",
];

/// The repository root (where `examples/` lives).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A file in `examples/`.
pub fn example(name: &str) -> PathBuf {
    repo_root().join("examples").join(name)
}

/// One test's world: a temp dir holding the database, the script cache, an empty private
/// `TMPDIR` and any files the test writes.
pub struct Env {
    pub dir: TempDir,
}

impl Default for Env {
    fn default() -> Self {
        Self::new()
    }
}

impl Env {
    pub fn new() -> Env {
        let env = Env {
            dir: tempfile::Builder::new()
                .prefix("flowrun-test-")
                .tempdir()
                .expect("temp dir"),
        };
        std::fs::create_dir(env.tmp_dir()).expect("private TMPDIR");
        env
    }

    /// A path inside the temp dir.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn db_path(&self) -> PathBuf {
        self.path("flowrun.db")
    }

    pub fn cache_dir(&self) -> PathBuf {
        self.path("cache")
    }

    /// Given to every command as `TMPDIR`.
    pub fn tmp_dir(&self) -> PathBuf {
        self.path("tmp")
    }

    /// `flowrun` as a plain process command, for tests that start it in the background: this
    /// env's database, cache and `TMPDIR`, the temp dir as working directory, stdin from
    /// `/dev/null`, and a scrubbed environment.
    pub fn command(&self) -> std::process::Command {
        self.command_of(Path::new(env!("CARGO_BIN_EXE_flowrun")))
    }

    /// [`Env::command`] for another copy of the binary.
    pub fn command_of(&self, program: &Path) -> std::process::Command {
        let mut cmd = std::process::Command::new(program);
        for k in SCRUBBED {
            cmd.env_remove(k);
        }
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("FLOWRUN_") {
                cmd.env_remove(k);
            }
        }
        cmd.env("FLOWRUN_DB", self.db_path())
            // Every warm execution warm, its template waited for as it starts and prepares the
            // script: what most warm tests check. `warm_ready.rs` tests the default, where
            // executions start cold meanwhile.
            .env("FLOWRUN_WARM_WAIT", "1")
            .env("FLOWRUN_CACHE_DIR", self.cache_dir())
            .env("TMPDIR", self.tmp_dir())
            .current_dir(self.dir.path())
            .stdin(Stdio::null());
        cmd
    }

    /// [`Env::command`] as an `assert_cmd` command, killed after [`TIMEOUT`] so a hung child
    /// cannot hang the suite (run it with [`output`], which then fails the test).
    pub fn flowrun(&self) -> Command {
        let mut cmd = Command::from_std(self.command());
        cmd.timeout(TIMEOUT);
        cmd
    }

    /// Runs `flowrun ARGS...` and returns its output (whatever the exit code).
    pub fn cmd<I, S>(&self, args: I) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        output(self.flowrun().args(args))
    }

    /// `flowrun run FILE --input INPUT EXTRA...`.
    pub fn run(&self, file: &Path, input: &str, extra: &[&str]) -> Output {
        self.run_with(file, input, &[], extra)
    }

    /// `flowrun run FILE --input INPUT EXTRA...` with `envs` set on the command.
    pub fn run_with(
        &self,
        file: &Path,
        input: &str,
        envs: &[(&str, &str)],
        extra: &[&str],
    ) -> Output {
        let mut cmd = self.flowrun();
        cmd.arg("run").arg(file).arg("--input").arg(input);
        cmd.args(extra);
        for (k, v) in envs {
            cmd.env(k, v);
        }
        output(&mut cmd)
    }

    /// Writes a workflow as pretty JSON (one key per line, so locations can be checked).
    pub fn write_workflow(&self, name: &str, workflow: &Value) -> PathBuf {
        self.write_file(
            name,
            &serde_json::to_string_pretty(workflow).expect("json serializes"),
        )
    }

    /// Writes any file into the temp dir and returns its path.
    pub fn write_file(&self, name: &str, text: &str) -> PathBuf {
        let p = self.path(name);
        std::fs::write(&p, text).expect("write file");
        p
    }
}

/// Makes a suite's own world type, a struct with an `env: Env` field, deref to that [`Env`]:
/// the common paths, commands and rows are its own, and its methods add what the suite needs.
#[allow(unused_macros)]
macro_rules! derefs_to_env {
    ($world:ty) => {
        impl std::ops::Deref for $world {
            type Target = $crate::support::Env;

            fn deref(&self) -> &$crate::support::Env {
                &self.env
            }
        }
    };
}
#[allow(unused_imports)]
pub(crate) use derefs_to_env;

/// Runs a command built from [`Env::flowrun`] to its end and returns its output (whatever the
/// exit code); fails the test when it had to be killed after [`TIMEOUT`].
pub fn output(cmd: &mut Command) -> Output {
    let started = Instant::now();
    let out = cmd.output().expect("flowrun runs");
    if out.status.code().is_none() && started.elapsed() >= TIMEOUT {
        panic!(
            "flowrun did not end within {TIMEOUT:?} (killed)\n{}",
            describe(&out)
        );
    }
    out
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Both streams, for assertion messages.
pub fn describe(out: &Output) -> String {
    format!(
        "exit: {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        out.status.code(),
        stdout(out),
        stderr(out)
    )
}

pub fn assert_code(out: &Output, code: i32, what: &str) {
    assert_eq!(
        out.status.code(),
        Some(code),
        "{what}: expected exit code {code}\n{}",
        describe(out)
    );
}

pub fn assert_success(out: &Output, what: &str) {
    assert_code(out, 0, what);
}

/// Approximate float equality (for costs).
pub fn assert_close(actual: &Value, expected: f64, what: &str) {
    let a = actual
        .as_f64()
        .unwrap_or_else(|| panic!("{what}: expected a number, got {actual}"));
    assert!(
        (a - expected).abs() <= 1e-12 + expected.abs() * 1e-9,
        "{what}: expected {expected}, got {a}"
    );
}

/// Whether `needle` occurs in `haystack`.
pub fn contains_bytes(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

/// The permission bits of a file.
pub fn mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

/// `(node_id, status)` of every node of an execution record (`show --json`, the API), in order.
pub fn record_node_statuses(record: &Value) -> Vec<(String, String)> {
    record["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            (
                n["node_id"].as_str().unwrap().to_string(),
                n["status"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// Polls `f` every 10 ms until it gives a value; fails the test after 20 s.
pub fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}
