//! The service's side of `POST /v1/prune`: a retention pass now.

use std::sync::Arc;

use serde_json::Value;

use super::DaemonService;
use crate::api::ServiceError;
use crate::retention::{duration, pruner::Retention};

impl DaemonService {
    /// Attaches the daemon's retention (once).
    pub fn set_retention(&self, r: Arc<Retention>) {
        let _ = self.retention.set(r);
    }

    /// Runs a pass; `older_than` replaces the keep times for this pass.
    pub(super) fn prune_now(&self, older_than: Option<&str>, dry_run: bool) -> Result<Value, ServiceError> {
        let r = self
            .retention
            .get()
            .ok_or_else(|| ServiceError::Unavailable("retention is not running yet".into()))?;
        let older_than = match older_than {
            None => None,
            Some(s) => match duration::parse(s) {
                Ok(Some(d)) => Some(d),
                Ok(None) => {
                    return Err(ServiceError::BadRequest {
                        detail: format!("older_than {s:?} would prune nothing; give a duration such as \"7d\""),
                        path: Some("older_than".into()),
                    })
                }
                Err(e) => {
                    return Err(ServiceError::BadRequest {
                        detail: format!("older_than: {e}"),
                        path: Some("older_than".into()),
                    })
                }
            },
        };
        let report = r
            .run_pass(older_than, dry_run)
            .map_err(|e| ServiceError::Internal(format!("retention pass failed: {e}")))?;
        serde_json::to_value(report).map_err(|e| ServiceError::Internal(e.to_string()))
    }
}
