//! The deployer's configuration: `deployer.toml` (keys of the sample, in snake_case), overridden
//! by flags, validated completely before any AWS call. Pure except for reading the file.

use std::net::IpAddr;
use std::ops::RangeInclusive;
use std::path::Path;

use serde::Deserialize;

use contract::naming::{Granularity, NameTemplate};
use contract::rules::{AccountKmsKey, RuleDoc};
use contract::{DEFAULT_PREFIX, DeletionPolicy, ReplicaRegion, ranges};

/// Default days between automatic rotations of the replicator's secret id: a new id every ten
/// days, each living three periods, so two failed rotations in a row still leave time to act.
pub const SECRET_ID_ROTATION_DAYS: i32 = 10;
/// The longest rotation period (a secret id living three periods stays under Vault's limits).
pub const MAX_ROTATION_DAYS: i32 = 120;

/// The longest resource policy template (compact JSON) the function's environment carries.
pub const MAX_POLICY_IN_ENV: usize = 2_048;

/// Default EventBridge schedule (the sample's).
pub const DEFAULT_SCHEDULE: &str = "cron(0,30 * * * ? *)";

/// Keys of `deployer.toml`. Unknown keys are errors, so a typo never silently falls back.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub stack_name: Option<String>,
    pub region: Option<String>,
    pub secrets_prefix: Option<String>,
    pub vault_inbound_cidr: Option<String>,
    pub vault_client_cidrs: Option<Vec<String>>,
    pub notification_email: Option<String>,
    /// Put one EventBridge event per replicated change on `events_bus`.
    pub events: Option<bool>,
    /// The bus (in the stack's account and region) of `events`: its default bus if left out.
    pub events_bus: Option<String>,
    /// Make the stack's CloudWatch dashboard (`true` by default; $3 a month beyond an
    /// account's first three).
    pub dashboard: Option<bool>,
    pub deploy_vault_on_ec2: Option<bool>,
    pub external_vault_address: Option<String>,
    pub schedule: Option<String>,
    pub deletion_policy: Option<DeletionPolicy>,
    pub recovery_window_days: Option<i64>,
    pub max_delete_share: Option<f64>,
    pub concurrency: Option<i64>,
    pub lambda_memory_mb: Option<i64>,
    pub lambda_timeout_seconds: Option<i64>,
    pub lambda_reserved_concurrency: Option<i64>,
    pub secret_id_rotation_days: Option<i64>,
    pub log_retention_days: Option<i64>,
    pub kms_deletion_window_days: Option<i64>,
    pub vault_instance_type: Option<String>,
    pub vault_version: Option<String>,
    pub code_signing_profile: Option<String>,
    pub replica_regions: Option<Vec<String>>,
    pub name_template: Option<String>,
    pub granularity: Option<Granularity>,
    pub tags: Option<std::collections::BTreeMap<String, String>>,
    pub metadata_tag_keys: Option<Vec<String>>,
    pub adopt_sample: Option<bool>,
    pub latest_deleted: Option<contract::LatestDeleted>,
    pub max_keys_per_secret: Option<i64>,
    pub region_audit_hours: Option<i64>,
    pub include: Option<Vec<String>>,
    pub exclude: Option<Vec<String>>,
    pub opt_in: Option<bool>,
    pub resource_policy: Option<String>,
    pub account_role_arn: Option<String>,
    pub external_id: Option<String>,
    /// With `account_role_arn`: the key of the replicas there.
    pub account_kms_key: Option<AccountKmsKey>,
    /// `[[sync]]`: the rules, each its keys over the top level's. None: the top level is the
    /// one sync.
    pub sync: Option<Vec<RuleDoc>>,
    /// The folder of the file read: a relative `resource_policy` path is found from there.
    #[serde(skip)]
    pub base_dir: Option<std::path::PathBuf>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("cannot read {path}: {message}")]
    Read { path: String, message: String },
    #[error("{path}: {message}")]
    Parse { path: String, message: String },
    #[error("{key}: {problem}")]
    Invalid { key: String, problem: String },
}

fn invalid(key: &str, problem: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_owned(),
        problem: problem.into(),
    }
}

/// Where Vault runs.
#[derive(Debug, Clone, PartialEq)]
pub enum VaultMode {
    /// A Vault server on EC2, deployed by the stack.
    Ec2 {
        instance_type: String,
        version: String,
        /// Who may reach port 8200 besides the replicator.
        inbound_cidr: String,
    },
    /// An existing Vault at this address.
    External {
        address: String,
        /// The addresses Vault sees the replicator's requests come from, when the operator
        /// knows them: the AppRole's secret id and tokens work only from there.
        client_cidrs: Vec<String>,
    },
}

/// The replicator's settings the deployer passes on as Lambda environment.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplicatorSettings {
    pub deletion_policy: DeletionPolicy,
    pub recovery_window_days: i64,
    pub max_delete_share: f64,
    pub concurrency: usize,
    /// Sorted by region; a KMS key is a key ARN in its region, so the role can be granted
    /// exactly that key.
    pub replica_regions: Vec<ReplicaRegion>,
    /// Set only when not the granularity's default.
    pub name_template: Option<NameTemplate>,
    pub granularity: Granularity,
    pub tags: std::collections::BTreeMap<String, String>,
    /// The tag keys Vault custom metadata may set (`tag:KEY`); none by default.
    pub metadata_tag_keys: std::collections::BTreeSet<String>,
    /// Take over the AWS sample's replicas (once, when moving from it).
    pub adopt_sample: bool,
    pub latest_deleted: contract::LatestDeleted,
    pub max_keys_per_secret: usize,
    pub region_audit_hours: u64,
    /// Which secrets under the path are replicated: include/exclude globs, opt-in.
    pub selection: contract::select::Selection,
    /// The resource policy put on every replica.
    pub resource_policy: Option<contract::resource_policy::ResourcePolicy>,
    /// The role the replicas are written with in another account; none: the stack's own.
    pub account_role: Option<contract::account::AccountRole>,
    /// With `account_role`: the key of the replicas there (that account's
    /// `aws/secretsmanager`, or one `deployer target up` makes).
    pub account_key: AccountKmsKey,
}

/// One `[[sync]]` rule, checked: where it reads in Vault, where it writes, its settings.
#[derive(Debug, Clone, PartialEq)]
pub struct SyncRule {
    pub name: String,
    pub prefix: String,
    /// The KV v2 mount (the rule's prefix unless given), its sub-path, its namespace.
    pub mount: String,
    pub path: String,
    pub namespace: Option<String>,
    /// The region of its replicas; none: the stack's.
    pub region: Option<String>,
    pub replicator: ReplicatorSettings,
    /// The rule as the function reads it (`REPLICATOR_RULES`): the keys it sets, its resource
    /// policy read from its file; the rest the function takes from the top level's.
    pub doc: RuleDoc,
}

/// The IAM path under which `up` makes the roles of the rules in a stack's own account (then
/// the stack's name).
pub const RULE_ROLE_PATH: &str = "/vault-secrets-replicator/";

/// The name of the role `up` makes for rule `rule` of stack `stack` when the rule writes in
/// the stack's account: `.` is in neither name, so no two stacks' rules share one.
pub fn rule_role_name(stack: &str, rule: &str) -> String {
    format!("{stack}.sync.{rule}")
}

impl SyncRule {
    /// Where the rule writes: its prefix, account and region; an account or region it leaves
    /// to the stack is `here`'s (the stack's, once known), else none.
    fn destination(&self, here: Option<(&str, &str)>) -> (&str, Option<String>, Option<String>) {
        let account = self
            .replicator
            .account_role
            .as_ref()
            .map(|a| a.account())
            .or(here.map(|h| h.0));
        let region = self.region.as_deref().or(here.map(|h| h.1));
        (
            &self.prefix,
            account.map(str::to_owned),
            region.map(str::to_owned),
        )
    }
}

/// A validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub stack_name: String,
    pub region: Option<String>,
    pub prefix: String,
    pub notification_email: Option<String>,
    /// The event bus, in the stack's account and region, each replicated change is announced
    /// on (`events = true`); none: no events.
    pub events_bus: Option<String>,
    /// Whether `up` makes the stack's dashboard (and keeps it); the alarms are made either way.
    pub dashboard: bool,
    pub vault: VaultMode,
    pub schedule: String,
    pub replicator: ReplicatorSettings,
    /// `[[sync]]`, in the file's order; empty: the top-level keys are the one sync (prefix,
    /// mount `prefix`, `replicator`).
    pub rules: Vec<SyncRule>,
    pub lambda_memory_mb: i32,
    pub lambda_timeout_seconds: i32,
    /// 1: one run at a time (a schedule firing during a long run waits); 0: not reserved (an
    /// account at Lambda's default limit of 10 cannot reserve any).
    pub lambda_reserved_concurrency: i32,
    /// Days between rotations of the replicator's AppRole secret id by Secrets Manager (the
    /// rotation function); 0: no rotation function, the secret id is rotated by hand.
    pub secret_id_rotation_days: i32,
    pub log_retention_days: i32,
    pub kms_deletion_window_days: i32,
    /// The AWS Signer profile version whose signature the functions' code must carry (a code
    /// signing config that enforces it); none: any code the deployer uploads runs.
    pub code_signing_profile: Option<String>,
    /// Things worth saying that are not errors (an open CIDR, for one).
    pub warnings: Vec<String>,
}

/// CloudWatch Logs' accepted retention values.
const RETENTION_DAYS: &[i32] = &[
    1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922,
    3288, 3653,
];

/// `given` (else `default`) as the type the setting is used as, when `allowed` holds it;
/// otherwise an error naming `key` with the bounds, and `note` on what they mean. Each
/// setting's bounds are one constant, here or in `contract::ranges` (the function's own).
fn bounded<T>(
    key: &str,
    given: Option<i64>,
    default: T,
    allowed: &RangeInclusive<T>,
    note: &str,
) -> Result<T, ConfigError>
where
    T: TryFrom<i64> + PartialOrd + std::fmt::Display,
{
    let Some(g) = given else {
        return Ok(default);
    };
    T::try_from(g)
        .ok()
        .filter(|v| allowed.contains(v))
        .ok_or_else(|| {
            invalid(
                key,
                format!(
                    "{g} is outside {} to {}{note}",
                    allowed.start(),
                    allowed.end()
                ),
            )
        })
}

