//! The Vault side of a sync: walks the KV v2 tree under the configured path with bounded
//! concurrency, reading metadata only (in bulk where the server offers it), into the data
//! floor's [`VaultEntry`]. Network I/O through [`VaultClient`]; the classification of one
//! secret's state is pure.

use std::sync::atomic::{AtomicBool, Ordering};

use aws_smithy_types::DateTime;
use aws_smithy_types::date_time::Format;
use futures::stream::{FuturesUnordered, StreamExt};

pub use crate::model::{EARLIER_VERSIONS, EntryState, VaultEntry, full_path};
use crate::model::{LatestDeleted, Stamp, shaping_metadata};
use crate::vault::{SecretMetadata, VaultClient, VaultError, VersionMetadata};
use contract::select::{Excluded, SYNC_KEY, Selection};

/// Result of a walk.
#[derive(Debug, Default)]
pub struct Inventory {
    pub entries: Vec<VaultEntry>,
    /// Whether the server's bulk `detailed-metadata` listing was used.
    pub bulk_metadata: bool,
}

/// Classifies a secret from its metadata: the version to replicate (the latest; or, when the
/// latest is soft-deleted or destroyed and `latest_deleted` falls back, the newest live one), or
/// deleted. `now` decides whether a `deletion_time` has passed (`delete_version_after` sets it
/// in the future).
pub fn entry_state(
    meta: &SecretMetadata,
    now: DateTime,
    latest_deleted: LatestDeleted,
) -> EntryState {
    let latest = meta.current_version;
    let mut versions: Vec<(u64, &VersionMetadata)> = meta
        .versions
        .iter()
        .filter_map(|(n, v)| Some((n.parse::<u64>().ok()?, v)))
        .filter(|(n, _)| *n <= latest)
        .collect();
    versions.sort_by_key(|(n, _)| std::cmp::Reverse(*n));
    // Whether each version is live (`None`: a deletion time that cannot be read, which neither
    // writes nor deletes).
    let live = |v: &VersionMetadata| -> Option<bool> {
        if v.destroyed {
            return Some(false);
        }
        if v.deletion_time.is_empty() {
            return Some(true);
        }
        DateTime::from_str(&v.deletion_time, Format::DateTime)
            .ok()
            .map(|at| at > now)
    };
    let unreadable = |v: &VersionMetadata| EntryState::Unreadable {
        kind: "vault_bad_response",
        message: format!(
            "the deletion_time {:?} of a version is not a time: neither written nor deleted",
            v.deletion_time
        ),
    };
    let chosen = match versions.first() {
        _ if latest == 0 => None,
        Some((n, v)) if *n == latest => match (live(v), latest_deleted) {
            (None, _) => return unreadable(v),
            (Some(true), _) => Some(0),
            (Some(false), LatestDeleted::Fallback) => {
                let mut found = None;
                for (at, (_, older)) in versions.iter().enumerate().skip(1) {
                    match live(older) {
                        None => return unreadable(older),
                        Some(true) => {
                            found = Some(at);
                            break;
                        }
                        Some(false) => {}
                    }
                }
                found
            }
            (Some(false), LatestDeleted::Delete) => None,
        },
        _ => None,
    };
    let Some(at) = chosen else {
        return EntryState::Deleted;
    };
    let (version, meta_of) = versions[at];
    EntryState::Live {
        version,
        created_time: Stamp::new(&meta_of.created_time),
        latest,
        earlier: versions[at + 1..]
            .iter()
            .take(EARLIER_VERSIONS)
            .map(|(n, v)| (*n, Stamp::new(&v.created_time)))
            .collect(),
        custom: shaping_metadata(meta.custom_metadata.as_ref()),
    }
}

/// How the entries of one run are classified: the moment a `deletion_time` is judged against,
/// the rule's choice for a deleted latest version, and which secrets the rule selects.
#[derive(Clone, Copy, Debug)]
pub struct Classify<'a> {
    pub now: DateTime,
    pub latest_deleted: LatestDeleted,
    pub selection: &'a Selection,
}

impl<'a> Classify<'a> {
    /// The classification of `rule`'s entries at `now`.
    pub fn of(rule: &'a crate::model::Rule, now: DateTime) -> Self {
        Self {
            now,
            latest_deleted: rule.latest_deleted,
            selection: &rule.selection,
        }
    }

    /// The state of a path the rule's patterns leave out, known before its metadata is read
    /// (which is then never read); `None` for a selected path.
    pub fn by_path(&self, rel: &str) -> Option<EntryState> {
        (!self.selection.selects_path(rel)).then_some(EntryState::Excluded(Excluded::Path))
    }

