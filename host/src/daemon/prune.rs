//! The service's side of `POST /v1/prune`: a retention pass now.

use std::sync::Arc;

use super::DaemonService;
use kozmo_api::types::PruneReport;
use kozmo_api::ServiceError;
use kozmo_engine::retention::{duration, pruner, pruner::Retention};

impl DaemonService {
    /// Attaches the daemon's retention (once).
    pub fn set_retention(&self, r: Arc<Retention>) {
        let _ = self.retention.set(r);
    }

    /// Runs a pass; `older_than` replaces the keep times for this pass.
    pub(super) fn prune_now(&self, older_than: Option<&str>, dry_run: bool) -> Result<PruneReport, ServiceError> {
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
        report_view(&report).map_err(|e| ServiceError::Internal(format!("prune report: {e}")))
    }
}

/// The API's view of a report: the same fields (the view refuses unknown
/// ones, so a field added to one side only fails the test below).
fn report_view(report: &pruner::PruneReport) -> serde_json::Result<PruneReport> {
    serde_json::from_value(serde_json::to_value(report)?)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_api_view_of_a_prune_report_has_every_field() {
        let mut report = super::pruner::PruneReport {
            oldest_removed_ms: Some(1),
            newest_removed_ms: Some(2),
            oldest_kept_ms: Some(3),
            ids: vec!["a".into()],
            ..Default::default()
        };
        report.rows.catalog = 4;
        let view = super::report_view(&report).expect("same fields");
        assert_eq!(
            serde_json::to_value(&view).unwrap(),
            serde_json::to_value(&report).unwrap()
        );
    }
}
