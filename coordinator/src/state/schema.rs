//! The state file's tables. One file is a whole deployment: every sweep, its evaluation set, its
//! tasks, leases, attempts and results, so a restarted coordinator needs nothing else.
//!
//! Every `state` / `outcome` / `format` column holds the name of a value of its enum in
//! [`crate::domain`] (see [`super::states`]).

use std::path::Path;

use rusqlite::{params, Connection, OptionalExtension};

use super::{Result, StoreError};

/// Bumped when the tables change incompatibly; a file with another version is refused.
pub const SCHEMA_VERSION: i64 = 1;

/// Columns added to a table after its version-1 layout shipped, as (table, column, type): a file
/// made before is given them when opened (NULL in existing rows), so it needs no new version.
const ADDED_COLUMNS: &[(&str, &str, &str)] = &[
    ("workers", "secret_digest", "BLOB"),
    ("examples", "n_chosen", "INTEGER"),
    ("examples", "n_rejected", "INTEGER"),
    ("results", "texts", "BLOB"),
    ("checkpoints", "param_bytes", "INTEGER"),
    // CompleteRequest.scalar_output of the checkpoint's last completed task (NULL: a row from
    // before the column, read as false: scores written as lists)
    ("checkpoints", "scalar_output", "INTEGER"),
];

const PRAGMAS: &str = "
PRAGMA journal_mode = WAL;
PRAGMA synchronous = NORMAL;
PRAGMA foreign_keys = ON;
";

const TABLES: &str = "
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

-- spec: the SweepSpec as protobuf bytes; state: a SweepState
CREATE TABLE IF NOT EXISTS sweeps (
    id          INTEGER PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    spec        BLOB NOT NULL,
    state       TEXT NOT NULL,
    created_ms  INTEGER NOT NULL,
    finished_ms INTEGER
);

-- state: a CheckpointState; format: a CheckpointFormat; param_bytes: the parameters' bytes in
-- 16-bit precision (NULL or 0: unknown, e.g. a row from before the column)
CREATE TABLE IF NOT EXISTS checkpoints (
    id            INTEGER PRIMARY KEY,
    sweep_id      INTEGER NOT NULL REFERENCES sweeps(id),
    uri           TEXT NOT NULL,
    name          TEXT NOT NULL,
    format        TEXT NOT NULL,
    size_bytes    INTEGER NOT NULL,
    state         TEXT NOT NULL,
    failure       TEXT,
    model_type    TEXT,
    chat_template TEXT,
    param_bytes   INTEGER,
    UNIQUE (sweep_id, uri)
);
CREATE INDEX IF NOT EXISTS checkpoints_uri ON checkpoints(uri);

-- the evaluation set, stored once per sweep; n_chosen / n_rejected: a RewardBench 2 row's
-- completion counts (NULL for a preference pair)
CREATE TABLE IF NOT EXISTS examples (
    sweep_id   INTEGER NOT NULL REFERENCES sweeps(id),
    idx        INTEGER NOT NULL,
    example_id TEXT NOT NULL,
    subset     TEXT NOT NULL,
    pair_json  TEXT NOT NULL,
    n_chosen   INTEGER,
    n_rejected INTEGER,
    PRIMARY KEY (sweep_id, idx)
) WITHOUT ROWID;

-- one checkpoint x one shard [shard_start, shard_end) of the evaluation set
-- state: a TaskState
CREATE TABLE IF NOT EXISTS tasks (
    id               INTEGER PRIMARY KEY,
    sweep_id         INTEGER NOT NULL REFERENCES sweeps(id),
    checkpoint_id    INTEGER NOT NULL REFERENCES checkpoints(id),
    shard_start      INTEGER NOT NULL,
    shard_end        INTEGER NOT NULL,
    state            TEXT NOT NULL,
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_eligible_ms INTEGER NOT NULL DEFAULT 0,
    last_epoch       INTEGER NOT NULL DEFAULT 0,
    failure          TEXT
);
-- the lease queue: pending tasks in (oldest sweep, lowest id) order
CREATE INDEX IF NOT EXISTS tasks_queue ON tasks(state, sweep_id, id);
CREATE INDEX IF NOT EXISTS tasks_checkpoint ON tasks(checkpoint_id, state);
CREATE INDEX IF NOT EXISTS tasks_sweep ON tasks(sweep_id, state);

