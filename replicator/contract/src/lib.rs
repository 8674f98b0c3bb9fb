//! What the replicator and the deployer must agree on: environment variable names, tag keys,
//! the connection secret's JSON shape, the setting ranges, what makes a secret a replica, and
//! which prefixes are valid. No I/O. Both programs depend on this crate, so each is written once.
//!
//! With the `aws` feature it also holds the AWS SDK plumbing both programs share ([`sdk`],
//! [`tls`]).

use std::ops::RangeInclusive;

use serde::{Deserialize, Serialize};

pub mod account;
pub mod naming;
pub mod report;
#[cfg(feature = "resource-policy")]
pub mod resource_policy;
#[cfg(feature = "rules")]
pub mod rules;
#[cfg(feature = "aws")]
pub mod sdk;
pub mod secret;
pub mod select;
pub mod status;
#[cfg(feature = "aws")]
pub mod tls;
#[cfg(feature = "vault-http")]
pub mod vault_http;

use crate::secret::SecretString;

/// The subject of a failed run's notice on the failure topic, whoever sends it: the function's
/// on-failure destination, the change watcher, a shell run, or `deployer sync-now`.
pub const NOTICE_SUBJECT: &str = "vault-secrets-replicator: sync failed";

/// The metrics documents (CloudWatch EMF) the function prints for each run, which the
/// deployer's `status` reads back.
pub mod metrics {
    /// The metrics' namespace.
    pub const NAMESPACE: &str = "VaultSecretsReplicator";
    /// The `Rule` dimension of the one sync the top-level keys describe.
    pub const DEFAULT_RULE: &str = "default";
    /// 1 for a full run that succeeded, else 0: the deployer's alarm of no full sync within two
    /// schedule periods sums it over the stack.
    pub const FULL_SYNCS: &str = "FullSyncsSucceeded";
    /// The start of the namespace of what the change watcher beside a stack's Vault puts
    /// (`watch --cloudwatch-stack`; [`host_namespace`]).
    pub const HOST_NAMESPACE: &str = "VaultSecretsReplicator/Host";

    /// The namespace of what the watcher beside `stack`'s Vault puts: the stack's own, apart
    /// from the runs', so a Vault host, whose role may put metrics there alone, can neither put
    /// the runs' (and hide a failing sync from its alarms) nor another stack's (and quiet its
    /// watcher's alarms).
    pub fn host_namespace(stack: &str) -> String {
        format!("{HOST_NAMESPACE}/{stack}")
    }

    /// Checks a stack name for [`host_namespace`]: 1-128 of letters, digits, `.`, `-`, `_`.
    pub fn check_host_stack(stack: &str) -> Result<(), String> {
        let valid = |c: char| c.is_ascii_alphanumeric() || ".-_".contains(c);
        if stack.is_empty() || stack.len() > 128 || !stack.chars().all(valid) {
            return Err(format!(
                "{stack:?} is not a stack name (1-128 of letters, digits, ., - and _)"
            ));
        }
        Ok(())
    }
    /// 1 each minute the watcher read the audit log within the last minute.
    pub const WATCHER_ALIVE: &str = "WatcherAlive";
    /// The used share (percent) of the filesystem holding Vault's audit log (on the stack's
    /// host, Vault's data too).
    pub const DISK_USED: &str = "AuditLogDiskUsedPercent";
}

/// The change events the replicator puts on an EventBridge bus (`--events-bus`), one per
/// replica created, updated, deleted or restored, which the deployer's policy allows and its
/// docs describe. Names and numbers only, never a value.
pub mod events {
    /// Every event's `source`: the policy allows `events:PutEvents` with this source alone.
    pub const SOURCE: &str = "vault-secrets-replicator";
    /// The `detail-type` of each action, in the order created, updated, deleted, restored.
    pub const DETAIL_TYPES: [&str; 4] = [
        "Replica Created",
        "Replica Updated",
        "Replica Deleted",
        "Replica Restored",
    ];
    /// The bus of a stack's `events = true` with no `events_bus`: the account's default bus.
    pub const DEFAULT_BUS: &str = "default";

