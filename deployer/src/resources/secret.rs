//! The connection secret: where the replicator finds Vault (`vaultAddress`, credentials written
//! later by `vault-init`). KMS-encrypted, readable only by the replicator's role, named outside
//! the replicator's write scope. `up` creates it with the address and never overwrites a value.

use aws_sdk_secretsmanager::types::Tag;

use super::{Ctx, DeployError, found, missing};
use crate::change::{Action, Change, Field, FieldValue, Fields};
use crate::clients::Clients;
use crate::desired::{Owner, SecretSpec};
use crate::policy::{canonical, parse_returned};
use contract::ConnectionSecret;

pub const KIND: &str = "connection secret";

/// Days a destroyed connection secret stays recoverable.
pub const RECOVERY_DAYS: i64 = 7;

/// The owner tag (`managed-by`) of the secrets the deployer makes (the connection, the TLS key,
/// the unseal keys): not the replicator's own value, so its role may write none of them, even
/// where another stack's prefix covers their names (`NeverWriteWhatAnotherToolOwns`).
pub const OWNER_VALUE: &str = "vault-secrets-replicator-deployer";

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecretState {
    pub arn: String,
    pub kms_key: String,
    pub policy: String,
    pub pending_deletion: bool,
    pub ours: bool,
    /// Its `managed-by` tag, if any.
    pub owner: Option<String>,
    /// It holds a value (a create cut short leaves a secret without one).
    pub has_value: bool,
    /// Its tags (the credential it holds by its accessor, [`contract::ACCESSOR_TAG`], among
    /// them).
    pub tags: std::collections::BTreeMap<String, String>,
}

impl SecretState {
    /// The accessor of the credential it holds, if tagged.
    pub fn accessor(&self) -> Option<&str> {
        self.tags.get(contract::ACCESSOR_TAG).map(String::as_str)
    }
}

fn fields(kms_key: FieldValue, policy: &str, owner: &str, state: &str) -> Fields {
    vec![
        (Field::KmsKeyId, kms_key),
        (Field::ResourcePolicy, policy.into()),
        (Field::OwnerTag, owner.into()),
        (Field::State, state.into()),
    ]
}

/// A secret's owner tag as a diff shows it.
pub fn owner_field(owner: Option<&str>) -> String {
    owner.unwrap_or("(none)").to_owned()
}

/// Sets the owner tag of a secret the deployer made (one an earlier version made lacks it).
pub async fn tag_owner(c: &Clients, name: &str) -> Result<(), DeployError> {
    c.sm.tag_resource()
        .secret_id(name)
        .tags(
            Tag::builder()
                .key(contract::tags::MANAGED_BY)
                .value(OWNER_VALUE)
                .build(),
        )
        .send()
        .await
        .ctx("TagResource", name)?;
    Ok(())
}

/// Looks a secret up by name: its ARN, key, resource policy (canonical) and tags.
pub async fn describe(
    c: &Clients,
    owner: &Owner,
    name: &str,
) -> Result<Option<SecretState>, DeployError> {
    let Some(d) = found(
        c.sm.describe_secret()
            .secret_id(name)
            .send()
            .await
            .ctx("DescribeSecret", name),
    )?
    else {
        return Ok(None);
    };
    let arn = d
        .arn()
        .ok_or_else(|| missing("DescribeSecret", "ARN"))?
        .to_owned();
    let policy =
        c.sm.get_resource_policy()
            .secret_id(&arn)
            .send()
            .await
            .ctx("GetResourcePolicy", name)?;
    Ok(Some(SecretState {
        kms_key: d.kms_key_id().unwrap_or_default().to_owned(),
        policy: policy
            .resource_policy()
            .and_then(parse_returned)
            .map(|v| canonical(&v))
            .unwrap_or_default(),
        pending_deletion: d.deleted_date().is_some(),
        has_value: d.version_ids_to_stages().is_some_and(|v| !v.is_empty()),
        ours: super::has_stack_tag(
            d.tags().iter().filter_map(|t| Some((t.key()?, t.value()?))),
            owner.stack(),
        ),
        owner: d
            .tags()
            .iter()
            .find(|t| t.key() == Some(contract::tags::MANAGED_BY))
            .and_then(|t| t.value())
            .map(str::to_owned),
        tags: d
            .tags()
            .iter()
            .filter_map(|t| Some((t.key()?.to_owned(), t.value()?.to_owned())))
            .collect(),
        arn,
    }))
}

