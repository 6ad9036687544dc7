//! FFI mirrors of the author API, one module per frozen ABI epoch.
//!
//! Plugin authors never touch this module: the export glue and the host
//! adapters convert at the boundary. A later, incompatible interface adds
//! `v2` beside `v1` and keeps `v1` frozen so old plugins keep loading.

pub mod layout_check;
pub mod v1;

/// The epoch new plugins are built for.
pub use v1 as current;
