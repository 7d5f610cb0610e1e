//! `POST /api/v1/tokens` mints an access token; `DELETE /api/v1/tokens/{id}` revokes one.

use super::{ApiError, Caller, ErrorBody, JsonBody};
use crate::service::{ControlPlane, IssuedToken};
use crate::store::tokens::TokenRecord;
use axum::Json;
use axum::extract::{Path, State};
use std::time::Duration;

#[derive(Debug, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateToken {
    /// The identity (email) the token is for; a user is created if missing.
    pub identity: String,
    /// Groups added to the identity's own for this token.
    #[serde(default)]
    pub groups: Vec<String>,
    /// Lifetime in seconds; defaults to the server's default, capped by its maximum.
    pub ttl_seconds: Option<u64>,
}

#[utoipa::path(post, path = "/api/v1/tokens", request_body = CreateToken,
    responses((status = 200, body = IssuedToken), (status = 400, body = ErrorBody),
               (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn create(
    State(cp): State<ControlPlane>,
    Caller(p): Caller,
    JsonBody(req): JsonBody<CreateToken>,
) -> Result<Json<IssuedToken>, ApiError> {
    cp.require_admin(&p)?;
    let ttl = req.ttl_seconds.map(Duration::from_secs);
    let issued = cp
        .issue_token(&req.identity, &req.groups, ttl, p.name())
        .await?;
    tracing::info!(identity = %issued.identity, token_id = %issued.token_id, by = p.name(), "token issued");
    Ok(Json(issued))
}

#[utoipa::path(delete, path = "/api/v1/tokens/{id}",
    params(("id" = String, Path, description = "token id, or the token itself")),
    responses((status = 200, body = TokenRecord), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn revoke(
    State(cp): State<ControlPlane>,
    Caller(p): Caller,
    Path(id): Path<String>,
) -> Result<Json<TokenRecord>, ApiError> {
    cp.require_admin(&p)?;
    let record = cp.revoke_token(&id).await?;
    tracing::info!(token_id = %record.id, by = p.name(), "token revoked");
    Ok(Json(record))
}
