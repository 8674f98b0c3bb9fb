//! Thin Secrets Manager, SNS and EventBridge adapters: list, create, put, move a stage, tag,
//! delete, restore, read the connection secret, publish a notice, put change events. Network I/O; errors classified by modelled
//! error code; secret values only ever sent, never logged. Fills the data floor's
//! [`AwsSecret`]; decides nothing.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_secretsmanager::types::{
    Filter, FilterNameStringType, ReplicaRegionType, ReplicationStatusType, StatusType, Tag,
};
use aws_types::SdkConfig;
use futures::stream::{self, StreamExt, TryStreamExt};
use tokio::sync::Mutex as AsyncMutex;
use tokio::time::Instant;

use crate::listing::{MAX_FILTER_VALUES, Partition};
use crate::model::Interner;
pub use crate::model::{AwsSecret, RegionStatus, Tags};
pub use contract::sdk::{
    AwsCounters, AwsError, AwsErrorKind, CountRequests, config_loader, load_sdk_config,
};
use contract::secret::SecretString;
use contract::{ReplicaRegion, tags};

/// Paces write calls: at most `per_second`, spread evenly.
#[derive(Debug)]
pub struct RateLimiter {
    interval: Duration,
    next: AsyncMutex<Instant>,
}

impl RateLimiter {
    pub fn new(per_second: u32) -> Self {
        Self {
            interval: Duration::from_secs(1) / per_second.max(1),
            next: AsyncMutex::new(Instant::now()),
        }
    }

    /// Waits for the next free slot.
    pub async fn acquire(&self) {
        let slot = {
            let mut next = self.next.lock().await;
            let now = Instant::now();
            let slot = (*next).max(now);
            *next = slot + self.interval;
            slot
        };
        tokio::time::sleep_until(slot).await;
    }
}

/// One secret as `ListSecrets` or `DescribeSecret` answers it.
struct Answered<'a> {
    name: &'a str,
    arn: &'a str,
    tags: &'a [Tag],
    versions: Option<&'a std::collections::HashMap<String, Vec<String>>>,
    pending_deletion: bool,
    /// Rotated by Secrets Manager, or owned by a service.
    managed_elsewhere: bool,
    description: Option<&'a str>,
}

impl Answered<'_> {
    /// The secret as the data floor holds it, its shared strings interned.
    fn held(&self, interner: &mut Interner) -> AwsSecret {
        let mut secret = AwsSecret::new(self.name, self.arn, interner);
        secret.tags = Tags::build(
            self.tags
                .iter()
                .filter_map(|t| Some((t.key()?, t.value().unwrap_or("")))),
            interner,
        );
        let current = self.versions.and_then(|map| {
            map.iter()
                .find(|(_, stages)| stages.iter().any(|s| s == "AWSCURRENT"))
                .map(|(id, _)| id.as_str())
        });
        let mut staged: Vec<&str> = self
            .versions
            .into_iter()
            .flatten()
            .filter(|(id, stages)| !stages.is_empty() && Some(id.as_str()) != current)
            .map(|(id, _)| id.as_str())
            .collect();
        staged.sort_unstable();
        secret.set_versions(current, staged);
        secret.pending_deletion = self.pending_deletion;
        secret.managed_elsewhere = self.managed_elsewhere;
        secret.description = self.description.map(|d| interner.get(d));
        secret
    }
}

/// Secrets Manager, with request counting and write pacing.
#[derive(Clone, Debug)]
pub struct SecretsManager {
    client: aws_sdk_secretsmanager::Client,
    pub counters: Arc<AwsCounters>,
    /// Paces the write APIs (one shared quota in AWS).
    limiter: Arc<RateLimiter>,
    /// Paces TagResource, whose quota is separate.
    tag_limiter: Arc<RateLimiter>,
}

