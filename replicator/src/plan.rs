//! The pure decision of a sync: from the Vault inventory and the AWS listing, what to create,
//! update, keep, delete or refuse. No I/O, no clock, no values: unit-tested table by table.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::aws::{AwsSecret, owner_tags};
use crate::config::{DeletionPolicy, Granularity, OnModified, Settings, is_aws_name_char};
use crate::inventory::{EntryState, VaultEntry, full_path};
use crate::shape::MetaChanges;
use contract::tags;

/// AWS limit on a secret name.
pub const MAX_NAME_LEN: usize = 512;

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

/// What to write for one Vault secret.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Target {
    pub name: String,
    /// Path inside the mount.
    pub vault_path: String,
    pub version: u64,
    pub created_time: String,
    /// The deterministic version id of this write.
    pub token: String,
    /// With one replica per key: the key this one holds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// Every tag the replica should carry, this tool's and the user's.
    #[serde(skip)]
    pub tags: BTreeMap<String, String>,
    #[serde(skip)]
    pub description: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum UpdateReason {
    /// Vault has a newer version.
    NewVersion,
    /// A secret the sample created (or one listed for adoption) is taken over in place.
    Adopt,
    /// Changed in AWS by someone else, overwritten by configuration.
    Overwrite,
    /// A previous run wrote the value but not the tags.
    FinishTags,
    /// Only tags, the description or the replica regions differ: no value is read.
    Metadata,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ConflictKind {
    /// A secret under the prefix that this tool does not own.
    Foreign,
    /// Owned by this tool, but replicated from another Vault mount or path.
    OtherSource,
    /// Someone wrote a new value in AWS after the replicator did.
    ModifiedOutside,
    /// A secret this tool does not own is scheduled for deletion under the name.
    ScheduledForDeletion,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum InvalidKind {
    InvalidName,
    NameTooLong,
    NameCollision,
    /// A tag from custom metadata breaks AWS's rules, or there would be more than 50.
    InvalidTag,
}

/// One decision.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Step {
    Create {
        target: Box<Target>,
    },
    Update {
        target: Box<Target>,
        arn: String,
        reason: UpdateReason,
        /// Restore it first: it is scheduled for deletion.
        restore: bool,
        /// The version id that carries `AWSCURRENT` now.
        #[serde(skip)]
        current_version_id: Option<String>,
        /// The target's version is in AWS already (with a stage): it is made current and
        /// tagged, and its value is neither read nor written again.
        #[serde(skip)]
        written: bool,
        /// Tags, description and regions to set besides the value.
        #[serde(skip_serializing_if = "no_changes")]
        changes: Box<MetaChanges>,
    },
    /// A secret replicated one key per AWS secret whose replicas are not all current: its
    /// value is read, and each key's replica decided then.
    Expand {
        name: String,
        source: Box<ExpandSource>,
    },
    Unchanged {
        name: String,
    },
    Delete {
        name: String,
        arn: String,
        /// Its tags record replica regions: they are removed first (AWS refuses otherwise).
        #[serde(skip)]
        replicated: bool,
    },
    /// An owned secret whose Vault source is gone, kept by the `keep` policy or the breaker.
    Keep {
        name: String,
        why: String,
    },
    /// Deleted in Vault and not in AWS (or already scheduled for deletion there).
    Skip {
        name: String,
    },
    Conflict {
        name: String,
        kind: ConflictKind,
        message: String,
    },
    Invalid {
        name: String,
        vault_path: String,
        kind: InvalidKind,
        message: String,
    },
    /// Vault could not tell the secret's state.
    VaultFailed {
        name: String,
        kind: String,
        message: String,
    },
}

impl Step {
    pub fn name(&self) -> &str {
        match self {
            Self::Create { target } | Self::Update { target, .. } => &target.name,
            Self::Unchanged { name }
            | Self::Expand { name, .. }
            | Self::Delete { name, .. }
            | Self::Keep { name, .. }
            | Self::Skip { name }
            | Self::Conflict { name, .. }
            | Self::Invalid { name, .. }
            | Self::VaultFailed { name, .. } => name,
        }
    }
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Plan {
    pub steps: Vec<Step>,
    /// Set when the breaker refused this run's deletions.
    pub breaker: Option<String>,
    /// (name, message) of what is done but worth a look (names like ARN suffixes).
    pub warnings: Vec<(String, String)>,
    /// Deletions the breaker still allows after the planned ones: for the replicas of keys
    /// removed in Vault, known only once an expanded secret's value is read.
    pub delete_budget: usize,
}

fn no_changes(changes: &impl std::ops::Deref<Target = MetaChanges>) -> bool {
    changes.is_empty()
}

/// Checks a name against AWS's rules; the reason when it breaks one.
pub fn check_name(name: &str) -> Result<(), (InvalidKind, String)> {
    if let Some(c) = name.chars().find(|c| !is_aws_name_char(*c)) {
        return Err((
            InvalidKind::InvalidName,
            format!("{c:?} is not allowed in a Secrets Manager name (letters, digits, /_+=.@-)"),
        ));
    }
    if name.len() > MAX_NAME_LEN {
        return Err((
            InvalidKind::NameTooLong,
            format!(
                "{} characters, over the limit of {MAX_NAME_LEN}",
                name.len()
            ),
        ));
    }
    Ok(())
}

/// Whether a name ends in `-` and 6 letters or digits, as AWS's ARN suffix does (`db-backup`,
/// `redis-master`). AWS only advises against such names: a partial ARN can resolve to the wrong
/// secret. This tool addresses secrets by full ARN once it knows them, so they are replicated,
/// with a warning.
pub fn looks_like_arn_suffix(name: &str) -> bool {
    let bytes = name.as_bytes();
    bytes.len() >= 7
        && bytes[bytes.len() - 7] == b'-'
        && bytes[bytes.len() - 6..]
            .iter()
            .all(u8::is_ascii_alphanumeric)
}

/// The warning for [`looks_like_arn_suffix`] names.
pub const ARN_SUFFIX_WARNING: &str = "ends with '-' and 6 characters like an ARN suffix: replicated, but anyone reading it by a partial ARN may get another secret; read it by name or full ARN";

enum Ownership {
    /// Written by this sync (same mount, path and prefix). `tagged_prefix` is false for a
    /// replica written before the `replica-prefix` tag existed: it gets the tag on this run, and
    /// is never deleted as an orphan until then (it may be a nested sync's).
    Ours {
        tagged_prefix: bool,
    },
    /// The sample's secret (tag `version`, no owner) or one listed for adoption.
    Adoptable,
    OtherSource(String),
    Foreign,
}

fn ownership(secret: &AwsSecret, settings: &Settings) -> Ownership {
    let tag = |k: &str| secret.tags.get(k);
    let (mount, path, prefix) = (
        tag(tags::VAULT_MOUNT),
        tag(tags::VAULT_PATH),
        tag(tags::PREFIX),
    );
    if let Some(tagged_prefix) = settings.source().wrote(tag) {
        return Ownership::Ours { tagged_prefix };
    }
    // Listed for adoption: taken over whoever tagged it (another tool, another sync).
    if settings.adopt.iter().any(|a| a == &secret.name) {
        return Ownership::Adoptable;
    }
    match tag(tags::MANAGED_BY) {
        Some(tags::MANAGED_BY_VALUE) => Ownership::OtherSource(format!(
            "replicated from mount {:?} path {:?} by the sync with prefix {:?}; list it in REPLICATOR_ADOPT to take it over",
            mount.unwrap_or(""),
            path.unwrap_or(""),
            prefix.unwrap_or("")
        )),
        Some(_) => Ownership::Foreign,
        None if tag(tags::VERSION).is_some() => Ownership::Adoptable,
        None => Ownership::Foreign,
    }
}

/// The version id the replicator wrote last, computed from the secret's tags.
fn recorded_token(secret: &AwsSecret, settings: &Settings) -> Option<String> {
    let version = secret.tags.get(tags::VERSION)?.parse().ok()?;
    let created = secret.tags.get(tags::VERSION_CREATED)?;
    let vault_path = full_path(&settings.path, source_of(secret, settings));
    Some(key_token(
        &settings.mount,
        &vault_path,
        secret.tags.get(tags::KEY),
        version,
        created,
    ))
}

/// What a run looked at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Every secret under the path, in Vault and in AWS.
    Everything,
    /// Only the paths named (a change-driven run): each one's Vault metadata, read explicitly,
    /// and its AWS counterpart by name.
    Paths,
}

/// Decides every step of one run over everything under the path.
pub fn plan(entries: &[VaultEntry], aws: &[AwsSecret], settings: &Settings) -> Plan {
    plan_scoped(entries, aws, settings, Scope::Everything)
}

/// Decides every step of one run over `scope`.
pub fn plan_scoped(
    entries: &[VaultEntry],
    aws: &[AwsSecret],
    settings: &Settings,
    scope: Scope,
) -> Plan {
    let by_name: HashMap<&str, &AwsSecret> = aws.iter().map(|s| (s.name.as_str(), s)).collect();
    let per_key = settings.granularity == Granularity::SecretKey;
    // With one replica per key, a secret's replicas are found by their source, not their name.
    let mut by_source: HashMap<String, Vec<&AwsSecret>> = HashMap::new();
    if per_key {
        for secret in aws {
            if matches!(ownership(secret, settings), Ownership::Ours { .. }) {
                by_source
                    .entry(source_of(secret, settings).to_owned())
                    .or_default()
                    .push(secret);
            }
        }
    }

    // One name per entry (a secret's display name with one replica per key), and the names
    // more than one Vault path maps to.
    let names: Vec<String> = entries
        .iter()
        .map(|e| match per_key {
            true => format!("{}/{}", settings.prefix, e.rel_path),
            false => settings.replica_name(&e.rel_path, None),
        })
        .collect();
    let mut claims: HashMap<&str, usize> = HashMap::with_capacity(entries.len());
    if !per_key {
        for name in &names {
            *claims.entry(name.as_str()).or_default() += 1;
        }
    }

    let mut steps = Vec::with_capacity(entries.len() + 8);
    let mut warnings = Vec::new();
    // Each Vault path seen, and whether it could not be read.
    let mut seen: HashMap<&str, bool> = HashMap::with_capacity(entries.len());
    // AWS names the entries decided.
    let mut decided: HashSet<&str> = HashSet::with_capacity(entries.len());
    let mut live_count = 0usize;

    for (entry, name) in entries.iter().zip(&names) {
        let name = name.clone();
        let vault_path = full_path(&settings.path, &entry.rel_path);
        seen.insert(
            entry.rel_path.as_str(),
            matches!(entry.state, EntryState::Unreadable { .. }),
        );
        let group: &[&AwsSecret] = by_source
            .get(entry.rel_path.as_str())
            .map_or(&[], Vec::as_slice);
        decided.extend(group.iter().map(|s| s.name.as_str()));
        let existing = by_name.get(name.as_str()).copied();
        // The replica under the name, when it is this secret's: under a template the name may
        // hold another Vault secret's, which stays an orphan or a stale name of its own.
        let own = existing.filter(|s| source_of(s, settings) == entry.rel_path);
        if let Some(secret) = own.filter(|_| !per_key) {
            decided.insert(secret.name.as_str());
        }

        if claims.get(name.as_str()).copied().unwrap_or(0) > 1 {
            steps.push(Step::Invalid {
                message: format!("several Vault paths map to {name}"),
                name,
                vault_path,
                kind: InvalidKind::NameCollision,
            });
            continue;
        }

        let (version, created_time, earlier, custom) = match &entry.state {
            EntryState::Live {
                version,
                created_time,
                earlier,
                custom,
            } => (*version, created_time.clone(), earlier, custom),
            EntryState::Unreadable { kind, message } => {
                steps.push(Step::VaultFailed {
                    name,
                    kind: (*kind).to_owned(),
                    message: message.clone(),
                });
                continue;
            }
            EntryState::Deleted if per_key && !group.is_empty() => {
                steps.extend(
                    group
                        .iter()
                        .map(|s| gone_from_vault(s.name.clone(), Some(s), settings)),
                );
                continue;
            }
            EntryState::Deleted => {
                steps.push(gone_from_vault(name, own, settings));
                continue;
            }
        };
        live_count += 1;

        let (user_tags, description) = match crate::shape::user_shape(&settings.tags, custom) {
            Ok(shape) => shape,
            Err(message) => {
                steps.push(Step::Invalid {
                    name,
                    vault_path,
                    kind: InvalidKind::InvalidTag,
                    message,
                });
                continue;
            }
        };
        let source = Source {
            rel_path: entry.rel_path.clone(),
            vault_path,
            version,
            created_time,
            user_tags,
            description,
        };

        if per_key {
            steps.extend(key_steps(name, source, group, earlier, settings));
            continue;
        }

        let target = source.target(settings, None);
        if let Err(step) = check_target(&target, &mut warnings) {
            steps.push(step);
            continue;
        }
        steps.push(decide(target, existing, earlier, settings));
    }

    // Folders Vault would not list: what is under them is unknown, never gone.
    let blind: Vec<String> = entries
        .iter()
        .filter(|e| e.rel_path.ends_with('/') && matches!(e.state, EntryState::Unreadable { .. }))
        .map(|e| e.rel_path.clone())
        .collect();

    // Owned secrets no entry decided: their Vault path is gone (metadata deleted, or never
    // there), or the name template no longer gives their name.
    let mut owned_count = 0usize;
    for secret in aws {
        let Ownership::Ours { tagged_prefix } = ownership(secret, settings) else {
            continue;
        };
        if !secret.pending_deletion {
            owned_count += 1;
        }
        if decided.contains(secret.name.as_str()) {
            continue;
        }
        let source = source_of(secret, settings);
        match seen.get(source) {
            // Its Vault secret could not be read: nothing is known.
            Some(true) => continue,
            // Its Vault secret is there under another name now.
            Some(false) => {
                steps.push(gone_from_vault(secret.name.clone(), Some(secret), settings));
                continue;
            }
            None => {}
        }
        if let Some(folder) = blind.iter().find(|f| source.starts_with(f.as_str())) {
            steps.push(Step::Keep {
                name: secret.name.clone(),
                why: format!(
                    "its Vault folder {}/{folder} could not be listed this run",
                    settings.mount
                ),
            });
        } else if !tagged_prefix && !secret.pending_deletion {
            steps.push(Step::Keep {
                name: secret.name.clone(),
                why: format!(
                    "written before the {} tag, so it may be a nested sync's; kept (delete it by hand if it is this one's)",
                    tags::PREFIX
                ),
            });
        } else {
            steps.push(gone_from_vault(secret.name.clone(), Some(secret), settings));
        }
    }

    let mut plan = Plan {
        steps,
        breaker: None,
        warnings,
        delete_budget: 0,
    };
    apply_breaker(
        &mut plan,
        owned_count,
        live_count,
        settings.max_delete_share,
        scope,
    );
    plan
}

/// The steps of a live secret replicated one key per AWS secret, from its replicas in AWS
/// (`group`): each replica's own step while all are complete and current, every replica at this
/// version, as many as the version had keys, each under the name the template gives it now;
/// otherwise one `Expand`, whose value says which keys there are.
fn key_steps(
    name: String,
    source: Source,
    group: &[&AwsSecret],
    earlier: &[(u64, String)],
    settings: &Settings,
) -> Vec<Step> {
    // Replicas of keys removed earlier, scheduled for deletion, do not count.
    let live: Vec<&AwsSecret> = group
        .iter()
        .copied()
        .filter(|s| !s.pending_deletion)
        .collect();
    let n = live.len();
    let count = n.to_string();
    let complete = !live.is_empty()
        && live.iter().all(|s| {
            let key = s.tags.get(tags::KEY).unwrap_or("");
            s.tags.get(tags::KEY_COUNT) == Some(count.as_str())
                && s.name == settings.replica_name(&source.rel_path, Some(key))
                && recorded_token(s, settings).as_deref()
                    == Some(source.token(settings, Some(key)).as_str())
        });
    if !complete {
        return vec![Step::Expand {
            name,
            source: Box::new(ExpandSource {
                source,
                earlier: earlier.to_vec(),
                existing: group.iter().map(|s| (*s).clone()).collect(),
            }),
        }];
    }
    live.into_iter()
        .map(|secret| {
            let key = secret.tags.get(tags::KEY).unwrap_or("").to_owned();
            decide(
                source.target(settings, Some((key, n))),
                Some(secret),
                earlier,
                settings,
            )
        })
        .collect()
}

/// The Vault path (relative to the synced sub-path) an owned replica comes from: its
/// `vault-secret` tag, or, for a replica named by the plain `{path}` template, its name.
pub fn source_of<'a>(secret: &'a AwsSecret, settings: &Settings) -> &'a str {
    secret.tags.get(tags::SOURCE).unwrap_or_else(|| {
        secret
            .name
            .strip_prefix(settings.prefix.as_str())
            .and_then(|r| r.strip_prefix('/'))
            .unwrap_or(&secret.name)
    })
}

