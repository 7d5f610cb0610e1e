//! The gateway's identity towards the control plane under mutual TLS.
//!
//! At start, [`establish`] uses the client certificate kept in `state_dir`
//! while it is valid; otherwise it enrolls: it makes a key pair locally,
//! sends only a CSR with the one-time enrollment token to
//! `GatewayEnrollment.Enroll`, and keeps what it gets back. From then on every
//! call presents that certificate. [`spawn_rotation`] renews it once two
//! thirds of its lifetime have passed (`Renew`, authenticated by the current
//! certificate, with a fresh key), writes the new one atomically and switches
//! the connection over.
//!
//! Files in `state_dir` (mode 0600; the directory 0700):
//! - `gateway.pem`: the client certificate followed by its private key, one
//!   file so that a renewal replaces both with one rename;
//! - `ca.pem`: the gateway CA as the control plane sent it.
//!
//! The control plane's server certificate is checked against
//! `control_plane_ca` (a PEM file given in the config), from the first
//! contact on; nothing is trusted on first use.

use crate::config::EnrollmentSettings;
use crate::control::{ControlClient, ControlError, endpoint, tls_config};
use countersign_proto::v1 as pb;
use pb::gateway_enrollment_client::GatewayEnrollmentClient;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

const IDENTITY_FILE: &str = "gateway.pem";
const CA_FILE: &str = "ca.pem";

/// Shortest wait between failed renewal attempts, and the longest.
const RETRY_MIN: Duration = Duration::from_millis(500);
const RETRY_MAX: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum EnrollError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("control_plane_ca {path}: {reason}")]
    BadCa { path: PathBuf, reason: String },
    #[error(
        "{state_dir} holds no valid gateway certificate and no enrollment_token is configured: create one with `countersign gateway enroll-token create --environment ENV` and set enrollment_token (or enrollment_token_file)"
    )]
    NoToken { state_dir: PathBuf },
    #[error(
        "{state_dir} holds no valid gateway certificate, and the enrollment_token_file {path} cannot be read: {source}"
    )]
    TokenFile {
        state_dir: PathBuf,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{state_dir} holds no valid gateway certificate, and the enrollment_token_file {path} is empty"
    )]
    EmptyTokenFile { state_dir: PathBuf, path: PathBuf },
    #[error("enrollment refused by the control plane: {0}")]
    Refused(String),
    #[error("cannot reach the control plane to enroll: {0}")]
    Unreachable(String),
    #[error("key generation failed: {0}")]
    Key(String),
    #[error("the control plane sent a certificate that cannot be read: {0}")]
    BadCertificate(String),
    #[error(transparent)]
    Control(#[from] ControlError),
}

/// The client certificate and key in use.
#[derive(Clone)]
pub struct Identity {
    pub cert_pem: String,
    key_pem: String,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("not_before", &self.not_before)
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

impl Identity {
    fn from_pems(cert_pem: String, key_pem: String) -> Result<Self, String> {
        let (not_before, not_after) = validity(&cert_pem)?;
        Ok(Self {
            cert_pem,
            key_pem,
            not_before,
            not_after,
        })
    }

    /// When to renew: two thirds into the certificate's lifetime.
    pub fn renew_at(&self) -> SystemTime {
        let lifetime = self
            .not_after
            .duration_since(self.not_before)
            .unwrap_or_default();
        self.not_before + lifetime * 2 / 3
    }

