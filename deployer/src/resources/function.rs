//! The replicator Lambdas: runtime provided.al2023, the `bootstrap` zip, its role, memory,
//! timeout, environment (KMS-encrypted) and, with Vault on EC2, the Vault VPC; no retry of a
//! failed asynchronous run. The sync function ([`Duty::Sync`]): one run at a time (reserved
//! concurrency 1) and the failure topic as its on-failure destination. Beside the stack's own
//! Vault, the watcher's function ([`Duty::Watch`]): the same code and role, its own reserved
//! slot, so the Vault host (which may invoke it) never takes the schedule's. Code is uploaded
//! only when the zip's SHA-256 differs.

use std::collections::BTreeMap;

use aws_sdk_lambda::client::Waiters;
use aws_sdk_lambda::primitives::Blob;
use aws_sdk_lambda::types::{
    Architecture, DestinationConfig, Environment, FunctionCode, OnFailure, Runtime, VpcConfig,
};

use super::{Ctx, DeployError, delete, found, missing};
use crate::change::{Action, Change, Field, FieldValue, Fields};
use crate::clients::Clients;
use crate::desired::FunctionSpec;
use crate::lambda_zip::LambdaZip;
use crate::spec::Duty;

pub(crate) const KIND: &str = "lambda function";
const RUNTIME: &str = "provided.al2023";
const HANDLER: &str = "bootstrap";

/// What the function depends on, besides the key its part names.
#[derive(Clone, Debug, Default)]
pub(crate) struct Inputs<'a> {
    /// (subnet ids, security group ids) when the function runs in the Vault VPC.
    pub vpc: Option<(Vec<String>, Vec<String>)>,
    /// The failure topic, when there is one: the on-failure destination.
    pub topic_arn: Option<&'a str>,
    /// The code signing config, when there is one.
    pub code_signing: Option<&'a str>,
}

/// Retries Lambda makes of a failed asynchronous (scheduled) run: none. The next schedule is the
/// retry, and a retry would only overlap the run after it.
const MAX_RETRY_ATTEMPTS: i32 = 0;
const NOT_RESERVED: &str = "not reserved";
const NO_DESTINATION: &str = "none";
/// What Lambda does without an event-invoke configuration.
const DEFAULT_RETRIES: &str = "2 (Lambda's default)";
/// No code signing config: any code uploaded runs.
const UNSIGNED: &str = "none";
/// Code that no signing profile signed.
const NOT_SIGNED: &str = "unsigned";

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct FunctionState {
    pub arn: String,
    pub runtime: String,
    pub handler: String,
    pub role: String,
    pub memory: i32,
    pub timeout: i32,
    pub environment: BTreeMap<String, String>,
    pub kms_key_arn: Option<String>,
    pub code_sha256: String,
    pub subnets: Vec<String>,
    pub security_groups: Vec<String>,
    pub reserved_concurrency: Option<i32>,
    /// The event-invoke configuration: (maximum retry attempts, on-failure destination).
    pub invoke_config: Option<(Option<i32>, Option<String>)>,
    /// The code signing config the function's code is checked against.
    pub code_signing: Option<String>,
    /// The signing profile version that signed the code it runs (none: unsigned).
    pub signed_by: Option<String>,
    pub ours: bool,
}

fn join(v: &[String]) -> String {
    let mut v = v.to_vec();
    v.sort();
    v.join(",")
}

/// The environment as `plan` compares and shows it: the external id (`account_role_arn`'s) by
/// a digest, so it reaches no terminal or CI log, while a changed one still shows as a change.
fn env_text(env: &BTreeMap<String, String>) -> String {
    use sha2::{Digest, Sha256};
    let hidden = |id: &str| {
        let digest = Sha256::digest(id.as_bytes());
        let hex: String = digest[..6].iter().map(|b| format!("{b:02x}")).collect();
        format!("(sha256 {hex}…)")
    };
    let mut shown = env.clone();
    if let Some(id) = shown.get_mut(contract::env::EXTERNAL_ID) {
        *id = hidden(id);
    }
    // Each rule's external id too, in the rules document.
    if let Some(rules) = shown.get_mut(contract::env::RULES)
        && let Ok(mut doc) = serde_json::from_str::<serde_json::Value>(rules)
    {
        for rule in doc.as_array_mut().into_iter().flatten() {
            if let Some(id) = rule.get_mut("external_id")
                && let Some(text) = id.as_str()
            {
                *id = serde_json::Value::String(hidden(text));
            }
        }
        *rules = doc.to_string();
    }
    serde_json::to_string(&shown).unwrap_or_default()
}

