//! The run report (JSON and text) and the SNS failure notice. Pure formatting; never a value.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::plan::Step;

/// A conflict or a failure of one secret (or of the whole run, with `name` empty).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Problem {
    pub name: String,
    pub kind: String,
    pub message: String,
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
        }
    }
}

/// What one run did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Report {
    pub dry_run: bool,
    pub created: u64,
    pub updated: u64,
    pub unchanged: u64,
    pub deleted: u64,
    pub skipped: u64,
    pub conflicts: Vec<Problem>,
    pub failures: Vec<Problem>,
    /// Replicated secrets whose Vault source is gone, kept by policy or by the breaker.
    pub orphans: Vec<String>,
    /// With `--dry-run`: every decision.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plan: Option<Vec<Step>>,
    pub values_read: u64,
    pub bulk_metadata: bool,
    pub vault_requests: BTreeMap<String, u64>,
    pub aws_requests: BTreeMap<String, u64>,
    pub duration_ms: u64,
}

impl Report {
    /// A run fails when anything failed; conflicts alone are reported, not failed.
    pub fn failed(&self) -> bool {
        !self.failures.is_empty()
    }

    /// A report for a run that stopped before planning.
    pub fn fatal(kind: &str, message: impl Into<String>) -> Self {
        Self {
            failures: vec![Problem::new("", kind, message)],
            ..Self::default()
        }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }

    /// Human summary.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        if let Some(plan) = &self.plan {
            for step in plan {
                let (sign, what) = match step {
                    Step::Create { target } => {
                        ('+', format!("create (version {})", target.version))
                    }
                    Step::Update {
                        target,
                        reason,
                        restore,
                        ..
                    } => (
                        '~',
                        format!(
                            "update to version {} ({}){}",
                            target.version,
                            serde_json::to_value(reason)
                                .ok()
                                .and_then(|v| v.as_str().map(str::to_owned))
                                .unwrap_or_default(),
                            if *restore { ", restore first" } else { "" }
                        ),
                    ),
                    Step::Delete { .. } => ('-', "delete".to_owned()),
                    Step::Unchanged { .. } => (' ', "unchanged".to_owned()),
                    Step::Keep { why, .. } => ('!', format!("keep: {why}")),
                    Step::Skip { .. } => (' ', "skip: deleted in Vault".to_owned()),
                    Step::Conflict { message, .. } => ('!', format!("conflict: {message}")),
                    Step::Invalid { message, .. } => ('x', format!("invalid: {message}")),
                    Step::VaultFailed { message, .. } => ('x', format!("failed: {message}")),
                };
                let _ = writeln!(out, "{sign} {}  {what}", step.name());
            }
        }
        let verb = if self.dry_run { "would be " } else { "" };
        let _ = writeln!(
            out,
            "{} {verb}created, {} {verb}updated, {} unchanged, {} {verb}deleted, {} skipped, {} conflicts, {} failures",
            self.created,
            self.updated,
            self.unchanged,
            self.deleted,
            self.skipped,
            self.conflicts.len(),
            self.failures.len()
        );
        for p in &self.conflicts {
            let _ = writeln!(out, "conflict {} [{}]: {}", p.name, p.kind, p.message);
        }
        for name in &self.orphans {
            let _ = writeln!(out, "orphan {name}: its Vault secret is gone; kept");
        }
        for p in &self.failures {
            let name = if p.name.is_empty() { "run" } else { &p.name };
            let _ = writeln!(out, "FAILED {name} [{}]: {}", p.kind, p.message);
        }
        out
    }

    /// The SNS notice: account, region, what failed and why. Names and error texts only.
    pub fn notice(&self, account: &str, region: &str) -> String {
        let failed: Vec<_> = self
            .failures
            .iter()
            .map(|p| {
                serde_json::json!({
                    "secretName": p.name,
                    "kind": p.kind,
                    "error": p.message,
                })
            })
            .collect();
        format!(
            "Account: {account}, Region: {region}. vault-secrets-replicator run failed ({} created, {} updated, {} deleted before the failures). Failed to create/update the following secrets: {}",
            self.created,
            self.updated,
            self.deleted,
            serde_json::Value::Array(failed)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notice_names_account_region_and_failures() {
        let mut r = Report::fatal("vault_unreachable", "cannot reach Vault at https://v:8200");
        r.failures
            .push(Problem::new("p/a", "value_too_large", "70000 bytes"));
        let n = r.notice("123456789012", "eu-west-1");
        assert!(n.starts_with("Account: 123456789012, Region: eu-west-1."));
        assert!(n.contains("\"secretName\":\"p/a\""));
        assert!(n.contains("vault_unreachable"));
        assert!(r.failed());
    }

    #[test]
    fn text_summary_counts_and_lists_problems() {
        let r = Report {
            created: 2,
            conflicts: vec![Problem::new("p/x", "foreign", "not ours")],
            ..Report::default()
        };
        let t = r.to_text();
        assert!(t.contains("2 created"));
        assert!(t.contains("conflict p/x [foreign]"));
        assert!(!r.failed());
    }
}
