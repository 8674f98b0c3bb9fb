//! IAM roles with one inline policy: the replicator's (trusting Lambda) and the Vault
//! instance's (trusting EC2, with its instance profile). Found by name; documents compared by
//! meaning.

use aws_sdk_iam::types::Tag;

use super::{Ctx, DeployError, delete, found, missing};
use crate::change::{Action, Change, Field, Fields};
use crate::clients::Clients;
use crate::desired::{RoleSpec, RuleRolesSpec};
use crate::policy::{canonical, parse_returned};

pub(crate) const KIND: &str = "iam role";

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct RoleState {
    pub arn: String,
    pub trust: String,
    pub policy: Option<String>,
    pub ours: bool,
    /// The instance profile exists and holds the role.
    pub profile: Option<bool>,
}

impl RoleSpec {
    fn fields(&self) -> Fields {
        let mut f = vec![
            (Field::TrustPolicy, canonical(&self.trust).into()),
            (
                Field::InlinePolicy,
                self.policy.as_ref().map(canonical).into(),
            ),
        ];
        if self.instance_profile {
            f.push((Field::InstanceProfile, "holds the role".into()));
        }
        f
    }
}

impl RoleState {
    fn fields(&self) -> Fields {
        vec![
            (Field::TrustPolicy, self.trust.clone().into()),
            (
                Field::InlinePolicy,
                self.policy
                    .clone()
                    .unwrap_or_else(|| "(none)".into())
                    .into(),
            ),
            (
                Field::InstanceProfile,
                match self.profile {
                    Some(true) => "holds the role",
                    Some(false) => "without the role",
                    None => "(none)",
                }
                .into(),
            ),
        ]
    }
}

pub(crate) async fn observe(
    c: &Clients,
    role: &RoleSpec,
) -> Result<Option<RoleState>, DeployError> {
    let Some(out) = found(
        c.iam
            .get_role()
            .role_name(&role.name)
            .send()
            .await
            .ctx("GetRole", &role.name),
    )?
    else {
        return Ok(None);
    };
    let r = out.role().ok_or_else(|| missing("GetRole", "Role"))?;
    let trust = r
        .assume_role_policy_document()
        .and_then(parse_returned)
        .map(|v| canonical(&v))
        .unwrap_or_default();
    let ours = super::has_stack_tag(
        r.tags().iter().map(|t| (t.key(), t.value())),
        role.owner.stack(),
    );
    let policy = found(
        c.iam
            .get_role_policy()
            .role_name(&role.name)
            .policy_name(role.policy_name)
            .send()
            .await
            .ctx("GetRolePolicy", &role.name),
    )?
    .and_then(|p| parse_returned(p.policy_document()))
    .map(|v| canonical(&v));
    let profile = if role.instance_profile {
        found(
            c.iam
                .get_instance_profile()
                .instance_profile_name(&role.name)
                .send()
                .await
                .ctx("GetInstanceProfile", &role.name),
        )?
        .map(|p| {
            p.instance_profile()
                .is_some_and(|ip| ip.roles().iter().any(|r| r.role_name() == role.name))
        })
    } else {
        None
    };
    Ok(Some(RoleState {
        arn: r.arn().to_owned(),
        trust,
        policy,
        ours,
        profile,
    }))
}

pub(crate) fn diff(role: &RoleSpec, seen: Option<&RoleState>) -> Change {
    let mut c = Change::diff(
        KIND,
        &role.name,
        &role.fields(),
        seen.map(RoleState::fields).as_ref(),
    );
    if let Some(s) = seen
        && !s.ours
    {
        c = c.with_note(
            "exists without this stack's tag: it is updated but never deleted by destroy",
        );
    }
    c
}

