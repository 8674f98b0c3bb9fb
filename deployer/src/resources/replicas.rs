//! The replicated secrets `<prefix>/*`: the replicator's output, the user's data, not a piece of
//! the stack. `destroy` keeps them unless asked; asked, it schedules for deletion (with the
//! configured recovery window) exactly this stack's replicas (the owner tag, and this stack's
//! mount, path and prefix), and leaves every other secret under the prefix alone: another
//! tool's, another stack's or another sync's under a nested prefix, and a replica too old to
//! say whose it is.

use aws_sdk_secretsmanager::types::{Filter, FilterNameStringType};

use super::{Ctx, DeployError};
use crate::change::{Action, Change};
use crate::clients::Clients;
use crate::desired::{ReplicasSpec, SyncReplicasSpec};
use contract::tags::{MANAGED_BY, MANAGED_BY_VALUE};

const KIND: &str = "replicated secrets";

/// One DeleteSecret every 50 ms: 20/s, well under the 50/s that Secrets Manager's write APIs
/// share per region (the replicator of another stack may be writing at the same time).
const DELETE_EVERY: std::time::Duration = std::time::Duration::from_millis(50);

/// The secrets under `<prefix>/`, scheduled deletions left out (the listing's default).
#[derive(Debug, Default)]
struct UnderPrefix {
    /// (ARN, name) of this stack's replicas.
    ours: Vec<(String, String)>,
    /// ARNs of this tool's replicas of the same mount written before the `replica-prefix` tag
    /// existed: this stack's, or a nested sync's; kept (the replicator tags them on its next
    /// run).
    unproven: Vec<String>,
    /// Another sync's replicas (another stack, mount or prefix).
    other_syncs: usize,
    /// Secrets this tool did not write.
    foreign: usize,
    /// ARNs of the other syncs' and foreign secrets encrypted with the stack's key (one
    /// adopted from this stack, say): whoever's they are, the key must outlive them.
    others_on_the_key: Vec<String>,
}

/// Whether a secret's `KmsKeyId` (as given when it was made: an ARN, an id or an alias) names
/// the stack's key.
fn names_key(given: &str, key: &super::key::KeyState, alias: &str) -> bool {
    given == key.arn
        || given == key.key_id
        || given == alias
        || given.ends_with(&format!(":{alias}"))
}

/// The secrets under `sync`'s prefix, sorted by whose they are; with `key` (the stack's key as
/// found, and its alias), those of others encrypted with it too.
async fn list_under_prefix(
    c: &Clients,
    sync: &SyncReplicasSpec,
    key: Option<(&super::key::KeyState, &str)>,
) -> Result<UnderPrefix, DeployError> {
    let prefix = format!("{}/", sync.prefix);
    let name = format!("{prefix}*");
    let mut pages =
        c.sm.list_secrets()
            .filters(
                Filter::builder()
                    .key(FilterNameStringType::Name)
                    .values(&prefix)
                    .build(),
            )
            .into_paginator()
            .send();
    let mut found = UnderPrefix::default();
    let source = sync.source();
    while let Some(page) = pages.next().await {
        let page = page.ctx("ListSecrets", &name)?;
        for s in page.secret_list() {
            let (Some(arn), Some(n)) = (s.arn(), s.name()) else {
                continue;
            };
            if !n.starts_with(&prefix) {
                continue;
            }
            let tag = |k: &str| {
                s.tags()
                    .iter()
                    .find(|t| t.key() == Some(k))
                    .and_then(|t| t.value())
            };
            let on_the_key = key
                .is_some_and(|(k, alias)| s.kms_key_id().is_some_and(|g| names_key(g, k, alias)));
            match source.wrote(tag) {
                Some(true) => found.ours.push((arn.to_owned(), n.to_owned())),
                Some(false) => found.unproven.push(arn.to_owned()),
                None => {
                    if contract::is_replica(tag) {
                        found.other_syncs += 1;
                    } else {
                        found.foreign += 1;
                    }
                    if on_the_key {
                        found.others_on_the_key.push(arn.to_owned());
                    }
                }
            }
        }
    }
    Ok(found)
}

