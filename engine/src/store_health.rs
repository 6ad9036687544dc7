//! Whether the store accepts writes: failed writes counted by kind, and the
//! last failure remembered until a write succeeds again (then the daemon is
//! healthy again on its own, without a restart).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::model::now_ms;
use crate::store::{StoreError, StoreErrorKind};

/// Why the store is not writable right now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreDegraded {
    /// `full`, `read_only` or `other` ([`StoreErrorKind::as_str`]).
    pub kind: String,
    /// The store's message (no values of the caller's data in it).
    pub detail: String,
    /// When writes started failing (unix ms).
    pub since_ms: i64,
}

/// Write failures by kind and the current degradation.
#[derive(Debug, Default)]
pub(crate) struct StoreHealth {
    errors: [AtomicU64; StoreErrorKind::ALL.len()],
    degraded: Mutex<Option<StoreDegraded>>,
}

impl StoreHealth {
    /// A write failed.
    pub(crate) fn failed(&self, e: &StoreError) {
        let kind = e.kind();
        self.errors[kind as usize].fetch_add(1, Ordering::Relaxed);
        let mut d = self.degraded.lock().unwrap_or_else(|p| p.into_inner());
        match d.as_mut() {
            Some(d) => {
                d.kind = kind.as_str().into();
                d.detail = e.0.clone();
            }
            None => {
                *d = Some(StoreDegraded {
                    kind: kind.as_str().into(),
                    detail: e.0.clone(),
                    since_ms: now_ms(),
                })
            }
        }
    }

    /// A write succeeded: the store is writable again.
    pub(crate) fn succeeded(&self) {
        let mut d = self.degraded.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(was) = d.take() {
            log::info!(
                "the store accepts writes again (it failed with {} for {} ms)",
                was.kind,
                now_ms() - was.since_ms
            );
        }
    }

    /// The current degradation, if writes fail.
    pub(crate) fn degraded(&self) -> Option<StoreDegraded> {
        self.degraded.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Failed writes by kind name, every kind listed.
    pub(crate) fn errors_by_kind(&self) -> Vec<(String, u64)> {
        StoreErrorKind::ALL
            .iter()
            .map(|k| (k.as_str().to_string(), self.errors[*k as usize].load(Ordering::Relaxed)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_degrades_until_a_success() {
        let h = StoreHealth::default();
        assert!(h.degraded().is_none());
        h.failed(&StoreError("database or disk is full".into()));
        h.failed(&StoreError("database or disk is full".into()));
        let d = h.degraded().unwrap();
        assert_eq!(d.kind, "full");
        h.failed(&StoreError("attempt to write a readonly database".into()));
        let d2 = h.degraded().unwrap();
        assert_eq!((d2.kind.as_str(), d2.since_ms), ("read_only", d.since_ms));
        h.succeeded();
        assert!(h.degraded().is_none());
        let counts: std::collections::BTreeMap<_, _> = h.errors_by_kind().into_iter().collect();
        assert_eq!((counts["full"], counts["read_only"], counts["other"]), (2, 1, 0));
    }

    #[test]
    fn kinds_come_from_the_library_and_os_wording() {
        for (m, k) in [
            ("database or disk is full", StoreErrorKind::Full),
            (
                "disk I/O error: No space left on device (os error 28)",
                StoreErrorKind::Full,
            ),
            ("attempt to write a readonly database", StoreErrorKind::ReadOnly),
            ("Read-only file system (os error 30)", StoreErrorKind::ReadOnly),
            ("database is locked", StoreErrorKind::Other),
        ] {
            assert_eq!(StoreErrorKind::of_message(m), k, "{m}");
        }
    }
}
