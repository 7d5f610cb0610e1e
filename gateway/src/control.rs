//! The gateway's side of `countersign.v1.GatewayService`.
//!
//! [`ControlClient`] makes the unary calls; [`watch_config`] turns the
//! `WatchConfig` stream into a `watch` value that reconnects with backoff; the
//! audit uploader keeps one `PublishAudit` stream open and resends a batch until
//! it is acknowledged. Protobuf types end here: callers get domain types.
//!
//! With mutual TLS the client certificate changes when it is renewed:
//! [`ControlClient::replace_identity`] swaps the channel, and the config watch
//! and the audit uploader reopen their streams on the new one.
//!
//! With several control-plane URLs (replicas) the client uses one at a time.
//! A call or stream that fails with `UNAVAILABLE` (the replica is unreachable,
//! was killed, or is draining on `SIGTERM`) moves every user to the next URL:
//! unary calls retry there at once, streams reopen there, and a statement held
//! for review is watched there by its review id.

use countersign_common::Secret;
use countersign_policy::Policy;
use countersign_proto::v1 as pb;
use pb::gateway_service_client::GatewayServiceClient;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;
use tonic::metadata::MetadataValue;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};
use tracing::Instrument as _;

const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Adds the gateway bearer token to every call, when the gateway uses one
/// (with mutual TLS the certificate is the credential).
#[derive(Clone)]
pub struct BearerAuth {
    header: Option<MetadataValue<tonic::metadata::Ascii>>,
}

impl tonic::service::Interceptor for BearerAuth {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, Status> {
        if let Some(header) = &self.header {
            req.metadata_mut().insert("authorization", header.clone());
        }
        // The caller's span (a client session, a review, an audit upload)
        // becomes the parent of the control plane's span for this call.
        inject_trace_context(&mut MetadataInjector(req.metadata_mut()));
        Ok(req)
    }
}

/// Writes the current span's W3C trace context (`traceparent`) with the
/// propagator installed at start; nothing when traces are off.
pub(crate) fn inject_trace_context(into: &mut dyn opentelemetry::propagation::Injector) {
    use tracing_opentelemetry::OpenTelemetrySpanExt as _;
    let cx = tracing::Span::current().context();
    opentelemetry::global::get_text_map_propagator(|p| p.inject_context(&cx, into));
}

struct MetadataInjector<'a>(&'a mut tonic::metadata::MetadataMap);

impl opentelemetry::propagation::Injector for MetadataInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(key), Ok(value)) = (
            tonic::metadata::MetadataKey::from_bytes(key.as_bytes()),
            MetadataValue::try_from(value.as_str()),
        ) {
            self.0.insert(key, value);
        }
    }
}

/// A replica's channel with the gateway's credentials: what every client is made over.
type Service = InterceptedService<Channel, BearerAuth>;
type Client = GatewayServiceClient<Service>;

/// Largest message taken from the control plane.
const MAX_DECODING: usize = 64 << 20;

/// [`pb::AuditBatch`] with its events already encoded. An embedded message and a `bytes`
/// field are the same on the wire (a length-delimited field of the same number), so this
/// encodes to exactly the bytes of the `AuditBatch` it stands for, and the uploader sends
/// the spool's records as they are, without decoding and encoding every event again.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct EncodedAuditBatch {
    #[prost(uint64, tag = "1")]
    pub batch_id: u64,
    /// Each an encoded `pb::AuditEvent`.
    #[prost(bytes = "bytes", repeated, tag = "2")]
    pub events: Vec<bytes::Bytes>,
    #[prost(map = "string, string", tag = "3")]
    pub trace_context: HashMap<String, String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("control plane URL {url:?} is invalid: {reason}")]
    BadUrl { url: String, reason: String },
    #[error("gateway token cannot be sent as a header")]
    BadToken,
    #[error("TLS setup for the control plane failed: {0}")]
    Tls(String),
    #[error("no control-plane URL is configured")]
    NoUrl,
}

