//! Where each replicated secret stands, as `replicator status` and `deployer status --secrets`
//! say it: the states, one entry per secret, the counts, the exit code and the text, written
//! once for both programs. Pure.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Where a secret stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// AWS holds Vault's latest version, tags and all.
    InSync,
    /// Vault has a newer version than AWS (or the replica's keys are not all current).
    Behind,
    /// Only tags, the description or the replica regions differ.
    Drifted,
    /// In Vault, not in AWS.
    Missing,
    /// Its replica is scheduled for deletion in AWS while Vault still has it.
    PendingDeletion,
    /// Written in AWS by someone else since the replicator wrote it (overwritten by policy).
    ModifiedOutside,
    /// A replica the rule takes over (the sample's, or listed for adoption).
    Adoptable,
    /// The replicator will not write it; the detail says why.
    Conflict,
    /// Its Vault secret is gone: the replica is deleted by the policy (`to_delete`)…
    Orphaned,
    /// …or deleted in Vault and already gone (or scheduled for deletion) in AWS.
    Deleted,
    /// Vault could not tell its state, or it cannot be replicated as it is.
    Error,
}

impl State {
    /// Its name, as JSON spells it.
    pub fn name(self) -> &'static str {
        match self {
            State::InSync => "in_sync",
            State::Behind => "behind",
            State::Drifted => "drifted",
            State::Missing => "missing",
            State::PendingDeletion => "pending_deletion",
            State::ModifiedOutside => "modified_outside",
            State::Adoptable => "adoptable",
            State::Conflict => "conflict",
            State::Orphaned => "orphaned",
            State::Deleted => "deleted",
            State::Error => "error",
        }
    }
}

/// One secret's state, and why where it matters.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub name: String,
    pub state: State,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub detail: String,
}

/// How many secrets are in each state.
pub fn summary(entries: &[Entry]) -> BTreeMap<State, usize> {
    let mut by = BTreeMap::new();
    for e in entries {
        *by.entry(e.state).or_default() += 1;
    }
    by
}

/// 0 everything in sync (or deleted, or orphaned and kept), 2 something to do (a write, a
/// conflict), 1 an error or a failed run: as `plan --detailed-exitcode`.
pub fn exit_code(failed: bool, entries: &[Entry]) -> u8 {
    if failed || entries.iter().any(|e| e.state == State::Error) {
        return 1;
    }
    let settled = |e: &Entry| {
        matches!(e.state, State::InSync | State::Deleted)
            || (e.state == State::Orphaned && e.detail.starts_with("kept"))
    };
    if entries.iter().all(settled) { 0 } else { 2 }
}

/// One line per secret, then the counts.
pub fn to_text(entries: &[Entry]) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    for e in entries {
        let state = e.state.name();
        let _ = write!(out, "{state:<17} {}", e.name);
        if !e.detail.is_empty() {
            let _ = write!(out, "  ({})", e.detail);
        }
        out.push('\n');
    }
    let counts: Vec<String> = summary(entries)
        .iter()
        .map(|(s, n)| {
            let name = s.name();
            format!("{n} {name}")
        })
        .collect();
    let _ = writeln!(out, "{} secrets: {}", entries.len(), counts.join(", "));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settled_states_exit_0_work_to_do_2_errors_1() {
        let e = |name: &str, state, detail: &str| Entry {
            name: name.into(),
            state,
            detail: detail.into(),
        };
        let calm = [
            e("a", State::InSync, ""),
            e("b", State::Deleted, ""),
            e("c", State::Orphaned, "kept: policy keep"),
        ];
        assert_eq!(exit_code(false, &calm), 0);
        for busy in [
            State::Missing,
            State::Behind,
            State::Drifted,
            State::Conflict,
            State::PendingDeletion,
        ] {
            assert_eq!(exit_code(false, &[e("a", busy, "")]), 2, "{busy:?}");
        }
        assert_eq!(
            exit_code(false, &[e("a", State::Orphaned, "deleted by the next run")]),
            2
        );
        assert_eq!(exit_code(false, &[e("a", State::Error, "x")]), 1);
        assert_eq!(exit_code(true, &calm), 1, "a failed run");
        // The names are JSON's.
        for s in [
            State::InSync,
            State::PendingDeletion,
            State::ModifiedOutside,
        ] {
            let json = serde_json::to_value(s).unwrap();
            assert_eq!(json.as_str(), Some(s.name()));
        }
        let text = to_text(&calm);
        assert!(text.contains("in_sync           a\n"), "{text}");
        assert!(
            text.ends_with("3 secrets: 1 in_sync, 1 orphaned, 1 deleted\n"),
            "{text}"
        );
    }
}
