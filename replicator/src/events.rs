//! Change events: one per replica a run created, updated, deleted or restored, put on an
//! EventBridge bus (`--events-bus`) so that consumers caching the replicas' values refresh them
//! at once. Which outcome makes which event is decided here, from the planned step and what
//! became of it; the events carry names, the ARN, the rule, the Vault path and version, never a
//! value. Pure: the bus is written through [`crate::aws::EventBus`].

use serde::Serialize;

use crate::model::Rule;
use crate::outcome::Outcome;
use crate::plan::{Guard, Step, Write};

pub(crate) use contract::events::SOURCE;

/// What happened to a replica.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Created,
    /// Its value moved to a newer (or, on purpose, an older) Vault version.
    Updated,
    /// Scheduled for deletion (its recovery window running).
    Deleted,
    /// Taken back from a scheduled deletion, at the Vault version now.
    Restored,
}

impl Action {
    /// The word `action` holds in the detail.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Created => "created",
            Self::Updated => "updated",
            Self::Deleted => "deleted",
            Self::Restored => "restored",
        }
    }

    /// The event's `detail-type`.
    pub fn detail_type(self) -> &'static str {
        let [created, updated, deleted, restored] = contract::events::DETAIL_TYPES;
        match self {
            Self::Created => created,
            Self::Updated => updated,
            Self::Deleted => deleted,
            Self::Restored => restored,
        }
    }
}

/// One event's `detail`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ChangeEvent {
    pub action: Action,
    /// The replica's name in Secrets Manager.
    pub name: String,
    pub arn: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stack: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    pub vault_mount: String,
    /// The Vault secret's path inside the mount; none for the deletion of a replica under a
    /// name no longer used (its secret lives on under the new name).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vault_path: Option<String>,
    /// The key the replica holds, one replica per key (`secret-key`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vault_key: Option<String>,
    /// The Vault version now in the replica (none when a restored replica still holds the
    /// value it had); for the deletion of a key's replica, the Vault version that no longer
    /// has the key, else none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vault_version: Option<u64>,
}

