//! Performs a plan's steps and reports each one's outcome; decides nothing. A value is read at
//! exactly the planned version and written as a new AWS version that is then made current from
//! the version the plan saw current (so a run that planned an older version never moves AWS
//! back past a newer write); tags come last, since they record the rest. A deletion runs only
//! after the steps it waits for succeeded, and one whose Vault source was gone reads it again
//! first. Bounded concurrency; one secret's failure never stops the others. Network I/O through
//! the Vault and AWS adapters.

use std::collections::BTreeMap;

use futures::stream::{self, StreamExt};

use crate::aws::{AwsErrorKind, NewSecret, SecretsManager, failed_regions};
use crate::config::Settings;
use crate::model::EntryState;
use crate::plan::shape::PolicyWrite;
use crate::plan::{Guard, MetaChanges, RegionMoves, Step, Target, Write};
use crate::report::{Problem, Report};
use crate::vault::{VaultClient, VersionRead};
use contract::secret::SecretString;
use contract::tags;

pub use crate::outcome::Outcome;

/// The values of an expanded secret's keys, by key.
pub type KeyValues = BTreeMap<String, SecretString>;

/// The adapters and settings steps are performed with.
#[derive(Debug)]
pub struct Executor<'a> {
    pub vault: &'a VaultClient,
    pub sm: &'a SecretsManager,
    pub settings: &'a Settings,
    /// Where each step's change event goes as soon as the step is done (`--events-bus`).
    pub events: Option<&'a tokio::sync::mpsc::UnboundedSender<crate::events::ChangeEvent>>,
}

/// The Vault secret of a guarded deletion is there again.
fn back_in_vault(name: &str, vault_path: &str) -> Outcome {
    Outcome::Superseded(Problem::new(
        name,
        "superseded",
        format!(
            "its Vault secret {vault_path} is back since the plan: not deleted; the next run replicates it"
        ),
    ))
}

/// Makes an AWS error the failure of the secret `name`.
fn failure_of(name: &str) -> impl Fn(crate::aws::AwsError) -> Problem + Copy + '_ {
    move |e| Problem::new(name, e.kind.as_str(), e.to_string())
}

/// A replica region AWS could not replicate to: a failure of that secret, which is `done`
/// otherwise.
fn replication_failed(name: &str, done: &str, failed: &str) -> Problem {
    Problem::new(
        name,
        "replication_failed",
        format!(
            "{done}, but not replicated to {failed}; the next run tries again (a secret of this name already in that region, perhaps a replica promoted to a secret of its own, is never overwritten: delete or rename it there)"
        ),
    )
}

/// The most a value read takes: a whole secret's replica holds at most 64 KiB, so an answer
/// four times that is nothing to write; one replica per key, at most the cap of keys of
/// 64 KiB each, and never more than [`MAX_KEYS_READ`].
const WHOLE_READ: u64 = 4 * crate::plan::shape::MAX_VALUE_BYTES as u64;
/// The most one read of a secret replicated per key takes.
pub const MAX_KEYS_READ: u64 = 8 * 1024 * 1024;

