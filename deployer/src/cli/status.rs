//! `deployer status`: every resource present, missing or drifted (read live), and the outputs.

use std::io::Write;

use super::common::{CliError, ExitCodeArgs, emit, outputs_text};
use crate::change::{Action, render_status};
use crate::stack::Stack;

#[derive(Debug, Clone, Copy, clap::Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub codes: ExitCodeArgs,

    /// Where each replicated secret stands (in sync, behind, missing, conflict, orphaned, …),
    /// as the sync function sees it from a dry run: Vault's metadata and AWS's tags only, no
    /// value read, nothing written.
    #[arg(long)]
    pub secrets: bool,
}

pub(crate) async fn run(
    stack: &Stack<'_>,
    args: StatusArgs,
    json: bool,
    out: &mut dyn Write,
) -> Result<i32, CliError> {
    if args.secrets {
        return secrets(stack, json, out).await;
    }
    let codes = args.codes;
    let seen = stack.plan().await?;
    let resources: Vec<serde_json::Value> = seen
        .changes
        .iter()
        .filter(|c| c.action != Action::Absent)
        .map(|c| {
            let status = match c.action {
                Action::Unchanged => "present",
                Action::Create => "missing",
                Action::Update => "drifted",
                _ => "unwanted",
            };
            serde_json::json!({"kind": c.kind, "name": c.name, "status": status, "fields": c.fields})
        })
        .collect();
    let clean = !seen.changes_anything();
    // The runs are told, not checked: a log that cannot be read (throttled, or no
    // logs:FilterLogEvents) leaves the rest of the status standing.
    let syncing: Vec<_> = (stack.spec.duties().into_iter())
        .filter(|d| d.replicates())
        .map(|d| stack.spec.log_group_spec(d))
        .collect();
    let syncs = stack.spec.syncs();
    let rules: Vec<&str> = (syncs.iter())
        .map(|v| v.sync_name().unwrap_or(contract::metrics::DEFAULT_RULE))
        .collect();
    let owner = stack.spec.owner();
    let runs = crate::resources::logs::last_runs(stack.clients, &owner, &syncing, &rules);
    let (last, unread) = match runs.await {
        Ok(last) => (last, None),
        Err(e) => (Default::default(), Some(e.to_string())),
    };
    // Each sync's last run, in the configuration's order: one line each, "none" if not logged.
    let syncs: Vec<(String, Option<&crate::resources::logs::LastRun>)> = stack
        .spec
        .syncs()
        .iter()
        .map(|v| {
            let rule = v.sync_name().unwrap_or_default().to_owned();
            let run = last.get(v.sync_name().unwrap_or(contract::metrics::DEFAULT_RULE));
            (rule, run)
        })
        .collect();
    let value = serde_json::json!({
        "stack": stack.spec.stack(),
        "paused": stack.spec.paused,
        "clean": clean,
        "resources": resources,
        "outputs": seen.outputs,
        "last_runs": syncs
            .iter()
            .map(|(rule, run)| serde_json::json!({
                "rule": (!rule.is_empty()).then_some(rule),
                "last_run": run,
            }))
            .collect::<Vec<_>>(),
        "last_runs_unread": unread,
    });
    let mut text = render_status(&seen.changes);
    let days = crate::resources::logs::LAST_RUN_WINDOW.as_secs() / 86_400;
    for (rule, run) in &syncs {
        let who = if rule.is_empty() {
            "last run".to_owned()
        } else {
            format!("rule {rule}: last run")
        };
        match (run, &unread) {
            (Some(run), _) => text.push_str(&format!("{who} {}\n", run.line())),
            (None, Some(e)) => text.push_str(&format!("{who}: not read ({e})\n")),
            (None, None) => text.push_str(&format!("{who}: none logged in {days} days\n")),
        }
    }
    if stack.spec.paused {
        text.push_str(
            "Paused (deployer pause): the schedule is off and the functions sync nothing until `deployer resume`.\n",
        );
    }
    text.push_str(&outputs_text(&seen.outputs));
    if !clean {
        text.push_str("Run `deployer up` to repair what is missing or drifted.\n");
    }
    emit(out, json, &value, &text)?;
    Ok(codes.code(!clean))
}

/// `status --secrets`: asks the sync function (`{"status": true}`, a synchronous dry run) and
/// prints each secret's state.
async fn secrets(stack: &Stack<'_>, json: bool, out: &mut dyn Write) -> Result<i32, CliError> {
    use contract::status::{Entry, exit_code, to_text};

    use crate::resources::Ctx;

    let (c, spec) = (stack.clients, stack.spec);
    let name = spec.function_name();
    // A function from before status requests would take the event for the schedule's and
    // sync: it is asked only once `up` has given it code that answers (its environment names
    // the stack from the same release on).
    let conf = c
        .lambda
        .get_function_configuration()
        .function_name(&name)
        .send()
        .await
        .ctx("GetFunctionConfiguration", &name)
        .map_err(crate::resources::DeployError::from)?;
    let answers = conf
        .environment()
        .and_then(|e| e.variables())
        .is_some_and(|v| v.contains_key(contract::env::STACK));
    if !answers {
        let message = format!(
            "{name} predates status requests (it would run a sync instead): run `deployer up` first"
        );
        let value = serde_json::json!({"function": name, "error": message});
        emit(out, json, &value, &format!("{message}\n"))?;
        return Ok(super::common::EXIT_ERROR);
    }
    let answered = super::sync_now::invoke(c, &name, &serde_json::json!({"status": true})).await?;
    let body = answered.body;
    let parsed = serde_json::from_value::<Vec<Entry>>(body["secrets"].clone());
    let entries = match (answered.failed, parsed) {
        (None, Ok(entries)) => entries,
        (failed, _) => {
            let message = failed.map_or_else(|| body.to_string(), |(_, message)| message);
            let value = serde_json::json!({"function": name, "error": message});
            emit(
                out,
                json,
                &value,
                &format!("{name}: cannot tell where the secrets stand: {message}\n"),
            )?;
            return Ok(super::common::EXIT_ERROR);
        }
    };
    let summary = contract::report::Summary::of(&body);
    let mut text = to_text(&entries);
    text.push_str(&summary.failure_lines());
    emit(out, json, &body, &text)?;
    Ok(i32::from(exit_code(!summary.failures.is_empty(), &entries)))
}