    /// The state of a selected path from its metadata: a live secret whose `sync` custom
    /// metadata leaves it out is excluded; one whose `sync` says neither yes nor no is neither
    /// written nor deleted.
    pub fn state(&self, meta: &SecretMetadata) -> EntryState {
        let state = entry_state(meta, self.now, self.latest_deleted);
        if !matches!(state, EntryState::Live { .. }) {
            return state;
        }
        let sync = meta
            .custom_metadata
            .as_ref()
            .and_then(|m| m.get(SYNC_KEY))
            .map(String::as_str);
        match self.selection.by_metadata(sync) {
            Ok(None) => state,
            Ok(Some(why)) => EntryState::Excluded(why),
            Err(message) => EntryState::Unreadable {
                kind: "invalid_sync_metadata",
                message,
            },
        }
    }

    /// [`Self::by_path`], else [`Self::state`].
    pub fn path_state(&self, rel: &str, meta: &SecretMetadata) -> EntryState {
        self.by_path(rel).unwrap_or_else(|| self.state(meta))
    }
}

/// The most secrets one walk holds (a hostile or broken server could list without end).
pub const MAX_ENTRIES: usize = 2_000_000;
/// The deepest folder nesting one walk follows.
pub const MAX_DEPTH: usize = 64;

/// A listed key must be one path segment (a folder ends with `/`): never empty, `.` or `..`,
/// never with a `/` inside, so a listing cannot point the walk, or a name, elsewhere.
pub fn check_key(key: &str) -> Result<(), String> {
    let segment = key.strip_suffix('/').unwrap_or(key);
    if segment.is_empty() || segment == "." || segment == ".." || segment.contains('/') {
        return Err(format!(
            "returned the key {key:?}, which is not one path segment"
        ));
    }
    Ok(())
}

/// A path named from outside (an audit log, a Lambda payload) must be segments that
/// [`check_key`] accepts, at most [`MAX_DEPTH`] deep.
pub fn check_path(rel: &str) -> Result<(), String> {
    let segments: Vec<&str> = rel.split('/').collect();
    if segments.len() > MAX_DEPTH {
        return Err(format!("{rel:?} is deeper than {MAX_DEPTH} folders"));
    }
    segments.iter().try_for_each(|s| check_key(s))
}

/// The entries of the named paths (relative to the synced sub-path), each from its own metadata
/// read: one that does not exist is left out (its AWS counterpart is then an orphan), one that
/// cannot be read is `Unreadable`.
pub async fn read_paths(
    vault: &VaultClient,
    settings: &crate::config::Settings,
    rels: &[String],
    classify: Classify<'_>,
) -> Inventory {
    let rule = &settings.rule;
    let read = async |rel: &String| {
        if let Some(state) = classify.by_path(rel) {
            return Some(VaultEntry {
                rel_path: rel.as_str().into(),
                state,
            });
        }
        let meta = vault
            .read_metadata(&rule.mount, &rule.vault_path(rel))
            .await;
        let state = match meta {
            Ok(Some(meta)) => classify.state(&meta),
            Ok(None) => return None,
            Err(e) => EntryState::Unreadable {
                kind: e.kind(),
                message: e.to_string(),
            },
        };
        Some(VaultEntry {
            rel_path: rel.as_str().into(),
            state,
        })
    };
    let entries: Vec<Option<VaultEntry>> = futures::stream::iter(rels)
        .map(read)
        .buffer_unordered(settings.concurrency)
        .collect()
        .await;
    Inventory {
        entries: entries.into_iter().flatten().collect(),
        bulk_metadata: false,
    }
}

/// An empty listing is only "nothing to replicate" on a KV v2 mount: a KV v1 mount, or another
/// engine, answers a KV v2 listing with "not found" too, and must fail the run instead.
async fn check_kv2(vault: &VaultClient, mount: &str) -> Result<(), VaultError> {
    // Where the mount cannot be asked about, the listing's own answer stands.
    let Ok(Some((kind, version))) = vault.mount_kind(mount).await else {
        return Ok(());
    };
    let problem = match (kind.as_str(), version.as_deref()) {
        ("kv", Some("2")) | ("generic", Some("2")) => return Ok(()),
        ("kv" | "generic", _) => format!(
            "{mount}/ is a KV version 1 mount; the replicator reads KV v2 only: upgrade it with `vault kv enable-versioning {mount}/` (or `bao kv enable-versioning`), or replicate another mount"
        ),
        (other, _) => format!(
            "{mount}/ is a {other} secrets engine, not KV v2: set the mount (REPLICATOR_MOUNT / --mount) to a KV v2 mount"
        ),
    };
    Err(VaultError::NotKv2(problem))
}

enum Task {
    List(String),
    Meta(String),
}