pub(crate) async fn apply(
    c: &Clients,
    role: &RoleSpec,
    change: &Change,
) -> Result<RoleState, DeployError> {
    let trust = canonical(&role.trust);
    if change.action == Action::Create {
        let tags: Vec<Tag> = role
            .owner
            .tags()
            .into_iter()
            .filter_map(|(k, v)| Tag::builder().key(k).value(v).build().ok())
            .collect();
        // A rule's role trusts the replicator's, made moments before: IAM may refuse that
        // principal until it knows it.
        let codes: &[&str] = match role.path {
            Some(_) => &["MalformedPolicyDocument"],
            None => &[],
        };
        // Boxed: the request's future is large, and `up` holds many at once.
        Box::pin(super::retry_on(c.backoff, codes, || async {
            c.iam
                .create_role()
                .role_name(&role.name)
                .description(role.description)
                .assume_role_policy_document(&trust)
                .set_path(role.path.clone())
                .set_tags(Some(tags.clone()))
                .send()
                .await
                .ctx("CreateRole", &role.name)
        }))
        .await?;
    } else if change.touches(Field::TrustPolicy) {
        c.iam
            .update_assume_role_policy()
            .role_name(&role.name)
            .policy_document(&trust)
            .send()
            .await
            .ctx("UpdateAssumeRolePolicy", &role.name)?;
    }
    if change.touches(Field::InlinePolicy) {
        put_policy(c, role).await?;
    }
    if role.instance_profile && change.touches(Field::InstanceProfile) {
        let exists = found(
            c.iam
                .get_instance_profile()
                .instance_profile_name(&role.name)
                .send()
                .await
                .ctx("GetInstanceProfile", &role.name),
        )?;
        if exists.is_none() {
            let tags: Vec<Tag> = role
                .owner
                .tags()
                .into_iter()
                .filter_map(|(k, v)| Tag::builder().key(k).value(v).build().ok())
                .collect();
            c.iam
                .create_instance_profile()
                .instance_profile_name(&role.name)
                .set_tags(Some(tags))
                .send()
                .await
                .ctx("CreateInstanceProfile", &role.name)?;
        }
        c.iam
            .add_role_to_instance_profile()
            .instance_profile_name(&role.name)
            .role_name(&role.name)
            .send()
            .await
            .ctx("AddRoleToInstanceProfile", &role.name)?;
    }
    observe(c, role)
        .await?
        .ok_or_else(|| missing("GetRole", "the role just made"))
}

/// Puts the role's inline policy as wanted (none while it is known only after apply).
pub(crate) async fn put_policy(c: &Clients, role: &RoleSpec) -> Result<(), DeployError> {
    let Some(policy) = &role.policy else {
        return Ok(());
    };
    c.iam
        .put_role_policy()
        .role_name(&role.name)
        .policy_name(role.policy_name)
        .policy_document(canonical(policy))
        .send()
        .await
        .ctx("PutRolePolicy", &role.name)?;
    Ok(())
}

/// Deletes the role (inline and attached policies, instance profile first) if the stack tagged it.
pub(crate) async fn destroy(c: &Clients, role: &RoleSpec) -> Result<Change, DeployError> {
    let Some(state) = observe(c, role).await? else {
        return Ok(Change::new(KIND, &role.name, Action::Absent));
    };
    if !state.ours {
        return Ok(Change::new(KIND, &role.name, Action::Absent)
            .with_note("exists without this stack's tag; left alone"));
    }
    if role.instance_profile && state.profile.is_some() {
        if state.profile == Some(true) {
            delete(
                "RemoveRoleFromInstanceProfile",
                &role.name,
                c.iam
                    .remove_role_from_instance_profile()
                    .instance_profile_name(&role.name)
                    .role_name(&role.name)
                    .send(),
            )
            .await?;
        }
        delete(
            "DeleteInstanceProfile",
            &role.name,
            c.iam
                .delete_instance_profile()
                .instance_profile_name(&role.name)
                .send(),
        )
        .await?;
    }
    let (inline, attached) = policies_of(c, &role.name).await?;
    for name in &inline {
        delete(
            "DeleteRolePolicy",
            &role.name,
            c.iam
                .delete_role_policy()
                .role_name(&role.name)
                .policy_name(name)
                .send(),
        )
        .await?;
    }
    for arn in &attached {
        delete(
            "DetachRolePolicy",
            &role.name,
            c.iam
                .detach_role_policy()
                .role_name(&role.name)
                .policy_arn(arn)
                .send(),
        )
        .await?;
    }
    delete(
        "DeleteRole",
        &role.name,
        c.iam.delete_role().role_name(&role.name).send(),
    )
    .await?;
    Ok(Change::new(KIND, &role.name, Action::Delete))
}