/// The on-failure destination of the function's asynchronous runs
/// ([`FunctionSpec::notifies`]).
fn destination<'a>(want: &FunctionSpec, topic: Option<&'a str>) -> Option<&'a str> {
    topic.filter(|_| want.notifies)
}

fn description(duty: Duty) -> &'static str {
    match duty {
        Duty::Sync => "vault-secrets-replicator: Vault KV v2 → Secrets Manager",
        Duty::Watch => {
            "vault-secrets-replicator: the changes the Vault host's watcher sends, synced at once"
        }
        Duty::Rotate => {
            "vault-secrets-replicator: Secrets Manager's rotation of the connection secret's AppRole secret id"
        }
    }
}

fn wanted(want: &FunctionSpec, zip: Option<&LambdaZip>, inputs: &Inputs<'_>) -> Fields {
    let (subnets, sgs) = inputs.vpc.clone().unwrap_or_default();
    let unknown_vpc = want.in_vpc && inputs.vpc.is_none();
    let mut fields: Fields = vec![
        (Field::Runtime, RUNTIME.into()),
        (Field::Handler, HANDLER.into()),
        (Field::Role, want.role_arn.as_str().into()),
        (Field::MemoryMb, want.memory_mb.to_string().into()),
        (Field::TimeoutS, want.timeout_s.to_string().into()),
        (
            Field::Environment,
            want.environment.as_ref().map(env_text).into(),
        ),
        (Field::KmsKeyArn, want.key_arn.clone().into()),
        (Field::CodeSha256, zip.map(|z| z.sha256.clone()).into()),
        (
            Field::CodeSigningConfig,
            match (&want.signing_profile, inputs.code_signing) {
                (None, _) => UNSIGNED.into(),
                (Some(_), arn) => arn.into(),
            },
        ),
        (
            Field::Subnets,
            if unknown_vpc {
                FieldValue::AfterApply
            } else {
                join(&subnets).into()
            },
        ),
        (
            Field::SecurityGroups,
            if unknown_vpc {
                FieldValue::AfterApply
            } else {
                join(&sgs).into()
            },
        ),
        (
            Field::ReservedConcurrency,
            match want.reserved_concurrency {
                0 => NOT_RESERVED.into(),
                n => n.to_string().into(),
            },
        ),
        (
            Field::MaxRetryAttempts,
            MAX_RETRY_ATTEMPTS.to_string().into(),
        ),
        (
            Field::OnFailure,
            match (destination(want, inputs.topic_arn), inputs.topic_arn) {
                (Some(topic), _) => topic.into(),
                (None, None) if want.notifies => FieldValue::AfterApply,
                (None, _) => NO_DESTINATION.into(),
            },
        ),
    ];
    // With a profile, the code running must be signed by it: attaching the config checks only
    // code uploaded after it, so code that was running before is uploaded again (and refused
    // by Lambda unless signed).
    if let Some(profile) = &want.signing_profile {
        fields.push((Field::CodeSignedBy, profile.as_str().into()));
    }
    fields
}

