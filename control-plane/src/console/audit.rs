//! Audit search and a session's timeline: auditors and admins only (the
//! same `require_auditor` check as the API); anyone else gets a 403 page.
//!
//! Search shows the newest events first, [`PAGE`] at a time; "older" links
//! carry a keyset cursor, so paging stays fast and stable while events
//! arrive. The export links point at `/api/v1/audit/export` with the same
//! filters, which the browser fetches with its session cookie.

use super::{ConsoleError, Nav, Viewer, render, when};
use crate::service::ControlPlane;
use crate::store::audit::{AuditCursor, AuditEventView, AuditFilter};
use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, NaiveDateTime, Utc};

/// Events per page.
const PAGE: u64 = 50;

/// Decisions a search may filter on.
const DECISIONS: [&str; 3] = ["allow", "deny", "review"];
/// Event types a search may filter on (as the API's `event`).
const EVENTS: [&str; 6] = [
    "session_started",
    "statement",
    "session_ended",
    "review",
    "grant",
    "auth",
];

/// The search form. Times are UTC, as `<input type="datetime-local">` sends
/// them (`2026-11-23T09:30`) or RFC 3339. Empty fields mean "any".
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SearchForm {
    #[serde(default)]
    pub identity: String,
    #[serde(default)]
    pub resource: String,
    #[serde(default)]
    pub since: String,
    #[serde(default)]
    pub until: String,
    #[serde(default)]
    pub decision: String,
    #[serde(default)]
    pub event: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub text: String,
    /// The cursor of the previous page's oldest event.
    #[serde(default)]
    pub before: String,
}

/// One event row as the page shows it.
pub struct EventRow {
    pub at: String,
    pub event: String,
    pub identity: String,
    pub resource: String,
    pub decision: String,
    pub rule: String,
    pub kinds: String,
    pub statement: String,
    pub duration: String,
    pub rows: String,
    pub masked: bool,
    pub error: String,
    pub session_href: Option<String>,
}

fn row(e: &AuditEventView) -> EventRow {
    let is_session = !e.session_id.contains(':');
    EventRow {
        at: when(&e.at),
        event: e.event.clone(),
        identity: e.identity.clone(),
        resource: e.resource.clone(),
        decision: e.decision.clone().unwrap_or_default(),
        rule: e.rule.clone().unwrap_or_default(),
        kinds: e.kinds.join(" "),
        statement: e.statement.clone().unwrap_or_default(),
        duration: e
            .duration_us
            .map(|us| format!("{:.1} ms", us as f64 / 1000.0))
            .unwrap_or_default(),
        rows: e.rows.map(|r| r.to_string()).unwrap_or_default(),
        masked: e.detail.as_ref().and_then(|d| d.get("masking")).is_some(),
        error: e.error.clone().unwrap_or_default(),
        session_href: is_session.then(|| format!("/sessions/{}", e.session_id)),
    }
}

#[derive(Template)]
#[template(path = "audit.html")]
struct AuditPage {
    nav: Nav,
    form: SearchForm,
    decisions: &'static [&'static str],
    events: &'static [&'static str],
    rows: Vec<EventRow>,
    older: Option<String>,
    export_csv: String,
    export_jsonl: String,
    error: Option<String>,
}

/// `GET /audit`
pub async fn search(
    State(cp): State<ControlPlane>,
    viewer: Viewer,
    query: Result<Query<SearchForm>, axum::extract::rejection::QueryRejection>,
) -> Response {
    if let Err(e) = cp.require_auditor(&viewer.principal) {
        return ConsoleError::from(e).for_viewer(&viewer).into_response();
    }
    let form = match query {
        Ok(Query(f)) => f,
        Err(e) => {
            return ConsoleError::new(StatusCode::BAD_REQUEST, e.body_text())
                .for_viewer(&viewer)
                .into_response();
        }
    };
    let filter = match filter(&form) {
        Ok(f) => f,
        Err(message) => return page(viewer.nav, form, Vec::new(), None, Some(message)),
    };
    let found = match cp.search_audit(&filter).await {
        Ok(found) => found,
        Err(e) => return ConsoleError::from(e).for_viewer(&viewer).into_response(),
    };
    // Newest first; one more than a page tells whether there are older ones.
    let mut newest: Vec<AuditEventView> = found.into_iter().rev().collect();
    let older = if newest.len() as u64 > PAGE {
        newest.truncate(PAGE as usize);
        newest.last().map(|e| {
            let cursor = format!("{}~{}~{}", e.at.timestamp_micros(), e.seq, e.session_id);
            let next = SearchForm {
                before: cursor,
                ..clone_form(&form)
            };
            format!("/audit?{}", query_string(&next, true))
        })
    } else {
        None
    };
    let rows = newest.iter().map(row).collect();
    page(viewer.nav, form, rows, older, None)
}

