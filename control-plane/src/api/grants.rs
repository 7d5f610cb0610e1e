//! Grants: request, list, read (optionally waiting for a decision), approve,
//! deny and revoke.
//!
//! The requester and the approver are always the authenticated caller. A
//! decision's body takes only an optional `comment`; any other field (an
//! `approver`, say) is a 400, and the attempt is audited as refused.

use super::{ApiError, Caller, ErrorBody};
use crate::grants::{GrantRequest, GrantView};
use crate::service::{ControlPlane, Principal};
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use std::time::Duration;

/// Longest a read may wait for a decision.
const MAX_WAIT: Duration = Duration::from_secs(60);
/// How often a waiting read looks at the store, for changes made on replicas
/// it does not hear from.
const WAIT_POLL: Duration = Duration::from_millis(500);

/// A grant request.
#[derive(Debug, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateGrantBody {
    pub resource: String,
    /// e.g. `read-only`, `read-write`: a level a `[[grant]]` rule allows.
    pub level: String,
    /// How long, once approved: `30m`, `2h`, ...; at most the rule's `max_duration`.
    pub duration: String,
    /// Why you need access; required.
    pub reason: String,
    pub ticket: Option<String>,
}

#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct GrantListQuery {
    /// `true`: the grants you requested. `false` (default): the grants you may decide now.
    pub mine: Option<bool>,
}

#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct GrantGetQuery {
    /// Seconds to wait (at most 60) while the grant is pending.
    pub wait: Option<u64>,
}

#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct GrantList {
    /// Newest first.
    pub grants: Vec<GrantView>,
}

/// The body of an approve, deny or revoke request. It may be empty.
#[derive(Debug, Default, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GrantDecisionBody {
    /// Shown to the requester and kept in the audit log.
    pub comment: Option<String>,
}

#[utoipa::path(post, path = "/api/v1/grants", request_body = CreateGrantBody,
    responses((status = 201, body = GrantView),
               (status = 400, body = ErrorBody, description = "unknown resource or level, duration past the cap, no reason"),
               (status = 403, body = ErrorBody, description = "no requester binding for the resource")),
    security(("bearer" = [])))]
pub async fn create(
    State(cp): State<ControlPlane>,
    Caller(p): Caller,
    body: Result<Json<CreateGrantBody>, axum::extract::rejection::JsonRejection>,
) -> Result<(StatusCode, Json<GrantView>), ApiError> {
    let Json(b) = body.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let duration = countersign_common::parse_duration(&b.duration)
        .map_err(|e| ApiError::BadRequest(format!("duration: {e}")))?;
    let req = GrantRequest {
        resource: b.resource,
        level: b.level,
        duration_secs: duration.as_secs(),
        reason: b.reason,
        ticket: b.ticket,
    };
    Ok((StatusCode::CREATED, Json(cp.request_grant(&p, req).await?)))
}

#[utoipa::path(get, path = "/api/v1/grants", params(GrantListQuery),
    responses((status = 200, body = GrantList), (status = 400, body = ErrorBody),
               (status = 401, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn list(
    State(cp): State<ControlPlane>,
    Caller(p): Caller,
    query: Result<Query<GrantListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<GrantList>, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    Ok(Json(GrantList {
        grants: cp.list_grants(&p, q.mine.unwrap_or(false)).await?,
    }))
}

#[utoipa::path(get, path = "/api/v1/grants/{id}",
    params(("id" = String, Path), GrantGetQuery),
    responses((status = 200, body = GrantView), (status = 403, body = ErrorBody),
               (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn get(
    State(cp): State<ControlPlane>,
    Caller(p): Caller,
    Path(id): Path<String>,
    query: Result<Query<GrantGetQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<GrantView>, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let wait = Duration::from_secs(q.wait.unwrap_or(0)).min(MAX_WAIT);
    let deadline = tokio::time::Instant::now() + wait;
    let mut changes = cp.review_changes();
    loop {
        let view = cp
            .grant_as(&p, &id)
            .await?
            .ok_or_else(|| ApiError::NotFound(format!("no grant {id:?}")))?;
        let now = tokio::time::Instant::now();
        if view.status != "pending" || now >= deadline {
            return Ok(Json(view));
        }
        let nap = (deadline - now).min(WAIT_POLL);
        tokio::select! {
            _ = changes.recv() => {}
            _ = tokio::time::sleep(nap) => {}
        }
    }
}

#[utoipa::path(post, path = "/api/v1/grants/{id}/approve",
    params(("id" = String, Path)), request_body = GrantDecisionBody,
    responses((status = 200, body = GrantView),
               (status = 400, body = ErrorBody, description = "malformed body, or the grant is decided or expired"),
               (status = 403, body = ErrorBody, description = "segregation of duties: you may not approve this grant"),
               (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn approve(
    State(cp): State<ControlPlane>,
    Caller(p): Caller,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<GrantView>, ApiError> {
    decide(&cp, &p, &id, true, &body).await
}

#[utoipa::path(post, path = "/api/v1/grants/{id}/deny",
    params(("id" = String, Path)), request_body = GrantDecisionBody,
    responses((status = 200, body = GrantView),
               (status = 400, body = ErrorBody, description = "malformed body, or the grant is decided or expired"),
               (status = 403, body = ErrorBody, description = "segregation of duties: you may not deny this grant"),
               (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn deny(
    State(cp): State<ControlPlane>,
    Caller(p): Caller,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<GrantView>, ApiError> {
    decide(&cp, &p, &id, false, &body).await
}

#[utoipa::path(post, path = "/api/v1/grants/{id}/revoke",
    params(("id" = String, Path)), request_body = GrantDecisionBody,
    responses((status = 200, body = GrantView),
               (status = 400, body = ErrorBody, description = "the grant is not active"),
               (status = 403, body = ErrorBody, description = "only the requester, its approvers and admins may revoke"),
               (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn revoke(
    State(cp): State<ControlPlane>,
    Caller(p): Caller,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<GrantView>, ApiError> {
    let b = parse_body(&body)
        .map_err(|e| ApiError::BadRequest(format!("malformed revoke body: {e}")))?;
    Ok(Json(cp.revoke_grant(&id, &p, b.comment).await?))
}

fn parse_body(body: &[u8]) -> Result<GrantDecisionBody, serde_json::Error> {
    if body.trim_ascii().is_empty() {
        Ok(GrantDecisionBody::default())
    } else {
        serde_json::from_slice(body)
    }
}

async fn decide(
    cp: &ControlPlane,
    p: &Principal,
    id: &str,
    approve: bool,
    body: &[u8],
) -> Result<Json<GrantView>, ApiError> {
    let req = match parse_body(body) {
        Ok(req) => req,
        Err(e) => {
            let reason = format!(
                "malformed decision body: {e}; it takes only an optional \"comment\", \
                 and the approver is always the caller"
            );
            // Audited like any refusal; a failure to audit must not hide the 400.
            if let Err(audit) = cp.audit_review_refusal(id, p, approve, &reason).await {
                tracing::info!(grant = %id, error = %audit, "refused decision not audited");
            }
            return Err(ApiError::BadRequest(reason));
        }
    };
    Ok(Json(cp.decide_grant(id, p, approve, req.comment).await?))
}
