//! Identities (people) and service accounts.

use super::{ApiError, Caller, ErrorBody, JsonBody};
use crate::service::{ControlPlane, validate_identity_name, validate_name};
use crate::store::identities::{Identity, IdentityKind};
use axum::Json;
use axum::extract::State;

#[derive(Debug, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateIdentity {
    pub email: String,
    pub display_name: Option<String>,
    #[serde(default)]
    pub groups: Vec<String>,
}

#[derive(Debug, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateServiceAccount {
    /// A name such as `ci-deploy`.
    pub name: String,
    #[serde(default)]
    pub groups: Vec<String>,
}

#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct IdentityList {
    pub identities: Vec<Identity>,
}

#[utoipa::path(get, path = "/api/v1/identities",
    responses((status = 200, body = IdentityList), (status = 403, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn list(
    State(cp): State<ControlPlane>,
    Caller(p): Caller,
) -> Result<Json<IdentityList>, ApiError> {
    cp.require_admin(&p)?;
    Ok(Json(IdentityList {
        identities: cp.store().list_identities().await?,
    }))
}

#[utoipa::path(post, path = "/api/v1/identities", request_body = CreateIdentity,
    responses((status = 200, body = Identity), (status = 409, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn create(
    State(cp): State<ControlPlane>,
    Caller(p): Caller,
    JsonBody(req): JsonBody<CreateIdentity>,
) -> Result<Json<Identity>, ApiError> {
    cp.require_admin(&p)?;
    create_identity(
        &cp,
        &req.email,
        IdentityKind::User,
        req.display_name.as_deref(),
        &req.groups,
    )
    .await
    .map(Json)
}

#[utoipa::path(post, path = "/api/v1/service-accounts", request_body = CreateServiceAccount,
    responses((status = 200, body = Identity), (status = 409, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn create_service_account(
    State(cp): State<ControlPlane>,
    Caller(p): Caller,
    JsonBody(req): JsonBody<CreateServiceAccount>,
) -> Result<Json<Identity>, ApiError> {
    cp.require_admin(&p)?;
    create_identity(&cp, &req.name, IdentityKind::Service, None, &req.groups)
        .await
        .map(Json)
}

async fn create_identity(
    cp: &ControlPlane,
    name: &str,
    kind: IdentityKind,
    display_name: Option<&str>,
    groups: &[String],
) -> Result<Identity, ApiError> {
    validate_identity_name(name)?;
    for g in groups {
        validate_name("group", g)?;
    }
    Ok(cp
        .store()
        .create_identity(name, kind, display_name, groups)
        .await?)
}
