//! The OpenAPI document, generated from the handlers' annotations.

use utoipa::OpenApi;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};

#[derive(OpenApi)]
#[openapi(
    info(title = "Countersign control plane API", version = "1"),
    paths(
        super::identities::list,
        super::identities::create,
        super::identities::create_service_account,
        super::credentials::create_key,
        super::credentials::list_keys,
        super::credentials::revoke_key,
        super::credentials::set_workload,
        super::credentials::exchange_key,
        super::credentials::exchange_workload,
        super::resources::list,
        super::resources::upsert,
        super::resources::remove,
        super::tokens::create,
        super::tokens::revoke,
        super::audit::search,
        super::audit::verify,
        super::audit::export,
        super::audit::timeline,
        super::policies::apply,
        super::policies::list,
        super::policies::get,
        super::policies::replay,
        super::reviews::list,
        super::reviews::get,
        super::reviews::approve,
        super::reviews::deny,
        super::grants::create,
        super::grants::list,
        super::grants::get,
        super::grants::approve,
        super::grants::deny,
        super::grants::revoke,
        super::bindings::list,
        super::bindings::create,
        super::bindings::remove,
        super::sso::login,
        super::sso::callback,
        super::sso::session,
        super::sso::logout,
        super::sso::cli_token,
        super::gateways::create_token,
        super::gateways::list,
        super::gateways::ca,
    ),
    modifiers(&BearerAuth)
)]
pub struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        // The web console's session (docs/sso.md); state-changing requests
        // also need the session's X-CSRF-Token header.
        components.add_security_scheme(
            "console_session",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::new(crate::sso::SESSION_COOKIE))),
        );
    }
}

pub async fn document() -> axum::Json<utoipa::openapi::OpenApi> {
    axum::Json(ApiDoc::openapi())
}
