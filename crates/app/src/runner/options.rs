//! What a caller can vary about a run, and the defaults.

use flowrun_codegen::{Mock, Pin};
use flowrun_events::Relation;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// Default whole-execution timeout when neither the workflow nor the caller sets one.
pub const DEFAULT_TIMEOUT_MS: u64 = 60_000;

/// How much later than a node's `timeout_ms` the runner kills a node that times its own call
/// (HTTP, LLM, command), so the call's own timeout fires first and can be retried.
pub const OWN_CALL_SLACK_MS: u64 = 500;

/// What a caller can vary about a run.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub python: Option<PathBuf>,
    pub timeout_ms: Option<u64>,
    pub kill_grace_ms: u64,
    pub max_log_bytes: u64,
    pub max_memory_mb: Option<u64>,
    /// `--env K=V` and `--env-file` values, in order.
    pub env: Vec<(String, String)>,
    pub inherit_env: bool,
    pub pins: BTreeMap<String, Pin>,
    /// Items of `for_each` nodes reused from an earlier execution (resume): node → index → pin.
    pub reused_items: BTreeMap<String, BTreeMap<usize, Pin>>,
    /// How many independent nodes run at once (default: the workflow's `max_parallel`, else 1).
    pub max_parallel: Option<u32>,
    /// Workflow tests: node outcomes fixed instead of running the nodes (see
    /// `flowrun_codegen::mock`); a mocked node needs no connection.
    pub mocks: BTreeMap<String, Mock>,
    /// Nodes that make network requests and are neither mocked nor pinned fail at once (and
    /// need no connection).
    pub offline: bool,
    /// Pause before these nodes (`--break-before`): the execution ends `paused` there.
    pub break_before: Vec<String>,
    /// Overrides the workflow's `max_cost_usd`.
    pub max_cost_usd: Option<f64>,
    /// `max_cost_usd` is the share of its parent's limit a sub-workflow runs with (see
    /// `flowrun_codegen::RenderOptions`).
    pub cost_limit_is_share: bool,
    pub mode: String,
    /// Re-run or resume of this execution.
    pub parent: Option<(String, Relation)>,
    pub cwd: Option<PathBuf>,
    /// Install missing `requirements` into a managed virtual environment instead of failing.
    pub install_deps: bool,
    /// A child execution of a `workflow` node: the node that called it (`parent` is the
    /// parent execution, relation `sub`).
    pub sub: Option<crate::subflow::SubCall>,
    /// What the parent execution of a sub-workflow redacts (`(VAR, value)`): a secret of the
    /// parent's that reaches the child (in its inputs, or through a node's own lookup) is
    /// redacted in the child's record too (`subflow::add_env` passes them down).
    pub parent_secrets: Vec<(String, String)>,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            python: None,
            timeout_ms: None,
            kill_grace_ms: 2000,
            max_log_bytes: 10 << 20,
            max_memory_mb: None,
            env: Vec::new(),
            inherit_env: false,
            pins: BTreeMap::new(),
            reused_items: BTreeMap::new(),
            max_parallel: None,
            mocks: BTreeMap::new(),
            offline: false,
            break_before: Vec::new(),
            max_cost_usd: None,
            cost_limit_is_share: false,
            mode: "test".into(),
            parent: None,
            parent_secrets: Vec::new(),
            cwd: None,
            install_deps: false,
            sub: None,
        }
    }
}
