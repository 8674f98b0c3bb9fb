//! The data floor: what a sync reasons about. A listed AWS secret and its tags, a replica
//! region's status, a Vault entry, and the rule that says where from, where to and how. The
//! Vault and AWS adapters fill these; the planner reads them; neither imports the other. No I/O.

use std::sync::Arc;

pub use contract::naming::{Granularity, NameTemplate};
pub use contract::{DeletionPolicy, LatestDeleted, OnModified, ReplicaRegion};

/// Shares equal strings: one allocation for a value repeated on many secrets (an ARN's head,
/// the tags every replica of a rule carries, the default description).
#[derive(Debug, Default)]
pub struct Interner(std::collections::HashSet<Arc<str>>);

impl Interner {
    pub fn get(&mut self, s: &str) -> Arc<str> {
        if let Some(known) = self.0.get(s) {
            return known.clone();
        }
        let new: Arc<str> = s.into();
        self.0.insert(new.clone());
        new
    }
}

/// Tag keys whose values differ from one replica to the next: held by each secret. The rest
/// (owner, mount, path, prefix, the user's tags, regions) are usually the same on every
/// replica of a rule, and held once, shared.
const OWN_KEYS: &[&str] = &[
    contract::tags::VERSION,
    contract::tags::VERSION_CREATED,
    contract::tags::SOURCE,
    contract::tags::KEY,
];

/// A listed secret's tags, held compactly: a run holds one set per replica (500,000 of them at
/// AWS's limit). Each part is `key\0value\0…` in one allocation: the keys whose values are the
/// secret's own (each written as one byte, its place in [`OWN_KEYS`] plus one), and the rest,
/// interned (one copy for all the replicas that share them). AWS allows no NUL or control
/// character in a tag; a tag that had one would be left out.
#[derive(Clone, Debug, Default)]
pub struct Tags {
    own: Box<str>,
    shared: Option<Arc<str>>,
}

fn pairs(text: &str) -> impl Iterator<Item = (&str, &str)> {
    let mut parts = text.split('\0');
    std::iter::from_fn(move || {
        let k = parts.next().filter(|k| !k.is_empty())?;
        let k = match k.as_bytes() {
            [code @ 1..=9] => OWN_KEYS.get(usize::from(code - 1)).copied().unwrap_or(k),
            _ => k,
        };
        Some((k, parts.next()?))
    })
}

impl Tags {
    /// Tags from `(key, value)` pairs, the shared part interned in `interner`.
    pub fn build<'a>(
        tags: impl IntoIterator<Item = (&'a str, &'a str)>,
        interner: &mut Interner,
    ) -> Self {
        let (mut own, mut shared) = (String::new(), String::new());
        for (k, v) in tags {
            if k.is_empty() || k.chars().chain(v.chars()).any(char::is_control) {
                continue;
            }
            let part = match OWN_KEYS.iter().position(|own| *own == k) {
                Some(at) => {
                    own.push(char::from(at as u8 + 1));
                    &mut own
                }
                None => {
                    shared.push_str(k);
                    &mut shared
                }
            };
            part.push('\0');
            part.push_str(v);
            part.push('\0');
        }
        Self {
            own: own.into_boxed_str(),
            shared: (!shared.is_empty()).then(|| interner.get(&shared)),
        }
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.iter().find(|(k, _)| *k == key).map(|(_, v)| v)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        pairs(&self.own).chain(pairs(self.shared.as_deref().unwrap_or("")))
    }

    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.iter().map(|(k, _)| k)
    }

    pub fn len(&self) -> usize {
        self.iter().count()
    }

    pub fn is_empty(&self) -> bool {
        self.own.is_empty() && self.shared.is_none()
    }

    /// The same tags with `change` applied to their list (a test's edit; not for a hot path).
    fn rebuilt(&self, change: impl FnOnce(&mut Vec<(String, String)>)) -> Self {
        let mut all: Vec<(String, String)> = self
            .iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        change(&mut all);
        Self::build(
            all.iter().map(|(k, v)| (k.as_str(), v.as_str())),
            &mut Interner::default(),
        )
    }

    /// Sets `key` (replacing its value).
    pub fn insert(&mut self, key: &str, value: &str) {
        *self = self.rebuilt(|all| match all.iter_mut().find(|(k, _)| k == key) {
            Some((_, v)) => *v = value.to_owned(),
            None => all.push((key.to_owned(), value.to_owned())),
        });
    }

    pub fn remove(&mut self, key: &str) {
        *self = self.rebuilt(|all| all.retain(|(k, _)| k != key));
    }

    pub fn clear(&mut self) {
        *self = Self::default();
    }
}

