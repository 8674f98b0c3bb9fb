//! One sync run from configuration to report: resolve the Vault connection; observe (walk
//! Vault, list AWS, and look at the replication of the replicas that need it); plan; execute;
//! plan each expanded secret's keys once its value is read, and execute them; plan again, once,
//! what another writer took meanwhile; notify. Shared by the CLI and the Lambda. Network I/O;
//! every decision is the planner's.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use aws_smithy_types::DateTime;
use aws_types::SdkConfig;
use futures::stream::{self, StreamExt};

use crate::aws::{AwsCounters, AwsSecret, Notifier, SecretsManager};
use crate::config::{
    CaCert, ConfigError, ConnectionSource, Resolved, Rule, Settings, SyncArgs, VaultConnection,
};
use crate::execute::{Executor, KeyValues, Outcome, record, record_dry};
use crate::model::RegionStatus;
use crate::plan::breaker::{Allowance, breaker_allows};
use crate::plan::{Plan, Scope, Step};
use crate::progress::Progress;
use crate::report::{Problem, Report};
use crate::vault::VaultClient;
use contract::ConnectionSecret;

/// Errors that stop a run before any secret is planned.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("connection secret {name}: {message}")]
    Connection { name: String, message: String },
    #[error(transparent)]
    Vault(#[from] crate::vault::VaultError),
    #[error(transparent)]
    Aws(#[from] crate::aws::AwsError),
    /// A failure of a walk that served many rules, as each of them reports it.
    #[error("{message}")]
    Shared { kind: &'static str, message: String },
}

impl SyncError {
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Config(_) => "config_invalid",
            Self::Connection { .. } => "connection_secret_invalid",
            Self::Vault(e) => e.kind(),
            Self::Aws(e) => e.kind.as_str(),
            Self::Shared { kind, .. } => kind,
        }
    }
}

/// The Vault connection of this run: the flags', or the connection secret's as it is now.
async fn connection(
    source: &ConnectionSource,
    sm: &SecretsManager,
) -> Result<VaultConnection, SyncError> {
    match source {
        ConnectionSource::Direct(conn) => Ok(conn.clone()),
        ConnectionSource::Secret { name, defaults } => {
            let raw = sm.read_string(name).await?;
            let conn: ConnectionSecret =
                serde_json::from_str(raw.expose()).map_err(|e| SyncError::Connection {
                    name: name.clone(),
                    // serde's message names the field, never the value of a string.
                    message: format!("not the expected JSON ({{\"vaultAddress\", \"vaultToken\" or \"vaultRoleId\"+\"vaultSecretId\", ...}}): {}", crate::vault::json_problem(&e)),
                })?;
            VaultConnection::from_secret(&conn, defaults).map_err(|message| SyncError::Connection {
                name: name.clone(),
                message,
            })
        }
    }
}

/// A client for `conn`, logging in with this process's AWS identity where it says so.
fn vault_client(
    conn: &VaultConnection,
    aws: &SdkConfig,
    concurrency: usize,
) -> Result<VaultClient, SyncError> {
    let pem = match &conn.ca {
        Some(CaCert::Pem(pem)) => Some(pem.clone()),
        Some(CaCert::File(path)) => Some(std::fs::read_to_string(path).map_err(|e| {
            crate::vault::VaultError::Tls(format!("cannot read {}: {e}", path.display()))
        })?),
        None => None,
    };
    Ok(VaultClient::new(
        &conn.address,
        conn.login.clone(),
        pem.as_deref(),
        concurrency,
    )?
    .with_aws_credentials(aws.credentials_provider())
    .in_namespace(conn.namespace.as_deref()))
}

/// The named paths relative to the replicated path, once each; a path outside it is a warning
/// of the report, and skipped.
fn relative_paths(paths: &[String], rule: &Rule, report: &mut Report) -> Vec<String> {
    let mut rels: Vec<String> = Vec::with_capacity(paths.len());
    for path in paths {
        match rel_of(path, rule) {
            Some(rel) => rels.push(rel),
            None => report.warnings.push(Problem::new(
                "",
                "path_outside_scope",
                format!(
                    "{:?} is not a secret under {}/{}: skipped",
                    path.trim_matches('/'),
                    rule.mount,
                    rule.path
                ),
            )),
        }
    }
    rels.sort();
    rels.dedup();
    rels
}

/// `path` (inside the rule's mount) relative to the rule's sub-path, when it is a secret's
/// path under it.
fn rel_of(path: &str, rule: &Rule) -> Option<String> {
    let path = path.trim_matches('/');
    let rel = if rule.path.is_empty() {
        Some(path)
    } else {
        path.strip_prefix(rule.path.as_str())
            .and_then(|r| r.strip_prefix('/'))
    };
    rel.filter(|r| !r.is_empty() && crate::inventory::check_path(r).is_ok())
        .map(str::to_owned)
}

/// The most paths outside every rule that a report lists one by one.
const MAX_OUTSIDE_LISTED: usize = 100;

/// A path a request names: inside whichever rule's mount (`paths`), or inside one namespace's
/// mount (`changes`).
struct Named<'a> {
    /// (namespace, mount) of a change; none: any rule's.
    scope: Option<(Option<&'a str>, &'a str)>,
    path: &'a str,
}

impl Named<'_> {
    /// Whether the path is inside `mount` of `namespace`.
    fn reaches(&self, mount: &str, namespace: Option<&str>) -> bool {
        self.scope.is_none_or(|(ns, m)| {
            m.trim_matches('/') == mount.trim_matches('/')
                && contract::namespace(ns) == contract::namespace(namespace)
        })
    }

    /// The warning of a named path no sync takes.
    fn outside(&self) -> Problem {
        // Quoted and cut: an invoker's text, never taken as the report's own.
        let cut = |text: &str| crate::report::cut(text, 256);
        let path = cut(self.path.trim_matches('/'));
        let at = match self.scope {
            Some((ns, mount)) => format!(
                "{path:?} in mount {:?} (namespace {:?})",
                cut(mount),
                cut(ns.unwrap_or("root"))
            ),
            None => format!("{path:?}"),
        };
        Problem::new(
            "",
            "path_outside_scope",
            format!("{at} is not a secret under any synced mount and path: skipped"),
        )
    }
}

