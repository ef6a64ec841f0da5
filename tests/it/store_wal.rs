//! The store's write-ahead log under a real run: kept short whatever an execution writes.

use crate::support::*;
use serde_json::json;

/// The store's write-ahead log stays short while a long execution logs: its frames are copied
/// back as they are recorded (`crates/store/src/wal.rs`), not left to grow to SQLite's 1000
/// (4 MB here before: 4,000 lines of 200 characters) for the next run's open to read.
#[test]
fn a_long_execution_keeps_the_store_log_short() {
    let env = Env::new();
    let wf = env.write_workflow(
        "logs.json",
        &json!({"id": "logs", "nodes": [{"id": "c", "type": "code", "code":
            "import time\nfor i in range(4000):\n    log('line %d ' % i + 'x' * 200)\n    if i % 100 == 0:\n        time.sleep(0.01)\nreturn {'ok': 1}"}]}),
    );
    assert_success(&env.run(&wf, "{}", &[]), "4,000 log lines");
    let wal = std::fs::metadata(env.db_path().with_extension("db-wal"))
        .map(|m| m.len())
        .unwrap_or(0);
    assert!(wal < 2 << 20, "the log grew to {wal} bytes");
    let lines = stdout(&env.cmd(["logs", &env.only_execution_id()]));
    assert_eq!(lines.lines().count(), 4000);
}
