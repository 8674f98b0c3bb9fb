//! Runs the resources in one ordered list ([`Resource::ORDER`]): `plan` (observe + diff), `up`
//! (observe + diff + apply, passing ARNs forward), `status` (the plan read as present / missing
//! / drifted) and `destroy` (the same list backwards). No local state: everything is read live.

use serde::Serialize;

use crate::change::{Action, Change};
use crate::clients::Clients;
use crate::desired::RoleSpec;
use crate::lambda_zip::LambdaZip;
use crate::resources::network;
use crate::resources::{
    DeployError, function, iam, key, logs, monitoring, replicas, rotation, rule, secret, signing,
    topic, vault_server,
};
use crate::spec::{Duty, Group, Spec};

/// What a deployed stack offers its user.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct Outputs {
    pub vault_url: Option<String>,
    pub vault_ui_url: Option<String>,
    pub function_name: Option<String>,
    pub function_arn: Option<String>,
    /// The function the change watcher on the stack's Vault invokes.
    pub watch_function_name: Option<String>,
    /// The function Secrets Manager rotates the connection secret's secret id with.
    pub rotation_function_name: Option<String>,
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
pub type OnStep<'a> = &'a mut (dyn FnMut(Phase, &Change) + Send);

/// The stack's resources in the order `up` converges them (each may use what the ones before
/// made); `destroy` takes them backwards.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resource {
    /// The KMS key: everything else is encrypted with it.
    Key,
    /// The failure topic (only with `notification_email`).
    Topic,
    /// The Vault network (none for an external Vault: an old one is removed).
    Network,
    /// The replicator's role: its network statement names the VPC.
    ReplicatorRole,
    /// The functions' log groups.
    LogGroup,
    /// The Vault server on EC2: its role, TLS secret and CA parameter, instance, Elastic IP.
    VaultServer,
    ConnectionSecret,
    /// The code signing config the functions' code is checked against (with
    /// `code_signing_profile`).
    CodeSigning,
    /// The sync function and, with Vault on EC2, the change watcher's.
    Function,
    /// Secrets Manager's rotation of the connection secret's secret id by the rotation
    /// function.
    Rotation,
    /// The digest of the code uploaded, which the Vault host checks the watcher's against.
    WatcherDigest,
    Schedule,
    /// The alarms and the dashboard over the function's metrics.
    Monitoring,
}

impl Resource {
    pub const ORDER: [Resource; 13] = [
        Resource::Key,
        Resource::Topic,
        Resource::Network,
        Resource::ReplicatorRole,
        Resource::LogGroup,
        Resource::VaultServer,
        Resource::ConnectionSecret,
        Resource::CodeSigning,
        Resource::Function,
        Resource::Rotation,
        Resource::WatcherDigest,
        Resource::Schedule,
        Resource::Monitoring,
    ];
}

#[derive(Debug)]
pub struct Stack<'a> {
    pub clients: &'a Clients,
    pub spec: &'a Spec,
    pub zip: Option<&'a LambdaZip>,
}

/// One `plan` or `up`: what the resources converged so far hand to the next ones.
struct Converging<'s, 'p> {
    stack: &'s Stack<'s>,
    apply: bool,
    progress: OnStep<'p>,
    changes: Vec<Change>,
    out: Outputs,
    key_arn: Option<String>,
    net: network::Network,
    /// An external Vault now, and the EC2 one's network is still there.
    removes_network: bool,
    /// An external Vault now, and the EC2 one's role (this stack's) is still there.
    removes_vault_role: bool,
    /// The CA of a TLS pair made (or read back) in this run.
    new_ca: Option<String>,
    /// The code signing config the functions use.
    code_signing: Option<String>,
    /// No `code_signing_profile` now, and the stack's config is still there: removed once the
    /// functions have left it.
    removes_code_signing: Option<signing::SigningState>,
    /// No automatic rotation now, and the rotation function's role is still there: removed
    /// once the function has gone.
    removes_rotation_role: bool,
    /// Roles of rules removed from the configuration: removed once the functions no longer
    /// name them.
    removes_rule_roles: Vec<RoleSpec>,
    /// The replicator's role as wanted, put once the functions have moved: until then its
    /// policy also allows what the running functions use ([`crate::spec::widened_for_the_move`]).
    narrows_replicator_role: Option<RoleSpec>,
}

