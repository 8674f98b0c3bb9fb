//! The code signing config of the stack's functions (only with `code_signing_profile`): Lambda
//! deploys only code signed by that AWS Signer profile version, and refuses anything else
//! (`Enforce`), so whoever may update the functions' code (or the zip the deployer is given)
//! cannot make them, or the Vault host's watcher that runs the same code, run other code.
//! Found by its description and this stack's tag (without a profile configured, through the
//! functions that use it: a stack that never had one sends no code signing request beyond
//! those lookups); deleted once no function uses it.

use aws_sdk_lambda::types::{AllowedPublishers, CodeSigningPolicies, CodeSigningPolicy};

use super::{Ctx, DeployError, delete, found, has_stack_tag};
use crate::change::{Action, Change, Field, Fields};
use crate::clients::Clients;
use crate::desired::{Owner, SigningSpec};

pub(crate) const KIND: &str = "code signing config";
/// What Lambda does with code that is not signed by an allowed profile: refuses to deploy it.
const ENFORCE: &str = "Enforce";

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SigningState {
    pub arn: String,
    pub publishers: Vec<String>,
    pub untrusted: String,
}

fn fields(publishers: &[String], untrusted: &str) -> Fields {
    let mut p = publishers.to_vec();
    p.sort();
    vec![
        (Field::AllowedPublishers, p.join(",").into()),
        (Field::UntrustedArtifactOnDeployment, untrusted.into()),
    ]
}

/// Whether the config `arn` carries this stack's tag.
async fn ours(c: &Clients, owner: &Owner, arn: &str) -> Result<bool, DeployError> {
    let tags = found(
        c.lambda
            .list_tags()
            .resource(arn)
            .send()
            .await
            .ctx("ListTags", arn),
    )?;
    Ok(tags.is_some_and(|t| {
        t.tags().is_some_and(|t| {
            has_stack_tag(
                t.iter().map(|(k, v)| (k.as_str(), v.as_str())),
                owner.stack(),
            )
        })
    }))
}

/// This stack's code signing config: the one with its description and its tag; without a
/// profile configured, the one of this stack's that its functions still use (to remove it).
pub(crate) async fn observe(
    c: &Clients,
    want: &SigningSpec,
) -> Result<Option<SigningState>, DeployError> {
    if want.profile.is_none() {
        for name in &want.functions {
            let used = found(
                c.lambda
                    .get_function_code_signing_config()
                    .function_name(name)
                    .send()
                    .await
                    .ctx("GetFunctionCodeSigningConfig", name),
            )?;
            let Some(arn) = used
                .map(|u| u.code_signing_config_arn().to_owned())
                .filter(|a| !a.is_empty())
            else {
                continue;
            };
            if ours(c, &want.owner, &arn).await? {
                return Ok(Some(SigningState {
                    arn,
                    publishers: Vec::new(),
                    untrusted: String::new(),
                }));
            }
        }
        return Ok(None);
    }
    let description = &want.description;
    let mut marker: Option<String> = None;
    loop {
        let page = c
            .lambda
            .list_code_signing_configs()
            .set_marker(marker.take())
            .send()
            .await
            .ctx("ListCodeSigningConfigs", description)?;
        for csc in page.code_signing_configs() {
            if csc.description() != Some(description) {
                continue;
            }
            let arn = csc.code_signing_config_arn();
            if !ours(c, &want.owner, arn).await? {
                continue;
            }
            return Ok(Some(SigningState {
                arn: arn.to_owned(),
                publishers: csc
                    .allowed_publishers()
                    .map(|p| p.signing_profile_version_arns().to_vec())
                    .unwrap_or_default(),
                untrusted: csc
                    .code_signing_policies()
                    .and_then(|p| p.untrusted_artifact_on_deployment())
                    .map(|p| p.as_str().to_owned())
                    .unwrap_or_default(),
            }));
        }
        match page.next_marker() {
            Some(m) if !m.is_empty() => marker = Some(m.to_owned()),
            _ => return Ok(None),
        }
    }
}

/// Without a profile, an existing config goes (once the functions no longer use it).
pub(crate) fn diff(want: &SigningSpec, seen: Option<&SigningState>) -> Change {
    let name = want.name.clone();
    let Some(profile) = &want.profile else {
        return match seen {
            Some(_) => Change::new(KIND, name, Action::Delete)
                .with_note("no code_signing_profile: the functions run any code uploaded to them"),
            None => Change::new(KIND, name, Action::Absent),
        };
    };
    let wanted = fields(std::slice::from_ref(profile), ENFORCE);
    Change::diff(
        KIND,
        name,
        &wanted,
        seen.map(|s| fields(&s.publishers, &s.untrusted)).as_ref(),
    )
}