/// A connection to the control plane; reconnects on its own. Cheap to clone.
#[derive(Clone)]
pub struct ControlClient {
    /// One client per URL and their generation, bumped when the client
    /// certificate is replaced.
    current: Arc<watch::Sender<(u64, Arc<Clients>)>>,
    urls: Arc<[String]>,
    /// The index in `urls` of the replica in use.
    active: Arc<AtomicUsize>,
    /// The CA the control plane's server certificate must chain to (mutual TLS only).
    server_ca: Option<Arc<str>>,
}

/// A resource as the control plane describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResourceInfo {
    pub name: String,
    pub environment: String,
    pub strict_audit: bool,
}

/// The latest configuration from the control plane.
#[derive(Clone, Debug)]
pub struct RemoteConfig {
    pub version: u64,
    pub resources: HashMap<String, ResourceInfo>,
    pub revoked_token_ids: HashSet<String>,
    /// Grants revoked and not yet over.
    pub revoked_grant_ids: HashSet<String>,
    /// The active policy (the empty policy, which still denies unparsable
    /// statements, until one is applied).
    pub policy: Arc<Policy>,
    pub policy_version: u64,
}

impl RemoteConfig {
    /// Builds the config from an update, compiling its policy unless it is the
    /// version already compiled in `previous`. A policy that does not compile
    /// (the control plane validated it, so this means a version skew) keeps
    /// the previous one: the gateway goes on enforcing the last policy it had.
    fn from_update(u: pb::ConfigUpdate, previous: Option<&RemoteConfig>) -> Self {
        let (policy, policy_version) = match (&u.policy, previous) {
            (Some(b), Some(prev)) if b.version == prev.policy_version => {
                (prev.policy.clone(), prev.policy_version)
            }
            (Some(b), prev) => match Policy::parse(&b.text) {
                Ok(p) => (Arc::new(p), b.version),
                Err(e) => {
                    tracing::error!(version = b.version, errors = %e, "cannot compile policy; keeping the previous one");
                    match prev {
                        Some(prev) => (prev.policy.clone(), prev.policy_version),
                        None => (Arc::new(Policy::empty()), 0),
                    }
                }
            },
            (None, _) => (Arc::new(Policy::empty()), 0),
        };
        Self {
            policy,
            policy_version,
            version: u.version,
            resources: u
                .resources
                .into_iter()
                .map(|r| {
                    let info = ResourceInfo {
                        name: r.name.clone(),
                        environment: r.environment,
                        strict_audit: r.strict_audit,
                    };
                    (r.name, info)
                })
                .collect(),
            revoked_token_ids: u.revoked_token_ids.into_iter().collect(),
            revoked_grant_ids: u.revoked_grant_ids.into_iter().collect(),
        }
    }
}

/// Who a client is, once the control plane has checked its token.
#[derive(Clone, Debug)]
pub struct SessionGrant {
    pub session_id: Arc<str>,
    pub identity: Arc<str>,
    pub groups: Vec<String>,
    pub token_id: String,
    pub token_expires_at: std::time::SystemTime,
    pub resource: Arc<str>,
    pub policy_version: u64,
    /// The session's access level; `None` if the control plane sent none.
    pub access_level: Option<Arc<str>>,
    pub access: Access,
}

/// Why the session may connect: what can end it besides its token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Access {
    /// A grant, ending at the given time or when revoked.
    Grant {
        id: String,
        until: std::time::SystemTime,
    },
    /// A standing `[[access]]` allowance, by name: ends when a new policy no
    /// longer gives this session the same level.
    Standing { rule: String },
}

impl Access {
    /// Why `config` ends this access, or `None` while it stands: the grant
    /// was revoked, or no allowance of the new policy gives `identity` (in
    /// `groups`) the same `level` on `resource` any more.
    pub fn withdrawn(
        &self,
        config: &RemoteConfig,
        identity: &str,
        groups: &[String],
        resource: &str,
        level: Option<&str>,
    ) -> Option<&'static str> {
        match self {
            Self::Grant { id, .. } => config
                .revoked_grant_ids
                .contains(id)
                .then_some("access grant revoked; session ended"),
            Self::Standing { .. } => {
                let environment = config
                    .resources
                    .get(resource)
                    .map_or("", |r| r.environment.as_str());
                let now = config
                    .policy
                    .standing_access(identity, groups, resource, environment);
                (now.map(|r| r.level.as_str()) != level)
                    .then_some("standing access withdrawn by a policy change; session ended")
            }
        }
    }

    /// When the grant ends; `None` for standing access.
    pub fn until(&self) -> Option<std::time::SystemTime> {
        match self {
            Self::Grant { until, .. } => Some(*until),
            Self::Standing { .. } => None,
        }
    }
}

