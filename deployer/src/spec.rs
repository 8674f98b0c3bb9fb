//! The desired stack, derived purely from the validated configuration and the account's
//! identity: every resource's deterministic name, the stack tag, the policy documents and the
//! Lambda environment. No I/O.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::config::{Config, VaultMode};
use crate::policy::{self, TemplateError};
use contract::rules::AccountKmsKey;
use contract::{connection_secret_name, env};

/// Tag key that marks every resource of a stack; its value is the stack name.
pub const STACK_TAG: &str = "vault-secrets-replicator:stack";

/// The tags every resource of `stack` is made with.
pub fn stack_tags(stack: &str) -> BTreeMap<String, String> {
    BTreeMap::from([(STACK_TAG.to_owned(), stack.to_owned())])
}

/// The stack's network: fixed, so the names and rules that mention it are known before it exists.
pub const VPC_CIDR: &str = "10.42.0.0/16";
pub const SUBNET_CIDR: &str = "10.42.0.0/24";
/// Vault's fixed private address: its certificate names it before the instance exists.
pub const VAULT_PRIVATE_IP: &str = "10.42.0.10";
pub const VAULT_PORT: i32 = 8200;

/// The URL of the stack's own Vault at `host` (its public or its private address).
pub fn vault_url(host: &str) -> String {
    format!("https://{host}:{VAULT_PORT}")
}

/// The name of `stack`'s security group `group`.
pub(crate) fn security_group_name(stack: &str, group: Group) -> String {
    let role = match group {
        Group::Vault => "vault",
        Group::Replicator => "replicator",
        Group::Endpoints => "endpoints",
    };
    format!("{stack}-{role}")
}

/// The stack's security groups, one per role in the network.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Group {
    /// The Vault instance.
    Vault,
    /// The replicator Lambda's network interfaces.
    Replicator,
    /// The VPC interface endpoints.
    Endpoints,
}

impl Group {
    pub const ALL: [Group; 3] = [Group::Vault, Group::Replicator, Group::Endpoints];

    /// The group's description in EC2.
    pub fn about(self) -> &'static str {
        match self {
            Group::Vault => "Vault API: the replicator and vault_inbound_cidr only",
            Group::Replicator => "vault-secrets-replicator Lambda",
            Group::Endpoints => "VPC endpoints: HTTPS from the replicator",
        }
    }
}

/// What one of the stack's two functions (one code, one role) is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Duty {
    /// The schedule's and `deployer sync-now`'s: reserved concurrency as configured, the
    /// failure topic as its on-failure destination.
    Sync,
    /// The change watcher's on the stack's Vault host, whose role may invoke it with any
    /// event: its own reserved slot (a flood of invocations never takes the schedule's), and
    /// it refuses an operator's word (`accept_vault_rollback`). With Vault on EC2 only.
    Watch,
    /// Secrets Manager's rotation of the connection secret's AppRole secret id: the same code
    /// with a role of its own (the connection secret and the rotator's credential, nothing
    /// else) and no sync settings. With `secret_id_rotation_days` above 0 only.
    Rotate,
}

impl Duty {
    pub const ALL: [Duty; 3] = [Duty::Sync, Duty::Watch, Duty::Rotate];

    /// Whether the function runs as the replicator's role (the rotation function has its own).
    pub fn replicates(self) -> bool {
        self != Duty::Rotate
    }
}

/// The template variables of [`Spec::optional_replica_statements`].
const OPTIONAL_REPLICA_STATEMENTS: [&str; 3] = [
    "delete_statements",
    "resource_policy_statements",
    "replication_statements",
];

/// Where a sync reads in Vault ([`Spec::vault_reads`]).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct VaultRead {
    /// The rule's namespace (absolute); none: the one the replicator logs in to.
    pub namespace: Option<String>,
    pub mount: String,
    /// Under the mount; empty: all of it.
    pub path: String,
}

/// The role in another account, as [`Spec::account_role`] renders it.
#[derive(Clone, Debug, PartialEq)]
pub struct AccountRoleSpec {
    /// As configured (`account_role_arn`), or the one `up` makes for a rule in the stack's
    /// account.
    pub arn: String,
    pub trust: Value,
    pub policy: Value,
}

/// The statements of the replicator's policy that allow writing secrets in the stack's own
/// account: left out when the replicas are in another one (its denies stay).
const WRITES_HERE: &[&str] = &[
    "WriteReplicatedSecrets",
    "SetDescriptionsNeverTheKey",
    "RemoveOnlyAPolicyItPut",
];

/// The replicator's policy while the functions still run with the environment they had, when
/// `wanted` takes away what `seen` (the policy in IAM now) lets them do (writes the role made
/// itself, now the rules' roles'; a role to assume): `seen` as it is, with `wanted`'s new
/// allows and the roles of both to assume, no new deny. `up` puts it before the functions
/// move, and `wanted` once they have, so no run started in between is refused. None when
/// `wanted` takes nothing away.
pub fn widened_for_the_move(seen: &Value, wanted: &Value) -> Option<Value> {
    let statements = |d: &Value| -> Vec<Value> {
        match &d["Statement"] {
            Value::Array(all) => all.clone(),
            one @ Value::Object(_) => vec![one.clone()],
            _ => Vec::new(),
        }
    };
    let (before, after) = (statements(seen), statements(wanted));
    let find = |all: &[Value], sid: &str| all.iter().find(|s| s["Sid"] == sid).cloned();
    let wrote_itself = before.iter().any(|s| {
        s["Effect"] == "Allow"
            && s["Sid"]
                .as_str()
                .is_some_and(|sid| WRITES_HERE.contains(&sid))
    });
    let moves_to_roles = wrote_itself && find(&after, "WriteNoSecretItself").is_some();
    const ASSUME: &str = "AssumeTheReplicasAccountRole";
    let roles_removed = match (find(&before, ASSUME), find(&after, ASSUME)) {
        (Some(old), Some(new)) => {
            policy::union_of(&new["Resource"], &old["Resource"]) != new["Resource"]
        }
        (Some(_), None) => true,
        _ => false,
    };
    if !moves_to_roles && !roles_removed {
        return None;
    }
    let mut all = before.clone();
    for new in &after {
        let sid = new["Sid"].as_str().unwrap_or_default();
        match all.iter_mut().find(|s| s["Sid"] == sid) {
            None if new["Effect"] == "Allow" => all.push(new.clone()),
            // A deny the running functions' policy lacks would narrow it: left for later.
            None => {}
            Some(old) => {
                let key = match sid {
                    "AssumeTheReplicasAccountRole" => "Resource",
                    "AssumeNoOtherRole" => "NotResource",
                    _ => continue,
                };
                old[key] = policy::union_of(&old[key], &new[key]);
            }
        }
    }
    let mut widened = seen.clone();
    widened["Statement"] = Value::Array(all);
    Some(widened)
}

/// The statements of the replicator's policy that let it assume the role in another account.
const ACCOUNT_ROLE_SIDS: &[&str] = &["AssumeTheReplicasAccountRole", "AssumeNoOtherRole"];

/// Every Secrets Manager action that changes a secret: all denied to the replicator outside
/// `<prefix>/*` (its connection secret and the stack's other secrets included), whatever else
/// might allow them.
pub const EVERY_SECRET_WRITE: &[&str] = &[
    "secretsmanager:CreateSecret",
    "secretsmanager:PutSecretValue",
    "secretsmanager:UpdateSecret",
    "secretsmanager:UpdateSecretVersionStage",
    "secretsmanager:DeleteSecret",
    "secretsmanager:RestoreSecret",
    "secretsmanager:RotateSecret",
    "secretsmanager:CancelRotateSecret",
    "secretsmanager:TagResource",
    "secretsmanager:UntagResource",
    "secretsmanager:PutResourcePolicy",
    "secretsmanager:DeleteResourcePolicy",
    "secretsmanager:ReplicateSecretToRegions",
    "secretsmanager:RemoveRegionsFromReplication",
    "secretsmanager:StopReplicationToReplica",
];

/// The tag that tells the key of the replicas in another account from the stack's own.
pub const KEY_PURPOSE_TAG: &str = "vault-secrets-replicator:key";

/// Who and where: read once from STS and the configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub account: String,
    /// `aws`, `aws-cn` or `aws-us-gov`, from the caller's ARN.
    pub partition: String,
    pub region: String,
}

impl Identity {
    /// The partition of an ARN such as `arn:aws-cn:iam::123:user/x`.
    pub fn partition_of(arn: &str) -> Option<String> {
        arn.split(':')
            .nth(1)
            .filter(|p| !p.is_empty())
            .map(str::to_owned)
    }

    /// The DNS suffix of the partition's service endpoints.
    pub fn dns_suffix(&self) -> &'static str {
        if self.partition == "aws-cn" {
            "amazonaws.com.cn"
        } else {
            "amazonaws.com"
        }
    }
}

#[derive(Clone, Debug)]
pub struct Spec {
    pub cfg: Config,
    pub id: Identity,
    /// Paused by `deployer pause` (the schedule disabled): the schedule stays off and the
    /// functions refuse to sync until `deployer resume`, whatever `up` converges.
    pub paused: bool,
    /// In the view of one `[[sync]]` rule ([`Spec::syncs`]): that rule (its replicas are
    /// written under its prefix; the stack's own names keep `cfg.prefix`).
    rule: Option<Box<crate::config::SyncRule>>,
}

impl Spec {
    pub fn new(cfg: Config, id: Identity) -> Self {
        Self {
            cfg,
            id,
            paused: false,
            rule: None,
        }
    }

    /// The stack's syncs, each as a view of the stack with its settings and its prefix: the
    /// `[[sync]]` rules, or the one sync of the top-level keys.
    pub fn syncs(&self) -> Vec<Spec> {
        if self.cfg.rules.is_empty() {
            return vec![self.clone()];
        }
        self.cfg
            .rules
            .iter()
            .map(|rule| {
                let mut view = self.clone();
                view.cfg.replicator = rule.replicator.clone();
                view.cfg.rules = Vec::new();
                view.rule = Some(Box::new(rule.clone()));
                view
            })
            .collect()
    }

    /// The prefix the replicas are written under: the rule's in a rule's view, else the
    /// stack's.
    pub fn write_prefix(&self) -> &str {
        self.rule.as_ref().map_or(&self.cfg.prefix, |r| &r.prefix)
    }

    /// The rule's name in a rule's view.
    pub fn sync_name(&self) -> Option<&str> {
        self.rule.as_ref().map(|r| r.name.as_str())
    }

