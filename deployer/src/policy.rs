//! Policy documents from the templates in `policies/`: `{{name}}` placeholders are filled, an
//! unknown or leftover placeholder is an error; IAM's own `${aws:...}` passes through. Also
//! compares documents as JSON (AWS returns them URL-encoded and re-formatted). Pure.

use serde_json::Value;

pub const REPLICATOR_TRUST: &str = include_str!("../../policies/replicator-trust.json");
pub const REPLICATOR_POLICY: &str = include_str!("../../policies/replicator-policy.json");
pub const ROTATION_POLICY: &str = include_str!("../../policies/rotation-policy.json");
/// Writing the replicas and the denies around it: shared by the replicator's role and a role
/// in another account.
pub const REPLICA_WRITES: &str = include_str!("../../policies/replica-write-statements.json");
/// The role in another account the replicas are written with (`deployer target up`).
pub const ACCOUNT_ROLE_POLICY: &str = include_str!("../../policies/account-role-policy.json");
pub const ACCOUNT_ROLE_TRUST: &str = include_str!("../../policies/account-role-trust.json");
/// A role of one rule's (or of the rules naming one role): another rule's replicas are out of
/// its reach, as another stack's are.
pub const REPLICA_RULE_STATEMENTS: &str =
    include_str!("../../policies/replica-rule-statements.json");
pub const ACCOUNT_KEY_POLICY: &str = include_str!("../../policies/account-key-policy.json");
pub const REPLICATOR_SNS: &str = include_str!("../../policies/replicator-sns-statements.json");
pub const REPLICATOR_DELETE: &str =
    include_str!("../../policies/replicator-delete-statements.json");
pub const REPLICATOR_RESOURCE_POLICY: &str =
    include_str!("../../policies/replicator-resource-policy-statements.json");
/// With the replicas in another account: assuming that account's role, and no other.
pub const REPLICATOR_ACCOUNT_ROLE: &str =
    include_str!("../../policies/replicator-account-role-statements.json");
pub const REPLICATOR_VPC: &str = include_str!("../../policies/replicator-vpc-statements.json");
pub const REPLICATOR_REPLICATION: &str =
    include_str!("../../policies/replicator-replication-statements.json");
pub const REPLICATOR_REPLICA_KEYS: &str =
    include_str!("../../policies/replicator-replica-key-statements.json");
pub const REPLICATOR_DEFAULT_KEYS: &str =
    include_str!("../../policies/replicator-default-key-statements.json");
pub const KMS_KEY_POLICY: &str = include_str!("../../policies/kms-key-policy.json");
/// Resource policy of a secret only one role may read (the connection secret, the TLS secret).
pub const CONNECTION_SECRET_POLICY: &str =
    include_str!("../../policies/connection-secret-policy.json");
pub const SECRET_READ_BY_ONE_ROLE: &str =
    include_str!("../../policies/secret-read-by-one-role.json");
pub const VAULT_INSTANCE_TRUST: &str = include_str!("../../policies/vault-instance-trust.json");
pub const VAULT_INSTANCE_POLICY: &str = include_str!("../../policies/vault-instance-policy.json");
/// Policy of the VPC's STS endpoint (Vault on EC2 with rules in the stack's account): the
/// replicator assuming its rules' roles, nothing else.
pub const STS_ENDPOINT_POLICY: &str = include_str!("../../policies/sts-endpoint-policy.json");
/// With `events = true`: the change events on the stack's bus, and no other.
pub const REPLICATOR_EVENTS: &str =
    include_str!("../../policies/replicator-events-statements.json");
/// Policy of the VPC's EventBridge endpoint (Vault on EC2 with `events = true`): the
/// replicator's change events on the stack's bus, nothing else.
pub const EVENTS_ENDPOINT_POLICY: &str = include_str!("../../policies/events-endpoint-policy.json");
/// Policy of the VPC's Secrets Manager endpoint: only the stack's secrets pass through it.
pub const SECRETSMANAGER_ENDPOINT_POLICY: &str =
    include_str!("../../policies/secretsmanager-endpoint-policy.json");

#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    #[error("template placeholder {{{{{0}}}}} has no value")]
    Unknown(String),
    #[error("template placeholder {{{{{0}}}}} is not closed")]
    Unclosed(String),
    #[error("the rendered document is not valid JSON")]
    NotJson(#[from] serde_json::Error),
    #[error("{0}")]
    Merge(String),
}

/// Adds `other`'s statements to `into`'s (both policy documents). A statement whose Sid `into`
/// already has is merged when the two differ only in their resources (`Resource` or
/// `NotResource`: the union of both, one ARN as a string); an Allow that differs otherwise is
/// kept beside it under its Sid with `suffix` added (then a number, should that be taken). Two
/// denies of one Sid that differ otherwise have no union that keeps both: an error.
/// The denies whose `NotResource` is, by design, every sync's own resources together: the
/// writes outside the prefixes, the keys but the syncs', the roles but the syncs'.
const NOT_RESOURCE_UNIONS: &[&str] = &[
    "DenyEveryWriteOutsideThePrefix",
    "DenyEveryOtherKey",
    "AssumeNoOtherRole",
    "NoKeyButTheDefaultOrTheReplicaKeys",
];

