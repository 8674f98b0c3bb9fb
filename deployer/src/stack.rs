//! Runs the resources in dependency order: `plan` (observe + diff), `up` (observe + diff +
//! apply, passing ARNs forward), `status` (the plan read as present / missing / drifted) and
//! `destroy` (the same order backwards). No local state: everything is read live.

use serde::Serialize;

use crate::change::{Action, Change};
use crate::clients::Clients;
use crate::lambda_zip::LambdaZip;
use crate::resources::network;
use crate::resources::{
    DeployError, function, iam, key, logs, replicas, rule, secret, topic, vault,
};
use crate::spec::{Group, Spec};

/// What a deployed stack offers its user.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct Outputs {
    pub vault_url: Option<String>,
    pub vault_ui_url: Option<String>,
    pub function_name: Option<String>,
    pub function_arn: Option<String>,
    pub connection_secret_arn: Option<String>,
    pub topic_arn: Option<String>,
    pub key_arn: Option<String>,
    pub schedule: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct Converged {
    pub changes: Vec<Change>,
    pub outputs: Outputs,
}

impl Converged {
    pub fn changes_anything(&self) -> bool {
        self.changes.iter().any(Change::changes_anything)
    }
}

/// Where a change stands when the progress callback hears of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// About to be applied; it may take minutes (an instance, a function, network interfaces).
    Starting,
    /// Applied (`destroy`: deleted).
    Done,
}

/// Called as changes are applied: `up` tells each one as it starts, `destroy` each step as it
/// starts and each deletion once done.
pub type Progress<'a> = &'a mut (dyn FnMut(Phase, &Change) + Send);

#[derive(Debug)]
pub struct Stack<'a> {
    pub clients: &'a Clients,
    pub spec: &'a Spec,
    pub zip: Option<&'a LambdaZip>,
}

