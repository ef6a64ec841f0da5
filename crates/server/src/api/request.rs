//! The body of every request that starts an execution (`POST …/executions`, `…/rerun`,
//! `…/resume`) and what it changes about the run: per-request `env`, `secrets`, `cwd`,
//! `max_parallel`, `max_cost_usd` and `break_before`.

use super::error::ApiError;
use flowrun_app::runner::RunOptions;
use flowrun_codegen::Workflow;
use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// A start, re-run or resume request.
#[derive(Deserialize, Default, Debug)]
#[serde(deny_unknown_fields)]
pub struct RunBody {
    /// The whole definition (an editor's unsaved state).
    #[serde(default)]
    pub workflow: Option<Value>,
    /// Trigger data (default `{}`, or the earlier execution's for a re-run); the workflow's
    /// input schema applies.
    #[serde(default)]
    pub trigger: Option<Value>,
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    #[serde(default)]
    pub mode: Option<String>,
    /// How many independent nodes run at once (default: the workflow's `max_parallel`).
    #[serde(default)]
    pub max_parallel: Option<u32>,
    /// Variables the child gets, for this execution only (after the server's).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Values of connections, by the variable that binds them: the child gets them, every
    /// form of them is redacted, and they are stored nowhere.
    #[serde(default)]
    pub secrets: BTreeMap<String, String>,
    /// The directory the nodes run in (absolute, an existing directory).
    #[serde(default)]
    pub cwd: Option<String>,
    /// Hook for the cost limit (not supported by this server yet).
    #[serde(default)]
    pub max_cost_usd: Option<f64>,
    /// Hook for breakpoints (not supported by this server yet).
    #[serde(default)]
    pub break_before: Option<Vec<String>>,
}

/// A variable name a request may set: a shell-style name, not one of flowrun's own.
fn check_var(kind: &str, name: &str) -> Result<(), ApiError> {
    let ok = !name.is_empty()
        && name.len() <= 256
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !ok {
        return Err(ApiError::bad_request(format!(
            "{kind}: '{name}' is not a variable name (letters, digits and _, not starting with a digit)"
        )));
    }
    if name.starts_with("FLOWRUN_") {
        return Err(ApiError::bad_request(format!(
            "{kind}: '{name}': variables starting with FLOWRUN_ are flowrun's own"
        )));
    }
    Ok(())
}

fn check_value(kind: &str, name: &str, value: &str) -> Result<(), ApiError> {
    if value.contains('\0') {
        return Err(ApiError::bad_request(format!(
            "{kind}: the value of '{name}' contains a NUL character, which no variable can hold"
        )));
    }
    Ok(())
}

impl RunBody {
    /// The run's options: the server's, with this request's fields. `workflow` is the
    /// definition that will run (its connections are what `secrets` may bind).
    pub fn options(&self, base: &RunOptions, workflow: &Workflow) -> Result<RunOptions, ApiError> {
        let mut options = base.clone();
        if self.timeout_ms == Some(0) {
            return Err(ApiError::bad_request(
                "timeout_ms must be at least 1 (0 would end the execution at once)",
            ));
        }
        if let Some(t) = self.timeout_ms {
            options.timeout_ms = Some(t);
        }
        if let Some(m) = &self.mode {
            if m != "test" {
                return Err(ApiError::bad_request(format!(
                    "mode '{m}' is not supported; flowrun runs test executions (mode \"test\")"
                )));
            }
        }
        if self.max_parallel == Some(0) {
            return Err(ApiError::bad_request("max_parallel must be at least 1"));
        }
        if self.max_parallel.is_some() {
            options.max_parallel = self.max_parallel;
        }
        if let Some(v) = self.max_cost_usd {
            if !(v.is_finite() && v >= 0.0) {
                return Err(ApiError::bad_request(
                    "max_cost_usd: a number of US dollars ≥ 0",
                ));
            }
            options.max_cost_usd = Some(v);
        }
        if let Some(nodes) = &self.break_before {
            if let Some(n) = nodes.iter().find(|n| workflow.node(n).is_none()) {
                return Err(ApiError::bad_request(format!(
                    "break_before: workflow '{}' has no node '{n}'",
                    workflow.id
                )));
            }
            options.break_before = nodes.clone();
        }
        if let Some(cwd) = &self.cwd {
            let p = PathBuf::from(cwd);
            if !p.is_absolute() || !p.is_dir() {
                return Err(ApiError::bad_request(format!(
                    "cwd: '{cwd}' is not an absolute path of an existing directory"
                )));
            }
            options.cwd = Some(p);
        }
        for (k, v) in &self.env {
            check_var("env", k)?;
            check_value("env", k, v)?;
            options.env.push((k.clone(), v.clone()));
        }
        let bindable: Vec<&str> = workflow
            .connections
            .values()
            .map(|c| c.env.as_str())
            .collect();
        for (k, v) in &self.secrets {
            check_var("secrets", k)?;
            check_value("secrets", k, v)?;
            if !bindable.contains(&k.as_str()) {
                let known = if bindable.is_empty() {
                    "the workflow declares no connections".to_string()
                } else {
                    format!("its connections are bound by {}", bindable.join(", "))
                };
                return Err(ApiError::bad_request(format!(
                    "secrets: '{k}' binds no connection of workflow '{}' ({known}); pass other variables in env",
                    workflow.id
                )));
            }
            if v.is_empty() {
                return Err(ApiError::bad_request(format!(
                    "secrets: the value of '{k}' is empty"
                )));
            }
            // Bound like `--env` (a later value wins); the runner redacts every bound value.
            options.env.push((k.clone(), v.clone()));
        }
        Ok(options)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn workflow() -> Workflow {
        flowrun_codegen::source::from_value(
            serde_json::json!({"id": "w", "connections": {"c": {"env": "MY_KEY"}},
                "nodes": [{"id": "t", "type": "template", "template": "x"}]}),
            "<t>",
        )
        .unwrap()
        .workflow
    }

    fn body(v: Value) -> RunBody {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn fields_become_options() {
        let o = body(
            serde_json::json!({"env": {"A": "1"}, "secrets": {"MY_KEY": "k"}, "max_parallel": 2}),
        )
        .options(&RunOptions::default(), &workflow())
        .unwrap();
        assert_eq!(
            o.env,
            [("A".into(), "1".into()), ("MY_KEY".into(), "k".into())]
        );
        assert_eq!(o.max_parallel, Some(2));
    }

    #[test]
    fn what_is_refused() {
        let w = workflow();
        let base = RunOptions::default();
        for (v, needle) in [
            (
                serde_json::json!({"secrets": {"OTHER": "x"}}),
                "binds no connection",
            ),
            (
                serde_json::json!({"env": {"1A": "x"}}),
                "not a variable name",
            ),
            (
                serde_json::json!({"env": {"FLOWRUN_X": "x"}}),
                "flowrun's own",
            ),
            (serde_json::json!({"env": {"A": "x\u{0}"}}), "NUL"),
            (serde_json::json!({"cwd": "relative"}), "absolute"),
            (serde_json::json!({"max_cost_usd": -1.0}), "≥ 0"),
            (serde_json::json!({"timeout_ms": 0}), "at least 1"),
            (
                serde_json::json!({"break_before": ["nope"]}),
                "no node 'nope'",
            ),
        ] {
            let e = body(v.clone()).options(&base, &w).unwrap_err();
            let msg = e.body["message"].as_str().unwrap().to_string();
            assert!(msg.contains(needle), "{v}: {msg}");
        }
    }
}