/// A name AWS would refuse is an `Invalid` step; one like an ARN suffix is a warning.
pub fn check_target(target: &Target, warnings: &mut Vec<(String, String)>) -> Result<(), Step> {
    if let Err((kind, message)) = check_name(&target.name) {
        return Err(Step::Invalid {
            name: target.name.clone(),
            vault_path: target.vault_path.clone(),
            kind,
            message,
        });
    }
    if looks_like_arn_suffix(&target.name) {
        warnings.push((target.name.clone(), ARN_SUFFIX_WARNING.to_owned()));
    }
    if target.tags.len() > tags::MAX_TAGS {
        return Err(Step::Invalid {
            name: target.name.clone(),
            vault_path: target.vault_path.clone(),
            kind: InvalidKind::InvalidTag,
            message: format!(
                "{} tags with this tool's own, over AWS's limit of {}",
                target.tags.len(),
                tags::MAX_TAGS
            ),
        });
    }
    Ok(())
}

/// One Vault secret at its current version, and the shape its replicas should have.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Source {
    /// Path relative to the synced sub-path.
    pub rel_path: String,
    /// Path inside the mount.
    pub vault_path: String,
    pub version: u64,
    pub created_time: String,
    #[serde(skip)]
    pub user_tags: BTreeMap<String, String>,
    #[serde(skip)]
    pub description: String,
}

