//! The Lambda entry: each invocation (an EventBridge schedule event, or anything) runs one sync
//! and returns the report, or an error when the run failed so Lambda's error metrics see it.

use aws_types::SdkConfig;
use clap::Parser;
use lambda_runtime::{Error, LambdaEvent};

use crate::config::SyncArgs;

/// The Lambda's configuration: the same settings as `replicator sync`, from the environment only.
#[derive(Debug, Parser)]
#[command(name = "bootstrap", no_binary_name = true)]
pub struct LambdaArgs {
    #[command(flatten)]
    pub sync: SyncArgs,
}

impl LambdaArgs {
    /// Reads the environment; the error names the variable to fix.
    pub fn from_env() -> Result<Self, String> {
        Self::try_parse_from(std::iter::empty::<String>()).map_err(|e| {
            format!(
                "invalid Lambda environment: {}",
                e.render().to_string().trim()
            )
        })
    }
}

/// Handles one invocation.
pub async fn handle(
    event: LambdaEvent<serde_json::Value>,
    args: &Result<LambdaArgs, String>,
    aws: &SdkConfig,
) -> Result<serde_json::Value, Error> {
    let args = args.as_ref().map_err(|e| Error::from(e.clone()))?;
    tracing::info!(request_id = %event.context.request_id, "sync started");
    let report = crate::run::run(&args.sync, aws).await;
    tracing::info!(
        created = report.created,
        updated = report.updated,
        unchanged = report.unchanged,
        deleted = report.deleted,
        skipped = report.skipped,
        conflicts = report.conflicts.len(),
        failures = report.failures.len(),
        duration_ms = report.duration_ms,
        "sync finished"
    );
    if report.failed() {
        let first: Vec<String> = report
            .failures
            .iter()
            .take(5)
            .map(|p| {
                format!(
                    "{} [{}]: {}",
                    if p.name.is_empty() { "run" } else { &p.name },
                    p.kind,
                    p.message
                )
            })
            .collect();
        return Err(Error::from(format!(
            "sync failed with {} failure(s): {}",
            report.failures.len(),
            first.join("; ")
        )));
    }
    Ok(serde_json::to_value(&report)?)
}
