//! Secrets Manager's rotation of the connection secret: a new AppRole secret id before the old
//! one ends, with no operator. The rotation function (`bootstrap` with
//! [`env::ROTATOR_SECRET`](contract::env::ROTATOR_SECRET) set) takes Secrets Manager's four
//! steps for the one connection secret it is given and refuses every other event:
//!
//! - `createSecret`: mints a secret id for the replicator's AppRole role with the rotator's
//!   token (whose policy may do that and nothing else) and writes the connection with it as the
//!   `AWSPENDING` version; if that write fails, the new id is destroyed at once.
//! - `setSecret`: nothing: Vault holds the id from the moment it is minted.
//! - `testSecret`: logs in to Vault with the pending version.
//! - `finishSecret`: moves `AWSCURRENT` to it, then destroys the secret id it replaced (the
//!   version now `AWSPREVIOUS`) and tags the secret with the new id's accessor. Tokens the
//!   replicator holds keep working until they expire; its next run reads the new id.
//!
//! Every step may run again (Secrets Manager retries): each checks what is done first. Values
//! are never logged; accessors are. Network I/O (Vault, Secrets Manager).

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::json;

use crate::aws::{SecretVersions, SecretsManager};
use crate::vault::{VaultClient, VaultError, VaultLogin, encode_path};
use contract::sdk::{AwsError, AwsErrorKind};
use contract::secret::SecretString;
use contract::{ACCESSOR_TAG, ConnectionSecret, RotatorSecret};

pub const CURRENT: &str = "AWSCURRENT";
pub const PENDING: &str = "AWSPENDING";
pub const PREVIOUS: &str = "AWSPREVIOUS";

/// One of Secrets Manager's rotation steps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
pub enum Step {
    #[serde(rename = "createSecret")]
    Create,
    #[serde(rename = "setSecret")]
    Set,
    #[serde(rename = "testSecret")]
    Test,
    #[serde(rename = "finishSecret")]
    Finish,
}

/// The event Secrets Manager invokes a rotation function with.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RotationEvent {
    pub step: Step,
    pub secret_id: String,
    pub client_request_token: String,
}