impl Stack<'_> {
    /// Observe and diff every resource; nothing is changed.
    pub async fn plan(&self) -> Result<Converged, DeployError> {
        self.converge(false, &mut |_, _| {}).await
    }

    /// Converge: create or update what differs, in dependency order.
    pub async fn up(&self, progress: OnStep<'_>) -> Result<Converged, DeployError> {
        self.converge(true, progress).await
    }

    async fn converge(&self, apply: bool, progress: OnStep<'_>) -> Result<Converged, DeployError> {
        let mut run = Converging {
            stack: self,
            apply,
            progress,
            changes: Vec::new(),
            out: Outputs::default(),
            key_arn: None,
            net: network::Network::default(),
            removes_network: false,
            removes_vault_role: false,
            new_ca: None,
            code_signing: None,
            removes_code_signing: None,
            removes_rotation_role: false,
            removes_rule_roles: Vec::new(),
            narrows_replicator_role: None,
        };
        for resource in Resource::ORDER {
            // Boxed: the larger steps' futures would not fit a thread's stack together.
            Box::pin(run.converge(resource)).await?;
        }
        Box::pin(run.leave_the_ec2_vault()).await?;
        run.out.key_arn = run.key_arn;
        Ok(Converged {
            changes: run.changes,
            outputs: run.out,
        })
    }

    /// Deletes, in reverse order, what carries this stack's tag, and with `delete_replicas` the
    /// replicated secrets the replicator manages (once the schedule and the function are gone,
    /// so no run writes them again). Twice in a row is fine.
    pub async fn destroy(
        &self,
        delete_replicas: bool,
        progress: OnStep<'_>,
    ) -> Result<Vec<Change>, DeployError> {
        let mut done = Vec::new();
        // Found while the functions that use it (and tell it) are still there.
        let signing_spec = self.spec.signing_spec();
        let signing = signing::observe(self.clients, &signing_spec).await?;
        for resource in Resource::ORDER.into_iter().rev() {
            if resource == Resource::CodeSigning {
                let ch = signing::destroy(self.clients, &signing_spec, signing.as_ref()).await?;
                record(ch, progress, &mut done);
                continue;
            }
            Box::pin(self.destroy_one(resource, progress, &mut done)).await?;
            if resource == Resource::Function && delete_replicas {
                for ch in
                    replicas::schedule_deletion(self.clients, &self.spec.replica_syncs()).await?
                {
                    record(ch, progress, &mut done);
                }
            }
        }
        Ok(done)
    }

    async fn destroy_one(
        &self,
        resource: Resource,
        progress: OnStep<'_>,
        done: &mut Vec<Change>,
    ) -> Result<(), DeployError> {
        let (c, spec) = (self.clients, self.spec);
        // Said before each step: some wait for minutes.
        let mut starting = |kind: &'static str, name: String| {
            progress(Phase::Starting, &Change::new(kind, name, Action::Delete));
        };
        let changes = match resource {
            Resource::Monitoring => monitoring::destroy(c, &spec.monitoring_spec()).await?,
            Resource::Schedule => {
                let want = spec.schedule_spec();
                starting(rule::KIND, want.name.clone());
                vec![rule::destroy(c, &want).await?]
            }
            Resource::WatcherDigest => {
                vec![vault_server::destroy_digest(c, &spec.vault_server_spec()?).await?]
            }
            Resource::Rotation => vec![rotation::destroy(c, &spec.rotation_spec()).await?],
            Resource::Function => {
                let mut all = Vec::new();
                for duty in Duty::ALL {
                    let want = spec.function_spec(duty, None);
                    starting(function::KIND, want.name.clone());
                    all.push(function::destroy(c, &want).await?);
                }
                all
            }
            Resource::ConnectionSecret => {
                let want = spec.secret_spec()?;
                vec![
                    secret::destroy(c, &want).await?,
                    secret::destroy_rotator(c, &want).await?,
                ]
            }
            // Destroyed by `destroy` itself, with what it found before the functions went.
            Resource::CodeSigning => vec![],
            Resource::VaultServer => {
                let server = spec.vault_server_spec()?;
                starting(vault_server::INSTANCE_KIND, server.name.clone());
                let mut all = vault_server::destroy(c, &server).await?;
                all.push(iam::destroy(c, &spec.vault_role_spec(None)?).await?);
                all
            }
            Resource::LogGroup => {
                let mut all = Vec::new();
                for duty in Duty::ALL {
                    all.push(logs::destroy(c, &spec.log_group_spec(duty)).await?);
                }
                all
            }
            Resource::ReplicatorRole => {
                // Lambda needs the replicator role to release the function's network
                // interfaces, and the network cannot go before they do.
                starting(
                    network::INTERFACES_KIND,
                    spec.security_group_name(Group::Replicator),
                );
                let mut all: Vec<Change> =
                    network::release_lambda_interfaces(c, &spec.network_names())
                        .await?
                        .into_iter()
                        .collect();
                all.push(iam::destroy(c, &spec.replicator_role_spec(None, None)?).await?);
                all.push(iam::destroy(c, &spec.rotation_role_spec(None, None)?).await?);
                for role in iam::leftover_rule_roles(c, &spec.rule_roles_spec(), &[]).await? {
                    all.push(iam::destroy(c, &role).await?);
                }
                all
            }
            Resource::Network => network::destroy(c, &spec.network_names()).await?,
            Resource::Topic => vec![topic::destroy(c, &spec.topic_spec()).await?],
            // Replicas left in AWS are encrypted with the key: deleting it would make them
            // unreadable once its window ends. It goes only with them.
            Resource::Key => {
                let replicas = spec.replicas_spec()?;
                match replicas::count_on_the_key(c, &replicas).await? {
                    0 => vec![key::destroy(c, &replicas.key).await?],
                    n => vec![Change::new(key::KIND, &replicas.key.alias, Action::Unchanged).with_note(
                        format!(
                            "kept: {n} secret(s) are encrypted with it and would become unreadable without it (replicas under {}, or under a prefix no sync has now); `destroy --delete-replicated-secrets` schedules this stack's replicas under the configured prefixes and the key for deletion, the others stay yours to move or delete",
                            replicas.syncs.iter().map(|s| format!("{}/", s.prefix)).collect::<Vec<_>>().join(", ")
                        ),
                    )],
                }
            }
        };
        for ch in changes {
            record(ch, progress, done);
        }
        Ok(())
    }
}

