//! The sync rules document both programs read: `[[sync]]` of `deployer.toml`, and the
//! replicator's `--rules` (`REPLICATOR_RULES`), one rule each, with the same keys, so a
//! configuration is portable between them. The shape only; each program checks the values.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::naming::Granularity;
use crate::{DeletionPolicy, LatestDeleted, OnModified};

/// The most rules one document holds.
pub const MAX_RULES: usize = 100;

/// One rule as the document gives it: a name and a prefix, and any other key it sets (what it
/// leaves out, the replicator takes from its flags). Written without the keys left out. Its
/// `Debug` hides the external id.
#[derive(Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleDoc {
    pub name: String,
    pub prefix: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mount: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_role_arn: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kms_key_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub include: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exclude: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub opt_in: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replica_regions: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name_template: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub granularity: Option<Granularity>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata_tag_keys: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletion_policy: Option<DeletionPolicy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovery_window_days: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_delete_share: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_modified: Option<OnModified>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latest_deleted: Option<LatestDeleted>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_keys_per_secret: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adopt: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adopt_sample: Option<bool>,
    /// A JSON document, `@FILE`, or the policy itself as an object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_policy: Option<serde_json::Value>,
    /// `deployer.toml` only: which key encrypts the replicas in another account. The deployer
    /// sends the function the key itself (`kms_key_id`); the function refuses this key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_kms_key: Option<AccountKmsKey>,
}

impl std::fmt::Debug for RuleDoc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut shown = serde_json::to_value(self).unwrap_or_default();
        if let Some(id) = shown.get_mut("external_id") {
            *id = serde_json::Value::from("(hidden)");
        }
        write!(f, "RuleDoc {shown}")
    }
}

/// The key that encrypts the replicas a rule writes in another account.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum AccountKmsKey {
    /// That account's own `aws/secretsmanager` key.
    #[default]
    #[serde(rename = "aws/secretsmanager")]
    AwsSecretsManager,
    /// A customer-managed key that `deployer target up` makes there (alias
    /// `alias/<stack>-replicas`), rotation on.
    #[serde(rename = "create")]
    Create,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rule_is_written_with_the_keys_it_sets_and_read_back_the_same() {
        let rule = RuleDoc {
            name: "payments".into(),
            prefix: "pay".into(),
            mount: Some("kv".into()),
            deletion_policy: Some(DeletionPolicy::Delete),
            granularity: Some(Granularity::SecretKey),
            tags: Some(BTreeMap::from([("team".into(), "pay".into())])),
            ..RuleDoc::default()
        };
        let hidden = RuleDoc {
            external_id: Some("ext-secretish".into()),
            ..rule.clone()
        };
        let shown = format!("{hidden:?}");
        assert!(
            shown.contains("payments") && !shown.contains("secretish"),
            "{shown}"
        );
        let written = serde_json::to_string(&rule).unwrap();
        assert_eq!(
            written,
            r#"{"name":"payments","prefix":"pay","mount":"kv","granularity":"secret-key","tags":{"team":"pay"},"deletion_policy":"delete"}"#
        );
        assert_eq!(serde_json::from_str::<RuleDoc>(&written).unwrap(), rule);
        let unknown = serde_json::from_str::<RuleDoc>(r#"{"name":"a","prefix":"p","mont":"kv"}"#);
        assert!(
            unknown
                .unwrap_err()
                .to_string()
                .contains("unknown field `mont`")
        );
    }
}
