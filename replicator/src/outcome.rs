//! What became of one step the executor performed ([`crate::execute`]), and what it lets the
//! steps waiting for it do. Pure: the executor returns it, the run records it, the change
//! events are made from it.

use crate::report::Problem;

/// What became of one step.
#[derive(Debug)]
pub enum Outcome {
    /// With the new replica's ARN.
    Created {
        arn: String,
    },
    Updated,
    Unchanged,
    Deleted,
    /// The planned Vault version vanished before it was read; the next run sees the deletion.
    Skipped,
    /// Kept although its source is gone (the deletion policy, the breaker, a successor not
    /// written yet); with why, when the report should say it.
    Kept(Option<Problem>),
    /// A newer state won while the step ran (another run made a later version current, or the
    /// Vault secret came back): nothing was moved back. Reported, not failed.
    Superseded(Problem),
    /// The name was taken in AWS since the listing (another run created it, or the listing
    /// lagged): the run plans it again from what is there.
    Raced,
    Conflict(Problem),
    Failed(Problem),
    /// Failed after the replica changed for its readers (created, restored, or its value made
    /// current), before the rest was done (regions, policy, tags): a failure of the run, and
    /// still a change consumers hear of. The next run finishes it.
    Incomplete {
        arn: String,
        problem: Problem,
        /// The planned version is current in AWS (false: restored, still at its old value).
        value_current: bool,
    },
    /// Not started: the run's deadline had come. The next run does it.
    Deferred,
}

impl Outcome {
    /// Whether a step waiting for this one may go: its replica exists, is the rule's and is at
    /// the planned version or a later one.
    pub(crate) fn lets_dependents_go(&self) -> bool {
        matches!(
            self,
            Self::Created { .. } | Self::Updated | Self::Unchanged | Self::Superseded(_)
        )
    }

    /// A word for why dependents did not go.
    pub(crate) fn word(&self) -> &str {
        match self {
            Self::Skipped => "its Vault version vanished",
            Self::Raced => "its name was taken meanwhile",
            Self::Conflict(p) | Self::Failed(p) | Self::Incomplete { problem: p, .. } => &p.kind,
            Self::Deferred => "not started before the deadline",
            _ => "not done",
        }
    }
}
