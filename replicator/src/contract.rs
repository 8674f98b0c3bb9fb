//! What the replicator and the deployer must agree on: environment variable names, tag keys and
//! the connection secret's JSON shape. No I/O. The deployer includes this very file, so each
//! name is written once; `tests/` pins that both sides use it.

use serde::{Deserialize, Serialize};

use crate::secret::SecretString;

/// Environment variables the Lambda reads (the CLI flags of `replicator sync` read the same ones).
pub mod env {
    pub const PREFIX: &str = "REPLICATOR_PREFIX";
    pub const MOUNT: &str = "REPLICATOR_MOUNT";
    pub const PATH: &str = "REPLICATOR_PATH";
    pub const KMS_KEY_ID: &str = "REPLICATOR_KMS_KEY_ID";
    pub const SNS_TOPIC_ARN: &str = "REPLICATOR_SNS_TOPIC_ARN";
    pub const DELETION_POLICY: &str = "REPLICATOR_DELETION_POLICY";
    pub const RECOVERY_WINDOW_DAYS: &str = "REPLICATOR_RECOVERY_WINDOW_DAYS";
    pub const MAX_DELETE_SHARE: &str = "REPLICATOR_MAX_DELETE_SHARE";
    pub const ON_MODIFIED: &str = "REPLICATOR_ON_MODIFIED";
    pub const ADOPT: &str = "REPLICATOR_ADOPT";
    pub const CONNECTION_SECRET: &str = "REPLICATOR_CONNECTION_SECRET";
    pub const CONCURRENCY: &str = "REPLICATOR_CONCURRENCY";
    pub const WRITES_PER_SECOND: &str = "REPLICATOR_WRITES_PER_SECOND";
    pub const DRY_RUN: &str = "REPLICATOR_DRY_RUN";
    pub const MAX_DURATION: &str = "REPLICATOR_MAX_DURATION";
    pub const VAULT_ADDR: &str = "VAULT_ADDR";
    pub const VAULT_TOKEN: &str = "VAULT_TOKEN";
    pub const VAULT_CACERT: &str = "VAULT_CACERT";
    pub const VAULT_ROLE_ID: &str = "VAULT_ROLE_ID";
    pub const VAULT_SECRET_ID: &str = "VAULT_SECRET_ID";
    pub const VAULT_APPROLE_MOUNT: &str = "VAULT_APPROLE_MOUNT";
    pub const VAULT_AWS_ROLE: &str = "VAULT_AWS_ROLE";
    pub const VAULT_AWS_AUTH_MOUNT: &str = "VAULT_AWS_AUTH_MOUNT";
    pub const VAULT_AWS_SERVER_ID: &str = "VAULT_AWS_SERVER_ID";
    pub const VAULT_NAMESPACE: &str = "VAULT_NAMESPACE";
}

/// Tag keys written on every replicated secret.
pub mod tags {
    /// The Vault `current_version` the AWS value was copied from (the sample's tag, kept).
    pub const VERSION: &str = "version";
    /// The `created_time` of that Vault version: with the path and version it makes the
    /// deterministic version id, so out-of-band writes are detected without reading values.
    pub const VERSION_CREATED: &str = "vault-version-created";
    /// Which tool owns the secret.
    pub const MANAGED_BY: &str = "managed-by";
    pub const MANAGED_BY_VALUE: &str = "vault-secrets-replicator";
    /// The Vault KV v2 mount the secret comes from.
    pub const VAULT_MOUNT: &str = "vault-mount";
    /// The path inside the mount that the sync replicates (`/` for the whole mount).
    pub const VAULT_PATH: &str = "vault-path";
    /// The name prefix of the sync that wrote it: two syncs of one mount with nested prefixes
    /// (`app` and `app/mirror`) each touch only their own replicas.
    pub const PREFIX: &str = "replica-prefix";
}

/// What Vault answers (HTTP 400) while a KV v2 mount upgrades its storage, for a moment after it
/// is enabled: "try again shortly", for `vault-init` and the replicator alike.
pub const KV_UPGRADING: &str = "Upgrading from non-versioned to versioned data";

/// Default prefix of replicated names, and default KV v2 mount (as in the sample).
pub const DEFAULT_PREFIX: &str = "hybrid-aws-secrets";

/// Name of the connection secret for a prefix. It sits *outside* `<prefix>/`, so the replicator's
/// write scope (`<prefix>/*`) never covers its own credentials.
pub fn connection_secret_name(prefix: &str) -> String {
    format!("{prefix}-connection/vault")
}

/// The connection secret: how the replicator reaches and logs in to Vault. The sample's two keys
/// (`vaultAddress`, `vaultToken`) keep their names; the rest is optional.
#[derive(Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ConnectionSecret {
    pub vault_address: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vault_token: Option<SecretString>,
    /// PEM certificate(s) of the authority that signed Vault's TLS certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vault_ca_cert: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vault_role_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vault_secret_id: Option<SecretString>,
    /// AppRole auth mount (default `approle`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vault_approle_mount: Option<String>,
    /// Vault role of the AWS IAM auth method (instead of AppRole or a token).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vault_aws_role: Option<String>,
    /// AWS auth mount (default `aws`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vault_aws_auth_mount: Option<String>,
    /// `X-Vault-AWS-IAM-Server-ID` value, when the auth method requires one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vault_aws_server_id: Option<String>,
    /// KV v2 mount to replicate (overrides the configured mount).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vault_kv_mount: Option<String>,
    /// Vault Enterprise / OpenBao namespace of the mount and the login (`X-Vault-Namespace`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vault_namespace: Option<String>,
}

impl std::fmt::Debug for ConnectionSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectionSecret")
            .field("vault_address", &self.vault_address)
            .field(
                "vault_token",
                &self.vault_token.as_ref().map(|_| "<redacted>"),
            )
            .field(
                "vault_ca_cert",
                &self.vault_ca_cert.as_ref().map(|_| "<pem>"),
            )
            .field("vault_role_id", &self.vault_role_id)
            .field(
                "vault_secret_id",
                &self.vault_secret_id.as_ref().map(|_| "<redacted>"),
            )
            .field("vault_approle_mount", &self.vault_approle_mount)
            .field("vault_aws_role", &self.vault_aws_role)
            .field("vault_aws_auth_mount", &self.vault_aws_auth_mount)
            .field("vault_aws_server_id", &self.vault_aws_server_id)
            .field("vault_kv_mount", &self.vault_kv_mount)
            .field("vault_namespace", &self.vault_namespace)
            .finish()
    }
}
