//! The Kozmo [`Store`](kozmo_engine::store::Store) on SQLite: one file
//! (`<data_dir>/kozmo.db`), WAL journal, one writer and one reader
//! connection, group commit, schema migrations by `user_version`, and
//! retention's deletes and space reclaiming. The daemon's default store.

mod checkpointer;
mod event_seq;
mod migrations;
mod sqlite;
mod sqlite_prune;
mod sqlite_txn;
#[cfg(test)]
mod tests;
mod wal_sync;

pub use sqlite::{Durability, SqliteStore};
