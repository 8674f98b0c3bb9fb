//! The TLS secret (CA, certificate and key, readable only by the instance's role) and the SSM
//! parameter with its CA, which the operator, `vault-init` and the connection secret trust.

use crate::change::{Action, Change, Field};
use crate::clients::Clients;
use crate::desired::VaultServerSpec;
use crate::policy::canonical;
use crate::resources::{Ctx, DeployError, delete, found, missing};
use crate::spec::VAULT_PRIVATE_IP;

use super::TLS_KIND;

/// The TLS secret, as the connection secret's look-up sees it.
pub type TlsSecret = crate::resources::secret::SecretState;

pub async fn observe_tls(
    c: &Clients,
    spec: &VaultServerSpec,
) -> Result<Option<TlsSecret>, DeployError> {
    crate::resources::secret::describe(c, &spec.owner, &spec.tls_secret.clone()).await
}

fn tls_policy(spec: &VaultServerSpec, read_until: Option<&str>) -> String {
    canonical(&spec.tls_policy(read_until))
}

/// The instance made since the policy was last written (a new one, or the first): its key is
/// readable for its first hour only.
pub async fn limit_tls_read(
    c: &Clients,
    spec: &VaultServerSpec,
    read_until: &str,
) -> Result<(), DeployError> {
    let name = spec.tls_secret.clone();
    crate::resources::secret::put_policy(c, &name, &tls_policy(spec, Some(read_until))).await
}

/// `complete`: the secret holds its certificate and key and the CA parameter is there, or an
/// instance already serves them. A pair whose creation was cut short is issued again.
/// `read_until`: the end of the instance's first hour, when there is one.
pub fn diff_tls(
    spec: &VaultServerSpec,
    seen: Option<&TlsSecret>,
    complete: bool,
    read_until: Option<&str>,
) -> Result<Change, DeployError> {
    let name = spec.tls_secret.clone();
    if !spec.wanted {
        return Ok(match seen {
            Some(s) if !s.pending_deletion && s.ours => Change::new(TLS_KIND, name, Action::Delete),
            Some(s) if !s.pending_deletion => Change::new(TLS_KIND, name, Action::Absent)
                .with_note("exists without this stack's tag; left alone"),
            _ => Change::new(TLS_KIND, name, Action::Absent),
        });
    }
    const ISSUED: &str = "certificate, key and CA parameter";
    let want = vec![
        (Field::Material, ISSUED.into()),
        (Field::ResourcePolicy, tls_policy(spec, read_until).into()),
        (
            Field::OwnerTag,
            crate::resources::secret::OWNER_VALUE.into(),
        ),
        (Field::State, "active".into()),
    ];
    let seen_f = seen.map(|s| {
        vec![
            (
                Field::Material,
                if complete { ISSUED } else { "cut short" }.into(),
            ),
            (Field::ResourcePolicy, s.policy.clone().into()),
            (
                Field::OwnerTag,
                crate::resources::secret::owner_field(s.owner.as_deref()).into(),
            ),
            (
                Field::State,
                if s.pending_deletion {
                    "scheduled for deletion"
                } else {
                    "active"
                }
                .into(),
            ),
        ]
    });
    let mut ch = Change::diff(TLS_KIND, name, &want, seen_f.as_ref());
    if seen.is_none() || !complete {
        ch.note = Some("a new CA and certificate for the Vault addresses; the key never leaves Secrets Manager and the instance".into());
    }
    Ok(ch)
}

/// Creates the TLS secret (new CA + certificate) or repairs its policy. Returns the CA's PEM when
/// it made one.
pub async fn apply_tls(
    c: &Clients,
    spec: &VaultServerSpec,
    seen: Option<&TlsSecret>,
    change: &Change,
    key_arn: &str,
    public_ip: &str,
    read_until: Option<&str>,
) -> Result<Option<String>, DeployError> {
    let name = spec.tls_secret.clone();
    let mut ca = None;
    let mut policy_set = false;
    if let Some(s) = seen.filter(|s| s.pending_deletion) {
        c.sm.restore_secret()
            .secret_id(&s.arn)
            .send()
            .await
            .ctx("RestoreSecret", &name)?;
    }
    if seen.is_none() || change.touches(Field::Material) {
        let ips = [public_ip, VAULT_PRIVATE_IP, "127.0.0.1"]
            .iter()
            .filter_map(|ip| ip.parse().ok())
            .collect::<Vec<_>>();
        let material = crate::tls_cert::issue(spec.owner.stack(), &ips)?;
        let value = serde_json::to_string(&material)?;
        // The CA first: a run cut short after it issues the pair again (see `diff_tls`).
        write_ca(c, spec, &material.ca_certificate, key_arn, false).await?;
        // Empty, then its policy, then the key: never a key without the policy.
        if seen.is_none() {
            crate::resources::secret::create(
                c,
                &spec.owner,
                &name,
                "TLS certificate and key of the stack's Vault server; read by its instance role only",
                Some(key_arn),
                None,
            )
            .await?;
        }
        if seen.is_none() || change.touches(Field::ResourcePolicy) {
            crate::resources::secret::put_policy(c, &name, &tls_policy(spec, read_until)).await?;
        }
        policy_set = true;
        c.sm.put_secret_value()
            .secret_id(&name)
            .secret_string(value)
            .send()
            .await
            .ctx("PutSecretValue", &name)?;
        ca = Some(material.ca_certificate.clone());
    }
    if change.touches(Field::ResourcePolicy) && !policy_set {
        crate::resources::secret::put_policy(c, &name, &tls_policy(spec, read_until)).await?;
    }
    if seen.is_some() && change.touches(Field::OwnerTag) {
        crate::resources::secret::tag_owner(c, &name).await?;
    }
    Ok(ca)
}