impl Executor<'_> {
    fn read_cap(&self) -> u64 {
        let rule = &self.settings.rule;
        match rule.granularity {
            crate::model::Granularity::SecretPath => WHOLE_READ,
            crate::model::Granularity::SecretKey => (rule.max_keys_per_secret as u64 + 1)
                .saturating_mul(crate::plan::shape::MAX_VALUE_BYTES as u64)
                .clamp(WHOLE_READ, MAX_KEYS_READ),
        }
    }

    /// Reads exactly the planned version's value; `None` when it vanished since the plan.
    async fn read(
        &self,
        name: &str,
        vault_path: &str,
        version: u64,
    ) -> Result<Option<SecretString>, Problem> {
        let read = self
            .vault
            .read_version(
                &self.settings.rule.mount,
                vault_path,
                version,
                self.read_cap(),
            )
            .await
            .map_err(|e| Problem::new(name, e.kind(), e.to_string()))?;
        Ok(match read {
            VersionRead::Value(v) => Some(v),
            VersionRead::Gone => None,
        })
    }

    /// The value to write: the key's, already read, or the planned version read now (and
    /// checked against AWS's limit); `None` when that version vanished.
    async fn value(
        &self,
        target: &Target,
        known: Option<&KeyValues>,
    ) -> Result<Option<SecretString>, Problem> {
        if let Some(key) = &target.key {
            // A key's value: from its secret's read (never the whole secret's JSON).
            let read;
            let values = match known {
                Some(values) => values,
                None => match self
                    .read_keys(&target.name, &target.vault_path, target.version)
                    .await?
                {
                    Some(values) => {
                        read = values;
                        &read
                    }
                    None => return Ok(None),
                },
            };
            return Ok(values.get(key).cloned());
        }
        let value = self
            .read(&target.name, &target.vault_path, target.version)
            .await?;
        if let Some(v) = &value
            && v.len() > crate::plan::shape::MAX_VALUE_BYTES
        {
            return Err(Problem::new(
                &target.name,
                "value_too_large",
                format!(
                    "version {} is {} bytes, over the Secrets Manager limit of {}",
                    target.version,
                    v.len(),
                    crate::plan::shape::MAX_VALUE_BYTES
                ),
            ));
        }
        Ok(value)
    }

    /// An expanded secret's keys, each with its value, read at the planned version; `None`
    /// when that version vanished.
    pub async fn read_keys(
        &self,
        name: &str,
        vault_path: &str,
        version: u64,
    ) -> Result<Option<KeyValues>, Problem> {
        let Some(value) = self.read(name, vault_path, version).await? else {
            return Ok(None);
        };
        crate::vault::split_keys(&value)
            .map(Some)
            .map_err(|e| Problem::new(name, "vault_invalid_response", e))
    }

    async fn create(&self, target: &Target, known: Option<&KeyValues>) -> Result<Outcome, Problem> {
        let Some(value) = self.value(target, known).await? else {
            return Ok(Outcome::Skipped);
        };
        let rule = &self.settings.rule;
        // The policy's tag is written once the policy is on: a replica whose policy could not
        // be put lacks it, and the next run puts it.
        let mut tags = target.tags.clone();
        let policy_tag = tags.remove(tags::RESOURCE_POLICY);
        let shape = NewSecret {
            kms_key_id: self.settings.kms_key_id.as_deref(),
            description: &target.description,
            tags: &tags,
            regions: &rule.replica_regions,
        };
        match self
            .sm
            .create(&target.name, &value, &target.token, shape)
            .await
        {
            Ok((arn, statuses)) => {
                let failed = failed_regions(&statuses, &rule.replica_regions);
                let rest = async {
                    if failed.is_some() {
                        // Not recorded as replicated, so the next run removes the failed
                        // regions and adds them again.
                        self.sm
                            .untag(&arn, &[tags::REPLICA_REGIONS.to_owned()])
                            .await
                            .map_err(failure_of(&target.name))?;
                    }
                    if let (Some(policy), Some(tag)) = (&rule.resource_policy, policy_tag) {
                        self.put_policy(&arn, &target.name, policy, tag).await?;
                    }
                    match &failed {
                        None => Ok(()),
                        Some(failed) => Err(replication_failed(&target.name, "created", failed)),
                    }
                };
                Ok(match rest.await {
                    Ok(()) => Outcome::Created { arn },
                    Err(problem) => Outcome::Incomplete {
                        arn,
                        problem,
                        value_current: true,
                    },
                })
            }
            Err(e) if e.kind == AwsErrorKind::AlreadyExists => Ok(Outcome::Raced),
            Err(e) => Err(failure_of(&target.name)(e)),
        }
    }

    /// Moves `AWSCURRENT` to the target's version from `expect_current`: when another version
    /// is current by now, a newer write won and nothing moves (`Superseded`).
    async fn make_current(
        &self,
        arn: &str,
        target: &Target,
        expect_current: Option<&str>,
    ) -> Result<Option<Outcome>, Problem> {
        let moved = self
            .sm
            .make_current(arn, &target.token, expect_current)
            .await;
        let Err(e) = moved else {
            return Ok(None);
        };
        // Refused: see what is current now. A stage move is refused when the version it comes
        // from no longer carries the stage.
        let now = self
            .sm
            .describe(arn)
            .await
            .map_err(failure_of(&target.name))?;
        match now.current_version_id().as_deref() {
            Some(id) if id == target.token => Ok(None),
            Some(id) if Some(id) != expect_current => Ok(Some(Outcome::Superseded(Problem::new(
                &target.name,
                "superseded",
                format!(
                    "another version ({id}) was made current since this run planned Vault version {}: left current, nothing moved back",
                    target.version
                ),
            )))),
            _ => Err(failure_of(&target.name)(e)),
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn update(
        &self,
        target: &Target,
        arn: &str,
        restore: bool,
        write: Write,
        expect_current: Option<&str>,
        changes: &MetaChanges,
        known: Option<&KeyValues>,
    ) -> Result<Outcome, Problem> {
        let aws_problem = failure_of(&target.name);
        // Read before anything changes: a version deleted in Vault meanwhile is skipped whole.
        let value = match write {
            Write::Value => match self.value(target, known).await? {
                Some(v) => Some(v),
                None => return Ok(Outcome::Skipped),
            },
            Write::Stage | Write::None => None,
        };
        if restore {
            self.sm.restore(arn).await.map_err(aws_problem)?;
        }
        // From the restore on, or once the value is current, the replica has changed for its
        // readers: a failure after that is `Incomplete`.
        let incomplete = |problem, value_current| Outcome::Incomplete {
            arn: arn.to_owned(),
            problem,
            value_current,
        };
        let stage = async {
            if let Some(value) = &value {
                self.sm
                    .put_pending(arn, value, &target.token)
                    .await
                    .map_err(aws_problem)?;
            }
            match write {
                Write::None => Ok(None),
                Write::Value | Write::Stage => self.make_current(arn, target, expect_current).await,
            }
        };
        match stage.await {
            Ok(Some(superseded)) => return Ok(superseded),
            Ok(None) => {}
            Err(problem) if restore => return Ok(incomplete(problem, false)),
            Err(problem) => return Err(problem),
        }
        match self.settle(arn, target, changes).await {
            Ok(()) => Ok(Outcome::Updated),
            // The planned version is current: written, or already (a restore alone).
            Err(problem) if restore || write != Write::None => Ok(incomplete(problem, true)),
            Err(problem) => Err(problem),
        }
    }

    /// With the target's version current: moves the replica regions, sets the description,
    /// removes the tags no longer wanted, and last writes the tags, which record all of it. A
    /// region move that fails is not recorded (its tag is left out, so the next run looks and
    /// tries again) and blocks nothing else.
    async fn settle(
        &self,
        arn: &str,
        target: &Target,
        changes: &MetaChanges,
    ) -> Result<(), Problem> {
        let aws_problem = failure_of(&target.name);
        let regions = match &changes.regions {
            Some(moves) => self.move_regions(arn, &target.name, moves).await,
            None => Ok(()),
        };
        if let Some(description) = &changes.description {
            self.sm
                .describe_as(arn, description)
                .await
                .map_err(aws_problem)?;
        }
        // A policy to remove goes before its tag (the role may remove only one it tagged).
        if changes.policy == Some(PolicyWrite::Delete) {
            self.sm.delete_policy(arn).await.map_err(aws_problem)?;
        }
        let mut untag = changes.untag.clone();
        let mut tags = target.tags.clone();
        // A policy to put goes after the other tags (the ownership ones among them: the role
        // may put a policy only on a secret tagged as its own), its own tag last: a policy AWS
        // refuses holds back nothing else.
        let put = match (changes.policy, &self.settings.rule.resource_policy) {
            (Some(PolicyWrite::Put), Some(policy)) => {
                tags.remove(tags::RESOURCE_POLICY).map(|tag| (policy, tag))
            }
            _ => None,
        };
        if regions.is_err() {
            tags.remove(tags::REPLICA_REGIONS);
            if changes
                .regions
                .as_ref()
                .is_some_and(|m| m.recorded.is_some())
                && !untag.iter().any(|k| k == tags::REPLICA_REGIONS)
            {
                untag.push(tags::REPLICA_REGIONS.to_owned());
            }
        }
        if !untag.is_empty() {
            self.sm.untag(arn, &untag).await.map_err(aws_problem)?;
        }
        if changes.tag {
            self.sm.tag(arn, &tags).await.map_err(aws_problem)?;
        }
        if let Some((policy, tag)) = put {
            self.put_policy(arn, &target.name, policy, tag).await?;
        }
        regions
    }

    /// Puts the configured policy on the replica `arn`, then the tag that records it.
    async fn put_policy(
        &self,
        arn: &str,
        name: &str,
        policy: &contract::resource_policy::ResourcePolicy,
        tag: String,
    ) -> Result<(), Problem> {
        self.sm
            .put_policy(arn, &policy.render(arn))
            .await
            .map_err(failure_of(name))?;
        let recorded = BTreeMap::from([(tags::RESOURCE_POLICY.to_owned(), tag)]);
        self.sm.tag(arn, &recorded).await.map_err(failure_of(name))
    }

    async fn move_regions(
        &self,
        arn: &str,
        name: &str,
        moves: &RegionMoves,
    ) -> Result<(), Problem> {
        let aws_problem = failure_of(name);
        if !moves.remove.is_empty() {
            self.sm
                .unreplicate(arn, &moves.remove)
                .await
                .map_err(aws_problem)?;
        }
        if !moves.add.is_empty() {
            let statuses = self
                .sm
                .replicate(arn, &moves.add)
                .await
                .map_err(aws_problem)?;
            if let Some(failed) = failed_regions(&statuses, &moves.add) {
                return Err(replication_failed(name, "written", &failed));
            }
        }
        Ok(())
    }

    /// Deletes a replica: its Vault secret read again first when it was gone (kept when it is
    /// back), or, for a key the read version lacked, kept when Vault moved past that version;
    /// then, when it is still the tool's and still at the version the plan saw, its replica
    /// regions removed (AWS refuses to delete a secret that still has them) and their record
    /// with them, so a restored secret is replicated again.
    async fn delete(
        &self,
        name: &str,
        arn: &str,
        guard: &Guard,
        expect_current: Option<&str>,
    ) -> Result<Outcome, Problem> {
        let aws_problem = failure_of(name);
        let rule = &self.settings.rule;
        let recheck = match guard {
            Guard::SourceGone { vault_path } => Some((vault_path, None)),
            Guard::KeyRemoved {
                vault_path,
                version,
                ..
            } => Some((vault_path, Some(*version))),
            Guard::After(_) => None,
        };
        let now = aws_smithy_types::DateTime::from(std::time::SystemTime::now());
        let classify = crate::inventory::Classify::of(rule, now);
        // A path the patterns leave out is not read, even now: it stays left out.
        let left_out = |vault_path: &str| {
            rule.rel_of(vault_path)
                .is_some_and(|rel| classify.by_path(rel).is_some())
        };
        if let Some((vault_path, read_version)) = recheck.filter(|(p, _)| !left_out(p)) {
            let meta = self
                .vault
                .read_metadata(&rule.mount, vault_path)
                .await
                .map_err(|e| Problem::new(name, e.kind(), e.to_string()))?;
            let live = meta.as_ref().map(|m| {
                let state = match rule.rel_of(vault_path) {
                    Some(rel) => classify.path_state(rel, m),
                    None => classify.state(m),
                };
                (m.current_version, state)
            });
            let back = match (live, read_version) {
                // Vault's answer cannot be judged: kept.
                (Some((_, EntryState::Unreadable { .. })), _) => true,
                // Gone when planned: kept when it is there again.
                (Some((_, EntryState::Live { .. })), None) => true,
                // A key the read version lacked: kept when Vault moved past that version.
                (Some((latest, _)), Some(read)) => latest != read,
                (None, Some(_)) | (_, None) => false,
            };
            if back {
                return Ok(back_in_vault(name, vault_path));
            }
        }
        let (seen, statuses) = self
            .sm
            .describe_with_regions(arn)
            .await
            .map_err(aws_problem)?;
        if rule.source().wrote(|k| seen.tags.get(k)).is_none() {
            return Err(Problem::new(
                name,
                "not_owned",
                "no longer carries this sync's ownership tags: not deleted",
            ));
        }
        if seen.current_version_id().as_deref() != expect_current {
            return Ok(Outcome::Superseded(Problem::new(
                name,
                "superseded",
                "written since this run planned its deletion: not deleted; the next run decides again",
            )));
        }
        let regions: Vec<String> = statuses.into_iter().map(|s| s.region).collect();
        if !regions.is_empty() {
            self.sm
                .unreplicate(arn, &regions)
                .await
                .map_err(aws_problem)?;
        }
        if seen.tags.get(tags::REPLICA_REGIONS).is_some() {
            self.sm
                .untag(arn, &[tags::REPLICA_REGIONS.to_owned()])
                .await
                .map_err(aws_problem)?;
        }
        self.sm
            .delete(arn, self.settings.recovery_window_days)
            .await
            .map_err(aws_problem)?;
        Ok(Outcome::Deleted)
    }

    /// Performs one step; `known` holds an expanded secret's key values.
    async fn perform(&self, step: &Step, known: Option<&KeyValues>) -> Outcome {
        let result = match step {
            Step::Create { target } => self.create(target, known).await,
            Step::Update {
                target,
                arn,
                restore,
                write,
                expect_current,
                changes,
                ..
            } => {
                self.update(
                    target,
                    arn,
                    *restore,
                    *write,
                    expect_current.as_deref(),
                    changes,
                    known,
                )
                .await
            }
            Step::Delete {
                name,
                arn,
                guard,
                expect_current,
            } => {
                self.delete(name, arn, guard, expect_current.as_deref())
                    .await
            }
            step => Ok(without_request(step).unwrap_or(Outcome::Skipped)),
        };
        result.unwrap_or_else(Outcome::Failed)
    }

    /// Performs `steps` (an `Expand` is the run's, and left alone): first every step that
    /// waits for none, `concurrency` at a time, then the deletions that wait for others, each
    /// only when all it waits for succeeded. One outcome per step, in order (`None` for an
    /// `Expand`).
    pub async fn run(
        &self,
        steps: &[Step],
        known: Option<&KeyValues>,
        progress: &crate::progress::Progress,
    ) -> Vec<Option<Outcome>> {
        let waits = |s: &Step| matches!(s, Step::Delete { guard: Guard::After(after), .. } if !after.is_empty());
        let mut outcomes: Vec<Option<Outcome>> = steps.iter().map(|_| None).collect();
        for wave in [false, true] {
            let due: Vec<usize> = (0..steps.len())
                .filter(|&i| waits(&steps[i]) == wave && !matches!(steps[i], Step::Expand { .. }))
                .collect();
            let settled = &outcomes;
            let done: Vec<(usize, Outcome)> = stream::iter(due)
                .map(|i| async move {
                    let step = &steps[i];
                    if let Step::Delete {
                        guard: Guard::After(after),
                        ..
                    } = step
                        && let Some(blocked) = after
                            .iter()
                            .map(|a| settled.get(*a).and_then(Option::as_ref))
                            .find(|o| !o.is_some_and(Outcome::lets_dependents_go))
                    {
                        let outcome = match blocked {
                            Some(Outcome::Deferred) => Outcome::Deferred,
                            other => Outcome::Kept(Some(Problem::new(
                                step.name(),
                                "stale_name_kept",
                                format!(
                                    "a replica under a name no longer used, kept until the one that replaces it is written ({})",
                                    other.map_or("not done", Outcome::word)
                                ),
                            ))),
                        };
                        return (i, outcome);
                    }
                    // Past the deadline no write starts; the ones under way finish.
                    if self
                        .settings
                        .deadline
                        .is_some_and(|d| std::time::Instant::now() >= d)
                        && without_request(step).is_none()
                    {
                        return (i, Outcome::Deferred);
                    }
                    let outcome = self.perform(step, known).await;
                    if let Some(events) = self.events
                        && let Some(event) =
                            crate::events::of(step, &outcome, &self.settings.rule)
                    {
                        // The round's receiver outlives its steps.
                        let _ = events.send(event);
                    }
                    progress
                        .done
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    (i, outcome)
                })
                .buffer_unordered(self.settings.concurrency.max(1))
                .collect()
                .await;
            for (i, outcome) in done {
                outcomes[i] = Some(outcome);
            }
        }
        outcomes
    }
}

fn kind_str<T: serde::Serialize>(kind: &T) -> String {
    serde_json::to_value(kind)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// The outcome of a step that needs no request; `None` for one that does.
pub fn without_request(step: &Step) -> Option<Outcome> {
    Some(match step {
        Step::Unchanged { .. } => Outcome::Unchanged,
        Step::Skip { .. } => Outcome::Skipped,
        Step::Keep { name, why, warn } => {
            Outcome::Kept(warn.then(|| Problem::new(name, "stale_name_kept", why)))
        }
        Step::Conflict {
            name,
            kind,
            message,
        } => {
            let problem = Problem::new(name, kind_str(kind), message);
            if kind.fails_the_run() {
                Outcome::Failed(problem)
            } else {
                Outcome::Conflict(problem)
            }
        }
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
pub fn record(report: &mut Report, name: &str, outcome: Outcome) {
    match outcome {
        Outcome::Created { .. } => report.created += 1,
        Outcome::Updated => report.updated += 1,
        Outcome::Unchanged => report.unchanged += 1,
        Outcome::Deleted => report.deleted += 1,
        Outcome::Skipped => report.skipped += 1,
        Outcome::Kept(why) => {
            report.skipped += 1;
            report.orphans.push(name.to_owned());
            report.warnings.extend(why);
        }
        Outcome::Superseded(p) => {
            report.skipped += 1;
            report.warnings.push(p);
        }
        Outcome::Raced => report.failures.push(Problem::new(
            name,
            "raced",
            "the name was taken in AWS while this run wrote it, twice: the next run decides from what is there",
        )),
        Outcome::Conflict(p) => report.conflicts.push(p),
        Outcome::Deferred => {
            report.partial = true;
            report.remaining += 1;
        }
        Outcome::Failed(p) | Outcome::Incomplete { problem: p, .. } => {
            tracing::warn!(secret = %name, kind = %p.kind, "{}", p.message);
            report.failures.push(p);
        }
    }
}

/// What a dry run reports of a step that would send requests.
pub fn record_dry(report: &mut Report, step: &Step) {
    match step {
        Step::Create { .. } => report.created += 1,
        Step::Update { .. } | Step::Expand { .. } => report.updated += 1,
        Step::Delete { .. } => report.deleted += 1,
        step => {
            if let Some(outcome) = without_request(step) {
                record(report, step.name(), outcome);
            }
        }
    }
}
