//! Vault's TLS material, made by the deployer: a private certificate authority and a server
//! certificate for Vault's addresses. The CA's key is used once and dropped; the server key goes
//! only into a Secrets Manager secret the Vault instance reads. Pure (randomness aside).

use std::net::IpAddr;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType,
};
use serde::{Deserialize, Serialize};

use crate::secret::SecretString;

/// What the TLS secret holds (JSON).
#[derive(Clone, Serialize, Deserialize)]
pub struct TlsMaterial {
    /// PEM of the authority the replicator and operators trust.
    pub ca_certificate: String,
    pub certificate: String,
    pub private_key: SecretString,
}

impl std::fmt::Debug for TlsMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsMaterial")
            .field("private_key", &"<redacted>")
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
#[error("making Vault's TLS certificate: {0}")]
pub struct CertError(String);

/// Issues a CA and a server certificate valid for `ips` (and `localhost`), for ~5 years.
pub fn issue(stack: &str, ips: &[IpAddr]) -> Result<TlsMaterial, CertError> {
    let e = |x: rcgen::Error| CertError(x.to_string());
    let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(e)?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.distinguished_name
        .push(DnType::CommonName, format!("{stack} Vault CA"));
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ca.not_after = rcgen::date_time_ymd(2031, 1, 1);
    let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().map_err(e)?).map_err(e)?;

    let mut server = CertificateParams::new(vec!["localhost".to_owned()]).map_err(e)?;
    server
        .distinguished_name
        .push(DnType::CommonName, format!("{stack} Vault"));
    server
        .subject_alt_names
        .extend(ips.iter().map(|ip| SanType::IpAddress(*ip)));
    server.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    server.not_after = rcgen::date_time_ymd(2031, 1, 1);
    let key = KeyPair::generate().map_err(e)?;
    let cert = server.signed_by(&key, &ca).map_err(e)?;
    Ok(TlsMaterial {
        ca_certificate: ca.pem(),
        certificate: cert.pem(),
        private_key: SecretString::new(key.serialize_pem()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issues_a_ca_and_a_server_certificate() {
        let ips: Vec<IpAddr> = vec![
            "203.0.113.7".parse().unwrap(),
            "10.42.0.10".parse().unwrap(),
        ];
        let m = issue("demo", &ips).unwrap();
        assert!(m.ca_certificate.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(m.certificate.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(m.private_key.expose().contains("PRIVATE KEY"));
        assert!(!format!("{m:?}").contains("PRIVATE KEY"));
    }
}
