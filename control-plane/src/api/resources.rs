//! Resources that gateways serve.

use super::{ApiError, Caller, ErrorBody, JsonBody};
use crate::service::ControlPlane;
use crate::store::resources::{Resource, ResourceSpec};
use axum::Json;
use axum::extract::{Path, State};

#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct ResourceList {
    pub resources: Vec<Resource>,
}

#[utoipa::path(get, path = "/api/v1/resources",
    responses((status = 200, body = ResourceList), (status = 401, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn list(
    State(cp): State<ControlPlane>,
    Caller(_): Caller,
) -> Result<Json<ResourceList>, ApiError> {
    Ok(Json(ResourceList {
        resources: cp.store().list_resources().await?,
    }))
}

#[utoipa::path(post, path = "/api/v1/resources", request_body = ResourceSpec,
    responses((status = 200, body = Resource), (status = 400, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn upsert(
    State(cp): State<ControlPlane>,
    Caller(p): Caller,
    JsonBody(spec): JsonBody<ResourceSpec>,
) -> Result<Json<Resource>, ApiError> {
    cp.require_admin(&p)?;
    Ok(Json(cp.upsert_resource(&spec).await?))
}

#[utoipa::path(delete, path = "/api/v1/resources/{name}",
    params(("name" = String, Path)),
    responses((status = 204), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn remove(
    State(cp): State<ControlPlane>,
    Caller(p): Caller,
    Path(name): Path<String>,
) -> Result<axum::http::StatusCode, ApiError> {
    cp.require_admin(&p)?;
    if cp.delete_resource(&name).await? {
        Ok(axum::http::StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound(format!("no resource named {name:?}")))
    }
}
