//! Sign-in routes under `/auth`, and the console session extractors.
//!
//! - `GET /auth/login`: starts an OIDC login (browser), or a CLI login with
//!   `cli_redirect` (a loopback URL) and `cli_challenge` (S256); sets the
//!   login cookie that ties the callback to this browser.
//! - `GET /auth/callback`: the provider's redirect; sets the session cookie,
//!   or sends a CLI login back to its loopback listener with a one-time code.
//! - `GET /auth/session`: who the console session is, and its CSRF token.
//! - `POST /auth/logout`: ends the session (a console form with `csrf_token`).
//! - `POST /auth/cli/token`: trades the one-time code and the CLI's verifier
//!   for an access token.
//!
//! The cookie is always `Secure`: the `__Host-` prefix requires it.
//! Browsers store Secure cookies from `http://127.0.0.1` and
//! `http://localhost` (they count as secure contexts), so local testing works
//! without TLS; any other `http://` origin loses the session.

use super::{ApiError, JsonBody};
use crate::service::{ControlPlane, IssuedToken, ServiceError};
use crate::sso::login::{Callback, LoginDone, LoginError, check_cli_login, check_return_to};
use crate::sso::session::ConsoleSession;
use crate::sso::{CSRF_HEADER, LOGIN_COOKIE, LOGIN_TTL, RefusalKind, SESSION_COOKIE};
use axum::Json;
use axum::extract::{FromRequest, FromRequestParts, Query, Request, State};
use axum::http::header::{CACHE_CONTROL, COOKIE, LOCATION, SET_COOKIE};
use axum::http::{HeaderMap, HeaderValue, StatusCode, request::Parts};
use axum::response::{IntoResponse, Response};
use chrono::Utc;

impl From<LoginError> for ApiError {
    fn from(e: LoginError) -> Self {
        match e {
            LoginError::Refused(r) => match r.kind {
                RefusalKind::BadRequest => Self::BadRequest(r.message),
                RefusalKind::Unauthenticated => Self::Unauthenticated(r.message),
                RefusalKind::Forbidden => Self::Forbidden(r.message),
            },
            LoginError::Service(s) => s.into(),
        }
    }
}

/// The value of the session cookie, if the request carries one.
pub(crate) fn session_cookie(headers: &HeaderMap) -> Option<&str> {
    cookie(headers, SESSION_COOKIE)
}

fn cookie<'h>(headers: &'h HeaderMap, wanted: &str) -> Option<&'h str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == wanted)
        .map(|(_, value)| value.trim())
        .filter(|v| !v.is_empty())
}

/// A `__Host-` cookie: Secure, HttpOnly, SameSite=Lax, `Path=/`, no Domain.
fn host_cookie(name: &str, value: &str, max_age: i64) -> Result<HeaderValue, ApiError> {
    HeaderValue::from_str(&format!(
        "{name}={value}; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age={max_age}"
    ))
    .map_err(|e| ApiError::Internal(format!("cookie {name}: {e}")))
}

/// A `303 See Other` that no cache keeps.
fn see_other(location: &str) -> Result<Response, ApiError> {
    let location = HeaderValue::from_str(location)
        .map_err(|e| ApiError::Internal(format!("redirect location: {e}")))?;
    Ok((
        StatusCode::SEE_OTHER,
        [
            (LOCATION, location),
            (CACHE_CONTROL, HeaderValue::from_static("no-store")),
        ],
    )
        .into_response())
}

#[derive(Debug, Default, serde::Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct LoginQuery {
    /// Console path to land on after signing in (`/…`); default `/auth/session`.
    pub return_to: Option<String>,
    /// The CLI's loopback URL (`http://127.0.0.1:PORT/…`).
    pub cli_redirect: Option<String>,
    /// The CLI's S256 code challenge.
    pub cli_challenge: Option<String>,
}

/// `GET /auth/login`
#[utoipa::path(get, path = "/auth/login", params(LoginQuery),
    responses((status = 303, description = "to the identity provider; sets the login cookie"),
              (status = 400, body = super::ErrorBody)))]
pub async fn login(
    State(cp): State<ControlPlane>,
    query: Result<Query<LoginQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let cli = match (&q.cli_redirect, &q.cli_challenge) {
        (Some(redirect), Some(challenge)) => Some(check_cli_login(redirect, challenge)?),
        (None, None) => None,
        _ => {
            return Err(ApiError::BadRequest(
                "cli_redirect and cli_challenge go together".to_owned(),
            ));
        }
    };
    let return_to = match (&q.return_to, &cli) {
        (Some(_), Some(_)) => {
            return Err(ApiError::BadRequest(
                "return_to is for browser logins, not with cli_redirect".to_owned(),
            ));
        }
        (Some(path), None) => Some(check_return_to(path)?),
        (None, _) => None,
    };
    let started = cp.begin_login(cli, return_to).await?;
    let mut response = see_other(&started.url)?;
    let max_age = i64::try_from(LOGIN_TTL.as_secs()).unwrap_or(600);
    response.headers_mut().append(
        SET_COOKIE,
        host_cookie(LOGIN_COOKIE, &started.browser_binding, max_age)?,
    );
    Ok(response)
}

/// `GET /auth/callback`
#[utoipa::path(get, path = "/auth/callback",
    responses((status = 303, description = "to /auth/session with the session cookie, or to the CLI's loopback address"),
              (status = 400, body = super::ErrorBody), (status = 401, body = super::ErrorBody),
              (status = 403, body = super::ErrorBody)))]
