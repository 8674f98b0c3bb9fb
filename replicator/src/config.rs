//! The sync's settings: flags and environment variables (one definition serves the CLI and the
//! Lambda), resolved once ([`SyncArgs::resolve`]) into [`Settings`] and the [`ConnectionSource`].
//! No I/O.

use std::path::PathBuf;

use clap::{Args, ValueEnum};

use crate::aws_auth::StsEndpoint;
pub use crate::model::Rule;
use crate::vault::VaultLogin;
use contract::account::{AccountRole, AccountRoleError};
pub use contract::naming::{Granularity, NameTemplate};
use contract::resource_policy::ResourcePolicy;
use contract::secret::SecretString;
use contract::{ConnectionSecret, DEFAULT_PREFIX, ReplicaRegion, defaults, env, ranges};

pub use contract::{DeletionPolicy, LatestDeleted, OnModified};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Text,
    Json,
}

/// Flags of one sync run. Every flag also reads the environment variable named beside it, which
/// is how the Lambda is configured.
#[derive(Clone, Debug, Args)]
pub struct SyncArgs {
    /// Prefix of the replicated secret names: `<prefix>/<path in Vault>`.
    #[arg(long, env = env::PREFIX, default_value = DEFAULT_PREFIX)]
    pub prefix: String,

    /// Vault KV v2 mount to read [default: the prefix, as in the sample].
    #[arg(long, env = env::MOUNT)]
    pub mount: Option<String>,

    /// Sub-path inside the mount to replicate (default: the whole mount).
    #[arg(long, env = env::PATH, default_value = "")]
    pub path: String,

    /// KMS key (id, ARN or alias) to encrypt created secrets with [default: aws/secretsmanager].
    #[arg(long, env = env::KMS_KEY_ID)]
    pub kms_key_id: Option<String>,

    /// SNS topic that receives one notice when a run has failures.
    #[arg(long, env = env::SNS_TOPIC_ARN)]
    pub sns_topic_arn: Option<String>,

    /// EventBridge bus (name or ARN) that receives one event per replica created, updated,
    /// deleted or restored (names and versions, never a value) [default: no events].
    #[arg(long, env = env::EVENTS_BUS)]
    pub events_bus: Option<String>,

    /// What happens to AWS secrets whose Vault secret was deleted.
    #[arg(long, env = env::DELETION_POLICY, value_enum, default_value = "keep")]
    pub deletion_policy: DeletionPolicy,

    /// Recovery window of deletions, 7 to 30 days.
    #[arg(long, env = env::RECOVERY_WINDOW_DAYS, default_value_t = defaults::RECOVERY_WINDOW_DAYS)]
    pub recovery_window_days: i64,

    /// Breaker: the largest share (0 to 1) of the replicated secrets one run may delete (and
    /// change-driven runs together between two full syncs).
    #[arg(long, env = env::MAX_DELETE_SHARE, default_value_t = defaults::MAX_DELETE_SHARE)]
    pub max_delete_share: f64,

    /// What to do with a secret changed in AWS by someone else.
    #[arg(long, env = env::ON_MODIFIED, value_enum, default_value = "report")]
    pub on_modified: OnModified,

    /// Existing secret names (without owner tag) that this tool may take over. Comma-separated.
    #[arg(long, env = env::ADOPT, value_delimiter = ',')]
    pub adopt: Vec<String>,

    /// Take over the AWS sample's replicas (a `version` tag, no owner tag) under the prefix,
    /// overwriting them with Vault's values. Needed once, when moving from the sample.
    #[arg(long, env = env::ADOPT_SAMPLE)]
    pub adopt_sample: bool,

    /// When a Vault secret's latest version is soft-deleted or destroyed while older ones are
    /// live: replicate the newest live one (fallback), or treat the secret as deleted.
    #[arg(long, env = env::LATEST_DELETED, value_enum, default_value = "fallback")]
    pub latest_deleted: LatestDeleted,

    /// Under --granularity secret-key, the most keys one Vault secret may have (each is a
    /// billable AWS secret): a secret with more fails alone and nothing of it is created.
    #[arg(long, env = env::MAX_KEYS_PER_SECRET, default_value_t = defaults::MAX_KEYS_PER_SECRET)]
    pub max_keys_per_secret: usize,

    /// Secrets Manager secret holding the Vault connection (JSON with `vaultAddress`, ...).
    #[arg(long, env = env::CONNECTION_SECRET)]
    pub connection_secret: Option<String>,

    /// Vault address, when no connection secret is given.
    #[arg(long, env = env::VAULT_ADDR)]
    pub vault_addr: Option<String>,

    /// Vault token, when no connection secret is given.
    #[arg(long, env = env::VAULT_TOKEN, hide_env_values = true)]
    pub vault_token: Option<SecretString>,

    /// PEM file of the authority that signed Vault's certificate.
    #[arg(long, env = env::VAULT_CACERT)]
    pub vault_cacert: Option<PathBuf>,

    /// AppRole role id (with --vault-secret-id, instead of a token).
    #[arg(long, env = env::VAULT_ROLE_ID)]
    pub vault_role_id: Option<String>,

