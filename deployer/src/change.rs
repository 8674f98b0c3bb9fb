//! One `Change` for every resource: create, update (with field diffs), unchanged, delete, absent.
//! A plan is the list of changes in apply order; `status` reads the same list as present /
//! missing / drifted. Pure formatting.

use std::fmt::Write as _;

use serde::Serialize;

/// A field's value in a diff: known, or one AWS assigns only when the resource is made. An
/// unknown value has no text (no `&str` to hand a template), so it cannot reach a rendered
/// policy or request; `plan` shows it as "(known after apply)", and it never counts as a
/// difference.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FieldValue {
    Known(String),
    AfterApply,
}

impl FieldValue {
    /// How `plan` and `status` show it (and JSON output writes it).
    fn shown(&self) -> &str {
        match self {
            FieldValue::Known(v) => v,
            FieldValue::AfterApply => "(known after apply)",
        }
    }

    /// The value, when it is known.
    pub fn known(&self) -> Option<&str> {
        match self {
            FieldValue::Known(v) => Some(v),
            FieldValue::AfterApply => None,
        }
    }
}

impl From<String> for FieldValue {
    fn from(v: String) -> Self {
        FieldValue::Known(v)
    }
}

impl From<&str> for FieldValue {
    fn from(v: &str) -> Self {
        FieldValue::Known(v.to_owned())
    }
}

/// None: known after apply.
impl From<Option<String>> for FieldValue {
    fn from(v: Option<String>) -> Self {
        v.map_or(FieldValue::AfterApply, FieldValue::Known)
    }
}

/// None: known after apply.
impl From<Option<&str>> for FieldValue {
    fn from(v: Option<&str>) -> Self {
        v.map_or(FieldValue::AfterApply, |v| FieldValue::Known(v.to_owned()))
    }
}

