//! `deployer pause` and `deployer resume`: stop replication without tearing anything down, and
//! start it again without losing what changed meanwhile. Paused, the schedule is disabled and
//! tagged so, and the sync and watch functions carry `REPLICATOR_PAUSED=true`, so they refuse
//! every sync (the change watcher's batches fail and are tried again, and the full sync
//! `resume` runs covers them); `up` keeps a paused stack paused (a schedule disabled without
//! the tag is drift it repairs), and `status` says so.

use std::io::Write;

use super::common::{CliError, EXIT_ERROR, EXIT_OK, emit};
use crate::resources::{Ctx, DeployError};
use crate::spec::Duty;
use crate::stack::Stack;

/// Sets (`true`) or removes the pause mark in the environment of each function that syncs,
/// leaving every other setting as it is; waits until each has its new configuration.
async fn mark(stack: &Stack<'_>, paused: bool) -> Result<Vec<String>, DeployError> {
    let (c, spec) = (stack.clients, stack.spec);
    let mut changed = Vec::new();
    for duty in [Duty::Sync, Duty::Watch] {
        let name = spec.function_name_of(duty);
        let Some(conf) = crate::resources::found(
            c.lambda
                .get_function_configuration()
                .function_name(&name)
                .send()
                .await
                .ctx("GetFunctionConfiguration", &name),
        )?
        else {
            continue;
        };
        let Some(mut vars) = conf.environment().and_then(|e| e.variables()).cloned() else {
            return Err(DeployError::Untrusted(format!(
                "{name} shows no environment (one that cannot be decrypted?): not changed; run `deployer up`"
            )));
        };
        // Code from before pausing ignores the mark: such a function would go on syncing.
        if !vars.contains_key(contract::env::STACK) {
            return Err(DeployError::Untrusted(format!(
                "{name} runs code from before pausing, which would go on syncing: run `deployer up` first"
            )));
        }
        let has = vars.get(contract::env::PAUSED).map(String::as_str) == Some("true");
        if has == paused {
            continue;
        }
        if paused {
            vars.insert(contract::env::PAUSED.to_owned(), "true".to_owned());
        } else {
            vars.remove(contract::env::PAUSED);
        }
        c.lambda
            .update_function_configuration()
            .function_name(&name)
            .set_kms_key_arn(conf.kms_key_arn().map(str::to_owned))
            .environment(
                aws_sdk_lambda::types::Environment::builder()
                    .set_variables(Some(vars))
                    .build(),
            )
            .send()
            .await
            .ctx("UpdateFunctionConfiguration", &name)?;
        crate::resources::function::wait_updated(c, &name).await?;
        changed.push(name);
    }
    Ok(changed)
}

/// Tags the schedule rule as paused, or removes the tag.
async fn tag_paused(stack: &Stack<'_>, paused: bool) -> Result<(), DeployError> {
    let (c, spec) = (stack.clients, stack.spec);
    let arn = spec.rule_arn();
    let tag = crate::resources::rule::PAUSED_TAG;
    if paused {
        c.events
            .tag_resource()
            .resource_arn(&arn)
            .tags(
                aws_sdk_eventbridge::types::Tag::builder()
                    .key(tag)
                    .value("true")
                    .build()?,
            )
            .send()
            .await
            .ctx("TagResource", &arn)?;
    } else {
        c.events
            .untag_resource()
            .resource_arn(&arn)
            .tag_keys(tag)
            .send()
            .await
            .ctx("UntagResource", &arn)?;
    }
    Ok(())
}

/// Whether the stack's schedule is there and this stack's; said when not.
async fn ours(stack: &Stack<'_>, json: bool, out: &mut dyn Write) -> Result<bool, CliError> {
    let rule = stack.spec.rule_name();
    let found = crate::resources::rule::observe(stack.clients, &stack.spec.schedule_spec()).await?;
    if found.is_some_and(|r| r.ours) {
        return Ok(true);
    }
    let message =
        format!("{rule} is not this stack's schedule, or is missing: run `deployer up` first");
    emit(
        out,
        json,
        &serde_json::json!({"error": message}),
        &format!("{message}\n"),
    )?;
    Ok(false)
}

/// `deployer pause`.
pub(crate) async fn pause(
    stack: &Stack<'_>,
    json: bool,
    out: &mut dyn Write,
) -> Result<i32, CliError> {
    let (c, spec) = (stack.clients, stack.spec);
    let rule = spec.rule_name();
    if !ours(stack, json, out).await? {
        return Ok(EXIT_ERROR);
    }
    // The schedule first, tagged as paused: cut short after it, `up` finishes the pause (it
    // marks the functions of a paused stack); then the functions refuse.
    tag_paused(stack, true).await?;
    c.events
        .disable_rule()
        .name(&rule)
        .send()
        .await
        .ctx("DisableRule", &rule)
        .map_err(DeployError::from)?;
    let marked = mark(stack, true).await?;
    // No run is expected while paused: the alarms say nothing.
    crate::resources::monitoring::set_paused(c, &spec.monitoring_spec(), true).await?;
    let value = serde_json::json!({"paused": true, "functions": marked, "schedule": rule});
    emit(
        out,
        json,
        &value,
        &format!(
            "paused: {rule} is disabled and the functions sync nothing; the change watcher's batches are tried again until then. `deployer resume` starts again with a full sync.\n"
        ),
    )?;
    Ok(EXIT_OK)
}

/// `deployer resume`: the functions sync again, the schedule runs again, and a full sync now
/// replicates what changed meanwhile; its exit code is the sync's.
pub(crate) async fn resume(
    stack: &Stack<'_>,
    json: bool,
    out: &mut dyn Write,
) -> Result<i32, CliError> {
    let (c, spec) = (stack.clients, stack.spec);
    let rule = spec.rule_name();
    if !ours(stack, json, out).await? {
        return Ok(EXIT_ERROR);
    }
    // The functions first: cut short after them, the stack is still paused (`up` marks them
    // again) until the schedule runs again.
    let marked = mark(stack, false).await?;
    c.events
        .enable_rule()
        .name(&rule)
        .send()
        .await
        .ctx("EnableRule", &rule)
        .map_err(DeployError::from)?;
    tag_paused(stack, false).await?;
    crate::resources::monitoring::set_paused(c, &spec.monitoring_spec(), false).await?;
    if !json {
        writeln!(
            out,
            "resumed: {rule} is enabled{}; a full sync now:",
            if marked.is_empty() {
                String::new()
            } else {
                format!(" and {} sync again", marked.join(", "))
            }
        )?;
    }
    super::sync_now::run(stack, &super::sync_now::SyncNowArgs::default(), json, out).await
}