/// The AWS replicas of the named paths: each looked up by the name the template gives it, and
/// by its plain `<prefix>/<path>` name when that differs (a replica from before the template),
/// exactly (never a secret AWS resolves the name to as a partial ARN); with one replica per key,
/// whose names only the value says, listed by their `vault-secret` tag. (A whole-secret replica
/// left from before `secret-key` is the full sync's to find.)
async fn describe_names(
    sm: &SecretsManager,
    settings: &Settings,
    rels: &[String],
) -> Result<Vec<AwsSecret>, SyncError> {
    let rule = &settings.rule;
    if rule.granularity == crate::config::Granularity::SecretKey {
        return Ok(sm
            .list_by_source(&rule.prefix, rels, settings.concurrency)
            .await?);
    }
    let mut names: Vec<String> = Vec::with_capacity(rels.len());
    for rel in rels {
        let rendered = rule.replica_name(rel, None);
        let plain = format!("{}/{rel}", rule.prefix);
        if plain != rendered {
            names.push(plain);
        }
        names.push(rendered);
    }
    Ok(dedup(
        describe_each(sm, &names, settings.concurrency).await?,
    ))
}

/// Each of `names` that exists, looked up exactly, `concurrency` at a time.
async fn describe_each(
    sm: &SecretsManager,
    names: &[String],
    concurrency: usize,
) -> Result<Vec<AwsSecret>, SyncError> {
    use futures::stream::{self, StreamExt, TryStreamExt};
    let found: Vec<Option<AwsSecret>> = stream::iter(names)
        .map(|name| sm.describe_name(name))
        .buffer_unordered(concurrency.max(1))
        .try_collect()
        .await?;
    Ok(found.into_iter().flatten().collect())
}

fn dedup(mut found: Vec<AwsSecret>) -> Vec<AwsSecret> {
    found.sort_by(|a, b| a.name.cmp(&b.name));
    found.dedup_by(|a, b| a.name == b.name);
    found
}

/// Every secret under the prefix in AWS: one `ListSecrets` page, sent while Vault is walked;
/// when there are more, the ranged listing that the Vault names guide (`names`, sent once the
/// Vault folders are listed), instead of one chain of pages each waiting for the last.
async fn list_aws(
    sm: &SecretsManager,
    settings: &Settings,
    concurrency: usize,
    names: tokio::sync::oneshot::Receiver<Vec<String>>,
) -> Result<Vec<AwsSecret>, SyncError> {
    let rule = &settings.rule;
    if let Some(mut all) = sm.list_one_page(&rule.prefix).await? {
        all.sort_unstable_by(|a, b| a.name.cmp(&b.name));
        return Ok(all);
    }
    // No names: the walk failed, and the run fails with its error. Never an empty listing
    // that a plan could take for AWS holding nothing.
    let Ok(names) = names.await else {
        return Err(SyncError::Shared {
            kind: "vault_walk_failed",
            message: "the Vault walk ended before naming its secrets: AWS was not listed".into(),
        });
    };
    let root = format!("{}/", rule.prefix);
    // One copy of the names at a time, gone before the listing starts. With one replica per
    // key the names are unknown until the values are read; the secrets' names still guide
    // the split (a guide only: the listing is complete whatever it is).
    let names: Vec<String> = names
        .into_iter()
        .map(|n| rule.replica_name(&n, None))
        .collect();
    let partition = crate::listing::partition(
        &root,
        names.iter().map(String::as_str),
        crate::listing::NAMES_PER_RANGE,
    );
    let expected = names.len();
    drop(names);
    Ok(sm
        .list_partitioned(&partition, concurrency, expected)
        .await?)
}

/// Where a sync reads in Vault: what a change watcher must follow to see its changes.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct VaultScope {
    pub mount: String,
    /// The replicated sub-path (empty: the whole mount).
    pub path: String,
    /// The namespace (none: the root).
    pub namespace: Option<String>,
}

/// A changed Vault secret, as a change watcher following many rules names it: the namespace
/// (none: the root), the mount, and the path inside the mount.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct Change {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    pub mount: String,
    pub path: String,
}

/// What one run is asked to do.
#[derive(Clone, Debug, Default)]
pub struct Request {
    /// Only these Vault paths (inside the mount, as the audit log names them): a change-driven
    /// run. `None`: everything.
    pub paths: Option<Vec<String>>,
    /// Only these changes (each of its namespace and mount), each to every rule it falls in:
    /// a change-driven run of many rules. Not with `paths`.
    pub changes: Option<Vec<Change>>,
    /// Replicate Vault's versions even where AWS holds later ones (a restored Vault), this run.
    pub accept_vault_rollback: bool,
    /// Start no write after this long (at most the configured `--max-duration`).
    pub max_duration: Option<Duration>,
    /// Plan only, whatever the settings say (a status request).
    pub dry_run: bool,
}

/// What change-driven runs may still delete: the last full sync's count of the replicas and
/// whether its breaker tripped, and what they deleted since. Kept by the process: one that has
/// not run a full sync yet lets change-driven runs delete nothing.
#[derive(Debug, Default)]
struct Ledger {
    /// (replicas counted, breaker tripped) of the last full sync.
    last_full: Option<(usize, bool)>,
    /// Deleted by change-driven runs since.
    spent: usize,
    /// Which full sync set it: a change-driven run's reservation made before another full sync
    /// reset the ledger is gone with it, and is not taken back again.
    generation: u64,
}

impl Ledger {
    fn allowance(&self, share: f64) -> Allowance {
        match self.last_full {
            None => Allowance::NoFullSync,
            Some((_, true)) => Allowance::Tripped,
            Some((owned, false)) => {
                Allowance::Left(breaker_allows(owned, share).saturating_sub(self.spent))
            }
        }
    }
}

/// One process's replicator: the configuration resolved once, and the clients built once and
/// reused by every run, so a warm Lambda's invocations share connection pools and the Vault
/// login. The connection secret is read again at each run (its credentials may have been
/// rotated); the Vault client is built again only when it changed.
#[derive(Debug)]
pub struct Replicator {
    resolved: Resolved,
    aws: SdkConfig,
    counters: Arc<AwsCounters>,
    /// Secrets Manager of this process's own account: the connection secret.
    home: SecretsManager,
    /// One per rule: the flags' one, or each of a rules document's.
    lanes: Vec<Lane>,
    vault: tokio::sync::Mutex<Option<(VaultConnection, Arc<VaultClient>)>>,
    /// Failures of a run before any rule's (the connection, Vault unreachable).
    notices: crate::report::NoticeGate,
    /// Where each replicated change is announced (`--events-bus`), with this process's own
    /// credentials and region whatever account a rule writes in.
    events: Option<crate::aws::EventBus>,
}

