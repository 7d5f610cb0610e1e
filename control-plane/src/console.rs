//! The web console: server-rendered pages under `/`, built from the
//! templates and static files in the top-level `web/` folder, which are
//! compiled into the binary (askama for the templates, `include_str!` for
//! CSS and JS), so the console needs no files or CDN at run time.
//!
//! - [`requests`]: inbox, my requests, a review's or grant's page, decisions,
//!   and the server-sent events that keep those pages live.
//! - [`audit`]: audit search and a session's timeline (auditors and admins).
//! - [`admin`]: resources, role bindings, policy versions (diff, dry run) and
//!   gateways (admins).
//!
//! Security: every page needs a console session; without one the browser is
//! sent to `/auth/login?return_to=<page>`. Every form that changes state goes
//! through [`CsrfForm`](crate::api::sso::CsrfForm) and then the same service
//! calls as the API, so the service's rules (nobody decides their own
//! request) hold here too. Every response carries a strict
//! Content-Security-Policy (`'self'` only, no inline script or style) and
//! `no-store`. Not guaranteed here: anything about the browser itself (a
//! compromised browser holds the session cookie).

mod admin;
mod audit;
mod requests;

use crate::api::ApiError;
use crate::service::{ControlPlane, Principal, ServiceError};
use crate::sso::session::ConsoleSession;
use askama::Template;
use axum::Router;
use axum::extract::FromRequestParts;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE, LOCATION};
use axum::http::{HeaderValue, StatusCode, request::Parts};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};

/// Sent with every console response: only this origin's scripts, styles,
/// images and connections; no framing; forms post only here.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
    style-src 'self'; img-src 'self'; connect-src 'self'; form-action 'self'; \
    base-uri 'none'; frame-ancestors 'none'";

const CSS: &str = include_str!("../../web/static/console.css");
const JS: &str = include_str!("../../web/static/console.js");

/// The console's routes.
pub fn router() -> Router<ControlPlane> {
    Router::new()
        .route("/", get(|| async { redirect("/inbox") }))
        .route("/inbox", get(requests::inbox))
        .route("/mine", get(requests::mine))
        .route("/reviews/{id}", get(requests::review))
        .route("/reviews/{id}/decide", post(requests::decide_review))
        .route("/grants/{id}", get(requests::grant))
        .route("/grants/{id}/decide", post(requests::decide_grant))
        .route("/console/events", get(requests::events))
        .route("/audit", get(audit::search))
        .route("/sessions/{id}", get(audit::session))
        .route("/admin", get(|| async { redirect("/admin/resources") }))
        .route("/admin/resources", get(admin::resources))
        .route("/admin/bindings", get(admin::bindings))
        .route("/admin/policies", get(admin::policies))
        .route("/admin/gateways", get(admin::gateways))
        .route(
            "/static/console.css",
            get(|| async { asset("text/css", CSS) }),
        )
        .route(
            "/static/console.js",
            get(|| async { asset("text/javascript", JS) }),
        )
        .layer(axum::middleware::map_response(security_headers))
}

async fn security_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(
        "content-security-policy",
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    headers.insert("referrer-policy", HeaderValue::from_static("same-origin"));
    headers.insert("x-frame-options", HeaderValue::from_static("DENY"));
    headers
        .entry(CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    response
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (CONTENT_TYPE, content_type),
            (CACHE_CONTROL, "public, max-age=300"),
        ],
        body,
    )
        .into_response()
}

/// A `303 See Other` to a path on this control plane.
fn redirect(location: &str) -> Response {
    match HeaderValue::from_str(location) {
        Ok(v) => (StatusCode::SEE_OTHER, [(LOCATION, v)]).into_response(),
        Err(_) => ConsoleError::new(StatusCode::BAD_REQUEST, "bad redirect target").into_response(),
    }
}

/// Who is looking, for the page header.
pub struct Nav {
    pub me: String,
    pub csrf_token: String,
    pub auditor: bool,
    pub admin: bool,
}

/// The signed-in person behind a console request. Without a live console
/// session, the request is answered with a redirect to sign in, which comes
/// back to the same page.
pub struct Viewer {
    pub session: ConsoleSession,
    pub principal: Principal,
    pub nav: Nav,
}