pub async fn callback(
    State(cp): State<ControlPlane>,
    headers: HeaderMap,
    Query(cb): Query<Callback>,
) -> Result<Response, ApiError> {
    let binding = cookie(&headers, LOGIN_COOKIE);
    let mut response = match cp.finish_login(&cb, binding).await? {
        LoginDone::Cli { redirect } => see_other(&redirect)?,
        LoginDone::Console { session, return_to } => {
            let max_age = (session.expires_at - Utc::now()).num_seconds().max(0);
            let mut response = see_other(&return_to)?;
            response.headers_mut().append(
                SET_COOKIE,
                host_cookie(SESSION_COOKIE, &session.cookie_value, max_age)?,
            );
            response
        }
    };
    // The login is used up: its cookie goes.
    response
        .headers_mut()
        .append(SET_COOKIE, host_cookie(LOGIN_COOKIE, "", 0)?);
    Ok(response)
}

impl FromRequestParts<ControlPlane> for ConsoleSession {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, cp: &ControlPlane) -> Result<Self, ApiError> {
        let value = session_cookie(&parts.headers).ok_or_else(|| {
            ApiError::Unauthenticated("no console session; sign in at /auth/login".to_owned())
        })?;
        Ok(cp.console_session(value).await?)
    }
}

/// A state-changing console form: the caller's session, and the form's
/// fields once its `csrf_token` field (or the `X-CSRF-Token` header) has
/// matched the session's token. A missing or wrong token is a 403.
pub struct CsrfForm<T> {
    pub session: ConsoleSession,
    pub form: T,
}

impl<T> FromRequest<ControlPlane> for CsrfForm<T>
where
    T: serde::de::DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, cp: &ControlPlane) -> Result<Self, ApiError> {
        let (mut parts, body) = req.into_parts();
        let session = ConsoleSession::from_request_parts(&mut parts, cp).await?;
        let header = parts
            .headers
            .get(CSRF_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let req = Request::from_parts(parts, body);
        let axum::Form(pairs) = axum::Form::<Vec<(String, String)>>::from_request(req, cp)
            .await
            .map_err(|e| ApiError::BadRequest(e.body_text()))?;
        let mut presented = header;
        let mut fields = serde_json::Map::new();
        for (k, v) in pairs {
            if k == "csrf_token" {
                presented.get_or_insert(v);
            } else {
                fields.insert(k, serde_json::Value::String(v));
            }
        }
        match presented {
            Some(token) if session.csrf_matches(&token) => {}
            _ => {
                return Err(ApiError::Forbidden(
                    "this form needs the console session's csrf_token".to_owned(),
                ));
            }
        }
        let form = serde_json::from_value(serde_json::Value::Object(fields))
            .map_err(|e| ApiError::BadRequest(format!("form: {e}")))?;
        Ok(Self { session, form })
    }
}

#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct SessionInfo {
    pub identity: String,
    pub groups: Vec<String>,
    /// Send this as `csrf_token` in console forms, or as `X-CSRF-Token` on
    /// API calls that change state.
    pub csrf_token: String,
    pub expires_at: chrono::DateTime<Utc>,
}

/// `GET /auth/session`
#[utoipa::path(get, path = "/auth/session",
    responses((status = 200, body = SessionInfo), (status = 401, body = super::ErrorBody)),
    security(("console_session" = [])))]
pub async fn session(session: ConsoleSession) -> Response {
    let info = SessionInfo {
        identity: session.identity.email.clone(),
        groups: session.identity.groups.clone(),
        csrf_token: session.csrf_token.clone(),
        expires_at: session.expires_at,
    };
    ([(CACHE_CONTROL, "no-store")], Json(info)).into_response()
}

/// `POST /auth/logout`: a console form carrying `csrf_token`.
#[utoipa::path(post, path = "/auth/logout",
    request_body(content_type = "application/x-www-form-urlencoded", description = "csrf_token"),
    responses((status = 200, description = "signed out; the cookie is cleared"),
              (status = 401, body = super::ErrorBody), (status = 403, body = super::ErrorBody)),
    security(("console_session" = [])))]
pub async fn logout(
    State(cp): State<ControlPlane>,
    form: CsrfForm<std::collections::BTreeMap<String, String>>,
) -> Result<Response, ApiError> {
    cp.end_console_session(&form.session).await?;
    let clear = format!("{SESSION_COOKIE}=; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age=0");
    Ok((
        StatusCode::OK,
        [(SET_COOKIE, clear), (CACHE_CONTROL, "no-store".to_owned())],
        "signed out\n",
    )
        .into_response())
}

#[derive(Debug, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CliTokenRequest {
    /// The one-time code from the loopback redirect.
    pub code: String,
    /// The verifier whose S256 challenge started the login.
    pub verifier: String,
}

/// `POST /auth/cli/token`
#[utoipa::path(post, path = "/auth/cli/token", request_body = CliTokenRequest,
    responses((status = 200, body = IssuedToken), (status = 401, body = super::ErrorBody)))]
pub async fn cli_token(
    State(cp): State<ControlPlane>,
    JsonBody(req): JsonBody<CliTokenRequest>,
) -> Result<Json<IssuedToken>, ApiError> {
    if req.verifier.len() < 43 || req.verifier.len() > 128 {
        return Err(ServiceError::Invalid(
            "verifier must be 43-128 characters (RFC 7636)".to_owned(),
        )
        .into());
    }
    Ok(Json(cp.redeem_cli_code(&req.code, &req.verifier).await?))
}