impl PartialEq for Tags {
    fn eq(&self, other: &Self) -> bool {
        fn sorted(t: &Tags) -> Vec<(&str, &str)> {
            let mut all: Vec<(&str, &str)> = t.iter().collect();
            all.sort_unstable();
            all
        }
        sorted(self) == sorted(other)
    }
}

impl Eq for Tags {}

impl<const N: usize> From<[(&str, &str); N]> for Tags {
    fn from(pairs: [(&str, &str); N]) -> Self {
        Self::build(pairs, &mut Interner::default())
    }
}

/// A version id: 16 bytes when it is a lowercase UUID (as AWS's and this tool's are), the text
/// otherwise.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VersionId {
    Uuid([u8; 16]),
    Other(Box<str>),
}

impl VersionId {
    pub fn new(id: &str) -> Self {
        Self::uuid(id).map_or_else(|| Self::Other(id.into()), Self::Uuid)
    }

    fn uuid(id: &str) -> Option<[u8; 16]> {
        let b = id.as_bytes();
        if b.len() != 36 || [8, 13, 18, 23].iter().any(|&i| b[i] != b'-') {
            return None;
        }
        let hex = |c: u8| match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            _ => None,
        };
        let mut out = [0u8; 16];
        let mut digits = b.iter().filter(|c| **c != b'-');
        for byte in &mut out {
            *byte = (hex(*digits.next()?)? << 4) | hex(*digits.next()?)?;
        }
        Some(out)
    }

    /// Whether this is the id `id`.
    pub fn is(&self, id: &str) -> bool {
        match self {
            Self::Uuid(bytes) => Self::uuid(id).as_ref() == Some(bytes),
            Self::Other(text) => &**text == id,
        }
    }
}

impl std::fmt::Display for VersionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Uuid(b) => {
                for (i, byte) in b.iter().enumerate() {
                    if matches!(i, 4 | 6 | 8 | 10) {
                        f.write_str("-")?;
                    }
                    write!(f, "{byte:02x}")?;
                }
                Ok(())
            }
            Self::Other(text) => f.write_str(text),
        }
    }
}

/// A secret's ARN: its head (`arn:PARTITION:secretsmanager:REGION:ACCOUNT:secret:`, shared) and
/// the 6 characters AWS adds after its name; or, in any other shape, the text.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Arn {
    Split { head: Arc<str>, tail: [u8; 6] },
    Whole(Box<str>),
}

/// One secret as `ListSecrets` (or `DescribeSecret`) shows it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AwsSecret {
    pub name: Box<str>,
    arn: Option<Arn>,
    pub tags: Tags,
    /// The version carrying the `AWSCURRENT` stage.
    current: Option<VersionId>,
    /// The other versions that still carry a stage (`AWSPREVIOUS`, …): one the replicator
    /// wrote can be made current again without writing its value.
    staged: Box<[VersionId]>,
    /// Scheduled for deletion.
    pub pending_deletion: bool,
    /// Secrets Manager rotates it, or a service owns it: never taken over.
    pub managed_elsewhere: bool,
    /// Shared between replicas with the same text (most have the default).
    pub description: Option<Arc<str>>,
}

