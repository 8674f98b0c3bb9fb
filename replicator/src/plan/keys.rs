//! One replica per key (`secret-key` granularity). Before any value is read: a secret whose
//! replicas at its version are all there (as many as the version has keys, the count each
//! carries) is decided from them, without a read; otherwise it is expanded, and once its value
//! is read, [`expand`] plans each key's replica, the stale replicas after their successors, and
//! refuses a secret with more keys than the cap as a whole. Pure.

use std::collections::{BTreeMap, HashMap};

use super::decide::{Existing, VaultSide, decide, gone_from_vault};
use super::ownership::{proven, source_tag};
use super::shape::{
    ARN_SUFFIX_WARNING, MAX_VALUE_BYTES, Source, check_name, looks_like_arn_suffix,
};
use super::token::recorded_token;
use super::{Guard, InvalidKind, Plan, Run, Step, Write, keep_for, name_problem};
use crate::model::{AwsSecret, Rule, Stamp};
use contract::tags;

/// A secret replicated one key per AWS secret whose replicas are not all at its version: its
/// value says which keys there are.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ExpandSource {
    #[serde(flatten)]
    pub source: Source,
    /// Vault's `current_version`.
    #[serde(skip)]
    pub latest: u64,
    #[serde(skip)]
    pub earlier: Vec<(u64, Stamp)>,
    /// The rule's replicas of this secret now: its keys', and a whole-secret one from before
    /// the granularity changed.
    #[serde(skip)]
    pub group: Vec<AwsSecret>,
}

impl ExpandSource {
    fn vault(&self) -> VaultSide<'_> {
        VaultSide {
            latest: self.latest,
            earlier: &self.earlier,
        }
    }
}

/// The steps of a live secret, one replica per key, from its replicas in AWS (`group`): each
/// replica's own step while those at this version are complete (as many as the version had keys,
/// each under the name the template gives it now), the others stale; otherwise one `Expand`.
pub fn before_read(
    display: String,
    source: Source,
    vault: VaultSide<'_>,
    group: &[&AwsSecret],
    rule: &Rule,
    run: &Run<'_>,
    plan: &mut Plan,
) {
    let current: Vec<&AwsSecret> = group
        .iter()
        .copied()
        .filter(|s| !s.pending_deletion)
        .filter(|s| {
            let key = s.tags.get(tags::KEY);
            key.is_some()
                && recorded_token(s, rule, &source.rel_path).as_deref()
                    == Some(source.token(rule, key).as_str())
        })
        .collect();
    let n = current.len();
    let count = n.to_string();
    let complete = n > 0
        && current.iter().all(|s| {
            let key = s.tags.get(tags::KEY).unwrap_or("");
            s.tags.get(tags::KEY_COUNT) == Some(count.as_str())
                && *s.name == *rule.replica_name(&source.rel_path, Some(key))
        });
    // Each current replica's step; a value to write (someone wrote over one) is a key's value,
    // which only the secret's read gives: the secret is expanded instead.
    let steps: Vec<Step> = if complete {
        current
            .iter()
            .map(|secret| {
                let key = secret.tags.get(tags::KEY).unwrap_or("");
                let existing = Existing {
                    secret,
                    source: &source.rel_path,
                };
                decide(
                    source.target(rule, Some((key, n))),
                    &source.rel_path,
                    Some(existing),
                    vault,
                    rule,
                    run,
                )
            })
            .collect()
    } else {
        Vec::new()
    };
    let needs_value = |s: &Step| {
        matches!(
            s,
            Step::Create { .. }
                | Step::Update {
                    write: Write::Value,
                    ..
                }
        )
    };
    if !complete || steps.iter().any(needs_value) {
        plan.push(Step::Expand {
            name: display,
            source: Box::new(ExpandSource {
                source,
                latest: vault.latest,
                earlier: vault.earlier.to_vec(),
                group: group.iter().map(|s| (*s).clone()).collect(),
            }),
        });
        return;
    }
    let mut successors: Result<Vec<usize>, String> = Ok(Vec::new());
    for step in steps {
        let written = plan.push_successor(step);
        successors = match (successors, written) {
            (Ok(mut all), Ok(at)) => {
                all.extend(at);
                Ok(all)
            }
            (Err(why), _) | (_, Err(why)) => Err(why),
        };
    }
    // The rest: keys the version no longer has (nothing to wait for), or replicas from before
    // (another name, the whole secret), which wait for every key's replica.
    for stale in group.iter().filter(|s| !current.contains(s)) {
        let removed = stale
            .tags
            .get(tags::KEY)
            .filter(|k| !current.iter().any(|c| c.tags.get(tags::KEY) == Some(*k)));
        let step = if let Some(key) = removed {
            gone_from_vault(
                stale.name.to_string(),
                Some(stale),
                rule,
                Guard::KeyRemoved {
                    vault_path: source.vault_path.clone(),
                    version: source.version,
                    key: Box::from(key),
                },
                "its key is no longer in the Vault secret",
            )
        } else {
            keep_for(stale, successors.clone(), rule)
        };
        plan.push(step);
    }
}