impl Serialize for FieldValue {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.shown())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Create,
    Update,
    Unchanged,
    Delete,
    /// Nothing there, nothing to do.
    Absent,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FieldDiff {
    pub field: Field,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to: Option<FieldValue>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Change {
    pub kind: &'static str,
    pub name: String,
    pub action: Action,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<FieldDiff>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// A field of a resource that a diff compares, named as `plan` and `status` show it. Whether
/// `up` asks before changing it is the field's own ([`Field::needs_confirmation`], matched
/// exhaustively): a field added or renamed cannot silently stop asking.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Field {
    Actions,
    ActionsEnabled,
    Alias,
    AllowedPublishers,
    Arn,
    AssociatedWith,
    AttachedTo,
    Body,
    Cidr,
    CodeSha256,
    CodeSignedBy,
    CodeSigningConfig,
    DefaultRoute,
    Description,
    DnsHostnames,
    DnsSupport,
    Egress,
    EmailSubscription,
    Environment,
    Handler,
    HttpTokens,
    IamInstanceProfile,
    ImdsHopLimit,
    Ingress,
    InlinePolicy,
    InstanceProfile,
    InstanceType,
    InvokePermission,
    KmsKey,
    KmsKeyArn,
    KmsKeyId,
    KmsMasterKeyId,
    Material,
    MaxRetryAttempts,
    Memory,
    MemoryMb,
    Metric,
    MissingData,
    OnFailure,
    OtherPolicies,
    OwnerTag,
    Period,
    Policy,
    PrivateDns,
    ReservedConcurrency,
    ResourcePolicy,
    RetentionDays,
    Role,
    RootEncrypted,
    Rotate,
    Rotation,
    RotationFunction,
    Runtime,
    Schedule,
    SecurityGroups,
    Sha256,
    State,
    Statistic,
    Subnet,
    Subnets,
    Target,
    Threshold,
    TimeoutS,
    TrustPolicy,
    Type,
    UntrustedArtifactOnDeployment,
    UserData,
}

impl Field {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Actions => "actions",
            Self::ActionsEnabled => "actions_enabled",
            Self::Alias => "alias",
            Self::AllowedPublishers => "allowed_publishers",
            Self::Arn => "arn",
            Self::AssociatedWith => "associated_with",
            Self::AttachedTo => "attached_to",
            Self::Body => "body",
            Self::Cidr => "cidr",
            Self::CodeSha256 => "code_sha256",
            Self::CodeSignedBy => "code_signed_by",
            Self::CodeSigningConfig => "code_signing_config",
            Self::DefaultRoute => "default_route",
            Self::Description => "description",
            Self::DnsHostnames => "dns_hostnames",
            Self::DnsSupport => "dns_support",
            Self::Egress => "egress",
            Self::EmailSubscription => "email_subscription",
            Self::Environment => "environment",
            Self::Handler => "handler",
            Self::HttpTokens => "http_tokens",
            Self::IamInstanceProfile => "iam_instance_profile",
            Self::ImdsHopLimit => "imds_hop_limit",
            Self::Ingress => "ingress",
            Self::InlinePolicy => "inline_policy",
            Self::InstanceProfile => "instance_profile",
            Self::InstanceType => "instance_type",
            Self::InvokePermission => "invoke_permission",
            Self::KmsKey => "kms_key",
            Self::KmsKeyArn => "kms_key_arn",
            Self::KmsKeyId => "kms_key_id",
            Self::KmsMasterKeyId => "kms_master_key_id",
            Self::Material => "material",
            Self::MaxRetryAttempts => "max_retry_attempts",
            Self::Memory => "memory",
            Self::MemoryMb => "memory_mb",
            Self::Metric => "metric",
            Self::MissingData => "missing_data",
            Self::OnFailure => "on_failure",
            Self::OtherPolicies => "other_policies",
            Self::OwnerTag => "owner_tag",
            Self::Period => "period",
            Self::Policy => "policy",
            Self::PrivateDns => "private_dns",
            Self::ReservedConcurrency => "reserved_concurrency",
            Self::ResourcePolicy => "resource_policy",
            Self::RetentionDays => "retention_days",
            Self::Role => "role",
            Self::RootEncrypted => "root_encrypted",
            Self::Rotate => "rotate",
            Self::Rotation => "rotation",
            Self::RotationFunction => "rotation_function",
            Self::Runtime => "runtime",
            Self::Schedule => "schedule",
            Self::SecurityGroups => "security_groups",
            Self::Sha256 => "sha256",
            Self::State => "state",
            Self::Statistic => "statistic",
            Self::Subnet => "subnet",
            Self::Subnets => "subnets",
            Self::Target => "target",
            Self::Threshold => "threshold",
            Self::TimeoutS => "timeout_s",
            Self::TrustPolicy => "trust_policy",
            Self::Type => "type",
            Self::UntrustedArtifactOnDeployment => "untrusted_artifact_on_deployment",
            Self::UserData => "user_data",
        }
    }

    /// Whether `up` shows a change of it and asks first: who may reach or do what (policies,
    /// trust, security group rules, the invoke permission, the role or groups a resource runs
    /// with, the function that rotates the connection secret), and what else an operator must
    /// see before it happens: the code the functions (and the Vault host's watcher) run and
    /// whose signature it needs, their settings (the deletion policy and the breaker's share
    /// among them), who is notified, and the Vault host's route to the internet.
    pub fn needs_confirmation(self) -> bool {
        match self {
            Self::AllowedPublishers
            | Self::CodeSha256
            | Self::CodeSignedBy
            | Self::CodeSigningConfig
            | Self::DefaultRoute
            | Self::Egress
            | Self::EmailSubscription
            | Self::Environment
            | Self::IamInstanceProfile
            | Self::Ingress
            | Self::InlinePolicy
            | Self::InstanceProfile
            | Self::InvokePermission
            | Self::OtherPolicies
            | Self::Policy
            | Self::ResourcePolicy
            | Self::Role
            | Self::RotationFunction
            | Self::SecurityGroups
            | Self::TrustPolicy
            | Self::UntrustedArtifactOnDeployment => true,
            Self::Actions
            | Self::ActionsEnabled
            | Self::Alias
            | Self::Arn
            | Self::AssociatedWith
            | Self::AttachedTo
            | Self::Body
            | Self::Cidr
            | Self::Description
            | Self::DnsHostnames
            | Self::DnsSupport
            | Self::Handler
            | Self::HttpTokens
            | Self::ImdsHopLimit
            | Self::InstanceType
            | Self::KmsKey
            | Self::KmsKeyArn
            | Self::KmsKeyId
            | Self::KmsMasterKeyId
            | Self::Material
            | Self::MaxRetryAttempts
            | Self::Memory
            | Self::MemoryMb
            | Self::Metric
            | Self::MissingData
            | Self::OnFailure
            | Self::OwnerTag
            | Self::Period
            | Self::PrivateDns
            | Self::ReservedConcurrency
            | Self::RetentionDays
            | Self::RootEncrypted
            | Self::Rotate
            | Self::Rotation
            | Self::Runtime
            | Self::Schedule
            | Self::Sha256
            | Self::State
            | Self::Statistic
            | Self::Subnet
            | Self::Subnets
            | Self::Target
            | Self::Threshold
            | Self::TimeoutS
            | Self::Type
            | Self::UserData => false,
        }
    }
}