fn region_statuses(list: &[ReplicationStatusType]) -> Vec<RegionStatus> {
    list.iter()
        .filter_map(|r| {
            let failed = r.status() == Some(&StatusType::Failed);
            Some(RegionStatus {
                region: r.region()?.to_owned(),
                failed: failed.then(|| r.status_message().unwrap_or("failed").to_owned()),
            })
        })
        .collect()
}

/// The failed regions of `statuses` among `wanted`, as one message; `None` when all went well.
pub fn failed_regions(statuses: &[RegionStatus], wanted: &[ReplicaRegion]) -> Option<String> {
    let failed: Vec<String> = statuses
        .iter()
        .filter(|s| wanted.iter().any(|w| w.region == s.region))
        .filter_map(|s| Some(format!("{}: {}", s.region, s.failed.as_deref()?)))
        .collect();
    (!failed.is_empty()).then(|| failed.join("; "))
}

/// What a new secret is created with besides its name and value.
#[derive(Clone, Copy, Debug)]
pub struct NewSecret<'a> {
    pub kms_key_id: Option<&'a str>,
    pub description: &'a str,
    pub tags: &'a BTreeMap<String, String>,
    pub regions: &'a [ReplicaRegion],
}

fn replica_types(regions: &[ReplicaRegion]) -> Vec<ReplicaRegionType> {
    regions
        .iter()
        .map(|r| {
            ReplicaRegionType::builder()
                .region(&r.region)
                .set_kms_key_id(r.kms_key_id.clone())
                .build()
        })
        .collect()
}

fn tag_list(map: &BTreeMap<String, String>) -> Vec<Tag> {
    map.iter()
        .map(|(k, v)| Tag::builder().key(k).value(v).build())
        .collect()
}

impl SecretsManager {
    pub fn new(config: &SdkConfig, writes_per_second: u32, counters: Arc<AwsCounters>) -> Self {
        let conf = aws_sdk_secretsmanager::config::Builder::from(config)
            .interceptor(CountRequests(counters.clone()))
            .build();
        Self {
            client: aws_sdk_secretsmanager::Client::from_conf(conf),
            counters,
            limiter: Arc::new(RateLimiter::new(writes_per_second)),
            tag_limiter: Arc::new(RateLimiter::new(writes_per_second)),
        }
    }

    /// Every secret whose name starts with `<prefix>/`, planned deletions included, in one page
    /// chain.
    pub async fn list(&self, prefix: &str) -> Result<Vec<AwsSecret>, AwsError> {
        let (found, _) = self
            .list_matching(&[format!("{prefix}/")], &[], None, &|_| true)
            .await?;
        Ok(found)
    }

    /// The first page of [`Self::list`]: every secret when one page holds them all, `None` when
    /// there are more.
    pub async fn list_one_page(&self, prefix: &str) -> Result<Option<Vec<AwsSecret>>, AwsError> {
        let (found, more) = self
            .list_matching(&[format!("{prefix}/")], &[], Some(1), &|_| true)
            .await?;
        Ok((!more).then_some(found))
    }

