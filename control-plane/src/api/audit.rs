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

/// Events per page an export reads from the store.
const EXPORT_PAGE: u64 = 1000;

#[utoipa::path(get, path = "/api/v1/audit/verify",
    responses((status = 200, body = crate::store::audit::verify::VerifyReport,
               description = "The report; `intact` is false when anything was found"),
              (status = 403, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn verify(
    State(cp): State<ControlPlane>,
    Caller(p): Caller,
) -> Result<Json<crate::store::audit::verify::VerifyReport>, ApiError> {
    cp.require_auditor(&p)?;
    Ok(Json(cp.verify_audit().await?))
}

#[utoipa::path(get, path = "/api/v1/sessions/{id}/timeline",
    params(("id" = String, Path, description = "Session id")),
    responses((status = 200, body = crate::audit::Timeline), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn timeline(
    State(cp): State<ControlPlane>,
    Caller(p): Caller,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Result<Json<crate::audit::Timeline>, ApiError> {
    cp.require_auditor(&p)?;
    Ok(Json(cp.session_timeline(&id).await?))
}

#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ExportQuery {
    /// `jsonl` (the only format for now; the default).
    pub format: Option<String>,
    pub identity: Option<String>,
    pub resource: Option<String>,
    pub session_id: Option<String>,
    pub event: Option<String>,
    /// RFC 3339 lower bound on the event time.
    pub since: Option<DateTime<Utc>>,
    /// RFC 3339 upper bound (exclusive).
    pub until: Option<DateTime<Utc>>,
}

#[utoipa::path(get, path = "/api/v1/audit/export", params(ExportQuery),
    responses((status = 200, content_type = "application/x-ndjson",
               description = "One JSON event per line, oldest first, streamed"),
              (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn export(
    State(cp): State<ControlPlane>,
    Caller(p): Caller,
    query: Result<Query<ExportQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<axum::response::Response, ApiError> {
    use axum::response::IntoResponse;
    cp.require_auditor(&p)?;
    let Query(q) = query.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    if let Some(f) = &q.format
        && f != "jsonl"
    {
        return Err(ApiError::BadRequest(format!(
            "unknown export format {f:?}; use jsonl"
        )));
    }
    let filter = AuditFilter {
        identity: q.identity,
        resource: q.resource,
        session_id: q.session_id,
        event: q.event,
        text: None,
        since: q.since,
        until: q.until,
        limit: 0,
    };
    // Pages are read as the client takes them; an error mid-stream ends the
    // body early, which the client sees as a truncated transfer.
    let pages = futures_util::stream::try_unfold(
        (cp, filter, None, false),
        |(cp, filter, cursor, done)| async move {
            if done {
                return Ok::<_, std::io::Error>(None);
            }
            let (events, next) = cp
                .audit_export_page(&filter, cursor.as_ref(), EXPORT_PAGE)
                .await
                .map_err(|e| {
                    tracing::error!(error = %e, "audit export failed");
                    std::io::Error::other("audit export failed")
                })?;
            let last = (events.len() as u64) < EXPORT_PAGE;
            let mut chunk = Vec::new();
            for e in &events {
                serde_json::to_writer(&mut chunk, e).map_err(std::io::Error::other)?;
                chunk.push(b'\n');
            }
            Ok(Some((chunk, (cp, filter, next, last))))
        },
    );
    Ok((
        [(axum::http::header::CONTENT_TYPE, "application/x-ndjson")],
        axum::body::Body::from_stream(pages),
    )
        .into_response())
}
