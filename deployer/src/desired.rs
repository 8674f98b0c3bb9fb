//! Each resource's desired state, its own part of the stack, made by [`Spec`]: a resource
//! module reads its part only (its names, settings and rendered documents), never the whole
//! configuration. What
//! a part cannot know before others are made (a key's ARN) its module is handed at the call.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::policy::TemplateError;
use crate::spec::{Duty, Group, KEY_PURPOSE_TAG, Spec, security_group_name, stack_tags};

/// The stack a resource belongs to: what it is tagged with when made, and what tells it apart
/// from one the stack did not make.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Owner {
    stack: String,
}

impl Owner {
    pub fn new(stack: &str) -> Self {
        Self {
            stack: stack.to_owned(),
        }
    }

    /// The stack's name, the stack tag's value.
    pub fn stack(&self) -> &str {
        &self.stack
    }

    /// The tags a resource of the stack is made with.
    pub fn tags(&self) -> BTreeMap<String, String> {
        stack_tags(&self.stack)
    }

    /// The tags plus the `Name` the EC2 console shows.
    pub fn named_tags(&self, name: &str) -> BTreeMap<String, String> {
        let mut t = self.tags();
        t.insert("Name".into(), name.to_owned());
        t
    }
}

/// A KMS key as the deployer wants it: the stack's own, or the one it makes in another account
/// for the replicas there.
#[derive(Clone, Debug, PartialEq)]
pub struct KeySpec {
    /// Found by this alias (`alias/…`).
    pub alias: String,
    pub description: String,
    pub policy: Value,
    /// Set on creation; a key carrying all of them is this one when its alias is missing.
    pub tags: BTreeMap<String, String>,
    /// How long `destroy` leaves it recoverable.
    pub deletion_window_days: i32,
}

/// An IAM role with one inline policy (and, for the Vault instance, an instance profile).
#[derive(Clone, Debug)]
pub struct RoleSpec {
    pub name: String,
    pub description: &'static str,
    pub trust: Value,
    pub policy_name: &'static str,
    /// `None` while it depends on something not made yet.
    pub policy: Option<Value>,
    /// Also an instance profile of the same name holding the role.
    pub instance_profile: bool,
    /// The IAM path it is made at; none: `/`.
    pub path: Option<String>,
    pub owner: Owner,
}

const RULE_ROLE_DESCRIPTION: &str =
    "vault-secrets-replicator: writes one rule's replicas; assumed by the stack's replicator only";

/// Where the roles of the rules writing in the stack's account live, and how they are named:
/// a role found there under this stack's name and tag that no rule wants is a removed rule's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleRolesSpec {
    /// The IAM path of every rule's role ([`Spec::rule_role_path`]).
    pub path: String,
    /// What each of this stack's rule roles' names starts with.
    pub name_prefix: String,
    pub owner: Owner,
}

impl RuleRolesSpec {
    /// The role named `name` under the path, as found (to delete it): no document wanted.
    pub fn leftover(&self, name: String) -> RoleSpec {
        RoleSpec {
            name,
            description: RULE_ROLE_DESCRIPTION,
            trust: Value::Null,
            policy_name: "replicas",
            policy: None,
            instance_profile: false,
            path: Some(self.path.clone()),
            owner: self.owner.clone(),
        }
    }
}

/// The alarms over the stack's metrics, and its dashboard.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MonitoringSpec {
    /// What the alarms notify: the failure topic, with a `notification_email`.
    pub topic_arn: Option<String>,
    /// The schedule, whose longest gap the no-full-sync alarm waits twice for.
    pub schedule: String,
    /// Paused by `deployer pause`: the runs' alarms tell no one.
    pub paused: bool,
    /// With Vault on EC2: the watcher's and the host's disk alarms too.
    pub vault_host: bool,
    /// `dashboard = true`.
    pub dashboard: bool,
    pub region: String,
    /// An alarm's ARN is this and its name.
    pub alarm_arn_prefix: String,
    pub owner: Owner,
}

