//! The pure decision of a sync: from the Vault inventory and the AWS listing, every step of a run
//! and what each step waits for. No I/O, no clock, no values. The executor only performs the
//! steps; nothing is decided at execution time. Its rooms: [`token`] (version ids), [`shape`]
//! (what a replica should look like), [`ownership`] (whose a replica is), [`decide`] (one
//! replica's step), [`keys`] (one replica per key), [`breaker`] (how much may be deleted).

pub mod breaker;
pub mod decide;
pub mod keys;
pub mod ownership;
pub mod shape;
pub mod token;

use std::collections::{BTreeMap, BTreeSet, HashMap};

use contract::select::Excluded;

use serde::Serialize;

use crate::model::{AwsSecret, EntryState, Granularity, RegionStatus, Rule, VaultEntry};
use contract::tags;
use decide::{Existing, VaultSide, decide, gone_from_vault};
pub use keys::ExpandSource;
use ownership::{Ownership, ownership, source_of};
pub use shape::{MetaChanges, RegionMoves, Source, Target};
pub use token::{key_token, version_token};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum UpdateReason {
    /// Vault has a newer version.
    NewVersion,
    /// Vault's latest version is deleted: its newest live one is replicated.
    LatestDeleted,
    /// Vault is behind AWS (restored) and the operator accepted it for this run.
    Rollback,
    /// A secret the sample created (or one listed for adoption) is taken over in place.
    Adopt,
    /// Changed in AWS by someone else, overwritten by configuration.
    Overwrite,
    /// A previous run wrote the value but not the tags.
    FinishTags,
    /// Only tags, the description or the replica regions differ: no value is read.
    Metadata,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ConflictKind {
    /// A secret under the prefix that this tool does not own.
    Foreign,
    /// The sample's replica, which the rule does not take over (`--adopt-sample`).
    SampleReplica,
    /// Owned by this tool, but replicated from another Vault mount or path.
    OtherSource,
    /// Someone wrote a new value in AWS after the replicator did.
    ModifiedOutside,
    /// A secret this tool does not own is scheduled for deletion under the name.
    ScheduledForDeletion,
    /// AWS holds a later version than Vault's latest: Vault was restored or failed over.
    VaultBehind,
}

impl ConflictKind {
    /// Whether the conflict fails the run (and so is notified): it needs the operator.
    pub fn fails_the_run(self) -> bool {
        matches!(self, Self::VaultBehind)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum InvalidKind {
    InvalidName,
    NameTooLong,
    NameCollision,
    /// A tag from custom metadata breaks AWS's rules, or there would be more than 50.
    InvalidTag,
    /// More keys than the rule lets one secret have replicas.
    TooManyKeys,
    /// A value over Secrets Manager's limit.
    ValueTooLarge,
}

/// How an update writes the value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Write {
    /// The planned version's value is read and written as a new AWS version, which is then
    /// made current from the version the plan saw current.
    Value,
    /// The planned version is in AWS already: made current, its value neither read nor sent.
    Stage,
    /// It is current: tags, description and regions only.
    None,
}

/// What a deletion waits for, and what it checks first.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Guard {
    /// Its Vault secret was gone (or not selected) when planned: read again first, and kept
    /// when it is back (or selected again).
    SourceGone { vault_path: String },
    /// A stale name: deleted only once these steps of the plan (its successors, the replicas
    /// that take over from it) succeeded. None: they are at the version already.
    After(Vec<usize>),
    /// A key the version that was read does not have: deleted only while that version is still
    /// the secret's latest.
    KeyRemoved {
        vault_path: String,
        version: u64,
        /// The removed key (its replica's `vault-key` tag; boxed: a deletion stays small).
        key: Box<str>,
    },
}

/// One decision.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Step {
    Create {
        target: Box<Target>,
    },
    Update {
        target: Box<Target>,
        arn: String,
        reason: UpdateReason,
        /// Restore it first: it is scheduled for deletion.
        restore: bool,
        write: Write,
        /// The version id that carried `AWSCURRENT` when planned: the stage moves from it, or
        /// not at all (another run moved it on meanwhile).
        #[serde(skip)]
        expect_current: Option<String>,
        /// Tags, description and regions to set besides the value.
        #[serde(skip_serializing_if = "no_changes")]
        changes: Box<MetaChanges>,
    },
    /// A secret replicated one key per AWS secret whose replicas are not all current: its
    /// value is read, and its keys are planned then ([`keys::expand`]).
    Expand {
        name: String,
        source: Box<ExpandSource>,
    },
    Unchanged {
        name: String,
    },
    Delete {
        name: String,
        arn: String,
        guard: Guard,
        /// The version id that carried `AWSCURRENT` when planned: a replica written since
        /// (another run brought it up to date) is not deleted.
        #[serde(skip)]
        expect_current: Option<String>,
    },
    /// An owned secret that goes no further this run: its source is gone and the policy, the
    /// breaker or a successor not yet written keeps it.
    Keep {
        name: String,
        why: String,
        /// The report says why (a stale name kept while its successor cannot be written).
        #[serde(skip)]
        warn: bool,
    },
    /// Deleted in Vault and not in AWS (or already scheduled for deletion there).
    Skip {
        name: String,
    },
    Conflict {
        name: String,
        kind: ConflictKind,
        message: String,
    },
    Invalid {
        name: String,
        vault_path: String,
        kind: InvalidKind,
        message: String,
    },
    /// Vault could not tell the secret's state.
    VaultFailed {
        name: String,
        kind: String,
        message: String,
    },
}