impl RotationEvent {
    /// The event, or why it is not one (a sync's event sent to the rotation function).
    pub fn parse(event: &serde_json::Value) -> Result<Self, String> {
        serde_json::from_value(event.clone()).map_err(|e| {
            format!("refused: the rotation function takes Secrets Manager's rotation events only ({{\"Step\", \"SecretId\", \"ClientRequestToken\"}}): {e}")
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RotateError {
    #[error(transparent)]
    Aws(#[from] AwsError),
    #[error(transparent)]
    Vault(#[from] VaultError),
    /// Something the rotation cannot go on from; the message says what to fix.
    #[error("{0}")]
    Refused(String),
}

/// What a step did, for the function's answer and log (accessors, never ids).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct StepReport {
    pub step: String,
    pub done: Vec<String>,
}

/// The rotation function: the connection secret it rotates and where its own credential is.
#[derive(Clone, Debug)]
pub struct Rotation {
    pub sm: SecretsManager,
    pub connection_secret: String,
    pub rotator_secret: String,
    /// Where a failed step is told (the stack's failure topic), if anywhere.
    pub notices: Option<(crate::aws::Notifier, String)>,
}

/// Subject of the notice of a failed rotation step.
pub const NOTICE_SUBJECT: &str = "vault-secrets-replicator: secret id rotation failed";

#[derive(Deserialize)]
struct MintedId {
    secret_id: SecretString,
    secret_id_accessor: String,
}

#[derive(Deserialize)]
struct IdLookup {
    #[serde(default)]
    secret_id_accessor: String,
}

/// The AppRole parts of a connection: (mount, role id); an error for any other login.
fn approle_of(conn: &ConnectionSecret) -> Result<(String, String), RotateError> {
    match (&conn.vault_role_id, &conn.vault_secret_id) {
        (Some(role_id), Some(_)) if !role_id.is_empty() => Ok((
            conn.vault_approle_mount
                .clone()
                .filter(|m| !m.is_empty())
                .unwrap_or_else(|| "approle".into()),
            role_id.clone(),
        )),
        _ => Err(RotateError::Refused(
            "the connection secret holds no AppRole credentials (vaultRoleId + vaultSecretId): only an AppRole secret id is rotated; turn rotation off for a token or AWS IAM login".into(),
        )),
    }
}

fn parse_connection(raw: &SecretString, what: &str) -> Result<ConnectionSecret, RotateError> {
    serde_json::from_str(raw.expose()).map_err(|e| {
        RotateError::Refused(format!(
            "{what} is not the expected JSON: {}",
            crate::vault::json_problem(&e)
        ))
    })
}

fn render(conn: &ConnectionSecret) -> Result<SecretString, RotateError> {
    serde_json::to_string(conn)
        .map(SecretString::from)
        .map_err(|e| RotateError::Refused(format!("serialising the connection: {e}")))
}

impl Rotation {
    /// Takes one step; the secret named by the event must be this function's connection secret
    /// and have rotation turned on, and the token must be one of its versions.
    pub async fn step(&self, event: &RotationEvent) -> Result<StepReport, RotateError> {
        let versions = self.sm.versions(&event.secret_id).await?;
        if versions.name != self.connection_secret {
            return Err(RotateError::Refused(format!(
                "refused: this function rotates {} only, not {}",
                self.connection_secret, versions.name
            )));
        }
        if !versions.rotation_enabled {
            return Err(RotateError::Refused(format!(
                "rotation is not turned on for {}",
                versions.name
            )));
        }
        let token = event.client_request_token.as_str();
        let stages = versions.stages.get(token);
        let has = |stage: &str| stages.is_some_and(|st| st.iter().any(|s| s == stage));
        let current = has(CURRENT);
        match stages {
            // Secrets Manager makes the version (staged AWSPENDING, no value) before it asks
            // for createSecret; one not made yet is made by the step's own write.
            None if event.step == Step::Create => {}
            None => {
                return Err(RotateError::Refused(format!(
                    "version {token} of {} has no stage for rotation",
                    versions.name
                )));
            }
            Some(_) if !current && !has(PENDING) => {
                return Err(RotateError::Refused(format!(
                    "version {token} of {} is not set as {PENDING} for rotation",
                    versions.name
                )));
            }
            Some(_) => {}
        }
        let mut report = StepReport {
            step: format!("{:?}", event.step),
            done: Vec::new(),
        };
        match event.step {
            Step::Create if current => report.done.push("already current".into()),
            Step::Create => {
                self.create(&event.secret_id, token, &versions, &mut report)
                    .await?
            }
            Step::Set => report
                .done
                .push("nothing to set: Vault holds the new id".into()),
            Step::Test => self.test(&event.secret_id, token, &mut report).await?,
            Step::Finish => {
                self.finish(&event.secret_id, token, &versions, &mut report)
                    .await?
            }
        }
        tracing::info!(step = ?event.step, done = ?report.done, "rotation step");
        Ok(report)
    }

    /// The rotator's credential, and a Vault client with its token at the rotator's Vault.
    async fn rotator(&self) -> Result<Rotator, RotateError> {
        let raw = self.sm.read_string(&self.rotator_secret).await?;
        let secret: RotatorSecret = serde_json::from_str(raw.expose()).map_err(|e| {
            RotateError::Refused(format!(
                "{} is not the expected JSON: {}; run deployer vault-init again",
                self.rotator_secret,
                crate::vault::json_problem(&e)
            ))
        })?;
        let vault = VaultClient::new(
            &secret.vault_address,
            VaultLogin::Token(secret.vault_token.clone()),
            secret.vault_ca_cert.as_deref(),
            1,
        )?
        .in_namespace(secret.vault_namespace.as_deref());
        let role_path = format!(
            "auth/{}/role/{}",
            encode_path(&secret.vault_approle_mount),
            encode_path(&secret.vault_approle_role)
        );
        Ok(Rotator {
            secret,
            vault,
            role_path,
        })
    }

    /// Takes AWSPENDING off `version` (unless it is current): a rotation given up.
    async fn abandon(&self, secret_id: &str, version: &str, report: &mut StepReport) {
        match self.sm.unstage(secret_id, PENDING, version).await {
            Ok(()) => report
                .done
                .push(format!("abandoned the rotation of version {version}")),
            Err(e) => tracing::warn!("cannot take {PENDING} off version {version}: {e}"),
        }
    }

    async fn create(
        &self,
        secret_id: &str,
        token: &str,
        versions: &SecretVersions,
        report: &mut StepReport,
    ) -> Result<(), RotateError> {
        match self
            .sm
            .read_version(secret_id, Some(token), Some(PENDING))
            .await
        {
            Ok(_) => {
                report
                    .done
                    .push("the pending version is already written".into());
                return Ok(());
            }
            Err(e) if e.kind == AwsErrorKind::NotFound => {}
            Err(e) => return Err(e.into()),
        }
        let current = self.sm.read_version(secret_id, None, Some(CURRENT)).await?;
        let mut conn = parse_connection(&current, "the current connection")?;
        let r = self.rotator().await?;
        r.check(&conn, "the current connection")?;
        // An earlier rotation left pending and never finished: its id goes.
        if let Some(stale) = versions
            .staged(PENDING)
            .filter(|v| *v != token && versions.staged(CURRENT) != Some(v))
        {
            if let Ok(raw) = self.sm.read_version(secret_id, Some(stale), None).await
                && let Ok(old) = parse_connection(&raw, "the stale pending connection")
                && let Some(id) = same_role_old_id(&old, &conn)
            {
                r.destroy(id, "destroy the id of an unfinished rotation")
                    .await?;
                report
                    .done
                    .push("destroyed the id of an unfinished rotation".into());
            }
            self.abandon(secret_id, stale, report).await;
        }
        // The rotator's token lives a period from each rotation.
        r.vault.renew_periodic_token().await?;
        let metadata = serde_json::to_string(&r.secret.secret_id_metadata)
            .map_err(|e| RotateError::Refused(format!("secret id metadata: {e}")))?;
        let minted: MintedId = r
            .vault
            .write(
                &format!("{}/secret-id", r.role_path),
                &json!({ "metadata": metadata }),
                "mint a secret id",
            )
            .await?
            .ok_or_else(|| RotateError::Refused("Vault minted no secret id".into()))?;
        conn.vault_secret_id = Some(minted.secret_id.clone());
        let value = match render(&conn) {
            Ok(value) => value,
            Err(e) => {
                r.destroy_accessor(&minted.secret_id_accessor).await;
                return Err(e);
            }
        };
        if let Err(e) = self.sm.put_staged(secret_id, &value, token, PENDING).await {
            // A write whose answer was lost may have landed: the id stays only if it did.
            let landed = self
                .sm
                .read_version(secret_id, Some(token), Some(PENDING))
                .await
                .ok()
                .and_then(|raw| parse_connection(&raw, "the pending connection").ok())
                .and_then(|p| p.vault_secret_id)
                .is_some_and(|id| id.expose() == minted.secret_id.expose());
            if !landed {
                // Never leave a live id nobody holds.
                r.destroy_accessor(&minted.secret_id_accessor).await;
                return Err(e.into());
            }
        }
        report.done.push(format!(
            "minted secret id {} into {PENDING}",
            minted.secret_id_accessor
        ));
        Ok(())
    }

    /// Logs in with the pending version, and checks that the rotator's token still works (so
    /// Secrets Manager's test of a configuration catches one that expired). A pending id that
    /// Vault no longer has is given up, so the next rotation starts afresh.
    async fn test(
        &self,
        secret_id: &str,
        token: &str,
        report: &mut StepReport,
    ) -> Result<(), RotateError> {
        let pending = self.sm.read_version(secret_id, Some(token), None).await?;
        let conn = parse_connection(&pending, "the pending connection")?;
        let r = self.rotator().await?;
        r.check(&conn, "the pending connection")?;
        r.vault.renew_periodic_token().await.map_err(|e| {
            RotateError::Refused(format!(
                "the rotator's token no longer works ({e}): run deployer vault-init --token … to write a new one"
            ))
        })?;
        if let Err(e) = r.login_client(&conn)?.log_in().await {
            let id = conn.vault_secret_id.as_ref();
            if let Some(id) = id
                && !r.exists(id).await?
                && !self.is_current(secret_id, token).await?
            {
                self.abandon(secret_id, token, report).await;
                return Err(RotateError::Refused(format!(
                    "the pending secret id is gone from Vault ({e}); this rotation is given up and the next starts afresh"
                )));
            }
            return Err(e.into());
        }
        report
            .done
            .push("logged in with the pending secret id".into());
        Ok(())
    }

    async fn is_current(&self, secret_id: &str, token: &str) -> Result<bool, RotateError> {
        let v = self.sm.versions(secret_id).await?;
        Ok(v.staged(CURRENT) == Some(token))
    }

    async fn finish(
        &self,
        secret_id: &str,
        token: &str,
        versions: &SecretVersions,
        report: &mut StepReport,
    ) -> Result<(), RotateError> {
        let was = versions.staged(CURRENT).map(str::to_owned);
        let r = self.rotator().await?;
        if was.as_deref() != Some(token) {
            // A credential written after this rotation began (`vault-init`) is newer: it stays,
            // and this rotation's id goes.
            let (now_raw, now_created) = self.sm.read_dated(secret_id, None, Some(CURRENT)).await?;
            let (raw, pending_created) = self.sm.read_dated(secret_id, Some(token), None).await?;
            let pending = parse_connection(&raw, "the pending connection")?;
            if let (Some(now), Some(then)) = (now_created, pending_created)
                && now > then
            {
                // Never the id the newer credential holds.
                let current = parse_connection(&now_raw, "the current connection")?;
                if let Some(id) = same_role_old_id(&pending, &current) {
                    r.destroy(id, "destroy the id of a rotation overtaken")
                        .await?;
                }
                self.abandon(secret_id, token, report).await;
                return Err(RotateError::Refused(
                    "a newer credential was written while this rotation was under way: it stays, and this rotation is given up".into(),
                ));
            }
            // Never make current an id that no longer logs in.
            self.test(secret_id, token, report).await?;
            self.sm
                .make_current(secret_id, token, was.as_deref())
                .await?;
            report.done.push(format!("{CURRENT} moved to {token}"));
        }
        let now = parse_connection(
            &self.sm.read_version(secret_id, Some(token), None).await?,
            "the new connection",
        )?;
        r.check(&now, "the new connection")?;
        // The tag names the new id first, then the id replaced goes: the version AWS staged
        // AWSPREVIOUS when AWSCURRENT moved (again on a retried finish, so an interrupted one
        // still destroys it); last, no version stays pending.
        if let Some(new) = &now.vault_secret_id {
            let looked: Option<IdLookup> = r
                .vault
                .write(
                    &format!("{}/secret-id/lookup", r.role_path),
                    &json!({ "secret_id": new.expose() }),
                    "look up the new secret id",
                )
                .await?;
            if let Some(accessor) = looked
                .map(|l| l.secret_id_accessor)
                .filter(|a| !a.is_empty())
            {
                let tag = BTreeMap::from([(ACCESSOR_TAG.to_owned(), accessor.clone())]);
                match self.sm.tag(secret_id, &tag).await {
                    Ok(()) => report
                        .done
                        .push(format!("tagged {ACCESSOR_TAG}={accessor}")),
                    // The rotation is done; the tag only names it.
                    Err(e) => tracing::warn!("cannot tag the new accessor: {e}"),
                }
            }
        }
        let previous = match self.sm.read_version(secret_id, None, Some(PREVIOUS)).await {
            Ok(raw) => parse_connection(&raw, "the previous connection").ok(),
            Err(e) if e.kind == AwsErrorKind::NotFound => None,
            Err(e) => return Err(e.into()),
        };
        if let Some(old) = previous.as_ref().and_then(|p| same_role_old_id(p, &now)) {
            r.destroy(old, "destroy the replaced secret id").await?;
            report.done.push("destroyed the replaced secret id".into());
        }
        let pending = versions.stages.get(token);
        if pending.is_some_and(|st| st.iter().any(|s| s == PENDING)) {
            self.sm.unstage(secret_id, PENDING, token).await?;
        }
        Ok(())
    }
}

/// The rotator's credential at work: its secret, a client with its token, its role's path.
struct Rotator {
    secret: RotatorSecret,
    vault: VaultClient,
    role_path: String,
}

impl Rotator {
    /// A connection version must name the Vault, namespace, CA and AppRole role the rotator was
    /// made for: a version naming another (written by someone who could) never receives the
    /// rotator's token or a new id, and is never made current.
    fn check(&self, conn: &ConnectionSecret, what: &str) -> Result<(), RotateError> {
        approle_of(conn)?;
        let s = &self.secret;
        let given = |v: &Option<String>| v.clone().filter(|x| !x.is_empty());
        let mount = given(&conn.vault_approle_mount).unwrap_or_else(|| "approle".into());
        let same = conn.vault_address.trim_end_matches('/')
            == s.vault_address.trim_end_matches('/')
            && given(&conn.vault_ca_cert).map(|c| c.trim().to_owned())
                == given(&s.vault_ca_cert).map(|c| c.trim().to_owned())
            && contract::namespace(conn.vault_namespace.as_deref())
                == contract::namespace(s.vault_namespace.as_deref())
            && conn.vault_role_id.as_deref() == Some(s.vault_role_id.as_str())
            && mount == s.vault_approle_mount;
        if same {
            Ok(())
        } else {
            Err(RotateError::Refused(format!(
                "{what} names another Vault, CA, namespace or AppRole role than the rotator was made for: refused; run deployer vault-init --token … (it rewrites whichever of the two is out of date)"
            )))
        }
    }

    /// A client that logs in with `conn`'s AppRole credentials at the rotator's Vault.
    fn login_client(&self, conn: &ConnectionSecret) -> Result<VaultClient, RotateError> {
        let id = conn
            .vault_secret_id
            .clone()
            .ok_or_else(|| RotateError::Refused("no secret id".into()))?;
        Ok(VaultClient::new(
            &self.secret.vault_address,
            VaultLogin::AppRole {
                mount: self.secret.vault_approle_mount.clone(),
                role_id: self.secret.vault_role_id.clone(),
                secret_id: id,
            },
            self.secret.vault_ca_cert.as_deref(),
            1,
        )?
        .in_namespace(self.secret.vault_namespace.as_deref()))
    }

    async fn destroy(&self, id: &SecretString, op: &str) -> Result<(), RotateError> {
        self.vault
            .write::<serde_json::Value>(
                &format!("{}/secret-id/destroy", self.role_path),
                &json!({ "secret_id": id.expose() }),
                op,
            )
            .await?;
        Ok(())
    }

    /// Whether Vault still has the secret id.
    async fn exists(&self, id: &SecretString) -> Result<bool, RotateError> {
        let looked = self
            .vault
            .write::<IdLookup>(
                &format!("{}/secret-id/lookup", self.role_path),
                &json!({ "secret_id": id.expose() }),
                "look up the pending secret id",
            )
            .await;
        match looked {
            Ok(found) => Ok(found.is_some_and(|l| !l.secret_id_accessor.is_empty())),
            Err(VaultError::Status { status: 404, .. }) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    async fn destroy_accessor(&self, accessor: &str) {
        let done = self
            .vault
            .write::<serde_json::Value>(
                &format!("{}/secret-id-accessor/destroy", self.role_path),
                &json!({ "secret_id_accessor": accessor }),
                "destroy the new secret id",
            )
            .await;
        if let Err(e) = done {
            tracing::error!(
                accessor,
                "the new secret id could not be destroyed; destroy it by its accessor: {e}"
            );
        }
    }
}

/// The previous version's secret id, when it is another id of the same role as `now`'s.
fn same_role_old_id<'a>(
    previous: &'a ConnectionSecret,
    now: &ConnectionSecret,
) -> Option<&'a SecretString> {
    let old = previous.vault_secret_id.as_ref()?;
    let same_role = previous.vault_role_id.is_some() && previous.vault_role_id == now.vault_role_id;
    let differs = now
        .vault_secret_id
        .as_ref()
        .is_none_or(|n| n.expose() != old.expose());
    (same_role && differs).then_some(old)
}

/// What the function is given: the connection secret it rotates, its own credential.
pub fn from_env(aws: &aws_types::SdkConfig) -> Result<Rotation, String> {
    let var = |name: &str| {
        std::env::var(name)
            .ok()
            .filter(|v| !v.is_empty())
            .ok_or_else(|| format!("invalid Lambda environment: {name} is not set"))
    };
    let notices = var(contract::env::SNS_TOPIC_ARN)
        .ok()
        .map(|topic| (crate::aws::Notifier::new(aws, Default::default()), topic));
    Ok(Rotation {
        sm: SecretsManager::new(aws, 10, Default::default()),
        connection_secret: var(contract::env::CONNECTION_SECRET)?,
        rotator_secret: var(contract::env::ROTATOR_SECRET)?,
        notices,
    })
}

/// Handles one invocation of the rotation function.
pub async fn handle(
    event: lambda_runtime::LambdaEvent<serde_json::Value>,
    rotation: &Result<Rotation, String>,
) -> Result<serde_json::Value, lambda_runtime::Error> {
    let rotation = rotation
        .as_ref()
        .map_err(|e| lambda_runtime::Error::from(e.clone()))?;
    let event = RotationEvent::parse(&event.payload).map_err(lambda_runtime::Error::from)?;
    match rotation.step(&event).await {
        Ok(report) => Ok(serde_json::to_value(report)?),
        Err(e) => {
            tracing::error!(step = ?event.step, "rotation step failed: {e}");
            // Names and error texts only (Vault's and AWS's, which carry no value).
            let notice = format!(
                "The {:?} step of the rotation of {} failed: {e}. The secret id in use stays valid until its lifetime ends; rotation is tried again on schedule, and `deployer vault-init --token … --rotate-secret-id` replaces it by hand.",
                event.step, rotation.connection_secret
            );
            if let Some((sns, topic)) = &rotation.notices
                && let Err(p) = sns.publish(topic, NOTICE_SUBJECT, &notice).await
            {
                tracing::error!("cannot publish the rotation failure notice: {p}");
            }
            Err(lambda_runtime::Error::from(e.to_string()))
        }
    }
}

/// Whether this process is the rotation function.
pub fn is_rotation_function() -> bool {
    std::env::var_os(contract::env::ROTATOR_SECRET).is_some_and(|v| !v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn(role: Option<&str>, id: Option<&str>) -> ConnectionSecret {
        ConnectionSecret {
            vault_address: "https://v:8200".into(),
            vault_role_id: role.map(str::to_owned),
            vault_secret_id: id.map(SecretString::from),
            ..Default::default()
        }
    }

    #[test]
    fn the_events_of_secrets_manager_parse_and_others_are_refused() {
        let e = RotationEvent::parse(&json!({
            "Step": "finishSecret", "SecretId": "arn:x", "ClientRequestToken": "t"
        }))
        .unwrap();
        assert_eq!(e.step, Step::Finish);
        assert_eq!(e.client_request_token, "t");
        for bad in [
            json!({}),
            json!({"paths": ["a"]}),
            json!({"Step": "dropSecret", "SecretId": "a", "ClientRequestToken": "t"}),
        ] {
            assert!(RotationEvent::parse(&bad).unwrap_err().contains("refused"));
        }
    }

    #[test]
    fn only_another_id_of_the_same_role_is_destroyed() {
        let now = conn(Some("r"), Some("new"));
        assert!(same_role_old_id(&conn(Some("r"), Some("old")), &now).is_some());
        assert!(same_role_old_id(&conn(Some("r"), Some("new")), &now).is_none());
        assert!(same_role_old_id(&conn(Some("other"), Some("old")), &now).is_none());
        assert!(same_role_old_id(&conn(None, Some("old")), &now).is_none());
        assert!(same_role_old_id(&conn(Some("r"), None), &now).is_none());
    }

    #[test]
    fn only_an_approle_connection_is_rotated() {
        assert_eq!(
            approle_of(&conn(Some("r"), Some("s"))).unwrap(),
            ("approle".to_owned(), "r".to_owned())
        );
        let token = ConnectionSecret {
            vault_token: Some("t".into()),
            ..conn(None, None)
        };
        assert!(approle_of(&token).is_err());
    }
}
