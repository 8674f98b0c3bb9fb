//! Secrets Manager's rotation of the connection secret (with `secret_id_rotation_days` above
//! 0): the rotation function, every N days, and the permission that lets Secrets Manager invoke
//! it for that one secret. On once `vault-init` has stored the rotator's credential (before,
//! there is nothing to rotate with): `vault-init` turns it on, `up` keeps it as configured and
//! turns it off with `secret_id_rotation_days = 0`; the secret itself is the connection
//! secret's module's.

use aws_sdk_secretsmanager::types::RotationRulesType;

use super::{Ctx, DeployError, delete, found, retry_on};
use crate::change::{Action, Change, Field, Fields};
use crate::clients::Clients;
use crate::desired::RotationSpec;

pub(crate) const KIND: &str = "secret rotation";

/// What AWS holds of the connection secret's rotation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct RotationState {
    /// The connection secret's ARN.
    pub secret_arn: String,
    pub enabled: bool,
    pub function: String,
    pub days: i64,
    /// The rotator's credential is stored (`vault-init` has run with AppRole).
    pub rotator_stored: bool,
    /// Secrets Manager may invoke the rotation function for this secret.
    pub permission: bool,
}

fn days_text(days: i64) -> String {
    format!("every {days} days")
}

impl RotationState {
    fn fields(&self) -> Fields {
        if !self.enabled {
            return vec![(Field::Rotation, "off".into())];
        }
        vec![
            (Field::Rotation, "on".into()),
            (Field::RotationFunction, self.function.clone().into()),
            (Field::Rotate, days_text(self.days).into()),
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

fn wanted(want: &RotationSpec) -> Fields {
    vec![
        (Field::Rotation, "on".into()),
        (Field::RotationFunction, want.function_arn.clone().into()),
        (Field::Rotate, days_text(i64::from(want.days)).into()),
        (Field::InvokePermission, "granted".into()),
    ]
}

async fn has_permission(
    c: &Clients,
    want: &RotationSpec,
    secret_arn: &str,
) -> Result<bool, DeployError> {
    let statements = super::function::policy_statements(c, &want.function_name).await?;
    // Ours, as made: Secrets Manager, invoking, for this secret of this account only.
    Ok(statements.iter().any(|s| {
        let condition = serde_json::to_string(&s["Condition"]).unwrap_or_default();
        s["Sid"] == want.statement_id.as_str()
            && s["Effect"] == "Allow"
            && s["Action"] == "lambda:InvokeFunction"
            && serde_json::to_string(&s["Principal"])
                .is_ok_and(|p| p.contains("\"secretsmanager.amazonaws.com\""))
            && condition.contains(&format!("\"{secret_arn}\""))
            && condition.contains(&format!("\"{}\"", want.account))
    }))
}

/// The rotation as AWS holds it; `None` without a connection secret.
pub(crate) async fn observe(
    c: &Clients,
    want: &RotationSpec,
) -> Result<Option<RotationState>, DeployError> {
    let name = want.secret.clone();
    let Some(d) = found(
        c.sm.describe_secret()
            .secret_id(&name)
            .send()
            .await
            .ctx("DescribeSecret", &name),
    )?
    else {
        return Ok(None);
    };
    let secret_arn = d.arn().unwrap_or_default().to_owned();
    let rotator = want.rotator.clone();
    let rotator_stored = found(
        c.sm.describe_secret()
            .secret_id(&rotator)
            .send()
            .await
            .ctx("DescribeSecret", &rotator),
    )?
    .is_some_and(|r| r.deleted_date().is_none());
    let permission = want.rotates() && has_permission(c, want, &secret_arn).await?;
    Ok(Some(RotationState {
        enabled: d.rotation_enabled() == Some(true),
        function: d.rotation_lambda_arn().unwrap_or_default().to_owned(),
        days: d
            .rotation_rules()
            .and_then(|r| r.automatically_after_days())
            .unwrap_or_default(),
        secret_arn,
        rotator_stored,
        permission,
    }))
}

pub(crate) fn diff(want: &RotationSpec, seen: Option<&RotationState>) -> Change {
    let name = want.secret.clone();
    match seen {
        Some(s) if want.rotates() && s.rotator_stored => {
            let ch = Change::diff(KIND, name, &wanted(want), Some(&s.fields()));
            let days = i64::from(want.days);
            if s.enabled && days > s.days {
                // The id in use was made to live three of the old periods.
                ch.with_note(
                    "a longer period: run `deployer vault-init --token … --rotate-secret-id` after this, so the secret id in use and the rotator's token live three of the new periods",
                )
            } else {
                ch
            }
        }
        Some(s) if s.enabled => Change::diff(
            KIND,
            name,
            &vec![(Field::Rotation, "off".into())],
            Some(&s.fields()),
        ),
        _ if want.rotates() => Change::new(KIND, name, Action::Absent).with_note(format!(
            "turned on by `deployer vault-init` (AppRole), {}",
            days_text(i64::from(want.days))
        )),
        _ => Change::new(KIND, name, Action::Absent),
    }
}

/// Takes `AWSPENDING` off every version of `name` that is not `AWSCURRENT` (a rotation under
/// way or failed, given up): whether there was one. Its id stays valid in Vault until its
/// lifetime ends, unless a `vault-init` that replaces the credential destroys it.
pub(crate) async fn abandon_pending(c: &Clients, name: &str) -> Result<bool, DeployError> {
    let d =
        c.sm.describe_secret()
            .secret_id(name)
            .send()
            .await
            .ctx("DescribeSecret", name)?;
    let stale: Vec<String> = d
        .version_ids_to_stages()
        .into_iter()
        .flatten()
        .filter(|(_, st)| {
            st.iter().any(|s| s == "AWSPENDING") && !st.iter().any(|s| s == "AWSCURRENT")
        })
        .map(|(id, _)| id.clone())
        .collect();
    for id in &stale {
        c.sm.update_secret_version_stage()
            .secret_id(name)
            .version_stage("AWSPENDING")
            .remove_from_version_id(id)
            .send()
            .await
            .ctx("UpdateSecretVersionStage", name)?;
    }
    Ok(!stale.is_empty())
}

/// Stops the rotation: cancelled, and a rotation under way given up (or it would block the
/// next one).
async fn cancel(c: &Clients, name: &str) -> Result<(), DeployError> {
    c.sm.cancel_rotate_secret()
        .secret_id(name)
        .send()
        .await
        .ctx("CancelRotateSecret", name)?;
    abandon_pending(c, name).await?;
    Ok(())
}

/// Turns the rotation on (the permission first: Secrets Manager tests the function when told
/// of it) or off, as `change` says.
pub(crate) async fn apply(
    c: &Clients,
    want: &RotationSpec,
    seen: &RotationState,
    change: &Change,
) -> Result<(), DeployError> {
    let name = want.secret.clone();
    if !want.rotates() {
        if seen.enabled {
            cancel(c, &name).await?;
        }
        return Ok(());
    }
    let function = want.function_name.clone();
    if change.touches(Field::InvokePermission) {
        delete(
            "RemovePermission",
            &function,
            c.lambda
                .remove_permission()
                .function_name(&function)
                .statement_id(&want.statement_id)
                .send(),
        )
        .await?;
        c.lambda
            .add_permission()
            .function_name(&function)
            .statement_id(&want.statement_id)
            .action("lambda:InvokeFunction")
            .principal("secretsmanager.amazonaws.com")
            .source_arn(&seen.secret_arn)
            .source_account(&want.account)
            .send()
            .await
            .ctx("AddPermission", &function)?;
    }
    if change.touches(Field::Rotation)
        || change.touches(Field::RotationFunction)
        || change.touches(Field::Rotate)
    {
        let rules = RotationRulesType::builder()
            .automatically_after_days(i64::from(want.days))
            .build();
        let arn = want.function_arn.clone();
        // A permission granted a moment ago may not be seen yet.
        retry_on(c.backoff, &["AccessDeniedException"], || async {
            c.sm.rotate_secret()
                .secret_id(&name)
                .rotation_lambda_arn(&arn)
                .rotation_rules(rules.clone())
                // The first new id comes on the schedule; Secrets Manager tests the function
                // now.
                .rotate_immediately(false)
                .send()
                .await
                .ctx("RotateSecret", &name)
        })
        .await?;
    }
    Ok(())
}

/// Observes, diffs and applies in one go (`vault-init`, once the rotator's credential is
/// stored); the change made.
pub(crate) async fn converge(c: &Clients, want: &RotationSpec) -> Result<Change, DeployError> {
    let seen = observe(c, want).await?;
    let ch = diff(want, seen.as_ref());
    if let Some(s) = &seen
        && ch.changes_anything()
    {
        apply(c, want, s, &ch).await?;
    }
    Ok(ch)
}

/// Turns the rotation off before the function goes (`destroy`).
pub(crate) async fn destroy(c: &Clients, want: &RotationSpec) -> Result<Change, DeployError> {
    let name = want.secret.clone();
    match observe(c, want).await? {
        Some(s) if s.enabled => {
            cancel(c, &name).await?;
            Ok(Change::new(KIND, name, Action::Delete))
        }
        _ => Ok(Change::new(KIND, name, Action::Absent)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::tests::spec;
    use crate::spec::{Duty, Spec};

    fn state(s: &Spec, enabled: bool, stored: bool) -> RotationState {
        RotationState {
            secret_arn: "arn:aws:secretsmanager:us-east-1:123456789012:secret:x-AbCdEf".into(),
            enabled,
            function: if enabled {
                s.function_arn_of(Duty::Rotate)
            } else {
                String::new()
            },
            days: if enabled { 10 } else { 0 },
            rotator_stored: stored,
            permission: enabled,
        }
    }

    #[test]
    fn rotation_is_on_once_the_rotator_is_stored_and_off_when_configured_so() {
        let s = spec("stack_name = \"s\"\nvault_inbound_cidr = \"10.0.0.0/8\"\n");
        assert_eq!(s.cfg.secret_id_rotation_days, 10);
        // Before vault-init: nothing to rotate with.
        let ch = diff(&s.rotation_spec(), Some(&state(&s, false, false)));
        assert_eq!(ch.action, Action::Absent);
        assert!(ch.note.unwrap().contains("vault-init"));
        // After: on, every 10 days, with the permission.
        let ch = diff(&s.rotation_spec(), Some(&state(&s, false, true)));
        assert_eq!(ch.action, Action::Update);
        assert!(ch.touches(Field::Rotation) && ch.touches(Field::InvokePermission));
        // Converged.
        assert_eq!(
            diff(&s.rotation_spec(), Some(&state(&s, true, true))).action,
            Action::Unchanged
        );
        // Another period, a lost permission.
        let mut other = state(&s, true, true);
        other.days = 30;
        other.permission = false;
        let ch = diff(&s.rotation_spec(), Some(&other));
        assert!(ch.touches(Field::Rotate) && ch.touches(Field::InvokePermission));
        assert!(ch.note.is_none(), "a shorter period needs nothing more");
        other.days = 5;
        let ch = diff(&s.rotation_spec(), Some(&other));
        assert!(ch.note.unwrap().contains("--rotate-secret-id"));
        // Turned off in the configuration: off in AWS.
        let off = spec(
            "stack_name = \"s\"\nvault_inbound_cidr = \"10.0.0.0/8\"\nsecret_id_rotation_days = 0\n",
        );
        let ch = diff(&off.rotation_spec(), Some(&state(&s, true, true)));
        assert_eq!(ch.action, Action::Update);
        assert!(ch.touches(Field::Rotation));
        assert_eq!(
            diff(&off.rotation_spec(), Some(&state(&s, false, true))).action,
            Action::Absent
        );
    }
}