/// Fills `report`'s Vault figures from `counts` (and zeroes them).
fn vault_counts_into(counts: &crate::vault::VaultCounters, report: &mut Report) {
    let snap = counts.take();
    report.values_read = snap.get("read_value").copied().unwrap_or(0);
    report.vault_requests = snap
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .map(|(k, n)| (k.to_owned(), n))
        .collect();
}

/// What one rule's part of a run asked of Vault and AWS, and how long it took: counted apart
/// from (and as well as in) the run's own counts, for the rule's report and metrics.
struct RuleCounts {
    vault: Arc<crate::vault::VaultCounters>,
    aws: Arc<AwsCounters>,
    started: Instant,
}

impl RuleCounts {
    /// `work`'s output, and its counts.
    async fn around<T>(work: impl std::future::Future<Output = T>) -> (T, Self) {
        let counts = Self {
            vault: Arc::default(),
            aws: Arc::default(),
            started: Instant::now(),
        };
        let work = crate::vault::counting(counts.vault.clone(), work);
        let out = contract::sdk::counting(counts.aws.clone(), work).await;
        (out, counts)
    }

    fn into_report(self, report: &mut Report) {
        vault_counts_into(&self.vault, report);
        report.aws_requests = self.aws.take();
        report.duration_ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
    }
}

/// One rule's part of a replicator: its settings, where its replicas are, and what its runs
/// keep between them.
#[derive(Debug)]
struct Lane {
    settings: Settings,
    /// Secrets Manager where the replicas are: the process's own, or another account's
    /// ([`Settings::account_role`]) or region's ([`Settings::region`]).
    sm: SecretsManager,
    ledger: std::sync::Mutex<Ledger>,
    notices: crate::report::NoticeGate,
}

impl Lane {
    /// The rule's settings for one run of `request`.
    fn run_settings(&self, request: &Request, deadline: Option<Instant>) -> Settings {
        let mut settings = self.settings.clone();
        settings.dry_run |= request.dry_run;
        settings.deadline = deadline;
        settings
    }

    /// An empty report of this rule's run of `request`.
    fn report(&self, request: &Request) -> Report {
        Report {
            rule: self.settings.rule.name.clone(),
            dry_run: self.settings.dry_run || request.dry_run,
            ..Report::default()
        }
    }

