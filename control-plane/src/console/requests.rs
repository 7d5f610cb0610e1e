//! Inbox, my requests, a review's or grant's page, decisions, and the live
//! updates (server-sent events) for them.
//!
//! A decision is a console form (`CsrfForm`) that calls the same service
//! methods as the API, so every rule there holds: the approver is the
//! signed-in person, never their own request, every attempt audited. The
//! page hides the buttons from people who may not decide, but the refusal
//! that counts is the service's.

use super::{ConsoleError, Nav, Viewer, redirect, render, when};
use crate::api::ApiError;
use crate::api::sso::CsrfForm;
use crate::grants::GrantView;
use crate::reviews::{DecisionView, ReviewView, same_identity};
use crate::service::ControlPlane;
use askama::Template;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::{Stream, StreamExt};
use std::time::Duration;

/// Longest one event stream stays open; the browser then reconnects, which
/// checks the session again.
const EVENTS_MAX: Duration = Duration::from_secs(15 * 60);
/// Longest a live page goes without re-reading itself.
const EVENTS_FALLBACK: Duration = Duration::from_secs(10);

/// One row of a list: a review or a grant.
pub struct Row {
    pub href: String,
    pub kind: &'static str,
    pub requester: String,
    pub resource: String,
    pub summary: String,
    pub status: String,
    pub created: String,
}

impl Row {
    fn review(r: &ReviewView) -> Self {
        Self {
            href: format!("/reviews/{}", r.id),
            kind: "statement",
            requester: r.requester.clone(),
            resource: r.resource.clone(),
            summary: r.statement.clone(),
            status: r.status.clone(),
            created: when(&r.created_at),
        }
    }

    fn grant(g: &GrantView) -> Self {
        Self {
            href: format!("/grants/{}", g.id),
            kind: "access",
            requester: g.requester.clone(),
            resource: g.resource.clone(),
            summary: format!(
                "{} for {}: {}",
                g.level,
                humantime::format_duration(Duration::from_secs(g.duration_secs)),
                g.reason
            ),
            status: g.status.clone(),
            created: when(&g.created_at),
        }
    }
}

#[derive(Template)]
#[template(path = "list.html")]
struct ListPage {
    nav: Nav,
    title: &'static str,
    intro: &'static str,
    empty: &'static str,
    rows: Vec<Row>,
}

/// `GET /inbox`: what the viewer may decide now (never their own requests).
pub async fn inbox(State(cp): State<ControlPlane>, viewer: Viewer) -> Response {
    match rows(&cp, &viewer, false).await {
        Ok(rows) => render(
            StatusCode::OK,
            &ListPage {
                nav: viewer.nav,
                title: "Inbox",
                intro: "Statements and access requests waiting for your decision.",
                empty: "Nothing is waiting for you.",
                rows,
            },
        ),
        Err(e) => e.for_viewer(&viewer).into_response(),
    }
}

/// `GET /mine`: the viewer's own requests, newest first.
pub async fn mine(State(cp): State<ControlPlane>, viewer: Viewer) -> Response {
    match rows(&cp, &viewer, true).await {
        Ok(rows) => render(
            StatusCode::OK,
            &ListPage {
                nav: viewer.nav,
                title: "My requests",
                intro: "Statements you sent that were held for review, and access you asked for.",
                empty: "You have no requests.",
                rows,
            },
        ),
        Err(e) => e.for_viewer(&viewer).into_response(),
    }
}

async fn rows(cp: &ControlPlane, viewer: &Viewer, mine: bool) -> Result<Vec<Row>, ConsoleError> {
    let reviews = cp.list_reviews(&viewer.principal, mine).await?;
    let grants = cp.list_grants(&viewer.principal, mine).await?;
    let mut rows: Vec<(chrono::DateTime<chrono::Utc>, Row)> = reviews
        .iter()
        .map(|r| (r.created_at, Row::review(r)))
        .chain(grants.iter().map(|g| (g.created_at, Row::grant(g))))
        .collect();
    rows.sort_by_key(|row| std::cmp::Reverse(row.0));
    Ok(rows.into_iter().map(|(_, row)| row).collect())
}

