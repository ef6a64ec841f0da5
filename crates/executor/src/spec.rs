//! What an execution needs to run ([`RunSpec`]) and why the runner may stop it ([`StopReason`]).

use crate::process::Launch;
use crate::redact::Redactor;
use std::collections::{HashMap, HashSet};
use std::time::Duration;

/// Everything needed to run one execution.
#[derive(Debug, Clone)]
pub struct RunSpec {
    pub execution_id: String,
    pub workflow_id: String,
    pub workflow_name: String,
    pub mode: String,
    /// Node ids in execution order.
    pub nodes: Vec<String>,
    /// Per-node deadlines, enforced from the node's `node_start`.
    pub node_timeouts: HashMap<String, Duration>,
    /// Extra time past its deadline before the runner kills a node that times its own call
    /// (HTTP, LLM, command), so the node's own timeout fires first and is an ordinary,
    /// retryable node error.
    pub node_grace: HashMap<String, Duration>,
    /// Nodes with `on_error: continue`: their failure does not fail the execution.
    pub continue_on_error: HashSet<String>,
    /// The nodes each node waits for: its deps and the conditions guarding it.
    pub upstream: HashMap<String, Vec<String>>,
    /// Nodes with `for_each` or `repeat` (their `timeout_ms` applies per item or iteration).
    pub looping: HashSet<String>,
    /// How many nodes may run at once.
    pub max_parallel: usize,
    /// Nodes the runtime pauses before (`--break-before`): a `paused` result is believed only
    /// when one of these or a pause request explains it.
    pub break_before: Vec<String>,
    /// Nodes a workflow test mocked (they end `mocked`, see `flowrun_codegen::mock`).
    pub mocked: HashSet<String>,
    /// What may end without running, and how.
    pub not_run: NotRun,
    pub launch: Launch,
    /// Trigger data (JSON text), written to stdin; shared, not copied, per execution.
    pub trigger: bytes::Bytes,
    pub nonce: String,
    pub timeout: Duration,
    /// Between SIGTERM and SIGKILL.
    pub kill_grace: Duration,
    /// Budget for stored log lines: each costs its bytes plus [`LOG_LINE_OVERHEAD`]; once it is
    /// used up, further lines are counted, not kept.
    pub max_log_bytes: u64,
    /// Longest log line kept.
    pub max_line_bytes: usize,
    /// Secrets to cut out of everything the child prints.
    pub redactor: Redactor,
}

/// What the plan lets end without running (attempt 0 of a `node_end`): only what it names ends
/// `pinned` or `reused`, and a node is `skipped` only where a condition or its upstream can
/// explain it. Code in the workflow's process can print any event; without these, a node could
/// write a made-up output for another node that then never runs, and a resume would reuse it.
#[derive(Debug, Clone, Default)]
pub struct NotRun {
    /// Nodes pinned by the definition (`pinned:`) or the caller (`--pin`).
    pub pinned: HashSet<String>,
    /// Nodes whose output a resume reuses.
    pub reused: HashSet<String>,
    /// The items of `for_each` nodes a resume reuses, by index.
    pub reused_items: HashMap<String, HashSet<u32>>,
    /// Nodes behind a condition: skipped on the branch it does not take.
    pub guarded: HashSet<String>,
}

impl RunSpec {
    /// Longest protocol line (and result) accepted. The runtime caps each payload field (input, output, error) at 1 MiB of JSON, so a real
    /// event stays well under this; a forged one past it is dropped, and memory stays bounded.
    pub const MAX_FRAME: usize = 4 << 20;
}

/// Why the runner stops an execution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// Someone asked: `flowrun stop`, the HTTP API, a server shutting down.
    Cancel,
    /// Ctrl-C on the terminal running `flowrun run`.
    Interrupt,
    /// SIGTERM to the `flowrun run` process.
    Terminate,
    /// SIGHUP to the `flowrun run` process: its terminal closed (an ssh session dropped, a
    /// terminal window shut).
    Hangup,
    /// The server running it is shutting down (SIGTERM or Ctrl-C to `flowrun serve`).
    Shutdown,
    /// The parent execution of a sub-workflow stopped, failed or timed out: its runtime ends
    /// the sub-workflow's runner (`flowrun __sub`), which stops the child.
    Parent,
    /// Not a stop: `flowrun pause` or the API asked that no new node start. Running nodes
    /// finish, and the runtime ends the execution `paused`. A later stop still stops it.
    Pause,
}

impl StopReason {
    /// How the execution's error says it was stopped.
    pub fn describe(self) -> &'static str {
        match self {
            StopReason::Cancel => "stopped by request",
            StopReason::Interrupt => "stopped by Ctrl-C",
            StopReason::Terminate => "stopped: flowrun received SIGTERM",
            StopReason::Hangup => "stopped: flowrun's terminal closed (SIGHUP)",
            StopReason::Shutdown => "stopped: the server shut down",
            StopReason::Parent => "stopped with its parent execution",
            StopReason::Pause => "paused by request",
        }
    }

    /// The signal to flowrun that this stop came from, if it came from one.
    pub fn signal(self) -> Option<&'static str> {
        match self {
            StopReason::Interrupt => Some("SIGINT"),
            StopReason::Terminate => Some("SIGTERM"),
            StopReason::Hangup => Some("SIGHUP"),
            _ => None,
        }
    }
}

/// How long a child killed by a stop's signal waits for that stop to reach its runner (see
/// [`StopReason::in_flight`]).
const STOP_IN_FLIGHT: Duration = Duration::from_millis(100);

impl StopReason {
    /// A stop (not a pause) that was asked for on `stop`, or is asked within
    /// [`STOP_IN_FLIGHT`]: for a child that died by a stop's signal while that stop was still
    /// on its way here (one stop signals a whole tree).
    pub(crate) async fn in_flight(
        stop: &mut tokio::sync::watch::Receiver<Option<StopReason>>,
    ) -> Option<StopReason> {
        let asked = async {
            loop {
                if let Some(reason) = *stop.borrow_and_update() {
                    if reason != StopReason::Pause {
                        return Some(reason);
                    }
                }
                if stop.changed().await.is_err() {
                    return None;
                }
            }
        };
        tokio::time::timeout(STOP_IN_FLIGHT, asked)
            .await
            .ok()
            .flatten()
    }
}
