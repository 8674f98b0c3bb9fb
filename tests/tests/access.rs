//! Who may do what, decided the way IAM decides (explicit deny wins; NotAction/NotResource,
//! wildcards, conditions) from the documents the deployer renders: the replicator role's
//! policy, the connection secret's resource policy, the KMS key policy. moto enforces none of
//! them, so each access claim of the README is a row here.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;

use deployer::spec::Spec;
use e2e::access::{Decision, Decision::*, Request, decide};
use serde_json::{Value, json};

const ACCOUNT: &str = "123456789012";
const KEY: &str = "arn:aws:kms:eu-west-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab";
const OTHER_KEY: &str =
    "arn:aws:kms:eu-west-1:123456789012:key/9999abcd-12ab-34cd-56ef-1234567890ab";
const STACK: &str = "s";
const SOMEONE: &str = "arn:aws:iam::123456789012:role/someone-else";
const VPC: &str = "vpc-0123456789abcdef0";
const VIA_SM: &str = "secretsmanager.eu-west-1.amazonaws.com";
const VIA_SNS: &str = "sns.eu-west-1.amazonaws.com";
const VIA_LAMBDA: &str = "lambda.eu-west-1.amazonaws.com";
const VIA_SSM: &str = "ssm.eu-west-1.amazonaws.com";
const CA_PARAMETER: &str = "arn:aws:ssm:eu-west-1:123456789012:parameter/s/vault/ca-certificate";

fn vpc_arn(id: &str) -> String {
    format!("arn:aws:ec2:eu-west-1:{ACCOUNT}:vpc/{id}")
}

fn spec(extra: &str) -> Spec {
    e2e::deploy::spec(extra, "aws")
}

fn secret(name: &str) -> String {
    format!("arn:aws:secretsmanager:eu-west-1:{ACCOUNT}:secret:{name}-AbCdEf")
}

/// A row: (who, action, resource, extra condition keys) → the expected decision.
struct Row {
    who: &'static str,
    action: &'static str,
    resource: String,
    context: Vec<(&'static str, Value)>,
    want: Decision,
}

fn row(
    who: &'static str,
    action: &'static str,
    resource: impl Into<String>,
    want: Decision,
) -> Row {
    Row {
        who,
        action,
        resource: resource.into(),
        context: vec![],
        want,
    }
}

impl Row {
    fn with(mut self, key: &'static str, value: Value) -> Self {
        self.context.push((key, value));
        self
    }
}

/// An identity policy that allows everything: for a principal who is not the replicator, only
/// the resource policy can then refuse.
fn allow_all() -> Value {
    json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]})
}

/// Decides each request and fails naming every one decided otherwise than its row says.
fn assert_decisions(rows: &[(Request, Decision, &str)]) {
    let requests: Vec<Request> = rows.iter().map(|(r, _, _)| r.clone()).collect();
    let got = decide(&requests);
    let wrong: Vec<String> = rows
        .iter()
        .zip(&got)
        .filter(|((_, want, _), got)| want != *got)
        .map(|((r, want, why), got)| {
            format!(
                "{why}: {} on {}: expected {want:?}, got {got:?}",
                r.action, r.resource
            )
        })
        .collect();
    assert!(wrong.is_empty(), "\n{}", wrong.join("\n"));
}

/// Decides every row for `spec`: the replicator (its role's inline policy) or someone else
/// (allowed everything by their own policy), against the resource policy of the resource's
/// kind (the connection secret's, the key's).
fn check(spec: &Spec, rows: &[Row]) {
    check_through(spec, rows, None);
}

/// [`check`], each request made through a VPC endpoint with this policy.
fn check_through(spec: &Spec, rows: &[Row], endpoint_policy: Option<&Value>) {
    let role = spec.replicator_policy(KEY, Some(VPC)).unwrap();
    let rotation = spec.rotation_policy(KEY, Some(VPC)).unwrap();
    let rotator = spec.rotator_secret_policy().unwrap();
    let rotator_arn = secret(&spec.rotator_secret());
    let connection = spec.connection_secret_policy().unwrap();
    let key_policy = spec.key_policy().unwrap();
    let connection_arn = secret(&spec.connection_secret());
    let rule_roles = spec.home_rule_roles().unwrap();
    let requests: Vec<Request> = rows
        .iter()
        .map(|r| {
            let (principal, identities) = match r.who {
                "replicator" | "replicator-elsewhere" => (spec.role_arn(), vec![role.clone()]),
                // The role `up` makes for a rule in the stack's account ("rule:NAME").
                rule if rule.starts_with("rule:") => {
                    let name = format!(".sync.{}", &rule["rule:".len()..]);
                    let own = rule_roles
                        .iter()
                        .find(|r| r.arn.ends_with(&name))
                        .unwrap_or_else(|| panic!("no role for {rule}"));
                    (own.arn.clone(), vec![own.policy.clone()])
                }
                "rotation" | "rotation-elsewhere" => {
                    (spec.rotation_role_arn(), vec![rotation.clone()])
                }
                // A service acting as itself (not on a caller's behalf): no identity policy.
                "sns-service" => ("sns.amazonaws.com".to_owned(), vec![]),
                // A principal allowed every SSM action, and nothing in KMS.
                "ssm-writer" => (
                    SOMEONE.to_owned(),
                    vec![json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "ssm:*", "Resource": "*"}]})],
                ),
                _ => (SOMEONE.to_owned(), vec![allow_all()]),
            };
            let resource_policy = if r.resource == connection_arn {
                Some(connection.clone())
            } else if r.resource == rotator_arn {
                Some(rotator.clone())
            } else if r.resource == KEY {
                Some(key_policy.clone())
            } else if r.resource.starts_with("arn:aws:kms:") {
                // Any other key: the default key policy, which leaves access to IAM.
                Some(json!({"Version": "2012-10-17", "Statement": [{
                    "Effect": "Allow",
                    "Principal": {"AWS": format!("arn:aws:iam::{ACCOUNT}:root")},
                    "Action": "kms:*",
                    "Resource": "*"
                }]}))
            } else {
                None
            };
            let mut context: BTreeMap<String, Value> = r
                .context
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.clone()))
                .collect();
            context
                .entry("aws:PrincipalArn".into())
                .or_insert_with(|| json!(principal));
            context
                .entry("aws:PrincipalAccount".into())
                .or_insert_with(|| json!(ACCOUNT));
            if r.action.starts_with("kms:") {
                context
                    .entry("kms:CallerAccount".into())
                    .or_insert_with(|| json!(ACCOUNT));
            }
            // The role's credentials inside its function carry the function's ARN; the same
            // credentials used anywhere else ("replicator-elsewhere") do not.
            if r.who == "replicator" {
                context
                    .entry("lambda:SourceFunctionArn".into())
                    .or_insert_with(|| json!(spec.function_arn()));
            }
            if r.who == "rotation" {
                context.entry("lambda:SourceFunctionArn".into()).or_insert_with(|| {
                    json!(spec.function_arn_of(deployer::spec::Duty::Rotate))
                });
            }
            Request {
                principal,
                action: r.action.to_owned(),
                resource: r.resource.clone(),
                account: ACCOUNT.to_owned(),
                context,
                identity_policies: identities,
                resource_policy,
                vpc_endpoint_policy: endpoint_policy.cloned(),
            }
        })
        .collect();
    let got = decide(&requests);
    let wrong: Vec<String> = rows
        .iter()
        .zip(&got)
        .filter(|(r, d)| r.want != **d)
        .map(|(r, d)| {
            format!(
                "{} {} on {} {:?}: expected {:?}, got {d:?}",
                r.who, r.action, r.resource, r.context, r.want
            )
        })
        .collect();
    assert!(wrong.is_empty(), "\n{}", wrong.join("\n"));
}

const EXTERNAL_KEEP: &str = "deploy_vault_on_ec2 = false\nexternal_vault_address = \"https://v:8200\"\nnotification_email = \"ops@example.com\"";

#[test]
fn the_replicator_writes_only_under_its_prefix_and_reads_only_its_connection() {
    let s = spec(EXTERNAL_KEEP);
    let conn = secret(&s.connection_secret());
    let topic = s.topic_arn();
    check(
        &s,
        &[
            row(
                "replicator",
                "secretsmanager:CreateSecret",
                secret("hybrid-aws-secrets/app/db"),
                Allowed,
            ),
            row(
                "replicator",
                "secretsmanager:PutSecretValue",
                secret("hybrid-aws-secrets/app/db"),
                Allowed,
            ),
            row(
                "replicator",
                "secretsmanager:TagResource",
                secret("hybrid-aws-secrets/app/db"),
                Allowed,
            ),
            row(
                "replicator",
                "secretsmanager:UpdateSecretVersionStage",
                secret("hybrid-aws-secrets/a"),
                Allowed,
            ),
            row(
                "replicator",
                "secretsmanager:RestoreSecret",
                secret("hybrid-aws-secrets/a"),
                Allowed,
            ),
            row(
                "replicator",
                "secretsmanager:DescribeSecret",
                secret("hybrid-aws-secrets/a"),
                Allowed,
            ),
            row("replicator", "secretsmanager:ListSecrets", "*", Allowed),
            // The ranged listing looks names up that may not exist: IAM then sees the name
            // without AWS's random suffix.
            row(
                "replicator",
                "secretsmanager:DescribeSecret",
                format!(
                    "arn:aws:secretsmanager:eu-west-1:{ACCOUNT}:secret:hybrid-aws-secrets/team"
                ),
                Allowed,
            ),
            // Outside the prefix, its own connection secret included: explicitly denied.
            row(
                "replicator",
                "secretsmanager:PutSecretValue",
                secret("other/app/db"),
                ExplicitlyDenied,
            ),
            row(
                "replicator",
                "secretsmanager:PutSecretValue",
                conn.clone(),
                ExplicitlyDenied,
            ),
            row(
                "replicator",
                "secretsmanager:CreateSecret",
                secret("hybrid-aws-secrets-other/x"),
                ExplicitlyDenied,
            ),
            // The keep policy: no deletion at all.
            row(
                "replicator",
                "secretsmanager:DeleteSecret",
                secret("hybrid-aws-secrets/a"),
                ImplicitlyDenied,
            ),
            // Values: only the connection secret, never a replica's.
            row(
                "replicator",
                "secretsmanager:GetSecretValue",
                conn.clone(),
                Allowed,
            ),
            row(
                "replicator",
                "secretsmanager:GetSecretValue",
                secret("hybrid-aws-secrets/a"),
                ExplicitlyDenied,
            ),
            row(
                "replicator",
                "secretsmanager:GetSecretValue",
                secret("prod/db"),
                ExplicitlyDenied,
            ),
            // The role's credentials taken out of the function, or used by another function,
            // do not read the connection.
            row(
                "replicator-elsewhere",
                "secretsmanager:GetSecretValue",
                conn.clone(),
                ExplicitlyDenied,
            ),
            row(
                "replicator",
                "secretsmanager:GetSecretValue",
                conn.clone(),
                ExplicitlyDenied,
            )
            .with(
                "lambda:SourceFunctionArn",
                json!("arn:aws:lambda:eu-west-1:123456789012:function:another"),
            ),
            // The connection secret's own policy: nobody else reads it, whatever their policy.
            row(
                "someone",
                "secretsmanager:GetSecretValue",
                conn,
                ExplicitlyDenied,
            ),
            row(
                "someone",
                "secretsmanager:GetSecretValue",
                secret("hybrid-aws-secrets/a"),
                Allowed,
            ),
            // The stack's key, and no other.
            row("replicator", "kms:Decrypt", KEY, Allowed).with("kms:ViaService", json!(VIA_SM)),
            row("replicator", "kms:GenerateDataKey", KEY, Allowed)
                .with("kms:ViaService", json!(VIA_SNS)),
            row("replicator", "kms:Decrypt", OTHER_KEY, ExplicitlyDenied)
                .with("kms:ViaService", json!(VIA_SM)),
            row(
                "replicator",
                "kms:ScheduleKeyDeletion",
                KEY,
                ImplicitlyDenied,
            ),
            // Its topic, and no other.
            row("replicator", "sns:Publish", topic, Allowed),
            row(
                "replicator",
                "sns:Publish",
                "arn:aws:sns:eu-west-1:123456789012:other",
                ExplicitlyDenied,
            ),
            // Nothing else.
            row(
                "replicator",
                "iam:PassRole",
                "arn:aws:iam::123456789012:role/admin",
                ImplicitlyDenied,
            ),
            row(
                "replicator",
                "ec2:CreateNetworkInterface",
                "arn:aws:ec2:eu-west-1:123456789012:network-interface/*",
                ImplicitlyDenied,
            ),
        ],
    );
}