    fn is_valid(&self) -> bool {
        let now = SystemTime::now();
        self.not_before <= now && now < self.not_after
    }
}

/// The validity period of the first certificate in `pem`.
fn validity(pem: &str) -> Result<(SystemTime, SystemTime), String> {
    use x509_parser::prelude::{FromDer, X509Certificate};
    let block = pem_block(pem, "CERTIFICATE").ok_or("no certificate in PEM")?;
    let der = x509_parser::pem::parse_x509_pem(block.as_bytes())
        .map_err(|e| format!("bad PEM: {e}"))?
        .1;
    let (_, cert) = X509Certificate::from_der(&der.contents).map_err(|e| e.to_string())?;
    let at = |t: i64| {
        u64::try_from(t)
            .map(|s| SystemTime::UNIX_EPOCH + Duration::from_secs(s))
            .map_err(|_| "certificate time before 1970".to_owned())
    };
    Ok((
        at(cert.validity().not_before.timestamp())?,
        at(cert.validity().not_after.timestamp())?,
    ))
}

/// Whether the first certificate in `cert_pem` carries a valid signature of
/// the first certificate in `ca_pem`: a certificate from a CA that has since
/// been replaced is not used.
fn signed_by(cert_pem: &str, ca_pem: &str) -> bool {
    use x509_parser::prelude::{FromDer, X509Certificate};
    let der = |pem: &str| {
        pem_block(pem, "CERTIFICATE")
            .and_then(|b| x509_parser::pem::parse_x509_pem(b.as_bytes()).ok())
            .map(|(_, p)| p.contents)
    };
    let (Some(cert), Some(ca)) = (der(cert_pem), der(ca_pem)) else {
        return false;
    };
    match (
        X509Certificate::from_der(&cert),
        X509Certificate::from_der(&ca),
    ) {
        (Ok((_, cert)), Ok((_, ca))) => cert.verify_signature(Some(ca.public_key())).is_ok(),
        _ => false,
    }
}

/// The first `-----BEGIN {label}-----` block of `pem`, with its end line.
fn pem_block<'a>(pem: &'a str, label: &str) -> Option<&'a str> {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let start = pem.find(&begin)?;
    let stop = pem[start..].find(&end)? + start + end.len();
    pem.get(start..stop)
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> EnrollError + '_ {
    move |source| EnrollError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Writes `text` to `dir/name` with mode 0600 through a temporary file and
/// a rename, so that a crash leaves the old file or the new one, never half.
fn write_atomic(dir: &Path, name: &str, text: &str) -> Result<(), EnrollError> {
    let path = dir.join(name);
    let tmp = dir.join(format!(".{name}.tmp"));
    let _ = std::fs::remove_file(&tmp);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut f = options.open(&tmp).map_err(io_err(&tmp))?;
    f.write_all(text.as_bytes()).map_err(io_err(&tmp))?;
    f.sync_all().map_err(io_err(&tmp))?;
    drop(f);
    std::fs::rename(&tmp, &path).map_err(io_err(&path))?;
    // The rename itself is durable once the directory is synced.
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))?;
    Ok(())
}

fn create_state_dir(dir: &Path) -> Result<(), EnrollError> {
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(io_err(dir))?;
    }
    Ok(())
}

/// The identity kept in `dir`, if there is a readable one.
fn load(dir: &Path) -> Option<Identity> {
    let path = dir.join(IDENTITY_FILE);
    let text = std::fs::read_to_string(&path).ok()?;
    let cert = pem_block(&text, "CERTIFICATE")?;
    let key = pem_block(&text, "PRIVATE KEY")?;
    match Identity::from_pems(cert.to_owned(), key.to_owned()) {
        Ok(id) => Some(id),
        Err(reason) => {
            tracing::warn!(file = %path.display(), %reason, "ignoring an unreadable gateway certificate");
            None
        }
    }
}

fn store(dir: &Path, id: &Identity, ca_pem: &str) -> Result<(), EnrollError> {
    write_atomic(
        dir,
        IDENTITY_FILE,
        &format!("{}\n{}\n", id.cert_pem.trim(), id.key_pem.trim()),
    )?;
    write_atomic(dir, CA_FILE, ca_pem)
}