pub fn merge_statements(
    into: &mut Value,
    other: &Value,
    suffix: &str,
) -> Result<(), TemplateError> {
    let adding = other["Statement"].as_array().cloned().unwrap_or_default();
    let Some(statements) = into["Statement"].as_array_mut() else {
        return Err(TemplateError::Merge(
            "a policy without a Statement list".into(),
        ));
    };
    for statement in adding {
        let sid = statement["Sid"].as_str().unwrap_or_default().to_owned();
        let Some(same) = statements.iter_mut().find(|s| s["Sid"] == statement["Sid"]) else {
            statements.push(statement);
            continue;
        };
        if *same == statement {
            continue;
        }
        let scope = |s: &Value| {
            let mut s = s.clone();
            if let Some(o) = s.as_object_mut() {
                o.remove("Resource");
                o.remove("NotResource");
            }
            s
        };
        let same_shape = scope(same) == scope(&statement)
            && same.get("Resource").is_some() == statement.get("Resource").is_some();
        // A deny over NotResource is narrowed by a union: only those meant to leave out every
        // sync's own resources may be merged so.
        if same_shape
            && statement["Effect"] == "Deny"
            && statement.get("NotResource").is_some()
            && !NOT_RESOURCE_UNIONS.contains(&sid.as_str())
        {
            return Err(TemplateError::Merge(format!(
                "two syncs need the deny {sid} over different resources, which would narrow it"
            )));
        }
        if same_shape {
            for key in ["Resource", "NotResource"] {
                if let (Some(a), Some(b)) = (same.get(key), statement.get(key)) {
                    let union = union_of(a, b);
                    same[key] = union;
                }
            }
            continue;
        }
        if statement["Effect"] != "Allow" {
            return Err(TemplateError::Merge(format!(
                "two syncs need the deny {sid} with different conditions"
            )));
        }
        let mut named = statement;
        let mut candidate = format!("{sid}{suffix}");
        let mut n = 2;
        while statements.iter().any(|s| s["Sid"] == candidate.as_str()) {
            candidate = format!("{sid}{suffix}{n}");
            n += 1;
        }
        named["Sid"] = Value::String(candidate);
        statements.push(named);
    }
    Ok(())
}

/// The ARNs of two `Resource` values (a string or a list), sorted, once each; one as a string.
pub fn union_of(a: &Value, b: &Value) -> Value {
    let mut all: Vec<String> = [a, b]
        .into_iter()
        .flat_map(|v| match v {
            Value::String(s) => vec![s.clone()],
            Value::Array(items) => items
                .iter()
                .filter_map(|i| i.as_str().map(str::to_owned))
                .collect(),
            _ => Vec::new(),
        })
        .collect();
    all.sort();
    all.dedup();
    if all.len() == 1 {
        Value::String(all.remove(0))
    } else {
        Value::from(all)
    }
}

/// A policy's size as IAM counts it against its quotas: the characters outside JSON strings'
/// whitespace (compact JSON).
pub fn compact_len(document: &Value) -> usize {
    document.to_string().len()
}

/// Fills `{{name}}` placeholders. Every placeholder must have a value.
pub fn render(template: &str, vars: &[(&str, &str)]) -> Result<String, TemplateError> {
    let mut out = String::with_capacity(template.len() + 256);
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find("}}")
            .ok_or_else(|| TemplateError::Unclosed(after.chars().take(20).collect()))?;
        let name = after[..end].trim();
        let value = vars
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| *v)
            .ok_or_else(|| TemplateError::Unknown(name.to_owned()))?;
        out.push_str(value);
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Renders a JSON template and checks the result parses.
pub fn render_json(template: &str, vars: &[(&str, &str)]) -> Result<Value, TemplateError> {
    let text = render(template, vars)?;
    serde_json::from_str(&text).map_err(TemplateError::NotJson)
}

/// A policy document as AWS returns it (URL-encoded for IAM) parsed to JSON.
pub fn parse_returned(doc: &str) -> Option<Value> {
    serde_json::from_str(doc).ok().or_else(|| {
        let decoded = percent_encoding::percent_decode_str(doc)
            .decode_utf8()
            .ok()?;
        serde_json::from_str(&decoded).ok()
    })
}

/// Compares two documents ignoring formatting, and the single-item-list vs string form IAM
/// normalises to.
pub fn same_document(a: &Value, b: &Value) -> bool {
    canonical(a) == canonical(b)
}