    /// AppRole secret id.
    #[arg(long, env = env::VAULT_SECRET_ID, hide_env_values = true)]
    pub vault_secret_id: Option<SecretString>,

    /// AppRole auth mount.
    #[arg(long, env = env::VAULT_APPROLE_MOUNT, default_value = "approle")]
    pub vault_approle_mount: String,

    /// Vault role of the AWS IAM auth method: log in with this process's AWS identity.
    #[arg(long, env = env::VAULT_AWS_ROLE)]
    pub vault_aws_role: Option<String>,

    /// AWS auth mount.
    #[arg(long, env = env::VAULT_AWS_AUTH_MOUNT, default_value = "aws")]
    pub vault_aws_auth_mount: String,

    /// `X-Vault-AWS-IAM-Server-ID` header value, if the AWS auth method requires one.
    #[arg(long, env = env::VAULT_AWS_SERVER_ID)]
    pub vault_aws_server_id: Option<String>,

    /// STS endpoint the AWS IAM login is signed for, as Vault's AWS auth method is configured
    /// (`sts_endpoint`) [default: https://sts.amazonaws.com/, or the region's own endpoint
    /// when --vault-aws-sts-region is given].
    #[arg(long, env = env::VAULT_AWS_STS_ENDPOINT)]
    pub vault_aws_sts_endpoint: Option<String>,

    /// Signing region of that endpoint (`sts_region`) [default: us-east-1 for the global
    /// endpoint, the endpoint's own region for a regional one].
    #[arg(long, env = env::VAULT_AWS_STS_REGION)]
    pub vault_aws_sts_region: Option<String>,

    /// Vault Enterprise / OpenBao namespace of the mount and the login, sent as
    /// `X-Vault-Namespace` (the connection secret's `vaultNamespace` when it has one).
    #[arg(long, env = env::VAULT_NAMESPACE)]
    pub vault_namespace: Option<String>,

    /// Requests in flight at once, to Vault and to AWS.
    #[arg(long, env = env::CONCURRENCY, default_value_t = defaults::CONCURRENCY)]
    pub concurrency: usize,

    /// Ceiling on Secrets Manager write calls per second (AWS allows 50 for the region).
    #[arg(long, env = env::WRITES_PER_SECOND, default_value_t = defaults::WRITES_PER_SECOND)]
    pub writes_per_second: u32,

    /// Print the plan; change nothing.
    #[arg(long, env = env::DRY_RUN)]
    pub dry_run: bool,

    /// Start no write after this many seconds: the run ends `partial` (a success) and the next
    /// one goes on. The Lambda sets it from its invocation's deadline.
    #[arg(long, env = env::MAX_DURATION, value_name = "SECONDS")]
    pub max_duration: Option<u64>,

    /// Also keep every replica in REGION, encrypted there with KMS_KEY [default: that region's
    /// aws/secretsmanager]. Repeatable; the variable takes a comma-separated list. A region
    /// added later is added to existing replicas, one removed is removed from them.
    #[arg(long = "replica-region", env = env::REPLICA_REGIONS, value_delimiter = ',', value_name = "REGION[=KMS_KEY]")]
    pub replica_regions: Vec<String>,

    /// Every replica's replica regions are looked at (one `DescribeSecret`, no value read) by
    /// the full syncs of one hour in each cycle of this many hours: regions someone removed, or
    /// a replica promoted to a secret of its own, are found and repaired within a cycle.
    #[arg(long, env = env::REGION_AUDIT_HOURS, default_value_t = defaults::REGION_AUDIT_HOURS, value_name = "HOURS")]
    pub region_audit_hours: u64,

    /// The name of each replica after `<prefix>/`, from {path}, {mount} and {key} [default:
    /// {path}, or {path}/{key} with --granularity secret-key].
    #[arg(long, env = env::NAME_TEMPLATE)]
    pub name_template: Option<String>,

    /// One AWS secret per Vault secret (its keys as one JSON object), or one per key of it (its
    /// value the raw string).
    #[arg(long, env = env::GRANULARITY, value_enum, default_value = "secret-path")]
    pub granularity: Granularity,

    /// A tag on every replica. Repeatable; the variable takes a comma-separated list. Always
    /// wins over a Vault secret's custom metadata.
    #[arg(long = "tag", env = env::TAGS, value_delimiter = ',', value_name = "KEY=VALUE")]
    pub tags: Vec<String>,

