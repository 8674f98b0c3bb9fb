//! The data floor: what a sync reasons about. A listed AWS secret and its tags, a replica
//! region's status, a Vault entry, and the rule that says where from, where to and how. The
//! Vault and AWS adapters fill these; the planner reads them; neither imports the other. No I/O.

use std::sync::Arc;

pub use contract::naming::{Granularity, NameTemplate};
pub use contract::{DeletionPolicy, LatestDeleted, OnModified, ReplicaRegion};

/// A listed secret's tags, held compactly: a run holds one set per replica (100,000 of them at
/// scale), and most keys and many values (owner, mount, path, prefix) are the same on every
/// replica, so the adapter that lists them stores each distinct string once per page.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tags(Vec<(Arc<str>, Arc<str>)>);

impl Tags {
    /// Tags from shared strings (the listing's interned ones).
    pub fn from_shared(pairs: Vec<(Arc<str>, Arc<str>)>) -> Self {
        Self(pairs)
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| &**k == key).map(|(_, v)| &**v)
    }

    /// Sets `key` (replacing its value).
    pub fn insert(&mut self, key: &str, value: &str) {
        match self.0.iter_mut().find(|(k, _)| &**k == key) {
            Some((_, v)) => *v = value.into(),
            None => self.0.push((key.into(), value.into())),
        }
    }

    pub fn remove(&mut self, key: &str) {
        self.0.retain(|(k, _)| &**k != key);
    }

    pub fn clear(&mut self) {
        self.0.clear();
    }

    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|(k, _)| &**k)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (&**k, &**v))
    }
}

impl<const N: usize> From<[(&str, &str); N]> for Tags {
    fn from(pairs: [(&str, &str); N]) -> Self {
        let mut t = Tags::default();
        for (k, v) in pairs {
            t.insert(k, v);
        }
        t
    }
}

/// One secret as `ListSecrets` (or `DescribeSecret`) shows it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AwsSecret {
    pub name: String,
    pub arn: String,
    pub tags: Tags,
    /// Version id carrying the `AWSCURRENT` stage.
    pub current_version_id: Option<String>,
    /// The other version ids that still carry a stage (`AWSPREVIOUS`, …): one the replicator
    /// wrote can be made current again without writing its value. Usually none, so nothing is
    /// held for it.
    pub other_version_ids: Vec<String>,
    /// Scheduled for deletion.
    pub pending_deletion: bool,
    /// Shared between replicas with the same text (most have the default).
    pub description: Option<Arc<str>>,
}

impl AwsSecret {
    /// Whether version `id` is in AWS with a stage (current or not).
    pub fn has_version(&self, id: &str) -> bool {
        self.current_version_id.as_deref() == Some(id)
            || self.other_version_ids.iter().any(|v| v == id)
    }
}

/// One replica region of a secret as AWS reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegionStatus {
    pub region: String,
    /// AWS's message when replicating there failed (a secret of that name is there already,
    /// the key cannot be used, …).
    pub failed: Option<String>,
}