impl AwsSecret {
    /// A secret named `name` with the ARN `arn`, its head shared through `interner`.
    pub fn new(name: &str, arn: &str, interner: &mut Interner) -> Self {
        let arn = arn
            .len()
            .checked_sub(name.len() + 7)
            .and_then(|head_len| {
                let (head, rest) = arn.split_at_checked(head_len)?;
                let tail = rest.strip_prefix(name)?.strip_prefix('-')?;
                let tail: [u8; 6] = tail.as_bytes().try_into().ok()?;
                Some(Arn::Split {
                    head: interner.get(head),
                    tail,
                })
            })
            .unwrap_or_else(|| Arn::Whole(arn.into()));
        Self {
            name: name.into(),
            arn: Some(arn),
            ..Self::default()
        }
    }

    /// A secret for a test: `name`, its ARN `arn`.
    pub fn named(name: &str, arn: &str) -> Self {
        Self::new(name, arn, &mut Interner::default())
    }

    pub fn arn(&self) -> String {
        match &self.arn {
            Some(Arn::Split { head, tail }) => {
                format!("{head}{}-{}", self.name, String::from_utf8_lossy(tail))
            }
            Some(Arn::Whole(text)) => text.to_string(),
            None => String::new(),
        }
    }

    /// The version id carrying `AWSCURRENT`.
    pub fn current_version_id(&self) -> Option<String> {
        self.current.as_ref().map(ToString::to_string)
    }

    /// Whether version `id` carries `AWSCURRENT`.
    pub fn is_current(&self, id: &str) -> bool {
        self.current.as_ref().is_some_and(|c| c.is(id))
    }

    /// Whether version `id` is in AWS with a stage (current or not).
    pub fn has_version(&self, id: &str) -> bool {
        self.is_current(id) || self.staged.iter().any(|v| v.is(id))
    }

    /// Sets the versions: the current one, and the others with a stage.
    pub fn set_versions<'a>(
        &mut self,
        current: Option<&str>,
        staged: impl IntoIterator<Item = &'a str>,
    ) {
        self.current = current.map(VersionId::new);
        self.staged = staged.into_iter().map(VersionId::new).collect();
    }

    /// Adds a version with a stage that is not current.
    pub fn add_staged(&mut self, id: &str) {
        let mut all = std::mem::take(&mut self.staged).into_vec();
        all.push(VersionId::new(id));
        self.staged = all.into_boxed_slice();
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

/// A Vault creation time as Vault wrote it (RFC 3339, UTC, nanoseconds with trailing zeros
/// dropped, as Go writes them): held as the instant (12 bytes) when writing it back gives that
/// very text, else as the text. The text is what version ids are made from, so it must come
/// back exactly.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Stamp {
    Instant { secs: i64, nanos: u32 },
    Text(Box<str>),
}

impl Stamp {
    pub fn new(text: &str) -> Self {
        use aws_smithy_types::date_time::{DateTime, Format};
        let Ok(t) = DateTime::from_str(text, Format::DateTime) else {
            return Self::Text(text.into());
        };
        let instant = Self::Instant {
            secs: t.secs(),
            nanos: t.subsec_nanos(),
        };
        if instant.text() == text {
            instant
        } else {
            Self::Text(text.into())
        }
    }

    /// The text, exactly as Vault wrote it.
    pub fn text(&self) -> std::borrow::Cow<'_, str> {
        let (secs, nanos) = match self {
            Self::Text(text) => return std::borrow::Cow::Borrowed(text),
            Self::Instant { secs, nanos } => (*secs, *nanos),
        };
        // Days since 1970-01-01 to a civil date (Howard Hinnant's algorithm).
        let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = doy - (153 * mp + 2) / 5 + 1;
        let month = if mp < 10 { mp + 3 } else { mp - 9 };
        let year = yoe + era * 400 + i64::from(month <= 2);
        let mut out = format!(
            "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}",
            rem / 3600,
            rem % 3600 / 60,
            rem % 60
        );
        if nanos > 0 {
            let fraction = format!("{nanos:09}");
            out.push('.');
            out.push_str(fraction.trim_end_matches('0'));
        }
        out.push('Z');
        std::borrow::Cow::Owned(out)
    }
}