impl std::fmt::Display for Field {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Field {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

/// A resource's fields as (field, value); policies and maps rendered as compact JSON.
pub type Fields = Vec<(Field, FieldValue)>;

impl Change {
    pub fn new(kind: &'static str, name: impl Into<String>, action: Action) -> Self {
        Self {
            kind,
            name: name.into(),
            action,
            fields: Vec::new(),
            note: None,
        }
    }

    /// Whether applying it changes who may reach or do what: a resource made or updated with an
    /// field `up` asks about among its changes ([`Field::needs_confirmation`]). Deletions only
    /// take access away.
    pub fn needs_confirmation(&self) -> bool {
        matches!(self.action, Action::Create | Action::Update)
            && self.fields.iter().any(|f| f.field.needs_confirmation())
    }

    pub fn with_note(mut self, note: impl Into<String>) -> Self {
        self.note = Some(note.into());
        self
    }

    /// Compares the wanted fields with the seen ones. A wanted value known only after the apply
    /// never counts as a difference.
    pub fn diff(
        kind: &'static str,
        name: impl Into<String>,
        want: &Fields,
        seen: Option<&Fields>,
    ) -> Self {
        let name = name.into();
        let Some(seen) = seen else {
            let mut c = Self::new(kind, name, Action::Create);
            c.fields = want
                .iter()
                .map(|(f, v)| FieldDiff {
                    field: *f,
                    from: None,
                    to: Some(v.clone()),
                })
                .collect();
            return c;
        };
        let fields: Vec<FieldDiff> = want
            .iter()
            .filter(|(_, v)| *v != FieldValue::AfterApply)
            .filter_map(|(f, v)| {
                let old = seen
                    .iter()
                    .find(|(sf, _)| sf == f)
                    .map(|(_, sv)| sv.shown().to_owned());
                (old.as_deref() != v.known()).then(|| FieldDiff {
                    field: *f,
                    from: old,
                    to: Some(v.clone()),
                })
            })
            .collect();
        let action = if fields.is_empty() {
            Action::Unchanged
        } else {
            Action::Update
        };
        Self {
            kind,
            name,
            action,
            fields,
            note: None,
        }
    }

    pub fn changes_anything(&self) -> bool {
        matches!(
            self.action,
            Action::Create | Action::Update | Action::Delete
        )
    }