enum Done {
    Listed(String, crate::vault::Listing),
    Meta(String, Result<Option<SecretMetadata>, VaultError>),
}

/// Walks everything under `base` (no leading/trailing `/`) in `mount`. A listing that fails
/// fails the walk: an incomplete inventory must never look like deletions. Nothing found, or a
/// listing the mount does not know, is checked against the mount's engine: only a KV v2 mount
/// may be empty.
pub async fn walk(
    vault: &VaultClient,
    mount: &str,
    base: &str,
    concurrency: usize,
    classify: Classify<'_>,
    progress: &crate::progress::Progress,
) -> Result<Inventory, VaultError> {
    walk_telling_names(vault, mount, base, concurrency, classify, progress, None).await
}

/// [`walk`], sending every path found (relative to `base`) to `names` as soon as the folders
/// are all listed: before the per-secret metadata reads of a Vault without the bulk listing,
/// so the AWS listing that the names guide need not wait for them. Folders are listed before
/// any metadata is read.
pub async fn walk_telling_names(
    vault: &VaultClient,
    mount: &str,
    base: &str,
    concurrency: usize,
    classify: Classify<'_>,
    progress: &crate::progress::Progress,
    names: Option<tokio::sync::oneshot::Sender<Vec<String>>>,
) -> Result<Inventory, VaultError> {
    let one = One {
        classify,
        entries: Vec::new(),
        names,
    };
    let (one, bulk) = match walk_tree(vault, mount, base, concurrency, one, progress).await {
        Ok(walked) => walked,
        Err(e) => return Err(checked_kv2(vault, mount, e).await),
    };
    let mut entries = one.entries;
    if entries.is_empty() {
        check_kv2(vault, mount).await?;
    }
    entries.sort_by(|a, b| a.rel_path.cmp(&b.rel_path));
    // Large: give back the room the growth left (a remap, not a copy).
    entries.shrink_to_fit();
    Ok(Inventory {
        entries,
        bulk_metadata: bulk,
    })
}

/// A walk's error, unless the mount is no KV v2 mount: that is the error then.
async fn checked_kv2(vault: &VaultClient, mount: &str, e: VaultError) -> VaultError {
    match e {
        VaultError::Status {
            status: 404 | 405, ..
        }
        | VaultError::Decode { .. } => match check_kv2(vault, mount).await {
            Err(not_kv2) => not_kv2,
            Ok(()) => e,
        },
        other => other,
    }
}

/// One rule's part of a walk that serves many ([`walk_shared`]).
#[derive(Debug)]
pub struct LaneWalk<'a> {
    /// The rule's sub-path in the mount (empty: the whole mount).
    pub path: &'a str,
    pub classify: Classify<'a>,
    /// Where its paths go once the folders are all listed (see [`walk_telling_names`]).
    pub names: Option<tokio::sync::oneshot::Sender<Vec<String>>>,
}

/// Why one rule of a shared walk has no inventory: a folder above its sub-path could not be
/// listed, so nothing of it is known.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LaneFailure {
    pub kind: &'static str,
    pub message: String,
    /// What failed is above the rule's own path (a folder the rules share, listed for them
    /// all): the rule's own walk, from its path, may well succeed.
    pub above: bool,
}

/// One walk of `mount` for every rule of `lanes` (rules on one mount and namespace): each
/// folder listed once and each secret's metadata read once, whichever rules select it, and
/// classified for each rule as its own walk would. Each rule's inventory, or why it has none
/// (every rule's, when the walk's top listing fails: `above` for the rules below that folder,
/// whose own walks may succeed).
pub async fn walk_shared(
    vault: &VaultClient,
    mount: &str,
    lanes: Vec<LaneWalk<'_>>,
    concurrency: usize,
    progress: &crate::progress::Progress,
) -> Vec<Result<Inventory, LaneFailure>> {
    let base = common_base(lanes.iter().map(|l| l.path));
    let depth = segments(&base).count();
    let shared = Shared {
        lanes: lanes
            .into_iter()
            .map(|l| SharedLane {
                // Whole segments below the base, each with its `/`: the base is made of them.
                under: segments(l.path)
                    .skip(depth)
                    .map(|s| format!("{s}/"))
                    .collect(),
                classify: l.classify,
                names: l.names,
                entries: Vec::new(),
                failed: None,
            })
            .collect(),
        held: 0,
    };
    let under: Vec<bool> = shared.lanes.iter().map(|l| !l.under.is_empty()).collect();
    let failed_all = |e: VaultError, above_for_some: bool| -> Vec<Result<Inventory, LaneFailure>> {
        under
            .iter()
            .map(|below| {
                Err(LaneFailure {
                    kind: e.kind(),
                    message: e.to_string(),
                    above: above_for_some && *below,
                })
            })
            .collect()
    };
    let (shared, bulk) = match walk_tree(vault, mount, &base, concurrency, shared, progress).await {
        Ok(walked) => walked,
        Err(e) => {
            let e = checked_kv2(vault, mount, e).await;
            let mount_wrong = matches!(e, VaultError::NotKv2(_));
            return failed_all(e, !mount_wrong);
        }
    };
    if shared.held == 0
        && let Err(e) = check_kv2(vault, mount).await
    {
        return failed_all(e, false);
    }
    shared
        .lanes
        .into_iter()
        .map(|lane| match lane.failed {
            Some(failure) => Err(failure),
            None => {
                let mut entries = lane.entries;
                entries.sort_by(|a, b| a.rel_path.cmp(&b.rel_path));
                entries.shrink_to_fit();
                Ok(Inventory {
                    entries,
                    bulk_metadata: bulk,
                })
            }
        })
        .collect()
}

