//! Exit codes and the CLI's wording of errors: the only place that knows them. The layers below
//! return typed errors whose messages name no flag; here they get the flags that fix them.
//!
//! Exit codes of `run` (and `rerun`, `resume`): 0 success, 1 the workflow failed, 2 invalid
//! workflow, input or usage, 3 environment problem, 75 paused (`EX_TEMPFAIL`: not done, and not
//! failed — `flowrun resume` continues it), 124 timeout, 130 stopped.

use flowrun_app::again::AgainError;
use flowrun_app::runner::{RunError, pip_install_command};
use flowrun_events::ExecStatus;
use flowrun_store::StoreError;

pub const USAGE: i32 = 2;
pub const ENVIRONMENT: i32 = 3;
/// A paused execution is neither a success (a CI job must not pass on it) nor a failure.
pub const PAUSED: i32 = 75;

/// An error that ends the command with a specific exit code.
#[derive(Debug)]
pub struct Exit {
    pub code: i32,
    pub message: String,
}

impl Exit {
    pub fn new(code: i32, message: impl Into<String>) -> Exit {
        Exit {
            code,
            message: message.into(),
        }
    }
}

impl From<StoreError> for Exit {
    fn from(e: StoreError) -> Self {
        let code = match e {
            StoreError::NotFound(_) | StoreError::Ambiguous { .. } => USAGE,
            _ => ENVIRONMENT,
        };
        Exit::new(code, e.to_string())
    }
}

/// Why a run could not start, with the flags that fix it.
pub fn run_error(e: RunError) -> Exit {
    let message = e.to_string();
    match e {
        RunError::Invalid(_) | RunError::Input(_) => Exit::new(USAGE, message),
        RunError::UnknownPin { .. } => Exit::new(USAGE, format!("--pin: {message}")),
        RunError::UnknownBreakpoint { .. } => {
            Exit::new(USAGE, format!("--break-before: {message}"))
        }
        RunError::Unbound(list) => Exit::new(
            ENVIRONMENT,
            format!(
                "{message}\nset {} in the environment, with --env KEY (its value from your environment) or --env KEY=VALUE, or in an --env-file",
                if list.len() == 1 { "it" } else { "them" }
            ),
        ),
        RunError::MissingPackages(list) => Exit::new(
            ENVIRONMENT,
            format!(
                "{message}\ninstall {} into a managed environment with `flowrun doctor --fix FILE` or `flowrun run --install-deps FILE`,\nor into your interpreter with: {}",
                if list.len() == 1 { "it" } else { "them" },
                pip_install_command(&list)
            ),
        ),
        RunError::MissingAgents(_) => Exit::new(
            ENVIRONMENT,
            format!(
                "{message}\nflowrun looks on the PATH the workflow runs with: yours, or the one given with --env PATH=…"
            ),
        ),
        RunError::Python(_) | RunError::Environment(_) | RunError::Store(_) => {
            Exit::new(ENVIRONMENT, message)
        }
    }
}

/// Why a re-run or resume could not start.
pub fn again_error(e: AgainError) -> Exit {
    match e {
        AgainError::Store(s) => s.into(),
        AgainError::MissingSnapshot(_) => Exit::new(ENVIRONMENT, e.to_string()),
        AgainError::TriggerTruncated { .. } => {
            Exit::new(USAGE, format!("{e} (--input JSON or --input-file F)"))
        }
        AgainError::NotFinished { .. }
        | AgainError::Invalid(_)
        | AgainError::OtherWorkflow { .. }
        | AgainError::TestCase(_) => Exit::new(USAGE, e.to_string()),
    }
}

/// The exit code of `run`, `rerun` and `resume` for how the execution ended.
pub fn status_code(status: ExecStatus) -> i32 {
    match status {
        ExecStatus::Success => 0,
        ExecStatus::Timeout => 124,
        ExecStatus::Cancelled | ExecStatus::Interrupted => 130,
        ExecStatus::Paused => PAUSED,
        ExecStatus::Error | ExecStatus::Queued | ExecStatus::Running => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flowrun_app::runner::Unbound;

    #[test]
    fn statuses_map_to_documented_codes() {
        assert_eq!(status_code(ExecStatus::Success), 0);
        assert_eq!(status_code(ExecStatus::Error), 1);
        assert_eq!(status_code(ExecStatus::Timeout), 124);
        assert_eq!(status_code(ExecStatus::Cancelled), 130);
        assert_eq!(status_code(ExecStatus::Interrupted), 130);
        assert_eq!(status_code(ExecStatus::Paused), 75);
    }

    #[test]
    fn run_errors_name_the_flag_that_fixes_them() {
        let e = run_error(RunError::Unbound(vec![Unbound {
            connection: "groq".into(),
            env: "GROQ_API_KEY".into(),
            nodes: vec!["ask".into()],
        }]));
        assert_eq!(e.code, ENVIRONMENT);
        assert!(e.message.contains("GROQ_API_KEY") && e.message.contains("--env"));
        let e = run_error(RunError::UnknownPin {
            node: "nope".into(),
            nodes: vec!["a".into(), "b".into()],
        });
        assert_eq!(e.code, USAGE);
        assert!(
            e.message
                .starts_with("--pin: the workflow has no node 'nope'")
                && e.message.contains("a, b")
        );
        let e = run_error(RunError::MissingAgents(vec![
            flowrun_app::agents::NeededAgent {
                agent: "claude_code".into(),
                name: "Claude Code".into(),
                command: "claude".into(),
                npm_package: "@anthropic-ai/claude-code".into(),
                nodes: vec!["plan".into(), "build".into()],
                path: None,
            },
        ]));
        assert_eq!(e.code, ENVIRONMENT);
        assert!(
            e.message
                .contains("claude (Claude Code, for nodes 'plan', 'build')")
                && e.message
                    .contains("npm install -g @anthropic-ai/claude-code")
                && e.message.contains("--env PATH="),
            "{}",
            e.message
        );
        let e = again_error(AgainError::Store(StoreError::NotFound("x".into())));
        assert_eq!(e.code, USAGE);
    }
}
