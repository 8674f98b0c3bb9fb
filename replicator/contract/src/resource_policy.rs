//! The resource policy a sync puts on each of its replicas: a template with the variables
//! `${ReplicaArn}` (the replica's ARN) and `${Account}` (its account), checked once when it is
//! configured so that no replica can be given a policy that names other resources or grants
//! everyone. AWS checks it again: the replicator puts it with `BlockPublicPolicy`. No I/O.
//!
//! [`canonical`] compares a policy AWS hands back with the one put: AWS rewrites a list of one
//! into its element, and a lone statement into a list.

use serde_json::Value;

/// The replica's ARN, in the template.
pub const REPLICA_ARN: &str = "${ReplicaArn}";
/// The replica's account, in the template.
pub const ACCOUNT: &str = "${Account}";
/// The longest template accepted (compact JSON, before the variables are filled): Secrets
/// Manager takes policies of up to 20,480 characters, and an ARN is at most 2,048.
pub const MAX_TEMPLATE_LEN: usize = 16_384;

/// A checked template, as compact JSON.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResourcePolicy {
    template: String,
}

impl ResourcePolicy {
    /// Parses and checks a template; the error says what to fix.
    pub fn parse(text: &str) -> Result<Self, String> {
        let doc: Value = serde_json::from_str(text)
            .map_err(|e| format!("is not JSON ({e}): give a resource policy document"))?;
        let Value::Object(top) = &doc else {
            return Err("is not a JSON object: give a resource policy document".into());
        };
        if top.get("Version").and_then(Value::as_str) != Some("2012-10-17") {
            return Err("needs \"Version\": \"2012-10-17\"".into());
        }
        let statements = match top.get("Statement") {
            Some(Value::Array(list)) if !list.is_empty() => list.iter().collect::<Vec<_>>(),
            Some(one @ Value::Object(_)) => vec![one],
            _ => return Err("needs a \"Statement\" (one, or a list of them)".into()),
        };
        for (i, st) in statements.iter().enumerate() {
            check_statement(st).map_err(|e| format!("statement {}: {e}", i + 1))?;
        }
        let template = serde_json::to_string(&doc).map_err(|e| e.to_string())?;
        check_variables(&template)?;
        if template.len() > MAX_TEMPLATE_LEN {
            return Err(format!(
                "is {} characters as compact JSON; at most {MAX_TEMPLATE_LEN} are accepted",
                template.len()
            ));
        }
        Ok(Self { template })
    }

    /// The template, as compact JSON (what the function is given).
    pub fn template(&self) -> &str {
        &self.template
    }

    /// The policy of the replica `arn`: the variables filled in (as JSON strings: an ARN holds
    /// nothing JSON would escape).
    pub fn render(&self, arn: &str) -> String {
        let account = arn.split(':').nth(4).unwrap_or("");
        self.template
            .replace(REPLICA_ARN, arn)
            .replace(ACCOUNT, account)
    }
}

/// A policy document in one form whatever AWS made of it: every list of one is its element,
/// and `Statement` is always a list. `None` for text that is not JSON.
pub fn canonical(text: &str) -> Option<Value> {
    fn fold(v: Value) -> Value {
        match v {
            Value::Array(list) if list.len() == 1 => {
                fold(list.into_iter().next().unwrap_or(Value::Null))
            }
            Value::Array(list) => Value::Array(list.into_iter().map(fold).collect()),
            Value::Object(map) => Value::Object(
                map.into_iter()
                    .map(|(k, v)| {
                        let v = match (k.as_str(), fold(v)) {
                            ("Statement", one @ Value::Object(_)) => Value::Array(vec![one]),
                            (_, v) => v,
                        };
                        (k, v)
                    })
                    .collect(),
            ),
            v => v,
        }
    }
    serde_json::from_str(text).ok().map(fold)
}

