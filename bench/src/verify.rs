//! The state-file check after a run: open the SQLite file read-only, `PRAGMA integrity_check`,
//! and compare what the coordinator acknowledged with what it stored (nothing lost, nothing twice).

use std::collections::{HashMap, HashSet};
use std::path::Path;

use anyhow::Context;
use rusqlite::{Connection, OpenFlags};

use crate::worker::{stub_scores, AckRange};

/// Where the per-example results live: found from the schema unless given.
#[derive(Clone, Debug)]
pub struct ResultsTable {
    pub table: String,
    /// the column naming the checkpoint (or the task) a result belongs to
    pub owner: String,
    /// true when `owner` is a task id rather than a checkpoint id
    pub owner_is_task: bool,
    pub index: String,
}

pub struct Report {
    pub opened_read_only: bool,
    pub integrity: String,
    pub table: ResultsTable,
    pub acked_distinct: u64,
    pub acked_missing: u64,
    pub rows: u64,
    pub keys_more_than_once: u64,
    /// rows whose stored chosen/rejected score is not what the simulated workers send for that
    /// (checkpoint, example) (a result overwritten or stored under another key); None when the
    /// table has no `chosen`/`rejected` columns or is keyed by task
    pub scores_differ: Option<u64>,
    pub stored_not_acked: u64,
}

fn columns(conn: &Connection, table: &str) -> anyhow::Result<Vec<String>> {
    let mut stmt = conn.prepare(&format!("PRAGMA table_info(\"{table}\")"))?;
    let names = stmt
        .query_map([], |row| row.get::<_, String>(1))?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(names)
}

/// The table with an example-index column and a checkpoint (or task) column whose name says
/// results/rewards.
fn find_table(conn: &Connection) -> anyhow::Result<ResultsTable> {
    let mut stmt = conn.prepare("SELECT name FROM sqlite_master WHERE type = 'table'")?;
    let tables = stmt
        .query_map([], |row| row.get::<_, String>(0))?
        .collect::<Result<Vec<_>, _>>()?;
    let mut described = Vec::new();
    for table in &tables {
        let cols = columns(conn, table)?;
        described.push(format!("{table}({})", cols.join(", ")));
        let lower = table.to_lowercase();
        if !(lower.contains("result") || lower.contains("reward")) {
            continue;
        }
        let index = cols.iter().find(|c| {
            let c = c.to_lowercase();
            c == "idx" || c == "example_index" || c == "index" || c == "example_idx" || c == "ix"
        });
        let checkpoint = cols.iter().find(|c| c.to_lowercase() == "checkpoint_id");
        let task = cols.iter().find(|c| c.to_lowercase() == "task_id");
        if let Some(index) = index {
            if let Some(owner) = checkpoint {
                return Ok(ResultsTable {
                    table: table.clone(),
                    owner: owner.clone(),
                    owner_is_task: false,
                    index: index.clone(),
                });
            }
            if let Some(owner) = task {
                return Ok(ResultsTable {
                    table: table.clone(),
                    owner: owner.clone(),
                    owner_is_task: true,
                    index: index.clone(),
                });
            }
        }
    }
    anyhow::bail!(
        "no results table found (pass --results-table/--owner-column/--index-column); tables: {}",
        described.join("; ")
    )
}

pub fn check(
    state: &Path,
    acks: &[AckRange],
    table: Option<ResultsTable>,
) -> anyhow::Result<Report> {
    let (conn, opened_read_only) = match Connection::open_with_flags(
        state,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .and_then(|c| {
        c.query_row("SELECT count(*) FROM sqlite_master", [], |_| Ok(()))?;
        Ok(c)
    }) {
        Ok(conn) => (conn, true),
        // a WAL file left by kill -9 may need recovery, which a read-only connection cannot do
        // without the -shm file: open it the way a restarted coordinator would
        Err(_) => (
            Connection::open(state).with_context(|| format!("opening {}", state.display()))?,
            false,
        ),
    };
    let integrity: String = conn.query_row("PRAGMA integrity_check", [], |r| r.get(0))?;
    let table = match table {
        Some(t) => t,
        None => find_table(&conn)?,
    };
    let mut acked: HashSet<(i64, u32)> = HashSet::new();
    for a in acks {
        let owner = if table.owner_is_task {
            a.task
        } else {
            a.checkpoint
        };
        for i in a.start..a.end {
            acked.insert((owner, i));
        }
    }
    let mut stored: HashMap<(i64, u32), u64> = HashMap::new();
    let sql = format!(
        "SELECT \"{o}\", \"{i}\", COUNT(*) FROM \"{t}\" GROUP BY \"{o}\", \"{i}\"",
        o = table.owner,
        i = table.index,
        t = table.table
    );
    let mut stmt = conn.prepare(&sql)?;
    let mut rows = stmt.query([])?;
    let mut total = 0;
    while let Some(row) = rows.next()? {
        let owner: i64 = row.get(0)?;
        let index: i64 = row.get(1)?;
        let count: i64 = row.get(2)?;
        total += count as u64;
        stored.insert((owner, index as u32), count as u64);
    }
    let acked_missing = acked.iter().filter(|k| !stored.contains_key(k)).count() as u64;
    let keys_more_than_once = stored.values().filter(|&&c| c > 1).count() as u64;
    let stored_not_acked = stored.keys().filter(|k| !acked.contains(k)).count() as u64;
    let scores_differ = scores_differ(&conn, &table)?;
    Ok(Report {
        opened_read_only,
        integrity,
        table,
        acked_distinct: acked.len() as u64,
        acked_missing,
        rows: total,
        keys_more_than_once,
        scores_differ,
        stored_not_acked,
    })
}

/// Counts stored rows whose first chosen and rejected scores (f64, little-endian, as herd stores
/// them) differ from [`stub_scores`] of their (checkpoint, example): the check a primary key
/// cannot make for us.
fn scores_differ(conn: &Connection, table: &ResultsTable) -> anyhow::Result<Option<u64>> {
    let cols = columns(conn, &table.table)?;
    let has = |name: &str| cols.iter().any(|c| c == name);
    if table.owner_is_task || !has("chosen") || !has("rejected") {
        return Ok(None);
    }
    let sql = format!(
        "SELECT \"{o}\", \"{i}\", chosen, rejected FROM \"{t}\"",
        o = table.owner,
        i = table.index,
        t = table.table
    );
    let first = |bytes: &[u8]| -> Option<f64> {
        Some(f64::from_le_bytes(bytes.get(..8)?.try_into().ok()?))
    };
    let mut stmt = conn.prepare(&sql)?;
    let mut rows = stmt.query([])?;
    let mut differ = 0;
    while let Some(row) = rows.next()? {
        let (owner, index): (i64, i64) = (row.get(0)?, row.get(1)?);
        let (chosen, rejected): (Vec<u8>, Vec<u8>) = (row.get(2)?, row.get(3)?);
        let expected = stub_scores(owner, index as u32);
        if (first(&chosen), first(&rejected)) != (Some(expected.0), Some(expected.1)) {
            differ += 1;
        }
    }
    Ok(Some(differ))
}