impl Source {
    /// The version id of this version in the replica of `key` (or of the whole secret).
    pub fn token(&self, settings: &Settings, key: Option<&str>) -> String {
        key_token(
            &settings.mount,
            &self.vault_path,
            key,
            self.version,
            &self.created_time,
        )
    }

    /// The replica of the whole secret, or of `(key, how many keys the version has)`.
    pub fn target(&self, settings: &Settings, key: Option<(String, usize)>) -> Box<Target> {
        let key_name = key.as_ref().map(|(k, _)| k.as_str());
        let mut tags = owner_tags(&settings.mount, settings.path_tag(), &settings.prefix);
        tags.insert(tags::VERSION.to_owned(), self.version.to_string());
        tags.insert(tags::VERSION_CREATED.to_owned(), self.created_time.clone());
        if !settings.name_template.is_plain_path() {
            tags.insert(tags::SOURCE.to_owned(), self.rel_path.clone());
        }
        if let Some((key, count)) = &key {
            tags.insert(tags::KEY.to_owned(), key.clone());
            tags.insert(tags::KEY_COUNT.to_owned(), count.to_string());
        }
        if !self.user_tags.is_empty() {
            tags.insert(
                tags::USER_TAGS.to_owned(),
                crate::shape::digests_of(self.user_tags.keys()),
            );
            tags.extend(self.user_tags.clone());
        }
        if !settings.replica_regions.is_empty() {
            tags.insert(
                tags::REPLICA_REGIONS.to_owned(),
                crate::shape::regions_tag(&settings.replica_regions),
            );
        }
        // Boxed: most steps of a large run are `Unchanged`, and a step is as large as its
        // largest kind.
        Box::new(Target {
            name: settings.replica_name(&self.rel_path, key_name),
            vault_path: self.vault_path.clone(),
            version: self.version,
            created_time: self.created_time.clone(),
            token: self.token(settings, key_name),
            key: key.map(|(k, _)| k),
            tags,
            description: self.description.clone(),
        })
    }
}

