//! Gateway enrollment tokens and enrolled gateways (admins only).

use super::{ApiError, Caller, ErrorBody, JsonBody};
use crate::enrollment::CreatedEnrollmentToken;
use crate::service::ControlPlane;
use crate::store::gateways::GatewayRecord;
use axum::Json;
use axum::extract::State;
use std::time::Duration;

/// Body of `POST /api/v1/gateways/enrollment-tokens`.
#[derive(Debug, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewEnrollmentToken {
    /// The environment the enrolled gateway will serve.
    pub environment: String,
    /// How long the token stays usable, in seconds; default 3600, at most 604800 (7 days).
    pub ttl_seconds: Option<u64>,
}

#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct GatewayList {
    pub gateways: Vec<GatewayRecord>,
}

#[utoipa::path(post, path = "/api/v1/gateways/enrollment-tokens",
    request_body = NewEnrollmentToken,
    responses((status = 200, body = CreatedEnrollmentToken), (status = 400, body = ErrorBody),
               (status = 403, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn create_token(
    State(cp): State<ControlPlane>,
    Caller(p): Caller,
    JsonBody(body): JsonBody<NewEnrollmentToken>,
) -> Result<Json<CreatedEnrollmentToken>, ApiError> {
    let ttl = Duration::from_secs(body.ttl_seconds.unwrap_or(3600));
    let created = cp
        .create_enrollment_token(&p, &body.environment, ttl)
        .await?;
    tracing::info!(environment = %created.environment, expires_at = %created.expires_at, by = p.name(), "gateway enrollment token created");
    Ok(Json(created))
}

#[utoipa::path(get, path = "/api/v1/gateways",
    responses((status = 200, body = GatewayList), (status = 403, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn list(
    State(cp): State<ControlPlane>,
    Caller(p): Caller,
) -> Result<Json<GatewayList>, ApiError> {
    Ok(Json(GatewayList {
        gateways: cp.list_gateways(&p).await?,
    }))
}

#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct GatewayCa {
    /// The gateway CA certificate (PEM): gateways' `control_plane_ca`.
    pub ca_pem: String,
}

#[utoipa::path(get, path = "/api/v1/gateways/ca",
    responses((status = 200, body = GatewayCa), (status = 400, body = ErrorBody),
               (status = 403, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn ca(
    State(cp): State<ControlPlane>,
    Caller(p): Caller,
) -> Result<Json<GatewayCa>, ApiError> {
    cp.require_admin(&p)?;
    let ca = cp.ca().ok_or_else(|| {
        ApiError::BadRequest(
            "this control plane has no gateway CA: configure [grpc_tls]".to_owned(),
        )
    })?;
    Ok(Json(GatewayCa {
        ca_pem: ca.cert_pem().to_owned(),
    }))
}
