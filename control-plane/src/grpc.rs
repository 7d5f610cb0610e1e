//! `countersign.v1.GatewayService` and `GatewayEnrollment`: what gateways call.
//!
//! Two ways to authenticate a gateway, chosen by the control plane's
//! settings ([`GatewayAuth`]):
//! - with `gateway_tls` (production): the listener serves TLS and every
//!   `GatewayService` call needs a client certificate from the gateway CA.
//!   The environment the certificate names scopes the call: `WatchConfig`
//!   sends only that environment's resources, and sessions, reviews and audit
//!   for a resource of another environment are refused (PERMISSION_DENIED).
//!   `GatewayEnrollment.Enroll` is the only call without one.
//! - without it (`countersign dev`): plain gRPC, every call carries
//!   `authorization: Bearer <gateway token>`, and the gateway's own
//!   `environment` is trusted.
//!
//! Protobuf types stop here: requests become domain types with `TryFrom`
//! before the [`ControlPlane`] sees them.

use crate::enrollment::EnrolledCert;
use crate::enrollment::ca::GatewayIdentity;
use crate::grants::AccessBasis;
use crate::reviews::{NewReview, ReviewView};
use crate::service::{ControlPlane, ServiceError, SessionRequest};
use crate::store::StoreError;
use crate::store::audit::{AuditBody, NewAuditEvent, StatementAudit};
use chrono::{TimeZone, Utc};
use countersign_common::Secret;
use countersign_proto::v1 as pb;
use pb::gateway_enrollment_server::{GatewayEnrollment, GatewayEnrollmentServer};
use pb::gateway_service_server::{GatewayService, GatewayServiceServer};
use std::pin::Pin;
use tokio::sync::{mpsc, watch};
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::service::interceptor::InterceptedService;
use tonic::{Request, Response, Status, Streaming};
use tracing::Instrument as _;

/// Most events accepted in one audit batch.
const MAX_BATCH_EVENTS: usize = 10_000;

/// How long a client has to finish the TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The gRPC service, wrapped in the gateway authentication check.
pub fn service(cp: ControlPlane) -> InterceptedService<GatewayServiceServer<Gateways>, Gate> {
    let auth = match cp.settings().gateway_tls {
        Some(_) => GatewayAuth::ClientCert,
        None => GatewayAuth::Bearer(cp.settings().gateway_token.clone()),
    };
    let gate = Gate {
        auth,
        draining: cp.draining(),
    };
    let server = GatewayServiceServer::new(Gateways { cp }).max_decoding_message_size(64 << 20);
    InterceptedService::new(server, gate)
}

/// Refuses new calls while the replica drains, then authenticates.
#[derive(Clone)]
pub struct Gate {
    auth: GatewayAuth,
    draining: watch::Receiver<bool>,
}

impl tonic::service::Interceptor for Gate {
    fn call(&mut self, req: Request<()>) -> Result<Request<()>, Status> {
        if *self.draining.borrow() {
            return Err(draining_status());
        }
        self.auth.call(req)
    }
}

/// What a gateway hears when this replica shuts down: `UNAVAILABLE`, which
/// makes it reconnect to another replica.
fn draining_status() -> Status {
    Status::unavailable("this control-plane replica is shutting down; reconnect to another replica")
}

/// The span of one gateway call, a child of the gateway's span when the call
/// carries a W3C `traceparent` (see `Server::trace_fn` in [`crate::serve`]).
/// Named after the method; it holds no request data.
pub fn request_span(req: &axum::http::Request<()>) -> tracing::Span {
    let method = req
        .uri()
        .path()
        .rsplit('/')
        .next()
        .unwrap_or_default()
        .to_owned();
    let span = tracing::info_span!("grpc", otel.name = %method, otel.kind = "server", rpc.method = %method);
    let parent = opentelemetry::global::get_text_map_propagator(|p| {
        p.extract(&HeaderExtractor(req.headers()))
    });
    set_parent(&span, parent);
    span
}

