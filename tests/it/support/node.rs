//! Node.js for the tests that run JavaScript (the page's script, an SSE client, the browser
//! scenarios): the program, and npm packages installed once into `target/test-node`.

use serde_json::Value;
use std::path::PathBuf;

/// The Node.js program (`node`, or Debian's `nodejs`). Fails the test when there is none: the
/// checks that use it must not pass without running (`.ci/run` installs it).
pub fn node() -> &'static str {
    ["node", "nodejs"]
        .into_iter()
        .find(|n| {
            std::process::Command::new(n)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .unwrap_or_else(|| {
            panic!(
                "this test needs Node.js and found neither `node` nor `nodejs` on PATH; install it (Debian: apt-get install nodejs npm)"
            )
        })
}

/// Installs the npm package `spec` (`name@version`) once into `target/test-node` and returns
/// the directory to `require()` it from. Fails the test when npm is missing or the install fails.
pub fn npm_package(spec: &str) -> PathBuf {
    let (name, version) = spec.rsplit_once('@').expect("name@version");
    let prefix = crate::support::repo_root().join("target/test-node");
    let dir = prefix.join("node_modules").join(name);
    let installed = std::fs::read_to_string(dir.join("package.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<Value>(&t).ok())
        .is_some_and(|p| p["version"] == version);
    if !installed {
        std::fs::create_dir_all(&prefix).unwrap();
        let out = std::process::Command::new("npm")
            .args(["install", "--no-save", "--no-audit", "--no-fund", "--prefix"])
            .arg(&prefix)
            .arg(spec)
            .output()
            .unwrap_or_else(|e| {
                panic!("this test needs npm to install {spec} ({e}); install it (Debian: apt-get install npm)")
            });
        assert!(
            out.status.success(),
            "npm install {spec} failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    dir
}
