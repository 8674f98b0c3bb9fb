//! `deployer plan`: observe + diff, field by field, and the monthly cost. Changes nothing.

use std::io::Write;

use super::common::{CliError, ExitCodeArgs, emit};
use crate::change::{Action, render_plan};
use crate::cost;
use crate::lambda_zip::LambdaZip;
use crate::stack::Stack;

pub(crate) async fn run(
    stack: &Stack<'_>,
    codes: ExitCodeArgs,
    json: bool,
    out: &mut dyn Write,
) -> Result<i32, CliError> {
    let plan = stack.plan().await?;
    // The schedule's cost scales with the replicas: those there now, or 1,000 for a new stack.
    let mut warnings = stack.spec.cfg.warnings.clone();
    let estimate = if stack.spec.cfg.rules.is_empty() {
        let replicas = crate::resources::replicas::count_live(
            stack.clients,
            &stack
                .spec
                .replicas_spec()
                .map_err(crate::resources::DeployError::from)?,
        )
        .await?;
        if let Some(role) = &stack.spec.cfg.replicator.account_role
            && replicas > 0
        {
            warnings.push(format!(
                "{replicas} replica(s) of this stack under {}/ remain in this account, from before account_role_arn: the function now writes in account {} and no longer updates them; `destroy --delete-replicated-secrets` (or you, by hand) removes them here",
                stack.spec.cfg.prefix,
                role.account()
            ));
        }
        cost::estimate(stack.spec, if replicas == 0 { 1_000 } else { replicas })
    } else {
        // Each rule's replicas here; a new rule, or one in another account, 1,000.
        let views = stack.spec.syncs();
        let here =
            crate::resources::replicas::count_by_sync(stack.clients, &stack.spec.replica_syncs())
                .await?;
        let mut counts = Vec::with_capacity(views.len());
        for (view, n) in views.iter().zip(here) {
            let away = view.cfg.replicator.account_role.as_ref();
            if let Some(role) = away
                && n > 0
            {
                warnings.push(format!(
                    "rule {}: {n} replica(s) under {}/ remain in this account; the rule writes in account {} and no longer updates them; `destroy --delete-replicated-secrets` (or you, by hand) removes them here",
                    view.sync_name().unwrap_or_default(),
                    view.write_prefix(),
                    role.account()
                ));
            }
            counts.push(if n == 0 || away.is_some() { 1_000 } else { n });
        }
        // The one sync of the top-level keys, before the rules: its replicas are no rule's
        // now (unless a rule writes its prefix) and nothing updates or deletes them.
        let top_prefix = &stack.spec.cfg.prefix;
        if views.iter().all(|v| v.write_prefix() != top_prefix) {
            let mut before = stack.spec.clone();
            before.cfg.rules = Vec::new();
            let left =
                crate::resources::replicas::count_by_sync(stack.clients, &before.replica_syncs())
                    .await?;
            if let Some(&n) = left.first()
                && n > 0
            {
                warnings.push(format!(
                    "{n} replica(s) of this stack under {top_prefix}/, from the top-level keys' sync before [[sync]], are no rule's now: nothing updates or deletes them (destroy keeps the stack key while they are encrypted with it); give a rule prefix = \"{top_prefix}\" to keep them synced, or delete them"
                ));
            }
        }
        cost::estimate_syncs(stack.spec, &counts)
    };
    let pending = plan.changes_anything();
    let value = serde_json::json!({
        "stack": stack.spec.stack(),
        "changes_pending": pending,
        "changes": plan.changes.iter().filter(|c| c.action != Action::Absent).collect::<Vec<_>>(),
        "cost": estimate,
        "warnings": warnings,
        "code": stack.zip.map(LambdaZip::summary),
        "code_signing_profile": stack.spec.cfg.code_signing_profile,
    });
    let mut text = render_plan(&plan.changes);
    text.push('\n');
    for w in &warnings[stack.spec.cfg.warnings.len()..] {
        text.push_str(&format!("warning: {w}\n"));
    }
    text.extend(stack.zip.map(LambdaZip::summary_line));
    text.push_str(&stack.spec.code_signing_line());
    text.push_str(&cost::render(&estimate));
    emit(out, json, &value, &text)?;
    Ok(codes.code(pending))
}
