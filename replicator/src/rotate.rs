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
use crate::config::{ConnectionDefaults, VaultConnection};
use crate::vault::{VaultClient, VaultError, encode_path};
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
}

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
            Step::Create => self.create(&event.secret_id, token, &mut report).await?,
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

    /// The rotator's credential and a Vault client logged in with it, for `conn`'s Vault.
    async fn rotator(
        &self,
        conn: &ConnectionSecret,
    ) -> Result<(RotatorSecret, VaultClient), RotateError> {
        let raw = self.sm.read_string(&self.rotator_secret).await?;
        let rotator: RotatorSecret = serde_json::from_str(raw.expose()).map_err(|e| {
            RotateError::Refused(format!(
                "{} is not the expected JSON ({{\"vaultToken\", \"vaultApproleRole\"}}): {}; run deployer vault-init again",
                self.rotator_secret,
                crate::vault::json_problem(&e)
            ))
        })?;
        let mut as_rotator = conn.clone();
        as_rotator.vault_role_id = None;
        as_rotator.vault_secret_id = None;
        as_rotator.vault_aws_role = None;
        as_rotator.vault_token = Some(rotator.vault_token.clone());
        let client = self.client(&as_rotator)?;
        Ok((rotator, client))
    }

    fn client(&self, conn: &ConnectionSecret) -> Result<VaultClient, RotateError> {
        let conn = VaultConnection::from_secret(conn, &ConnectionDefaults::default())
            .map_err(|m| RotateError::Refused(format!("the connection secret: {m}")))?;
        Ok(VaultClient::new(
            &conn.address,
            conn.login.clone(),
            match &conn.ca {
                Some(crate::config::CaCert::Pem(pem)) => Some(pem.as_str()),
                _ => None,
            },
            1,
        )?
        .in_namespace(conn.namespace.as_deref()))
    }

    async fn create(
        &self,
        secret_id: &str,
        token: &str,
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
        let (mount, _) = approle_of(&conn)?;
        let (rotator, vault) = self.rotator(&conn).await?;
        // The rotator's token lives a period from each rotation.
        if let Err(e) = vault.renew_periodic_token().await {
            tracing::warn!("cannot renew the rotator's token: {e}");
        }
        let role_path = format!(
            "auth/{}/role/{}",
            encode_path(&mount),
            encode_path(&rotator.vault_approle_role)
        );
        let metadata = serde_json::to_string(&rotator.secret_id_metadata)
            .map_err(|e| RotateError::Refused(format!("secret id metadata: {e}")))?;
        let minted: MintedId = vault
            .write(
                &format!("{role_path}/secret-id"),
                &json!({ "metadata": metadata }),
                "mint a secret id",
            )
            .await?
            .ok_or_else(|| RotateError::Refused("Vault minted no secret id".into()))?;
        conn.vault_secret_id = Some(minted.secret_id);
        let written = match render(&conn) {
            Ok(value) => self.sm.put_staged(secret_id, &value, token, PENDING).await,
            Err(e) => {
                destroy_accessor(&vault, &role_path, &minted.secret_id_accessor).await;
                return Err(e);
            }
        };
        if let Err(e) = written {
            // Never leave a live id nobody holds.
            destroy_accessor(&vault, &role_path, &minted.secret_id_accessor).await;
            return Err(e.into());
        }
        report.done.push(format!(
            "minted secret id {} into {PENDING}",
            minted.secret_id_accessor
        ));
        Ok(())
    }

    async fn test(
        &self,
        secret_id: &str,
        token: &str,
        report: &mut StepReport,
    ) -> Result<(), RotateError> {
        let pending = self.sm.read_version(secret_id, Some(token), None).await?;
        let conn = parse_connection(&pending, "the pending connection")?;
        approle_of(&conn)?;
        self.client(&conn)?.log_in().await?;
        report
            .done
            .push("logged in with the pending secret id".into());
        Ok(())
    }

    async fn finish(
        &self,
        secret_id: &str,
        token: &str,
        versions: &SecretVersions,
        report: &mut StepReport,
    ) -> Result<(), RotateError> {
        let was = versions.staged(CURRENT).map(str::to_owned);
        if was.as_deref() != Some(token) {
            // Never make current an id that no longer logs in (one `vault-init` replaced while
            // this rotation was under way): the working one stays.
            self.test(secret_id, token, report).await?;
            self.sm
                .make_current(secret_id, token, was.as_deref())
                .await?;
            report.done.push(format!("{CURRENT} moved to {token}"));
        }
        // The rotation is over: no version stays pending.
        let pending = versions.stages.get(token);
        if pending.is_some_and(|st| st.iter().any(|s| s == PENDING)) {
            self.sm.unstage(secret_id, PENDING, token).await?;
        }
        let now = parse_connection(
            &self.sm.read_version(secret_id, Some(token), None).await?,
            "the new connection",
        )?;
        let (mount, _) = approle_of(&now)?;
        let (rotator, vault) = self.rotator(&now).await?;
        let role_path = format!(
            "auth/{}/role/{}",
            encode_path(&mount),
            encode_path(&rotator.vault_approle_role)
        );
        // The id replaced: the version AWS staged AWSPREVIOUS when AWSCURRENT moved (again on a
        // retried finish, so an interrupted one still destroys it).
        let previous = match self.sm.read_version(secret_id, None, Some(PREVIOUS)).await {
            Ok(raw) => parse_connection(&raw, "the previous connection").ok(),
            Err(e) if e.kind == AwsErrorKind::NotFound => None,
            Err(e) => return Err(e.into()),
        };
        if let Some(old) = previous.as_ref().and_then(|p| same_role_old_id(p, &now)) {
            vault
                .write::<serde_json::Value>(
                    &format!("{role_path}/secret-id/destroy"),
                    &json!({ "secret_id": old.expose() }),
                    "destroy the replaced secret id",
                )
                .await?;
            report.done.push("destroyed the replaced secret id".into());
        }
        if let Some(new) = &now.vault_secret_id {
            let looked: Option<IdLookup> = vault
                .write(
                    &format!("{role_path}/secret-id/lookup"),
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
        Ok(())
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

async fn destroy_accessor(vault: &VaultClient, role_path: &str, accessor: &str) {
    let done = vault
        .write::<serde_json::Value>(
            &format!("{role_path}/secret-id-accessor/destroy"),
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

/// What the function is given: the connection secret it rotates, its own credential.
pub fn from_env(aws: &aws_types::SdkConfig) -> Result<Rotation, String> {
    let var = |name: &str| {
        std::env::var(name)
            .ok()
            .filter(|v| !v.is_empty())
            .ok_or_else(|| format!("invalid Lambda environment: {name} is not set"))
    };
    Ok(Rotation {
        sm: SecretsManager::new(aws, 10, Default::default()),
        connection_secret: var(contract::env::CONNECTION_SECRET)?,
        rotator_secret: var(contract::env::ROTATOR_SECRET)?,
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