    /// [`Self::list`] through `partition`'s ranges and lookups, `concurrency` at a time: the
    /// same secrets, in name order, gathered into one list as each range comes in (room for
    /// `expected` made at once, so a large listing is not copied as it grows). A name that
    /// two ranges both returned is an error: the ranges are disjoint by construction, so an
    /// overlap is a bug to report, never to hide.
    pub async fn list_partitioned(
        &self,
        partition: &Partition,
        concurrency: usize,
        expected: usize,
    ) -> Result<Vec<AwsSecret>, AwsError> {
        enum Part<'a> {
            Range(&'a [String]),
            Exact(&'a str),
        }
        let parts = partition
            .ranges
            .iter()
            .map(|r| Part::Range(r))
            .chain(partition.exact.iter().map(|e| Part::Exact(e)));
        let mut chunks = stream::iter(parts)
            .map(|part| async move {
                match part {
                    Part::Range(prefixes) => {
                        Ok(self.list_matching(prefixes, &[], None, &|_| true).await?.0)
                    }
                    Part::Exact(name) => Ok(self.describe_name(name).await?.into_iter().collect()),
                }
            })
            .buffer_unordered(concurrency.max(1));
        let mut all: Vec<AwsSecret> = Vec::with_capacity(expected + expected / 8);
        while let Some(chunk) = chunks.next().await {
            all.extend(chunk?);
        }
        all.shrink_to_fit();
        all.sort_unstable_by(|a, b| a.name.cmp(&b.name));
        if let Some(twice) = all.windows(2).find(|w| w[0].name == w[1].name) {
            return Err(AwsError {
                op: "ListSecrets",
                resource: twice[0].name.to_string(),
                kind: AwsErrorKind::Other,
                code: String::new(),
                message: "the ranged listing returned this secret from two ranges: a bug of the listing's split; please report it".into(),
            });
        }
        Ok(all)
    }

    /// The secrets under `<prefix>/` whose `vault-secret` tag is one of `sources`: the
    /// replicas of those Vault secrets whatever their names (`secret-key` granularity). Ten
    /// sources per listing (the filter's limit), `concurrency` listings at a time.
    pub async fn list_by_source(
        &self,
        prefix: &str,
        sources: &[String],
        concurrency: usize,
    ) -> Result<Vec<AwsSecret>, AwsError> {
        let root = [format!("{prefix}/")];
        // Exactly those sources: the tag-value filter is a prefix match on any tag (`1` matches
        // every `version` of 1…). Each page is kept to them as it comes.
        let of = |sources: &[String]| {
            let sources: Vec<String> = sources.to_vec();
            move |s: &AwsSecret| {
                s.tags
                    .get(tags::SOURCE)
                    .is_some_and(|v| sources.iter().any(|c| c == v))
            }
        };
        // A filter value holds only a name's characters (and a leading `!` negates): sources
        // outside that are found by listing the whole prefix; and so are more than a few
        // ranges' worth (one listing beats a page chain per ten sources that each match much).
        if sources.len() > MAX_FILTER_VALUES * concurrency.max(1)
            || sources
                .iter()
                .any(|s| !s.chars().all(contract::is_aws_name_char))
        {
            return Ok(self.list_matching(&root, &[], None, &of(sources)).await?.0);
        }
        let chunks: Vec<Vec<AwsSecret>> =
            stream::iter(sources.chunks(MAX_FILTER_VALUES))
                .map(|chunk| {
                    let (root, keep) = (&root, of(chunk));
                    async move {
                        Ok::<_, AwsError>(self.list_matching(root, chunk, None, &keep).await?.0)
                    }
                })
                .buffer_unordered(concurrency.max(1))
                .try_collect()
                .await?;
        Ok(chunks.into_iter().flatten().collect())
    }

    /// One `ListSecrets` page chain with a `name` filter of `prefixes` (at most 10), and a
    /// `tag-value` filter of `tag_values` when given, planned deletions included, stopping
    /// after `max_pages`, keeping the secrets `keep` accepts; whether pages were left.
    async fn list_matching(
        &self,
        prefixes: &[String],
        tag_values: &[String],
        max_pages: Option<usize>,
        keep: &dyn Fn(&AwsSecret) -> bool,
    ) -> Result<(Vec<AwsSecret>, bool), AwsError> {
        let what = prefixes.join(" ");
        let filter = Filter::builder()
            .key(FilterNameStringType::Name)
            .set_values(Some(prefixes.to_vec()))
            .build();
        let mut filters = vec![filter];
        if !tag_values.is_empty() {
            filters.push(
                Filter::builder()
                    .key(FilterNameStringType::TagValue)
                    .set_values(Some(tag_values.to_vec()))
                    .build(),
            );
        }
        let mut pages = self
            .client
            .list_secrets()
            .set_filters(Some(filters))
            .include_planned_deletion(true)
            .max_results(100)
            .into_paginator()
            .send();
        let mut out = Vec::new();
        let mut read = 0;
        let mut interner = Interner::default();
        while max_pages.is_none_or(|max| read < max) {
            let Some(page) = pages.next().await else {
                return Ok((out, false));
            };
            read += 1;
            let page = page.map_err(|e| AwsError::from_sdk("ListSecrets", &what, e))?;
            for entry in page.secret_list() {
                let (Some(name), Some(arn)) = (entry.name(), entry.arn()) else {
                    continue;
                };
                // The filter is a prefix match; keep exactly the names asked for.
                if !prefixes.iter().any(|p| name.starts_with(p.as_str())) {
                    continue;
                }
                let secret = Answered {
                    name,
                    arn,
                    tags: entry.tags(),
                    versions: entry.secret_versions_to_stages(),
                    pending_deletion: entry.deleted_date().is_some(),
                    managed_elsewhere: entry.rotation_enabled() == Some(true)
                        || entry.owning_service().is_some(),
                    description: entry.description(),
                }
                .held(&mut interner);
                if keep(&secret) {
                    out.push(secret);
                }
            }
            if page.next_token().is_none() {
                return Ok((out, false));
            }
        }
        Ok((out, true))
    }

    /// Looks one secret up by name or ARN. AWS also resolves a name that ends like an ARN
    /// suffix to another secret: callers that look up a name keep the answer only when its name
    /// is exactly the one asked for ([`Self::describe_name`]).
    pub async fn describe(&self, name: &str) -> Result<AwsSecret, AwsError> {
        Ok(self.describe_with_regions(name).await?.0)
    }

    /// [`Self::describe`], and the regions AWS shows the secret replicated to: one call.
    pub async fn describe_with_regions(
        &self,
        secret_id: &str,
    ) -> Result<(AwsSecret, Vec<RegionStatus>), AwsError> {
        let out = self
            .client
            .describe_secret()
            .secret_id(secret_id)
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("DescribeSecret", secret_id, e))?;
        let secret = Answered {
            name: out.name().unwrap_or(secret_id),
            arn: out.arn().unwrap_or_default(),
            tags: out.tags(),
            versions: out.version_ids_to_stages(),
            pending_deletion: out.deleted_date().is_some(),
            managed_elsewhere: out.rotation_enabled() == Some(true)
                || out.owning_service().is_some(),
            description: out.description(),
        }
        .held(&mut Interner::default());
        Ok((secret, region_statuses(out.replication_status())))
    }