/// What the gateway tells the control plane about a connecting client.
#[derive(Clone, Debug)]
pub struct SessionRequest {
    pub token: Secret<String>,
    pub resource: String,
    pub database: String,
    pub user: String,
    pub client_address: String,
    pub application_name: String,
    pub tls: bool,
    pub gateway_id: String,
}

/// Why a session was refused.
#[derive(Debug, thiserror::Error)]
pub enum AuthFailure {
    /// The token is bad, expired, revoked or not the user's.
    #[error("{0}")]
    Credentials(String),
    /// The identity may not use this resource, or it does not exist.
    #[error("{0}")]
    NotAllowed(String),
    /// The control plane could not be asked; the gateway fails closed.
    #[error("the control plane is unreachable; try again shortly")]
    Unavailable(String),
}

/// The control plane's endpoint, with mutual TLS when `tls` is given.
pub(crate) fn endpoint(url: &str, tls: Option<ClientTlsConfig>) -> Result<Endpoint, ControlError> {
    let endpoint = Endpoint::from_shared(url.to_owned()).map_err(|e| ControlError::BadUrl {
        url: url.to_owned(),
        reason: e.to_string(),
    })?;
    let endpoint = match tls {
        Some(tls) => endpoint
            .tls_config(tls)
            .map_err(|e| ControlError::Tls(e.to_string()))?,
        None => endpoint,
    };
    Ok(endpoint
        .connect_timeout(Duration::from_secs(3))
        .tcp_nodelay(true))
}

/// TLS that trusts `server_ca` and, when given, presents `identity` (certificate and key PEM).
pub(crate) fn tls_config(server_ca: &str, identity: Option<(&str, &str)>) -> ClientTlsConfig {
    let tls =
        ClientTlsConfig::new().ca_certificate(tonic::transport::Certificate::from_pem(server_ca));
    match identity {
        Some((cert, key)) => tls.identity(tonic::transport::Identity::from_pem(cert, key)),
        None => tls,
    }
}

/// One service per control-plane URL; never empty.
struct Clients {
    first: Service,
    rest: Vec<Service>,
}

impl Clients {
    fn new(mut clients: Vec<Service>) -> Result<Self, ControlError> {
        if clients.is_empty() {
            return Err(ControlError::NoUrl);
        }
        let first = clients.remove(0);
        Ok(Self {
            first,
            rest: clients,
        })
    }

    /// The service of URL `index` (the first for an index out of range).
    fn get(&self, index: usize) -> &Service {
        index
            .checked_sub(1)
            .and_then(|i| self.rest.get(i))
            .unwrap_or(&self.first)
    }
}

/// Mutual-TLS clients for each of `urls`.
fn tls_clients(
    urls: &[String],
    server_ca: &str,
    cert_pem: &str,
    key_pem: &str,
) -> Result<Vec<Service>, ControlError> {
    urls.iter()
        .map(|url| {
            let tls = tls_config(server_ca, Some((cert_pem, key_pem)));
            Ok(service_over(endpoint(url, Some(tls))?, None))
        })
        .collect()
}

fn service_over(
    endpoint: Endpoint,
    header: Option<MetadataValue<tonic::metadata::Ascii>>,
) -> Service {
    InterceptedService::new(endpoint.connect_lazy(), BearerAuth { header })
}

impl ControlClient {
    /// Plain gRPC with a bearer token, to each of `urls`.
    pub fn new(urls: &[String], token: &Secret<String>) -> Result<Self, ControlError> {
        let header: MetadataValue<tonic::metadata::Ascii> = format!("Bearer {}", token.expose())
            .parse()
            .map_err(|_| ControlError::BadToken)?;
        let clients = urls
            .iter()
            .map(|url| Ok(service_over(endpoint(url, None)?, Some(header.clone()))))
            .collect::<Result<Vec<_>, ControlError>>()?;
        Self::over(urls, clients, None)
    }