/// A secret replicated one key per AWS secret whose replicas are not all at its version: its
/// value says which keys there are.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ExpandSource {
    #[serde(flatten)]
    pub source: Source,
    #[serde(skip)]
    pub earlier: Vec<(u64, String)>,
    /// Its replicas in AWS now.
    #[serde(skip)]
    pub existing: Vec<AwsSecret>,
}

/// The step for one replica, from what AWS shows under its name.
pub fn decide(
    target: Box<Target>,
    existing: Option<&AwsSecret>,
    earlier: &[(u64, String)],
    settings: &Settings,
) -> Step {
    let Some(secret) = existing else {
        return Step::Create { target };
    };
    let changes = Box::new(crate::shape::meta_changes(
        secret,
        &target.tags,
        &target.description,
        &settings.replica_regions,
    ));
    match update_reason(&target, secret, &changes, earlier, settings) {
        Ok(reason) => Step::Update {
            written: secret.has_version(&target.token),
            changes,
            target,
            arn: secret.arn.clone(),
            reason,
            restore: secret.pending_deletion,
            current_version_id: secret.current_version_id.clone(),
        },
        Err(step) => step,
    }
}

/// Why the replica `secret` is updated to `target`, or the step it gets instead (a conflict,
/// a collision, nothing to do).
fn update_reason(
    target: &Target,
    secret: &AwsSecret,
    changes: &MetaChanges,
    earlier: &[(u64, String)],
    settings: &Settings,
) -> Result<UpdateReason, Step> {
    let name = || target.name.clone();
    let restore = secret.pending_deletion;
    match ownership(secret, settings) {
        Ownership::Foreign if restore => Err(Step::Conflict {
            name: name(),
            kind: ConflictKind::ScheduledForDeletion,
            message: "a secret this tool does not own is scheduled for deletion under this name; restore and tag it, or delete it for good".into(),
        }),
        Ownership::Foreign => Err(Step::Conflict {
            name: name(),
            kind: ConflictKind::Foreign,
            message: format!(
                "exists without the {}={} tag; list it in REPLICATOR_ADOPT to take it over",
                tags::MANAGED_BY,
                tags::MANAGED_BY_VALUE
            ),
        }),
        Ownership::OtherSource(from) => Err(Step::Conflict {
            name: name(),
            kind: ConflictKind::OtherSource,
            message: from,
        }),
        Ownership::Adoptable => Ok(UpdateReason::Adopt),
        Ownership::Ours { tagged_prefix } => {
            // Under a name template, the replica of another Vault secret may hold the name.
            let from = full_path(&settings.path, source_of(secret, settings));
            if from != target.vault_path {
                return Err(Step::Invalid {
                    message: format!("the replica of Vault path {from} already has this name"),
                    name: name(),
                    vault_path: target.vault_path.clone(),
                    kind: InvalidKind::NameCollision,
                });
            }
            let current = secret.current_version_id.as_deref();
            let recorded = recorded_token(secret, settings);
            let key = target.key.as_deref();
            // This tool's own write: the version its tags record, or, when a tag write was
            // lost after the value went in, any earlier Vault version's id.
            let ours_current = current.is_some_and(|id| {
                recorded.as_deref() == Some(id)
                    || earlier.iter().any(|(n, created)| {
                        key_token(&settings.mount, &target.vault_path, key, *n, created) == id
                    })
            });
            // The tags name exactly this Vault version (the token covers version and time).
            let up_to_date = recorded.as_deref() == Some(target.token.as_str());
            if current == Some(target.token.as_str()) && !up_to_date {
                // The value of this very version is in; only the tags are missing.
                Ok(UpdateReason::FinishTags)
            } else if !ours_current {
                match settings.on_modified {
                    OnModified::Report => Err(Step::Conflict {
                        name: name(),
                        kind: ConflictKind::ModifiedOutside,
                        message: "its current version was not written by the replicator; set REPLICATOR_ON_MODIFIED=overwrite to restore Vault's value".into(),
                    }),
                    OnModified::Overwrite => Ok(UpdateReason::Overwrite),
                }
            } else if up_to_date && !restore {
                if changes.is_empty() {
                    Err(Step::Unchanged { name: name() })
                } else if !tagged_prefix {
                    // Up to date but written before the prefix tag: the tags only.
                    Ok(UpdateReason::FinishTags)
                } else {
                    // Tags, description or regions changed in Vault's metadata or the
                    // configuration: applied without reading the value.
                    Ok(UpdateReason::Metadata)
                }
            } else {
                Ok(UpdateReason::NewVersion)
            }
        }
    }
}

/// The step for a secret whose Vault source is deleted or missing.
pub fn gone_from_vault(name: String, existing: Option<&AwsSecret>, settings: &Settings) -> Step {
    let Some(secret) = existing else {
        return Step::Skip { name };
    };
    if secret.pending_deletion || !matches!(ownership(secret, settings), Ownership::Ours { .. }) {
        return Step::Skip { name };
    }
    match settings.deletion_policy {
        DeletionPolicy::Keep => Step::Keep {
            name,
            why: "deleted in Vault; kept by deletion policy keep".into(),
        },
        DeletionPolicy::Delete => Step::Delete {
            name,
            arn: secret.arn.clone(),
            replicated: secret.tags.get(tags::REPLICA_REGIONS).is_some(),
        },
    }
}

/// Deletions the breaker always allows (with a share above 0), so that a small mount can lose a
/// secret: deleting 1 of 2 is half, but no mass deletion.
pub const BREAKER_FLOOR: usize = 3;

