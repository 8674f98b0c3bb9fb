//! What a replica should look like besides its value: its name (template and granularity), its
//! tags (`--tag` and `tag:` custom metadata), its description and its replica regions; and what
//! differs from what AWS shows, so that a change of any of them is applied without reading the
//! value. Pure: no I/O.

use std::collections::BTreeMap;

use base64::Engine as _;
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::token::key_token;
use crate::model::{AwsSecret, RegionStatus, ReplicaRegion, Rule};
use contract::{is_aws_name_char, tags};

/// The description of a replica whose Vault secret sets none.
pub const DEFAULT_DESCRIPTION: &str =
    "Replicated from Vault by vault-secrets-replicator; edit it in Vault";

/// AWS's limit on a description.
pub const MAX_DESCRIPTION_LEN: usize = 2048;
/// AWS limit on a secret name.
pub const MAX_NAME_LEN: usize = 512;
/// AWS limit on a secret value.
pub const MAX_VALUE_BYTES: usize = 65_536;

/// The tags and description a secret's replicas should carry beyond this tool's own tags, and
/// the `tag:` keys of its custom metadata that were ignored: `global` (from `--tag`), and the
/// secret's `tag:` entries of the keys in `allowed` that are not `global`'s (the operator's
/// tags always win). The error is an `invalid_tag` failure of that secret alone.
pub fn user_shape(
    global: &[(String, String)],
    allowed: &std::collections::BTreeSet<String>,
    custom: &[(String, String)],
) -> Result<UserShape, String> {
    let mut tags: BTreeMap<String, String> = global.iter().cloned().collect();
    let mut description = DEFAULT_DESCRIPTION.to_owned();
    let mut ignored = Vec::new();
    for (k, v) in custom {
        if k == crate::model::DESCRIPTION_KEY {
            if v.chars().count() > MAX_DESCRIPTION_LEN {
                return Err(format!(
                    "custom_metadata description is over {MAX_DESCRIPTION_LEN} characters"
                ));
            }
            // An empty description is none: AWS would not keep it.
            if !v.is_empty() {
                description.clone_from(v);
            }
        } else if let Some(name) = k.strip_prefix(crate::model::TAG_PREFIX) {
            if !allowed.contains(name) || global.iter().any(|(g, _)| g.eq_ignore_ascii_case(name)) {
                ignored.push(name.to_owned());
                continue;
            }
            tags::check(name, v).map_err(|e| format!("custom_metadata {k:?}: {e}"))?;
            tags.insert(name.to_owned(), v.clone());
        }
    }
    Ok(UserShape {
        tags,
        description,
        ignored,
    })
}

/// What a secret's custom metadata makes of its replicas' tags and description.
#[derive(Debug, PartialEq, Eq)]
pub struct UserShape {
    pub tags: BTreeMap<String, String>,
    pub description: String,
    /// `tag:` keys metadata may not set (not allowed, or the operator's).
    pub ignored: Vec<String>,
}

/// The warning kind of `tag:` entries metadata may not set.
pub const METADATA_TAG_IGNORED: &str = "metadata_tag_ignored";

/// A short digest of a tag key (4 characters of base64, 24 bits): the `vault-tags` tag holds one
/// per tag this tool set, 50 of them in 200 characters, under AWS's 256.
pub fn key_digest(key: &str) -> String {
    let d = Sha256::digest(key.as_bytes());
    base64::engine::general_purpose::STANDARD_NO_PAD.encode(&d[..3])
}

/// The `vault-tags` value for `keys`, sorted.
pub fn digests_of<'a>(keys: impl Iterator<Item = &'a String>) -> String {
    let mut all: Vec<String> = keys.map(|k| key_digest(k)).collect();
    all.sort();
    all.concat()
}

/// The `vault-tags` value recording the operator's tag keys; none without them.
pub fn operator_marker(global: &[(String, String)]) -> Option<String> {
    (!global.is_empty()).then(|| {
        format!(
            "{}{}",
            tags::OPERATOR_MARK,
            digests_of(global.iter().map(|(k, _)| k))
        )
    })
}

/// Whether the `vault-tags` value `marker` records `key` (either form: the operator's keys
/// after [`tags::OPERATOR_MARK`], or every key this tool set, as earlier versions wrote it).
fn recorded(marker: &str, key: &str) -> bool {
    let d = key_digest(key);
    let digests = marker.strip_prefix(tags::OPERATOR_MARK).unwrap_or(marker);
    digests
        .as_bytes()
        .chunks(4)
        .any(|chunk| chunk == d.as_bytes())
}