/// Keeps a deletion's change, telling `progress` of what was deleted.
fn record(ch: Change, progress: OnStep<'_>, done: &mut Vec<Change>) {
    if ch.action == Action::Delete {
        progress(Phase::Done, &ch);
    }
    done.push(ch);
}

impl Converging<'_, '_> {
    /// Whether to apply `ch`; tells `progress` when it will.
    fn go(&mut self, ch: &Change) -> bool {
        let act = self.apply && ch.changes_anything();
        if act {
            (self.progress)(Phase::Starting, ch);
        }
        act
    }

    async fn converge(&mut self, resource: Resource) -> Result<(), DeployError> {
        match resource {
            Resource::Key => self.key().await,
            Resource::Topic => self.topic().await,
            Resource::Network => self.network().await,
            Resource::ReplicatorRole => self.replicator_role().await,
            Resource::LogGroup => self.log_group().await,
            Resource::VaultServer => self.vault_server().await,
            Resource::ConnectionSecret => self.connection_secret().await,
            Resource::CodeSigning => self.code_signing().await,
            // A config the functions have just left goes at once, not at the end of the run.
            Resource::Function => {
                Box::pin(self.functions()).await?;
                self.leave_code_signing().await?;
                Box::pin(self.leave_rotation_role()).await?;
                Box::pin(self.leave_rule_roles()).await?;
                Box::pin(self.narrow_replicator_role()).await
            }
            Resource::Rotation => self.rotation().await,
            Resource::WatcherDigest => self.watcher_digest().await,
            Resource::Schedule => self.schedule().await,
            Resource::Monitoring => self.monitoring().await,
        }
    }