/// The one-time enrollment token: `enrollment_token`, or else the contents of
/// `enrollment_token_file` (surrounding whitespace removed).
fn enrollment_token(settings: &EnrollmentSettings) -> Result<String, EnrollError> {
    let state_dir = settings.state_dir.clone();
    if let Some(token) = &settings.enrollment_token {
        return Ok(token.expose().clone());
    }
    let Some(path) = &settings.enrollment_token_file else {
        return Err(EnrollError::NoToken { state_dir });
    };
    let text = std::fs::read_to_string(path).map_err(|source| EnrollError::TokenFile {
        state_dir: state_dir.clone(),
        path: path.clone(),
        source,
    })?;
    match text.trim() {
        "" => Err(EnrollError::EmptyTokenFile {
            state_dir,
            path: path.clone(),
        }),
        token => Ok(token.to_owned()),
    }
}

/// A fresh key pair and a CSR for it: (key PEM, CSR PEM). The key never leaves the gateway.
fn key_and_csr(gateway_id: &str) -> Result<(String, String), EnrollError> {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .map_err(|e| EnrollError::Key(e.to_string()))?;
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, gateway_id);
    let csr = params
        .serialize_request(&key)
        .and_then(|r| r.pem())
        .map_err(|e| EnrollError::Key(e.to_string()))?;
    Ok((key.serialize_pem(), csr))
}

fn identity_from(cert: pb::GatewayCertificate, key_pem: String) -> Result<Identity, EnrollError> {
    Identity::from_pems(cert.cert_pem, key_pem).map_err(EnrollError::BadCertificate)
}

/// Connects to the control plane with the certificate in `state_dir`, or
/// enrolls first when there is no valid one.
pub async fn establish(
    urls: &[String],
    settings: &EnrollmentSettings,
    gateway_id: &str,
    environment: &str,
) -> Result<(ControlClient, Identity), EnrollError> {
    let ca_path = &settings.control_plane_ca;
    let server_ca = std::fs::read_to_string(ca_path).map_err(|e| EnrollError::BadCa {
        path: ca_path.clone(),
        reason: e.to_string(),
    })?;
    if pem_block(&server_ca, "CERTIFICATE").is_none() {
        return Err(EnrollError::BadCa {
            path: ca_path.clone(),
            reason: "no PEM certificate in it".to_owned(),
        });
    }
    let dir = &settings.state_dir;
    create_state_dir(dir)?;
    let identity = match load(dir) {
        Some(id) if id.is_valid() && signed_by(&id.cert_pem, &server_ca) => {
            tracing::info!(state_dir = %dir.display(), not_after = ?id.not_after, "using the stored gateway certificate");
            id
        }
        stored => {
            if stored.is_some() {
                tracing::warn!(state_dir = %dir.display(), "the stored gateway certificate is not valid now, or not from control_plane_ca; enrolling again");
            }
            let token = enrollment_token(settings)?;
            let (key_pem, csr_pem) = key_and_csr(gateway_id)?;
            let request = pb::EnrollRequest {
                token,
                csr_pem,
                gateway_id: gateway_id.to_owned(),
                version: env!("CARGO_PKG_VERSION").to_owned(),
            };
            let cert = enroll_with_any(urls, &server_ca, request).await?;
            tracing::info!(gateway = %cert.gateway_id, environment = %cert.environment, "enrolled with the control plane");
            if cert.environment != environment {
                tracing::warn!(configured = %environment, enrolled = %cert.environment, "the enrollment token binds this gateway to another environment than its config names; the certificate's environment applies");
            }
            let ca_pem = cert.ca_pem.clone();
            let id = identity_from(cert, key_pem)?;
            store(dir, &id, &ca_pem)?;
            id
        }
    };
    let client =
        ControlClient::with_identity(urls, &server_ca, &identity.cert_pem, &identity.key_pem)?;
    Ok((client, identity))
}