const LAMBDA_MEMORY_MB: RangeInclusive<i32> = 128..=10240;
const LAMBDA_TIMEOUT_SECONDS: RangeInclusive<i32> = 1..=900;
const LAMBDA_RESERVED_CONCURRENCY: RangeInclusive<i32> = 0..=1;
const KMS_DELETION_WINDOW_DAYS: RangeInclusive<i32> = 7..=30;

impl FileConfig {
    /// Reads a TOML file; a missing default file is an empty configuration.
    pub fn load(path: &Path, required: bool) -> Result<Self, ConfigError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => {
                return Ok(Self::default());
            }
            Err(e) => {
                return Err(ConfigError::Read {
                    path: path.display().to_string(),
                    message: e.to_string(),
                });
            }
        };
        let mut file = Self::parse(&text, &path.display().to_string())?;
        file.base_dir = path.parent().map(Path::to_path_buf);
        Ok(file)
    }

    pub fn parse(text: &str, origin: &str) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: origin.to_owned(),
            message: e.to_string(),
        })
    }

    /// Applies `key=value` overrides (TOML values; bare strings allowed).
    pub fn apply_overrides(&mut self, sets: &[String]) -> Result<(), ConfigError> {
        for set in sets {
            let (key, value) = set
                .split_once('=')
                .ok_or_else(|| invalid("--set", format!("{set:?} is not KEY=VALUE")))?;
            let key = key.trim();
            let value = value.trim();
            let line = if value.parse::<toml::Value>().is_ok()
                || toml::from_str::<toml::Table>(&format!("v = {value}")).is_ok()
            {
                format!("{key} = {value}")
            } else {
                format!("{key} = {}", toml::Value::String(value.to_owned()))
            };
            let one: Self = Self::parse(&line, "--set")?;
            self.merge(one);
        }
        Ok(())
    }

    fn merge(&mut self, o: Self) {
        // Taken apart whole, so that a key added to the file cannot be forgotten here (an
        // unlisted field is a compile error).
        macro_rules! take {
            ($($f:ident),*) => {
                let Self { $($f,)* base_dir: _ } = o;
                $( if $f.is_some() { self.$f = $f; } )*
            };
        }
        take!(
            stack_name,
            region,
            secrets_prefix,
            vault_inbound_cidr,
            vault_client_cidrs,
            notification_email,
            events,
            events_bus,
            dashboard,
            deploy_vault_on_ec2,
            external_vault_address,
            schedule,
            deletion_policy,
            recovery_window_days,
            max_delete_share,
            concurrency,
            lambda_memory_mb,
            lambda_timeout_seconds,
            lambda_reserved_concurrency,
            secret_id_rotation_days,
            log_retention_days,
            kms_deletion_window_days,
            vault_instance_type,
            vault_version,
            code_signing_profile,
            replica_regions,
            name_template,
            granularity,
            tags,
            metadata_tag_keys,
            adopt_sample,
            latest_deleted,
            max_keys_per_secret,
            region_audit_hours,
            include,
            exclude,
            opt_in,
            resource_policy,
            account_role_arn,
            external_id,
            account_kms_key,
            sync
        );
    }

    /// The bus of `events = true`: `events_bus`, a name in the stack's account and region, or
    /// the default bus.
    fn events_bus(&self) -> Result<Option<String>, ConfigError> {
        let bus = self.events_bus.as_deref().map(str::trim);
        match (self.events.unwrap_or(false), bus) {
            (false, None) => Ok(None),
            (false, Some(_)) => Err(invalid(
                "events_bus",
                "is given without events = true: add events = true to announce each replicated change on it",
            )),
            (true, None) => Ok(Some(contract::events::DEFAULT_BUS.to_owned())),
            (true, Some(bus)) if bus.starts_with("arn:") => Err(invalid(
                "events_bus",
                format!(
                    "{bus:?}: give the bus's name (the bus is in the stack's account and region), not its ARN"
                ),
            )),
            (true, Some(bus)) => {
                contract::events::check_bus(bus).map_err(|e| invalid("events_bus", e))?;
                Ok(Some(bus.to_owned()))
            }
        }
    }

    /// The role in another account the replicas are written with, both keys checked as the
    /// function checks them.
    fn account_role(&self) -> Result<Option<contract::account::AccountRole>, ConfigError> {
        use contract::account::{AccountRole, AccountRoleError};
        AccountRole::from_settings(self.account_role_arn.as_deref(), self.external_id.as_deref())
            .map_err(|e| match e {
                AccountRoleError::RoleArn(e) => invalid("account_role_arn", e),
                AccountRoleError::ExternalId(e) => invalid("external_id", e),
                AccountRoleError::MissingExternalId => invalid(
                    "external_id",
                    format!(
                        "is required with account_role_arn (the role's trust policy checks it): add, for example, external_id = \"{}\" (made now at random), then run `deployer up`, then `deployer target up` (the role there trusts this stack's replicator role, which must exist first)",
                        random_external_id()
                    ),
                ),
                AccountRoleError::ExternalIdWithoutRole => invalid(
                    "external_id",
                    "is given without account_role_arn, the role it is for",
                ),
            })
    }

    /// The replicas' resource policy, read from its file (relative to the configuration file)
    /// and checked; it reaches the function in its environment, which Lambda caps at 4 KB.
    fn resource_policy(
        &self,
    ) -> Result<Option<contract::resource_policy::ResourcePolicy>, ConfigError> {
        const KEY: &str = "resource_policy";
        let Some(file) = self.resource_policy.as_deref().filter(|f| !f.is_empty()) else {
            return Ok(None);
        };
        let path = match &self.base_dir {
            Some(dir) if Path::new(file).is_relative() => dir.join(file),
            _ => Path::new(file).to_path_buf(),
        };
        let text = std::fs::read_to_string(&path)
            .map_err(|e| invalid(KEY, format!("cannot read {}: {e}", path.display())))?;
        let policy = contract::resource_policy::ResourcePolicy::parse(&text)
            .map_err(|e| invalid(KEY, format!("{}: the policy {e}", path.display())))?;
        if policy.template().len() > MAX_POLICY_IN_ENV {
            return Err(invalid(
                KEY,
                format!(
                    "{}: the policy is {} characters as compact JSON; it travels in the function's environment (4 KB for every variable), so at most {MAX_POLICY_IN_ENV} are accepted",
                    path.display(),
                    policy.template().len()
                ),
            ));
        }
        Ok(Some(policy))
    }

    /// Where Vault is: the stack's own on EC2 (`vault_inbound_cidr` required), or an external
    /// one (`external_vault_address` required); warns of an open CIDR or plain HTTP.
    fn vault(&self, warnings: &mut Vec<String>) -> Result<VaultMode, ConfigError> {
        let deploy = self.deploy_vault_on_ec2.unwrap_or(true);
        let external = self
            .external_vault_address
            .as_deref()
            .map(str::trim)
            .unwrap_or("");
        if deploy {
            if !external.is_empty() {
                return Err(invalid(
                    "external_vault_address",
                    "is set while deploy_vault_on_ec2 = true: set deploy_vault_on_ec2 = false to use an external Vault",
                ));
            }
            if self
                .vault_client_cidrs
                .as_ref()
                .is_some_and(|c| !c.is_empty())
            {
                return Err(invalid(
                    "vault_client_cidrs",
                    "is for an external Vault: the stack's own Vault binds the replicator's AppRole to its subnet already",
                ));
            }
            let cidr = self
                .vault_inbound_cidr
                .as_deref()
                .map(str::trim)
                .unwrap_or("");
            if cidr.is_empty() {
                return Err(invalid(
                    "vault_inbound_cidr",
                    "is required with deploy_vault_on_ec2: the CIDR allowed to reach Vault's port 8200, e.g. your office's 203.0.113.0/24 (0.0.0.0/0 only if you mean the whole internet)",
                ));
            }
            check_cidr(cidr).map_err(|p| invalid("vault_inbound_cidr", p))?;
            if cidr == "0.0.0.0/0" || cidr == "::/0" {
                warnings.push(format!(
                    "vault_inbound_cidr = {cidr} opens Vault's port 8200 to the whole internet"
                ));
            }
            let instance_type = self
                .vault_instance_type
                .clone()
                .unwrap_or_else(|| "t3.micro".into());
            if !instance_type.contains('.') || instance_type.contains(char::is_whitespace) {
                return Err(invalid(
                    "vault_instance_type",
                    format!("{instance_type:?} is not an instance type such as t3.micro"),
                ));
            }
            let version = self
                .vault_version
                .clone()
                .unwrap_or_else(|| "1.18.3".into());
            if version.is_empty() || !version.chars().all(|c| c.is_ascii_digit() || c == '.') {
                return Err(invalid(
                    "vault_version",
                    format!("{version:?} is not a version such as 1.18.3"),
                ));
            }
            Ok(VaultMode::Ec2 {
                instance_type,
                version,
                inbound_cidr: cidr.to_owned(),
            })
        } else {
            if external.is_empty() {
                return Err(invalid(
                    "external_vault_address",
                    "is required when deploy_vault_on_ec2 = false, e.g. https://vault.example.com:8200",
                ));
            }
            check_url(external).map_err(|p| invalid("external_vault_address", p))?;
            if external.starts_with("http://") {
                warnings.push("external_vault_address uses plain http: the Vault token crosses the network unencrypted".into());
            }
            let mut client_cidrs = Vec::new();
            for cidr in self.vault_client_cidrs.iter().flatten() {
                check_cidr(cidr).map_err(|p| invalid("vault_client_cidrs", p))?;
                if cidr == "0.0.0.0/0" || cidr == "::/0" {
                    return Err(invalid(
                        "vault_client_cidrs",
                        format!(
                            "{cidr} binds to nothing: give the replicator's egress addresses, or leave the key out"
                        ),
                    ));
                }
                client_cidrs.push(cidr.clone());
            }
            Ok(VaultMode::External {
                address: external.trim_end_matches('/').to_owned(),
                client_cidrs,
            })
        }
    }

    pub fn validate(&self) -> Result<Config, ConfigError> {
        let mut warnings = Vec::new();
        let stack_name = self
            .stack_name
            .clone()
            .unwrap_or_else(|| "hybrid-secrets".into());
        if stack_name.is_empty()
            || stack_name.len() > 32
            || !stack_name.starts_with(|c: char| c.is_ascii_alphabetic())
            || !stack_name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-')
        {
            return Err(invalid(
                "stack_name",
                format!(
                    "{stack_name:?} must be 1-32 letters, digits or '-', starting with a letter"
                ),
            ));
        }
        let prefix = self
            .secrets_prefix
            .clone()
            .unwrap_or_else(|| DEFAULT_PREFIX.into());
        check_secrets_prefix("secrets_prefix", &prefix)?;
        let notification_email = match self.notification_email.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(e) => {
                check_email(e).map_err(|p| invalid("notification_email", p))?;
                Some(e.to_owned())
            }
        };
        let events_bus = self.events_bus()?;
        let schedule = self
            .schedule
            .clone()
            .unwrap_or_else(|| DEFAULT_SCHEDULE.into());
        crate::schedule::validate(&schedule).map_err(|p| invalid("schedule", p))?;

        let vault = self.vault(&mut warnings)?;
        let lambda_memory_mb = bounded(
            "lambda_memory_mb",
            self.lambda_memory_mb,
            128,
            &LAMBDA_MEMORY_MB,
            "",
        )?;
        let lambda_timeout_seconds = bounded(
            "lambda_timeout_seconds",
            self.lambda_timeout_seconds,
            120,
            &LAMBDA_TIMEOUT_SECONDS,
            "",
        )?;
        let lambda_reserved_concurrency = bounded(
            "lambda_reserved_concurrency",
            self.lambda_reserved_concurrency,
            1,
            &LAMBDA_RESERVED_CONCURRENCY,
            " (1: one run at a time; 0: not reserved)",
        )?;
        let secret_id_rotation_days = bounded(
            "secret_id_rotation_days",
            self.secret_id_rotation_days,
            SECRET_ID_ROTATION_DAYS,
            &(0..=MAX_ROTATION_DAYS),
            " (0: no automatic rotation)",
        )?;
        let log_retention_days = {
            let days = self.log_retention_days.unwrap_or(30);
            (RETENTION_DAYS.iter().copied())
                .find(|d| i64::from(*d) == days)
                .ok_or_else(|| {
                    invalid(
                        "log_retention_days",
                        format!("{days} is not one of CloudWatch's values {RETENTION_DAYS:?}"),
                    )
                })?
        };
        let kms_deletion_window_days = bounded(
            "kms_deletion_window_days",
            self.kms_deletion_window_days,
            30,
            &KMS_DELETION_WINDOW_DAYS,
            "",
        )?;

        if let Some(region) = &self.region
            && (region.is_empty()
                || !region
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'))
        {
            return Err(invalid(
                "region",
                format!("{region:?} is not a region name such as eu-west-1"),
            ));
        }
        let replicator = if self.sync.is_some() && self.account_role_arn.is_none() {
            // With rules, the top level's account_kms_key is the default of the rules that
            // write in another account.
            let mut top = self.clone();
            top.account_kms_key = None;
            top.replicator_settings(&vault)?
        } else {
            self.replicator_settings(&vault)?
        };
        let rules = self.rules(&vault)?;
        for rule in rules.iter().filter(|r| r.replicator.account_role.is_none()) {
            let role = rule_role_name(&stack_name, &rule.name);
            if role.len() > 64 {
                return Err(invalid(
                    &format!("sync {:?}: name", rule.name),
                    format!(
                        "the rule's role in the stack's account would be {role:?}, {} characters, over IAM's 64: shorten the rule's name or the stack's",
                        role.len()
                    ),
                ));
            }
        }
        if self.account_kms_key.is_some()
            && !rules.is_empty()
            && rules.iter().all(|r| r.replicator.account_role.is_none())
        {
            return Err(invalid(
                "account_kms_key",
                "no [[sync]] rule writes in another account (account_role_arn): the replicas in the stack's account are encrypted with the stack's key",
            ));
        }
        Ok(Config {
            stack_name,
            region: self.region.clone(),
            prefix,
            notification_email,
            events_bus,
            dashboard: self.dashboard.unwrap_or(true),
            vault,
            schedule,
            replicator,
            rules,
            lambda_memory_mb,
            lambda_timeout_seconds,
            lambda_reserved_concurrency,
            secret_id_rotation_days,
            log_retention_days,
            kms_deletion_window_days,
            code_signing_profile: match self.code_signing_profile.as_deref().map(str::trim) {
                None | Some("") => None,
                Some(arn) => {
                    check_signing_profile(arn).map_err(|p| invalid("code_signing_profile", p))?;
                    Some(arn.to_owned())
                }
            },
            warnings,
        })
    }
}