/// The event of `step` whose outcome was `outcome`, in `rule`; none when no replica's value
/// changed: a write that did not happen (failed, superseded, kept, deferred), tags, description
/// or regions only, or an unchanged replica. A write that changed the replica and failed after
/// (`Incomplete`) makes its event too: readers see the change.
pub(crate) fn of(step: &Step, outcome: &Outcome, rule: &Rule) -> Option<ChangeEvent> {
    // Restored, then failed before its value moved: it holds what it held before.
    let value_current = !matches!(
        outcome,
        Outcome::Incomplete {
            value_current: false,
            ..
        }
    );
    // The Vault source a written replica now holds.
    let written = |target: &crate::plan::Target| {
        (
            Some(target.vault_path.clone()),
            target.key.clone(),
            value_current.then_some(target.version),
        )
    };
    let (action, name, arn, (vault_path, vault_key, vault_version)) = match (step, outcome) {
        (Step::Create { target }, Outcome::Created { arn } | Outcome::Incomplete { arn, .. }) => {
            (Action::Created, &target.name, arn, written(target))
        }
        (
            Step::Update {
                target,
                arn,
                restore,
                write,
                ..
            },
            Outcome::Updated | Outcome::Incomplete { .. },
        ) => {
            let action = match (restore, write) {
                (true, _) => Action::Restored,
                (false, Write::Value | Write::Stage) => Action::Updated,
                (false, Write::None) => return None,
            };
            (action, &target.name, arn, written(target))
        }
        (
            Step::Delete {
                name, arn, guard, ..
            },
            Outcome::Deleted,
        ) => {
            let source = match guard {
                Guard::SourceGone { vault_path } => (Some(vault_path.clone()), None, None),
                Guard::KeyRemoved {
                    vault_path,
                    version,
                    key,
                } => (
                    Some(vault_path.clone()),
                    Some(key.to_string()),
                    Some(*version),
                ),
                Guard::After(_) => (None, None, None),
            };
            (Action::Deleted, name, arn, source)
        }
        _ => return None,
    };
    Some(ChangeEvent {
        action,
        name: name.clone(),
        arn: arn.clone(),
        stack: rule.stack.clone(),
        rule: rule.name.clone(),
        vault_mount: rule.mount.clone(),
        vault_path,
        vault_key,
        vault_version,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{Target, UpdateReason};
    use crate::report::Problem;

    fn target(key: Option<&str>) -> Box<Target> {
        Box::new(Target {
            name: "app/db".into(),
            vault_path: "db".into(),
            version: 3,
            created_time: "2026-12-01T00:00:00Z".into(),
            token: "t".into(),
            key: key.map(str::to_owned),
            tags: std::collections::BTreeMap::from([("version".into(), "3".into())]),
            description: "d".into(),
            metadata_ignored: vec![],
        })
    }

    fn update(restore: bool, write: Write) -> Step {
        Step::Update {
            target: target(None),
            arn: "arn:aws:secretsmanager:r:1:secret:app/db-abc".into(),
            reason: UpdateReason::NewVersion,
            restore,
            write,
            expect_current: None,
            changes: Box::default(),
        }
    }

    fn rule() -> Rule {
        let mut rule = Rule::new("app", "kv");
        rule.stack = Some("s".into());
        rule.name = Some("payments".into());
        rule
    }

    fn problem() -> Problem {
        Problem::new("app/db", "k", "m")
    }

    fn incomplete() -> Outcome {
        Outcome::Incomplete {
            arn: "arn:new".into(),
            problem: problem(),
            value_current: true,
        }
    }

    #[test]
    fn a_replica_whose_value_changed_makes_one_event_and_nothing_else_does() {
        let created = Outcome::Created {
            arn: "arn:new".into(),
        };
        let delete = |guard| Step::Delete {
            name: "app/old".into(),
            arn: "arn:old".into(),
            guard,
            expect_current: None,
        };
        let gone = Guard::SourceGone {
            vault_path: "old".into(),
        };
        let cases: Vec<(Step, Outcome, Option<Action>)> = vec![
            (
                Step::Create {
                    target: target(None),
                },
                created,
                Some(Action::Created),
            ),
            (
                update(false, Write::Value),
                Outcome::Updated,
                Some(Action::Updated),
            ),
            (
                update(false, Write::Stage),
                Outcome::Updated,
                Some(Action::Updated),
            ),
            (
                update(true, Write::Value),
                Outcome::Updated,
                Some(Action::Restored),
            ),
            (
                update(true, Write::None),
                Outcome::Updated,
                Some(Action::Restored),
            ),
            // Tags, description or regions only: no value changed.
            (update(false, Write::None), Outcome::Updated, None),
            (
                delete(gone.clone()),
                Outcome::Deleted,
                Some(Action::Deleted),
            ),
            (
                delete(Guard::After(vec![0])),
                Outcome::Deleted,
                Some(Action::Deleted),
            ),
            // Changed, then failed (regions, policy, tags): readers see the change.
            (
                Step::Create {
                    target: target(None),
                },
                incomplete(),
                Some(Action::Created),
            ),
            (
                update(false, Write::Value),
                incomplete(),
                Some(Action::Updated),
            ),
            (
                update(true, Write::None),
                incomplete(),
                Some(Action::Restored),
            ),
            // What did not happen makes no event.
            (
                update(false, Write::Value),
                Outcome::Failed(problem()),
                None,
            ),
            (
                update(false, Write::Value),
                Outcome::Superseded(problem()),
                None,
            ),
            (update(false, Write::Value), Outcome::Deferred, None),
            (update(false, Write::Value), Outcome::Skipped, None),
            (
                Step::Create {
                    target: target(None),
                },
                Outcome::Raced,
                None,
            ),
            (delete(gone.clone()), Outcome::Kept(None), None),
            (delete(gone), Outcome::Superseded(problem()), None),
            (
                Step::Unchanged {
                    name: "app/x".into(),
                },
                Outcome::Unchanged,
                None,
            ),
        ];
        for (step, outcome, want) in cases {
            let got = of(&step, &outcome, &rule()).map(|e| e.action);
            assert_eq!(got, want, "{step:?} {outcome:?}");
        }
    }

    #[test]
    fn an_event_names_the_replica_and_its_source_never_a_value() {
        let mut step = update(false, Write::Value);
        if let Step::Update { target, .. } = &mut step {
            target.key = Some("password".into());
        }
        // Restored, then failed before the value moved: no version is claimed.
        let restored = Outcome::Incomplete {
            arn: "arn:x".into(),
            problem: problem(),
            value_current: false,
        };
        let event = of(&update(true, Write::Value), &restored, &rule()).unwrap();
        assert_eq!(
            (event.action, event.vault_version),
            (Action::Restored, None)
        );
        for action in [
            Action::Created,
            Action::Updated,
            Action::Deleted,
            Action::Restored,
        ] {
            assert_eq!(serde_json::to_value(action).unwrap(), action.as_str());
        }
        let event = of(&step, &Outcome::Updated, &rule()).unwrap();
        let detail = serde_json::to_value(&event).unwrap();
        assert_eq!(
            detail,
            serde_json::json!({
                "action": "updated",
                "name": "app/db",
                "arn": "arn:aws:secretsmanager:r:1:secret:app/db-abc",
                "stack": "s",
                "rule": "payments",
                "vault_mount": "kv",
                "vault_path": "db",
                "vault_key": "password",
                "vault_version": 3,
            })
        );
        assert_eq!(event.action.detail_type(), "Replica Updated");
        let removed = Step::Delete {
            name: "app/db/old-key".into(),
            arn: "arn:k".into(),
            guard: Guard::KeyRemoved {
                vault_path: "db".into(),
                version: 2,
                key: "old-key".into(),
            },
            expect_current: None,
        };
        let event = of(&removed, &Outcome::Deleted, &Rule::new("app", "kv")).unwrap();
        assert_eq!(
            serde_json::to_value(&event).unwrap(),
            serde_json::json!({
                "action": "deleted",
                "name": "app/db/old-key",
                "arn": "arn:k",
                "vault_mount": "kv",
                "vault_path": "db",
                "vault_key": "old-key",
                "vault_version": 2,
            })
        );
    }
}
