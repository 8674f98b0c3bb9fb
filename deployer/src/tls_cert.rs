//! Vault's TLS material, made by the deployer: a private certificate authority and a server
//! certificate for Vault's addresses. The CA's key is used once and dropped; the server key goes
//! only into a Secrets Manager secret the Vault instance reads. Pure (randomness aside).

use std::net::IpAddr;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType,
};
use serde::{Deserialize, Serialize};

use contract::secret::SecretString;

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
#[error("making Vault's TLS certificate")]
pub struct CertError(#[from] rcgen::Error);

/// How long the CA and the server certificate are valid, from the day they are made.
const VALIDITY: time::Duration = time::Duration::days(5 * 365);

/// (not before, not after) of a certificate made at `now`: a day back, for clocks a little
/// behind, and [`VALIDITY`] ahead.
fn validity(now: time::OffsetDateTime) -> (time::OffsetDateTime, time::OffsetDateTime) {
    (now - time::Duration::days(1), now + VALIDITY)
}

/// Issues a CA and a server certificate valid for `ips` (and `localhost`), for 5 years from now.
pub fn issue(stack: &str, ips: &[IpAddr]) -> Result<TlsMaterial, CertError> {
    let (not_before, not_after) = validity(time::OffsetDateTime::now_utc());
    let e = CertError::from;
    let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(e)?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.distinguished_name
        .push(DnType::CommonName, format!("{stack} Vault CA"));
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    (ca.not_before, ca.not_after) = (not_before, not_after);
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
    (server.not_before, server.not_after) = (not_before, not_after);
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

    #[test]
    fn validity_is_counted_from_the_day_the_certificate_is_made() {
        let made = time::OffsetDateTime::from_unix_timestamp(1_900_000_000).unwrap(); // 2030
        let (from, to) = validity(made);
        assert!(from < made && made - from <= time::Duration::days(1));
        assert_eq!(to - made, time::Duration::days(5 * 365));
        assert!(to.year() >= 2034, "not a fixed date in the past: {to}");
    }
}
