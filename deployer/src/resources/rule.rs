//! The EventBridge schedule that invokes the replicator: the rule, its one target, and the
//! Lambda permission that lets EventBridge invoke the function.

use aws_sdk_eventbridge::types::{RuleState, Tag, Target};

use super::{Ctx, DeployError, delete, found};
use crate::change::{Action, Change, Field, Fields};
use crate::clients::Clients;
use crate::desired::ScheduleSpec;

pub(crate) const KIND: &str = "schedule rule";
const TARGET_ID: &str = "replicator";

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct RuleStatus {
    pub schedule: String,
    pub state: String,
    pub target: String,
    pub permission: bool,
    pub ours: bool,
    /// Tagged [`PAUSED_TAG`] by `deployer pause`.
    pub paused: bool,
}

/// Tag on the schedule rule while the stack is paused (`deployer pause`): a rule disabled
/// without it is drift, which `up` repairs.
pub(crate) const PAUSED_TAG: &str = "vault-secrets-replicator:paused";

/// Enabled, unless the stack is paused.
fn state_of(want: &ScheduleSpec) -> RuleState {
    if want.enabled {
        RuleState::Enabled
    } else {
        RuleState::Disabled
    }
}

/// Whether the stack is paused: its schedule, this stack's, is disabled and tagged so.
pub(crate) async fn paused(c: &Clients, want: &ScheduleSpec) -> Result<bool, DeployError> {
    Ok(observe(c, want)
        .await?
        .is_some_and(|r| r.ours && r.paused && r.state == RuleState::Disabled.as_str()))
}

fn wanted(want: &ScheduleSpec) -> Fields {
    vec![
        (Field::Schedule, want.expression.clone().into()),
        (Field::State, state_of(want).as_str().into()),
        (Field::Target, want.function_arn.clone().into()),
        (Field::InvokePermission, "granted".into()),
    ]
}

impl RuleStatus {
    fn fields(&self) -> Fields {
        vec![
            (Field::Schedule, self.schedule.clone().into()),
            (Field::State, self.state.clone().into()),
            (Field::Target, self.target.clone().into()),
            (
                Field::InvokePermission,
                if self.permission {
                    "granted"
                } else {
                    "missing"
                }
                .into(),
            ),
        ]
    }
}

async fn has_permission(c: &Clients, want: &ScheduleSpec) -> Result<bool, DeployError> {
    let statements = super::function::policy_statements(c, &want.function_name.clone()).await?;
    let rule_arn = want.arn.clone();
    Ok(statements.iter().any(|s| {
        s["Sid"] == want.permission_id.clone().as_str()
            && serde_json::to_string(&s["Condition"]).is_ok_and(|c| c.contains(&rule_arn))
    }))
}

pub(crate) async fn observe(
    c: &Clients,
    want: &ScheduleSpec,
) -> Result<Option<RuleStatus>, DeployError> {
    let name = want.name.clone();
    let Some(rule) = found(
        c.events
            .describe_rule()
            .name(&name)
            .send()
            .await
            .ctx("DescribeRule", &name),
    )?
    else {
        return Ok(None);
    };
    let targets = c
        .events
        .list_targets_by_rule()
        .rule(&name)
        .send()
        .await
        .ctx("ListTargetsByRule", &name)?;
    let target = targets
        .targets()
        .iter()
        .map(|t| t.arn().to_owned())
        .collect::<Vec<_>>()
        .join(",");
    let arn = rule.arn().unwrap_or_default().to_owned();
    let tags = c
        .events
        .list_tags_for_resource()
        .resource_arn(&arn)
        .send()
        .await
        .ctx("ListTagsForResource", &name)?;
    Ok(Some(RuleStatus {
        schedule: rule.schedule_expression().unwrap_or_default().to_owned(),
        state: rule
            .state()
            .map(|s| s.as_str().to_owned())
            .unwrap_or_default(),
        target,
        permission: has_permission(c, want).await?,
        ours: super::has_stack_tag(
            tags.tags().iter().map(|t| (t.key(), t.value())),
            want.owner.stack(),
        ),
        paused: tags.tags().iter().any(|t| t.key() == PAUSED_TAG),
    }))
}