    /// Checks an event bus given by name (1-256 of letters, digits, `.`, `-`, `_`, `/`) or by
    /// ARN (`arn:PARTITION:events:REGION:ACCOUNT:event-bus/NAME`).
    pub fn check_bus(bus: &str) -> Result<(), String> {
        let name = match bus.strip_prefix("arn:") {
            Some(rest) => {
                let parts: Vec<&str> = rest.splitn(5, ':').collect();
                match parts.as_slice() {
                    [_, "events", region, account, resource]
                        if !region.is_empty() && account.len() == 12 =>
                    {
                        resource.strip_prefix("event-bus/").ok_or_else(|| {
                            format!("{bus:?} is not an event bus ARN (…:event-bus/NAME)")
                        })?
                    }
                    _ => {
                        return Err(format!(
                            "{bus:?} is not an event bus ARN (arn:PARTITION:events:REGION:ACCOUNT:event-bus/NAME)"
                        ));
                    }
                }
            }
            None => bus,
        };
        let valid = |c: char| c.is_ascii_alphanumeric() || "._-/".contains(c);
        if name.is_empty() || name.len() > 256 || !name.chars().all(valid) {
            return Err(format!(
                "{name:?} is not an event bus name (1-256 of letters, digits, ., -, _ and /)"
            ));
        }
        Ok(())
    }
}

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
    pub const VAULT_AWS_STS_ENDPOINT: &str = "VAULT_AWS_STS_ENDPOINT";
    pub const VAULT_AWS_STS_REGION: &str = "VAULT_AWS_STS_REGION";
    pub const VAULT_NAMESPACE: &str = "VAULT_NAMESPACE";
    pub const REPLICA_REGIONS: &str = "REPLICATOR_REPLICA_REGIONS";
    pub const NAME_TEMPLATE: &str = "REPLICATOR_NAME_TEMPLATE";
    pub const GRANULARITY: &str = "REPLICATOR_GRANULARITY";
    pub const TAGS: &str = "REPLICATOR_TAGS";
    pub const METADATA_TAG_KEYS: &str = "REPLICATOR_METADATA_TAG_KEYS";
    pub const ADOPT_SAMPLE: &str = "REPLICATOR_ADOPT_SAMPLE";
    pub const LATEST_DELETED: &str = "REPLICATOR_LATEST_DELETED";
    pub const MAX_KEYS_PER_SECRET: &str = "REPLICATOR_MAX_KEYS_PER_SECRET";
    pub const REGION_AUDIT_HOURS: &str = "REPLICATOR_REGION_AUDIT_HOURS";
    /// Comma-separated globs: only the paths matching one are replicated ([`crate::select`]).
    pub const INCLUDE: &str = "REPLICATOR_INCLUDE";
    /// Comma-separated globs: the paths matching one are not replicated.
    pub const EXCLUDE: &str = "REPLICATOR_EXCLUDE";
    /// `true`: only secrets whose custom metadata says `sync = "true"` are replicated.
    pub const OPT_IN: &str = "REPLICATOR_OPT_IN";
    /// The replicas' resource policy template (JSON), with `${ReplicaArn}` and `${Account}`.
    pub const RESOURCE_POLICY: &str = "REPLICATOR_RESOURCE_POLICY";
    /// A role in another account the replicas are written into (assumed with
    /// [`EXTERNAL_ID`]); none: the function's own account.
    pub const ACCOUNT_ROLE_ARN: &str = "REPLICATOR_ACCOUNT_ROLE_ARN";
    /// The external id the role of [`ACCOUNT_ROLE_ARN`] requires.
    pub const EXTERNAL_ID: &str = "REPLICATOR_EXTERNAL_ID";
    /// Set (`true`) on the function the stack's change watcher invokes: it syncs what the
    /// watcher sends and refuses what only an operator may ask (`accept_vault_rollback`).
    pub const SERVES_WATCHER: &str = "REPLICATOR_SERVES_WATCHER";
    /// Set on the rotation function only (the name of its [`RotatorSecret`](crate::RotatorSecret)):
    /// it rotates the connection secret named by [`CONNECTION_SECRET`] and does nothing else.
    pub const ROTATOR_SECRET: &str = "REPLICATOR_ROTATOR_SECRET";
    /// The stack a deployed function belongs to: the `Stack` dimension of its metrics.
    pub const STACK: &str = "REPLICATOR_STACK";
    /// The name of the one rule the flags describe (`[[sync]]`'s `name`): tagged on its
    /// replicas as `replica-rule`.
    pub const RULE: &str = "REPLICATOR_RULE";
    /// The sync rules document (`[[sync]]`): a JSON array of rules, or `@FILE`.
    pub const RULES: &str = "REPLICATOR_RULES";
    /// With [`RULES`]: a rule naming no role writes with the role this ARN prefix and the
    /// rule's name make (the one `deployer up` makes for each rule in the stack's account),
    /// assumed with that role's name as its external id.
    pub const RULE_ROLE_ARN_PREFIX: &str = "REPLICATOR_RULE_ROLE_ARN_PREFIX";
    /// Set (`true`) by `deployer pause`: the function syncs nothing until `deployer resume`.
    pub const PAUSED: &str = "REPLICATOR_PAUSED";
    /// The EventBridge bus (name or ARN) each replicated change is put on ([`crate::events`]);
    /// none: no events.
    pub const EVENTS_BUS: &str = "REPLICATOR_EVENTS_BUS";
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
    /// The stack whose sync wrote it (`REPLICATOR_STACK`): two stacks replicating one mount
    /// into one prefix (of one account, or of a team account both write into) each touch
    /// only their own replicas.
    pub const STACK: &str = "replica-stack";
    /// The named sync rule that wrote it (`[[sync]]`'s `name`): two rules of one stack each
    /// touch only their own replicas.
    pub const RULE: &str = "replica-rule";
    /// The Vault secret (path inside the synced sub-path) a replica comes from, where its name
    /// does not say it: under a name template, or one replica per key.
    pub const SOURCE: &str = "vault-secret";
    /// The key of that secret a replica holds (`secret-key` granularity).
    pub const KEY: &str = "vault-key";
    /// Which of the replica's other tags the operator set (`--tag`), as [`OPERATOR_MARK`] and
    /// a digest of each key: the ones no longer wanted are removed, tags others added are
    /// kept. Only the operator's keys are recorded, so no metadata writer can plant a digest
    /// that names someone else's tag. (A value without the mark, written by earlier versions,
    /// recorded the `tag:` keys of custom metadata too: it is honoured once, then rewritten.)
    pub const USER_TAGS: &str = "vault-tags";
    /// The start of a `vault-tags` value that records the operator's keys alone.
    pub const OPERATOR_MARK: &str = "o:";
    /// The regions (and a digest of their KMS key) this tool replicated the secret to.
    pub const REPLICA_REGIONS: &str = "replica-regions";
    /// How many keys the Vault version had (`secret-key` granularity): with every key replica
    /// at the version, the set is complete without reading the value.
    pub const KEY_COUNT: &str = "vault-key-count";
    /// A digest of the resource policy template this tool put on the replica: the policy is
    /// written again only when the template changes (or an audit finds it changed in AWS).
    pub const RESOURCE_POLICY: &str = "resource-policy";

    /// Every tag key this tool writes for itself: none may be set by `--tag` or custom metadata.
    pub const OWN: &[&str] = &[
        VERSION,
        VERSION_CREATED,
        MANAGED_BY,
        VAULT_MOUNT,
        VAULT_PATH,
        PREFIX,
        STACK,
        RULE,
        SOURCE,
        KEY,
        USER_TAGS,
        REPLICA_REGIONS,
        KEY_COUNT,
        RESOURCE_POLICY,
    ];

    /// The tag keys Vault custom metadata (`tag:KEY`) may set, checked: each a valid tag key
    /// without spaces around it, once, and none the operator sets (`--tag`): the operator's
    /// tags always win. Compared in any case, as IAM may match tag keys in conditions: with
    /// `Team` the operator's, metadata setting `team` beside it would confuse who decides.
    pub fn metadata_keys<'a>(
        keys: impl IntoIterator<Item = &'a str>,
        operator: &[(String, String)],
    ) -> Result<std::collections::BTreeSet<String>, String> {
        let mut set = std::collections::BTreeSet::new();
        let mut folded = std::collections::BTreeSet::new();
        for key in keys {
            if key.trim() != key {
                return Err(format!("{key:?}: remove the spaces around the key"));
            }
            check(key, "")?;
            if let Some((k, _)) = operator.iter().find(|(k, _)| k.eq_ignore_ascii_case(key)) {
                return Err(format!(
                    "{key:?} is also an operator tag ({k:?}): the operator's value always wins, so Vault metadata may not set it"
                ));
            }
            if !folded.insert(key.to_ascii_lowercase()) {
                return Err(format!("{key:?} is listed twice (in any case)"));
            }
            set.insert(key.to_owned());
        }
        Ok(set)
    }

    /// AWS's limits on a secret's tags.
    pub const MAX_TAGS: usize = 50;
    pub const MAX_KEY_LEN: usize = 128;
    pub const MAX_VALUE_LEN: usize = 256;

    /// Checks one tag a user asked for against AWS's rules and this tool's own keys; the error
    /// says what is wrong (never quoting more than the key).
    pub fn check(key: &str, value: &str) -> Result<(), String> {
        let allowed = |c: char| c.is_alphanumeric() || c == ' ' || "+-=._:/@".contains(c);
        if key.is_empty() {
            return Err("a tag key must not be empty".into());
        }
        if key.chars().count() > MAX_KEY_LEN {
            return Err(format!("tag key {key:?} is over {MAX_KEY_LEN} characters"));
        }
        if value.chars().count() > MAX_VALUE_LEN {
            return Err(format!(
                "the value of tag {key:?} is over {MAX_VALUE_LEN} characters"
            ));
        }
        if key.to_ascii_lowercase().starts_with("aws:") {
            return Err(format!(
                "tag key {key:?}: the aws: prefix is reserved by AWS"
            ));
        }
        // In any case: IAM may match a tag key in a condition (`aws:ResourceTag/managed-by`)
        // without regard to case, so `Managed-By` must not stand beside the owner tag.
        if OWN.iter().any(|own| own.eq_ignore_ascii_case(key)) {
            return Err(format!(
                "tag key {key:?} is one this tool writes for itself (in any case); choose another"
            ));
        }
        if let Some(c) = key.chars().find(|c| !allowed(*c)) {
            return Err(format!(
                "tag key {key:?}: {c:?} is not allowed (letters, digits, spaces and +-=._:/@)"
            ));
        }
        if value.chars().any(|c| !allowed(c)) {
            return Err(format!(
                "the value of tag {key:?} holds a character AWS does not allow (letters, digits, spaces and +-=._:/@)"
            ));
        }
        Ok(())
    }
}

