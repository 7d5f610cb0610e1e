//! The gateway CA: a key and a self-signed certificate that sign the gRPC
//! server certificate and every gateway's client certificate.
//!
//! Gateway certificates carry one URI SAN,
//! `spiffe://countersign/gateway/<environment>/<id>`, and the id as common
//! name. The control plane builds every certificate from its own parameters:
//! of a gateway's CSR only the public key is used (and its signature checked),
//! so a gateway cannot ask for another name, another environment, a CA flag
//! or a longer lifetime.
//!
//! What this does not do: there is no revocation list. A gateway certificate
//! stays valid until it ends, which is why lifetimes are short (24 h by
//! default) and gateways renew at two thirds of it; to cut every gateway off
//! at once, rotate the CA (docs/operations.md).

use chrono::{DateTime, Utc};
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use std::time::Duration;

/// URI SAN prefix of gateway certificates.
pub const SPIFFE_PREFIX: &str = "spiffe://countersign/gateway/";

/// Lifetime of a generated CA certificate.
const CA_LIFETIME: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// Certificates start a little in the past, so that a peer whose clock is
/// slightly behind accepts them at once: a tenth of the lifetime, at most
/// this. (Gateways renew two thirds into the validity period, so the backdate
/// must stay small against the lifetime.)
const MAX_BACKDATE: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("gateway CA: {0}")]
    Ca(String),
    #[error("the certificate signing request is not valid: {0}")]
    BadCsr(String),
}

/// The CA, ready to sign.
pub struct GatewayCa {
    cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for GatewayCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatewayCa").finish_non_exhaustive()
    }
}

/// A certificate the CA signed.
#[derive(Clone, Debug)]
pub struct IssuedCert {
    pub cert_pem: String,
    /// Hex serial number.
    pub serial: String,
    pub not_after: DateTime<Utc>,
}

fn offset(t: DateTime<Utc>) -> Result<time::OffsetDateTime, CaError> {
    time::OffsetDateTime::from_unix_timestamp(t.timestamp())
        .map_err(|e| CaError::Ca(format!("time out of range: {e}")))
}

fn random_serial() -> (SerialNumber, String) {
    let mut bytes: [u8; 16] = rand::random();
    // Positive, and never starting with a zero byte.
    bytes[0] = (bytes[0] & 0x7f) | 0x01;
    (SerialNumber::from_slice(&bytes), hex::encode(bytes))
}

fn validity(params: &mut CertificateParams, lifetime: Duration) -> Result<DateTime<Utc>, CaError> {
    let now = Utc::now();
    let backdate = chrono::Duration::from_std(MAX_BACKDATE.min(lifetime / 10)).unwrap_or_default();
    let lifetime = chrono::Duration::from_std(lifetime)
        .map_err(|_| CaError::Ca("certificate lifetime is too long".to_owned()))?;
    let not_after = now + lifetime;
    params.not_before = offset(now - backdate)?;
    params.not_after = offset(not_after)?;
    // X.509 stores seconds: report what the certificate says.
    Ok(DateTime::from_timestamp(not_after.timestamp(), 0).unwrap_or(not_after))
}