struct HeaderExtractor<'a>(&'a axum::http::HeaderMap);

impl opentelemetry::propagation::Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

fn set_parent(span: &tracing::Span, parent: opentelemetry::Context) {
    use tracing_opentelemetry::OpenTelemetrySpanExt as _;
    if let Err(e) = span.set_parent(parent) {
        tracing::debug!(error = %e, "cannot link the gateway's trace");
    }
}

/// The span of storing one audit batch, a child of the gateway's upload span.
fn batch_span(batch: &pb::AuditBatch) -> tracing::Span {
    let span = tracing::info_span!(
        "ingest_audit_batch",
        batch = batch.batch_id,
        events = batch.events.len()
    );
    let parent =
        opentelemetry::global::get_text_map_propagator(|p| p.extract(&batch.trace_context));
    set_parent(&span, parent);
    span
}

/// Resolves once the replica starts draining.
async fn drained(mut draining: watch::Receiver<bool>) {
    if draining.wait_for(|d| *d).await.is_err() {
        // The control plane is gone, which only happens at exit: nothing to wait for.
        std::future::pending::<()>().await;
    }
}

/// `GatewayEnrollment`: needs no client certificate (the token is the credential).
pub fn enrollment_service(cp: ControlPlane) -> GatewayEnrollmentServer<Enrollment> {
    GatewayEnrollmentServer::new(Enrollment { cp }).max_decoding_message_size(64 << 10)
}

/// The TLS setup of the gRPC listener when `gateway_tls` is set: a server
/// certificate issued now by the gateway CA, and client certificates from
/// that CA verified in the handshake. A client may connect without one (to
/// enroll); every `GatewayService` call then fails in [`GatewayAuth`].
pub fn server_tls(cp: &ControlPlane) -> Result<Option<tonic::transport::ServerTlsConfig>, String> {
    let (Some(tls), Some(ca)) = (&cp.settings().gateway_tls, cp.ca()) else {
        return Ok(None);
    };
    let (cert, key) = ca
        .issue_server_cert(&tls.server_names, tls.server_cert_lifetime)
        .map_err(|e| e.to_string())?;
    Ok(Some(
        tonic::transport::ServerTlsConfig::new()
            .identity(tonic::transport::Identity::from_pem(cert, key))
            .client_ca_root(tonic::transport::Certificate::from_pem(ca.cert_pem()))
            .client_auth_optional(true)
            .timeout(TLS_HANDSHAKE_TIMEOUT),
    ))
}

/// Authenticates every `GatewayService` call.
#[derive(Clone)]
pub enum GatewayAuth {
    /// `authorization: Bearer <token>` (plain gRPC, `countersign dev`).
    Bearer(Secret<String>),
    /// A client certificate from the gateway CA, verified by the TLS
    /// handshake; its [`GatewayIdentity`] goes into the request's extensions.
    ClientCert,
}

impl tonic::service::Interceptor for GatewayAuth {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        match self {
            Self::Bearer(token) => {
                let presented = req
                    .metadata()
                    .get("authorization")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.strip_prefix("Bearer "));
                match presented {
                    // An empty configured token never matches (fail closed).
                    Some(t) if !token.expose().is_empty() && token.matches(t) => Ok(req),
                    _ => Err(Status::unauthenticated(
                        "gateway credentials are missing or wrong",
                    )),
                }
            }
            Self::ClientCert => {
                let identity = req
                    .peer_certs()
                    .and_then(|certs| certs.first().and_then(|c| GatewayIdentity::from_der(c)))
                    .ok_or_else(|| {
                        Status::unauthenticated(
                            "a client certificate from the gateway CA is required: enroll the gateway with an enrollment token",
                        )
                    })?;
                // The handshake checked validity, but an HTTP/2 connection
                // outlives it: each call checks again.
                if identity.not_after <= Utc::now() {
                    return Err(Status::unauthenticated(format!(
                        "the client certificate of gateway {} expired at {}; enroll it again",
                        identity.id, identity.not_after
                    )));
                }
                req.extensions_mut().insert(identity);
                Ok(req)
            }
        }
    }
}