/// SSM parameter holding the CA certificate, so the operator and `vault-init` can trust the
/// stack's Vault while the TLS secret (with the key) stays readable by the instance role only.
/// It is a `SecureString` under the stack's key, and read back only as one: writing such a
/// value takes `kms:Encrypt` on that key through SSM, for this one parameter (the key policy),
/// which `ssm:PutParameter` alone does not give. A swapped parameter is refused, never trusted.
pub const CA_KIND: &str = "ssm parameter";

/// The CA parameter as read, without its value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CaParameter {
    /// `SecureString`, or `String` as earlier versions wrote it.
    pub r#type: String,
    /// The KMS key of a `SecureString`.
    pub key_id: Option<String>,
    pub version: i64,
}

pub async fn observe_ca(
    c: &Clients,
    spec: &VaultServerSpec,
) -> Result<Option<CaParameter>, DeployError> {
    describe_parameter(c, &spec.ca_parameter.clone()).await
}

/// A parameter's type, key and version, without its value.
pub(super) async fn describe_parameter(
    c: &Clients,
    name: &str,
) -> Result<Option<CaParameter>, DeployError> {
    let meta = c
        .ssm
        .describe_parameters()
        .parameter_filters(
            aws_sdk_ssm::types::ParameterStringFilter::builder()
                .key("Name")
                .values(name)
                .build()?,
        )
        .send()
        .await
        .ctx("DescribeParameters", name)?;
    Ok(meta
        .parameters()
        .iter()
        .find(|p| p.name() == Some(name))
        .map(|p| CaParameter {
            r#type: p
                .r#type()
                .map(|t| t.as_str().to_owned())
                .unwrap_or_default(),
            key_id: p.key_id().map(str::to_owned),
            version: p.version(),
        }))
}

/// Whether `key_id` (as SSM reports it: ARN, alias or id) names the stack's key `key_arn`.
pub(super) fn is_stack_key(spec: &VaultServerSpec, key_id: &str, key_arn: &str) -> bool {
    key_id == key_arn || key_id == spec.key_alias || key_arn.ends_with(&format!("/{key_id}"))
}