    /// The secret named exactly `name`, if there is one (never another that AWS resolves the
    /// name to, as a partial ARN).
    pub async fn describe_name(&self, name: &str) -> Result<Option<AwsSecret>, AwsError> {
        match self.describe(name).await {
            Ok(found) if &*found.name == name => Ok(Some(found)),
            Ok(_) => Ok(None),
            Err(e) if e.kind == AwsErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Adds replica regions (`ReplicateSecretToRegions`); every replica region's status.
    pub async fn replicate(
        &self,
        secret_id: &str,
        regions: &[ReplicaRegion],
    ) -> Result<Vec<RegionStatus>, AwsError> {
        self.limiter.acquire().await;
        let out = self
            .client
            .replicate_secret_to_regions()
            .secret_id(secret_id)
            .set_add_replica_regions(Some(replica_types(regions)))
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("ReplicateSecretToRegions", secret_id, e))?;
        Ok(region_statuses(out.replication_status()))
    }

    /// Removes replica regions (`RemoveRegionsFromReplication`): the replicas there are deleted.
    pub async fn unreplicate(&self, secret_id: &str, regions: &[String]) -> Result<(), AwsError> {
        self.limiter.acquire().await;
        self.client
            .remove_regions_from_replication()
            .secret_id(secret_id)
            .set_remove_replica_regions(Some(regions.to_vec()))
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("RemoveRegionsFromReplication", secret_id, e))?;
        Ok(())
    }