/// Secrets Manager's own verdict on the replicas' resource policy (`resource_policy`), as it
/// would be put on a replica: `Some(what is wrong)` when it refuses it. Nothing is changed.
pub(crate) async fn check_resource_policy(
    c: &Clients,
    syncs: &[SyncReplicasSpec],
) -> Result<Option<String>, DeployError> {
    for sync in syncs {
        if let Some(problem) = check_sync_resource_policy(c, sync).await? {
            return Ok(Some(match &sync.rule {
                Some(name) => format!("rule {name:?}: {problem}"),
                None => problem,
            }));
        }
    }
    Ok(None)
}

/// [`check_resource_policy`] for one sync.
async fn check_sync_resource_policy(
    c: &Clients,
    sync: &SyncReplicasSpec,
) -> Result<Option<String>, DeployError> {
    let Some(policy) = &sync.resource_policy else {
        return Ok(None);
    };
    // With the replicas in another account, the check (whether the policy would lock its
    // caller out, among others) would judge this account's operator: left to AWS at the put,
    // with BlockPublicPolicy.
    if sync.in_other_account {
        return Ok(None);
    }
    let example = &sync.example_arn;
    let verdict =
        c.sm.validate_resource_policy()
            .resource_policy(policy.render(example))
            .send()
            .await
            .ctx("ValidateResourcePolicy", example)?;
    if verdict.policy_validation_passed() {
        return Ok(None);
    }
    let problems: Vec<String> = verdict
        .validation_errors()
        .iter()
        .map(|e| {
            format!(
                "{}: {}",
                e.check_name().unwrap_or("check"),
                e.error_message().unwrap_or("refused")
            )
        })
        .collect();
    Ok(Some(if problems.is_empty() {
        "Secrets Manager refuses the policy (ValidateResourcePolicy), without saying why".into()
    } else {
        format!(
            "Secrets Manager refuses the policy (ValidateResourcePolicy): {}",
            problems.join("; ")
        )
    }))
}

/// Removes every replica region of the secret `arn` (`name` for messages).
async fn remove_replica_regions(c: &Clients, arn: &str, name: &str) -> Result<(), DeployError> {
    let seen =
        c.sm.describe_secret()
            .secret_id(arn)
            .send()
            .await
            .ctx("DescribeSecret", name)?;
    let regions: Vec<String> = seen
        .replication_status()
        .iter()
        .filter_map(|r| r.region().map(str::to_owned))
        .collect();
    if !regions.is_empty() {
        c.sm.remove_regions_from_replication()
            .secret_id(arn)
            .set_remove_replica_regions(Some(regions))
            .send()
            .await
            .ctx("RemoveRegionsFromReplication", name)?;
    }
    Ok(())
}

/// How many live secrets in this account under each sync's `<prefix>/` may be encrypted with
/// the stack's key: this stack's replicas, and any other secret there made with the key
/// (another stack took over one of its replicas, say), so `destroy` keeps the key while any is
/// left. A secret under two rules' (nested) prefixes counts once.
pub(crate) async fn count_live(c: &Clients, replicas: &ReplicasSpec) -> Result<usize, DeployError> {
    let key = super::key::observe(c, &replicas.key).await?;
    count_live_with(c, replicas, key.as_ref()).await
}

/// [`count_live`] with the stack's key already observed.
async fn count_live_with(
    c: &Clients,
    replicas: &ReplicasSpec,
    key: Option<&super::key::KeyState>,
) -> Result<usize, DeployError> {
    let mut live = std::collections::BTreeSet::new();
    let key = key.map(|k| (k, replicas.key.alias.as_str()));
    for sync in &replicas.syncs {
        let found = list_under_prefix(c, sync, key).await?;
        live.extend(found.ours.into_iter().map(|(arn, _)| arn));
        live.extend(found.unproven);
        live.extend(found.others_on_the_key);
    }
    Ok(live.len())
}

