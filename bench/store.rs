//! The SQLite store with its real schema (`flowrun::store::Store`, WAL, `synchronous=NORMAL`).
//!
//! - `writes::*`: node rows per second through `Store::apply`, each node a `Write::NodeFinished`
//!   plus the `Write::Event` of its `node_end`. `batched_100` writes one execution's 100 nodes in
//!   one `apply` (one transaction, what the recorder does under a log flood or at the end of a
//!   batch); `recorder_pattern_100` does what the recorder does for short nodes: one `apply` at
//!   `node_start` (`NodeStarted` + event) and one at `node_end` (`NodeFinished` + event), two
//!   transactions per node. Target: ≥ 50,000 node rows/s.
//! - `history::*`: `Store::history` listing the newest 50 of 100,000 executions (populated in
//!   one transaction of inserts), with and without a filter. Target: ≤ 20 ms.
//!
//! Run: `cargo bench --bench store` (or `bench/run.sh`).

use divan::counter::ItemsCount;
use flowrun_events::{ExecStatus, NodeStatus};
use flowrun_store::{HistoryFilter, NewExecution, NodeRow, Store, Write};
use serde_json::{Value, json};
use std::cell::RefCell;

const NODES: usize = 100;
const HISTORY_ROWS: usize = 100_000;

/// Where the history database lives; removed when `main` returns.
static DIR: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();

fn main() {
    let dir = scratch_dir();
    DIR.set(dir.path().to_path_buf()).expect("set once");
    divan::main();
    drop(dir);
}

fn scratch_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("flowrun-bench-store")
        .tempdir()
        .expect("a temp dir")
}

fn definition() -> Value {
    json!({ "id": "w3", "name": "bench", "nodes": [ { "id": "trigger", "type": "trigger" } ] })
}

fn new_execution(store: &mut Store, id: &str, started_at: i64, definition: &Value) {
    store
        .insert_execution(&NewExecution {
            id,
            workflow_id: "w3",
            workflow_name: "Benchmark: trigger → set → code → set",
            snapshot_hash: "1fab7dbdad9791b7bfe986cb6bffdd3ebe419844b027e77d71b8ece717bfff5a",
            definition,
            source_file: Some("bench/w3.json"),
            mode: "test",
            status: ExecStatus::Running,
            trigger: &json!({ "name": "bench", "n": 10 }),
            started_at,
            parent_id: None,
            relation: None,
            sub_link: None,
            runner_pid: std::process::id() as i32,
            runner_start_time: Some(12345),
            cwd: None,
        })
        .expect("insert execution");
}

fn node_id(i: usize) -> String {
    format!("node_{i:03}")
}

fn node_start(i: usize, seq: u64, ts: i64) -> [Write; 2] {
    [
        Write::NodeStarted {
            node_id: node_id(i),
            part: None,
            position: i as i64,
            attempt: 1,
            started_at: ts,
        },
        Write::Event {
            seq,
            kind: "node_start".into(),
            node_id: Some(node_id(i)),
            ts,
            data: json!({ "event": "node_start", "node": node_id(i), "attempt": 1, "ts": ts })
                .to_string(),
        },
    ]
}

fn node_end(i: usize, seq: u64, ts: i64) -> [Write; 2] {
    let input = json!({ "name": "bench", "n": 10 });
    let output = json!({ "squares": [0, 1, 4, 9, 16, 25, 36, 49, 64, 81], "total": 285 });
    let data = json!({
        "event": "node_end", "node": node_id(i), "status": "success", "attempt": 1,
        "duration_ms": 0.31, "ts": ts, "input": input, "output": output,
    })
    .to_string();
    [
        Write::NodeFinished(Box::new(NodeRow {
            node_id: node_id(i),
            part: None,
            reason: None,
            position: i as i64,
            status: NodeStatus::Success,
            attempt: 1,
            started_at: Some(ts - 1),
            finished_at: Some(ts),
            duration_ms: Some(0.31),
            input: Some(input),
            output: Some(output),
            error: None,
            from_execution: None,
        })),
        Write::Event {
            seq,
            kind: "node_end".into(),
            node_id: Some(node_id(i)),
            ts,
            data,
        },
    ]
}

mod writes {
    use super::*;

    /// A store and a counter of executions, shared by the input generator and the benchmark.
    struct Fixture {
        _dir: tempfile::TempDir,
        store: Store,
        next: usize,
        definition: Value,
    }

    impl Fixture {
        fn new() -> RefCell<Fixture> {
            let dir = scratch_dir();
            let store = Store::open(&dir.path().join("bench.db")).expect("open store");
            RefCell::new(Fixture {
                _dir: dir,
                store,
                next: 0,
                definition: definition(),
            })
        }

        /// A fresh execution row (not timed): node rows go to a new execution each iteration.
        fn execution(&mut self) -> String {
            self.next += 1;
            let id = format!("{:016x}", self.next);
            let def = self.definition.clone();
            new_execution(
                &mut self.store,
                &id,
                1_795_624_612_717 + self.next as i64,
                &def,
            );
            id
        }
    }