    /// Sets the description alone (`UpdateSecret` without a value: no new version).
    pub async fn describe_as(&self, secret_id: &str, description: &str) -> Result<(), AwsError> {
        self.limiter.acquire().await;
        self.client
            .update_secret()
            .secret_id(secret_id)
            .description(description)
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("UpdateSecret", secret_id, e))?;
        Ok(())
    }

    pub async fn untag(&self, secret_id: &str, keys: &[String]) -> Result<(), AwsError> {
        self.tag_limiter.acquire().await;
        self.client
            .untag_resource()
            .secret_id(secret_id)
            .set_tag_keys(Some(keys.to_vec()))
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("UntagResource", secret_id, e))?;
        Ok(())
    }

    /// Puts a replica's resource policy, with `BlockPublicPolicy`: AWS refuses one that would
    /// make the secret public.
    pub async fn put_policy(&self, secret_id: &str, policy: &str) -> Result<(), AwsError> {
        self.limiter.acquire().await;
        self.client
            .put_resource_policy()
            .secret_id(secret_id)
            .resource_policy(policy)
            .block_public_policy(true)
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("PutResourcePolicy", secret_id, e))?;
        Ok(())
    }

    /// Removes a replica's resource policy.
    pub async fn delete_policy(&self, secret_id: &str) -> Result<(), AwsError> {
        self.limiter.acquire().await;
        self.client
            .delete_resource_policy()
            .secret_id(secret_id)
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("DeleteResourcePolicy", secret_id, e))?;
        Ok(())
    }

    /// A replica's resource policy as AWS holds it (`None`: it has none).
    pub async fn policy(&self, secret_id: &str) -> Result<Option<String>, AwsError> {
        let out = self
            .client
            .get_resource_policy()
            .secret_id(secret_id)
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("GetResourcePolicy", secret_id, e))?;
        Ok(out.resource_policy().map(str::to_owned))
    }

    /// Creates the secret; its ARN, and the replica regions' status when it has some (a region
    /// can fail, the secret still created).
    pub async fn create(
        &self,
        name: &str,
        value: &SecretString,
        request_token: &str,
        shape: NewSecret<'_>,
    ) -> Result<(String, Vec<RegionStatus>), AwsError> {
        self.limiter.acquire().await;
        let out = self
            .client
            .create_secret()
            .name(name)
            .secret_string(value.expose())
            .client_request_token(request_token)
            .set_kms_key_id(shape.kms_key_id.map(str::to_owned))
            .description(shape.description)
            .set_tags(Some(tag_list(shape.tags)))
            .set_add_replica_regions(
                (!shape.regions.is_empty()).then(|| replica_types(shape.regions)),
            )
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("CreateSecret", name, e))?;
        let arn = out.arn().unwrap_or(name).to_owned();
        Ok((arn, region_statuses(out.replication_status())))
    }

    /// Writes a version with the given id, staged [`PENDING_STAGE`] only: `AWSCURRENT` stays
    /// where it is until [`Self::make_current`] moves it. A put of an id that already exists
    /// with the same value changes nothing.
    pub async fn put_pending(
        &self,
        secret_id: &str,
        value: &SecretString,
        request_token: &str,
    ) -> Result<(), AwsError> {
        self.put_staged(secret_id, value, request_token, PENDING_STAGE)
            .await
    }

    /// Writes a version with the given id, staged `stage` only.
    pub async fn put_staged(
        &self,
        secret_id: &str,
        value: &SecretString,
        request_token: &str,
        stage: &str,
    ) -> Result<(), AwsError> {
        self.limiter.acquire().await;
        self.client
            .put_secret_value()
            .secret_id(secret_id)
            .secret_string(value.expose())
            .client_request_token(request_token)
            .version_stages(stage)
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("PutSecretValue", secret_id, e))?;
        Ok(())
    }

    /// Moves `AWSCURRENT` to an existing version from `from_version_id`, the one that carries it
    /// now: AWS refuses the move when another version carries it by then, so a write planned
    /// from an older state never replaces a newer one.
    pub async fn make_current(
        &self,
        secret_id: &str,
        version_id: &str,
        from_version_id: Option<&str>,
    ) -> Result<(), AwsError> {
        self.move_stage(secret_id, "AWSCURRENT", Some(version_id), from_version_id)
            .await
    }

    /// Takes the label `stage` off the version `version_id`.
    pub async fn unstage(
        &self,
        secret_id: &str,
        stage: &str,
        version_id: &str,
    ) -> Result<(), AwsError> {
        self.move_stage(secret_id, stage, None, Some(version_id))
            .await
    }

    /// `UpdateSecretVersionStage`: `stage` onto `to` and/or off `from`.
    async fn move_stage(
        &self,
        secret_id: &str,
        stage: &str,
        to: Option<&str>,
        from: Option<&str>,
    ) -> Result<(), AwsError> {
        self.limiter.acquire().await;
        self.client
            .update_secret_version_stage()
            .secret_id(secret_id)
            .version_stage(stage)
            .set_move_to_version_id(to.map(str::to_owned))
            .set_remove_from_version_id(from.map(str::to_owned))
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("UpdateSecretVersionStage", secret_id, e))?;
        Ok(())
    }

    pub async fn tag(
        &self,
        secret_id: &str,
        tags: &BTreeMap<String, String>,
    ) -> Result<(), AwsError> {
        self.tag_limiter.acquire().await;
        self.client
            .tag_resource()
            .secret_id(secret_id)
            .set_tags(Some(tag_list(tags)))
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("TagResource", secret_id, e))?;
        Ok(())
    }

    pub async fn delete(&self, secret_id: &str, recovery_window_days: i64) -> Result<(), AwsError> {
        self.limiter.acquire().await;
        self.client
            .delete_secret()
            .secret_id(secret_id)
            .recovery_window_in_days(recovery_window_days)
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("DeleteSecret", secret_id, e))?;
        Ok(())
    }

    pub async fn restore(&self, secret_id: &str) -> Result<(), AwsError> {
        self.limiter.acquire().await;
        self.client
            .restore_secret()
            .secret_id(secret_id)
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("RestoreSecret", secret_id, e))?;
        Ok(())
    }

    /// A secret's name, whether rotation is on, and each version's stages (no value).
    pub async fn versions(&self, secret_id: &str) -> Result<SecretVersions, AwsError> {
        let out = self
            .client
            .describe_secret()
            .secret_id(secret_id)
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("DescribeSecret", secret_id, e))?;
        Ok(SecretVersions {
            name: out.name().unwrap_or_default().to_owned(),
            rotation_enabled: out.rotation_enabled() == Some(true),
            stages: out
                .version_ids_to_stages()
                .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
                .unwrap_or_default(),
        })
    }

    /// Reads a string secret's `AWSCURRENT` version (the connection secret), named explicitly:
    /// a stand-in that tracks a default version apart from the label (moto, after a rotation
    /// moved the label) answers the same as AWS.
    pub async fn read_string(&self, secret_id: &str) -> Result<SecretString, AwsError> {
        Ok(self
            .read_dated(secret_id, None, Some("AWSCURRENT"))
            .await?
            .0)
    }

    /// Reads one version of a string secret: by id and/or stage (`AWSCURRENT` when neither).
    pub async fn read_version(
        &self,
        secret_id: &str,
        version_id: Option<&str>,
        stage: Option<&str>,
    ) -> Result<SecretString, AwsError> {
        Ok(self.read_dated(secret_id, version_id, stage).await?.0)
    }

    /// [`Self::read_version`], with the version's creation time (seconds since the epoch).
    pub async fn read_dated(
        &self,
        secret_id: &str,
        version_id: Option<&str>,
        stage: Option<&str>,
    ) -> Result<(SecretString, Option<f64>), AwsError> {
        let out = self
            .client
            .get_secret_value()
            .secret_id(secret_id)
            .set_version_id(version_id.map(str::to_owned))
            .set_version_stage(stage.map(str::to_owned))
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("GetSecretValue", secret_id, e))?;
        match out.secret_string() {
            Some(s) => Ok((
                SecretString::from(s),
                out.created_date().map(|d| d.as_secs_f64()),
            )),
            None => Err(AwsError {
                op: "GetSecretValue",
                resource: secret_id.to_owned(),
                kind: AwsErrorKind::InvalidRequest,
                code: String::new(),
                message: "the secret holds no SecretString (binary secrets are not supported)"
                    .into(),
            }),
        }
    }
}

