//! `deployer target plan | up | status | destroy`: the replicas' side when `account_role_arn`
//! names a role in another account. The home account comes from the usual credentials (as for
//! `up`); the other account is reached with `--target-profile`. There it makes the role the
//! replicator assumes: trusted by this stack's replicator role only, with the external id; its
//! permissions the replicator's own for the replicas, scoped to the prefix in that account.
//! Idempotent like `up`: a converged run sends no mutating request.

use std::io::Write;

use clap::{Args, Subcommand};

use super::common::{CliError, EXIT_OK, ExitCodeArgs, emit};
use crate::change::{Action, FieldDiff, render_plan, render_status};
use crate::clients::Clients;
use crate::desired::KeySpec;
use crate::desired::RoleSpec;
use crate::resources::DeployError;
use crate::resources::iam;
use crate::resources::key;
use crate::spec::Spec;

#[derive(Debug, Args)]
pub struct TargetArgs {
    #[command(subcommand)]
    pub action: TargetAction,

    /// The AWS profile (any the AWS CLI accepts) whose credentials act in the account of
    /// `account_role_arn`.
    #[arg(long, global = true, value_name = "PROFILE")]
    pub target_profile: Option<String>,

    /// The `[[sync]]` rule whose account this is (needed when several rules write in other
    /// accounts). The role serves every rule that names it.
    #[arg(long, global = true, value_name = "NAME")]
    pub sync: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum TargetAction {
    /// Shows what `target up` would do in the replicas' account. With --detailed-exitcode, 2
    /// when anything would change.
    ///
    /// Example: deployer target plan --target-profile team-a
    Plan(ExitCodeArgs),
    /// Makes or repairs the role the replicator assumes in the replicas' account. A change of
    /// its trust or permissions is shown and confirmed first, unless --yes.
    ///
    /// Example: deployer target up --target-profile team-a
    Up(super::up::UpArgs),
    /// Shows the role as present, missing or drifted. With --detailed-exitcode, 2 when it is
    /// missing or drifted.
    ///
    /// Example: deployer target status --target-profile team-a
    Status(ExitCodeArgs),
    /// Deletes the role (only if it carries this stack's tag). The replicas stay.
    ///
    /// Example: deployer target destroy --target-profile team-a --yes
    Destroy(DestroyArgs),
}

#[derive(Debug, Default, Args)]
pub struct DestroyArgs {
    /// Do not ask (needed when not run from a terminal).
    #[arg(long)]
    pub yes: bool,
    /// Also schedule for deletion, once the role is gone, the replicas there of every rule
    /// naming it (this stack's and rule's tags; `recovery_window_days`), each in its rule's
    /// region; other secrets under the prefixes are kept.
    #[arg(long)]
    pub delete_replicated_secrets: bool,
}

const ROLE_DESCRIPTION: &str =
    "vault-secrets-replicator replicas: assumed by one stack's replicator with its external id";

/// The sync `target` acts for: the one sync of the top-level keys, or the rule `--sync`
/// names (without it, the one rule in another account).
fn target_view(spec: &Spec, sync: Option<&str>) -> Result<Spec, CliError> {
    if spec.cfg.rules.is_empty() {
        return match sync {
            Some(name) => Err(CliError::Refused(format!(
                "--sync {name}: the configuration has no [[sync]] rules"
            ))),
            None => Ok(spec.clone()),
        };
    }
    let views = spec.syncs();
    let names = |away: bool| {
        views
            .iter()
            .filter(|v| !away || v.cfg.replicator.account_role.is_some())
            .filter_map(Spec::sync_name)
            .collect::<Vec<_>>()
            .join(", ")
    };
    match sync {
        Some(name) => views
            .iter()
            .find(|v| v.sync_name() == Some(name))
            .cloned()
            .ok_or_else(|| {
                CliError::Refused(format!(
                    "--sync {name}: no rule has that name (the rules: {})",
                    names(false)
                ))
            }),
        None => {
            let mut away = views
                .iter()
                .filter(|v| v.cfg.replicator.account_role.is_some());
            match (away.next(), away.next()) {
                (Some(one), None) => Ok(one.clone()),
                (None, _) => Err(CliError::Refused(
                    "no [[sync]] rule names an account_role_arn: `deployer target` makes the role a rule names in another account".into(),
                )),
                _ => Err(CliError::Refused(format!(
                    "several rules write in other accounts ({}): give --sync NAME",
                    names(true)
                ))),
            }
        }
    }
}

/// The role to make in the replicas' account `account`, checked against the configuration:
/// for `spec`'s sync, and every other rule of `whole` that names the same role.
fn role_of(whole: &Spec, spec: &Spec, account: &str) -> Result<RoleSpec, CliError> {
    let role = spec.cfg.replicator.account_role.as_ref().ok_or_else(|| {
        CliError::Refused(
            "the configuration names no account_role_arn: `deployer target` makes the role it names in another account".into(),
        )
    })?;
    if role.account() != account {
        return Err(CliError::Refused(format!(
            "the target profile acts in account {account}, but account_role_arn is in account {}: give --target-profile a profile of that account",
            role.account()
        )));
    }
    let wanted = spec
        .shared_account_role(whole)
        .map_err(DeployError::from)?
        .ok_or_else(|| CliError::Refused("no account_role_arn".into()))?;
    let name = match wanted.arn.split_once(":role/") {
        Some((_, name)) if !name.contains('/') => name.to_owned(),
        _ => {
            return Err(CliError::Refused(format!(
                "account_role_arn {} has a path: `deployer target` makes roles at the root path (arn:…:role/NAME); make a role with a path yourself, with the trust and permissions `deployer target plan` shows",
                wanted.arn
            )));
        }
    };
    Ok(RoleSpec {
        name,
        description: ROLE_DESCRIPTION,
        trust: wanted.trust,
        policy_name: "replicas",
        policy: Some(wanted.policy),
        instance_profile: false,
        path: None,
        owner: spec.owner(),
    })
}

/// Runs one `target` action: `home` reads this stack's account (`spec` is built from it),
/// `target` acts in the replicas' account.
pub(crate) async fn run(
    args: &TargetArgs,
    spec: &Spec,
    target: &Clients,
    json: bool,
    out: &mut dyn Write,
) -> Result<i32, CliError> {
    let account = super::common::identity(target, Some(spec.id.region.clone()))
        .await?
        .account;
    let whole = spec;
    let view = target_view(whole, args.sync.as_deref())?;
    let spec = &view;
    let role = role_of(whole, spec, &account)?;
    let seen = iam::observe(target, &role).await?;
    let mut change = iam::diff(&role, seen.as_ref());
    let foreign = seen.as_ref().is_some_and(|s| !s.ours);
    // Policies beside its own on the role this stack made would widen what the replicator may
    // do there: drift, removed by `target up`.
    let others = match &seen {
        Some(s) if s.ours => other_policies(target, &role).await?,
        _ => OtherPolicies::default(),
    };
    if foreign {
        change.note = Some(
            "exists without this stack's tag: `target up` does not take over a role it did not make (its other policies would stay, its trust would be replaced); name another role in account_role_arn, or delete this one".to_owned(),
        );
    } else if !others.is_empty() {
        change.fields.push(FieldDiff {
            field: crate::change::Field::OtherPolicies,
            from: Some(others.describe()),
            to: Some("(none)".into()),
        });
        change.action = Action::Update;
    }
    let keys = TargetKey::observe_all(target, whole, spec).await?;
    let head = serde_json::json!({
        "stack": spec.stack(),
        "account": account,
        "role_arn": spec.cfg.replicator.account_role.as_ref().map(|r| r.role_arn.clone()),
        "kms_key": keys.first().map(|k| k.want.alias.clone()),
        "kms_key_regions": keys.iter().map(|k| k.region.clone()).collect::<Vec<_>>(),
    });
    // The keys first: the role may use them only by their alias.
    let changes: Vec<crate::change::Change> = keys
        .iter()
        .map(|k| k.change.clone())
        .chain([change.clone()])
        .collect();
    let with = |mut v: serde_json::Value, extra: serde_json::Value| {
        if let (Some(v), Some(extra)) = (v.as_object_mut(), extra.as_object()) {
            v.extend(extra.clone());
        }
        v
    };
    match &args.action {
        TargetAction::Plan(codes) => {
            let pending = changes.iter().any(|c| c.changes_anything());
            let value = with(
                head,
                serde_json::json!({"changes_pending": pending, "changes": changes}),
            );
            let text = format!("In account {account}:\n{}", render_plan(&changes));
            emit(out, json, &value, &text)?;
            Ok(codes.code(pending))
        }
        TargetAction::Status(codes) => {
            let clean = !changes.iter().any(|c| c.changes_anything());
            let value = with(
                head,
                serde_json::json!({"clean": clean, "changes": changes}),
            );
            let mut text = format!("In account {account}:\n{}", render_status(&changes));
            if !clean {
                text.push_str("Run `deployer target up` to repair what is missing or drifted.\n");
            }
            emit(out, json, &value, &text)?;
            Ok(codes.code(!clean))
        }
        TargetAction::Up(up) => {
            if foreign {
                return Err(CliError::Refused(format!(
                    "the role {} in account {account} {}",
                    role.name,
                    change
                        .note
                        .unwrap_or_default()
                        .trim_start_matches("exists ")
                )));
            }
            if let Some(k) = keys.iter().find(|k| !k.ours) {
                return Err(CliError::Refused(format!(
                    "the key {} in account {account} (region {}) does not carry this stack's tag: `target up` does not take over a key it did not make; delete that alias, or give account_kms_key = \"aws/secretsmanager\"",
                    k.want.alias, k.region
                )));
            }
            let asked: Vec<&crate::change::Change> =
                changes.iter().filter(|c| c.needs_confirmation()).collect();
            if !up.yes && !asked.is_empty() {
                confirm(&format!(
                    "target up would change who may assume the role {} in account {account}, what it may do, or the replicas' key ({}).",
                    role.name,
                    asked
                        .iter()
                        .flat_map(|c| c.fields.iter().map(|f| format!("{} {}", c.kind, f.field)))
                        .collect::<Vec<_>>()
                        .join(", ")
                ))?;
            }
            let mut applied = Vec::new();
            for k in keys {
                if k.change.changes_anything() {
                    key::apply(&k.clients, &k.want, k.seen, &k.change).await?;
                    applied.push(k.change);
                }
            }
            if change.changes_anything() {
                iam::apply(target, &role, &change).await?;
                others.remove(target, &role.name).await?;
                applied.push(change);
            }
            let arn = spec
                .cfg
                .replicator
                .account_role
                .as_ref()
                .map(|r| r.role_arn.clone())
                .unwrap_or_default();
            let value = with(head, serde_json::json!({"applied": applied}));
            let mut text = if applied.is_empty() {
                format!("No changes in account {account}: the role matches the configuration.\n")
            } else {
                applied
                    .iter()
                    .map(|c| {
                        let verb = if c.action == Action::Create {
                            "created"
                        } else {
                            "updated"
                        };
                        format!("{verb} {} {} in account {account}\n", c.kind, c.name)
                    })
                    .collect()
            };
            text.push_str(&format!(
                "The replicator of stack {} assumes {arn} with its external_id; `deployer up` gives it that right.\n",
                spec.stack()
            ));
            emit(out, json, &value, &text)?;
            Ok(EXIT_OK)
        }
        TargetAction::Destroy(d) => {
            // Replicas deleted while a role not made here still lets the replicator write them
            // would be written again, or left unreadable to their readers: refused.
            if d.delete_replicated_secrets && foreign {
                return Err(CliError::Refused(format!(
                    "the role {} in account {account} does not carry this stack's tag: destroy leaves it, and the replicator may still write through it, so the replicas are not deleted; delete or detach that role first",
                    role.name
                )));
            }
            // Every rule naming the role loses it, not only this one.
            let sharing: Vec<String> = whole
                .syncs()
                .iter()
                .filter(|v| v.account_role_arn() == spec.account_role_arn())
                .filter_map(|v| v.sync_name().map(str::to_owned))
                .collect();
            let who = if sharing.len() > 1 {
                format!("the rules {} can", sharing.join(", "))
            } else {
                "the replicator can".to_owned()
            };
            if !d.yes {
                let replicas = if d.delete_replicated_secrets {
                    "and schedules their replicas there for deletion"
                } else {
                    "(the replicas stay)"
                };
                confirm(&format!(
                    "target destroy deletes the role {} in account {account}; {who} then no longer write the replicas there {replicas}.",
                    role.name
                ))?;
            }
            let done = iam::destroy(target, &role).await?;
            let verb = match done.action {
                Action::Delete => "deleted",
                _ => "absent ",
            };
            let mut text = format!("{verb} {} {} in account {account}\n", done.kind, done.name);
            if let Some(n) = &done.note {
                text.push_str(&format!("        {n}\n"));
            }
            if sharing.len() > 1 && done.action == Action::Delete {
                text.push_str(&format!(
                    "        {who} no longer write there until `deployer target up` makes it again\n"
                ));
            }
            let mut changes = vec![done];
            // Once the role is gone (or was never there), no run writes them again.
            let role_arn = spec.account_role_arn().unwrap_or_default();
            for view in whole
                .syncs()
                .iter()
                .filter(|v| v.account_role_arn() == Some(role_arn))
            {
                let Some(there) = view.writer_role().map(|r| view.in_account_of(&r)) else {
                    continue;
                };
                if !d.delete_replicated_secrets {
                    text.push_str(&format!(
                        "kept    the replicas {}/* in account {account} (region {}; --delete-replicated-secrets schedules them for deletion)\n",
                        view.write_prefix(),
                        there.id.region
                    ));
                    continue;
                }
                let scheduled = crate::resources::replicas::schedule_sync_deletion(
                    &target.in_region(&there.id.region),
                    &there.sync_replicas_spec(),
                )
                .await?;
                text.push_str(&format!(
                    "deleted {} {} in account {account} (region {})\n",
                    scheduled.kind, scheduled.name, there.id.region
                ));
                if let Some(n) = &scheduled.note {
                    text.push_str(&format!("        {n}\n"));
                }
                changes.push(scheduled);
            }
            for k in keys.iter().filter(|k| k.seen.is_some() && k.ours) {
                let why = format!(
                    "kept in account {account} (region {}): the replicas are encrypted with it; once they are gone, `aws kms schedule-key-deletion` removes it",
                    k.region
                );
                text.push_str(&format!("kept    kms key {}: {why}\n", k.want.alias));
                changes.push(
                    crate::change::Change::new(key::KIND, k.want.alias.clone(), Action::Unchanged)
                        .with_note(why),
                );
            }
            let value = with(head, serde_json::json!({"changes": changes}));
            emit(out, json, &value, &text)?;
            Ok(EXIT_OK)
        }
    }
}

/// The key of the replicas in the target account (`account_kms_key = "create"`), in the
/// sync's region, as wanted and as found.
struct TargetKey {
    want: KeySpec,
    region: String,
    clients: Clients,
    seen: Option<key::KeyState>,
    /// Whether the key found carries this stack's tag (none found: true).
    ours: bool,
    change: crate::change::Change,
}

impl TargetKey {
    /// The keys of every rule of `whole` naming `spec`'s role, one per region: a `target up`
    /// for any of them converges the keys of all (each in its rule's region).
    async fn observe_all(
        target: &Clients,
        whole: &Spec,
        spec: &Spec,
    ) -> Result<Vec<Self>, CliError> {
        let mut regions = Vec::new();
        let mut keys = Vec::new();
        let views = whole.syncs();
        let sharing = views
            .iter()
            .filter(|v| v.account_role_arn() == spec.account_role_arn());
        for view in std::iter::once(spec).chain(sharing) {
            let Some((region, _)) = view.account_key().map_err(DeployError::from)? else {
                continue;
            };
            if regions.contains(&region) {
                continue;
            }
            regions.push(region);
            keys.extend(Self::observe(target, view).await?);
        }
        if keys.len() > 1 {
            for k in &mut keys {
                k.change.name = format!("{} ({})", k.want.alias, k.region);
            }
        }
        Ok(keys)
    }

