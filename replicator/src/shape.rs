//! What a replica should look like besides its value: its name (template and granularity), its
//! tags (`--tag` and `tag:` custom metadata), its description and its replica regions; and what
//! differs from what AWS shows, so that a change of any of them is applied without reading the
//! value. Pure: no I/O.

use std::collections::BTreeMap;

use base64::Engine as _;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::aws::{AwsSecret, RegionStatus};
pub use contract::naming::{Granularity, NameTemplate};
use contract::{ReplicaRegion, tags};

/// The description of a replica whose Vault secret sets none.
pub const DEFAULT_DESCRIPTION: &str =
    "Replicated from Vault by vault-secrets-replicator; edit it in Vault";

/// The custom metadata key whose value becomes the description.
pub const DESCRIPTION_KEY: &str = "description";
/// Custom metadata keys with this prefix become tags (`tag:team` → `team`).
pub const TAG_PREFIX: &str = "tag:";
/// AWS's limit on a description.
pub const MAX_DESCRIPTION_LEN: usize = 2048;

/// The entries of a secret's custom metadata that shape its replicas: `description` and the
/// `tag:` ones, in key order. Empty (no allocation) for most secrets.
pub fn shaping_metadata(custom: Option<&BTreeMap<String, String>>) -> Vec<(String, String)> {
    custom
        .into_iter()
        .flatten()
        .filter(|(k, _)| k.as_str() == DESCRIPTION_KEY || k.starts_with(TAG_PREFIX))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// The tags and description a secret's replicas should carry beyond this tool's own tags:
/// `global` (from `--tag`), overridden per key by the secret's `tag:` entries. The error is an
/// `invalid_tag` failure of that secret alone.
pub fn user_shape(
    global: &[(String, String)],
    custom: &[(String, String)],
) -> Result<(BTreeMap<String, String>, String), String> {
    let mut tags: BTreeMap<String, String> = global.iter().cloned().collect();
    let mut description = DEFAULT_DESCRIPTION.to_owned();
    for (k, v) in custom {
        if k == DESCRIPTION_KEY {
            if v.chars().count() > MAX_DESCRIPTION_LEN {
                return Err(format!(
                    "custom_metadata description is over {MAX_DESCRIPTION_LEN} characters"
                ));
            }
            // An empty description is none: AWS would not keep it.
            if !v.is_empty() {
                description.clone_from(v);
            }
        } else if let Some(name) = k.strip_prefix(TAG_PREFIX) {
            tags::check(name, v).map_err(|e| format!("custom_metadata {k:?}: {e}"))?;
            tags.insert(name.to_owned(), v.clone());
        }
    }
    Ok((tags, description))
}

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

/// Whether the `vault-tags` value `marker` records `key`.
fn recorded(marker: &str, key: &str) -> bool {
    let d = key_digest(key);
    marker
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

/// What the replica's regions should become, given what the tags recorded and what
/// `DescribeSecret` shows now: (regions to remove, regions to add). A region whose key changed
/// is removed and added again, and so is a wanted region whose replication failed; a region
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
    /// The desired regions, when they differ from the recorded ones.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub regions: Option<Vec<ReplicaRegion>>,
}

impl MetaChanges {
    pub fn is_empty(&self) -> bool {
        !self.tag && self.untag.is_empty() && self.description.is_none() && self.regions.is_none()
    }
}

/// The tag keys this tool writes only in some configurations: removed when no longer written.
const OPTIONAL_OWN: &[&str] = &[
    tags::SOURCE,
    tags::KEY,
    tags::KEY_COUNT,
    tags::USER_TAGS,
    tags::REPLICA_REGIONS,
];

/// Compares `secret` with its desired tags (this tool's and the user's, as one map: its
/// `replica-regions` says which regions `regions` are), description and regions.
pub fn meta_changes(
    secret: &AwsSecret,
    desired_tags: &BTreeMap<String, String>,
    description: &str,
    regions: &[ReplicaRegion],
) -> MetaChanges {
    let tag = desired_tags
        .iter()
        .any(|(k, v)| secret.tags.get(k) != Some(v.as_str()));
    let marker = secret.tags.get(tags::USER_TAGS).unwrap_or("");
    let untag = secret
        .tags
        .keys()
        .filter(|k| !desired_tags.contains_key(*k))
        .filter(|k| OPTIONAL_OWN.contains(k) || (!tags::OWN.contains(k) && recorded(marker, k)))
        .map(str::to_owned)
        .collect();
    let wanted_regions = desired_tags.get(tags::REPLICA_REGIONS).map(String::as_str);
    let regions =
        (secret.tags.get(tags::REPLICA_REGIONS) != wanted_regions).then(|| regions.to_vec());
    MetaChanges {
        tag,
        untag,
        description: (secret.description.as_deref() != Some(description))
            .then(|| description.to_owned()),
        regions,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn custom_metadata_tags_override_global_ones_and_bad_ones_fail() {
        let global = vec![("team".to_owned(), "core".to_owned())];
        let custom = vec![
            ("description".to_owned(), "DB of app".to_owned()),
            ("owner".to_owned(), "not a tag".to_owned()),
            ("tag:team".to_owned(), "payments".to_owned()),
            ("tag:env".to_owned(), "prod".to_owned()),
        ];
        let custom = shaping_metadata(Some(&custom.into_iter().collect()));
        assert_eq!(
            custom.len(),
            3,
            "owner is neither a tag nor the description"
        );
        let (tags, description) = user_shape(&global, &custom).unwrap();
        assert_eq!(description, "DB of app");
        assert_eq!(
            tags.into_iter().collect::<Vec<_>>(),
            [
                ("env".to_owned(), "prod".to_owned()),
                ("team".to_owned(), "payments".to_owned())
            ]
        );
        assert_eq!(user_shape(&global, &[]).unwrap().1, DEFAULT_DESCRIPTION);
        let bad = vec![("tag:aws:x".to_owned(), "v".to_owned())];
        assert!(user_shape(&[], &bad).unwrap_err().contains("reserved"));
    }

    fn secret(tags: &[(&str, &str)], description: Option<&str>) -> AwsSecret {
        let mut s = AwsSecret::default();
        for (k, v) in tags {
            s.tags.insert(k, v);
        }
        s.description = description.map(Into::into);
        s
    }

    #[test]
    fn only_tags_this_tool_set_are_removed() {
        let marker = digests_of(["team".to_owned(), "env".to_owned()].iter());
        assert_eq!(marker.len(), 8);
        let s = secret(
            &[
                ("managed-by", "vault-secrets-replicator"),
                ("team", "core"),
                ("env", "prod"),
                ("added-by-someone", "x"),
                (tags::USER_TAGS, &marker),
            ],
            Some(DEFAULT_DESCRIPTION),
        );
        let desired: BTreeMap<String, String> = [
            ("managed-by", "vault-secrets-replicator"),
            ("team", "core"),
            (tags::USER_TAGS, &digests_of(["team".to_owned()].iter())),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let c = meta_changes(&s, &desired, DEFAULT_DESCRIPTION, &[]);
        assert!(c.tag, "the marker changed");
        assert_eq!(c.untag, ["env"]);
        assert_eq!((c.description, c.regions), (None, None));
        let same = secret(
            &desired
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect::<Vec<_>>(),
            Some(DEFAULT_DESCRIPTION),
        );
        assert!(meta_changes(&same, &desired, DEFAULT_DESCRIPTION, &[]).is_empty());
        let c = meta_changes(&same, &desired, "new", &[]);
        assert_eq!(c.description.as_deref(), Some("new"));
    }

    #[test]
    fn regions_move_only_where_the_configuration_changed() {
        let r = |s: &str| s.parse::<ReplicaRegion>().unwrap();
        let want = [r("eu-west-1"), r("us-west-2=key-b")];
        let tag = regions_tag(&want);
        assert_eq!(tag, format!("eu-west-1 us-west-2={}", key_digest("key-b")));
        let s = secret(&[(tags::REPLICA_REGIONS, &tag)], Some(DEFAULT_DESCRIPTION));
        let desired = BTreeMap::from([(tags::REPLICA_REGIONS.to_owned(), tag.clone())]);
        assert_eq!(
            meta_changes(&s, &desired, DEFAULT_DESCRIPTION, &want).regions,
            None
        );
        let unreplicated = secret(&[], Some(DEFAULT_DESCRIPTION));
        assert_eq!(
            meta_changes(&unreplicated, &desired, DEFAULT_DESCRIPTION, &want).regions,
            Some(want.to_vec())
        );
        let status = |region: &str, failed: bool| RegionStatus {
            region: region.to_owned(),
            failed: failed.then(|| "already exists".to_owned()),
        };
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
}