/// Refuses every deletion of the run when it would delete more than `max_share` of the owned
/// secrets and more than [`BREAKER_FLOOR`] (a share of 0 refuses any), or, over everything,
/// anything at all while Vault shows no live secret. A run of named paths read each one's
/// metadata explicitly (no listing that could come back empty by mistake), and knows only the
/// secrets it names: at most [`BREAKER_FLOOR`] deletions pass; more wait for the full sync.
fn apply_breaker(plan: &mut Plan, owned: usize, live: usize, max_share: f64, scope: Scope) {
    let deletes = plan
        .steps
        .iter()
        .filter(|s| matches!(s, Step::Delete { .. }))
        .count();
    let allowed = breaker_allows(owned, max_share);
    plan.delete_budget = allowed.saturating_sub(deletes);
    if deletes == 0 {
        return;
    }
    let reason = if live == 0 && scope == Scope::Everything {
        format!(
            "Vault shows no live secret under the path but {deletes} replicated secrets would be deleted; refusing (an empty or wrong listing must not wipe AWS)"
        )
    } else if deletes > allowed {
        format!(
            "{deletes} of {owned} replicated secrets would be deleted, over the breaker's share {max_share} ({allowed} allowed); raise REPLICATOR_MAX_DELETE_SHARE to allow it"
        )
    } else {
        return;
    };
    refuse_deletions(&mut plan.steps);
    plan.breaker = Some(reason);
    plan.delete_budget = 0;
}

/// Turns every deletion of `steps` into a `Keep`: the breaker refused them.
pub fn refuse_deletions(steps: &mut [Step]) {
    for step in steps {
        if let Step::Delete { name, .. } = step {
            *step = Step::Keep {
                name: std::mem::take(name),
                why: "deletion refused by the breaker".into(),
            };
        }
    }
}