/// Enrolls with the first of `urls` that answers; a replica that refuses the
/// token ends the attempt (the token is spent or wrong everywhere).
async fn enroll_with_any(
    urls: &[String],
    server_ca: &str,
    request: pb::EnrollRequest,
) -> Result<pb::GatewayCertificate, EnrollError> {
    let mut unreachable = Vec::new();
    for url in urls {
        let channel = match endpoint(url, Some(tls_config(server_ca, None)))?
            .connect()
            .await
        {
            Ok(channel) => channel,
            Err(e) => {
                unreachable.push(format!("{url}: {}", error_chain(&e)));
                continue;
            }
        };
        match GatewayEnrollmentClient::new(channel)
            .enroll(request.clone())
            .await
        {
            Ok(cert) => return Ok(cert.into_inner()),
            Err(s) if s.code() == tonic::Code::Unavailable => {
                unreachable.push(format!("{url}: {}", s.message()));
            }
            Err(s) => return Err(EnrollError::Refused(s.message().to_owned())),
        }
    }
    Err(EnrollError::Unreachable(unreachable.join("; ")))
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// Renews the certificate at two thirds of its lifetime, for as long as the
/// gateway runs. A failed renewal is retried with backoff; if the
/// certificate ends meanwhile, calls fail (closed) until a renewal succeeds
/// or the gateway is enrolled again.
pub fn spawn_rotation(client: ControlClient, state_dir: PathBuf, mut current: Identity) {
    tokio::spawn(async move {
        loop {
            let wait = current
                .renew_at()
                .duration_since(SystemTime::now())
                .unwrap_or_default();
            tokio::time::sleep(wait).await;
            let mut retry = RETRY_MIN;
            loop {
                match renew(&client, &state_dir).await {
                    Ok(next) => {
                        tracing::info!(not_after = ?next.not_after, "gateway certificate renewed");
                        current = next;
                        break;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, not_after = ?current.not_after, "gateway certificate renewal failed; will retry");
                        tokio::time::sleep(retry).await;
                        retry = (retry * 2).min(RETRY_MAX);
                    }
                }
            }
        }
    });
}

async fn renew(client: &ControlClient, state_dir: &Path) -> Result<Identity, EnrollError> {
    let (key_pem, csr_pem) = key_and_csr("renewal")?;
    let mut call = tonic::Request::new(pb::RenewRequest {
        csr_pem,
        version: env!("CARGO_PKG_VERSION").to_owned(),
    });
    call.set_timeout(Duration::from_secs(10));
    let cert = client
        .client()
        .renew(call)
        .await
        .map_err(|s| EnrollError::Refused(s.message().to_owned()))?
        .into_inner();
    let ca_pem = cert.ca_pem.clone();
    let id = identity_from(cert, key_pem)?;
    // On disk first: a restart after this point uses the new certificate.
    store(state_dir, &id, &ca_pem)?;
    client.replace_identity(&id.cert_pem, &id.key_pem)?;
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_certificate_and_key_in_one_private_file() {
        let dir = tempfile::tempdir().unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["gw".to_owned()]).unwrap();
        let now = SystemTime::now();
        params.not_before = (now - Duration::from_secs(30)).into();
        params.not_after = (now + Duration::from_secs(60)).into();
        let cert = params.self_signed(&key).unwrap();
        let id = Identity::from_pems(cert.pem(), key.serialize_pem()).unwrap();
        assert!(id.is_valid());
        assert!(id.renew_at() > now && id.renew_at() < id.not_after);
        store(dir.path(), &id, &cert.pem()).unwrap();
        let loaded = load(dir.path()).unwrap();
        assert_eq!(loaded.cert_pem.trim(), id.cert_pem.trim());
        assert_eq!(loaded.key_pem.trim(), id.key_pem.trim());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(IDENTITY_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert!(!format!("{id:?}").contains("PRIVATE"));
        // Self-signed: it verifies against itself, not against another CA.
        assert!(signed_by(&id.cert_pem, &cert.pem()));
        let other = rcgen::KeyPair::generate().unwrap();
        let other_ca = rcgen::CertificateParams::new(vec!["ca".to_owned()])
            .unwrap()
            .self_signed(&other)
            .unwrap();
        assert!(!signed_by(&id.cert_pem, &other_ca.pem()));
    }
}
