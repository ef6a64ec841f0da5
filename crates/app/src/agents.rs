//! The coding-agent CLIs that `agent` nodes run: finding each one before a run starts (a missing
//! CLI fails the run before anything is spawned, like an unbound connection) and asking the
//! installed ones for their version (`doctor`).

use flowrun_codegen::Plan;
use flowrun_codegen::model::{AGENT_CLIS, NodeKind, Workflow, agent_cli};
use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// An agent CLI that nodes need, and where it was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NeededAgent {
    /// `claude_code`, `codex`, `gemini`.
    pub agent: String,
    /// What the CLI is called (`Claude Code`).
    pub name: String,
    /// The executable the nodes name (their `command`, else the CLI's default).
    pub command: String,
    /// The npm package that installs the CLI.
    pub npm_package: String,
    /// The nodes that run it.
    pub nodes: Vec<String>,
    /// The executable found; `None` when it is not there.
    pub path: Option<PathBuf>,
}

/// The `PATH` an execution's child gets, on which its agent CLIs are looked for: `given` (an
/// `--env` or a request's value), else flowrun's own, else the usual default of a shell.
pub fn search_path(given: Option<&str>) -> OsString {
    given
        .map(OsString::from)
        .or_else(|| std::env::var_os("PATH"))
        .unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into())
}

/// The executable `command` names: a name looked up on `path`, or a path (relative to `cwd`)
/// to an executable file. `None` when there is none.
pub fn find(command: &str, path: Option<&OsStr>, cwd: &Path) -> Option<PathBuf> {
    which::which_in(command, path, cwd).ok()
}

/// Every agent CLI that a node of `workflow` which will run (not pinned, not in `pins`) needs,
/// one entry per executable, each looked for on `path` (relative paths from `cwd`).
pub fn needed(
    workflow: &Workflow,
    pinned: impl Fn(&str) -> bool,
    path: Option<&OsStr>,
    cwd: &Path,
) -> Vec<NeededAgent> {
    let mut needed: BTreeMap<(String, String), NeededAgent> = BTreeMap::new();
    for node in &workflow.nodes {
        let NodeKind::Agent(a) = &node.kind else {
            continue;
        };
        if node.pinned.is_some() || pinned(&node.id) {
            continue;
        }
        let Some(cli) = agent_cli(&a.agent) else {
            continue;
        };
        let command = a.executable();
        needed
            .entry((a.agent.clone(), command.to_string()))
            .or_insert_with(|| NeededAgent {
                agent: cli.agent.to_string(),
                name: cli.name.to_string(),
                command: command.to_string(),
                npm_package: cli.npm_package.to_string(),
                nodes: Vec::new(),
                path: find(command, path, cwd),
            })
            .nodes
            .push(node.id.clone());
    }
    needed.into_values().collect()
}

/// [`needed`], only those that are not found.
pub fn missing(
    plan: &Plan,
    pinned: impl Fn(&str) -> bool,
    path: Option<&OsStr>,
    cwd: &Path,
) -> Vec<NeededAgent> {
    needed(&plan.workflow, pinned, path, cwd)
        .into_iter()
        .filter(|a| a.path.is_none())
        .collect()
}

/// What `doctor` reports of one agent CLI: where its default executable is on this process's
/// `PATH`, and the version it prints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Installed {
    pub agent: &'static str,
    pub name: &'static str,
    pub command: &'static str,
    pub npm_package: &'static str,
    pub path: Option<PathBuf>,
    /// The first line `--version` printed, or why there is none.
    pub version: Result<String, String>,
}

/// Each agent CLI, found on this process's `PATH` or not, with its version.
pub fn installed() -> Vec<Installed> {
    let path: Option<OsString> = std::env::var_os("PATH");
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
    AGENT_CLIS
        .iter()
        .map(|cli| {
            let path = find(cli.command, path.as_deref(), &cwd);
            let version = match &path {
                Some(p) => version(p, Duration::from_secs(20)),
                None => Err("not found on PATH".into()),
            };
            Installed {
                agent: cli.agent,
                name: cli.name,
                command: cli.command,
                npm_package: cli.npm_package,
                path,
                version,
            }
        })
        .collect()
}

/// The first non-empty line `exe --version` prints, within `timeout` (a CLI that hangs is
/// killed and reported).
pub fn version(exe: &Path, timeout: Duration) -> Result<String, String> {
    use flowrun_executor::helper::{HelperError, run_bounded};
    let done = run_bounded(
        Command::new(exe).arg("--version").stdin(Stdio::null()),
        timeout,
        64 * 1024,
    )
    .map_err(|e| match e {
        HelperError::Spawn(e) => format!("cannot run it: {e}"),
        HelperError::TimedOut(_) => {
            format!("`--version` did not answer within {} s", timeout.as_secs())
        }
        e => format!("`--version`: {e}"),
    })?;
    let (status, out) = (done.status, String::from_utf8_lossy(&done.stdout));
    let err = done.stderr_tail;
    let first = |t: &str| {
        t.lines()
            .map(str::trim)
            .find(|l| !l.is_empty())
            .map(str::to_string)
    };
    match (status.success(), first(&out)) {
        (true, Some(line)) => Ok(line),
        (true, None) => Err("`--version` printed nothing".into()),
        (false, _) => Err(format!(
            "`--version` failed ({status}){}",
            first(&err).map(|l| format!(": {l}")).unwrap_or_default()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_names_on_the_path_and_relative_paths_from_cwd() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        let exe = bin.join("fake-agent");
        std::fs::write(&exe, "#!/bin/sh\necho '1.2.3 (Fake)'\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
        let path = std::env::join_paths([&bin]).unwrap();
        assert_eq!(
            find("fake-agent", Some(&path), dir.path()).as_deref(),
            Some(exe.as_path())
        );
        assert!(find("fake-agent", Some(OsStr::new("/nonexistent")), dir.path()).is_none());
        assert!(find("./bin/fake-agent", None, dir.path()).is_some());
        assert!(find("./bin/nope", None, dir.path()).is_none());
        assert_eq!(
            version(&exe, Duration::from_secs(10)).as_deref(),
            Ok("1.2.3 (Fake)")
        );
        let slow = bin.join("slow-agent");
        std::fs::write(&slow, "#!/bin/sh\nexec sleep 30\n").unwrap();
        std::fs::set_permissions(&slow, std::fs::Permissions::from_mode(0o755)).unwrap();
        let e = version(&slow, Duration::from_millis(300)).unwrap_err();
        assert!(e.contains("did not answer"), "{e}");
    }
}