/// One decision, as the page shows it.
pub struct Decision {
    pub approver: String,
    pub decision: String,
    pub comment: String,
    pub at: String,
    pub scope: String,
}

fn decisions(list: &[DecisionView]) -> Vec<Decision> {
    list.iter()
        .map(|d| Decision {
            approver: d.approver.clone(),
            decision: d.decision.clone(),
            comment: d.comment.clone().unwrap_or_default(),
            at: when(&d.at),
            scope: match d.scope_minutes {
                Some(m) => format!("this statement's shape for {m} min"),
                None if d.decision == "approve" => "this execution".to_owned(),
                None => String::new(),
            },
        })
        .collect()
}

/// A labelled fact on a request's page.
pub struct Fact {
    pub label: &'static str,
    pub value: String,
    pub href: Option<String>,
}

fn fact(label: &'static str, value: impl Into<String>) -> Fact {
    Fact {
        label,
        value: value.into(),
        href: None,
    }
}

#[derive(Template)]
#[template(path = "request.html")]
struct RequestPage {
    nav: Nav,
    title: String,
    action: String,
    statement: Option<String>,
    status: String,
    facts: Vec<Fact>,
    decisions: Vec<Decision>,
    /// Whether the viewer may decide now (shows the form).
    can_decide: bool,
    /// Why not, when the viewer is the requester.
    own: bool,
    error: Option<String>,
}

/// `GET /reviews/{id}`
pub async fn review(
    State(cp): State<ControlPlane>,
    viewer: Viewer,
    Path(id): Path<String>,
) -> Response {
    review_page(&cp, viewer, &id, StatusCode::OK, None).await
}

/// `GET /grants/{id}`
pub async fn grant(
    State(cp): State<ControlPlane>,
    viewer: Viewer,
    Path(id): Path<String>,
) -> Response {
    grant_page(&cp, viewer, &id, StatusCode::OK, None).await
}

async fn review_page(
    cp: &ControlPlane,
    viewer: Viewer,
    id: &str,
    status: StatusCode,
    error: Option<String>,
) -> Response {
    let found = match cp.review_as(&viewer.principal, id).await {
        Ok(Some(r)) => r,
        Ok(None) => {
            return ConsoleError::new(StatusCode::NOT_FOUND, format!("no review {id:?}"))
                .for_viewer(&viewer)
                .into_response();
        }
        Err(e) => return ConsoleError::from(e).for_viewer(&viewer).into_response(),
    };
    let own = same_identity(&viewer.nav.me, &found.requester);
    let can_decide = match may_decide(cp, &viewer, id, false, own, &found.status).await {
        Ok(b) => b,
        Err(e) => return e.for_viewer(&viewer).into_response(),
    };
    let mut facts = vec![
        fact("Requester", found.requester.clone()),
        fact("Resource", found.resource.clone()),
        fact("Statement kinds", found.kinds.join(", ")),
    ];
    facts.extend(statement_facts(&found.statement));
    facts.push(fact("Rule", found.rule.clone()));
    if let Some(m) = &found.message {
        facts.push(fact("Rule message", m.clone()));
    }
    facts.push(Fact {
        label: "Session",
        value: found.session_id.clone(),
        href: viewer
            .nav
            .auditor
            .then(|| format!("/sessions/{}", found.session_id)),
    });
    facts.push(fact(
        "Approvals",
        format!(
            "{} of {} needed, from {}",
            found
                .decisions
                .iter()
                .filter(|d| d.decision == "approve")
                .count(),
            found.approvals_required,
            found.approvers.join(", ")
        ),
    ));
    facts.push(fact("Opened", when(&found.created_at)));
    facts.push(fact("Expires", when(&found.expires_at)));
    let page = RequestPage {
        nav: viewer.nav,
        title: "Held statement".to_owned(),
        action: format!("/reviews/{id}/decide"),
        statement: Some(found.statement),
        status: found.status,
        facts,
        decisions: decisions(&found.decisions),
        can_decide,
        own,
        error,
    };
    render(status, &page)
}

