//! Background WAL checkpoints for the SQLite store.
//!
//! By default SQLite checkpoints inside the commit that pushes the WAL past
//! 1000 pages: that commit copies the pages into the database file and
//! syncs it before it returns, so every few group commits one takes several
//! times as long and the engine waits. Here a thread with its own
//! connection runs `PRAGMA wal_checkpoint(PASSIVE)` every
//! [`CHECKPOINT_EVERY`] as well (PASSIVE never blocks the writer, which
//! goes on appending to the WAL meanwhile), so most checkpoints happen off
//! the commit path. The writer keeps SQLite's automatic checkpoint at
//! [`FALLBACK_PAGES`] for when this thread falls behind: a larger bound let
//! the WAL file grow to tens of MB, and commits appending to a growing file
//! synced slower (light-load latency p50 0.58 → 0.86 ms on this machine).
//!
//! With full durability the writer does not checkpoint at all (see
//! `wal_sync.rs`), and this thread keeps the bound instead: when a passive
//! checkpoint leaves more than [`FALLBACK_PAGES`] in the WAL (it cannot
//! finish while commits keep appending, and only a finished one lets the
//! next transaction start the WAL over), it runs a `RESTART` checkpoint,
//! which waits for the transaction in progress, holds off the next one
//! while it copies and syncs, and so lets the WAL start over.

use std::path::Path;
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{bounded, RecvTimeoutError, Sender};
use rusqlite::Connection;

/// How often the background thread checkpoints.
pub const CHECKPOINT_EVERY: Duration = Duration::from_millis(50);

/// WAL pages (4 KiB) at which a commit checkpoints by itself (SQLite's
/// default).
pub const FALLBACK_PAGES: u32 = 1000;

/// The running checkpoint thread; stopped and joined on drop.
pub struct Checkpointer {
    stop: Option<Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Checkpointer {
    /// Starts checkpointing the database at `path` (already in WAL mode);
    /// `synchronous` is the store's setting (the checkpoint syncs the
    /// database file under it); `bounds_wal`: the writer does not
    /// checkpoint, this thread bounds the WAL.
    pub fn start(path: &Path, synchronous: &str, bounds_wal: bool) -> rusqlite::Result<Self> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(Duration::from_secs(10))?;
        conn.pragma_update(None, "synchronous", synchronous)?;
        let (stop, stopped) = bounded::<()>(0);
        let thread = std::thread::Builder::new()
            .name("kozmo-checkpoint".into())
            .spawn(move || loop {
                match stopped.recv_timeout(CHECKPOINT_EVERY) {
                    Err(RecvTimeoutError::Timeout) => {
                        if let Err(e) = checkpoint(&conn, bounds_wal) {
                            log::warn!("background WAL checkpoint failed: {e}");
                        }
                    }
                    _ => return,
                }
            })
            .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
        Ok(Checkpointer {
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

/// One passive checkpoint; with `bounds_wal`, a `RESTART` one if the WAL
/// still holds more than [`FALLBACK_PAGES`] pages after it.
fn checkpoint(conn: &Connection, bounds_wal: bool) -> rusqlite::Result<()> {
    // (busy, pages in the WAL, pages copied to the database file)
    let log: i64 = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| r.get(1))?;
    if bounds_wal && log > i64::from(FALLBACK_PAGES) {
        conn.query_row("PRAGMA wal_checkpoint(RESTART)", [], |_| Ok(()))?;
    }
    Ok(())
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