/// A statement has an effect, a principal, actions, and only the replica as its resource; an
/// `Allow` never names everyone.
fn check_statement(st: &Value) -> Result<(), String> {
    let Value::Object(st) = st else {
        return Err("is not a JSON object".into());
    };
    let effect = st.get("Effect").and_then(Value::as_str);
    if !matches!(effect, Some("Allow" | "Deny")) {
        return Err("needs \"Effect\": \"Allow\" or \"Deny\"".into());
    }
    if st.contains_key("NotPrincipal") || st.contains_key("NotResource") {
        return Err("uses NotPrincipal or NotResource: name the principals and the replica".into());
    }
    let Some(principal) = st.get("Principal") else {
        return Err("needs a \"Principal\": a resource policy says whom it is about".into());
    };
    if effect == Some("Allow") && names_everyone(principal) {
        return Err(
            "allows every principal (\"*\"): a replica is never made public (AWS's BlockPublicPolicy refuses it too); name the accounts or roles"
                .into(),
        );
    }
    if !st.contains_key("Action") {
        return Err("needs an \"Action\"".into());
    }
    let resources: Vec<&Value> = match st.get("Resource") {
        Some(Value::Array(list)) if list.is_empty() => {
            return Err(format!(
                "has an empty \"Resource\": write \"{REPLICA_ARN}\""
            ));
        }
        Some(Value::Array(list)) => list.iter().collect(),
        Some(one) => vec![one],
        None => return Err(format!("needs \"Resource\": \"{REPLICA_ARN}\"")),
    };
    for r in resources {
        if !matches!(r.as_str(), Some("*") | Some(REPLICA_ARN)) {
            return Err(format!(
                "names the resource {r}: a replica's policy is about that replica alone; write \"{REPLICA_ARN}\" (or \"*\", which means the same on a secret)"
            ));
        }
    }
    Ok(())
}

/// `"*"`, `{"AWS": "*"}`, or a list holding `"*"`, under any principal kind.
fn names_everyone(principal: &Value) -> bool {
    match principal {
        Value::String(s) => s == "*",
        Value::Array(list) => list.iter().any(names_everyone),
        Value::Object(kinds) => kinds.values().any(names_everyone),
        _ => false,
    }
}