/// How many deletions the breaker allows in one run over `owned` replicas: `max_share` of them,
/// at least [`BREAKER_FLOOR`] (none with a share of 0).
pub fn breaker_allows(owned: usize, max_share: f64) -> usize {
    // In whole parts per million: `owned * share` in floating point can land just under a whole
    // number (100 × 0.29 = 28.999…), which would refuse a deletion exactly at the share.
    let share_ppm = (max_share.clamp(0.0, 1.0) * 1e6).round() as usize;
    let by_share = owned.saturating_mul(share_ppm) / 1_000_000;
    if share_ppm == 0 {
        0
    } else {
        by_share.max(BREAKER_FLOOR)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{DeletionPolicy, OnModified};

    fn settings() -> Settings {
        Settings {
            prefix: "p".into(),
            mount: "kv".into(),
            path: String::new(),
            kms_key_id: None,
            sns_topic_arn: None,
            deletion_policy: DeletionPolicy::Keep,
            recovery_window_days: 30,
            max_delete_share: 0.5,
            on_modified: OnModified::Report,
            adopt: vec![],
            concurrency: 4,
            writes_per_second: 20,
            dry_run: false,
            max_duration: None,
            deadline: None,
            replica_regions: vec![],
            name_template: crate::shape::NameTemplate::default_for(Granularity::SecretPath),
            granularity: Granularity::SecretPath,
            tags: vec![],
        }
    }

    const T: &str = "2026-11-01T10:00:00Z";

    fn live(rel: &str, version: u64) -> VaultEntry {
        VaultEntry {
            rel_path: rel.into(),
            state: EntryState::Live {
                version,
                created_time: T.into(),
                earlier: (1..version).rev().map(|n| (n, T.to_owned())).collect(),
                custom: vec![],
            },
        }
    }

    fn deleted(rel: &str) -> VaultEntry {
        VaultEntry {
            rel_path: rel.into(),
            state: EntryState::Deleted,
        }
    }

    /// An AWS secret the replicator wrote from `kv` version `version` of `rel`.
    fn ours(rel: &str, version: u64) -> AwsSecret {
        let mut tags = crate::aws::Tags::default();
        for (k, v) in crate::aws::owner_tags("kv", "/", "p") {
            tags.insert(&k, &v);
        }
        tags.insert("version", &version.to_string());
        tags.insert("vault-version-created", T);
        AwsSecret {
            name: format!("p/{rel}"),
            arn: format!("arn:aws:secretsmanager:r:1:secret:p/{rel}-abcdef"),
            tags,
            current_version_id: Some(version_token("kv", rel, version, T)),
            other_version_ids: Vec::new(),
            pending_deletion: false,
            description: Some(crate::shape::DEFAULT_DESCRIPTION.into()),
        }
    }

    fn kinds(plan: &Plan) -> Vec<String> {
        plan.steps
            .iter()
            .map(|s| {
                let v = serde_json::to_value(s).unwrap();
                format!("{} {}", v["action"].as_str().unwrap(), s.name())
            })
            .collect()
    }

    #[test]
    fn tokens_are_stable_uuid_shaped_and_distinct() {
        let a = version_token("kv", "a", 1, T);
        assert_eq!(a, version_token("kv", "a", 1, T));
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "8");
        assert_ne!(a, version_token("kv", "a", 2, T));
        assert_ne!(a, version_token("kv", "a", 1, "2026-11-02T10:00:00Z"));
        assert_ne!(a, version_token("kv2", "a", 1, T));
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
    }

    #[test]
    fn new_changed_and_unchanged_secrets() {
        let vault = [live("a", 1), live("b/c", 2), live("d", 5)];
        let aws = [ours("b/c", 1), ours("d", 5)];
        let plan = plan(&vault, &aws, &settings());
        assert_eq!(
            kinds(&plan),
            ["create p/a", "update p/b/c", "unchanged p/d"]
        );
        assert!(matches!(
            &plan.steps[1],
            Step::Update {
                reason: UpdateReason::NewVersion,
                restore: false,
                ..
            }
        ));
    }

    #[test]
    fn deletions_follow_the_policy() {
        let vault = [live("a", 1), deleted("b"), live("c", 1), live("d", 1)];
        let aws = [
            ours("a", 1),
            ours("b", 1),
            ours("c", 1),
            ours("d", 1),
            ours("gone", 1),
        ];
        let keep = plan(&vault, &aws, &settings());
        assert_eq!(
            kinds(&keep),
            [
                "unchanged p/a",
                "keep p/b",
                "unchanged p/c",
                "unchanged p/d",
                "keep p/gone"
            ]
        );
        let mut s = settings();
        s.deletion_policy = DeletionPolicy::Delete;
        let del = plan(&vault, &aws, &s);
        assert_eq!(
            kinds(&del),
            [
                "unchanged p/a",
                "delete p/b",
                "unchanged p/c",
                "unchanged p/d",
                "delete p/gone"
            ]
        );
        assert!(del.breaker.is_none());
    }

    #[test]
    fn breaker_refuses_large_or_total_deletions() {
        let mut s = settings();
        s.deletion_policy = DeletionPolicy::Delete;
        let names: Vec<String> = (0..8).map(|i| format!("s{i}")).collect();
        let aws: Vec<_> = names.iter().map(|n| ours(n, 1)).collect();
        // 7 of 8 > 50 %, and over the floor
        let p = plan(&[live("s0", 1)], &aws, &s);
        assert!(p.breaker.as_deref().unwrap().contains("7 of 8"));
        assert!(p.steps.iter().all(|s| !matches!(s, Step::Delete { .. })));
        // An empty Vault never deletes, whatever the share.
        s.max_delete_share = 1.0;
        let p = plan(&[], &aws, &s);
        assert!(p.breaker.as_deref().unwrap().contains("no live secret"));
        assert_eq!(
            kinds(&p).iter().filter(|k| k.starts_with("keep")).count(),
            8
        );
    }

    /// Deletes `n` of `owned` replicas (Vault keeps the rest live) at `share`: refused?
    fn breaker_refuses(owned: usize, n: usize, share: f64) -> bool {
        let mut s = settings();
        s.deletion_policy = DeletionPolicy::Delete;
        s.max_delete_share = share;
        let names: Vec<String> = (0..owned).map(|i| format!("s{i:03}")).collect();
        let aws: Vec<_> = names.iter().map(|n| ours(n, 1)).collect();
        let vault: Vec<_> = names[n..].iter().map(|n| live(n, 1)).collect();
        let p = plan(&vault, &aws, &s);
        let deletes = p
            .steps
            .iter()
            .filter(|s| matches!(s, Step::Delete { .. }))
            .count();
        assert_eq!(deletes, if p.breaker.is_some() { 0 } else { n });
        p.breaker.is_some()
    }

    #[test]
    fn breaker_boundaries_at_the_share_the_floor_and_share_zero() {
        for (owned, n, share, refused) in [
            (40, 10, 0.25, false),  // exactly at the share
            (40, 11, 0.25, true),   // one over
            (100, 30, 0.3, false),  // 100 × 0.3 is 30.000000000000004 in floating point
            (100, 29, 0.29, false), // 100 × 0.29 is 28.999999999999996
            (100, 30, 0.29, true),
            (200, 58, 0.29, false),
            (50, 29, 0.58, false),
            (2, 1, 0.25, false), // 1 of 2 at the default share: under the floor of 3
            (10, 3, 0.25, false),
            (10, 4, 0.25, true), // over the share and the floor
            (4, 1, 0.0, true),   // share 0: no deletion at all
            (1000, 1, 0.0, true),
            (4, 3, 1.0, false), // share 1: anything while Vault shows something live
        ] {
            assert_eq!(
                breaker_refuses(owned, n, share),
                refused,
                "{n} of {owned} at share {share}"
            );
        }
    }

    #[test]
    fn ownership_decides_conflicts_and_adoption() {
        let mut foreign = ours("f", 1);
        foreign.tags.clear();
        let mut sample = ours("s", 1);
        sample.tags = crate::aws::Tags::from([("version", "1")]);
        sample.current_version_id = Some("random-id-from-the-sample-0000000000".into());
        let mut other = ours("o", 1);
        other.tags.insert("vault-mount", "elsewhere");
        let mut listed = ours("l", 1);
        listed.tags.clear();
        let mut s = settings();
        s.adopt = vec!["p/l".into()];
        let vault = [live("f", 1), live("l", 1), live("o", 1), live("s", 1)];
        let p = plan(&vault, &[foreign, listed, other, sample], &s);
        assert_eq!(
            kinds(&p),
            ["conflict p/f", "update p/l", "conflict p/o", "update p/s"]
        );
        assert!(matches!(
            &p.steps[0],
            Step::Conflict {
                kind: ConflictKind::Foreign,
                ..
            }
        ));
        assert!(matches!(
            &p.steps[2],
            Step::Conflict {
                kind: ConflictKind::OtherSource,
                ..
            }
        ));
        assert!(matches!(
            &p.steps[3],
            Step::Update {
                reason: UpdateReason::Adopt,
                ..
            }
        ));
        // The adopt list wins over another tool's or another sync's managed-by tag; a secret
        // already ours is not adopted again.
        let mut tool = ours("t", 1);
        tool.tags.insert("managed-by", "terraform");
        let mut elsewhere = ours("e", 1);
        elsewhere.tags.insert("vault-mount", "other");
        let mut s = settings();
        s.adopt = vec!["p/t".into(), "p/e".into(), "p/mine".into()];
        let vault = [live("e", 1), live("mine", 1), live("t", 1)];
        let p = plan(&vault, &[tool, elsewhere, ours("mine", 1)], &s);
        assert_eq!(kinds(&p), ["update p/e", "unchanged p/mine", "update p/t"]);
        assert!(p.steps.iter().all(|st| !matches!(
            st,
            Step::Update {
                reason: UpdateReason::NewVersion | UpdateReason::Overwrite,
                ..
            }
        )));
        // A foreign orphan is never touched.
        let mut stray = ours("x", 1);
        stray.tags.clear();
        let mut d = settings();
        d.deletion_policy = DeletionPolicy::Delete;
        assert!(plan(&[live("a", 1)], &[stray], &d).steps.len() == 1);
    }

    #[test]
    fn out_of_band_writes_are_conflicts_unless_overwritten() {
        let mut touched = ours("a", 2);
        touched.current_version_id = Some("someone-else-wrote-this-0000000000".into());
        let p = plan(&[live("a", 2)], std::slice::from_ref(&touched), &settings());
        assert!(matches!(
            &p.steps[0],
            Step::Conflict {
                kind: ConflictKind::ModifiedOutside,
                ..
            }
        ));
        let mut s = settings();
        s.on_modified = OnModified::Overwrite;
        let p = plan(&[live("a", 2)], &[touched], &s);
        assert!(matches!(
            &p.steps[0],
            Step::Update {
                reason: UpdateReason::Overwrite,
                ..
            }
        ));
    }

    #[test]
    fn a_write_whose_tags_were_lost_is_finished_not_flagged() {
        let mut half = ours("a", 1);
        half.current_version_id = Some(version_token("kv", "a", 2, T));
        half.other_version_ids.push(version_token("kv", "a", 1, T));
        let p = plan(&[live("a", 2)], &[half], &settings());
        assert!(matches!(
            &p.steps[0],
            Step::Update {
                reason: UpdateReason::FinishTags,
                written: true,
                ..
            }
        ));
    }

    #[test]
    fn only_a_version_not_in_aws_is_written_again() {
        // Vault's version 1 was overwritten by hand in AWS but is still staged there.
        let mut touched = ours("a", 1);
        touched.current_version_id = Some("someone-else-wrote-this-0000000000".into());
        touched
            .other_version_ids
            .push(version_token("kv", "a", 1, T));
        let mut s = settings();
        s.on_modified = OnModified::Overwrite;
        let p = plan(&[live("a", 1)], std::slice::from_ref(&touched), &s);
        assert!(matches!(
            &p.steps[0],
            Step::Update {
                reason: UpdateReason::Overwrite,
                written: true,
                ..
            }
        ));
        // Vault moved on meanwhile: version 2 has never been written.
        let p = plan(&[live("a", 2)], &[touched], &s);
        assert!(matches!(&p.steps[0], Step::Update { written: false, .. }));
    }

    #[test]
    fn a_lost_tag_write_then_a_newer_vault_version_is_an_update_not_a_conflict() {
        // Version 2's value went in, its tag write was lost (tags still say 1); Vault is at 3.
        let mut half = ours("a", 1);
        half.current_version_id = Some(version_token("kv", "a", 2, T));
        let p = plan(&[live("a", 3)], &[half.clone()], &settings());
        assert!(
            matches!(
                &p.steps[0],
                Step::Update {
                    reason: UpdateReason::NewVersion,
                    ..
                }
            ),
            "{:?}",
            p.steps[0]
        );
        // A version id none of Vault's versions gives is still someone else's.
        half.current_version_id = Some(version_token("kv", "a", 7, T));
        let p = plan(&[live("a", 3)], &[half], &settings());
        assert!(matches!(
            &p.steps[0],
            Step::Conflict {
                kind: ConflictKind::ModifiedOutside,
                ..
            }
        ));
    }

    #[test]
    fn scheduled_deletions_are_restored_when_ours_and_reported_otherwise() {
        let mut mine = ours("a", 1);
        mine.pending_deletion = true;
        let mut theirs = ours("b", 1);
        theirs.tags.clear();
        theirs.pending_deletion = true;
        let p = plan(&[live("a", 1), live("b", 1)], &[mine, theirs], &settings());
        assert!(matches!(&p.steps[0], Step::Update { restore: true, .. }));
        assert!(matches!(
            &p.steps[1],
            Step::Conflict {
                kind: ConflictKind::ScheduledForDeletion,
                ..
            }
        ));
    }

    #[test]
    fn bad_names_and_collisions_fail_alone() {
        let vault = [
            live("ok", 1),
            live("has space", 1),
            live("ends-abcdef", 1),
            live(&"x".repeat(600), 1),
            live("dup", 1),
            live("dup", 2),
        ];
        let p = plan(&vault, &[], &settings());
        let invalid: Vec<_> = p
            .steps
            .iter()
            .filter_map(|s| match s {
                Step::Invalid { kind, .. } => Some(*kind),
                _ => None,
            })
            .collect();
        assert_eq!(
            invalid,
            [
                InvalidKind::InvalidName,
                InvalidKind::NameTooLong,
                InvalidKind::NameCollision,
                InvalidKind::NameCollision
            ]
        );
        assert_eq!(kinds(&p)[0], "create p/ok");
        // A name like an ARN suffix is replicated, with a warning.
        assert!(kinds(&p).contains(&"create p/ends-abcdef".to_owned()));
        assert_eq!(
            p.warnings,
            [("p/ends-abcdef".to_owned(), ARN_SUFFIX_WARNING.to_owned())]
        );
    }

    #[test]
    fn unreadable_metadata_neither_writes_nor_deletes() {
        let mut s = settings();
        s.deletion_policy = DeletionPolicy::Delete;
        s.max_delete_share = 1.0;
        let vault = [
            live("a", 1),
            VaultEntry {
                rel_path: "b".into(),
                state: EntryState::Unreadable {
                    kind: "vault_permission_denied",
                    message: "denied".into(),
                },
            },
        ];
        let p = plan(&vault, &[ours("a", 1), ours("b", 1)], &s);
        assert_eq!(kinds(&p), ["unchanged p/a", "vault_failed p/b"]);
    }

    #[test]
    fn a_nested_prefix_is_another_syncs_and_untagged_replicas_get_the_tag() {
        let mut s = settings();
        s.deletion_policy = DeletionPolicy::Delete;
        s.max_delete_share = 1.0;
        // `p/mirror/x` belongs to the sync with prefix `p/mirror` of the same mount.
        let mut nested = ours("mirror/x", 1);
        nested.tags.insert("replica-prefix", "p/mirror");
        // Written before the prefix tag: one up to date, one whose Vault source is gone.
        let mut legacy = ours("old", 1);
        legacy.tags.remove("replica-prefix");
        let mut legacy_orphan = ours("gone", 1);
        legacy_orphan.tags.remove("replica-prefix");
        let p = plan(
            &[live("a", 1), live("old", 1)],
            &[ours("a", 1), nested, legacy, legacy_orphan],
            &s,
        );
        assert_eq!(
            kinds(&p),
            ["unchanged p/a", "update p/old", "keep p/gone"],
            "the nested sync's replica is not touched"
        );
        assert!(matches!(
            &p.steps[1],
            Step::Update {
                reason: UpdateReason::FinishTags,
                written: true,
                ..
            }
        ));
        // A Vault path that maps onto the nested sync's replica is a conflict, not a write.
        let mut nested = ours("mirror/x", 1);
        nested.tags.insert("replica-prefix", "p/mirror");
        let p = plan(&[live("mirror/x", 1)], &[nested], &s);
        assert!(matches!(
            &p.steps[0],
            Step::Conflict {
                kind: ConflictKind::OtherSource,
                ..
            }
        ));
    }

    #[test]
    fn a_folder_vault_would_not_list_keeps_its_replicas() {
        let mut s = settings();
        s.deletion_policy = DeletionPolicy::Delete;
        s.max_delete_share = 1.0;
        let vault = [
            live("a", 1),
            VaultEntry {
                rel_path: "private/".into(),
                state: EntryState::Unreadable {
                    kind: "vault_permission_denied",
                    message: "cannot list the folder".into(),
                },
            },
        ];
        let aws = [ours("a", 1), ours("private/x", 1), ours("gone", 1)];
        let p = plan(&vault, &aws, &s);
        assert_eq!(
            kinds(&p),
            [
                "unchanged p/a",
                "vault_failed p/private/",
                "keep p/private/x",
                "delete p/gone"
            ]
        );
    }

    #[test]
    fn sub_paths_map_relative_names_and_own_their_tag() {
        let mut s = settings();
        s.path = "apps/web".into();
        let p = plan(&[live("db", 1)], &[], &s);
        let Step::Create { target } = &p.steps[0] else {
            panic!("{p:?}")
        };
        assert_eq!(target.name, "p/db");
        assert_eq!(target.vault_path, "apps/web/db");
        // A secret replicated from the whole mount is another source.
        let p = plan(&[live("db", 1)], &[ours("db", 1)], &s);
        assert!(matches!(
            &p.steps[0],
            Step::Conflict {
                kind: ConflictKind::OtherSource,
                ..
            }
        ));
    }

    fn with_custom(mut entry: VaultEntry, custom: &[(&str, &str)]) -> VaultEntry {
        if let EntryState::Live { custom: c, .. } = &mut entry.state {
            *c = custom
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect();
        }
        entry
    }

    #[test]
    fn the_breaker_leaves_a_budget_for_deletions_found_while_writing() {
        let mut s = settings();
        s.deletion_policy = DeletionPolicy::Delete;
        s.max_delete_share = 0.25;
        let aws: Vec<AwsSecret> = (0..20).map(|i| ours(&format!("s{i}"), 1)).collect();
        let mut vault: Vec<VaultEntry> = (0..20).map(|i| live(&format!("s{i}"), 1)).collect();
        // 20 owned: 5 may go; one planned leaves 4.
        vault[0] = deleted("s0");
        assert_eq!(plan(&vault, &aws, &s).delete_budget, 4);
        // Refused: nothing more may go.
        s.max_delete_share = 0.0;
        assert_eq!(plan(&vault, &aws, &s).delete_budget, 0);
        assert_eq!(breaker_allows(2, 0.25), BREAKER_FLOOR);
        assert_eq!(breaker_allows(100, 0.29), 29);
    }

    #[test]
    fn a_metadata_change_is_applied_without_a_value_and_a_bad_tag_fails_alone() {
        let vault = [
            with_custom(live("a", 1), &[("tag:team", "core"), ("description", "A")]),
            with_custom(live("b", 1), &[("tag:aws:x", "1")]),
            live("c", 1),
        ];
        let aws = [ours("a", 1), ours("b", 1), ours("c", 1)];
        let p = plan(&vault, &aws, &settings());
        assert_eq!(kinds(&p), ["update p/a", "invalid p/b", "unchanged p/c"]);
        let Step::Update {
            reason: UpdateReason::Metadata,
            written: true,
            changes,
            target,
            ..
        } = &p.steps[0]
        else {
            panic!("{p:?}")
        };
        assert!(changes.tag);
        assert_eq!(changes.description.as_deref(), Some("A"));
        assert_eq!(target.tags["team"], "core");
        assert!(matches!(
            &p.steps[1],
            Step::Invalid {
                kind: InvalidKind::InvalidTag,
                ..
            }
        ));
        // Global tags too, and the regions: every replica is brought to them.
        let mut s = settings();
        s.tags = vec![("env".into(), "prod".into())];
        s.replica_regions = vec!["eu-west-1".parse().unwrap()];
        let p = plan(&[live("c", 1)], &[ours("c", 1)], &s);
        let Step::Update { changes, .. } = &p.steps[0] else {
            panic!("{p:?}")
        };
        assert_eq!(changes.regions.as_deref(), Some(&s.replica_regions[..]));
    }

    #[test]
    fn a_template_names_replicas_collisions_fail_both_and_old_names_are_orphans() {
        let mut s = settings();
        s.deletion_policy = DeletionPolicy::Delete;
        s.name_template =
            crate::shape::NameTemplate::parse("{mount}-{path}", Granularity::SecretPath).unwrap();
        let p = plan(&[live("a", 1), live("b", 1)], &[ours("a", 1)], &s);
        assert_eq!(kinds(&p), ["create p/kv-a", "create p/kv-b", "delete p/a"]);
        let Step::Create { target } = &p.steps[0] else {
            panic!()
        };
        assert_eq!(target.tags[tags::SOURCE], "a");
        s.name_template =
            crate::shape::NameTemplate::parse("same", Granularity::SecretPath).unwrap();
        let p = plan(&[live("a", 1), live("b", 1)], &[], &s);
        assert_eq!(kinds(&p), ["invalid p/same", "invalid p/same"]);
        // A replica of another Vault secret already under the rendered name is never taken.
        s.name_template =
            crate::shape::NameTemplate::parse("x-{path}", Granularity::SecretPath).unwrap();
        let p = plan(&[live("a", 1), live("x-a", 1)], &[ours("x-a", 1)], &s);
        assert_eq!(
            kinds(&p),
            ["invalid p/x-a", "create p/x-x-a", "delete p/x-a"],
            "the stale name follows the deletion policy"
        );
        let Step::Invalid { message, .. } = &p.steps[0] else {
            panic!()
        };
        assert!(message.contains("Vault path x-a"), "{message}");
        // Deleted in Vault: only its own replica goes, never another's under the same name.
        let p = plan(&[deleted("a"), live("x-a", 1)], &[ours("x-a", 1)], &s);
        assert_eq!(kinds(&p), ["skip p/x-a", "create p/x-x-a", "delete p/x-a"]);
    }

    #[test]
    fn one_replica_per_key_is_current_without_a_value_read_only_when_complete() {
        let mut s = settings();
        s.granularity = Granularity::SecretKey;
        s.name_template = crate::shape::NameTemplate::default_for(Granularity::SecretKey);
        let key_replica = |key: &str, count: usize| {
            let mut r = ours(&format!("a/{key}"), 1);
            r.tags.insert(tags::SOURCE, "a");
            r.tags.insert(tags::KEY, key);
            r.tags.insert(tags::KEY_COUNT, &count.to_string());
            r.current_version_id = Some(key_token("kv", "a", Some(key), 1, T));
            r
        };
        let both = [key_replica("user", 2), key_replica("pass", 2)];
        let p = plan(&[live("a", 1)], &both, &s);
        assert_eq!(kinds(&p), ["unchanged p/a/user", "unchanged p/a/pass"]);
        // One replica is missing (a create that failed): the value says which.
        let p = plan(&[live("a", 1)], &both[..1], &s);
        assert_eq!(kinds(&p), ["expand p/a"]);
        // A new version.
        let p = plan(&[live("a", 2)], &both, &s);
        assert_eq!(kinds(&p), ["expand p/a"]);
        let Step::Expand { source, .. } = &p.steps[0] else {
            panic!()
        };
        assert_eq!(source.existing.len(), 2);
        // Deleted in Vault: each key's replica follows the deletion policy.
        s.deletion_policy = DeletionPolicy::Delete;
        let p = plan(&[deleted("a"), live("z", 1)], &both, &s);
        assert_eq!(
            kinds(&p),
            ["delete p/a/user", "delete p/a/pass", "expand p/z"]
        );
    }
}