/// A region a replica is also kept in by Secrets Manager's own replication, with the KMS key
/// that encrypts it there (default: that region's `aws/secretsmanager`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ReplicaRegion {
    pub region: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kms_key_id: Option<String>,
}

impl std::str::FromStr for ReplicaRegion {
    type Err = String;

    /// `REGION` or `REGION=KMS_KEY`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (region, key) = match s.split_once('=') {
            Some((r, k)) => (r.trim(), Some(k.trim())),
            None => (s.trim(), None),
        };
        check_region(region)?;
        if key.is_some_and(str::is_empty) {
            return Err(format!("{s:?}: the KMS key after = is empty"));
        }
        Ok(Self {
            region: region.to_owned(),
            kms_key_id: key.map(str::to_owned),
        })
    }
}

/// Checks an AWS region name (`eu-west-1`, `us-gov-west-1`, `cn-north-1`).
pub fn check_region(region: &str) -> Result<(), String> {
    let parts: Vec<&str> = region.split('-').collect();
    let ok = parts.len() >= 3
        && parts[0].len() == 2
        && parts[0].bytes().all(|b| b.is_ascii_lowercase())
        && parts[1..parts.len() - 1]
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_lowercase()))
        && parts[parts.len() - 1].parse::<u8>().is_ok_and(|n| n > 0);
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{region:?} is not an AWS region name (like eu-west-1)"
        ))
    }
}

