//! Performs a plan: reads each needed value at the planned version, writes it, tags it, deletes
//! what the plan deletes. Bounded concurrency; one secret's failure never stops the others.
//! Network I/O through the Vault and AWS adapters.

use std::collections::BTreeMap;

use futures::stream::{self, StreamExt};

use crate::aws::{AwsErrorKind, SecretsManager, owner_tags};
use crate::config::Settings;
use crate::plan::{Step, Target};
use crate::report::{Problem, Report};
use crate::vault::{VaultClient, VersionRead};
use contract::tags;

/// AWS limit on a secret value.
pub const MAX_VALUE_BYTES: usize = 65_536;

enum Outcome {
    Created,
    Updated,
    Deleted,
    /// The planned Vault version vanished before it was read; the next run sees the deletion.
    Skipped,
    Conflict(Problem),
    Failed(Problem),
    /// Not started: the run's deadline had come. The next run does it.
    Deferred,
}

/// The tags a replicated secret carries after a write of `target`.
pub fn target_tags(settings: &Settings, target: &Target) -> BTreeMap<String, String> {
    let mut t = owner_tags(&settings.mount, settings.path_tag(), &settings.prefix);
    t.insert(tags::VERSION.to_owned(), target.version.to_string());
    t.insert(
        tags::VERSION_CREATED.to_owned(),
        target.created_time.clone(),
    );
    t
}

struct Ctx<'a> {
    vault: &'a VaultClient,
    sm: &'a SecretsManager,
    settings: &'a Settings,
}

impl Ctx<'_> {
    /// Reads the value of exactly the planned version and checks its size.
    async fn value(
        &self,
        target: &Target,
    ) -> Result<Option<contract::secret::SecretString>, Problem> {
        let read = self
            .vault
            .read_version(&self.settings.mount, &target.vault_path, target.version)
            .await
            .map_err(|e| Problem::new(&target.name, e.kind(), e.to_string()))?;
        match read {
            VersionRead::Gone => Ok(None),
            VersionRead::Value(v) if v.len() > MAX_VALUE_BYTES => Err(Problem::new(
                &target.name,
                "value_too_large",
                format!(
                    "version {} is {} bytes as JSON, over the Secrets Manager limit of {MAX_VALUE_BYTES}",
                    target.version,
                    v.len()
                ),
            )),
            VersionRead::Value(v) => Ok(Some(v)),
        }
    }

    async fn create(&self, target: &Target) -> Result<Outcome, Problem> {
        let Some(value) = self.value(target).await? else {
            return Ok(Outcome::Skipped);
        };
        let tags = target_tags(self.settings, target);
        let aws_problem =
            |e: crate::aws::AwsError| Problem::new(&target.name, e.kind.as_str(), e.to_string());
        match self
            .sm
            .create(
                &target.name,
                &value,
                &target.token,
                self.settings.kms_key_id.as_deref(),
                &tags,
            )
            .await
        {
            Ok(()) => Ok(Outcome::Created),
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
                // Its own secret, scheduled for deletion since the listing: brought back.
                if found.pending_deletion {
                    self.sm.restore(&found.arn).await.map_err(aws_problem)?;
                }
                self.write(
                    &found.arn,
                    &value,
                    target,
                    found.current_version_id.as_deref(),
                )
                .await?;
                Ok(Outcome::Updated)
            }
            Err(e) => Err(aws_problem(e)),
        }
    }

    /// Puts the value as the target's version, makes it current, then records it in the tags.
    async fn write(
        &self,
        arn: &str,
        value: &contract::secret::SecretString,
        target: &Target,
        current_version_id: Option<&str>,
    ) -> Result<(), Problem> {
        let aws_problem =
            |e: crate::aws::AwsError| Problem::new(&target.name, e.kind.as_str(), e.to_string());
        let is_current = self
            .sm
            .put(arn, value, &target.token)
            .await
            .map_err(aws_problem)?;
        // Not current: this very version was written before and someone moved AWSCURRENT off it.
        self.settle(arn, target, is_current, current_version_id)
            .await
    }

    /// With the target's version in AWS: makes it current (a stage move) unless it is, then
    /// records it in the tags.
    async fn settle(
        &self,
        arn: &str,
        target: &Target,
        is_current: bool,
        current_version_id: Option<&str>,
    ) -> Result<(), Problem> {
        let aws_problem =
            |e: crate::aws::AwsError| Problem::new(&target.name, e.kind.as_str(), e.to_string());
        if !is_current {
            self.sm
                .make_current(arn, &target.token, current_version_id)
                .await
                .map_err(aws_problem)?;
        }
        self.sm
            .tag(arn, &target_tags(self.settings, target))
            .await
            .map_err(aws_problem)
    }

    async fn update(
        &self,
        target: &Target,
        arn: &str,
        restore: bool,
        current_version_id: Option<&str>,
        written: bool,
    ) -> Result<Outcome, Problem> {
        let aws_problem =
            |e: crate::aws::AwsError| Problem::new(&target.name, e.kind.as_str(), e.to_string());
        // Read before anything changes: a version deleted in Vault meanwhile is skipped whole.
        let value = if written {
            None
        } else {
            match self.value(target).await? {
                Some(v) => Some(v),
                None => return Ok(Outcome::Skipped),
            }
        };
        if restore {
            self.sm.restore(arn).await.map_err(aws_problem)?;
        }
        match value {
            Some(value) => self.write(arn, &value, target, current_version_id).await?,
            // The value of this version is in AWS already: a stage move (when another version
            // is current) and the tags, without reading or writing it again.
            None => {
                let is_current = current_version_id == Some(target.token.as_str());
                self.settle(arn, target, is_current, current_version_id)
                    .await?;
            }
        }
        Ok(Outcome::Updated)
    }

    async fn perform(&self, step: &Step) -> Outcome {
        let result = match step {
            Step::Create { target } => self.create(target).await,
            Step::Update {
                target,
                arn,
                restore,
                current_version_id,
                written,
                ..
            } => {
                self.update(
                    target,
                    arn,
                    *restore,
                    current_version_id.as_deref(),
                    *written,
                )
                .await
            }
            Step::Delete { name, arn } => self
                .sm
                .delete(arn, self.settings.recovery_window_days)
                .await
                .map(|()| Outcome::Deleted)
                .map_err(|e| Problem::new(name, e.kind.as_str(), e.to_string())),
            _ => return Outcome::Skipped,
        };
        result.unwrap_or_else(Outcome::Failed)
    }
}

