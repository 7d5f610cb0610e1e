//! Policy versions: apply, list, read, and replay a draft against audit history.

use super::{ApiError, Caller, ErrorBody, JsonBody};
use crate::replay::ReplayReport;
use crate::service::ControlPlane;
use crate::store::policies::PolicyVersion;
use axum::Json;
use axum::extract::{Path, State};
use chrono::{DateTime, Utc};

#[derive(Debug, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PolicyText {
    /// The policy file (TOML).
    pub text: String,
}

#[derive(Debug, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReplayRequest {
    /// The draft policy (TOML).
    pub text: String,
    /// Replay statements recorded at or after this time.
    pub since: DateTime<Utc>,
}

#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct PolicyList {
    /// Newest first; `text` is empty here, fetch a version for it.
    pub policies: Vec<PolicyVersion>,
}

#[utoipa::path(post, path = "/api/v1/policies", request_body = PolicyText,
    responses((status = 200, body = PolicyVersion), (status = 400, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn apply(
    State(cp): State<ControlPlane>,
    Caller(p): Caller,
    JsonBody(req): JsonBody<PolicyText>,
) -> Result<Json<PolicyVersion>, ApiError> {
    cp.require_admin(&p)?;
    let v = cp.apply_policy(&req.text, p.name()).await?;
    tracing::info!(version = v.version, by = p.name(), "policy applied");
    Ok(Json(v))
}

#[utoipa::path(get, path = "/api/v1/policies",
    responses((status = 200, body = PolicyList)), security(("bearer" = [])))]
pub async fn list(
    State(cp): State<ControlPlane>,
    Caller(p): Caller,
) -> Result<Json<PolicyList>, ApiError> {
    cp.require_auditor(&p)?;
    Ok(Json(PolicyList {
        policies: cp.store().list_policies().await?,
    }))
}

#[utoipa::path(get, path = "/api/v1/policies/{version}",
    params(("version" = String, Path, description = "a version number, or `active`")),
    responses((status = 200, body = PolicyVersion), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn get(
    State(cp): State<ControlPlane>,
    Caller(p): Caller,
    Path(version): Path<String>,
) -> Result<Json<PolicyVersion>, ApiError> {
    cp.require_auditor(&p)?;
    let found = if version == "active" {
        cp.store().latest_policy().await?
    } else {
        let v: u64 = version
            .parse()
            .map_err(|_| ApiError::BadRequest(format!("{version:?} is not a version number")))?;
        cp.store().policy(v).await?
    };
    found
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("no policy version {version}")))
}

#[utoipa::path(post, path = "/api/v1/policies/replay", request_body = ReplayRequest,
    responses((status = 200, body = ReplayReport), (status = 400, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn replay(
    State(cp): State<ControlPlane>,
    Caller(p): Caller,
    JsonBody(req): JsonBody<ReplayRequest>,
) -> Result<Json<ReplayReport>, ApiError> {
    cp.require_auditor(&p)?;
    Ok(Json(cp.replay_policy(&req.text, req.since).await?))
}