    fn ledger(&self) -> std::sync::MutexGuard<'_, Ledger> {
        self.ledger
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Replicator {
    pub fn new(args: &SyncArgs, aws: &SdkConfig) -> Result<Self, ConfigError> {
        let resolved = crate::rules::resolve(args)?;
        let counters = Arc::new(AwsCounters::default());
        let home = SecretsManager::new(aws, resolved.settings.writes_per_second, counters.clone());
        let each = if resolved.rules.is_empty() {
            std::slice::from_ref(&resolved.settings)
        } else {
            &resolved.rules[..]
        };
        let mut lanes = Vec::with_capacity(each.len());
        let own_region = aws.region().map(|r| r.as_ref());
        for settings in each {
            let region = settings.region_or(own_region);
            contract::check_replica_regions(&settings.rule.replica_regions, region).map_err(
                |problem| match &settings.rule.name {
                    Some(name) if !resolved.rules.is_empty() => ConfigError::Rule {
                        name: name.clone(),
                        key: "replica_regions".into(),
                        problem,
                    },
                    _ => ConfigError::Invalid {
                        key: "--replica-region / REPLICATOR_REPLICA_REGIONS",
                        problem,
                    },
                },
            )?;
            let sm = match (&settings.account_role, &settings.region) {
                (None, None) => home.clone(),
                (role, region) => {
                    let mut config = aws.clone();
                    if let Some(region) = region {
                        config = config
                            .into_builder()
                            .region(aws_types::region::Region::new(region.clone()))
                            .build();
                    }
                    if let Some(role) = role {
                        config = crate::aws::in_account(&config, role);
                    }
                    SecretsManager::new(&config, settings.writes_per_second, counters.clone())
                }
            };
            lanes.push(Lane {
                settings: settings.clone(),
                sm,
                ledger: std::sync::Mutex::new(Ledger::default()),
                notices: crate::report::NoticeGate::default(),
            });
        }
        // Checked again now that this process's region is known: a rule that leaves its region
        // out writes where one naming this region does.
        crate::rules::check_destinations(&resolved.rules, own_region)?;
        let events = resolved
            .settings
            .events_bus
            .as_deref()
            .map(|bus| crate::aws::EventBus::new(aws, bus, counters.clone()));
        Ok(Self {
            events,
            resolved,
            aws: aws.clone(),
            counters,
            home,
            lanes,
            vault: tokio::sync::Mutex::new(None),
            notices: crate::report::NoticeGate::default(),
        })
    }

    pub fn settings(&self) -> &Settings {
        &self.resolved.settings
    }

    /// The Vault client for `conn`: the last one, unless the connection changed.
    async fn vault(&self, conn: VaultConnection) -> Result<Arc<VaultClient>, SyncError> {
        let mut cached = self.vault.lock().await;
        if let Some((seen, client)) = cached.as_ref()
            && *seen == conn
        {
            return Ok(client.clone());
        }
        let client = Arc::new(vault_client(
            &conn,
            &self.aws,
            self.resolved.settings.concurrency,
        )?);
        *cached = Some((conn, client.clone()));
        Ok(client)
    }

    /// Publishes a failed run's notice to `topic` (with this replicator's credentials: the
    /// function's role may publish to the stack's topic only).
    pub async fn publish_notice(
        &self,
        topic: &str,
        notice: &str,
    ) -> Result<(), contract::sdk::AwsError> {
        Notifier::new(&self.aws, self.counters.clone())
            .publish(topic, contract::NOTICE_SUBJECT, notice)
            .await
    }

    /// Where this replicator reads in Vault, rule by rule: each rule's mount and sub-path, and
    /// its namespace, or the connection's as it is now (the connection secret's
    /// `vaultNamespace` when it names one).
    pub async fn scopes(&self) -> Result<Vec<VaultScope>, SyncError> {
        let conn = connection(&self.resolved.connection, &self.home).await?;
        Ok(self
            .lanes
            .iter()
            .map(|lane| VaultScope {
                mount: lane.settings.rule.mount.clone(),
                path: lane.settings.rule.path.clone(),
                namespace: lane
                    .settings
                    .namespace
                    .clone()
                    .or_else(|| conn.namespace.clone()),
            })
            .collect())
    }

    /// Runs one sync, starting no write after `max_duration` (at most the configured one), and
    /// when anything failed publishes one notice. Never panics on bad input: every problem ends
    /// up in the report.
    pub async fn run(&self, max_duration: Option<Duration>, progress: &Progress) -> Report {
        let request = Request {
            max_duration,
            ..Request::default()
        };
        self.run_request(&request, progress).await
    }

    /// A change-driven run: only `paths` (inside the mount, as Vault's audit log names them),
    /// each read by its metadata and its AWS counterpart looked up by name, no listing; the
    /// same planner and writes. Paths outside the replicated path are reported and skipped.
    pub async fn run_paths(
        &self,
        paths: &[String],
        max_duration: Option<Duration>,
        progress: &Progress,
    ) -> Report {
        let request = Request {
            paths: Some(paths.to_vec()),
            max_duration,
            ..Request::default()
        };
        self.run_request(&request, progress).await
    }

    /// Runs what `request` asks for.
    pub async fn run_request(&self, request: &Request, progress: &Progress) -> Report {
        let started = Instant::now();
        let limit = match (self.resolved.settings.max_duration, request.max_duration) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let deadline = limit.map(|d| started + d);
        // Counts of this run only, whatever else runs beside it in this process.
        let aws_counts = Arc::new(AwsCounters::default());
        let vault_counts = Arc::new(crate::vault::VaultCounters::default());
        // Boxed: a run's future is large, and the caller's stack need not hold it.
        let run = Box::pin(self.counted_run(request, deadline, progress, vault_counts));
        let mut report = contract::sdk::counting(aws_counts.clone(), run).await;
        report.aws_requests = aws_counts.take();
        report.duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        report
    }

    /// One run, within its own counters (see [`Self::run_request`]).
    async fn counted_run(
        &self,
        request: &Request,
        deadline: Option<Instant>,
        progress: &Progress,
        vault_counts: Arc<crate::vault::VaultCounters>,
    ) -> Report {
        let mut report = Report::default();
        let work = self.plan_and_execute(request, deadline, &mut report, progress);
        let result = crate::vault::counting(vault_counts.clone(), work).await;
        vault_counts_into(&vault_counts, &mut report);
        report.dry_run = self.resolved.settings.dry_run || request.dry_run;
        let notified_by_rules = match result {
            Ok(by_rules) => by_rules,
            Err(e) => {
                tracing::error!(kind = e.kind(), "sync failed: {e}");
                report
                    .failures
                    .push(Problem::new("", e.kind(), e.to_string()));
                false
            }
        };
        if !notified_by_rules {
            self.notify(&self.notices, &mut report, None).await;
        }
        report
    }

    /// When `report` failed (and was no dry run), publishes its notice to the topic, unless
    /// `gate` saw the same one lately; a notice that cannot be sent is a failure of the report.
    /// A rule's notice names the account and region of its replicas.
    async fn notify(
        &self,
        gate: &crate::report::NoticeGate,
        report: &mut Report,
        lane: Option<&Lane>,
    ) {
        // A dry run changes nothing and tells nobody: its report is the whole answer.
        if !report.failed() || report.dry_run {
            return;
        }
        let Some(topic) = self.resolved.settings.sns_topic_arn.as_deref() else {
            return;
        };
        let home = topic.split(':').nth(4).unwrap_or("unknown");
        let account = lane
            .and_then(|l| l.settings.account_role.as_ref())
            .map_or(home, |role| role.account());
        let own_region = self.aws.region().map(|r| r.as_ref());
        let region = lane
            .map_or(own_region, |l| l.settings.region_or(own_region))
            .unwrap_or("unknown");
        let notifier = Notifier::new(&self.aws, self.counters.clone());
        let notice = report.notice(account, region);
        if !gate.admits(&notice, Instant::now()) {
            tracing::info!("the same failure was notified less than 15 minutes ago");
        } else if let Err(e) = notifier
            .publish(topic, contract::NOTICE_SUBJECT, &notice)
            .await
        {
            tracing::error!("cannot publish the failure notice: {e}");
            report.failures.push(Problem::new(
                "",
                e.kind.as_str(),
                format!("failure notice not sent: {e}"),
            ));
        }
    }

    /// The run's rules, each into its own report (and notice) with a rules document; `true`
    /// when each rule notified its own failures.
    async fn plan_and_execute(
        &self,
        request: &Request,
        deadline: Option<Instant>,
        report: &mut Report,
        progress: &Progress,
    ) -> Result<bool, SyncError> {
        let conn = connection(&self.resolved.connection, &self.home).await?;
        let conn_namespace = conn.namespace.clone();
        let vault = self.vault(conn).await?;
        // Not fatal (the run can still read), but a token that is never renewed dies: said.
        if let Err(e) = vault.renew_periodic_token().await {
            report.warnings.push(Problem::new(
                "",
                "vault_token_not_renewed",
                format!("the periodic Vault token could not be renewed, and dies at the end of its period: {e}"),
            ));
        }
        // What the request names: paths inside the mount (any rule's), or changes of one
        // namespace and mount; none: everything.
        let named: Option<Vec<Named<'_>>> = match (&request.paths, &request.changes) {
            (Some(paths), _) => Some(
                paths
                    .iter()
                    .map(|p| Named {
                        scope: None,
                        path: p,
                    })
                    .collect(),
            ),
            (None, Some(changes)) => Some(
                changes
                    .iter()
                    .map(|c| Named {
                        scope: Some((c.namespace.as_deref(), &c.mount)),
                        path: &c.path,
                    })
                    .collect(),
            ),
            (None, None) => None,
        };
        if self.resolved.rules.is_empty() {
            let lane = &self.lanes[0];
            let rule = &lane.settings.rule;
            let rels = named.map(|named| {
                let mut mine = Vec::with_capacity(named.len());
                for n in named {
                    if n.reaches(&rule.mount, conn_namespace.as_deref()) {
                        mine.push(n.path.to_owned());
                    } else {
                        report.warnings.push(n.outside());
                    }
                }
                relative_paths(&mine, rule, report)
            });
            Box::pin(self.run_lane(lane, &vault, request, rels, deadline, report, progress))
                .await?;
            return Ok(false);
        }
        let Some(named) = named else {
            // Boxed, as each rule's run below: the futures of a run are large.
            let each = Box::pin(self.run_rules_full(&vault, request, deadline, progress)).await;
            for own in each {
                report.absorb(own);
            }
            return Ok(true);
        };
        // Each named path goes to every rule it falls in; one no rule takes is said once.
        let mut taken = vec![false; named.len()];
        for lane in &self.lanes {
            let rule = &lane.settings.rule;
            let namespace = lane
                .settings
                .namespace
                .as_deref()
                .or(conn_namespace.as_deref());
            let mut rels = Vec::new();
            for (n, taken) in named.iter().zip(taken.iter_mut()) {
                if n.reaches(&rule.mount, namespace)
                    && let Some(rel) = rel_of(n.path, rule)
                {
                    *taken = true;
                    rels.push(rel);
                }
            }
            if rels.is_empty() {
                continue;
            }
            rels.sort();
            rels.dedup();
            let mut own = lane.report(request);
            let vault = match &lane.settings.namespace {
                Some(ns) => Arc::new(vault.for_namespace(Some(ns))),
                None => vault.clone(),
            };
            let run = self.run_lane(
                lane,
                &vault,
                request,
                Some(rels),
                deadline,
                &mut own,
                progress,
            );
            let (result, counts) = RuleCounts::around(Box::pin(run)).await;
            self.close_rule(lane, &mut own, result, counts).await;
            report.absorb(own);
        }
        let untaken: Vec<&Named<'_>> = named
            .iter()
            .zip(taken)
            .filter(|(_, taken)| !taken)
            .map(|(n, _)| n)
            .collect();
        for n in untaken.iter().take(MAX_OUTSIDE_LISTED) {
            report.warnings.push(n.outside());
        }
        if untaken.len() > MAX_OUTSIDE_LISTED {
            report.warnings.push(Problem::new(
                "",
                "path_outside_scope",
                format!(
                    "… and {} more paths under no synced mount and path: skipped",
                    untaken.len() - MAX_OUTSIDE_LISTED
                ),
            ));
        }
        Ok(true)
    }