/// Creates or updates the config; its ARN.
pub(crate) async fn apply(
    c: &Clients,
    want: &SigningSpec,
    seen: Option<&SigningState>,
    change: &Change,
) -> Result<String, DeployError> {
    let profile = want
        .profile
        .as_deref()
        .ok_or_else(|| super::missing("apply", "code_signing_profile"))?;
    let publishers = AllowedPublishers::builder()
        .signing_profile_version_arns(profile)
        .build()?;
    let policies = CodeSigningPolicies::builder()
        .untrusted_artifact_on_deployment(CodeSigningPolicy::from(ENFORCE))
        .build();
    let name = want.name.clone();
    match seen {
        Some(s) if change.action == Action::Update => {
            c.lambda
                .update_code_signing_config()
                .code_signing_config_arn(&s.arn)
                .description(&want.description)
                .allowed_publishers(publishers)
                .code_signing_policies(policies)
                .send()
                .await
                .ctx("UpdateCodeSigningConfig", &name)?;
            Ok(s.arn.clone())
        }
        Some(s) => Ok(s.arn.clone()),
        None => {
            let out = c
                .lambda
                .create_code_signing_config()
                .description(&want.description)
                .allowed_publishers(publishers)
                .code_signing_policies(policies)
                .set_tags(Some(want.owner.tags().into_iter().collect()))
                .send()
                .await
                .ctx("CreateCodeSigningConfig", &name)?;
            Ok(out
                .code_signing_config()
                .map(|c| c.code_signing_config_arn().to_owned())
                .ok_or_else(|| super::missing("CreateCodeSigningConfig", "CodeSigningConfig"))?)
        }
    }
}

/// Deletes this stack's config `seen` (observed while the functions using it were there);
/// Lambda refuses while a function still uses it, so it goes after the functions.
pub(crate) async fn destroy(
    c: &Clients,
    want: &SigningSpec,
    seen: Option<&SigningState>,
) -> Result<Change, DeployError> {
    let name = want.name.clone();
    let Some(s) = seen else {
        return Ok(Change::new(KIND, name, Action::Absent));
    };
    let mut arn = s.arn.clone();
    // Every one of this stack's: a create the SDK retried may have made two.
    for _ in 0..10 {
        delete(
            "DeleteCodeSigningConfig",
            &name,
            c.lambda
                .delete_code_signing_config()
                .code_signing_config_arn(&arn)
                .send(),
        )
        .await?;
        match observe(c, want).await? {
            Some(next) if want.profile.is_some() && next.arn != arn => {
                arn = next.arn;
            }
            _ => break,
        }
    }
    Ok(Change::new(KIND, name, Action::Delete))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::change::touched;
    use crate::spec::tests::spec;

    const PROFILE: &str =
        "arn:aws:signer:eu-west-1:123456789012:/signing-profiles/replicator/a1B2c3D4e5";

    #[test]
    fn the_config_allows_exactly_the_profile_and_enforces_it() {
        let base = "stack_name = \"s\"\ndeploy_vault_on_ec2 = false\nexternal_vault_address = \"https://v.example.com:8200\"\n";
        let plain = spec(base);
        assert_eq!(diff(&plain.signing_spec(), None).action, Action::Absent);
        let s = spec(&format!("{base}code_signing_profile = \"{PROFILE}\"\n"));
        let ch = diff(&s.signing_spec(), None);
        assert_eq!(ch.action, Action::Create);
        let want: Vec<(Field, Option<&str>)> = ch
            .fields
            .iter()
            .map(|f| {
                (
                    f.field,
                    f.to.as_ref().and_then(crate::change::FieldValue::known),
                )
            })
            .collect();
        assert_eq!(
            want,
            [
                (Field::AllowedPublishers, Some(PROFILE)),
                (Field::UntrustedArtifactOnDeployment, Some("Enforce")),
            ]
        );
        let made = SigningState {
            arn: "arn:aws:lambda:eu-west-1:123456789012:code-signing-config:csc-1".into(),
            publishers: vec![PROFILE.into()],
            untrusted: ENFORCE.into(),
        };
        assert_eq!(
            diff(&s.signing_spec(), Some(&made)).action,
            Action::Unchanged
        );
        // Warn-only, or another publisher beside ours, is drift.
        let warn = SigningState {
            untrusted: "Warn".into(),
            ..made.clone()
        };
        assert_eq!(
            touched(&diff(&s.signing_spec(), Some(&warn))),
            ["untrusted_artifact_on_deployment"]
        );
        let wider = SigningState {
            publishers: vec![PROFILE.into(), PROFILE.replace("replicator", "other")],
            ..made.clone()
        };
        let ch = diff(&s.signing_spec(), Some(&wider));
        assert_eq!(touched(&ch), ["allowed_publishers"]);
        assert!(ch.needs_confirmation(), "who may publish code is access");
        // The profile removed from the configuration: the config goes.
        assert_eq!(
            diff(&plain.signing_spec(), Some(&made)).action,
            Action::Delete
        );
    }
}