    /// A tag key a Vault secret's custom metadata `tag:KEY` may set on its replicas.
    /// Repeatable; the variable takes a comma-separated list. None by default: AWS tags can
    /// grant access (ABAC), and writing Vault metadata is a capability apart from reading the
    /// value.
    #[arg(
        long = "metadata-tag-key",
        env = env::METADATA_TAG_KEYS,
        value_delimiter = ',',
        value_name = "KEY"
    )]
    pub metadata_tag_keys: Vec<String>,

    /// Replicate only the secrets whose path (under the mount and --path) matches one of these
    /// globs: `*` matches any characters, `/` included; `?` one character but `/`. Repeatable;
    /// the variable takes a comma-separated list [default: every path].
    #[arg(long, env = env::INCLUDE, value_delimiter = ',', value_name = "GLOB")]
    pub include: Vec<String>,

    /// Do not replicate the secrets whose path matches one of these globs (as --include).
    /// A replica such a secret had is handled as if Vault had deleted it (--deletion-policy).
    #[arg(long, env = env::EXCLUDE, value_delimiter = ',', value_name = "GLOB")]
    pub exclude: Vec<String>,

    /// Replicate only secrets whose custom metadata says `sync = "true"`. Without it, every
    /// secret is replicated but those that say `sync = "false"`.
    #[arg(long, env = env::OPT_IN)]
    pub opt_in: bool,

    /// A resource policy put on every replica (with BlockPublicPolicy): a JSON document, or
    /// `@FILE` to read one, with the variables `${ReplicaArn}` and `${Account}`. Checked first:
    /// every statement names a principal, an Allow never names everyone, and the resource is
    /// the replica. Kept in sync without reading any value; removed from the replicas when no
    /// longer given.
    #[arg(long, env = env::RESOURCE_POLICY, value_name = "JSON|@FILE")]
    pub resource_policy: Option<String>,

    /// Write the replicas into the account of this IAM role, assumed with --external-id
    /// (credentials kept for their lifetime and renewed before they expire) [default: the
    /// account of this process's own credentials]. Vault's connection secret and the failure
    /// topic stay in this process's own account.
    #[arg(long, env = env::ACCOUNT_ROLE_ARN, value_name = "ARN")]
    pub account_role_arn: Option<String>,

    /// The external id the role of --account-role-arn requires. Not a secret, but not for
    /// logs either: its `Debug` is redacted.
    #[arg(long, env = env::EXTERNAL_ID, hide_env_values = true)]
    pub external_id: Option<SecretString>,

    /// The deployed stack this sync is (`deployer`'s stack name): its replicas carry it in
    /// their `replica-stack` tag, and another stack's are never written or deleted. A shell
    /// run of a deployed stack's sync names the same stack [default: none; such a run owns
    /// only replicas without the tag].
    #[arg(long, env = env::STACK, value_name = "NAME")]
    pub stack: Option<String>,

    /// The name of the rule these flags describe (1 to 32 of a-z, 0-9 and -): its replicas
    /// carry it in their `replica-rule` tag, and another rule's are never written or deleted.
    /// A shell run of a named rule (`[[sync]]` in deployer.toml) names the same rule [default:
    /// none; the run owns only replicas without the tag].
    #[arg(long = "rule", env = env::RULE, value_name = "NAME")]
    pub rule_name: Option<String>,

    /// Many sync rules in one process (`[[sync]]` of deployer.toml): a JSON array of rules,
    /// or `@FILE` to read one. Each rule has a `name` and a `prefix`, and takes every other
    /// key it leaves out from the flags (the mount: its own prefix). One Vault walk serves
    /// every rule of a mount; each rule plans, writes, trips its breaker and reports on its
    /// own.
    #[arg(long, env = env::RULES, value_name = "JSON|@FILE")]
    pub rules: Option<String>,

    /// With --rules: a rule naming no account_role_arn writes with the role this ARN prefix
    /// followed by the rule's name makes, assumed with that role's name as its external id, so
    /// that each rule's identity writes its own prefix only (a deployed stack's function is
    /// given the roles `deployer up` makes) [default: this process's own credentials].
    #[arg(long, env = env::RULE_ROLE_ARN_PREFIX, value_name = "ARN")]
    pub rule_role_arn_prefix: Option<String>,
}

/// Validated settings of a run: the rule the planner follows, and how the executor acts.
#[derive(Clone, Debug)]
pub struct Settings {
    pub rule: Rule,
    pub kms_key_id: Option<String>,
    pub sns_topic_arn: Option<String>,
    /// The EventBridge bus each replicated change is put on; none: no events.
    pub events_bus: Option<String>,
    pub recovery_window_days: i64,
    pub concurrency: usize,
    pub writes_per_second: u32,
    pub dry_run: bool,
    /// How long a run may start writes for (`--max-duration`).
    pub max_duration: Option<std::time::Duration>,
    /// No write starts after this moment: `max_duration` counted from the start of the run.
    pub deadline: Option<std::time::Instant>,
    /// The cycle over which every replica's regions are looked at once.
    pub region_audit_hours: u64,
    /// The role the replicas are written with, in another account; none: this process's own
    /// credentials.
    pub account_role: Option<AccountRole>,
    /// The Vault namespace of the rule's mount, when it is not the connection's.
    pub namespace: Option<String>,
    /// The region of the rule's replicas, when it is not this process's.
    pub region: Option<String>,
}

impl Settings {
    /// The region of the replicas: the rule's own, else this process's (`own`).
    pub fn region_or<'a>(&'a self, own: Option<&'a str>) -> Option<&'a str> {
        self.region.as_deref().or(own)
    }
}

