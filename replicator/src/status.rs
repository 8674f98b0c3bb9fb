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

/// The most secrets a status answer lists one by one: Lambda answers a synchronous call with at
/// most 6 MB, and an entry takes about 70 bytes. Past it, the settled ones (in sync, deleted)
/// are only counted.
pub const MAX_LISTED: usize = 50_000;

/// What a status request answers: every secret's state (past [`MAX_LISTED`], the unsettled
/// ones, and how many settled ones were left out), their counts, and the run's failures.
pub fn answer(report: &Report) -> serde_json::Value {
    let mut entries = entries(report);
    let summary = summary(&entries);
    let mut left_out = 0;
    if entries.len() > MAX_LISTED {
        let before = entries.len();
        entries.retain(|e| !matches!(e.state, State::InSync | State::Deleted));
        left_out = before - entries.len();
    }
    let mut v = serde_json::json!({
        "secrets": entries,
        "summary": summary,
        "failures": report.failures,
    });
    if left_out > 0 {
        v["settled_left_out"] = left_out.into();
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_large_answer_lists_only_what_is_not_settled() {
        let name = |i: usize| format!("p/{i}");
        let mut plan: Vec<Step> = (0..MAX_LISTED + 10)
            .map(|i| Step::Unchanged { name: name(i) })
            .collect();
        plan.push(Step::Skip {
            name: "p/gone".into(),
        });
        plan.push(Step::Conflict {
            name: "p/x".into(),
            kind: crate::plan::ConflictKind::Foreign,
            message: "not ours".into(),
        });
        let report = Report {
            plan: Some(plan),
            ..Report::default()
        };
        let v = answer(&report);
        assert_eq!(
            v["secrets"].as_array().unwrap().len(),
            1,
            "the conflict alone"
        );
        assert_eq!(v["settled_left_out"], MAX_LISTED + 11);
        assert_eq!(v["summary"]["in_sync"], MAX_LISTED + 10);
        let small = Report {
            plan: Some(vec![Step::Unchanged { name: name(0) }]),
            ..Report::default()
        };
        assert_eq!(answer(&small)["secrets"].as_array().unwrap().len(), 1);
        assert!(answer(&small).get("settled_left_out").is_none());
    }
}