impl Step {
    pub fn name(&self) -> &str {
        match self {
            Self::Create { target } | Self::Update { target, .. } => &target.name,
            Self::Unchanged { name }
            | Self::Expand { name, .. }
            | Self::Delete { name, .. }
            | Self::Keep { name, .. }
            | Self::Skip { name }
            | Self::Conflict { name, .. }
            | Self::Invalid { name, .. }
            | Self::VaultFailed { name, .. } => name,
        }
    }

    /// Why a step writes nothing that others could wait for; `None` when it does write.
    fn refusal(&self) -> Option<String> {
        match self {
            Self::Conflict { kind, message, .. } => Some(format!(
                "{}: {message}",
                serde_json::to_value(kind)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default()
            )),
            Self::Invalid { message, .. } | Self::VaultFailed { message, .. } => {
                Some(message.clone())
            }
            Self::Keep { why, .. } => Some(why.clone()),
            Self::Skip { .. } => Some("skipped".into()),
            _ => None,
        }
    }
}

fn no_changes(changes: &impl std::ops::Deref<Target = MetaChanges>) -> bool {
    changes.is_empty()
}

/// Every step of a run.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Plan {
    /// The steps that do something or say something; a `Delete` may name others it waits for
    /// by their index here.
    pub steps: Vec<Step>,
    /// Replicas already as they should be: counted, not listed (a run over 500,000 holds no
    /// step for each); listed in `unchanged_names` when the run asked for it.
    pub unchanged: u64,
    #[serde(skip)]
    pub unchanged_names: Vec<String>,
    #[serde(skip)]
    pub list_unchanged: bool,
    /// Secrets in Vault that the rule does not select (include/exclude, opt-in or -out) and
    /// that have no replica: counted, not listed.
    pub excluded: u64,
    /// Set when the full sync's breaker refused this run's deletions (a failure).
    pub breaker: Option<String>,
    /// Set when change-driven deletions wait for the next full sync (not a failure).
    pub deferred: Option<String>,
    /// What is done but worth a look: (name, kind, message).
    pub warnings: Vec<(String, &'static str, String)>,
    /// Deletions the breaker still allows after the planned ones: for the replicas of keys
    /// removed in Vault, known only once an expanded secret's value is read.
    pub delete_budget: usize,
    /// The rule's replicas in AWS (not scheduled for deletion), as this run saw them.
    pub owned: usize,
}