    /// A full run of every rule: one Vault walk per mount and namespace, however many rules
    /// read it, beside each rule's AWS listing; then each rule's plan and writes, and its
    /// notice. Each rule's report, in the rules' order.
    async fn run_rules_full(
        &self,
        vault: &Arc<VaultClient>,
        request: &Request,
        deadline: Option<Instant>,
        progress: &Progress,
    ) -> Vec<Report> {
        let mut groups: Vec<(&str, Option<&str>, Vec<usize>)> = Vec::new();
        for (i, lane) in self.lanes.iter().enumerate() {
            let (mount, ns) = (
                lane.settings.rule.mount.as_str(),
                lane.settings.namespace.as_deref(),
            );
            match groups.iter_mut().find(|(m, n, _)| *m == mount && *n == ns) {
                Some((_, _, members)) => members.push(i),
                None => groups.push((mount, ns, vec![i])),
            }
        }
        let mut reports: Vec<Option<Report>> = self.lanes.iter().map(|_| None).collect();
        for (mount, ns, members) in groups {
            let vault = match ns {
                Some(ns) => Arc::new(vault.for_namespace(Some(ns))),
                None => vault.clone(),
            };
            let settings: Vec<Settings> = members
                .iter()
                .map(|&i| self.lanes[i].run_settings(request, deadline))
                .collect();
            let now = DateTime::from(std::time::SystemTime::now());
            let mut walks = Vec::with_capacity(members.len());
            let mut listings = Vec::with_capacity(members.len());
            for (&i, settings) in members.iter().zip(&settings) {
                let (names_tx, names_rx) = tokio::sync::oneshot::channel();
                walks.push(crate::inventory::LaneWalk {
                    path: &settings.rule.path,
                    classify: crate::inventory::Classify::of(&settings.rule, now),
                    names: Some(names_tx),
                });
                // The rules' listings run at once: together, as many requests at a time as
                // one rule's.
                let share = (settings.concurrency / members.len()).max(1);
                listings.push(list_aws(&self.lanes[i].sm, settings, share, names_rx));
            }
            let concurrency = self.resolved.settings.concurrency;
            let (walked, listed) = tokio::join!(
                crate::inventory::walk_shared(&vault, mount, walks, concurrency, progress),
                futures::future::join_all(listings)
            );
            let mut walked: Vec<Option<Result<crate::inventory::Inventory, _>>> =
                walked.into_iter().map(Some).collect();
            for ((k, &i), listed) in members.iter().enumerate().zip(listed) {
                let lane = &self.lanes[i];
                let mut own = lane.report(request);
                let inventory = walked[k].take().unwrap_or_else(|| {
                    Err(crate::inventory::LaneFailure {
                        kind: "vault_walk_failed",
                        message: "the shared walk gave this rule no inventory".into(),
                        above: false,
                    })
                });
                let round = Round {
                    lane,
                    events: self.events.as_ref(),
                    settings: &settings[k],
                    vault: &vault,
                    accept_vault_rollback: request.accept_vault_rollback,
                    progress,
                };
                let work = async {
                    let inventory = match inventory {
                        Ok(inventory) => inventory,
                        // A folder above the rule's own path failed (one the rules share): the
                        // rule walks, and lists AWS, on its own (the listing beside the shared
                        // walk may have had no names to go by).
                        Err(f) if f.above => {
                            tracing::warn!(rule = ?lane.settings.rule.name, "{}: walking the rule's own path", f.message);
                            let raced = round.run(None, false, &mut own).await?;
                            return round.again(&raced, &mut own).await;
                        }
                        Err(f) => {
                            return Err(SyncError::Shared {
                                kind: f.kind,
                                message: f.message,
                            });
                        }
                    };
                    let aws = listed?;
                    let raced = round.act(inventory, aws, None, false, &mut own).await?;
                    round.again(&raced, &mut own).await
                };
                // The shared walk is the run's: a rule counts its own plan's requests.
                let (result, counts) = RuleCounts::around(Box::pin(work)).await;
                self.close_rule(lane, &mut own, result, counts).await;
                reports[i] = Some(own);
            }
        }
        reports.into_iter().flatten().collect()
    }

    /// Ends one rule's part of a run: its counts into its report, its failure (its own: the
    /// next rule runs), and its notice.
    async fn close_rule(
        &self,
        lane: &Lane,
        own: &mut Report,
        result: Result<(), SyncError>,
        counts: RuleCounts,
    ) {
        counts.into_report(own);
        if let Err(e) = result {
            tracing::error!(rule = ?lane.settings.rule.name, kind = e.kind(), "rule failed: {e}");
            own.failures.push(Problem::new("", e.kind(), e.to_string()));
        }
        self.notify(&lane.notices, own, Some(lane)).await;
    }

