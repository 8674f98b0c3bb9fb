//! `deployer sync-now`: runs the replicator at once, as the schedule would: invokes the function
//! synchronously and prints its report (names, counts and errors; never a value). With a
//! notification address, a failed run sends its notice to the failure topic itself (the
//! on-failure destination sees asynchronous invocations only): one notice, as for a scheduled
//! run.

use std::io::Write;

use aws_sdk_lambda::primitives::Blob;
use aws_sdk_lambda::types::InvocationType;

use super::common::{CliError, EXIT_ERROR, EXIT_OK, emit};
use crate::resources::Ctx;
use crate::stack::Stack;

#[derive(Debug, Clone, Copy, Default, clap::Args)]
pub struct SyncNowArgs {
    /// For this run only: where Vault's latest version is older than the one AWS holds (a
    /// Vault restored from a snapshot, or failed over: the run reports `vault_behind`),
    /// replicate Vault's version anyway.
    #[arg(long)]
    pub accept_vault_rollback: bool,
}

/// What a synchronous invocation answered: its JSON body, and Lambda's function error (the
/// run failed) with the error's message.
#[derive(Debug)]
pub(crate) struct Answered {
    pub body: serde_json::Value,
    /// `Some((kind, message))` when the function failed.
    pub failed: Option<(String, String)>,
}

/// Invokes the function `name` synchronously with `event`.
pub(crate) async fn invoke(
    c: &crate::clients::Clients,
    name: &str,
    event: &serde_json::Value,
) -> Result<Answered, CliError> {
    let answer = c
        .lambda
        .invoke()
        .function_name(name)
        .invocation_type(InvocationType::RequestResponse)
        .payload(Blob::new(event.to_string()))
        .send()
        .await
        .ctx("Invoke", name)
        .map_err(crate::resources::DeployError::from)?;
    let payload = answer.payload().map(|b| b.as_ref()).unwrap_or_default();
    let body: serde_json::Value = serde_json::from_slice(payload).unwrap_or_default();
    let failed = answer.function_error().map(|kind| {
        // The run's notice (names and error texts only), as the failure topic gets it.
        let message = body["errorMessage"]
            .as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| String::from_utf8_lossy(payload).into_owned());
        (kind.to_owned(), message)
    });
    Ok(Answered { body, failed })
}

pub(crate) async fn run(
    stack: &Stack<'_>,
    args: &SyncNowArgs,
    json: bool,
    out: &mut dyn Write,
) -> Result<i32, CliError> {
    let (c, spec) = (stack.clients, stack.spec);
    let name = spec.function_name();
    let mut event = serde_json::json!({});
    if args.accept_vault_rollback {
        event["accept_vault_rollback"] = true.into();
    }
    // A synchronous invocation never reaches the on-failure destination: a failed run
    // publishes its notice itself, with the function's role (the only publisher the topic's
    // key admits besides the Vault host's).
    if spec.notifies() {
        event["notice_topic"] = spec.topic_arn().into();
    }
    let Answered { body, failed } = invoke(c, &name, &event).await?;
    if let Some((kind, message)) = failed {
        let value = serde_json::json!({"function": name, "failed": kind, "error": message});
        emit(
            out,
            json,
            &value,
            &format!("{name}: the sync failed ({kind}):\n{message}\n"),
        )?;
        return Ok(EXIT_ERROR);
    }
    let summary = contract::report::Summary::of(&body);
    let text = format!("{name}: {}\n", summary.line());
    emit(out, json, &body, &text)?;
    Ok(EXIT_OK)
}
