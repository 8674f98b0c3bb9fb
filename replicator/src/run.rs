//! One sync run from configuration to report: resolve the Vault connection, walk Vault, list
//! AWS, plan, execute, notify. Shared by the CLI and the Lambda. Network I/O.

use std::sync::Arc;
use std::time::Instant;

use aws_smithy_types::DateTime;
use aws_types::SdkConfig;

use crate::aws::{AwsCounters, AwsSecret, Notifier, SecretsManager};
use crate::config::{ConnectionSource, DirectAuth, Settings, SyncArgs};
use crate::contract::ConnectionSecret;
use crate::progress::Progress;
use crate::report::{Problem, Report};
use crate::vault::{VaultAuth, VaultClient};

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

/// Builds the Vault client from the connection source.
/// The AWS IAM auth of Vault, signing with this process's credentials.
fn aws_iam_auth(
    aws: &SdkConfig,
    mount: String,
    role: String,
    server_id: Option<String>,
) -> Result<VaultAuth, SyncError> {
    let credentials = aws.credentials_provider().ok_or_else(|| {
        SyncError::Vault(crate::vault::VaultError::Login {
            mount: mount.clone(),
            detail: "no AWS credentials to sign the IAM login".into(),
        })
    })?;
    Ok(VaultAuth::AwsIam {
        mount,
        role,
        server_id,
        credentials,
    })
}

async fn vault_client(
    args: &SyncArgs,
    settings: &mut Settings,
    sm: &SecretsManager,
    aws: &SdkConfig,
) -> Result<VaultClient, SyncError> {
    match args.connection()? {
        ConnectionSource::Secret(name) => {
            let raw = sm.read_string(&name).await?;
            let conn: ConnectionSecret =
                serde_json::from_str(raw.expose()).map_err(|e| SyncError::Connection {
                    name: name.clone(),
                    // serde's message names the field, never the value of a string.
                    message: format!("not the expected JSON ({{\"vaultAddress\", \"vaultToken\" or \"vaultRoleId\"+\"vaultSecretId\", ...}}): {}", e.classify_message()),
                })?;
            if conn.vault_address.is_empty() {
                return Err(SyncError::Connection {
                    name,
                    message: "vaultAddress is empty".into(),
                });
            }
            if args.mount.is_none()
                && let Some(mount) = conn.vault_kv_mount.as_ref().filter(|m| !m.is_empty())
            {
                settings.mount = mount.trim_matches('/').to_owned();
            }
            let auth = match (
                &conn.vault_role_id,
                &conn.vault_secret_id,
                &conn.vault_token,
            ) {
                (Some(role_id), Some(secret_id), _) => VaultAuth::AppRole {
                    mount: conn
                        .vault_approle_mount
                        .clone()
                        .unwrap_or_else(|| "approle".into()),
                    role_id: role_id.clone(),
                    secret_id: secret_id.clone(),
                },
                (_, _, _)
                    if conn
                        .vault_aws_role
                        .as_deref()
                        .is_some_and(|r| !r.is_empty()) =>
                {
                    aws_iam_auth(
                        aws,
                        conn.vault_aws_auth_mount
                            .clone()
                            .unwrap_or_else(|| "aws".into()),
                        conn.vault_aws_role.clone().unwrap_or_default(),
                        conn.vault_aws_server_id.clone(),
                    )?
                }
                (_, _, Some(token)) if !token.is_empty() => VaultAuth::Token(token.clone()),
                _ => {
                    return Err(SyncError::Connection {
                        name,
                        message:
                            "holds no credentials: set vaultToken, or vaultRoleId and vaultSecretId"
                                .into(),
                    });
                }
            };
            let namespace = conn
                .vault_namespace
                .as_deref()
                .or(args.vault_namespace.as_deref());
            Ok(VaultClient::new(
                &conn.vault_address,
                auth,
                conn.vault_ca_cert.as_deref(),
                settings.concurrency,
            )?
            .in_namespace(namespace))
        }
        ConnectionSource::Direct {
            address,
            auth,
            ca_cert,
        } => {
            let pem = match &ca_cert {
                Some(path) => Some(std::fs::read_to_string(path).map_err(|e| {
                    crate::vault::VaultError::Tls(format!("cannot read {}: {e}", path.display()))
                })?),
                None => None,
            };
            let auth = match auth {
                DirectAuth::Token(t) => VaultAuth::Token(t),
                DirectAuth::AppRole {
                    mount,
                    role_id,
                    secret_id,
                } => VaultAuth::AppRole {
                    mount,
                    role_id,
                    secret_id,
                },
                DirectAuth::AwsIam {
                    mount,
                    role,
                    server_id,
                } => aws_iam_auth(aws, mount, role, server_id)?,
            };
            Ok(
                VaultClient::new(&address, auth, pem.as_deref(), settings.concurrency)?
                    .in_namespace(args.vault_namespace.as_deref()),
            )
        }
    }
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
    // One copy of the names at a time, gone before the listing starts.
    let names: Vec<String> = names.into_iter().map(|n| format!("{root}{n}")).collect();
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

async fn plan_and_execute(
    args: &SyncArgs,
    sm: &SecretsManager,
    aws: &SdkConfig,
    report: &mut Report,
    progress: &Progress,
) -> Result<(), SyncError> {
    let mut settings = args.settings()?;
    let vault = vault_client(args, &mut settings, sm, aws).await?;
    let counters = vault.counters.clone();
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
            list_aws(sm, &settings, names_rx)
        );
        let (inventory, aws) = (inventory?, aws?);
        tracing::info!(
            vault_secrets = inventory.entries.len(),
            aws_secrets = aws.len(),
            bulk = inventory.bulk_metadata,
            "inventories read"
        );
        report.bulk_metadata = inventory.bulk_metadata;
        let plan = crate::plan::plan(&inventory.entries, &aws, &settings);
        if let Some(reason) = &plan.breaker {
            report
                .failures
                .push(Problem::new("", "deletion_breaker", reason.clone()));
        }
        report.warnings.extend(
            plan.warnings.iter().map(|(name, message)| {
                Problem::new(name.clone(), "arn_suffix_name", message.clone())
            }),
        );
        report.dry_run = settings.dry_run;
        if settings.dry_run {
            report.plan = Some(plan.steps.clone());
        }
        crate::execute::execute(plan.steps, &vault, sm, &settings, report, progress).await;
        Ok::<_, SyncError>(())
    }
    .await;
    let snap = counters.snapshot();
    report.values_read = snap.get("read_value").copied().unwrap_or(0);
    report.vault_requests = snap
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .map(|(k, n)| (k.to_owned(), n))
        .collect();
    result
}