/// `secrets_prefix`, or a rule's `prefix`: a prefix the function may write under, never over a
/// stack's own secrets.
fn check_secrets_prefix(key: &str, prefix: &str) -> Result<(), ConfigError> {
    contract::check_prefix(prefix).map_err(|e| invalid(key, e))?;
    // The replicator may write everything under `<prefix>/`: never a secret of a stack, this
    // one's or another's (`<stack>-vault/tls`, `<stack>-vault/init-keys`,
    // `<prefix>-connection/vault`: every name family this tool creates).
    let stack_family = !prefix.contains('/') && prefix.ends_with("-vault");
    if stack_family || prefix.ends_with("-connection") {
        return Err(invalid(
            key,
            format!(
                "{prefix:?} would put a stack's own secrets (this stack's or another's: <stack>-vault/tls and init-keys, <prefix>-connection/vault) under the replicator's write scope: choose a prefix that does not end in -vault or -connection"
            ),
        ));
    }
    Ok(())
}

/// A Vault mount, path or namespace of a rule: segments of letters, digits, `.`, `_` and `-`
/// (they are written into the replicator's Vault policy, so nothing that policy syntax or its
/// globs would read otherwise). `None` when empty.
fn vault_segments(key: &str, given: Option<&str>) -> Result<Option<String>, ConfigError> {
    let Some(given) = given.map(|g| g.trim_matches('/')).filter(|g| !g.is_empty()) else {
        return Ok(None);
    };
    let bad = given.split('/').any(|s| {
        s.is_empty()
            || s == "."
            || s == ".."
            || !s
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    });
    if bad {
        return Err(invalid(
            key,
            format!(
                "{given:?} must be '/'-separated segments of letters, digits, '.', '_' and '-' (no '.' or '..' segment)"
            ),
        ));
    }
    Ok(Some(given.to_owned()))
}

impl FileConfig {
    /// `[[sync]]`, each rule checked over the top-level keys as the function reads it, and the
    /// rules together: names once each, no two rules writing one prefix of one account and
    /// region, at most [`contract::rules::MAX_RULES`]. The error names the rule and its key.
    fn rules(&self, vault: &VaultMode) -> Result<Vec<SyncRule>, ConfigError> {
        let Some(docs) = &self.sync else {
            return Ok(Vec::new());
        };
        if docs.is_empty() {
            return Err(invalid(
                "sync",
                "is empty: give one [[sync]] table per rule, or none for the top-level keys' one sync",
            ));
        }
        if docs.len() > contract::rules::MAX_RULES {
            return Err(invalid(
                "sync",
                format!(
                    "holds {} rules; at most {}",
                    docs.len(),
                    contract::rules::MAX_RULES
                ),
            ));
        }
        let mut rules: Vec<SyncRule> = Vec::with_capacity(docs.len());
        for doc in docs {
            contract::check_rule_name(&doc.name)
                .map_err(|e| invalid("sync: name", format!("a rule's name {e}")))?;
            if rules.iter().any(|r| r.name == doc.name) {
                return Err(invalid(
                    "sync: name",
                    format!("two rules are named {:?}: each needs its own", doc.name),
                ));
            }
            let rule = self.rule(doc, vault).map_err(|e| match e {
                ConfigError::Invalid { key, problem } => ConfigError::Invalid {
                    key: format!("sync {:?}: {key}", doc.name),
                    problem,
                },
                other => other,
            })?;
            if let Some(other) = rules
                .iter()
                .find(|r| r.destination(None) == rule.destination(None))
            {
                return Err(invalid(
                    &format!("sync {:?}: prefix", rule.name),
                    format!(
                        "{:?} is rule {:?}'s prefix in the same account and region: the two would write the same names",
                        rule.prefix, other.name
                    ),
                ));
            }
            let role = |r: &SyncRule| r.replicator.account_role.clone();
            if let Some(mine) = role(&rule)
                && let Some(other) = rules.iter().find(|r| {
                    role(r).is_some_and(|o| {
                        o.role_arn == mine.role_arn && o.external_id != mine.external_id
                    })
                })
            {
                return Err(invalid(
                    &format!("sync {:?}: external_id", rule.name),
                    format!(
                        "differs from rule {:?}'s, which names the same role: a role trusts one external id",
                        other.name
                    ),
                ));
            }
            if let Some(mine) = role(&rule)
                && let Some(other) = rules.iter().find(|r| {
                    role(r).is_some_and(|o| o.role_arn == mine.role_arn)
                        && r.replicator.account_key != rule.replicator.account_key
                })
            {
                return Err(invalid(
                    &format!("sync {:?}: account_kms_key", rule.name),
                    format!(
                        "differs from rule {:?}'s, which names the same role: the role is granted one choice of key",
                        other.name
                    ),
                ));
            }
            check_one_role(&rule, &rules)?;
            rules.push(rule);
        }
        Ok(rules)
    }