/// A path's segments, empty ones left out.
fn segments(path: &str) -> impl Iterator<Item = &str> {
    path.split('/').filter(|s| !s.is_empty())
}

/// The longest sub-path every one of `paths` is in (whole segments; empty: the mount).
fn common_base<'a>(mut paths: impl Iterator<Item = &'a str>) -> String {
    let Some(first) = paths.next() else {
        return String::new();
    };
    let mut common: Vec<&str> = segments(first).collect();
    for path in paths {
        let same = common
            .iter()
            .zip(segments(path))
            .take_while(|(a, b)| **a == *b)
            .count();
        common.truncate(same);
    }
    common.join("/")
}

/// What a walk does with what it finds: one rule's classification ([`One`]), or each rule's
/// of a shared walk ([`Shared`]). Paths are relative to the walk's base; a folder's ends in `/`.
trait Collect {
    /// Whether the walk lists `folder`.
    fn follows(&self, folder: &str) -> bool;
    /// Whether the names are wanted (the walk then gathers them for [`Self::named`]).
    fn wants_names(&self) -> bool;
    /// A secret found at `rel`: whether its metadata is to be read.
    fn found(&mut self, rel: &str) -> bool;
    fn metadata(&mut self, rel: &str, meta: &SecretMetadata);
    /// A path neither written nor deleted: a folder that cannot be listed, a listed key that is
    /// no path segment, a metadata read that failed.
    fn unreadable(&mut self, rel: &str, kind: &'static str, message: &str);
    /// Every secret's path, once the folders are all listed.
    fn named(&mut self, found: Vec<String>);
    /// Entries held so far.
    fn held(&self) -> usize;
}

/// One rule's walk.
struct One<'a> {
    classify: Classify<'a>,
    entries: Vec<VaultEntry>,
    names: Option<tokio::sync::oneshot::Sender<Vec<String>>>,
}

impl Collect for One<'_> {
    fn follows(&self, _: &str) -> bool {
        true
    }

    fn wants_names(&self) -> bool {
        self.names.is_some()
    }

    fn found(&mut self, rel: &str) -> bool {
        // Left out by the patterns: its metadata is never read.
        if let Some(state) = self.classify.by_path(rel) {
            self.entries.push(VaultEntry {
                rel_path: rel.into(),
                state,
            });
            return false;
        }
        true
    }

    fn metadata(&mut self, rel: &str, meta: &SecretMetadata) {
        self.entries.push(VaultEntry {
            rel_path: rel.into(),
            state: self.classify.state(meta),
        });
    }

    fn unreadable(&mut self, rel: &str, kind: &'static str, message: &str) {
        self.entries.push(VaultEntry {
            rel_path: rel.into(),
            state: EntryState::Unreadable {
                kind,
                message: message.to_owned(),
            },
        });
    }

    fn named(&mut self, mut found: Vec<String>) {
        // Unreadable folders count too: their prefix guides the split like any name.
        found.extend(
            self.entries
                .iter()
                .filter(|e| matches!(e.state, EntryState::Unreadable { .. }))
                .map(|e| e.rel_path.to_string()),
        );
        if let Some(tx) = self.names.take() {
            let _ = tx.send(found);
        }
    }

    fn held(&self) -> usize {
        self.entries.len()
    }
}

/// One rule's part of a shared walk: `under` is its sub-path below the walk's base (with a
/// trailing `/`; empty: all of it).
struct SharedLane<'a> {
    under: String,
    classify: Classify<'a>,
    names: Option<tokio::sync::oneshot::Sender<Vec<String>>>,
    entries: Vec<VaultEntry>,
    failed: Option<LaneFailure>,
}

