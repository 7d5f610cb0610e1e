//! `GET /api/v1/audit`: search audit events.

use super::{ApiError, Caller, ErrorBody};
use crate::service::ControlPlane;
use crate::store::audit::{AuditEventView, AuditFilter};
use axum::Json;
use axum::extract::{Query, State};
use chrono::{DateTime, Utc};

/// The `event` values a search may filter on.
const EVENT_KINDS: [&str; 6] = [
    "session_started",
    "statement",
    "session_ended",
    "review",
    "grant",
    "auth",
];

/// Most events one search returns.
const MAX_LIMIT: u64 = 10_000;

#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    pub identity: Option<String>,
    pub resource: Option<String>,
    pub session_id: Option<String>,
    /// `session_started`, `statement`, `session_ended`, `review`, `grant` or `auth`.
    pub event: Option<String>,
    /// Substring of the statement text, case-insensitive.
    pub text: Option<String>,
    /// RFC 3339 lower bound on the event time.
    pub since: Option<DateTime<Utc>>,
    /// RFC 3339 upper bound (exclusive).
    pub until: Option<DateTime<Utc>>,
    /// The event's decision: `allow`, `deny`, `review`, ...
    pub decision: Option<String>,
    /// A statement kind from the classifier: `select`, `delete`, `ddl`, ...
    pub kind: Option<String>,
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
        && !EVENT_KINDS.contains(&e.as_str())
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
        decision: q.decision,
        kind: q.kind,
        older_than: None,
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
    /// `jsonl` (the default) or `csv`.
    pub format: Option<String>,
    pub identity: Option<String>,
    pub resource: Option<String>,
    pub session_id: Option<String>,
    pub event: Option<String>,
    /// Substring of the statement text, case-insensitive.
    pub text: Option<String>,
    pub decision: Option<String>,
    pub kind: Option<String>,
    /// RFC 3339 lower bound on the event time.
    pub since: Option<DateTime<Utc>>,
    /// RFC 3339 upper bound (exclusive).
    pub until: Option<DateTime<Utc>>,
}

#[utoipa::path(get, path = "/api/v1/audit/export", params(ExportQuery),
    responses((status = 200, content_type = "application/x-ndjson",
               description = "One JSON event per line (or, with `format=csv`, one CSV row after a header row), oldest first, streamed"),
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
    let csv = match q.format.as_deref() {
        None | Some("jsonl") => false,
        Some("csv") => true,
        Some(f) => {
            return Err(ApiError::BadRequest(format!(
                "unknown export format {f:?}; use jsonl or csv"
            )));
        }
    };
    let filter = AuditFilter {
        identity: q.identity,
        resource: q.resource,
        session_id: q.session_id,
        event: q.event,
        text: q.text,
        since: q.since,
        until: q.until,
        decision: q.decision,
        kind: q.kind,
        older_than: None,
        limit: 0,
    };
    let header = if csv {
        let mut line = CSV_COLUMNS.join(",");
        line.push_str("\r\n");
        line.into_bytes()
    } else {
        Vec::new()
    };
    // Pages are read as the client takes them; an error mid-stream ends the
    // body early, which the client sees as a truncated transfer.
    let pages = futures_util::stream::try_unfold(
        (cp, filter, None, false),
        move |(cp, filter, cursor, done)| async move {
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
                if csv {
                    csv_row(&mut chunk, e).map_err(std::io::Error::other)?;
                } else {
                    serde_json::to_writer(&mut chunk, e).map_err(std::io::Error::other)?;
                    chunk.push(b'\n');
                }
            }
            Ok(Some((chunk, (cp, filter, next, last))))
        },
    );
    let pages = futures_util::StreamExt::chain(
        futures_util::stream::iter([Ok::<_, std::io::Error>(header)]),
        pages,
    );
    let (content_type, disposition) = if csv {
        (
            "text/csv; charset=utf-8",
            "attachment; filename=\"countersign-audit.csv\"",
        )
    } else {
        (
            "application/x-ndjson",
            "attachment; filename=\"countersign-audit.jsonl\"",
        )
    };
    Ok((
        [
            (axum::http::header::CONTENT_TYPE, content_type),
            (axum::http::header::CONTENT_DISPOSITION, disposition),
        ],
        axum::body::Body::from_stream(pages),
    )
        .into_response())
}

/// The columns of a CSV export, in order.
const CSV_COLUMNS: [&str; 16] = [
    "id",
    "at",
    "session_id",
    "seq",
    "event",
    "identity",
    "resource",
    "decision",
    "rule",
    "kinds",
    "statement",
    "duration_us",
    "rows",
    "command_tag",
    "error",
    "detail",
];

