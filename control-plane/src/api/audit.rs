//! `GET /api/v1/audit`: search audit events.

use super::{ApiError, Caller, ErrorBody};
use crate::service::ControlPlane;
use crate::store::audit::{AuditEventView, AuditFilter};
use axum::Json;
use axum::extract::{Query, State};
use chrono::{DateTime, Utc};

/// Most events one search returns.
const MAX_LIMIT: u64 = 10_000;

#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    pub identity: Option<String>,
    pub resource: Option<String>,
    pub session_id: Option<String>,
    /// `session_started`, `statement`, `session_ended` or `review`.
    pub event: Option<String>,
    /// Substring of the statement text.
    pub text: Option<String>,
    /// RFC 3339 lower bound on the event time.
    pub since: Option<DateTime<Utc>>,
    /// RFC 3339 upper bound (exclusive).
    pub until: Option<DateTime<Utc>>,
    /// Newest N matching events (default 100, at most 10000), returned oldest first.
    pub limit: Option<u64>,
}

#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct AuditPage {
    pub events: Vec<AuditEventView>,
}

#[utoipa::path(get, path = "/api/v1/audit", params(AuditQuery),
    responses((status = 200, body = AuditPage), (status = 400, body = ErrorBody),
               (status = 403, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn search(
    State(cp): State<ControlPlane>,
    Caller(p): Caller,
    query: Result<Query<AuditQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<AuditPage>, ApiError> {
    cp.require_auditor(&p)?;
    let Query(q) = query.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    if let Some(e) = &q.event
        && !["session_started", "statement", "session_ended", "review"].contains(&e.as_str())
    {
        return Err(ApiError::BadRequest(format!("unknown event type {e:?}")));
    }
    let limit = q.limit.unwrap_or(100);
    if limit == 0 || limit > MAX_LIMIT {
        return Err(ApiError::BadRequest(format!(
            "limit must be 1..={MAX_LIMIT}"
        )));
    }
    let filter = AuditFilter {
        identity: q.identity,
        resource: q.resource,
        session_id: q.session_id,
        event: q.event,
        text: q.text,
        since: q.since,
        until: q.until,
        limit,
    };
    Ok(Json(AuditPage {
        events: cp.search_audit(&filter).await?,
    }))
}
