//! Runs the resources in dependency order: `plan` (observe + diff), `up` (observe + diff +
//! apply, passing ARNs forward), `status` (the plan read as present / missing / drifted) and
//! `destroy` (the same order backwards). No local state: everything is read live.

use serde::Serialize;

use crate::change::{Action, Change};
use crate::clients::Clients;
use crate::lambda_zip::LambdaZip;
use crate::resources::{DeployError, function, iam, key, logs, rule, secret, topic};
use crate::spec::Spec;

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

/// Called with each change as it is about to be applied.
pub type Progress<'a> = &'a mut (dyn FnMut(&Change) + Send);

#[derive(Debug)]
pub struct Stack<'a> {
    pub clients: &'a Clients,
    pub spec: &'a Spec,
    pub zip: Option<&'a LambdaZip>,
}

impl Stack<'_> {
    /// Observe and diff every resource; nothing is changed.
    pub async fn plan(&self) -> Result<Converged, DeployError> {
        self.converge(false, &mut |_| {}).await
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
        let mut go = |ch: &Change| {
            let act = apply && ch.changes_anything();
            if act {
                progress(ch);
            }
            act
        };

        // KMS key: everything else is encrypted with it.
        let seen = key::observe(c, spec).await?;
        let ch = key::diff(spec, seen.as_ref())?;
        let key_state = if go(&ch) {
            Some(key::apply(c, spec, seen, &ch).await?)
        } else {
            seen
        };
        let key_arn = key_state.map(|k| k.arn);
        changes.push(ch);

        // Failure topic.
        let seen = topic::observe(c, spec).await?;
        let ch = topic::diff(spec, seen.as_ref(), key_arn.as_deref());
        let topic_state = match (&key_arn, go(&ch)) {
            (Some(k), true) => topic::apply(c, spec, &ch, k).await?,
            _ => seen.filter(|_| spec.cfg.notification_email.is_some()),
        };
        out.topic_arn = topic_state.map(|t| t.arn);
        changes.push(ch);

        // The replicator's role.
        let role = iam::replicator_role(spec, key_arn.as_deref())?;
        let seen = iam::observe(c, spec, &role).await?;
        let ch = iam::diff(&role, seen.as_ref());
        if go(&ch) {
            iam::apply(c, spec, &role, &ch).await?;
        }
        changes.push(ch);

        // Log group.
        let seen = logs::observe(c, spec).await?;
        let ch = logs::diff(spec, seen.as_ref());
        if go(&ch) {
            logs::apply(c, spec, &ch).await?;
        }
        changes.push(ch);

        let vault_ip: Option<String> = None;
        out.vault_url = spec.vault_address(vault_ip.as_deref());
        out.vault_ui_url = out.vault_url.as_ref().map(|u| format!("{u}/ui/"));

        // Connection secret.
        let seen = secret::observe(c, spec).await?;
        let ch = secret::diff(spec, seen.as_ref(), key_arn.as_deref())?;
        let secret_state = match (&key_arn, go(&ch)) {
            (Some(k), true) => {
                let address = out.vault_url.clone().unwrap_or_default();
                Some(secret::apply(c, spec, seen.as_ref(), &ch, k, &address).await?)
            }
            _ => seen,
        };
        out.connection_secret_arn = secret_state.map(|s| s.arn);
        changes.push(ch);

        // The function.
        let inputs = function::Inputs {
            key_arn: key_arn.as_deref(),
            vpc: None,
        };
        let seen = function::observe(c, spec).await?;
        let ch = function::diff(spec, seen.as_ref(), self.zip, &inputs);
        let fn_state = match (self.zip, go(&ch)) {
            (Some(zip), true) => Some(function::apply(c, spec, &ch, zip, &inputs).await?),
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
        if go(&ch) {
            rule::apply(c, spec, &ch).await?;
        }
        out.schedule = Some(spec.cfg.schedule.clone());
        changes.push(ch);

        out.key_arn = key_arn;
        Ok(Converged {
            changes,
            outputs: out,
        })
    }

    /// Deletes, in reverse order, what carries this stack's tag. Twice in a row is fine.
    pub async fn destroy(&self, progress: Progress<'_>) -> Result<Vec<Change>, DeployError> {
        let (c, spec) = (self.clients, self.spec);
        let mut done = Vec::new();
        let mut record = |ch: Change| {
            if ch.action == Action::Delete {
                progress(&ch);
            }
            done.push(ch);
        };
        record(rule::destroy(c, spec).await?);
        record(function::destroy(c, spec).await?);
        record(secret::destroy(c, spec).await?);
        record(logs::destroy(c, spec).await?);
        record(iam::destroy(c, spec, &iam::replicator_role(spec, None)?).await?);
        record(topic::destroy(c, spec).await?);
        record(key::destroy(c, spec).await?);
        Ok(done)
    }
}
