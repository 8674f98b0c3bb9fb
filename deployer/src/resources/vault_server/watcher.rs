//! The digest of the change watcher's code: the SHA-256 (hex) of the zip `up` uploaded, in an
//! SSM `SecureString` under the stack's key. The Vault host runs the watcher's binary only from
//! a zip with this digest, so who may update the function's code (or write SSM parameters) does
//! not choose what runs there: writing it takes `kms:Encrypt` on the stack's key through SSM,
//! for this parameter only (the key policy), as the CA parameter.

use crate::change::{Action, Change, Field};
use crate::clients::Clients;
use crate::desired::VaultServerSpec;
use crate::resources::{Ctx, DeployError, found, missing};

use super::tls::{delete_parameter, describe_parameter, is_stack_key, put_secure};

pub const DIGEST_KIND: &str = "ssm parameter";

/// The digest parameter as read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Digest {
    pub r#type: String,
    /// The KMS key of a `SecureString`.
    pub key_id: Option<String>,
    /// The hex SHA-256 it holds (public: a digest of public code).
    pub sha256: String,
}

pub async fn observe_digest(
    c: &Clients,
    spec: &VaultServerSpec,
) -> Result<Option<Digest>, DeployError> {
    let name = spec.digest_parameter.clone();
    let Some(meta) = describe_parameter(c, &name).await? else {
        return Ok(None);
    };
    let p = found(
        c.ssm
            .get_parameter()
            .name(&name)
            .with_decryption(true)
            .send()
            .await
            .ctx("GetParameter", &name),
    )?;
    let sha256 = p
        .and_then(|p| p.parameter)
        .map(|p| {
            p.value()
                .map(str::to_owned)
                .ok_or_else(|| missing("GetParameter", "Value"))
        })
        .transpose()?
        .unwrap_or_default();
    Ok(Some(Digest {
        r#type: meta.r#type,
        key_id: meta.key_id,
        sha256,
    }))
}

/// `code_sha256`: the hex digest of the zip this run uploads (`None`: no zip, as in `status`).
pub fn diff_digest(
    spec: &VaultServerSpec,
    seen: Option<&Digest>,
    code_sha256: Option<&str>,
    key_arn: Option<&str>,
) -> Change {
    let name = spec.digest_parameter.clone();
    if !spec.wanted {
        return Change::new(
            DIGEST_KIND,
            name,
            if seen.is_some() {
                Action::Delete
            } else {
                Action::Absent
            },
        );
    }
    let want = vec![
        (Field::Type, "SecureString".into()),
        (Field::KmsKey, key_arn.into()),
        (Field::Sha256, code_sha256.into()),
    ];
    let have = seen.map(|d| {
        let key = match (&d.key_id, key_arn) {
            (Some(k), Some(arn)) if is_stack_key(spec, k, arn) => arn.to_owned(),
            (Some(k), _) => k.clone(),
            (None, _) => "(none)".into(),
        };
        vec![
            (Field::Type, d.r#type.clone().into()),
            (Field::KmsKey, key.into()),
            (Field::Sha256, d.sha256.clone().into()),
        ]
    });
    let ch = Change::diff(DIGEST_KIND, name, &want, have.as_ref());
    if seen.is_none() {
        ch.with_note("the digest of the watcher's code: the Vault host runs no other")
    } else if ch.touches(Field::Type) || ch.touches(Field::KmsKey) {
        ch.with_note("not as this tool writes it: written again under the stack's key")
    } else {
        ch
    }
}

/// Writes (or deletes) the digest parameter as `change` says.
pub async fn apply_digest(
    c: &Clients,
    spec: &VaultServerSpec,
    seen: Option<&Digest>,
    change: &Change,
    code_sha256: &str,
    key_arn: &str,
) -> Result<(), DeployError> {
    let name = spec.digest_parameter.clone();
    if change.action == Action::Delete {
        delete_parameter(c, &name).await?;
        return Ok(());
    }
    // Another type cannot be overwritten into a SecureString: it goes first.
    let retype = seen.is_some_and(|d| d.r#type != "SecureString");
    if retype {
        delete_parameter(c, &name).await?;
    }
    put_secure(
        c,
        spec,
        &name,
        "SHA-256 of the change watcher's code, as deployer up uploaded it: the Vault host runs no other",
        code_sha256,
        key_arn,
        seen.is_some() && !retype,
    )
    .await
}

pub async fn destroy_digest(c: &Clients, spec: &VaultServerSpec) -> Result<Change, DeployError> {
    let name = spec.digest_parameter.clone();
    Ok(if delete_parameter(c, &name).await? {
        Change::new(DIGEST_KIND, name, Action::Delete)
    } else {
        Change::new(DIGEST_KIND, name, Action::Absent)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::change::touched;

    fn spec(toml: &str) -> VaultServerSpec {
        crate::spec::tests::spec(toml).vault_server_spec().unwrap()
    }

    #[test]
    fn the_digest_follows_the_uploaded_code_under_the_stacks_key_only() {
        let s = spec("vault_inbound_cidr = \"10.0.0.0/8\"");
        let key = "arn:aws-cn:kms:cn-north-1:123456789012:key/k-1";
        let sha = "ab".repeat(32);
        assert_eq!(
            diff_digest(&s, None, Some(&sha), Some(key)).action,
            Action::Create
        );
        let written = Digest {
            r#type: "SecureString".into(),
            key_id: Some(key.into()),
            sha256: sha.clone(),
        };
        let ch = diff_digest(&s, Some(&written), Some(&sha), Some(key));
        assert_eq!(ch.action, Action::Unchanged, "{ch:?}");
        // Without the zip (status) the digest is known after apply, never drift.
        let ch = diff_digest(&s, Some(&written), None, Some(key));
        assert_eq!(ch.action, Action::Unchanged, "{ch:?}");
        let new_code = "cd".repeat(32);
        let ch = diff_digest(&s, Some(&written), Some(&new_code), Some(key));
        assert_eq!(touched(&ch), vec!["sha256"]);
        for (drift, field) in [
            (
                Digest {
                    r#type: "String".into(),
                    key_id: None,
                    ..written.clone()
                },
                "type",
            ),
            (
                Digest {
                    key_id: Some("alias/someone-elses".into()),
                    ..written.clone()
                },
                "kms_key",
            ),
        ] {
            let ch = diff_digest(&s, Some(&drift), Some(&sha), Some(key));
            assert!(touched(&ch).contains(&field), "{field}: {ch:?}");
            assert!(ch.note.is_some_and(|n| n.contains("stack's key")));
        }
        let external = spec(
            "deploy_vault_on_ec2 = false\nexternal_vault_address = \"https://v.example.com:8200\"",
        );
        assert_eq!(
            diff_digest(&external, Some(&written), Some(&sha), Some(key)).action,
            Action::Delete
        );
        assert_eq!(
            diff_digest(&external, None, Some(&sha), Some(key)).action,
            Action::Absent
        );
    }
}