impl Plan {
    /// Says, for each replica moved back to an older Vault version (its latest is deleted, or
    /// a rollback was accepted), that it was.
    fn note_fallbacks(&mut self) {
        for step in &self.steps {
            if let Step::Update { target, reason, .. } = step {
                let (kind, why) = match reason {
                    UpdateReason::LatestDeleted => (
                        "latest_deleted_fallback",
                        "its latest version is deleted in Vault",
                    ),
                    UpdateReason::Rollback => (
                        "vault_rollback_accepted",
                        "Vault is behind AWS and this run accepted it",
                    ),
                    _ => continue,
                };
                self.warnings.push((
                    target.name.clone(),
                    kind,
                    format!("{why}: Vault version {} replicated", target.version),
                ));
            }
        }
    }

    /// Adds a step, counting an `Unchanged` one instead of holding it.
    pub fn push(&mut self, step: Step) {
        match step {
            Step::Unchanged { name } => {
                self.unchanged += 1;
                if self.list_unchanged {
                    self.unchanged_names.push(name);
                }
            }
            step => self.steps.push(step),
        }
    }

    /// Adds the step of a replica others may wait for: its index when it writes, `None` when
    /// it is as it should be already, the reason when it cannot be written this run.
    fn push_successor(&mut self, step: Step) -> Result<Option<usize>, String> {
        let outcome = match step.refusal() {
            Some(why) => Err(why),
            None if matches!(step, Step::Unchanged { .. }) => Ok(None),
            None => Ok(Some(self.steps.len())),
        };
        self.push(step);
        outcome
    }
}

/// What a run looks at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope<'a> {
    /// Every secret under the path, in Vault and in AWS.
    Everything,
    /// Only these Vault paths (relative to the sub-path: a change-driven run): each one's
    /// metadata, read explicitly, and its AWS counterparts by name. Nothing else is judged.
    Paths(&'a [String]),
}

/// What one run brings to the planner besides the inventories.
#[derive(Clone, Debug)]
pub struct Run<'a> {
    pub scope: Scope<'a>,
    /// Replicate Vault's version even where AWS holds a later one (this run only).
    pub accept_vault_rollback: bool,
    /// Change-driven runs: what they may still delete until the next full sync.
    pub allowance: breaker::Allowance,
    /// Replica regions as AWS reports them, of the replicas the run looked at
    /// ([`regions_to_observe`]); the others' are taken as their tags record them.
    pub regions: &'a BTreeMap<String, Vec<RegionStatus>>,
    /// The replicas whose resource policy an audit found other than the configured one
    /// ([`policies_to_audit`]): written again.
    pub drifted_policies: &'a BTreeSet<String>,
    /// List the unchanged replicas by name (a dry run shows them).
    pub list_unchanged: bool,
}

/// No replica's policy drifted.
pub static NO_DRIFT: BTreeSet<String> = BTreeSet::new();

impl<'a> Run<'a> {
    /// A full sync with nothing observed beyond the listing.
    pub fn full(regions: &'a BTreeMap<String, Vec<RegionStatus>>) -> Self {
        Self {
            scope: Scope::Everything,
            accept_vault_rollback: false,
            allowance: breaker::Allowance::NoFullSync,
            regions,
            drifted_policies: &NO_DRIFT,
            list_unchanged: false,
        }
    }
}

/// The replicas whose resource policy is looked at (`GetResourcePolicy`) before planning: with
/// a policy configured, the rule's replicas whose tag says they have it and whose hour of the
/// `audit` cycle this is, so a policy someone changed in AWS is put back within a cycle. (One
/// whose tag says otherwise is written anyway.)
pub fn policies_to_audit<'a>(
    aws: &'a [AwsSecret],
    rule: &Rule,
    audit: Option<RegionAudit>,
) -> Vec<&'a AwsSecret> {
    let (Some(policy), Some(audit)) = (&rule.resource_policy, audit) else {
        return Vec::new();
    };
    let wanted = shape::policy_tag(policy);
    aws.iter()
        .filter(|s| !s.pending_deletion && ownership::is_ours(s, rule))
        .filter(|s| s.tags.get(tags::RESOURCE_POLICY) == Some(wanted.as_str()))
        .filter(|s| audit_slot(&s.name, audit.hours) == audit.hour)
        .collect()
}

