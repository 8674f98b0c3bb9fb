//! The replicated secrets `<prefix>/*`: the replicator's output, the user's data, not a piece of
//! the stack. `destroy` keeps them unless asked; asked, it schedules for deletion (with the
//! configured recovery window) those the replicator manages, and leaves every other secret under
//! the prefix alone.

use aws_sdk_secretsmanager::types::{Filter, FilterNameStringType};

use super::{Ctx, DeployError};
use crate::change::{Action, Change};
use crate::clients::Clients;
use crate::spec::Spec;
use contract::tags::{MANAGED_BY, MANAGED_BY_VALUE};

const KIND: &str = "replicated secrets";

/// One DeleteSecret every 50 ms: 20/s, well under the 50/s that Secrets Manager's write APIs
/// share per region (the replicator of another stack may be writing at the same time).
const DELETE_EVERY: std::time::Duration = std::time::Duration::from_millis(50);

/// The secrets under `<prefix>/`: (ARN, name) of those carrying the replicator's `managed-by`
/// tag, and how many others. Scheduled deletions are left out (the listing's default).
async fn list_under_prefix(
    c: &Clients,
    spec: &Spec,
) -> Result<(Vec<(String, String)>, usize), DeployError> {
    let prefix = format!("{}/", spec.cfg.prefix);
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
    let (mut ours, mut foreign) = (Vec::new(), 0usize);
    while let Some(page) = pages.next().await {
        let page = page.ctx("ListSecrets", &name)?;
        for s in page.secret_list() {
            let (Some(arn), Some(n)) = (s.arn(), s.name()) else {
                continue;
            };
            if !n.starts_with(&prefix) {
                continue;
            }
            let managed = contract::is_replica(|k| {
                s.tags()
                    .iter()
                    .find(|t| t.key() == Some(k))
                    .and_then(|t| t.value())
            });
            if managed {
                ours.push((arn.to_owned(), n.to_owned()));
            } else {
                foreign += 1;
            }
        }
    }
    Ok((ours, foreign))
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

/// How many live secrets under `<prefix>/` the replicator manages: they are encrypted with the
/// stack's key, so `destroy` keeps the key while any is left.
pub async fn count_live(c: &Clients, spec: &Spec) -> Result<usize, DeployError> {
    Ok(list_under_prefix(c, spec).await?.0.len())
}

/// Schedules for deletion every secret under `<prefix>/` that carries the replicator's
/// `managed-by` tag; counts, and keeps, those without it.
pub async fn schedule_deletion(c: &Clients, spec: &Spec) -> Result<Change, DeployError> {
    let name = format!("{}/*", spec.cfg.prefix);
    let (ours, foreign) = list_under_prefix(c, spec).await?;
    let days = spec.cfg.replicator.recovery_window_days;
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