const OURS: &str = "vault-secrets-replicator";

/// The rotation function's role rotates the connection secret (a new version, its stages, the
/// accessor tag) with the rotator's credential, and nothing else: no other secret, no other
/// write on that one, no other tag, no key use but through Secrets Manager; the replicator's
/// role still writes neither secret and never reads the rotator's; both secrets are read only
/// from inside their functions.
#[test]
fn the_rotation_role_rotates_its_one_secret_and_nothing_else() {
    let s = spec("vault_inbound_cidr = \"203.0.113.0/24\"\n");
    let conn = secret(&s.connection_secret());
    let rotator = secret(&s.rotator_secret());
    let replica = secret("hybrid-aws-secrets/app/db");
    let tls = secret("s-vault/tls");
    let keys = secret("s-vault/init-keys");
    let tag = |k: &str| ("aws:TagKeys", json!([k]));
    let accessor = contract::ACCESSOR_TAG;
    let mut rows = vec![];
    for action in [
        "secretsmanager:DescribeSecret",
        "secretsmanager:GetSecretValue",
        "secretsmanager:PutSecretValue",
        "secretsmanager:UpdateSecretVersionStage",
    ] {
        rows.push(row("rotation", action, conn.clone(), Allowed));
        // Never on a replica or the stack's other secrets.
        for other in [&replica, &tls, &keys] {
            let want = if action == "secretsmanager:DescribeSecret" {
                ImplicitlyDenied
            } else {
                ExplicitlyDenied
            };
            rows.push(row("rotation", action, other.clone(), want));
        }
    }
    rows.extend([
        row(
            "rotation",
            "secretsmanager:TagResource",
            conn.clone(),
            Allowed,
        )
        .with(tag(accessor).0, tag(accessor).1),
        // Another tag (the owner tag, a tag ABAC decides by) on it: denied.
        row(
            "rotation",
            "secretsmanager:TagResource",
            conn.clone(),
            ExplicitlyDenied,
        )
        .with("aws:TagKeys", json!(["managed-by"])),
        row(
            "rotation",
            "secretsmanager:TagResource",
            conn.clone(),
            ExplicitlyDenied,
        )
        .with("aws:TagKeys", json!([accessor, "team"])),
        row(
            "rotation",
            "secretsmanager:UntagResource",
            conn.clone(),
            ExplicitlyDenied,
        ),
        // No other write on the connection secret.
        row(
            "rotation",
            "secretsmanager:DeleteSecret",
            conn.clone(),
            ExplicitlyDenied,
        ),
        row(
            "rotation",
            "secretsmanager:PutResourcePolicy",
            conn.clone(),
            ExplicitlyDenied,
        ),
        row(
            "rotation",
            "secretsmanager:UpdateSecret",
            conn.clone(),
            ExplicitlyDenied,
        ),
        row(
            "rotation",
            "secretsmanager:RotateSecret",
            conn.clone(),
            ExplicitlyDenied,
        ),
        row(
            "rotation",
            "secretsmanager:CancelRotateSecret",
            conn.clone(),
            ExplicitlyDenied,
        ),
        row(
            "rotation",
            "secretsmanager:ReplicateSecretToRegions",
            conn.clone(),
            ExplicitlyDenied,
        ),
        // The rotator's credential: read by this role only, inside its function only.
        row(
            "rotation",
            "secretsmanager:GetSecretValue",
            rotator.clone(),
            Allowed,
        ),
        row(
            "rotation",
            "secretsmanager:PutSecretValue",
            rotator.clone(),
            ExplicitlyDenied,
        ),
        row(
            "rotation-elsewhere",
            "secretsmanager:GetSecretValue",
            rotator.clone(),
            ExplicitlyDenied,
        ),
        row(
            "rotation-elsewhere",
            "secretsmanager:GetSecretValue",
            conn.clone(),
            ExplicitlyDenied,
        ),
        // Its credentials taken out of the function cannot write the connection either (a
        // version naming another Vault, AWSCURRENT moved back, a tag).
        row(
            "rotation-elsewhere",
            "secretsmanager:PutSecretValue",
            conn.clone(),
            ExplicitlyDenied,
        ),
        row(
            "rotation-elsewhere",
            "secretsmanager:UpdateSecretVersionStage",
            conn.clone(),
            ExplicitlyDenied,
        ),
        row(
            "rotation-elsewhere",
            "secretsmanager:TagResource",
            conn.clone(),
            ExplicitlyDenied,
        )
        .with("aws:TagKeys", json!([accessor])),
        // The operator (vault-init) still writes it.
        row(
            "someone",
            "secretsmanager:PutSecretValue",
            conn.clone(),
            Allowed,
        ),
        row(
            "replicator",
            "secretsmanager:GetSecretValue",
            rotator.clone(),
            ExplicitlyDenied,
        ),
        row(
            "someone",
            "secretsmanager:GetSecretValue",
            rotator.clone(),
            ExplicitlyDenied,
        ),
        // The replicator still reads the connection and writes neither secret.
        row(
            "replicator",
            "secretsmanager:GetSecretValue",
            conn.clone(),
            Allowed,
        ),
        row(
            "replicator",
            "secretsmanager:PutSecretValue",
            conn.clone(),
            ExplicitlyDenied,
        ),
        row(
            "replicator",
            "secretsmanager:UpdateSecretVersionStage",
            conn.clone(),
            ExplicitlyDenied,
        ),
        row(
            "replicator",
            "secretsmanager:PutSecretValue",
            rotator.clone(),
            ExplicitlyDenied,
        ),
        // Nothing listed, nothing else read.
        row(
            "rotation",
            "secretsmanager:ListSecrets",
            "*",
            ImplicitlyDenied,
        ),
        row(
            "rotation",
            "secretsmanager:GetSecretValue",
            replica.clone(),
            ExplicitlyDenied,
        ),
        // The stack key through Secrets Manager only; no other key.
        row("rotation", "kms:Decrypt", KEY, Allowed).with("kms:ViaService", json!(VIA_SM)),
        row("rotation", "kms:GenerateDataKey", KEY, Allowed).with("kms:ViaService", json!(VIA_SM)),
        row("rotation", "kms:Decrypt", KEY, ExplicitlyDenied),
        row("rotation", "kms:Decrypt", KEY, ExplicitlyDenied)
            .with("kms:ViaService", json!(VIA_SNS)),
        row("rotation", "kms:Decrypt", OTHER_KEY, ImplicitlyDenied)
            .with("kms:ViaService", json!(VIA_SM)),
        // Its own logs and the VPC's interfaces; not the replicator's logs, no invocation.
        row(
            "rotation",
            "logs:PutLogEvents",
            format!(
                "{}:log-stream:x",
                s.log_group_arn_of(deployer::spec::Duty::Rotate)
            ),
            Allowed,
        ),
        row(
            "rotation",
            "logs:PutLogEvents",
            format!("{}:log-stream:x", s.log_group_arn()),
            ImplicitlyDenied,
        ),
        row(
            "replicator",
            "logs:PutLogEvents",
            format!(
                "{}:log-stream:x",
                s.log_group_arn_of(deployer::spec::Duty::Rotate)
            ),
            ImplicitlyDenied,
        ),
        row(
            "rotation",
            "lambda:InvokeFunction",
            s.function_arn(),
            ImplicitlyDenied,
        ),
        row(
            "rotation",
            "ec2:CreateNetworkInterface",
            format!("arn:aws:ec2:eu-west-1:{ACCOUNT}:network-interface/*"),
            Allowed,
        )
        .with("ec2:Vpc", json!(vpc_arn(VPC))),
    ]);
    check(&s, &rows);
    // With automatic rotation off there is no rotation role to read the connection.
    let off = spec("vault_inbound_cidr = \"203.0.113.0/24\"\nsecret_id_rotation_days = 0\n");
    check(
        &off,
        &[row(
            "rotation",
            "secretsmanager:GetSecretValue",
            secret(&off.connection_secret()),
            ExplicitlyDenied,
        )],
    );
}

#[test]
fn deletion_is_granted_only_under_the_delete_policy_and_only_on_its_own_replicas() {
    let s = spec(&format!("{EXTERNAL_KEEP}\ndeletion_policy = \"delete\""));
    let tagged = |r: Row, owner: &str| r.with("aws:ResourceTag/managed-by", json!(owner));
    check(
        &s,
        &[
            tagged(
                row(
                    "replicator",
                    "secretsmanager:DeleteSecret",
                    secret("hybrid-aws-secrets/a"),
                    Allowed,
                ),
                OURS,
            ),
            // Under the prefix but not the replicator's: another tool's, or nobody's.
            tagged(
                row(
                    "replicator",
                    "secretsmanager:DeleteSecret",
                    secret("hybrid-aws-secrets/b"),
                    ExplicitlyDenied,
                ),
                "terraform",
            ),
            row(
                "replicator",
                "secretsmanager:DeleteSecret",
                secret("hybrid-aws-secrets/c"),
                ImplicitlyDenied,
            ),
            tagged(
                row(
                    "replicator",
                    "secretsmanager:DeleteSecret",
                    secret("prod/db"),
                    ExplicitlyDenied,
                ),
                OURS,
            ),
            tagged(
                row(
                    "replicator",
                    "secretsmanager:DeleteSecret",
                    secret(&s.connection_secret()),
                    ExplicitlyDenied,
                ),
                OURS,
            ),
        ],
    );
}

