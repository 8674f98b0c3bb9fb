//! The KMS key that encrypts the replicated secrets, the connection secret, the topic and the
//! Lambda environment: found by its alias (or, after an interrupted `up`, by the stack tag).

use aws_sdk_kms::types::{KeyState as AwsKeyState, KeyUsageType, Tag};

use super::{Ctx, DeployError, found, missing};
use crate::change::{Change, Field, Fields};
use crate::clients::Clients;
use crate::desired::KeySpec;
use crate::policy::{canonical, parse_returned};

pub(crate) const KIND: &str = "kms key";

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct KeyState {
    pub key_id: String,
    pub arn: String,
    pub description: String,
    pub rotation: bool,
    pub policy: String,
    pub state: String,
    pub aliased: bool,
}

impl KeyState {
    fn fields(&self) -> Fields {
        vec![
            (Field::Alias, if self.aliased { "yes" } else { "no" }.into()),
            (Field::Description, self.description.clone().into()),
            (
                Field::Rotation,
                if self.rotation { "enabled" } else { "disabled" }.into(),
            ),
            (Field::State, self.state.clone().into()),
            (Field::Policy, self.policy.clone().into()),
        ]
    }
}

fn wanted(k: &KeySpec) -> Fields {
    vec![
        (Field::Alias, "yes".into()),
        (Field::Description, k.description.clone().into()),
        (Field::Rotation, "enabled".into()),
        (Field::State, "Enabled".into()),
        (Field::Policy, canonical(&k.policy).into()),
    ]
}

async fn read(c: &Clients, key_id: &str, aliased: bool) -> Result<Option<KeyState>, DeployError> {
    let Some(out) = found(
        c.kms
            .describe_key()
            .key_id(key_id)
            .send()
            .await
            .ctx("DescribeKey", key_id),
    )?
    else {
        return Ok(None);
    };
    let meta = out
        .key_metadata()
        .ok_or_else(|| missing("DescribeKey", "KeyMetadata"))?;
    let id = meta.key_id().to_owned();
    let state = meta
        .key_state()
        .map(|s| s.as_str().to_owned())
        .unwrap_or_default();
    let pending = meta.key_state() == Some(&AwsKeyState::PendingDeletion);
    let rotation = if pending {
        false
    } else {
        c.kms
            .get_key_rotation_status()
            .key_id(&id)
            .send()
            .await
            .ctx("GetKeyRotationStatus", &id)?
            .key_rotation_enabled()
    };
    let policy = c
        .kms
        .get_key_policy()
        .key_id(&id)
        .policy_name("default")
        .send()
        .await
        .ctx("GetKeyPolicy", &id)?;
    let policy = policy
        .policy()
        .and_then(parse_returned)
        .map(|v| canonical(&v))
        .unwrap_or_default();
    Ok(Some(KeyState {
        arn: meta
            .arn()
            .ok_or_else(|| missing("DescribeKey", "Arn"))?
            .to_owned(),
        key_id: id,
        description: meta.description().unwrap_or_default().to_owned(),
        rotation,
        policy,
        state,
        aliased,
    }))
}

/// Finds `want` by its alias, else a key carrying all its tags (a run stopped before the
/// alias) that is not pending deletion.
pub(crate) async fn observe(c: &Clients, want: &KeySpec) -> Result<Option<KeyState>, DeployError> {
    if let Some(k) = read(c, &want.alias, true).await? {
        return Ok(Some(k));
    }
    let mut pages = c.kms.list_keys().into_paginator().send();
    while let Some(page) = pages.next().await {
        let page = page.ctx("ListKeys", "")?;
        for key in page.keys() {
            let Some(id) = key.key_id() else { continue };
            // A key whose tags cannot be read is no key of ours.
            if carries_tags(c, id, &want.tags).await.unwrap_or(false)
                && let Some(k) = read(c, id, false).await?
                && k.state != AwsKeyState::PendingDeletion.as_str()
            {
                return Ok(Some(k));
            }
        }
    }
    Ok(None)
}

/// Whether the key `key_id` carries every one of `tags`.
pub(crate) async fn carries_tags(
    c: &Clients,
    key_id: &str,
    tags: &std::collections::BTreeMap<String, String>,
) -> Result<bool, DeployError> {
    let mut on = Vec::new();
    let mut pages = c
        .kms
        .list_resource_tags()
        .key_id(key_id)
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        let page = page.ctx("ListResourceTags", key_id)?;
        on.extend(
            page.tags()
                .iter()
                .map(|t| (t.tag_key().to_owned(), t.tag_value().to_owned())),
        );
    }
    Ok(tags
        .iter()
        .all(|(k, v)| on.iter().any(|(ok, ov)| ok == k && ov == v)))
}

pub(crate) fn diff(k: &KeySpec, seen: Option<&KeyState>) -> Change {
    let want = wanted(k);
    let seen_fields = seen.map(KeyState::fields);
    let mut change = Change::diff(KIND, k.alias.clone(), &want, seen_fields.as_ref());
    if seen.is_none() {
        change.fields.push(crate::change::FieldDiff {
            field: Field::Arn,
            from: None,
            to: Some(crate::change::FieldValue::AfterApply),
        });
    }
    change
}

