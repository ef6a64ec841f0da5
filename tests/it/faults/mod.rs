//! The fault suite: real `flowrun` processes running real Python that misbehaves — sleeps
//! forever, ignores SIGTERM, forks grandchildren and daemons, floods stdout, eats memory — plus
//! stop requests from other processes, a SIGKILLed runner, stale rows with reused pids and
//! concurrent runners on one database.
//!
//! Every test runs in its own temp dir (database, script cache and an empty `TMPDIR`) and ends by
//! proving that no process of the execution's process group is left: `kill(-pgid, 0)` must fail
//! with ESRCH, and every grandchild pid the workflow wrote down must be gone.

mod bounded;
mod runner;
mod stop;
mod timeouts;

use crate::support::faults::*;
use serde_json::json;
use std::time::{SystemTime, UNIX_EPOCH};

pub(super) fn now_secs() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// A node that records its pid, starts a plain sleeping grandchild and sleeps forever.
pub(super) const SLEEP_FOREVER: &str = r#"
note(os.getpid())
grandchild('sleeper')
while True:
    time.sleep(1)
"#;

pub(super) fn stop_workflow(fx: &Fx, body: &str) -> std::path::PathBuf {
    fx.workflow(
        "stoppable",
        &json!({ "id": "stoppable", "nodes": [
            { "id": "first", "type": "code", "code": "return 'first'" },
            code_node("sleeper", body),
            { "id": "never", "type": "code", "code": "return 'never'" },
        ]}),
    )
}
