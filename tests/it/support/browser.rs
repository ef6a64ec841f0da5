//! What the browser tests need: Debian's Chromium, Node.js, and the npm packages
//! `playwright-core` (drives Chromium; never downloads a browser of its own) and `axe-core`
//! (the accessibility check, loaded by the test, never by the page), installed once into
//! `target/test-browser`. Each is required: a missing one fails the test with what to install.

#![allow(dead_code)]

use serde_json::Value;
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

pub const CHROMIUM: &str = "/usr/bin/chromium";
pub const PACKAGES: [&str; 2] = ["playwright-core@1.65.1", "axe-core@4.14.1"];

/// `/usr/bin/chromium`, or a failed test saying how to install it.
pub fn chromium() -> &'static str {
    assert!(
        std::path::Path::new(CHROMIUM).is_file(),
        "the browser tests need Debian's Chromium at {CHROMIUM}: apt-get install -y chromium (.ci/run does)"
    );
    CHROMIUM
}

/// `target/test-browser/node_modules` with [`PACKAGES`] in it (Playwright told never to
/// download a browser of its own).
pub fn node_modules() -> PathBuf {
    crate::support::npm_install(
        "test-browser",
        &PACKAGES,
        &[("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")],
    )
}

/// A scenario of `tests/browser/scenarios.js` running in Node.js: it reports the steps it
/// reaches (`{"step", "data"}` lines) and waits for an answer to each; its last line is
/// `{"ok": true, "result"}`.
pub struct Scenario {
    child: Child,
    stdin: ChildStdin,
    lines: mpsc::Receiver<String>,
    stderr: PathBuf,
    name: String,
}

/// Where the scenarios save their screenshots: `target/screenshots`, so that running the tests
/// leaves the checkout as it was; `FLOWRUN_SCREENSHOTS_DIR=docs/screenshots` refreshes the
/// README's.
pub fn screenshots_dir() -> std::path::PathBuf {
    let dir = std::env::var_os("FLOWRUN_SCREENSHOTS_DIR")
        .map(std::path::PathBuf::from)
        .map(|d| crate::support::repo_root().join(d))
        .unwrap_or_else(|| crate::support::repo_root().join("target/screenshots"));
    std::fs::create_dir_all(&dir).expect("the screenshots directory");
    dir
}

/// Asserts that the scenario just saved screenshot `name` (modified after `since`).
pub fn assert_saved(name: &str, since: std::time::SystemTime) {
    let file = screenshots_dir().join(name);
    let modified = std::fs::metadata(&file)
        .and_then(|m| m.modified())
        .unwrap_or_else(|e| panic!("no screenshot {}: {e}", file.display()));
    assert!(
        modified >= since,
        "{} was not written by this run",
        file.display()
    );
}

impl Scenario {
    /// Starts scenario `name` with `config` (plus where Chromium, the packages and the
    /// screenshots are).
    pub fn start(name: &str, mut config: Value, tmp: &std::path::Path) -> Scenario {
        let node = crate::support::serve::node();
        config["chromium"] = chromium().into();
        config["modules"] = node_modules().display().to_string().into();
        config["tmp"] = tmp.display().to_string().into();
        config["screenshots"] = screenshots_dir().display().to_string().into();
        let script = crate::support::repo_root().join("tests/browser/scenarios.js");
        let stderr = tmp.join(format!("{name}.stderr"));
        let mut child = Command::new(node)
            .arg(&script)
            .arg(name)
            .arg(config.to_string())
            .env("TMPDIR", tmp)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        Scenario {
            child,
            stdin,
            lines,
            stderr,
            name: name.to_string(),
        }
    }

    fn failure(&mut self, what: &str) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        format!(
            "browser scenario {}: {what}\n{}",
            self.name,
            std::fs::read_to_string(&self.stderr).unwrap_or_default()
        )
    }

    /// The next line from the scenario (at most 120 s).
    fn next(&mut self) -> Value {
        match self.lines.recv_timeout(Duration::from_secs(120)) {
            Ok(l) => serde_json::from_str(&l).unwrap_or_else(|_| panic!("not JSON: {l}")),
            Err(_) => {
                let msg = self.failure("failed (or said nothing for 120 s)");
                panic!("{msg}")
            }
        }
    }

    /// Waits for the scenario to reach `step`; returns its data.
    pub fn expect_step(&mut self, step: &str) -> Value {
        let v = self.next();
        if v["step"] != step {
            let msg = self.failure(&format!("expected step {step}, got {v}"));
            panic!("{msg}");
        }
        v["data"].clone()
    }

    /// Answers the step the scenario waits on.
    pub fn answer(&mut self, v: Value) {
        writeln!(self.stdin, "{v}").unwrap();
    }

    /// Waits for the scenario to pass; returns its result.
    pub fn finish(mut self) -> Value {
        let v = self.next();
        if v["ok"] != true {
            let msg = self.failure(&format!("unexpected line {v}"));
            panic!("{msg}");
        }
        let status = self.child.wait().unwrap();
        assert!(status.success(), "{}", self.failure("exited with an error"));
        v["result"].clone()
    }
}

impl Drop for Scenario {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs a scenario that needs no steps to its end.
pub fn run(name: &str, config: Value, tmp: &std::path::Path) -> Value {
    Scenario::start(name, config, tmp).finish()
}