impl GatewayCa {
    /// A new CA: (certificate PEM, key PEM).
    pub fn generate_pem() -> Result<(String, String), CaError> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .map_err(|e| CaError::Ca(e.to_string()))?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "Countersign gateway CA");
        dn.push(DnType::OrganizationName, "Countersign");
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.serial_number = Some(random_serial().0);
        validity(&mut params, CA_LIFETIME)?;
        let cert = params
            .self_signed(&key)
            .map_err(|e| CaError::Ca(e.to_string()))?;
        Ok((cert.pem(), key.serialize_pem()))
    }

    /// Loads a CA from its certificate and key (PEM).
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, CaError> {
        let key = KeyPair::from_pem(key_pem)
            .map_err(|e| CaError::Ca(format!("the CA key cannot be read: {e}")))?;
        let issuer = Issuer::from_ca_cert_pem(cert_pem, key)
            .map_err(|e| CaError::Ca(format!("the CA certificate cannot be read: {e}")))?;
        Ok(Self {
            cert_pem: cert_pem.to_owned(),
            issuer,
        })
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// A server certificate for the gRPC listener, for `names` (DNS names
    /// or IP addresses): (certificate PEM, key PEM).
    pub fn issue_server_cert(
        &self,
        names: &[String],
        lifetime: Duration,
    ) -> Result<(String, String), CaError> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .map_err(|e| CaError::Ca(e.to_string()))?;
        let mut params = CertificateParams::new(names.to_vec())
            .map_err(|e| CaError::Ca(format!("grpc_tls names: {e}")))?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "Countersign control plane");
        params.distinguished_name = dn;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.use_authority_key_identifier_extension = true;
        params.serial_number = Some(random_serial().0);
        validity(&mut params, lifetime)?;
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(|e| CaError::Ca(e.to_string()))?;
        Ok((cert.pem(), key.serialize_pem()))
    }

    /// Checks that `csr_pem` is a CSR whose signature verifies.
    pub fn check_csr(csr_pem: &str) -> Result<(), CaError> {
        CertificateSigningRequestParams::from_pem(csr_pem)
            .map(|_| ())
            .map_err(|e| CaError::BadCsr(e.to_string()))
    }

    /// Signs a client certificate for gateway `id` in `environment`, for the
    /// public key of `csr_pem` (whose signature must verify).
    pub fn issue_gateway_cert(
        &self,
        csr_pem: &str,
        id: &str,
        environment: &str,
        lifetime: Duration,
    ) -> Result<IssuedCert, CaError> {
        let csr = CertificateSigningRequestParams::from_pem(csr_pem)
            .map_err(|e| CaError::BadCsr(e.to_string()))?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, id);
        dn.push(DnType::OrganizationalUnitName, environment);
        params.distinguished_name = dn;
        let uri = format!("{SPIFFE_PREFIX}{environment}/{id}");
        params.subject_alt_names = vec![SanType::URI(
            uri.try_into()
                .map_err(|e| CaError::Ca(format!("gateway URI: {e}")))?,
        )];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.use_authority_key_identifier_extension = true;
        let (serial_number, serial) = random_serial();
        params.serial_number = Some(serial_number);
        let not_after = validity(&mut params, lifetime)?;
        let cert = params
            .signed_by(&csr.public_key, &self.issuer)
            .map_err(|e| CaError::Ca(e.to_string()))?;
        Ok(IssuedCert {
            cert_pem: cert.pem(),
            serial,
            not_after,
        })
    }
}

/// The gateway a client certificate names, as the CA issued it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GatewayIdentity {
    pub id: String,
    pub environment: String,
    /// Hex serial number of the certificate.
    pub serial: String,
    pub not_after: DateTime<Utc>,
}

impl GatewayIdentity {
    /// Reads the identity from a client certificate (DER) that the TLS layer
    /// has already verified against the CA. `None` if it carries no gateway
    /// URI SAN (for example the server certificate).
    pub fn from_der(der: &[u8]) -> Option<Self> {
        use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};
        let (_, cert) = X509Certificate::from_der(der).ok()?;
        let san = cert.subject_alternative_name().ok()??;
        let uri = san.value.general_names.iter().find_map(|n| match n {
            GeneralName::URI(u) => u.strip_prefix(SPIFFE_PREFIX),
            _ => None,
        })?;
        let (environment, id) = uri.split_once('/')?;
        if environment.is_empty() || id.is_empty() || id.contains('/') {
            return None;
        }
        let not_after = DateTime::from_timestamp(cert.validity().not_after.timestamp(), 0)?;
        Some(Self {
            id: id.to_owned(),
            environment: environment.to_owned(),
            serial: hex::encode(cert.raw_serial()),
            not_after,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::pem::PemObject;

    fn csr() -> String {
        let key = KeyPair::generate().unwrap();
        CertificateParams::new(vec!["ignored.example".to_owned()])
            .unwrap()
            .serialize_request(&key)
            .unwrap()
            .pem()
            .unwrap()
    }

    #[test]
    fn issues_gateway_certs_named_by_the_ca_only() {
        let (cert, key) = GatewayCa::generate_pem().unwrap();
        let ca = GatewayCa::from_pem(&cert, &key).unwrap();
        let issued = ca
            .issue_gateway_cert(&csr(), "gw-1", "prod", Duration::from_secs(60))
            .unwrap();
        let der =
            rustls::pki_types::CertificateDer::from_pem_slice(issued.cert_pem.as_bytes()).unwrap();
        let id = GatewayIdentity::from_der(&der).unwrap();
        assert_eq!((id.id.as_str(), id.environment.as_str()), ("gw-1", "prod"));
        assert_eq!(id.serial, issued.serial);
        assert_eq!(id.not_after, issued.not_after);
        assert!(
            ca.issue_gateway_cert("garbage", "gw", "prod", Duration::from_secs(60))
                .is_err()
        );
    }

    #[test]
    fn server_certs_carry_no_gateway_identity() {
        let (cert, key) = GatewayCa::generate_pem().unwrap();
        let ca = GatewayCa::from_pem(&cert, &key).unwrap();
        let (server, _) = ca
            .issue_server_cert(&["localhost".to_owned()], Duration::from_secs(60))
            .unwrap();
        let der = rustls::pki_types::CertificateDer::from_pem_slice(server.as_bytes()).unwrap();
        assert!(GatewayIdentity::from_der(&der).is_none());
    }
}