#[test]
fn every_secrets_manager_write_is_denied_outside_the_prefix_and_the_owner_tag_is_guarded() {
    let s = spec(EXTERNAL_KEEP);
    let conn = secret(&s.connection_secret());
    let init_keys = secret("s-vault/init-keys");
    let mut rows = Vec::new();
    for action in deployer::spec::EVERY_SECRET_WRITE {
        for target in [
            conn.clone(),
            init_keys.clone(),
            secret("s-vault/tls"),
            secret("prod/db"),
        ] {
            rows.push(row("replicator", action, target, ExplicitlyDenied));
        }
    }
    rows.extend([
        // The description from Vault's metadata, never another KMS key.
        row(
            "replicator",
            "secretsmanager:UpdateSecret",
            secret("hybrid-aws-secrets/a"),
            Allowed,
        ),
        row(
            "replicator",
            "secretsmanager:UpdateSecret",
            secret("hybrid-aws-secrets/a"),
            ImplicitlyDenied,
        )
        .with("secretsmanager:KmsKeyId", json!(OTHER_KEY)),
        // Its own tags no longer wanted; replica regions removed.
        row(
            "replicator",
            "secretsmanager:UntagResource",
            secret("hybrid-aws-secrets/a"),
            Allowed,
        )
        .with("aws:TagKeys", json!(["team", "vault-tags"])),
        row(
            "replicator",
            "secretsmanager:RemoveRegionsFromReplication",
            secret("hybrid-aws-secrets/a"),
            Allowed,
        ),
        // Without replica regions configured, no replication at all.
        row(
            "replicator",
            "secretsmanager:ReplicateSecretToRegions",
            secret("hybrid-aws-secrets/a"),
            ExplicitlyDenied,
        )
        .with("secretsmanager:AddReplicaRegions", json!(["us-west-2"])),
        row(
            "replicator",
            "secretsmanager:CreateSecret",
            secret("hybrid-aws-secrets/a"),
            ExplicitlyDenied,
        )
        .with("secretsmanager:AddReplicaRegions", json!(["us-west-2"])),
        // Writes it never needs, under the prefix too.
        row(
            "replicator",
            "secretsmanager:PutResourcePolicy",
            secret("hybrid-aws-secrets/a"),
            ImplicitlyDenied,
        ),
        row(
            "replicator",
            "secretsmanager:RotateSecret",
            secret("hybrid-aws-secrets/a"),
            ImplicitlyDenied,
        ),
        // The owner tag: set to its own value (creating, adopting), never removed, never another.
        row(
            "replicator",
            "secretsmanager:TagResource",
            secret("hybrid-aws-secrets/a"),
            Allowed,
        )
        .with("aws:TagKeys", json!(["managed-by", "version"]))
        .with("aws:RequestTag/managed-by", json!(OURS)),
        row(
            "replicator",
            "secretsmanager:TagResource",
            secret("hybrid-aws-secrets/a"),
            Allowed,
        )
        .with("aws:TagKeys", json!(["version"])),
        row(
            "replicator",
            "secretsmanager:TagResource",
            secret("hybrid-aws-secrets/a"),
            ExplicitlyDenied,
        )
        .with("aws:TagKeys", json!(["managed-by"]))
        .with("aws:RequestTag/managed-by", json!("terraform")),
        row(
            "replicator",
            "secretsmanager:CreateSecret",
            secret("hybrid-aws-secrets/a"),
            ExplicitlyDenied,
        )
        .with("aws:TagKeys", json!(["managed-by"]))
        .with("aws:RequestTag/managed-by", json!("someone")),
        row(
            "replicator",
            "secretsmanager:UntagResource",
            secret("hybrid-aws-secrets/a"),
            ExplicitlyDenied,
        )
        .with("aws:TagKeys", json!(["managed-by"])),
        // Adopting an unowned secret: its owner tag set to this tool's.
        row(
            "replicator",
            "secretsmanager:TagResource",
            secret("hybrid-aws-secrets/unowned"),
            Allowed,
        )
        .with("aws:TagKeys", json!(["managed-by"]))
        .with("aws:RequestTag/managed-by", json!(OURS)),
        // Its own replicas, written on.
        row(
            "replicator",
            "secretsmanager:PutSecretValue",
            secret("hybrid-aws-secrets/a"),
            Allowed,
        )
        .with("aws:ResourceTag/managed-by", json!(OURS)),
    ]);
    // A secret under the prefix that another tool owns: no write at all, so no chain of them
    // (tag it as this tool's, then delete it; remove its replica regions; move its stages;
    // restore it after its owner deleted it).
    for action in deployer::spec::EVERY_SECRET_WRITE {
        rows.push(
            row(
                "replicator",
                action,
                secret("hybrid-aws-secrets/terraforms"),
                ExplicitlyDenied,
            )
            .with("aws:ResourceTag/managed-by", json!("terraform")),
        );
        // Another stack's connection secret, whose name this stack's prefix covers (its
        // prefix is below this one's: `hybrid-aws-secrets/payments`): the deployer's own tag.
        rows.push(
            row(
                "replicator",
                action,
                secret("hybrid-aws-secrets/payments-connection/vault"),
                ExplicitlyDenied,
            )
            .with(
                "aws:ResourceTag/managed-by",
                json!(deployer::resources::secret::OWNER_VALUE),
            ),
        );
    }
    check(&s, &rows);
}

#[test]
fn replication_goes_only_to_the_configured_regions_with_their_keys() {
    const REPLICA_KEY: &str = "arn:aws:kms:us-west-2:123456789012:key/r1";
    let s = spec(&format!(
        "{EXTERNAL_KEEP}\nreplica_regions = [\"us-west-2={REPLICA_KEY}\", \"ap-south-1\"]"
    ));
    let replicate = |regions: Value, target: &str, want| {
        row(
            "replicator",
            "secretsmanager:ReplicateSecretToRegions",
            secret(target),
            want,
        )
        .with("secretsmanager:AddReplicaRegions", regions)
    };
    let create = |regions: Value, want| {
        row(
            "replicator",
            "secretsmanager:CreateSecret",
            secret("hybrid-aws-secrets/a"),
            want,
        )
        .with("secretsmanager:AddReplicaRegions", regions)
    };
    let key = |resource: &str, via: &str, aliases: Value, want| {
        row("replicator", "kms:GenerateDataKey", resource, want)
            .with("kms:ViaService", json!(via))
            .with("kms:ResourceAliases", aliases)
    };
    check(
        &s,
        &[
            replicate(json!(["us-west-2"]), "hybrid-aws-secrets/a", Allowed),
            replicate(
                json!(["us-west-2", "ap-south-1"]),
                "hybrid-aws-secrets/a",
                Allowed,
            ),
            replicate(
                json!(["sa-east-1"]),
                "hybrid-aws-secrets/a",
                ExplicitlyDenied,
            ),
            replicate(
                json!(["us-west-2", "sa-east-1"]),
                "hybrid-aws-secrets/a",
                ExplicitlyDenied,
            ),
            replicate(json!(["us-west-2"]), "prod/db", ExplicitlyDenied),
            create(json!(["ap-south-1"]), Allowed),
            create(json!(["sa-east-1"]), ExplicitlyDenied),
            // The replica region's own key, through Secrets Manager only.
            key(
                REPLICA_KEY,
                "secretsmanager.us-west-2.amazonaws.com",
                json!([]),
                Allowed,
            ),
            key(
                REPLICA_KEY,
                "s3.us-west-2.amazonaws.com",
                json!([]),
                ImplicitlyDenied,
            ),
            key(
                "arn:aws:kms:us-west-2:123456789012:key/other",
                "secretsmanager.us-west-2.amazonaws.com",
                json!([]),
                ExplicitlyDenied,
            ),
            // A region without a key given: its aws/secretsmanager key is not denied (the
            // role needs no grant of its own: that key's policy allows the account through
            // Secrets Manager); any other key there is.
            key(
                "arn:aws:kms:ap-south-1:123456789012:key/default",
                "secretsmanager.ap-south-1.amazonaws.com",
                json!(["alias/aws/secretsmanager"]),
                ImplicitlyDenied,
            ),
            key(
                "arn:aws:kms:ap-south-1:123456789012:key/mine",
                "secretsmanager.ap-south-1.amazonaws.com",
                json!(["alias/mine"]),
                ExplicitlyDenied,
            ),
            key(
                "arn:aws:kms:sa-east-1:123456789012:key/default",
                "secretsmanager.sa-east-1.amazonaws.com",
                json!(["alias/aws/secretsmanager"]),
                ExplicitlyDenied,
            ),
            // The stack's own key is as before.
            via_sm(row("replicator", "kms:Decrypt", KEY, Allowed)),
        ],
    );
}

fn via_sm(r: Row) -> Row {
    r.with("kms:ViaService", json!(VIA_SM))
}

#[test]
fn vault_on_ec2_adds_only_the_lambda_network_interfaces() {
    let s = spec("vault_inbound_cidr = \"203.0.113.0/24\"");
    check(
        &s,
        &[
            // Its network interfaces, only in the stack's VPC.
            row(
                "replicator",
                "ec2:CreateNetworkInterface",
                "arn:aws:ec2:eu-west-1:123456789012:network-interface/*",
                Allowed,
            )
            .with("ec2:Vpc", json!(vpc_arn(VPC))),
            row(
                "replicator",
                "ec2:CreateNetworkInterface",
                "arn:aws:ec2:eu-west-1:123456789012:subnet/subnet-1",
                Allowed,
            )
            .with("ec2:Vpc", json!(vpc_arn(VPC))),
            row(
                "replicator",
                "ec2:DeleteNetworkInterface",
                "arn:aws:ec2:eu-west-1:123456789012:network-interface/eni-1",
                Allowed,
            )
            .with("ec2:Vpc", json!(vpc_arn(VPC))),
            row(
                "replicator",
                "ec2:CreateNetworkInterface",
                "arn:aws:ec2:eu-west-1:123456789012:network-interface/*",
                ImplicitlyDenied,
            )
            .with("ec2:Vpc", json!(vpc_arn("vpc-0ther"))),
            row(
                "replicator",
                "ec2:DeleteNetworkInterface",
                "arn:aws:ec2:eu-west-1:123456789012:network-interface/eni-2",
                ImplicitlyDenied,
            )
            .with("ec2:Vpc", json!(vpc_arn("vpc-0ther"))),
            row("replicator", "ec2:DescribeNetworkInterfaces", "*", Allowed),
            row(
                "replicator",
                "ec2:RunInstances",
                "arn:aws:ec2:eu-west-1:123456789012:instance/*",
                ImplicitlyDenied,
            ),
            // No email: no topic at all.
            row(
                "replicator",
                "sns:Publish",
                "arn:aws:sns:eu-west-1:123456789012:s-replicator-failures",
                ImplicitlyDenied,
            ),
            // The change watcher's function (the same role) reads the connection too, and
            // writes its own logs.
            row(
                "replicator",
                "secretsmanager:GetSecretValue",
                secret(&s.connection_secret()),
                Allowed,
            )
            .with(
                "lambda:SourceFunctionArn",
                json!(s.function_arn_of(deployer::spec::Duty::Watch)),
            ),
            row(
                "replicator",
                "logs:PutLogEvents",
                format!(
                    "{}:log-stream:x",
                    s.log_group_arn_of(deployer::spec::Duty::Watch)
                ),
                Allowed,
            ),
        ],
    );
    // Without the stack's Vault there is no watcher's function: its name reads nothing.
    let external = spec(EXTERNAL_KEEP);
    check(
        &external,
        &[row(
            "replicator",
            "secretsmanager:GetSecretValue",
            secret(&external.connection_secret()),
            ExplicitlyDenied,
        )
        .with(
            "lambda:SourceFunctionArn",
            json!(external.function_arn_of(deployer::spec::Duty::Watch)),
        )],
    );
}

