//! Versioned schema migrations. Append new migrations; never edit a released one.

use rusqlite_migration::{M, Migrations};

pub(crate) fn migrations() -> Migrations<'static> {
    Migrations::new(vec![
        M::up(
            r#"
CREATE TABLE snapshots (
    hash        TEXT PRIMARY KEY,
    workflow_id TEXT NOT NULL,
    definition  TEXT NOT NULL,
    created_at  INTEGER NOT NULL
);

CREATE TABLE executions (
    id                  TEXT PRIMARY KEY,
    workflow_id         TEXT NOT NULL,
    workflow_name       TEXT NOT NULL,
    snapshot_hash       TEXT NOT NULL REFERENCES snapshots(hash),
    source_file         TEXT,
    mode                TEXT NOT NULL,
    status              TEXT NOT NULL,
    trigger             TEXT NOT NULL,
    output              TEXT,
    error               TEXT,
    started_at          INTEGER NOT NULL,
    finished_at         INTEGER,
    duration_ms         REAL,
    exit                TEXT,
    runner_pid          INTEGER,
    runner_start_time   INTEGER,
    pid                 INTEGER,
    pgid                INTEGER,
    process_start_time  INTEGER,
    stop_requested_at   INTEGER,
    parent_id           TEXT,
    relation            TEXT,
    log_bytes           INTEGER NOT NULL DEFAULT 0,
    log_bytes_cut       INTEGER NOT NULL DEFAULT 0,
    event_seq           INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX executions_by_start ON executions(started_at DESC, id DESC);
CREATE INDEX executions_by_workflow ON executions(workflow_id, started_at DESC);
CREATE INDEX executions_by_status ON executions(status, started_at DESC);

CREATE TABLE node_executions (
    execution_id    TEXT NOT NULL REFERENCES executions(id) ON DELETE CASCADE,
    node_id         TEXT NOT NULL,
    position        INTEGER NOT NULL,
    status          TEXT NOT NULL,
    attempt         INTEGER NOT NULL DEFAULT 0,
    started_at      INTEGER,
    finished_at     INTEGER,
    duration_ms     REAL,
    input           TEXT,
    output          TEXT,
    error           TEXT,
    from_execution  TEXT,
    PRIMARY KEY (execution_id, node_id)
) WITHOUT ROWID;

CREATE TABLE events (
    execution_id TEXT NOT NULL REFERENCES executions(id) ON DELETE CASCADE,
    seq          INTEGER NOT NULL,
    kind         TEXT NOT NULL,
    node_id      TEXT,
    ts           INTEGER NOT NULL,
    data         TEXT NOT NULL,
    PRIMARY KEY (execution_id, seq)
) WITHOUT ROWID;
"#,
        ),
        // Token and cost totals of LLM nodes, per execution.
        M::up(
            r#"
ALTER TABLE executions ADD COLUMN input_tokens INTEGER;
ALTER TABLE executions ADD COLUMN output_tokens INTEGER;
ALTER TABLE executions ADD COLUMN cost_usd REAL;
"#,
        ),
        // One row per item of a `for_each` node and per iteration of a `repeat` node besides
        // the node's own (`part` -1), and why a node was skipped.
        M::up(
            r#"
CREATE TABLE node_executions_3 (
    execution_id    TEXT NOT NULL REFERENCES executions(id) ON DELETE CASCADE,
    node_id         TEXT NOT NULL,
    part            INTEGER NOT NULL DEFAULT -1,
    part_kind       TEXT,
    position        INTEGER NOT NULL,
    status          TEXT NOT NULL,
    attempt         INTEGER NOT NULL DEFAULT 0,
    started_at      INTEGER,
    finished_at     INTEGER,
    duration_ms     REAL,
    input           TEXT,
    output          TEXT,
    error           TEXT,
    from_execution  TEXT,
    reason          TEXT,
    PRIMARY KEY (execution_id, node_id, part)
) WITHOUT ROWID;
INSERT INTO node_executions_3 (execution_id, node_id, position, status, attempt, started_at,
                               finished_at, duration_ms, input, output, error, from_execution)
    SELECT execution_id, node_id, position, status, attempt, started_at, finished_at,
           duration_ms, input, output, error, from_execution
    FROM node_executions;
DROP TABLE node_executions;
ALTER TABLE node_executions_3 RENAME TO node_executions;
"#,
        ),
        // Pause requests (`flowrun pause`, the API), like stop requests; and the directory an
        // execution's nodes ran in.
        M::up(
            r#"
ALTER TABLE executions ADD COLUMN pause_requested_at INTEGER;
ALTER TABLE executions ADD COLUMN cwd TEXT;
"#,
        ),
        // Sub-workflows: the node (and `for_each` item) of the parent execution that started a
        // child execution (`relation` 'sub'), and a way to find a parent's children.
        M::up(
            r#"
ALTER TABLE executions ADD COLUMN parent_node TEXT;
ALTER TABLE executions ADD COLUMN parent_item INTEGER;
CREATE INDEX executions_by_parent ON executions(parent_id, started_at);
"#,
        ),
        // How the execution's interpreter started: `warm` (forked from a template) or `cold`.
        M::up("ALTER TABLE executions ADD COLUMN start TEXT;"),
    ])
}