    async fn key(&mut self) -> Result<(), DeployError> {
        let (c, spec) = (self.stack.clients, self.stack.spec);
        let want = spec.stack_key()?;
        let seen = key::observe(c, &want).await?;
        let ch = key::diff(&want, seen.as_ref());
        let state = if self.go(&ch) {
            Some(key::apply(c, &want, seen, &ch).await?)
        } else {
            seen
        };
        self.key_arn = state.map(|k| k.arn);
        self.changes.push(ch);
        Ok(())
    }

    async fn topic(&mut self) -> Result<(), DeployError> {
        let (c, spec) = (self.stack.clients, self.stack.spec);
        let want = spec.topic_spec();
        let seen = topic::observe(c, &want).await?;
        let ch = topic::diff(&want, seen.as_ref(), self.key_arn.as_deref());
        let state = match (self.key_arn.clone(), self.go(&ch)) {
            (Some(k), true) => topic::apply(c, &want, &ch, &k).await?,
            _ => seen.filter(|_| want.email.is_some()),
        };
        self.out.topic_arn = state.map(|t| t.arn);
        self.changes.push(ch);
        Ok(())
    }

    async fn network(&mut self) -> Result<(), DeployError> {
        let c = self.stack.clients;
        let spec = &self.stack.spec.network_spec()?;
        let seen = network::observe(c, spec).await?;
        let changes = network::diff(spec, &seen)?;
        self.net = seen.ids();
        let moving = changes.iter().any(Change::changes_anything);
        if self.apply && moving && spec.wanted() {
            for ch in changes.iter().filter(|c| c.changes_anything()) {
                (self.progress)(Phase::Starting, ch);
            }
            let net = std::mem::take(&mut self.net);
            self.net = network::apply(c, spec, net, &changes).await?;
        }
        self.removes_network = !spec.wanted() && moving;
        self.changes.extend(changes);
        Ok(())
    }

    async fn replicator_role(&mut self) -> Result<(), DeployError> {
        let (c, spec) = (self.stack.clients, self.stack.spec);
        let role = spec.replicator_role_spec(self.key_arn.as_deref(), self.net.vpc.as_deref())?;
        let seen = iam::observe(c, &role).await?;
        let ch = iam::diff(&role, seen.as_ref());
        if self.go(&ch) {
            // What the running functions use stays allowed until they have moved.
            let now = seen
                .as_ref()
                .and_then(|s| s.policy.as_deref())
                .and_then(|p| serde_json::from_str::<serde_json::Value>(p).ok());
            let moving = now
                .zip(role.policy.as_ref())
                .and_then(|(now, wanted)| crate::spec::widened_for_the_move(&now, wanted))
                .filter(|widened| {
                    // Too large for IAM: the functions' runs until they move may be refused.
                    let fits = crate::policy::compact_len(widened) <= Spec::MAX_ROLE_POLICY;
                    if !fits {
                        tracing::warn!(
                            "the replicator's policy is narrowed before the functions move (both policies together are over IAM's limit): runs until then may be refused"
                        );
                    }
                    fits
                });
            match moving {
                Some(widened) => {
                    let mut first = role.clone();
                    first.policy = Some(widened);
                    self.narrows_replicator_role = Some(role);
                    Box::pin(iam::apply(c, &first, &ch)).await?;
                }
                // Boxed: each request's future is large, and a test thread's stack small.
                None => {
                    Box::pin(iam::apply(c, &role, &ch)).await?;
                }
            }
        }
        self.changes.push(ch);
        // The rotation function's role: made with automatic rotation; otherwise one of this
        // stack's goes once its function has.
        let role = spec.rotation_role_spec(self.key_arn.as_deref(), self.net.vpc.as_deref())?;
        let seen = iam::observe(c, &role).await?;
        let ch = match seen.as_ref() {
            _ if spec.rotates_secret_id() => iam::diff(&role, seen.as_ref()),
            Some(r) if r.ours => Change::new(iam::KIND, &role.name, Action::Delete),
            _ => Change::new(iam::KIND, &role.name, Action::Absent),
        };
        if spec.rotates_secret_id() && self.go(&ch) {
            iam::apply(c, &role, &ch).await?;
        }
        self.removes_rotation_role = !spec.rotates_secret_id() && ch.action == Action::Delete;
        self.changes.push(ch);
        Box::pin(self.rule_roles()).await
    }

