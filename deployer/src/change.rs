//! One `Change` for every resource: create, update (with field diffs), unchanged, delete, absent.
//! A plan is the list of changes in apply order; `status` reads the same list as present /
//! missing / drifted. Pure formatting.

use std::fmt::Write as _;

use serde::Serialize;

/// Shown for a value AWS assigns when the resource is made.
pub const UNKNOWN: &str = "(known after apply)";

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
    pub field: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
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

/// Fields whose change `up` shows and asks about first: who may reach or do what (policies,
/// trust, security group rules, the invoke permission, the role or groups a resource runs
/// with, the function that rotates the connection secret), and what else an operator must see
/// before it happens: the code the functions (and the Vault host's watcher) run and whose
/// signature it needs, their settings (the deletion policy and the breaker's share among them),
/// who is notified, and the Vault host's route to the internet.
pub const CONFIRM_FIELDS: &[&str] = &[
    "trust_policy",
    "inline_policy",
    "other_policies",
    "policy",
    "resource_policy",
    "ingress",
    "egress",
    "invoke_permission",
    "rotation_function",
    "security_groups",
    "role",
    "instance_profile",
    "iam_instance_profile",
    "code_sha256",
    "code_signing_config",
    "code_signed_by",
    "allowed_publishers",
    "untrusted_artifact_on_deployment",
    "environment",
    "email_subscription",
    "default_route",
];

/// A resource's fields as (name, value); policies and maps rendered as compact JSON.
pub type Fields = Vec<(&'static str, String)>;

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
    /// field `up` asks about among its changes ([`CONFIRM_FIELDS`]). Deletions only take
    /// access away.
    pub fn needs_confirmation(&self) -> bool {
        matches!(self.action, Action::Create | Action::Update)
            && self
                .fields
                .iter()
                .any(|f| CONFIRM_FIELDS.contains(&f.field.as_str()))
    }

    pub fn with_note(mut self, note: impl Into<String>) -> Self {
        self.note = Some(note.into());
        self
    }

    /// Compares the wanted fields with the seen ones. A wanted value of [`UNKNOWN`] never
    /// counts as a difference (it cannot be known before the apply).
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
                    field: (*f).to_owned(),
                    from: None,
                    to: Some(v.clone()),
                })
                .collect();
            return c;
        };
        let fields: Vec<FieldDiff> = want
            .iter()
            .filter(|(_, v)| v != UNKNOWN)
            .filter_map(|(f, v)| {
                let old = seen
                    .iter()
                    .find(|(sf, _)| sf == f)
                    .map(|(_, sv)| sv.clone());
                (old.as_deref() != Some(v.as_str())).then(|| FieldDiff {
                    field: (*f).to_owned(),
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
    pub fn touches(&self, field: &str) -> bool {
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
                match (&f.from, &f.to) {
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
                    short(f.to.as_deref().unwrap_or("(none)"))
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
    fn diff_reports_only_known_differences() {
        let want: Fields = vec![
            ("memory", "256".into()),
            ("arn", UNKNOWN.into()),
            ("runtime", "provided.al2023".into()),
        ];
        let seen: Fields = vec![
            ("memory", "128".into()),
            ("arn", "arn:x".into()),
            ("runtime", "provided.al2023".into()),
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