/// The steps of an expanded secret once its value is read: `keys` are its keys with the length
/// of each value, sorted; `found` what AWS holds under the names they render to (whoever's).
/// A secret with more keys than the rule's cap is refused whole: nothing is created.
pub fn expand(
    display: &str,
    src: &ExpandSource,
    keys: &[(String, usize)],
    found: &[AwsSecret],
    rule: &Rule,
    run: &Run<'_>,
) -> Plan {
    let mut plan = Plan::default();
    let source = &src.source;
    if keys.len() > rule.max_keys_per_secret {
        plan.steps.push(Step::Invalid {
            name: display.to_owned(),
            vault_path: source.vault_path.clone(),
            kind: InvalidKind::TooManyKeys,
            message: format!(
                "version {} has {} keys, over the cap of {} replicas a secret may have (REPLICATOR_MAX_KEYS_PER_SECRET): nothing of it is created",
                source.version,
                keys.len(),
                rule.max_keys_per_secret
            ),
        });
        return plan;
    }
    let by_name: HashMap<&str, &AwsSecret> = found
        .iter()
        .chain(&src.group)
        .map(|s| (&*s.name, s))
        .collect();
    let n = keys.len();
    // Each key's step index (`None` when it needs no write), and whether it can succeed.
    let mut successors: BTreeMap<&str, Result<Option<usize>, String>> = BTreeMap::new();
    let mut wanted = Vec::with_capacity(n);
    for (key, len) in keys {
        let target = source.target(rule, Some((key, n)));
        wanted.push(target.name.clone());
        let step = if let Err((kind, message)) = check_name(&target.name) {
            Step::Invalid {
                name: target.name.clone(),
                vault_path: target.vault_path.clone(),
                kind: name_problem(kind),
                message,
            }
        } else if *len > MAX_VALUE_BYTES {
            Step::Invalid {
                name: target.name.clone(),
                vault_path: target.vault_path.clone(),
                kind: InvalidKind::ValueTooLarge,
                message: format!(
                    "key {key} of version {} is {len} bytes, over the Secrets Manager limit of {MAX_VALUE_BYTES}",
                    source.version
                ),
            }
        } else {
            if looks_like_arn_suffix(&target.name) {
                plan.warnings.push((
                    target.name.clone(),
                    super::shape::ARN_SUFFIX_KIND,
                    ARN_SUFFIX_WARNING.to_owned(),
                ));
            }
            // A replica of this key that lost its source tag (removed by hand) is still its
            // own when its version id says so.
            let existing = by_name.get(target.name.as_str()).map(|s| Existing {
                secret: s,
                source: source_tag(s).unwrap_or_else(|| {
                    if super::ownership::is_ours(s, rule) && proven(s, rule, &source.rel_path) {
                        &source.rel_path
                    } else {
                        ""
                    }
                }),
            });
            decide(target, &source.rel_path, existing, src.vault(), rule, run)
        };
        successors.insert(key.as_str(), plan.push_successor(step));
    }
    // Stale replicas: of a key renamed (after its successor), of the whole secret (after every
    // key's), of a key removed (nothing to wait for).
    for stale in src
        .group
        .iter()
        .filter(|s| !s.pending_deletion && !wanted.iter().any(|w| **w == *s.name))
    {
        let step = match stale.tags.get(tags::KEY) {
            Some(key) => match successors.get(key) {
                Some(succ) => keep_for(stale, succ.clone().map(Vec::from_iter), rule),
                None => gone_from_vault(
                    stale.name.to_string(),
                    Some(stale),
                    rule,
                    Guard::KeyRemoved {
                        vault_path: source.vault_path.clone(),
                        version: source.version,
                        key: Box::from(key),
                    },
                    "its key is no longer in the Vault secret",
                ),
            },
            None if keys.is_empty() => Step::Keep {
                name: stale.name.to_string(),
                why: "the Vault secret has no keys, so no replica replaces this one: kept".into(),
                warn: true,
            },
            None => {
                let all: Result<Vec<usize>, String> = successors
                    .values()
                    .cloned()
                    .map(|s| s.map(Vec::from_iter))
                    .try_fold(Vec::new(), |mut acc, s| {
                        acc.extend(s?);
                        Ok(acc)
                    });
                keep_for(stale, all, rule)
            }
        };
        plan.push(step);
    }
    plan.note_fallbacks();
    plan
}