/// Counts the decisions that need no request, and performs the rest.
pub async fn execute(
    steps: Vec<Step>,
    vault: &VaultClient,
    sm: &SecretsManager,
    settings: &Settings,
    report: &mut Report,
    progress: &crate::progress::Progress,
) {
    let mut work = Vec::new();
    for step in steps {
        match step {
            Step::Unchanged { .. } => report.unchanged += 1,
            Step::Skip { .. } => report.skipped += 1,
            Step::Keep { name, .. } => {
                report.skipped += 1;
                report.orphans.push(name);
            }
            Step::Conflict {
                name,
                kind,
                message,
            } => report.conflicts.push(Problem::new(
                name,
                serde_json::to_value(kind)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default(),
                message,
            )),
            Step::Invalid {
                name,
                kind,
                message,
                vault_path,
            } => report.failures.push(Problem::new(
                name,
                serde_json::to_value(kind)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default(),
                format!("Vault path {vault_path}: {message}"),
            )),
            Step::VaultFailed {
                name,
                kind,
                message,
            } => report.failures.push(Problem::new(name, kind, message)),
            Step::Create { .. } | Step::Update { .. } | Step::Delete { .. } => work.push(step),
        }
    }
    if settings.dry_run {
        for step in &work {
            match step {
                Step::Create { .. } => report.created += 1,
                Step::Update { .. } => report.updated += 1,
                _ => report.deleted += 1,
            }
        }
        return;
    }
    let ctx = Ctx {
        vault,
        sm,
        settings,
    };
    let ctx = &ctx;
    let mut outcomes = stream::iter(work.iter())
        .map(|step| async move {
            // Past the deadline no write starts; the ones under way finish.
            if settings
                .deadline
                .is_some_and(|d| std::time::Instant::now() >= d)
            {
                return (step.name(), Outcome::Deferred);
            }
            (step.name(), ctx.perform(step).await)
        })
        .buffer_unordered(settings.concurrency);
    progress
        .planned
        .store(work.len() as u64, std::sync::atomic::Ordering::Relaxed);
    while let Some((name, outcome)) = outcomes.next().await {
        progress
            .done
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        match outcome {
            Outcome::Created => report.created += 1,
            Outcome::Updated => report.updated += 1,
            Outcome::Deleted => report.deleted += 1,
            Outcome::Skipped => report.skipped += 1,
            Outcome::Conflict(p) => report.conflicts.push(p),
            Outcome::Deferred => {
                report.partial = true;
                report.remaining += 1;
            }
            Outcome::Failed(p) => {
                tracing::warn!(secret = name, kind = %p.kind, "{}", p.message);
                report.failures.push(p);
            }
        }
    }
}