impl Stack<'_> {
    /// Observe and diff every resource; nothing is changed.
    pub async fn plan(&self) -> Result<Converged, DeployError> {
        self.converge(false, &mut |_, _| {}).await
    }

    /// Converge: create or update what differs, in dependency order.
    pub async fn up(&self, progress: Progress<'_>) -> Result<Converged, DeployError> {
        self.converge(true, progress).await
    }

    async fn converge(
        &self,
        apply: bool,
        progress: Progress<'_>,
    ) -> Result<Converged, DeployError> {
        let (c, spec) = (self.clients, self.spec);
        let mut changes = Vec::new();
        let mut out = Outputs::default();
        let go = |progress: &mut (dyn FnMut(Phase, &Change) + Send), ch: &Change| {
            let act = apply && ch.changes_anything();
            if act {
                progress(Phase::Starting, ch);
            }
            act
        };

        // KMS key: everything else is encrypted with it.
        let seen = key::observe(c, spec).await?;
        let ch = key::diff(spec, seen.as_ref())?;
        let key_state = if go(progress, &ch) {
            Some(key::apply(c, spec, seen, &ch).await?)
        } else {
            seen
        };
        let key_arn = key_state.map(|k| k.arn);
        changes.push(ch);

        // Failure topic.
        let seen = topic::observe(c, spec).await?;
        let ch = topic::diff(spec, seen.as_ref(), key_arn.as_deref());
        let topic_state = match (&key_arn, go(progress, &ch)) {
            (Some(k), true) => topic::apply(c, spec, &ch, k).await?,
            _ => seen.filter(|_| spec.cfg.notification_email.is_some()),
        };
        out.topic_arn = topic_state.map(|t| t.arn);
        changes.push(ch);

        // The Vault network (none in external mode; an old one is removed).
        let net_seen = network::observe(c, spec).await?;
        let net_changes = network::diff(spec, &net_seen)?;
        let mut net = net_seen.ids();
        if apply && net_changes.iter().any(Change::changes_anything) && spec.deploys_vault() {
            for ch in net_changes.iter().filter(|c| c.changes_anything()) {
                progress(Phase::Starting, ch);
            }
            // Boxed, as the other large steps: the whole `up` would not fit a thread's stack.
            net = Box::pin(network::apply(c, spec, net, &net_changes)).await?;
        }
        let removes_network =
            !spec.deploys_vault() && net_changes.iter().any(Change::changes_anything);
        changes.extend(net_changes);

        // The replicator's role.
        let role = iam::replicator_role(spec, key_arn.as_deref(), net.vpc.as_deref())?;
        let seen = iam::observe(c, spec, &role).await?;
        let ch = iam::diff(&role, seen.as_ref());
        if go(progress, &ch) {
            iam::apply(c, spec, &role, &ch).await?;
        }
        changes.push(ch);

        // Log group.
        let seen = logs::observe(c, spec).await?;
        let ch = logs::diff(spec, seen.as_ref());
        if go(progress, &ch) {
            logs::apply(c, spec, &ch).await?;
        }
        changes.push(ch);

        // The Vault server: its role, address, TLS secret and instance.
        let vrole = iam::vault_role(spec, key_arn.as_deref())?;
        let seen = iam::observe(c, spec, &vrole).await?;
        let ch = if spec.deploys_vault() {
            iam::diff(&vrole, seen.as_ref())
        } else if seen.as_ref().is_some_and(|r| r.ours) {
            Change::new(iam::KIND, &vrole.name, Action::Delete)
        } else {
            Change::new(iam::KIND, &vrole.name, Action::Absent)
        };
        if spec.deploys_vault() && go(progress, &ch) {
            iam::apply(c, spec, &vrole, &ch).await?;
        }
        changes.push(ch);

        let address_seen = vault::observe_address(c, spec).await?;
        let instance_seen = vault::observe_instance(c, spec).await?;
        let tls_seen = vault::observe_tls(c, spec).await?;
        let ca_seen = vault::observe_ca(c, spec).await?;
        let tls_complete = instance_seen.is_some()
            || (ca_seen.is_some() && tls_seen.as_ref().is_some_and(|t| t.has_value));
        let tls_ch = vault::diff_tls(spec, tls_seen.as_ref(), tls_complete)?;
        let ca_ch = vault::diff_ca(spec, ca_seen.as_ref(), tls_complete, key_arn.as_deref());
        let mut new_ca = None;
        // The certificate names the public address, so it is allocated first.
        let address = match &address_seen {
            None if spec.deploys_vault() && apply => Some(vault::allocate(c, spec).await?),
            seen => seen.clone(),
        };
        let public_ip = address.as_ref().map(|a| a.public_ip.clone());
        if spec.deploys_vault()
            && let (Some(k), Some(ip), true) = (&key_arn, &public_ip, go(progress, &tls_ch))
        {
            new_ca = Box::pin(vault::apply_tls(c, spec, tls_seen.as_ref(), &tls_ch, k, ip)).await?;
        }
        changes.push(tls_ch);
        // Written with a new TLS secret; converted from an earlier version's plain String, or
        // refused as untrusted, by reading it back.
        if spec.deploys_vault()
            && let (Some(k), None, true) = (&key_arn, &new_ca, go(progress, &ca_ch))
        {
            new_ca = vault::read_ca(c, spec, k).await?;
        }
        changes.push(ca_ch);
        let inst_ch =
            vault::diff_instance(spec, instance_seen.as_ref(), &net, public_ip.as_deref())?;
        let mut instance = instance_seen;
        if spec.deploys_vault()
            && let (Some(ip), true) = (&public_ip, go(progress, &inst_ch))
        {
            instance = Some(
                Box::pin(vault::apply_instance(
                    c,
                    spec,
                    instance.as_ref(),
                    &inst_ch,
                    &net,
                    ip,
                ))
                .await?,
            );
        }
        changes.push(inst_ch);
        let addr_ch = vault::diff_address(
            spec,
            address_seen.as_ref(),
            instance.as_ref().map(|i| i.id.as_str()),
        );
        if spec.deploys_vault()
            && let (Some(a), Some(i), true) = (&address, &instance, go(progress, &addr_ch))
        {
            vault::associate(c, a, &i.id).await?;
        }
        changes.push(addr_ch);

        if spec.deploys_vault() {
            out.vault_url = public_ip.as_ref().map(|ip| format!("https://{ip}:8200"));
        } else {
            out.vault_url = spec.vault_address(None);
        }
        out.vault_ui_url = out.vault_url.as_ref().map(|u| format!("{u}/ui/"));

        // Connection secret.
        let seen = secret::observe(c, spec).await?;
        let ch = secret::diff(spec, seen.as_ref(), key_arn.as_deref())?;
        let secret_state = match (&key_arn, go(progress, &ch)) {
            (Some(k), true) => {
                let address = spec.replicator_vault_address();
                let ca = match new_ca.take() {
                    Some(ca) => Some(ca),
                    None if spec.deploys_vault() => vault::read_ca(c, spec, k).await?,
                    None => None,
                };
                Some(secret::apply(c, spec, seen.as_ref(), &ch, k, &address, ca).await?)
            }
            _ => seen,
        };
        out.connection_secret_arn = secret_state.map(|s| s.arn);
        changes.push(ch);

        // The function.
        let vpc = match (&net.subnet, net.group(Group::Replicator)) {
            (Some(subnet), Some(sg)) if spec.deploys_vault() => {
                Some((vec![subnet.clone()], vec![sg.to_owned()]))
            }
            _ => None,
        };
        let inputs = function::Inputs {
            key_arn: key_arn.as_deref(),
            vpc,
            topic_arn: out.topic_arn.as_deref(),
        };
        let seen = function::observe(c, spec).await?;
        let ch = function::diff(spec, seen.as_ref(), self.zip, &inputs);
        let fn_state = match (self.zip, go(progress, &ch)) {
            (Some(zip), true) => Some(Box::pin(function::apply(c, spec, &ch, zip, &inputs)).await?),
            (None, true) => {
                return Err(DeployError::NotReady {
                    what: "lambda function".into(),
                    detail: "no Lambda zip given".into(),
                });
            }
            _ => seen,
        };
        if let Some(f) = fn_state {
            out.function_name = Some(spec.function_name());
            out.function_arn = Some(f.arn);
        }
        changes.push(ch);

        // Schedule.
        let seen = rule::observe(c, spec).await?;
        let ch = rule::diff(spec, seen.as_ref());
        if go(progress, &ch) {
            rule::apply(c, spec, &ch).await?;
        }
        out.schedule = Some(spec.cfg.schedule.clone());
        changes.push(ch);

        // Switched from Vault on EC2 to an external Vault: remove what served the old one,
        // after the function has left the VPC.
        if apply && !spec.deploys_vault() {
            for ch in vault::destroy(c, spec).await? {
                progress(Phase::Done, &ch);
            }
            if seen_vault_role_ours(c, spec).await? {
                iam::destroy(c, spec, &iam::vault_role(spec, None)?).await?;
            }
            if removes_network {
                for ch in network::destroy(c, spec).await? {
                    progress(Phase::Done, &ch);
                }
            }
        }

        out.key_arn = key_arn;
        Ok(Converged {
            changes,
            outputs: out,
        })
    }

    /// Deletes, in reverse order, what carries this stack's tag, and with `delete_replicas` the
    /// replicated secrets the replicator manages (once the schedule and the function are gone,
    /// so no run writes them again). Twice in a row is fine.
    pub async fn destroy(
        &self,
        delete_replicas: bool,
        progress: Progress<'_>,
    ) -> Result<Vec<Change>, DeployError> {
        let (c, spec) = (self.clients, self.spec);
        let mut done = Vec::new();
        let mut record = |ch: Change, progress: &mut (dyn FnMut(Phase, &Change) + Send)| {
            if ch.action == Action::Delete {
                progress(Phase::Done, &ch);
            }
            done.push(ch);
        };
        // Said before each step: some wait for minutes.
        let starting = |progress: &mut (dyn FnMut(Phase, &Change) + Send),
                        kind: &'static str,
                        name: String| {
            progress(Phase::Starting, &Change::new(kind, name, Action::Delete));
        };
        starting(progress, rule::KIND, spec.rule_name());
        record(rule::destroy(c, spec).await?, progress);
        starting(progress, function::KIND, spec.function_name());
        record(function::destroy(c, spec).await?, progress);
        if delete_replicas {
            record(replicas::schedule_deletion(c, spec).await?, progress);
        }
        record(secret::destroy(c, spec).await?, progress);
        starting(progress, vault::INSTANCE_KIND, spec.vault_name());
        for ch in vault::destroy(c, spec).await? {
            record(ch, progress);
        }
        record(
            iam::destroy(c, spec, &iam::vault_role(spec, None)?).await?,
            progress,
        );
        record(logs::destroy(c, spec).await?, progress);
        // Lambda needs the replicator role to release the function's network interfaces.
        starting(
            progress,
            network::INTERFACES_KIND,
            spec.security_group_name(Group::Replicator),
        );
        if let Some(ch) = network::release_lambda_interfaces(c, spec).await? {
            record(ch, progress);
        }
        record(
            iam::destroy(c, spec, &iam::replicator_role(spec, None, None)?).await?,
            progress,
        );
        for ch in network::destroy(c, spec).await? {
            record(ch, progress);
        }
        record(topic::destroy(c, spec).await?, progress);
        // Replicas left in AWS are encrypted with the key: deleting it would make them
        // unreadable once its window ends. It goes only with them.
        let replicas = replicas::count_live(c, spec).await?;
        if replicas > 0 {
            record(
                Change::new(key::KIND, spec.key_alias(), Action::Unchanged).with_note(format!(
                    "kept: {replicas} replicated secret(s) under {}/ are encrypted with it and would become unreadable without it; `destroy --delete-replicated-secrets` schedules both for deletion",
                    spec.cfg.prefix
                )),
                progress,
            );
        } else {
            record(key::destroy(c, spec).await?, progress);
        }
        Ok(done)
    }
}

async fn seen_vault_role_ours(c: &Clients, spec: &Spec) -> Result<bool, DeployError> {
    let role = iam::vault_role(spec, None)?;
    Ok(iam::observe(c, spec, &role).await?.is_some_and(|r| r.ours))
}