async fn grant_page(
    cp: &ControlPlane,
    viewer: Viewer,
    id: &str,
    status: StatusCode,
    error: Option<String>,
) -> Response {
    let found = match cp.grant_as(&viewer.principal, id).await {
        Ok(Some(g)) => g,
        Ok(None) => {
            return ConsoleError::new(StatusCode::NOT_FOUND, format!("no grant {id:?}"))
                .for_viewer(&viewer)
                .into_response();
        }
        Err(e) => return ConsoleError::from(e).for_viewer(&viewer).into_response(),
    };
    let own = same_identity(&viewer.nav.me, &found.requester);
    let can_decide = match may_decide(cp, &viewer, id, true, own, &found.status).await {
        Ok(b) => b,
        Err(e) => return e.for_viewer(&viewer).into_response(),
    };
    let mut facts = vec![
        fact("Requester", found.requester.clone()),
        fact("Resource", found.resource.clone()),
        fact("Access level", found.level.clone()),
        fact(
            "Duration",
            humantime::format_duration(Duration::from_secs(found.duration_secs)).to_string(),
        ),
        fact("Reason", found.reason.clone()),
        fact(
            "Ticket",
            found.ticket.clone().unwrap_or_else(|| "none".to_owned()),
        ),
        fact("Rule", found.rule.clone()),
        fact(
            "Approvals",
            format!(
                "{} needed, from {}{}",
                found.approvals_required,
                found.approvers.join(", "),
                if found.one_from_each {
                    " (one from each)"
                } else {
                    ""
                }
            ),
        ),
        fact("Requested", when(&found.created_at)),
        fact("Decide by", when(&found.decide_by)),
    ];
    if let Some(t) = &found.active_until {
        facts.push(fact("Active until", when(t)));
    }
    if let (Some(t), Some(by)) = (&found.revoked_at, &found.revoked_by) {
        facts.push(fact("Revoked", format!("{} by {by}", when(t))));
    }
    let page = RequestPage {
        nav: viewer.nav,
        title: "Access request".to_owned(),
        action: format!("/grants/{id}/decide"),
        statement: None,
        status: found.status,
        facts,
        decisions: decisions(&found.decisions),
        can_decide,
        own,
        error,
    };
    render(status, &page)
}

/// What the classifier says about `sql`, beyond its kinds (which the review
/// recorded as the gateway saw them): tables, functions, a missing WHERE,
/// several statements, a parse failure.
fn statement_facts(sql: &str) -> Vec<Fact> {
    let facts = countersign_policy::classify(sql);
    let all = facts.all();
    let list = |items: Vec<String>| {
        let mut items = items;
        items.sort();
        items.dedup();
        items.join(", ")
    };
    let read = list(
        all.iter()
            .flat_map(|s| s.tables_read.iter().map(ToString::to_string))
            .collect(),
    );
    let written = list(
        all.iter()
            .flat_map(|s| s.tables_written.iter().map(ToString::to_string))
            .collect(),
    );
    let functions = list(all.iter().flat_map(|s| s.functions.clone()).collect());
    let mut out = Vec::new();
    if !read.is_empty() {
        out.push(fact("Tables read", read));
    }
    if !written.is_empty() {
        out.push(fact("Tables written", written));
    }
    if !functions.is_empty() {
        out.push(fact("Functions called", functions));
    }
    if all.iter().any(|s| s.without_where) {
        out.push(fact("Without WHERE", "yes: it touches every row"));
    }
    if facts.statements.len() > 1 {
        out.push(fact("Statements", facts.statements.len().to_string()));
    }
    if let Some(e) = &facts.parse_error {
        out.push(fact("Parse error", e.clone()));
    }
    out
}

