//! Reading what was recorded: [`Env`]'s queries of the SQLite file (executions, nodes, items,
//! iterations, events, snapshots) and of `history`/`show --json`, and the row types they return.

use super::*;

impl Env {
    /// The database, opened read-only.
    pub fn db(&self) -> Connection {
        let conn = Connection::open_with_flags(
            self.db_path(),
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .expect("the database exists");
        conn.busy_timeout(Duration::from_secs(10)).unwrap();
        conn
    }

    /// The database opened for writing, to age rows, give them chosen ids or make them stale.
    /// Never hold it while `flowrun` runs.
    pub fn db_rw(&self) -> Connection {
        let conn = Connection::open(self.db_path()).expect("open the database");
        conn.busy_timeout(Duration::from_secs(10)).unwrap();
        conn
    }

    /// The bytes of the database and its WAL, shared-memory and journal files, concatenated.
    pub fn db_bytes(&self) -> Vec<u8> {
        let mut all = Vec::new();
        let mut found = 0;
        for suffix in ["", "-wal", "-shm", "-journal"] {
            let mut p = self.db_path().into_os_string();
            p.push(suffix);
            if let Ok(b) = std::fs::read(&p) {
                found += 1;
                all.extend(b);
            }
        }
        assert!(
            found >= 1,
            "no database file at {}",
            self.db_path().display()
        );
        all
    }

    /// Number of rows in `executions` (0 when there is no database file at all).
    pub fn execution_count(&self) -> i64 {
        if !self.db_path().exists() {
            return 0;
        }
        self.db()
            .query_row("SELECT COUNT(*) FROM executions", [], |r| r.get(0))
            .unwrap()
    }

    /// Ids of all executions, oldest first, or `None` while the database or its schema does not
    /// exist yet (for polling while another process creates it).
    pub fn try_execution_ids(&self) -> Option<Vec<String>> {
        if !self.db_path().exists() {
            return None;
        }
        let db =
            Connection::open_with_flags(self.db_path(), OpenFlags::SQLITE_OPEN_READ_ONLY).ok()?;
        db.busy_timeout(Duration::from_secs(10)).ok()?;
        let mut stmt = db
            .prepare("SELECT id FROM executions ORDER BY started_at, rowid")
            .ok()?;
        let ids = stmt.query_map([], |r| r.get(0)).ok()?;
        ids.collect::<Result<_, _>>().ok()
    }

    /// Ids of all executions, oldest first.
    pub fn execution_ids(&self) -> Vec<String> {
        self.executions_column("id")
    }

    /// How each execution started (`warm` or `cold`), oldest first.
    pub fn execution_starts(&self) -> Vec<String> {
        self.executions_column("start")
    }

    /// One text column of every execution, oldest first.
    fn executions_column(&self, column: &str) -> Vec<String> {
        let db = self.db();
        let mut stmt = db
            .prepare(&format!(
                "SELECT {column} FROM executions ORDER BY started_at, rowid"
            ))
            .unwrap();
        stmt.query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    /// The id of the one execution in the database; panics when there is not exactly one.
    pub fn only_execution_id(&self) -> String {
        let ids = self.execution_ids();
        assert_eq!(
            ids.len(),
            1,
            "expected exactly one execution, found {ids:?}"
        );
        ids.into_iter().next().unwrap()
    }

    /// The row of an execution; panics when there is none.
    pub fn execution(&self, id: &str) -> ExecRow {
        self.try_execution(id)
            .unwrap_or_else(|| panic!("no execution {id}"))
    }

    /// The row of an execution, if there is one.
    pub fn try_execution(&self, id: &str) -> Option<ExecRow> {
        self.db()
            .query_row(
                "SELECT id, workflow_id, workflow_name, status, trigger, output, error, snapshot_hash,
                        started_at, finished_at, duration_ms, exit, parent_id, relation,
                        pid, pgid, process_start_time, runner_pid, runner_start_time,
                        log_bytes, log_bytes_cut
                 FROM executions WHERE id = ?1",
                [id],
                |r| {
                    Ok(ExecRow {
                        id: r.get(0)?,
                        workflow_id: r.get(1)?,
                        workflow_name: r.get(2)?,
                        status: r.get(3)?,
                        trigger: json(r.get(4)?).unwrap_or(Value::Null),
                        output: json(r.get(5)?),
                        error: json(r.get(6)?),
                        snapshot_hash: r.get(7)?,
                        started_at: r.get(8)?,
                        finished_at: r.get(9)?,
                        duration_ms: r.get(10)?,
                        exit: r.get(11)?,
                        parent_id: r.get(12)?,
                        relation: r.get(13)?,
                        pid: r.get(14)?,
                        pgid: r.get(15)?,
                        process_start_time: r.get(16)?,
                        runner_pid: r.get(17)?,
                        runner_start_time: r.get(18)?,
                        log_bytes: r.get(19)?,
                        log_bytes_cut: r.get(20)?,
                    })
                },
            )
            .optional()
            .unwrap()
    }

    /// The definition stored in `snapshots` under `hash`, as text.
    pub fn snapshot_text(&self, hash: &str) -> Option<String> {
        self.db()
            .query_row(
                "SELECT definition FROM snapshots WHERE hash = ?1",
                [hash],
                |r| r.get(0),
            )
            .optional()
            .unwrap()
    }

    /// Node rows of an execution (each node's own row, not its items or iterations), in plan
    /// order.
    pub fn nodes(&self, execution_id: &str) -> Vec<NodeRow> {
        self.node_rows(execution_id, "part = -1")
    }

    /// The item rows (`for_each`) of a node, in index order: `(index, row)`.
    pub fn items(&self, execution_id: &str, node: &str) -> Vec<(i64, NodeRow)> {
        self.parts(execution_id, node, "item")
    }

    /// The iteration rows (`repeat`) of a node, in order: `(iteration, row)`.
    pub fn iterations(&self, execution_id: &str, node: &str) -> Vec<(i64, NodeRow)> {
        self.parts(execution_id, node, "iteration")
    }

    fn parts(&self, execution_id: &str, node: &str, kind: &str) -> Vec<(i64, NodeRow)> {
        let db = self.db();
        let mut stmt = db
            .prepare(
                "SELECT part FROM node_executions
                 WHERE execution_id = ?1 AND node_id = ?2 AND part_kind = ?3 ORDER BY part",
            )
            .unwrap();
        let numbers: Vec<i64> = stmt
            .query_map([execution_id, node, kind], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        numbers
            .into_iter()
            .map(|n| {
                let row = self
                    .node_rows(
                        execution_id,
                        &format!("node_id = '{node}' AND part_kind = '{kind}' AND part = {n}"),
                    )
                    .pop()
                    .unwrap();
                (n, row)
            })
            .collect()
    }

    fn node_rows(&self, execution_id: &str, filter: &str) -> Vec<NodeRow> {
        let db = self.db();
        let mut stmt = db
            .prepare(&format!(
                "SELECT node_id, position, status, attempt, started_at, finished_at, duration_ms,
                        input, output, error, from_execution, reason
                 FROM node_executions WHERE execution_id = ?1 AND {filter} ORDER BY position, part"
            ))
            .unwrap();
        stmt.query_map([execution_id], |r| {
            Ok(NodeRow {
                node_id: r.get(0)?,
                position: r.get(1)?,
                status: r.get(2)?,
                attempt: r.get(3)?,
                started_at: r.get(4)?,
                finished_at: r.get(5)?,
                duration_ms: r.get(6)?,
                input: json(r.get(7)?),
                output: json(r.get(8)?),
                error: json(r.get(9)?),
                from_execution: r.get(10)?,
                reason: r.get(11)?,
            })
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
    }

    /// One node's row; panics when the node has none.
    pub fn node(&self, execution_id: &str, node_id: &str) -> NodeRow {
        let rows = self.nodes(execution_id);
        rows.iter()
            .find(|n| n.node_id == node_id)
            .cloned()
            .unwrap_or_else(|| panic!("no row for node '{node_id}' of {execution_id}: {rows:?}"))
    }

    /// One node's row, if the node has one.
    pub fn try_node(&self, execution_id: &str, node_id: &str) -> Option<NodeRow> {
        self.nodes(execution_id)
            .into_iter()
            .find(|n| n.node_id == node_id)
    }

    /// Stored events of an execution, by seq.
    pub fn events(&self, execution_id: &str) -> Vec<EventRow> {
        let db = self.db();
        let mut stmt = db
            .prepare(
                "SELECT seq, kind, node_id, ts, data FROM events WHERE execution_id = ?1 ORDER BY seq",
            )
            .unwrap();
        stmt.query_map([execution_id], |r| {
            let data: String = r.get(4)?;
            Ok(EventRow {
                seq: r.get(0)?,
                kind: r.get(1)?,
                node_id: r.get(2)?,
                ts: r.get(3)?,
                data: serde_json::from_str(&data).expect("event data is JSON"),
            })
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
    }

    /// `flowrun history --json ARGS...`, parsed (it must succeed and print an array).
    pub fn history_json(&self, args: &[&str]) -> Vec<Value> {
        let mut all = vec!["history", "--json"];
        all.extend_from_slice(args);
        let out = self.cmd(&all);
        assert_success(&out, &format!("history --json {args:?}"));
        serde_json::from_slice::<Vec<Value>>(&out.stdout)
            .unwrap_or_else(|e| panic!("history --json prints an array ({e})\n{}", describe(&out)))
    }

    /// `flowrun show ID --json`, parsed.
    pub fn show_json(&self, id: &str) -> Value {
        let out = self.cmd(["show", id, "--json"]);
        assert_success(&out, "show --json");
        serde_json::from_slice(&out.stdout).expect("show --json prints JSON")
    }

    /// The executions of a `flowrun test --json` document (`out`), in case order, as `show
    /// --json` has them (each case's first attempt).
    pub fn suite_executions(&self, out: &std::process::Output) -> Vec<Value> {
        let doc: Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("--json is JSON ({e}): {}", describe(out)));
        doc["files"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|f| f["cases"].as_array().unwrap().clone())
            .map(|c| self.show_json(c["attempts"][0]["execution_id"].as_str().unwrap()))
            .collect()
    }
}

/// Stored JSON, as deep as flowrun stores it (deeper than serde_json's default limit of 128).
fn json(text: Option<String>) -> Option<Value> {
    text.map(|t| {
        flowrun_events::json::parse_bounded(t.as_bytes(), flowrun_events::json::MAX_DEPTH)
            .unwrap_or_else(|e| panic!("stored JSON {t:?}: {e}"))
    })
}

/// A row of `executions`.
#[derive(Debug, Clone)]
pub struct ExecRow {
    pub id: String,
    pub workflow_id: String,
    pub workflow_name: String,
    pub status: String,
    pub trigger: Value,
    pub output: Option<Value>,
    pub error: Option<Value>,
    pub snapshot_hash: String,
    pub started_at: i64,
    pub finished_at: Option<i64>,
    pub duration_ms: Option<f64>,
    pub exit: Option<String>,
    pub parent_id: Option<String>,
    pub relation: Option<String>,
    pub pid: Option<i32>,
    pub pgid: Option<i32>,
    pub process_start_time: Option<i64>,
    pub runner_pid: Option<i32>,
    pub runner_start_time: Option<i64>,
    pub log_bytes: i64,
    pub log_bytes_cut: i64,
}

impl ExecRow {
    /// The error's message; panics when the execution has no error.
    pub fn error_message(&self) -> &str {
        self.error
            .as_ref()
            .and_then(|e| e["message"].as_str())
            .unwrap_or_else(|| panic!("execution has no error: {self:?}"))
    }
}

/// A row of `node_executions`.
#[derive(Debug, Clone)]
pub struct NodeRow {
    pub node_id: String,
    pub position: i64,
    pub status: String,
    pub attempt: i64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    pub duration_ms: Option<f64>,
    pub input: Option<Value>,
    pub output: Option<Value>,
    pub error: Option<Value>,
    pub from_execution: Option<String>,
    /// Why it ended as it did, when that needs saying (skipped, not retried).
    pub reason: Option<String>,
}

impl NodeRow {
    /// The output; panics when the node has none.
    pub fn output(&self) -> &Value {
        self.output
            .as_ref()
            .unwrap_or_else(|| panic!("node has no output: {self:?}"))
    }

    /// The error's type; panics when the node has no error.
    pub fn error_type(&self) -> &str {
        self.error
            .as_ref()
            .and_then(|e| e["type"].as_str())
            .unwrap_or_else(|| panic!("node has no error: {self:?}"))
    }

    /// The error's message; panics when the node has no error.
    pub fn error_message(&self) -> &str {
        self.error
            .as_ref()
            .and_then(|e| e["message"].as_str())
            .unwrap_or_else(|| panic!("node has no error: {self:?}"))
    }
}

/// A row of `events`.
#[derive(Debug, Clone)]
pub struct EventRow {
    pub seq: i64,
    pub kind: String,
    pub node_id: Option<String>,
    pub ts: i64,
    pub data: Value,
}
