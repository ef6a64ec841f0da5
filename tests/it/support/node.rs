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
/// the directory to `require()` it from.
pub fn npm_package(spec: &str) -> PathBuf {
    let (name, _) = spec.rsplit_once('@').expect("name@version");
    npm_install("test-node", &[spec], &[]).join(name)
}

/// Installs the npm packages `specs` (`name@version`) once into `target/<dir>` and returns its
/// `node_modules`. Under a lock, since tests run side by side in processes of their own; all of
/// them in one command, since npm removes from the prefix what a `--no-save` install does not
/// name (so a prefix holds one fixed set). Fails the test when npm is missing or the install
/// fails.
pub fn npm_install(dir: &str, specs: &[&str], env: &[(&str, &str)]) -> PathBuf {
    let prefix = crate::support::repo_root().join("target").join(dir);
    std::fs::create_dir_all(&prefix).unwrap();
    let lock = std::fs::File::create(prefix.join(".install.lock")).unwrap();
    use std::os::fd::AsRawFd;
    // SAFETY: flock on a file descriptor we own; released when `lock` is dropped.
    assert_eq!(unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) }, 0);
    let modules = prefix.join("node_modules");
    let installed = |spec: &&str| {
        let (name, version) = spec.rsplit_once('@').expect("name@version");
        std::fs::read_to_string(modules.join(name).join("package.json"))
            .ok()
            .and_then(|t| serde_json::from_str::<Value>(&t).ok())
            .is_some_and(|p| p["version"] == version)
    };
    if !specs.iter().all(installed) {
        let out = std::process::Command::new("npm")
            .args(["install", "--no-save", "--no-audit", "--no-fund", "--prefix"])
            .arg(&prefix)
            .args(specs)
            .envs(env.iter().copied())
            .output()
            .unwrap_or_else(|e| {
                panic!("this test needs npm to install {specs:?} ({e}); install it (Debian: apt-get install npm)")
            });
        assert!(
            out.status.success(),
            "npm install {specs:?} failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    drop(lock);
    modules
}
