//! `deployer up`: converge in dependency order, progress on stderr, outputs on stdout.

use std::io::Write;

use super::{CliError, EXIT_OK, emit, outputs_text};
use crate::change::{Action, Change};
use crate::stack::Stack;

fn describe(c: &Change) -> String {
    let verb = match c.action {
        Action::Create => "creating",
        Action::Update => "updating",
        Action::Delete => "deleting",
        _ => "checking",
    };
    format!("{verb} {} {}", c.kind, c.name)
}

pub async fn run(stack: &Stack<'_>, json: bool, out: &mut dyn Write) -> Result<i32, CliError> {
    let mut progress = |c: &Change| tracing::info!("{}", describe(c));
    let done = stack.up(&mut progress).await?;
    let applied: Vec<&Change> = done
        .changes
        .iter()
        .filter(|c| c.changes_anything())
        .collect();
    let value = serde_json::json!({
        "stack": stack.spec.stack(),
        "applied": applied,
        "outputs": done.outputs,
    });
    let mut text = if applied.is_empty() {
        "No changes: the stack matches the configuration.\n".to_owned()
    } else {
        applied
            .iter()
            .map(|c| format!("{}\n", describe(c).replacen("ing ", "ed ", 1)))
            .collect::<String>()
    };
    text.push_str(&outputs_text(&done.outputs));
    emit(out, json, &value, &text)?;
    Ok(EXIT_OK)
}
