//! `flowrun doctor`: is everything in place to run workflows, and can it be fixed?
//!
//! For each workflow file it checks what `run` would check before spawning: the file is valid,
//! its requirements are installed, and its connections are bound (with the same `--env` and
//! `--env-file` values `run` would get), so `doctor` and `run` agree. Exit code: 2 when a file
//! is invalid (as `validate`), else 3 when something is missing, else 0.

use super::text::{clean, clean_line};
use super::{Exit, exit};
use flowrun_app::paths;
use flowrun_app::python;
use flowrun_app::requirements;
use flowrun_app::runner::{self, RunError, RunOptions};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};

pub fn doctor(
    files: &[PathBuf],
    fix: bool,
    as_json: bool,
    python_flag: Option<&Path>,
    env: Vec<(String, String)>,
    db: Option<&Path>,
) -> Result<i32, Exit> {
    let bind_with = RunOptions {
        env,
        ..RunOptions::default()
    };
    let mut invalid = false;
    let cache = paths::cache_dir();
    let db_path = paths::database(db);
    let db_size = std::fs::metadata(&db_path).map(|m| m.len()).ok();
    let mut problems = 0;
    let mut report = json!({
        "cache_dir": cache,
        "database": { "path": db_path, "bytes": db_size },
    });
    // Always asks the interpreter again (and refreshes the cache): doctor shows what is true now.
    let interp = python::rediscover(python_flag, &cache);
    match &interp {
        Ok(i) => {
            report["python"] = json!({
                "executable": i.executable, "version": i.version_string(), "implementation": i.implementation,
                "found_by": i.found_by, "candidate": i.candidate,
            });
        }
        Err(e) => {
            problems += 1;
            report["python"] = json!({ "error": e.to_string() });
        }
    }
    let mut workflows = Vec::new();
    for file in files {
        let mut w = json!({ "file": file });
        match super::workflow::load_plan(file) {
            Err(e) => {
                problems += 1;
                invalid = true;
                w["error"] = Value::String(e.message);
            }
            Ok((_, plan)) => {
                if let Err(list) = runner::bind_connections(&plan, &bind_with) {
                    problems += 1;
                    w["unbound"] = list
                        .iter()
                        .map(|u| json!({ "connection": u.connection, "env": u.env, "nodes": u.nodes }))
                        .collect();
                    // Worded as `run` words it, with the flags that fix it.
                    w["unbound_message"] = json!(exit::run_error(RunError::Unbound(list)).message);
                }
                let reqs = plan.requirements();
                w["requirements"] = json!(reqs);
                if let Ok(i) = &interp {
                    match requirements::resolve(&cache, i, &reqs) {
                        Ok(using) => {
                            w["status"] = json!("ok");
                            w["interpreter"] = json!(using.executable);
                        }
                        Err(Err(e)) => {
                            problems += 1;
                            w["error"] = json!(e);
                        }
                        Err(Ok(missing)) if fix => match requirements::install(&cache, i, &reqs) {
                            Ok(venv) => {
                                w["status"] = json!("installed");
                                w["interpreter"] = json!(venv.executable);
                            }
                            Err(e) => {
                                problems += 1;
                                w["status"] = json!("install failed");
                                w["error"] = json!(e);
                                w["missing"] = json!(missing);
                            }
                        },
                        Err(Ok(missing)) => {
                            problems += 1;
                            w["status"] = json!("missing");
                            w["missing"] = json!(missing);
                        }
                    }
                } else {
                    problems += 1;
                    w["status"] = json!("not checked");
                }
            }
        }
        workflows.push(w);
    }
    report["workflows"] = json!(workflows);
    let (agents, agent_lines) = agent_clis();
    report["agents"] = agents;
    if as_json {
        out!("{}", super::text::json_pretty(&report));
    } else {
        match &interp {
            Ok(i) => {
                let via = if i.candidate != i.executable {
                    format!(" via {}", i.candidate.display())
                } else {
                    String::new()
                };
                out!(
                    "python    ✓ {} ({} {}), found by {}{via}",
                    i.executable.display(),
                    i.implementation,
                    i.version_string(),
                    i.found_by
                );
            }
            Err(e) => out!("python    ✗ {e}"),
        }
        out!("cache     {}", cache.display());
        out!(
            "database  {} ({})",
            db_path.display(),
            db_size
                .map(|b| format!("{:.1} KiB", b as f64 / 1024.0))
                .unwrap_or_else(|| "not created yet".into())
        );
        for w in &workflows {
            let file = clean_line(w["file"].as_str().unwrap_or(""));
            if let Some(e) = w["error"].as_str() {
                out!("workflow  ✗ {file}: {}", clean(e));
                continue;
            }
            if let Some(m) = w["unbound_message"].as_str() {
                out!("workflow  ✗ {file}: {}", clean(m));
            }
            let reqs: Vec<&str> = w["requirements"]
                .as_array()
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            match w["status"].as_str() {
                Some("not checked") => out!(
                    "workflow  ✗ {file}: not checked, there is no working Python interpreter (see above)"
                ),
                // A workflow with an unbound connection got its ✗ above; its requirements are
                // still worth knowing.
                Some("ok") | Some("installed") if reqs.is_empty() => out!(
                    "workflow  {} {file}: no requirements (runs isolated, without site-packages)",
                    mark(w)
                ),
                Some("ok") | Some("installed") => out!(
                    "workflow  {} {file}: {} satisfied by {}",
                    mark(w),
                    reqs.join(", "),
                    w["interpreter"].as_str().unwrap_or("")
                ),
                _ => {
                    let missing: Vec<String> = w["missing"]
                        .as_array()
                        .map(|a| {
                            a.iter()
                                .map(|m| {
                                    format!(
                                        "{} ({})",
                                        m["requirement"].as_str().unwrap_or(""),
                                        m["reason"].as_str().unwrap_or("")
                                    )
                                })
                                .collect()
                        })
                        .unwrap_or_default();
                    out!(
                        "workflow  ✗ {file}: missing {}; fix with: flowrun doctor --fix {file}",
                        missing.join(", ")
                    );
                }
            }
        }
        agent_lines.iter().for_each(|l| out!("{l}"));
    }
    Ok(if invalid {
        exit::USAGE
    } else if problems > 0 {
        exit::ENVIRONMENT
    } else {
        0
    })
}

