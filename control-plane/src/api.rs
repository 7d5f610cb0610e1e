//! The admin HTTP API under `/api/v1`, served with axum.
//!
//! Every route takes `Authorization: Bearer <token>`: the bootstrap admin token
//! or an access token. Without one, a console session cookie (see [`sso`])
//! is accepted: for GET and HEAD alone, and for any other method only with
//! the session's CSRF token in `X-CSRF-Token`. [`ApiError`] is the one error type; it maps causes to
//! status codes and never puts internals in a response (the log gets those).

mod audit;
mod bindings;
mod credentials;
mod gateways;
mod grants;
mod identities;
mod openapi;
mod policies;
mod resources;
mod reviews;
pub mod sso;
mod tokens;

use crate::service::{ControlPlane, Principal, ServiceError};
use crate::store::StoreError;
use crate::tokens::TokenError;
use axum::extract::FromRequestParts;
use axum::http::{StatusCode, request::Parts};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};

pub use openapi::ApiDoc;

/// `GET /readyz`: 200 when the store answers, else 503; 503 as soon as the
/// replica starts draining.
async fn readyz(axum::extract::State(cp): axum::extract::State<ControlPlane>) -> Response {
    match cp.ready().await {
        Ok(()) => (StatusCode::OK, "ready\n").into_response(),
        Err(ServiceError::Draining) => {
            (StatusCode::SERVICE_UNAVAILABLE, "draining\n").into_response()
        }
        Err(e) => {
            tracing::warn!(error = %e, "not ready");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "the store does not answer\n",
            )
                .into_response()
        }
    }
}

/// `GET /metrics`: Prometheus (OpenMetrics) text. Unauthenticated, like `/healthz`: it
/// holds counts, never identities or statements.
async fn metrics(axum::extract::State(cp): axum::extract::State<ControlPlane>) -> Response {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        cp.metrics_text().await,
    )
        .into_response()
}

/// Builds the HTTP router.
pub fn router(cp: ControlPlane) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/api/v1/openapi.json", get(openapi::document))
        .route("/auth/login", get(sso::login))
        .route("/auth/callback", get(sso::callback))
        .route("/auth/session", get(sso::session))
        .route("/auth/logout", post(sso::logout))
        .route("/auth/cli/token", post(sso::cli_token))
        .route(
            "/api/v1/identities",
            get(identities::list).post(identities::create),
        )
        .route(
            "/api/v1/service-accounts",
            post(identities::create_service_account),
        )
        .route(
            "/api/v1/service-accounts/{name}/keys",
            get(credentials::list_keys).post(credentials::create_key),
        )
        .route(
            "/api/v1/service-accounts/{name}/keys/{id}",
            delete(credentials::revoke_key),
        )
        .route(
            "/api/v1/service-accounts/{name}/workload",
            axum::routing::put(credentials::set_workload),
        )
        .route("/api/v1/auth/token", post(credentials::exchange_key))
        .route(
            "/api/v1/auth/workload",
            post(credentials::exchange_workload),
        )
        .route(
            "/api/v1/resources",
            get(resources::list).post(resources::upsert),
        )
        .route("/api/v1/resources/{name}", delete(resources::remove))
        .route("/api/v1/tokens", post(tokens::create))
        .route("/api/v1/tokens/{id}", delete(tokens::revoke))
        .route("/api/v1/audit", get(audit::search))
        .route("/api/v1/audit/verify", get(audit::verify))
        .route("/api/v1/audit/export", get(audit::export))
        .route("/api/v1/sessions/{id}/timeline", get(audit::timeline))
        .route(
            "/api/v1/policies",
            get(policies::list).post(policies::apply),
        )
        .route("/api/v1/policies/replay", post(policies::replay))
        .route("/api/v1/policies/{version}", get(policies::get))
        .route("/api/v1/grants", get(grants::list).post(grants::create))
        .route("/api/v1/grants/{id}", get(grants::get))
        .route("/api/v1/grants/{id}/approve", post(grants::approve))
        .route("/api/v1/grants/{id}/deny", post(grants::deny))
        .route("/api/v1/grants/{id}/revoke", post(grants::revoke))
        .route("/api/v1/reviews", get(reviews::list))
        .route("/api/v1/reviews/{id}", get(reviews::get))
        .route("/api/v1/reviews/{id}/approve", post(reviews::approve))
        .route("/api/v1/reviews/{id}/deny", post(reviews::deny))
        .route(
            "/api/v1/bindings",
            get(bindings::list).post(bindings::create),
        )
        .route("/api/v1/bindings/{id}", delete(bindings::remove))
        .route("/api/v1/gateways", get(gateways::list))
        .route("/api/v1/gateways/ca", get(gateways::ca))
        .route(
            "/api/v1/gateways/enrollment-tokens",
            post(gateways::create_token),
        )
        .merge(crate::console::router())
        .with_state(cp)
}