#[test]
fn the_key_is_administered_by_the_account_and_used_only_through_its_services() {
    let via = |r: Row, service: &str| r.with("kms:ViaService", json!(service));
    for extra in [EXTERNAL_KEEP, "vault_inbound_cidr = \"203.0.113.0/24\""] {
        let s = spec(extra);
        check(
            &s,
            &[
                // The replicator: through Secrets Manager and SNS, never directly.
                via(row("replicator", "kms:Decrypt", KEY, Allowed), VIA_SM),
                via(
                    row("replicator", "kms:GenerateDataKey", KEY, Allowed),
                    VIA_SM,
                ),
                via(
                    row("replicator", "kms:GenerateDataKey", KEY, Allowed),
                    VIA_SNS,
                ),
                row("replicator", "kms:Decrypt", KEY, ExplicitlyDenied),
                row("replicator", "kms:GenerateDataKey", KEY, ExplicitlyDenied),
                via(
                    row("replicator", "kms:Decrypt", KEY, ExplicitlyDenied),
                    "s3.eu-west-1.amazonaws.com",
                ),
                via(
                    row("replicator", "kms:CreateGrant", KEY, ImplicitlyDenied),
                    VIA_SM,
                ),
                // An administrator (allowed everything by IAM) administers the key...
                row("someone", "kms:ScheduleKeyDeletion", KEY, Allowed),
                row("someone", "kms:PutKeyPolicy", KEY, Allowed),
                row("someone", "kms:DescribeKey", KEY, Allowed),
                row("someone", "kms:EnableKeyRotation", KEY, Allowed),
                // ...but uses it only where a service's own permissions decide: reading a
                // replica through Secrets Manager (its GetSecretValue permission), and Lambda
                // encrypting the function's environment while `up` sets it.
                row("someone", "kms:Decrypt", KEY, ImplicitlyDenied),
                row("someone", "kms:Encrypt", KEY, ImplicitlyDenied),
                row("someone", "kms:ReEncryptFrom", KEY, ImplicitlyDenied),
                row("someone", "kms:CreateGrant", KEY, ImplicitlyDenied),
                via(row("someone", "kms:Decrypt", KEY, Allowed), VIA_SM),
                via(row("someone", "kms:Encrypt", KEY, Allowed), VIA_LAMBDA),
                via(row("someone", "kms:CreateGrant", KEY, Allowed), VIA_LAMBDA),
                // Publishing to the encrypted topic is the replicator's alone.
                via(
                    row("someone", "kms:GenerateDataKey", KEY, ImplicitlyDenied),
                    VIA_SNS,
                ),
                // Another account, even through Secrets Manager: no.
                via(row("someone", "kms:Decrypt", KEY, ImplicitlyDenied), VIA_SM)
                    .with("kms:CallerAccount", json!("999999999999")),
                // The Vault CA parameter (a SecureString under the key): written and read by
                // those IAM lets use the key, through SSM, for that one parameter; not by a
                // principal that may only write SSM parameters.
                via(row("someone", "kms:Encrypt", KEY, Allowed), VIA_SSM)
                    .with("kms:EncryptionContext:PARAMETER_ARN", json!(CA_PARAMETER)),
                via(row("someone", "kms:Decrypt", KEY, Allowed), VIA_SSM)
                    .with("kms:EncryptionContext:PARAMETER_ARN", json!(CA_PARAMETER)),
                via(
                    row("ssm-writer", "kms:Encrypt", KEY, ImplicitlyDenied),
                    VIA_SSM,
                )
                .with("kms:EncryptionContext:PARAMETER_ARN", json!(CA_PARAMETER)),
                // The digest of the watcher's code, kept the same way: whoever may only write
                // SSM parameters (or update the function's code) cannot write it.
                via(row("someone", "kms:Encrypt", KEY, Allowed), VIA_SSM).with(
                    "kms:EncryptionContext:PARAMETER_ARN",
                    json!(s.watcher_digest_parameter_arn()),
                ),
                via(
                    row("ssm-writer", "kms:Encrypt", KEY, ImplicitlyDenied),
                    VIA_SSM,
                )
                .with(
                    "kms:EncryptionContext:PARAMETER_ARN",
                    json!(s.watcher_digest_parameter_arn()),
                ),
                via(
                    row("someone", "kms:Encrypt", KEY, ImplicitlyDenied),
                    VIA_SSM,
                )
                .with(
                    "kms:EncryptionContext:PARAMETER_ARN",
                    json!("arn:aws:ssm:eu-west-1:123456789012:parameter/other"),
                ),
                via(
                    row("replicator", "kms:Encrypt", KEY, ExplicitlyDenied),
                    VIA_SSM,
                )
                .with("kms:EncryptionContext:PARAMETER_ARN", json!(CA_PARAMETER)),
                // SNS acting as itself has no grant.
                row("sns-service", "kms:GenerateDataKey", KEY, ImplicitlyDenied)
                    .with("aws:SourceAccount", json!(ACCOUNT)),
                row("sns-service", "kms:Decrypt", KEY, ImplicitlyDenied)
                    .with("aws:SourceAccount", json!(ACCOUNT)),
            ],
        );
    }
}

#[test]
fn the_china_partition_names_its_services_with_its_own_domain() {
    let s = e2e::deploy::spec(EXTERNAL_KEEP, "aws-cn");
    let key = s.key_policy().unwrap().to_string();
    let role = s.replicator_policy(KEY, Some(VPC)).unwrap().to_string();
    for doc in [&key, &role] {
        assert!(
            doc.contains("secretsmanager.eu-west-1.amazonaws.com.cn"),
            "{doc}"
        );
        assert!(!doc.contains("amazonaws.com\""), "{doc}");
    }
    assert!(key.contains("arn:aws-cn:iam::123456789012:root"), "{key}");
}

#[test]
fn only_the_stacks_secrets_pass_through_its_secrets_manager_endpoint() {
    let s = spec("vault_inbound_cidr = \"203.0.113.0/24\"");
    let endpoint = s.secretsmanager_endpoint_policy().unwrap();
    let conn = secret(&s.connection_secret());
    let tls = secret(&s.tls_secret_name());
    check_through(
        &s,
        &[
            // What the replicator does through it.
            row(
                "replicator",
                "secretsmanager:GetSecretValue",
                conn.clone(),
                Allowed,
            ),
            row("replicator", "secretsmanager:ListSecrets", "*", Allowed),
            row(
                "replicator",
                "secretsmanager:CreateSecret",
                format!(
                    "arn:aws:secretsmanager:eu-west-1:{ACCOUNT}:secret:hybrid-aws-secrets/app/db"
                ),
                Allowed,
            ),
            row(
                "replicator",
                "secretsmanager:PutSecretValue",
                secret("hybrid-aws-secrets/app/db"),
                Allowed,
            ),
            // The Vault instance fetching its TLS key at boot (here: anyone IAM allows).
            row("someone", "secretsmanager:GetSecretValue", tls, Allowed),
            // Any other secret of the account, even for a principal IAM allows everything.
            row(
                "someone",
                "secretsmanager:GetSecretValue",
                secret("prod/db"),
                ImplicitlyDenied,
            ),
            row(
                "someone",
                "secretsmanager:PutSecretValue",
                secret("prod/db"),
                ImplicitlyDenied,
            ),
            // Another account's credentials, even on the stack's names.
            row(
                "someone",
                "secretsmanager:GetSecretValue",
                secret("hybrid-aws-secrets/app/db"),
                ImplicitlyDenied,
            )
            .with("aws:PrincipalAccount", json!("999999999999")),
            row(
                "someone",
                "secretsmanager:ListSecrets",
                "*",
                ImplicitlyDenied,
            )
            .with("aws:PrincipalAccount", json!("999999999999")),
        ],
        Some(&endpoint),
    );
}

