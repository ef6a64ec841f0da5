//! [httpbin](https://pypi.org/project/httpbin/) — a server nobody here wrote — on 127.0.0.1 and
//! an ephemeral port, plus the reference clients the `http_request` node is compared with:
//! `requests` (from the same venv) and `curl`.
//!
//! The venv comes from `bash .ci/httpbin-venv` (which `.ci/run` runs, and the first test that
//! needs it runs when it is missing); it lives in `$FLOWRUN_HTTPBIN_VENV`, else
//! `target/httpbin-venv`. When it cannot be created the tests FAIL, saying so.

use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Output, Stdio};
use std::sync::{Arc, Mutex};

/// The one command that creates the venv.
pub const SETUP: &str = "bash .ci/httpbin-venv";

/// Serves httpbin's WSGI app with Werkzeug's threaded server (Flask's own). It prints the port,
/// then serves until its stdin closes (the test process ended, however it ended).
const LAUNCHER: &str = r#"
import logging, os, sys, threading
import httpbin
from werkzeug.serving import make_server
logging.getLogger("werkzeug").setLevel(logging.ERROR)
server = make_server("127.0.0.1", 0, httpbin.app, threaded=True)
def lifeline():
    sys.stdin.buffer.read()
    os._exit(0)
threading.Thread(target=lifeline, daemon=True).start()
print(server.port, flush=True)
server.serve_forever()
"#;

/// The venv's directory.
pub fn venv() -> PathBuf {
    match std::env::var_os("FLOWRUN_HTTPBIN_VENV") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => super::repo_root().join("target").join("httpbin-venv"),
    }
}

/// The venv's interpreter. A missing venv is created on first use with [`SETUP`] (under a file
/// lock: nextest runs tests as parallel processes), so `cargo nextest run --workspace` works on
/// a fresh checkout; when it cannot be created, the test fails saying how to create it.
pub fn python() -> PathBuf {
    let python = venv().join("bin").join("python");
    let stamp = venv().join("flowrun-requirements.txt");
    if !(python.exists() && stamp.exists()) {
        let root = super::repo_root();
        std::fs::create_dir_all(root.join("target")).expect("target/ is writable");
        let lock = std::fs::File::create(root.join("target").join("httpbin-venv.lock"))
            .expect("create the venv lock file");
        let _lock = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive)
            .expect("lock the venv lock file");
        let out = Command::new("bash")
            .arg(root.join(".ci").join("httpbin-venv"))
            .current_dir(&root)
            .output()
            .expect("run .ci/httpbin-venv");
        assert!(
            out.status.success() && python.exists(),
            "the httpbin test venv is missing ({}) and `{SETUP}` could not create it \
             (set FLOWRUN_HTTPBIN_VENV to put it elsewhere):\n{}{}",
            python.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    python
}

/// A running httpbin; killed when dropped.
pub struct Httpbin {
    child: Child,
    _lifeline: ChildStdin,
    port: u16,
}

impl Httpbin {
    pub fn start() -> Httpbin {
        let mut child = Command::new(python())
            .args(["-I", "-c", LAUNCHER])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start httpbin");
        let lifeline = child.stdin.take().unwrap();
        let stderr = Arc::new(Mutex::new(String::new()));
        {
            let mut pipe = child.stderr.take().unwrap();
            let stderr = stderr.clone();
            std::thread::spawn(move || {
                let mut buf = String::new();
                let _ = pipe.read_to_string(&mut buf);
                stderr.lock().unwrap().push_str(&buf);
            });
        }
        let mut line = String::new();
        let _ = BufReader::new(child.stdout.take().unwrap()).read_line(&mut line);
        let Ok(port) = line.trim().parse() else {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "httpbin did not start (printed {line:?}); stderr:\n{}\n(recreate its venv with `{SETUP}`)",
                stderr.lock().unwrap()
            );
        };
        Httpbin {
            child,
            _lifeline: lifeline,
            port,
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:PORT` followed by `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.port, path)
    }

    /// The same server under another host name, `localhost` (a different origin for clients).
    pub fn other_host_url(&self, path: &str) -> String {
        format!("http://localhost:{}{}", self.port, path)
    }
}

impl Drop for Httpbin {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `code` with the venv's Python (where `requests` is) and returns its stdout; the script
/// must succeed.
pub fn requests_py(code: &str) -> String {
    let out = Command::new(python())
        .args(["-I", "-c", code])
        .env_remove("http_proxy")
        .env_remove("HTTP_PROXY")
        .env_remove("https_proxy")
        .env_remove("HTTPS_PROXY")
        .env_remove("ALL_PROXY")
        .env_remove("all_proxy")
        .output()
        .expect("run the venv's python");
    assert!(
        out.status.success(),
        "requests script failed: {}\n{code}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

/// Runs `curl ARGS` (no config file, no proxy) and returns its output, whatever its exit code.
pub fn curl(args: &[&str]) -> Output {
    Command::new("curl")
        .arg("-q")
        .args(["--silent", "--show-error", "--noproxy", "*"])
        .args(args)
        .output()
        .expect("curl is on PATH (.ci/run installs it when missing)")
}