/// ✓ for a workflow whose requirements are met, unless a connection is unbound.
fn mark(w: &Value) -> &'static str {
    if w.get("unbound").is_some() {
        "✗"
    } else {
        "✓"
    }
}

/// The agent CLIs that `agent` nodes run, as found on PATH: JSON entries (`agent`, `command`,
/// `path`, `version` or `error`, `npm_package`) and one line each. A CLI that is not installed
/// is not a problem here; a run that needs it says so before it starts.
fn agent_clis() -> (Value, Vec<String>) {
    let mut entries = Vec::new();
    let mut lines = Vec::new();
    for a in flowrun_app::agents::installed() {
        let mut e = json!({ "agent": a.agent, "name": a.name, "command": a.command,
                            "path": a.path, "npm_package": a.npm_package });
        let line = match (&a.path, &a.version) {
            (Some(p), Ok(v)) => {
                e["version"] = json!(v);
                format!("agent     ✓ {}: {} ({}), {v}", a.agent, p.display(), a.name)
            }
            (Some(p), Err(err)) => {
                e["error"] = json!(err);
                format!("agent     ✗ {}: {}: {err}", a.agent, p.display())
            }
            (None, _) => format!(
                "agent     - {}: `{}` not found on PATH (install {}: npm install -g {})",
                a.agent, a.command, a.name, a.npm_package
            ),
        };
        entries.push(e);
        lines.push(line);
    }
    (Value::Array(entries), lines)
}
