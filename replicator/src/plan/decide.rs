//! One replica's step, from what AWS shows under its name: create it, update it (and how:
//! a new value, a stage move, or its tags alone), leave it, or refuse (a conflict, a restored
//! Vault that is behind AWS); and what becomes of a replica whose source is gone. Pure.

use aws_smithy_types::DateTime;
use aws_smithy_types::date_time::Format;

use super::ownership::{Ownership, SAMPLE_MESSAGE, ownership};
use super::shape::{Target, meta_changes};
use super::token::{key_token, recorded_token, recorded_version};
use super::{ConflictKind, Guard, InvalidKind, Run, Step, UpdateReason, Write};
use crate::model::{AwsSecret, DeletionPolicy, OnModified, Rule, Stamp};
use contract::tags;

/// What the planner knows of the Vault secret behind a target besides the target's version.
#[derive(Clone, Copy, Debug)]
pub struct VaultSide<'a> {
    /// Vault's own `current_version` (above the target's when the latest is deleted).
    pub latest: u64,
    /// (version, created_time) of earlier versions, newest first.
    pub earlier: &'a [(u64, Stamp)],
}

/// A secret AWS holds under a target's name (whoever's), and the Vault path (relative to the
/// rule's sub-path) it is the replica of when it is the rule's own.
#[derive(Clone, Copy, Debug)]
pub struct Existing<'a> {
    pub secret: &'a AwsSecret,
    pub source: &'a str,
}

/// The step for the replica of `target` (of the Vault secret `rel`), given what AWS holds under
/// its name.
pub fn decide(
    target: Box<Target>,
    rel: &str,
    existing: Option<Existing<'_>>,
    vault: VaultSide<'_>,
    rule: &Rule,
    run: &Run<'_>,
) -> Step {
    let Some(Existing { secret, source }) = existing else {
        return Step::Create { target };
    };
    let restore = secret.pending_deletion;
    let observed = run.regions.get(&*secret.name).map(Vec::as_slice);
    let changes = meta_changes(
        secret,
        &target,
        &rule.replica_regions,
        &rule.metadata_tag_keys,
        observed,
        restore,
        run.drifted_policies.contains(&*secret.name),
    );
    match update_reason(
        &target,
        secret,
        (source, rel),
        changes.is_empty(),
        vault,
        rule,
        run,
    ) {
        Ok(reason) => {
            let write = if secret.is_current(&target.token) {
                Write::None
            } else if secret.has_version(&target.token) {
                Write::Stage
            } else {
                Write::Value
            };
            Step::Update {
                write,
                changes: Box::new(changes),
                arn: secret.arn(),
                reason,
                restore,
                expect_current: secret.current_version_id(),
                target,
            }
        }
        Err(step) => step,
    }
}