/// The Vault server on EC2: its instance and address, its TLS secret and CA parameter, and the
/// digest of the change watcher's code it runs (its role is a [`RoleSpec`]).
#[derive(Clone, Debug, PartialEq)]
pub struct VaultServerSpec {
    /// The instance's, the address's and the instance profile's name.
    pub name: String,
    /// With Vault on EC2; otherwise one of this stack's goes.
    pub wanted: bool,
    pub instance_type: String,
    pub vault_version: String,
    pub region: String,
    /// The secret holding the TLS certificate and key.
    pub tls_secret: String,
    /// Its resource policy: the instance role reads it ([`VaultServerSpec::tls_policy`]).
    pub tls_read: Value,
    /// Matches the TLS secret's ARN.
    pub tls_secret_arn: String,
    /// The SSM parameter holding the CA certificate.
    pub ca_parameter: String,
    /// The SSM parameter holding the watcher's code digest.
    pub digest_parameter: String,
    /// The stack key's alias: a parameter under it is under the stack's key.
    pub key_alias: String,
    /// What the watcher's unit invokes, reads and tells.
    pub watch_function: String,
    pub prefix: String,
    /// The failure topic the watcher sends a failed run's notice to, with a
    /// `notification_email`.
    pub topic_arn: Option<String>,
    pub owner: Owner,
}

impl VaultServerSpec {
    /// The TLS secret's resource policy: read by the instance role, and with `read_until`
    /// by no one after that time (the instance reads it while it boots only).
    pub fn tls_policy(&self, read_until: Option<&str>) -> Value {
        let mut doc = self.tls_read.clone();
        if let (Some(until), Some(statements)) = (read_until, doc["Statement"].as_array_mut()) {
            statements.push(serde_json::json!({
                "Sid": "ReadOnlyWhileTheInstanceBoots",
                "Effect": "Deny",
                "Principal": {"AWS": "*"},
                "Action": "secretsmanager:GetSecretValue",
                "Resource": self.tls_secret_arn,
                "Condition": {"DateGreaterThan": {"aws:CurrentTime": until}},
            }));
        }
        doc
    }
}

/// The Vault network: VPC, internet gateway, subnet, route table, the three security groups
/// and the interface endpoints the functions reach AWS through.
#[derive(Clone, Debug, PartialEq)]
pub struct NetworkSpec {
    /// The name of the VPC, gateway, subnet and route table.
    pub name: String,
    /// Whose API may reach Vault besides the replicator: `vault_inbound_cidr`, with Vault on
    /// EC2; none: no network is wanted (one of this stack's goes).
    pub inbound_cidr: Option<String>,
    pub region: String,
    /// The endpoints wanted, by service name, each with its policy.
    pub endpoints: BTreeMap<String, Value>,
    /// Every endpoint service the stack may have made ([`Spec::endpoint_services_all`]).
    pub endpoints_ever: Vec<String>,
    pub owner: Owner,
}

impl NetworkSpec {
    pub fn wanted(&self) -> bool {
        self.inbound_cidr.is_some()
    }

    /// The security group of `group`.
    pub fn group_name(&self, group: Group) -> String {
        security_group_name(self.owner.stack(), group)
    }
}

/// The replicas one sync writes where the deployer reaches them: their prefix, whose they are
/// (the tags a replica of this sync carries) and how they go.
#[derive(Clone, Debug)]
pub struct SyncReplicasSpec {
    /// The rule's name; none: the one sync of the top-level keys.
    pub rule: Option<String>,
    /// Written under `<prefix>/`.
    pub prefix: String,
    pub mount: String,
    /// The `vault-path` tag: the sub-path, or `/` for the whole mount.
    pub path_tag: String,
    /// Days a deleted replica stays restorable.
    pub recovery_window_days: i64,
    /// The replicas' resource policy, when one is configured.
    pub resource_policy: Option<contract::resource_policy::ResourcePolicy>,
    /// The rule writes in another account (its `account_role_arn`).
    pub in_other_account: bool,
    /// The ARN an example replica would have here (what Secrets Manager is asked to judge the
    /// resource policy on).
    pub example_arn: String,
    pub owner: Owner,
}