    /// One rule: its keys over the top level's, checked as the top level's are.
    fn rule(&self, doc: &RuleDoc, vault: &VaultMode) -> Result<SyncRule, ConfigError> {
        // Keys of the function's rules that the deployer decides itself.
        for (key, given, why) in [
            (
                "kms_key_id",
                doc.kms_key_id.is_some(),
                "the deployer chooses the key: the stack's at home, Secrets Manager's own in another account",
            ),
            (
                "on_modified",
                doc.on_modified.is_some(),
                "not a deployer.toml key",
            ),
            (
                "adopt",
                doc.adopt.is_some(),
                "not a deployer.toml key (adopt_sample is)",
            ),
        ] {
            if given {
                return Err(invalid(key, why));
            }
        }
        let prefix = doc.prefix.trim_matches('/').to_owned();
        check_secrets_prefix("prefix", &prefix)?;
        if let Some(region) = &doc.region {
            contract::check_region(region).map_err(|e| invalid("region", e))?;
        }
        // The stack's own secrets (its connection, the rotator's token) are never under a
        // rule's prefix: the rule's write scope would cover them.
        let stack_prefix = self
            .secrets_prefix
            .as_deref()
            .unwrap_or(DEFAULT_PREFIX)
            .trim_matches('/');
        if format!("{stack_prefix}-connection/").starts_with(&format!("{prefix}/")) {
            return Err(invalid(
                "prefix",
                format!(
                    "{prefix:?} covers the stack's connection secret ({stack_prefix}-connection/…): give the rule a prefix outside it, or change secrets_prefix"
                ),
            ));
        }
        let mount =
            vault_segments("mount", doc.mount.as_deref())?.unwrap_or_else(|| prefix.clone());
        vault_segments("mount", Some(&mount))?;
        let path = vault_segments("path", doc.path.as_deref())?.unwrap_or_default();
        let namespace = vault_segments("namespace", doc.namespace.as_deref())?;
        if namespace.is_some() && matches!(vault, VaultMode::Ec2 { .. }) {
            return Err(invalid(
                "namespace",
                "needs an external Vault with namespaces (Vault Enterprise, OpenBao): the stack's own Vault has none",
            ));
        }
        let mut file = self.clone();
        file.sync = None;
        file.secrets_prefix = Some(prefix.clone());
        if doc.region.is_some() {
            file.region.clone_from(&doc.region);
        }
        fn set<T: Clone>(to: &mut Option<T>, from: &Option<T>) {
            if from.is_some() {
                to.clone_from(from);
            }
        }
        set(&mut file.account_role_arn, &doc.account_role_arn);
        set(&mut file.external_id, &doc.external_id);
        if doc.account_kms_key.is_some() {
            file.account_kms_key = doc.account_kms_key;
        } else if file.account_role_arn.is_none() {
            // The top level's choice is for the rules in other accounts only.
            file.account_kms_key = None;
        }
        set(&mut file.include, &doc.include);
        set(&mut file.exclude, &doc.exclude);
        set(&mut file.opt_in, &doc.opt_in);
        set(&mut file.replica_regions, &doc.replica_regions);
        set(&mut file.name_template, &doc.name_template);
        set(&mut file.tags, &doc.tags);
        set(&mut file.metadata_tag_keys, &doc.metadata_tag_keys);
        set(&mut file.recovery_window_days, &doc.recovery_window_days);
        set(&mut file.max_delete_share, &doc.max_delete_share);
        set(&mut file.adopt_sample, &doc.adopt_sample);
        set(&mut file.granularity, &doc.granularity);
        set(&mut file.deletion_policy, &doc.deletion_policy);
        set(&mut file.latest_deleted, &doc.latest_deleted);
        if let Some(n) = doc.max_keys_per_secret {
            file.max_keys_per_secret = Some(i64::try_from(n).unwrap_or(i64::MAX));
        }
        match &doc.resource_policy {
            None => {}
            Some(serde_json::Value::String(path)) => file.resource_policy = Some(path.clone()),
            Some(_) => {
                return Err(invalid(
                    "resource_policy",
                    "give the path of the policy's JSON file (relative to deployer.toml)",
                ));
            }
        }
        let replicator = file.replicator_settings(vault)?;
        // What the function reads: the rule as given, checked values in place, the policy
        // itself rather than its file (the function cannot read the deployer's files).
        let mut sent = doc.clone();
        sent.prefix.clone_from(&prefix);
        sent.mount = doc.mount.as_ref().map(|_| mount.clone());
        sent.path = (!path.is_empty()).then(|| path.clone());
        sent.namespace.clone_from(&namespace);
        // The function is given the key itself (see `Spec::lambda_environment`).
        sent.account_kms_key = None;
        sent.resource_policy = replicator
            .resource_policy
            .as_ref()
            .filter(|_| doc.resource_policy.is_some())
            .map(|p| serde_json::Value::String(p.template().to_owned()));
        Ok(SyncRule {
            name: doc.name.clone(),
            prefix,
            mount,
            path,
            namespace,
            region: doc.region.clone(),
            replicator,
            doc: sent,
        })
    }

    /// The replicator's settings from the keys of one sync (the top level's, or a rule's over
    /// them): each checked as the function checks it.
    fn replicator_settings(&self, vault: &VaultMode) -> Result<ReplicatorSettings, ConfigError> {
        // Enums are parsed with the file: an invalid one is the parser's error, naming its key.
        let deletion_policy = self.deletion_policy.unwrap_or_default();
        let recovery_window_days = bounded(
            "recovery_window_days",
            self.recovery_window_days,
            contract::defaults::RECOVERY_WINDOW_DAYS,
            &ranges::RECOVERY_WINDOW_DAYS,
            "",
        )?;
        let max_delete_share = self
            .max_delete_share
            .unwrap_or(contract::defaults::MAX_DELETE_SHARE);
        if !ranges::MAX_DELETE_SHARE.contains(&max_delete_share) {
            return Err(invalid(
                "max_delete_share",
                format!("{max_delete_share} is outside 0 to 1"),
            ));
        }
        let concurrency = bounded(
            "concurrency",
            self.concurrency,
            contract::defaults::CONCURRENCY,
            &ranges::CONCURRENCY,
            "",
        )?;
        let replica_regions = self.replica_regions()?;
        let granularity = self.granularity.unwrap_or_default();
        let name_template = match self.name_template.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(t) => {
                Some(NameTemplate::parse(t, granularity).map_err(|e| invalid("name_template", e))?)
            }
        };
        let tags = self.tags.clone().unwrap_or_default();
        for (k, v) in &tags {
            contract::tags::check(k, v).map_err(|e| invalid("tags", e))?;
            // The function reads its tags as KEY=VALUE pairs (REPLICATOR_TAGS): a key with `=`
            // would be read as a shorter key with a longer value.
            if k.contains('=') {
                return Err(invalid(
                    "tags",
                    format!(
                        "{k:?}: a tag key with '=' cannot be passed to the replicator (REPLICATOR_TAGS is KEY=VALUE,...): rename the key"
                    ),
                ));
            }
        }
        let operator: Vec<(String, String)> =
            tags.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        let metadata_tag_keys = contract::tags::metadata_keys(
            self.metadata_tag_keys.iter().flatten().map(String::as_str),
            &operator,
        )
        .map_err(|e| invalid("metadata_tag_keys", e))?;
        let latest_deleted = self.latest_deleted.unwrap_or_default();
        let max_keys_per_secret = bounded(
            "max_keys_per_secret",
            self.max_keys_per_secret,
            contract::defaults::MAX_KEYS_PER_SECRET,
            &ranges::MAX_KEYS_PER_SECRET,
            "",
        )?;
        let region_audit_hours = bounded(
            "region_audit_hours",
            self.region_audit_hours,
            contract::defaults::REGION_AUDIT_HOURS,
            &ranges::REGION_AUDIT_HOURS,
            " hours",
        )?;
        let selection = contract::select::Selection::new(
            self.include.clone().unwrap_or_default(),
            self.exclude.clone().unwrap_or_default(),
            self.opt_in.unwrap_or(false),
        )
        .map_err(|e| invalid("include / exclude", e))?;
        let resource_policy = self.resource_policy()?;
        let account_role = self.account_role()?;
        if self.account_kms_key.is_some() && account_role.is_none() {
            return Err(invalid(
                "account_kms_key",
                "is given without account_role_arn: the replicas in the stack's account are encrypted with the stack's key",
            ));
        }
        if account_role.is_some() && matches!(vault, VaultMode::Ec2 { .. }) {
            // The function runs in the Vault VPC, which reaches only Secrets Manager, through
            // an endpoint whose policy admits the stack's own account.
            return Err(invalid(
                "account_role_arn",
                "needs an external Vault (deploy_vault_on_ec2 = false): the stack's Vault network has no route to STS, and its Secrets Manager endpoint admits only the stack's own account",
            ));
        }
        Ok(ReplicatorSettings {
            deletion_policy,
            recovery_window_days,
            max_delete_share,
            concurrency,
            replica_regions,
            name_template,
            granularity,
            tags,
            metadata_tag_keys,
            adopt_sample: self.adopt_sample.unwrap_or(false),
            latest_deleted,
            max_keys_per_secret,
            region_audit_hours,
            selection,
            resource_policy,
            account_role,
            account_key: self.account_kms_key.unwrap_or_default(),
        })
    }
}