    /// Mutual TLS to each of `urls`: trusts `server_ca` (PEM) and presents
    /// `cert_pem` with `key_pem`.
    pub fn with_identity(
        urls: &[String],
        server_ca: &str,
        cert_pem: &str,
        key_pem: &str,
    ) -> Result<Self, ControlError> {
        let clients = tls_clients(urls, server_ca, cert_pem, key_pem)?;
        Self::over(urls, clients, Some(server_ca.into()))
    }

    fn over(
        urls: &[String],
        clients: Vec<Service>,
        server_ca: Option<Arc<str>>,
    ) -> Result<Self, ControlError> {
        let clients = Clients::new(clients)?;
        Ok(Self {
            current: Arc::new(watch::channel((0, Arc::new(clients))).0),
            urls: urls.into(),
            active: Arc::new(AtomicUsize::new(0)),
            server_ca,
        })
    }

    /// Switches every later call, and the streams (which reopen), to a new
    /// client certificate.
    pub fn replace_identity(&self, cert_pem: &str, key_pem: &str) -> Result<(), ControlError> {
        let Some(server_ca) = &self.server_ca else {
            return Err(ControlError::Tls(
                "this gateway does not use mutual TLS".to_owned(),
            ));
        };
        let clients = Clients::new(tls_clients(&self.urls, server_ca, cert_pem, key_pem)?)?;
        self.current.send_modify(|(generation, current)| {
            *generation += 1;
            *current = Arc::new(clients);
        });
        Ok(())
    }

    /// The client to call with now.
    pub(crate) fn client(&self) -> Client {
        self.pick().1
    }

    /// The replica in use (its index) and its client.
    fn pick(&self) -> (usize, Client) {
        let (index, service) = self.pick_service();
        (
            index,
            GatewayServiceClient::new(service).max_decoding_message_size(MAX_DECODING),
        )
    }

    /// The replica in use (its index) and its service, for calls made by hand.
    fn pick_service(&self) -> (usize, Service) {
        let index = self.active.load(Ordering::Relaxed);
        (index, self.current.borrow().1.get(index).clone())
    }