/// The Vault instance's role, as IAM decides with the key policy: its change watcher sends paths
/// to the watcher's function (never the sync function, whose one reserved slot the schedule
/// keeps), reads that function's code and the digest `up` wrote (which it cannot write), sends
/// a failed run's notice to the stack's topic; its one key is the stack's, and nothing else.
#[test]
fn the_vault_instance_invokes_only_the_watchers_function_and_reads_only_its_digest() {
    let s =
        spec("vault_inbound_cidr = \"203.0.113.0/24\"\nnotification_email = \"ops@example.com\"\n");
    let quiet = spec("vault_inbound_cidr = \"203.0.113.0/24\"\n");
    let instance = s.vault_instance_role_arn();
    let watch = s.function_arn_of(deployer::spec::Duty::Watch);
    let sync = s.function_arn();
    let digest = s.watcher_digest_parameter_arn();
    let other_function = format!("arn:aws:lambda:eu-west-1:{ACCOUNT}:function:someone-elses");
    // A key someone made to slip in a digest of their own: its policy lets anyone decrypt.
    let open_key = json!({"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Principal": {"AWS": "*"}, "Action": "kms:*", "Resource": "*"
    }]});
    let via = |service: &str, context: Option<&str>| {
        let mut c = vec![("kms:ViaService", json!(service))];
        if let Some(arn) = context {
            c.push(("kms:EncryptionContext:PARAMETER_ARN", json!(arn)));
        }
        c
    };
    type Case<'a> = (
        &'a Spec,
        &'static str,
        String,
        Vec<(&'static str, Value)>,
        Decision,
    );
    let cases: Vec<Case<'_>> = vec![
        (&s, "lambda:InvokeFunction", watch.clone(), vec![], Allowed),
        (&s, "lambda:GetFunction", watch.clone(), vec![], Allowed),
        // The sync function is not the instance's: a flood of invocations never takes the
        // schedule's slot, and its configuration is not read.
        (
            &s,
            "lambda:InvokeFunction",
            sync.clone(),
            vec![],
            ImplicitlyDenied,
        ),
        (
            &s,
            "lambda:GetFunction",
            sync.clone(),
            vec![],
            ImplicitlyDenied,
        ),
        (
            &s,
            "lambda:GetFunctionConfiguration",
            sync.clone(),
            vec![],
            ImplicitlyDenied,
        ),
        (
            &s,
            "lambda:InvokeFunction",
            other_function.clone(),
            vec![],
            ImplicitlyDenied,
        ),
        (
            &s,
            "lambda:GetFunction",
            other_function,
            vec![],
            ImplicitlyDenied,
        ),
        // Nothing of the watcher's function changes: not its code, not its reserved slot.
        (
            &s,
            "lambda:UpdateFunctionCode",
            watch.clone(),
            vec![],
            ImplicitlyDenied,
        ),
        (
            &s,
            "lambda:UpdateFunctionConfiguration",
            watch.clone(),
            vec![],
            ImplicitlyDenied,
        ),
        (
            &s,
            "lambda:DeleteFunctionConcurrency",
            watch.clone(),
            vec![],
            ImplicitlyDenied,
        ),
        (&s, "lambda:AddPermission", watch, vec![], ImplicitlyDenied),
        // The digest: read and decrypted, never written; no other parameter.
        (&s, "ssm:GetParameter", digest.clone(), vec![], Allowed),
        (
            &s,
            "ssm:PutParameter",
            digest.clone(),
            vec![],
            ImplicitlyDenied,
        ),
        (
            &s,
            "ssm:GetParameter",
            CA_PARAMETER.to_owned(),
            vec![],
            ImplicitlyDenied,
        ),
        (
            &s,
            "kms:Decrypt",
            KEY.to_owned(),
            via(VIA_SSM, Some(&digest)),
            Allowed,
        ),
        (
            &s,
            "kms:Encrypt",
            KEY.to_owned(),
            via(VIA_SSM, Some(&digest)),
            ImplicitlyDenied,
        ),
        (
            &s,
            "kms:GenerateDataKey",
            KEY.to_owned(),
            via(VIA_SSM, Some(&digest)),
            ImplicitlyDenied,
        ),
        (
            &s,
            "kms:Decrypt",
            KEY.to_owned(),
            via(VIA_SSM, Some(CA_PARAMETER)),
            ImplicitlyDenied,
        ),
        (
            &s,
            "kms:Decrypt",
            OTHER_KEY.to_owned(),
            via(VIA_SSM, Some(&digest)),
            ExplicitlyDenied,
        ),
        // Its TLS key, through Secrets Manager; no other secret.
        (
            &s,
            "kms:Decrypt",
            KEY.to_owned(),
            via(VIA_SM, None),
            Allowed,
        ),
        // Its TLS key in the instance's first hour (its boot script reads it once), and not
        // after: the change watcher, or anything else on the instance, cannot read it later.
        (
            &s,
            "secretsmanager:GetSecretValue",
            secret(&s.tls_secret_name()),
            vec![("aws:CurrentTime", json!("2026-12-05T08:20:00Z"))],
            Allowed,
        ),
        (
            &s,
            "secretsmanager:GetSecretValue",
            secret(&s.tls_secret_name()),
            vec![("aws:CurrentTime", json!("2026-12-05T09:00:01Z"))],
            ExplicitlyDenied,
        ),
        (
            &s,
            "secretsmanager:GetSecretValue",
            secret(&s.connection_secret()),
            vec![],
            ImplicitlyDenied,
        ),
        (
            &s,
            "secretsmanager:GetSecretValue",
            secret("hybrid-aws-secrets/app"),
            vec![],
            ImplicitlyDenied,
        ),
        (
            &s,
            "secretsmanager:PutSecretValue",
            secret("hybrid-aws-secrets/app"),
            vec![],
            ImplicitlyDenied,
        ),
        // A failed run's notice: to the stack's encrypted topic only, and none without one.
        (&s, "sns:Publish", s.topic_arn(), vec![], Allowed),
        (
            &s,
            "kms:GenerateDataKey",
            KEY.to_owned(),
            via(VIA_SNS, None),
            Allowed,
        ),
        (
            &s,
            "sns:Publish",
            format!("arn:aws:sns:eu-west-1:{ACCOUNT}:other"),
            vec![],
            ExplicitlyDenied,
        ),
        (
            &quiet,
            "sns:Publish",
            quiet.topic_arn(),
            vec![],
            ImplicitlyDenied,
        ),
        // The watcher's liveness and disk: in its stack's host namespace only, never the
        // runs' (a host putting `FullSyncsSucceeded` would hide a failing sync from its
        // alarm) nor another stack's (it would quiet that stack's watcher alarm).
        (
            &s,
            "cloudwatch:PutMetricData",
            "*".to_owned(),
            vec![(
                "cloudwatch:namespace",
                json!(format!("VaultSecretsReplicator/Host/{}", s.stack())),
            )],
            Allowed,
        ),
        (
            &s,
            "cloudwatch:PutMetricData",
            "*".to_owned(),
            vec![(
                "cloudwatch:namespace",
                json!("VaultSecretsReplicator/Host/another-stack"),
            )],
            ImplicitlyDenied,
        ),
        (
            &s,
            "cloudwatch:PutMetricData",
            "*".to_owned(),
            vec![("cloudwatch:namespace", json!("VaultSecretsReplicator"))],
            ImplicitlyDenied,
        ),
        (
            &s,
            "cloudwatch:PutMetricAlarm",
            format!("arn:aws:cloudwatch:eu-west-1:{ACCOUNT}:alarm:s-watcher-silent"),
            vec![],
            ImplicitlyDenied,
        ),
    ];
    let requests: Vec<Request> = cases
        .iter()
        .map(|(spec, action, resource, extra, _)| {
            let mut context = BTreeMap::from([
                ("aws:PrincipalArn".to_owned(), json!(instance)),
                ("aws:PrincipalAccount".to_owned(), json!(ACCOUNT)),
            ]);
            if action.starts_with("kms:") {
                context.insert("kms:CallerAccount".to_owned(), json!(ACCOUNT));
            }
            for (k, v) in extra {
                context.insert((*k).to_owned(), v.clone());
            }
            Request {
                principal: instance.clone(),
                action: (*action).to_owned(),
                resource: resource.clone(),
                account: ACCOUNT.to_owned(),
                context,
                identity_policies: vec![spec.vault_instance_policy(KEY).unwrap()],
                resource_policy: match resource.as_str() {
                    KEY => Some(spec.key_policy().unwrap()),
                    OTHER_KEY => Some(open_key.clone()),
                    r if *r == secret(&spec.tls_secret_name()) => Some(
                        spec.tls_secret_policy(Some("2026-12-05T09:00:00Z"))
                            .unwrap(),
                    ),
                    _ => None,
                },
                vpc_endpoint_policy: None,
            }
        })
        .collect();
    let got = decide(&requests);
    let wrong: Vec<String> = cases
        .iter()
        .zip(got)
        .filter(|(c, got)| c.4 != *got)
        .map(|(c, got)| {
            format!(
                "{} on {} {:?}: expected {:?}, got {got:?}",
                c.1, c.2, c.3, c.4
            )
        })
        .collect();
    assert!(wrong.is_empty(), "\n{}", wrong.join("\n"));
}

/// The one-reader policy of the stack's key secrets: the Vault TLS key is read by the instance
/// role alone (in the instance's first hour), the unseal keys by whoever ran `vault-init`;
/// everyone else is denied explicitly, even with every permission of their own: an
/// administrator of the account, the replicator's role, another account. (Implicitly denied
/// would mean an administrator's own Allow reads them.)
#[test]
fn the_keys_secrets_are_read_by_their_one_reader_and_denied_to_everyone_else() {
    let s = spec("vault_inbound_cidr = \"203.0.113.0/24\"");
    let instance = s.vault_instance_role_arn();
    let operator = format!("arn:aws:iam::{ACCOUNT}:role/platform-admin");
    let tls = secret(&s.tls_secret_name());
    let keys = secret(&s.init_keys_secret_name());
    let tls_policy = s.tls_secret_policy(Some("2026-12-05T09:00:00Z")).unwrap();
    let keys_policy = s.init_keys_policy(&operator).unwrap();
    let others = [
        format!("arn:aws:iam::{ACCOUNT}:root"),
        format!("arn:aws:iam::{ACCOUNT}:role/AWSReservedSSO_AdministratorAccess_0f1e2d3c"),
        format!("arn:aws:iam::{ACCOUNT}:role/s-replicator"),
        "arn:aws:iam::210987654321:root".to_owned(),
    ];
    let ask = |who: &str, resource: &str, policy: &Value, admin: bool| Request {
        principal: who.to_owned(),
        action: "secretsmanager:GetSecretValue".into(),
        resource: resource.to_owned(),
        account: ACCOUNT.to_owned(),
        context: BTreeMap::from([
            ("aws:PrincipalArn".to_owned(), json!(who)),
            (
                "aws:PrincipalAccount".to_owned(),
                json!(who.split(':').nth(4).unwrap()),
            ),
            ("aws:CurrentTime".to_owned(), json!("2026-12-05T08:30:00Z")),
        ]),
        identity_policies: if admin { vec![allow_all()] } else { vec![] },
        resource_policy: Some(policy.clone()),
        vpc_endpoint_policy: None,
    };
    let mut requests = vec![
        ask(&instance, &tls, &tls_policy, false),
        ask(&operator, &keys, &keys_policy, false),
    ];
    let mut want = vec![Allowed, Allowed];
    for other in &others {
        requests.push(ask(other, &tls, &tls_policy, true));
        requests.push(ask(other, &keys, &keys_policy, true));
        want.extend([ExplicitlyDenied, ExplicitlyDenied]);
    }
    // Each reader, the other's secret: denied too.
    requests.push(ask(&operator, &tls, &tls_policy, true));
    requests.push(ask(&instance, &keys, &keys_policy, true));
    want.extend([ExplicitlyDenied, ExplicitlyDenied]);
    let got = decide(&requests);
    for ((r, got), want) in requests.iter().zip(&got).zip(&want) {
        assert_eq!(got, want, "{} reading {}", r.principal, r.resource);
    }
}