    /// The replicator's policy as wanted, once the functions no longer need what it took away.
    async fn narrow_replicator_role(&mut self) -> Result<(), DeployError> {
        let Some(role) = self.narrows_replicator_role.take() else {
            return Ok(());
        };
        iam::put_policy(self.stack.clients, &role).await
    }

    /// A role for each rule writing in the stack's account, after the replicator's (their
    /// trust names it); those of rules removed since go once the functions have left them.
    async fn rule_roles(&mut self) -> Result<(), DeployError> {
        let (c, spec) = (self.stack.clients, self.stack.spec);
        let wanted = spec.rule_role_specs()?;
        for role in &wanted {
            let seen = iam::observe(c, role).await?;
            let mut ch = iam::diff(role, seen.as_ref());
            let at = spec.arn(
                "iam",
                false,
                &format!("role{}{}", role.path.as_deref().unwrap_or("/"), role.name),
            );
            if let Some(s) = seen.as_ref().filter(|s| !s.ours || s.arn != at) {
                let why = format!(
                    "{} exists without this stack's tag or at another path ({}): `up` does not take over a role it did not make; delete it, or rename the rule",
                    role.name, s.arn
                );
                if self.apply {
                    return Err(DeployError::Untrusted(why));
                }
                ch = ch.with_note(why);
            }
            if self.go(&ch) {
                iam::apply(c, role, &ch).await?;
            }
            self.changes.push(ch);
        }
        for role in iam::leftover_rule_roles(c, &spec.rule_roles_spec(), &wanted).await? {
            self.changes.push(
                Change::new(iam::KIND, &role.name, Action::Delete)
                    .with_note("the role of a rule no longer configured"),
            );
            self.removes_rule_roles.push(role);
        }
        Ok(())
    }

    /// The roles of rules removed from the configuration go, once the functions no longer
    /// name them.
    async fn leave_rule_roles(&mut self) -> Result<(), DeployError> {
        if !self.apply {
            return Ok(());
        }
        let c = self.stack.clients;
        for role in std::mem::take(&mut self.removes_rule_roles) {
            (self.progress)(
                Phase::Starting,
                &Change::new(iam::KIND, &role.name, Action::Delete),
            );
            let ch = iam::destroy(c, &role).await?;
            (self.progress)(Phase::Done, &ch);
        }
        Ok(())
    }

    /// No automatic rotation any more: the rotation role goes once its function has.
    async fn leave_rotation_role(&mut self) -> Result<(), DeployError> {
        if !(self.apply && self.removes_rotation_role) {
            return Ok(());
        }
        let (c, spec) = (self.stack.clients, self.stack.spec);
        let ch = iam::destroy(c, &spec.rotation_role_spec(None, None)?).await?;
        (self.progress)(Phase::Done, &ch);
        Ok(())
    }

    async fn rotation(&mut self) -> Result<(), DeployError> {
        let (c, spec) = (self.stack.clients, self.stack.spec);
        let want = spec.rotation_spec();
        let seen = rotation::observe(c, &want).await?;
        let ch = rotation::diff(&want, seen.as_ref());
        if let Some(s) = &seen
            && self.go(&ch)
        {
            rotation::apply(c, &want, s, &ch).await?;
        }
        self.changes.push(ch);
        Ok(())
    }