    /// One rule's run of `rels` (or everything).
    #[allow(clippy::too_many_arguments)]
    async fn run_lane(
        &self,
        lane: &Lane,
        vault: &VaultClient,
        request: &Request,
        rels: Option<Vec<String>>,
        deadline: Option<Instant>,
        report: &mut Report,
        progress: &Progress,
    ) -> Result<(), SyncError> {
        let settings = lane.run_settings(request, deadline);
        let round = Round {
            lane,
            events: self.events.as_ref(),
            settings: &settings,
            vault,
            accept_vault_rollback: request.accept_vault_rollback,
            progress,
        };
        let raced = round.run(rels.as_deref(), false, report).await?;
        round.again(&raced, report).await?;
        Ok(())
    }
}

/// One observe–plan–execute pass of a run.
struct Round<'a> {
    lane: &'a Lane,
    events: Option<&'a crate::aws::EventBus>,
    settings: &'a Settings,
    vault: &'a VaultClient,
    accept_vault_rollback: bool,
    progress: &'a Progress,
}

impl Round<'_> {
    /// The names another writer took since the listing (`raced`): planned again from what is
    /// there now, once (their failures this time are the report's).
    async fn again(&self, raced: &[String], report: &mut Report) -> Result<(), SyncError> {
        if !raced.is_empty() {
            self.run(Some(raced), true, report).await?;
        }
        Ok(())
    }

    /// Observes, plans and performs `rels` (or everything), recording into `report`; the
    /// paths whose creates found their name taken meanwhile (none in the `last` round, where
    /// they are failures).
    async fn run(
        &self,
        rels: Option<&[String]>,
        last: bool,
        report: &mut Report,
    ) -> Result<Vec<String>, SyncError> {
        let (settings, sm, vault) = (self.settings, &self.lane.sm, self.vault);
        let rule = &settings.rule;
        let now = DateTime::from(std::time::SystemTime::now());
        let classify = crate::inventory::Classify::of(rule, now);
        let (inventory, aws) = match rels {
            None => {
                let (names_tx, names_rx) = tokio::sync::oneshot::channel();
                let (inventory, aws) = tokio::join!(
                    crate::inventory::walk_telling_names(
                        vault,
                        &rule.mount,
                        &rule.path,
                        settings.concurrency,
                        classify,
                        self.progress,
                        Some(names_tx),
                    ),
                    list_aws(sm, settings, settings.concurrency, names_rx)
                );
                (inventory?, aws?)
            }
            Some(rels) => {
                let (inventory, aws) = tokio::join!(
                    crate::inventory::read_paths(vault, settings, rels, classify),
                    describe_names(sm, settings, rels)
                );
                (inventory, aws?)
            }
        };
        Box::pin(self.act(inventory, aws, rels, last, report)).await
    }

    /// Plans and performs `rels` (or everything) from what was observed of them, recording
    /// into `report`; as [`Self::run`].
    async fn act(
        &self,
        inventory: crate::inventory::Inventory,
        aws: Vec<AwsSecret>,
        rels: Option<&[String]>,
        last: bool,
        report: &mut Report,
    ) -> Result<Vec<String>, SyncError> {
        let (settings, sm, vault) = (self.settings, &self.lane.sm, self.vault);
        let rule = &settings.rule;
        tracing::info!(
            vault_secrets = inventory.entries.len(),
            aws_secrets = aws.len(),
            bulk = inventory.bulk_metadata,
            "inventories read"
        );
        report.bulk_metadata |= inventory.bulk_metadata;
        let (regions, drifted_policies) = if settings.dry_run {
            (BTreeMap::new(), BTreeSet::new())
        } else {
            let audit = rels.is_none().then(|| {
                let secs = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs());
                let hours = settings.region_audit_hours;
                crate::plan::RegionAudit {
                    hour: secs / 3600 % hours,
                    hours,
                }
            });
            let regions = observe_regions(
                sm,
                &crate::plan::regions_to_observe(&aws, rule, audit),
                settings.concurrency,
                report,
            )
            .await;
            let drifted = observe_policies(
                sm,
                &crate::plan::policies_to_audit(&aws, rule, audit),
                rule,
                settings.concurrency,
                report,
            )
            .await;
            (regions, drifted)
        };
        let allowance = self.lane.ledger().allowance(rule.max_delete_share);
        let run = crate::plan::Run {
            scope: rels.map_or(Scope::Everything, Scope::Paths),
            accept_vault_rollback: self.accept_vault_rollback,
            allowance,
            regions: &regions,
            drifted_policies: &drifted_policies,
            list_unchanged: settings.dry_run,
        };
        let plan = crate::plan::plan(&inventory.entries, &aws, rule, &run);
        drop(inventory);
        // The allowance change-driven runs share: a full sync sets it anew; a change-driven run
        // reserves what it plans to spend at once (so two runs in one process cannot both
        // spend it), and settles for what it did spend below.
        let reserved = crate::plan::breaker::weighed(&plan.steps);
        let mut generation = 0;
        if !settings.dry_run {
            let mut ledger = self.lane.ledger();
            match rels {
                None => {
                    *ledger = Ledger {
                        last_full: Some((plan.owned, plan.breaker.is_some())),
                        spent: 0,
                        generation: ledger.generation + 1,
                    }
                }
                Some(_) => ledger.spent += reserved,
            }
            generation = ledger.generation;
        }
        say(report, &plan);
        report.excluded += plan.excluded;
        if settings.dry_run {
            for step in &plan.steps {
                record_dry(report, step);
            }
            report.unchanged += plan.unchanged;
            let mut shown = plan.steps;
            shown.extend(
                plan.unchanged_names
                    .into_iter()
                    .map(|name| Step::Unchanged { name }),
            );
            report.plan.get_or_insert_with(Vec::new).extend(shown);
            return Ok(Vec::new());
        }
        report.unchanged += plan.unchanged;
        // Each change's event goes out as soon as its step is done, so a run cut short (or a
        // long full sync) holds none of them back.
        let (events_tx, announced) = match self.events {
            Some(bus) => {
                let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
                (Some(tx), Some(tokio::spawn(bus.clone().stream(rx))))
            }
            None => (None, None),
        };
        let executor = Executor {
            vault,
            sm,
            settings,
            events: events_tx.as_ref(),
        };
        self.progress
            .planned
            .fetch_add(plan.steps.len() as u64, Ordering::Relaxed);
        let budget = AtomicUsize::new(plan.delete_budget);
        let index: HashMap<&str, &AwsSecret> =
            if plan.steps.iter().any(|s| matches!(s, Step::Expand { .. })) && rels.is_none() {
                aws.iter().map(|s| (&*s.name, s)).collect()
            } else {
                HashMap::new()
            };
        let lookup = match rels {
            None => Lookup::Listing(&index),
            Some(_) => Lookup::Describe,
        };
        let expansions = stream::iter(plan.steps.iter().filter_map(|s| match s {
            Step::Expand { name, source } => Some((name, source)),
            _ => None,
        }))
        .map(|(name, source)| {
            let (executor, run, budget) = (&executor, &run, &budget);
            async move {
                self.expand(executor, name, source, lookup, run, budget)
                    .await
            }
        })
        .buffer_unordered(settings.concurrency.max(1))
        .collect::<Vec<_>>();
        let (outcomes, expanded) =
            tokio::join!(executor.run(&plan.steps, None, self.progress), expansions);
        let mut raced = Vec::new();
        // What the breaker weighs and was done: deletions, and moves back to an older version.
        let mut spent = 0usize;
        let mut take = |report: &mut Report, step: &Step, outcome: Outcome| {
            let moved_back = matches!(
                (step, &outcome),
                (
                    Step::Update {
                        reason: crate::plan::UpdateReason::LatestDeleted,
                        ..
                    },
                    Outcome::Updated
                        | Outcome::Incomplete {
                            value_current: true,
                            ..
                        }
                )
            );
            if matches!(outcome, Outcome::Deleted) || moved_back {
                spent += 1;
            }
            if matches!(outcome, Outcome::Raced) && !last {
                raced.push(raced_path(step, rule));
                return;
            }
            if matches!(
                outcome,
                Outcome::Created { .. }
                    | Outcome::Updated
                    | Outcome::Incomplete {
                        value_current: true,
                        ..
                    }
            ) && let Some(lag) = crate::metrics::lag_of(step, std::time::SystemTime::now())
            {
                report.lags_measured += 1;
                if report.lags.len() < crate::metrics::MAX_VALUES {
                    report.lags.push(lag);
                }
            }
            record(report, step.name(), outcome);
        };
        for (step, outcome) in plan.steps.iter().zip(outcomes) {
            if let Some(outcome) = outcome {
                take(report, step, outcome);
            }
        }
        let mut tripped = false;
        for expansion in expanded {
            report.unchanged += expansion.plan.unchanged;
            tripped |= expansion.plan.breaker.is_some();
            say(report, &expansion.plan);
            for (step, outcome) in expansion.plan.steps.iter().zip(expansion.outcomes) {
                if let Some(outcome) = outcome {
                    take(report, step, outcome);
                }
            }
        }
        // The last sender goes: the stream ends once it has put what it holds.
        drop(events_tx);
        if let (Some(bus), Some(announced)) = (self.events, announced) {
            match announced.await {
                Ok(announced) => announce(bus, announced, report),
                Err(e) => report.failures.push(Problem::new(
                    "",
                    "event_not_delivered",
                    format!("the change events' sender stopped: {e}"),
                )),
            }
        }
        // What change-driven runs may still delete until the next full sync: the breaker's share
        // less what the full sync and they spent since. A breaker that tripped on an expanded
        // secret's keys stands tripped like the plan's own.
        {
            let mut ledger = self.lane.ledger();
            // A full sync that ran meanwhile (beside this batch) reset the ledger, and this
            // run's reservation with it: what it spent is added whole.
            let reserved = if rels.is_some() && ledger.generation == generation {
                reserved
            } else {
                0
            };
            ledger.spent = (ledger.spent + spent).saturating_sub(reserved);
            if let (true, None, Some((_, standing))) = (tripped, rels, ledger.last_full.as_mut()) {
                *standing = true;
            }
        }
        raced.sort();
        raced.dedup();
        Ok(raced)
    }
}