/// Whether the viewer may decide request `id` now: pending, not their own,
/// and in their inbox (eligible, not yet decided by them). Only hides the
/// form; the service decides again when the form is posted.
async fn may_decide(
    cp: &ControlPlane,
    viewer: &Viewer,
    id: &str,
    grant: bool,
    own: bool,
    status: &str,
) -> Result<bool, ConsoleError> {
    if own || status != "pending" {
        return Ok(false);
    }
    Ok(if grant {
        cp.list_grants(&viewer.principal, false)
            .await?
            .iter()
            .any(|g| g.id == id)
    } else {
        cp.list_reviews(&viewer.principal, false)
            .await?
            .iter()
            .any(|r| r.id == id)
    })
}

/// The decision form: `decision` is `approve` or `deny`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecideForm {
    pub decision: String,
    pub comment: Option<String>,
}

/// `POST /reviews/{id}/decide`
pub async fn decide_review(
    State(cp): State<ControlPlane>,
    Path(id): Path<String>,
    form: Result<CsrfForm<DecideForm>, ApiError>,
) -> Response {
    decide(&cp, &id, false, form).await
}

/// `POST /grants/{id}/decide`
pub async fn decide_grant(
    State(cp): State<ControlPlane>,
    Path(id): Path<String>,
    form: Result<CsrfForm<DecideForm>, ApiError>,
) -> Response {
    decide(&cp, &id, true, form).await
}

async fn decide(
    cp: &ControlPlane,
    id: &str,
    grant: bool,
    form: Result<CsrfForm<DecideForm>, ApiError>,
) -> Response {
    let form = match form {
        Ok(f) => f,
        Err(e) => return ConsoleError::from(e).into_response(),
    };
    let viewer = match Viewer::new(cp, form.session).await {
        Ok(v) => v,
        Err(e) => return e.into_response(),
    };
    let approve = match form.form.decision.as_str() {
        "approve" => true,
        "deny" => false,
        other => {
            return ConsoleError::new(
                StatusCode::BAD_REQUEST,
                format!("decision must be approve or deny, not {other:?}"),
            )
            .for_viewer(&viewer)
            .into_response();
        }
    };
    let comment = form.form.comment.filter(|c| !c.trim().is_empty());
    let outcome = if grant {
        cp.decide_grant(id, &viewer.principal, approve, comment)
            .await
            .map(|_| ())
    } else {
        cp.decide_review(id, &viewer.principal, approve, comment)
            .await
            .map(|_| ())
    };
    match outcome {
        Ok(()) => redirect(&format!(
            "/{}/{id}",
            if grant { "grants" } else { "reviews" }
        )),
        Err(e) => {
            // The refusal is shown on the request's own page, with its status.
            let e = ConsoleError::from(e);
            let (status, message) = (e.status, e.message);
            if status == StatusCode::NOT_FOUND {
                return ConsoleError::new(status, message)
                    .for_viewer(&viewer)
                    .into_response();
            }
            let message = format!("Your decision was refused: {message}");
            if grant {
                grant_page(cp, viewer, id, status, Some(message)).await
            } else {
                review_page(cp, viewer, id, status, Some(message)).await
            }
        }
    }
}

/// `GET /console/events`: an event stream with one `change` event whenever
/// any review or grant changes, on this replica or (through the Redis bus)
/// on another, and at least every [`EVENTS_FALLBACK`], which covers changes
/// made on another replica while Redis is down (as the gateways' watchers
/// poll then). Events carry no ids or state: the page re-reads itself,
/// through the same checks as any page load.
pub async fn events(
    State(cp): State<ControlPlane>,
    _viewer: Viewer,
) -> Sse<impl Stream<Item = Result<Event, std::convert::Infallible>>> {
    // A lagged receiver missed some changes: that is still "something changed".
    let changes = tokio_stream::wrappers::BroadcastStream::new(cp.review_changes()).map(|_| ());
    let fallback = futures_util::stream::unfold((), |()| async {
        tokio::time::sleep(EVENTS_FALLBACK).await;
        Some(((), ()))
    });
    let stream = futures_util::stream::select(changes, fallback)
        .map(|()| Ok(Event::default().event("change").data("changed")))
        .take_until(tokio::time::sleep(EVENTS_MAX));
    Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}