/// Why the replica `secret` is updated to `target`, or the step it gets instead (a conflict,
/// a collision, nothing to do).
fn update_reason(
    target: &Target,
    secret: &AwsSecret,
    (source, rel): (&str, &str),
    no_changes: bool,
    vault: VaultSide<'_>,
    rule: &Rule,
    run: &Run<'_>,
) -> Result<UpdateReason, Step> {
    let name = || target.name.clone();
    let restore = secret.pending_deletion;
    let conflict = |kind, message: String| {
        Err(Step::Conflict {
            name: name(),
            kind,
            message,
        })
    };
    let tagged_prefix = match ownership(secret, rule) {
        Ownership::Foreign if restore => {
            return conflict(
                ConflictKind::ScheduledForDeletion,
                "a secret this tool does not own is scheduled for deletion under this name; restore and tag it, or delete it for good".into(),
            );
        }
        Ownership::Foreign => {
            let message = match secret.tags.get(tags::MANAGED_BY) {
                Some(owner) => format!(
                    "owned by another tool ({}={owner}): never written, even when listed in REPLICATOR_ADOPT; remove its {} tag first if this tool is to take it over",
                    tags::MANAGED_BY,
                    tags::MANAGED_BY
                ),
                None => format!(
                    "exists without the {}={} tag; list it in REPLICATOR_ADOPT to take it over",
                    tags::MANAGED_BY,
                    tags::MANAGED_BY_VALUE
                ),
            };
            return conflict(ConflictKind::Foreign, message);
        }
        Ownership::Sample => {
            return conflict(ConflictKind::SampleReplica, SAMPLE_MESSAGE.into());
        }
        Ownership::OtherSource(from) => return conflict(ConflictKind::OtherSource, from),
        Ownership::Adoptable => return Ok(UpdateReason::Adopt),
        Ownership::Ours { tagged_prefix } => tagged_prefix,
    };
    // Under a name template, the replica of another Vault secret may hold the name.
    if source != rel {
        return Err(Step::Invalid {
            message: format!(
                "the replica of Vault path {} already has this name",
                rule.vault_path(source)
            ),
            name: name(),
            vault_path: target.vault_path.clone(),
            kind: InvalidKind::NameCollision,
        });
    }
    let recorded = recorded_token(secret, rule, rel);
    let key = target.key.as_deref();
    // This tool's own write: the version its tags record, or, when a tag write was lost after
    // the value went in, any earlier Vault version's id.
    let ours_current = recorded.as_deref().is_some_and(|r| secret.is_current(r))
        || vault.earlier.iter().any(|(n, created)| {
            secret.is_current(&key_token(
                &rule.mount,
                &target.vault_path,
                key,
                *n,
                &created.text(),
            ))
        });
    // The tags name exactly this Vault version (the token covers version and time).
    let up_to_date = recorded.as_deref() == Some(target.token.as_str());
    if secret.is_current(&target.token) && !up_to_date {
        // The value of this very version is in; only the tags are missing.
        return Ok(UpdateReason::FinishTags);
    }
    // A Vault behind what AWS holds is refused before anything else may write over it.
    if let Some((held, _)) = vault_behind(secret, target, vault) {
        if run.accept_vault_rollback {
            return Ok(UpdateReason::Rollback);
        }
        return conflict(
            ConflictKind::VaultBehind,
            format!(
                "AWS holds Vault version {held}, but Vault's latest is {}, older (a snapshot restore or a DR promotion?): AWS is left as it is; run once with --accept-vault-rollback to replicate Vault's version {} anyway",
                vault.latest, target.version
            ),
        );
    }
    if !ours_current {
        return match rule.on_modified {
            OnModified::Report => conflict(
                ConflictKind::ModifiedOutside,
                "its current version was not written by the replicator; set REPLICATOR_ON_MODIFIED=overwrite to restore Vault's value".into(),
            ),
            OnModified::Overwrite => Ok(UpdateReason::Overwrite),
        };
    }
    // The tags name this version and it is current: only the tags, description or regions may
    // differ. (Tags that name it while an earlier version of the tool's is current: made
    // current again, below.)
    if up_to_date && !restore && secret.is_current(&target.token) {
        return if no_changes {
            Err(Step::Unchanged { name: name() })
        } else if !tagged_prefix {
            // Up to date but written before the prefix tag: the tags only.
            Ok(UpdateReason::FinishTags)
        } else {
            // Tags, description or regions changed in Vault's metadata, the configuration or
            // AWS: applied without reading the value.
            Ok(UpdateReason::Metadata)
        };
    }
    if target.version < vault.latest {
        return Ok(UpdateReason::LatestDeleted);
    }
    Ok(UpdateReason::NewVersion)
}

/// `Some((version AWS holds, its creation time))` when the replica holds a later version of the
/// same Vault secret than Vault's latest: Vault was put back (a snapshot restore, a DR
/// promotion). A path deleted and written again starts its versions anew, later than anything
/// AWS holds of the old one: not behind.
pub fn vault_behind<'s>(
    secret: &'s AwsSecret,
    target: &Target,
    vault: VaultSide<'_>,
) -> Option<(u64, &'s str)> {
    let (held, held_created) = recorded_version(secret)?;
    let newer_in_vault = match (
        DateTime::from_str(&target.created_time, Format::DateTime),
        DateTime::from_str(held_created, Format::DateTime),
    ) {
        (Ok(vault_time), Ok(aws_time)) => vault_time > aws_time,
        // Unreadable times: refused, as a rollback would be.
        _ => false,
    };
    (held > vault.latest && !newer_in_vault).then_some((held, held_created))
}

/// The step for a replica whose source is gone (`existing`: what AWS holds under `name`), or
/// whose name is stale: `why` says why it is kept under the `keep` policy.
pub fn gone_from_vault(
    name: String,
    existing: Option<&AwsSecret>,
    rule: &Rule,
    guard: Guard,
    why: &str,
) -> Step {
    let Some(secret) = existing else {
        return Step::Skip { name };
    };
    if secret.pending_deletion || !matches!(ownership(secret, rule), Ownership::Ours { .. }) {
        return Step::Skip { name };
    }
    match rule.deletion_policy {
        DeletionPolicy::Keep => Step::Keep {
            name,
            why: format!("{why}; kept by deletion policy keep"),
            warn: false,
        },
        DeletionPolicy::Delete => Step::Delete {
            name,
            arn: secret.arn(),
            guard,
            expect_current: secret.current_version_id(),
        },
    }
}