    /// This sync's source and destination as its replicas' tags name them: its mount (the
    /// one sync's is named as the prefix), its path (`/`: the whole mount), prefix, stack and
    /// rule.
    pub fn sync_source(&self) -> contract::SyncSource<'_> {
        let (mount, path_tag) = match &self.rule {
            Some(r) if !r.path.is_empty() => (r.mount.as_str(), r.path.as_str()),
            Some(r) => (r.mount.as_str(), "/"),
            None => (self.kv_mount(), "/"),
        };
        contract::SyncSource {
            prefix: self.write_prefix(),
            mount,
            path_tag,
            stack: Some(self.stack()),
            rule: self.sync_name(),
        }
    }

    /// A Sid suffix for the rule of this view: its name in CamelCase (`payments-prod`:
    /// `ForPaymentsProd`).
    pub fn sid_suffix(&self) -> String {
        let name = self.sync_name().unwrap_or_default();
        let camel: String = name
            .split('-')
            .map(|part| {
                let mut chars = part.chars();
                chars
                    .next()
                    .map(|c| c.to_ascii_uppercase().to_string() + chars.as_str())
                    .unwrap_or_default()
            })
            .collect();
        format!("For{camel}")
    }

    pub fn stack(&self) -> &str {
        &self.cfg.stack_name
    }

    pub fn tags(&self) -> BTreeMap<String, String> {
        stack_tags(self.stack())
    }

    pub fn arn(&self, service: &str, region: bool, resource: &str) -> String {
        let region = if region { self.id.region.as_str() } else { "" };
        format!(
            "arn:{}:{service}:{region}:{}:{resource}",
            self.id.partition, self.id.account
        )
    }

    /// The ARN of `resource` in another region of the account.
    pub fn arn_in(&self, region: &str, service: &str, resource: &str) -> String {
        format!(
            "arn:{}:{service}:{region}:{}:{resource}",
            self.id.partition, self.id.account
        )
    }

    // Names.
    /// The SSM parameter holding the stack's Vault CA certificate.
    pub fn ca_parameter(&self) -> String {
        format!("/{}/vault/ca-certificate", self.stack())
    }
    pub fn key_alias(&self) -> String {
        let safe: String = self
            .cfg
            .prefix
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || "/_-".contains(c) {
                    c
                } else {
                    '-'
                }
            })
            .collect();
        format!("alias/{safe}-encryption-key")
    }
    /// The role in another account this sync writes with (`account_role_arn`), if any.
    pub fn account_role_arn(&self) -> Option<&str> {
        self.cfg
            .replicator
            .account_role
            .as_ref()
            .map(|r| r.role_arn.as_str())
    }

    /// The role a rule's replicas are written with: the one it names in another account, or,
    /// for a rule in the stack's own account, the one `up` makes for it here (so that no rule's
    /// identity may write another rule's prefix). None for the one sync of the top-level keys
    /// in the stack's account: the replicator's own role writes it. (With Vault on EC2 the
    /// function reaches STS through the Vault network's endpoint for it.)
    pub fn writer_role(&self) -> Option<contract::account::AccountRole> {
        if let Some(role) = &self.cfg.replicator.account_role {
            return Some(role.clone());
        }
        let name = crate::config::rule_role_name(self.stack(), self.sync_name()?);
        Some(contract::account::AccountRole {
            role_arn: format!("{}{}", self.rule_role_arn_prefix(), self.sync_name()?),
            // The role's name (the function derives it as it does the ARN): not a control here,
            // where the trust names the replicator's role in this account; it keeps the trust
            // and the assuming code one shape for every rule.
            external_id: name,
        })
    }

    /// The ARN of the role `up` makes for a rule in the stack's account, but the rule's name:
    /// the function is given it ([`env::RULE_ROLE_ARN_PREFIX`]) rather than each role.
    pub fn rule_role_arn_prefix(&self) -> String {
        self.arn(
            "iam",
            false,
            &format!(
                "role{}{}",
                self.rule_role_path(),
                crate::config::rule_role_name(self.stack(), "")
            ),
        )
    }

    /// The IAM path of the roles `up` makes for the rules writing in the stack's account: the
    /// stack's roles of rules removed since are found under it.
    pub fn rule_role_path(&self) -> String {
        format!("{}{}/", crate::config::RULE_ROLE_PATH, self.stack())
    }

    /// The roles `up` makes for the rules writing in the stack's account, one each.
    pub fn home_rule_roles(&self) -> Result<Vec<AccountRoleSpec>, TemplateError> {
        let mut roles = Vec::new();
        for view in self.syncs() {
            if view.rule.is_some()
                && view.cfg.replicator.account_role.is_none()
                && let Some(role) = view.account_role()?
            {
                roles.push(role);
            }
        }
        Ok(roles)
    }

    /// The alias of the key `deployer target up` makes in another account, with
    /// `account_kms_key = "create"`: one per account and region, for every rule of the stack
    /// writing there.
    pub fn account_key_alias(&self) -> String {
        format!("alias/{}-replicas", self.stack())
    }

    pub fn key_description(&self) -> &'static str {
        "KMS Key used for AWS Secret Manager encryption"
    }
    pub fn topic_name(&self) -> String {
        format!("{}-replicator-failures", self.stack())
    }
    pub fn topic_arn(&self) -> String {
        self.arn("sns", true, &self.topic_name())
    }
    /// The bus replicated changes are announced on (`events = true`), when they are.
    pub fn event_bus_arn(&self) -> Option<String> {
        let bus = self.cfg.events_bus.as_deref()?;
        Some(self.arn("events", true, &format!("event-bus/{bus}")))
    }
    /// Whether failed runs are notified: the failure topic exists only with an address.
    pub fn notifies(&self) -> bool {
        self.cfg.notification_email.is_some()
    }
    pub fn role_name(&self) -> String {
        format!("{}-replicator", self.stack())
    }
    pub fn role_arn(&self) -> String {
        self.arn("iam", false, &format!("role/{}", self.role_name()))
    }
    /// The rotation function's role.
    pub fn rotation_role_name(&self) -> String {
        format!("{}-replicator-rotation", self.stack())
    }
    pub fn rotation_role_arn(&self) -> String {
        self.arn("iam", false, &format!("role/{}", self.rotation_role_name()))
    }
    /// The role the function serving `duty` runs as.
    pub fn role_arn_of(&self, duty: Duty) -> String {
        if duty.replicates() {
            self.role_arn()
        } else {
            self.rotation_role_arn()
        }
    }
    /// The secret holding the rotator's Vault credential (see [`contract::RotatorSecret`]).
    pub fn rotator_secret(&self) -> String {
        contract::rotator_secret_name(&self.cfg.prefix)
    }
    pub fn rotator_secret_arn_pattern(&self) -> String {
        self.secret_arn_pattern(&self.rotator_secret())
    }
    /// Whether the rotation function publishes a failed step's notice itself: with an email,
    /// and outside the Vault VPC (which has no way to SNS; there the failure shows in the
    /// function's logs and Lambda's error metrics).
    pub fn rotation_notifies(&self) -> bool {
        self.notifies() && !self.deploys_vault()
    }
    /// Whether Secrets Manager rotates the connection secret's AppRole secret id.
    pub fn rotates_secret_id(&self) -> bool {
        self.cfg.secret_id_rotation_days > 0
    }
    /// The code signing config's name in `plan` (Lambda names it only by an ARN it assigns).
    pub fn code_signing_name(&self) -> String {
        format!("{}-replicator-code-signing", self.stack())
    }
    /// The code signing config's description, by which (with the stack tag) it is found.
    pub fn code_signing_description(&self) -> String {
        format!(
            "{}: the replicator's functions run only code signed by the configured AWS Signer profile",
            self.stack()
        )
    }
    /// What `plan` and `up` say about code signing, as one line.
    pub fn code_signing_line(&self) -> String {
        match &self.cfg.code_signing_profile {
            Some(p) => format!(
                "Code signing: enforced; the functions run only code signed by {p} (Lambda refuses an unsigned or otherwise signed zip)\n"
            ),
            None => "Code signing: off; the functions run any code uploaded to them (set code_signing_profile to require an AWS Signer signature)\n".to_owned(),
        }
    }
    pub fn function_name(&self) -> String {
        format!("{}-replicator", self.stack())
    }
    pub fn function_arn(&self) -> String {
        self.arn(
            "lambda",
            true,
            &format!("function:{}", self.function_name()),
        )
    }
    pub fn log_group(&self) -> String {
        self.log_group_of(Duty::Sync)
    }
    pub fn log_group_arn(&self) -> String {
        self.log_group_arn_of(Duty::Sync)
    }
    /// The function that serves `duty`.
    pub fn function_name_of(&self, duty: Duty) -> String {
        match duty {
            Duty::Sync => self.function_name(),
            Duty::Watch => format!("{}-replicator-watch", self.stack()),
            Duty::Rotate => format!("{}-replicator-rotate", self.stack()),
        }
    }
    pub fn function_arn_of(&self, duty: Duty) -> String {
        self.arn(
            "lambda",
            true,
            &format!("function:{}", self.function_name_of(duty)),
        )
    }
    pub fn log_group_of(&self, duty: Duty) -> String {
        format!("/aws/lambda/{}", self.function_name_of(duty))
    }
    pub fn log_group_arn_of(&self, duty: Duty) -> String {
        self.arn(
            "logs",
            true,
            &format!("log-group:{}", self.log_group_of(duty)),
        )
    }
    /// Whether the stack has a function for `duty` (the watcher's only beside its own Vault,
    /// the rotation function only with automatic rotation).
    pub fn serves(&self, duty: Duty) -> bool {
        match duty {
            Duty::Sync => true,
            Duty::Watch => self.deploys_vault(),
            Duty::Rotate => self.rotates_secret_id(),
        }
    }
    /// The functions the stack has.
    pub fn duties(&self) -> Vec<Duty> {
        Duty::ALL.into_iter().filter(|d| self.serves(*d)).collect()
    }
    /// The SSM parameter holding the SHA-256 (hex) of the code `up` uploaded: the Vault host
    /// runs the watcher's binary only from a zip with this digest. A `SecureString` under the
    /// stack's key, so only the key's users (never the instance role, never a holder of
    /// `lambda:UpdateFunctionCode` alone) can write it.
    pub fn watcher_digest_parameter(&self) -> String {
        format!("/{}/vault/watcher-code-sha256", self.stack())
    }
    pub fn watcher_digest_parameter_arn(&self) -> String {
        self.arn(
            "ssm",
            true,
            &format!("parameter{}", self.watcher_digest_parameter()),
        )
    }
    pub fn rule_name(&self) -> String {
        format!("{}-replicator-schedule", self.stack())
    }
    pub fn rule_arn(&self) -> String {
        self.arn("events", true, &format!("rule/{}", self.rule_name()))
    }
    pub fn permission_id(&self) -> String {
        format!("{}-schedule-invokes", self.stack())
    }
    pub fn connection_secret(&self) -> String {
        connection_secret_name(&self.cfg.prefix)
    }
    /// Matches the connection secret's ARN (AWS appends `-` and 6 random characters).
    pub fn connection_secret_arn_pattern(&self) -> String {
        self.secret_arn_pattern(&self.connection_secret())
    }
    /// The KV v2 mount the replicator reads, which `vault-init` enables: named as the prefix, as
    /// in the sample.
    pub fn kv_mount(&self) -> &str {
        &self.cfg.prefix
    }
    /// Where the replicator reads in Vault: each rule's namespace (none: the login's), mount
    /// and path, once each; or the one sync's mount.
    pub fn vault_reads(&self) -> Vec<VaultRead> {
        let mut reads: Vec<VaultRead> = if self.cfg.rules.is_empty() {
            vec![VaultRead {
                namespace: None,
                mount: self.kv_mount().to_owned(),
                path: String::new(),
            }]
        } else {
            self.cfg
                .rules
                .iter()
                .map(|r| VaultRead {
                    namespace: r.namespace.clone(),
                    mount: r.mount.clone(),
                    path: r.path.clone(),
                })
                .collect()
        };
        reads.sort();
        reads.dedup();
        reads
    }
    pub fn deploys_vault(&self) -> bool {
        matches!(self.cfg.vault, VaultMode::Ec2 { .. })
    }
    /// The `Name` tag (and group name) of one of the stack's security groups.
    pub fn security_group_name(&self, group: Group) -> String {
        security_group_name(self.stack(), group)
    }
    pub fn vault_name(&self) -> String {
        format!("{}-vault", self.stack())
    }
    /// The Vault instance's IAM role (named as the instance).
    pub fn vault_instance_role_arn(&self) -> String {
        self.arn("iam", false, &format!("role/{}", self.vault_name()))
    }
    pub fn tls_secret_name(&self) -> String {
        format!("{}-vault/tls", self.stack())
    }
    /// The Vault policy, AppRole role and token role of this stack's replicator: per stack, so
    /// two stacks on one Vault never overwrite each other's (each reads only its own mount).
    pub fn vault_role_name(&self) -> String {
        format!("{}-replicator", self.stack())
    }
    /// Where `vault-init --keys-to secret` stores the unseal keys and root token.
    pub fn init_keys_secret_name(&self) -> String {
        format!("{}-vault/init-keys", self.stack())
    }
    /// Matches the ARN of the secret `name` (AWS appends `-` and 6 random characters).
    pub(crate) fn secret_arn_pattern(&self, name: &str) -> String {
        self.arn("secretsmanager", true, &format!("secret:{name}-??????"))
    }

    /// What the replicator may do on `<prefix>/*` (DeleteSecret, under `delete`, is a statement
    /// of its own: only on secrets tagged as its own).
    pub fn secret_write_actions(&self) -> Vec<&'static str> {
        vec![
            "secretsmanager:CreateSecret",
            "secretsmanager:PutSecretValue",
            "secretsmanager:TagResource",
            "secretsmanager:DescribeSecret",
            "secretsmanager:UpdateSecretVersionStage",
            "secretsmanager:RestoreSecret",
            // Tags this tool set that are no longer wanted (never the owner tag: a deny).
            "secretsmanager:UntagResource",
            // A replica region no longer configured, and every one before a deletion.
            "secretsmanager:RemoveRegionsFromReplication",
        ]
    }

    /// The replica regions' statements: replication to exactly those regions, their keys.
    fn replication_statements(&self) -> Result<String, TemplateError> {
        let regions = &self.cfg.replicator.replica_regions;
        if regions.is_empty() {
            return Ok(String::new());
        }
        let json = |v: &Vec<String>| serde_json::to_string(v).map_err(TemplateError::NotJson);
        let (keys, keyed_regions): (Vec<String>, Vec<&str>) = self.replica_keys().unzip();
        let mut key_statements = String::new();
        if !keys.is_empty() {
            // The replica is encrypted by Secrets Manager on the replicator's behalf, in the
            // replica's region; the request starts in the stack's.
            let mut services: Vec<String> = keyed_regions
                .iter()
                .map(|r| format!("secretsmanager.{r}.{}", self.id.dns_suffix()))
                .collect();
            services.push(format!(
                "secretsmanager.{}.{}",
                self.id.region,
                self.id.dns_suffix()
            ));
            key_statements.push_str(&policy::render(
                policy::REPLICATOR_REPLICA_KEYS,
                &[
                    ("replica_keys", &json(&keys)?),
                    ("replica_services", &json(&services)?),
                ],
            )?);
        }
        let defaults = self.default_key_regions();
        if !defaults.is_empty() {
            key_statements.push_str(&policy::render(
                policy::REPLICATOR_DEFAULT_KEYS,
                &[("default_key_regions", &json(&defaults)?)],
            )?);
        }
        let names: Vec<String> = regions.iter().map(|r| r.region.clone()).collect();
        policy::render(
            policy::REPLICATOR_REPLICATION,
            &[
                ("partition", &self.id.partition),
                ("region", &self.id.region),
                ("account", &self.id.account),
                ("prefix", self.write_prefix()),
                ("regions", &json(&names)?),
                ("replica_key_statements", &key_statements),
            ],
        )
    }

    /// (key ARN, region) of each replica region given a key of its own.
    fn replica_keys(&self) -> impl Iterator<Item = (String, &str)> {
        self.cfg
            .replicator
            .replica_regions
            .iter()
            .filter_map(|r| Some((r.kms_key_id.clone()?, r.region.as_str())))
    }

    /// Every key in each replica region that uses its `aws/secretsmanager` key (no key given).
    fn default_key_regions(&self) -> Vec<String> {
        self.cfg
            .replicator
            .replica_regions
            .iter()
            .filter(|r| r.kms_key_id.is_none())
            .map(|r| self.arn_in(&r.region, "kms", "key/*"))
            .collect()
    }

    /// The keys the role may use at all: the stack's, the replica regions' own keys, and every
    /// key of a replica region that uses its default key (a deny of its own keeps those to
    /// `aws/secretsmanager`).
    fn usable_keys(&self, key_arn: &str) -> Result<String, TemplateError> {
        let mut keys = vec![key_arn.to_owned()];
        keys.extend(self.replica_keys().map(|(key, _)| key));
        keys.extend(self.default_key_regions());
        let text = if keys.len() == 1 {
            serde_json::to_string(&keys[0])
        } else {
            serde_json::to_string(&keys)
        };
        text.map_err(TemplateError::NotJson)
    }

    /// CreateSecret and ReplicateSecretToRegions may name only the configured regions (none
    /// without them).
    fn replica_region_condition(&self) -> Result<String, TemplateError> {
        let regions: Vec<&str> = self
            .cfg
            .replicator
            .replica_regions
            .iter()
            .map(|r| r.region.as_str())
            .collect();
        let condition = if regions.is_empty() {
            serde_json::json!({"Null": {"secretsmanager:AddReplicaRegions": "false"}})
        } else {
            serde_json::json!({"ForAnyValue:StringNotEquals": {"secretsmanager:AddReplicaRegions": regions}})
        };
        serde_json::to_string(&condition).map_err(TemplateError::NotJson)
    }

    fn common_vars(&self) -> Vec<(&'static str, String)> {
        vec![
            ("partition", self.id.partition.clone()),
            ("region", self.id.region.clone()),
            ("account", self.id.account.clone()),
            ("prefix", self.write_prefix().to_owned()),
            ("dns_suffix", self.id.dns_suffix().to_owned()),
            // The owner tag, named once for both programs.
            ("owner_tag", contract::tags::MANAGED_BY.to_owned()),
            ("owner", contract::tags::MANAGED_BY_VALUE.to_owned()),
            ("policy_tag", contract::tags::RESOURCE_POLICY.to_owned()),
            ("stack_tag", contract::tags::STACK.to_owned()),
            ("stack", self.stack().to_owned()),
        ]
    }

    /// A fragment of statements (`policies/*-statements.json`) filled with the common
    /// variables when `wanted`; nothing otherwise.
    fn statements_if(&self, wanted: bool, template: &str) -> Result<String, TemplateError> {
        if !wanted {
            return Ok(String::new());
        }
        let vars = self.common_vars();
        let refs: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
        policy::render(template, &refs)
    }

    /// Publishing to the failure topic and no other, when there is one: the replicator's (a
    /// shell run's notice) and the Vault host's (the watcher's notice of a failed run).
    fn sns_statements(&self) -> Result<String, TemplateError> {
        Ok(match &self.cfg.notification_email {
            Some(_) => policy::render(policy::REPLICATOR_SNS, &[("topic_arn", &self.topic_arn())])?,
            None => String::new(),
        })
    }

    /// Putting change events on the stack's bus and no other, when `events = true`.
    fn events_statements(&self) -> Result<String, TemplateError> {
        Ok(match self.event_bus_arn() {
            Some(bus) => policy::render(
                policy::REPLICATOR_EVENTS,
                &[
                    ("event_bus_arn", &bus),
                    ("event_source", contract::events::SOURCE),
                ],
            )?,
            None => String::new(),
        })
    }

    /// The Vault network's EventBridge endpoint's policy: only the replicator's role, putting
    /// its change events on the stack's bus.
    pub fn events_endpoint_policy(&self) -> Result<Value, TemplateError> {
        let bus = self.event_bus_arn().ok_or_else(|| {
            TemplateError::Unknown("event_bus_arn (the stack sends no events)".into())
        })?;
        self.render(
            policy::EVENTS_ENDPOINT_POLICY,
            vec![
                ("event_bus_arn", bus),
                ("event_source", contract::events::SOURCE.to_owned()),
                ("replicator_role_arn", self.role_arn()),
            ],
        )
    }

    /// `items` rendered by `f` as a JSON list, for a template.
    fn json_list<T>(
        &self,
        items: Vec<T>,
        f: impl Fn(T) -> String,
    ) -> Result<String, TemplateError> {
        let list: Vec<String> = items.into_iter().map(f).collect();
        serde_json::to_string(&list).map_err(TemplateError::NotJson)
    }

    pub(crate) fn render(
        &self,
        template: &str,
        extra: Vec<(&'static str, String)>,
    ) -> Result<Value, TemplateError> {
        let mut vars = self.common_vars();
        vars.extend(extra);
        let refs: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
        policy::render_json(template, &refs)
    }

    pub fn replicator_trust(&self) -> Result<Value, TemplateError> {
        self.render(policy::REPLICATOR_TRUST, vec![])
    }

    /// The replicator's inline policy; needs the key's ARN and, with Vault on EC2, the VPC's id
    /// (its network interfaces go only there; unknown before the VPC exists). With `[[sync]]`
    /// rules: every rule's statements in one document (see [`Spec::merged`]), `sts:AssumeRole`
    /// on exactly the rules' roles in other accounts.
    pub fn replicator_policy(
        &self,
        key_arn: &str,
        vpc_id: Option<&str>,
    ) -> Result<Value, TemplateError> {
        let mut document = self.merged(|view| view.sync_replicator_policy(key_arn, vpc_id))?;
        if !self.cfg.rules.is_empty() && self.syncs().iter().all(|v| v.writer_role().is_some()) {
            // No rule writes with this role: it may write no secret at all.
            Self::deny_every_write(&mut document)?;
        }
        Ok(document)
    }

    /// `document` of each sync in one: the one sync's as it is; with rules, the rules writing
    /// in the stack's account merged statement by statement (the same statement over several
    /// prefixes lists them all; an allow that differs otherwise stays the rule's own, its Sid
    /// naming the rule; the regions the replicas may be replicated to, the union of the
    /// rules'), then, of each rule writing in another account, its role to assume. Without a
    /// rule in the stack's account, the first rule's document is the base (it writes nothing
    /// here).
    fn merged(
        &self,
        document: impl Fn(&Spec) -> Result<Value, TemplateError>,
    ) -> Result<Value, TemplateError> {
        let views = self.syncs();
        if self.cfg.rules.is_empty() {
            return document(&views[0]);
        }
        let (home, away): (Vec<&Spec>, Vec<&Spec>) =
            views.iter().partition(|v| v.writer_role().is_none());
        let mut merged = match home.is_empty() {
            false => Self::merge_all(&home, &document)?,
            true => document(away[0])?,
        };
        for view in &away {
            let doc = document(view)?;
            let assume: Vec<Value> = doc["Statement"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|s| ACCOUNT_ROLE_SIDS.contains(&s["Sid"].as_str().unwrap_or_default()))
                .cloned()
                .collect();
            policy::merge_statements(
                &mut merged,
                &serde_json::json!({ "Statement": assume }),
                &view.sid_suffix(),
            )?;
        }
        Ok(merged)
    }

    /// `document` of each of `views` (at least one; syncs writing in one account) merged
    /// statement by statement, with one deny of replication to any but the views' regions.
    fn merge_all(
        views: &[&Spec],
        document: &impl Fn(&Spec) -> Result<Value, TemplateError>,
    ) -> Result<Value, TemplateError> {
        const REGIONS_DENY: &str = "ReplicateOnlyToTheConfiguredRegions";
        let base = views
            .first()
            .ok_or_else(|| TemplateError::Merge("no sync to merge".into()))?;
        let mut merged = document(base)?;
        // Each rule's own denies of the other rules' replicas name every rule of `views`.
        let has_rule_denies = Self::strip_rule_denies(&mut merged);
        let regions_deny = merged["Statement"]
            .as_array()
            .and_then(|s| s.iter().position(|s| s["Sid"] == REGIONS_DENY));
        // Each view's own regions deny, scoped to its prefix: the one over `*` below allows
        // every view's regions, so a view replicating to fewer keeps its own.
        let mut own_denies = Vec::new();
        let regions_of = |v: &Spec| -> Vec<String> {
            let mut r: Vec<String> = v
                .cfg
                .replicator
                .replica_regions
                .iter()
                .map(|r| r.region.clone())
                .collect();
            r.sort();
            r.dedup();
            r
        };
        let mut union: Vec<String> = views.iter().flat_map(|v| regions_of(v)).collect();
        union.sort();
        union.dedup();
        for (i, view) in views.iter().enumerate() {
            let mut doc = if i == 0 {
                merged.clone()
            } else {
                let mut doc = document(view)?;
                Self::strip_rule_denies(&mut doc);
                doc
            };
            let find = |sid: &str| {
                doc["Statement"]
                    .as_array()
                    .and_then(|s| s.iter().find(|s| s["Sid"] == sid).cloned())
            };
            let own = find(REGIONS_DENY);
            let prefix = find("WriteReplicatedSecrets").map(|s| s["Resource"].clone());
            if let (Some(mut own), Some(prefix)) = (own, prefix)
                && regions_of(view) != union
            {
                own["Sid"] = Value::String(format!("{REGIONS_DENY}{}", view.sid_suffix()));
                own["Resource"] = prefix;
                own_denies.push(own);
            }
            if i == 0 {
                continue;
            }
            if let Some(statements) = doc["Statement"].as_array_mut() {
                statements.retain(|s| s["Sid"] != REGIONS_DENY);
            }
            policy::merge_statements(&mut merged, &doc, &view.sid_suffix())?;
        }
        if let Some(at) = regions_deny {
            let mut all = (*base).clone();
            all.cfg.replicator.replica_regions = views
                .iter()
                .flat_map(|v| v.cfg.replicator.replica_regions.iter().cloned())
                .collect();
            all.cfg.replicator.replica_regions.sort();
            all.cfg
                .replicator
                .replica_regions
                .dedup_by(|a, b| a.region == b.region);
            let condition: Value = serde_json::from_str(&all.replica_region_condition()?)?;
            merged["Statement"][at]["Condition"] = condition;
        }
        if let Some(statements) = merged["Statement"].as_array_mut() {
            statements.extend(own_denies);
        }
        if has_rule_denies {
            let names: Vec<&str> = views.iter().filter_map(|v| v.sync_name()).collect();
            let text = format!(
                "{{\"Statement\": [{}]}}",
                base.rule_statements(&names)?.trim_start_matches(',')
            );
            let denies: Value = serde_json::from_str(&text)?;
            if let (Some(all), Some(denies)) = (
                merged["Statement"].as_array_mut(),
                denies["Statement"].as_array(),
            ) {
                all.extend(denies.iter().cloned());
            }
        }
        Ok(merged)
    }

    /// The Sids of [`Spec::rule_statements`].
    const RULE_DENIES: [&'static str; 3] = [
        "NeverWriteAnotherRulesReplicas",
        "NeverNameAnotherRule",
        "NeverRemoveTheRuleTag",
    ];

    /// Takes the rule denies out of `document`; whether it had them.
    fn strip_rule_denies(document: &mut Value) -> bool {
        let Some(statements) = document["Statement"].as_array_mut() else {
            return false;
        };
        let before = statements.len();
        statements.retain(|s| {
            !s["Sid"]
                .as_str()
                .is_some_and(|sid| Self::RULE_DENIES.contains(&sid))
        });
        statements.len() != before
    }

    /// The denies that keep a role writing for the rules `names` off every other rule's
    /// replicas (by their `replica-rule` tag), as off another stack's.
    fn rule_statements(&self, names: &[&str]) -> Result<String, TemplateError> {
        let mut vars = self.common_vars();
        vars.extend([
            (
                "every_secret_write",
                serde_json::to_string(EVERY_SECRET_WRITE).map_err(TemplateError::NotJson)?,
            ),
            ("rule_tag", contract::tags::RULE.to_owned()),
            (
                "rule_names",
                serde_json::to_string(names).map_err(TemplateError::NotJson)?,
            ),
        ]);
        let refs: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
        policy::render(policy::REPLICA_RULE_STATEMENTS, &refs)
    }

    /// `document` (the replicator's, every rule writing with a role of its own) denying every
    /// secret write anywhere, in place of the deny outside the first rule's prefix.
    fn deny_every_write(document: &mut Value) -> Result<(), TemplateError> {
        let Some(statements) = document["Statement"].as_array_mut() else {
            return Ok(());
        };
        statements.retain(|s| s["Sid"] != "DenyEveryWriteOutsideThePrefix");
        statements.push(serde_json::json!({
            "Sid": "WriteNoSecretItself",
            "Effect": "Deny",
            "Action": EVERY_SECRET_WRITE,
            "Resource": "*"
        }));
        Ok(())
    }

    /// The role in another account this sync's rule names, serving every rule of `whole`
    /// that names it: each one's statements there, merged.
    pub fn shared_account_role(
        &self,
        whole: &Spec,
    ) -> Result<Option<AccountRoleSpec>, TemplateError> {
        if self.cfg.replicator.account_role.is_none() {
            return Ok(None);
        }
        let Some(mut wanted) = self.account_role()? else {
            return Ok(None);
        };
        let views = whole.syncs();
        let same: Vec<&Spec> = views
            .iter()
            .filter(|v| v.account_role_arn() == self.account_role_arn())
            .collect();
        if same.len() > 1 {
            wanted.policy = Self::merge_all(&same, &|v: &Spec| {
                Ok(v.account_role()?.map(|r| r.policy).unwrap_or_default())
            })?;
        }
        Ok(Some(wanted))
    }

    fn sync_replicator_policy(
        &self,
        key_arn: &str,
        vpc_id: Option<&str>,
    ) -> Result<Value, TemplateError> {
        // With a role of the rule's own (in another account, or made for a rule here), that
        // role writes the replicas: this one writes no secret, and may assume that role only.
        let account_role = self.writer_role();
        let writes_here = account_role.is_none();
        let optional = if writes_here {
            self.optional_replica_statements()?
        } else {
            OPTIONAL_REPLICA_STATEMENTS.map(|name| (name, String::new()))
        };
        let account_role_statements = match account_role {
            Some(role) => policy::render(
                policy::REPLICATOR_ACCOUNT_ROLE,
                &[("account_role_arn", &role.role_arn)],
            )?,
            None => String::new(),
        };
        let vpc = self.vpc_statements(vpc_id)?;
        let mut vars = vec![("replica_write_statements", self.replica_write_statements()?)];
        vars.extend(optional);
        vars.extend([
            (
                "connection_secret_arn",
                self.connection_secret_arn_pattern(),
            ),
            ("key_arn", key_arn.to_owned()),
            ("usable_keys", self.usable_keys(key_arn)?),
            (
                "log_stream_arns",
                self.json_list(
                    self.duties()
                        .into_iter()
                        .filter(|d| d.replicates())
                        .collect(),
                    |d| format!("{}:*", self.log_group_arn_of(d)),
                )?,
            ),
            ("sns_statements", self.sns_statements()?),
            ("events_statements", self.events_statements()?),
            ("vpc_statements", vpc),
            ("account_role_statements", account_role_statements),
        ]);
        let mut document = self.render(policy::REPLICATOR_POLICY, vars)?;
        if !writes_here && let Some(statements) = document["Statement"].as_array_mut() {
            statements.retain(|s| {
                !s["Sid"]
                    .as_str()
                    .is_some_and(|sid| WRITES_HERE.contains(&sid))
            });
        }
        Ok(document)
    }

    /// The statements for the replicas that only some configurations need, as template
    /// variables: deleting them (`deletion_policy = delete`), putting and auditing their
    /// resource policy (never public, on the replicas this tool owns), replicating them to
    /// `replica_regions`.
    fn optional_replica_statements(&self) -> Result<[(&'static str, String); 3], TemplateError> {
        let [delete, resource_policy, replication] = OPTIONAL_REPLICA_STATEMENTS;
        Ok([
            (
                delete,
                self.statements_if(
                    self.cfg.replicator.deletion_policy == contract::DeletionPolicy::Delete,
                    policy::REPLICATOR_DELETE,
                )?,
            ),
            (
                resource_policy,
                self.statements_if(
                    self.cfg.replicator.resource_policy.is_some(),
                    policy::REPLICATOR_RESOURCE_POLICY,
                )?,
            ),
            (replication, self.replication_statements()?),
        ])
    }

    /// Writing the replicas under the prefix, and the denies around it: the statements the
    /// replicator's role and a role in another account (`account_role_arn`) share.
    fn replica_write_statements(&self) -> Result<String, TemplateError> {
        let actions =
            serde_json::to_string(&self.secret_write_actions()).map_err(TemplateError::NotJson)?;
        let every_write =
            serde_json::to_string(EVERY_SECRET_WRITE).map_err(TemplateError::NotJson)?;
        let mut vars = self.common_vars();
        vars.extend([
            ("secret_write_actions", actions),
            ("every_secret_write", every_write),
            ("replica_region_condition", self.replica_region_condition()?),
        ]);
        let refs: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
        policy::render(policy::REPLICA_WRITES, &refs)
    }

    /// The role the rule's replicas are written with ([`Spec::writer_role`]), as `deployer
    /// target up` makes it in another account (`account_role_arn`), or `up` for a rule in the
    /// stack's account: the replicator's own statements for the replicas, scoped to the rule's
    /// prefix there; no secret value read; assumed only by this stack's replicator role, with
    /// the external id.
    pub fn account_role(&self) -> Result<Option<AccountRoleSpec>, TemplateError> {
        let Some(role) = self.writer_role() else {
            return Ok(None);
        };
        let role = &role;
        let there = self.in_account_of(role);
        let home = self.cfg.replicator.account_role.is_none();
        // Secrets Manager's own key there, and the replica regions' keys given: no other key.
        // At home (where the stack's key is the only one by alias), the keys of the replica
        // regions without a key given too: their own deny keeps those to `aws/secretsmanager`.
        let mut replica_keys: Vec<String> = there.replica_keys().map(|(key, _)| key).collect();
        if home {
            replica_keys.extend(there.default_key_regions());
        }
        let key_scope = if replica_keys.is_empty() {
            r#""Resource": "*""#.to_owned()
        } else {
            format!(
                r#""NotResource": {}"#,
                serde_json::to_string(&replica_keys).map_err(TemplateError::NotJson)?
            )
        };
        // The keys it may use there: Secrets Manager's own, and the one `target up` makes; in
        // the stack's account, the stack's key alone.
        let key_aliases = match self.cfg.replicator.account_key {
            _ if home => {
                serde_json::to_string(&[self.key_alias()]).map_err(TemplateError::NotJson)?
            }
            AccountKmsKey::AwsSecretsManager => r#""alias/aws/secretsmanager""#.to_owned(),
            AccountKmsKey::Create => serde_json::to_string(&[
                "alias/aws/secretsmanager".to_owned(),
                self.account_key_alias(),
            ])
            .map_err(TemplateError::NotJson)?,
        };
        let rule_statements = match self.sync_name() {
            Some(name) => self.rule_statements(&[name])?,
            None => String::new(),
        };
        let mut vars = vec![
            ("key_scope", key_scope),
            ("key_aliases", key_aliases),
            ("rule_statements", rule_statements),
            (
                "replica_write_statements",
                there.replica_write_statements()?,
            ),
        ];
        vars.extend(there.optional_replica_statements()?);
        let policy = there.render(policy::ACCOUNT_ROLE_POLICY, vars)?;
        let trust = self.render(
            policy::ACCOUNT_ROLE_TRUST,
            vec![
                ("replicator_role_arn", self.role_arn()),
                ("external_id", role.external_id.clone()),
            ],
        )?;
        Ok(Some(AccountRoleSpec {
            arn: role.role_arn.clone(),
            trust,
            policy,
        }))
    }

    /// This sync's view (a rule's prefix and settings) in the account of `role` and the rule's
    /// region: where the replicas are written.
    pub fn in_account_of(&self, role: &contract::account::AccountRole) -> Spec {
        let mut there = self.clone();
        there.id.account = role.account().to_owned();
        if let Some(region) = self.rule.as_ref().and_then(|r| r.region.clone()) {
            there.id.region = region;
        }
        there
    }

    /// The network interfaces of a function in the Vault VPC (with Vault on EC2).
    /// With Vault on EC2 the VPC must be known: a policy naming a VPC not made yet is itself
    /// known only after apply ([`Spec::replicator_role_spec`] leaves it unset),
    /// never rendered with a stand-in.
    fn vpc_statements(&self, vpc_id: Option<&str>) -> Result<String, TemplateError> {
        if !self.deploys_vault() {
            return Ok(String::new());
        }
        let vpc_id = vpc_id.ok_or_else(|| TemplateError::Unknown("vpc_id".into()))?;
        policy::render(
            policy::REPLICATOR_VPC,
            &[
                ("partition", &self.id.partition),
                ("region", &self.id.region),
                ("account", &self.id.account),
                ("vpc_id", vpc_id),
            ],
        )
    }

    pub fn key_policy(&self) -> Result<Value, TemplateError> {
        // Who publishes to the encrypted topic: the replicator and, beside the stack's own
        // Vault, the change watcher (the notice of a failed run it started).
        let mut publishers = vec![self.role_arn()];
        if self.deploys_vault() {
            publishers.push(self.vault_instance_role_arn());
        }
        if self.rotates_secret_id() && self.rotation_notifies() {
            publishers.push(self.rotation_role_arn());
        }
        self.render(
            policy::KMS_KEY_POLICY,
            vec![
                (
                    "publisher_arns",
                    serde_json::to_string(&publishers).map_err(TemplateError::NotJson)?,
                ),
                (
                    "parameter_arns",
                    serde_json::to_string(&[
                        self.arn("ssm", true, &format!("parameter{}", self.ca_parameter())),
                        self.watcher_digest_parameter_arn(),
                    ])
                    .map_err(TemplateError::NotJson)?,
                ),
            ],
        )
    }

    /// Only the replicator role (and the rotation function's), and only from inside the stack's
    /// functions (credentials of the role taken elsewhere do not read it), may read the
    /// connection secret.
    pub fn connection_secret_policy(&self) -> Result<Value, TemplateError> {
        let mut readers = vec![self.role_arn()];
        if self.rotates_secret_id() {
            readers.push(self.rotation_role_arn());
        }
        let secret_arn = self.connection_secret_arn_pattern();
        let mut doc = self.render(
            policy::CONNECTION_SECRET_POLICY,
            vec![
                (
                    "role_arns",
                    serde_json::to_string(&readers).map_err(TemplateError::NotJson)?,
                ),
                (
                    "function_arns",
                    self.json_list(self.duties(), |d| self.function_arn_of(d))?,
                ),
                ("secret_arn", secret_arn.clone()),
            ],
        )?;
        // The rotation role writes the secret only from inside the rotation function: its
        // credentials taken elsewhere cannot point the replicator at another Vault.
        if self.rotates_secret_id()
            && let Some(statements) = doc["Statement"].as_array_mut()
        {
            statements.push(serde_json::json!({
                "Sid": "TheRotationRoleWritesOnlyFromTheRotationFunction",
                "Effect": "Deny",
                "Principal": {"AWS": "*"},
                "Action": [
                    "secretsmanager:PutSecretValue",
                    "secretsmanager:UpdateSecretVersionStage",
                    "secretsmanager:TagResource",
                ],
                "Resource": secret_arn,
                "Condition": {
                    "ArnEquals": {"aws:PrincipalArn": self.rotation_role_arn()},
                    "ArnNotEquals": {"lambda:SourceFunctionArn": self.function_arn_of(Duty::Rotate)},
                },
            }));
        }
        Ok(doc)
    }

    /// The rotator secret's resource policy: only the rotation function's role, and only from
    /// inside the rotation function, reads it.
    pub fn rotator_secret_policy(&self) -> Result<Value, TemplateError> {
        self.render(
            policy::CONNECTION_SECRET_POLICY,
            vec![
                (
                    "role_arns",
                    serde_json::to_string(&[self.rotation_role_arn()])
                        .map_err(TemplateError::NotJson)?,
                ),
                (
                    "function_arns",
                    serde_json::to_string(&[self.function_arn_of(Duty::Rotate)])
                        .map_err(TemplateError::NotJson)?,
                ),
                ("secret_arn", self.rotator_secret_arn_pattern()),
            ],
        )
    }

    /// The Secrets Manager VPC endpoint's policy: calls from this account on the replicas, the
    /// connection secret and the TLS secret (and the unscoped listing); any other secret, or
    /// another account's credentials, not through this endpoint.
    pub fn secretsmanager_endpoint_policy(&self) -> Result<Value, TemplateError> {
        // Every sync writing in this account passes, whichever role it writes with.
        let views = self.syncs();
        let here: Vec<&Spec> = views
            .iter()
            .filter(|v| v.cfg.replicator.account_role.is_none())
            .collect();
        match here.is_empty() {
            true => views[0].sync_endpoint_policy(),
            false => Self::merge_all(&here, &Spec::sync_endpoint_policy),
        }
    }

    /// The roles of the rules writing in the stack's account ([`Spec::home_rule_roles`]): with
    /// Vault on EC2, the function reaches STS through an endpoint of the Vault network.
    pub fn assumes_roles_here(&self) -> bool {
        self.syncs()
            .iter()
            .any(|v| v.rule.is_some() && v.cfg.replicator.account_role.is_none())
    }

    /// The Vault network's STS endpoint's policy: only the replicator's role, assuming only its
    /// rules' roles.
    pub fn sts_endpoint_policy(&self) -> Result<Value, TemplateError> {
        let arns: Vec<String> = self
            .syncs()
            .iter()
            .filter(|v| v.cfg.replicator.account_role.is_none())
            .filter_map(|v| v.writer_role().map(|r| r.role_arn))
            .collect();
        self.render(
            policy::STS_ENDPOINT_POLICY,
            vec![
                (
                    "rule_role_arns",
                    serde_json::to_string(&arns).map_err(TemplateError::NotJson)?,
                ),
                ("replicator_role_arn", self.role_arn()),
            ],
        )
    }

    /// The policy of the Vault network's endpoint of `service` (its last `.` part).
    pub fn endpoint_policy(&self, service: &str) -> Result<Value, TemplateError> {
        match service.rsplit('.').next() {
            Some("sts") => self.sts_endpoint_policy(),
            Some("events") => self.events_endpoint_policy(),
            _ => self.secretsmanager_endpoint_policy(),
        }
    }

    fn sync_endpoint_policy(&self) -> Result<Value, TemplateError> {
        let mut actions = self.secret_write_actions();
        actions.extend([
            "secretsmanager:DeleteSecret",
            "secretsmanager:GetSecretValue",
            "secretsmanager:UpdateSecret",
            "secretsmanager:ReplicateSecretToRegions",
        ]);
        let actions = serde_json::to_string(&actions).map_err(TemplateError::NotJson)?;
        self.render(
            policy::SECRETSMANAGER_ENDPOINT_POLICY,
            vec![
                ("actions", actions),
                (
                    "connection_secret_arn",
                    self.connection_secret_arn_pattern(),
                ),
                (
                    "tls_secret_arn",
                    self.secret_arn_pattern(&self.tls_secret_name()),
                ),
                ("rotator_secret_arn", self.rotator_secret_arn_pattern()),
            ],
        )
    }

    /// The rotation function's role: read, write a version of and restage the connection
    /// secret, tag it with the new accessor only, read the rotator's credential; every other
    /// secret write and read, and any other key use, denied.
    pub fn rotation_policy(
        &self,
        key_arn: &str,
        vpc_id: Option<&str>,
    ) -> Result<Value, TemplateError> {
        let allowed = [
            "secretsmanager:PutSecretValue",
            "secretsmanager:UpdateSecretVersionStage",
            "secretsmanager:TagResource",
        ];
        let others: Vec<&str> = EVERY_SECRET_WRITE
            .iter()
            .copied()
            .filter(|a| !allowed.contains(a))
            .collect();
        let json = |v: &[&str]| serde_json::to_string(v).map_err(TemplateError::NotJson);
        self.render(
            policy::ROTATION_POLICY,
            vec![
                (
                    "connection_secret_arn",
                    self.connection_secret_arn_pattern(),
                ),
                ("rotator_secret_arn", self.rotator_secret_arn_pattern()),
                ("accessor_tag", contract::ACCESSOR_TAG.to_owned()),
                ("every_secret_write", json(EVERY_SECRET_WRITE)?),
                ("other_writes", json(&others)?),
                ("key_arn", key_arn.to_owned()),
                (
                    "log_stream_arn",
                    format!("{}:*", self.log_group_arn_of(Duty::Rotate)),
                ),
                ("vpc_statements", self.vpc_statements(vpc_id)?),
                (
                    "sns_statements",
                    if self.rotation_notifies() {
                        self.sns_statements()?
                    } else {
                        String::new()
                    },
                ),
                ("key_services", self.rotation_key_services(false)?),
                // Lambda decrypts the function's environment with its grant.
                ("key_services_and_lambda", self.rotation_key_services(true)?),
            ],
        )
    }

    /// The services the rotation role uses the stack key through: Secrets Manager, and SNS
    /// for its failure notices (the topic is encrypted with the key).
    fn rotation_key_services(&self, lambda: bool) -> Result<String, TemplateError> {
        let service = |name: &str| format!("{name}.{}.{}", self.id.region, self.id.dns_suffix());
        let mut services = vec![service("secretsmanager")];
        if self.rotation_notifies() {
            services.push(service("sns"));
        }
        if lambda {
            services.push(service("lambda"));
        }
        serde_json::to_string(&services).map_err(TemplateError::NotJson)
    }

    /// The init-keys secret's resource policy: only `principal_arn` (who ran `vault-init`)
    /// reads it.
    pub fn init_keys_policy(&self, principal_arn: &str) -> Result<Value, TemplateError> {
        self.render(
            policy::SECRET_READ_BY_ONE_ROLE,
            vec![
                ("role_arn", principal_arn.to_owned()),
                (
                    "secret_arn",
                    self.secret_arn_pattern(&self.init_keys_secret_name()),
                ),
            ],
        )
    }

    pub fn vault_instance_trust(&self) -> Result<Value, TemplateError> {
        self.render(policy::VAULT_INSTANCE_TRUST, vec![])
    }

    pub fn vault_instance_policy(&self, key_arn: &str) -> Result<Value, TemplateError> {
        self.render(
            policy::VAULT_INSTANCE_POLICY,
            vec![
                ("tls_secret_name", self.tls_secret_name()),
                ("key_arn", key_arn.to_owned()),
                ("watch_function_arn", self.function_arn_of(Duty::Watch)),
                ("digest_parameter_arn", self.watcher_digest_parameter_arn()),
                (
                    "host_namespace",
                    contract::metrics::host_namespace(self.stack()),
                ),
                ("sns_statements", self.sns_statements()?),
            ],
        )
    }

    /// The environment of the function serving `duty`: the watcher's says so; the rotation
    /// function's names the two secrets it uses, nothing of a sync.
    pub fn lambda_environment_of(&self, duty: Duty, key_arn: &str) -> BTreeMap<String, String> {
        if duty == Duty::Rotate {
            let mut vars = BTreeMap::from([
                (env::CONNECTION_SECRET.to_owned(), self.connection_secret()),
                (env::ROTATOR_SECRET.to_owned(), self.rotator_secret()),
            ]);
            // Secrets Manager tells nobody of a failed rotation: the function does, where it
            // can reach SNS.
            if self.rotation_notifies() {
                vars.insert(env::SNS_TOPIC_ARN.to_owned(), self.topic_arn());
            }
            return vars;
        }
        let mut vars = self.lambda_environment(key_arn);
        if self.paused {
            vars.insert(env::PAUSED.to_owned(), "true".to_owned());
        }
        if duty == Duty::Watch {
            vars.insert(env::SERVES_WATCHER.to_owned(), "true".to_owned());
        }
        vars
    }

    /// The Lambda's environment: the replicator reads exactly these (see `contract::env`).
    pub fn lambda_environment(&self, key_arn: &str) -> BTreeMap<String, String> {
        let r = &self.cfg.replicator;
        // No SNS topic here: a failed invocation (a failed sync, a crash, a timeout, a bad
        // setting) reaches the topic through the function's on-failure destination, from
        // outside the VPC, so the function needs no SNS endpoint of its own.
        let mut vars = BTreeMap::from([
            (env::STACK.to_owned(), self.stack().to_owned()),
            (env::PREFIX.to_owned(), self.cfg.prefix.clone()),
            (env::CONNECTION_SECRET.to_owned(), self.connection_secret()),
            (env::KMS_KEY_ID.to_owned(), key_arn.to_owned()),
            (env::MOUNT.to_owned(), self.kv_mount().to_owned()),
            (
                env::DELETION_POLICY.to_owned(),
                r.deletion_policy.as_str().to_owned(),
            ),
            (
                env::RECOVERY_WINDOW_DAYS.to_owned(),
                r.recovery_window_days.to_string(),
            ),
            (
                env::MAX_DELETE_SHARE.to_owned(),
                r.max_delete_share.to_string(),
            ),
            (env::CONCURRENCY.to_owned(), r.concurrency.to_string()),
        ]);
        // Set only when used, so a stack that uses none of them keeps its function as it was.
        if let Some(bus) = &self.cfg.events_bus {
            vars.insert(env::EVENTS_BUS.to_owned(), bus.clone());
        }
        if !r.replica_regions.is_empty() {
            let list: Vec<String> = r
                .replica_regions
                .iter()
                .map(|x| match &x.kms_key_id {
                    Some(k) => format!("{}={k}", x.region),
                    None => x.region.clone(),
                })
                .collect();
            vars.insert(env::REPLICA_REGIONS.to_owned(), list.join(","));
        }
        if r.granularity != contract::naming::Granularity::default() {
            vars.insert(
                env::GRANULARITY.to_owned(),
                r.granularity.as_str().to_owned(),
            );
        }
        if let Some(t) = &r.name_template {
            vars.insert(env::NAME_TEMPLATE.to_owned(), t.as_str().to_owned());
        }
        if !r.tags.is_empty() {
            let list: Vec<String> = r.tags.iter().map(|(k, v)| format!("{k}={v}")).collect();
            vars.insert(env::TAGS.to_owned(), list.join(","));
        }
        if !r.metadata_tag_keys.is_empty() {
            let list: Vec<&str> = r.metadata_tag_keys.iter().map(String::as_str).collect();
            vars.insert(env::METADATA_TAG_KEYS.to_owned(), list.join(","));
        }
        if r.adopt_sample {
            vars.insert(env::ADOPT_SAMPLE.to_owned(), "true".to_owned());
        }
        if r.latest_deleted != contract::LatestDeleted::default() {
            vars.insert(
                env::LATEST_DELETED.to_owned(),
                r.latest_deleted.as_str().to_owned(),
            );
        }
        if r.max_keys_per_secret != contract::defaults::MAX_KEYS_PER_SECRET {
            vars.insert(
                env::MAX_KEYS_PER_SECRET.to_owned(),
                r.max_keys_per_secret.to_string(),
            );
        }
        if r.region_audit_hours != contract::defaults::REGION_AUDIT_HOURS {
            vars.insert(
                env::REGION_AUDIT_HOURS.to_owned(),
                r.region_audit_hours.to_string(),
            );
        }
        // Patterns hold no ',' (checked when parsed).
        for (var, patterns) in [
            (env::INCLUDE, r.selection.include()),
            (env::EXCLUDE, r.selection.exclude()),
        ] {
            if !patterns.is_empty() {
                vars.insert(var.to_owned(), patterns.join(","));
            }
        }
        if r.selection.opt_in() {
            vars.insert(env::OPT_IN.to_owned(), "true".to_owned());
        }
        if let Some(policy) = &r.resource_policy {
            vars.insert(
                env::RESOURCE_POLICY.to_owned(),
                policy.template().to_owned(),
            );
        }
        if let Some(role) = &r.account_role {
            vars.insert(env::ACCOUNT_ROLE_ARN.to_owned(), role.role_arn.clone());
            vars.insert(env::EXTERNAL_ID.to_owned(), role.external_id.clone());
            // The stack's key is of no use in another account: the replicas there are
            // encrypted with that account's aws/secretsmanager key, or the key `target up`
            // makes there, by its alias.
            match r.account_key {
                AccountKmsKey::AwsSecretsManager => vars.remove(env::KMS_KEY_ID),
                AccountKmsKey::Create => {
                    vars.insert(env::KMS_KEY_ID.to_owned(), self.account_key_alias())
                }
            };
        }
        if !self.cfg.rules.is_empty() {
            // Each rule names its key: the stack's at home; in another account, none (that
            // account's aws/secretsmanager key) or the one `target up` makes there.
            vars.remove(env::KMS_KEY_ID);
            let docs: Vec<contract::rules::RuleDoc> = self
                .cfg
                .rules
                .iter()
                .map(|rule| {
                    let mut doc = rule.doc.clone();
                    doc.kms_key_id =
                        match (&rule.replicator.account_role, rule.replicator.account_key) {
                            (None, _) => Some(key_arn.to_owned()),
                            (Some(_), AccountKmsKey::Create) => Some(self.account_key_alias()),
                            (Some(_), AccountKmsKey::AwsSecretsManager) => None,
                        };
                    doc
                })
                .collect();
            // Plain data: serializing it cannot fail.
            let text = serde_json::to_string(&docs).unwrap_or_default();
            vars.insert(env::RULES.to_owned(), text);
            // A rule here writes with the role `up` makes for it.
            if self.assumes_roles_here() {
                vars.insert(
                    env::RULE_ROLE_ARN_PREFIX.to_owned(),
                    self.rule_role_arn_prefix(),
                );
            }
        }
        vars
    }

    /// Lambda's limit on a function's environment: 4 KB, names and values together.
    pub const MAX_ENVIRONMENT: usize = 4096;

    /// IAM's limit on a role's inline policies, characters outside whitespace.
    pub const MAX_ROLE_POLICY: usize = 10_240;

    /// Whether the functions' environment (the rules travel in it) and the replicator's policy
    /// fit Lambda's and IAM's limits: checked before anything is planned, with a key ARN and a
    /// VPC id as long as the real ones.
    pub fn check_limits(&self) -> Result<(), String> {
        let key_arn = self.arn("kms", true, "key/00000000-0000-0000-0000-000000000000");
        let policy = self
            .replicator_policy(&key_arn, Some("vpc-00000000000000000"))
            .map_err(|e| format!("the replicator's policy: {e}"))?;
        let size = policy::compact_len(&policy);
        if size > Self::MAX_ROLE_POLICY {
            return Err(format!(
                "the replicator's policy would be {size} characters, over IAM's {} for a role (it names each rule's role twice): split the rules across two stacks",
                Self::MAX_ROLE_POLICY
            ));
        }
        // Each rule's role: its own here, or the one it shares with the rules naming it there.
        for view in self.syncs() {
            let role = match view.cfg.replicator.account_role {
                None => view.account_role(),
                Some(_) => view.shared_account_role(self),
            }
            .map_err(|e| format!("the policy of rule {:?}'s role: {e}", view.sync_name()))?;
            if let Some(role) = role
                && policy::compact_len(&role.policy) > Self::MAX_ROLE_POLICY
            {
                return Err(format!(
                    "the policy of {} (rule {:?}) would be {} characters, over IAM's {}: the rules naming that role share statements, so give their other keys once at the top level where you can, or give some of them another role",
                    role.arn,
                    view.sync_name().unwrap_or_default(),
                    policy::compact_len(&role.policy),
                    Self::MAX_ROLE_POLICY
                ));
            }
        }
        // The largest the environment gets: the watcher's function, paused (`deployer pause`
        // must fit too).
        let mut paused = self.clone();
        paused.paused = true;
        let vars = paused.lambda_environment_of(Duty::Watch, &key_arn);
        let size: usize = vars.iter().map(|(k, v)| k.len() + v.len()).sum();
        if size > Self::MAX_ENVIRONMENT {
            let rules = vars.get(env::RULES).map_or(0, String::len);
            return Err(format!(
                "the function's environment would be {size} bytes, over Lambda's {} (the [[sync]] rules take {rules}): give the keys rules share once at the top level (every rule takes them from there), or split the rules across two stacks",
                Self::MAX_ENVIRONMENT
            ));
        }
        Ok(())
    }

    /// The Vault address the replicator uses: the stack's own Vault by its private address,
    /// inside the VPC; an external one as configured.
    pub fn replicator_vault_address(&self) -> String {
        match &self.cfg.vault {
            VaultMode::External { address, .. } => address.clone(),
            VaultMode::Ec2 { .. } => vault_url(VAULT_PRIVATE_IP),
        }
    }

    /// The Vault address written into a new connection secret.
    pub fn vault_address(&self, vault_ip: Option<&str>) -> Option<String> {
        match &self.cfg.vault {
            VaultMode::External { address, .. } => Some(address.clone()),
            VaultMode::Ec2 { .. } => vault_ip.map(vault_url),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::config::FileConfig;

    pub(crate) fn spec(toml: &str) -> Spec {
        let cfg = FileConfig::parse(toml, "t").unwrap().validate().unwrap();
        Spec::new(
            cfg,
            Identity {
                account: "123456789012".into(),
                partition: "aws-cn".into(),
                region: "cn-north-1".into(),
            },
        )
    }

    const EXTERNAL: &str = "stack_name = \"s\"\ndeploy_vault_on_ec2 = false\nexternal_vault_address = \"https://vault.example.com:8200\"\n";

    fn statement<'a>(doc: &'a Value, sid: &str) -> &'a Value {
        doc["Statement"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["Sid"] == sid)
            .unwrap_or_else(|| panic!("no statement {sid}"))
    }

    /// Three rules: two in the stack's account (one deleting, one replicating to a region),
    /// one in another account.
    pub(crate) const RULES: &str = "[[sync]]\nname = \"payments\"\nprefix = \"pay\"\nmount = \"kv\"\npath = \"payments\"\ndeletion_policy = \"delete\"\n\n[[sync]]\nname = \"web-prod\"\nprefix = \"web\"\nreplica_regions = [\"cn-northwest-1\"]\ninclude = [\"db/*\"]\n\n[[sync]]\nname = \"team-b\"\nprefix = \"b\"\nmount = \"kv\"\nnamespace = \"team-b\"\naccount_role_arn = \"arn:aws-cn:iam::222222222222:role/replicas\"\nexternal_id = \"0123456789abcdef\"\n";

    const KEY: &str = "arn:aws-cn:kms:cn-north-1:123456789012:key/k";

    #[test]
    fn with_events_the_function_is_given_the_bus_and_may_put_on_it_alone_once_for_every_rule() {
        for rules in ["", RULES] {
            let s = spec(&format!(
                "{EXTERNAL}events = true\nevents_bus = \"team\"\n{rules}"
            ));
            let bus = "arn:aws-cn:events:cn-north-1:123456789012:event-bus/team";
            assert_eq!(s.event_bus_arn().as_deref(), Some(bus));
            assert_eq!(s.lambda_environment(KEY)[env::EVENTS_BUS], "team");
            let p = s.replicator_policy(KEY, None).unwrap();
            let puts: Vec<&Value> = p["Statement"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|st| st["Action"] == "events:PutEvents")
                .collect();
            assert_eq!(puts.len(), 1, "{rules}: {p}");
            assert_eq!(puts[0]["Resource"], bus);
            // Each entry's source, whichever way IAM reads the key (one value or a list), and
            // never none.
            assert_eq!(
                puts[0]["Condition"]["ForAllValues:StringEquals"]["events:source"],
                serde_json::json!([contract::events::SOURCE])
            );
            assert_eq!(puts[0]["Condition"]["Null"]["events:source"], "false");
            assert_eq!(statement(&p, "DenyEveryOtherBus")["NotResource"], bus);
            assert!(s.check_limits().is_ok());
        }
        let off = spec(EXTERNAL);
        assert_eq!(off.event_bus_arn(), None);
        assert!(!off.lambda_environment(KEY).contains_key(env::EVENTS_BUS));
        assert!(
            !off.replicator_policy(KEY, None)
                .unwrap()
                .to_string()
                .contains("events:")
        );
        assert!(off.events_endpoint_policy().is_err());
    }

    #[test]
    fn rules_reach_the_function_in_its_environment_each_with_its_key() {
        let s = spec(&format!("{EXTERNAL}tags = {{ team = \"all\" }}\n{RULES}"));
        let vars = s.lambda_environment(KEY);
        // Each rule names its key; the top level names none.
        assert!(!vars.contains_key(env::KMS_KEY_ID));
        let rules: Vec<contract::rules::RuleDoc> = serde_json::from_str(&vars[env::RULES]).unwrap();
        let names: Vec<&str> = rules.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["payments", "web-prod", "team-b"]);
        assert_eq!(rules[0].kms_key_id.as_deref(), Some(KEY));
        assert_eq!(rules[1].kms_key_id.as_deref(), Some(KEY));
        assert_eq!(rules[2].kms_key_id, None, "another account: its own key");
        // What a rule leaves out, the function takes from the top level's.
        assert_eq!(rules[1].tags, None);
        assert_eq!(vars[env::TAGS], "team=all");
        assert_eq!(rules[1].mount, None);
        assert_eq!(rules[2].namespace.as_deref(), Some("team-b"));
        assert!(s.check_limits().is_ok());
        // Without rules: no rules variable.
        assert!(
            !spec(EXTERNAL)
                .lambda_environment(KEY)
                .contains_key(env::RULES)
        );
    }

    #[test]
    fn each_home_rule_writes_with_a_role_of_its_own_and_the_functions_role_writes_nothing() {
        let s = spec(&format!("{EXTERNAL}{RULES}"));
        let arn = |prefix: &str| {
            format!("arn:aws-cn:secretsmanager:cn-north-1:123456789012:secret:{prefix}/*")
        };
        let role = |rule: &str| {
            format!("arn:aws-cn:iam::123456789012:role/vault-secrets-replicator/s/s.sync.{rule}")
        };
        let sids_are_unique = |p: &Value| {
            let sids: Vec<&str> = p["Statement"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s["Sid"].as_str().unwrap())
                .collect();
            let mut unique = sids.clone();
            unique.sort();
            unique.dedup();
            assert_eq!(unique.len(), sids.len(), "{sids:?}");
        };
        // The function's role: no write anywhere; exactly the rules' roles to assume.
        let p = s.replicator_policy(KEY, None).unwrap();
        sids_are_unique(&p);
        for sid in WRITES_HERE {
            assert!(
                p["Statement"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .all(|s| s["Sid"] != *sid),
                "{sid}"
            );
        }
        let deny = statement(&p, "WriteNoSecretItself");
        assert_eq!(
            (&deny["Effect"], &deny["Resource"]),
            (&serde_json::json!("Deny"), &serde_json::json!("*"))
        );
        assert_eq!(deny["Action"], serde_json::json!(EVERY_SECRET_WRITE));
        let roles = serde_json::json!([
            role("payments"),
            role("web-prod"),
            "arn:aws-cn:iam::222222222222:role/replicas"
        ]);
        assert_eq!(
            statement(&p, "AssumeTheReplicasAccountRole")["Resource"],
            roles
        );
        assert_eq!(statement(&p, "AssumeNoOtherRole")["NotResource"], roles);
        // Each home rule's role: its own prefix, its own deletes and regions.
        let homes = s.home_rule_roles().unwrap();
        let arns: Vec<&str> = homes.iter().map(|r| r.arn.as_str()).collect();
        assert_eq!(arns, [role("payments"), role("web-prod")]);
        let (pay, web) = (&homes[0].policy, &homes[1].policy);
        for (p, prefix) in [(pay, "pay"), (web, "web")] {
            sids_are_unique(p);
            assert_eq!(
                statement(p, "WriteReplicatedSecrets")["Resource"],
                arn(prefix)
            );
            assert_eq!(
                statement(p, "DenyEveryWriteOutsideThePrefix")["NotResource"],
                arn(prefix)
            );
            // The stack's key, by its alias; no other.
            assert_eq!(
                statement(p, "NoKeyButTheDefaultOrTheReplicaKeys")["Condition"],
                serde_json::json!({"ForAllValues:StringNotEquals": {"kms:ResourceAliases": ["alias/hybrid-aws-secrets-encryption-key"]}})
            );
        }
        assert_eq!(
            statement(pay, "DeleteOnlyItsOwnReplicas")["Resource"],
            arn("pay")
        );
        assert!(!web.to_string().contains("DeleteOnlyItsOwnReplicas"));
        assert_eq!(
            statement(web, "ReplicateToTheConfiguredRegions")["Resource"],
            arn("web")
        );
        assert_eq!(
            statement(web, "ReplicateOnlyToTheConfiguredRegions")["Condition"],
            serde_json::json!({"ForAnyValue:StringNotEquals": {"secretsmanager:AddReplicaRegions": ["cn-northwest-1"]}})
        );
        // Assumed by the function's role alone, with the rule's external id, which the
        // function is given.
        let trust = &homes[0].trust["Statement"][0];
        assert_eq!(
            trust["Principal"]["AWS"],
            "arn:aws-cn:iam::123456789012:role/s-replicator"
        );
        assert_eq!(
            trust["Condition"]["StringEquals"]["sts:ExternalId"],
            "s.sync.payments"
        );
        let vars = s.lambda_environment(KEY);
        assert_eq!(
            format!("{}payments", vars[env::RULE_ROLE_ARN_PREFIX]),
            role("payments")
        );
        let docs: Vec<contract::rules::RuleDoc> = serde_json::from_str(&vars[env::RULES]).unwrap();
        assert_eq!(docs[0].account_role_arn, None, "derived by the function");
        assert_eq!(
            docs[0].kms_key_id.as_deref(),
            Some(KEY),
            "the stack's key at home"
        );
        // Two rules in other accounts: both roles, no role made here.
        let away = spec(&format!(
            "{EXTERNAL}[[sync]]\nname = \"a\"\nprefix = \"a\"\naccount_role_arn = \"arn:aws-cn:iam::222222222222:role/a\"\nexternal_id = \"0123456789abcdef\"\n[[sync]]\nname = \"b\"\nprefix = \"b\"\naccount_role_arn = \"arn:aws-cn:iam::333333333333:role/b\"\nexternal_id = \"0123456789abcdef\"\n"
        ));
        assert!(away.home_rule_roles().unwrap().is_empty());
        let p = away.replicator_policy(KEY, None).unwrap();
        let roles = serde_json::json!([
            "arn:aws-cn:iam::222222222222:role/a",
            "arn:aws-cn:iam::333333333333:role/b"
        ]);
        assert_eq!(
            statement(&p, "AssumeTheReplicasAccountRole")["Resource"],
            roles
        );
        assert_eq!(statement(&p, "AssumeNoOtherRole")["NotResource"], roles);
        statement(&p, "WriteNoSecretItself");
        // The one sync of the top-level keys: the function's role writes it, as before.
        let one = spec(EXTERNAL);
        assert!(one.home_rule_roles().unwrap().is_empty());
        let p = one.replicator_policy(KEY, None).unwrap();
        statement(&p, "WriteReplicatedSecrets");
        assert!(!p.to_string().contains("WriteNoSecretItself"));
    }

    #[test]
    fn a_key_made_in_the_other_account_is_named_to_the_function_and_granted_to_its_role_alone() {
        // The top level's choice is every rule's in another account; a home rule keeps the
        // stack's key.
        let s = spec(&format!(
            "{EXTERNAL}account_kms_key = \"create\"\n[[sync]]\nname = \"home\"\nprefix = \"h\"\n[[sync]]\nname = \"away\"\nprefix = \"a\"\nregion = \"cn-northwest-1\"\naccount_role_arn = \"arn:aws-cn:iam::222222222222:role/r\"\nexternal_id = \"0123456789abcdef\"\n[[sync]]\nname = \"plain\"\nprefix = \"p\"\naccount_kms_key = \"aws/secretsmanager\"\naccount_role_arn = \"arn:aws-cn:iam::333333333333:role/r\"\nexternal_id = \"0123456789abcdef\"\n"
        ));
        let vars = s.lambda_environment(KEY);
        let rules: Vec<contract::rules::RuleDoc> = serde_json::from_str(&vars[env::RULES]).unwrap();
        let keys: Vec<Option<&str>> = rules.iter().map(|r| r.kms_key_id.as_deref()).collect();
        assert_eq!(keys, [Some(KEY), Some("alias/s-replicas"), None]);
        assert!(
            rules.iter().all(|r| r.account_kms_key.is_none()),
            "the function refuses it"
        );
        let views = s.syncs();
        assert_eq!(views[0].account_key().unwrap(), None);
        assert_eq!(views[2].account_key().unwrap(), None);
        let (region, key) = views[1].account_key().unwrap().unwrap();
        assert_eq!(region, "cn-northwest-1");
        assert_eq!(key.alias, "alias/s-replicas");
        let policy = key.policy.to_string();
        assert!(
            policy.contains("arn:aws-cn:iam::222222222222:root")
                && policy.contains("secretsmanager.cn-northwest-1.amazonaws.com.cn"),
            "administered by that account, used through Secrets Manager there: {policy}"
        );
        let role = views[1].account_role().unwrap().unwrap().policy;
        assert_eq!(
            statement(&role, "NoKeyButTheDefaultOrTheReplicaKeys")["Condition"],
            serde_json::json!({"ForAllValues:StringNotEquals": {"kms:ResourceAliases": ["alias/aws/secretsmanager", "alias/s-replicas"]}})
        );
        let plain = views[2].account_role().unwrap().unwrap().policy;
        assert_eq!(
            statement(&plain, "NoKeyButTheDefaultOrTheReplicaKeys")["Condition"],
            serde_json::json!({"ForAllValues:StringNotEquals": {"kms:ResourceAliases": "alias/aws/secretsmanager"}})
        );
        // The one sync of the top-level keys: the alias in its own variable.
        let one = spec(&format!(
            "{EXTERNAL}account_kms_key = \"create\"\naccount_role_arn = \"arn:aws-cn:iam::222222222222:role/r\"\nexternal_id = \"0123456789abcdef\"\n"
        ));
        assert_eq!(
            one.lambda_environment(KEY)[env::KMS_KEY_ID],
            "alias/s-replicas"
        );
        let without = spec(&format!(
            "{EXTERNAL}account_role_arn = \"arn:aws-cn:iam::222222222222:role/r\"\nexternal_id = \"0123456789abcdef\"\n"
        ));
        assert!(
            !without
                .lambda_environment(KEY)
                .contains_key(env::KMS_KEY_ID)
        );
    }

    #[test]
    fn with_vault_on_ec2_home_rules_assume_their_roles_through_an_sts_endpoint() {
        let s = spec(
            "stack_name = \"s\"\nvault_inbound_cidr = \"10.0.0.0/8\"\n[[sync]]\nname = \"a\"\nprefix = \"a\"\n[[sync]]\nname = \"b\"\nprefix = \"b\"\n",
        );
        let roles: Vec<String> = s
            .home_rule_roles()
            .unwrap()
            .into_iter()
            .map(|r| r.arn)
            .collect();
        assert_eq!(roles.len(), 2);
        assert!(
            s.lambda_environment(KEY)
                .contains_key(env::RULE_ROLE_ARN_PREFIX)
        );
        let p = s.replicator_policy(KEY, Some("vpc-1")).unwrap();
        statement(&p, "WriteNoSecretItself");
        assert_eq!(
            statement(&p, "AssumeTheReplicasAccountRole")["Resource"],
            serde_json::json!(roles)
        );
        // The Vault network's endpoints: Secrets Manager's passes both rules' prefixes, STS's
        // only the replicator assuming exactly those roles.
        let services = s.endpoint_services();
        assert_eq!(
            services,
            [
                "cn.com.amazonaws.cn-north-1.secretsmanager",
                "cn.com.amazonaws.cn-north-1.sts"
            ]
        );
        let sts = s.endpoint_policy(&services[1]).unwrap();
        let only = statement(&sts, "OnlyTheReplicatorAssumingItsRulesRoles");
        assert_eq!(only["Resource"], serde_json::json!(roles));
        assert_eq!(only["Action"], "sts:AssumeRole");
        assert_eq!(
            only["Condition"]["StringEquals"]["aws:PrincipalArn"],
            "arn:aws-cn:iam::123456789012:role/s-replicator"
        );
        let sm = s.endpoint_policy(&services[0]).unwrap().to_string();
        assert!(
            sm.contains("secret:a/*") && sm.contains("secret:b/*"),
            "{sm}"
        );
        // Without rules, the one endpoint as before.
        let one = spec("stack_name = \"s\"\nvault_inbound_cidr = \"10.0.0.0/8\"\n");
        assert_eq!(one.endpoint_services().len(), 1);
    }

    #[test]
    fn rules_sharing_a_role_elsewhere_keep_off_every_other_rules_replicas_together() {
        let rule = |name: &str, prefix: &str| {
            format!(
                "[[sync]]\nname = \"{name}\"\nprefix = \"{prefix}\"\naccount_role_arn = \"arn:aws-cn:iam::222222222222:role/r\"\nexternal_id = \"0123456789abcdef\"\n"
            )
        };
        let s = spec(&format!("{EXTERNAL}{}{}", rule("a", "a"), rule("b", "b")));
        let view = &s.syncs()[0];
        let shared = view.shared_account_role(&s).unwrap().unwrap().policy;
        let deny = statement(&shared, "NeverWriteAnotherRulesReplicas");
        assert_eq!(
            deny["Condition"]["StringNotEquals"]["aws:ResourceTag/replica-rule"],
            serde_json::json!(["a", "b"])
        );
        let own = view.account_role().unwrap().unwrap().policy;
        assert_eq!(
            statement(&own, "NeverNameAnotherRule")["Condition"]["StringNotEquals"]["aws:RequestTag/replica-rule"],
            serde_json::json!(["a"])
        );
        // The one sync of the top-level keys names no rule: its role elsewhere as before.
        let one = spec(&format!(
            "{EXTERNAL}account_role_arn = \"arn:aws-cn:iam::222222222222:role/r\"\nexternal_id = \"0123456789abcdef\"\n"
        ));
        let policy = one.account_role().unwrap().unwrap().policy.to_string();
        assert!(
            !policy.contains("NeverWriteAnotherRulesReplicas"),
            "{policy}"
        );
    }

    #[test]
    fn up_widens_the_functions_role_until_the_functions_move_then_narrows_it() {
        let rules = spec(&format!("{EXTERNAL}{RULES}"));
        let wanted = rules.replicator_policy(KEY, None).unwrap();
        // Converged: nothing in between.
        assert_eq!(widened_for_the_move(&wanted, &wanted), None);
        // From the one sync's role writing itself: its writes stay until the functions move.
        let before = spec(EXTERNAL).replicator_policy(KEY, None).unwrap();
        let moving = widened_for_the_move(&before, &wanted).unwrap();
        assert!(!moving.to_string().contains("WriteNoSecretItself"));
        assert_eq!(
            statement(&moving, "WriteReplicatedSecrets"),
            statement(&before, "WriteReplicatedSecrets")
        );
        assert_eq!(
            statement(&moving, "AssumeTheReplicasAccountRole"),
            statement(&wanted, "AssumeTheReplicasAccountRole")
        );
        // A rule removed: its role stays assumable until the functions no longer name it.
        let fewer = spec(&format!(
            "{EXTERNAL}[[sync]]\nname = \"payments\"\nprefix = \"pay\"\nmount = \"kv\"\npath = \"payments\"\ndeletion_policy = \"delete\"\n"
        ))
        .replicator_policy(KEY, None)
        .unwrap();
        let moving = widened_for_the_move(&wanted, &fewer).unwrap();
        assert_eq!(
            statement(&moving, "AssumeTheReplicasAccountRole")["Resource"],
            statement(&wanted, "AssumeTheReplicasAccountRole")["Resource"]
        );
        assert!(moving.to_string().contains("WriteNoSecretItself"));
        // A rule added: nothing taken away.
        assert_eq!(widened_for_the_move(&fewer, &wanted), None);
        // Rules that wrote with the function's role, each to its own regions and keys: the
        // running functions keep every region and key they had (not the first rule's alone),
        // and no deny they lacked.
        let two = "[[sync]]\nname = \"a\"\nprefix = \"a\"\nreplica_regions = [\"cn-northwest-1=arn:aws-cn:kms:cn-northwest-1:123456789012:key/ka\"]\n[[sync]]\nname = \"b\"\nprefix = \"b\"\nreplica_regions = [\"ap-east-1\"]\n";
        // (The one sync writing itself to both rules' regions, with both keys.)
        let before = spec(&format!(
            "{EXTERNAL}replica_regions = [\"cn-northwest-1=arn:aws-cn:kms:cn-northwest-1:123456789012:key/ka\", \"ap-east-1\"]\n"
        ))
        .replicator_policy(KEY, None)
        .unwrap();
        let wanted = spec(&format!("{EXTERNAL}{two}"))
            .replicator_policy(KEY, None)
            .unwrap();
        let moving = widened_for_the_move(&before, &wanted).unwrap();
        for sid in [
            "ReplicateOnlyToTheConfiguredRegions",
            "DenyEveryOtherKey",
            "WriteReplicatedSecrets",
            "DenyEveryWriteOutsideThePrefix",
        ] {
            assert_eq!(statement(&moving, sid), statement(&before, sid), "{sid}");
        }
        assert!(!moving.to_string().contains("WriteNoSecretItself"));
        assert_eq!(
            statement(&moving, "AssumeTheReplicasAccountRole"),
            statement(&wanted, "AssumeTheReplicasAccountRole")
        );
    }

    #[test]
    fn home_rules_replicating_to_different_regions_and_keys_keep_them_apart() {
        let s = spec(&format!(
            "{EXTERNAL}[[sync]]\nname = \"a\"\nprefix = \"a\"\nreplica_regions = [\"cn-northwest-1=arn:aws-cn:kms:cn-northwest-1:123456789012:key/ka\"]\n[[sync]]\nname = \"b\"\nprefix = \"b\"\nreplica_regions = [\"ap-east-1\"]\n[[sync]]\nname = \"c\"\nprefix = \"c\"\n"
        ));
        let roles = s.home_rule_roles().unwrap();
        let regions =
            |p: &Value| statement(p, "ReplicateOnlyToTheConfiguredRegions")["Condition"].clone();
        assert_eq!(
            regions(&roles[0].policy),
            serde_json::json!({"ForAnyValue:StringNotEquals": {"secretsmanager:AddReplicaRegions": ["cn-northwest-1"]}})
        );
        assert_eq!(
            regions(&roles[1].policy),
            serde_json::json!({"ForAnyValue:StringNotEquals": {"secretsmanager:AddReplicaRegions": ["ap-east-1"]}})
        );
        assert!(roles[0].policy.to_string().contains("key/ka"));
        assert!(!roles[1].policy.to_string().contains("key/ka"));
        assert!(
            !roles[2]
                .policy
                .to_string()
                .contains("ReplicateToTheConfiguredRegions")
        );
    }

    #[test]
    fn rules_that_do_not_fit_lambdas_environment_or_iams_policy_are_refused() {
        let mut text = EXTERNAL.to_owned();
        // In other accounts: a role each in the policy, a rule each in the environment.
        for i in 0..30 {
            text.push_str(&format!(
                "[[sync]]\nname = \"rule-{i}\"\nprefix = \"team-{i}\"\nmount = \"kv\"\npath = \"team-{i}\"\naccount_role_arn = \"arn:aws-cn:iam::2222222222{i:02}:role/replicas\"\nexternal_id = \"0123456789abcdef\"\n"
            ));
        }
        let err = spec(&text).check_limits().unwrap_err();
        assert!(err.contains("over Lambda's 4096"), "{err}");
        let mut text = EXTERNAL.to_owned();
        // Home rules: each one's role, twice, in the function's policy.
        for i in 0..60 {
            text.push_str(&format!(
                "[[sync]]\nname = \"r{i}\"\nprefix = \"team-{i}/replicas\"\n"
            ));
        }
        let err = spec(&text).check_limits().unwrap_err();
        assert!(
            err.contains("replicator's policy") && err.contains("over IAM's 10240"),
            "{err}"
        );
        // Rules sharing one role in another account: each prefix in each of its statements.
        let mut text = EXTERNAL.to_owned();
        for i in 0..60 {
            text.push_str(&format!(
                "[[sync]]\nname = \"r{i}\"\nprefix = \"team-{i}/replicas\"\naccount_role_arn = \"arn:aws-cn:iam::222222222222:role/replicas\"\nexternal_id = \"0123456789abcdef\"\n"
            ));
        }
        let err = spec(&text).check_limits().unwrap_err();
        assert!(
            err.contains("role/replicas (rule \"r0\")") && err.contains("over IAM's 10240"),
            "{err}"
        );
        // An environment that fits only until `deployer pause` marks it is refused too: the
        // pause would be half applied.
        let size = |s: &Spec| -> usize {
            s.lambda_environment_of(Duty::Watch, KEY)
                .iter()
                .map(|(k, v)| k.len() + v.len())
                .sum()
        };
        let tagged = |full: usize, last: usize| {
            let mut tags: Vec<String> = (0..full)
                .map(|i| format!("t{i} = \"{}\"", "x".repeat(250)))
                .collect();
            tags.push(format!("last = \"{}\"", "x".repeat(last)));
            spec(&format!("{EXTERNAL}tags = {{ {} }}\n", tags.join(", ")))
        };
        let just_fits = (0..20)
            .flat_map(|full| (1..=250).map(move |last| (full, last)))
            .map(|(full, last)| tagged(full, last))
            .find(|s| (Spec::MAX_ENVIRONMENT - 10..=Spec::MAX_ENVIRONMENT).contains(&size(s)))
            .expect("an environment just under the limit");
        let err = just_fits.check_limits().unwrap_err();
        assert!(err.contains("over Lambda's 4096"), "{err}");
    }

    #[test]
    fn replicator_policy_is_partition_aware_and_scoped() {
        let s = spec(EXTERNAL);
        let p = s
            .replicator_policy("arn:aws-cn:kms:cn-north-1:123456789012:key/k", None)
            .unwrap();
        let write = statement(&p, "WriteReplicatedSecrets");
        assert_eq!(write["Effect"], "Allow");
        assert_eq!(
            write["Resource"],
            "arn:aws-cn:secretsmanager:cn-north-1:123456789012:secret:hybrid-aws-secrets/*"
        );
        let actions = write["Action"].as_array().unwrap();
        assert!(
            !actions.iter().any(|a| a == "secretsmanager:DeleteSecret"),
            "keep policy: no delete"
        );
        let deny = statement(&p, "DenyEveryWriteOutsideThePrefix");
        assert_eq!(deny["Effect"], "Deny");
        assert_eq!(deny["NotResource"], write["Resource"]);
        assert_eq!(
            deny["Action"].as_array().unwrap().len(),
            EVERY_SECRET_WRITE.len()
        );
        // The connection secret is outside the write scope.
        let conn = statement(&p, "ReadTheConnectionSecret");
        assert_eq!(
            conn["Resource"],
            "arn:aws-cn:secretsmanager:cn-north-1:123456789012:secret:hybrid-aws-secrets-connection/vault-??????"
        );
        assert!(
            !conn["Resource"]
                .as_str()
                .unwrap()
                .starts_with(write["Resource"].as_str().unwrap().trim_end_matches('*'))
        );
        assert_eq!(statement(&p, "ListSecretsCannotBeScoped")["Resource"], "*");
        assert_eq!(
            statement(&p, "DenyEveryOtherKey")["NotResource"],
            "arn:aws-cn:kms:cn-north-1:123456789012:key/k"
        );
        assert!(
            p["Statement"]
                .as_array()
                .unwrap()
                .iter()
                .all(|s| s["Sid"] != "PublishFailureNotices")
        );
        assert!(
            p["Statement"]
                .as_array()
                .unwrap()
                .iter()
                .all(|s| s["Sid"] != "LambdaNetworkInterfacesInTheVaultVpc")
        );
    }

    #[test]
    fn email_and_delete_policy_widen_only_what_they_need() {
        let s = spec(&format!(
            "{EXTERNAL}notification_email = \"ops@example.com\"\ndeletion_policy = \"delete\"\n"
        ));
        let p = s.replicator_policy("k", None).unwrap();
        assert_eq!(
            statement(&p, "PublishFailureNotices")["Resource"],
            "arn:aws-cn:sns:cn-north-1:123456789012:s-replicator-failures"
        );
        assert_eq!(
            statement(&p, "DenyEveryOtherTopic")["NotResource"],
            statement(&p, "PublishFailureNotices")["Resource"]
        );
        let delete = statement(&p, "DeleteOnlyItsOwnReplicas");
        assert_eq!(delete["Action"], "secretsmanager:DeleteSecret");
        assert_eq!(
            delete["Condition"]["StringEquals"]["aws:ResourceTag/managed-by"],
            "vault-secrets-replicator"
        );
        assert!(!s.lambda_environment("k").contains_key(env::SNS_TOPIC_ARN));
    }

    #[test]
    fn replicas_in_another_account_take_its_role_and_no_write_at_home() {
        let home = spec(&format!(
            "{EXTERNAL}deletion_policy = \"delete\"\nreplica_regions = [\"cn-northwest-1\"]\n"
        ));
        let p = home.replicator_policy("k", None).unwrap();
        statement(&p, "WriteReplicatedSecrets");
        assert!(!p.to_string().contains("sts:"), "no role to assume: {p}");
        let role = "arn:aws-cn:iam::222222222222:role/team-replicas";
        let s = spec(&format!(
            "{EXTERNAL}deletion_policy = \"delete\"\nreplica_regions = [\"cn-northwest-1\"]\naccount_role_arn = \"{role}\"\nexternal_id = \"ext-1\"\n"
        ));
        let p = s.replicator_policy("k", None).unwrap();
        assert_eq!(
            statement(&p, "AssumeTheReplicasAccountRole")["Resource"],
            role
        );
        assert_eq!(statement(&p, "AssumeNoOtherRole")["NotResource"], role);
        for sid in WRITES_HERE.iter().chain(&[
            "DeleteOnlyItsOwnReplicas",
            "ReplicateToTheConfiguredRegions",
        ]) {
            assert!(
                !p["Statement"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|st| st["Sid"] == *sid),
                "{sid} left in {p}"
            );
        }
        // The denies and the connection secret stay.
        statement(&p, "DenyEveryWriteOutsideThePrefix");
        statement(&p, "NeverWriteWhatAnotherToolOwns");
        statement(&p, "ReadTheConnectionSecret");
        let e = s.lambda_environment("k");
        assert_eq!(e[env::ACCOUNT_ROLE_ARN], role);
        assert_eq!(e[env::EXTERNAL_ID], "ext-1");
        assert!(
            !e.contains_key(env::KMS_KEY_ID),
            "the stack's key stays home"
        );
        assert_eq!(home.lambda_environment("k")[env::KMS_KEY_ID], "k");
    }

    #[test]
    fn secrets_sync_settings_reach_the_function_only_when_set() {
        let plain = spec(EXTERNAL).lambda_environment("k");
        for var in [
            env::REPLICA_REGIONS,
            env::GRANULARITY,
            env::NAME_TEMPLATE,
            env::TAGS,
            env::METADATA_TAG_KEYS,
            env::ADOPT_SAMPLE,
            env::LATEST_DELETED,
            env::MAX_KEYS_PER_SECRET,
            env::REGION_AUDIT_HOURS,
            env::INCLUDE,
            env::EXCLUDE,
            env::OPT_IN,
        ] {
            assert!(!plain.contains_key(var), "{var} set by default");
        }
        let s = spec(&format!(
            "{EXTERNAL}replica_regions = [\"cn-northwest-1=arn:aws-cn:kms:cn-northwest-1:123456789012:key/r\"]\ngranularity = \"secret-key\"\nname_template = \"{{mount}}/{{path}}/{{key}}\"\ntags = {{ team = \"core\", env = \"prod\" }}\nmetadata_tag_keys = [\"tier\", \"cost-center\"]\ninclude = [\"db/*\", \"app?\"]\nexclude = [\"*/scratch/*\"]\nopt_in = true\n"
        ));
        let e = s.lambda_environment("k");
        assert_eq!(
            e[env::REPLICA_REGIONS],
            "cn-northwest-1=arn:aws-cn:kms:cn-northwest-1:123456789012:key/r"
        );
        assert_eq!(e[env::GRANULARITY], "secret-key");
        assert_eq!(e[env::NAME_TEMPLATE], "{mount}/{path}/{key}");
        assert_eq!(e[env::TAGS], "env=prod,team=core");
        assert_eq!(e[env::METADATA_TAG_KEYS], "cost-center,tier");
        assert_eq!(e[env::INCLUDE], "db/*,app?");
        assert_eq!(e[env::EXCLUDE], "*/scratch/*");
        assert_eq!(e[env::OPT_IN], "true");
        let p = s
            .replicator_policy("arn:aws-cn:kms:cn-north-1:123456789012:key/k", None)
            .unwrap();
        assert_eq!(
            statement(&p, "DenyEveryOtherKey")["NotResource"],
            serde_json::json!([
                "arn:aws-cn:kms:cn-north-1:123456789012:key/k",
                "arn:aws-cn:kms:cn-northwest-1:123456789012:key/r"
            ])
        );
        assert_eq!(
            statement(&p, "UseTheReplicaKeysThroughSecretsManager")["Condition"]["StringEquals"]["kms:ViaService"],
            serde_json::json!([
                "secretsmanager.cn-northwest-1.amazonaws.com.cn",
                "secretsmanager.cn-north-1.amazonaws.com.cn"
            ])
        );
        // Without replica regions: one key, as before, and no replication statement.
        let p = spec(EXTERNAL).replicator_policy("k", None).unwrap();
        assert_eq!(statement(&p, "DenyEveryOtherKey")["NotResource"], "k");
        assert!(
            p["Statement"]
                .as_array()
                .unwrap()
                .iter()
                .all(|s| s["Sid"] != "ReplicateToTheConfiguredRegions")
        );
    }

    #[test]
    fn names_are_deterministic() {
        let s = spec(EXTERNAL);
        assert_eq!(s.key_alias(), "alias/hybrid-aws-secrets-encryption-key");
        assert_eq!(
            s.role_arn(),
            "arn:aws-cn:iam::123456789012:role/s-replicator"
        );
        assert_eq!(s.connection_secret(), "hybrid-aws-secrets-connection/vault");
        assert_eq!(
            s.vault_address(None).as_deref(),
            Some("https://vault.example.com:8200")
        );
        assert_eq!(
            Identity::partition_of("arn:aws-us-gov:iam::1:user/x").as_deref(),
            Some("aws-us-gov")
        );
    }
}