#[test]
fn the_replicas_policy_is_put_only_on_its_own_replicas_never_public_and_removed_only_where_it_put_one()
 {
    let dir = tempfile::tempdir().unwrap();
    let file = e2e::deploy::replica_policy_file(dir.path());
    let with = spec(&format!(
        "{EXTERNAL_KEEP}\nresource_policy = \"{}\"",
        file.display()
    ));
    let without = spec(EXTERNAL_KEEP);
    let owned = |r: Row, owner: &str| r.with("aws:ResourceTag/managed-by", json!(owner));
    let put = |name: &str, block: bool, want| {
        owned(
            row(
                "replicator",
                "secretsmanager:PutResourcePolicy",
                secret(name),
                want,
            ),
            OURS,
        )
        .with("secretsmanager:BlockPublicPolicy", json!(block.to_string()))
    };
    let delete = |name: &str, tagged: bool, want| {
        let r = owned(
            row(
                "replicator",
                "secretsmanager:DeleteResourcePolicy",
                secret(name),
                want,
            ),
            OURS,
        );
        if tagged {
            r.with("aws:ResourceTag/resource-policy", json!("digest"))
        } else {
            r
        }
    };
    check(
        &with,
        &[
            put("hybrid-aws-secrets/a", true, Allowed),
            // Only with BlockPublicPolicy: AWS then refuses a policy that would make it public.
            put("hybrid-aws-secrets/a", false, ImplicitlyDenied),
            // Never on a secret another tool owns, nor outside the prefix, nor on the stack's
            // own secrets.
            owned(
                row(
                    "replicator",
                    "secretsmanager:PutResourcePolicy",
                    secret("hybrid-aws-secrets/b"),
                    ExplicitlyDenied,
                ),
                "terraform",
            )
            .with("secretsmanager:BlockPublicPolicy", json!("true")),
            row(
                "replicator",
                "secretsmanager:PutResourcePolicy",
                secret("hybrid-aws-secrets/nobodys"),
                ImplicitlyDenied,
            )
            .with("secretsmanager:BlockPublicPolicy", json!("true")),
            put("prod/db", true, ExplicitlyDenied),
            put(&with.connection_secret(), true, ExplicitlyDenied),
            owned(
                row(
                    "replicator",
                    "secretsmanager:GetResourcePolicy",
                    secret("hybrid-aws-secrets/a"),
                    Allowed,
                ),
                OURS,
            ),
            delete("hybrid-aws-secrets/a", true, Allowed),
            // A policy it never put (no tag of its own) stays.
            delete("hybrid-aws-secrets/a", false, ImplicitlyDenied),
            delete("prod/db", true, ExplicitlyDenied),
        ],
    );
    // Without a policy configured: none is put or read; one it put can still be taken off.
    check(
        &without,
        &[
            put("hybrid-aws-secrets/a", true, ImplicitlyDenied),
            owned(
                row(
                    "replicator",
                    "secretsmanager:GetResourcePolicy",
                    secret("hybrid-aws-secrets/a"),
                    ImplicitlyDenied,
                ),
                OURS,
            ),
            delete("hybrid-aws-secrets/a", true, Allowed),
            delete("hybrid-aws-secrets/a", false, ImplicitlyDenied),
        ],
    );
}

#[test]
fn with_replicas_in_another_account_the_role_assumes_that_role_only_and_writes_nothing_at_home() {
    const TARGET_ROLE: &str = "arn:aws:iam::222222222222:role/team-replicas";
    let s = spec(&format!(
        "{EXTERNAL_KEEP}\ndeletion_policy = \"delete\"\naccount_role_arn = \"{TARGET_ROLE}\"\nexternal_id = \"ext-1\""
    ));
    let ours = |r: Row| r.with("aws:ResourceTag/managed-by", json!(OURS));
    check(
        &s,
        &[
            row("replicator", "sts:AssumeRole", TARGET_ROLE, Allowed),
            row(
                "replicator",
                "sts:AssumeRole",
                "arn:aws:iam::222222222222:role/admin",
                ExplicitlyDenied,
            ),
            row(
                "replicator",
                "sts:AssumeRole",
                format!("arn:aws:iam::{ACCOUNT}:role/team-replicas"),
                ExplicitlyDenied,
            ),
            // Nothing under the prefix in its own account, even what it owns.
            ours(row(
                "replicator",
                "secretsmanager:PutSecretValue",
                secret("hybrid-aws-secrets/a"),
                ImplicitlyDenied,
            )),
            ours(row(
                "replicator",
                "secretsmanager:CreateSecret",
                secret("hybrid-aws-secrets/a"),
                ImplicitlyDenied,
            )),
            ours(row(
                "replicator",
                "secretsmanager:DeleteSecret",
                secret("hybrid-aws-secrets/a"),
                ImplicitlyDenied,
            )),
            // It still reads its connection, at home.
            row(
                "replicator",
                "secretsmanager:GetSecretValue",
                secret(&s.connection_secret()),
                Allowed,
            ),
        ],
    );
    // Without the key, no role at all.
    check(
        &spec(EXTERNAL_KEEP),
        &[row(
            "replicator",
            "sts:AssumeRole",
            TARGET_ROLE,
            ImplicitlyDenied,
        )],
    );
}

#[test]
fn with_rules_each_home_rule_writes_only_its_prefix_as_it_says_and_the_functions_role_writes_nothing()
 {
    const TEAM_ROLE: &str = "arn:aws:iam::222222222222:role/team-replicas";
    let s = spec(&format!(
        "{EXTERNAL_KEEP}\n[[sync]]\nname = \"payments\"\nprefix = \"pay\"\nmount = \"kv\"\npath = \"payments\"\ndeletion_policy = \"delete\"\n\
         [[sync]]\nname = \"web\"\nprefix = \"web\"\nreplica_regions = [\"us-east-1\"]\n\
         [[sync]]\nname = \"team\"\nprefix = \"team\"\naccount_role_arn = \"{TEAM_ROLE}\"\nexternal_id = \"ext-1\""
    ));
    let rule_role = |name: &str| {
        format!("arn:aws:iam::{ACCOUNT}:role/vault-secrets-replicator/{STACK}/{STACK}.sync.{name}")
    };
    let ours = |r: Row| r.with("aws:ResourceTag/managed-by", json!(OURS));
    let regions = |r: Row, list: &[&str]| r.with("secretsmanager:AddReplicaRegions", json!(list));
    let via_key = |r: Row| {
        r.with(
            "kms:ViaService",
            json!("secretsmanager.eu-west-1.amazonaws.com"),
        )
        .with(
            "kms:ResourceAliases",
            json!(["alias/hybrid-aws-secrets-encryption-key"]),
        )
    };
    let mut rows = vec![
        // The function's role writes no secret: not a rule's prefix, not the top level's,
        // nothing else; it assumes exactly the rules' roles.
        row(
            "replicator",
            "sts:AssumeRole",
            rule_role("payments"),
            Allowed,
        ),
        row("replicator", "sts:AssumeRole", rule_role("web"), Allowed),
        row("replicator", "sts:AssumeRole", TEAM_ROLE, Allowed),
        row(
            "replicator",
            "sts:AssumeRole",
            rule_role("other"),
            ExplicitlyDenied,
        ),
        row(
            "replicator",
            "sts:AssumeRole",
            "arn:aws:iam::333333333333:role/team-replicas",
            ExplicitlyDenied,
        ),
        // A rule's role goes on to no other role.
        row(
            "rule:payments",
            "sts:AssumeRole",
            rule_role("web"),
            ImplicitlyDenied,
        ),
        // The payments rule: its prefix, deleting its own replicas, no region.
        row(
            "rule:payments",
            "secretsmanager:CreateSecret",
            secret("pay/a"),
            Allowed,
        ),
        ours(row(
            "rule:payments",
            "secretsmanager:DeleteSecret",
            secret("pay/a"),
            Allowed,
        )),
        regions(
            row(
                "rule:payments",
                "secretsmanager:CreateSecret",
                secret("pay/a"),
                ExplicitlyDenied,
            ),
            &["us-east-1"],
        ),
        regions(
            row(
                "rule:payments",
                "secretsmanager:ReplicateSecretToRegions",
                secret("pay/a"),
                ExplicitlyDenied,
            ),
            &["us-east-1"],
        ),
        // The web rule: its prefix, its region only, no delete.
        ours(row(
            "rule:web",
            "secretsmanager:PutSecretValue",
            secret("web/a"),
            Allowed,
        )),
        ours(row(
            "rule:web",
            "secretsmanager:DeleteSecret",
            secret("web/a"),
            ImplicitlyDenied,
        )),
        regions(
            row(
                "rule:web",
                "secretsmanager:CreateSecret",
                secret("web/a"),
                Allowed,
            ),
            &["us-east-1"],
        ),
        regions(
            row(
                "rule:web",
                "secretsmanager:ReplicateSecretToRegions",
                secret("web/a"),
                Allowed,
            ),
            &["us-east-1"],
        ),
        regions(
            row(
                "rule:web",
                "secretsmanager:ReplicateSecretToRegions",
                secret("web/a"),
                ExplicitlyDenied,
            ),
            &["eu-central-1"],
        ),
        // No rule's values, not even its own replicas'.
        ours(row(
            "rule:web",
            "secretsmanager:GetSecretValue",
            secret("web/a"),
            ExplicitlyDenied,
        )),
        // The stack's key through Secrets Manager; no other key.
        via_key(row("rule:web", "kms:GenerateDataKey", KEY, Allowed)),
        via_key(row(
            "rule:web",
            "kms:GenerateDataKey",
            "arn:aws:kms:eu-west-1:123456789012:key/other",
            ExplicitlyDenied,
        ))
        .with("kms:ResourceAliases", json!(["alias/other"])),
    ];
    // A region without a key given: its aws/secretsmanager key is left to that key's policy
    // (not denied); any other key there is.
    let default_key = |resource: &'static str, aliases: Value, want| {
        row("rule:web", "kms:GenerateDataKey", resource, want)
            .with(
                "kms:ViaService",
                json!("secretsmanager.us-east-1.amazonaws.com"),
            )
            .with("kms:ResourceAliases", aliases)
    };
    rows.extend([
        default_key(
            "arn:aws:kms:us-east-1:123456789012:key/default",
            json!(["alias/aws/secretsmanager"]),
            ImplicitlyDenied,
        ),
        default_key(
            "arn:aws:kms:us-east-1:123456789012:key/mine",
            json!(["alias/mine"]),
            ExplicitlyDenied,
        ),
        default_key(
            "arn:aws:kms:ap-south-1:123456789012:key/default",
            json!(["alias/aws/secretsmanager"]),
            ExplicitlyDenied,
        ),
    ]);
    // Each of the function's role and the rules' roles: nothing outside its own prefix, in
    // the stack's account (the team rule's prefix is written in the other account only).
    for who in ["replicator", "rule:payments", "rule:web"] {
        for prefix in ["pay", "web", "team", "hybrid-aws-secrets", "other"] {
            let own = matches!(
                (who, prefix),
                ("rule:payments", "pay") | ("rule:web", "web")
            );
            for action in [
                "secretsmanager:CreateSecret",
                "secretsmanager:PutSecretValue",
            ] {
                rows.push(ours(row(
                    who,
                    action,
                    secret(&format!("{prefix}/a")),
                    if own { Allowed } else { ExplicitlyDenied },
                )));
            }
        }
    }
    check(&s, &rows);
}