/// The settings and the connection, as one run (or a process's many) uses them.
#[derive(Clone, Debug)]
pub struct Resolved {
    /// The flags' settings: the one rule's, or, with a rules document, what the rules share.
    pub settings: Settings,
    /// A rules document's rules, each with its settings; none without one (the document is
    /// read over these flags by [`crate::rules::resolve`]).
    pub rules: Vec<Settings>,
    pub connection: ConnectionSource,
}

/// Where the Vault connection comes from.
#[derive(Clone, Debug)]
pub enum ConnectionSource {
    /// Read from this Secrets Manager secret at every run (its credentials may be rotated);
    /// `defaults` fill what it leaves out.
    Secret {
        name: String,
        defaults: ConnectionDefaults,
    },
    /// Given by flags.
    Direct(VaultConnection),
}

/// What flags give a connection read from a secret that does not say it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConnectionDefaults {
    pub namespace: Option<String>,
    pub sts: StsEndpoint,
}

/// Where Vault is and how to log in: the one shape for flags and the connection secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VaultConnection {
    pub address: String,
    pub login: VaultLogin,
    pub ca: Option<CaCert>,
    /// `X-Vault-Namespace` of the mount and the login; none for the root namespace.
    pub namespace: Option<String>,
}

/// The authority that signed Vault's certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CaCert {
    Pem(String),
    File(PathBuf),
}

