//! Audit upkeep and queries the API serves: the checkpoint and retention
//! jobs, verify, session timelines and export.
//!
//! The jobs run on every replica; the store makes that safe (see
//! [`crate::store::audit::checkpoint`] and [`crate::store::audit::retention`]).

use crate::service::{ControlPlane, ServiceError};
use crate::store::audit::verify::VerifyReport;
use crate::store::audit::{AuditCursor, AuditEventView, AuditFilter};
use chrono::Utc;
use std::time::Duration;

/// One session's events in order, with totals.
#[derive(Clone, Debug, serde::Serialize, utoipa::ToSchema)]
pub struct Timeline {
    pub session_id: String,
    pub identity: Option<String>,
    pub resource: Option<String>,
    pub started_at: Option<chrono::DateTime<Utc>>,
    pub ended_at: Option<chrono::DateTime<Utc>>,
    pub statements: u64,
    /// Statements the policy denied.
    pub denied: u64,
    /// Statements that failed upstream.
    pub errors: u64,
    /// Sum of statement durations.
    pub total_duration_us: u64,
    /// Sum of row counts reported by the upstream.
    pub total_rows: u64,
    pub events: Vec<AuditEventView>,
}

/// Most events one timeline returns.
pub const TIMELINE_MAX: u64 = 100_000;

impl ControlPlane {
    /// Starts the checkpoint and retention jobs. Call once per process,
    /// inside the runtime.
    pub fn start_audit_jobs(&self) {
        let cp = self.clone();
        tokio::spawn(async move {
            let interval = cp.settings().audit_checkpoint_interval;
            let mut tick = tokio::time::interval(interval.max(Duration::from_millis(10)));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                cp.run_audit_upkeep().await;
            }
        });
    }

    /// One round of the jobs: purge what expired, then the statement texts no event points to
    /// any more (once a purge removed events or failed partway, and in the first round after
    /// start, when a purge cut off by a restart may have left some), then checkpoint.
    pub async fn run_audit_upkeep(&self) {
        use std::sync::atomic::Ordering;
        let texts_due = self.audit_texts_due();
        for (resource, keep) in &self.settings().audit_retention {
            let Ok(keep) = chrono::Duration::from_std(*keep) else {
                continue;
            };
            match self.store().purge_audit(resource, Utc::now() - keep).await {
                Ok(0) => {}
                Ok(n) => {
                    texts_due.store(true, Ordering::Relaxed);
                    tracing::info!(resource, events = n, "audit retention purge");
                }
                Err(e) => {
                    texts_due.store(true, Ordering::Relaxed);
                    tracing::warn!(resource, error = %e, "audit retention purge failed");
                }
            }
        }
        if !self.settings().audit_retention.is_empty() && texts_due.swap(false, Ordering::Relaxed) {
            match self.store().purge_audit_texts().await {
                Ok(0) => {}
                Ok(n) => tracing::info!(texts = n, "audit retention purge of statement texts"),
                Err(e) => {
                    texts_due.store(true, Ordering::Relaxed);
                    tracing::warn!(error = %e, "audit retention purge of statement texts failed");
                }
            }
        }
        match self.store().write_audit_checkpoint().await {
            Ok(Some(n)) => tracing::debug!(checkpoint = n, "audit checkpoint written"),
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "audit checkpoint failed"),
        }
    }

    pub async fn verify_audit(&self) -> Result<VerifyReport, ServiceError> {
        Ok(self.store().verify_audit().await?)
    }

    pub async fn session_timeline(&self, session_id: &str) -> Result<Timeline, ServiceError> {
        let events = self
            .store()
            .session_events(session_id, None, TIMELINE_MAX)
            .await?;
        if events.is_empty() {
            return Err(crate::store::StoreError::NotFound {
                what: "session",
                key: session_id.to_owned(),
            }
            .into());
        }
        let mut t = Timeline {
            session_id: session_id.to_owned(),
            identity: events.first().map(|e| e.identity.clone()),
            resource: events.first().map(|e| e.resource.clone()),
            started_at: events.iter().map(|e| e.at).min(),
            ended_at: events
                .iter()
                .filter(|e| e.event == "session_ended")
                .map(|e| e.at)
                .max(),
            statements: 0,
            denied: 0,
            errors: 0,
            total_duration_us: 0,
            total_rows: 0,
            events: Vec::new(),
        };
        for e in events.iter().filter(|e| e.event == "statement") {
            t.statements += 1;
            t.denied += u64::from(e.decision.as_deref() == Some("deny"));
            t.errors += u64::from(e.error.is_some());
            t.total_duration_us = t
                .total_duration_us
                .saturating_add(e.duration_us.unwrap_or(0));
            t.total_rows = t.total_rows.saturating_add(e.rows.unwrap_or(0));
        }
        t.events = events;
        Ok(t)
    }

    /// One page of an export: events matching `filter`, oldest first.
    pub async fn audit_export_page(
        &self,
        filter: &AuditFilter,
        cursor: Option<&AuditCursor>,
        limit: u64,
    ) -> Result<(Vec<AuditEventView>, Option<AuditCursor>), ServiceError> {
        Ok(self.store().audit_page(filter, cursor, limit).await?)
    }
}
