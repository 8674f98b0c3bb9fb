//! The Vault side of a sync: walks the KV v2 tree under the configured path with bounded
//! concurrency, reading metadata only (in bulk where the server offers it). Network I/O through
//! [`VaultClient`]; the classification of one secret's state is pure.

use std::sync::atomic::{AtomicBool, Ordering};

use aws_smithy_types::DateTime;
use aws_smithy_types::date_time::Format;
use futures::stream::{FuturesUnordered, StreamExt};

use crate::vault::{SecretMetadata, VaultClient, VaultError};

/// One secret found in Vault.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VaultEntry {
    /// Path relative to the synced sub-path; the AWS name is `<prefix>/<rel_path>`.
    pub rel_path: String,
    pub state: EntryState,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EntryState {
    /// The latest version is readable.
    Live { version: u64, created_time: String },
    /// The latest version is soft-deleted or destroyed (or there is no version).
    Deleted,
    /// Its metadata could not be read; it is neither written nor deleted this run.
    Unreadable { kind: &'static str, message: String },
}

/// Result of a walk.
#[derive(Debug, Default)]
pub struct Inventory {
    pub entries: Vec<VaultEntry>,
    /// Whether the server's bulk `detailed-metadata` listing was used.
    pub bulk_metadata: bool,
}

/// Classifies a secret from its metadata. `now` decides whether a `deletion_time` has passed
/// (`delete_version_after` sets it in the future).
pub fn entry_state(meta: &SecretMetadata, now: DateTime) -> EntryState {
    let version = meta.current_version;
    let Some(latest) = meta.versions.get(&version.to_string()) else {
        return EntryState::Deleted;
    };
    if version == 0 || latest.destroyed {
        return EntryState::Deleted;
    }
    if !latest.deletion_time.is_empty() {
        match DateTime::from_str(&latest.deletion_time, Format::DateTime) {
            Ok(at) if at > now => {}
            // A deletion time in the past, or one we cannot read: treat as deleted, which
            // never writes, and only deletes under the `delete` policy and the breaker.
            _ => return EntryState::Deleted,
        }
    }
    EntryState::Live {
        version,
        created_time: latest.created_time.clone(),
    }
}

/// Full path inside the mount of a path relative to `base`.
pub fn full_path(base: &str, rel: &str) -> String {
    if base.is_empty() {
        rel.to_owned()
    } else {
        format!("{base}/{rel}")
    }
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
/// fails the walk: an incomplete inventory must never look like deletions.
pub async fn walk(
    vault: &VaultClient,
    mount: &str,
    base: &str,
    concurrency: usize,
    now: DateTime,
    progress: &crate::progress::Progress,
) -> Result<Inventory, VaultError> {
    let root = if base.is_empty() {
        String::new()
    } else {
        format!("{base}/")
    };
    let bulk = AtomicBool::new(true);
    let bulk = &bulk;
    let mut pending = vec![Task::List(root.clone())];
    let mut running = FuturesUnordered::new();
    let mut entries = Vec::new();
    let rel = |full: &str| full.strip_prefix(&root).unwrap_or(full).to_owned();

    loop {
        while running.len() < concurrency.max(1) {
            let Some(task) = pending.pop() else { break };
            running.push(async move {
                match task {
                    Task::List(folder) => {
                        if bulk.load(Ordering::Relaxed) {
                            if let Some(listing) = vault.list_detailed(mount, &folder).await? {
                                return Ok(Done::Listed(folder, listing));
                            }
                            tracing::debug!(
                                "no bulk metadata listing; reading metadata per secret"
                            );
                            bulk.store(false, Ordering::Relaxed);
                        }
                        let listing = vault.list(mount, &folder).await?;
                        Ok::<_, VaultError>(Done::Listed(folder, listing))
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
        let before = entries.len();
        match done? {
            Done::Listed(folder, mut listing) => {
                for key in listing.keys {
                    let full = format!("{folder}{key}");
                    if key.ends_with('/') {
                        pending.push(Task::List(full));
                    } else if let Some(meta) = listing.metadata.remove(&key) {
                        entries.push(VaultEntry {
                            rel_path: rel(&full),
                            state: entry_state(&meta, now),
                        });
                    } else {
                        pending.push(Task::Meta(full));
                    }
                }
            }
            Done::Meta(path, Ok(Some(meta))) => entries.push(VaultEntry {
                rel_path: rel(&path),
                state: entry_state(&meta, now),
            }),
            // Removed between the listing and the read.
            Done::Meta(_, Ok(None)) => {}
            Done::Meta(path, Err(e)) => entries.push(VaultEntry {
                rel_path: rel(&path),
                state: EntryState::Unreadable {
                    kind: e.kind(),
                    message: e.to_string(),
                },
            }),
        }
        progress.add_found((entries.len() - before) as u64);
    }
    entries.sort_by(|a, b| a.rel_path.cmp(&b.rel_path));
    Ok(Inventory {
        entries,
        bulk_metadata: bulk.load(Ordering::Relaxed),
    })
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
        }
    }

    #[test]
    fn latest_version_decides_the_state() {
        let now = DateTime::from_str("2026-11-28T12:00:00Z", Format::DateTime).unwrap();
        let live = EntryState::Live {
            version: 3,
            created_time: "2026-11-01T10:00:00.5Z".into(),
        };
        let cases = [
            (meta(3, "", false), live.clone()),
            (
                meta(3, "2026-11-20T00:00:00.123456789Z", false),
                EntryState::Deleted,
            ),
            (meta(3, "2027-01-01T00:00:00Z", false), live),
            (meta(3, "", true), EntryState::Deleted),
            (meta(0, "", false), EntryState::Deleted),
            (
                SecretMetadata {
                    current_version: 2,
                    versions: BTreeMap::new(),
                },
                EntryState::Deleted,
            ),
        ];
        for (m, want) in cases {
            assert_eq!(entry_state(&m, now), want, "{m:?}");
        }
    }

    #[test]
    fn full_paths_join_the_base() {
        assert_eq!(full_path("", "a/b"), "a/b");
        assert_eq!(full_path("apps", "a/b"), "apps/a/b");
    }
}
