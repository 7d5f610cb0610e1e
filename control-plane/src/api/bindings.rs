//! Role bindings: who holds requester, approver, admin or auditor, and where.

use super::{ApiError, Caller, ErrorBody, JsonBody};
use crate::service::ControlPlane;
use crate::store::role_bindings::{RoleBinding, RoleBindingSpec};
use axum::Json;
use axum::extract::{Path, State};

#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct BindingList {
    pub bindings: Vec<RoleBinding>,
}

/// Every binding, oldest first. Admins and auditors.
#[utoipa::path(get, path = "/api/v1/bindings",
    responses((status = 200, body = BindingList), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn list(
    State(cp): State<ControlPlane>,
    Caller(p): Caller,
) -> Result<Json<BindingList>, ApiError> {
    cp.require_auditor(&p)?;
    Ok(Json(BindingList {
        bindings: cp.list_bindings().await?,
    }))
}

/// Creates a binding. Admins only; 409 if the same binding exists.
#[utoipa::path(post, path = "/api/v1/bindings", request_body = RoleBindingSpec,
    responses((status = 201, body = RoleBinding), (status = 400, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 409, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn create(
    State(cp): State<ControlPlane>,
    Caller(p): Caller,
    JsonBody(spec): JsonBody<RoleBindingSpec>,
) -> Result<(axum::http::StatusCode, Json<RoleBinding>), ApiError> {
    cp.require_admin(&p)?;
    let binding = cp.create_binding(&spec, p.name()).await?;
    Ok((axum::http::StatusCode::CREATED, Json(binding)))
}

/// Deletes a binding. Admins only. A binding a policy declared comes back
/// when that policy is applied again.
#[utoipa::path(delete, path = "/api/v1/bindings/{id}",
    params(("id" = String, Path)),
    responses((status = 204), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn remove(
    State(cp): State<ControlPlane>,
    Caller(p): Caller,
    Path(id): Path<String>,
) -> Result<axum::http::StatusCode, ApiError> {
    cp.require_admin(&p)?;
    if cp.delete_binding(&id).await? {
        Ok(axum::http::StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound(format!("no role binding {id:?}")))
    }
}