    /// Records that the replica at `index` failed: later calls and streams
    /// use the next URL, unless another caller moved on already.
    fn failed(&self, index: usize) {
        let n = self.urls.len();
        if n < 2 {
            return;
        }
        let next = (index + 1) % n;
        if self
            .active
            .compare_exchange(index, next, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
        {
            tracing::warn!(
                from = self.urls.get(index).map_or("", String::as_str),
                to = self.urls.get(next).map_or("", String::as_str),
                "control-plane replica unavailable; moving to the next one"
            );
        }
    }

    /// How many replicas there are to try.
    fn replicas(&self) -> usize {
        self.urls.len().max(1)
    }

    fn generation(&self) -> u64 {
        self.current.borrow().0
    }

    pub async fn authenticate(&self, req: SessionRequest) -> Result<SessionGrant, AuthFailure> {
        let request = pb::AuthenticateSessionRequest {
            token: req.token.expose().clone(),
            resource: req.resource,
            database: req.database,
            user: req.user,
            client: Some(pb::ClientInfo {
                address: req.client_address,
                application_name: req.application_name,
                tls: req.tls,
            }),
            gateway_id: req.gateway_id,
        };
        let mut attempt = 0;
        let result = loop {
            let (index, mut client) = self.pick();
            let mut call = tonic::Request::new(request.clone());
            call.set_timeout(Duration::from_secs(10));
            match client.authenticate_session(call).await {
                Err(status) if status.code() == tonic::Code::Unavailable => {
                    self.failed(index);
                    attempt += 1;
                    if attempt >= self.replicas() {
                        break Err(status);
                    }
                }
                other => break other,
            }
        };
        match result {
            Ok(resp) => {
                let g = resp.into_inner();
                let expires = u64::try_from(g.token_expires_at).unwrap_or(0);
                let access = if !g.grant_id.is_empty() {
                    let until = u64::try_from(g.grant_expires_at).unwrap_or(0);
                    Access::Grant {
                        id: g.grant_id,
                        until: std::time::UNIX_EPOCH + Duration::from_secs(until),
                    }
                } else if !g.access_rule.is_empty() {
                    Access::Standing {
                        rule: g.access_rule,
                    }
                } else {
                    // Fail closed: a control plane that says nothing about
                    // access is refused rather than guessed at.
                    return Err(AuthFailure::NotAllowed(
                        "the control plane gave no access basis for this session".into(),
                    ));
                };
                Ok(SessionGrant {
                    access,
                    access_level: (!g.access_level.is_empty()).then(|| g.access_level.into()),
                    session_id: g.session_id.into(),
                    identity: g.identity.into(),
                    groups: g.groups,
                    token_id: g.token_id,
                    token_expires_at: std::time::UNIX_EPOCH + Duration::from_secs(expires),
                    resource: g.resource.into(),
                    policy_version: g.policy_version,
                })
            }
            Err(status) => Err(match status.code() {
                tonic::Code::Unauthenticated => {
                    AuthFailure::Credentials(status.message().to_owned())
                }
                tonic::Code::PermissionDenied
                | tonic::Code::NotFound
                | tonic::Code::InvalidArgument => {
                    AuthFailure::NotAllowed(status.message().to_owned())
                }
                _ => AuthFailure::Unavailable(status.to_string()),
            }),
        }
    }

    pub(crate) fn audit_uploader(&self) -> AuditUploader {
        AuditUploader {
            client: self.clone(),
            stream: None,
            generation: self.generation(),
            backoff: BACKOFF_MIN,
        }
    }
}

/// Keeps the latest [`RemoteConfig`] in a watch value, reconnecting with backoff.
/// The value stays `None` until the first config arrives; after that, a lost
/// stream keeps the last config (open sessions keep enforcing it).
pub fn watch_config(
    client: ControlClient,
    hello: pb::GatewayHello,
) -> watch::Receiver<Option<Arc<RemoteConfig>>> {
    let (tx, rx) = watch::channel(None);
    tokio::spawn(async move {
        let mut backoff = BACKOFF_MIN;
        let mut identity = client.current.subscribe();
        loop {
            identity.mark_unchanged();
            let (index, mut current) = client.pick();
            match current.watch_config(hello.clone()).await {
                Ok(resp) => {
                    let mut stream = resp.into_inner();
                    loop {
                        let message = tokio::select! {
                            m = stream.message() => m,
                            // A renewed certificate: reopen on the new connection now.
                            _ = identity.changed() => {
                                tracing::info!("client certificate renewed; reopening the config stream");
                                backoff = BACKOFF_MIN;
                                break;
                            }
                        };
                        match message {
                            Ok(Some(update)) => {
                                backoff = BACKOFF_MIN;
                                let cfg = RemoteConfig::from_update(update, tx.borrow().as_deref());
                                tracing::debug!(
                                    version = cfg.version,
                                    resources = cfg.resources.len(),
                                    "config update"
                                );
                                if tx.send(Some(Arc::new(cfg))).is_err() {
                                    return;
                                }
                            }
                            Ok(None) => {
                                client.failed(index);
                                break;
                            }
                            Err(status) => {
                                tracing::warn!(%status, "config stream lost");
                                client.failed(index);
                                break;
                            }
                        }
                    }
                }
                Err(status) => {
                    tracing::warn!(%status, "cannot watch config");
                    client.failed(index);
                }
            }
            if tx.is_closed() {
                return;
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    });
    rx
}

/// One `PublishAudit` stream, reopened as needed.
pub(crate) struct AuditUploader {
    client: ControlClient,
    /// The open stream and the index of the replica it goes to.
    stream: Option<(
        mpsc::Sender<EncodedAuditBatch>,
        tonic::Streaming<pb::AuditAck>,
        usize,
    )>,
    /// The client generation the stream was opened with.
    generation: u64,
    backoff: Duration,
}

impl AuditUploader {
    /// Sends the batch and waits for its acknowledgement, reconnecting and
    /// resending (with backoff) for as long as it takes.
    pub(crate) async fn send_until_acked(&mut self, mut batch: EncodedAuditBatch) {
        let span = tracing::info_span!(
            "publish_audit_batch",
            batch = batch.batch_id,
            events = batch.events.len()
        );
        span.in_scope(|| inject_trace_context(&mut batch.trace_context));
        self.send_with_retries(batch).instrument(span).await;
    }

    async fn send_with_retries(&mut self, batch: EncodedAuditBatch) {
        loop {
            match self.try_send(batch.clone()).await {
                Ok(()) => {
                    self.backoff = BACKOFF_MIN;
                    return;
                }
                Err(reason) => {
                    tracing::warn!(%reason, batch = batch.batch_id, events = batch.events.len(), "audit upload failed; will retry");
                    if let Some((_, _, index)) = self.stream.take() {
                        self.client.failed(index);
                    }
                    tokio::time::sleep(self.backoff).await;
                    self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
                }
            }
        }
    }

    async fn try_send(&mut self, batch: EncodedAuditBatch) -> Result<(), String> {
        if self.client.generation() != self.generation {
            // A renewed certificate: move to the new connection.
            self.stream = None;
            self.generation = self.client.generation();
        }
        if self.stream.is_none() {
            let (tx, rx) = mpsc::channel(4);
            let (index, service) = self.client.pick_service();
            let acks = match publish_encoded_audit(service, ReceiverStream::new(rx)).await {
                Ok(acks) => acks,
                Err(status) => {
                    self.client.failed(index);
                    return Err(status.to_string());
                }
            };
            self.stream = Some((tx, acks, index));
        }
        let Some((tx, acks, _)) = self.stream.as_mut() else {
            return Err("no stream".to_owned());
        };
        let id = batch.batch_id;
        tx.send(batch)
            .await
            .map_err(|_| "stream closed".to_owned())?;
        let ack = tokio::time::timeout(Duration::from_secs(30), acks.message())
            .await
            .map_err(|_| "no acknowledgement within 30 s".to_owned())?
            .map_err(|s| s.to_string())?
            .ok_or_else(|| "stream ended".to_owned())?;
        if ack.batch_id == id {
            Ok(())
        } else {
            Err(format!(
                "acknowledgement for batch {} while waiting for {id}",
                ack.batch_id
            ))
        }
    }
}

/// Opens `PublishAudit` as the generated client does, but sending [`EncodedAuditBatch`]es.
async fn publish_encoded_audit(
    service: Service,
    batches: ReceiverStream<EncodedAuditBatch>,
) -> Result<tonic::Streaming<pb::AuditAck>, Status> {
    let mut grpc = tonic::client::Grpc::new(service).max_decoding_message_size(MAX_DECODING);
    grpc.ready()
        .await
        .map_err(|e| Status::unavailable(format!("control plane not ready: {e}")))?;
    let mut request = tonic::Request::new(batches);
    request.extensions_mut().insert(tonic::GrpcMethod::new(
        "countersign.v1.GatewayService",
        "PublishAudit",
    ));
    let path = tonic::codegen::http::uri::PathAndQuery::from_static(
        "/countersign.v1.GatewayService/PublishAudit",
    );
    let codec = tonic_prost::ProstCodec::<EncodedAuditBatch, pb::AuditAck>::default();
    Ok(grpc.streaming(request, path, codec).await?.into_inner())
}

/// A statement held for review, as the gateway asks for it.
#[derive(Clone, Debug)]
pub struct ReviewRequest {
    pub session_id: String,
    pub identity: String,
    pub resource: String,
    pub statement: String,
    pub kinds: Vec<String>,
    pub rule: String,
    pub message: String,
    pub approvals: u32,
    pub approvers: Vec<String>,
    pub timeout: Duration,
    /// The rule's cap on approvals by statement shape; 0: once only.
    pub max_approval_minutes: u32,
}

/// An open review: its id and the console link approvers use.
#[derive(Clone, Debug)]
pub struct ReviewTicket {
    pub id: String,
    pub url: String,
}

/// How a review ended, for the held statement.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReviewOutcome {
    Approved,
    Denied { by: String, comment: String },
    Expired,
}

impl ControlClient {
    /// Opens a review. Fails when the control plane cannot be asked; the
    /// caller then refuses the statement (fail closed).
    pub async fn open_review(&self, r: ReviewRequest) -> Result<ReviewTicket, String> {
        let request = pb::OpenReviewRequest {
            session_id: r.session_id,
            identity: r.identity,
            resource: r.resource,
            statement: r.statement,
            kinds: r.kinds,
            rule: r.rule,
            message: r.message,
            approvals: r.approvals,
            approvers: r.approvers,
            timeout_secs: u32::try_from(r.timeout.as_secs()).unwrap_or(u32::MAX),
            max_approval_minutes: r.max_approval_minutes,
        };
        let mut attempt = 0;
        let result = loop {
            let (index, mut client) = self.pick();
            let mut call = tonic::Request::new(request.clone());
            call.set_timeout(Duration::from_secs(10));
            match client.open_review(call).await {
                Err(status) if status.code() == tonic::Code::Unavailable => {
                    self.failed(index);
                    attempt += 1;
                    if attempt >= self.replicas() {
                        break Err(status);
                    }
                }
                other => break other,
            }
        };
        match result {
            Ok(resp) => {
                let review = resp.into_inner();
                Ok(ReviewTicket {
                    id: review.id,
                    url: review.url,
                })
            }
            Err(status) => Err(status.message().to_owned()),
        }
    }

    /// Waits until the review is decided or `deadline` passes, following the
    /// `WatchReview` stream and reconnecting (to any replica) when it breaks.
    pub async fn wait_review(&self, id: &str, deadline: tokio::time::Instant) -> ReviewOutcome {
        let mut backoff = BACKOFF_MIN;
        loop {
            let (index, mut client) = self.pick();
            let watch = async {
                let mut stream = client
                    .watch_review(pb::WatchReviewRequest { id: id.to_owned() })
                    .await?
                    .into_inner();
                while let Some(review) = stream.message().await? {
                    match review.status.as_str() {
                        "approved" => return Ok(Some(ReviewOutcome::Approved)),
                        "denied" => {
                            return Ok(Some(ReviewOutcome::Denied {
                                by: review.decided_by,
                                comment: review.comment,
                            }));
                        }
                        "expired" => return Ok(Some(ReviewOutcome::Expired)),
                        _ => backoff = BACKOFF_MIN,
                    }
                }
                Ok::<_, Status>(None)
            };
            match tokio::time::timeout_at(deadline, watch).await {
                Err(_) => return ReviewOutcome::Expired,
                Ok(Ok(Some(outcome))) => return outcome,
                Ok(Ok(None)) => self.failed(index),
                Ok(Err(status)) => {
                    tracing::warn!(review = id, %status, "review watch lost; watching it again");
                    if status.code() == tonic::Code::Unavailable {
                        // Another replica knows the review too: go there now.
                        self.failed(index);
                        backoff = BACKOFF_MIN;
                    }
                }
            }
            if tokio::time::Instant::now() + backoff >= deadline {
                return ReviewOutcome::Expired;
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message as _;

    #[test]
    fn an_encoded_batch_is_the_bytes_of_the_audit_batch_it_stands_for() {
        let events = vec![
            pb::AuditEvent {
                session_id: "s-1".into(),
                seq: 4,
                at: 1_700_000_000_000_000,
                event: Some(pb::audit_event::Event::Statement(pb::StatementExecuted {
                    identity: "alice@example.com".into(),
                    statement: "SELECT 1".into(),
                    ..Default::default()
                })),
            },
            pb::AuditEvent::default(),
            pb::AuditEvent {
                session_id: "s-2".into(),
                seq: 9,
                at: 5,
                event: Some(pb::audit_event::Event::SessionEnded(pb::SessionEnded {
                    reason: "bye".into(),
                    ..Default::default()
                })),
            },
        ];
        let trace_context = HashMap::from([("traceparent".to_owned(), "00-ab-cd-01".to_owned())]);
        let typed = pb::AuditBatch {
            batch_id: 7,
            events: events.clone(),
            trace_context: trace_context.clone(),
        };
        let encoded = EncodedAuditBatch {
            batch_id: 7,
            events: events.iter().map(|e| e.encode_to_vec().into()).collect(),
            trace_context,
        };
        assert_eq!(encoded.encode_to_vec(), typed.encode_to_vec());
        assert_eq!(
            pb::AuditBatch::decode(encoded.encode_to_vec().as_slice()).unwrap(),
            typed
        );
    }
}
