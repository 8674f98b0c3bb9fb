//! Performs a plan: reads each needed value at the planned version, writes it, tags it, deletes
//! what the plan deletes. Bounded concurrency; one secret's failure never stops the others.
//! Network I/O through the Vault and AWS adapters.

use std::sync::atomic::{AtomicUsize, Ordering};

use futures::stream::{self, StreamExt};

use crate::aws::{AwsError, AwsErrorKind, NewSecret, SecretsManager, failed_regions};
use crate::config::Settings;
use crate::plan::{ExpandSource, Step, Target, decide, gone_from_vault};
use crate::report::{Problem, Report};
use crate::shape::MetaChanges;
use crate::vault::{VaultClient, VersionRead};
use contract::secret::SecretString;
use contract::tags;

/// AWS limit on a secret value.
pub const MAX_VALUE_BYTES: usize = 65_536;

enum Outcome {
    Created,
    Updated,
    Unchanged,
    Deleted,
    /// The planned Vault version vanished before it was read; the next run sees the deletion.
    Skipped,
    /// Kept although its source is gone (deletion policy `keep`).
    Kept,
    Conflict(Problem),
    Failed(Problem),
    /// Not started: the run's deadline had come. The next run does it.
    Deferred,
    /// Worth a look, done all the same (a key's name like an ARN suffix); counts nothing.
    Warning(Problem),
}

struct Ctx<'a> {
    vault: &'a VaultClient,
    sm: &'a SecretsManager,
    settings: &'a Settings,
    /// Deletions the breaker still allows (replicas of keys removed in Vault).
    delete_budget: AtomicUsize,
    /// Deletions of such replicas the breaker refused.
    refused: AtomicUsize,
}

fn too_large(name: &str, version: u64, len: usize) -> Problem {
    Problem::new(
        name,
        "value_too_large",
        format!(
            "version {version} is {len} bytes, over the Secrets Manager limit of {MAX_VALUE_BYTES}"
        ),
    )
}

