//! `deployer status`: every resource present, missing or drifted (read live), and the outputs.

use std::io::Write;

use super::{CliError, ExitCodeArgs, emit, outputs_text};
use crate::change::{Action, render_status};
use crate::stack::Stack;

pub async fn run(
    stack: &Stack<'_>,
    codes: ExitCodeArgs,
    json: bool,
    out: &mut dyn Write,
) -> Result<i32, CliError> {
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
    let value = serde_json::json!({
        "stack": stack.spec.stack(),
        "clean": clean,
        "resources": resources,
        "outputs": seen.outputs,
    });
    let mut text = render_status(&seen.changes);
    text.push_str(&outputs_text(&seen.outputs));
    if !clean {
        text.push_str("Run `deployer up` to repair what is missing or drifted.\n");
    }
    emit(out, json, &value, &text)?;
    Ok(codes.code(!clean))
}