    async fn log_group(&mut self) -> Result<(), DeployError> {
        let (c, spec) = (self.stack.clients, self.stack.spec);
        for duty in Duty::ALL {
            let want = spec.log_group_spec(duty);
            let seen = logs::observe(c, &want).await?;
            let ch = logs::diff(&want, seen.as_ref());
            if self.go(&ch) {
                logs::apply(c, &want, &ch).await?;
            }
            self.changes.push(ch);
        }
        Ok(())
    }

    /// The Vault server's role, TLS secret and CA parameter, instance and Elastic IP; the
    /// Vault URL for an external Vault.
    async fn vault_server(&mut self) -> Result<(), DeployError> {
        let (c, spec) = (self.stack.clients, self.stack.spec);
        let ours = spec.deploys_vault();
        let key_arn = self.key_arn.clone();
        let vrole = spec.vault_role_spec(key_arn.as_deref())?;
        let seen = iam::observe(c, &vrole).await?;
        let ch = match seen.as_ref() {
            _ if ours => iam::diff(&vrole, seen.as_ref()),
            Some(r) if r.ours => Change::new(iam::KIND, &vrole.name, Action::Delete),
            _ => Change::new(iam::KIND, &vrole.name, Action::Absent),
        };
        if ours && self.go(&ch) {
            iam::apply(c, &vrole, &ch).await?;
        }
        self.removes_vault_role = !ours && ch.action == Action::Delete;
        self.changes.push(ch);

        let server = spec.vault_server_spec()?;
        let address_seen = vault_server::observe_address(c, &server).await?;
        let instance_seen = vault_server::observe_instance(c, &server).await?;
        let tls_seen = vault_server::observe_tls(c, &server).await?;
        let ca_seen = vault_server::observe_ca(c, &server).await?;
        let tls_complete = instance_seen.is_some()
            || (ca_seen.is_some() && tls_seen.as_ref().is_some_and(|t| t.has_value));
        // Once the instance is there, its role reads the key in its first hour only.
        let read_until = instance_seen.as_ref().and_then(|i| i.tls_read_until());
        let tls_ch = vault_server::diff_tls(
            &server,
            tls_seen.as_ref(),
            tls_complete,
            read_until.as_deref(),
        )?;
        let ca_ch =
            vault_server::diff_ca(&server, ca_seen.as_ref(), tls_complete, key_arn.as_deref());
        // The certificate names the public address, so it is allocated first.
        let address = match &address_seen {
            None if ours && self.apply => Some(vault_server::allocate(c, &server).await?),
            seen => seen.clone(),
        };
        let public_ip = address.as_ref().map(|a| a.public_ip.clone());
        if ours && let (Some(k), Some(ip), true) = (&key_arn, &public_ip, self.go(&tls_ch)) {
            self.new_ca = vault_server::apply_tls(
                c,
                &server,
                tls_seen.as_ref(),
                &tls_ch,
                k,
                ip,
                read_until.as_deref(),
            )
            .await?;
        }
        self.changes.push(tls_ch);
        // Written with a new TLS secret; converted from an earlier version's plain String, or
        // refused as untrusted, by reading it back.
        if ours
            && self.new_ca.is_none()
            && let (Some(k), true) = (&key_arn, self.go(&ca_ch))
        {
            self.new_ca = vault_server::read_ca(c, &server, k).await?;
        }
        self.changes.push(ca_ch);

        let inst_ch = vault_server::diff_instance(
            &server,
            instance_seen.as_ref(),
            &self.net,
            public_ip.as_deref(),
        )?;
        let mut instance = instance_seen;
        if ours && let (Some(ip), true) = (&public_ip, self.go(&inst_ch)) {
            let made = vault_server::apply_instance(
                c,
                &server,
                instance.as_ref(),
                &inst_ch,
                &self.net,
                ip,
            )
            .await?;
            // A new instance: its first hour is the only time its role reads the TLS key.
            if let Some(until) = made
                .tls_read_until()
                .filter(|u| Some(u) != read_until.as_ref())
            {
                vault_server::limit_tls_read(c, &server, &until).await?;
            }
            instance = Some(made);
        }
        self.changes.push(inst_ch);

        let addr_ch = vault_server::diff_address(
            &server,
            address_seen.as_ref(),
            instance.as_ref().map(|i| i.id.as_str()),
        );
        if ours && let (Some(a), Some(i), true) = (&address, &instance, self.go(&addr_ch)) {
            vault_server::associate(c, a, &i.id).await?;
        }
        self.changes.push(addr_ch);

        self.out.vault_url = if ours {
            public_ip.as_deref().map(crate::spec::vault_url)
        } else {
            spec.vault_address(None)
        };
        self.out.vault_ui_url = self.out.vault_url.as_ref().map(|u| format!("{u}/ui/"));
        Ok(())
    }