    /// Whether `field` is among the differences.
    pub fn touches(&self, field: Field) -> bool {
        self.action == Action::Create || self.fields.iter().any(|f| f.field == field)
    }
}

fn sign(action: Action) -> char {
    match action {
        Action::Create => '+',
        Action::Update => '~',
        Action::Delete => '-',
        Action::Unchanged | Action::Absent => ' ',
    }
}

/// `plan`'s text: one line a resource, field diffs under the ones that change.
pub fn render_plan(changes: &[Change]) -> String {
    let mut out = String::new();
    for c in changes {
        if c.action == Action::Absent {
            continue;
        }
        let what = match c.action {
            Action::Unchanged => " (unchanged)",
            _ => "",
        };
        let _ = writeln!(out, "{} {} {}{what}", sign(c.action), c.kind, c.name);
        if c.action != Action::Unchanged {
            for f in &c.fields {
                match (&f.from, f.to.as_ref().map(FieldValue::shown)) {
                    (Some(a), Some(b)) => {
                        let _ = writeln!(out, "      {}: {} -> {}", f.field, short(a), short(b));
                    }
                    (None, Some(b)) => {
                        let _ = writeln!(out, "      {}: {}", f.field, short(b));
                    }
                    (Some(a), None) => {
                        let _ = writeln!(out, "      {}: {} -> (removed)", f.field, short(a));
                    }
                    (None, None) => {}
                }
            }
        }
        if let Some(n) = &c.note {
            let _ = writeln!(out, "      note: {n}");
        }
    }
    let count = |a: Action| changes.iter().filter(|c| c.action == a).count();
    let _ = writeln!(
        out,
        "Plan: {} to create, {} to update, {} to delete, {} unchanged.",
        count(Action::Create),
        count(Action::Update),
        count(Action::Delete),
        count(Action::Unchanged)
    );
    out
}

/// `status`'s text: present / missing / drifted.
pub fn render_status(changes: &[Change]) -> String {
    let mut out = String::new();
    for c in changes {
        let state = match c.action {
            Action::Unchanged => "present".to_owned(),
            Action::Create => "missing".to_owned(),
            Action::Update => format!(
                "drifted ({})",
                c.fields
                    .iter()
                    .map(|f| f.field.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            Action::Delete => "present, not wanted".to_owned(),
            Action::Absent => continue,
        };
        let _ = writeln!(
            out,
            "{:<10} {:<22} {}",
            state.split(' ').next().unwrap_or(""),
            c.kind,
            c.name
        );
        if c.action == Action::Update {
            for f in &c.fields {
                let _ = writeln!(
                    out,
                    "             {}: {} (wanted {})",
                    f.field,
                    short(f.from.as_deref().unwrap_or("(none)")),
                    short(f.to.as_ref().map_or("(none)", FieldValue::shown))
                );
            }
        }
    }
    out
}

fn short(v: &str) -> String {
    if v.len() > 160 {
        format!("{}… ({} chars)", &v[..v.floor_char_boundary(150)], v.len())
    } else {
        v.to_owned()
    }
}

/// The names of the fields a change touches, for tests of each resource's diff.
#[cfg(test)]
pub fn touched(change: &Change) -> Vec<&str> {
    change.fields.iter().map(|f| f.field.as_str()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn access_code_settings_notices_and_routes_are_asked_about_and_shown_by_name() {
        for asks in [
            Field::TrustPolicy,
            Field::InlinePolicy,
            Field::OtherPolicies,
            Field::Policy,
            Field::ResourcePolicy,
            Field::Ingress,
            Field::Egress,
            Field::InvokePermission,
            Field::Role,
            Field::CodeSha256,
            Field::Environment,
            Field::EmailSubscription,
            Field::DefaultRoute,
        ] {
            assert!(asks.needs_confirmation(), "{asks}");
        }
        for quiet in [
            Field::Memory,
            Field::Schedule,
            Field::RetentionDays,
            Field::Threshold,
            Field::Description,
        ] {
            assert!(!quiet.needs_confirmation(), "{quiet}");
        }
        let mut ch = Change::new("iam role", "r", Action::Update);
        ch.fields.push(FieldDiff {
            field: Field::TrustPolicy,
            from: None,
            to: Some("{}".into()),
        });
        assert!(ch.needs_confirmation());
        assert_eq!(
            serde_json::to_value(&ch).unwrap()["fields"][0]["field"],
            "trust_policy"
        );
        assert!(render_status(&[ch]).contains("drifted"));
    }

    #[test]
    fn diff_reports_only_known_differences() {
        let want: Fields = vec![
            (Field::Memory, "256".into()),
            (Field::Arn, FieldValue::AfterApply),
            (Field::Runtime, "provided.al2023".into()),
        ];
        let seen: Fields = vec![
            (Field::Memory, "128".into()),
            (Field::Arn, "arn:x".into()),
            (Field::Runtime, "provided.al2023".into()),
        ];
        let c = Change::diff("lambda function", "f", &want, Some(&seen));
        assert_eq!(c.action, Action::Update);
        assert_eq!(c.fields.len(), 1);
        assert_eq!(c.fields[0].from.as_deref(), Some("128"));
        let same = Change::diff("lambda function", "f", &seen, Some(&seen));
        assert_eq!(same.action, Action::Unchanged);
        let new = Change::diff("lambda function", "f", &want, None);
        assert_eq!(new.action, Action::Create);
        let text = render_plan(&[new, c, same]);
        assert!(text.contains("+ lambda function f"));
        assert!(text.contains("memory: 128 -> 256"));
        assert!(text.contains("arn: (known after apply)"));
        assert!(text.contains("Plan: 1 to create, 1 to update, 0 to delete, 1 unchanged."));
    }
}