/// Checks a list of replica regions: each once, none the replicator's own region.
pub fn check_replica_regions(regions: &[ReplicaRegion], own: Option<&str>) -> Result<(), String> {
    let mut seen = std::collections::BTreeSet::new();
    for r in regions {
        if !seen.insert(r.region.as_str()) {
            return Err(format!("{} is listed twice", r.region));
        }
        if own == Some(r.region.as_str()) {
            return Err(format!(
                "{} is the replicator's own region: a secret is not replicated to where it is",
                r.region
            ));
        }
    }
    Ok(())
}

/// Whether the tags (looked up by `tag`) mark a secret this tool replicated, from any sync.
pub fn is_replica<'a>(tag: impl Fn(&str) -> Option<&'a str>) -> bool {
    tag(tags::MANAGED_BY) == Some(tags::MANAGED_BY_VALUE)
}

/// One sync's identity as its replicas' tags carry it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SyncSource<'a> {
    pub prefix: &'a str,
    pub mount: &'a str,
    /// The `vault-path` tag value: the sub-path, or `/` for the whole mount.
    pub path_tag: &'a str,
    /// The stack the sync belongs to (its `replica-stack` tag); none for a sync run from a
    /// shell without `--stack`.
    pub stack: Option<&'a str>,
    /// The named rule (its `replica-rule` tag); none for the one rule of top-level settings.
    pub rule: Option<&'a str>,
}