    async fn connection_secret(&mut self) -> Result<(), DeployError> {
        let (c, spec) = (self.stack.clients, self.stack.spec);
        let want = spec.secret_spec()?;
        let seen = secret::observe(c, &want).await?;
        let ch = secret::diff(&want, seen.as_ref(), self.key_arn.as_deref());
        let state = match (self.key_arn.clone(), self.go(&ch)) {
            (Some(k), true) => {
                let address = spec.replicator_vault_address();
                let ca = match self.new_ca.take() {
                    Some(ca) => Some(ca),
                    None if spec.deploys_vault() => {
                        vault_server::read_ca(c, &spec.vault_server_spec()?, &k).await?
                    }
                    None => None,
                };
                Some(secret::apply(c, &want, seen.as_ref(), &ch, &k, &address, ca).await?)
            }
            _ => seen,
        };
        self.out.connection_secret_arn = state.map(|s| s.arn);
        self.changes.push(ch);
        Ok(())
    }

    async fn code_signing(&mut self) -> Result<(), DeployError> {
        let (c, spec) = (self.stack.clients, self.stack.spec);
        let want = spec.signing_spec();
        let seen = signing::observe(c, &want).await?;
        let ch = signing::diff(&want, seen.as_ref());
        if want.profile.is_none() {
            self.removes_code_signing = seen.filter(|_| ch.action == Action::Delete);
            self.changes.push(ch);
            return Ok(());
        }
        self.code_signing = if self.go(&ch) {
            Some(signing::apply(c, &want, seen.as_ref(), &ch).await?)
        } else {
            seen.map(|s| s.arn)
        };
        self.changes.push(ch);
        Ok(())
    }

    /// No profile any more: the config goes once the functions have left it.
    async fn leave_code_signing(&mut self) -> Result<(), DeployError> {
        let Some(seen) = self.removes_code_signing.take().filter(|_| self.apply) else {
            return Ok(());
        };
        let want = self.stack.spec.signing_spec();
        let ch = signing::destroy(self.stack.clients, &want, Some(&seen)).await?;
        (self.progress)(Phase::Done, &ch);
        Ok(())
    }

    async fn functions(&mut self) -> Result<(), DeployError> {
        for duty in Duty::ALL {
            Box::pin(self.function(duty)).await?;
        }
        Ok(())
    }

    async fn function(&mut self, duty: Duty) -> Result<(), DeployError> {
        let (c, spec, zip) = (self.stack.clients, self.stack.spec, self.stack.zip);
        let vpc = match (&self.net.subnet, self.net.group(Group::Replicator)) {
            (Some(subnet), Some(sg)) if spec.deploys_vault() => {
                Some((vec![subnet.clone()], vec![sg.to_owned()]))
            }
            _ => None,
        };
        let key_arn = self.key_arn.clone();
        let topic_arn = self.out.topic_arn.clone();
        let code_signing = self.code_signing.clone();
        let want = spec.function_spec(duty, key_arn.as_deref());
        let inputs = function::Inputs {
            vpc,
            topic_arn: topic_arn.as_deref(),
            code_signing: code_signing.as_deref(),
        };
        let seen = function::observe(c, &want).await?;
        let ch = function::diff(&want, seen.as_ref(), zip, &inputs);
        // Rotation turned off: Secrets Manager stops using the function before it goes.
        if duty == Duty::Rotate && !want.wanted && self.go(&ch) {
            rotation::destroy(c, &spec.rotation_spec()).await?;
        }
        let state = match (zip, self.go(&ch)) {
            // Boxed: a debug build's frame for it would crowd a test thread's stack.
            (Some(zip), true) => Box::pin(function::apply(c, &want, &ch, zip, &inputs)).await?,
            (None, true) => {
                return Err(DeployError::NotReady {
                    what: "lambda function".into(),
                    detail: "no Lambda zip given".into(),
                });
            }
            _ => seen.filter(|_| want.wanted),
        };
        if let Some(f) = state {
            match duty {
                Duty::Sync => {
                    self.out.function_name = Some(spec.function_name());
                    self.out.function_arn = Some(f.arn);
                }
                Duty::Watch => self.out.watch_function_name = Some(spec.function_name_of(duty)),
                Duty::Rotate => {
                    self.out.rotation_function_name = Some(spec.function_name_of(duty));
                }
            }
        }
        self.changes.push(ch);
        Ok(())
    }

