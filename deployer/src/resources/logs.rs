//! The log group of each of the stack's functions, with retention, created before the function
//! so its retention applies from the first run.

use super::{Ctx, DeployError, delete};
use crate::change::{Action, Change, Fields};
use crate::clients::Clients;
use crate::spec::{Duty, Spec};

pub const KIND: &str = "log group";

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogGroupState {
    pub retention_days: Option<i32>,
}

fn fields(retention: Option<i32>) -> Fields {
    vec![(
        "retention_days",
        retention
            .map(|d| d.to_string())
            .unwrap_or_else(|| "never expire".into()),
    )]
}

pub async fn observe(
    c: &Clients,
    spec: &Spec,
    duty: Duty,
) -> Result<Option<LogGroupState>, DeployError> {
    let name = spec.log_group_of(duty);
    let out = c
        .logs
        .describe_log_groups()
        .log_group_name_prefix(&name)
        .send()
        .await
        .ctx("DescribeLogGroups", &name)?;
    Ok(out
        .log_groups()
        .iter()
        .find(|g| g.log_group_name() == Some(name.as_str()))
        .map(|g| LogGroupState {
            retention_days: g.retention_in_days(),
        }))
}

/// A function the stack no longer has keeps its logs until `destroy` (they are its history).
pub fn diff(spec: &Spec, duty: Duty, seen: Option<&LogGroupState>) -> Change {
    let name = spec.log_group_of(duty);
    if !spec.serves(duty) {
        return Change::new(KIND, name, Action::Absent);
    }
    let want = fields(Some(spec.cfg.log_retention_days));
    Change::diff(
        KIND,
        name,
        &want,
        seen.map(|s| fields(s.retention_days)).as_ref(),
    )
}

pub async fn apply(
    c: &Clients,
    spec: &Spec,
    duty: Duty,
    change: &Change,
) -> Result<LogGroupState, DeployError> {
    let name = spec.log_group_of(duty);
    if change.action == Action::Create {
        c.logs
            .create_log_group()
            .log_group_name(&name)
            .set_tags(Some(spec.tags().into_iter().collect()))
            .send()
            .await
            .ctx("CreateLogGroup", &name)?;
    }
    if change.touches("retention_days") {
        c.logs
            .put_retention_policy()
            .log_group_name(&name)
            .retention_in_days(spec.cfg.log_retention_days)
            .send()
            .await
            .ctx("PutRetentionPolicy", &name)?;
    }
    Ok(LogGroupState {
        retention_days: Some(spec.cfg.log_retention_days),
    })
}

pub async fn destroy(c: &Clients, spec: &Spec, duty: Duty) -> Result<Change, DeployError> {
    let name = spec.log_group_of(duty);
    if observe(c, spec, duty).await?.is_none() {
        return Ok(Change::new(KIND, name, Action::Absent));
    }
    let arn = spec.log_group_arn_of(duty);
    let tags = c
        .logs
        .list_tags_for_resource()
        .resource_arn(&arn)
        .send()
        .await
        .ctx("ListTagsForResource", &arn)?;
    let ours = tags
        .tags()
        .is_some_and(|t| t.get(crate::spec::STACK_TAG).map(String::as_str) == Some(spec.stack()));
    if !ours {
        return Ok(Change::new(KIND, name, Action::Absent)
            .with_note("exists without this stack's tag; left alone"));
    }
    delete(
        "DeleteLogGroup",
        &name,
        c.logs.delete_log_group().log_group_name(&name).send(),
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
    fn retention_is_the_one_field_and_never_expire_is_drift() {
        let s = spec(
            "stack_name = \"s\"\ndeploy_vault_on_ec2 = false\nexternal_vault_address = \"https://v.example.com:8200\"\nnotification_email = \"ops@example.com\"\n",
        );
        let days = s.cfg.log_retention_days;
        assert_eq!(diff(&s, Duty::Sync, None).action, Action::Create);
        assert_eq!(
            diff(&s, Duty::Watch, None).action,
            Action::Absent,
            "no stack Vault"
        );
        let kept = LogGroupState {
            retention_days: Some(days),
        };
        assert_eq!(diff(&s, Duty::Sync, Some(&kept)).action, Action::Unchanged);
        let forever = LogGroupState {
            retention_days: None,
        };
        let ch = diff(&s, Duty::Sync, Some(&forever));
        assert_eq!(
            (ch.action, touched(&ch)),
            (Action::Update, vec!["retention_days"])
        );
        assert_eq!(ch.fields[0].from.as_deref(), Some("never expire"));
    }
}
