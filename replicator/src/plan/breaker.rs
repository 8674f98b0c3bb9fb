//! The deletion breaker: how many replicas a run may delete (or move back to an older version
//! because their latest is deleted in Vault). A full sync may delete a share of the rule's
//! replicas (at least [`BREAKER_FLOOR`]), nothing while Vault shows no live secret.
//! Change-driven runs share one allowance between two full syncs: the same share of the
//! replicas the last full sync counted, less what they deleted since; none before a full sync
//! has counted, or while its breaker stands tripped. Pure.

use super::{Plan, Step, UpdateReason};

/// Deletions the breaker always allows (with a share above 0), so that a small mount can lose a
/// secret: deleting 1 of 2 is half, but no mass deletion.
pub const BREAKER_FLOOR: usize = 3;

/// How many deletions the breaker allows over `owned` replicas: `max_share` of them, at least
/// [`BREAKER_FLOOR`] (none with a share of 0).
pub fn breaker_allows(owned: usize, max_share: f64) -> usize {
    // In whole parts per million: `owned * share` in floating point can land just under a whole
    // number (100 × 0.29 = 28.999…), which would refuse a deletion exactly at the share.
    let share_ppm = (max_share.clamp(0.0, 1.0) * 1e6).round() as usize;
    let by_share = owned.saturating_mul(share_ppm) / 1_000_000;
    if share_ppm == 0 {
        0
    } else {
        by_share.max(BREAKER_FLOOR)
    }
}

/// Applies the full sync's breaker to `plan`: every deletion refused when there are more than
/// `max_share` of the `owned` replicas (and more than the floor), or any while Vault shows no
/// live secret; `plan.delete_budget` is what is left for deletions found once values are read.
pub fn full_sync(plan: &mut Plan, owned: usize, live: usize, max_share: f64) {
    let deletes = weighed(&plan.steps);
    let allowed = breaker_allows(owned, max_share);
    plan.delete_budget = allowed.saturating_sub(deletes);
    if deletes == 0 {
        return;
    }
    let reason = if live == 0 {
        format!(
            "Vault shows no live secret under the path but {deletes} replicated secrets would be deleted; refusing (an empty or wrong listing must not wipe AWS)"
        )
    } else if deletes > allowed {
        format!(
            "{deletes} of {owned} replicated secrets would be deleted, over the breaker's share {max_share} ({allowed} allowed); raise REPLICATOR_MAX_DELETE_SHARE to allow it"
        )
    } else {
        return;
    };
    refuse(&mut plan.steps, "deletion refused by the breaker");
    plan.breaker = Some(reason);
    plan.delete_budget = 0;
}

/// What the change-driven runs may still delete until the next full sync.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Allowance {
    /// No full sync has counted the replicas yet (in this process).
    NoFullSync,
    /// The last full sync's breaker refused its deletions.
    Tripped,
    /// This many more.
    Left(usize),
}

/// Applies a change-driven run's allowance to `plan`: its deletions go when they fit in what is
/// left, all together, or wait for the next full sync (which decides them under its own
/// breaker). Waiting is said in `plan.deferred`, never a failure.
pub fn change_driven(plan: &mut Plan, allowance: &Allowance) {
    let deletes = weighed(&plan.steps);
    let left = match allowance {
        Allowance::Left(n) => *n,
        Allowance::NoFullSync | Allowance::Tripped => 0,
    };
    plan.delete_budget = left.saturating_sub(deletes);
    if deletes == 0 || deletes <= left {
        return;
    }
    let why = match allowance {
        Allowance::NoFullSync => "no full sync has counted the replicas yet".to_owned(),
        Allowance::Tripped => "the last full sync's breaker stands tripped".to_owned(),
        Allowance::Left(n) => format!(
            "{deletes} deletions, over the {n} that change-driven runs may still make until the next full sync (the breaker's share of the replicas it counted)"
        ),
    };
    refuse(
        &mut plan.steps,
        "deletion deferred to the next full sync (change-driven budget)",
    );
    plan.deferred = Some(format!(
        "{deletes} deletions wait for the next full sync: {why}"
    ));
    plan.delete_budget = 0;
}

/// What the breaker weighs: deletions, and replicas moved back to an older Vault version
/// because their latest is deleted (soft-deleting many secrets in Vault would otherwise roll
/// their replicas back in one run).
fn weighs(step: &Step) -> bool {
    matches!(
        step,
        Step::Delete { .. }
            | Step::Update {
                reason: UpdateReason::LatestDeleted,
                ..
            }
    )
}

/// How many of `steps` the breaker weighs.
pub fn weighed(steps: &[Step]) -> usize {
    steps.iter().filter(|s| weighs(s)).count()
}

/// Turns every deletion of `steps` into a `Keep` saying `why`, and every move back to an older
/// version too: the replica stays as it is.
pub fn refuse(steps: &mut [Step], why: &str) {
    for step in steps {
        if !weighs(step) {
            continue;
        }
        let moved_back = matches!(step, Step::Update { .. });
        *step = Step::Keep {
            name: step.name().to_owned(),
            why: if moved_back {
                format!(
                    "{why} (its latest version is deleted in Vault; an older one would replace it)"
                )
            } else {
                why.to_owned()
            },
            warn: moved_back,
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::Guard;

    fn deletes(n: usize) -> Plan {
        Plan {
            steps: (0..n)
                .map(|i| Step::Delete {
                    name: format!("p/{i}"),
                    arn: String::new(),
                    guard: Guard::After(Vec::new()),
                    expect_current: None,
                })
                .collect(),
            ..Plan::default()
        }
    }

    #[test]
    fn change_driven_deletions_fit_the_allowance_together_or_wait() {
        let mut p = deletes(2);
        change_driven(&mut p, &Allowance::Left(3));
        assert_eq!((p.delete_budget, p.deferred.is_none()), (1, true));
        for allowance in [
            Allowance::Left(1),
            Allowance::NoFullSync,
            Allowance::Tripped,
        ] {
            let mut p = deletes(2);
            change_driven(&mut p, &allowance);
            assert!(
                p.steps.iter().all(|s| matches!(s, Step::Keep { .. })),
                "{allowance:?}"
            );
            assert!(p.deferred.is_some() && p.breaker.is_none());
            assert_eq!(p.delete_budget, 0);
        }
        // Nothing to delete: nothing said.
        let mut p = deletes(0);
        change_driven(&mut p, &Allowance::Tripped);
        assert!(p.deferred.is_none());
    }

    #[test]
    fn the_share_is_counted_in_whole_parts_per_million() {
        assert_eq!(breaker_allows(2, 0.25), BREAKER_FLOOR);
        assert_eq!(breaker_allows(100, 0.29), 29);
        assert_eq!(breaker_allows(100, 0.3), 30);
        assert_eq!(breaker_allows(1000, 0.0), 0);
    }
}