/// What one role's merged policy cannot keep apart for `rule` and the `earlier` rules written
/// with the same role (the stack's own at home, or one role in another account): a replica
/// region each names with another key (the region's key statements would deny one of them),
/// and different replica regions under nested prefixes (the outer rule's deny covers the
/// inner's names).
fn check_one_role(rule: &SyncRule, earlier: &[SyncRule]) -> Result<(), ConfigError> {
    if let Some(arn) = rule.replicator.account_role.as_ref().map(|r| &r.role_arn)
        && arn.contains(&format!(":role{RULE_ROLE_PATH}"))
    {
        return Err(invalid(
            &format!("sync {:?}: account_role_arn", rule.name),
            format!(
                "{arn}: the path {RULE_ROLE_PATH} holds the roles `up` makes for the rules in a stack's own account; name a role outside it"
            ),
        ));
    }
    let role = |r: &SyncRule| {
        r.replicator
            .account_role
            .as_ref()
            .map(|a| a.role_arn.clone())
    };
    let regions = |r: &SyncRule| {
        let mut all: Vec<String> = r
            .replicator
            .replica_regions
            .iter()
            .map(|x| x.region.clone())
            .collect();
        all.sort();
        all
    };
    let key = &format!("sync {:?}: replica_regions", rule.name);
    for other in earlier.iter().filter(|o| role(o) == role(rule)) {
        for mine in &rule.replicator.replica_regions {
            if let Some(theirs) = other
                .replicator
                .replica_regions
                .iter()
                .find(|t| t.region == mine.region && t.kms_key_id != mine.kms_key_id)
            {
                return Err(invalid(
                    key,
                    format!(
                        "{} with another key than rule {:?} gives it ({}): rules written with one role use one key per replica region",
                        mine.region,
                        other.name,
                        theirs.kms_key_id.as_deref().unwrap_or("aws/secretsmanager")
                    ),
                ));
            }
        }
        let nested = |a: &str, b: &str| a.starts_with(&format!("{b}/"));
        if (nested(&rule.prefix, &other.prefix) || nested(&other.prefix, &rule.prefix))
            && regions(rule) != regions(other)
        {
            return Err(invalid(
                key,
                format!(
                    "differ from rule {:?}'s, whose prefix {:?} nests with {:?}: one role cannot replicate the outer prefix's names to fewer regions than the inner's; give both rules the same replica_regions",
                    other.name, other.prefix, rule.prefix
                ),
            ));
        }
    }
    Ok(())
}

