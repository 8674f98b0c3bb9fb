//! `deployer up`: converge in dependency order, progress on stderr, outputs on stdout. A change
//! of access (policies, trust, security groups), of the code that runs and its settings, of who
//! is notified or of the internet route is shown and confirmed first, unless `--yes`.

use std::io::Write;

use clap::Args;

use super::common::{CliError, EXIT_OK, emit, outputs_text};
use crate::change::{Action, Change};
use crate::lambda_zip::LambdaZip;
use crate::stack::{Phase, Stack};

fn describe(c: &Change) -> String {
    let verb = match c.action {
        Action::Create => "creating",
        Action::Update => "updating",
        Action::Delete => "deleting",
        _ => "checking",
    };
    format!("{verb} {} {}", c.kind, c.name)
}

#[derive(Debug, Default, Args)]
pub struct UpArgs {
    /// Apply changes of access (IAM policies and trust, resource policies, security groups),
    /// of the functions' code and settings, of the notification address and of the Vault
    /// host's internet route without asking. Needed when not run from a terminal.
    #[arg(long)]
    pub yes: bool,
}

/// The access changes as lines: what, and which of its access fields.
fn access_lines(changes: &[&Change]) -> String {
    changes
        .iter()
        .map(|c| {
            let fields: Vec<&str> = c
                .fields
                .iter()
                .filter(|f| f.field.needs_confirmation())
                .map(|f| f.field.as_str())
                .collect();
            format!("  {} ({})\n", describe(c), fields.join(", "))
        })
        .collect()
}

/// Asks before changes of access; refuses without a terminal.
fn confirm(
    changes: &[&Change],
    zip: Option<&LambdaZip>,
    spec: &crate::spec::Spec,
) -> Result<(), CliError> {
    let mut list = access_lines(changes);
    list.extend(zip.map(LambdaZip::summary_line));
    list.push_str(&spec.code_signing_line());
    super::ask::confirm(
        &format!(
            "These changes alter who may reach or do what, the code that runs, its settings, who is notified, or the route to the internet:\n{list}Apply them? Type yes: "
        ),
        "yes",
        format!(
            "up would change access, or what runs and how:\n{list}review them with `deployer plan`, then run `deployer up --yes` (needed when not run from a terminal)"
        ),
        "not confirmed; nothing was changed",
    )
}

pub(crate) async fn run(
    stack: &Stack<'_>,
    args: &UpArgs,
    json: bool,
    out: &mut dyn Write,
) -> Result<i32, CliError> {
    if !args.yes {
        let plan = stack.plan().await?;
        let access: Vec<&Change> = plan
            .changes
            .iter()
            .filter(|c| c.needs_confirmation())
            .collect();
        if !access.is_empty() {
            confirm(&access, stack.zip, stack.spec)?;
        }
    }
    let ticker = super::common::Ticker::on_stderr();
    let mut progress = |_: Phase, c: &Change| {
        ticker.clear();
        tracing::info!("{}", describe(c));
        ticker.set(describe(c));
    };
    let done = stack.up(&mut progress).await?;
    drop(ticker);
    let applied: Vec<&Change> = done
        .changes
        .iter()
        .filter(|c| c.changes_anything())
        .collect();
    let value = serde_json::json!({
        "stack": stack.spec.stack(),
        "applied": applied,
        "outputs": done.outputs,
        "code": stack.zip.map(LambdaZip::summary),
        "code_signing_profile": stack.spec.cfg.code_signing_profile,
    });
    let mut text = if applied.is_empty() {
        "No changes: the stack matches the configuration.\n".to_owned()
    } else {
        applied
            .iter()
            .map(|c| format!("{}\n", describe(c).replacen("ing ", "ed ", 1)))
            .collect::<String>()
    };
    text.extend(stack.zip.map(LambdaZip::summary_line));
    text.push_str(&stack.spec.code_signing_line());
    text.push_str(&outputs_text(&done.outputs));
    emit(out, json, &value, &text)?;
    Ok(EXIT_OK)
}
