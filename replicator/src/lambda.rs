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
            let rendered = e.render().to_string();
            let what = rendered
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with("For more information"))
                .collect::<Vec<_>>()
                .join(" ");
            let what = what.trim_start_matches("error: ");
            match variable_of(&e) {
                Some(var) => format!("invalid Lambda environment: {var}: {what}"),
                None => format!("invalid Lambda environment: {what}"),
            }
        })
    }
}

/// The environment variable behind the flag a parse error names (`--deletion-policy <…>` →
/// `REPLICATOR_DELETION_POLICY`): the Lambda has no command line, only variables.
fn variable_of(e: &clap::Error) -> Option<String> {
    use clap::CommandFactory as _;
    use clap::error::{ContextKind, ContextValue};
    let ContextValue::String(flag) = e.get(ContextKind::InvalidArg)? else {
        return None;
    };
    let long = flag.split_whitespace().next()?.strip_prefix("--")?;
    LambdaArgs::command()
        .get_arguments()
        .find(|a| a.get_long() == Some(long))?
        .get_env()
        .map(|v| v.to_string_lossy().into_owned())
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
        // The error is what the on-failure destination carries to the failure topic: the same
        // capped notice a shell run publishes, names and error texts only.
        let arn = event.context.invoked_function_arn.as_str();
        let (region, account) = (
            arn.split(':').nth(3).unwrap_or("unknown"),
            arn.split(':').nth(4).unwrap_or("unknown"),
        );
        return Err(Error::from(report.notice(account, region)));
    }
    Ok(serde_json::to_value(&report)?)
}