fn page(
    nav: Nav,
    form: SearchForm,
    rows: Vec<EventRow>,
    older: Option<String>,
    error: Option<String>,
) -> Response {
    let export = query_string(&form, false);
    let status = if error.is_some() {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::OK
    };
    render(
        status,
        &AuditPage {
            nav,
            export_csv: format!("/api/v1/audit/export?format=csv&{export}"),
            export_jsonl: format!("/api/v1/audit/export?format=jsonl&{export}"),
            form,
            decisions: &DECISIONS,
            events: &EVENTS,
            rows,
            older,
            error,
        },
    )
}

fn clone_form(f: &SearchForm) -> SearchForm {
    SearchForm {
        identity: f.identity.clone(),
        resource: f.resource.clone(),
        since: f.since.clone(),
        until: f.until.clone(),
        decision: f.decision.clone(),
        event: f.event.clone(),
        kind: f.kind.clone(),
        text: f.text.clone(),
        before: f.before.clone(),
    }
}

/// The form's non-empty fields as a query string: for the console (with the
/// cursor, times as typed) or for the export API (no cursor, RFC 3339 times).
fn query_string(f: &SearchForm, console: bool) -> String {
    let time = |s: &str| {
        if console {
            s.to_owned()
        } else {
            parse_time(s)
                .ok()
                .flatten()
                .map(|t| t.to_rfc3339())
                .unwrap_or_default()
        }
    };
    let mut pairs = vec![
        ("identity", f.identity.clone()),
        ("resource", f.resource.clone()),
        ("since", time(&f.since)),
        ("until", time(&f.until)),
        ("decision", f.decision.clone()),
        ("event", f.event.clone()),
        ("kind", f.kind.clone()),
        ("text", f.text.clone()),
    ];
    if console {
        pairs.push(("before", f.before.clone()));
    }
    pairs.retain(|(_, v)| !v.trim().is_empty());
    serde_urlencoded::to_string(&pairs).unwrap_or_default()
}

/// A time field: empty, `datetime-local` (taken as UTC), or RFC 3339.
fn parse_time(s: &str) -> Result<Option<DateTime<Utc>>, String> {
    let s = s.trim();
    if s.is_empty() {
        return Ok(None);
    }
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(Some(t.with_timezone(&Utc)));
    }
    for format in ["%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S"] {
        if let Ok(t) = NaiveDateTime::parse_from_str(s, format) {
            return Ok(Some(t.and_utc()));
        }
    }
    Err(format!(
        "{s:?} is not a time; use 2026-11-23T09:30 (UTC) or RFC 3339"
    ))
}

fn parse_cursor(s: &str) -> Result<Option<AuditCursor>, String> {
    if s.is_empty() {
        return Ok(None);
    }
    let bad = || "the page link is damaged; start the search again".to_owned();
    let mut parts = s.splitn(3, '~');
    let (Some(at), Some(seq), Some(session)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(bad());
    };
    let at = at
        .parse::<i64>()
        .ok()
        .and_then(DateTime::<Utc>::from_timestamp_micros)
        .ok_or_else(bad)?;
    let seq = seq.parse::<i64>().map_err(|_| bad())?;
    Ok(Some((at, session.to_owned(), seq)))
}

fn filter(f: &SearchForm) -> Result<AuditFilter, String> {
    let opt = |s: &str| Some(s.trim().to_owned()).filter(|s| !s.is_empty());
    if !f.decision.is_empty() && !DECISIONS.contains(&f.decision.as_str()) {
        return Err(format!("unknown decision {:?}", f.decision));
    }
    if !f.event.is_empty() && !EVENTS.contains(&f.event.as_str()) {
        return Err(format!("unknown event type {:?}", f.event));
    }
    let kind = opt(&f.kind).map(|k| k.to_ascii_lowercase());
    if let Some(k) = &kind
        && !k.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
    {
        return Err(format!(
            "statement kind {k:?}: use a word such as select, insert, delete or ddl"
        ));
    }
    Ok(AuditFilter {
        identity: opt(&f.identity),
        resource: opt(&f.resource),
        session_id: None,
        event: opt(&f.event),
        text: Some(f.text.clone()).filter(|t| !t.is_empty()),
        since: parse_time(&f.since)?,
        until: parse_time(&f.until)?,
        decision: opt(&f.decision),
        kind,
        older_than: parse_cursor(f.before.trim())?,
        limit: PAGE + 1,
    })
}