    async fn observe(target: &Clients, spec: &Spec) -> Result<Option<Self>, CliError> {
        let Some((region, want)) = spec.account_key().map_err(DeployError::from)? else {
            return Ok(None);
        };
        let clients = target.in_region(&region);
        let seen = key::observe(&clients, &want).await?;
        let ours = match &seen {
            Some(k) => key::carries_tags(&clients, &k.key_id, &spec.tags()).await?,
            None => true,
        };
        let mut change = key::diff(&want, seen.as_ref());
        if !ours {
            change.note = Some(
                "exists without this stack's tag: `target up` does not take over a key it did not make".into(),
            );
        }
        Ok(Some(Self {
            want,
            region,
            clients,
            seen,
            ours,
            change,
        }))
    }
}

/// Inline policies (by name) and managed policies (by ARN) on the role besides its own.
#[derive(Debug, Default)]
struct OtherPolicies {
    inline: Vec<String>,
    attached: Vec<String>,
}

impl OtherPolicies {
    fn is_empty(&self) -> bool {
        self.inline.is_empty() && self.attached.is_empty()
    }

    fn describe(&self) -> String {
        self.inline
            .iter()
            .map(|n| format!("inline {n}"))
            .chain(self.attached.iter().map(|a| format!("attached {a}")))
            .collect::<Vec<_>>()
            .join(", ")
    }