/// Nested prefixes: the outer rule's role may write under the inner rule's prefix by name, but
/// never a replica the inner rule's tag names, nor name the inner rule, nor remove the tag.
#[test]
fn a_rule_with_the_outer_of_two_nested_prefixes_never_writes_the_inner_rules_replicas() {
    let s = spec(&format!(
        "{EXTERNAL_KEEP}\n[[sync]]\nname = \"outer\"\nprefix = \"p\"\n[[sync]]\nname = \"inner\"\nprefix = \"p/in\"\n"
    ));
    let ours = |r: Row| r.with("aws:ResourceTag/managed-by", json!(OURS));
    let of = |r: Row, rule: &str| ours(r).with("aws:ResourceTag/replica-rule", json!(rule));
    let mut rows = Vec::new();
    for action in [
        "secretsmanager:PutSecretValue",
        "secretsmanager:DeleteSecret",
        "secretsmanager:TagResource",
        "secretsmanager:UpdateSecretVersionStage",
    ] {
        rows.push(of(
            row("rule:outer", action, secret("p/in/x"), ExplicitlyDenied),
            "inner",
        ));
    }
    rows.extend([
        of(
            row(
                "rule:outer",
                "secretsmanager:PutSecretValue",
                secret("p/in/y"),
                Allowed,
            ),
            "outer",
        ),
        of(
            row(
                "rule:inner",
                "secretsmanager:PutSecretValue",
                secret("p/in/x"),
                Allowed,
            ),
            "inner",
        ),
        // Its own replicas before the rule tag existed: written, and tagged with its name.
        ours(row(
            "rule:outer",
            "secretsmanager:PutSecretValue",
            secret("p/a"),
            Allowed,
        )),
        row(
            "rule:outer",
            "secretsmanager:CreateSecret",
            secret("p/in/z"),
            ExplicitlyDenied,
        )
        .with("aws:TagKeys", json!(["replica-rule"]))
        .with("aws:RequestTag/replica-rule", json!("inner")),
        row(
            "rule:outer",
            "secretsmanager:CreateSecret",
            secret("p/in/z"),
            Allowed,
        )
        .with("aws:TagKeys", json!(["replica-rule"]))
        .with("aws:RequestTag/replica-rule", json!("outer")),
        of(
            row(
                "rule:outer",
                "secretsmanager:UntagResource",
                secret("p/in/y"),
                ExplicitlyDenied,
            ),
            "outer",
        )
        .with("aws:TagKeys", json!(["replica-rule"])),
    ]);
    check(&s, &rows);
}

#[test]
fn a_home_rules_role_admits_only_the_stacks_replicator_with_its_external_id() {
    let s = spec(&format!(
        "{EXTERNAL_KEEP}\n[[sync]]\nname = \"payments\"\nprefix = \"pay\"\n[[sync]]\nname = \"web\"\nprefix = \"web\"\n"
    ));
    let roles = s.home_rule_roles().unwrap();
    let (pay, web) = (&roles[0], &roles[1]);
    let home = s.replicator_policy(KEY, Some(VPC)).unwrap();
    let assume =
        |who: &str, identity: Value, role: &deployer::spec::AccountRoleSpec, id: Option<&str>| {
            let mut context = BTreeMap::from([
                ("aws:PrincipalArn".to_owned(), json!(who)),
                ("aws:PrincipalAccount".to_owned(), json!(ACCOUNT)),
            ]);
            if let Some(id) = id {
                context.insert("sts:ExternalId".into(), json!(id));
            }
            Request {
                principal: who.to_owned(),
                action: "sts:AssumeRole".into(),
                resource: role.arn.clone(),
                account: ACCOUNT.into(),
                context,
                identity_policies: vec![identity],
                resource_policy: Some(role.trust.clone()),
                vpc_endpoint_policy: None,
            }
        };
    let id = |name: &str| format!("{STACK}.sync.{name}");
    let rows: Vec<(Request, Decision, &str)> = vec![
        (
            assume(&s.role_arn(), home.clone(), pay, Some(&id("payments"))),
            Allowed,
            "the stack's replicator, with the rule's external id",
        ),
        (
            assume(&s.role_arn(), home.clone(), pay, None),
            ImplicitlyDenied,
            "without it",
        ),
        (
            assume(&s.role_arn(), home.clone(), pay, Some(&id("web"))),
            ImplicitlyDenied,
            "with another rule's",
        ),
        (
            assume(
                &s.rotation_role_arn(),
                allow_all(),
                pay,
                Some(&id("payments")),
            ),
            ImplicitlyDenied,
            "the stack's rotation role, even allowed everything",
        ),
        (
            assume(SOMEONE, allow_all(), pay, Some(&id("payments"))),
            ImplicitlyDenied,
            "anyone else of the account, even allowed everything",
        ),
        (
            assume(&web.arn, web.policy.clone(), pay, Some(&id("payments"))),
            ImplicitlyDenied,
            "another rule's role",
        ),
    ];
    assert_decisions(&rows);
}

#[test]
fn the_role_in_the_replicas_account_admits_only_the_stacks_replicator_with_the_external_id() {
    const TARGET: &str = "222222222222";
    const TARGET_ROLE: &str = "arn:aws:iam::222222222222:role/team-replicas";
    let s = spec(&format!(
        "{EXTERNAL_KEEP}\ndeletion_policy = \"delete\"\naccount_role_arn = \"{TARGET_ROLE}\"\nexternal_id = \"ext-1\""
    ));
    let there = s.account_role().unwrap().unwrap();
    let home = s.replicator_policy(KEY, Some(VPC)).unwrap();
    let replica =
        |name: &str| format!("arn:aws:secretsmanager:eu-west-1:{TARGET}:secret:{name}-AbCdEf");
    // (who, their identity policy, external id given) → may they assume the role?
    let assume = |who: &str, identity: Value, external_id: Option<&str>| {
        let mut context = BTreeMap::from([
            ("aws:PrincipalArn".to_owned(), json!(who)),
            ("aws:PrincipalAccount".to_owned(), json!(ACCOUNT)),
        ]);
        if let Some(id) = external_id {
            context.insert("sts:ExternalId".into(), json!(id));
        }
        Request {
            principal: who.to_owned(),
            action: "sts:AssumeRole".into(),
            resource: TARGET_ROLE.into(),
            account: TARGET.into(),
            context,
            identity_policies: vec![identity],
            resource_policy: Some(there.trust.clone()),
            vpc_endpoint_policy: None,
        }
    };
    // (action, secret, its owner tag) as the assumed role.
    let write = |action: &str, resource: String, owner: Option<&str>| {
        let mut context = BTreeMap::from([
            ("aws:PrincipalArn".to_owned(), json!(TARGET_ROLE)),
            ("aws:PrincipalAccount".to_owned(), json!(TARGET)),
        ]);
        if let Some(o) = owner {
            context.insert("aws:ResourceTag/managed-by".into(), json!(o));
        }
        Request {
            principal: TARGET_ROLE.to_owned(),
            action: action.to_owned(),
            resource,
            account: TARGET.into(),
            context,
            identity_policies: vec![there.policy.clone()],
            resource_policy: None,
            vpc_endpoint_policy: None,
        }
    };
    let rows: Vec<(Request, Decision, &str)> = vec![
        (
            assume(&s.role_arn(), home.clone(), Some("ext-1")),
            Allowed,
            "the stack's replicator with the external id",
        ),
        (
            assume(&s.role_arn(), home.clone(), None),
            ImplicitlyDenied,
            "without the external id",
        ),
        (
            assume(&s.role_arn(), home.clone(), Some("ext-2")),
            ImplicitlyDenied,
            "with another external id",
        ),
        (
            assume(SOMEONE, allow_all(), Some("ext-1")),
            ImplicitlyDenied,
            "anyone else of the home account, even allowed everything there",
        ),
        (
            assume(
                "arn:aws:iam::222222222222:role/someone",
                allow_all(),
                Some("ext-1"),
            ),
            ImplicitlyDenied,
            "anyone of the replicas' account",
        ),
        (
            write(
                "secretsmanager:PutSecretValue",
                replica("hybrid-aws-secrets/a"),
                Some(OURS),
            ),
            Allowed,
            "writes its replicas under the prefix",
        ),
        (
            write(
                "secretsmanager:DeleteSecret",
                replica("hybrid-aws-secrets/a"),
                Some(OURS),
            ),
            Allowed,
            "deletes its own replicas under the delete policy",
        ),
        (
            write(
                "secretsmanager:PutSecretValue",
                replica("hybrid-aws-secrets/b"),
                Some("terraform"),
            ),
            ExplicitlyDenied,
            "never another tool's secret",
        ),
        (
            write("secretsmanager:PutSecretValue", replica("prod/db"), None),
            ExplicitlyDenied,
            "nothing outside the prefix",
        ),
        (
            write(
                "secretsmanager:GetSecretValue",
                replica("hybrid-aws-secrets/a"),
                Some(OURS),
            ),
            ExplicitlyDenied,
            "no value, not even its own replicas'",
        ),
        (
            write(
                "sts:AssumeRole",
                "arn:aws:iam::222222222222:role/admin".into(),
                None,
            ),
            ImplicitlyDenied,
            "no role to go on from",
        ),
        (
            write(
                "kms:GenerateDataKey",
                format!("arn:aws:kms:eu-west-1:{TARGET}:key/their-own"),
                None,
            ),
            ExplicitlyDenied,
            "no key of that account but Secrets Manager's own",
        ),
        (
            {
                let mut r = write(
                    "kms:GenerateDataKey",
                    format!("arn:aws:kms:eu-west-1:{TARGET}:key/default"),
                    None,
                );
                r.context.insert(
                    "kms:ResourceAliases".into(),
                    json!(["alias/aws/secretsmanager"]),
                );
                r
            },
            ImplicitlyDenied,
            "Secrets Manager's own key is left to its key policy",
        ),
    ];
    assert_decisions(&rows);
}

