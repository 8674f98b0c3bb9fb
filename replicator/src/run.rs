//! One sync run from configuration to report: resolve the Vault connection, walk Vault, list
//! AWS, plan, execute, notify. Shared by the CLI and the Lambda. Network I/O.

use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_smithy_types::DateTime;
use aws_types::SdkConfig;

use crate::aws::{AwsCounters, AwsSecret, Notifier, SecretsManager};
use crate::config::{
    CaCert, ConfigError, ConnectionSource, Resolved, Settings, SyncArgs, VaultConnection,
};
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
}

impl SyncError {
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Config(_) => "config_invalid",
            Self::Connection { .. } => "connection_secret_invalid",
            Self::Vault(e) => e.kind(),
            Self::Aws(e) => e.kind.as_str(),
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
                    message: format!("not the expected JSON ({{\"vaultAddress\", \"vaultToken\" or \"vaultRoleId\"+\"vaultSecretId\", ...}}): {}", e.classify_message()),
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

trait ClassifyMessage {
    fn classify_message(&self) -> String;
}

impl ClassifyMessage for serde_json::Error {
    /// serde_json's message can quote input text for some errors: keep only the category and
    /// position, which never carry a value.
    fn classify_message(&self) -> String {
        let what = match self.classify() {
            serde_json::error::Category::Io => "read error",
            serde_json::error::Category::Syntax => "invalid JSON",
            serde_json::error::Category::Data => "a field is missing or has the wrong type",
            serde_json::error::Category::Eof => "truncated JSON",
        };
        format!("{what} at line {} column {}", self.line(), self.column())
    }
}

/// The named paths relative to the replicated path, once each; a path outside it is a warning
/// of the report, and skipped.
fn relative_paths(paths: &[String], settings: &Settings, report: &mut Report) -> Vec<String> {
    let mut rels: Vec<String> = Vec::with_capacity(paths.len());
    for path in paths {
        let path = path.trim_matches('/');
        let rel = if settings.path.is_empty() {
            Some(path)
        } else {
            path.strip_prefix(settings.path.as_str())
                .and_then(|r| r.strip_prefix('/'))
        };
        match rel.filter(|r| !r.is_empty()) {
            Some(rel) if crate::inventory::check_path(rel).is_ok() => rels.push(rel.to_owned()),
            _ => report.warnings.push(Problem::new(
                "",
                "path_outside_scope",
                format!(
                    "{path:?} is not a secret under {}/{}: skipped",
                    settings.mount, settings.path
                ),
            )),
        }
    }
    rels.sort();
    rels.dedup();
    rels
}

/// The AWS replicas of the named paths: each looked up by the name the template gives it
/// (DescribeSecret), those that exist; with one replica per key, whose names only the value
/// says, listed by their `vault-secret` tag.
async fn describe_names(
    sm: &SecretsManager,
    settings: &Settings,
    rels: &[String],
) -> Result<Vec<AwsSecret>, SyncError> {
    use futures::stream::{self, StreamExt, TryStreamExt};
    if settings.granularity == crate::config::Granularity::SecretKey {
        return Ok(sm
            .list_by_source(&settings.prefix, rels, settings.concurrency)
            .await?);
    }
    let found: Vec<Option<AwsSecret>> = stream::iter(rels)
        .map(|rel| async move {
            match sm.describe(&settings.replica_name(rel, None)).await {
                Ok(s) => Ok(Some(s)),
                Err(e) if e.kind == contract::sdk::AwsErrorKind::NotFound => Ok(None),
                Err(e) => Err(e),
            }
        })
        .buffer_unordered(settings.concurrency)
        .try_collect()
        .await?;
    Ok(found.into_iter().flatten().collect())
}

/// Every secret under the prefix in AWS: one `ListSecrets` page, sent while Vault is walked;
/// when there are more, the ranged listing that the Vault names guide (`names`, sent once the
/// Vault folders are listed), instead of one chain of pages each waiting for the last.
async fn list_aws(
    sm: &SecretsManager,
    settings: &Settings,
    names: tokio::sync::oneshot::Receiver<Vec<String>>,
) -> Result<Vec<AwsSecret>, SyncError> {
    if let Some(all) = sm.list_one_page(&settings.prefix).await? {
        return Ok(all);
    }
    // No names: the walk failed, and the run fails with its error.
    let Ok(names) = names.await else {
        return Ok(Vec::new());
    };
    let root = format!("{}/", settings.prefix);
    // One copy of the names at a time, gone before the listing starts. With one replica per
    // key the names are unknown until the values are read; the secrets' names still guide
    // the split (a guide only: the listing is complete whatever it is).
    let names: Vec<String> = names
        .into_iter()
        .map(|n| settings.replica_name(&n, None))
        .collect();
    let partition = crate::listing::partition(
        &root,
        names.iter().map(String::as_str),
        crate::listing::NAMES_PER_RANGE,
    );
    drop(names);
    Ok(sm
        .list_partitioned(&partition, settings.concurrency)
        .await?)
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
    sm: SecretsManager,
    vault: tokio::sync::Mutex<Option<(VaultConnection, Arc<VaultClient>)>>,
}

impl Replicator {
    pub fn new(args: &SyncArgs, aws: &SdkConfig) -> Result<Self, ConfigError> {
        let resolved = args.resolve()?;
        contract::check_replica_regions(
            &resolved.settings.replica_regions,
            aws.region().map(|r| r.as_ref()),
        )
        .map_err(|problem| ConfigError::Invalid {
            key: "--replica-region / REPLICATOR_REPLICA_REGIONS",
            problem,
        })?;
        let counters = Arc::new(AwsCounters::default());
        let sm = SecretsManager::new(aws, resolved.settings.writes_per_second, counters.clone());
        Ok(Self {
            resolved,
            aws: aws.clone(),
            counters,
            sm,
            vault: tokio::sync::Mutex::new(None),
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

    /// Runs one sync, starting no write after `max_duration` (at most the configured one), and
    /// when anything failed publishes one notice. Never panics on bad input: every problem ends
    /// up in the report.
    pub async fn run(&self, max_duration: Option<Duration>, progress: &Progress) -> Report {
        self.run_scoped(None, max_duration, progress).await
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
        self.run_scoped(Some(paths), max_duration, progress).await
    }

    async fn run_scoped(
        &self,
        paths: Option<&[String]>,
        max_duration: Option<Duration>,
        progress: &Progress,
    ) -> Report {
        let started = Instant::now();
        let mut settings = self.resolved.settings.clone();
        let limit = match (settings.max_duration, max_duration) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        settings.deadline = limit.map(|d| started + d);
        // Counts of this run only.
        self.counters.take();
        let mut report = Report::default();
        if let Err(e) = self
            .plan_and_execute(&settings, paths, &mut report, progress)
            .await
        {
            tracing::error!(kind = e.kind(), "sync failed: {e}");
            report
                .failures
                .push(Problem::new("", e.kind(), e.to_string()));
        }
        // A dry run changes nothing and tells nobody: its report is the whole answer.
        if report.failed()
            && !settings.dry_run
            && let Some(topic) = settings.sns_topic_arn.as_deref()
        {
            let account = topic.split(':').nth(4).unwrap_or("unknown");
            let region = self.aws.region().map(|r| r.as_ref()).unwrap_or("unknown");
            let notifier = Notifier::new(&self.aws, self.counters.clone());
            let subject = "vault-secrets-replicator: sync failed";
            if let Err(e) = notifier
                .publish(topic, subject, &report.notice(account, region))
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
        report.aws_requests = self.counters.take();
        report.duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        report
    }

    async fn plan_and_execute(
        &self,
        settings: &Settings,
        paths: Option<&[String]>,
        report: &mut Report,
        progress: &Progress,
    ) -> Result<(), SyncError> {
        let sm = &self.sm;
        let conn = connection(&self.resolved.connection, sm).await?;
        let vault = self.vault(conn).await?;
        let counters = vault.counters.clone();
        counters.take();
        // Not fatal (the run can still read), but a token that is never renewed dies: said.
        if let Err(e) = vault.renew_periodic_token().await {
            report.warnings.push(Problem::new(
                "",
                "vault_token_not_renewed",
                format!("the periodic Vault token could not be renewed, and dies at the end of its period: {e}"),
            ));
        }
        let result = async {
            let now = DateTime::from(std::time::SystemTime::now());
            let (inventory, aws, scope) = match paths {
                None => {
                    let (names_tx, names_rx) = tokio::sync::oneshot::channel();
                    let (inventory, aws) = tokio::join!(
                        crate::inventory::walk_telling_names(
                            &vault,
                            &settings.mount,
                            &settings.path,
                            settings.concurrency,
                            now,
                            progress,
                            Some(names_tx),
                        ),
                        list_aws(sm, settings, names_rx)
                    );
                    (inventory?, aws?, crate::plan::Scope::Everything)
                }
                Some(paths) => {
                    let rels = relative_paths(paths, settings, report);
                    let (inventory, aws) = tokio::join!(
                        crate::inventory::read_paths(&vault, settings, &rels, now),
                        describe_names(sm, settings, &rels)
                    );
                    (inventory, aws?, crate::plan::Scope::Paths)
                }
            };
            tracing::info!(
                vault_secrets = inventory.entries.len(),
                aws_secrets = aws.len(),
                bulk = inventory.bulk_metadata,
                "inventories read"
            );
            report.bulk_metadata = inventory.bulk_metadata;
            let plan = crate::plan::plan_scoped(&inventory.entries, &aws, settings, scope);
            if let Some(reason) = &plan.breaker {
                report
                    .failures
                    .push(Problem::new("", "deletion_breaker", reason.clone()));
            }
            report
                .warnings
                .extend(plan.warnings.iter().map(|(name, message)| {
                    Problem::new(name.clone(), "arn_suffix_name", message.clone())
                }));
            report.dry_run = settings.dry_run;
            if settings.dry_run {
                report.plan = Some(plan.steps.clone());
            }
            let budget = plan.delete_budget;
            crate::execute::execute(plan.steps, budget, &vault, sm, settings, report, progress)
                .await;
            Ok::<_, SyncError>(())
        }
        .await;
        let snap = counters.take();
        report.values_read = snap.get("read_value").copied().unwrap_or(0);
        report.vault_requests = snap
            .into_iter()
            .filter(|(_, n)| *n > 0)
            .map(|(k, n)| (k.to_owned(), n))
            .collect();
        result
    }
}

/// Runs one sync with `args` and reports it (a bad configuration is the report's failure).
pub async fn run(args: &SyncArgs, aws: &SdkConfig) -> Report {
    run_with_progress(args, aws, &Progress::default()).await
}

/// [`run`], counting into `progress` as it goes (the CLI draws it on a terminal).
pub async fn run_with_progress(args: &SyncArgs, aws: &SdkConfig, progress: &Progress) -> Report {
    match Replicator::new(args, aws) {
        Ok(replicator) => replicator.run(None, progress).await,
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