/// The `replica-regions` value: each region, with `=` and a digest of its KMS key when one is
/// set, sorted, space-separated (characters a tag value allows).
pub fn regions_tag(regions: &[ReplicaRegion]) -> String {
    let mut parts: Vec<String> = regions
        .iter()
        .map(|r| match &r.kms_key_id {
            Some(k) => format!("{}={}", r.region, key_digest(k)),
            None => r.region.clone(),
        })
        .collect();
    parts.sort();
    parts.join(" ")
}

/// The `resource-policy` value of a template: 16 characters of base64 of its SHA-256 (96
/// bits), so a changed template is written again.
pub fn policy_tag(policy: &contract::resource_policy::ResourcePolicy) -> String {
    let d = Sha256::digest(policy.template().as_bytes());
    base64::engine::general_purpose::STANDARD_NO_PAD.encode(&d[..12])
}

/// What a replica's resource policy needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PolicyWrite {
    /// The configured template, filled in for the replica (it has none, or another).
    Put,
    /// None: the one this tool put is no longer configured.
    Delete,
}

/// (region, KMS digest) of a `replica-regions` value.
pub fn recorded_regions(tag: &str) -> Vec<(String, Option<String>)> {
    tag.split(' ')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((r, d)) => (r.to_owned(), Some(d.to_owned())),
            None => (p.to_owned(), None),
        })
        .collect()
}

/// What the replica's regions should become, given what the tags recorded and what AWS shows:
/// (regions to remove, regions to add). A region whose key changed is removed and added again,
/// and so is a wanted region whose replication failed; a recorded region AWS no longer shows
/// (removed, or promoted to a secret of its own, by someone else) is added again; a region
/// someone else added is left alone.
pub fn region_moves(
    recorded_tag: Option<&str>,
    actual: &[RegionStatus],
    desired: &[ReplicaRegion],
) -> (Vec<String>, Vec<ReplicaRegion>) {
    let recorded = recorded_tag.map(recorded_regions).unwrap_or_default();
    let digest = |r: &ReplicaRegion| r.kms_key_id.as_deref().map(key_digest);
    let remove: Vec<String> = actual
        .iter()
        .filter(|a| {
            let ours = recorded.iter().find(|(r, _)| *r == a.region);
            let wanted = desired.iter().find(|d| d.region == a.region);
            if a.failed.is_some() {
                return wanted.is_some();
            }
            match (ours, wanted) {
                (Some(_), None) => true,
                (Some((_, was)), Some(d)) => *was != digest(d),
                (None, _) => false,
            }
        })
        .map(|a| a.region.clone())
        .collect();
    let add: Vec<ReplicaRegion> = desired
        .iter()
        .filter(|d| !actual.iter().any(|a| a.region == d.region) || remove.contains(&d.region))
        .cloned()
        .collect();
    (remove, add)
}

/// The replica regions to remove and to add.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct RegionMoves {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub remove: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub add: Vec<ReplicaRegion>,
    /// The `replica-regions` tag as it is (removed when a move fails: the next run looks and
    /// tries again).
    #[serde(skip)]
    pub recorded: Option<String>,
}

/// What differs between a replica in AWS and its desired tags, description and regions:
/// applied after any value write, the tags last (they record the rest).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct MetaChanges {
    /// A desired tag is missing or has another value: the whole set is written.
    pub tag: bool,
    /// Tags this tool set that are no longer wanted.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub untag: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Regions to move, when AWS's differ from the wanted ones.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub regions: Option<RegionMoves>,
    /// The resource policy to write, when it differs from the configured one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy: Option<PolicyWrite>,
}

impl MetaChanges {
    pub fn is_empty(&self) -> bool {
        !self.tag
            && self.untag.is_empty()
            && self.description.is_none()
            && self.regions.is_none()
            && self.policy.is_none()
    }
}

/// The tag keys this tool writes only in some configurations: removed when no longer written.
const OPTIONAL_OWN: &[&str] = &[
    tags::STACK,
    tags::RULE,
    tags::SOURCE,
    tags::KEY,
    tags::KEY_COUNT,
    tags::USER_TAGS,
    tags::REPLICA_REGIONS,
    tags::RESOURCE_POLICY,
];