/// Where an expanded secret's key names are looked up in AWS.
#[derive(Clone, Copy)]
enum Lookup<'a> {
    /// The full sync's listing holds every name.
    Listing(&'a HashMap<&'a str, &'a AwsSecret>),
    /// A change-driven run describes each name.
    Describe,
}

/// An expanded secret's own plan, and the outcome of each of its steps.
struct Expansion {
    plan: Plan,
    outcomes: Vec<Option<Outcome>>,
}

impl Expansion {
    fn one(step: Step, outcome: Outcome) -> Self {
        Self {
            plan: Plan {
                steps: vec![step],
                ..Plan::default()
            },
            outcomes: vec![Some(outcome)],
        }
    }
}

impl Round<'_> {
    /// An expanded secret: its value read, its keys planned by the planner from what AWS holds
    /// under their names, its deletions counted against what the breaker still allows (all of
    /// them, or none), and performed with the values read.
    async fn expand(
        &self,
        executor: &Executor<'_>,
        name: &str,
        source: &crate::plan::ExpandSource,
        lookup: Lookup<'_>,
        run: &crate::plan::Run<'_>,
        budget: &AtomicUsize,
    ) -> Expansion {
        let rule = &self.settings.rule;
        let src = &source.source;
        let failed = |p: Problem| {
            Expansion::one(
                Step::VaultFailed {
                    name: name.to_owned(),
                    kind: p.kind.clone(),
                    message: p.message.clone(),
                },
                Outcome::Failed(p),
            )
        };
        let values: KeyValues = match executor.read_keys(name, &src.vault_path, src.version).await {
            Ok(Some(values)) => values,
            Ok(None) => {
                return Expansion::one(
                    Step::Skip {
                        name: name.to_owned(),
                    },
                    Outcome::Skipped,
                );
            }
            Err(p) => return failed(p),
        };
        let keys: Vec<(String, usize)> = values.iter().map(|(k, v)| (k.clone(), v.len())).collect();
        let names: Vec<String> = keys
            .iter()
            .map(|(k, _)| rule.replica_name(&src.rel_path, Some(k)))
            .filter(|n| !source.group.iter().any(|s| *s.name == **n))
            .collect();
        let found: Vec<AwsSecret> = match lookup {
            Lookup::Listing(index) => names
                .iter()
                .filter_map(|n| index.get(n.as_str()).map(|s| (*s).clone()))
                .collect(),
            Lookup::Describe if keys.len() > rule.max_keys_per_secret => Vec::new(),
            Lookup::Describe => {
                match describe_each(&self.lane.sm, &names, self.settings.concurrency).await {
                    Ok(found) => found,
                    Err(e) => return failed(Problem::new(name, e.kind(), e.to_string())),
                }
            }
        };
        let mut plan = crate::plan::keys::expand(name, source, &keys, &found, rule, run);
        let deletes = crate::plan::breaker::weighed(&plan.steps);
        if deletes > 0
            && budget
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |b| {
                    b.checked_sub(deletes)
                })
                .is_err()
        {
            let why = format!(
                "{deletes} replicas of {name} (keys removed in Vault, or names no longer used) would be deleted, over what the breaker allows with this run's other deletions (share {})",
                rule.max_delete_share
            );
            match run.scope {
                Scope::Everything => {
                    crate::plan::breaker::refuse(
                        &mut plan.steps,
                        "deletion refused by the breaker",
                    );
                    plan.breaker = Some(format!(
                        "{why}; kept: raise REPLICATOR_MAX_DELETE_SHARE to allow it"
                    ));
                }
                Scope::Paths(_) => {
                    crate::plan::breaker::refuse(
                        &mut plan.steps,
                        "deletion deferred to the next full sync (change-driven budget)",
                    );
                    plan.deferred = Some(format!("{why}; they wait for the next full sync"));
                }
            }
        }
        let outcomes = executor
            .run(&plan.steps, Some(&values), self.progress)
            .await;
        Expansion { plan, outcomes }
    }
}

