//! `deployer vault-init`: takes a fresh Vault from uninitialised and sealed to serving the
//! replicator — init, unseal, KV v2 at the prefix, the read-only policy, AppRole (or a scoped
//! token) written straight into the connection secret, audit log, optional sample secrets, root
//! token revoked. Safe to re-run: what exists is detected and kept. Network I/O (Vault, AWS).

use std::io::Write;

use aws_sdk_secretsmanager::types::Tag;
use serde::Serialize;
use serde_json::json;

use crate::clients::Clients;
use crate::resources::{Ctx, found};
use crate::spec::Spec;
use crate::vault_admin::{InitKeys, VaultAdmin, VaultAdminError};
use contract::ConnectionSecret;
use contract::secret::SecretString;

/// Tag on the connection secret naming the delivered credential (an accessor, not a secret).
pub const ACCESSOR_TAG: &str = "vault-secrets-replicator:credential";
pub const DECOY_MOUNT: &str = "super-secret-engine";

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum KeysTo {
    /// Print the unseal keys and root token once, on stdout.
    Print,
    /// Store them in Secrets Manager, readable only by the principal running vault-init.
    Secret,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// AppRole: role id + secret id; short tokens, renewed by logging in again.
    Approle,
    /// One periodic token limited to the replicator policy.
    Token,
}

#[derive(Debug)]
pub struct Options {
    pub address: String,
    pub ca_pem: Option<String>,
    pub key_shares: u8,
    pub key_threshold: u8,
    pub keys_to: KeysTo,
    pub unseal_keys: Vec<SecretString>,
    pub token: Option<SecretString>,
    pub auth: AuthMode,
    pub token_ttl: String,
    pub sample_secrets: bool,
    pub keep_root_token: bool,
    pub audit_file: String,
    /// AppRole secret id lifetime (`0`: no expiry).
    pub secret_id_ttl: String,
    /// Replace the delivered secret id even if it still works, and destroy the old one.
    pub rotate_secret_id: bool,
    /// Print the keys as one JSON object instead of text.
    pub json: bool,
}

