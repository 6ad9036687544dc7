//! Full durability with the sync off the writer's path.
//!
//! With `synchronous=FULL`, SQLite syncs the WAL inside every `COMMIT`, and
//! the writer connection — so the engine's committer — waits for the disk
//! before it can run the next transaction's statements. Here the writer runs
//! with `synchronous=OFF` and the WAL is synced by [`WalSync::sync`] after
//! the `COMMIT`: synchronously for the store's own short transactions,
//! and on the engine's syncer thread for group commits
//! (`WriteTxn::commit_unsynced`), which answers nothing before it returns.
//! One sync of the file covers every transaction written to it before.
//!
//! What keeps this as safe as `FULL`:
//! - Nothing is answered before the sync that covers it has returned; a
//!   reader may see a transaction a few milliseconds before it is durable
//!   (the engine acts only on answers).
//! - The writer never checkpoints (`wal_autocheckpoint = 0`): a checkpoint
//!   by a connection without syncs could copy pages into the database file
//!   without syncing it and let the next transaction overwrite the WAL
//!   frames that were their only durable copy. Checkpoints run on the
//!   checkpointer's connection, with `synchronous=FULL` (it syncs the WAL
//!   before copying and the database file before the WAL can be reused).
//!   When the WAL grows past its bound anyway (a passive checkpoint cannot
//!   finish while commits keep appending, and only a finished one lets the
//!   next transaction start the WAL over), the checkpointer asks
//!   ([`WalSync::request_checkpoint`]) and the writer checkpoints after its
//!   next `COMMIT`, switched to `FULL` for it, as SQLite's own automatic
//!   checkpoint would.
//! - The writer connection goes back to `FULL` before it closes, so the
//!   checkpoint SQLite runs when the last connection closes syncs too.

use std::fs::File;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use kozmo_engine::store::{CommitCost, StoreError, StoreResult};

/// The WAL file of one database, synced on demand.
pub(crate) struct WalSync {
    wal: PathBuf,
    cost: CommitCost,
    checkpoint_due: AtomicBool,
}

impl WalSync {
    /// The WAL of the database at `db` (`<db>-wal`).
    pub(crate) fn for_database(db: &Path) -> Self {
        let mut wal = db.as_os_str().to_owned();
        wal.push("-wal");
        WalSync {
            wal: PathBuf::from(wal),
            cost: CommitCost::default(),
            checkpoint_due: AtomicBool::new(false),
        }
    }

    /// Asks the writer to checkpoint after its next commit.
    pub(crate) fn request_checkpoint(&self) {
        self.checkpoint_due.store(true, Ordering::Relaxed);
    }

    /// Whether a checkpoint was asked for (and clears the request).
    pub(crate) fn take_checkpoint_request(&self) -> bool {
        self.checkpoint_due.swap(false, Ordering::Relaxed)
    }

    /// Makes every transaction committed so far durable (`fdatasync` of
    /// the WAL; a WAL that does not exist holds nothing to sync).
    pub(crate) fn sync(&self) -> StoreResult<()> {
        let started = Instant::now();
        match File::open(&self.wal) {
            Ok(f) => f
                .sync_data()
                .map_err(|e| StoreError(format!("syncing {}: {e}", self.wal.display())))?,
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(StoreError(format!("opening {} to sync it: {e}", self.wal.display()))),
        }
        self.cost.observe(started.elapsed());
        Ok(())
    }

    /// What a sync costs lately.
    pub(crate) fn cost(&self) -> &CommitCost {
        &self.cost
    }
}
