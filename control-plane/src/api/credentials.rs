//! Service-account credentials and their exchange for access tokens.
//!
//! Admin routes manage API keys and workload trust. `POST /api/v1/auth/token`
//! and `POST /api/v1/auth/workload` take no access token: the credential in
//! the request is the authentication.

use super::{ApiError, Caller, ErrorBody, JsonBody};
use crate::credentials::keys::CreatedApiKey;
use crate::service::{ControlPlane, IssuedToken};
use crate::store::credentials::{ApiKeyRecord, WorkloadTrust};
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::HeaderMap;

#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct ApiKeyList {
    pub keys: Vec<ApiKeyRecord>,
}

/// Optional body of `POST /api/v1/auth/token`.
#[derive(Debug, Default, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExchangeOptions {
    /// Lifetime in seconds; default 900, at most 3600.
    pub ttl_seconds: Option<u64>,
}

#[derive(Debug, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WorkloadExchange {
    pub service_account: String,
    /// The pipeline's OIDC token (a JWT).
    pub token: String,
    /// Lifetime in seconds; default 900, at most 3600.
    pub ttl_seconds: Option<u64>,
}

#[utoipa::path(post, path = "/api/v1/service-accounts/{name}/keys",
    params(("name" = String, Path, description = "service account")),
    responses((status = 200, body = CreatedApiKey), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn create_key(
    State(cp): State<ControlPlane>,
    Caller(p): Caller,
    Path(name): Path<String>,
) -> Result<Json<CreatedApiKey>, ApiError> {
    cp.require_admin(&p)?;
    let created = cp.create_api_key(&name).await?;
    tracing::info!(service_account = %name, key_id = %created.id, by = p.name(), "api key created");
    Ok(Json(created))
}

#[utoipa::path(get, path = "/api/v1/service-accounts/{name}/keys",
    params(("name" = String, Path, description = "service account")),
    responses((status = 200, body = ApiKeyList), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn list_keys(
    State(cp): State<ControlPlane>,
    Caller(p): Caller,
    Path(name): Path<String>,
) -> Result<Json<ApiKeyList>, ApiError> {
    cp.require_admin(&p)?;
    Ok(Json(ApiKeyList {
        keys: cp.list_api_keys(&name).await?,
    }))
}

#[utoipa::path(delete, path = "/api/v1/service-accounts/{name}/keys/{id}",
    params(("name" = String, Path, description = "service account"),
           ("id" = String, Path, description = "key id")),
    responses((status = 200, body = ApiKeyRecord), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn revoke_key(
    State(cp): State<ControlPlane>,
    Caller(p): Caller,
    Path((name, id)): Path<(String, String)>,
) -> Result<Json<ApiKeyRecord>, ApiError> {
    cp.require_admin(&p)?;
    let record = cp.revoke_api_key(&name, &id).await?;
    tracing::info!(service_account = %name, key_id = %id, by = p.name(), "api key revoked");
    Ok(Json(record))
}

#[utoipa::path(put, path = "/api/v1/service-accounts/{name}/workload",
    params(("name" = String, Path, description = "service account")),
    request_body = WorkloadTrust,
    responses((status = 200, body = WorkloadTrust), (status = 400, body = ErrorBody),
               (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn set_workload(
    State(cp): State<ControlPlane>,
    Caller(p): Caller,
    Path(name): Path<String>,
    JsonBody(trust): JsonBody<WorkloadTrust>,
) -> Result<Json<WorkloadTrust>, ApiError> {
    cp.require_admin(&p)?;
    cp.set_workload_trust(&name, &trust).await?;
    tracing::info!(service_account = %name, issuer = %trust.issuer, by = p.name(), "workload trust set");
    Ok(Json(trust))
}

#[utoipa::path(post, path = "/api/v1/auth/token", request_body = Option<ExchangeOptions>,
    responses((status = 200, body = IssuedToken), (status = 400, body = ErrorBody),
               (status = 401, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn exchange_key(
    State(cp): State<ControlPlane>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<IssuedToken>, ApiError> {
    let key = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|h| h.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|k| !k.is_empty())
        .ok_or(ApiError::NoCredentials)?;
    let options: ExchangeOptions = if body.iter().all(u8::is_ascii_whitespace) {
        ExchangeOptions::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| ApiError::BadRequest(e.to_string()))?
    };
    let issued = cp.exchange_api_key(key, options.ttl_seconds).await?;
    tracing::info!(identity = %issued.identity, token_id = %issued.token_id, "api key exchanged");
    Ok(Json(issued))
}

#[utoipa::path(post, path = "/api/v1/auth/workload", request_body = WorkloadExchange,
    responses((status = 200, body = IssuedToken), (status = 400, body = ErrorBody),
               (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn exchange_workload(
    State(cp): State<ControlPlane>,
    JsonBody(req): JsonBody<WorkloadExchange>,
) -> Result<Json<IssuedToken>, ApiError> {
    let issued = cp
        .exchange_workload(&req.service_account, &req.token, req.ttl_seconds)
        .await?;
    tracing::info!(identity = %issued.identity, token_id = %issued.token_id, "workload token exchanged");
    Ok(Json(issued))
}