impl SyncReplicasSpec {
    /// This sync's source and destination as its replicas' tags name them.
    pub fn source(&self) -> contract::SyncSource<'_> {
        contract::SyncSource {
            prefix: &self.prefix,
            mount: &self.mount,
            path_tag: &self.path_tag,
            stack: Some(self.owner.stack()),
            rule: self.rule.as_deref(),
        }
    }
}

/// The replicas of every sync of the stack, and the key they are encrypted with.
#[derive(Clone, Debug)]
pub struct ReplicasSpec {
    pub key: KeySpec,
    /// In the order of [`Spec::syncs`].
    pub syncs: Vec<SyncReplicasSpec>,
}

/// The failure topic: wanted only with a `notification_email`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicSpec {
    pub name: String,
    pub arn: String,
    /// Subscribed to it; none: no topic is wanted (one of this stack's goes).
    pub email: Option<String>,
    pub owner: Owner,
}

/// The EventBridge schedule, its target (the sync function) and the permission that lets the
/// rule invoke it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScheduleSpec {
    pub name: String,
    pub arn: String,
    /// `rate(…)` or `cron(…)`.
    pub expression: String,
    /// Disabled while the stack is paused (`deployer pause`).
    pub enabled: bool,
    pub function_name: String,
    pub function_arn: String,
    /// The sid of the function's permission statement for the rule.
    pub permission_id: String,
    pub owner: Owner,
}

/// The log group of the function serving one duty.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogGroupSpec {
    pub name: String,
    pub arn: String,
    /// Whether the stack has that function; a group of a function gone stays until `destroy`.
    pub wanted: bool,
    pub retention_days: i32,
    pub owner: Owner,
}

/// The connection secret (its value is `vault-init`'s), and the rotator's secret that goes
/// with it on `destroy`.
#[derive(Clone, Debug, PartialEq)]
pub struct SecretSpec {
    pub name: String,
    /// Its resource policy.
    pub policy: Value,
    /// The rotator secret's name.
    pub rotator: String,
    pub owner: Owner,
}

/// The code signing config the functions are checked against.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SigningSpec {
    /// Its name in `plan` (Lambda names a config only by an ARN it assigns).
    pub name: String,
    /// Found by this description, with the stack tag.
    pub description: String,
    /// The AWS Signer profile (version ARN); none: no config is wanted.
    pub profile: Option<String>,
    /// The stack's functions, whose config is the one in use.
    pub functions: Vec<String>,
    pub owner: Owner,
}

/// Secrets Manager's rotation of the connection secret's AppRole secret id by the rotation
/// function.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RotationSpec {
    /// The connection secret.
    pub secret: String,
    /// The rotator secret, without which rotation cannot run.
    pub rotator: String,
    /// Days between rotations; 0: no automatic rotation.
    pub days: i32,
    pub function_name: String,
    pub function_arn: String,
    /// The sid of the function's permission statement for Secrets Manager.
    pub statement_id: String,
    /// Secrets Manager may invoke the function for this account's secrets only.
    pub account: String,
}

/// The function serving one duty: what it runs as, with what and where. Its `Debug` names
/// the environment's variables only: their values hold external ids.
#[derive(Clone, PartialEq, Eq)]
pub struct FunctionSpec {
    pub duty: Duty,
    pub name: String,
    /// Whether the stack has a function for the duty (one of this stack's goes otherwise).
    pub wanted: bool,
    pub role_arn: String,
    pub memory_mb: i32,
    pub timeout_s: i32,
    /// Reserved concurrency; 0: none reserved.
    pub reserved_concurrency: i32,
    /// The stack's key, which encrypts the environment; none until it is made.
    pub key_arn: Option<String>,
    /// None until the key is known (the environment names it).
    pub environment: Option<BTreeMap<String, String>>,
    /// The AWS Signer profile its code must be signed by.
    pub signing_profile: Option<String>,
    /// Whether its failed asynchronous runs go to the failure topic: the sync function's
    /// scheduled runs, with a `notification_email` (the watcher's function is invoked
    /// synchronously, and the watcher notifies).
    pub notifies: bool,
    /// Whether it runs in the Vault VPC (with Vault on EC2): its subnets and groups are known
    /// after the network is made.
    pub in_vpc: bool,
    pub owner: Owner,
}