#[test]
fn the_key_made_in_the_replicas_account_is_used_by_its_principals_through_secrets_manager_only() {
    const TARGET: &str = "222222222222";
    const TARGET_ROLE: &str = "arn:aws:iam::222222222222:role/team-replicas";
    let s = spec(&format!(
        "{EXTERNAL_KEEP}\naccount_kms_key = \"create\"\naccount_role_arn = \"{TARGET_ROLE}\"\nexternal_id = \"ext-1\""
    ));
    let role = s.account_role().unwrap().unwrap();
    let (region, key) = s.account_key().unwrap().unwrap();
    assert_eq!(region, "eu-west-1");
    let made = format!("arn:aws:kms:eu-west-1:{TARGET}:key/made");
    // (who, their identity policy, action, key, its aliases, through which service)
    let use_key = |who: &str,
                   identity: Value,
                   action: &str,
                   resource: &str,
                   aliases: Value,
                   via: Option<&str>| {
        let mut context = BTreeMap::from([
            ("aws:PrincipalArn".to_owned(), json!(who)),
            ("aws:PrincipalAccount".to_owned(), json!(TARGET)),
            ("kms:CallerAccount".to_owned(), json!(TARGET)),
            ("kms:ResourceAliases".to_owned(), aliases),
        ]);
        if let Some(v) = via {
            context.insert("kms:ViaService".into(), json!(v));
        }
        Request {
            principal: who.to_owned(),
            action: action.to_owned(),
            resource: resource.to_owned(),
            account: TARGET.into(),
            context,
            identity_policies: vec![identity],
            resource_policy: (resource == made).then(|| key.policy.clone()),
            vpc_endpoint_policy: None,
        }
    };
    let ours = json!([key.alias]);
    let rows: Vec<(Request, Decision, &str)> = vec![
        (
            use_key(
                TARGET_ROLE,
                role.policy.clone(),
                "kms:GenerateDataKey",
                &made,
                ours.clone(),
                Some(VIA_SM),
            ),
            Allowed,
            "the replicas' role encrypts a replica with it through Secrets Manager",
        ),
        (
            use_key(
                TARGET_ROLE,
                role.policy.clone(),
                "kms:Decrypt",
                &made,
                ours.clone(),
                None,
            ),
            ImplicitlyDenied,
            "not directly",
        ),
        (
            use_key(
                TARGET_ROLE,
                role.policy.clone(),
                "kms:PutKeyPolicy",
                &made,
                ours.clone(),
                None,
            ),
            ImplicitlyDenied,
            "nor administers it",
        ),
        (
            use_key(
                TARGET_ROLE,
                role.policy.clone(),
                "kms:GenerateDataKey",
                &format!("arn:aws:kms:eu-west-1:{TARGET}:key/other"),
                json!(["alias/other"]),
                Some(VIA_SM),
            ),
            ExplicitlyDenied,
            "no other key of that account",
        ),
        (
            use_key(
                "arn:aws:iam::222222222222:role/app",
                allow_all(),
                "kms:Decrypt",
                &made,
                ours.clone(),
                Some(VIA_SM),
            ),
            Allowed,
            "a reader of a replica there decrypts it through Secrets Manager, as with aws/secretsmanager",
        ),
        (
            use_key(
                "arn:aws:iam::222222222222:role/app",
                json!({"Version": "2012-10-17", "Statement": []}),
                "kms:Decrypt",
                &made,
                ours.clone(),
                None,
            ),
            ImplicitlyDenied,
            "not outside Secrets Manager",
        ),
        (
            use_key(
                "arn:aws:iam::222222222222:role/admin",
                allow_all(),
                "kms:ScheduleKeyDeletion",
                &made,
                ours.clone(),
                None,
            ),
            Allowed,
            "the account administers it",
        ),
    ];
    assert_decisions(&rows);
}

#[test]
fn another_stacks_replicas_and_the_stack_tag_are_out_of_the_roles_reach() {
    let s = spec(EXTERNAL_KEEP);
    let a = || secret("hybrid-aws-secrets/a");
    let tagged = |r: Row, stack: &'static str| {
        r.with("aws:ResourceTag/managed-by", json!(OURS))
            .with("aws:ResourceTag/replica-stack", json!(stack))
    };
    let naming = |r: Row, stack: &'static str| {
        r.with("aws:ResourceTag/managed-by", json!(OURS))
            .with("aws:TagKeys", json!(["managed-by", "replica-stack"]))
            .with("aws:RequestTag/managed-by", json!(OURS))
            .with("aws:RequestTag/replica-stack", json!(stack))
    };
    check(
        &s,
        &[
            // The stack in these tests is "s".
            tagged(
                row("replicator", "secretsmanager:PutSecretValue", a(), Allowed),
                "s",
            ),
            tagged(
                row(
                    "replicator",
                    "secretsmanager:PutSecretValue",
                    a(),
                    ExplicitlyDenied,
                ),
                "green",
            ),
            tagged(
                row(
                    "replicator",
                    "secretsmanager:UntagResource",
                    a(),
                    ExplicitlyDenied,
                ),
                "green",
            ),
            // A replica from before the stack tag: its own, as before.
            row("replicator", "secretsmanager:PutSecretValue", a(), Allowed)
                .with("aws:ResourceTag/managed-by", json!(OURS)),
            naming(
                row("replicator", "secretsmanager:TagResource", a(), Allowed),
                "s",
            ),
            naming(
                row(
                    "replicator",
                    "secretsmanager:TagResource",
                    a(),
                    ExplicitlyDenied,
                ),
                "green",
            ),
            tagged(
                row(
                    "replicator",
                    "secretsmanager:UntagResource",
                    a(),
                    ExplicitlyDenied,
                ),
                "s",
            )
            .with("aws:TagKeys", json!(["replica-stack"])),
        ],
    );
}

/// With Vault on EC2 the function reaches STS through the Vault network's endpoint: only the
/// replicator's role passes, and only to assume its rules' roles.
#[test]
fn the_sts_endpoint_passes_only_the_replicator_assuming_its_rules_roles() {
    let s = spec(
        "vault_inbound_cidr = \"203.0.113.0/24\"\n[[sync]]\nname = \"payments\"\nprefix = \"pay\"\n[[sync]]\nname = \"web\"\nprefix = \"web\"\n",
    );
    let roles = s.home_rule_roles().unwrap();
    let endpoint = s.endpoint_policy("com.amazonaws.eu-west-1.sts").unwrap();
    let home = s.replicator_policy(KEY, Some(VPC)).unwrap();
    let assume =
        |who: &str, identity: Value, role: &str, trust: Option<&Value>, id: &str| Request {
            principal: who.to_owned(),
            action: "sts:AssumeRole".into(),
            resource: role.to_owned(),
            account: ACCOUNT.into(),
            context: BTreeMap::from([
                ("aws:PrincipalArn".to_owned(), json!(who)),
                ("aws:PrincipalAccount".to_owned(), json!(ACCOUNT)),
                ("sts:ExternalId".to_owned(), json!(id)),
            ]),
            identity_policies: vec![identity],
            resource_policy: trust.cloned(),
            vpc_endpoint_policy: Some(endpoint.clone()),
        };
    let id = |r: &deployer::spec::AccountRoleSpec| r.arn.rsplit('/').next().unwrap().to_owned();
    let rows: Vec<(Request, Decision, &str)> = vec![
        (
            assume(
                &s.role_arn(),
                home.clone(),
                &roles[0].arn,
                Some(&roles[0].trust),
                &id(&roles[0]),
            ),
            Allowed,
            "the replicator, its rule's role",
        ),
        (
            assume(
                &s.role_arn(),
                home.clone(),
                &roles[1].arn,
                Some(&roles[1].trust),
                &id(&roles[1]),
            ),
            Allowed,
            "the replicator, the other rule's role",
        ),
        (
            assume(
                &s.role_arn(),
                allow_all(),
                "arn:aws:iam::123456789012:role/admin",
                None,
                "x",
            ),
            ImplicitlyDenied,
            "no other role through the endpoint, whatever the identity allows",
        ),
        (
            assume(SOMEONE, allow_all(), &roles[0].arn, None, &id(&roles[0])),
            ImplicitlyDenied,
            "no other principal through the endpoint",
        ),
    ];
    assert_decisions(&rows);
}

#[test]
fn change_events_go_only_to_the_stacks_bus_with_the_replicators_source() {
    let team = "arn:aws:events:eu-west-1:123456789012:event-bus/team";
    let default = "arn:aws:events:eu-west-1:123456789012:event-bus/default";
    let ours = |r: Row| r.with("events:source", json!(["vault-secrets-replicator"]));
    let on = spec(&format!(
        "{EXTERNAL_KEEP}\nevents = true\nevents_bus = \"team\""
    ));
    check(
        &on,
        &[
            ours(row("replicator", "events:PutEvents", team, Allowed)),
            row("replicator", "events:PutEvents", team, ImplicitlyDenied)
                .with("events:source", json!(["aws.secretsmanager"])),
            // Ours beside another's in one request, or no source said: refused.
            row("replicator", "events:PutEvents", team, ImplicitlyDenied).with(
                "events:source",
                json!(["vault-secrets-replicator", "aws.secretsmanager"]),
            ),
            row("replicator", "events:PutEvents", team, ImplicitlyDenied),
            ours(row(
                "replicator",
                "events:PutEvents",
                default,
                ExplicitlyDenied,
            )),
            ours(row(
                "replicator",
                "events:DescribeEventBus",
                team,
                ImplicitlyDenied,
            )),
            row(
                "replicator",
                "events:PutTargets",
                "arn:aws:events:eu-west-1:123456789012:rule/team/r",
                ExplicitlyDenied,
            ),
            // The rotation function announces nothing.
            ours(row("rotation", "events:PutEvents", team, ImplicitlyDenied)),
        ],
    );
    // Without `events`: no bus at all.
    check(
        &spec(EXTERNAL_KEEP),
        &[ours(row(
            "replicator",
            "events:PutEvents",
            default,
            ImplicitlyDenied,
        ))],
    );
    // Vault on EC2: through the Vault network's EventBridge endpoint, the replicator's events
    // on the stack's bus alone.
    let ec2 = spec("vault_inbound_cidr = \"203.0.113.0/24\"\nevents = true");
    let services = ec2.endpoint_services();
    assert!(
        services.contains(&"com.amazonaws.eu-west-1.events".to_owned()),
        "{services:?}"
    );
    let endpoint = ec2
        .endpoint_policy("com.amazonaws.eu-west-1.events")
        .unwrap();
    check_through(
        &ec2,
        &[
            ours(row("replicator", "events:PutEvents", default, Allowed)),
            row("replicator", "events:PutEvents", default, ImplicitlyDenied)
                .with("events:source", json!(["someone.else"])),
            ours(row(
                "someone",
                "events:PutEvents",
                default,
                ImplicitlyDenied,
            )),
            ours(row("someone", "events:PutEvents", team, ImplicitlyDenied)),
        ],
        Some(&endpoint),
    );
    let without = spec("vault_inbound_cidr = \"203.0.113.0/24\"");
    assert!(
        !without
            .endpoint_services()
            .iter()
            .any(|s| s.ends_with(".events"))
    );
}