/// What the replica `secret` lacks to look like `target`. `observed` is its replication as AWS
/// reports it, when it was looked at; otherwise the regions its tag records are taken as there.
/// A replica being restored has none (they went before its deletion).
///
/// A tag not wanted is removed when this tool writes it only sometimes, when `vault-tags`
/// records it as the operator's, or when its key is one Vault metadata governs
/// (`metadata_keys`): a tag others set is kept, whatever key a metadata writer chooses. A
/// `vault-tags` of an earlier version (no [`tags::OPERATOR_MARK`]) also recorded metadata's
/// keys, and a metadata writer could have planted a key whose digest names someone else's
/// tag: under it, a recorded key goes only when the secret's metadata still names it (a tag
/// metadata set then, and may not set now).
pub fn meta_changes(
    secret: &AwsSecret,
    target: &Target,
    desired_regions: &[ReplicaRegion],
    metadata_keys: &std::collections::BTreeSet<String>,
    observed: Option<&[RegionStatus]>,
    restore: bool,
    policy_drifted: bool,
) -> MetaChanges {
    let desired_tags = &target.tags;
    let marker = secret.tags.get(tags::USER_TAGS).unwrap_or("");
    let legacy = !marker.starts_with(tags::OPERATOR_MARK);
    let ours = |k: &str| {
        recorded(marker, k) && (!legacy || target.metadata_ignored.iter().any(|i| i == k))
    };
    let untag = secret
        .tags
        .keys()
        .filter(|k| !desired_tags.contains_key(*k))
        .filter(|k| {
            OPTIONAL_OWN.contains(k)
                || (!tags::OWN.contains(k) && (ours(k) || metadata_keys.contains(*k)))
        })
        .map(str::to_owned)
        .collect();
    let recorded_tag = secret.tags.get(tags::REPLICA_REGIONS).filter(|_| !restore);
    let as_recorded: Vec<RegionStatus>;
    let actual = match observed {
        _ if restore => &[][..],
        Some(statuses) => statuses,
        None => {
            as_recorded = recorded_tag
                .map(recorded_regions)
                .unwrap_or_default()
                .into_iter()
                .map(|(region, _)| RegionStatus {
                    region,
                    failed: None,
                })
                .collect();
            &as_recorded
        }
    };
    let (remove, add) = region_moves(recorded_tag, actual, desired_regions);
    let regions = (!remove.is_empty() || !add.is_empty()).then(|| RegionMoves {
        remove,
        add,
        recorded: secret.tags.get(tags::REPLICA_REGIONS).map(str::to_owned),
    });
    // A restored replica lost its regions: its tag is written again once they are back.
    let tag = desired_tags
        .iter()
        .any(|(k, v)| secret.tags.get(k) != Some(v.as_str()))
        || regions.is_some();
    // The policy: by its tag, unless an audit found the one in AWS changed.
    let wanted = desired_tags.get(tags::RESOURCE_POLICY);
    let recorded = secret.tags.get(tags::RESOURCE_POLICY);
    let policy = match (wanted, recorded) {
        (Some(_), _) if policy_drifted => Some(PolicyWrite::Put),
        (Some(w), r) if r != Some(w.as_str()) => Some(PolicyWrite::Put),
        (None, Some(_)) => Some(PolicyWrite::Delete),
        _ => None,
    };
    MetaChanges {
        tag: tag || policy_drifted && wanted.is_some(),
        untag,
        description: (secret.description.as_deref() != Some(target.description.as_str()))
            .then(|| target.description.clone()),
        regions,
        policy,
    }
}

/// What to write for one Vault secret (or one key of it).
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
    /// The `tag:` keys the secret's custom metadata names but may not set
    /// ([`UserShape::ignored`]).
    #[serde(skip)]
    pub metadata_ignored: Vec<String>,
}

/// One Vault secret at the version to replicate, and the shape its replicas should have.
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
    /// [`UserShape::ignored`].
    #[serde(skip)]
    pub metadata_ignored: Vec<String>,
}

impl Source {
    /// The version id of this version in the replica of `key` (or of the whole secret).
    pub fn token(&self, rule: &Rule, key: Option<&str>) -> String {
        key_token(
            &rule.mount,
            &self.vault_path,
            key,
            self.version,
            &self.created_time,
        )
    }