impl Ctx<'_> {
    /// Reads the value of exactly the planned version and checks its size.
    async fn value(&self, target: &Target) -> Result<Option<SecretString>, Problem> {
        let read = self
            .vault
            .read_version(&self.settings.mount, &target.vault_path, target.version)
            .await
            .map_err(|e| Problem::new(&target.name, e.kind(), e.to_string()))?;
        match read {
            VersionRead::Gone => Ok(None),
            VersionRead::Value(v) if v.len() > MAX_VALUE_BYTES => {
                Err(too_large(&target.name, target.version, v.len()))
            }
            VersionRead::Value(v) => Ok(Some(v)),
        }
    }

    /// The value to write: `known` (read by the caller already), or the planned version read
    /// now; `None` when that version vanished.
    async fn value_or(
        &self,
        target: &Target,
        known: Option<SecretString>,
    ) -> Result<Option<SecretString>, Problem> {
        match known {
            Some(v) => Ok(Some(v)),
            None => self.value(target).await,
        }
    }

    /// Creates the replica with `known`, or the value read now.
    async fn create(
        &self,
        target: &Target,
        known: Option<SecretString>,
    ) -> Result<Outcome, Problem> {
        let Some(value) = self.value_or(target, known).await? else {
            return Ok(Outcome::Skipped);
        };
        let value = &value;
        let aws_problem = failure_of(&target.name);
        let shape = NewSecret {
            kms_key_id: self.settings.kms_key_id.as_deref(),
            description: &target.description,
            tags: &target.tags,
            regions: &self.settings.replica_regions,
        };
        match self
            .sm
            .create(&target.name, value, &target.token, shape)
            .await
        {
            Ok(statuses) => {
                let Some(failed) = failed_regions(&statuses, &self.settings.replica_regions) else {
                    return Ok(Outcome::Created);
                };
                // Not recorded as replicated, so the next run removes the failed regions and
                // adds them again.
                if let Err(e) = self
                    .sm
                    .untag(&target.name, &[tags::REPLICA_REGIONS.to_owned()])
                    .await
                {
                    tracing::warn!(secret = %target.name, "cannot untag the failed regions: {e}");
                }
                Err(replication_failed(&target.name, "created", &failed))
            }
            // The listing lags behind (it is eventually consistent): look at what is there.
            Err(e) if e.kind == AwsErrorKind::AlreadyExists => {
                let found = self.sm.describe(&target.name).await.map_err(aws_problem)?;
                let ours = self
                    .settings
                    .source()
                    .wrote(|k| found.tags.get(k))
                    .is_some();
                if !ours {
                    return Ok(Outcome::Conflict(Problem::new(
                        &target.name,
                        "foreign",
                        "appeared in AWS since the listing and is not owned by this tool",
                    )));
                }
                // Another Vault secret (or key) of this sync renders to the same name.
                let same = |k| found.tags.get(k) == target.tags.get(k).map(String::as_str);
                if !(same(tags::SOURCE) && same(tags::KEY)) {
                    return Ok(Outcome::Failed(Problem::new(
                        &target.name,
                        "name_collision",
                        format!(
                            "Vault path {}: another Vault secret of this sync is replicated under this name",
                            target.vault_path
                        ),
                    )));
                }
                // Its own secret, scheduled for deletion since the listing: brought back.
                if found.pending_deletion {
                    self.sm.restore(&found.arn).await.map_err(aws_problem)?;
                }
                let changes = crate::shape::meta_changes(
                    &found,
                    &target.tags,
                    &target.description,
                    &self.settings.replica_regions,
                );
                self.write(
                    &found.arn,
                    value,
                    target,
                    found.current_version_id.as_deref(),
                    &changes,
                )
                .await?;
                Ok(Outcome::Updated)
            }
            Err(e) => Err(aws_problem(e)),
        }
    }

    /// Puts the value as the target's version, makes it current, then the rest.
    async fn write(
        &self,
        arn: &str,
        value: &SecretString,
        target: &Target,
        current_version_id: Option<&str>,
        changes: &MetaChanges,
    ) -> Result<(), Problem> {
        let is_current = self
            .sm
            .put(arn, value, &target.token)
            .await
            .map_err(failure_of(&target.name))?;
        // Not current: this very version was written before and someone moved AWSCURRENT off it.
        self.settle(arn, target, is_current, current_version_id, changes)
            .await
    }

    /// With the target's version in AWS: makes it current (a stage move) unless it is, moves the
    /// replica regions, sets the description, removes the tags no longer wanted, and last
    /// writes the tags, which record all of it.
    async fn settle(
        &self,
        arn: &str,
        target: &Target,
        is_current: bool,
        current_version_id: Option<&str>,
        changes: &MetaChanges,
    ) -> Result<(), Problem> {
        let aws_problem = failure_of(&target.name);
        if !is_current {
            self.sm
                .make_current(arn, &target.token, current_version_id)
                .await
                .map_err(aws_problem)?;
        }
        if let Some(desired) = &changes.regions {
            // As AWS holds them now (the listing may be older): the regions, and the tag that
            // says which of them this tool added.
            let (statuses, recorded) = self.sm.replication(arn).await.map_err(aws_problem)?;
            let (remove, add) = crate::shape::region_moves(recorded.as_deref(), &statuses, desired);
            if !remove.is_empty() {
                self.sm
                    .unreplicate(arn, &remove)
                    .await
                    .map_err(aws_problem)?;
            }
            if !add.is_empty() {
                let statuses = self.sm.replicate(arn, &add).await.map_err(aws_problem)?;
                // Not recorded in the tags: the next run tries again.
                if let Some(failed) = failed_regions(&statuses, &add) {
                    return Err(replication_failed(&target.name, "written", &failed));
                }
            }
        }
        if let Some(description) = &changes.description {
            self.sm
                .describe_as(arn, description)
                .await
                .map_err(aws_problem)?;
        }
        if !changes.untag.is_empty() {
            self.sm
                .untag(arn, &changes.untag)
                .await
                .map_err(aws_problem)?;
        }
        if changes.tag || changes.regions.is_some() {
            self.sm.tag(arn, &target.tags).await.map_err(aws_problem)?;
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    async fn update(
        &self,
        target: &Target,
        arn: &str,
        restore: bool,
        current_version_id: Option<&str>,
        written: bool,
        changes: &MetaChanges,
        known: Option<SecretString>,
    ) -> Result<Outcome, Problem> {
        let aws_problem = failure_of(&target.name);
        // Read before anything changes: a version deleted in Vault meanwhile is skipped whole.
        let value = if written {
            None
        } else {
            match self.value_or(target, known).await? {
                Some(v) => Some(v),
                None => return Ok(Outcome::Skipped),
            }
        };
        if restore {
            self.sm.restore(arn).await.map_err(aws_problem)?;
        }
        match value {
            Some(value) => {
                self.write(arn, &value, target, current_version_id, changes)
                    .await?;
            }
            // The value of this version is in AWS already: a stage move (when another version
            // is current), the tags and the rest, without reading or writing it again.
            None => {
                let is_current = current_version_id == Some(target.token.as_str());
                self.settle(arn, target, is_current, current_version_id, changes)
                    .await?;
            }
        }
        Ok(Outcome::Updated)
    }

    /// Deletes a replica, removing its replica regions first (AWS refuses to delete a secret
    /// that still has them): the ones its tags record, or, for one replicated by someone else,
    /// the ones AWS names when it refuses.
    async fn delete(&self, name: &str, arn: &str, replicated: bool) -> Result<Outcome, Problem> {
        let aws_problem = failure_of(name);
        let unreplicate = async || {
            let (statuses, _) = self.sm.replication(arn).await?;
            let regions: Vec<String> = statuses.into_iter().map(|s| s.region).collect();
            if !regions.is_empty() {
                self.sm.unreplicate(arn, &regions).await?;
            }
            Ok::<_, AwsError>(())
        };
        if replicated {
            unreplicate().await.map_err(aws_problem)?;
        }
        let window = self.settings.recovery_window_days;
        match self.sm.delete(arn, window).await {
            Ok(()) => {}
            Err(e) if e.kind == AwsErrorKind::InvalidRequest && e.message.contains("replica") => {
                unreplicate().await.map_err(aws_problem)?;
                self.sm.delete(arn, window).await.map_err(aws_problem)?;
            }
            Err(e) => return Err(aws_problem(e)),
        }
        Ok(Outcome::Deleted)
    }

    /// Performs one step; `known` is the value when the caller read it already.
    async fn perform_one(&self, step: &Step, known: Option<SecretString>) -> Outcome {
        let result = match step {
            Step::Create { target } => self.create(target, known).await,
            Step::Update {
                target,
                arn,
                restore,
                current_version_id,
                written,
                changes,
                ..
            } => {
                self.update(
                    target,
                    arn,
                    *restore,
                    current_version_id.as_deref(),
                    *written,
                    changes,
                    known,
                )
                .await
            }
            Step::Delete {
                name,
                arn,
                replicated,
            } => self.delete(name, arn, *replicated).await,
            // Decided without a request (an expanded secret's keys); an `Expand` is `perform`'s.
            step => Ok(without_request(step).unwrap_or(Outcome::Skipped)),
        };
        result.unwrap_or_else(Outcome::Failed)
    }

    /// Performs a step: one outcome, or one per key of an expanded secret.
    async fn perform(&self, step: &Step) -> Vec<(String, Outcome)> {
        match step {
            Step::Expand { name, source } => self.expand(name, source).await,
            step => vec![(step.name().to_owned(), self.perform_one(step, None).await)],
        }
    }

    /// Reads the secret's value, and replicates each of its keys: each key's step is decided as
    /// in the plan, and the replicas of keys no longer there follow the deletion policy.
    async fn expand(&self, name: &str, src: &ExpandSource) -> Vec<(String, Outcome)> {
        let settings = self.settings;
        let source = &src.source;
        let read = self
            .vault
            .read_version(&settings.mount, &source.vault_path, source.version)
            .await;
        let value = match read {
            Ok(VersionRead::Value(v)) => v,
            Ok(VersionRead::Gone) => return vec![(name.to_owned(), Outcome::Skipped)],
            Err(e) => {
                let p = Problem::new(name, e.kind(), e.to_string());
                return vec![(name.to_owned(), Outcome::Failed(p))];
            }
        };
        let keys = match crate::vault::split_keys(&value) {
            Ok(keys) => keys,
            Err(e) => {
                let p = Problem::new(name, "vault_invalid_response", e);
                return vec![(name.to_owned(), Outcome::Failed(p))];
            }
        };
        drop(value);
        let mut outcomes = Vec::with_capacity(keys.len() + src.existing.len());
        let mut wanted = std::collections::HashSet::with_capacity(keys.len());
        let mut warnings = Vec::new();
        let count = keys.len();
        for (key, value) in keys {
            let target = source.target(settings, Some((key, count)));
            wanted.insert(target.name.clone());
            let name = target.name.clone();
            let outcome = if let Err(step) = crate::plan::check_target(&target, &mut warnings) {
                self.perform_one(&step, None).await
            } else if value.len() > MAX_VALUE_BYTES {
                Outcome::Failed(too_large(&name, source.version, value.len()))
            } else {
                let existing = src.existing.iter().find(|s| s.name == target.name);
                let step = decide(target, existing, &src.earlier, settings);
                self.perform_one(&step, Some(value)).await
            };
            outcomes.push((name, outcome));
        }
        let mut gone: Vec<Step> = src
            .existing
            .iter()
            .filter(|s| !wanted.contains(&s.name))
            .map(|s| gone_from_vault(s.name.clone(), Some(s), settings))
            .collect();
        // The breaker's share holds for these too: this secret's deletions all pass, or none.
        let deletes = gone
            .iter()
            .filter(|s| matches!(s, Step::Delete { .. }))
            .count();
        if deletes > 0
            && self
                .delete_budget
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |b| {
                    b.checked_sub(deletes)
                })
                .is_err()
        {
            self.refused.fetch_add(deletes, Ordering::SeqCst);
            crate::plan::refuse_deletions(&mut gone);
        }
        for step in &gone {
            outcomes.push((step.name().to_owned(), self.perform_one(step, None).await));
        }
        outcomes.extend(warnings.into_iter().map(|(name, message)| {
            let warning = Problem::new(&name, "arn_suffix_name", message);
            (name, Outcome::Warning(warning))
        }));
        outcomes
    }
}