impl VaultConnection {
    /// The connection a connection secret describes; the error names what to fix in it (never
    /// a value).
    pub fn from_secret(
        conn: &ConnectionSecret,
        defaults: &ConnectionDefaults,
    ) -> Result<Self, String> {
        if conn.vault_address.is_empty() {
            return Err("vaultAddress is empty".into());
        }
        let given = |v: &Option<String>| v.clone().filter(|s| !s.is_empty());
        let login = match (
            &conn.vault_role_id,
            &conn.vault_secret_id,
            given(&conn.vault_aws_role),
            &conn.vault_token,
        ) {
            (Some(role_id), Some(secret_id), _, _) => VaultLogin::AppRole {
                mount: given(&conn.vault_approle_mount).unwrap_or_else(|| "approle".into()),
                role_id: role_id.clone(),
                secret_id: secret_id.clone(),
            },
            (_, _, Some(role), _) => VaultLogin::AwsIam {
                mount: given(&conn.vault_aws_auth_mount).unwrap_or_else(|| "aws".into()),
                role,
                server_id: given(&conn.vault_aws_server_id),
                sts: match (
                    given(&conn.vault_aws_sts_endpoint),
                    given(&conn.vault_aws_sts_region),
                ) {
                    (None, None) => defaults.sts.clone(),
                    (url, region) => StsEndpoint::new(url.as_deref(), region.as_deref())
                        .map_err(|e| format!("vaultAwsStsEndpoint / vaultAwsStsRegion: {e}"))?,
                },
            },
            (_, _, None, Some(token)) if !token.is_empty() => VaultLogin::Token(token.clone()),
            _ => {
                return Err(
                    "holds no credentials: set vaultToken, vaultRoleId and vaultSecretId, or vaultAwsRole"
                        .into(),
                );
            }
        };
        Ok(Self {
            address: conn.vault_address.clone(),
            login,
            ca: given(&conn.vault_ca_cert).map(CaCert::Pem),
            namespace: contract::namespace(conn.vault_namespace.as_deref())
                .or_else(|| defaults.namespace.clone()),
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{key}: {problem}")]
    Invalid { key: &'static str, problem: String },
    /// A rule of the rules document: its name and the key to fix.
    #[error("--rules / REPLICATOR_RULES: rule {name:?}: {key}: {problem}")]
    Rule {
        name: String,
        key: String,
        problem: String,
    },
}

fn invalid(key: &'static str, problem: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key,
        problem: problem.into(),
    }
}

pub use contract::is_aws_name_char;

impl SyncArgs {
    /// Checks every value once, and says which flag (and variable) to fix.
    pub fn resolve(&self) -> Result<Resolved, ConfigError> {
        Ok(Resolved {
            settings: self.settings()?,
            rules: Vec::new(),
            connection: self.connection()?,
        })
    }

    /// The settings alone, for a process that syncs elsewhere (`watch --invoke-function`).
    pub(crate) fn settings(&self) -> Result<Settings, ConfigError> {
        let prefix = self.prefix.trim_matches('/').to_owned();
        contract::check_prefix(&prefix).map_err(|e| invalid("--prefix / REPLICATOR_PREFIX", e))?;
        let mount = self
            .mount
            .as_deref()
            .map(|m| m.trim_matches('/').to_owned())
            .unwrap_or_else(|| prefix.clone());
        if mount.is_empty() {
            return Err(invalid("--mount / REPLICATOR_MOUNT", "must not be empty"));
        }
        let path = self.path.trim_matches('/').to_owned();
        if !path.is_empty()
            && path
                .split('/')
                .any(|s| s == ".." || s == "." || s.is_empty())
        {
            return Err(invalid(
                "--path / REPLICATOR_PATH",
                "must not contain ., .. or empty segments",
            ));
        }
        if !ranges::RECOVERY_WINDOW_DAYS.contains(&self.recovery_window_days) {
            return Err(invalid(
                "--recovery-window-days / REPLICATOR_RECOVERY_WINDOW_DAYS",
                format!("{} is outside 7 to 30 days", self.recovery_window_days),
            ));
        }
        if !ranges::MAX_DELETE_SHARE.contains(&self.max_delete_share) {
            return Err(invalid(
                "--max-delete-share / REPLICATOR_MAX_DELETE_SHARE",
                format!("{} is outside 0 to 1", self.max_delete_share),
            ));
        }
        if !ranges::CONCURRENCY.contains(&self.concurrency) {
            return Err(invalid(
                "--concurrency / REPLICATOR_CONCURRENCY",
                format!("{} is outside 1 to 256", self.concurrency),
            ));
        }
        if !ranges::WRITES_PER_SECOND.contains(&self.writes_per_second) {
            return Err(invalid(
                "--writes-per-second / REPLICATOR_WRITES_PER_SECOND",
                format!(
                    "{} is outside 1 to 50 (the AWS quota is 50 per region)",
                    self.writes_per_second
                ),
            ));
        }
        if let Some(arn) = &self.sns_topic_arn
            && !(arn.starts_with("arn:") && arn.split(':').count() == 6)
        {
            return Err(invalid(
                "--sns-topic-arn / REPLICATOR_SNS_TOPIC_ARN",
                format!("{arn:?} is not a topic ARN (arn:PARTITION:sns:REGION:ACCOUNT:NAME)"),
            ));
        }
        let events_bus = match self.events_bus.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(bus) => {
                contract::events::check_bus(bus)
                    .map_err(|e| invalid("--events-bus / REPLICATOR_EVENTS_BUS", e))?;
                Some(bus.to_owned())
            }
        };
        let mut replica_regions = self
            .replica_regions
            .iter()
            .filter(|r| !r.trim().is_empty())
            .map(|r| r.parse::<ReplicaRegion>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| invalid("--replica-region / REPLICATOR_REPLICA_REGIONS", e))?;
        replica_regions.sort();
        contract::check_replica_regions(&replica_regions, None)
            .map_err(|e| invalid("--replica-region / REPLICATOR_REPLICA_REGIONS", e))?;
        let name_template = match self.name_template.as_deref().filter(|t| !t.is_empty()) {
            Some(text) => NameTemplate::parse(text, self.granularity)
                .map_err(|e| invalid("--name-template / REPLICATOR_NAME_TEMPLATE", e))?,
            None => NameTemplate::default_for(self.granularity),
        };
        let mut tags = std::collections::BTreeMap::new();
        for pair in self.tags.iter().filter(|t| !t.trim().is_empty()) {
            let (k, v) = pair.split_once('=').ok_or_else(|| {
                invalid(
                    "--tag / REPLICATOR_TAGS",
                    format!("{pair:?} is not KEY=VALUE"),
                )
            })?;
            contract::tags::check(k, v).map_err(|e| invalid("--tag / REPLICATOR_TAGS", e))?;
            if tags.insert(k.to_owned(), v.to_owned()).is_some() {
                return Err(invalid(
                    "--tag / REPLICATOR_TAGS",
                    format!("tag {k:?} is given twice"),
                ));
            }
        }
        let tags: Vec<(String, String)> = tags.into_iter().collect();
        let metadata_tag_keys = contract::tags::metadata_keys(
            self.metadata_tag_keys
                .iter()
                .map(|k| k.trim())
                .filter(|k| !k.is_empty()),
            &tags,
        )
        .map_err(|e| invalid("--metadata-tag-key / REPLICATOR_METADATA_TAG_KEYS", e))?;
        if !ranges::MAX_KEYS_PER_SECRET.contains(&self.max_keys_per_secret) {
            return Err(invalid(
                "--max-keys-per-secret / REPLICATOR_MAX_KEYS_PER_SECRET",
                format!(
                    "{} is outside {} to {}",
                    self.max_keys_per_secret,
                    ranges::MAX_KEYS_PER_SECRET.start(),
                    ranges::MAX_KEYS_PER_SECRET.end()
                ),
            ));
        }
        if !ranges::REGION_AUDIT_HOURS.contains(&self.region_audit_hours) {
            return Err(invalid(
                "--region-audit-hours / REPLICATOR_REGION_AUDIT_HOURS",
                format!(
                    "{} is outside {} to {} hours",
                    self.region_audit_hours,
                    ranges::REGION_AUDIT_HOURS.start(),
                    ranges::REGION_AUDIT_HOURS.end()
                ),
            ));
        }
        let nonempty = |list: &[String]| -> Vec<String> {
            list.iter().filter(|p| !p.is_empty()).cloned().collect()
        };
        let selection = contract::select::Selection::new(
            nonempty(&self.include),
            nonempty(&self.exclude),
            self.opt_in,
        )
        .map_err(|e| {
            invalid(
                "--include / --exclude (REPLICATOR_INCLUDE / REPLICATOR_EXCLUDE)",
                e,
            )
        })?;
        let resource_policy = self.resource_policy()?;
        Ok(Settings {
            account_role: self.account_role()?,
            region_audit_hours: self.region_audit_hours,
            rule: Rule {
                selection,
                resource_policy,
                replica_regions,
                name_template,
                granularity: self.granularity,
                tags,
                metadata_tag_keys,
                prefix,
                mount,
                path,
                deletion_policy: self.deletion_policy,
                max_delete_share: self.max_delete_share,
                on_modified: self.on_modified,
                adopt: self
                    .adopt
                    .iter()
                    .filter(|a| !a.is_empty())
                    .cloned()
                    .collect(),
                adopt_sample: self.adopt_sample,
                latest_deleted: self.latest_deleted,
                max_keys_per_secret: self.max_keys_per_secret,
                stack: self.stack()?,
                name: self.rule_name()?,
            },
            kms_key_id: self.kms_key_id.clone().filter(|k| !k.is_empty()),
            sns_topic_arn: self.sns_topic_arn.clone().filter(|k| !k.is_empty()),
            events_bus,
            recovery_window_days: self.recovery_window_days,
            concurrency: self.concurrency,
            writes_per_second: self.writes_per_second,
            dry_run: self.dry_run,
            max_duration: self.max_duration.map(std::time::Duration::from_secs),
            deadline: None,
            namespace: None,
            region: None,
        })
    }

    /// The replicas' resource policy: given inline or as `@FILE`, checked.
    fn resource_policy(&self) -> Result<Option<ResourcePolicy>, ConfigError> {
        const KEY: &str = "--resource-policy / REPLICATOR_RESOURCE_POLICY";
        let Some(given) = self.resource_policy.as_deref().map(str::trim) else {
            return Ok(None);
        };
        if given.is_empty() {
            return Ok(None);
        }
        let text = match given.strip_prefix('@') {
            Some(path) => std::fs::read_to_string(path)
                .map_err(|e| invalid(KEY, format!("cannot read {path}: {e}")))?,
            None => given.to_owned(),
        };
        ResourcePolicy::parse(&text)
            .map(Some)
            .map_err(|e| invalid(KEY, format!("the policy {e}")))
    }

    /// The stack named, checked as a tag value.
    fn stack(&self) -> Result<Option<String>, ConfigError> {
        let Some(stack) = self
            .stack
            .as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty())
        else {
            return Ok(None);
        };
        // A tag value: the checks of any tag's, under a key of the user's.
        contract::tags::check("stack", stack)
            .map_err(|e| invalid("--stack / REPLICATOR_STACK", e))?;
        Ok(Some(stack.to_owned()))
    }

    /// The rule's name, when one is given, checked.
    fn rule_name(&self) -> Result<Option<String>, ConfigError> {
        let Some(name) = self.rule_name.as_deref().filter(|s| !s.is_empty()) else {
            return Ok(None);
        };
        contract::check_rule_name(name).map_err(|e| invalid("--rule / REPLICATOR_RULE", e))?;
        Ok(Some(name.to_owned()))
    }

    /// The role in another account, when one is given: both values checked.
    fn account_role(&self) -> Result<Option<AccountRole>, ConfigError> {
        const ROLE: &str = "--account-role-arn / REPLICATOR_ACCOUNT_ROLE_ARN";
        const ID: &str = "--external-id / REPLICATOR_EXTERNAL_ID";
        AccountRole::from_settings(
            self.account_role_arn.as_deref(),
            self.external_id.as_ref().map(SecretString::expose),
        )
            .map_err(|e| match e {
                AccountRoleError::RoleArn(e) => invalid(ROLE, e),
                AccountRoleError::ExternalId(e) => invalid(ID, e),
                AccountRoleError::MissingExternalId => invalid(
                    ID,
                    "is required with a role in another account (its trust policy checks it)",
                ),
                AccountRoleError::ExternalIdWithoutRole => invalid(
                    ID,
                    "is given without --account-role-arn / REPLICATOR_ACCOUNT_ROLE_ARN, the role it is for",
                ),
            })
    }

    fn sts(&self) -> Result<StsEndpoint, ConfigError> {
        StsEndpoint::new(
            self.vault_aws_sts_endpoint.as_deref(),
            self.vault_aws_sts_region.as_deref(),
        )
        .map_err(|e| invalid("--vault-aws-sts-endpoint / VAULT_AWS_STS_ENDPOINT", e))
    }

    /// Where to find Vault: the connection secret wins; otherwise address + token or AppRole.
    fn connection(&self) -> Result<ConnectionSource, ConfigError> {
        let namespace = contract::namespace(self.vault_namespace.as_deref());
        if let Some(name) = self.connection_secret.as_ref().filter(|n| !n.is_empty()) {
            return Ok(ConnectionSource::Secret {
                name: name.clone(),
                defaults: ConnectionDefaults {
                    namespace,
                    sts: self.sts()?,
                },
            });
        }
        let address = self.vault_addr.clone().filter(|a| !a.is_empty()).ok_or_else(|| {
            invalid(
                "--vault-addr / VAULT_ADDR",
                "no Vault address: give --connection-secret, or --vault-addr with a token or AppRole",
            )
        })?;
        let login = match (
            &self.vault_role_id,
            &self.vault_secret_id,
            &self.vault_token,
        ) {
            (Some(role_id), Some(secret_id), _) => VaultLogin::AppRole {
                mount: self.vault_approle_mount.clone(),
                role_id: role_id.clone(),
                secret_id: secret_id.clone(),
            },
            (Some(_), None, _) | (None, Some(_), _) => {
                return Err(invalid(
                    "--vault-role-id / --vault-secret-id",
                    "AppRole needs both the role id and the secret id",
                ));
            }
            (None, None, _)
                if self
                    .vault_aws_role
                    .as_deref()
                    .is_some_and(|r| !r.is_empty()) =>
            {
                VaultLogin::AwsIam {
                    mount: self.vault_aws_auth_mount.clone(),
                    role: self.vault_aws_role.clone().unwrap_or_default(),
                    server_id: self.vault_aws_server_id.clone().filter(|s| !s.is_empty()),
                    sts: self.sts()?,
                }
            }
            (None, None, Some(token)) if !token.is_empty() => VaultLogin::Token(token.clone()),
            _ => {
                return Err(invalid(
                    "--vault-token / VAULT_TOKEN",
                    "no Vault credentials: give a token, --vault-role-id and --vault-secret-id, or --vault-aws-role",
                ));
            }
        };
        Ok(ConnectionSource::Direct(VaultConnection {
            address,
            login,
            ca: self.vault_cacert.clone().map(CaCert::File),
            namespace,
        }))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        sync: SyncArgs,
    }

    /// The flags of `args`, as the command line gives them.
    pub(crate) fn parse(args: &[&str]) -> SyncArgs {
        let mut all = vec!["replicator"];
        all.extend_from_slice(args);
        match Cli::try_parse_from(all) {
            Ok(cli) => cli.sync,
            Err(e) => panic!("parse failed: {e}"),
        }
    }

    #[test]
    fn the_flags_debug_output_hides_the_external_id() {
        let args = parse(&[
            "--vault-addr",
            "http://127.0.0.1:8200",
            "--vault-token",
            "t",
            "--account-role-arn",
            "arn:aws:iam::222222222222:role/r",
            "--external-id",
            "ext-secretish",
        ]);
        let shown = format!("{args:?}");
        assert!(
            shown.contains("role/r") && !shown.contains("secretish"),
            "{shown}"
        );
        let role = args.resolve().unwrap().settings.account_role.unwrap();
        assert_eq!(role.external_id, "ext-secretish");
    }

    #[test]
    fn a_role_in_another_account_is_refused_without_its_external_id_or_in_a_bad_shape() {
        let problem = |extra: &[&str]| {
            let mut args = vec![
                "--vault-addr",
                "http://127.0.0.1:8200",
                "--vault-token",
                "t",
            ];
            args.extend_from_slice(extra);
            parse(&args).resolve().err().map(|e| e.to_string())
        };
        let arn = "arn:aws:iam::222222222222:role/r";
        assert_eq!(
            problem(&["--account-role-arn", arn, "--external-id", "ext-1"]),
            None
        );
        let missing = problem(&["--account-role-arn", arn]).unwrap();
        assert!(missing.contains("REPLICATOR_EXTERNAL_ID"), "{missing}");
        let alone = problem(&["--external-id", "ext-1"]).unwrap();
        assert!(alone.contains("without --account-role-arn"), "{alone}");
        let user = problem(&[
            "--account-role-arn",
            "arn:aws:iam::2222:user/r",
            "--external-id",
            "ext-1",
        ]);
        assert!(user.unwrap().starts_with("--account-role-arn"));
        let bad_id = problem(&["--account-role-arn", arn, "--external-id", "not valid!"]).unwrap();
        assert!(
            bad_id.starts_with("--external-id") && !bad_id.contains("not valid!"),
            "{bad_id}"
        );
    }

    #[test]
    fn tokens_and_secret_ids_never_show_in_debug_output() {
        let a = parse(&[
            "--vault-token",
            "s.PLANTED-token-5d1",
            "--vault-role-id",
            "role",
            "--vault-secret-id",
            "PLANTED-secret-id-77e",
        ]);
        let shown = format!("{a:?}");
        assert!(!shown.contains("PLANTED"), "{shown}");
        assert!(
            shown.contains("vault_token: Some(SecretString(<redacted>))"),
            "{shown}"
        );
    }

    #[test]
    fn mount_defaults_to_prefix_and_path_is_normalised() {
        let s = parse(&["--prefix", "team/", "--path", "/apps/web/"])
            .settings()
            .unwrap()
            .rule;
        assert_eq!(s.prefix, "team");
        assert_eq!(s.mount, "team");
        assert_eq!(s.path, "apps/web");
        assert_eq!(s.path_tag(), "apps/web");
    }

    #[test]
    fn each_bad_value_names_its_flag() {
        let cases: &[(&[&str], &str)] = &[
            (&["--prefix", "bad prefix"], "--prefix"),
            (&["--recovery-window-days", "3"], "--recovery-window-days"),
            (&["--max-delete-share", "1.5"], "--max-delete-share"),
            (&["--concurrency", "0"], "--concurrency"),
            (&["--writes-per-second", "80"], "--writes-per-second"),
            (&["--sns-topic-arn", "topic"], "--sns-topic-arn"),
            (&["--path", "a/../b"], "--path"),
            (&["--path", "a//b"], "--path"),
            (&["--rule", "Payments"], "--rule"),
            (&["--replica-region", "mars-1"], "--replica-region"),
            (
                &["--replica-region", "eu-west-1,eu-west-1=k"],
                "--replica-region",
            ),
            (&["--name-template", "{path"], "--name-template"),
            (
                &["--granularity", "secret-key", "--name-template", "{path}"],
                "--name-template",
            ),
            (&["--tag", "team"], "--tag"),
            (&["--tag", "aws:x=1"], "--tag"),
            (&["--tag", "a=1", "--tag", "a=2"], "--tag"),
            (&["--max-keys-per-secret", "0"], "--max-keys-per-secret"),
            (&["--region-audit-hours", "0"], "--region-audit-hours"),
        ];
        for (args, flag) in cases {
            let err = parse(args).settings().unwrap_err().to_string();
            assert!(err.starts_with(flag), "{args:?} gave {err}");
        }
    }

    #[test]
    fn connection_needs_an_address_and_credentials() {
        assert!(parse(&[]).connection().is_err());
        assert!(parse(&["--vault-addr", "http://v"]).connection().is_err());
        assert!(
            parse(&["--vault-addr", "http://v", "--vault-role-id", "r"])
                .connection()
                .is_err()
        );
        assert!(matches!(
            parse(&["--vault-addr", "http://v", "--vault-token", "t"]).connection(),
            Ok(ConnectionSource::Direct(VaultConnection {
                login: VaultLogin::Token(_),
                ..
            }))
        ));
        assert!(matches!(
            parse(&["--vault-addr", "http://v", "--vault-aws-role", "r"]).connection(),
            Ok(ConnectionSource::Direct(VaultConnection {
                login: VaultLogin::AwsIam { .. },
                ..
            }))
        ));
        assert!(matches!(
            parse(&["--connection-secret", "c"]).connection(),
            Ok(ConnectionSource::Secret { .. })
        ));
        let e = parse(&[
            "--vault-addr",
            "http://v",
            "--vault-aws-role",
            "r",
            "--vault-aws-sts-endpoint",
            "https://sts.example.internal/",
        ])
        .connection()
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("VAULT_AWS_STS_ENDPOINT") && e.contains("give the region"),
            "{e}"
        );
    }