    /// 100 node rows (and their 100 `node_end` events) in one `apply`.
    #[divan::bench(sample_count = 30, sample_size = 5)]
    fn batched_100(b: divan::Bencher) {
        let fx = Fixture::new();
        let writes: Vec<Write> = (0..NODES)
            .flat_map(|i| node_end(i, i as u64 + 1, 1_795_624_612_717))
            .collect();
        b.counter(ItemsCount::new(NODES))
            .with_inputs(|| fx.borrow_mut().execution())
            .bench_local_values(|id| {
                fx.borrow_mut()
                    .store
                    .apply(&id, divan::black_box(&writes))
                    .expect("apply")
            });
    }

    /// 100 nodes as the recorder writes short nodes: one `apply` at each node's start and one
    /// at its end (two transactions per node row).
    #[divan::bench(sample_count = 30, sample_size = 2)]
    fn recorder_pattern_100(b: divan::Bencher) {
        let fx = Fixture::new();
        let batches: Vec<[Write; 2]> = (0..NODES)
            .flat_map(|i| {
                let ts = 1_795_624_612_717 + i as i64;
                [
                    node_start(i, 2 * i as u64 + 1, ts),
                    node_end(i, 2 * i as u64 + 2, ts + 1),
                ]
            })
            .collect();
        b.counter(ItemsCount::new(NODES))
            .with_inputs(|| fx.borrow_mut().execution())
            .bench_local_values(|id| {
                let mut fx = fx.borrow_mut();
                for batch in &batches {
                    fx.store.apply(&id, divan::black_box(batch)).expect("apply");
                }
            });
    }
}

mod history {
    use super::*;
    use std::path::{Path, PathBuf};
    use std::sync::OnceLock;

    /// The populated database: built once, in the directory `main` owns and removes.
    static DB: OnceLock<PathBuf> = OnceLock::new();

    fn db() -> &'static Path {
        DB.get_or_init(|| {
            let path = super::DIR
                .get()
                .expect("main made the scratch directory")
                .join("history.db");
            populate(&path);
            path
        })
    }

    /// `HISTORY_ROWS` finished executions of 20 workflows, one every second, 1 in 20 failed,
    /// inserted in one transaction.
    fn populate(path: &Path) {
        let mut store = Store::open(path).expect("open store");
        let def = definition();
        new_execution(&mut store, "0000000000000000", 1_700_000_000_000, &def);
        let conn = store.connection();
        conn.execute_batch("BEGIN IMMEDIATE").expect("begin");
        {
            let mut stmt = conn
                .prepare(
                    "INSERT INTO executions (id, workflow_id, workflow_name, snapshot_hash, source_file, mode, status,
                                             trigger, output, error, started_at, finished_at, duration_ms, exit,
                                             runner_pid, runner_start_time, pid, pgid, process_start_time, log_bytes)
                     SELECT ?1, ?2, ?3, hash, 'workflows/bench.json', 'test', ?4, ?5, ?6, ?7, ?8, ?8 + 15, 15.2,
                            'exit code 0', 4242, 1, 4243, 4243, 2, 0 FROM snapshots LIMIT 1",
                )
                .expect("prepare");
            let error = json!({ "type": "ValueError", "message": "bad value", "node": "compute",
                                "traceback": "Traceback (most recent call last):\n  File \"<node compute>\", line 2\nValueError: bad value" })
            .to_string();
            let output = json!({ "greeting": "hello bench", "total": 285 }).to_string();
            let trigger = json!({ "name": "bench", "n": 10 }).to_string();
            for i in 1..HISTORY_ROWS {
                let failed = i % 20 == 0;
                let workflow = format!("wf{:02}", i % 20);
                stmt.execute(rusqlite::params![
                    format!("{:016x}", (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)),
                    workflow,
                    format!("Workflow {workflow}"),
                    if failed { "error" } else { "success" },
                    trigger,
                    (!failed).then_some(output.as_str()),
                    failed.then_some(error.as_str()),
                    1_700_000_000_000 + i as i64 * 1000,
                ])
                .expect("insert");
            }
        }
        conn.execute_batch("COMMIT").expect("commit");
        let n: i64 = conn
            .query_row("SELECT count(*) FROM executions", [], |r| r.get(0))
            .expect("count");
        assert_eq!(n as usize, HISTORY_ROWS);
    }

    fn list(b: divan::Bencher, filter: HistoryFilter) {
        let store = Store::open(db()).expect("open store");
        b.bench_local(|| {
            let rows = store.history(divan::black_box(&filter)).expect("history");
            assert_eq!(rows.len(), 50);
            rows
        });
    }

    /// `flowrun history`: the newest 50 of 100k.
    #[divan::bench(sample_count = 50)]
    fn newest_50_of_100k(b: divan::Bencher) {
        list(
            b,
            HistoryFilter {
                limit: 50,
                ..HistoryFilter::default()
            },
        );
    }

    /// `flowrun history --workflow wf07`.
    #[divan::bench(sample_count = 50)]
    fn newest_50_of_one_workflow(b: divan::Bencher) {
        list(
            b,
            HistoryFilter {
                workflow: Some("wf07".into()),
                limit: 50,
                ..HistoryFilter::default()
            },
        );
    }

    /// `flowrun history --status error` (5,000 of the 100k).
    #[divan::bench(sample_count = 50)]
    fn newest_50_failed(b: divan::Bencher) {
        list(
            b,
            HistoryFilter {
                status: Some(ExecStatus::Error),
                limit: 50,
                ..HistoryFilter::default()
            },
        );
    }
}