/// The one error type of the HTTP API.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("missing or malformed Authorization header; use `Bearer <token>`")]
    NoCredentials,
    #[error("{0}")]
    Unauthenticated(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("internal error")]
    Internal(String),
    #[error("{0}")]
    Unavailable(String),
}

impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> Self {
        match e {
            ServiceError::Token(TokenError::Key(detail)) => Self::Internal(detail),
            ServiceError::Token(t) => Self::Unauthenticated(t.to_string()),
            ServiceError::Unauthenticated(m) => Self::Unauthenticated(m),
            ServiceError::Forbidden(m) => Self::Forbidden(m),
            ServiceError::Invalid(m) => Self::BadRequest(m),
            e @ ServiceError::InvalidPolicy(_) => Self::BadRequest(e.to_string()),
            ServiceError::Store(s) => s.into(),
            e @ ServiceError::Draining => Self::Unavailable(e.to_string()),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound { .. } => Self::NotFound(e.to_string()),
            StoreError::Conflict { .. } => Self::Conflict(e.to_string()),
            other => Self::Internal(other.to_string()),
        }
    }
}

#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: String,
}

impl ApiError {
    /// The HTTP status this error answers with, on the API and the console.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::NoCredentials | Self::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let Self::Internal(detail) = &self {
            tracing::error!(%detail, "api request failed");
        }
        let status = self.status();
        let body = ErrorBody {
            error: self.to_string(),
        };
        (status, Json(body)).into_response()
    }
}

/// The authenticated caller of a request.
pub struct Caller(pub Principal);

impl FromRequestParts<ControlPlane> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, cp: &ControlPlane) -> Result<Self, ApiError> {
        let Some(header) = parts.headers.get(axum::http::header::AUTHORIZATION) else {
            return console_caller(parts, cp).await;
        };
        let header = header.to_str().map_err(|_| ApiError::NoCredentials)?;
        let token = header
            .strip_prefix("Bearer ")
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or(ApiError::NoCredentials)?;
        Ok(Caller(cp.principal(token).await?))
    }
}

/// The caller of a request without `Authorization`: its console session,
/// with the CSRF header required for anything but GET and HEAD.
async fn console_caller(parts: &Parts, cp: &ControlPlane) -> Result<Caller, ApiError> {
    use axum::http::Method;
    let Some(cookie) = sso::session_cookie(&parts.headers) else {
        return Err(ApiError::NoCredentials);
    };
    let session = cp.console_session(cookie).await?;
    if parts.method != Method::GET && parts.method != Method::HEAD {
        let presented = parts
            .headers
            .get(crate::sso::CSRF_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        if !session.csrf_matches(presented) {
            return Err(ApiError::Forbidden(
                "with a console session, this request needs the session's X-CSRF-Token header"
                    .to_owned(),
            ));
        }
    }
    Ok(Caller(cp.session_principal(&session).await?))
}

/// JSON body extractor whose rejection is an [`ApiError`] (a 400 with the reason).
pub struct JsonBody<T>(pub T);

impl<T, S> axum::extract::FromRequest<S> for JsonBody<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, ApiError> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(Self(v)),
            Err(e) => Err(ApiError::BadRequest(e.body_text())),
        }
    }
}
