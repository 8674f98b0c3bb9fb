//! Decides AWS requests against the deployer's rendered policy documents, the way IAM does:
//! explicit deny wins, then an allow from the identity or the resource policy, else implicit
//! deny; NotAction/NotResource, wildcards and condition operators included. moto evaluates no
//! policy, so access claims are decided here, by a maintained evaluator
//! (`@cloud-copilot/iam-simulate`, pinned in `tests/iam/package.json`, run with Node).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use serde_json::{Value, json};

/// IAM's answer to one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    Allowed,
    ExplicitlyDenied,
    ImplicitlyDenied,
}

/// One request: who, what, on which resource, with which condition keys, under which policies.
#[derive(Clone, Debug)]
pub struct Request {
    pub principal: String,
    pub action: String,
    pub resource: String,
    pub account: String,
    /// Condition keys (`aws:PrincipalArn`, `aws:TagKeys`, `secretsmanager:ResourceTag/…`);
    /// a list is a multi-valued key.
    pub context: BTreeMap<String, Value>,
    pub identity_policies: Vec<Value>,
    pub resource_policy: Option<Value>,
    /// The policy of the VPC endpoint the request goes through, if any.
    pub vpc_endpoint_policy: Option<Value>,
}

/// The evaluator matches variable condition keys only in the `prefix/name` form
/// (`aws:ResourceTag/owner`), not in KMS's `kms:EncryptionContext:name` form, which it ignores
/// (so a condition on it never holds). Both sides of the comparison, the policies and the
/// request, get the same renaming to a `/` key the evaluator knows: the condition keeps its
/// operator and values, so its meaning.
const ENCRYPTION_CONTEXT: &str = "kms:encryptioncontext:";
const ENCRYPTION_CONTEXT_STAND_IN: &str = "aws:PrincipalTag/kms-encryption-context.";

fn stand_in_key(key: &str) -> String {
    match key.get(..ENCRYPTION_CONTEXT.len()) {
        Some(head) if head.eq_ignore_ascii_case(ENCRYPTION_CONTEXT) => {
            format!(
                "{ENCRYPTION_CONTEXT_STAND_IN}{}",
                &key[ENCRYPTION_CONTEXT.len()..]
            )
        }
        _ => key.to_owned(),
    }
}

fn with_stand_in_keys(v: &Value) -> Value {
    match v {
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (stand_in_key(k), with_stand_in_keys(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(with_stand_in_keys).collect()),
        other => other.clone(),
    }
}

impl Request {
    fn simulation(&self) -> Value {
        let sim = self.simulation_as_written();
        with_stand_in_keys(&sim)
    }

    fn simulation_as_written(&self) -> Value {
        let mut sim = json!({
            "identityPolicies": self
                .identity_policies
                .iter()
                .enumerate()
                .map(|(i, p)| json!({"name": format!("identity{i}"), "policy": p}))
                .collect::<Vec<_>>(),
            "request": {
                "action": self.action,
                "principal": self.principal,
                "resource": {"accountId": self.account, "resource": self.resource},
                "contextVariables": self.context,
            }
        });
        if let Some(p) = &self.resource_policy {
            sim["resourcePolicy"] = p.clone();
        }
        if let Some(p) = &self.vpc_endpoint_policy {
            sim["vpcEndpointPolicies"] = json!([{"name": "endpoint", "policy": p}]);
        }
        sim
    }
}

fn evaluator_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("iam")
}

/// Decides every request in one run of the evaluator. Panics with the install command when
/// Node or the evaluator is missing, and with the evaluator's message when it refuses a request
/// (a malformed policy, an unknown action or condition key).
pub fn decide(requests: &[Request]) -> Vec<Decision> {
    let dir = evaluator_dir();
    assert!(
        dir.join("node_modules/@cloud-copilot/iam-simulate")
            .exists(),
        "the IAM evaluator is not installed: run tests/run.sh, or `npm ci --prefix tests/iam`"
    );
    let input = Value::Array(requests.iter().map(Request::simulation).collect()).to_string();
    let mut child = Command::new("node")
        .arg(dir.join("evaluate.mjs"))
        .current_dir(&dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot run node ({e}); install it: apt-get install nodejs npm")
        });
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.as_bytes())
        .expect("write to the evaluator");
    let out = child.wait_with_output().expect("the evaluator");
    assert!(
        out.status.success(),
        "the evaluator failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let answers: Vec<Value> = serde_json::from_slice(&out.stdout).expect("the evaluator's JSON");
    assert_eq!(answers.len(), requests.len());
    answers
        .iter()
        .zip(requests)
        .map(|(a, r)| match a["result"].as_str() {
            Some("Allowed") => Decision::Allowed,
            Some("ExplicitlyDenied") => Decision::ExplicitlyDenied,
            Some("ImplicitlyDenied") => Decision::ImplicitlyDenied,
            _ => panic!("the evaluator refused {} on {}: {a}", r.action, r.resource),
        })
        .collect()
}