/// Resolves when the calling gateway's certificate ends; never without one.
/// Streams stop then, so that a stream opened with a certificate does not
/// outlive it.
async fn certificate_end(gateway: Option<&GatewayIdentity>) {
    match gateway.and_then(|g| (g.not_after - Utc::now()).to_std().ok()) {
        Some(left) => tokio::time::sleep(left).await,
        None if gateway.is_some() => {}
        None => std::future::pending().await,
    }
}

fn expired_status() -> Status {
    Status::unauthenticated("the client certificate has expired; reconnect with a renewed one")
}

/// The calling gateway's certificate identity, when mutual TLS is on.
fn caller<T>(req: &Request<T>) -> Option<GatewayIdentity> {
    req.extensions().get::<GatewayIdentity>().cloned()
}

/// Refuses when `resource` belongs to an environment other than `caller`'s.
/// Unknown resources are not refused here: the call itself decides on them.
async fn check_environment(
    cp: &ControlPlane,
    caller: Option<&GatewayIdentity>,
    resource: &str,
) -> Result<(), Status> {
    let Some(caller) = caller else {
        return Ok(());
    };
    let found = cp
        .store()
        .resource_by_name(resource)
        .await
        .map_err(|e| status_of(e.into()))?;
    match found {
        Some(r) if r.environment != caller.environment => Err(Status::permission_denied(format!(
            "resource {resource:?} is not in this gateway's environment {:?}",
            caller.environment
        ))),
        _ => Ok(()),
    }
}

fn certificate_to_pb(c: EnrolledCert) -> pb::GatewayCertificate {
    pb::GatewayCertificate {
        cert_pem: c.cert_pem,
        ca_pem: c.ca_pem,
        not_after: c.not_after.timestamp(),
        gateway_id: c.gateway_id,
        environment: c.environment,
    }
}

pub struct Enrollment {
    cp: ControlPlane,
}

#[tonic::async_trait]
impl GatewayEnrollment for Enrollment {
    async fn enroll(
        &self,
        request: Request<pb::EnrollRequest>,
    ) -> Result<Response<pb::GatewayCertificate>, Status> {
        let r = request.into_inner();
        match self
            .cp
            .enroll_gateway(&r.token, &r.csr_pem, &r.gateway_id, &r.version)
            .await
        {
            Ok(c) => {
                tracing::info!(gateway = %c.gateway_id, environment = %c.environment, not_after = %c.not_after, "gateway enrolled");
                Ok(Response::new(certificate_to_pb(c)))
            }
            Err(e) => {
                tracing::warn!(gateway = %r.gateway_id, reason = %e, "gateway enrollment refused");
                Err(status_of(e))
            }
        }
    }
}