/// Runs one sync and, when anything failed, publishes one notice. Never panics on bad input:
/// every problem ends up in the report.
pub async fn run(args: &SyncArgs, aws: &SdkConfig) -> Report {
    run_with_progress(args, aws, &Progress::default()).await
}

/// [`run`], counting into `progress` as it goes (the CLI draws it on a terminal).
pub async fn run_with_progress(args: &SyncArgs, aws: &SdkConfig, progress: &Progress) -> Report {
    let started = Instant::now();
    let counters = Arc::new(AwsCounters::default());
    let writes = args.writes_per_second.clamp(1, 50);
    let sm = SecretsManager::new(aws, writes, counters.clone());
    let mut report = Report::default();
    if let Err(e) = plan_and_execute(args, &sm, aws, &mut report, progress).await {
        tracing::error!(kind = e.kind(), "sync failed: {e}");
        report
            .failures
            .push(Problem::new("", e.kind(), e.to_string()));
    }
    // A dry run changes nothing and tells nobody: its report is the whole answer.
    if report.failed()
        && !args.dry_run
        && let Some(topic) = args.sns_topic_arn.as_deref().filter(|t| !t.is_empty())
    {
        let account = topic.split(':').nth(4).unwrap_or("unknown");
        let region = aws.region().map(|r| r.as_ref()).unwrap_or("unknown");
        let notifier = Notifier::new(aws, counters.clone());
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
    report.aws_requests = counters.snapshot();
    report.duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    report
}
