//! `deployer destroy`: deletes, in reverse order, only what carries the stack's tag; asks first
//! unless `--yes`; says what it keeps.

use std::io::Write;

use clap::Args;

use super::common::{CliError, EXIT_OK, emit};
use crate::change::{Action, Change};
use crate::stack::{Phase, Stack};

#[derive(Debug, Args)]
pub struct DestroyArgs {
    /// Do not ask for confirmation.
    #[arg(long)]
    pub yes: bool,
    /// Also schedule for deletion the replicated secrets `<prefix>/*` that the replicator manages
    /// (tag managed-by=vault-secrets-replicator), with `recovery_window_days`; other secrets
    /// under the prefix are kept.
    #[arg(long)]
    pub delete_replicated_secrets: bool,
}

fn confirm(stack: &str, replicas: Option<&str>) -> Result<(), CliError> {
    let also = replicas
        .map(|p| format!(" and the replicated secrets {p}"))
        .unwrap_or_default();
    super::ask::confirm(
        &format!("Destroy stack {stack:?}{also}? Type its name to confirm: "),
        stack,
        "destroy needs --yes when not run from a terminal".into(),
        "not confirmed; nothing was deleted",
    )
}

pub(crate) async fn run(
    stack: &Stack<'_>,
    args: &DestroyArgs,
    json: bool,
    out: &mut dyn Write,
) -> Result<i32, CliError> {
    let prefixes: Vec<String> = stack
        .spec
        .syncs()
        .iter()
        .map(|v| format!("{}/*", v.write_prefix()))
        .collect();
    let prefixes = prefixes.join(", ");
    if !args.yes {
        confirm(
            stack.spec.stack(),
            args.delete_replicated_secrets.then_some(prefixes.as_str()),
        )?;
    }
    let ticker = super::common::Ticker::on_stderr();
    let mut progress = |phase: Phase, c: &Change| match phase {
        Phase::Starting => ticker.set(format!("deleting {} {}", c.kind, c.name)),
        Phase::Done => {
            ticker.clear();
            tracing::info!("deleted {} {}", c.kind, c.name);
        }
    };
    let done = stack
        .destroy(args.delete_replicated_secrets, &mut progress)
        .await?;
    drop(ticker);
    let mut kept = Vec::new();
    // The stack's credentials reach only its own account: there, --delete-replicated-secrets
    // removes what the function wrote before account_role_arn was set.
    for view in stack.spec.syncs() {
        if let Some(role) = &view.cfg.replicator.account_role {
            kept.push(format!(
                "replicated secrets {}/* in account {} (`deployer target destroy{} --delete-replicated-secrets --target-profile PROFILE` schedules them for deletion with that account's credentials)",
                view.write_prefix(),
                role.account(),
                view.sync_name().map(|n| format!(" --sync {n}")).unwrap_or_default()
            ));
        }
    }
    if !args.delete_replicated_secrets {
        kept.push(format!(
            "replicated secrets {prefixes} (--delete-replicated-secrets schedules them for deletion)"
        ));
    }
    kept.push("anything without this stack's tag".to_owned());
    if !stack.spec.deploys_vault() {
        kept.push(format!(
            "the external Vault, and {} if vault-init stored its unseal keys there",
            stack.spec.init_keys_secret_name()
        ));
    }
    let value = serde_json::json!({"stack": stack.spec.stack(), "changes": done, "kept": kept});
    let mut text = String::new();
    for c in &done {
        let verb = match c.action {
            Action::Delete => "deleted",
            Action::Unchanged => "kept   ",
            _ => "absent ",
        };
        text.push_str(&format!("{verb} {} {}\n", c.kind, c.name));
        if let Some(n) = &c.note {
            text.push_str(&format!("        {n}\n"));
        }
    }
    for k in &kept {
        text.push_str(&format!("kept    {k}\n"));
    }
    emit(out, json, &value, &text)?;
    Ok(EXIT_OK)
}
