//! The Kozmo [`Store`](kozmo_engine::store::Store) on PostgreSQL: a pool of
//! blocking connections (`postgres` + `r2d2`), group commit in one
//! transaction (`Store::begin`), schema migrations recorded in
//! `kozmo_schema_migrations` and applied under an advisory lock, and
//! retention's deletes. Selected with `store = "postgres://…"`; the
//! daemon's default stays SQLite.

mod cluster;
mod migrations;
mod pg;
mod pg_prune;
mod pg_txn;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_cluster;
mod url;

pub use cluster::{NodeSpec, NODE_LOCK_WAIT};
pub use migrations::MIGRATIONS;
pub use pg::{PostgresStore, POOL_SIZE};
pub use url::redact;

/// Whether `store` names a PostgreSQL database (a `postgres://` or
/// `postgresql://` URL).
pub fn is_postgres_url(store: &str) -> bool {
    let s = store.trim_start().to_ascii_lowercase();
    s.starts_with("postgres://") || s.starts_with("postgresql://")
}