impl Viewer {
    async fn new(cp: &ControlPlane, session: ConsoleSession) -> Result<Self, ConsoleError> {
        let principal = cp.session_principal(&session).await?;
        let nav = Nav {
            me: session.identity.email.clone(),
            csrf_token: session.csrf_token.clone(),
            auditor: cp.require_auditor(&principal).is_ok(),
            admin: cp.require_admin(&principal).is_ok(),
        };
        Ok(Self {
            session,
            principal,
            nav,
        })
    }
}

impl FromRequestParts<ControlPlane> for Viewer {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, cp: &ControlPlane) -> Result<Self, Response> {
        let session = match crate::api::sso::session_cookie(&parts.headers) {
            Some(cookie) => cp.console_session(cookie).await,
            None => Err(ServiceError::Unauthenticated(
                "no console session".to_owned(),
            )),
        };
        match session {
            Ok(session) => Viewer::new(cp, session)
                .await
                .map_err(IntoResponse::into_response),
            Err(ServiceError::Unauthenticated(_)) => Err(sign_in(parts)),
            Err(e) => Err(ConsoleError::from(e).into_response()),
        }
    }
}

/// The redirect to sign in and come back to the requested page.
fn sign_in(parts: &Parts) -> Response {
    let back = parts
        .uri
        .path_and_query()
        .map(|pq| pq.as_str())
        .filter(|pq| crate::sso::login::check_return_to(pq).is_ok())
        .unwrap_or("/inbox");
    match serde_urlencoded::to_string([("return_to", back)]) {
        Ok(query) => redirect(&format!("/auth/login?{query}")),
        Err(_) => redirect("/auth/login?return_to=%2Finbox"),
    }
}

/// A console page that could not be shown: a status and a message, rendered
/// as an HTML page. Internal causes go to the log, never to the page.
#[derive(Debug)]
pub struct ConsoleError {
    status: StatusCode,
    message: String,
    nav: Option<Nav>,
}

impl ConsoleError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            nav: None,
        }
    }

    /// The same error, shown with the viewer's navigation.
    pub fn for_viewer(mut self, viewer: &Viewer) -> Self {
        self.nav = Some(Nav {
            me: viewer.nav.me.clone(),
            csrf_token: viewer.nav.csrf_token.clone(),
            auditor: viewer.nav.auditor,
            admin: viewer.nav.admin,
        });
        self
    }
}

impl std::fmt::Debug for Nav {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Nav")
            .field("me", &self.me)
            .finish_non_exhaustive()
    }
}

impl From<ApiError> for ConsoleError {
    fn from(e: ApiError) -> Self {
        if let ApiError::Internal(detail) = &e {
            tracing::error!(%detail, "console request failed");
        }
        let status = e.status();
        Self::new(status, e.to_string())
    }
}

impl From<crate::store::StoreError> for ConsoleError {
    fn from(e: crate::store::StoreError) -> Self {
        ApiError::from(e).into()
    }
}

impl From<ServiceError> for ConsoleError {
    fn from(e: ServiceError) -> Self {
        ApiError::from(e).into()
    }
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage<'a> {
    nav: &'a Option<Nav>,
    status: u16,
    reason: &'a str,
    message: &'a str,
}

impl IntoResponse for ConsoleError {
    fn into_response(self) -> Response {
        let page = ErrorPage {
            nav: &self.nav,
            status: self.status.as_u16(),
            reason: self.status.canonical_reason().unwrap_or("Error"),
            message: &self.message,
        };
        match page.render() {
            Ok(html) => (self.status, Html(html)).into_response(),
            Err(e) => {
                tracing::error!(error = %e, "rendering the console error page failed");
                (self.status, self.message).into_response()
            }
        }
    }
}

/// Renders a page template, or a 500 page that says rendering failed.
fn render(status: StatusCode, page: &impl Template) -> Response {
    match page.render() {
        Ok(html) => (status, Html(html)).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "rendering a console page failed");
            ConsoleError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the page could not be rendered",
            )
            .into_response()
        }
    }
}

/// A time as the console shows it: UTC, to the second.
pub fn when(t: &chrono::DateTime<chrono::Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}
