//! A build mark that `flowrun` and `flowrun-shepherd` both embed (`FLOWRUN_SHEPHERD_MARK`):
//! `flowrun` execs the `flowrun-shepherd` next to it only if that file carries the same id, so a
//! shepherd left from an older build (`cargo run` and `cargo build --bin flowrun` rebuild only
//! `flowrun`; an install that replaced only `flowrun`) is never used: `flowrun` runs itself as
//! the shepherd instead. The id changes whenever the shepherd's code may have.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=src/shepherd.rs");
    println!("cargo:rerun-if-changed=crates/executor/src");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    // The whole mark, so that its form is written once for both binaries.
    println!("cargo:rustc-env=FLOWRUN_SHEPHERD_MARK=flowrun-shepherd-build:{now:x};");
}