/// One text per meaning: keys sorted, one-item lists as their item, no spaces. Field diffs of
/// documents compare these.
pub fn canonical(v: &Value) -> String {
    fn write(v: &Value, out: &mut String) {
        match v {
            Value::Array(items) if items.len() == 1 => write(&items[0], out),
            Value::Array(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    write(item, out);
                }
                out.push(']');
            }
            Value::Object(map) => {
                let mut keys: Vec<&String> = map.keys().collect();
                keys.sort();
                out.push('{');
                for (i, k) in keys.into_iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(&Value::String(k.clone()).to_string());
                    out.push(':');
                    write(&map[k], out);
                }
                out.push('}');
            }
            other => out.push_str(&other.to_string()),
        }
    }
    let mut out = String::new();
    write(v, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merging_unions_resources_keeps_a_differing_allow_apart_and_never_narrows_a_deny() {
        let doc = |statements: Value| serde_json::json!({ "Statement": statements });
        let mut into = doc(serde_json::json!([
            {"Sid": "Write", "Effect": "Allow", "Action": "a:B", "Resource": "x/*"},
            {"Sid": "DenyEveryWriteOutsideThePrefix", "Effect": "Deny", "Action": "a:*", "NotResource": "x/*"},
        ]));
        let other = doc(serde_json::json!([
            {"Sid": "Write", "Effect": "Allow", "Action": "a:B", "Resource": "y/*"},
            {"Sid": "Write", "Effect": "Allow", "Action": "a:C", "Resource": "y/*"},
            {"Sid": "DenyEveryWriteOutsideThePrefix", "Effect": "Deny", "Action": "a:*", "NotResource": "y/*"},
        ]));
        merge_statements(&mut into, &other, "ForY").unwrap();
        assert_eq!(
            into["Statement"],
            serde_json::json!([
                {"Sid": "Write", "Effect": "Allow", "Action": "a:B", "Resource": ["x/*", "y/*"]},
                {"Sid": "DenyEveryWriteOutsideThePrefix", "Effect": "Deny", "Action": "a:*", "NotResource": ["x/*", "y/*"]},
                {"Sid": "WriteForY", "Effect": "Allow", "Action": "a:C", "Resource": "y/*"},
            ])
        );
        // Any other deny over NotResource would be narrowed by a union; one whose condition
        // differs has no union at all.
        for (deny, says) in [
            (
                serde_json::json!({"Sid": "DenyReadingOtherSecrets", "Effect": "Deny", "Action": "a:G", "NotResource": "x"}),
                "which would narrow it",
            ),
            (
                serde_json::json!({"Sid": "Regions", "Effect": "Deny", "Action": "a:R", "Resource": "*", "Condition": {"Null": {"k": "true"}}}),
                "with different conditions",
            ),
        ] {
            let mut into = doc(serde_json::json!([deny.clone()]));
            let mut changed = deny.clone();
            if changed.get("NotResource").is_some() {
                changed["NotResource"] = Value::from("y");
            } else {
                changed["Condition"] = serde_json::json!({"Null": {"k": "false"}});
            }
            let err = merge_statements(&mut into, &doc(serde_json::json!([changed])), "ForY")
                .unwrap_err()
                .to_string();
            assert!(err.contains(says), "{err}");
        }
    }

    #[test]
    fn the_owner_tag_is_never_written_literally_in_a_template() {
        // Both programs name it from the contract crate; a template that spelled it would not
        // follow a rename.
        for t in [
            REPLICATOR_TRUST,
            REPLICATOR_POLICY,
            REPLICATOR_SNS,
            REPLICATOR_DELETE,
            REPLICATOR_VPC,
            REPLICATOR_REPLICATION,
            REPLICATOR_REPLICA_KEYS,
            REPLICATOR_DEFAULT_KEYS,
            ROTATION_POLICY,
            KMS_KEY_POLICY,
            CONNECTION_SECRET_POLICY,
            SECRET_READ_BY_ONE_ROLE,
            VAULT_INSTANCE_TRUST,
            VAULT_INSTANCE_POLICY,
            SECRETSMANAGER_ENDPOINT_POLICY,
        ] {
            assert!(!t.contains(contract::tags::MANAGED_BY), "{t}");
            assert!(
                !t.contains(&format!("\"{}\"", contract::tags::MANAGED_BY_VALUE)),
                "{t}"
            );
        }
    }

    #[test]
    fn fills_and_refuses_unknown_placeholders() {
        assert_eq!(
            render("a {{x}} ${aws:username} {{ y }}", &[("x", "1"), ("y", "2")]).unwrap(),
            "a 1 ${aws:username} 2"
        );
        assert!(matches!(
            render("{{x}} {{z}}", &[("x", "1")]),
            Err(TemplateError::Unknown(name)) if name == "z"
        ));
        assert!(matches!(
            render("{{x", &[("x", "1")]),
            Err(TemplateError::Unclosed(_))
        ));
    }

    #[test]
    fn returned_documents_compare_by_meaning() {
        let ours =
            serde_json::json!({"Statement": [{"Action": ["s3:GetObject"], "Resource": "*"}]});
        let encoded = "%7B%22Statement%22%3A%5B%7B%22Resource%22%3A%22%2A%22%2C%22Action%22%3A%22s3%3AGetObject%22%7D%5D%7D";
        assert!(same_document(&ours, &parse_returned(encoded).unwrap()));
        let other = serde_json::json!({"Statement": [{"Action": "s3:PutObject", "Resource": "*"}]});
        assert!(!same_document(&ours, &other));
    }
}