/// When the replica regions of the rule's replicas are looked at: each replica in one hour of
/// every cycle of `hours` hours, the hour a digest of its name gives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RegionAudit {
    /// The hour of the cycle now (0 to `hours - 1`).
    pub hour: u64,
    pub hours: u64,
}

/// The replicas whose replication AWS is asked about before planning: the rule's replicas whose
/// recorded regions are not the wanted ones (their moves depend on what is there), and, with
/// replica regions configured, those whose hour of the `audit` cycle this is: so regions
/// removed or promoted by someone else are found within one cycle. In listing order.
pub fn regions_to_observe<'a>(
    aws: &'a [AwsSecret],
    rule: &Rule,
    audit: Option<RegionAudit>,
) -> Vec<&'a AwsSecret> {
    let wanted =
        (!rule.replica_regions.is_empty()).then(|| shape::regions_tag(&rule.replica_regions));
    aws.iter()
        .filter(|s| !s.pending_deletion && ownership::is_ours(s, rule))
        .filter(|s| {
            let recorded = s.tags.get(tags::REPLICA_REGIONS);
            recorded != wanted.as_deref()
                || (wanted.is_some()
                    && audit.is_some_and(|a| audit_slot(&s.name, a.hours) == a.hour))
        })
        .collect()
}

/// The hour of a cycle of `hours` a replica's regions are looked at: a digest of its name.
pub fn audit_slot(name: &str, hours: u64) -> u64 {
    use sha2::Digest;
    let d = sha2::Sha256::digest(name.as_bytes());
    u64::from(u32::from_be_bytes([d[0], d[1], d[2], d[3]])) % hours.max(1)
}

fn name_problem(p: shape::NameProblem) -> InvalidKind {
    match p {
        shape::NameProblem::InvalidName => InvalidKind::InvalidName,
        shape::NameProblem::NameTooLong => InvalidKind::NameTooLong,
    }
}

/// The step of a stale replica (a name no longer used) given its successors: deleted after
/// them, by the deletion policy; kept while one cannot be written.
fn keep_for(stale: &AwsSecret, successors: Result<Vec<usize>, String>, rule: &Rule) -> Step {
    match successors {
        Ok(after) => gone_from_vault(
            stale.name.to_string(),
            Some(stale),
            rule,
            Guard::After(after),
            "a replica under a name no longer used",
        ),
        Err(why) => Step::Keep {
            name: stale.name.to_string(),
            why: format!(
                "a replica under a name no longer used, kept until the one that replaces it is written ({why})"
            ),
            warn: true,
        },
    }
}

/// Where each AWS secret is by name, which Vault secret each of the rule's replicas comes from,
/// and which entry each rendered name belongs to. Held compactly: a run over 500,000 replicas
/// holds one index.
struct Index<'a> {
    aws: &'a [AwsSecret],
    entries: &'a [VaultEntry],
    rule: &'a Rule,
    /// The secrets' positions in name order, when they do not come sorted by name.
    order: Option<Vec<u32>>,
    /// The rule's replicas that are not at their source's own name (stale names, key replicas,
    /// whole replicas under `secret-key`), by source.
    by_source: HashMap<&'a str, Vec<usize>>,
    /// Under a template other than `{path}`: the entry each rendered name belongs to, `None`
    /// when several render it.
    rendered: HashMap<String, Option<usize>>,
}

