//! `deployer destroy`: deletes, in reverse order, only what carries the stack's tag; asks first
//! unless `--yes`; says what it keeps.

use std::io::{BufRead, IsTerminal, Write};

use clap::Args;

use super::{CliError, EXIT_OK, emit};
use crate::change::{Action, Change};
use crate::stack::Stack;

#[derive(Debug, Args)]
pub struct DestroyArgs {
    /// Do not ask for confirmation.
    #[arg(long)]
    pub yes: bool,
}

fn confirm(stack: &str) -> Result<(), CliError> {
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        return Err(CliError::Refused(
            "destroy needs --yes when not run from a terminal".into(),
        ));
    }
    eprint!("Destroy stack {stack:?}? Type its name to confirm: ");
    let mut line = String::new();
    stdin.lock().read_line(&mut line)?;
    if line.trim() == stack {
        Ok(())
    } else {
        Err(CliError::Refused(
            "not confirmed; nothing was deleted".into(),
        ))
    }
}

pub async fn run(
    stack: &Stack<'_>,
    args: &DestroyArgs,
    json: bool,
    out: &mut dyn Write,
) -> Result<i32, CliError> {
    if !args.yes {
        confirm(stack.spec.stack())?;
    }
    let mut progress = |c: &Change| tracing::info!("deleted {} {}", c.kind, c.name);
    let done = stack.destroy(&mut progress).await?;
    let kept = vec![
        format!(
            "replicated secrets {}/* (delete them yourself if you no longer want them)",
            stack.spec.cfg.prefix
        ),
        "anything without this stack's tag".to_owned(),
    ];
    let mut kept = kept;
    if !stack.spec.deploys_vault() {
        kept.push(format!(
            "the external Vault, and {}-vault/init-keys if vault-init stored its unseal keys there",
            stack.spec.stack()
        ));
    }
    let value = serde_json::json!({"stack": stack.spec.stack(), "changes": done, "kept": kept});
    let mut text = String::new();
    for c in &done {
        let verb = if c.action == Action::Delete {
            "deleted"
        } else {
            "absent "
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