impl std::fmt::Debug for FunctionSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FunctionSpec")
            .field("duty", &self.duty)
            .field("name", &self.name)
            .field("wanted", &self.wanted)
            .field("role_arn", &self.role_arn)
            .field("memory_mb", &self.memory_mb)
            .field("timeout_s", &self.timeout_s)
            .field("reserved_concurrency", &self.reserved_concurrency)
            .field("key_arn", &self.key_arn)
            .field(
                "environment",
                &self
                    .environment
                    .as_ref()
                    .map(|e| e.keys().collect::<Vec<_>>()),
            )
            .field("signing_profile", &self.signing_profile)
            .field("notifies", &self.notifies)
            .field("in_vpc", &self.in_vpc)
            .field("owner", &self.owner)
            .finish()
    }
}

impl RotationSpec {
    /// Whether rotation is wanted.
    pub fn rotates(&self) -> bool {
        self.days > 0
    }
}

impl Spec {
    /// The TLS secret's resource policy: only the Vault instance's role reads it, and once the
    /// instance is there, only until `read_until` (an hour after it was made: its boot script
    /// reads the key once), so nothing that runs on it later (the change watcher) can read the
    /// key through the instance's role ([`VaultServerSpec::tls_policy`]).
    pub fn tls_secret_policy(&self, read_until: Option<&str>) -> Result<Value, TemplateError> {
        Ok(self.vault_server_spec()?.tls_policy(read_until))
    }

    /// The key `deployer target up` makes in the account (and region) of this sync's
    /// `account_role_arn`, with `account_kms_key = "create"`: administered by that account,
    /// used through Secrets Manager by any of its principals that may read a replica (as its
    /// `aws/secretsmanager` key is). None otherwise.
    pub fn account_key(&self) -> Result<Option<(String, KeySpec)>, TemplateError> {
        let Some(role) = &self.cfg.replicator.account_role else {
            return Ok(None);
        };
        if self.cfg.replicator.account_key != contract::rules::AccountKmsKey::Create {
            return Ok(None);
        }
        let there = self.in_account_of(role);
        let mut tags = self.tags();
        tags.insert(KEY_PURPOSE_TAG.to_owned(), "replicas".to_owned());
        Ok(Some((
            there.id.region.clone(),
            KeySpec {
                alias: self.account_key_alias(),
                description: format!(
                    "vault-secrets-replicator: encrypts the replicas of stack {}",
                    self.stack()
                ),
                policy: there.render(crate::policy::ACCOUNT_KEY_POLICY, vec![])?,
                tags,
                deletion_window_days: self.cfg.kms_deletion_window_days,
            },
        )))
    }

    pub fn owner(&self) -> Owner {
        Owner::new(self.stack())
    }

    /// The stack's own key: found by its alias, or by the stack tag after an interrupted `up`.
    pub fn stack_key(&self) -> Result<KeySpec, TemplateError> {
        Ok(KeySpec {
            alias: self.key_alias(),
            description: self.key_description().to_owned(),
            policy: self.key_policy()?,
            tags: self.tags(),
            deletion_window_days: self.cfg.kms_deletion_window_days,
        })
    }