pub(crate) fn diff(want: &ScheduleSpec, seen: Option<&RuleStatus>) -> Change {
    Change::diff(
        KIND,
        want.name.clone(),
        &wanted(want),
        seen.map(RuleStatus::fields).as_ref(),
    )
}

pub(crate) async fn apply(
    c: &Clients,
    want: &ScheduleSpec,
    change: &Change,
) -> Result<RuleStatus, DeployError> {
    let name = want.name.clone();
    if change.touches(Field::Schedule) || change.touches(Field::State) {
        let tags: Vec<Tag> = want
            .owner
            .tags()
            .into_iter()
            .filter_map(|(k, v)| Tag::builder().key(k).value(v).build().ok())
            .collect();
        c.events
            .put_rule()
            .name(&name)
            .description("Runs the vault-secrets-replicator")
            .schedule_expression(&want.expression)
            .state(state_of(want))
            .set_tags(Some(tags))
            .send()
            .await
            .ctx("PutRule", &name)?;
    }
    if change.touches(Field::Target) {
        let target = Target::builder()
            .id(TARGET_ID)
            .arn(want.function_arn.clone())
            .build()?;
        c.events
            .put_targets()
            .rule(&name)
            .targets(target)
            .send()
            .await
            .ctx("PutTargets", &name)?;
    }
    if change.touches(Field::InvokePermission) {
        let fname = want.function_name.clone();
        // A stale statement with our id (another rule ARN) is replaced.
        delete(
            "RemovePermission",
            &fname,
            c.lambda
                .remove_permission()
                .function_name(&fname)
                .statement_id(want.permission_id.clone())
                .send(),
        )
        .await?;
        c.lambda
            .add_permission()
            .function_name(&fname)
            .statement_id(want.permission_id.clone())
            .action("lambda:InvokeFunction")
            .principal("events.amazonaws.com")
            .source_arn(want.arn.clone())
            .send()
            .await
            .ctx("AddPermission", &fname)?;
    }
    observe(c, want)
        .await?
        .ok_or_else(|| super::missing("DescribeRule", "the rule just made"))
}

pub(crate) async fn destroy(c: &Clients, want: &ScheduleSpec) -> Result<Change, DeployError> {
    let name = want.name.clone();
    let Some(rule) = observe(c, want).await? else {
        return Ok(Change::new(KIND, name, Action::Absent));
    };
    if !rule.ours {
        return Ok(Change::new(KIND, name, Action::Absent)
            .with_note("exists without this stack's tag; left alone"));
    }
    if !rule.target.is_empty() {
        delete(
            "RemoveTargets",
            &name,
            c.events.remove_targets().rule(&name).ids(TARGET_ID).send(),
        )
        .await?;
    }
    delete(
        "DeleteRule",
        &name,
        c.events.delete_rule().name(&name).send(),
    )
    .await?;
    Ok(Change::new(KIND, name, Action::Delete))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::change::touched;
    use crate::spec::tests::spec;

    #[test]
    fn the_schedule_its_target_and_the_invoke_permission_are_each_diffed() {
        let s = spec(
            "stack_name = \"s\"\ndeploy_vault_on_ec2 = false\nexternal_vault_address = \"https://v.example.com:8200\"\nnotification_email = \"ops@example.com\"\n",
        );
        let made = RuleStatus {
            schedule: s.cfg.schedule.clone(),
            state: "ENABLED".into(),
            target: s.function_arn(),
            permission: true,
            ours: true,
            paused: false,
        };
        assert_eq!(diff(&s.schedule_spec(), None).action, Action::Create);
        assert_eq!(
            diff(&s.schedule_spec(), Some(&made)).action,
            Action::Unchanged
        );
        type Drift = fn(&mut RuleStatus);
        let cases: [(Drift, &str); 4] = [
            (|r| r.schedule = "rate(1 day)".into(), "schedule"),
            (|r| r.state = "DISABLED".into(), "state"),
            (|r| r.target = String::new(), "target"),
            (|r| r.permission = false, "invoke_permission"),
        ];
        for (drift, field) in cases {
            let mut r = made.clone();
            drift(&mut r);
            let ch = diff(&s.schedule_spec(), Some(&r));
            assert_eq!((ch.action, touched(&ch)), (Action::Update, vec![field]));
        }
    }
}