/// The names of the role's inline policies, and the ARNs of the managed policies attached to it.
pub(crate) async fn policies_of(
    c: &Clients,
    role: &str,
) -> Result<(Vec<String>, Vec<String>), DeployError> {
    let inline = c
        .iam
        .list_role_policies()
        .role_name(role)
        .send()
        .await
        .ctx("ListRolePolicies", role)?;
    let attached = c
        .iam
        .list_attached_role_policies()
        .role_name(role)
        .send()
        .await
        .ctx("ListAttachedRolePolicies", role)?;
    Ok((
        inline.policy_names().to_vec(),
        attached
            .attached_policies()
            .iter()
            .filter_map(|p| p.policy_arn().map(str::to_owned))
            .collect(),
    ))
}

/// The roles under the stack's path for rules, named as this stack's rules' roles are and
/// carrying its tag, that none of `wanted` names: roles of rules removed since.
pub(crate) async fn leftover_rule_roles(
    c: &Clients,
    rules: &RuleRolesSpec,
    wanted: &[RoleSpec],
) -> Result<Vec<RoleSpec>, DeployError> {
    let path = &rules.path;
    let mut pages = c.iam.list_roles().path_prefix(path).into_paginator().send();
    let mut names = Vec::new();
    while let Some(page) = pages.next().await {
        let page = page.ctx("ListRoles", path)?;
        names.extend(
            page.roles()
                .iter()
                .filter(|r| r.path() == path.as_str())
                .map(|r| r.role_name().to_owned()),
        );
    }
    let mut leftover = Vec::new();
    for name in names {
        if !name.starts_with(&rules.name_prefix) || wanted.iter().any(|w| w.name == name) {
            continue;
        }
        let role = rules.leftover(name);
        if observe(c, &role).await?.is_some_and(|r| r.ours) {
            leftover.push(role);
        }
    }
    Ok(leftover)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::change::touched;
    use crate::spec::tests::spec;

    #[test]
    fn a_role_diffs_trust_policy_and_profile_and_says_when_it_is_not_ours() {
        let s = spec("stack_name = \"s\"\nvault_inbound_cidr = \"10.0.0.0/8\"\n");
        let key = "arn:aws-cn:kms:cn-north-1:123456789012:key/k-1";
        let role = s.vault_role_spec(Some(key)).unwrap();
        let made = RoleState {
            arn: format!("arn:aws-cn:iam::123456789012:role/{}", role.name),
            trust: canonical(&role.trust),
            policy: role.policy.as_ref().map(canonical),
            ours: true,
            profile: Some(true),
        };
        assert_eq!(diff(&role, None).action, Action::Create);
        assert_eq!(diff(&role, Some(&made)).action, Action::Unchanged);
        type Drift = fn(&mut RoleState);
        let cases: [(Drift, &str); 3] = [
            (|r| r.trust = "{}".into(), "trust_policy"),
            (|r| r.policy = None, "inline_policy"),
            (|r| r.profile = Some(false), "instance_profile"),
        ];
        for (drift, field) in cases {
            let mut r = made.clone();
            drift(&mut r);
            let ch = diff(&role, Some(&r));
            assert_eq!((ch.action, touched(&ch)), (Action::Update, vec![field]));
            assert!(ch.needs_confirmation(), "{field} is access");
        }
        let foreign = RoleState {
            ours: false,
            ..made.clone()
        };
        assert!(
            diff(&role, Some(&foreign))
                .note
                .unwrap()
                .contains("never deleted")
        );
        // Before the key exists the policy is known after apply: no false drift.
        let early = s.vault_role_spec(None).unwrap();
        let ch = diff(&early, Some(&made));
        assert!(!touched(&ch).contains(&"inline_policy"), "{ch:?}");
        // Nor before the VPC of the functions exists: never rendered with a stand-in for it.
        for role in [
            s.replicator_role_spec(Some(key), None).unwrap(),
            s.rotation_role_spec(Some(key), None).unwrap(),
        ] {
            assert!(role.policy.is_none(), "{}", role.name);
        }
        assert!(matches!(
            s.replicator_policy(key, None),
            Err(crate::policy::TemplateError::Unknown(v)) if v == "vpc_id"
        ));
        let made = s.replicator_role_spec(Some(key), Some("vpc-1")).unwrap();
        assert!(made.policy.unwrap().to_string().contains("vpc-1"));
    }
}