impl SharedLane<'_> {
    /// `rel` as the rule names it, when it is under the rule's sub-path.
    fn own<'r>(&self, rel: &'r str) -> Option<&'r str> {
        rel.strip_prefix(self.under.as_str())
            .filter(|r| !r.is_empty())
    }
}

/// Every rule's part of a shared walk.
struct Shared<'a> {
    lanes: Vec<SharedLane<'a>>,
    held: usize,
}

impl Collect for Shared<'_> {
    fn follows(&self, folder: &str) -> bool {
        // Under a rule's sub-path, or above one.
        self.lanes
            .iter()
            .any(|l| folder.starts_with(l.under.as_str()) || l.under.starts_with(folder))
    }

    fn wants_names(&self) -> bool {
        self.lanes.iter().any(|l| l.names.is_some())
    }

    fn found(&mut self, rel: &str) -> bool {
        let mut wanted = false;
        for lane in &mut self.lanes {
            let Some(own) = lane.own(rel) else { continue };
            match lane.classify.by_path(own) {
                Some(state) => {
                    lane.entries.push(VaultEntry {
                        rel_path: own.into(),
                        state,
                    });
                    self.held += 1;
                }
                None => wanted = true,
            }
        }
        wanted
    }

    fn metadata(&mut self, rel: &str, meta: &SecretMetadata) {
        for lane in &mut self.lanes {
            let Some(own) = lane.own(rel) else { continue };
            if lane.classify.by_path(own).is_none() {
                lane.entries.push(VaultEntry {
                    rel_path: own.into(),
                    state: lane.classify.state(meta),
                });
                self.held += 1;
            }
        }
    }

    fn unreadable(&mut self, rel: &str, kind: &'static str, message: &str) {
        for lane in &mut self.lanes {
            if let Some(own) = lane.own(rel) {
                // A secret the rule's patterns leave out holds its excluded entry already.
                if !own.ends_with('/') && lane.classify.by_path(own).is_some() {
                    continue;
                }
                lane.entries.push(VaultEntry {
                    rel_path: own.into(),
                    state: EntryState::Unreadable {
                        kind,
                        message: message.to_owned(),
                    },
                });
                self.held += 1;
            } else if lane.under.starts_with(rel) && rel.ends_with('/') {
                // A folder at or above the rule's sub-path: nothing of the rule is known.
                lane.failed.get_or_insert_with(|| LaneFailure {
                    kind,
                    message: message.to_owned(),
                    above: rel != lane.under,
                });
            }
        }
    }

    fn named(&mut self, found: Vec<String>) {
        for lane in &mut self.lanes {
            let Some(tx) = lane.names.take() else {
                continue;
            };
            let mut own: Vec<String> = found
                .iter()
                .filter_map(|rel| lane.own(rel).map(str::to_owned))
                .collect();
            own.extend(
                lane.entries
                    .iter()
                    .filter(|e| matches!(e.state, EntryState::Unreadable { .. }))
                    .map(|e| e.rel_path.to_string()),
            );
            let _ = tx.send(own);
        }
    }

    fn held(&self) -> usize {
        self.held
    }
}