/// The CA parameter: a `SecureString` under the stack's key, written with the TLS secret. Pure.
/// `tls_exists`: the TLS secret is there already, so a missing parameter cannot be issued again
/// (its CA signed the certificate Vault serves).
pub fn diff_ca(
    spec: &VaultServerSpec,
    seen: Option<&CaParameter>,
    tls_exists: bool,
    key_arn: Option<&str>,
) -> Change {
    let name = spec.ca_parameter.clone();
    if !spec.wanted {
        return Change::new(
            CA_KIND,
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
    ];
    let have = seen.map(|p| {
        let key = match (&p.key_id, key_arn) {
            (Some(k), Some(arn)) if is_stack_key(spec, k, arn) => arn.to_owned(),
            (Some(k), _) => k.clone(),
            (None, _) => "(none)".into(),
        };
        vec![
            (Field::Type, p.r#type.as_str().into()),
            (Field::KmsKey, key.into()),
        ]
    });
    let ch = Change::diff(CA_KIND, name, &want, have.as_ref());
    match seen {
        None if tls_exists => ch.with_note(
            "missing: its CA signed the certificate Vault serves, so it cannot be issued again here; put the CA back (vault-init --ca-cert FILE prints how), or delete the TLS secret so that up issues a new pair",
        ),
        None => ch.with_note("the CA of the new TLS certificate"),
        Some(p) if p.r#type == "String" && p.version == 1 => {
            ch.with_note("written as a plain String by an earlier version: converted in place")
        }
        Some(_) if ch.changes_anything() => ch.with_note(
            "not as this tool writes it: up refuses to trust it and says how to put it back",
        ),
        Some(_) => ch,
    }
}

/// The CA certificate of the stack's Vault, from its SSM parameter, after checking that only
/// someone allowed to encrypt with the stack's key (`key_arn`) can have written it. A plain
/// `String` parameter that was never overwritten (version 1: as earlier versions of this tool
/// wrote it) is converted once; any other is refused with what to do.
pub async fn read_ca(
    c: &Clients,
    spec: &VaultServerSpec,
    key_arn: &str,
) -> Result<Option<String>, DeployError> {
    let name = spec.ca_parameter.clone();
    let p = found(
        c.ssm
            .get_parameter()
            .name(&name)
            .with_decryption(true)
            .send()
            .await
            .ctx("GetParameter", &name),
    )?;
    let Some(p) = p.and_then(|p| p.parameter) else {
        return Ok(None);
    };
    let value = p
        .value()
        .ok_or_else(|| missing("GetParameter", "Value"))?
        .to_owned();
    let refused = |why: String| {
        DeployError::Untrusted(format!(
            "the Vault CA certificate in the SSM parameter {name} is not trusted: {why}. Someone \
         with ssm:PutParameter may have replaced it. Check the certificate against your Vault \
         server, then write it back as a SecureString under the stack's key (aws ssm \
         put-parameter --name {name} --type SecureString --key-id {key_arn} --overwrite \
         --value file://ca.pem), or pass vault-init --ca-cert FILE"
        ))
    };
    match p.r#type() {
        Some(aws_sdk_ssm::types::ParameterType::SecureString) => {
            let meta = observe_ca(c, spec).await?;
            let key_id = meta.and_then(|m| m.key_id).unwrap_or_default();
            if is_stack_key(spec, &key_id, key_arn) {
                Ok(Some(value))
            } else {
                Err(refused(format!(
                    "it is encrypted with {key_id:?}, not the stack's key"
                )))
            }
        }
        _ if p.version() == 1 => {
            // Written so by an earlier version and never changed since: convert it.
            write_ca(c, spec, &value, key_arn, true).await?;
            Ok(Some(value))
        }
        _ => Err(refused(format!(
            "it is a plain String at version {} (this tool writes a SecureString, once)",
            p.version()
        ))),
    }
}

/// Writes the CA parameter; `retype` deletes it first (a `String` cannot become a `SecureString`
/// by overwriting, and tags go only on a new parameter).
async fn write_ca(
    c: &Clients,
    spec: &VaultServerSpec,
    pem: &str,
    key_arn: &str,
    retype: bool,
) -> Result<(), DeployError> {
    let name = spec.ca_parameter.clone();
    if retype {
        delete(
            "DeleteParameter",
            &name,
            c.ssm.delete_parameter().name(&name).send(),
        )
        .await?;
    }
    let existing = !retype && parameter_exists(c, &name).await?;
    put_secure(
        c,
        spec,
        &name,
        "CA certificate of the stack's Vault server (public; encrypted so that only the key's users can replace it)",
        pem,
        key_arn,
        existing,
    )
    .await
}

/// Writes `value` as a `SecureString` under the stack's key (`overwrite`: it exists; tags go
/// only on a new parameter).
pub(super) async fn put_secure(
    c: &Clients,
    spec: &VaultServerSpec,
    name: &str,
    description: &str,
    value: &str,
    key_arn: &str,
    overwrite: bool,
) -> Result<(), DeployError> {
    let tags: Vec<aws_sdk_ssm::types::Tag> = spec
        .owner
        .tags()
        .into_iter()
        .filter_map(|(k, v)| {
            aws_sdk_ssm::types::Tag::builder()
                .key(k)
                .value(v)
                .build()
                .ok()
        })
        .collect();
    c.ssm
        .put_parameter()
        .overwrite(overwrite)
        .name(name)
        .description(description)
        .value(value)
        .r#type(aws_sdk_ssm::types::ParameterType::SecureString)
        .key_id(key_arn)
        .set_tags((!overwrite).then_some(tags))
        .send()
        .await
        .ctx("PutParameter", name)?;
    Ok(())
}

pub(super) async fn parameter_exists(c: &Clients, name: &str) -> Result<bool, DeployError> {
    let p = c.ssm.get_parameter().name(name).send().await;
    Ok(found(p.ctx("GetParameter", name))?.is_some())
}

/// Deletes the CA parameter (with the TLS secret it belongs to).
pub(super) async fn delete_ca(c: &Clients, spec: &VaultServerSpec) -> Result<bool, DeployError> {
    delete_parameter(c, &spec.ca_parameter.clone()).await
}