/// One secret found in Vault.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VaultEntry {
    /// Path relative to the synced sub-path; the AWS name is `<prefix>/<rendered name>`.
    pub rel_path: String,
    pub state: EntryState,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EntryState {
    /// A version to replicate: the latest, or, when the latest is deleted and the rule falls
    /// back ([`LatestDeleted::Fallback`]), the newest live one.
    Live {
        version: u64,
        created_time: String,
        /// Vault's own `current_version`: above `version` when the latest is deleted and the
        /// newest live one is replicated instead.
        latest: u64,
        /// (version, created_time) of the earlier versions Vault still lists, newest first, at
        /// most [`EARLIER_VERSIONS`]: the version ids this tool may have written for them.
        earlier: Vec<(u64, String)>,
        /// Its custom metadata's `description`, `sync` and `tag:` entries.
        custom: Vec<(String, String)>,
    },
    /// The latest version is soft-deleted or destroyed (and the rule does not fall back, or no
    /// version is live), or there is no version.
    Deleted,
    /// Its metadata could not be read, or (a `rel_path` ending with `/`) the folder could not
    /// be listed; it, or everything under it, is neither written nor deleted this run.
    Unreadable { kind: &'static str, message: String },
}

/// The custom metadata key whose value becomes the description.
pub const DESCRIPTION_KEY: &str = "description";
/// Custom metadata keys with this prefix become tags (`tag:team` → `team`).
pub const TAG_PREFIX: &str = "tag:";

/// The entries of a secret's custom metadata that shape its replicas: `description` and the
/// `tag:` ones, in key order. Empty (no allocation) for most secrets.
pub fn shaping_metadata(
    custom: Option<&std::collections::BTreeMap<String, String>>,
) -> Vec<(String, String)> {
    custom
        .into_iter()
        .flatten()
        .filter(|(k, _)| k.as_str() == DESCRIPTION_KEY || k.starts_with(TAG_PREFIX))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// How many earlier versions an entry remembers (Vault keeps 10 by default).
pub const EARLIER_VERSIONS: usize = 16;

/// Full path inside the mount of a path relative to `base`.
pub fn full_path(base: &str, rel: &str) -> String {
    if base.is_empty() {
        rel.to_owned()
    } else {
        format!("{base}/{rel}")
    }
}

/// One sync rule, as the planner needs it: which Vault secrets, which AWS names, and what to do
/// with what it finds. Validated before a run ([`crate::config`]).
#[derive(Clone, Debug, PartialEq)]
pub struct Rule {
    pub prefix: String,
    pub mount: String,
    /// Normalised sub-path: no leading or trailing `/`; empty for the whole mount.
    pub path: String,
    pub deletion_policy: DeletionPolicy,
    pub max_delete_share: f64,
    pub on_modified: OnModified,
    /// AWS names this tool may take over whoever tagged them.
    pub adopt: Vec<String>,
    /// Whether the sample's replicas (a `version` tag, no owner) are taken over.
    pub adopt_sample: bool,
    pub latest_deleted: LatestDeleted,
    pub max_keys_per_secret: usize,
    /// Sorted by region.
    pub replica_regions: Vec<ReplicaRegion>,
    pub name_template: NameTemplate,
    pub granularity: Granularity,
    /// `--tag`s, in key order.
    pub tags: Vec<(String, String)>,
}

impl Rule {
    /// A rule with every default: replicate `mount` into `<prefix>/…`, keep what Vault deletes.
    pub fn new(prefix: &str, mount: &str) -> Self {
        Self {
            prefix: prefix.to_owned(),
            mount: mount.to_owned(),
            path: String::new(),
            deletion_policy: DeletionPolicy::Keep,
            max_delete_share: contract::defaults::MAX_DELETE_SHARE,
            on_modified: OnModified::Report,
            adopt: Vec::new(),
            adopt_sample: false,
            latest_deleted: LatestDeleted::default(),
            max_keys_per_secret: contract::defaults::MAX_KEYS_PER_SECRET,
            replica_regions: Vec::new(),
            name_template: NameTemplate::default_for(Granularity::SecretPath),
            granularity: Granularity::SecretPath,
            tags: Vec::new(),
        }
    }

    /// This sync's identity, as its replicas' tags carry it.
    pub fn source(&self) -> contract::SyncSource<'_> {
        contract::SyncSource {
            prefix: &self.prefix,
            mount: &self.mount,
            path_tag: self.path_tag(),
        }
    }

    /// The AWS name of the replica of `rel` (a path relative to the sub-path), or of one of its
    /// keys.
    pub fn replica_name(&self, rel: &str, key: Option<&str>) -> String {
        format!(
            "{}/{}",
            self.prefix,
            self.name_template
                .render(rel, &self.mount, key.unwrap_or(""))
        )
    }

    /// The `vault-path` tag value: the sub-path, or `/` for the whole mount.
    pub fn path_tag(&self) -> &str {
        if self.path.is_empty() {
            "/"
        } else {
            &self.path
        }
    }

    /// The path inside the mount of `rel`.
    pub fn vault_path(&self, rel: &str) -> String {
        full_path(&self.path, rel)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_paths_join_the_base() {
        assert_eq!(full_path("", "a/b"), "a/b");
        assert_eq!(full_path("apps", "a/b"), "apps/a/b");
        let mut r = Rule::new("p", "kv");
        assert_eq!((r.path_tag(), r.vault_path("a")), ("/", "a".to_owned()));
        r.path = "apps".into();
        assert_eq!(
            (r.path_tag(), r.vault_path("a")),
            ("apps", "apps/a".to_owned())
        );
        assert_eq!(r.replica_name("a/b", None), "p/a/b");
    }
}