#[derive(Debug, Default, Serialize)]
pub struct Report {
    /// The Vault this run configured (said first, so a wrong target is plain to see).
    pub vault_address: String,
    pub initialized_now: bool,
    pub unsealed_now: bool,
    /// What was done; an empty list on a re-run of a ready Vault.
    pub changed: Vec<String>,
    pub kept: Vec<String>,
    pub warnings: Vec<String>,
    pub keys_stored_in: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error(transparent)]
    Vault(#[from] VaultAdminError),
    #[error(transparent)]
    Aws(#[from] contract::sdk::AwsError),
    #[error("{0}")]
    Needs(String),
    #[error("writing the output: {0}")]
    Io(#[from] std::io::Error),
}

/// The replicator's AppRole role: its policy alone, short tokens, a secret id of `secret_id_ttl`
/// usable any number of times; with the stack's own Vault, login and token use only from the
/// replicator's subnet (`bound_cidr`), so a copied secret id is useless elsewhere.
pub fn approle_settings(role: &str, opts: &Options, bound_cidr: Option<&str>) -> serde_json::Value {
    let mut settings = json!({
        "token_policies": [role],
        "token_ttl": opts.token_ttl,
        "token_max_ttl": opts.token_ttl,
        "token_no_default_policy": true,
        "secret_id_num_uses": 0,
        "secret_id_ttl": opts.secret_id_ttl,
    });
    if let Some(cidr) = bound_cidr {
        settings["secret_id_bound_cidrs"] = json!([cidr]);
        settings["token_bound_cidrs"] = json!([cidr]);
    }
    settings
}

/// The replicator's Vault policy: read values, read and list metadata, bulk-list (OpenBao).
pub fn replicator_policy(mount: &str) -> String {
    format!(
        "path \"{mount}/data/*\" {{\n  capabilities = [\"read\"]\n}}\npath \"{mount}/metadata/*\" {{\n  capabilities = [\"read\", \"list\"]\n}}\npath \"{mount}/detailed-metadata/*\" {{\n  capabilities = [\"list\"]\n}}\n{RENEW_SELF}"
    )
}

/// A periodic token (`--auth token`) lives only as long as it is renewed: the replicator looks
/// its token up and renews it on every run (the token has no default policy to allow that).
const RENEW_SELF: &str = "path \"auth/token/lookup-self\" {\n  capabilities = [\"read\"]\n}\npath \"auth/token/renew-self\" {\n  capabilities = [\"update\"]\n}\n";

/// The role name of an assumed-role caller ARN (`arn:…:sts::123:assumed-role/Role/session`),
/// `None` for any other principal.
fn assumed_role_name(caller_arn: &str) -> Option<&str> {
    caller_arn.split(":assumed-role/").nth(1)?.split('/').next()
}

/// The caller as `aws:PrincipalArn` sees it: a user's ARN, or an assumed role's real role ARN,
/// path included (an SSO role lives under `/aws-reserved/sso.amazonaws.com/…`, which the
/// session ARN leaves out), read from IAM.
async fn operator_principal(c: &Clients) -> Result<String, InitError> {
    let me = c
        .sts
        .get_caller_identity()
        .send()
        .await
        .ctx("GetCallerIdentity", "")?;
    let arn = me
        .arn()
        .ok_or_else(|| InitError::Needs("GetCallerIdentity answered no ARN".into()))?;
    let Some(role) = assumed_role_name(arn) else {
        return Ok(arn.to_owned());
    };
    let out = c
        .iam
        .get_role()
        .role_name(role)
        .send()
        .await
        .ctx("GetRole", role)?;
    out.role()
        .map(|r| r.arn().to_owned())
        .ok_or_else(|| InitError::Needs(format!("GetRole {role} answered no role")))
}

/// Before Vault hands out its keys: the secret that will hold them, empty, with the policy that
/// lets only the caller read it already in place. Reused when an earlier attempt made it.
async fn prepare_keys_secret(
    c: &Clients,
    spec: &Spec,
    key_arn: Option<&str>,
) -> Result<String, InitError> {
    let principal = operator_principal(c).await?;
    let name = spec.init_keys_secret_name();
    let exists = found(
        c.sm.describe_secret()
            .secret_id(&name)
            .send()
            .await
            .ctx("DescribeSecret", &name),
    )?
    .is_some();
    if !exists {
        crate::resources::secret::create(
            c,
            spec,
            &name,
            "Vault unseal keys and root token, readable only by the principal that initialised Vault",
            key_arn,
            None,
        )
        .await
        .map_err(|e| InitError::Needs(e.to_string()))?;
    }
    let policy = spec
        .init_keys_policy(&principal)
        .map_err(|e| InitError::Needs(e.to_string()))?
        .to_string();
    crate::resources::secret::put_policy(c, &name, &policy)
        .await
        .map_err(|e| InitError::Needs(e.to_string()))?;
    Ok(name)
}

/// The keys as text, once, under `heading`: the only place they are ever shown.
fn print_keys(out: &mut dyn Write, heading: &str, keys: &InitKeys) -> std::io::Result<()> {
    writeln!(out, "{heading}")?;
    for (i, k) in keys.keys_base64.iter().enumerate() {
        writeln!(out, "  unseal key {}: {}", i + 1, k.expose())?;
    }
    writeln!(out, "  root token: {}", keys.root_token.expose())
}

/// Writes the keys into the prepared secret.
async fn store_keys(c: &Clients, name: &str, keys: &InitKeys) -> Result<(), InitError> {
    let value = serde_json::to_string(keys).map_err(|e| InitError::Needs(e.to_string()))?;
    c.sm.put_secret_value()
        .secret_id(name)
        .secret_string(value)
        .send()
        .await
        .ctx("PutSecretValue", name)?;
    Ok(())
}

async fn stored_keys(c: &Clients, spec: &Spec) -> Result<Option<InitKeys>, InitError> {
    let name = spec.init_keys_secret_name();
    let v = found(
        c.sm.get_secret_value()
            .secret_id(&name)
            .send()
            .await
            .ctx("GetSecretValue", &name),
    )?;
    Ok(v.and_then(|v| v.secret_string().and_then(|s| serde_json::from_str(s).ok())))
}

/// Runs vault-init. Unseal keys and the root token are written to `out` only with
/// `KeysTo::Print`, once, right after `init`. The root token of a fresh init is revoked however
/// the run ends (unless `--keep-root-token`): a failure halfway never leaves it standing.
pub async fn run(
    c: &Clients,
    spec: &Spec,
    opts: Options,
    out: &mut dyn Write,
) -> Result<Report, InitError> {
    let (address, ca_pem, keep) = (
        opts.address.clone(),
        opts.ca_pem.clone(),
        opts.keep_root_token,
    );
    let mut fresh_root = None;
    let result = run_steps(c, spec, opts, out, &mut fresh_root).await;
    let Some(root) = fresh_root.filter(|_| !keep) else {
        return result;
    };
    let mut admin = VaultAdmin::new(&address, ca_pem.as_deref())?;
    admin.set_token(root);
    match (result, admin.revoke_self().await) {
        (Ok(mut report), Ok(())) => {
            report.changed.push("revoked the root token".into());
            Ok(report)
        }
        (Ok(_), Err(e)) => Err(e.into()),
        (Err(e), Ok(())) => {
            tracing::warn!(
                "vault-init failed after initialising Vault; its new root token was revoked"
            );
            Err(e)
        }
        (Err(e), Err(revoke)) => {
            tracing::error!(
                "vault-init failed after initialising Vault, and its new root token could not be revoked ({revoke}): revoke it by hand"
            );
            Err(e)
        }
    }
}

/// Every step of [`run`]; `fresh_root` gets the root token of a fresh init the moment Vault
/// hands it out, before anything else can fail.
async fn run_steps(
    c: &Clients,
    spec: &Spec,
    opts: Options,
    out: &mut dyn Write,
    fresh_root: &mut Option<SecretString>,
) -> Result<Report, InitError> {
    let mut report = Report {
        vault_address: opts.address.clone(),
        ..Report::default()
    };
    let mut admin = VaultAdmin::new(&opts.address, opts.ca_pem.as_deref())?;
    let mount = spec.kv_mount().to_owned();
    // The Vault policy and AppRole role of this stack: two stacks on one Vault keep theirs.
    let role = spec.vault_role_name();
    let key_arn = crate::resources::key::observe(c, spec)
        .await
        .ok()
        .flatten()
        .map(|k| k.arn);

    // 1. Initialise.
    let mut fresh: Option<InitKeys> = None;
    if !admin.initialized().await? {
        // The secret for the keys, with its policy, exists before the keys do.
        let keys_secret = match opts.keys_to {
            KeysTo::Secret => Some(prepare_keys_secret(c, spec, key_arn.as_deref()).await?),
            KeysTo::Print => None,
        };
        let keys = admin.init(opts.key_shares, opts.key_threshold).await?;
        *fresh_root = Some(keys.root_token.clone());
        report.initialized_now = true;
        report.changed.push(format!(
            "initialised Vault ({} key shares, threshold {})",
            opts.key_shares, opts.key_threshold
        ));
        match opts.keys_to {
            // Written at once, before anything else can fail: they exist nowhere else.
            KeysTo::Print if opts.json => {
                let keys_json = json!({
                    "unseal_keys": keys.keys_base64.iter().map(|k| k.expose()).collect::<Vec<_>>(),
                    "root_token": keys.root_token.expose(),
                });
                writeln!(out, "{keys_json}")?;
            }
            KeysTo::Print => {
                print_keys(
                    out,
                    "Unseal keys and root token (shown once; store them safely, they are not saved anywhere):",
                    &keys,
                )?;
                if opts.keep_root_token {
                    writeln!(out, "  (the root token stays valid: --keep-root-token)")?;
                } else {
                    writeln!(out, "  (the root token is revoked at the end of this run)")?;
                }
            }
            KeysTo::Secret => {
                let name = keys_secret.unwrap_or_else(|| spec.init_keys_secret_name());
                if let Err(e) = store_keys(c, &name, &keys).await {
                    // They exist nowhere else: shown once rather than lost.
                    print_keys(
                        out,
                        &format!(
                            "Storing the unseal keys in {name} failed; they are shown once here instead (store them safely):"
                        ),
                        &keys,
                    )?;
                    return Err(e);
                }
                report.changed.push(format!(
                    "stored the unseal keys and root token in secret {name}"
                ));
                report.keys_stored_in = Some(name);
            }
        }
        fresh = Some(keys);
    } else {
        report.kept.push("Vault was already initialised".into());
    }

    // 2. Unseal.
    let (sealed, threshold) = admin.seal_status().await?;
    if sealed {
        let mut keys: Vec<SecretString> = fresh
            .as_ref()
            .map(|k| k.keys_base64.clone())
            .unwrap_or_default();
        keys.extend(opts.unseal_keys.iter().cloned());
        if keys.is_empty()
            && let Some(stored) = stored_keys(c, spec).await?
        {
            keys = stored.keys_base64;
        }
        let mut still = true;
        for k in &keys {
            still = admin.unseal(k).await?;
            if !still {
                break;
            }
        }
        if still {
            return Err(InitError::Needs(format!(
                "Vault is sealed: pass {threshold} unseal keys with --unseal-key (or VAULT_UNSEAL_KEYS)"
            )));
        }
        report.unsealed_now = true;
        report.changed.push("unsealed Vault".into());
    }
    admin
        .wait_active(std::time::Duration::from_secs(60))
        .await?;

    // 3. An admin token: the fresh root token, or the one given.
    match (
        fresh.as_ref().map(|k| k.root_token.clone()),
        opts.token.clone(),
    ) {
        (Some(t), _) | (None, Some(t)) => admin.set_token(t),
        (None, None) => {}
    }
    let conn_name = spec.connection_secret();
    let described = found(
        c.sm.describe_secret()
            .secret_id(&conn_name)
            .send()
            .await
            .ctx("DescribeSecret", &conn_name),
    )?
    .ok_or_else(|| {
        InitError::Needs(format!(
            "the connection secret {conn_name} does not exist: run `deployer up` first"
        ))
    })?;
    let accessor = described
        .tags()
        .iter()
        .find(|t| t.key() == Some(ACCESSOR_TAG))
        .and_then(|t| t.value())
        .map(str::to_owned);
    if !admin.has_token() {
        if accessor.is_some() {
            report.kept.push(format!("the connection secret already holds credentials ({ACCESSOR_TAG} tag); pass --token to verify or replace them"));
            return Ok(report);
        }
        return Err(InitError::Needs(
            "Vault is initialised but the connection secret has no credentials: pass an admin token with --token (or VAULT_TOKEN)".into(),
        ));
    }

    // 4. Secrets engine, policy, audit.
    if admin.ensure_kv2(&mount).await? {
        report.changed.push(format!("enabled KV v2 at {mount}/"));
    }
    if admin
        .ensure_policy(&role, &replicator_policy(&mount))
        .await?
    {
        report
            .changed
            .push(format!("wrote the read-only policy {role}"));
    }
    match admin.ensure_audit(&opts.audit_file).await {
        Ok(true) => report
            .changed
            .push(format!("enabled the file audit log {}", opts.audit_file)),
        Ok(false) => {}
        // OpenBao accepts audit devices from its configuration file only.
        Err(VaultAdminError::Status {
            status: 400,
            message,
            ..
        }) => {
            report
                .warnings
                .push(format!("audit log not enabled through the API: {message}"));
        }
        Err(e) => return Err(e.into()),
    }

    // 5. The replicator's credentials, straight into the connection secret. The AppRole role is
    // kept as wanted on every run (a bound subnet or a TTL changed later applies too).
    if opts.auth == AuthMode::Approle {
        if admin.ensure_approle().await? {
            report.changed.push("enabled AppRole auth".into());
        }
        let bound = match &spec.cfg.vault {
            crate::config::VaultMode::Ec2 { .. } => Some(crate::resources::network::SUBNET_CIDR),
            crate::config::VaultMode::External { .. } => None,
        };
        if admin
            .ensure_role(&role, approle_settings(&role, &opts, bound))
            .await?
        {
            report.changed.push(format!(
                "wrote AppRole role {role} (token TTL {}, secret id TTL {}{})",
                opts.token_ttl,
                opts.secret_id_ttl,
                bound
                    .map(|c| format!(", login and tokens only from {c}"))
                    .unwrap_or_default()
            ));
        }
    }
    let still_valid = match (&accessor, opts.auth) {
        _ if opts.rotate_secret_id => false,
        (Some(a), AuthMode::Approle) => secret_id_accessor_exists(&admin, &role, a).await?,
        (Some(a), AuthMode::Token) => token_accessor_exists(&admin, a).await?,
        (None, _) => false,
    };
    if still_valid {
        report
            .kept
            .push("the connection secret's credentials are valid".into());
    } else {
        let address = match &spec.cfg.vault {
            crate::config::VaultMode::Ec2 { .. } => format!(
                "https://{}:8200",
                crate::resources::network::VAULT_PRIVATE_IP
            ),
            crate::config::VaultMode::External { address } => address.clone(),
        };
        let mut conn = ConnectionSecret {
            vault_address: address,
            vault_ca_cert: opts.ca_pem.clone(),
            ..ConnectionSecret::default()
        };
        let new_accessor = match opts.auth {
            AuthMode::Approle => {
                let role_id = admin.role_id(&role).await?;
                let (secret_id, accessor) = admin.new_secret_id_with_accessor(&role).await?;
                conn.vault_role_id = Some(role_id);
                conn.vault_secret_id = Some(secret_id);
                conn.vault_approle_mount = Some("approle".into());
                accessor
            }
            AuthMode::Token => {
                let (token, accessor) = admin.scoped_token_with_accessor(&role, "768h").await?;
                conn.vault_token = Some(token);
                accessor
            }
        };
        let value = serde_json::to_string(&conn).map_err(|e| InitError::Needs(e.to_string()))?;
        c.sm.put_secret_value()
            .secret_id(&conn_name)
            .secret_string(value)
            .send()
            .await
            .ctx("PutSecretValue", &conn_name)?;
        c.sm.tag_resource()
            .secret_id(&conn_name)
            .tags(
                Tag::builder()
                    .key(ACCESSOR_TAG)
                    .value(&new_accessor)
                    .build(),
            )
            .send()
            .await
            .ctx("TagResource", &conn_name)?;
        report.changed.push(format!(
            "wrote the replicator's {} credentials into {conn_name}",
            match opts.auth {
                AuthMode::Approle => "AppRole",
                AuthMode::Token => "token",
            }
        ));
        // Rotation: the old secret id goes only once the new one is in place.
        if opts.rotate_secret_id
            && let Some(old) = accessor.as_deref().filter(|a| *a != new_accessor)
            && admin.destroy_secret_id_accessor(&role, old).await?
        {
            report
                .changed
                .push("destroyed the previous secret id".into());
        }
    }

    // 6. Sample secrets, as the sample had them, and a decoy mount that is not replicated.
    if opts.sample_secrets {
        for (path, data) in [
            (
                "first-secret-for-replication",
                json!({"username": "first", "password": "change-me-1"}),
            ),
            (
                "second-secret-for-replication",
                json!({"username": "second", "password": "change-me-2"}),
            ),
        ] {
            if admin.kv_put_once(&mount, path, data).await? {
                report
                    .changed
                    .push(format!("wrote sample secret {mount}/{path}"));
            }
        }
        if admin.ensure_kv2(DECOY_MOUNT).await? {
            report.changed.push(format!(
                "enabled decoy mount {DECOY_MOUNT}/ (not replicated)"
            ));
        }
        if admin
            .kv_put_once(
                DECOY_MOUNT,
                "do-not-replicate",
                json!({"value": "stays in Vault"}),
            )
            .await?
        {
            report
                .changed
                .push(format!("wrote decoy secret {DECOY_MOUNT}/do-not-replicate"));
        }
    }

    // 7. No standing root token: `run` revokes a fresh one, whichever way this ends.
    Ok(report)
}

async fn secret_id_accessor_exists(
    admin: &VaultAdmin,
    role: &str,
    accessor: &str,
) -> Result<bool, InitError> {
    Ok(admin.secret_id_accessor_exists(role, accessor).await?)
}

async fn token_accessor_exists(admin: &VaultAdmin, accessor: &str) -> Result<bool, InitError> {
    Ok(admin.token_accessor_exists(accessor).await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assumed_roles_are_recognised_by_their_session_arn() {
        assert_eq!(
            assumed_role_name(
                "arn:aws:sts::123456789012:assumed-role/AWSReservedSSO_Admin_0f1e/alice"
            ),
            Some("AWSReservedSSO_Admin_0f1e")
        );
        assert_eq!(
            assumed_role_name("arn:aws:iam::123456789012:user/bob"),
            None
        );
    }

    #[test]
    fn the_policy_reads_only_under_the_mount() {
        let p = replicator_policy("team");
        assert!(p.contains("path \"team/data/*\""));
        // Reads only, but for renewing its own token.
        let data = p.replace(RENEW_SELF, "");
        assert!(!data.contains("create") && !data.contains("update") && !data.contains("delete"));
        assert!(p.contains("path \"auth/token/renew-self\" {\n  capabilities = [\"update\"]\n}"));
        assert!(!p.contains("sudo") && !p.contains("auth/token/create"));
    }
}