    #[test]
    fn a_connection_secret_gives_one_connection_with_the_flags_as_defaults() {
        let defaults = ConnectionDefaults {
            namespace: Some("team".into()),
            sts: StsEndpoint::new(None, Some("cn-north-1")).unwrap(),
        };
        let secret = |json: &str| serde_json::from_str::<ConnectionSecret>(json).unwrap();
        let c = VaultConnection::from_secret(
            &secret(r#"{"vaultAddress":"https://v","vaultAwsRole":"r","vaultCaCert":"PEM"}"#),
            &defaults,
        )
        .unwrap();
        assert_eq!(c.namespace.as_deref(), Some("team"));
        assert_eq!(c.ca, Some(CaCert::Pem("PEM".into())));
        let VaultLogin::AwsIam { mount, sts, .. } = &c.login else {
            panic!("{c:?}")
        };
        assert_eq!((mount.as_str(), sts), ("aws", &defaults.sts));
        let own = VaultConnection::from_secret(
            &secret(
                r#"{"vaultAddress":"https://v","vaultAwsRole":"r","vaultNamespace":"/other/","vaultAwsStsRegion":"eu-west-1"}"#,
            ),
            &defaults,
        )
        .unwrap();
        assert_eq!(own.namespace.as_deref(), Some("other"));
        let VaultLogin::AwsIam { sts, .. } = &own.login else {
            panic!("{own:?}")
        };
        assert_eq!(sts.url, "https://sts.eu-west-1.amazonaws.com/");
        let approle = VaultConnection::from_secret(
            &secret(r#"{"vaultAddress":"https://v","vaultRoleId":"id","vaultSecretId":"sid","vaultToken":"t"}"#),
            &defaults,
        )
        .unwrap();
        assert!(
            matches!(approle.login, VaultLogin::AppRole { ref mount, .. } if mount == "approle")
        );
        for (json, why) in [
            (r#"{"vaultAddress":""}"#, "vaultAddress is empty"),
            (r#"{"vaultAddress":"https://v"}"#, "holds no credentials"),
            (
                r#"{"vaultAddress":"https://v","vaultToken":""}"#,
                "holds no credentials",
            ),
            (
                r#"{"vaultAddress":"https://v","vaultAwsRole":"r","vaultAwsStsEndpoint":"http://x"}"#,
                "vaultAwsStsEndpoint",
            ),
        ] {
            let e = VaultConnection::from_secret(&secret(json), &defaults).unwrap_err();
            assert!(e.contains(why), "{json}: {e}");
        }
    }
}