/// What [`SecretsManager::versions`] tells of a secret.
#[derive(Clone, Debug, Default)]
pub struct SecretVersions {
    pub name: String,
    pub rotation_enabled: bool,
    /// Version id → its staging labels.
    pub stages: BTreeMap<String, Vec<String>>,
}

impl SecretVersions {
    /// The version carrying `stage`, if one does.
    pub fn staged(&self, stage: &str) -> Option<&str> {
        self.stages
            .iter()
            .find(|(_, stages)| stages.iter().any(|s| s == stage))
            .map(|(id, _)| id.as_str())
    }
}

/// The SNS topic for failure notices.
#[derive(Clone, Debug)]
pub struct Notifier {
    client: aws_sdk_sns::Client,
}

impl Notifier {
    pub fn new(config: &SdkConfig, counters: Arc<AwsCounters>) -> Self {
        let conf = aws_sdk_sns::config::Builder::from(config)
            .interceptor(CountRequests(counters))
            .build();
        Self {
            client: aws_sdk_sns::Client::from_conf(conf),
        }
    }

    pub async fn publish(
        &self,
        topic_arn: &str,
        subject: &str,
        message: &str,
    ) -> Result<(), AwsError> {
        self.client
            .publish()
            .topic_arn(topic_arn)
            .subject(subject)
            .message(message)
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("Publish", topic_arn, e))?;
        Ok(())
    }
}

