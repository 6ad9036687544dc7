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
//! With full durability the writer does not checkpoint by itself (see
//! `wal_sync.rs`): when a passive checkpoint leaves more than
//! [`FALLBACK_PAGES`] in the WAL, this thread asks the writer for one
//! after its next commit. (A `RESTART` checkpoint from this thread instead
//! starved: the committer takes the write lock again at once after each
//! commit, and the WAL grew to 140 MB under `kozmo bench`'s retention load.)

use std::path::Path;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{bounded, RecvTimeoutError, Sender};
use rusqlite::Connection;

use crate::wal_sync::WalSync;

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
    /// database file under it); `writer_on_request`: the writer checkpoints
    /// only when asked, through this.
    pub(crate) fn start(
        path: &Path,
        synchronous: &str,
        writer_on_request: Option<Arc<WalSync>>,
    ) -> rusqlite::Result<Self> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(Duration::from_secs(10))?;
        conn.pragma_update(None, "synchronous", synchronous)?;
        let (stop, stopped) = bounded::<()>(0);
        let thread = std::thread::Builder::new()
            .name("kozmo-checkpoint".into())
            .spawn(move || loop {
                match stopped.recv_timeout(CHECKPOINT_EVERY) {
                    Err(RecvTimeoutError::Timeout) => {
                        if let Err(e) = checkpoint(&conn, writer_on_request.as_deref()) {
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

/// One passive checkpoint; if the WAL still holds more than
/// [`FALLBACK_PAGES`] pages after it, asks the writer for one.
fn checkpoint(conn: &Connection, writer_on_request: Option<&WalSync>) -> rusqlite::Result<()> {
    // (busy, pages in the WAL, pages copied to the database file)
    let log: i64 = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| r.get(1))?;
    if let Some(wal) = writer_on_request {
        if log > i64::from(FALLBACK_PAGES) {
            wal.request_checkpoint();
        }
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