/// Walks `base` into `collect`; it and whether the bulk metadata listing served.
async fn walk_tree<C: Collect>(
    vault: &VaultClient,
    mount: &str,
    base: &str,
    concurrency: usize,
    mut collect: C,
    progress: &crate::progress::Progress,
) -> Result<(C, bool), VaultError> {
    let root = if base.is_empty() {
        String::new()
    } else {
        format!("{base}/")
    };
    let bulk = AtomicBool::new(true);
    let bulk = &bulk;
    // Folders first: once none is left to list, every name is known.
    let mut pending_lists = vec![root.clone()];
    let mut pending_metas: Vec<String> = Vec::new();
    let mut lists_running = 0usize;
    let mut found: Vec<String> = Vec::new();
    // Secrets listed: held once each however many rules hold them.
    let mut listed = 0usize;
    let mut named = false;
    let mut running = FuturesUnordered::new();
    let rel = |full: &str| full.strip_prefix(&root).unwrap_or(full).to_owned();

    loop {
        while running.len() < concurrency.max(1) {
            let task = match pending_lists.pop() {
                Some(folder) => {
                    lists_running += 1;
                    Task::List(folder)
                }
                None => match pending_metas.pop() {
                    Some(path) => Task::Meta(path),
                    None => break,
                },
            };
            running.push(async move {
                match task {
                    Task::List(folder) => {
                        let listed = async {
                            if bulk.load(Ordering::Relaxed) {
                                if let Some(listing) = vault.list_detailed(mount, &folder).await? {
                                    return Ok(listing);
                                }
                                tracing::debug!(
                                    "no bulk metadata listing; reading metadata per secret"
                                );
                                bulk.store(false, Ordering::Relaxed);
                            }
                            vault.list(mount, &folder).await
                        }
                        .await;
                        match listed {
                            Ok(listing) => Ok(Done::Listed(folder, listing)),
                            Err(e) => Err((folder, e)),
                        }
                    }
                    Task::Meta(path) => {
                        let meta = vault.read_metadata(mount, &path).await;
                        Ok(Done::Meta(path, meta))
                    }
                }
            });
        }
        let Some(done) = running.next().await else {
            break;
        };
        if matches!(done, Ok(Done::Listed(..)) | Err(_)) {
            lists_running -= 1;
        }
        let before = collect.held();
        let done = match done {
            Ok(done) => Some(done),
            // Nothing is known without the top listing.
            Err((folder, e)) if folder == root => return Err(e),
            // A folder that cannot be listed (a policy that denies it, say) is a failure of its
            // own; the rest is replicated, and nothing under it counts as deleted.
            Err((folder, e)) => {
                tracing::warn!(folder = %folder, error = %e, "cannot list a folder");
                collect.unreadable(
                    &rel(&folder),
                    e.kind(),
                    &format!("cannot list the folder {mount}/{folder}: {e}"),
                );
                None
            }
        };
        match done {
            None => {}
            Some(Done::Listed(folder, mut listing)) => {
                listed += listing.keys.len();
                if listed > MAX_ENTRIES {
                    return Err(VaultError::Decode {
                        op: format!("LIST {mount}/metadata/{folder}"),
                        detail: format!(
                            "more than {MAX_ENTRIES} secrets under the path: refusing to hold more (split the sync with --path)"
                        ),
                    });
                }
                for key in listing.keys {
                    let full = format!("{folder}{key}");
                    if let Err(problem) = check_key(&key) {
                        // Never followed, written or deleted: a failure of its own.
                        collect.unreadable(
                            &rel(&full),
                            "vault_bad_response",
                            &format!("the listing of {mount}/{folder} {problem}"),
                        );
                        continue;
                    }
                    if key.ends_with('/') {
                        if full.matches('/').count() > MAX_DEPTH {
                            return Err(VaultError::Decode {
                                op: format!("LIST {mount}/metadata/{folder}"),
                                detail: format!(
                                    "folders nested deeper than {MAX_DEPTH} levels: refusing to go on"
                                ),
                            });
                        }
                        if collect.follows(&rel(&full)) {
                            pending_lists.push(full);
                        }
                        continue;
                    }
                    let rel_path = rel(&full);
                    // Named even when left out, for a replica it had.
                    if collect.wants_names() {
                        found.push(rel_path.clone());
                    }
                    if !collect.found(&rel_path) {
                        continue;
                    }
                    if let Some(meta) = listing.metadata.remove(&key) {
                        collect.metadata(&rel_path, &meta);
                    } else {
                        pending_metas.push(full);
                    }
                }
            }
            Some(Done::Meta(path, Ok(Some(meta)))) => collect.metadata(&rel(&path), &meta),
            // Removed between the listing and the read.
            Some(Done::Meta(_, Ok(None))) => {}
            Some(Done::Meta(path, Err(e))) => {
                collect.unreadable(&rel(&path), e.kind(), &e.to_string());
            }
        }
        progress.add_found(collect.held().saturating_sub(before) as u64);
        if pending_lists.is_empty() && lists_running == 0 && !named {
            named = true;
            collect.named(std::mem::take(&mut found));
        }
    }
    Ok((collect, bulk.load(Ordering::Relaxed)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vault::VersionMetadata;
    use std::collections::BTreeMap;

    fn meta(current: u64, deletion_time: &str, destroyed: bool) -> SecretMetadata {
        SecretMetadata {
            current_version: current,
            versions: BTreeMap::from([(
                current.to_string(),
                VersionMetadata {
                    created_time: "2026-11-01T10:00:00.5Z".into(),
                    deletion_time: deletion_time.into(),
                    destroyed,
                },
            )]),
            custom_metadata: None,
        }
    }

    #[test]
    fn listed_keys_must_be_one_segment() {
        for ok in ["a", "a/", "db-1", "..a", "a.b/", ".hidden"] {
            assert!(check_key(ok).is_ok(), "{ok}");
        }
        for bad in ["", "/", ".", "./", "..", "../", "a/b", "a/b/", "/a"] {
            assert!(
                check_key(bad).unwrap_err().contains("not one path segment"),
                "{bad}"
            );
        }
    }

    #[test]
    fn earlier_versions_are_remembered_newest_first_and_capped() {
        let now = DateTime::from_str("2026-11-28T12:00:00Z", Format::DateTime).unwrap();
        let mut m = meta(20, "", false);
        for n in 1..20 {
            m.versions.insert(
                n.to_string(),
                VersionMetadata {
                    created_time: format!("t{n}"),
                    deletion_time: String::new(),
                    destroyed: n == 19,
                },
            );
        }
        let EntryState::Live { earlier, .. } = entry_state(&m, now, LatestDeleted::Fallback) else {
            panic!("live")
        };
        assert_eq!(earlier.len(), EARLIER_VERSIONS);
        assert_eq!(
            earlier[0],
            (19, Stamp::new("t19")),
            "a destroyed one still counts"
        );
        assert_eq!(earlier[EARLIER_VERSIONS - 1].0, 4);
    }

    fn live(version: u64, latest: u64, created: &str, earlier: &[(u64, &str)]) -> EntryState {
        EntryState::Live {
            version,
            created_time: created.into(),
            latest,
            earlier: earlier.iter().map(|(n, t)| (*n, Stamp::new(t))).collect(),
            custom: Box::new([]),
        }
    }

    #[test]
    fn latest_version_decides_the_state() {
        let now = DateTime::from_str("2026-11-28T12:00:00Z", Format::DateTime).unwrap();
        let t = "2026-11-01T10:00:00.5Z";
        let cases = [
            (meta(3, "", false), live(3, 3, t, &[])),
            (
                meta(3, "2026-11-20T00:00:00.123456789Z", false),
                EntryState::Deleted,
            ),
            (meta(3, "2027-01-01T00:00:00Z", false), live(3, 3, t, &[])),
            (meta(3, "", true), EntryState::Deleted),
            (
                meta(3, "yesterday", false),
                EntryState::Unreadable {
                    kind: "vault_bad_response",
                    message: "the deletion_time \"yesterday\" of a version is not a time: neither written nor deleted".into(),
                },
            ),
            (meta(0, "", false), EntryState::Deleted),
            (
                SecretMetadata {
                    current_version: 2,
                    versions: BTreeMap::new(),
                    custom_metadata: None,
                },
                EntryState::Deleted,
            ),
        ];
        for (m, want) in cases {
            for policy in [LatestDeleted::Fallback, LatestDeleted::Delete] {
                assert_eq!(entry_state(&m, now, policy), want, "{m:?} {policy:?}");
            }
        }
    }

    #[test]
    fn a_deleted_latest_falls_back_to_the_newest_live_version_unless_the_rule_deletes() {
        let now = DateTime::from_str("2026-11-28T12:00:00Z", Format::DateTime).unwrap();
        let version = |t: &str, deleted: &str, destroyed: bool| VersionMetadata {
            created_time: t.into(),
            deletion_time: deleted.into(),
            destroyed,
        };
        let m = SecretMetadata {
            current_version: 4,
            versions: BTreeMap::from([
                ("1".into(), version("t1", "", false)),
                ("2".into(), version("t2", "", false)),
                ("3".into(), version("t3", "", true)),
                ("4".into(), version("t4", "2026-11-27T00:00:00Z", false)),
            ]),
            custom_metadata: None,
        };
        assert_eq!(
            entry_state(&m, now, LatestDeleted::Fallback),
            live(2, 4, "t2", &[(1, "t1")]),
            "3 is destroyed, 4 soft-deleted: 2 is the newest live"
        );
        assert_eq!(
            entry_state(&m, now, LatestDeleted::Delete),
            EntryState::Deleted
        );
        // Every version gone: deleted either way.
        let mut all_gone = m.clone();
        for v in all_gone.versions.values_mut() {
            v.destroyed = true;
        }
        assert_eq!(
            entry_state(&all_gone, now, LatestDeleted::Fallback),
            EntryState::Deleted
        );
    }

    #[test]
    fn the_selection_classifies_from_the_path_then_the_metadata() {
        let now = DateTime::from_str("2026-11-28T12:00:00Z", Format::DateTime).unwrap();
        let selection = Selection::new(vec!["db/*".into()], vec!["*/tmp/*".into()], false).unwrap();
        let c = Classify {
            now,
            latest_deleted: LatestDeleted::Fallback,
            selection: &selection,
        };
        let with_sync = |v: &str| {
            let mut m = meta(1, "", false);
            m.custom_metadata = Some(BTreeMap::from([(SYNC_KEY.to_owned(), v.to_owned())]));
            m
        };
        let plain = meta(1, "", false);
        assert_eq!(
            c.by_path("app/x"),
            Some(EntryState::Excluded(Excluded::Path))
        );
        assert_eq!(
            c.by_path("db/tmp/x"),
            Some(EntryState::Excluded(Excluded::Path))
        );
        assert_eq!(c.by_path("db/x"), None);
        assert!(matches!(
            c.path_state("db/x", &plain),
            EntryState::Live { .. }
        ));
        assert_eq!(
            c.path_state("app/x", &plain),
            EntryState::Excluded(Excluded::Path)
        );
        assert_eq!(
            c.state(&with_sync("false")),
            EntryState::Excluded(Excluded::OptedOut)
        );
        assert!(matches!(
            c.state(&with_sync("true")),
            EntryState::Live { .. }
        ));
        assert!(matches!(
            c.state(&with_sync("yes")),
            EntryState::Unreadable {
                kind: "invalid_sync_metadata",
                ..
            }
        ));
        // A deleted secret stays deleted, whatever its metadata says.
        let mut gone = with_sync("yes");
        gone.versions.values_mut().for_each(|v| v.destroyed = true);
        assert_eq!(c.state(&gone), EntryState::Deleted);
        // Opt-in: only `sync = "true"` is selected.
        let opt_in = Selection::new(vec![], vec![], true).unwrap();
        let c = Classify {
            selection: &opt_in,
            ..c
        };
        assert_eq!(c.state(&plain), EntryState::Excluded(Excluded::NotOptedIn));
        assert!(matches!(
            c.state(&with_sync("TRUE")),
            EntryState::Live { .. }
        ));
    }

    #[test]
    fn a_shared_walk_follows_only_the_rules_folders_and_splits_what_it_finds() {
        assert_eq!(common_base(["a/b", "a/c"].into_iter()), "a");
        assert_eq!(common_base(["a/b", "a/b/c"].into_iter()), "a/b");
        assert_eq!(common_base(["pay", "payments"].into_iter()), "");
        assert_eq!(common_base(["", "a"].into_iter()), "");

        let (all, narrow) = (
            Selection::new(vec![], vec!["*/scratch/*".into()], false).unwrap(),
            Selection::default(),
        );
        let classify = |selection| Classify {
            now: DateTime::from_secs(1_800_000_000),
            latest_deleted: LatestDeleted::Fallback,
            selection,
        };
        // Walked at the mount: one rule takes all of it, one only pay/.
        let mut shared = Shared {
            lanes: vec![
                SharedLane {
                    under: String::new(),
                    classify: classify(&all),
                    names: None,
                    entries: Vec::new(),
                    failed: None,
                },
                SharedLane {
                    under: "pay/".into(),
                    classify: classify(&narrow),
                    names: None,
                    entries: Vec::new(),
                    failed: None,
                },
            ],
            held: 0,
        };
        assert!(shared.follows("web/") && shared.follows("pay/x/"));
        // Excluded by one rule, selected by the other: its metadata is read once, for it.
        assert!(shared.found("pay/scratch/t"));
        shared.metadata("pay/scratch/t", &meta(1, "", false));
        assert!(matches!(
            shared.lanes[0].entries[0].state,
            EntryState::Excluded(_)
        ));
        assert_eq!(&*shared.lanes[1].entries[0].rel_path, "scratch/t");
        assert!(matches!(
            shared.lanes[1].entries[0].state,
            EntryState::Live { .. }
        ));
        // A metadata read that failed: unreadable for the rule that selects the path, nothing
        // more for the one whose patterns leave it out (its excluded entry stands).
        assert!(shared.found("pay/scratch/u"));
        shared.unreadable("pay/scratch/u", "vault_error", "HTTP 500");
        assert_eq!(
            shared.lanes[0].entries.len(),
            2,
            "{:?}",
            shared.lanes[0].entries
        );
        assert!(matches!(
            shared.lanes[1].entries[1].state,
            EntryState::Unreadable { .. }
        ));
        // A folder that cannot be listed: a blind folder of the rule it is inside, and the
        // whole failure of the rule it is above.
        shared.unreadable("pay/", "vault_permission_denied", "denied");
        assert_eq!(&*shared.lanes[0].entries[2].rel_path, "pay/");
        assert_eq!(
            shared.lanes[1].failed.as_ref().map(|f| (f.kind, f.above)),
            Some(("vault_permission_denied", false)),
            "the rule's own folder"
        );
        assert_eq!(shared.held(), 5);

        // Walked at pay/ for rules on pay/a and pay/b: nothing else is listed.
        let only = Shared {
            lanes: ["a/", "b/"]
                .map(|under| SharedLane {
                    under: under.into(),
                    classify: classify(&narrow),
                    names: None,
                    entries: Vec::new(),
                    failed: None,
                })
                .into(),
            held: 0,
        };
        assert!(only.follows("a/") && only.follows("b/deep/"));
        assert!(!only.follows("c/"));
    }
}