/// The EventBridge bus change events go to ([`crate::events`]).
#[derive(Clone, Debug)]
pub struct EventBus {
    client: aws_sdk_eventbridge::Client,
    bus: String,
}

/// The most entries one `PutEvents` takes.
const EVENTS_PER_PUT: usize = 10;

impl EventBus {
    /// The bus `bus` (a name or an ARN) with this process's own credentials and region.
    pub fn new(config: &SdkConfig, bus: &str, counters: Arc<AwsCounters>) -> Self {
        let conf = aws_sdk_eventbridge::config::Builder::from(config)
            .interceptor(CountRequests(counters))
            .build();
        Self {
            client: aws_sdk_eventbridge::Client::from_conf(conf),
            bus: bus.to_owned(),
        }
    }

    pub fn bus(&self) -> &str {
        &self.bus
    }

    /// Puts the events `changes` receives while a round runs, each as soon as it comes (up to
    /// ten to a request, the ones that came while the last request was under way), until the
    /// round drops its sender; the SDK retries throttling. How many were put, and the ones not
    /// delivered, each with why.
    pub async fn stream(
        self,
        mut changes: tokio::sync::mpsc::UnboundedReceiver<crate::events::ChangeEvent>,
    ) -> Announced {
        let mut announced = Announced::default();
        while let Some(first) = changes.recv().await {
            let mut batch = vec![first];
            while batch.len() < EVENTS_PER_PUT {
                match changes.try_recv() {
                    Ok(event) => batch.push(event),
                    Err(_) => break,
                }
            }
            let count = batch.len() as u64;
            let undelivered = self.put(batch).await;
            announced.put += count - undelivered.len() as u64;
            announced.undelivered.extend(undelivered);
        }
        announced
    }