/// How many live secrets in this account are encrypted with the stack's key, wherever they
/// are: [`count_live`]'s, and every other secret whose key names it (a rule removed from the
/// configuration, or a prefix changed, leaves replicas no sync's prefix covers). `destroy`
/// keeps the key while any is left. One listing of the whole account.
pub(crate) async fn count_on_the_key(
    c: &Clients,
    replicas: &ReplicasSpec,
) -> Result<usize, DeployError> {
    let key = super::key::observe(c, &replicas.key).await?;
    let under_prefixes = count_live_with(c, replicas, key.as_ref()).await?;
    let Some(key) = key else {
        return Ok(under_prefixes);
    };
    let alias = &replicas.key.alias;
    let prefixes: Vec<String> = (replicas.syncs.iter())
        .map(|s| format!("{}/", s.prefix))
        .collect();
    let mut elsewhere = 0;
    let mut pages = c.sm.list_secrets().into_paginator().send();
    while let Some(page) = pages.next().await {
        let page = page.ctx("ListSecrets", "*")?;
        for s in page.secret_list() {
            let (Some(name), Some(given)) = (s.name(), s.kms_key_id()) else {
                continue;
            };
            // Those under a sync's prefix are counted already.
            if names_key(given, &key, alias) && !prefixes.iter().any(|p| name.starts_with(p)) {
                elsewhere += 1;
            }
        }
    }
    Ok(under_prefixes + elsewhere)
}

/// This stack's replicas in this account under each sync's prefix, in the order of
/// `syncs` (a rule in another account: what it left here before).
pub(crate) async fn count_by_sync(
    c: &Clients,
    syncs: &[SyncReplicasSpec],
) -> Result<Vec<usize>, DeployError> {
    let mut counts = Vec::new();
    for sync in syncs {
        let found = list_under_prefix(c, sync, None).await?;
        counts.push(found.ours.len() + found.unproven.len());
    }
    Ok(counts)
}

/// Schedules for deletion exactly this stack's replicas in this account, sync by sync (each
/// rule's under its prefix): one change each.
pub(crate) async fn schedule_deletion(
    c: &Clients,
    syncs: &[SyncReplicasSpec],
) -> Result<Vec<Change>, DeployError> {
    let mut changes = Vec::new();
    for sync in syncs {
        changes.push(schedule_sync_deletion(c, sync).await?);
    }
    Ok(changes)
}

/// Schedules for deletion exactly this sync's replicas under `<prefix>/`, where `c` reaches
/// (the stack's account, or with `deployer target destroy` the replicas' account and the
/// rule's region); counts, and keeps, every other secret there.
pub(crate) async fn schedule_sync_deletion(
    c: &Clients,
    sync: &SyncReplicasSpec,
) -> Result<Change, DeployError> {
    let name = match &sync.rule {
        Some(rule) => format!("{}/* (rule {rule})", sync.prefix),
        None => format!("{}/*", sync.prefix),
    };
    let UnderPrefix {
        ours,
        unproven,
        other_syncs,
        foreign,
        ..
    } = list_under_prefix(c, sync, None).await?;
    let days = sync.recovery_window_days;
    let deleted = ours.len();
    let mut pace = tokio::time::interval(DELETE_EVERY);
    for (arn, n) in ours {
        pace.tick().await;
        let delete = || {
            super::delete(
                "DeleteSecret",
                &n,
                c.sm.delete_secret()
                    .secret_id(&arn)
                    .recovery_window_in_days(days)
                    .send(),
            )
        };
        match delete().await {
            // AWS refuses to delete a secret that still has replica regions (the replicator's
            // `replica_regions`, or someone else's): they go first.
            Err(e) if e.message.contains("replica") => {
                remove_replica_regions(c, &arn, &n).await?;
                delete().await?;
            }
            other => other?,
        }
    }
    let mut note = format!(
        "{deleted} managed by the replicator scheduled for deletion in {days} days (restore with `aws secretsmanager restore-secret`)"
    );
    if other_syncs > 0 {
        note.push_str(&format!(
            "; {other_syncs} of another sync (another stack, mount or prefix) kept"
        ));
    }
    if !unproven.is_empty() {
        note.push_str(&format!(
            "; {} without the {} tag (written by an earlier version: a run of the replicator tags them) kept",
            unproven.len(),
            contract::tags::PREFIX
        ));
    }
    if foreign > 0 {
        note.push_str(&format!(
            "; {foreign} without the {MANAGED_BY}={MANAGED_BY_VALUE} tag kept"
        ));
    }
    let action = if deleted > 0 {
        Action::Delete
    } else {
        Action::Absent
    };
    Ok(Change::new(KIND, name, action).with_note(note))
}