impl<'a> Index<'a> {
    fn new(entries: &'a [VaultEntry], aws: &'a [AwsSecret], rule: &'a Rule) -> Self {
        let per_key = rule.granularity == Granularity::SecretKey;
        let plain = rule.name_template.is_plain_path();
        let mut rendered: HashMap<String, Option<usize>> = HashMap::new();
        if !per_key && !plain {
            rendered.reserve(entries.len());
            for (i, e) in entries.iter().enumerate() {
                rendered
                    .entry(rule.replica_name(&e.rel_path, None))
                    .and_modify(|claim| *claim = None)
                    .or_insert(Some(i));
            }
        }
        let order = (!aws.is_sorted_by(|a, b| a.name <= b.name)).then(|| {
            let mut order: Vec<u32> = (0..aws.len() as u32).collect();
            order.sort_unstable_by(|a, b| aws[*a as usize].name.cmp(&aws[*b as usize].name));
            order
        });
        let mut by_source: HashMap<&str, Vec<usize>> = HashMap::new();
        for (i, secret) in aws.iter().enumerate() {
            if !ownership::is_ours(secret, rule) {
                continue;
            }
            let source = identify(secret, rule, &rendered, entries);
            // (Under the plain template a replica without a source tag is at its own name: its
            // source is its name. No name is rendered for it.)
            let own_name = !per_key
                && ((plain
                    && ownership::source_tag(secret).is_none()
                    && secret.tags.get(tags::KEY).is_none())
                    || *secret.name == *rule.replica_name(source, None));
            if !own_name {
                by_source.entry(source).or_default().push(i);
            }
        }
        Self {
            aws,
            entries,
            rule,
            order,
            by_source,
            rendered,
        }
    }

    /// The position of the secret named `name`.
    fn at(&self, name: &str) -> Option<usize> {
        match &self.order {
            None => self.aws.binary_search_by(|s| (*s.name).cmp(name)).ok(),
            Some(order) => order
                .binary_search_by(|i| (*self.aws[*i as usize].name).cmp(name))
                .ok()
                .map(|at| order[at] as usize),
        }
    }

    /// The source of the secret at `i` when it is the rule's replica.
    fn source(&self, i: usize) -> Option<&'a str> {
        let secret = &self.aws[i];
        ownership::is_ours(secret, self.rule)
            .then(|| identify(secret, self.rule, &self.rendered, self.entries))
    }
}

/// The Vault secret an owned replica comes from: its `vault-secret` tag; or, one without the tag
/// (removed by hand) at an entry's rendered name whose version id is that entry's, that entry;
/// or else its name after the prefix (the plain template's replicas). (An untagged key replica
/// is found by its secret's expansion, at its key's name, and proven there.)
fn identify<'a>(
    secret: &'a AwsSecret,
    rule: &Rule,
    rendered: &HashMap<String, Option<usize>>,
    entries: &'a [VaultEntry],
) -> &'a str {
    if let Some(source) = ownership::source_tag(secret) {
        return source;
    }
    if let Some(Some(i)) = rendered.get(&*secret.name) {
        let rel = &*entries[*i].rel_path;
        if ownership::proven(secret, rule, rel) {
            return rel;
        }
    }
    source_of(secret, rule)
}

/// Whether a replica without a `vault-secret` tag cannot be told whose it is: under a template
/// other than `{path}` (or with one replica per key) its name alone does not say it, unless its
/// version id proves it.
fn unprovable(secret: &AwsSecret, rule: &Rule, source: &str) -> bool {
    let named_by_template =
        !rule.name_template.is_plain_path() || rule.granularity == Granularity::SecretKey;
    named_by_template
        && ownership::source_tag(secret).is_none()
        && !ownership::proven(secret, rule, source)
}