/// Makes `want` (key, rotation, alias) or repairs what `change` says drifted.
pub(crate) async fn apply(
    c: &Clients,
    want: &KeySpec,
    seen: Option<KeyState>,
    change: &Change,
) -> Result<KeyState, DeployError> {
    let policy = canonical(&want.policy);
    let key_id = match &seen {
        Some(k) => k.key_id.clone(),
        None => {
            let tags: Result<Vec<Tag>, _> = want
                .tags
                .iter()
                .map(|(k, v)| Tag::builder().tag_key(k).tag_value(v).build())
                .collect();
            let out = c
                .kms
                .create_key()
                .description(&want.description)
                .key_usage(KeyUsageType::EncryptDecrypt)
                .policy(&policy)
                .set_tags(Some(tags?))
                .send()
                .await
                .ctx("CreateKey", &want.alias)?;
            out.key_metadata()
                .ok_or_else(|| missing("CreateKey", "KeyMetadata"))?
                .key_id()
                .to_owned()
        }
    };
    if let Some(k) = &seen {
        if k.state == AwsKeyState::PendingDeletion.as_str() {
            c.kms
                .cancel_key_deletion()
                .key_id(&key_id)
                .send()
                .await
                .ctx("CancelKeyDeletion", &key_id)?;
        }
        if change.touches(Field::State) {
            c.kms
                .enable_key()
                .key_id(&key_id)
                .send()
                .await
                .ctx("EnableKey", &key_id)?;
        }
        if change.touches(Field::Policy) {
            c.kms
                .put_key_policy()
                .key_id(&key_id)
                .policy_name("default")
                .policy(&policy)
                .send()
                .await
                .ctx("PutKeyPolicy", &key_id)?;
        }
        if change.touches(Field::Description) {
            c.kms
                .update_key_description()
                .key_id(&key_id)
                .description(&want.description)
                .send()
                .await
                .ctx("UpdateKeyDescription", &key_id)?;
        }
    }
    if change.touches(Field::Rotation) {
        c.kms
            .enable_key_rotation()
            .key_id(&key_id)
            .send()
            .await
            .ctx("EnableKeyRotation", &key_id)?;
    }
    if change.touches(Field::Alias) {
        c.kms
            .create_alias()
            .alias_name(&want.alias)
            .target_key_id(&key_id)
            .send()
            .await
            .ctx("CreateAlias", &want.alias)?;
    }
    read(c, &key_id, true)
        .await?
        .ok_or_else(|| missing("DescribeKey", "the key just made"))
}

/// Schedules the key's deletion (it stays recoverable for the window) and removes the alias.
pub(crate) async fn destroy(c: &Clients, want: &KeySpec) -> Result<Change, DeployError> {
    let Some(k) = observe(c, want).await? else {
        return Ok(Change::new(
            KIND,
            want.alias.clone(),
            crate::change::Action::Absent,
        ));
    };
    if k.state == AwsKeyState::PendingDeletion.as_str() {
        return Ok(
            Change::new(KIND, want.alias.clone(), crate::change::Action::Absent)
                .with_note("already scheduled for deletion"),
        );
    }
    let days = want.deletion_window_days;
    c.kms
        .schedule_key_deletion()
        .key_id(&k.key_id)
        .pending_window_in_days(days)
        .send()
        .await
        .ctx("ScheduleKeyDeletion", &k.key_id)?;
    if k.aliased {
        super::delete(
            "DeleteAlias",
            &want.alias,
            c.kms.delete_alias().alias_name(&want.alias).send(),
        )
        .await?;
    }
    Ok(Change::new(KIND, want.alias.clone(), crate::change::Action::Delete).with_note(format!(
        "key {} scheduled for deletion in {days} days; cancel with `aws kms cancel-key-deletion --key-id {}` (secrets encrypted with it become unreadable after that)",
        k.key_id, k.key_id
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::change::{Action, touched};
    use crate::spec::tests::spec;

    #[test]
    fn the_key_up_leaves_is_unchanged_and_each_drift_is_its_own_field() {
        let s = spec(
            "stack_name = \"s\"\ndeploy_vault_on_ec2 = false\nexternal_vault_address = \"https://v.example.com:8200\"\nnotification_email = \"ops@example.com\"\n",
        );
        let made = KeyState {
            key_id: "k-1".into(),
            arn: "arn:aws-cn:kms:cn-north-1:123456789012:key/k-1".into(),
            description: s.key_description().into(),
            rotation: true,
            policy: canonical(&s.key_policy().unwrap()),
            state: "Enabled".into(),
            aliased: true,
        };
        let k = s.stack_key().unwrap();
        let ch = diff(&k, None);
        assert_eq!(ch.action, Action::Create);
        assert!(
            touched(&ch).contains(&"arn"),
            "its ARN is known after apply"
        );
        assert_eq!(diff(&k, Some(&made)).action, Action::Unchanged);
        type Drift = fn(&mut KeyState);
        let cases: [(Drift, &str); 4] = [
            (|k| k.rotation = false, "rotation"),
            (|k| k.policy = "{}".into(), "policy"),
            (|k| k.aliased = false, "alias"),
            (|k| k.state = "PendingDeletion".into(), "state"),
        ];
        for (drift, field) in cases {
            let mut drifted = made.clone();
            drift(&mut drifted);
            let ch = diff(&k, Some(&drifted));
            assert_eq!((ch.action, touched(&ch)), (Action::Update, vec![field]));
        }
    }
}