/// 128 random bits as 32 hex digits: an external id nobody guesses.
fn random_external_id() -> String {
    let mut bytes = [0u8; 16];
    // The operating system's generator; should it fail, the suggestion is left to the user.
    if rustls::crypto::ring::default_provider()
        .secure_random
        .fill(&mut bytes)
        .is_err()
    {
        return "<32 random hex digits>".into();
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl FileConfig {
    /// `replica_regions`: each `REGION` or `REGION=KMS_KEY_ARN`, once, none the stack's region.
    fn replica_regions(&self) -> Result<Vec<ReplicaRegion>, ConfigError> {
        let key = "replica_regions";
        let mut regions = Vec::new();
        for given in self.replica_regions.iter().flatten() {
            let r: ReplicaRegion = given.parse().map_err(|e| invalid(key, e))?;
            if let Some(k) = &r.kms_key_id {
                let parts: Vec<&str> = k.split(':').collect();
                let is_key_arn = parts.len() == 6
                    && parts[0] == "arn"
                    && parts[2] == "kms"
                    && parts[4].len() == 12
                    && parts[4].bytes().all(|b| b.is_ascii_digit())
                    && parts[5]
                        .strip_prefix("key/")
                        .is_some_and(|id| !id.is_empty());
                if !is_key_arn {
                    return Err(invalid(
                        key,
                        format!(
                            "{given:?}: give the KMS key as its key ARN (arn:aws:kms:{}:ACCOUNT:key/ID), so the role can be granted that key alone",
                            r.region
                        ),
                    ));
                }
                if parts[3] != r.region {
                    return Err(invalid(
                        key,
                        format!("{given:?}: the key is in {}, not in {}", parts[3], r.region),
                    ));
                }
            }
            regions.push(r);
        }
        regions.sort();
        contract::check_replica_regions(&regions, self.region.as_deref())
            .map_err(|e| invalid(key, e))?;
        Ok(regions)
    }
}

impl Config {
    /// What only the caller's identity decides: no replica region is the stack's own, and each
    /// replica region's key is in the stack's account and partition. A key in another account
    /// could be usable in AWS when that account's key policy grants the replicator's role, but
    /// the stack refuses it: that policy is out of this deployer's reach (`plan` cannot show it,
    /// `up` cannot set it, nothing here can test it), and its owner could at any time leave the
    /// replicas in that region unreadable.
    pub fn check_identity(
        &self,
        account: &str,
        partition: &str,
        region: &str,
    ) -> Result<(), ConfigError> {
        if let Some(arn) = &self.code_signing_profile
            && arn.split(':').nth(1) != Some(partition)
        {
            return Err(invalid(
                "code_signing_profile",
                format!(
                    "{arn} is not in partition {partition}, where the stack is: Lambda accepts signatures only from a profile in its own partition"
                ),
            ));
        }
        if self.rules.is_empty() {
            return check_sync_identity(&self.replicator, account, partition, region);
        }
        for rule in &self.rules {
            let rule_error = |e| match e {
                ConfigError::Invalid { key, problem } => ConfigError::Invalid {
                    key: format!("sync {:?}: {key}", rule.name),
                    problem,
                },
                other => other,
            };
            let own_region = rule.region.as_deref().unwrap_or(region);
            if rule.replicator.account_role.is_none() && own_region != region {
                // The stack's key is in its region; so is the function, and (with Vault on
                // EC2) the only Secrets Manager endpoint it reaches.
                return Err(rule_error(invalid(
                    "region",
                    format!(
                        "{own_region}: a rule in the stack's own account writes in the stack's region ({region}), where its key is; give the rule another account (account_role_arn), or use replica_regions"
                    ),
                )));
            }
            check_sync_identity(&rule.replicator, account, partition, own_region)
                .map_err(rule_error)?;
        }
        // Where each rule writes, now that the stack's account and region are known (a rule
        // naming the stack's region, or a role of the stack's account, writes where a rule
        // naming neither does): no two rules write one prefix there, as the function checks.
        let here = Some((account, region));
        for (i, rule) in self.rules.iter().enumerate() {
            if let Some(other) = self.rules[..i]
                .iter()
                .find(|o| o.destination(here) == rule.destination(here))
            {
                let (prefix, account, region) = rule.destination(here);
                let (account, region) = (account.unwrap_or_default(), region.unwrap_or_default());
                return Err(invalid(
                    &format!("sync {:?}: prefix", rule.name),
                    format!(
                        "{prefix:?} is rule {:?}'s prefix in the same account ({account}) and region ({region}): the two would write the same names",
                        other.name
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// [`Config::check_identity`] for one sync's settings, its replicas written in `region`.
fn check_sync_identity(
    replicator: &ReplicatorSettings,
    account: &str,
    partition: &str,
    region: &str,
) -> Result<(), ConfigError> {
    {
        if let Some(role) = &replicator.account_role
            && role.role_arn.split(':').nth(1) != Some(partition)
        {
            return Err(invalid(
                "account_role_arn",
                format!(
                    "{} is not in partition {partition}, where the stack is: a role is assumable only within its partition",
                    role.role_arn
                ),
            ));
        }
        // The replicas, and so their replica regions' keys, are in the role's account when
        // there is one.
        let account = replicator
            .account_role
            .as_ref()
            .map_or(account, |r| r.account());
        let key = "replica_regions";
        let regions = &replicator.replica_regions;
        contract::check_replica_regions(regions, Some(region)).map_err(|e| invalid(key, e))?;
        for r in regions {
            let Some(arn) = &r.kms_key_id else { continue };
            let parts: Vec<&str> = arn.split(':').collect();
            if parts.get(1) != Some(&partition) {
                return Err(invalid(
                    key,
                    format!(
                        "{}: the key {arn} is not in partition {partition}, where the stack is; a key is usable only in its own partition",
                        r.region
                    ),
                ));
            }
            if parts.get(4) != Some(&account) {
                return Err(invalid(
                    key,
                    format!(
                        "{}: the key {arn} is in another account, not in {account} where the replicas are. \
                         Its key policy would decide whether the replicas there stay readable, and this deployer can neither show, set nor test it: \
                         create the key in account {account}",
                        r.region
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// An AWS Signer profile version ARN, as Lambda's code signing config takes it:
/// `arn:PARTITION:signer:REGION:ACCOUNT:/signing-profiles/NAME/VERSION`.
pub fn check_signing_profile(arn: &str) -> Result<(), String> {
    let example = "arn:aws:signer:REGION:ACCOUNT:/signing-profiles/NAME/VERSION (the profile version ARN `aws signer get-signing-profile --profile-name NAME --query profileVersionArn` prints)";
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    let [head, partition, service, region, account, resource] = parts[..] else {
        return Err(format!(
            "{arn:?} is not a signing profile version ARN: give {example}"
        ));
    };
    let path: Vec<&str> = resource.split('/').collect();
    let ok = head == "arn"
        && ["aws", "aws-cn", "aws-us-gov"].contains(&partition)
        && service == "signer"
        && !region.is_empty()
        && region
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && account.len() == 12
        && account.bytes().all(|b| b.is_ascii_digit())
        && matches!(path[..], ["", "signing-profiles", name, version]
            if (2..=64).contains(&name.len())
                && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                && (1..=64).contains(&version.len())
                && version.bytes().all(|b| b.is_ascii_alphanumeric()));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{arn:?} is not a signing profile version ARN: give {example}"
        ))
    }
}

/// A CIDR block with no host bits set.
pub fn check_cidr(cidr: &str) -> Result<(), String> {
    let (addr, len) = cidr
        .split_once('/')
        .ok_or_else(|| format!("{cidr:?} is not a CIDR block such as 203.0.113.0/24"))?;
    let addr: IpAddr = addr
        .parse()
        .map_err(|_| format!("{addr:?} in {cidr:?} is not an IP address"))?;
    let len: u32 = len
        .parse()
        .map_err(|_| format!("prefix length {len:?} in {cidr:?} is not a number"))?;
    let bits = match addr {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    };
    if len > bits {
        return Err(format!("prefix length /{len} in {cidr:?} is over /{bits}"));
    }
    let host_bits_set = match addr {
        IpAddr::V4(a) => len < 32 && (u32::from(a) & (u32::MAX >> len)) != 0,
        IpAddr::V6(a) => len < 128 && (u128::from(a) & (u128::MAX >> len)) != 0,
    };
    if host_bits_set {
        return Err(format!(
            "{cidr:?} has host bits set: write the network address (for one host use /32)"
        ));
    }
    Ok(())
}

/// A plausible email address: local@domain.tld, no spaces.
pub fn check_email(email: &str) -> Result<(), String> {
    let bad = || format!("{email:?} is not an email address such as ops@example.com");
    let (local, domain) = email.split_once('@').ok_or_else(bad)?;
    let ok_local = !local.is_empty()
        && local.len() <= 64
        && !local.starts_with('.')
        && !local.ends_with('.')
        && local
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "!#$%&'*+/=?^_`{|}~.-".contains(c));
    let labels: Vec<&str> = domain.split('.').collect();
    let ok_domain = labels.len() >= 2
        && labels.iter().all(|l| {
            !l.is_empty()
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
        && labels
            .last()
            .is_some_and(|tld| tld.len() >= 2 && tld.chars().all(|c| c.is_ascii_alphabetic()));
    if ok_local && ok_domain {
        Ok(())
    } else {
        Err(bad())
    }
}

fn check_url(url: &str) -> Result<(), String> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or_else(|| format!("{url:?} must start with https:// (or http://)"))?;
    let host = rest.split('/').next().unwrap_or("");
    if host.is_empty() || host.contains(char::is_whitespace) {
        return Err(format!("{url:?} has no host"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(text: &str) -> Result<Config, ConfigError> {
        FileConfig::parse(text, "deployer.toml")?.validate()
    }

    const EC2: &str = "vault_inbound_cidr = \"203.0.113.0/24\"\n";

    #[test]
    fn defaults_are_the_samples_except_the_open_cidr() {
        let c = cfg(EC2).unwrap();
        assert_eq!(c.prefix, "hybrid-aws-secrets");
        assert_eq!(c.schedule, "cron(0,30 * * * ? *)");
        assert_eq!(c.notification_email, None);
        assert_eq!(c.events_bus, None);
        assert_eq!(
            cfg(&format!("{EC2}events = true"))
                .unwrap()
                .events_bus
                .as_deref(),
            Some("default")
        );
        assert_eq!(
            cfg(&format!("{EC2}events = true\nevents_bus = \"team-bus\""))
                .unwrap()
                .events_bus
                .as_deref(),
            Some("team-bus")
        );
        assert!(matches!(c.vault, VaultMode::Ec2 { .. }));
        assert!(c.warnings.is_empty());
        let err = cfg("").unwrap_err().to_string();
        assert!(err.starts_with("vault_inbound_cidr: is required"), "{err}");
        let open = cfg("vault_inbound_cidr = \"0.0.0.0/0\"").unwrap();
        assert!(open.warnings[0].contains("whole internet"));
    }

    #[test]
    fn a_resource_policy_file_is_found_beside_the_configuration_and_checked() {
        let dir = std::env::temp_dir().join(format!("deployer-policy-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let policy = r#"{"Version": "2012-10-17", "Statement": {"Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::${Account}:role/app"}, "Action": "secretsmanager:GetSecretValue", "Resource": "${ReplicaArn}"}}"#;
        std::fs::write(dir.join("policy.json"), policy).unwrap();
        let config = dir.join("deployer.toml");
        std::fs::write(&config, format!("{EC2}resource_policy = \"policy.json\"\n")).unwrap();
        let c = FileConfig::load(&config, true).unwrap().validate().unwrap();
        let p = c.replicator.resource_policy.unwrap();
        assert!(p.template().contains("${ReplicaArn}") && !p.template().contains('\n'));
        // Public, or too long for the function's environment: refused, saying why.
        std::fs::write(
            dir.join("policy.json"),
            policy.replace(r#"{"AWS": "arn:aws:iam::${Account}:role/app"}"#, "\"*\""),
        )
        .unwrap();
        let e = FileConfig::load(&config, true)
            .unwrap()
            .validate()
            .unwrap_err();
        assert!(e.to_string().contains("allows every principal"), "{e}");
        let long = policy.replace(
            "\"Effect\"",
            &format!("\"Sid\": \"{}\", \"Effect\"", "a".repeat(2_100)),
        );
        std::fs::write(dir.join("policy.json"), long).unwrap();
        let e = FileConfig::load(&config, true)
            .unwrap()
            .validate()
            .unwrap_err();
        assert!(e.to_string().contains("4 KB"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Every key of `deployer.toml`, as the parser itself lists them in its unknown-key error.
    fn every_key() -> Vec<String> {
        let err = FileConfig::parse("no_such_key = 1", "t")
            .unwrap_err()
            .to_string();
        let expected = err.split("expected one of").nth(1).unwrap();
        expected
            .split('`')
            .skip(1)
            .step_by(2)
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn each_rule_takes_its_keys_over_the_top_levels_and_is_sent_as_given() {
        let dir = std::env::temp_dir().join(format!("deployer-rules-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("policy.json"),
            r#"{"Version": "2012-10-17", "Statement": [{"Effect": "Deny", "Principal": "*", "Action": "secretsmanager:DeleteSecret", "Resource": "${ReplicaArn}"}]}"#,
        )
        .unwrap();
        const EXTERNAL: &str =
            "deploy_vault_on_ec2 = false\nexternal_vault_address = \"https://v:8200\"\n";
        let text = format!(
            "{EXTERNAL}deletion_policy = \"delete\"\ntags = {{ team = \"all\" }}\n[[sync]]\nname = \"payments\"\nprefix = \"/pay/\"\nmount = \"kv\"\npath = \"payments/\"\ntags = {{ team = \"pay\" }}\nresource_policy = \"policy.json\"\nopt_in = true\n[[sync]]\nname = \"web\"\nprefix = \"web\"\ndeletion_policy = \"keep\"\n"
        );
        let path = dir.join("deployer.toml");
        std::fs::write(&path, text).unwrap();
        let cfg = FileConfig::load(&path, true).unwrap().validate().unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        let [pay, web] = &cfg.rules[..] else {
            panic!("{:?}", cfg.rules)
        };
        assert_eq!(
            (pay.prefix.as_str(), pay.mount.as_str(), pay.path.as_str()),
            ("pay", "kv", "payments")
        );
        assert_eq!((web.mount.as_str(), web.path.as_str()), ("web", ""));
        // Left out: the top level's; given: the rule's.
        assert_eq!(pay.replicator.deletion_policy, DeletionPolicy::Delete);
        assert_eq!(web.replicator.deletion_policy, DeletionPolicy::Keep);
        assert_eq!(pay.replicator.tags["team"], "pay");
        assert_eq!(web.replicator.tags["team"], "all");
        assert!(pay.replicator.selection.opt_in() && !web.replicator.selection.opt_in());
        assert!(pay.replicator.resource_policy.is_some());
        assert!(web.replicator.resource_policy.is_none());
        // The function gets the policy itself, and the checked values.
        let sent = &pay.doc;
        assert_eq!(
            (sent.prefix.as_str(), sent.path.as_deref()),
            ("pay", Some("payments"))
        );
        let policy = sent
            .resource_policy
            .as_ref()
            .and_then(|p| p.as_str())
            .unwrap();
        assert!(policy.contains("${ReplicaArn}"), "{policy}");
        assert_eq!(web.doc.resource_policy, None);
        assert_eq!(
            web.doc.mount, None,
            "the function defaults it as the deployer does"
        );
    }

    #[test]
    fn each_bad_value_of_every_key_is_refused_with_its_key_and_reason() {
        // (config text, key named, words of the reason)
        let table: &[(&str, &str, &str)] = &[
            (
                "stack_name = \"9lives\"",
                "stack_name",
                "starting with a letter",
            ),
            ("stack_name = \"\"", "stack_name", "1-32 letters"),
            (
                "stack_name = \"abcdefghijabcdefghijabcdefghijabc\"",
                "stack_name",
                "1-32 letters",
            ),
            ("region = \"EU West\"", "region", "not a region name"),
            (
                "secrets_prefix = \"a b\"",
                "secrets_prefix",
                "letters, digits and",
            ),
            (
                "secrets_prefix = \"hybrid-secrets-vault\"",
                "secrets_prefix",
                "a stack's own secrets",
            ),
            (
                "secrets_prefix = \"team-connection\"",
                "secrets_prefix",
                "a stack's own secrets",
            ),
            // Another stack's TLS key and unseal keys.
            (
                "secrets_prefix = \"payments-vault\"",
                "secrets_prefix",
                "another's",
            ),
            (
                "secrets_prefix = \"teams/payments-connection\"",
                "secrets_prefix",
                "-vault or -connection",
            ),
            (
                "secrets_prefix = \"/abs\"",
                "secrets_prefix",
                "must not start or end with /",
            ),
            (
                "notification_email = \"ops@\"",
                "notification_email",
                "not an email address",
            ),
            (
                "events_bus = \"team\"",
                "events_bus",
                "without events = true",
            ),
            (
                "events = true\nevents_bus = \"arn:aws:events:eu-west-1:111122223333:event-bus/b\"",
                "events_bus",
                "not its ARN",
            ),
            (
                "events = true\nevents_bus = \"a b\"",
                "events_bus",
                "not an event bus name",
            ),
            (
                "notification_email = \"ops example.com\"",
                "notification_email",
                "not an email address",
            ),
            (
                "schedule = \"cron(0 * * * * *)\"",
                "schedule",
                "day-of-month",
            ),
            ("schedule = \"rate(1 minutes)\"", "schedule", "rate"),
            (
                "vault_inbound_cidr = \"10.0.0.1/8\"",
                "vault_inbound_cidr",
                "host bits",
            ),
            (
                "vault_inbound_cidr = \"10.0.0.0/33\"",
                "vault_inbound_cidr",
                "over /32",
            ),
            (
                "vault_inbound_cidr = \"nowhere\"",
                "vault_inbound_cidr",
                "not a CIDR block",
            ),
            (
                "deploy_vault_on_ec2 = false",
                "external_vault_address",
                "is required",
            ),
            (
                "deploy_vault_on_ec2 = \"no\"",
                "deploy_vault_on_ec2",
                "invalid type",
            ),
            (
                "deploy_vault_on_ec2 = false\nexternal_vault_address = \"vault:8200\"",
                "external_vault_address",
                "must start with https://",
            ),
            (
                "external_vault_address = \"https://v:8200\"",
                "external_vault_address",
                "deploy_vault_on_ec2 = true",
            ),
            (
                "deletion_policy = \"purge\"",
                "deletion_policy",
                "expected `keep` or `delete`",
            ),
            (
                "recovery_window_days = 3",
                "recovery_window_days",
                "outside 7 to 30",
            ),
            (
                "max_delete_share = 1.5",
                "max_delete_share",
                "outside 0 to 1",
            ),
            ("concurrency = 0", "concurrency", "outside 1 to 256"),
            (
                "lambda_memory_mb = 64",
                "lambda_memory_mb",
                "outside 128 to 10240",
            ),
            (
                "lambda_timeout_seconds = 901",
                "lambda_timeout_seconds",
                "outside 1 to 900",
            ),
            (
                "log_retention_days = 2",
                "log_retention_days",
                "CloudWatch's values",
            ),
            (
                "lambda_reserved_concurrency = 2",
                "lambda_reserved_concurrency",
                "outside 0 to 1 (1: one run at a time; 0: not reserved)",
            ),
            (
                "secret_id_rotation_days = 121",
                "secret_id_rotation_days",
                "outside 0 to 120 (0: no automatic rotation)",
            ),
            (
                "kms_deletion_window_days = 31",
                "kms_deletion_window_days",
                "outside 7 to 30",
            ),
            (
                "vault_instance_type = \"large\"",
                "vault_instance_type",
                "not an instance type",
            ),
            (
                "vault_client_cidrs = [\"10.0.0.0/8\"]",
                "vault_client_cidrs",
                "is for an external Vault",
            ),
            (
                "deploy_vault_on_ec2 = false\nexternal_vault_address = \"https://v:8200\"\nvault_client_cidrs = [\"10.0.0.1/8\"]",
                "vault_client_cidrs",
                "host bits",
            ),
            (
                "deploy_vault_on_ec2 = false\nexternal_vault_address = \"https://v:8200\"\nvault_client_cidrs = [\"0.0.0.0/0\"]",
                "vault_client_cidrs",
                "binds to nothing",
            ),
            (
                // A profile without its version: Lambda allows profile versions only.
                "code_signing_profile = \"arn:aws:signer:eu-west-1:123456789012:/signing-profiles/replicator\"",
                "code_signing_profile",
                "not a signing profile version ARN",
            ),
            (
                "code_signing_profile = \"arn:aws:kms:eu-west-1:123456789012:/signing-profiles/replicator/a1B2c3D4e5\"",
                "code_signing_profile",
                "aws signer get-signing-profile",
            ),
            (
                "vault_version = \"latest\"",
                "vault_version",
                "not a version",
            ),
            (
                "replica_regions = [\"mars-1\"]",
                "replica_regions",
                "not an AWS region name",
            ),
            (
                "replica_regions = [\"us-west-2=alias/mine\"]",
                "replica_regions",
                "as its key ARN",
            ),
            (
                "replica_regions = [\"us-west-2=arn:aws:kms:eu-west-1:123456789012:key/k\"]",
                "replica_regions",
                "the key is in eu-west-1, not in us-west-2",
            ),
            (
                "region = \"eu-west-1\"\nreplica_regions = [\"eu-west-1\"]",
                "replica_regions",
                "own region",
            ),
            (
                "replica_regions = [\"us-west-2\", \"us-west-2\"]",
                "replica_regions",
                "twice",
            ),
            ("name_template = \"{path\"", "name_template", "not closed"),
            (
                "granularity = \"per-key\"",
                "granularity",
                "expected `secret-path` or `secret-key`",
            ),
            (
                "granularity = \"secret-key\"\nname_template = \"{path}\"",
                "name_template",
                "add {key}",
            ),
            ("tags = { \"aws:x\" = \"1\" }", "tags", "reserved"),
            ("tags = { \"a=b\" = \"c\" }", "tags", "a tag key with '='"),
            (
                "tags = { team = \"core\" }\nmetadata_tag_keys = [\"team\"]",
                "metadata_tag_keys",
                "the operator's value always wins",
            ),
            (
                "metadata_tag_keys = [\"managed-by\"]",
                "metadata_tag_keys",
                "this tool writes for itself",
            ),
            (
                "metadata_tag_keys = [\"a\", \"a\"]",
                "metadata_tag_keys",
                "listed twice",
            ),
            (
                "latest_deleted = \"purge\"",
                "latest_deleted",
                "expected `fallback` or `delete`",
            ),
            (
                "max_keys_per_secret = 0",
                "max_keys_per_secret",
                "outside 1",
            ),
            (
                "region_audit_hours = 200",
                "region_audit_hours",
                "outside 1",
            ),
            (
                "include = [\"/db/*\"]",
                "include / exclude",
                "include pattern \"/db/*\" starts with '/'",
            ),
            (
                "exclude = [\"a,b\"]",
                "include / exclude",
                "exclude pattern \"a,b\" has a ','",
            ),
            (
                "adopt_sample = \"yes\"",
                "adopt_sample",
                "expected a boolean",
            ),
            ("opt_in = \"yes\"", "opt_in", "expected a boolean"),
            ("dashboard = \"no\"", "dashboard", "expected a boolean"),
            (
                "resource_policy = \"/no/such/policy.json\"",
                "resource_policy",
                "cannot read /no/such/policy.json",
            ),
            (
                "account_role_arn = \"arn:aws:iam::222222222222:user/u\"\nexternal_id = \"ext-1\"",
                "account_role_arn",
                "is not an IAM role ARN",
            ),
            (
                "account_role_arn = \"arn:aws:iam::222222222222:role/r\"",
                "external_id",
                "is required",
            ),
            (
                "external_id = \"ext-1\"",
                "external_id",
                "without account_role_arn",
            ),
            (
                "account_role_arn = \"arn:aws:iam::222222222222:role/r\"\nexternal_id = \"ext-1\"",
                "account_role_arn",
                "needs an external Vault",
            ),
            ("sync = []", "sync", "is empty"),
            (
                "deploy_vault_on_ec2 = false\nexternal_vault_address = \"https://v:8200\"\nsync = [{ name = \"a\", prefix = \"p\", account_role_arn = \"arn:aws:iam::222222222222:role/vault-secrets-replicator/s/s.sync.b\", external_id = \"x-1\" }]",
                "sync \"a\": account_role_arn",
                "holds the roles `up` makes",
            ),
            (
                "stack_name = \"abcdefghijabcdefghijabcdefghijab\"\nsync = [{ name = \"abcdefghijabcdefghijabcdefghij-b\", prefix = \"p\" }]",
                "sync \"abcdefghijabcdefghijabcdefghij-b\": name",
                "70 characters, over IAM's 64",
            ),
            (
                "sync = [{ name = \"Pay\", prefix = \"p\" }]",
                "sync: name",
                "a rule's name",
            ),
            (
                "sync = [{ name = \"a\", prefix = \"p\" }, { name = \"a\", prefix = \"q\" }]",
                "sync: name",
                "two rules are named \"a\"",
            ),
            (
                "sync = [{ name = \"a\", prefix = \"p\" }, { name = \"b\", prefix = \"p/\", mount = \"kv\" }]",
                "sync \"b\": prefix",
                "is rule \"a\"'s prefix in the same account and region",
            ),
            (
                "sync = [{ name = \"a\", prefix = \"team-vault\" }]",
                "sync \"a\": prefix",
                "a stack's own secrets",
            ),
            (
                "sync = [{ name = \"a\", prefix = \"p\", mount = \"kv\\\"x\" }]",
                "sync \"a\": mount",
                "segments of letters",
            ),
            (
                "sync = [{ name = \"a\", prefix = \"p\", path = \"x/../y\" }]",
                "sync \"a\": path",
                "no '.' or '..' segment",
            ),
            (
                "sync = [{ name = \"a\", prefix = \"p\", namespace = \"team-a\" }]",
                "sync \"a\": namespace",
                "needs an external Vault",
            ),
            (
                "sync = [{ name = \"a\", prefix = \"p\", kms_key_id = \"alias/x\" }]",
                "sync \"a\": kms_key_id",
                "the deployer chooses the key",
            ),
            (
                "sync = [{ name = \"a\", prefix = \"p\", recovery_window_days = 3 }]",
                "sync \"a\": recovery_window_days",
                "outside 7 to 30",
            ),
            (
                "sync = [{ name = \"a\", prefix = \"p\", account_role_arn = \"arn:aws:iam::222222222222:role/r\" }]",
                "sync \"a\": external_id",
                "is required",
            ),
            (
                "sync = [{ name = \"a\", prefix = \"p\", colour = \"red\" }]",
                "unknown field",
                "colour",
            ),
            (
                "account_kms_key = \"create\"",
                "account_kms_key",
                "without account_role_arn",
            ),
            (
                "deploy_vault_on_ec2 = false\nexternal_vault_address = \"https://v.example.com:8200\"\nsync = [{ name = \"a\", prefix = \"p\", region = \"EU West\", account_role_arn = \"arn:aws:iam::222222222222:role/r\", external_id = \"e1\" }]",
                "sync \"a\": region",
                "region",
            ),
            (
                "secrets_prefix = \"team/replicas\"\nsync = [{ name = \"a\", prefix = \"team\" }]",
                "sync \"a\": prefix",
                "covers the stack's connection secret",
            ),
            (
                "sync = [{ name = \"a\", prefix = \"p\", replica_regions = [\"eu-west-2\"] }, { name = \"b\", prefix = \"q\", replica_regions = [\"eu-west-2=arn:aws:kms:eu-west-2:123456789012:key/kb\"] }]",
                "sync \"b\": replica_regions",
                "eu-west-2 with another key than rule \"a\" gives it (aws/secretsmanager)",
            ),
            (
                "sync = [{ name = \"a\", prefix = \"p\" }, { name = \"b\", prefix = \"p/b\", mount = \"kv\", replica_regions = [\"eu-west-2\"] }]",
                "sync \"b\": replica_regions",
                "whose prefix \"p\" nests with \"p/b\"",
            ),
            (
                "account_kms_key = \"mine\"",
                "account_kms_key",
                "unknown variant",
            ),
            (
                "deploy_vault_on_ec2 = false\nexternal_vault_address = \"https://v.example.com:8200\"\naccount_kms_key = \"create\"\nsync = [{ name = \"a\", prefix = \"p\" }]",
                "account_kms_key",
                "no [[sync]] rule writes in another account",
            ),
            (
                "deploy_vault_on_ec2 = false\nexternal_vault_address = \"https://v.example.com:8200\"\nsync = [{ name = \"a\", prefix = \"p\", account_kms_key = \"create\" }]",
                "sync \"a\": account_kms_key",
                "without account_role_arn",
            ),
            (
                "deploy_vault_on_ec2 = false\nexternal_vault_address = \"https://v.example.com:8200\"\nsync = [{ name = \"a\", prefix = \"p\", account_role_arn = \"arn:aws:iam::222222222222:role/r\", external_id = \"e1\", account_kms_key = \"create\" }, { name = \"b\", prefix = \"q\", account_role_arn = \"arn:aws:iam::222222222222:role/r\", external_id = \"e1\" }]",
                "sync \"b\": account_kms_key",
                "differs from rule \"a\"'s",
            ),
        ];
        for (text, key, reason) in table {
            let text =
                if text.contains("vault_inbound_cidr") || text.contains("deploy_vault_on_ec2") {
                    (*text).to_owned()
                } else {
                    format!("{EC2}{text}")
                };
            let err = match FileConfig::parse(&text, "t") {
                Ok(f) => f.validate().unwrap_err().to_string(),
                Err(e) => e.to_string(),
            };
            assert!(err.contains(key) && err.contains(reason), "{text}: {err}");
        }
        // Two bad keys: the stack's own settings are told before the replicator's.
        let two = format!("{EC2}lambda_memory_mb = 64\nrecovery_window_days = 3\n");
        let err = (FileConfig::parse(&two, "t").unwrap().validate())
            .unwrap_err()
            .to_string();
        assert!(err.contains("lambda_memory_mb"), "{err}");
        // A key added later needs a row here.
        for key in every_key() {
            assert!(
                table
                    .iter()
                    .any(|(text, _, _)| text.starts_with(&format!("{key} ="))
                        || text.contains(&format!("\n{key} ="))),
                "no validation row for {key}"
            );
        }
        let unknown = cfg("secret_prefix = \"x\"").unwrap_err().to_string();
        assert!(unknown.contains("unknown field"), "{unknown}");
        // A prefix below a path is no stack's name family.
        cfg("secrets_prefix = \"teams/payments-vault\"\nvault_inbound_cidr = \"10.0.0.0/8\"")
            .unwrap();
    }

    #[test]
    fn a_missing_external_id_is_refused_with_a_random_one_to_copy() {
        let err = |()| {
            FileConfig::parse(
                &format!("{EC2}account_role_arn = \"arn:aws:iam::222222222222:role/r\""),
                "t",
            )
            .unwrap()
            .validate()
            .unwrap_err()
            .to_string()
        };
        let suggested = |e: String| e.split('"').nth(1).unwrap().to_owned();
        let (a, b) = (suggested(err(())), suggested(err(())));
        assert_eq!(a.len(), 32, "{a}");
        assert!(contract::account::check_external_id(&a).is_ok());
        assert_ne!(a, b, "random each time");
    }

    #[test]
    fn overrides_win_over_the_file() {
        let mut f = FileConfig::parse(
            "stack_name = \"a\"\nvault_inbound_cidr = \"10.0.0.0/8\"",
            "f",
        )
        .unwrap();
        f.apply_overrides(&[
            "stack_name=b".into(),
            "lambda_memory_mb=256".into(),
            "deploy_vault_on_ec2=false".into(),
            "external_vault_address=https://v:8200".into(),
            "include=[\"db/*\"]".into(),
            "account_role_arn=arn:aws:iam::222222222222:role/r".into(),
            "external_id=ext-1".into(),
        ])
        .unwrap();
        let c = f.validate().unwrap();
        assert_eq!(c.stack_name, "b");
        assert_eq!(c.lambda_memory_mb, 256);
        assert_eq!(c.replicator.selection.include(), ["db/*"]);
        assert_eq!(
            c.replicator.account_role.as_ref().map(|r| r.account()),
            Some("222222222222")
        );
        assert_eq!(
            c.vault,
            VaultMode::External {
                address: "https://v:8200".into(),
                client_cidrs: vec![],
            }
        );
    }

    #[test]
    fn emails_and_cidrs() {
        assert!(check_email("ops+alerts@example.co.uk").is_ok());
        for bad in ["a@b", "a@-b.com"] {
            assert!(
                check_email(bad)
                    .unwrap_err()
                    .contains("is not an email address such as ops@example.com"),
                "{bad}"
            );
        }
        assert!(check_cidr("2001:db8::/32").is_ok());
        assert!(check_cidr("192.0.2.7/32").is_ok());
        let err = check_cidr("192.0.2.7/24").unwrap_err();
        assert!(err.contains("host bits"), "{err}");
    }

    #[test]
    fn with_a_role_in_another_account_the_replica_keys_are_that_accounts() {
        const EXTERNAL: &str =
            "deploy_vault_on_ec2 = false\nexternal_vault_address = \"https://v:8200\"\n";
        let cfg = |keys_in: &str, partition: &str| {
            FileConfig::parse(
                &format!(
                    "{EXTERNAL}account_role_arn = \"arn:{partition}:iam::222222222222:role/r\"\nexternal_id = \"ext-1\"\nreplica_regions = [\"eu-west-2=arn:aws:kms:eu-west-2:{keys_in}:key/k\"]"
                ),
                "t",
            )
            .unwrap()
            .validate()
            .unwrap()
        };
        assert!(
            cfg("222222222222", "aws")
                .check_identity("123456789012", "aws", "eu-west-1")
                .is_ok()
        );
        let home_key = cfg("123456789012", "aws")
            .check_identity("123456789012", "aws", "eu-west-1")
            .unwrap_err()
            .to_string();
        assert!(
            home_key.contains("not in 222222222222 where the replicas are"),
            "{home_key}"
        );
        let partition = cfg("222222222222", "aws-cn")
            .check_identity("123456789012", "aws", "eu-west-1")
            .unwrap_err()
            .to_string();
        assert!(
            partition.starts_with("account_role_arn:") && partition.contains("partition aws"),
            "{partition}"
        );
    }

    #[test]
    fn two_rules_writing_one_prefix_where_the_stack_is_are_refused_once_it_is_known() {
        const EXTERNAL: &str =
            "deploy_vault_on_ec2 = false\nexternal_vault_address = \"https://v:8200\"\n";
        let check = |rules: &str| {
            FileConfig::parse(&format!("{EXTERNAL}{rules}"), "t")
                .unwrap()
                .validate()
                .unwrap()
                .check_identity("123456789012", "aws", "eu-west-1")
        };
        // The stack's region named, or left out: the same place.
        let err = check(
            "[[sync]]\nname = \"a\"\nprefix = \"p\"\n[[sync]]\nname = \"b\"\nprefix = \"p\"\nmount = \"kv\"\nregion = \"eu-west-1\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.starts_with("sync \"b\": prefix:")
                && err.contains("account (123456789012) and region (eu-west-1)"),
            "{err}"
        );
        // A role in the stack's own account writes where the stack's rules do.
        let err = check(
            "[[sync]]\nname = \"a\"\nprefix = \"p\"\n[[sync]]\nname = \"b\"\nprefix = \"p\"\nmount = \"kv\"\naccount_role_arn = \"arn:aws:iam::123456789012:role/r\"\nexternal_id = \"ext-1\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("rule \"a\"'s prefix in the same account"),
            "{err}"
        );
        // Another region of another account: fine.
        check(
            "[[sync]]\nname = \"a\"\nprefix = \"p\"\n[[sync]]\nname = \"b\"\nprefix = \"p\"\nmount = \"kv\"\nregion = \"eu-west-2\"\naccount_role_arn = \"arn:aws:iam::222222222222:role/r\"\nexternal_id = \"ext-1\"\n",
        )
        .unwrap();
    }

    #[test]
    fn a_signing_profile_is_a_version_arn_in_the_stacks_partition() {
        let arn = "arn:aws:signer:eu-west-1:210987654321:/signing-profiles/replicator_1/a1B2c3D4e5";
        let cfg = FileConfig::parse(
            &format!("vault_inbound_cidr = \"192.0.2.0/24\"\ncode_signing_profile = \"{arn}\""),
            "t",
        )
        .unwrap()
        .validate()
        .unwrap();
        assert_eq!(cfg.code_signing_profile.as_deref(), Some(arn));
        // Another account signs for this one (a central signing account): fine.
        assert!(
            cfg.check_identity("123456789012", "aws", "eu-west-1")
                .is_ok()
        );
        let err = cfg
            .check_identity("123456789012", "aws-cn", "cn-north-1")
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("code_signing_profile:") && err.contains("partition aws-cn"),
            "{err}"
        );
        let none = FileConfig::parse(
            "vault_inbound_cidr = \"192.0.2.0/24\"\ncode_signing_profile = \"\"",
            "t",
        )
        .unwrap()
        .validate()
        .unwrap();
        assert_eq!(none.code_signing_profile, None);
    }
}