    /// The replica of the whole secret, or of `(key, how many keys the version has)`.
    pub fn target(&self, rule: &Rule, key: Option<(&str, usize)>) -> Box<Target> {
        let key_name = key.map(|(k, _)| k);
        let mut tags = owner_tags(rule);
        tags.insert(tags::VERSION.to_owned(), self.version.to_string());
        tags.insert(tags::VERSION_CREATED.to_owned(), self.created_time.clone());
        if !rule.name_template.is_plain_path() {
            tags.insert(tags::SOURCE.to_owned(), self.rel_path.clone());
        }
        if let Some((key, count)) = key {
            tags.insert(tags::KEY.to_owned(), key.to_owned());
            tags.insert(tags::KEY_COUNT.to_owned(), count.to_string());
        }
        if let Some(marker) = operator_marker(&rule.tags) {
            tags.insert(tags::USER_TAGS.to_owned(), marker);
        }
        tags.extend(self.user_tags.clone());
        if !rule.replica_regions.is_empty() {
            tags.insert(
                tags::REPLICA_REGIONS.to_owned(),
                regions_tag(&rule.replica_regions),
            );
        }
        if let Some(policy) = &rule.resource_policy {
            tags.insert(tags::RESOURCE_POLICY.to_owned(), policy_tag(policy));
        }
        // Boxed: a step is as large as its largest kind.
        Box::new(Target {
            name: rule.replica_name(&self.rel_path, key_name),
            vault_path: self.vault_path.clone(),
            version: self.version,
            created_time: self.created_time.clone(),
            token: self.token(rule, key_name),
            key: key_name.map(str::to_owned),
            tags,
            description: self.description.clone(),
            metadata_ignored: self.metadata_ignored.clone(),
        })
    }
}

/// The ownership tags of the rule's replicas.
pub fn owner_tags(rule: &Rule) -> BTreeMap<String, String> {
    let mut owner = BTreeMap::from([
        (
            tags::MANAGED_BY.to_owned(),
            tags::MANAGED_BY_VALUE.to_owned(),
        ),
        (tags::VAULT_MOUNT.to_owned(), rule.mount.clone()),
        (tags::VAULT_PATH.to_owned(), rule.path_tag().to_owned()),
        (tags::PREFIX.to_owned(), rule.prefix.clone()),
    ]);
    if let Some(stack) = &rule.stack {
        owner.insert(tags::STACK.to_owned(), stack.clone());
    }
    if let Some(name) = &rule.name {
        owner.insert(tags::RULE.to_owned(), name.clone());
    }
    owner
}

/// Why a name breaks one of AWS's rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NameProblem {
    InvalidName,
    NameTooLong,
}

