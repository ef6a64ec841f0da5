//! Where `flowrun test --junit FILE` writes its report, and how: whole or not at all, through
//! links, into what is not a file in place, and from the start a report that says the run did
//! not finish (so that a run killed before its end leaves that).

use super::Exit;
use super::exit::USAGE;
use flowrun_app::testing::report;
use std::path::Path;

/// Writes the `--junit` report (its directories were made by [`writable`], before anything
/// ran); see [`write_report`].
pub(super) fn write_junit(f: &Path, xml: &str) -> Result<(), Exit> {
    write_report(f, xml).map_err(|e| Exit::new(USAGE, format!("--junit {}: {e}", f.display())))
}

/// Where a report named `f` is written: through the links it may be, to what they lead to
/// (which need not exist yet).
fn report_target(f: &Path) -> std::path::PathBuf {
    match std::fs::metadata(f) {
        // Something that is not a file (`/dev/stdout`: a link to a pipe, which has no path) is
        // written as named, the kernel following the links.
        Ok(m) if !m.is_file() => return f.to_path_buf(),
        Ok(_) => return std::fs::canonicalize(f).unwrap_or_else(|_| f.to_path_buf()),
        Err(_) => {}
    }
    // Not there yet: a new file, or a link to one.
    let mut at = f.to_path_buf();
    // As the kernel follows them, up to a bound: a loop of links is then written as named.
    for _ in 0..40 {
        match std::fs::read_link(&at) {
            Ok(to) => at = at.parent().unwrap_or(Path::new("")).join(to),
            Err(_) => return at,
        }
    }
    f.to_path_buf()
}

/// Whether the report goes into something that is not a file (`/dev/stdout`, a pipe, a FIFO):
/// written there once, in place, at the end — never replaced, and given nothing ahead.
fn not_a_file(target: &Path) -> bool {
    std::fs::metadata(target).is_ok_and(|m| !m.is_file())
}

/// Writes a report whole or not at all where it can (a new file renamed over the old one: a
/// kill halfway leaves the file as it was), else in place: into what is not a file, and where
/// no file can be made beside it (a directory that is not writable, a file bind-mounted alone
/// into a container).
fn write_report(f: &Path, text: &str) -> std::io::Result<()> {
    let target = report_target(f);
    if !not_a_file(&target) && flowrun_app::files::write_atomically(&target, text).is_ok() {
        return Ok(());
    }
    std::fs::write(&target, text)
}

/// Whether the JUnit report can be written where asked (its directories made): checked before
/// anything runs, by writing there a report that says the run did not finish, which the real
/// one replaces — so a run killed before its end (SIGKILL, a CI job's hard timeout) leaves a
/// report that says so, not an empty file or an earlier run's results. What is not a file is
/// only opened, as the report will be.
pub(super) fn writable(f: &Path) -> Result<(), Exit> {
    if let Some(dir) = f.parent().filter(|d| !d.as_os_str().is_empty()) {
        let _ = std::fs::create_dir_all(dir);
    }
    let target = report_target(f);
    let checked = if not_a_file(&target) {
        std::fs::OpenOptions::new()
            .write(true)
            .open(&target)
            .map(drop)
    } else {
        write_report(f, &report::junit_unfinished())
    };
    checked.map_err(|e| {
        Exit::new(
            USAGE,
            format!(
                "--junit {}: cannot be written: {e}; nothing was run",
                f.display()
            ),
        )
    })
}
