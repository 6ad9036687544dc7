//! Event sequence numbers are never handed out twice.
//!
//! `events.seq` is an `INTEGER PRIMARY KEY`: SQLite gives a new row the
//! largest seq in the table plus one. Retention deleting the newest events
//! (`kozmo prune` keeping none, say) would then let the next events take
//! seqs a watcher already saw, and a watcher resuming after one of them
//! (`Last-Event-ID`) would skip them. So when a delete removes the newest
//! event, its seq is kept as a floor (in `store_meta`, in the deleting
//! transaction, and in memory), and the first event inserted while the
//! table's newest is below the floor gets `floor + 1` explicitly; SQLite
//! numbers the ones after it. `AUTOINCREMENT` would do the same by
//! rebuilding the table and writing `sqlite_sequence` on every insert;
//! this costs nothing until the newest events are deleted, and then one
//! lookup of the table's last row per insert.

use std::sync::atomic::{AtomicI64, Ordering};

use rusqlite::{params, Connection, OptionalExtension};

use crate::sqlite::err;
use kozmo_engine::store::StoreResult;

/// The `store_meta` key of the floor.
const FLOOR_KEY: &str = "events_seq_floor";

/// The highest seq ever handed out among events since deleted (0: none).
/// Read and written on the writer connection only.
#[derive(Debug)]
pub(crate) struct SeqFloor(AtomicI64);

impl SeqFloor {
    /// The floor stored in the database.
    pub(crate) fn load(c: &Connection) -> StoreResult<Self> {
        let v: Option<i64> = c
            .query_row("SELECT value FROM store_meta WHERE key = ?1", [FLOOR_KEY], |r| r.get(0))
            .optional()
            .map_err(err)?;
        Ok(SeqFloor(AtomicI64::new(v.unwrap_or(0))))
    }

    /// After `newest_before` (the table's [`newest`] before a delete): if
    /// the delete removed it, raises the floor to it.
    pub(crate) fn after_delete(&self, c: &Connection, newest_before: i64) -> StoreResult<()> {
        if newest(c)? >= newest_before {
            return Ok(());
        }
        c.prepare_cached(
            "INSERT INTO store_meta (key, value) VALUES (?1, ?2) \
             ON CONFLICT(key) DO UPDATE SET value = MAX(value, excluded.value)",
        )
        .map_err(err)?
        .execute(params![FLOOR_KEY, newest_before])
        .map_err(err)?;
        // Raised even if the transaction rolls back: the rows then stay,
        // and a floor at or below the newest row changes nothing.
        self.0.fetch_max(newest_before, Ordering::Relaxed);
        Ok(())
    }

    /// The seq the next inserted event must take, if SQLite's own choice
    /// (the newest + 1) would reuse one handed out before.
    pub(crate) fn next_seq(&self, c: &Connection) -> StoreResult<Option<i64>> {
        let floor = self.0.load(Ordering::Relaxed);
        if floor == 0 {
            return Ok(None);
        }
        Ok((newest(c)? < floor).then_some(floor + 1))
    }
}

/// The largest seq in the table (0 if it is empty): its last row.
pub(crate) fn newest(c: &Connection) -> StoreResult<i64> {
    c.prepare_cached("SELECT COALESCE(MAX(seq), 0) FROM events")
        .map_err(err)?
        .query_row([], |r| r.get(0))
        .map_err(err)
}