/// Creates a secret tagged with the stack, encrypted with `key_arn` (the account's default key
/// when `None`), holding `value`, or empty (no version) to be given its policy first.
pub async fn create(
    c: &Clients,
    owner: &Owner,
    name: &str,
    description: &str,
    key_arn: Option<&str>,
    value: Option<&str>,
) -> Result<(), DeployError> {
    let mut tags: Vec<Tag> = owner
        .tags()
        .into_iter()
        .map(|(k, v)| Tag::builder().key(k).value(v).build())
        .collect();
    tags.push(
        Tag::builder()
            .key(contract::tags::MANAGED_BY)
            .value(OWNER_VALUE)
            .build(),
    );
    c.sm.create_secret()
        .name(name)
        .description(description)
        .set_kms_key_id(key_arn.map(str::to_owned))
        .set_secret_string(value.map(str::to_owned))
        .set_tags(Some(tags))
        .send()
        .await
        .ctx("CreateSecret", name)?;
    Ok(())
}

/// Sets a secret's resource policy (public policies refused). Retries while IAM propagates a
/// role the policy names.
pub async fn put_policy(c: &Clients, name: &str, policy: &str) -> Result<(), DeployError> {
    super::retry_on(c.backoff, &["MalformedPolicyDocumentException"], || async {
        c.sm.put_resource_policy()
            .secret_id(name)
            .resource_policy(policy)
            .block_public_policy(true)
            .send()
            .await
            .map(|_| ())
            .ctx("PutResourcePolicy", name)
    })
    .await?;
    Ok(())
}

pub async fn observe(c: &Clients, want: &SecretSpec) -> Result<Option<SecretState>, DeployError> {
    describe(c, &want.owner, &want.name).await
}

pub fn diff(want: &SecretSpec, seen: Option<&SecretState>, key_arn: Option<&str>) -> Change {
    let wanted = fields(
        key_arn.into(),
        &canonical(&want.policy),
        OWNER_VALUE,
        "active",
    );
    let seen_fields = seen.map(|s| {
        fields(
            s.kms_key.as_str().into(),
            &s.policy,
            &owner_field(s.owner.as_deref()),
            if s.pending_deletion {
                "scheduled for deletion"
            } else {
                "active"
            },
        )
    });
    let mut change = Change::diff(KIND, want.name.clone(), &wanted, seen_fields.as_ref());
    change.note = Some(if seen.is_some() {
        "its value (Vault address and credentials) is written by `deployer vault-init` and never overwritten by up".into()
    } else {
        "created holding the Vault address only; `deployer vault-init` adds the credentials".into()
    });
    change
}

pub async fn apply(
    c: &Clients,
    want: &SecretSpec,
    seen: Option<&SecretState>,
    change: &Change,
    key_arn: &str,
    vault_address: &str,
    vault_ca_cert: Option<String>,
) -> Result<SecretState, DeployError> {
    let name = want.name.clone();
    let policy = canonical(&want.policy);
    if let Some(s) = seen {
        if s.pending_deletion {
            c.sm.restore_secret()
                .secret_id(&s.arn)
                .send()
                .await
                .ctx("RestoreSecret", &name)?;
        }
        if change.touches(Field::KmsKeyId) {
            c.sm.update_secret()
                .secret_id(&s.arn)
                .kms_key_id(key_arn)
                .send()
                .await
                .ctx("UpdateSecret", &name)?;
        }
    } else {
        let value = ConnectionSecret {
            vault_address: vault_address.to_owned(),
            vault_ca_cert,
            ..ConnectionSecret::default()
        };
        let value =
            serde_json::to_string(&value).map_err(|_| missing("serialise", "connection secret"))?;
        create(
            c,
            &want.owner,
            &name,
            "How the vault-secrets-replicator reaches Vault; credentials written by deployer vault-init",
            Some(key_arn),
            // No credential yet (vault-init writes them once the policy is in place).
            Some(&value),
        )
        .await?;
    }
    if change.touches(Field::ResourcePolicy) {
        put_policy(c, &name, &policy).await?;
    }
    if seen.is_some() && change.touches(Field::OwnerTag) {
        tag_owner(c, &name).await?;
    }
    observe(c, want)
        .await?
        .ok_or_else(|| missing("DescribeSecret", "the secret just made"))
}