/// Makes an AWS error the failure of the secret `name`.
fn failure_of(name: &str) -> impl Fn(AwsError) -> Problem + Copy + '_ {
    move |e| Problem::new(name, e.kind.as_str(), e.to_string())
}

/// A replica region AWS could not replicate to: a failure of that secret, which is `done`
/// otherwise.
fn replication_failed(name: &str, done: &str, failed: &str) -> Problem {
    Problem::new(
        name,
        "replication_failed",
        format!("{done}, but not replicated to {failed}; the next run tries again"),
    )
}

fn kind_str<T: serde::Serialize>(kind: &T) -> String {
    serde_json::to_value(kind)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// The outcome of a step that needs no request; `None` for one that does.
fn without_request(step: &Step) -> Option<Outcome> {
    Some(match step {
        Step::Unchanged { .. } => Outcome::Unchanged,
        Step::Skip { .. } => Outcome::Skipped,
        Step::Keep { .. } => Outcome::Kept,
        Step::Conflict {
            name,
            kind,
            message,
        } => Outcome::Conflict(Problem::new(name, kind_str(kind), message)),
        Step::Invalid {
            name,
            kind,
            message,
            vault_path,
        } => Outcome::Failed(Problem::new(
            name,
            kind_str(kind),
            format!("Vault path {vault_path}: {message}"),
        )),
        Step::VaultFailed {
            name,
            kind,
            message,
        } => Outcome::Failed(Problem::new(name, kind, message)),
        Step::Create { .. } | Step::Update { .. } | Step::Delete { .. } | Step::Expand { .. } => {
            return None;
        }
    })
}

/// Counts one outcome into the report (`name` for the orphans list).
fn record(report: &mut Report, name: &str, outcome: Outcome) {
    match outcome {
        Outcome::Created => report.created += 1,
        Outcome::Updated => report.updated += 1,
        Outcome::Unchanged => report.unchanged += 1,
        Outcome::Deleted => report.deleted += 1,
        Outcome::Skipped => report.skipped += 1,
        Outcome::Kept => {
            report.skipped += 1;
            report.orphans.push(name.to_owned());
        }
        Outcome::Conflict(p) => report.conflicts.push(p),
        Outcome::Warning(p) => report.warnings.push(p),
        Outcome::Deferred => {
            report.partial = true;
            report.remaining += 1;
        }
        Outcome::Failed(p) => report.failures.push(p),
    }
}

/// Counts the decisions that need no request, and performs the rest.
#[allow(clippy::too_many_arguments)]
pub async fn execute(
    steps: Vec<Step>,
    delete_budget: usize,
    vault: &VaultClient,
    sm: &SecretsManager,
    settings: &Settings,
    report: &mut Report,
    progress: &crate::progress::Progress,
) {
    let mut work = Vec::new();
    for step in steps {
        match without_request(&step) {
            Some(outcome) => record(report, step.name(), outcome),
            None => work.push(step),
        }
    }
    if settings.dry_run {
        for step in &work {
            match step {
                Step::Create { .. } => report.created += 1,
                Step::Update { .. } | Step::Expand { .. } => report.updated += 1,
                _ => report.deleted += 1,
            }
        }
        return;
    }
    let ctx = Ctx {
        vault,
        sm,
        settings,
        delete_budget: AtomicUsize::new(delete_budget),
        refused: AtomicUsize::new(0),
    };
    let ctx = &ctx;
    let mut outcomes = stream::iter(work.iter())
        .map(|step| async move {
            // Past the deadline no write starts; the ones under way finish.
            if settings
                .deadline
                .is_some_and(|d| std::time::Instant::now() >= d)
            {
                return vec![(step.name().to_owned(), Outcome::Deferred)];
            }
            ctx.perform(step).await
        })
        .buffer_unordered(settings.concurrency);
    progress
        .planned
        .store(work.len() as u64, std::sync::atomic::Ordering::Relaxed);
    while let Some(done) = outcomes.next().await {
        progress
            .done
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        for (name, outcome) in done {
            if let Outcome::Failed(p) = &outcome {
                tracing::warn!(secret = %name, kind = %p.kind, "{}", p.message);
            }
            record(report, &name, outcome);
        }
    }
    drop(outcomes);
    let refused = ctx.refused.load(Ordering::SeqCst);
    if refused > 0 {
        report.failures.push(Problem::new(
            "",
            "deletion_breaker",
            format!(
                "{refused} replicas of keys removed in Vault would be deleted, over the breaker's share {} with this run's other deletions; kept: raise REPLICATOR_MAX_DELETE_SHARE to allow it",
                settings.max_delete_share
            ),
        ));
    }
}