    /// Puts one request's `batch` (at most ten); the ones not delivered, each with why.
    async fn put(
        &self,
        batch: Vec<crate::events::ChangeEvent>,
    ) -> Vec<(crate::events::ChangeEvent, String)> {
        use aws_sdk_eventbridge::types::PutEventsRequestEntry;
        let entries = batch
            .iter()
            .map(|event| {
                PutEventsRequestEntry::builder()
                    .event_bus_name(&self.bus)
                    .source(crate::events::SOURCE)
                    .detail_type(event.action.detail_type())
                    .detail(serde_json::to_string(event).unwrap_or_default())
                    .resources(&event.arn)
                    .build()
            })
            .collect();
        let sent = self
            .client
            .put_events()
            .set_entries(Some(entries))
            .send()
            .await;
        match sent {
            Err(e) => {
                let why = AwsError::from_sdk("PutEvents", &self.bus, e).to_string();
                batch.into_iter().map(|e| (e, why.clone())).collect()
            }
            Ok(out) if out.failed_entry_count() == 0 => Vec::new(),
            Ok(out) => {
                let results = out.entries();
                batch
                    .into_iter()
                    .enumerate()
                    .filter_map(|(i, event)| match results.get(i) {
                        Some(r) if r.error_code().is_none() && r.event_id().is_some() => None,
                        Some(r) => Some((
                            event,
                            format!(
                                "PutEvents {}: {}: {}",
                                self.bus,
                                r.error_code().unwrap_or("error"),
                                r.error_message().unwrap_or("not put")
                            ),
                        )),
                        None => Some((
                            event,
                            format!("PutEvents {}: no answer for this entry", self.bus),
                        )),
                    })
                    .collect()
            }
        }
    }
}

/// What a round's change events came to ([`EventBus::stream`]).
#[derive(Debug, Default)]
pub struct Announced {
    pub put: u64,
    pub undelivered: Vec<(crate::events::ChangeEvent, String)>,
}

/// The staging label of a version written but not yet made current.
pub const PENDING_STAGE: &str = "VAULT-REPLICATOR-PENDING";

/// `base` acting in the account of `role`: its credentials are the role's, assumed with the
/// role's external id through `base`'s own credentials on the first request, kept by the SDK's
/// identity cache for their lifetime and assumed again shortly before they expire. Endpoint,
/// region and retries stay `base`'s.
pub fn in_account(base: &SdkConfig, role: &contract::account::AccountRole) -> SdkConfig {
    let provider = AssumedRole {
        role: role.clone(),
        base: base.clone(),
        provider: tokio::sync::OnceCell::new(),
    };
    base.to_builder()
        .credentials_provider(
            aws_credential_types::provider::SharedCredentialsProvider::new(provider),
        )
        .build()
}

/// The session name the replicas' account sees in CloudTrail.
const SESSION_NAME: &str = "vault-secrets-replicator";

/// Credentials of a role in another account (see [`in_account`]). The STS client is built on
/// first use, since building it is `async`.
#[derive(Debug)]
struct AssumedRole {
    role: contract::account::AccountRole,
    base: SdkConfig,
    provider: tokio::sync::OnceCell<aws_config::sts::AssumeRoleProvider>,
}

impl aws_credential_types::provider::ProvideCredentials for AssumedRole {
    fn provide_credentials<'a>(
        &'a self,
    ) -> aws_credential_types::provider::future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        aws_credential_types::provider::future::ProvideCredentials::new(async move {
            let provider = self
                .provider
                .get_or_init(|| {
                    aws_config::sts::AssumeRoleProvider::builder(self.role.role_arn.clone())
                        .external_id(self.role.external_id.clone())
                        .session_name(SESSION_NAME)
                        .configure(&self.base)
                        .build()
                })
                .await;
            provider.provide_credentials().await
        })
    }
}