/// Deletes a parameter; whether it existed.
pub(super) async fn delete_parameter(c: &Clients, name: &str) -> Result<bool, DeployError> {
    let existed = parameter_exists(c, name).await?;
    if existed {
        delete(
            "DeleteParameter",
            name,
            c.ssm.delete_parameter().name(name).send(),
        )
        .await?;
    }
    Ok(existed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(toml: &str) -> VaultServerSpec {
        crate::spec::tests::spec(toml).vault_server_spec().unwrap()
    }

    #[test]
    fn a_tls_secret_cut_short_is_issued_again_and_a_policy_drift_repaired() {
        let s = spec("vault_inbound_cidr = \"10.0.0.0/8\"");
        let policy = tls_policy(&s, None);
        let secret = |policy: &str, pending| TlsSecret {
            arn: "arn:aws-cn:secretsmanager:cn-north-1:123456789012:secret:s-vault/tls-AbCdEf"
                .into(),
            kms_key: "k".into(),
            policy: policy.into(),
            pending_deletion: pending,
            ours: true,
            owner: Some(crate::resources::secret::OWNER_VALUE.into()),
            has_value: true,
            tags: Default::default(),
        };
        let touched = |ch: &Change| -> Vec<String> {
            ch.fields.iter().map(|f| f.field.to_string()).collect()
        };
        let ch = diff_tls(&s, None, false, None).unwrap();
        assert_eq!(ch.action, Action::Create);
        assert!(ch.note.unwrap().contains("a new CA and certificate"));
        let whole = secret(&policy, false);
        assert_eq!(
            diff_tls(&s, Some(&whole), true, None).unwrap().action,
            Action::Unchanged
        );
        let ch = diff_tls(&s, Some(&whole), false, None).unwrap();
        assert_eq!(
            (ch.action, touched(&ch)),
            (Action::Update, vec!["material".into()])
        );
        let ch = diff_tls(&s, Some(&secret("{}", false)), true, None).unwrap();
        assert_eq!(touched(&ch), ["resource_policy"]);
        let ch = diff_tls(&s, Some(&secret(&policy, true)), true, None).unwrap();
        assert_eq!(touched(&ch), ["state"]);
        // Once the instance is there: its first hour only, and a policy without that is drift.
        let until = "2026-12-05T09:00:00Z";
        let bounded = tls_policy(&s, Some(until));
        assert!(bounded.contains(until) && bounded.contains("DateGreaterThan"));
        let ch = diff_tls(&s, Some(&whole), true, Some(until)).unwrap();
        assert_eq!(touched(&ch), ["resource_policy"]);
        let ch = diff_tls(&s, Some(&secret(&bounded, false)), true, Some(until)).unwrap();
        assert_eq!(ch.action, Action::Unchanged);
    }

    #[test]
    fn the_ca_parameter_is_a_secure_string_under_the_stack_key() {
        let s = spec("vault_inbound_cidr = \"10.0.0.0/8\"");
        let key = "arn:aws-cn:kms:cn-north-1:123456789012:key/k-1";
        let param = |t: &str, key_id: Option<&str>, version| CaParameter {
            r#type: t.into(),
            key_id: key_id.map(str::to_owned),
            version,
        };
        let cases = [
            (None, false, Action::Create, "the CA of the new TLS"),
            (None, true, Action::Create, "cannot be issued again"),
            (
                Some(param("SecureString", Some(key), 1)),
                true,
                Action::Unchanged,
                "",
            ),
            (
                Some(param("SecureString", Some(&s.key_alias), 3)),
                true,
                Action::Unchanged,
                "",
            ),
            (
                Some(param("String", None, 1)),
                true,
                Action::Update,
                "converted in place",
            ),
            (
                Some(param("String", None, 2)),
                true,
                Action::Update,
                "refuses to trust it",
            ),
            (
                Some(param("SecureString", Some("alias/aws/ssm"), 1)),
                true,
                Action::Update,
                "refuses to trust it",
            ),
        ];
        for (seen, tls, action, note) in cases {
            let ch = diff_ca(&s, seen.as_ref(), tls, Some(key));
            assert_eq!(ch.action, action, "{seen:?}");
            assert!(
                ch.note.as_deref().unwrap_or("").contains(note),
                "{seen:?}: {:?}",
                ch.note
            );
        }
        let external = spec(
            "deploy_vault_on_ec2 = false\nexternal_vault_address = \"https://v.example.com:8200\"",
        );
        let left = param("SecureString", Some(key), 1);
        assert_eq!(
            diff_ca(&external, Some(&left), false, Some(key)).action,
            Action::Delete
        );
        assert_eq!(diff_ca(&external, None, false, None).action, Action::Absent);
    }
}
