//! Every rendered policy document, for every configuration shape, passes `parliament` (PyPI:
//! `pip install parliament`) with no finding. Policies are tested as documents: moto does not
//! enforce resource-level denies.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Command, Stdio};

use e2e::deploy::spec;

/// Findings inherent to a document's kind, which parliament reads as an identity policy:
/// a trust policy has no Resource by definition, and a KMS key policy's Resource must be `*`
/// ("this key"; the key's ARN does not exist when its policy is written). And two gaps in
/// parliament's data, condition keys its action tables predate: `lambda:SourceFunctionArn`, a
/// global condition key (every request made with a function's role credentials carries it),
/// and `kms:ResourceAliases` (KMS, 2021); the access tests decide both with an evaluator whose
/// data knows them.
fn inherent(name: &str, finding: &serde_json::Value) -> bool {
    let issue = finding["issue"].as_str().unwrap_or("");
    (name.ends_with("trust policy")
        && issue == "MALFORMED"
        && finding["detail"] == "Statement contains neither Resource nor NotResource")
        || (name.ends_with("kms key policy") && issue == "RESOURCE_STAR")
        || (issue == "UNKNOWN_CONDITION_FOR_ACTION"
            && finding["detail"].as_str().is_some_and(|d| {
                d.starts_with("Unknown condition lambda:SourceFunctionArn ")
                    || d.starts_with("Unknown condition kms:ResourceAliases ")
            }))
}

fn parliament(name: &str, doc: &serde_json::Value) -> Vec<String> {
    let out = Command::new("parliament")
        .args(["--json", "--string", &doc.to_string()])
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run parliament ({e}); install it with: pip install parliament")
        });
    let stdout = String::from_utf8_lossy(&out.stdout);
    let raw: Vec<&str> = stdout.lines().filter(|l| !l.trim().is_empty()).collect();
    // Exit 1 means findings were printed; anything else without output is a failure to run.
    assert!(
        out.status.success() || !raw.is_empty(),
        "parliament failed on {name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    raw.into_iter()
        .filter(|l| !serde_json::from_str::<serde_json::Value>(l).is_ok_and(|f| inherent(name, &f)))
        .map(|l| format!("{name}: {l}"))
        .collect()
}

#[test]
fn every_rendered_policy_passes_parliament() {
    let shapes = [
        (
            "external, keep, no email",
            "deploy_vault_on_ec2 = false\nexternal_vault_address = \"https://v:8200\"",
            "aws",
        ),
        (
            "external, delete, email",
            "deploy_vault_on_ec2 = false\nexternal_vault_address = \"https://v:8200\"\ndeletion_policy = \"delete\"\nnotification_email = \"ops@example.com\"",
            "aws",
        ),
        (
            "ec2, email",
            "vault_inbound_cidr = \"203.0.113.0/24\"\nnotification_email = \"ops@example.com\"",
            "aws",
        ),
        (
            "external, replicas in another account",
            "deploy_vault_on_ec2 = false\nexternal_vault_address = \"https://v:8200\"\ndeletion_policy = \"delete\"\naccount_role_arn = \"arn:aws:iam::222222222222:role/team-replicas\"\nexternal_id = \"ext-1\"\nreplica_regions = [\"us-west-2=arn:aws:kms:us-west-2:222222222222:key/1234abcd-12ab-34cd-56ef-1234567890ab\", \"eu-central-1\"]",
            "aws",
        ),
        (
            "ec2, china partition",
            "vault_inbound_cidr = \"203.0.113.0/24\"",
            "aws-cn",
        ),
        (
            "ec2, rules, events",
            "vault_inbound_cidr = \"203.0.113.0/24\"\nevents = true\n[[sync]]\nname = \"a\"\nprefix = \"a\"\ndeletion_policy = \"delete\"\n[[sync]]\nname = \"b\"\nprefix = \"b\"\nreplica_regions = [\"eu-central-1\"]\n",
            "aws",
        ),
    ];
    let key = "arn:aws:kms:eu-west-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab";
    let mut findings = Vec::new();
    let mut checked = 0;
    for (shape, extra, partition) in shapes {
        let s = spec(extra, partition);
        let mut docs = vec![
            (
                "replicator inline policy",
                s.replicator_policy(key, Some("vpc-0123456789abcdef0")).unwrap(),
            ),
            ("replicator trust policy", s.replicator_trust().unwrap()),
            (
                "vault instance policy",
                s.vault_instance_policy(key).unwrap(),
            ),
            (
                "vault instance trust policy",
                s.vault_instance_trust().unwrap(),
            ),
            ("kms key policy", s.key_policy().unwrap()),
            (
                "connection secret policy",
                s.connection_secret_policy().unwrap(),
            ),
            ("tls secret policy", s.tls_secret_policy(Some("2026-12-05T09:00:00Z")).unwrap()),
            (
                "secrets manager endpoint policy",
                s.secretsmanager_endpoint_policy().unwrap(),
            ),
            (
                "init-keys secret policy",
                s.init_keys_policy(&format!(
                    "arn:{partition}:iam::123456789012:role/aws-reserved/sso.amazonaws.com/AdminAccess"
                ))
                .unwrap(),
            ),
        ];
        if let Some(there) = s.account_role().unwrap() {
            docs.push(("account role policy", there.policy));
            docs.push(("account role trust policy", there.trust));
        }
        for rule in s.home_rule_roles().unwrap() {
            docs.push(("a home rule's role policy", rule.policy));
            docs.push(("a home rule's role trust policy", rule.trust));
        }
        if s.assumes_roles_here() {
            docs.push(("sts endpoint policy", s.sts_endpoint_policy().unwrap()));
        }
        if s.event_bus_arn().is_some() {
            docs.push((
                "eventbridge endpoint policy",
                s.events_endpoint_policy().unwrap(),
            ));
        }
        for (name, doc) in docs {
            findings.extend(parliament(&format!("{shape} / {name}"), &doc));
            checked += 1;
        }
    }
    assert_eq!(checked, 47 + 9 + 4 + 1 + 1);
    assert!(
        findings.is_empty(),
        "parliament findings:\n{}",
        findings.join("\n")
    );
}