/// Records what a round's change events came to: one not delivered is a failure of its secret
/// (the write stands: consumers caching it refresh when their cache expires; a retry of the
/// run finds nothing to write and sends no event again).
fn announce(bus: &crate::aws::EventBus, announced: crate::aws::Announced, report: &mut Report) {
    report.events_put += announced.put;
    for (event, why) in announced.undelivered {
        let action = event.action.as_str();
        tracing::warn!(secret = %event.name, bus = %bus.bus(), "change event not delivered");
        report.failures.push(Problem::new(
            &event.name,
            "event_not_delivered",
            format!(
                "{action} in AWS, but its change event was not put on the bus {}: {why}; consumers caching it refresh when their cache expires",
                bus.bus()
            ),
        ));
    }
}

/// What a plan says beyond its steps: the breaker's refusal (a failure), deletions waiting for
/// the next full sync, names worth a look.
fn say(report: &mut Report, plan: &Plan) {
    if let Some(reason) = &plan.breaker {
        report
            .failures
            .push(Problem::new("", "deletion_breaker", reason.clone()));
    }
    if let Some(reason) = &plan.deferred {
        report
            .warnings
            .push(Problem::new("", "deletion_deferred", reason.clone()));
    }
    report.warnings.extend(
        plan.warnings
            .iter()
            .map(|(name, kind, message)| Problem::new(name.clone(), *kind, message.clone())),
    );
}

/// The Vault path (relative to the rule's sub-path) of a step that raced.
fn raced_path(step: &Step, rule: &Rule) -> String {
    let vault_path = match step {
        Step::Create { target } | Step::Update { target, .. } => target.vault_path.as_str(),
        other => other.name(),
    };
    match rule.path.as_str() {
        "" => vault_path.to_owned(),
        base => vault_path
            .strip_prefix(base)
            .and_then(|r| r.strip_prefix('/'))
            .unwrap_or(vault_path)
            .to_owned(),
    }
}

/// The replication AWS reports for each of `secrets` (one `DescribeSecret` each, by ARN), by
/// name. One that cannot be described is left out, and said: the planner then takes its regions
/// as its tag records them.
async fn observe_regions(
    sm: &SecretsManager,
    secrets: &[&AwsSecret],
    concurrency: usize,
    report: &mut Report,
) -> BTreeMap<String, Vec<RegionStatus>> {
    let seen: Vec<Result<(String, Vec<RegionStatus>), Problem>> = stream::iter(secrets)
        .map(|secret| async move {
            match sm.describe_with_regions(&secret.arn()).await {
                Ok((_, statuses)) => Ok((secret.name.to_string(), statuses)),
                Err(e) => Err(Problem::new(
                    &*secret.name,
                    "regions_not_seen",
                    format!("its replica regions could not be looked at this run: {e}"),
                )),
            }
        })
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await;
    let mut regions = BTreeMap::new();
    for one in seen {
        match one {
            Ok((name, statuses)) => {
                regions.insert(name, statuses);
            }
            Err(problem) => report.warnings.push(problem),
        }
    }
    regions
}

/// The audited replicas whose resource policy in AWS is not the configured one, filled in for
/// them (compared as JSON documents: AWS may hand a policy back formatted otherwise). One that
/// cannot be read is a warning, and is looked at again in its next slot.
async fn observe_policies(
    sm: &SecretsManager,
    secrets: &[&AwsSecret],
    rule: &Rule,
    concurrency: usize,
    report: &mut Report,
) -> BTreeSet<String> {
    let mut drifted = BTreeSet::new();
    let Some(policy) = &rule.resource_policy else {
        return drifted;
    };
    let seen: Vec<(&AwsSecret, Result<Option<String>, contract::sdk::AwsError>)> =
        stream::iter(secrets)
            .map(|secret| async move { (*secret, sm.policy(&secret.arn()).await) })
            .buffer_unordered(concurrency.max(1))
            .collect()
            .await;
    for (secret, found) in seen {
        match found {
            Ok(found) => {
                use contract::resource_policy::canonical;
                let wanted = canonical(&policy.render(&secret.arn()));
                if found.as_deref().and_then(canonical) != wanted {
                    drifted.insert(secret.name.to_string());
                }
            }
            Err(e) => report.warnings.push(Problem::new(
                &*secret.name,
                "policy_not_seen",
                format!("its resource policy could not be looked at this run: {e}"),
            )),
        }
    }
    drifted
}

/// Runs one sync with `args` and reports it (a bad configuration is the report's failure).
pub async fn run(args: &SyncArgs, aws: &SdkConfig) -> Report {
    run_with_progress(args, aws, &Request::default(), &Progress::default()).await
}

/// [`run`] of `request`, counting into `progress` as it goes (the CLI draws it on a terminal).
pub async fn run_with_progress(
    args: &SyncArgs,
    aws: &SdkConfig,
    request: &Request,
    progress: &Progress,
) -> Report {
    match Replicator::new(args, aws) {
        Ok(replicator) => replicator.run_request(request, progress).await,
        Err(e) => {
            let e = SyncError::from(e);
            tracing::error!(kind = e.kind(), "sync failed: {e}");
            let mut report = Report::default();
            report
                .failures
                .push(Problem::new("", e.kind(), e.to_string()));
            report
        }
    }
}