    /// The key's ARN when the functions' policies can be rendered: the key made, and with
    /// Vault on EC2 the VPC too. Otherwise their policies are known after apply.
    fn known<'a>(&self, key_arn: Option<&'a str>, vpc_id: Option<&str>) -> Option<&'a str> {
        key_arn.filter(|_| !self.deploys_vault() || vpc_id.is_some())
    }

    /// A role the stack's functions run as (trusting Lambda), with `policy`.
    fn functions_role(
        &self,
        name: String,
        description: &'static str,
        policy_name: &'static str,
        policy: Option<Value>,
    ) -> Result<RoleSpec, TemplateError> {
        Ok(RoleSpec {
            name,
            description,
            trust: self.replicator_trust()?,
            policy_name,
            policy,
            instance_profile: false,
            path: None,
            owner: self.owner(),
        })
    }

    /// The replicator's role.
    pub fn replicator_role_spec(
        &self,
        key_arn: Option<&str>,
        vpc_id: Option<&str>,
    ) -> Result<RoleSpec, TemplateError> {
        let policy = (self.known(key_arn, vpc_id))
            .map(|k| self.replicator_policy(k, vpc_id))
            .transpose()?;
        self.functions_role(
            self.role_name(),
            "vault-secrets-replicator Lambda: writes <prefix>/* secrets only",
            "replicator",
            policy,
        )
    }

    /// The rotation function's role: the connection secret and the rotator's credential only.
    pub fn rotation_role_spec(
        &self,
        key_arn: Option<&str>,
        vpc_id: Option<&str>,
    ) -> Result<RoleSpec, TemplateError> {
        let policy = (self.known(key_arn, vpc_id))
            .map(|k| self.rotation_policy(k, vpc_id))
            .transpose()?;
        self.functions_role(
            self.rotation_role_name(),
            "vault-secrets-replicator rotation: the connection secret's AppRole secret id only",
            "rotation",
            policy,
        )
    }

    /// Where the rules' roles in the stack's account live.
    pub fn rule_roles_spec(&self) -> RuleRolesSpec {
        RuleRolesSpec {
            path: self.rule_role_path(),
            name_prefix: crate::config::rule_role_name(self.stack(), ""),
            owner: self.owner(),
        }
    }

    /// The roles of the rules writing in the stack's account, one each (see
    /// [`Spec::home_rule_roles`]).
    pub fn rule_role_specs(&self) -> Result<Vec<RoleSpec>, TemplateError> {
        let path = self.rule_role_path();
        Ok(self
            .home_rule_roles()?
            .into_iter()
            .map(|role| RoleSpec {
                name: role.arn.rsplit('/').next().unwrap_or_default().to_owned(),
                description: RULE_ROLE_DESCRIPTION,
                trust: role.trust,
                policy_name: "replicas",
                policy: Some(role.policy),
                instance_profile: false,
                path: Some(path.clone()),
                owner: self.owner(),
            })
            .collect())
    }

    /// The Vault instance's role and instance profile.
    pub fn vault_role_spec(&self, key_arn: Option<&str>) -> Result<RoleSpec, TemplateError> {
        Ok(RoleSpec {
            name: self.vault_name(),
            description: "Vault server on EC2: its TLS key; the watcher's code digest, function and notices",
            trust: self.vault_instance_trust()?,
            policy_name: "vault-server",
            policy: key_arn.map(|k| self.vault_instance_policy(k)).transpose()?,
            instance_profile: true,
            path: None,
            owner: self.owner(),
        })
    }

    pub fn monitoring_spec(&self) -> MonitoringSpec {
        MonitoringSpec {
            topic_arn: self.notifies().then(|| self.topic_arn()),
            schedule: self.cfg.schedule.clone(),
            paused: self.paused,
            vault_host: self.deploys_vault(),
            dashboard: self.cfg.dashboard,
            region: self.id.region.clone(),
            alarm_arn_prefix: self.arn("cloudwatch", true, "alarm:"),
            owner: self.owner(),
        }
    }

    pub fn vault_server_spec(&self) -> Result<VaultServerSpec, TemplateError> {
        let (instance_type, vault_version) = match &self.cfg.vault {
            crate::config::VaultMode::Ec2 {
                instance_type,
                version,
                ..
            } => (instance_type.clone(), version.clone()),
            crate::config::VaultMode::External { .. } => Default::default(),
        };
        let tls_secret = self.tls_secret_name();
        let tls_secret_arn = self.secret_arn_pattern(&tls_secret);
        Ok(VaultServerSpec {
            name: self.vault_name(),
            wanted: self.deploys_vault(),
            instance_type,
            vault_version,
            region: self.id.region.clone(),
            tls_read: self.render(
                crate::policy::SECRET_READ_BY_ONE_ROLE,
                vec![
                    ("role_arn", self.vault_instance_role_arn()),
                    ("secret_arn", tls_secret_arn.clone()),
                ],
            )?,
            tls_secret,
            tls_secret_arn,
            ca_parameter: self.ca_parameter(),
            digest_parameter: self.watcher_digest_parameter(),
            key_alias: self.key_alias(),
            watch_function: self.function_name_of(Duty::Watch),
            prefix: self.cfg.prefix.clone(),
            topic_arn: self.notifies().then(|| self.topic_arn()),
            owner: self.owner(),
        })
    }

    /// The endpoint service name of `service` in the stack's region.
    fn endpoint_service(&self, service: &str) -> String {
        let prefix = if self.id.partition == "aws-cn" {
            "cn.com.amazonaws"
        } else {
            "com.amazonaws"
        };
        format!("{prefix}.{}.{service}", self.id.region)
    }

    /// Endpoint services the Lambda needs: Secrets Manager, STS when `[[sync]]` rules write
    /// in the stack's account (each with a role of its own, which the function assumes), and
    /// EventBridge with `events = true` (the change events). Failure notices leave through
    /// the function's on-failure destination, which Lambda delivers from outside the VPC.
    pub fn endpoint_services(&self) -> Vec<String> {
        let mut all = vec![self.endpoint_service("secretsmanager")];
        if self.assumes_roles_here() {
            all.push(self.endpoint_service("sts"));
        }
        if self.event_bus_arn().is_some() {
            all.push(self.endpoint_service("events"));
        }
        all
    }

    /// Every endpoint service the stack may have made: the wanted ones, STS and EventBridge
    /// (made when wanted, then no longer), and SNS (an earlier version made one): those not
    /// wanted are removed.
    pub fn endpoint_services_all(&self) -> Vec<String> {
        let mut all = self.endpoint_services();
        for service in ["sts", "events", "sns"] {
            let name = self.endpoint_service(service);
            if !all.contains(&name) {
                all.push(name);
            }
        }
        all
    }

    /// The network; its endpoints' policies rendered only when it is wanted (EventBridge's
    /// names the bus).
    pub fn network_spec(&self) -> Result<NetworkSpec, TemplateError> {
        let mut network = self.network_names();
        if network.wanted() {
            network.endpoints = (self.endpoint_services().into_iter())
                .map(|s| Ok((s.clone(), self.endpoint_policy(&s)?)))
                .collect::<Result<_, TemplateError>>()?;
        }
        Ok(network)
    }

    /// The network as its teardown reads it: names, groups and endpoint services, no
    /// document (none to render, so none that a configuration `up` refuses can stop it).
    pub fn network_names(&self) -> NetworkSpec {
        NetworkSpec {
            name: self.vault_name(),
            inbound_cidr: match &self.cfg.vault {
                crate::config::VaultMode::Ec2 { inbound_cidr, .. } => Some(inbound_cidr.clone()),
                crate::config::VaultMode::External { .. } => None,
            },
            region: self.id.region.clone(),
            endpoints: BTreeMap::new(),
            endpoints_ever: self.endpoint_services_all(),
            owner: self.owner(),
        }
    }

    /// This sync's replicas (in a sync's view: that rule's).
    pub fn sync_replicas_spec(&self) -> SyncReplicasSpec {
        let source = self.sync_source();
        SyncReplicasSpec {
            rule: source.rule.map(str::to_owned),
            prefix: source.prefix.to_owned(),
            mount: source.mount.to_owned(),
            path_tag: source.path_tag.to_owned(),
            recovery_window_days: self.cfg.replicator.recovery_window_days,
            resource_policy: self.cfg.replicator.resource_policy.clone(),
            in_other_account: self.cfg.replicator.account_role.is_some(),
            example_arn: self.arn(
                "secretsmanager",
                true,
                &format!("secret:{}/example-AbCdEf", self.write_prefix()),
            ),
            owner: self.owner(),
        }
    }

    /// Every sync's replicas, in the order of [`Spec::syncs`].
    pub fn replica_syncs(&self) -> Vec<SyncReplicasSpec> {
        (self.syncs().iter())
            .map(Spec::sync_replicas_spec)
            .collect()
    }

    /// Every sync's replicas and the key they are encrypted with.
    pub fn replicas_spec(&self) -> Result<ReplicasSpec, TemplateError> {
        Ok(ReplicasSpec {
            key: self.stack_key()?,
            syncs: self.replica_syncs(),
        })
    }

    pub fn topic_spec(&self) -> TopicSpec {
        TopicSpec {
            name: self.topic_name(),
            arn: self.topic_arn(),
            email: self.cfg.notification_email.clone(),
            owner: self.owner(),
        }
    }

    pub fn schedule_spec(&self) -> ScheduleSpec {
        ScheduleSpec {
            name: self.rule_name(),
            arn: self.rule_arn(),
            expression: self.cfg.schedule.clone(),
            enabled: !self.paused,
            function_name: self.function_name(),
            function_arn: self.function_arn(),
            permission_id: self.permission_id(),
            owner: self.owner(),
        }
    }

    pub fn log_group_spec(&self, duty: Duty) -> LogGroupSpec {
        LogGroupSpec {
            name: self.log_group_of(duty),
            arn: self.log_group_arn_of(duty),
            wanted: self.serves(duty),
            retention_days: self.cfg.log_retention_days,
            owner: self.owner(),
        }
    }

    pub fn secret_spec(&self) -> Result<SecretSpec, TemplateError> {
        Ok(SecretSpec {
            name: self.connection_secret(),
            policy: self.connection_secret_policy()?,
            rotator: self.rotator_secret(),
            owner: self.owner(),
        })
    }

    pub fn signing_spec(&self) -> SigningSpec {
        SigningSpec {
            name: self.code_signing_name(),
            description: self.code_signing_description(),
            profile: self.cfg.code_signing_profile.clone(),
            functions: Duty::ALL
                .into_iter()
                .map(|d| self.function_name_of(d))
                .collect(),
            owner: self.owner(),
        }
    }

    /// The function serving `duty`, its environment encrypted with `key_arn` (none until the
    /// key is made).
    pub fn function_spec(&self, duty: Duty, key_arn: Option<&str>) -> FunctionSpec {
        // The watcher sends one batch at a time, so its function needs one slot, reserved
        // unless the stack reserves none; Secrets Manager rotates one secret at a time.
        let reserved_concurrency = match (duty, self.cfg.lambda_reserved_concurrency) {
            (Duty::Sync, n) | (Duty::Watch, n @ 0) => n,
            (Duty::Watch, _) => 1,
            (Duty::Rotate, _) => 0,
        };
        FunctionSpec {
            duty,
            name: self.function_name_of(duty),
            wanted: self.serves(duty),
            role_arn: self.role_arn_of(duty),
            memory_mb: self.cfg.lambda_memory_mb,
            timeout_s: self.cfg.lambda_timeout_seconds,
            reserved_concurrency,
            key_arn: key_arn.map(str::to_owned),
            environment: key_arn.map(|k| self.lambda_environment_of(duty, k)),
            signing_profile: self.cfg.code_signing_profile.clone(),
            notifies: duty == Duty::Sync && self.notifies(),
            in_vpc: self.deploys_vault(),
            owner: self.owner(),
        }
    }

    pub fn rotation_spec(&self) -> RotationSpec {
        RotationSpec {
            secret: self.connection_secret(),
            rotator: self.rotator_secret(),
            days: self.cfg.secret_id_rotation_days,
            function_name: self.function_name_of(Duty::Rotate),
            function_arn: self.function_arn_of(Duty::Rotate),
            statement_id: format!("{}-secretsmanager-rotates", self.stack()),
            account: self.id.account.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::spec::Duty;
    use crate::spec::tests::spec;

    #[test]
    fn a_functions_part_prints_no_external_id() {
        let s = spec(
            "stack_name = \"s\"\ndeploy_vault_on_ec2 = false\nexternal_vault_address = \"https://v.example.com:8200\"\naccount_role_arn = \"arn:aws-cn:iam::222222222222:role/r\"\nexternal_id = \"ext-secretish-1\"\n",
        );
        let f = s.function_spec(
            Duty::Sync,
            Some("arn:aws-cn:kms:cn-north-1:123456789012:key/k"),
        );
        let env = f.environment.as_ref().unwrap();
        assert!(env.values().any(|v| v.contains("ext-secretish-1")));
        let shown = format!("{f:?}");
        assert!(!shown.contains("ext-secretish"), "{shown}");
        assert!(shown.contains(contract::env::EXTERNAL_ID), "{shown}");
    }
}