    /// The digest of the code just uploaded, once the functions hold it.
    async fn watcher_digest(&mut self) -> Result<(), DeployError> {
        let (c, spec, zip) = (self.stack.clients, self.stack.spec, self.stack.zip);
        let server = spec.vault_server_spec()?;
        let seen = vault_server::observe_digest(c, &server).await?;
        let code = zip.map(LambdaZip::sha256_hex);
        let ch = vault_server::diff_digest(
            &server,
            seen.as_ref(),
            code.as_deref(),
            self.key_arn.as_deref(),
        );
        if let (Some(code), Some(key), true) = (&code, self.key_arn.clone(), self.go(&ch)) {
            vault_server::apply_digest(c, &server, seen.as_ref(), &ch, code, &key).await?;
        } else if ch.action == Action::Delete && self.go(&ch) {
            vault_server::destroy_digest(c, &server).await?;
        }
        self.changes.push(ch);
        Ok(())
    }

    async fn schedule(&mut self) -> Result<(), DeployError> {
        let (c, spec) = (self.stack.clients, self.stack.spec);
        let want = spec.schedule_spec();
        let seen = rule::observe(c, &want).await?;
        let ch = rule::diff(&want, seen.as_ref());
        if self.go(&ch) {
            rule::apply(c, &want, &ch).await?;
        }
        self.out.schedule = Some(want.expression);
        self.changes.push(ch);
        Ok(())
    }

    /// The alarms and the dashboard (the diff leaves one this stack did not make unchanged).
    async fn monitoring(&mut self) -> Result<(), DeployError> {
        let c = self.stack.clients;
        let spec = &self.stack.spec.monitoring_spec();
        let seen = monitoring::observe_alarms(c, spec, &monitoring::every(spec)).await?;
        for (alarm, ch) in monitoring::diff_alarms(spec, &seen) {
            if self.go(&ch) {
                monitoring::apply_alarm_change(c, spec, &alarm, &ch).await?;
            }
            self.changes.push(ch);
        }
        let seen = monitoring::observe_dashboard(c, spec).await?;
        let ch = monitoring::diff_dashboard(spec, seen.as_ref());
        if self.go(&ch) {
            monitoring::apply_dashboard(c, spec, &ch).await?;
        }
        self.changes.push(ch);
        Ok(())
    }

    /// Switched from Vault on EC2 to an external Vault: what served the old one goes, once the
    /// function has left the VPC.
    async fn leave_the_ec2_vault(&mut self) -> Result<(), DeployError> {
        let (c, spec) = (self.stack.clients, self.stack.spec);
        if !self.apply || spec.deploys_vault() {
            return Ok(());
        }
        for ch in vault_server::destroy(c, &spec.vault_server_spec()?).await? {
            (self.progress)(Phase::Done, &ch);
        }
        if self.removes_vault_role {
            iam::destroy(c, &spec.vault_role_spec(None)?).await?;
        }
        if self.removes_network {
            for ch in network::destroy(c, &spec.network_names()).await? {
                (self.progress)(Phase::Done, &ch);
            }
        }
        Ok(())
    }
}
