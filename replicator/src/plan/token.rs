//! Version ids: the deterministic `ClientRequestToken` of each Vault version this tool writes,
//! and the one a replica's tags say it wrote last. Pure.

use sha2::{Digest, Sha256};

use crate::model::{AwsSecret, Rule};
use contract::tags;

/// The deterministic `ClientRequestToken` (and so version id) of one Vault version: the same
/// (mount, path, version, creation time) always gives the same id, so a retried write never makes
/// a second AWS version, and the id the tool last wrote can be recomputed from the tags.
pub fn version_token(mount: &str, vault_path: &str, version: u64, created_time: &str) -> String {
    key_token(mount, vault_path, None, version, created_time)
}

/// [`version_token`] of the replica of one key of the secret (`secret-key` granularity): the key
/// is one more part of the digest.
pub fn key_token(
    mount: &str,
    vault_path: &str,
    key: Option<&str>,
    version: u64,
    created_time: &str,
) -> String {
    let mut h = Sha256::new();
    let version = version.to_string();
    let parts = [
        "vault-secrets-replicator/v1",
        mount,
        vault_path,
        &version,
        created_time,
    ];
    for part in parts.into_iter().chain(key) {
        h.update(part.as_bytes());
        h.update([0u8]);
    }
    let d = h.finalize();
    let mut b = [0u8; 16];
    b.copy_from_slice(&d[..16]);
    b[6] = (b[6] & 0x0f) | 0x80; // UUID version 8 (custom)
    b[8] = (b[8] & 0x3f) | 0x80; // RFC 4122 variant
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// The Vault version (number, creation time) a replica's tags say it holds.
pub fn recorded_version(secret: &AwsSecret) -> Option<(u64, &str)> {
    let version = secret.tags.get(tags::VERSION)?.parse().ok()?;
    Some((version, secret.tags.get(tags::VERSION_CREATED)?))
}

/// The version id the replicator wrote last into `secret`, as the replica of `rel` (a path
/// relative to the rule's sub-path), computed from its tags.
pub fn recorded_token(secret: &AwsSecret, rule: &Rule, rel: &str) -> Option<String> {
    let (version, created) = recorded_version(secret)?;
    Some(key_token(
        &rule.mount,
        &rule.vault_path(rel),
        secret.tags.get(tags::KEY),
        version,
        created,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: &str = "2026-11-01T10:00:00Z";

    #[test]
    fn tokens_are_stable_uuid_shaped_and_distinct() {
        let a = version_token("kv", "a", 1, T);
        assert_eq!(a, version_token("kv", "a", 1, T));
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "8");
        assert_ne!(a, version_token("kv", "a", 2, T));
        assert_ne!(a, version_token("kv", "a", 1, "2026-11-02T10:00:00Z"));
        assert_ne!(a, version_token("kv2", "a", 1, T));
        assert_ne!(a, key_token("kv", "a", Some("k"), 1, T));
    }

    /// Pinned literals (computed outside this code: SHA-256 over the NUL-terminated parts, UUID
    /// v8 bits set). Every replica's current version id is one of these: a change here would turn
    /// every replica into `modified_outside` on the next run.
    #[test]
    fn tokens_are_pinned() {
        assert_eq!(
            version_token("kv", "a", 1, T),
            "45b812c1-fe2e-8c77-845a-8f1e44a38315"
        );
        assert_eq!(
            version_token(
                "hybrid-aws-secrets",
                "apps/web/db",
                3,
                "2026-11-28T12:34:56.789012345Z"
            ),
            "6ba2b322-6a68-864e-aff3-f37864175449"
        );
        // A key's replica: the key is the last part.
        assert_eq!(
            key_token("kv", "app/db", Some("password"), 2, T),
            "6615df1b-224c-82a3-81d3-9e9ef07107c8"
        );
    }
}
