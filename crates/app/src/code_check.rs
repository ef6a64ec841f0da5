//! Compiling a workflow's code nodes without running it, for `flowrun validate` and
//! `POST /api/validate`.
//!
//! A run already refuses to start a workflow with a code node that does not compile (the
//! runtime's start check: "its source does not compile, so no node ran"); validation only read
//! the definition, so it called such a workflow valid. Only the interpreter that will run the
//! code can say whether it compiles (a `match` statement is fine in 3.10, an error in 3.9), so
//! this runs the workflow's own generated script with `--check`: the same start check, the same
//! compile (sub-workflows' code nodes included), every problem listed, no node run. Compiling
//! defines each node's function and runs nothing of its body; the script reads nothing, and gets
//! no environment, so no secret.
//!
//! Without an interpreter nothing is compiled, and the caller says so ([`CodeCheck::Skipped`]):
//! a check that cannot be made is never reported as passed.

use crate::python;
use flowrun_codegen::Diagnostic;
use flowrun_codegen::Plan;
use flowrun_codegen::RenderOptions;
use flowrun_codegen::source::Source;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use serde::Deserialize;
use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How long compiling may take: a few milliseconds a node, seconds for a megabyte of source.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// The most of the checker's answer read: each problem carries a traceback of a few lines.
const MAX_ANSWER: usize = 4 << 20;

/// What compiling a workflow's code nodes found.
#[derive(Debug)]
pub enum CodeCheck {
    /// Compiled with the interpreter a run would use: the sources that do not compile, each
    /// at its node's `code` field (in the sub-workflow's own file for one of a child's).
    /// Empty also when there is no code node to compile, and then no interpreter was started.
    Done(Vec<Diagnostic>),
    /// Not compiled, and why (no interpreter, or it failed or took too long).
    Skipped(String),
}

#[derive(Deserialize)]
struct Answer {
    problems: Vec<Problem>,
}

#[derive(Deserialize)]
struct Problem {
    error: ErrorPart,
    #[serde(rename = "where")]
    place: Where,
}

#[derive(Deserialize)]
struct ErrorPart {
    node: String,
    message: String,
}

#[derive(Deserialize)]
struct Where {
    error: String,
    line: Option<u64>,
    column: Option<u64>,
    /// For a sub-workflow's code node: its file and id.
    file: Option<String>,
    node: Option<String>,
}

/// Does the plan have a code node a run would compile (not pinned), here or in a sub-workflow?
fn has_code(plan: &Plan) -> bool {
    plan.workflow
        .nodes
        .iter()
        .any(|n| n.kind.type_name() == "code" && n.pinned.is_none())
        || plan.sub_code.iter().any(|c| !c.is_empty())
}

/// Compiles the code nodes of `plan` (made from `source`) with the interpreter a run would use
/// (`python`: an explicit one, else as `flowrun run` finds it).
pub fn check(source: &Source, plan: &Plan, python: Option<&Path>) -> CodeCheck {
    if !has_code(plan) {
        return CodeCheck::Done(Vec::new());
    }
    let interpreter = match python::discover(python, &crate::paths::cache_dir()) {
        Ok(i) => i,
        Err(e) => return CodeCheck::Skipped(format!("no Python to compile them with: {e}")),
    };
    let script = flowrun_codegen::render(plan, &RenderOptions::default());
    let answer = match ask(&interpreter.executable, script.text.as_bytes(), TIMEOUT) {
        Ok(a) => a,
        Err(why) => return CodeCheck::Skipped(why),
    };
    CodeCheck::Done(
        answer
            .problems
            .into_iter()
            .map(|p| diagnostic(source, p))
            .collect(),
    )
}

/// "'(' was never closed (line 1, column 5 of its code)".
fn what(place: &Where) -> String {
    match (place.line, place.column) {
        (Some(l), Some(c)) if c > 0 => {
            format!("{} (line {l}, column {c} of its code)", place.error)
        }
        (Some(l), _) => format!("{} (line {l} of its code)", place.error),
        _ => place.error.clone(),
    }
}

fn diagnostic(source: &Source, p: Problem) -> Diagnostic {
    let (Some(file), Some(node)) = (&p.place.file, &p.place.node) else {
        return source.node_diagnostic(
            &p.error.node,
            "code",
            format!("does not compile: {}", what(&p.place)),
        );
    };
    // A sub-workflow's: where it is written, saying which node of this workflow runs it.
    let message = format!(
        "does not compile: {}; run by node '{}' of {}",
        what(&p.place),
        p.error.node,
        source.file
    );
    match flowrun_codegen::source::load_file(Path::new(file)) {
        Ok(child) => child.node_diagnostic(node, "code", message),
        // Changed since the plan read it: said at this workflow's node, as a run would say it.
        Err(_) => source.node_diagnostic(&p.error.node, "workflow", p.error.message),
    }
}

/// Runs `python -I -S - --check` with `script` on its stdin and reads its answer, killing it
/// (and its process group) when it takes longer than `limit` or says too much.
fn ask(python: &Path, script: &[u8], limit: Duration) -> Result<Answer, String> {
    let mut cmd = Command::new(python);
    cmd.args(["-I", "-S", "-", "--check"])
        .env_clear()
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .process_group(0);
    let mut child = flowrun_executor::process::spawn_helper(&mut cmd)
        .map_err(|e| format!("cannot start {}: {e}", python.display()))?;
    let mut stdin = child.stdin.take().expect("stdin is piped");
    let script = script.to_vec();
    // Written beside the read: the script is larger than a pipe holds.
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&script);
    });
    let mut stdout = child.stdout.take().expect("stdout is piped");
    let deadline = Instant::now() + limit;
    let mut out = Vec::new();
    let ended = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let ms = u16::try_from(left.as_millis()).unwrap_or(u16::MAX);
        if left.is_zero() {
            break Err(format!("compiling took longer than {} s", limit.as_secs()));
        }
        let mut fds = [PollFd::new(stdout.as_fd(), PollFlags::POLLIN)];
        if poll(&mut fds, PollTimeout::from(ms)).is_err() {
            continue; // EINTR
        }
        let mut buf = [0u8; 64 * 1024];
        match stdout.read(&mut buf) {
            Ok(0) => break Ok(()),
            Ok(n) if out.len() + n > MAX_ANSWER => break Err("its answer was too long".into()),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => break Err(format!("cannot read its answer: {e}")),
        }
    };
    if ended.is_err() {
        // Not reaped yet, so its pid and group are still its own.
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        let _ = nix::sys::signal::killpg(pid, nix::sys::signal::Signal::SIGKILL);
    }
    let status = child.wait();
    let _ = writer.join();
    ended?;
    let status = status.map_err(|e| format!("cannot wait for it: {e}"))?;
    if !status.success() {
        return Err(format!("the interpreter ended with {status}"));
    }
    serde_json::from_slice(&out).map_err(|e| format!("its answer was not understood: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_source_position_is_said_as_far_as_it_is_known() {
        let place = |line, column| Where {
            error: "'(' was never closed".into(),
            line,
            column,
            file: None,
            node: None,
        };
        assert_eq!(
            what(&place(Some(2), Some(5))),
            "'(' was never closed (line 2, column 5 of its code)"
        );
        assert_eq!(
            what(&place(Some(2), None)),
            "'(' was never closed (line 2 of its code)"
        );
        assert_eq!(what(&place(None, None)), "'(' was never closed");
    }
}