pub async fn destroy(c: &Clients, want: &SecretSpec) -> Result<Change, DeployError> {
    destroy_named(c, &want.owner, KIND, &want.name).await
}

/// The rotator secret (made by `vault-init`), scheduled for deletion with the connection secret.
pub async fn destroy_rotator(c: &Clients, want: &SecretSpec) -> Result<Change, DeployError> {
    destroy_named(c, &want.owner, ROTATOR_KIND, &want.rotator).await
}

pub const ROTATOR_KIND: &str = "rotator secret";

async fn destroy_named(
    c: &Clients,
    owner: &Owner,
    kind: &'static str,
    name: &str,
) -> Result<Change, DeployError> {
    match describe(c, owner, name).await? {
        None => Ok(Change::new(kind, name, Action::Absent)),
        Some(s) if s.pending_deletion => {
            Ok(Change::new(kind, name, Action::Absent).with_note("already scheduled for deletion"))
        }
        Some(s) if !s.ours => Ok(Change::new(kind, name, Action::Absent)
            .with_note("exists without this stack's tag; left alone")),
        Some(s) => {
            c.sm.delete_secret()
                .secret_id(&s.arn)
                .recovery_window_in_days(RECOVERY_DAYS)
                .send()
                .await
                .ctx("DeleteSecret", name)?;
            Ok(Change::new(kind, name, Action::Delete).with_note(format!(
                "scheduled for deletion in {RECOVERY_DAYS} days (restore with `aws secretsmanager restore-secret`); the next {} restores it",
                if kind == KIND { "up" } else { "vault-init" }
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::change::touched;
    use crate::spec::tests::spec;

    #[test]
    fn the_connection_secret_diffs_key_policy_and_state_never_its_value() {
        let s = spec(
            "stack_name = \"s\"\ndeploy_vault_on_ec2 = false\nexternal_vault_address = \"https://v.example.com:8200\"\nnotification_email = \"ops@example.com\"\n",
        );
        let key = "arn:aws-cn:kms:cn-north-1:123456789012:key/k-1";
        let made = SecretState {
            arn: "arn:aws-cn:secretsmanager:cn-north-1:123456789012:secret:x-AbCdEf".into(),
            kms_key: key.into(),
            policy: canonical(&s.connection_secret_policy().unwrap()),
            pending_deletion: false,
            ours: true,
            owner: Some(OWNER_VALUE.into()),
            has_value: true,
            tags: Default::default(),
        };
        let ch = diff(&s.secret_spec().unwrap(), None, Some(key));
        assert_eq!(ch.action, Action::Create);
        assert!(ch.note.unwrap().contains("Vault address only"));
        let ch = diff(&s.secret_spec().unwrap(), Some(&made), Some(key));
        assert_eq!(ch.action, Action::Unchanged);
        assert!(ch.note.unwrap().contains("never overwritten"));
        type Drift = fn(&mut SecretState);
        let cases: [(Drift, &str); 4] = [
            (|x| x.kms_key = "aws/secretsmanager".into(), "kms_key_id"),
            (|x| x.policy = "{}".into(), "resource_policy"),
            // Made by an earlier version: its owner tag is set.
            (|x| x.owner = None, "owner_tag"),
            (|x| x.pending_deletion = true, "state"),
        ];
        for (drift, field) in cases {
            let mut x = made.clone();
            drift(&mut x);
            let ch = diff(&s.secret_spec().unwrap(), Some(&x), Some(key));
            assert_eq!((ch.action, touched(&ch)), (Action::Update, vec![field]));
        }
    }
}
