//! Reviews: list, read, approve and deny.
//!
//! The approver is always the authenticated caller. A decision's body takes
//! only an optional `comment` and, for an approval, its `scope`: `once` (the
//! default) or `fingerprint` with `minutes`. Any other field (an `approver`,
//! say) is a 400, and the attempt is audited as refused.

use super::{ApiError, Caller, ErrorBody};
use crate::reviews::ReviewView;
use crate::service::{ControlPlane, Principal};
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};

#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ReviewQuery {
    /// `true`: the reviews you requested. `false` (default): the reviews you may decide now.
    pub mine: Option<bool>,
}

#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct ReviewList {
    /// Newest first.
    pub reviews: Vec<ReviewView>,
}

/// The body of an approve or deny request. It may be empty.
#[derive(Debug, Default, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DecisionBody {
    /// Shown to the requester and kept in the audit log.
    pub comment: Option<String>,
    /// Approvals only. Default `once`: this execution. `fingerprint`: also
    /// the same statement shape, by the same requester on the same resource,
    /// for `minutes`.
    pub scope: Option<Scope>,
    /// With `scope = "fingerprint"` only: 1 up to the review's `max_approval_minutes`.
    pub minutes: Option<u32>,
}

/// What an approval covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    Once,
    Fingerprint,
}

impl DecisionBody {
    /// The approval's scope in minutes (`None`: once), or why the body is wrong.
    fn scope_minutes(&self, approve: bool) -> Result<Option<u32>, String> {
        match (self.scope, self.minutes) {
            (None | Some(Scope::Once), None) => Ok(None),
            _ if !approve => Err("a denial takes no \"scope\" or \"minutes\"".to_owned()),
            (Some(Scope::Fingerprint), Some(m)) => Ok(Some(m)),
            (Some(Scope::Fingerprint), None) => {
                Err("scope \"fingerprint\" needs \"minutes\"".to_owned())
            }
            (None | Some(Scope::Once), Some(_)) => {
                Err("\"minutes\" applies only to scope \"fingerprint\"".to_owned())
            }
        }
    }
}

#[utoipa::path(get, path = "/api/v1/reviews", params(ReviewQuery),
    responses((status = 200, body = ReviewList), (status = 400, body = ErrorBody),
               (status = 401, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn list(
    State(cp): State<ControlPlane>,
    Caller(p): Caller,
    query: Result<Query<ReviewQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<ReviewList>, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    Ok(Json(ReviewList {
        reviews: cp.list_reviews(&p, q.mine.unwrap_or(false)).await?,
    }))
}

#[utoipa::path(get, path = "/api/v1/reviews/{id}",
    params(("id" = String, Path)),
    responses((status = 200, body = ReviewView), (status = 403, body = ErrorBody),
               (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn get(
    State(cp): State<ControlPlane>,
    Caller(p): Caller,
    Path(id): Path<String>,
) -> Result<Json<ReviewView>, ApiError> {
    cp.review_as(&p, &id)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("no review {id:?}")))
}

#[utoipa::path(post, path = "/api/v1/reviews/{id}/approve",
    params(("id" = String, Path)), request_body = DecisionBody,
    responses((status = 200, body = ReviewView),
               (status = 400, body = ErrorBody, description = "malformed body, or the review is decided or expired"),
               (status = 403, body = ErrorBody, description = "segregation of duties: you may not approve this review"),
               (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn approve(
    State(cp): State<ControlPlane>,
    Caller(p): Caller,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<ReviewView>, ApiError> {
    decide(&cp, &p, &id, true, &body).await
}

#[utoipa::path(post, path = "/api/v1/reviews/{id}/deny",
    params(("id" = String, Path)), request_body = DecisionBody,
    responses((status = 200, body = ReviewView),
               (status = 400, body = ErrorBody, description = "malformed body, or the review is decided or expired"),
               (status = 403, body = ErrorBody, description = "segregation of duties: you may not deny this review"),
               (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn deny(
    State(cp): State<ControlPlane>,
    Caller(p): Caller,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<ReviewView>, ApiError> {
    decide(&cp, &p, &id, false, &body).await
}

async fn decide(
    cp: &ControlPlane,
    p: &Principal,
    id: &str,
    approve: bool,
    body: &[u8],
) -> Result<Json<ReviewView>, ApiError> {
    let parsed = if body.trim_ascii().is_empty() {
        Ok(DecisionBody::default())
    } else {
        serde_json::from_slice::<DecisionBody>(body)
    };
    let checked = parsed
        .map_err(|e| {
            format!(
                "malformed decision body: {e}; it takes only an optional \"comment\" \
                 (and, to approve, \"scope\" and \"minutes\"), and the approver is \
                 always the caller"
            )
        })
        .and_then(|req| {
            let scope = req
                .scope_minutes(approve)
                .map_err(|e| format!("malformed decision body: {e}"))?;
            Ok((req, scope))
        });
    let (req, scope) = match checked {
        Ok(checked) => checked,
        Err(reason) => {
            // Audited like any refusal; a failure to audit must not hide the 400.
            if let Err(audit) = cp.audit_review_refusal(id, p, approve, &reason).await {
                tracing::info!(review = %id, error = %audit, "refused decision not audited");
            }
            return Err(ApiError::BadRequest(reason));
        }
    };
    Ok(Json(
        cp.decide_review_scoped(id, p, approve, req.comment, scope)
            .await?,
    ))
}
