//! Runs the Python runtime's own unittest suite (runtime/tests) with the real interpreter, so
//! `cargo nextest run` covers the runtime too.

use std::process::Command;

#[test]
fn runtime_unittest_suite_passes() {
    let root = env!("CARGO_MANIFEST_DIR");
    let out = Command::new("python3")
        .args(["-m", "unittest", "discover", "-s", "runtime/tests"])
        .current_dir(root)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .expect("python3 runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "runtime tests failed:\n{stderr}");
    assert!(
        stderr.contains("OK"),
        "unexpected unittest output:\n{stderr}"
    );
}
