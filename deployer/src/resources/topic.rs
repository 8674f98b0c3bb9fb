//! The SNS topic for failure notices (KMS-encrypted) and its email subscription; only when
//! `notification_email` is set. Found by its deterministic ARN.

use aws_sdk_sns::types::Tag;

use super::{Ctx, DeployError, delete, found};
use crate::change::{Action, Change, Field, FieldValue, Fields};
use crate::clients::Clients;
use crate::desired::TopicSpec;

pub(crate) const KIND: &str = "sns topic";

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct TopicState {
    pub arn: String,
    pub kms_key: String,
    /// Email endpoints subscribed (confirmed or pending).
    pub emails: Vec<String>,
    pub ours: bool,
}

fn fields(kms_key: FieldValue, email: &str) -> Fields {
    vec![
        (Field::KmsMasterKeyId, kms_key),
        (Field::EmailSubscription, email.into()),
    ]
}

pub(crate) async fn observe(
    c: &Clients,
    want: &TopicSpec,
) -> Result<Option<TopicState>, DeployError> {
    let arn = want.arn.clone();
    let Some(attrs) = found(
        c.sns
            .get_topic_attributes()
            .topic_arn(&arn)
            .send()
            .await
            .ctx("GetTopicAttributes", &arn),
    )?
    else {
        return Ok(None);
    };
    let kms_key = attrs
        .attributes()
        .and_then(|a| a.get("KmsMasterKeyId"))
        .cloned()
        .unwrap_or_default();
    let mut emails = Vec::new();
    let mut pages = c
        .sns
        .list_subscriptions_by_topic()
        .topic_arn(&arn)
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        for s in page.ctx("ListSubscriptionsByTopic", &arn)?.subscriptions() {
            if s.protocol() == Some("email")
                && let Some(e) = s.endpoint()
            {
                emails.push(e.to_owned());
            }
        }
    }
    let tags = c
        .sns
        .list_tags_for_resource()
        .resource_arn(&arn)
        .send()
        .await
        .ctx("ListTagsForResource", &arn)?;
    let ours = super::has_stack_tag(
        tags.tags().iter().map(|t| (t.key(), t.value())),
        want.owner.stack(),
    );
    Ok(Some(TopicState {
        arn,
        kms_key,
        emails,
        ours,
    }))
}

pub(crate) fn diff(want: &TopicSpec, seen: Option<&TopicState>, key_arn: Option<&str>) -> Change {
    let name = want.name.clone();
    let Some(email) = &want.email else {
        return match seen {
            Some(t) if t.ours => {
                Change::new(KIND, name, Action::Delete).with_note("notification_email is empty")
            }
            _ => Change::new(KIND, name, Action::Absent),
        };
    };
    let wanted = fields(key_arn.into(), email);
    let seen_fields = seen.map(|t| {
        let sub = if t.emails.iter().any(|e| e == email) {
            email.clone()
        } else {
            t.emails.join(",")
        };
        fields(t.kms_key.as_str().into(), &sub)
    });
    Change::diff(KIND, name, &wanted, seen_fields.as_ref())
}

pub(crate) async fn apply(
    c: &Clients,
    want: &TopicSpec,
    change: &Change,
    key_arn: &str,
) -> Result<Option<TopicState>, DeployError> {
    if change.action == Action::Delete {
        destroy(c, want).await?;
        return Ok(None);
    }
    let Some(email) = &want.email else {
        return Ok(None);
    };
    let arn = want.arn.clone();
    if change.action == Action::Create {
        let tags: Vec<Tag> = want
            .owner
            .tags()
            .into_iter()
            .filter_map(|(k, v)| Tag::builder().key(k).value(v).build().ok())
            .collect();
        c.sns
            .create_topic()
            .name(&want.name)
            .attributes("KmsMasterKeyId", key_arn)
            .set_tags(Some(tags))
            .send()
            .await
            .ctx("CreateTopic", &want.name)?;
    } else if change.touches(Field::KmsMasterKeyId) {
        c.sns
            .set_topic_attributes()
            .topic_arn(&arn)
            .attribute_name("KmsMasterKeyId")
            .attribute_value(key_arn)
            .send()
            .await
            .ctx("SetTopicAttributes", &arn)?;
    }
    if change.touches(Field::EmailSubscription) {
        c.sns
            .subscribe()
            .topic_arn(&arn)
            .protocol("email")
            .endpoint(email)
            .send()
            .await
            .ctx("Subscribe", &arn)?;
    }
    observe(c, want).await
}

pub(crate) async fn destroy(c: &Clients, want: &TopicSpec) -> Result<Change, DeployError> {
    let name = want.name.clone();
    match observe(c, want).await? {
        Some(t) if t.ours => {
            delete(
                "DeleteTopic",
                &t.arn,
                c.sns.delete_topic().topic_arn(&t.arn).send(),
            )
            .await?;
            Ok(Change::new(KIND, name, Action::Delete))
        }
        Some(_) => Ok(Change::new(KIND, name, Action::Absent)
            .with_note("exists without this stack's tag; left alone")),
        None => Ok(Change::new(KIND, name, Action::Absent)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::change::touched;
    use crate::spec::tests::spec;

    #[test]
    fn the_topic_follows_notification_email() {
        let s = spec(
            "stack_name = \"s\"\ndeploy_vault_on_ec2 = false\nexternal_vault_address = \"https://v.example.com:8200\"\nnotification_email = \"ops@example.com\"\n",
        );
        let key = "arn:aws-cn:kms:cn-north-1:123456789012:key/k-1";
        let made = TopicState {
            arn: s.topic_arn(),
            kms_key: key.into(),
            emails: vec!["ops@example.com".into(), "other@example.com".into()],
            ours: true,
        };
        assert_eq!(
            diff(&s.topic_spec(), None, Some(key)).action,
            Action::Create
        );
        assert_eq!(
            diff(&s.topic_spec(), Some(&made), Some(key)).action,
            Action::Unchanged
        );
        let unsubscribed = TopicState {
            emails: vec![],
            ..made.clone()
        };
        let ch = diff(&s.topic_spec(), Some(&unsubscribed), Some(key));
        assert_eq!(touched(&ch), ["email_subscription"]);
        let other_key = TopicState {
            kms_key: "alias/aws/sns".into(),
            ..made.clone()
        };
        assert_eq!(
            touched(&diff(&s.topic_spec(), Some(&other_key), Some(key))),
            ["kms_master_key_id"]
        );
        // No email: the stack's topic goes, another's stays alone.
        let quiet = spec(
            "stack_name = \"s\"\ndeploy_vault_on_ec2 = false\nexternal_vault_address = \"https://v.example.com:8200\"\n",
        );
        assert_eq!(
            diff(&quiet.topic_spec(), Some(&made), Some(key)).action,
            Action::Delete
        );
        let theirs = TopicState {
            ours: false,
            ..made
        };
        assert_eq!(
            diff(&quiet.topic_spec(), Some(&theirs), Some(key)).action,
            Action::Absent
        );
    }
}
