//! `countersign.v1.GatewayService`: what gateways call.
//!
//! Every call must carry `authorization: Bearer <gateway token>`. Protobuf
//! types stop here: requests become domain types with `TryFrom` before the
//! [`ControlPlane`] sees them.

use crate::grants::AccessBasis;
use crate::reviews::{NewReview, ReviewView};
use crate::service::{ControlPlane, ServiceError, SessionRequest};
use crate::store::StoreError;
use crate::store::audit::{AuditBody, NewAuditEvent, StatementAudit};
use chrono::{TimeZone, Utc};
use countersign_common::Secret;
use countersign_proto::v1 as pb;
use pb::gateway_service_server::{GatewayService, GatewayServiceServer};
use std::pin::Pin;
use tokio::sync::mpsc;
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::service::interceptor::InterceptedService;
use tonic::{Request, Response, Status, Streaming};

/// Most events accepted in one audit batch.
const MAX_BATCH_EVENTS: usize = 10_000;

/// The gRPC service, wrapped in the gateway-token check.
pub fn service(
    cp: ControlPlane,
) -> InterceptedService<GatewayServiceServer<Gateways>, GatewayAuth> {
    let auth = GatewayAuth {
        token: cp.settings().gateway_token.clone(),
    };
    let server = GatewayServiceServer::new(Gateways { cp }).max_decoding_message_size(64 << 20);
    InterceptedService::new(server, auth)
}

/// Checks the gateway bearer token on every call.
#[derive(Clone)]
pub struct GatewayAuth {
    token: Secret<String>,
}

impl tonic::service::Interceptor for GatewayAuth {
    fn call(&mut self, req: Request<()>) -> Result<Request<()>, Status> {
        let presented = req
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        match presented {
            Some(t) if self.token.matches(t) => Ok(req),
            _ => Err(Status::unauthenticated(
                "gateway credentials are missing or wrong",
            )),
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
        let id = request.into_inner().id;
        let cp = self.cp.clone();
        // Subscribe before the first read, so no change falls in between.
        let mut changes = cp.review_changes();
        let first = cp
            .review(&id)
            .await
            .map_err(status_of)?
            .ok_or_else(|| Status::not_found("unknown review"))?;
        let (tx, rx) = mpsc::channel(4);
        tokio::spawn(async move {
            let mut current = first;
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
        let hello = request.into_inner();
        tracing::info!(gateway = %hello.gateway_id, environment = %hello.environment, "gateway watching config");
        let this = Gateways {
            cp: self.cp.clone(),
        };
        let first = this.config_update(&hello.environment, 0).await?;
        let (tx, rx) = mpsc::channel(4);
        let mut changes = self.cp.config_changes();
        let poll = self.cp.settings().config_poll_interval;
        let watching = self.cp.metrics().gateways_watching.clone();
        tokio::spawn(async move {
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
            gateway_id: r.gateway_id,
        };
        match self.cp.open_session(&req).await {
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

    async fn publish_audit(
        &self,
        request: Request<Streaming<pb::AuditBatch>>,
    ) -> Result<Response<Self::PublishAuditStream>, Status> {
        let mut inbound = request.into_inner();
        let cp = self.cp.clone();
        let (tx, rx) = mpsc::channel(16);
        tokio::spawn(async move {
            loop {
                let batch = match inbound.message().await {
                    Ok(Some(b)) => b,
                    Ok(None) => return,
                    Err(status) => {
                        tracing::debug!(%status, "audit stream ended");
                        return;
                    }
                };
                let reply = ingest(&cp, batch).await;
                if tx.send(reply).await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

async fn ingest(cp: &ControlPlane, batch: pb::AuditBatch) -> Result<pb::AuditAck, Status> {
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