/// Every `${…}` is one of this tool's variables or an IAM policy variable (`${aws:…}` and the
/// like, which hold a `:`): a misspelt variable would otherwise reach AWS as text.
fn check_variables(template: &str) -> Result<(), String> {
    let mut rest = template;
    while let Some(at) = rest.find("${") {
        let after = &rest[at + 2..];
        let Some(end) = after.find('}') else {
            return Err("has a \"${\" without its \"}\"".into());
        };
        let name = &after[..end];
        let ours = format!("${{{name}}}");
        if ours != REPLICA_ARN && ours != ACCOUNT && !name.contains(':') {
            return Err(format!(
                "uses the variable ${{{name}}}, which is neither {REPLICA_ARN}, {ACCOUNT} nor an IAM policy variable"
            ));
        }
        rest = &after[end + 1..];
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"{
      "Version": "2012-10-17",
      "Statement": [
        {"Sid": "ConsumerReads", "Effect": "Allow",
         "Principal": {"AWS": "arn:aws:iam::${Account}:role/consumer"},
         "Action": "secretsmanager:GetSecretValue", "Resource": "${ReplicaArn}"},
        {"Sid": "OnlyTheOrg", "Effect": "Deny", "Principal": "*",
         "Action": "secretsmanager:*", "Resource": "*",
         "Condition": {"StringNotEquals": {"aws:PrincipalOrgID": "${aws:ResourceOrgID}"}}}
      ]
    }"#;

    #[test]
    fn a_template_is_rendered_for_each_replica() {
        let p = ResourcePolicy::parse(GOOD).unwrap();
        assert!(!p.template().contains('\n'), "compact");
        let arn = "arn:aws:secretsmanager:eu-west-1:222222222222:secret:kv/app-AbCdEf";
        let doc: Value = serde_json::from_str(&p.render(arn)).unwrap();
        assert_eq!(doc["Statement"][0]["Resource"], arn);
        assert_eq!(
            doc["Statement"][0]["Principal"]["AWS"],
            "arn:aws:iam::222222222222:role/consumer"
        );
        assert_eq!(
            doc["Statement"][1]["Condition"]["StringNotEquals"]["aws:PrincipalOrgID"],
            "${aws:ResourceOrgID}",
            "IAM's own variables are left to IAM"
        );
    }

    #[test]
    fn a_policy_in_the_form_aws_hands_back_is_the_same_policy() {
        let put = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"AWS":["arn:aws:iam::1:role/a"]},"Action":["secretsmanager:GetSecretValue"],"Resource":"x"}]}"#;
        let back = r#"{"Version" : "2012-10-17", "Statement" : {"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::1:role/a"},"Action":"secretsmanager:GetSecretValue","Resource":"x"}}"#;
        assert_eq!(canonical(put), canonical(back));
        let other = back.replace("role/a", "role/b");
        assert_ne!(canonical(put), canonical(&other));
        assert_eq!(canonical("not json"), None);
    }

    #[test]
    fn what_could_widen_or_misdirect_a_policy_is_refused_with_the_fix() {
        let st = |body: &str| format!(r#"{{"Version": "2012-10-17", "Statement": [{body}]}}"#);
        let allow = r#""Effect": "Allow", "Action": "secretsmanager:GetSecretValue""#;
        for (text, problem) in [
            ("[]".to_owned(), "not a JSON object"),
            ("{".to_owned(), "not JSON"),
            (r#"{"Statement": []}"#.to_owned(), "Version"),
            (
                r#"{"Version": "2012-10-17"}"#.to_owned(),
                "needs a \"Statement\"",
            ),
            (
                st(&format!(
                    r#"{{{allow}, "Principal": "*", "Resource": "*"}}"#
                )),
                "allows every principal",
            ),
            (
                st(&format!(
                    r#"{{{allow}, "Principal": {{"AWS": ["arn:aws:iam::1:root", "*"]}}, "Resource": "*"}}"#
                )),
                "allows every principal",
            ),
            (
                st(&format!(
                    r#"{{{allow}, "Principal": {{"AWS": "arn:aws:iam::1:root"}}, "Resource": "arn:aws:secretsmanager:r:1:secret:other"}}"#
                )),
                "a replica's policy is about that replica alone",
            ),
            (
                st(&format!(
                    r#"{{{allow}, "Principal": {{"AWS": "arn:aws:iam::1:root"}}, "NotResource": "x"}}"#
                )),
                "NotPrincipal or NotResource",
            ),
            (
                st(&format!(r#"{{{allow}, "Resource": "*"}}"#)),
                "needs a \"Principal\"",
            ),
            (
                st(&format!(
                    r#"{{{allow}, "Principal": {{"AWS": "arn:aws:iam::${{Acount}}:root"}}, "Resource": "*"}}"#
                )),
                "${Acount}",
            ),
            (
                st(&format!(
                    r#"{{{allow}, "Principal": {{"AWS": "arn:aws:iam::1:root"}}, "Resource": []}}"#
                )),
                "empty \"Resource\"",
            ),
            (
                st(r#"{"Effect": "Permit", "Principal": "*", "Action": "x", "Resource": "*"}"#),
                "Effect",
            ),
        ] {
            let e = ResourcePolicy::parse(&text).unwrap_err();
            assert!(e.contains(problem), "{text}: {e}");
        }
        let long = st(&format!(
            r#"{{{allow}, "Principal": {{"AWS": "arn:aws:iam::1:root"}}, "Resource": "*", "Sid": "{}"}}"#,
            "a".repeat(MAX_TEMPLATE_LEN)
        ));
        assert!(
            ResourcePolicy::parse(&long)
                .unwrap_err()
                .contains("at most")
        );
    }
}