/// Checks a name against AWS's rules; the reason when it breaks one.
pub fn check_name(name: &str) -> Result<(), (NameProblem, String)> {
    if let Some(c) = name.chars().find(|c| !is_aws_name_char(*c)) {
        return Err((
            NameProblem::InvalidName,
            format!("{c:?} is not allowed in a Secrets Manager name (letters, digits, /_+=.@-)"),
        ));
    }
    if name.len() > MAX_NAME_LEN {
        return Err((
            NameProblem::NameTooLong,
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

/// The report kind of that warning.
pub const ARN_SUFFIX_KIND: &str = "arn_suffix_name";

/// The warning for [`looks_like_arn_suffix`] names.
pub const ARN_SUFFIX_WARNING: &str = "ends with '-' and 6 characters like an ARN suffix: replicated, but anyone reading it by a partial ARN may get another secret; read it by name or full ARN";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_sets_only_the_allowed_keys_and_never_the_operators() {
        let global = vec![("team".to_owned(), "core".to_owned())];
        let allowed: std::collections::BTreeSet<String> =
            ["team", "env", "aws:x"].map(String::from).into();
        let custom = vec![
            ("description".to_owned(), "DB of app".to_owned()),
            ("owner".to_owned(), "not a tag".to_owned()),
            ("tag:team".to_owned(), "payments".to_owned()),
            ("tag:env".to_owned(), "prod".to_owned()),
            ("tag:cost".to_owned(), "free".to_owned()),
        ];
        let custom = crate::model::shaping_metadata(Some(&custom.into_iter().collect()));
        assert_eq!(
            custom.len(),
            4,
            "owner is neither a tag nor the description"
        );
        let shape = user_shape(&global, &allowed, &custom).unwrap();
        assert_eq!(shape.description, "DB of app");
        assert_eq!(
            shape.tags.into_iter().collect::<Vec<_>>(),
            [
                ("env".to_owned(), "prod".to_owned()),
                ("team".to_owned(), "core".to_owned())
            ],
            "the operator's value wins even where metadata may set the key"
        );
        assert_eq!(shape.ignored, ["cost", "team"]);
        let none = std::collections::BTreeSet::new();
        let plain = user_shape(&global, &none, &custom).unwrap();
        assert_eq!(plain.tags.len(), 1, "by default metadata sets no tag");
        assert_eq!(plain.ignored, ["cost", "env", "team"]);
        assert_eq!(
            user_shape(&global, &none, &[]).unwrap().description,
            DEFAULT_DESCRIPTION
        );
        let bad = vec![("tag:aws:x".to_owned(), "v".to_owned())];
        assert!(
            user_shape(&[], &allowed, &bad)
                .unwrap_err()
                .contains("reserved")
        );
        assert!(
            user_shape(&[], &none, &bad).unwrap().ignored == ["aws:x"],
            "a key metadata may not set fails nothing"
        );
    }

    fn secret(tags: &[(&str, &str)], description: Option<&str>) -> AwsSecret {
        let mut s = AwsSecret::default();
        for (k, v) in tags {
            s.tags.insert(k, v);
        }
        s.description = description.map(Into::into);
        s
    }

    fn target(tags: &BTreeMap<String, String>) -> Target {
        Target {
            name: "p/a".into(),
            vault_path: "a".into(),
            version: 1,
            created_time: String::new(),
            token: String::new(),
            key: None,
            tags: tags.clone(),
            description: DEFAULT_DESCRIPTION.into(),
            metadata_ignored: Vec::new(),
        }
    }

    #[test]
    fn only_tags_this_tool_set_are_removed() {
        let none = std::collections::BTreeSet::new();
        let operator = |keys: &[&str]| {
            operator_marker(
                &keys
                    .iter()
                    .map(|k| ((*k).to_owned(), String::new()))
                    .collect::<Vec<_>>(),
            )
            .unwrap()
        };
        let marker = operator(&["team", "env"]);
        assert_eq!(marker.len(), 10);
        let s = secret(
            &[
                ("managed-by", "vault-secrets-replicator"),
                ("team", "core"),
                ("env", "prod"),
                ("tier", "1"),
                ("added-by-someone", "x"),
                (tags::USER_TAGS, &marker),
            ],
            Some(DEFAULT_DESCRIPTION),
        );
        let desired: BTreeMap<String, String> = [
            ("managed-by", "vault-secrets-replicator"),
            ("team", "core"),
            (tags::USER_TAGS, &operator(&["team"])),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let c = meta_changes(&s, &target(&desired), &[], &none, None, false, false);
        assert!(c.tag, "the marker changed");
        assert_eq!(c.untag, ["env"], "an operator's key, recorded");
        assert_eq!((c.description, c.regions), (None, None));
        // A key Vault metadata governs goes when no metadata sets it.
        let governed = ["tier".to_owned()].into();
        let c = meta_changes(&s, &target(&desired), &[], &governed, None, false, false);
        assert_eq!(c.untag, ["env", "tier"]);
        // A marker an earlier version wrote (every key, no mark) is honoured for the keys the
        // secret's metadata still names (it set them then, may not now), and rewritten.
        let legacy = digests_of(["team".to_owned(), "tier".to_owned()].iter());
        let mut old = s.clone();
        old.tags.insert(tags::USER_TAGS, &legacy);
        let mut named = target(&desired);
        named.metadata_ignored = vec!["tier".into()];
        let c = meta_changes(&old, &named, &[], &none, None, false, false);
        assert_eq!(c.untag, ["tier"]);
        assert!(c.tag, "the marker is rewritten in the operator's form");
        // A recorded digest alone removes nothing: it may have been planted by a metadata
        // writer to name someone else's tag.
        let c = meta_changes(&old, &target(&desired), &[], &none, None, false, false);
        assert!(c.untag.is_empty(), "{:?}", c.untag);
        // Without operator tags now, the legacy marker itself goes.
        let mut bare = desired.clone();
        bare.remove(tags::USER_TAGS);
        let c = meta_changes(&old, &target(&bare), &[], &none, None, false, false);
        assert_eq!(c.untag, ["vault-tags"]);
        let same = secret(
            &desired
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect::<Vec<_>>(),
            Some(DEFAULT_DESCRIPTION),
        );
        assert!(meta_changes(&same, &target(&desired), &[], &none, None, false, false).is_empty());
        let mut t = target(&desired);
        t.description = "new".into();
        let c = meta_changes(&same, &t, &[], &none, None, false, false);
        assert_eq!(c.description.as_deref(), Some("new"));
    }

    fn status(region: &str, failed: bool) -> RegionStatus {
        RegionStatus {
            region: region.to_owned(),
            failed: failed.then(|| "already exists".to_owned()),
        }
    }

    #[test]
    fn regions_move_only_where_the_configuration_or_aws_differ() {
        let none = std::collections::BTreeSet::new();
        let r = |s: &str| s.parse::<ReplicaRegion>().unwrap();
        let want = [r("eu-west-1"), r("us-west-2=key-b")];
        let tag = regions_tag(&want);
        assert_eq!(tag, format!("eu-west-1 us-west-2={}", key_digest("key-b")));
        let s = secret(&[(tags::REPLICA_REGIONS, &tag)], Some(DEFAULT_DESCRIPTION));
        let desired = BTreeMap::from([(tags::REPLICA_REGIONS.to_owned(), tag.clone())]);
        let t = target(&desired);
        assert_eq!(
            meta_changes(&s, &t, &want, &none, None, false, false).regions,
            None
        );
        // Looked at: both there.
        let there = [status("eu-west-1", false), status("us-west-2", false)];
        assert!(meta_changes(&s, &t, &want, &none, Some(&there), false, false).is_empty());
        // Someone removed one, or promoted its replica: added again.
        let c = meta_changes(&s, &t, &want, &none, Some(&there[..1]), false, false);
        let moves = c.regions.unwrap();
        assert_eq!((moves.remove.len(), &moves.add[..]), (0, &want[1..]));
        assert_eq!(moves.recorded.as_deref(), Some(tag.as_str()));
        assert!(c.tag, "the tag is written again once they are back");
        // Restored after a deletion (which removed them): all of them again.
        let c = meta_changes(&s, &t, &want, &none, Some(&there), true, false);
        assert_eq!(c.regions.unwrap().add, want);
        let unreplicated = secret(&[], Some(DEFAULT_DESCRIPTION));
        assert_eq!(
            meta_changes(&unreplicated, &t, &want, &none, None, false, false)
                .regions
                .map(|m| m.add),
            Some(want.to_vec())
        );
        let actual = [
            status("eu-west-1", false),
            status("us-west-2", false),
            status("ap-south-1", false),
        ];
        // us-west-2's key changed, eu-west-1 is dropped, sa-east-1 is new; ap-south-1 is not ours.
        let next = [r("us-west-2=key-c"), r("sa-east-1")];
        let (remove, add) = region_moves(Some(&tag), &actual, &next);
        assert_eq!(remove, ["eu-west-1", "us-west-2"]);
        assert_eq!(add, next);
        assert_eq!(
            region_moves(Some(&tag), &actual[..2], &want),
            (vec![], vec![])
        );
        // A wanted region whose replication failed goes and comes back; an unwanted failed one,
        // someone else's, is left.
        let broken = [status("eu-west-1", true), status("sa-east-1", true)];
        assert_eq!(
            region_moves(None, &broken, &want[..1]),
            (vec!["eu-west-1".to_owned()], want[..1].to_vec())
        );
    }

    #[test]
    fn names_aws_refuses_and_names_like_an_arn_suffix() {
        assert!(check_name("p/a_b+c=d.e@f-g").is_ok());
        assert_eq!(check_name("p/a b").unwrap_err().0, NameProblem::InvalidName);
        assert_eq!(
            check_name(&"x".repeat(513)).unwrap_err().0,
            NameProblem::NameTooLong
        );
        assert!(looks_like_arn_suffix("p/db-abc123"));
        assert!(!looks_like_arn_suffix("p/db-abc12"));
        assert!(!looks_like_arn_suffix("p/db_abc123"));
    }
}