/// Decides every step of one run over `run.scope`.
pub fn plan(entries: &[VaultEntry], aws: &[AwsSecret], rule: &Rule, run: &Run<'_>) -> Plan {
    let per_key = rule.granularity == Granularity::SecretKey;
    let index = Index::new(entries, aws, rule);
    let mut plan = Plan {
        list_unchanged: run.list_unchanged,
        ..Plan::default()
    };
    let mut handled = vec![false; aws.len()];
    let mut live = 0usize;
    let none: &[usize] = &[];
    // `tag:` keys of custom metadata that may not set tags, and on how many secrets.
    let mut ignored_tags: BTreeMap<String, usize> = BTreeMap::new();

    for entry in entries {
        let rel = &*entry.rel_path;
        let vault_path = rule.vault_path(rel);
        // A display name with one replica per key (their names need the value).
        let name = match per_key {
            true => format!("{}/{rel}", rule.prefix),
            false => rule.replica_name(rel, None),
        };
        let stale = index.by_source.get(rel).map_or(none, Vec::as_slice);
        for &i in stale {
            handled[i] = true;
        }
        let at_name = index.at(&name).filter(|_| !per_key);
        let at_source = at_name.map(|i| (i, index.source(i)));
        if let Some((i, Some(source))) = at_source
            && source == rel
        {
            handled[i] = true;
        }
        let own = at_source
            .filter(|(_, source)| *source == Some(rel))
            .map(|(i, _)| &aws[i]);

        // A step that writes nothing: the stale replicas stay, saying why.
        let refuse = |plan: &mut Plan, step: Step| {
            let successor = plan.push_successor(step);
            for &i in stale {
                plan.push(keep_for(
                    &aws[i],
                    successor.clone().map(Vec::from_iter),
                    rule,
                ));
            }
        };
        if matches!(index.rendered.get(name.as_str()), Some(None)) {
            let step = Step::Invalid {
                message: format!("several Vault paths map to {name}"),
                name,
                vault_path,
                kind: InvalidKind::NameCollision,
            };
            refuse(&mut plan, step);
            continue;
        }
        let (version, created_time, latest, earlier, custom) = match &entry.state {
            EntryState::Live {
                version,
                created_time,
                latest,
                earlier,
                custom,
            } => (*version, created_time, *latest, earlier, custom),
            EntryState::Unreadable { kind, message } => {
                plan.push(Step::VaultFailed {
                    name,
                    kind: (*kind).to_owned(),
                    message: message.clone(),
                });
                continue;
            }
            EntryState::Deleted | EntryState::Excluded(_) => {
                let why = match &entry.state {
                    EntryState::Excluded(why) => why.reason(),
                    _ => "deleted in Vault",
                };
                // Writing a secret's metadata is a capability apart from deleting it: a
                // replica its own metadata leaves out is kept whatever the deletion policy.
                let by_metadata = matches!(
                    entry.state,
                    EntryState::Excluded(Excluded::OptedOut | Excluded::NotOptedIn)
                );
                let gone = |secret: &AwsSecret| match gone_from_vault(
                    secret.name.to_string(),
                    Some(secret),
                    rule,
                    Guard::SourceGone {
                        vault_path: vault_path.clone(),
                    },
                    why,
                ) {
                    Step::Delete { name, .. } if by_metadata => Step::Keep {
                        name,
                        why: format!(
                            "{why}; kept: Vault metadata never deletes a replica (exclude its path, or delete it by hand)"
                        ),
                        warn: false,
                    },
                    step => step,
                };
                match own {
                    Some(secret) => plan.push(gone(secret)),
                    None if !stale.is_empty() => {}
                    None if matches!(entry.state, EntryState::Excluded(_)) => plan.excluded += 1,
                    None => plan.push(Step::Skip { name }),
                }
                for &i in stale {
                    plan.push(gone(&aws[i]));
                }
                continue;
            }
        };
        live += 1;
        let shape::UserShape {
            tags: user_tags,
            description,
            ignored,
        } = match shape::user_shape(&rule.tags, &rule.metadata_tag_keys, custom) {
            Ok(shape) => shape,
            Err(message) => {
                let step = Step::Invalid {
                    name,
                    vault_path,
                    kind: InvalidKind::InvalidTag,
                    message,
                };
                refuse(&mut plan, step);
                continue;
            }
        };
        for key in &ignored {
            *ignored_tags.entry(key.clone()).or_default() += 1;
        }
        let source = Source {
            rel_path: rel.to_owned(),
            vault_path,
            version,
            created_time: created_time.text().into_owned(),
            user_tags,
            description,
            metadata_ignored: ignored,
        };
        let vault = VaultSide { latest, earlier };
        if per_key {
            let group: Vec<&AwsSecret> = stale.iter().map(|&i| &aws[i]).collect();
            keys::before_read(name, source, vault, &group, rule, run, &mut plan);
            continue;
        }

        let target = source.target(rule, None);
        let step = match check_target(&target) {
            Err(step) => step,
            Ok(()) => {
                if shape::looks_like_arn_suffix(&target.name) {
                    plan.warnings.push((
                        target.name.clone(),
                        shape::ARN_SUFFIX_KIND,
                        shape::ARN_SUFFIX_WARNING.to_owned(),
                    ));
                }
                let existing = at_name.map(|i| Existing {
                    secret: &aws[i],
                    source: at_source.and_then(|(_, s)| s).unwrap_or(""),
                });
                decide(target, rel, existing, vault, rule, run)
            }
        };
        refuse(&mut plan, step);
    }
    if !ignored_tags.is_empty() {
        let mut list: Vec<String> = ignored_tags
            .iter()
            .take(10)
            .map(|(key, n)| format!("{key:?} in {n} secret(s)"))
            .collect();
        if ignored_tags.len() > 10 {
            list.push(format!("{} more keys", ignored_tags.len() - 10));
        }
        plan.warnings.push((
            String::new(),
            shape::METADATA_TAG_IGNORED,
            format!(
                "custom metadata sets tags it may not, ignored: {}; Vault metadata may set only the keys named in metadata_tag_keys / --metadata-tag-key, and never one the operator sets",
                list.join(", ")
            ),
        ));
    }

    // Owned secrets whose Vault secret no entry named: gone (metadata deleted, or never there).
    // A change-driven run judges only the paths it was given.
    let blind: Vec<&str> = entries
        .iter()
        .filter(|e| e.rel_path.ends_with('/') && matches!(e.state, EntryState::Unreadable { .. }))
        .map(|e| &*e.rel_path)
        .collect();
    for (i, secret) in aws.iter().enumerate() {
        let Some(source) = index.source(i) else {
            continue;
        };
        if !secret.pending_deletion {
            plan.owned += 1;
        }
        if handled[i] {
            continue;
        }
        if let Scope::Paths(rels) = run.scope
            && !rels.iter().any(|r| r == source)
        {
            continue;
        }
        let tagged_prefix = matches!(
            ownership(secret, rule),
            Ownership::Ours {
                tagged_prefix: true
            }
        );
        let step = if !secret.pending_deletion && unprovable(secret, rule, source) {
            Step::Keep {
                name: secret.name.to_string(),
                why: "its vault-secret tag is missing and its version id does not say which Vault secret it replicates: kept (tag it, or delete it by hand)".into(),
                warn: true,
            }
        } else if let Some(folder) = blind.iter().find(|f| source.starts_with(**f)) {
            Step::Keep {
                name: secret.name.to_string(),
                why: format!(
                    "its Vault folder {}/{folder} could not be listed this run",
                    rule.mount
                ),
                warn: false,
            }
        } else if !tagged_prefix && !secret.pending_deletion {
            Step::Keep {
                name: secret.name.to_string(),
                why: format!(
                    "written before the {} tag, so it may be a nested sync's; kept (delete it by hand if it is this one's)",
                    tags::PREFIX
                ),
                warn: false,
            }
        } else {
            gone_from_vault(
                secret.name.to_string(),
                Some(secret),
                rule,
                Guard::SourceGone {
                    vault_path: rule.vault_path(source),
                },
                "deleted in Vault",
            )
        };
        plan.push(step);
    }

    match run.scope {
        Scope::Everything => {
            let owned = plan.owned;
            breaker::full_sync(&mut plan, owned, live, rule.max_delete_share);
        }
        Scope::Paths(_) => breaker::change_driven(&mut plan, &run.allowance),
    }
    plan.note_fallbacks();
    plan
}

/// A name AWS would refuse is an `Invalid` step, and so is a replica with more tags than AWS
/// allows.
fn check_target(target: &Target) -> Result<(), Step> {
    if let Err((kind, message)) = shape::check_name(&target.name) {
        return Err(Step::Invalid {
            name: target.name.clone(),
            vault_path: target.vault_path.clone(),
            kind: name_problem(kind),
            message,
        });
    }
    if target.tags.len() > tags::MAX_TAGS {
        return Err(Step::Invalid {
            name: target.name.clone(),
            vault_path: target.vault_path.clone(),
            kind: InvalidKind::InvalidTag,
            message: format!(
                "{} tags with this tool's own, over AWS's limit of {}",
                target.tags.len(),
                tags::MAX_TAGS
            ),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests;