impl SyncSource<'_> {
    /// `Some(tagged_prefix)` when the tags say this sync wrote the secret: the owner tag, its
    /// mount and path, and its prefix, or no prefix tag at all (replicas written before that
    /// tag existed; `tagged_prefix` is then false); and its stack, or no stack tag (the next
    /// write adds it). `None` for anything else: a sync of the same source under another
    /// (nested) prefix, or another stack's (also to a run that names no stack).
    pub fn wrote<'a>(&self, tag: impl Fn(&str) -> Option<&'a str>) -> Option<bool> {
        let same_source = is_replica(&tag)
            && tag(tags::VAULT_MOUNT) == Some(self.mount)
            && tag(tags::VAULT_PATH) == Some(self.path_tag);
        if !same_source {
            return None;
        }
        let tagged_prefix = match tag(tags::PREFIX) {
            Some(p) if p == self.prefix => true,
            Some(_) => return None,
            None => false,
        };
        // Another stack's; or a stack's, seen by a run that names none. A replica without the
        // tag (written before it existed) is claimed as it was before: by its source and prefix.
        if let Some(theirs) = tag(tags::STACK)
            && self.stack != Some(theirs)
        {
            return None;
        }
        // Likewise another rule's, or a rule's seen by the unnamed one.
        if let Some(theirs) = tag(tags::RULE)
            && self.rule != Some(theirs)
        {
            return None;
        }
        Some(tagged_prefix)
    }
}

/// A Vault Enterprise / OpenBao namespace as `X-Vault-Namespace` carries it: without surrounding
/// `/`; none (the root namespace) when empty.
pub fn namespace(given: Option<&str>) -> Option<String> {
    given
        .map(|n| n.trim_matches('/'))
        .filter(|n| !n.is_empty())
        .map(str::to_owned)
}

/// The longest sync rule name.
pub const MAX_RULE_NAME_LEN: usize = 32;

/// Checks a sync rule's name: 1 to 32 of `a-z`, `0-9` and `-`, as it names the rule in tags,
/// reports and IAM statement ids.
pub fn check_rule_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_RULE_NAME_LEN {
        return Err(format!(
            "{name:?} must be 1 to {MAX_RULE_NAME_LEN} characters"
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
    {
        return Err(format!(
            "{name:?}: {c:?} is not allowed (use a-z, 0-9 and -)"
        ));
    }
    Ok(())
}

/// Characters AWS accepts in a secret name.
pub fn is_aws_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "/_+=.@-".contains(c)
}

/// The longest name prefix: room is left for the Vault path in AWS's 512 characters.
pub const MAX_PREFIX_LEN: usize = 128;

/// Checks a name prefix (already without surrounding `/`); the error says what is wrong.
pub fn check_prefix(prefix: &str) -> Result<(), String> {
    if prefix.is_empty() {
        return Err("must not be empty".into());
    }
    if prefix.len() > MAX_PREFIX_LEN {
        return Err(format!(
            "is {} characters; at most {MAX_PREFIX_LEN}",
            prefix.len()
        ));
    }
    if let Some(c) = prefix.chars().find(|c| !is_aws_name_char(*c)) {
        return Err(format!(
            "{c:?} is not allowed in a secret name (use letters, digits and /_+=.@-)"
        ));
    }
    if prefix.starts_with('/') || prefix.ends_with('/') || prefix.contains("//") {
        return Err(format!(
            "{prefix:?} must not start or end with / or hold an empty segment"
        ));
    }
    Ok(())
}

/// What to do with AWS secrets whose Vault source is gone.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum DeletionPolicy {
    /// Leave them and report them as orphans.
    #[default]
    Keep,
    /// Schedule them for deletion with the recovery window.
    Delete,
}

impl DeletionPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Keep => "keep",
            Self::Delete => "delete",
        }
    }
}

impl std::str::FromStr for DeletionPolicy {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "keep" => Ok(Self::Keep),
            "delete" => Ok(Self::Delete),
            _ => Err(format!("{s:?} must be keep or delete")),
        }
    }
}

/// What to do with a secret that someone changed in AWS after the replicator wrote it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum OnModified {
    /// Leave it and report a conflict.
    #[default]
    Report,
    /// Write Vault's value over it.
    Overwrite,
}

/// What a replica becomes when its Vault secret's latest version is soft-deleted or destroyed
/// while older versions are live.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum LatestDeleted {
    /// The newest live version is replicated (as Vault's own Secrets Sync does since 1.21.2).
    #[default]
    Fallback,
    /// The secret counts as deleted: its replica follows the deletion policy.
    Delete,
}