impl FunctionState {
    fn fields(&self, want_key: Option<&str>, signing: Option<&str>) -> Fields {
        let mut fields: Fields = vec![
            (Field::Runtime, self.runtime.as_str().into()),
            (Field::Handler, self.handler.as_str().into()),
            (Field::Role, self.role.as_str().into()),
            (Field::MemoryMb, self.memory.to_string().into()),
            (Field::TimeoutS, self.timeout.to_string().into()),
            (Field::Environment, env_text(&self.environment).into()),
            // Write-only where the API does not echo it (moto): only a different key is drift.
            (
                Field::KmsKeyArn,
                self.kms_key_arn
                    .clone()
                    .or_else(|| want_key.map(str::to_owned))
                    .unwrap_or_default()
                    .into(),
            ),
            (Field::CodeSha256, self.code_sha256.as_str().into()),
            (
                Field::CodeSigningConfig,
                self.code_signing.as_deref().unwrap_or(UNSIGNED).into(),
            ),
            (Field::Subnets, join(&self.subnets).into()),
            (Field::SecurityGroups, join(&self.security_groups).into()),
            (
                Field::ReservedConcurrency,
                self.reserved_concurrency
                    .map_or_else(|| NOT_RESERVED.into(), |n| n.to_string())
                    .into(),
            ),
            (
                Field::MaxRetryAttempts,
                match &self.invoke_config {
                    Some((Some(n), _)) => n.to_string().into(),
                    _ => DEFAULT_RETRIES.into(),
                },
            ),
            (
                Field::OnFailure,
                self.invoke_config
                    .as_ref()
                    .and_then(|(_, d)| d.as_deref())
                    .unwrap_or(NO_DESTINATION)
                    .into(),
            ),
        ];
        if let Some(profile) = signing {
            fields.push((
                Field::CodeSignedBy,
                match &self.signed_by {
                    Some(seen) if same_signer(seen, profile) => profile.into(),
                    Some(seen) => seen.as_str().into(),
                    None => NOT_SIGNED.into(),
                },
            ));
        }
        fields
    }
}

/// Whether Lambda's `SigningProfileVersionArn` names the configured profile version: in any
/// case, and with the version left out (Lambda records a signer only after checking it against
/// the config's allowed publishers, so the profile alone is proof enough), so a form that
/// differs from the configured one never uploads the code again on every `up`.
fn same_signer(seen: &str, profile: &str) -> bool {
    let (seen, profile) = (seen.to_ascii_lowercase(), profile.to_ascii_lowercase());
    seen == profile
        || profile
            .rsplit_once('/')
            .is_some_and(|(without_version, _)| seen == without_version)
}