impl From<&str> for Stamp {
    fn from(text: &str) -> Self {
        Self::new(text)
    }
}

/// One secret found in Vault.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VaultEntry {
    /// Path relative to the synced sub-path; the AWS name is `<prefix>/<rendered name>`.
    pub rel_path: Box<str>,
    pub state: EntryState,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EntryState {
    /// A version to replicate: the latest, or, when the latest is deleted and the rule falls
    /// back ([`LatestDeleted::Fallback`]), the newest live one.
    Live {
        version: u64,
        created_time: Stamp,
        /// Vault's own `current_version`: above `version` when the latest is deleted and the
        /// newest live one is replicated instead.
        latest: u64,
        /// (version, created_time) of the earlier versions Vault still lists, newest first, at
        /// most [`EARLIER_VERSIONS`]: the version ids this tool may have written for them.
        earlier: Box<[(u64, Stamp)]>,
        /// Its custom metadata's `description` and `tag:` entries.
        custom: Box<[(String, String)]>,
    },
    /// The latest version is soft-deleted or destroyed (and the rule does not fall back, or no
    /// version is live), or there is no version.
    Deleted,
    /// It exists but the rule does not select it: by path (include/exclude), or by its `sync`
    /// custom metadata. A replica it had is handled as if Vault had deleted it.
    Excluded(contract::select::Excluded),
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
) -> Box<[(String, String)]> {
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
    /// The tag keys Vault custom metadata (`tag:KEY`) may set; none by default.
    pub metadata_tag_keys: std::collections::BTreeSet<String>,
    /// Which secrets under the path it replicates: include/exclude globs, opt-in or -out.
    pub selection: contract::select::Selection,
    /// The resource policy put on every replica, when one is configured.
    pub resource_policy: Option<contract::resource_policy::ResourcePolicy>,
    /// The stack the sync belongs to, tagged on its replicas (`replica-stack`): another
    /// stack's replicas are never its own.
    pub stack: Option<String>,
    /// The rule's name (`[[sync]]`'s `name`), tagged on its replicas (`replica-rule`): another
    /// rule's replicas are never its own. None for the one rule of top-level settings.
    pub name: Option<String>,
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
            metadata_tag_keys: std::collections::BTreeSet::new(),
            selection: contract::select::Selection::default(),
            resource_policy: None,
            stack: None,
            name: None,
        }
    }

    /// This sync's identity, as its replicas' tags carry it.
    pub fn source(&self) -> contract::SyncSource<'_> {
        contract::SyncSource {
            prefix: &self.prefix,
            mount: &self.mount,
            path_tag: self.path_tag(),
            stack: self.stack.as_deref(),
            rule: self.name.as_deref(),
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

    /// The path relative to the sub-path of a path inside the mount (`None`: not under it).
    pub fn rel_of<'a>(&self, vault_path: &'a str) -> Option<&'a str> {
        if self.path.is_empty() {
            return Some(vault_path);
        }
        vault_path
            .strip_prefix(self.path.as_str())
            .and_then(|r| r.strip_prefix('/'))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_keep_every_pair_and_share_what_replicas_have_in_common() {
        let mut interner = Interner::default();
        let one = Tags::build(
            [
                ("managed-by", "vault-secrets-replicator"),
                ("version", "3"),
                ("team", "core"),
            ],
            &mut interner,
        );
        let two = Tags::build(
            [
                ("managed-by", "vault-secrets-replicator"),
                ("version", "4"),
                ("team", "core"),
            ],
            &mut interner,
        );
        assert_eq!(one.get("version"), Some("3"));
        assert_eq!(two.get("team"), Some("core"));
        assert_eq!(one.get("missing"), None);
        assert_eq!(one.len(), 3);
        assert!(Arc::ptr_eq(
            one.shared.as_ref().unwrap(),
            two.shared.as_ref().unwrap()
        ));
        let mut edited = one.clone();
        edited.insert("version", "5");
        edited.insert("env", "prod");
        edited.remove("team");
        let mut seen: Vec<(&str, &str)> = edited.iter().collect();
        seen.sort_unstable();
        assert_eq!(
            seen,
            [
                ("env", "prod"),
                ("managed-by", "vault-secrets-replicator"),
                ("version", "5")
            ]
        );
        assert_eq!(
            Tags::from([("a", "1"), ("b", "2")]),
            Tags::from([("b", "2"), ("a", "1")])
        );
        assert!(Tags::from([("a\0b", "1")]).is_empty(), "no NUL in a tag");
        assert!(
            Tags::from([("\u{1}", "1")]).is_empty(),
            "nor a control character"
        );
        // The own keys are one byte each.
        assert_eq!(&*Tags::from([("version", "3")]).own, "\u{1}\u{0}3\u{0}");
        // An empty value is a value.
        assert_eq!(Tags::from([("empty", "")]).get("empty"), Some(""));
    }

    #[test]
    fn a_vault_time_is_held_as_an_instant_only_when_it_comes_back_exactly() {
        for text in [
            "2026-11-28T12:34:56.789012345Z",
            "2026-11-28T12:34:56.5Z",
            "2026-11-28T12:34:56Z",
            "1999-02-28T00:00:00.000000001Z",
            "2024-02-29T23:59:59.1Z",
        ] {
            let s = Stamp::new(text);
            assert!(matches!(s, Stamp::Instant { .. }), "{text}");
            assert_eq!(s.text(), text);
        }
        // Not as Go writes it: kept as written.
        for text in [
            "2026-11-28T12:34:56.500Z",
            "2026-11-28T12:34:56+00:00",
            "t1",
            "",
        ] {
            let s = Stamp::new(text);
            assert!(matches!(s, Stamp::Text(_)), "{text}");
            assert_eq!(s.text(), text);
        }
    }

    #[test]
    fn version_ids_are_16_bytes_when_they_are_uuids_and_text_otherwise() {
        let id = "45b812c1-fe2e-8c77-845a-8f1e44a38315";
        let v = VersionId::new(id);
        assert!(matches!(v, VersionId::Uuid(_)));
        assert_eq!(v.to_string(), id);
        assert!(v.is(id) && !v.is("45b812c1-fe2e-8c77-845a-8f1e44a38316"));
        for other in [
            "45B812C1-FE2E-8C77-845A-8F1E44A38315",
            "random-id-from-the-sample",
            "",
        ] {
            let v = VersionId::new(other);
            assert!(matches!(v, VersionId::Other(_)), "{other}");
            assert!(v.is(other) && v.to_string() == other);
        }
    }

    #[test]
    fn an_arn_is_its_shared_head_and_its_tail() {
        let arn = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:kv/db-AbC123";
        let s = AwsSecret::named("kv/db", arn);
        assert!(matches!(s.arn, Some(Arn::Split { .. })));
        assert_eq!(s.arn(), arn);
        // Any other shape is kept whole.
        let odd = AwsSecret::named("kv/db", "arn:aws:secretsmanager:r:1:secret:other-AbC123");
        assert!(matches!(odd.arn, Some(Arn::Whole(_))));
        assert_eq!(odd.arn(), "arn:aws:secretsmanager:r:1:secret:other-AbC123");
        let mut v = s.clone();
        v.set_versions(Some("a"), ["b", "c"]);
        assert!(v.is_current("a") && v.has_version("c") && !v.has_version("d"));
        assert_eq!(v.current_version_id().as_deref(), Some("a"));
    }

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
