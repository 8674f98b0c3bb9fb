//! `replicator status`: every secret of the sync in one state, from a dry run's plan, so from
//! Vault's metadata and AWS's tags only (no value read). The states, their counts and text are
//! the contract crate's ([`contract::status`]), shared with `deployer status --secrets`. Pure.

use crate::plan::{Step, UpdateReason};
use crate::report::Report;

pub use contract::status::{Entry, State, exit_code, summary, to_text};

/// A planned step as a state.
pub fn entry(step: &Step) -> Entry {
    let (state, detail) = match step {
        Step::Unchanged { .. } => (State::InSync, String::new()),
        Step::Create { .. } => (State::Missing, String::new()),
        Step::Update { restore: true, .. } => {
            (State::PendingDeletion, "restored by the next run".into())
        }
        Step::Update { reason, .. } => match reason {
            UpdateReason::NewVersion | UpdateReason::LatestDeleted | UpdateReason::Rollback => {
                (State::Behind, String::new())
            }
            UpdateReason::Adopt => (State::Adoptable, String::new()),
            UpdateReason::Overwrite => {
                (State::ModifiedOutside, "overwritten by the next run".into())
            }
            UpdateReason::FinishTags | UpdateReason::Metadata => (State::Drifted, String::new()),
        },
        Step::Expand { .. } => (
            State::Behind,
            "its keys' replicas are not all current".into(),
        ),
        Step::Delete { .. } => (State::Orphaned, "deleted by the next run".into()),
        Step::Keep { why, .. } => (State::Orphaned, format!("kept: {why}")),
        Step::Skip { .. } => (State::Deleted, String::new()),
        Step::Conflict { message, .. } => (State::Conflict, message.clone()),
        Step::Invalid { message, .. } | Step::VaultFailed { message, .. } => {
            (State::Error, message.clone())
        }
    };
    Entry {
        name: step.name().to_owned(),
        state,
        detail,
    }
}

/// Every secret's state, by name, from a dry run's report.
pub fn entries(report: &Report) -> Vec<Entry> {
    let mut all: Vec<Entry> = report.plan.iter().flatten().map(entry).collect();
    all.sort_by(|a, b| a.name.cmp(&b.name));
    all
}

/// What a status request answers: every secret's state, their counts, and the run's failures.
pub fn answer(report: &Report) -> serde_json::Value {
    let entries = entries(report);
    serde_json::json!({
        "secrets": entries,
        "summary": summary(&entries),
        "failures": report.failures,
    })
}