pub struct Gateways {
    cp: ControlPlane,
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

fn status_of(e: ServiceError) -> Status {
    match e {
        ServiceError::Token(crate::tokens::TokenError::Key(detail)) => {
            tracing::error!(%detail, "token signing key problem");
            Status::internal("control plane cannot verify tokens")
        }
        ServiceError::Token(t) => Status::unauthenticated(t.to_string()),
        ServiceError::Unauthenticated(m) => Status::unauthenticated(m),
        ServiceError::Forbidden(m) => Status::permission_denied(m),
        ServiceError::Invalid(m) => Status::invalid_argument(m),
        e @ ServiceError::InvalidPolicy(_) => Status::invalid_argument(e.to_string()),
        ServiceError::Store(StoreError::NotFound { .. }) => Status::not_found(e.to_string()),
        ServiceError::Store(s) => {
            tracing::error!(error = %s, "store failure");
            Status::unavailable("control plane store is unavailable")
        }
        e @ ServiceError::Draining => Status::unavailable(e.to_string()),
    }
}

/// How often a review watch re-reads the store, to see decisions taken
/// through other replicas.
const REVIEW_POLL: std::time::Duration = std::time::Duration::from_millis(500);

fn review_to_pb(v: &ReviewView) -> pb::Review {
    let last = v.decisions.last();
    pb::Review {
        id: v.id.clone(),
        status: v.status.clone(),
        url: v.url.clone(),
        decided_by: last.map(|d| d.approver.clone()).unwrap_or_default(),
        comment: last.and_then(|d| d.comment.clone()).unwrap_or_default(),
    }
}

impl Gateways {
    async fn config_update(
        &self,
        environment: &str,
        version: u64,
    ) -> Result<pb::ConfigUpdate, Status> {
        let store = self.cp.store();
        let resources = store
            .list_resources()
            .await
            .map_err(|e| status_of(e.into()))?
            .into_iter()
            .filter(|r| environment.is_empty() || r.environment == environment)
            .map(|r| pb::Resource {
                name: r.name,
                kind: r.kind,
                environment: r.environment,
                strict_audit: r.strict_audit,
            })
            .collect();
        let revoked_token_ids = store
            .live_revoked_token_ids()
            .await
            .map_err(|e| status_of(e.into()))?;
        let policy = store
            .latest_policy()
            .await
            .map_err(|e| status_of(e.into()))?
            .map(|p| pb::PolicyBundle {
                version: p.version,
                text: p.text,
            });
        let revoked_grant_ids = self.cp.live_revoked_grant_ids().await.map_err(status_of)?;
        Ok(pb::ConfigUpdate {
            version,
            resources,
            revoked_token_ids,
            policy,
            revoked_grant_ids,
        })
    }
}

#[tonic::async_trait]
impl GatewayService for Gateways {
    type WatchConfigStream = BoxStream<pb::ConfigUpdate>;
    type PublishAuditStream = BoxStream<pb::AuditAck>;
    type WatchReviewStream = BoxStream<pb::Review>;

    async fn open_review(
        &self,
        request: Request<pb::OpenReviewRequest>,
    ) -> Result<Response<pb::Review>, Status> {
        let gateway = caller(&request);
        let r = request.into_inner();
        // The requester is the session's identity, as recorded when it was opened.
        let session = self
            .cp
            .store()
            .session(&r.session_id)
            .await
            .map_err(|e| status_of(e.into()))?
            .ok_or_else(|| Status::not_found("unknown session"))?;
        if session.identity != r.identity || session.resource != r.resource {
            return Err(Status::permission_denied(
                "the review does not match its session",
            ));
        }
        check_environment(&self.cp, gateway.as_ref(), &session.resource).await?;
        let review = self
            .cp
            .open_review(NewReview {
                session_id: r.session_id,
                requester: session.identity,
                resource: session.resource,
                statement: r.statement,
                kinds: r.kinds,
                rule: r.rule,
                message: Some(r.message).filter(|m| !m.is_empty()),
                approvals_required: r.approvals.max(1),
                approvers: r.approvers,
                timeout: std::time::Duration::from_secs(u64::from(r.timeout_secs.max(1))),
                max_approval_minutes: r.max_approval_minutes,
            })
            .await
            .map_err(status_of)?;
        tracing::info!(review = %review.id, requester = %review.requester, rule = %review.rule, "review opened");
        Ok(Response::new(review_to_pb(&review)))
    }

