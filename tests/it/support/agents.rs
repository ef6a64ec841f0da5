//! What the `agent` node tests share: the stand-in CLIs of `tests/standins/` on `PATH`, a `HOME`
//! of the test's own (where the stand-ins keep their sessions), and workflow builders.

use super::{Env, output, repo_root};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::process::Output;

/// One test's world: a common [`Env`] with a `home/` directory.
pub struct World {
    pub env: Env,
}

crate::support::derefs_to_env!(World);

impl Default for World {
    fn default() -> Self {
        Self::new()
    }
}

/// `tests/standins/`: the stand-in `claude`, `codex` and `gemini`.
pub fn standins() -> PathBuf {
    repo_root().join("tests/standins")
}

/// This process's `PATH` with the stand-ins first.
pub fn path_with_standins() -> String {
    format!(
        "{}:{}",
        standins().display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

/// This process's `PATH` without the stand-ins' directory (and nothing that has a `claude`,
/// `codex` or `gemini`), for runs whose CLI must be missing.
pub fn path_without_agents() -> String {
    std::env::var("PATH")
        .unwrap_or_default()
        .split(':')
        .filter(|d| {
            !["claude", "codex", "gemini"]
                .iter()
                .any(|c| std::path::Path::new(d).join(c).exists())
        })
        .collect::<Vec<_>>()
        .join(":")
}

/// An `agent` node; `fields` are added to (or replace) `id`, `type`, `agent` and a prompt.
/// Codex nodes get `--skip-git-repo-check` (test directories are not Git repositories, and
/// Codex, like its stand-in, refuses to run outside one without it).
pub fn agent(id: &str, agent: &str, fields: Value) -> Value {
    let mut node = json!({"id": id, "type": "agent", "agent": agent,
                          "prompt": format!("task of {id}")});
    if agent == "codex" {
        node["args"] = json!(["--skip-git-repo-check"]);
    }
    for (k, v) in fields.as_object().expect("fields are an object") {
        node[k] = v.clone();
    }
    node
}

/// A workflow of `nodes` with a 40 s execution timeout.
pub fn workflow(nodes: Vec<Value>) -> Value {
    json!({"id": "agents", "timeout_ms": 40000, "nodes": nodes})
}

impl World {
    pub fn new() -> World {
        let w = World { env: Env::new() };
        std::fs::create_dir(w.home()).expect("home dir");
        w
    }

    /// The `HOME` every command of this world gets.
    pub fn home(&self) -> PathBuf {
        self.path("home")
    }

    /// `flowrun run` of `wf` (written to `name`) with the stand-ins on `PATH`.
    pub fn run_wf(&self, name: &str, wf: &Value, extra: &[&str]) -> Output {
        self.run_path(name, wf, &path_with_standins(), extra)
    }

    /// `flowrun run` of `wf` with `path` as `PATH`.
    pub fn run_path(&self, name: &str, wf: &Value, path: &str, extra: &[&str]) -> Output {
        let file = self.write_workflow(name, wf);
        let mut cmd = self.flowrun();
        cmd.arg("run")
            .arg(&file)
            .arg("--input")
            .arg("{}")
            .args(extra)
            .env("PATH", path)
            .env("HOME", self.home());
        output(&mut cmd)
    }

    /// `flowrun ARGS…` with `path` as `PATH`.
    pub fn cmd_path(&self, args: &[&str], path: &str) -> Output {
        let mut cmd = self.flowrun();
        cmd.args(args).env("PATH", path).env("HOME", self.home());
        output(&mut cmd)
    }

    /// Where a stand-in appends what it was given (`STANDIN_RECORD`).
    pub fn record_file(&self, name: &str) -> String {
        self.path(name).display().to_string()
    }

    /// What the stand-ins recorded in `name`: `{argv, stdin, cwd}` per run.
    pub fn records(&self, name: &str) -> Vec<Value> {
        std::fs::read_to_string(self.path(name))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("a JSON record"))
            .collect()
    }

    /// The `log` events of one node of an execution: `(level, line)`.
    pub fn node_logs(&self, execution: &str, node: &str) -> Vec<(String, String)> {
        self.events(execution)
            .into_iter()
            .filter(|e| e.kind == "log" && e.node_id.as_deref() == Some(node))
            .map(|e| {
                (
                    e.data["level"].as_str().unwrap_or("").to_string(),
                    e.data["line"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect()
    }
}