-- deadline_ms is absolute (unix ms): a restarted coordinator keeps it
-- state: a LeaseState
CREATE TABLE IF NOT EXISTS leases (
    task_id     INTEGER NOT NULL REFERENCES tasks(id),
    epoch       INTEGER NOT NULL,
    worker_id   TEXT NOT NULL,
    created_ms  INTEGER NOT NULL,
    deadline_ms INTEGER NOT NULL,
    state       TEXT NOT NULL,
    PRIMARY KEY (task_id, epoch)
);
CREATE INDEX IF NOT EXISTS leases_state ON leases(state, deadline_ms);
CREATE INDEX IF NOT EXISTS leases_worker ON leases(worker_id, state);

-- one row per lease: outcome: an AttemptOutcome; attempt: the task's failed-attempt count after
-- this one
CREATE TABLE IF NOT EXISTS attempts (
    id         INTEGER PRIMARY KEY,
    task_id    INTEGER NOT NULL REFERENCES tasks(id),
    epoch      INTEGER NOT NULL,
    worker_id  TEXT NOT NULL,
    outcome    TEXT NOT NULL,
    reason     TEXT,
    attempt    INTEGER,
    started_ms INTEGER NOT NULL,
    ended_ms   INTEGER
);
CREATE INDEX IF NOT EXISTS attempts_task ON attempts(task_id, epoch);
CREATE INDEX IF NOT EXISTS attempts_ended ON attempts(outcome, ended_ms);

-- capabilities and stats: protobuf bytes; cached: JSON array of checkpoint uris;
-- secret_digest: SHA-256 of the registration's secret (NULL: registered before secrets existed)
CREATE TABLE IF NOT EXISTS workers (
    seq                INTEGER PRIMARY KEY AUTOINCREMENT,
    id                 TEXT UNIQUE,
    name               TEXT NOT NULL,
    capabilities       BLOB,
    cached             TEXT NOT NULL DEFAULT '[]',
    registered_ms      INTEGER NOT NULL,
    last_seen_ms       INTEGER NOT NULL,
    draining           INTEGER NOT NULL DEFAULT 0,
    stats              BLOB,
    last_checkpoint_id INTEGER,
    secret_digest      BLOB
);

-- chosen/rejected: little-endian f64 arrays (exact); first result wins (INSERT OR IGNORE);
-- texts: the SHA-256 digests (32 bytes each, concatenated) of the texts the worker scored, each
-- held once in `texts` (NULL: none sent, or stored before texts were kept)
CREATE TABLE IF NOT EXISTS results (
    checkpoint_id INTEGER NOT NULL REFERENCES checkpoints(id),
    idx           INTEGER NOT NULL,
    chosen        BLOB NOT NULL,
    rejected      BLOB NOT NULL,
    task_id       INTEGER NOT NULL,
    epoch         INTEGER NOT NULL,
    texts         BLOB,
    PRIMARY KEY (checkpoint_id, idx)
) WITHOUT ROWID;

-- every distinct scored text once, keyed by the SHA-256 of its UTF-8 bytes: checkpoints that
-- share a tokenizer and chat template format the same texts, so a sweep of N checkpoints keeps
-- one copy of its texts and 32 bytes per text per result. A digest in results.texts always has
-- its row here (written in the same transaction, never deleted).
CREATE TABLE IF NOT EXISTS texts (
    digest BLOB PRIMARY KEY,
    text   TEXT NOT NULL
) WITHOUT ROWID;
";

/// Makes `conn`'s file ready: WAL and the other pragmas, the tables, the columns added since
/// version 1; refuses a file of another schema version (`path` names it).
pub(super) fn prepare(conn: &Connection, path: &Path) -> Result<()> {
    conn.execute_batch(PRAGMAS)?;
    conn.execute_batch(TABLES)?;
    for (table, column, kind) in ADDED_COLUMNS {
        let present: bool = conn.query_row(
            "SELECT COUNT(*) > 0 FROM pragma_table_info(?1) WHERE name = ?2",
            params![table, column],
            |r| r.get(0),
        )?;
        if !present {
            conn.execute_batch(&format!("ALTER TABLE {table} ADD COLUMN {column} {kind}"))?;
        }
    }
    let version: Option<String> = conn
        .query_row(
            "SELECT value FROM meta WHERE key = 'schema_version'",
            [],
            |r| r.get(0),
        )
        .optional()?;
    match version {
        None => {
            conn.execute(
                "INSERT INTO meta(key, value) VALUES ('schema_version', ?1)",
                params![SCHEMA_VERSION.to_string()],
            )?;
        }
        Some(v) if v == SCHEMA_VERSION.to_string() => {}
        Some(v) => {
            return Err(StoreError::Corrupt(format!(
                "{} has schema version {v}; this coordinator reads version {SCHEMA_VERSION}",
                path.display()
            )))
        }
    }
    Ok(())
}