impl LatestDeleted {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Fallback => "fallback",
            Self::Delete => "delete",
        }
    }
}

impl std::str::FromStr for LatestDeleted {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "fallback" => Ok(Self::Fallback),
            "delete" => Ok(Self::Delete),
            _ => Err(format!("{s:?} must be fallback or delete")),
        }
    }
}

/// The defaults of the settings both programs take, written once.
pub mod defaults {
    /// Days a replica deleted by the `delete` policy can be restored.
    pub const RECOVERY_WINDOW_DAYS: i64 = 30;
    /// Requests in flight at once.
    pub const CONCURRENCY: usize = 16;
    /// Secrets Manager writes a second (and as many tag calls).
    pub const WRITES_PER_SECOND: u32 = 20;
    /// The deletion breaker's share.
    pub const MAX_DELETE_SHARE: f64 = 0.25;
    /// Keys one Vault secret may have under `secret-key` granularity (each a billable secret).
    pub const MAX_KEYS_PER_SECRET: usize = 100;
    /// The cycle over which every replica's replica regions are looked at once.
    pub const REGION_AUDIT_HOURS: u64 = 24;
}

/// The valid ranges of the settings both programs take.
pub mod ranges {
    use super::RangeInclusive;

    /// Days a deleted secret can be restored (AWS's own limits).
    pub const RECOVERY_WINDOW_DAYS: RangeInclusive<i64> = 7..=30;
    /// The deletion breaker: the share of the replicas one run may delete.
    pub const MAX_DELETE_SHARE: RangeInclusive<f64> = 0.0..=1.0;
    /// Requests in flight at once.
    pub const CONCURRENCY: RangeInclusive<usize> = 1..=256;
    /// Secrets Manager write calls per second (AWS allows 50 for the region).
    pub const WRITES_PER_SECOND: RangeInclusive<u32> = 1..=50;
    /// Keys one Vault secret may have under `secret-key` granularity.
    pub const MAX_KEYS_PER_SECRET: RangeInclusive<usize> = 1..=10_000;
    /// The region audit's cycle, 1 hour (every full sync looks at every replica) to a week.
    pub const REGION_AUDIT_HOURS: RangeInclusive<u64> = 1..=168;
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

/// Name of the rotator secret for a prefix: the Vault credential that may mint the replicator's
/// AppRole secret ids, read by the rotation function only. Beside the connection secret, outside
/// `<prefix>/`.
pub fn rotator_secret_name(prefix: &str) -> String {
    format!("{prefix}-connection/rotator")
}

/// Tag on the connection secret naming the delivered AppRole secret id by its accessor (an
/// accessor is not a secret): written by `deployer vault-init` and by each rotation.
pub const ACCESSOR_TAG: &str = "vault-secrets-replicator:credential";

/// The rotator secret: a periodic Vault token whose only policy mints and destroys secret ids of
/// one AppRole role (and renews itself), the role's name, and the metadata each new secret id
/// carries. Written by `deployer vault-init`; read by the rotation function only.
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct RotatorSecret {
    pub vault_token: SecretString,
    /// The Vault the rotator was made for (and its CA and namespace): the rotation sends its
    /// token there only, and refuses a connection version that names another.
    pub vault_address: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vault_ca_cert: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vault_namespace: Option<String>,
    /// The AppRole role whose secret ids are rotated: its mount, name and role id.
    pub vault_approle_mount: String,
    pub vault_approle_role: String,
    pub vault_role_id: String,
    /// Who a minted secret id is for (`replicator-stack`, `account`, `region`), as `vault-init`
    /// writes it: an id of this stack is recognisable in Vault.
    #[serde(default)]
    pub secret_id_metadata: std::collections::BTreeMap<String, String>,
}

impl std::fmt::Debug for RotatorSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RotatorSecret")
            .field("vault_token", &"<redacted>")
            .field("vault_address", &self.vault_address)
            .field("vault_namespace", &self.vault_namespace)
            .field("vault_approle_mount", &self.vault_approle_mount)
            .field("vault_approle_role", &self.vault_approle_role)
            .field("vault_role_id", &self.vault_role_id)
            .field("secret_id_metadata", &self.secret_id_metadata)
            .finish()
    }
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
    /// STS endpoint and signing region of the AWS IAM login, as Vault's AWS auth method is
    /// configured (other partitions; default the global endpoint, us-east-1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vault_aws_sts_endpoint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vault_aws_sts_region: Option<String>,
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
            .field("vault_aws_sts_endpoint", &self.vault_aws_sts_endpoint)
            .field("vault_aws_sts_region", &self.vault_aws_sts_region)
            .field("vault_namespace", &self.vault_namespace)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_buses_by_name_or_arn() {
        for ok in [
            "default",
            "team.replicas-1/x_y",
            "arn:aws:events:eu-west-1:111122223333:event-bus/default",
            "arn:aws-cn:events:cn-north-1:111122223333:event-bus/team",
        ] {
            assert_eq!(events::check_bus(ok), Ok(()), "{ok}");
        }
        let long = "b".repeat(257);
        for (bad, why) in [
            ("", "not an event bus name"),
            ("has space", "not an event bus name"),
            (long.as_str(), "not an event bus name"),
            (
                "arn:aws:sns:eu-west-1:111122223333:t",
                "not an event bus ARN",
            ),
            (
                "arn:aws:events:eu-west-1:111122223333:rule/r",
                "event-bus/NAME",
            ),
            (
                "arn:aws:events:eu-west-1:1:event-bus/b",
                "not an event bus ARN",
            ),
            (
                "arn:aws:events:eu-west-1:111122223333:event-bus/",
                "not an event bus name",
            ),
        ] {
            let e = events::check_bus(bad).unwrap_err();
            assert!(e.contains(why), "{bad:?}: {e}");
        }
    }

    #[test]
    fn prefixes() {
        for ok in ["hybrid-aws-secrets", "team/app", "a.b@c+d=e_f"] {
            assert_eq!(check_prefix(ok), Ok(()), "{ok}");
        }
        let long = "a".repeat(MAX_PREFIX_LEN + 1);
        for (bad, why) in [
            ("", "empty"),
            ("a b", "' ' is not allowed"),
            ("/abs", "must not start"),
            ("team/", "must not start or end"),
            ("a//b", "empty segment"),
            (long.as_str(), "at most 128"),
        ] {
            let e = check_prefix(bad).unwrap_err();
            assert!(e.contains(why), "{bad:?}: {e}");
        }
    }

    #[test]
    fn a_sync_owns_only_its_own_replicas() {
        let source = SyncSource {
            prefix: "app",
            mount: "kv",
            path_tag: "/",
            stack: None,
            rule: None,
        };
        let mine = [
            (tags::MANAGED_BY, tags::MANAGED_BY_VALUE),
            (tags::VAULT_MOUNT, "kv"),
            (tags::VAULT_PATH, "/"),
            (tags::PREFIX, "app"),
        ];
        let with = |tags: &[(&'static str, &'static str)]| {
            let tags = tags.to_vec();
            move |k: &str| tags.iter().find(|(t, _)| *t == k).map(|(_, v)| *v)
        };
        assert_eq!(source.wrote(with(&mine)), Some(true));
        assert_eq!(
            source.wrote(with(&mine[..3])),
            Some(false),
            "before the prefix tag"
        );
        let nested = [&mine[..3], &[(tags::PREFIX, "app/mirror")]].concat();
        assert_eq!(source.wrote(with(&nested)), None);
        let other_mount = [&mine[..1], &[(tags::VAULT_MOUNT, "kv2")], &mine[2..]].concat();
        assert_eq!(source.wrote(with(&other_mount)), None);
        assert_eq!(source.wrote(with(&mine[1..])), None, "no owner tag");
        assert!(is_replica(with(&other_mount)));
        assert!(!is_replica(with(&[(tags::MANAGED_BY, "terraform")])));

        // A stack's sync owns its stack's replicas, and those written before the stack tag
        // (until its next write tags them); never another stack's.
        let stacked = SyncSource {
            stack: Some("blue"),
            ..source
        };
        let blue = [&mine[..], &[(tags::STACK, "blue")]].concat();
        let green = [&mine[..], &[(tags::STACK, "green")]].concat();
        assert_eq!(stacked.wrote(with(&blue)), Some(true));
        assert_eq!(
            stacked.wrote(with(&mine)),
            Some(true),
            "before the stack tag"
        );
        assert_eq!(stacked.wrote(with(&green)), None, "another stack's");
        // A run that names no stack owns none of a stack's.
        assert_eq!(source.wrote(with(&blue)), None);

        // A named rule owns its own replicas and those from before it was named; never another
        // rule's, and the unnamed rule owns no named rule's.
        let ruled = SyncSource {
            rule: Some("payments"),
            ..source
        };
        let payments = [&mine[..], &[(tags::RULE, "payments")]].concat();
        let billing = [&mine[..], &[(tags::RULE, "billing")]].concat();
        assert_eq!(ruled.wrote(with(&payments)), Some(true));
        assert_eq!(ruled.wrote(with(&mine)), Some(true), "before the rule tag");
        assert_eq!(ruled.wrote(with(&billing)), None, "another rule's");
        assert_eq!(source.wrote(with(&payments)), None);
    }

    #[test]
    fn rule_names_are_short_lowercase_words() {
        for good in ["a", "payments-prod", "team-7", &"x".repeat(32)] {
            assert_eq!(check_rule_name(good), Ok(()), "{good}");
        }
        for bad in ["", "Payments", "a_b", "a b", "a/b", &"x".repeat(33)] {
            assert!(check_rule_name(bad).is_err(), "{bad}");
        }
        // The rule's tag is the tool's own: no `--tag` or Vault metadata sets it.
        assert!(tags::check(tags::RULE, "payments").is_err());
        assert!(tags::check("Replica-Rule", "payments").is_err());
    }

    #[test]
    fn tags_and_regions_are_checked_before_anything_is_written() {
        assert_eq!(tags::check("team", "payments"), Ok(()));
        assert_eq!(tags::check("cost center", "a/b:c@d=e+f-g.h_i"), Ok(()));
        let long_key = "k".repeat(129);
        let long_value = "v".repeat(257);
        for ((k, v), why) in [
            (("", "x"), "empty"),
            ((long_key.as_str(), "x"), "over 128"),
            (("k", long_value.as_str()), "over 256"),
            (("AWS:owner", "x"), "reserved"),
            (("managed-by", "x"), "writes for itself"),
            (("Managed-By", "x"), "in any case"),
            (("a,b", "x"), "',' is not allowed"),
            (("k", "x;y"), "does not allow"),
        ] {
            let e = tags::check(k, v).unwrap_err();
            assert!(e.contains(why), "{k:?}={v:?}: {e}");
            assert!(!e.contains("x;y"), "no value quoted: {e}");
        }
        let r: ReplicaRegion = "eu-west-1=arn:aws:kms:eu-west-1:1:key/k".parse().unwrap();
        assert_eq!(r.region, "eu-west-1");
        assert_eq!(
            r.kms_key_id.as_deref(),
            Some("arn:aws:kms:eu-west-1:1:key/k")
        );
        assert!("us-gov-west-1".parse::<ReplicaRegion>().is_ok());
        for bad in ["eu-west", "EU-west-1", "euwest1", "eu-west-1=", "eu-west-0"] {
            assert!(bad.parse::<ReplicaRegion>().is_err(), "{bad}");
        }
        let two = vec![r.clone(), r.clone()];
        assert!(
            check_replica_regions(&two, None)
                .unwrap_err()
                .contains("twice")
        );
        assert!(
            check_replica_regions(std::slice::from_ref(&r), Some("eu-west-1"))
                .unwrap_err()
                .contains("own region")
        );
    }

    #[test]
    fn metadata_may_set_only_listed_keys_apart_from_the_operators_in_any_case() {
        let operator = vec![("Team".to_owned(), "core".to_owned())];
        let ok = tags::metadata_keys(["tier", "cost center"], &operator).unwrap();
        assert_eq!(ok.into_iter().collect::<Vec<_>>(), ["cost center", "tier"]);
        for (keys, why) in [
            (&["team"][..], "also an operator tag (\"Team\")"),
            (&["tier", "Tier"][..], "listed twice (in any case)"),
            (&["tier "][..], "remove the spaces"),
            (&[" tier"][..], "remove the spaces"),
            (&[""][..], "empty"),
            (&["vault-tags"][..], "writes for itself"),
        ] {
            let e = tags::metadata_keys(keys.iter().copied(), &operator).unwrap_err();
            assert!(e.contains(why), "{keys:?}: {e}");
        }
    }

    #[test]
    fn deletion_policy_round_trips() {
        for p in [DeletionPolicy::Keep, DeletionPolicy::Delete] {
            assert_eq!(p.as_str().parse::<DeletionPolicy>(), Ok(p));
        }
        assert!(
            "purge"
                .parse::<DeletionPolicy>()
                .unwrap_err()
                .contains("keep or delete")
        );
    }
}