    async fn remove(&self, c: &Clients, role: &str) -> Result<(), DeployError> {
        for name in &self.inline {
            crate::resources::delete(
                "DeleteRolePolicy",
                role,
                c.iam
                    .delete_role_policy()
                    .role_name(role)
                    .policy_name(name)
                    .send(),
            )
            .await?;
        }
        for arn in &self.attached {
            crate::resources::delete(
                "DetachRolePolicy",
                role,
                c.iam
                    .detach_role_policy()
                    .role_name(role)
                    .policy_arn(arn)
                    .send(),
            )
            .await?;
        }
        Ok(())
    }
}

async fn other_policies(c: &Clients, role: &RoleSpec) -> Result<OtherPolicies, DeployError> {
    let (inline, attached) = iam::policies_of(c, &role.name).await?;
    Ok(OtherPolicies {
        inline: inline
            .into_iter()
            .filter(|n| n != role.policy_name)
            .collect(),
        attached,
    })
}

/// Asks on a terminal; refuses without one.
fn confirm(what: &str) -> Result<(), CliError> {
    super::ask::confirm(
        &format!("{what} Go ahead? Type yes: "),
        "yes",
        format!(
            "{what} Review it with `deployer target plan`, then add --yes (needed when not run from a terminal)"
        ),
        "not confirmed; nothing was changed",
    )
}