    async fn watch_review(
        &self,
        request: Request<pb::WatchReviewRequest>,
    ) -> Result<Response<Self::WatchReviewStream>, Status> {
        let gateway = caller(&request);
        let id = request.into_inner().id;
        let cp = self.cp.clone();
        // Subscribe before the first read, so no change falls in between.
        let mut changes = cp.review_changes();
        let first = cp
            .review(&id)
            .await
            .map_err(status_of)?
            .ok_or_else(|| Status::not_found("unknown review"))?;
        check_environment(&cp, gateway.as_ref(), &first.resource).await?;
        let (tx, rx) = mpsc::channel(4);
        let draining = cp.draining();
        tokio::spawn(async move {
            let mut current = first;
            let drain = drained(draining);
            tokio::pin!(drain);
            loop {
                if tx.send(Ok(review_to_pb(&current))).await.is_err() || current.status != "pending"
                {
                    return;
                }
                let until_expiry = (current.expires_at - Utc::now())
                    .to_std()
                    .unwrap_or_default();
                let status = current.status.clone();
                loop {
                    tokio::select! {
                        _ = tx.closed() => return,
                        _ = certificate_end(gateway.as_ref()) => {
                            let _ = tx.send(Err(expired_status())).await;
                            return;
                        }
                        _ = &mut drain => {
                            let _ = tx.send(Err(draining_status())).await;
                            return;
                        }
                        changed = changes.recv() => match changed {
                            Ok(changed) if changed != id => continue,
                            _ => {}
                        },
                        _ = tokio::time::sleep(REVIEW_POLL.min(until_expiry + std::time::Duration::from_millis(10))) => {}
                    }
                    match cp.review(&id).await {
                        Ok(Some(next)) if next.status != status => {
                            current = next;
                            break;
                        }
                        Ok(Some(_)) => {}
                        Ok(None) => return,
                        Err(e) => {
                            let _ = tx.send(Err(status_of(e))).await;
                            return;
                        }
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn watch_config(
        &self,
        request: Request<pb::GatewayHello>,
    ) -> Result<Response<Self::WatchConfigStream>, Status> {
        let gateway = caller(&request);
        let mut hello = request.into_inner();
        if let Some(g) = &gateway {
            // The certificate decides, whatever the gateway says about itself.
            if !hello.environment.is_empty() && hello.environment != g.environment {
                tracing::warn!(gateway = %g.id, claimed = %hello.environment, certified = %g.environment, "gateway claims another environment than its certificate; using the certificate's");
            }
            hello.environment = g.environment.clone();
            hello.gateway_id = g.id.clone();
            if let Err(e) = self.cp.store().touch_gateway(&g.id, &hello.version).await {
                tracing::warn!(gateway = %g.id, error = %e, "cannot record that the gateway was seen");
            }
        }
        tracing::info!(gateway = %hello.gateway_id, environment = %hello.environment, "gateway watching config");
        let this = Gateways {
            cp: self.cp.clone(),
        };
        let first = this.config_update(&hello.environment, 0).await?;
        let (tx, rx) = mpsc::channel(4);
        let mut changes = self.cp.config_changes();
        let poll = self.cp.settings().config_poll_interval;
        let watching = self.cp.metrics().gateways_watching.clone();
        let draining = self.cp.draining();
        tokio::spawn(async move {
            let drain = drained(draining);
            tokio::pin!(drain);
            // Counted while this task runs, whichever way it ends.
            struct Watching(prometheus_client::metrics::gauge::Gauge);
            impl Drop for Watching {
                fn drop(&mut self) {
                    self.0.dec();
                }
            }
            watching.inc();
            let _watching = Watching(watching);
            let mut last = first.clone();
            let mut version = 0u64;
            if tx.send(Ok(first)).await.is_err() {
                return;
            }
            loop {
                tokio::select! {
                    _ = tx.closed() => return,
                    _ = certificate_end(gateway.as_ref()) => {
                        let _ = tx.send(Err(expired_status())).await;
                        return;
                    }
                    _ = &mut drain => {
                        let _ = tx.send(Err(draining_status())).await;
                        return;
                    }
                    _ = changes.changed() => {}
                    _ = tokio::time::sleep(poll) => {}
                }
                match this.config_update(&hello.environment, version + 1).await {
                    Ok(next) => {
                        let same = next.resources == last.resources
                            && next.revoked_token_ids == last.revoked_token_ids
                            && next.revoked_grant_ids == last.revoked_grant_ids
                            && next.policy.as_ref().map(|p| p.version)
                                == last.policy.as_ref().map(|p| p.version);
                        if !same {
                            version += 1;
                            last = next.clone();
                            if tx.send(Ok(next)).await.is_err() {
                                return;
                            }
                        }
                    }
                    Err(status) => {
                        // The gateway reconnects and keeps its last config meanwhile.
                        let _ = tx.send(Err(status)).await;
                        return;
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn authenticate_session(
        &self,
        request: Request<pb::AuthenticateSessionRequest>,
    ) -> Result<Response<pb::SessionGrant>, Status> {
        let gateway = caller(&request);
        let r = request.into_inner();
        let client = r.client.unwrap_or_default();
        let req = SessionRequest {
            token: Secret::new(r.token),
            resource: r.resource,
            database: r.database,
            user: r.user,
            client_address: client.address,
            application_name: client.application_name,
            tls: client.tls,
            gateway_id: match &gateway {
                Some(g) => g.id.clone(),
                None => r.gateway_id,
            },
        };
        let environment = gateway.as_ref().map(|g| g.environment.as_str());
        match self.cp.open_session_in(&req, environment).await {
            Ok(g) => {
                tracing::info!(session = %g.session_id, identity = %g.identity, resource = %g.resource, "session authenticated");
                let (grant_id, grant_expires_at, access_rule) = match &g.access.basis {
                    AccessBasis::Grant { id, until } => {
                        (id.clone(), until.timestamp(), String::new())
                    }
                    AccessBasis::Standing { rule } => (String::new(), 0, rule.clone()),
                };
                Ok(Response::new(pb::SessionGrant {
                    access_level: g.access.level.clone(),
                    grant_id,
                    grant_expires_at,
                    access_rule,
                    session_id: g.session_id,
                    identity: g.identity,
                    groups: g.groups,
                    token_id: g.token_id,
                    token_expires_at: g.token_expires_at.timestamp(),
                    resource: g.resource,
                    policy_version: g.policy_version,
                }))
            }
            Err(e) => {
                self.cp.metrics().sessions_refused.inc();
                tracing::info!(user = %req.user, resource = %req.resource, client = %req.client_address, reason = %e, "session refused");
                Err(status_of(e))
            }
        }
    }

    async fn renew(
        &self,
        request: Request<pb::RenewRequest>,
    ) -> Result<Response<pb::GatewayCertificate>, Status> {
        let Some(gateway) = caller(&request) else {
            return Err(Status::failed_precondition(
                "renewal needs mutual TLS: this control plane has no gateway CA",
            ));
        };
        let r = request.into_inner();
        match self
            .cp
            .renew_gateway(&gateway, &r.csr_pem, &r.version)
            .await
        {
            Ok(c) => {
                tracing::info!(gateway = %c.gateway_id, environment = %c.environment, not_after = %c.not_after, "gateway certificate renewed");
                Ok(Response::new(certificate_to_pb(c)))
            }
            Err(e) => {
                tracing::warn!(gateway = %gateway.id, reason = %e, "gateway renewal refused");
                Err(status_of(e))
            }
        }
    }

    async fn publish_audit(
        &self,
        request: Request<Streaming<pb::AuditBatch>>,
    ) -> Result<Response<Self::PublishAuditStream>, Status> {
        let gateway = caller(&request);
        let mut inbound = request.into_inner();
        let cp = self.cp.clone();
        let (tx, rx) = mpsc::channel(16);
        let draining = cp.draining();
        tokio::spawn(async move {
            let drain = drained(draining);
            tokio::pin!(drain);
            loop {
                // A batch being stored is finished and acknowledged; draining
                // ends the stream only between batches.
                let next = tokio::select! {
                    next = inbound.message() => next,
                    _ = certificate_end(gateway.as_ref()) => {
                        let _ = tx.send(Err(expired_status())).await;
                        return;
                    }
                    _ = &mut drain => {
                        let _ = tx.send(Err(draining_status())).await;
                        return;
                    }
                };
                let batch = match next {
                    Ok(Some(b)) => b,
                    Ok(None) => return,
                    Err(status) => {
                        tracing::debug!(%status, "audit stream ended");
                        return;
                    }
                };
                let span = batch_span(&batch);
                let reply = ingest(&cp, gateway.as_ref(), batch).instrument(span).await;
                if tx.send(reply).await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

async fn ingest(
    cp: &ControlPlane,
    gateway: Option<&GatewayIdentity>,
    batch: pb::AuditBatch,
) -> Result<pb::AuditAck, Status> {
    if batch.events.len() > MAX_BATCH_EVENTS {
        return Err(Status::invalid_argument(format!(
            "an audit batch holds at most {MAX_BATCH_EVENTS} events"
        )));
    }
    let events = batch
        .events
        .into_iter()
        .map(NewAuditEvent::try_from)
        .collect::<Result<Vec<_>, _>>()?;
    if let Some(g) = gateway {
        // A gateway writes audit for its own environment's resources only.
        let resources = cp
            .store()
            .list_resources()
            .await
            .map_err(|e| status_of(e.into()))?;
        for e in &events {
            if let Some(r) = resources.iter().find(|r| r.name == e.resource)
                && r.environment != g.environment
            {
                return Err(Status::permission_denied(format!(
                    "audit event {}:{} is for resource {:?}, which is not in this gateway's environment {:?}",
                    e.session_id, e.seq, e.resource, g.environment
                )));
            }
        }
    }
    let stored = cp.ingest_audit(&events).await.map_err(status_of)?;
    Ok(pb::AuditAck {
        batch_id: batch.batch_id,
        stored: u32::try_from(stored).unwrap_or(u32::MAX),
    })
}

impl TryFrom<pb::AuditEvent> for NewAuditEvent {
    type Error = Status;

    fn try_from(e: pb::AuditEvent) -> Result<Self, Status> {
        let bad = |what: &str| {
            Status::invalid_argument(format!("audit event {}:{}: {what}", e.session_id, e.seq))
        };
        if e.session_id.is_empty() {
            return Err(bad("missing session id"));
        }
        let at = Utc
            .timestamp_micros(e.at)
            .single()
            .ok_or_else(|| bad("timestamp out of range"))?;
        let (identity, resource, body) = match e.event.clone() {
            Some(pb::audit_event::Event::SessionStarted(s)) => (
                s.identity,
                s.resource,
                AuditBody::SessionStarted {
                    database: s.database,
                    client_address: s.client_address,
                    application_name: s.application_name,
                    tls: s.tls,
                },
            ),
            Some(pb::audit_event::Event::Statement(s)) => (
                s.identity,
                s.resource,
                AuditBody::Statement(StatementAudit {
                    statement: s.statement,
                    kinds: s.kinds,
                    protocol: s.protocol,
                    parameter_count: s.parameter_count,
                    duration_us: s.duration_micros,
                    command_tag: Some(s.command_tag).filter(|t| !t.is_empty()),
                    rows: s.rows,
                    error: Some(s.error).filter(|t| !t.is_empty()),
                    decision: s.decision,
                    rule: Some(s.rule).filter(|t| !t.is_empty()),
                    masking: s
                        .masking
                        .map(|m| serde_json::json!({"rules": m.rules, "detectors": m.detectors})),
                }),
            ),
            Some(pb::audit_event::Event::SessionEnded(s)) => (
                s.identity,
                s.resource,
                AuditBody::SessionEnded {
                    reason: s.reason,
                    statements: s.statements,
                },
            ),
            None => return Err(bad("no event body")),
        };
        Ok(NewAuditEvent {
            session_id: e.session_id,
            seq: e.seq,
            at,
            identity,
            resource,
            body,
        })
    }
}