#[derive(Template)]
#[template(path = "session.html")]
struct SessionPage {
    nav: Nav,
    id: String,
    identity: String,
    resource: String,
    started: String,
    ended: String,
    statements: u64,
    denied: u64,
    errors: u64,
    total_duration: String,
    total_rows: u64,
    rows: Vec<EventRow>,
}

/// `GET /sessions/{id}`: the session's events in order, with totals.
pub async fn session(
    State(cp): State<ControlPlane>,
    viewer: Viewer,
    Path(id): Path<String>,
) -> Response {
    if let Err(e) = cp.require_auditor(&viewer.principal) {
        return ConsoleError::from(e).for_viewer(&viewer).into_response();
    }
    let t = match cp.session_timeline(&id).await {
        Ok(t) => t,
        Err(e) => return ConsoleError::from(e).for_viewer(&viewer).into_response(),
    };
    let page = SessionPage {
        nav: viewer.nav,
        id: t.session_id.clone(),
        identity: t.identity.clone().unwrap_or_default(),
        resource: t.resource.clone().unwrap_or_default(),
        started: t.started_at.as_ref().map(when).unwrap_or_default(),
        ended: t
            .ended_at
            .as_ref()
            .map(when)
            .unwrap_or_else(|| "still open, or its end was not recorded".to_owned()),
        statements: t.statements,
        denied: t.denied,
        errors: t.errors,
        total_duration: format!("{:.1} ms", t.total_duration_us as f64 / 1000.0),
        total_rows: t.total_rows,
        // Rows here need no link to the session they are in.
        rows: t
            .events
            .iter()
            .map(|e| EventRow {
                session_href: None,
                ..row(e)
            })
            .collect(),
    };
    render(StatusCode::OK, &page)
}

#[cfg(test)]
mod tests {
    use super::{SearchForm, filter, parse_cursor, parse_time, query_string};

    #[test]
    fn times_take_datetime_local_and_rfc3339() {
        assert_eq!(parse_time("").unwrap(), None);
        let t = parse_time("2026-11-23T09:30").unwrap().unwrap();
        assert_eq!(t.to_rfc3339(), "2026-11-23T09:30:00+00:00");
        let t = parse_time("2026-11-23T10:30:00+01:00").unwrap().unwrap();
        assert_eq!(t.to_rfc3339(), "2026-11-23T09:30:00+00:00");
        assert!(parse_time("yesterday").is_err());
    }

    #[test]
    fn cursors_round_trip_and_reject_damage() {
        let (at, session, seq) = parse_cursor("1700000000000000~4~review:abc~d")
            .unwrap()
            .unwrap();
        assert_eq!(at.timestamp(), 1_700_000_000);
        assert_eq!((session.as_str(), seq), ("review:abc~d", 4));
        assert!(parse_cursor("x~1~s").is_err());
        assert!(parse_cursor("1~s").is_err());
        assert_eq!(parse_cursor("").unwrap(), None);
    }

    #[test]
    fn filters_refuse_unknown_values_and_export_links_drop_the_cursor() {
        let bad = SearchForm {
            decision: "maybe".into(),
            ..SearchForm::default()
        };
        assert!(filter(&bad).is_err());
        let bad = SearchForm {
            kind: "select%".into(),
            ..SearchForm::default()
        };
        assert!(filter(&bad).is_err());
        let form = SearchForm {
            text: "DELETE FROM t".into(),
            since: "2026-11-23T09:30".into(),
            before: "1~1~s".into(),
            ..SearchForm::default()
        };
        assert_eq!(
            query_string(&form, false),
            "since=2026-11-23T09%3A30%3A00%2B00%3A00&text=DELETE+FROM+t"
        );
        assert!(query_string(&form, true).contains("before=1%7E1%7Es"));
    }
}
