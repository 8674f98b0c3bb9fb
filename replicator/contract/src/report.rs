//! The run report as both programs read it back: the replicator writes the whole report
//! (`replicator::report::Report`, JSON), and whoever receives it (the watcher from the function
//! it invokes, `deployer sync-now` and `status --secrets`) reads it as a [`Summary`] and says it
//! with [`Summary::line`], one way. No I/O; names and counts only, never a value.

use serde::{Deserialize, Serialize};

/// A conflict or a failure of one secret (or of the whole run, with `name` empty).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub message: String,
    /// The rule it is of, in a rules document's report.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
}

impl Problem {
    pub fn new(
        name: impl Into<String>,
        kind: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            name: name.into(),
            kind: kind.into(),
            message: message.into(),
            rule: None,
        }
    }
}

/// What a run's report says in brief: its counts and its problems. Read from the report's JSON
/// (any key it leaves out is zero or none); the function's own failure, when it had one, is
/// `function_error`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct Summary {
    #[serde(default)]
    pub created: u64,
    #[serde(default)]
    pub updated: u64,
    #[serde(default)]
    pub unchanged: u64,
    #[serde(default)]
    pub deleted: u64,
    #[serde(default)]
    pub skipped: u64,
    /// The deadline came before every write was started (a success: the next run goes on).
    #[serde(default)]
    pub partial: bool,
    /// Planned only: the counts are what a run would do.
    #[serde(default)]
    pub dry_run: bool,
    #[serde(default)]
    pub conflicts: Vec<Problem>,
    #[serde(default)]
    pub failures: Vec<Problem>,
    /// The function failed as a whole (Lambda's `X-Amz-Function-Error`).
    #[serde(default)]
    pub function_error: Option<String>,
}

impl Summary {
    /// The summary of a report's JSON; an answer that is no report is an empty one.
    #[cfg(feature = "report")]
    pub fn of(report: &serde_json::Value) -> Self {
        Self::deserialize(report).unwrap_or_default()
    }

    /// Whether the run failed: a failure in its report, or the function's own.
    pub fn failed(&self) -> bool {
        self.function_error.is_some() || !self.failures.is_empty()
    }

    /// The one line every program says a run with.
    pub fn line(&self) -> String {
        let [create, update, delete] = match self.dry_run {
            true => ["to create", "to update", "to delete"],
            false => ["created", "updated", "deleted"],
        };
        let mut line = format!(
            "{create} {}, {update} {}, unchanged {}, {delete} {}, skipped {}, conflicts {}, failures {}",
            self.created,
            self.updated,
            self.unchanged,
            self.deleted,
            self.skipped,
            self.conflicts.len(),
            self.failures.len()
        );
        if let Some(error) = &self.function_error {
            line.push_str(&format!(" — FAILED ({error})"));
        } else if self.failed() {
            line.push_str(" — FAILED");
        } else if self.partial {
            line.push_str(" (partial: the next run goes on)");
        } else if self.dry_run {
            line.push_str(" (dry run: nothing written)");
        }
        line
    }

    /// Each failure on a line of its own: `FAILED <secret or run> [kind]: message`.
    pub fn failure_lines(&self) -> String {
        self.failures
            .iter()
            .map(|f| {
                let who = if f.name.is_empty() { "run" } else { &f.name };
                format!("FAILED {who} [{}]: {}\n", f.kind, f.message)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_is_read_whatever_it_leaves_out_and_said_in_one_line() {
        let full: Summary = serde_json::from_value(serde_json::json!({
            "created": 1, "updated": 2, "unchanged": 3, "deleted": 0, "skipped": 4,
            "partial": true, "conflicts": [], "values_read": 9,
            "failures": [], "plan": [{"action": "create"}]
        }))
        .unwrap();
        assert_eq!(
            full.line(),
            "created 1, updated 2, unchanged 3, deleted 0, skipped 4, conflicts 0, failures 0 (partial: the next run goes on)"
        );
        assert!(!full.failed());
        let failed: Summary = serde_json::from_value(serde_json::json!({
            "failures": [{"name": "", "kind": "vault_unreachable", "message": "down"},
                         {"name": "app/db", "kind": "value_too_large", "message": "big", "rule": "r"}]
        }))
        .unwrap();
        assert!(failed.failed());
        assert!(failed.line().ends_with("failures 2 — FAILED"));
        assert_eq!(
            failed.failure_lines(),
            "FAILED run [vault_unreachable]: down\nFAILED app/db [value_too_large]: big\n"
        );
        assert_eq!(failed.failures[1].rule.as_deref(), Some("r"));
        let crashed: Summary =
            serde_json::from_value(serde_json::json!({"function_error": "Unhandled"})).unwrap();
        assert!(crashed.failed() && crashed.line().contains("FAILED (Unhandled)"));
        let planned: Summary =
            serde_json::from_value(serde_json::json!({"dry_run": true, "created": 2})).unwrap();
        assert_eq!(
            planned.line(),
            "to create 2, to update 0, unchanged 0, to delete 0, skipped 0, conflicts 0, failures 0 (dry run: nothing written)"
        );
    }
}