/// Appends `e` as one CSV row (RFC 4180: every field quoted, quotes doubled,
/// CRLF line ends). Kinds are joined with spaces; `detail` is its JSON text.
fn csv_row(out: &mut Vec<u8>, e: &AuditEventView) -> Result<(), serde_json::Error> {
    let detail = match &e.detail {
        Some(d) => serde_json::to_string(d)?,
        None => String::new(),
    };
    let opt = |v: Option<u64>| v.map(|n| n.to_string()).unwrap_or_default();
    let fields = [
        e.id.clone(),
        e.at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        e.session_id.clone(),
        e.seq.to_string(),
        e.event.clone(),
        e.identity.clone(),
        e.resource.clone(),
        e.decision.clone().unwrap_or_default(),
        e.rule.clone().unwrap_or_default(),
        e.kinds.join(" "),
        e.statement.clone().unwrap_or_default(),
        opt(e.duration_us),
        opt(e.rows),
        e.command_tag.clone().unwrap_or_default(),
        e.error.clone().unwrap_or_default(),
        detail,
    ];
    for (i, f) in fields.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.push(b'"');
        // A field a spreadsheet would run as a formula gets a leading `'`:
        // statement texts come from clients, and opening an export must not
        // run them. The JSONL export keeps every value exactly.
        if f.starts_with(['=', '+', '-', '@', '\t', '\r']) {
            out.push(b'\'');
        }
        out.extend_from_slice(f.replace('"', "\"\"").as_bytes());
        out.push(b'"');
    }
    out.extend_from_slice(b"\r\n");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{AuditEventView, CSV_COLUMNS, csv_row};

    #[test]
    fn csv_rows_quote_every_field_and_double_quotes() {
        let e = AuditEventView {
            id: "s1:3".into(),
            session_id: "s1".into(),
            seq: 3,
            event: "statement".into(),
            identity: "alice@example.com".into(),
            resource: "pg-prod".into(),
            statement: Some("SELECT 'a,\"b\"'\nFROM t".into()),
            kinds: vec!["select".into()],
            protocol: Some("simple".into()),
            parameter_count: Some(0),
            duration_us: Some(1500),
            command_tag: Some("SELECT 1".into()),
            rows: Some(1),
            error: None,
            decision: Some("allow".into()),
            rule: None,
            detail: Some(serde_json::json!({"masking": {"rules": {"email": 1}}})),
            at: chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap(),
        };
        let mut out = Vec::new();
        csv_row(&mut out, &e).unwrap();
        let line = String::from_utf8(out).unwrap();
        assert_eq!(
            line,
            "\"s1:3\",\"2023-11-14T22:13:20.000000Z\",\"s1\",\"3\",\"statement\",\
             \"alice@example.com\",\"pg-prod\",\"allow\",\"\",\"select\",\
             \"SELECT 'a,\"\"b\"\"'\nFROM t\",\"1500\",\"1\",\"SELECT 1\",\"\",\
             \"{\"\"masking\"\":{\"\"rules\"\":{\"\"email\"\":1}}}\"\r\n"
        );
        assert_eq!(CSV_COLUMNS.len(), 16);
    }

    #[test]
    fn csv_fields_never_start_a_formula() {
        for (statement, field) in [
            (
                "=HYPERLINK(\"http://x\")",
                "\"'=HYPERLINK(\"\"http://x\"\")\"",
            ),
            ("+1", "\"'+1\""),
            ("-- comment\nSELECT 1", "\"'-- comment\nSELECT 1\""),
            ("@SUM(A1)", "\"'@SUM(A1)\""),
            ("SELECT 1", "\"SELECT 1\""),
        ] {
            let e = AuditEventView {
                id: "s1:3".into(),
                session_id: "s1".into(),
                seq: 3,
                event: "statement".into(),
                identity: "alice@example.com".into(),
                resource: "pg-prod".into(),
                statement: Some(statement.into()),
                kinds: vec![],
                protocol: None,
                parameter_count: None,
                duration_us: None,
                command_tag: None,
                rows: None,
                error: None,
                decision: None,
                rule: None,
                detail: None,
                at: chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap(),
            };
            let mut out = Vec::new();
            csv_row(&mut out, &e).unwrap();
            let line = String::from_utf8(out).unwrap();
            assert!(
                line.contains(&format!(",{field},")),
                "{statement:?}: {line}"
            );
        }
    }
}