pub(crate) async fn observe(
    c: &Clients,
    want: &FunctionSpec,
) -> Result<Option<FunctionState>, DeployError> {
    let name = want.name.as_str();
    let Some(out) = found(
        c.lambda
            .get_function()
            .function_name(name)
            .send()
            .await
            .ctx("GetFunction", name),
    )?
    else {
        return Ok(None);
    };
    let conf = out
        .configuration()
        .ok_or_else(|| missing("GetFunction", "Configuration"))?;
    let vpc = conf.vpc_config();
    let invoke = found(
        c.lambda
            .get_function_event_invoke_config()
            .function_name(name)
            .send()
            .await
            .ctx("GetFunctionEventInvokeConfig", name),
    )?;
    let code_signing = c
        .lambda
        .get_function_code_signing_config()
        .function_name(name)
        .send()
        .await
        .ctx("GetFunctionCodeSigningConfig", name)?
        .code_signing_config_arn()
        .to_owned();
    let invoke_config = invoke.map(|i| {
        (
            i.maximum_retry_attempts(),
            i.destination_config()
                .and_then(|d| d.on_failure())
                .and_then(|f| f.destination())
                .filter(|d| !d.is_empty())
                .map(str::to_owned),
        )
    });
    Ok(Some(FunctionState {
        reserved_concurrency: out
            .concurrency()
            .and_then(|c| c.reserved_concurrent_executions()),
        invoke_config,
        code_signing: Some(code_signing).filter(|a| !a.is_empty()),
        signed_by: conf
            .signing_profile_version_arn()
            .filter(|a| !a.is_empty())
            .map(str::to_owned),
        arn: conf
            .function_arn()
            .ok_or_else(|| missing("GetFunction", "FunctionArn"))?
            .to_owned(),
        runtime: conf
            .runtime()
            .map(|r| r.as_str().to_owned())
            .unwrap_or_default(),
        handler: conf.handler().unwrap_or_default().to_owned(),
        role: conf.role().unwrap_or_default().to_owned(),
        memory: conf.memory_size().unwrap_or_default(),
        timeout: conf.timeout().unwrap_or_default(),
        environment: conf
            .environment()
            .and_then(|e| e.variables())
            .map(|v| v.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default(),
        kms_key_arn: conf
            .kms_key_arn()
            .filter(|k| !k.is_empty())
            .map(str::to_owned),
        code_sha256: conf.code_sha256().unwrap_or_default().to_owned(),
        subnets: vpc.map(|v| v.subnet_ids().to_vec()).unwrap_or_default(),
        security_groups: vpc
            .map(|v| v.security_group_ids().to_vec())
            .unwrap_or_default(),
        ours: out.tags().is_some_and(|t| {
            t.get(crate::spec::STACK_TAG).map(String::as_str) == Some(want.owner.stack())
        }),
    }))
}

pub(crate) fn diff(
    want: &FunctionSpec,
    seen: Option<&FunctionState>,
    zip: Option<&LambdaZip>,
    inputs: &Inputs<'_>,
) -> Change {
    let name = want.name.clone();
    if !want.wanted {
        return match seen {
            Some(f) if f.ours => Change::new(KIND, name, Action::Delete)
                .with_note("the change watcher's function: there is no stack Vault to watch"),
            _ => Change::new(KIND, name, Action::Absent),
        };
    }
    Change::diff(
        KIND,
        name,
        &wanted(want, zip, inputs),
        seen.map(|s| s.fields(want.key_arn.as_deref(), want.signing_profile.as_deref()))
            .as_ref(),
    )
}

fn vpc_config(inputs: &Inputs<'_>) -> VpcConfig {
    let (subnets, sgs) = inputs.vpc.clone().unwrap_or_default();
    VpcConfig::builder()
        .set_subnet_ids(Some(subnets))
        .set_security_group_ids(Some(sgs))
        .build()
}

/// The statements of the function's resource policy (who may invoke it); none when it has no
/// policy or does not exist.
pub(crate) async fn policy_statements(
    c: &Clients,
    name: &str,
) -> Result<Vec<serde_json::Value>, DeployError> {
    let Some(policy) = super::found(
        c.lambda
            .get_policy()
            .function_name(name)
            .send()
            .await
            .ctx("GetPolicy", name),
    )?
    else {
        return Ok(Vec::new());
    };
    let doc: serde_json::Value = policy
        .policy()
        .and_then(|p| serde_json::from_str(p).ok())
        .unwrap_or_default();
    Ok(doc["Statement"].as_array().cloned().unwrap_or_default())
}

/// Waits until the function has taken its last update.
pub(crate) async fn wait_updated(c: &Clients, name: &str) -> Result<(), DeployError> {
    c.lambda
        .wait_until_function_updated_v2()
        .function_name(name)
        .wait(std::time::Duration::from_secs(300))
        .await
        .map_err(|e| DeployError::NotReady {
            what: format!("lambda function {name}"),
            detail: e.to_string(),
        })?;
    Ok(())
}

/// Creates or updates the function serving `duty`; `None` when the change deleted it.
pub(crate) async fn apply(
    c: &Clients,
    want: &FunctionSpec,
    change: &Change,
    zip: &LambdaZip,
    inputs: &Inputs<'_>,
) -> Result<Option<FunctionState>, DeployError> {
    let name = want.name.as_str();
    if change.action == Action::Delete {
        destroy(c, want).await?;
        return Ok(None);
    }
    let (Some(key_arn), Some(variables)) = (want.key_arn.as_deref(), &want.environment) else {
        return Err(missing("apply", "KMS key ARN"));
    };
    let env = Environment::builder()
        .set_variables(Some(variables.clone().into_iter().collect()))
        .build();
    if change.action == Action::Create {
        // A role made seconds ago may not be assumable yet: retry on that error only.
        super::retry_on(c.backoff, &["InvalidParameterValueException"], || async {
            c.lambda
                .create_function()
                .function_name(name)
                .description(description(want.duty))
                .runtime(Runtime::from(RUNTIME))
                .handler(HANDLER)
                .architectures(Architecture::X8664)
                .role(&want.role_arn)
                .code(
                    FunctionCode::builder()
                        .zip_file(Blob::new(zip.bytes.clone()))
                        .build(),
                )
                .memory_size(want.memory_mb)
                .timeout(want.timeout_s)
                .environment(env.clone())
                .kms_key_arn(key_arn)
                .set_vpc_config(inputs.vpc.as_ref().map(|_| vpc_config(inputs)))
                .set_code_signing_config_arn(inputs.code_signing.map(str::to_owned))
                .set_tags(Some(want.owner.tags().into_iter().collect()))
                .send()
                .await
                .map(|_| ())
                .ctx("CreateFunction", name)
        })
        .await
        .map_err(|e| unsigned(want, e))?;
        c.lambda
            .wait_until_function_active_v2()
            .function_name(name)
            .wait(std::time::Duration::from_secs(300))
            .await
            .map_err(|e| DeployError::NotReady {
                what: format!("lambda function {name}"),
                detail: e.to_string(),
            })?;
    } else {
        // Before any new code: it is checked against the config it will run under.
        if change.touches(Field::CodeSigningConfig) {
            match inputs.code_signing {
                Some(arn) => {
                    c.lambda
                        .put_function_code_signing_config()
                        .function_name(name)
                        .code_signing_config_arn(arn)
                        .send()
                        .await
                        .ctx("PutFunctionCodeSigningConfig", name)?;
                }
                None => {
                    delete(
                        "DeleteFunctionCodeSigningConfig",
                        name,
                        c.lambda
                            .delete_function_code_signing_config()
                            .function_name(name)
                            .send(),
                    )
                    .await?
                }
            }
        }
        let config_fields = [
            Field::Runtime,
            Field::Handler,
            Field::Role,
            Field::MemoryMb,
            Field::TimeoutS,
            Field::Environment,
            Field::KmsKeyArn,
            Field::Subnets,
            Field::SecurityGroups,
        ];
        if config_fields.iter().any(|f| change.touches(*f)) {
            super::retry_on(c.backoff, &["InvalidParameterValueException"], || async {
                c.lambda
                    .update_function_configuration()
                    .function_name(name)
                    .runtime(Runtime::from(RUNTIME))
                    .handler(HANDLER)
                    .role(&want.role_arn)
                    .memory_size(want.memory_mb)
                    .timeout(want.timeout_s)
                    .environment(env.clone())
                    .kms_key_arn(key_arn)
                    .vpc_config(vpc_config(inputs))
                    .send()
                    .await
                    .map(|_| ())
                    .ctx("UpdateFunctionConfiguration", name)
            })
            .await?;
            wait_updated(c, name).await?;
        }
        if change.touches(Field::CodeSha256) || change.touches(Field::CodeSignedBy) {
            c.lambda
                .update_function_code()
                .function_name(name)
                .zip_file(Blob::new(zip.bytes.clone()))
                .send()
                .await
                .ctx("UpdateFunctionCode", name)
                .map_err(|e| unsigned(want, e))?;
            wait_updated(c, name).await?;
        }
    }
    if change.touches(Field::ReservedConcurrency) {
        match want.reserved_concurrency {
            0 => c
                .lambda
                .delete_function_concurrency()
                .function_name(name)
                .send()
                .await
                .map(|_| ())
                .ctx("DeleteFunctionConcurrency", name)?,
            n => c
                .lambda
                .put_function_concurrency()
                .function_name(name)
                .reserved_concurrent_executions(n)
                .send()
                .await
                .map(|_| ())
                .ctx("PutFunctionConcurrency", name)?,
        }
    }
    if change.touches(Field::MaxRetryAttempts) || change.touches(Field::OnFailure) {
        let destination = destination(want, inputs.topic_arn);
        // Put replaces the configuration on AWS; moto keeps the first one it was given, so the
        // old one goes first (for a moment Lambda's defaults apply, which only matters to a run
        // that fails in that moment).
        if change.action != Action::Create {
            delete(
                "DeleteFunctionEventInvokeConfig",
                name,
                c.lambda
                    .delete_function_event_invoke_config()
                    .function_name(name)
                    .send(),
            )
            .await?;
        }
        // A role policy granting sns:Publish on the topic may not have propagated yet.
        super::retry_on(c.backoff, &["InvalidParameterValueException"], || async {
            c.lambda
                .put_function_event_invoke_config()
                .function_name(name)
                .maximum_retry_attempts(MAX_RETRY_ATTEMPTS)
                .set_destination_config(destination.map(|topic| {
                    DestinationConfig::builder()
                        .on_failure(OnFailure::builder().destination(topic).build())
                        .build()
                }))
                .send()
                .await
                .map(|_| ())
                .ctx("PutFunctionEventInvokeConfig", name)
        })
        .await?;
    }
    observe(c, want)
        .await?
        .map(Some)
        .ok_or_else(|| missing("GetFunction", "the function just made"))
}

/// Lambda's refusal of code its code signing config does not allow, as what to do about it.
fn unsigned(want: &FunctionSpec, e: contract::sdk::AwsError) -> DeployError {
    let refused = [
        "CodeVerificationFailedException",
        "InvalidCodeSignatureException",
    ];
    match &want.signing_profile {
        Some(profile) if refused.contains(&e.code.as_str()) => DeployError::Untrusted(format!(
            "Lambda refused the function code ({}: {}): with code_signing_profile it runs only a zip signed by {profile}. \
             Sign the zip with that profile (`aws signer start-signing-job --profile-name NAME --source ...`, the object it writes is the signed zip) and give the signed zip with --lambda-zip; the function was not given this code",
            e.code, e.message
        )),
        _ => e.into(),
    }
}

pub(crate) async fn destroy(c: &Clients, want: &FunctionSpec) -> Result<Change, DeployError> {
    let name = want.name.clone();
    match observe(c, want).await? {
        None => Ok(Change::new(KIND, name, Action::Absent)),
        Some(f) if !f.ours => Ok(Change::new(KIND, name, Action::Absent)
            .with_note("exists without this stack's tag; left alone")),
        Some(_) => {
            delete(
                "DeleteFunction",
                &name,
                c.lambda.delete_function().function_name(&name).send(),
            )
            .await?;
            Ok(Change::new(KIND, name, Action::Delete))
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_external_id_is_shown_by_a_digest_that_still_tells_a_change() {
        let env = |id: &str| {
            super::env_text(&std::collections::BTreeMap::from([
                (contract::env::EXTERNAL_ID.to_owned(), id.to_owned()),
                (contract::env::PREFIX.to_owned(), "p".to_owned()),
            ]))
        };
        let (a, b) = (env("ext-secretish-1"), env("ext-secretish-2"));
        assert!(!a.contains("secretish") && !b.contains("secretish"), "{a}");
        assert!(a.contains("(sha256 ") && a.contains("\"p\""), "{a}");
        assert_ne!(a, b);
        // Each rule's, in the rules document.
        let rules = |id: &str| {
            super::env_text(&std::collections::BTreeMap::from([(
                contract::env::RULES.to_owned(),
                format!(r#"[{{"name":"a","prefix":"p","external_id":"{id}"}}]"#),
            )]))
        };
        let (a, b) = (rules("ext-secretish-1"), rules("ext-secretish-2"));
        assert!(!a.contains("secretish") && !b.contains("secretish"), "{a}");
        assert!(a.contains("(sha256 ") && a.contains("prefix"), "{a}");
        assert_ne!(a, b);
    }

    use super::*;
    use crate::change::touched;
    use crate::spec::tests::spec;

    #[test]
    fn the_signer_lambda_reports_matches_the_profile_in_any_form_it_may_take() {
        let profile = "arn:aws:signer:eu-west-1:123456789012:/signing-profiles/Rep_1/a1B2c3D4e5";
        assert!(same_signer(profile, profile));
        assert!(same_signer(&profile.to_ascii_lowercase(), profile));
        assert!(same_signer(
            "arn:aws:signer:eu-west-1:123456789012:/signing-profiles/Rep_1",
            profile
        ));
        assert!(!same_signer(
            "arn:aws:signer:eu-west-1:123456789012:/signing-profiles/Other/a1B2c3D4e5",
            profile
        ));
        assert!(!same_signer(
            "arn:aws:signer:eu-west-1:123456789012:/signing-profiles/Rep_1/zzzzzzzzzz",
            profile
        ));
    }

    #[test]
    fn the_function_diffs_each_setting_and_its_code_by_hash() {
        let s = spec(
            "stack_name = \"s\"\ndeploy_vault_on_ec2 = false\nexternal_vault_address = \"https://v.example.com:8200\"\nnotification_email = \"ops@example.com\"\n",
        );
        let key = "arn:aws-cn:kms:cn-north-1:123456789012:key/k-1";
        let topic = s.topic_arn();
        let zip = LambdaZip {
            path: "replicator.zip".into(),
            bytes: Vec::new(),
            sha256: "c2hhMjU2".into(),
        };
        let inputs = Inputs {
            vpc: None,
            topic_arn: Some(&topic),
            code_signing: None,
        };
        let made = FunctionState {
            arn: s.function_arn(),
            runtime: RUNTIME.into(),
            handler: HANDLER.into(),
            role: s.role_arn(),
            memory: s.cfg.lambda_memory_mb,
            timeout: s.cfg.lambda_timeout_seconds,
            environment: s.lambda_environment(key),
            kms_key_arn: Some(key.into()),
            code_sha256: zip.sha256.clone(),
            subnets: vec![],
            security_groups: vec![],
            reserved_concurrency: Some(s.cfg.lambda_reserved_concurrency).filter(|n| *n != 0),
            invoke_config: Some((Some(MAX_RETRY_ATTEMPTS), Some(topic.clone()))),
            code_signing: None,
            signed_by: None,
            ours: true,
        };
        assert_eq!(
            diff(
                &s.function_spec(Duty::Sync, Some(key)),
                None,
                Some(&zip),
                &inputs
            )
            .action,
            Action::Create
        );
        let ch = diff(
            &s.function_spec(Duty::Sync, Some(key)),
            Some(&made),
            Some(&zip),
            &inputs,
        );
        assert_eq!(ch.action, Action::Unchanged, "{ch:?}");
        type Drift = fn(&mut FunctionState);
        let cases: [(Drift, &str); 7] = [
            (|f| f.memory = 1024, "memory_mb"),
            (
                |f| f.role = "arn:aws-cn:iam::123456789012:role/other".into(),
                "role",
            ),
            (
                |f| {
                    f.environment.remove(contract::env::PREFIX);
                },
                "environment",
            ),
            (|f| f.code_sha256 = "b2xk".into(), "code_sha256"),
            (|f| f.reserved_concurrency = Some(5), "reserved_concurrency"),
            (|f| f.invoke_config = None, "max_retry_attempts"),
            (
                |f| f.security_groups = vec!["sg-x".into()],
                "security_groups",
            ),
        ];
        for (drift, field) in cases {
            let mut f = made.clone();
            drift(&mut f);
            let ch = diff(
                &s.function_spec(Duty::Sync, Some(key)),
                Some(&f),
                Some(&zip),
                &inputs,
            );
            assert!(touched(&ch).contains(&field), "{field}: {ch:?}");
            assert_eq!(ch.action, Action::Update);
        }
        // Without the zip (status), the code is known after apply, never drift.
        let ch = diff(
            &s.function_spec(Duty::Sync, Some(key)),
            Some(&made),
            None,
            &inputs,
        );
        assert_eq!(ch.action, Action::Unchanged, "{ch:?}");
        // An external Vault: no watcher, so no function of its own (an old one goes).
        assert_eq!(
            diff(
                &s.function_spec(Duty::Watch, Some(key)),
                None,
                Some(&zip),
                &inputs
            )
            .action,
            Action::Absent
        );
        let ch = diff(
            &s.function_spec(Duty::Watch, Some(key)),
            Some(&made),
            Some(&zip),
            &inputs,
        );
        assert_eq!(ch.action, Action::Delete, "{ch:?}");
    }
}
