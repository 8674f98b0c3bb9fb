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
use crate::spec::{Spec, VaultRead};
use crate::vault_admin::{AUDIT_MODE, Audit, InitKeys, VaultAdmin, VaultAdminError};
use contract::ConnectionSecret;
use contract::secret::SecretString;

pub use contract::ACCESSOR_TAG;
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
    /// AppRole secret id lifetime (`0`: no expiry); `None`: the role keeps the one it has (a
    /// new role: no expiry).
    pub secret_id_ttl: Option<String>,
    /// Replace the delivered secret id even if it still works, and destroy the old one.
    pub rotate_secret_id: bool,
    /// Vault Enterprise / OpenBao namespace of the mount, policy and AppRole (`X-Vault-Namespace`);
    /// init, unseal and audit stay in the root namespace.
    pub namespace: Option<String>,
}

#[derive(Debug, Default, Serialize)]
pub struct InitReport {
    /// The Vault this run configured (said first, so a wrong target is plain to see).
    pub vault_address: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
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
    #[error(transparent)]
    Deploy(#[from] crate::resources::DeployError),
    #[error("{0}")]
    Needs(String),
    #[error("serialising the connection secret")]
    Serialise(#[from] serde_json::Error),
    #[error("writing the output")]
    Io(#[from] std::io::Error),
}

/// The replicator's AppRole role: its policy alone, short tokens, a secret id of `secret_id_ttl`
/// usable any number of times; login and token use only from `bound_cidrs` when given (the
/// replicator's subnet with the stack's own Vault, `vault_client_cidrs` with an external one),
/// so a copied secret id is useless elsewhere.
pub fn approle_settings(
    role: &str,
    opts: &Options,
    bound_cidrs: &[String],
    default_ttl: Option<&str>,
) -> serde_json::Value {
    let mut settings = json!({
        "token_policies": [role],
        "token_ttl": opts.token_ttl,
        "token_max_ttl": opts.token_ttl,
        "token_no_default_policy": true,
        "secret_id_num_uses": 0,
    });
    // Only when given (or for a new role, the default): a run without --secret-id-ttl leaves
    // the lifetime set earlier as it is.
    if let Some(ttl) = opts.secret_id_ttl.as_deref().or(default_ttl) {
        settings["secret_id_ttl"] = json!(ttl);
    }
    // Written either way, so bindings dropped from the configuration are dropped in Vault.
    settings["secret_id_bound_cidrs"] = json!(bound_cidrs);
    settings["token_bound_cidrs"] = json!(bound_cidrs);
    settings
}

/// Who a secret id written by `vault-init` is for, as its metadata (not secret).
fn secret_id_owner(spec: &Spec) -> std::collections::BTreeMap<String, String> {
    std::collections::BTreeMap::from([
        ("replicator-stack".to_owned(), spec.stack().to_owned()),
        ("account".to_owned(), spec.id.account.clone()),
        ("region".to_owned(), spec.id.region.clone()),
    ])
}

/// Destroys the secret ids of `role` that the new one (`new`) replaces: the one the accessor
/// tag named (`tagged`), this stack's, and with `rotating` those without an owner. How many.
async fn replaced_secret_ids(
    admin: &VaultAdmin,
    role: &str,
    spec: &Spec,
    new: &str,
    tagged: Option<&str>,
    rotating: bool,
) -> Result<usize, VaultAdminError> {
    let owner = secret_id_owner(spec);
    let mut destroyed = 0;
    for old in admin.secret_id_accessors(role).await? {
        if old == new {
            continue;
        }
        // The tagged one only when it is not another stack's: the tag is on a secret others
        // may be able to tag.
        let replaced = match admin.secret_id_metadata(role, &old).await? {
            None => false,
            Some(meta) if meta.is_empty() => rotating || Some(old.as_str()) == tagged,
            Some(meta) => meta == owner,
        };
        if replaced && admin.destroy_secret_id_accessor(role, &old).await? {
            destroyed += 1;
        }
    }
    Ok(destroyed)
}

/// A new secret id's lifetime with automatic rotation every `days`: three periods, so two failed
/// rotations in a row still leave a period to act on the failure notice.
pub fn default_secret_id_ttl(days: i32) -> String {
    format!("{}h", 3 * 24 * days)
}

/// Refuses a secret id lifetime that automatic rotation could not keep ahead of: at least two
/// rotation periods (`0`, no expiry, is the operator's explicit word).
pub fn check_secret_id_ttl(ttl: &str, days: i32) -> Result<(), String> {
    let secs = crate::vault_admin::parse_duration(ttl)
        .ok_or_else(|| format!("--secret-id-ttl {ttl:?} is not a duration such as 720h or 30d"))?;
    let needed = 2 * 86_400 * u64::try_from(days).unwrap_or(0);
    if secs != 0 && secs < needed {
        return Err(format!(
            "--secret-id-ttl {ttl} is shorter than two rotation periods (secret_id_rotation_days = {days}): the secret id could expire before a rotation replaces it; give at least {}h, or rotate more often",
            needed / 3600
        ));
    }
    Ok(())
}

/// The rotator's Vault policy: mint, look up and destroy secret ids of the replicator's role
/// `role` at the `approle` mount, and renew its own token; nothing else (no secret, no other
/// role, not the role's settings or role id).
pub fn rotator_policy(role: &str) -> String {
    let base = format!("auth/approle/role/{role}");
    let path = |p: &str, param: &str| {
        format!(
            "path \"{base}/{p}\" {{\n  capabilities = [\"update\"]\n  allowed_parameters = {{\n    \"{param}\" = []\n  }}\n}}\n"
        )
    };
    // Each path takes only the one parameter the rotation sends: a new id carries no lifetime,
    // use count or CIDR list of the caller's choosing.
    [
        path("secret-id", "metadata"),
        path("secret-id/lookup", "secret_id"),
        path("secret-id/destroy", "secret_id"),
        path("secret-id-accessor/destroy", "secret_id_accessor"),
    ]
    .concat()
        + RENEW_SELF
}

/// Tag on the rotator secret: a digest of what its token was made for (the Vault, CA,
/// namespace, AppRole role and rotation period), not secret; a token made for anything else is
/// replaced.
pub const ROTATOR_FOR_TAG: &str = "vault-secrets-replicator:rotator-for";

/// The digest [`ROTATOR_FOR_TAG`] holds.
fn rotator_made_for(r: &contract::RotatorSecret, days: i32) -> String {
    let connection = connection_made_for(
        &r.vault_address,
        r.vault_ca_cert.as_deref(),
        r.vault_namespace.as_deref(),
        &r.vault_approle_mount,
        &r.vault_role_id,
    );
    digest(&serde_json::json!([connection, r.vault_approle_role, days]))
}

/// Tag on the connection secret: a digest of the Vault, CA, namespace and AppRole role its
/// credentials are for (not secret). A connection made for anything else gets new credentials,
/// so it always agrees with the rotator's.
pub const CONNECTION_FOR_TAG: &str = "vault-secrets-replicator:connection-for";

/// The digest [`CONNECTION_FOR_TAG`] holds.
fn connection_made_for(
    address: &str,
    ca: Option<&str>,
    namespace: Option<&str>,
    mount: &str,
    role_id: &str,
) -> String {
    digest(&serde_json::json!([
        address.trim_end_matches('/'),
        ca.map(str::trim).filter(|c| !c.is_empty()),
        contract::namespace(namespace),
        mount,
        role_id,
    ]))
}

fn digest(v: &serde_json::Value) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(v.to_string().as_bytes())
        .iter()
        .take(16)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The rotator's Vault policy name, beside the replicator's.
pub fn rotator_policy_name(role: &str) -> String {
    format!("{role}-rotator")
}

/// The replicator's Vault policy: read values, read and list metadata, bulk-list (OpenBao).
pub fn replicator_policy(mount: &str) -> String {
    format!("{}{RENEW_SELF}", read_paths(mount, ""))
}

/// The policy's paths for reading under `path` of `mount` (empty: all of it).
fn read_paths(mount: &str, path: &str) -> String {
    let under = if path.is_empty() {
        String::new()
    } else {
        format!("{path}/")
    };
    format!(
        "path \"{mount}/data/{under}*\" {{\n  capabilities = [\"read\"]\n}}\npath \"{mount}/metadata/{under}*\" {{\n  capabilities = [\"read\", \"list\"]\n}}\npath \"{mount}/detailed-metadata/{under}*\" {{\n  capabilities = [\"list\"]\n}}\n"
    )
}

/// The replicator's Vault policy for `reads`, written in the `login` namespace: each read's
/// paths, in its namespace relative to that one (a policy grants only there and below).
pub fn reads_policy(reads: &[VaultRead], login: Option<&str>) -> Result<String, String> {
    let login = contract::namespace(login);
    let mut text = String::new();
    for read in reads {
        let relative = match (&read.namespace, &login) {
            (None, _) => String::new(),
            (Some(ns), Some(l)) if ns == l => String::new(),
            (Some(ns), Some(l)) => match ns.strip_prefix(&format!("{l}/")) {
                Some(rest) => format!("{rest}/"),
                None => {
                    return Err(format!(
                        "the namespace {ns} is not under {l}, where the replicator logs in: its policy there cannot grant it"
                    ));
                }
            },
            (Some(ns), None) => format!("{ns}/"),
        };
        text.push_str(&read_paths(
            &format!("{relative}{}", read.mount),
            &read.path,
        ));
    }
    text.push_str(RENEW_SELF);
    Ok(text)
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
            &spec.owner(),
            &name,
            "Vault unseal keys and root token, readable only by the principal that initialised Vault",
            key_arn,
            None,
        )
        .await?;
    }
    let policy = spec
        .init_keys_policy(&principal)
        .map_err(crate::resources::DeployError::from)?
        .to_string();
    crate::resources::secret::put_policy(c, &name, &policy).await?;
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
    let value = serde_json::to_string(keys)?;
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

/// Where vault-init writes. The unseal keys and root token of a fresh init are written the moment
/// Vault hands them out (they exist nowhere else). With `json`, stdout is one JSON document: the
/// keys open it, and [`Output::finish`] (or [`Output::fail`]) adds the report (or the error).
pub struct Output<'a> {
    out: &'a mut dyn Write,
    json: bool,
    /// A document is open (the keys are in it).
    open: bool,
}

impl std::fmt::Debug for Output<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Output")
            .field("json", &self.json)
            .field("open", &self.open)
            .finish()
    }
}

impl<'a> Output<'a> {
    pub fn new(out: &'a mut dyn Write, json: bool) -> Self {
        Self {
            out,
            json,
            open: false,
        }
    }

    pub fn text(&mut self) -> &mut dyn Write {
        self.out
    }

    /// The keys as the document's first fields, flushed at once.
    fn keys_json(&mut self, keys: &InitKeys) -> std::io::Result<()> {
        let keys = json!({
            "unseal_keys": keys.keys_base64.iter().map(|k| k.expose()).collect::<Vec<_>>(),
            "root_token": keys.root_token.expose(),
        });
        let text = keys.to_string();
        write!(self.out, "{}", text.trim_end_matches('}'))?;
        self.open = true;
        self.out.flush()
    }

    /// Writes `fields` as the rest of the document (or as the whole of it).
    fn close(&mut self, fields: serde_json::Map<String, serde_json::Value>) -> std::io::Result<()> {
        let body = serde_json::Value::Object(fields).to_string();
        if self.open {
            let rest = body.trim_start_matches('{');
            let sep = if rest == "}" { "" } else { "," };
            writeln!(self.out, "{sep}{rest}")?;
            self.open = false;
        } else {
            writeln!(self.out, "{body}")?;
        }
        self.out.flush()
    }

    /// Ends the JSON document with the report's fields.
    pub fn finish(&mut self, report: &InitReport) -> std::io::Result<()> {
        match serde_json::to_value(report) {
            Ok(serde_json::Value::Object(fields)) => self.close(fields),
            _ => self.close(serde_json::Map::new()),
        }
    }

    /// Ends an open JSON document with the error, so stdout stays one document whose keys are
    /// not lost. Nothing to do when none is open.
    pub fn fail(&mut self, error: &str) -> std::io::Result<()> {
        if !self.open {
            return Ok(());
        }
        let mut fields = serde_json::Map::new();
        fields.insert("error".into(), json!(error));
        self.close(fields)
    }
}

/// Runs vault-init. Unseal keys and the root token are written to `out` only with
/// `KeysTo::Print`, once, right after `init`. The root token of a fresh init is revoked however
/// the run ends (unless `--keep-root-token`): a failure halfway never leaves it standing.
pub async fn run(
    c: &Clients,
    spec: &Spec,
    opts: Options,
    out: &mut Output<'_>,
) -> Result<InitReport, InitError> {
    let (address, ca_pem, keep) = (
        opts.address.clone(),
        opts.ca_pem.clone(),
        opts.keep_root_token,
    );
    let mut fresh_root = None;
    let result = Box::pin(run_steps(c, spec, opts, out, &mut fresh_root)).await;
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

/// One run's state, handed from step to step.
struct Steps<'a, 'o> {
    c: &'a Clients,
    spec: &'a Spec,
    opts: Options,
    out: &'a mut Output<'o>,
    admin: VaultAdmin,
    report: InitReport,
    /// The KV v2 mount, the Vault policy and the AppRole role of this stack: two stacks on one
    /// Vault keep theirs.
    mount: String,
    role: String,
}

/// Every step of [`run`], in order; `fresh_root` gets the root token of a fresh init the moment
/// Vault hands it out, before anything else can fail.
async fn run_steps(
    c: &Clients,
    spec: &Spec,
    opts: Options,
    out: &mut Output<'_>,
    fresh_root: &mut Option<SecretString>,
) -> Result<InitReport, InitError> {
    let admin = VaultAdmin::new(&opts.address, opts.ca_pem.as_deref())?
        .in_namespace(opts.namespace.as_deref());
    let mut s = Steps {
        c,
        spec,
        report: InitReport {
            vault_address: opts.address.clone(),
            namespace: opts.namespace.clone(),
            ..InitReport::default()
        },
        opts,
        out,
        admin,
        mount: spec.kv_mount().to_owned(),
        role: spec.vault_role_name(),
    };
    let fresh = s.initialise().await?;
    if let Some(keys) = &fresh {
        *fresh_root = Some(keys.root_token.clone());
    }
    s.unseal(fresh.as_ref()).await?;
    let token = fresh.as_ref().map(|k| k.root_token.clone());
    let Some(accessor) = s.take_admin_token(token).await? else {
        return Ok(s.report);
    };
    s.namespace().await?;
    s.engine_policy_and_audit().await?;
    s.credentials(accessor).await?;
    s.rotator().await?;
    if s.opts.sample_secrets {
        s.sample_secrets().await?;
    }
    // No standing root token: `run` revokes a fresh one, whichever way this ends.
    Ok(s.report)
}

impl Steps<'_, '_> {
    /// Step 1: Initialise, and hand the keys out at once: printed, or stored in their secret.
    async fn initialise(&mut self) -> Result<Option<InitKeys>, InitError> {
        if self.admin.initialized().await? {
            self.report
                .kept
                .push("Vault was already initialised".into());
            return Ok(None);
        }
        let (c, spec, opts) = (self.c, self.spec, &self.opts);
        // Without the stack's key (not found, not readable) the keys' secret takes the
        // account's default key.
        let key_arn = match spec.stack_key() {
            Ok(want) => (crate::resources::key::observe(c, &want).await)
                .ok()
                .flatten()
                .map(|k| k.arn),
            Err(_) => None,
        };
        // The secret for the keys, with its policy, exists before the keys do.
        let keys_secret = match opts.keys_to {
            KeysTo::Secret => Some(prepare_keys_secret(c, spec, key_arn.as_deref()).await?),
            KeysTo::Print => None,
        };
        let keys = self.admin.init(opts.key_shares, opts.key_threshold).await?;
        self.report.initialized_now = true;
        self.report.changed.push(format!(
            "initialised Vault ({} key shares, threshold {})",
            opts.key_shares, opts.key_threshold
        ));
        match opts.keys_to {
            // Written at once, before anything else can fail: they exist nowhere else.
            KeysTo::Print if self.out.json => self.out.keys_json(&keys)?,
            KeysTo::Print => {
                let out = self.out.text();
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
                    if self.out.json {
                        self.out.keys_json(&keys)?;
                    } else {
                        print_keys(
                            self.out.text(),
                            &format!(
                                "Storing the unseal keys in {name} failed; they are shown once here instead (store them safely):"
                            ),
                            &keys,
                        )?;
                    }
                    return Err(e);
                }
                self.report.changed.push(format!(
                    "stored the unseal keys and root token in secret {name}"
                ));
                self.report.keys_stored_in = Some(name);
            }
        }
        Ok(Some(keys))
    }

    /// Step 2: unseal with the fresh keys, the ones given, or the stored ones; then wait until
    /// Vault is active.
    async fn unseal(&mut self, fresh: Option<&InitKeys>) -> Result<(), InitError> {
        let (sealed, threshold) = self.admin.seal_status().await?;
        if sealed {
            let mut keys: Vec<SecretString> =
                fresh.map(|k| k.keys_base64.clone()).unwrap_or_default();
            keys.extend(self.opts.unseal_keys.iter().cloned());
            if keys.is_empty()
                && let Some(stored) = stored_keys(self.c, self.spec).await?
            {
                keys = stored.keys_base64;
            }
            let mut still = true;
            for k in &keys {
                still = self.admin.unseal(k).await?;
                if !still {
                    break;
                }
            }
            if still {
                return Err(InitError::Needs(format!(
                    "Vault is sealed: pass {threshold} unseal keys with --unseal-key (or VAULT_UNSEAL_KEYS)"
                )));
            }
            self.report.unsealed_now = true;
            self.report.changed.push("unsealed Vault".into());
        }
        self.admin
            .wait_active(std::time::Duration::from_secs(60))
            .await?;
        Ok(())
    }

    /// Step 3: an admin token (the fresh root token, or the one given) and the connection secret's
    /// credential accessor. `None`: nothing more can be done without a token, and nothing needs
    /// to be (the connection secret holds credentials).
    async fn take_admin_token(
        &mut self,
        fresh_root: Option<SecretString>,
    ) -> Result<Option<Option<String>>, InitError> {
        if let Some(t) = fresh_root.or_else(|| self.opts.token.clone()) {
            self.admin.set_token(t);
        }
        let conn_name = self.spec.connection_secret();
        let described = found(
            self.c
                .sm
                .describe_secret()
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
        if self.admin.has_token() {
            return Ok(Some(accessor));
        }
        if accessor.is_some() {
            self.report.kept.push(format!("the connection secret already holds credentials ({ACCESSOR_TAG} tag); pass --token to verify or replace them"));
            return Ok(None);
        }
        Err(InitError::Needs(
            "Vault is initialised but the connection secret has no credentials: pass an admin token with --token (or VAULT_TOKEN)".into(),
        ))
    }

    /// Step 4a: The namespace the mount, policy and role live in, made when missing.
    async fn namespace(&mut self) -> Result<(), InitError> {
        if let Some(ns) = self.opts.namespace.clone()
            && self.admin.ensure_namespace(&ns).await?
        {
            self.report.changed.push(format!("created namespace {ns}/"));
        }
        Ok(())
    }

    /// Step 4b: The secrets engine, the read-only policy, the audit log.
    async fn engine_policy_and_audit(&mut self) -> Result<(), InitError> {
        let role = &self.role;
        let reads = self.spec.vault_reads();
        let mut mounts: Vec<(Option<&str>, &str)> = reads
            .iter()
            .map(|r| (r.namespace.as_deref(), r.mount.as_str()))
            .collect();
        mounts.dedup();
        // The policy first: a rule it cannot grant (a namespace outside the login's) changes
        // nothing in Vault.
        let policy = if self.spec.cfg.rules.is_empty() {
            replicator_policy(&self.mount)
        } else {
            reads_policy(&reads, self.opts.namespace.as_deref()).map_err(InitError::Needs)?
        };
        // A rule's namespace, made when missing, as the login's is.
        let mut namespaces: Vec<&str> = mounts.iter().filter_map(|(ns, _)| *ns).collect();
        namespaces.sort_unstable();
        namespaces.dedup();
        for ns in namespaces {
            if self.admin.ensure_namespace(ns).await? {
                self.report.changed.push(format!("created namespace {ns}/"));
            }
        }
        for (namespace, mount) in mounts {
            let admin = match namespace {
                Some(ns) => self.admin.sibling(Some(ns)),
                None => self.admin.sibling(self.opts.namespace.as_deref()),
            };
            if admin.ensure_kv2(mount).await? {
                let at = namespace.map(|n| format!("{n}/")).unwrap_or_default();
                self.report
                    .changed
                    .push(format!("enabled KV v2 at {at}{mount}/"));
            }
        }
        if self.admin.ensure_policy(role, &policy).await? {
            self.report
                .changed
                .push(format!("wrote the read-only policy {role}"));
        }
        match self.admin.ensure_audit(&self.opts.audit_file).await {
            Ok(Audit::Enabled) => self.report.changed.push(format!(
                "enabled the file audit log {} (mode {AUDIT_MODE})",
                self.opts.audit_file
            )),
            Ok(Audit::On) => {}
            Ok(Audit::OtherMode(mode)) => self.report.warnings.push(format!(
                "the file audit device writes its log with mode {mode}: the change watcher (group vault-audit) cannot read it; enable it again with mode {AUDIT_MODE} (vault audit disable file/ && vault audit enable file file_path={} mode={AUDIT_MODE}) when a moment without audit is acceptable",
                self.opts.audit_file
            )),
            // OpenBao accepts audit devices from its configuration file only.
            Err(VaultAdminError::Status {
                status: 400,
                message,
                ..
            }) => {
                self.report
                    .warnings
                    .push(format!("audit log not enabled through the API: {message}"));
            }
            Err(e) => return Err(e.into()),
        }
        Ok(())
    }

    /// Step 5: the replicator's credentials, straight into the connection secret. The AppRole
    /// role is kept as wanted on every run (a bound subnet or a TTL changed later applies too).
    async fn credentials(&mut self, accessor: Option<String>) -> Result<(), InitError> {
        let (c, spec, role) = (self.c, self.spec, self.role.clone());
        let opts = &self.opts;
        let admin = &self.admin;
        let report = &mut self.report;
        if opts.auth == AuthMode::Approle {
            if admin.ensure_approle().await? {
                report.changed.push("enabled AppRole auth".into());
            }
            let bound: Vec<String> = match &spec.cfg.vault {
                crate::config::VaultMode::Ec2 { .. } => vec![crate::spec::SUBNET_CIDR.to_owned()],
                crate::config::VaultMode::External { client_cidrs, .. } => client_cidrs.clone(),
            };
            let days = spec.cfg.secret_id_rotation_days;
            if days > 0
                && let Some(ttl) = &opts.secret_id_ttl
            {
                check_secret_id_ttl(ttl, days).map_err(InitError::Needs)?;
            }
            // A new role's secret ids live three rotation periods unless told otherwise; an
            // existing role keeps its lifetime, said when it never expires.
            let lifetime = admin.role_secret_id_ttl(&role).await?;
            // A lifetime shorter than two rotation periods (the period raised since) is raised
            // to three, or an id could expire before a rotation replaces it.
            let short = |t: u64| t > 0 && t < 2 * 86_400 * u64::try_from(days).unwrap_or(0);
            let default_ttl =
                (days > 0 && opts.secret_id_ttl.is_none() && lifetime.is_none_or(short))
                    .then(|| default_secret_id_ttl(days));
            if opts.secret_id_ttl.is_none() && lifetime == Some(0) {
                report.warnings.push(format!(
                    "the AppRole role {role}'s secret ids never expire: pass --secret-id-ttl {} to give them a lifetime{}",
                    default_secret_id_ttl(days.max(1)),
                    if days > 0 { " that automatic rotation keeps ahead of" } else { "" }
                ));
            }
            if admin
                .ensure_role(
                    &role,
                    approle_settings(&role, opts, &bound, default_ttl.as_deref()),
                )
                .await?
            {
                report.changed.push(format!(
                    "wrote AppRole role {role} (token TTL {}, secret id TTL {}{})",
                    opts.token_ttl,
                    opts.secret_id_ttl
                        .as_deref()
                        .or(default_ttl.as_deref())
                        .unwrap_or("as it was"),
                    if bound.is_empty() {
                        String::new()
                    } else {
                        format!(", login and tokens only from {}", bound.join(", "))
                    }
                ));
            }
        }
        let conn_name = spec.connection_secret();
        // What the AppRole credentials are for, as a tag says: made for another Vault, CA,
        // namespace or role id, they are replaced.
        let role_id = match opts.auth {
            AuthMode::Approle => Some(admin.role_id(&role).await?),
            AuthMode::Token => None,
        };
        let made_for = role_id.as_deref().map(|role_id| {
            connection_made_for(
                &spec.replicator_vault_address(),
                opts.ca_pem.as_deref(),
                opts.namespace.as_deref(),
                "approle",
                role_id,
            )
        });
        let tagged_for = crate::resources::secret::describe(c, &spec.owner(), &conn_name)
            .await?
            .and_then(|s| s.tags.get(CONNECTION_FOR_TAG).cloned());
        let still_valid = match (&accessor, opts.auth) {
            _ if opts.rotate_secret_id => false,
            (Some(_), AuthMode::Approle) if tagged_for != made_for => false,
            (Some(a), AuthMode::Approle) => admin.secret_id_accessor_exists(&role, a).await?,
            (Some(a), AuthMode::Token) => admin.token_accessor_exists(a).await?,
            (None, _) => false,
        };
        if still_valid {
            report
                .kept
                .push("the connection secret's credentials are valid".into());
            return Ok(());
        }
        let mut conn = ConnectionSecret {
            vault_address: spec.replicator_vault_address(),
            vault_ca_cert: opts.ca_pem.clone(),
            vault_namespace: opts.namespace.clone(),
            ..ConnectionSecret::default()
        };
        let new_accessor = match opts.auth {
            AuthMode::Approle => {
                let (secret_id, accessor) = admin
                    .new_secret_id_with_accessor(&role, &secret_id_owner(spec))
                    .await?;
                conn.vault_role_id = role_id.clone();
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
        let value = serde_json::to_string(&conn)?;
        let put =
            c.sm.put_secret_value()
                .secret_id(&conn_name)
                .secret_string(value)
                .send()
                .await
                .ctx("PutSecretValue", &conn_name);
        if let Err(e) = put {
            // Never stored anywhere: the new credential goes, so it cannot outlive this run.
            let _ = match opts.auth {
                AuthMode::Approle => admin
                    .destroy_secret_id_accessor(&role, &new_accessor)
                    .await
                    .map(|_| ()),
                AuthMode::Token => admin.revoke_token_accessor(&new_accessor).await,
            };
            return Err(e.into());
        }
        // A rotation under way started from the credential just replaced: it is abandoned (its
        // pending id goes with the others below), so Secrets Manager starts the next afresh.
        match crate::resources::rotation::abandon_pending(c, &conn_name).await {
            Ok(true) => report
                .changed
                .push("abandoned the rotation under way (its AWSPENDING version)".into()),
            Ok(false) => {}
            Err(e) => report.warnings.push(format!(
                "a rotation under way could not be abandoned ({e}): remove the AWSPENDING label from {conn_name} by hand if rotations keep failing"
            )),
        }
        // A tag that could not be written must not keep the old credential alive: the ones
        // replaced still go below, and the next run, finding the tag's credential gone, writes
        // the tag again.
        let mut tags = vec![
            Tag::builder()
                .key(ACCESSOR_TAG)
                .value(&new_accessor)
                .build(),
        ];
        if let Some(f) = &made_for {
            tags.push(Tag::builder().key(CONNECTION_FOR_TAG).value(f).build());
        }
        let tagged =
            c.sm.tag_resource()
                .secret_id(&conn_name)
                .set_tags(Some(tags))
                .send()
                .await
                .ctx("TagResource", &conn_name);
        if let Err(e) = tagged {
            report.warnings.push(format!(
                "the new credentials are in {conn_name}, but its {ACCESSOR_TAG} tag could not be written ({e}): the next run writes new ones"
            ));
        }
        report.changed.push(format!(
            "wrote the replicator's {} credentials into {conn_name}",
            match opts.auth {
                AuthMode::Approle => "AppRole",
                AuthMode::Token => "token",
            }
        ));
        // Whenever a new secret id is written (a rotation, or a credential that was missing or
        // no longer valid), the ones it replaces go, once it is in place: the one the accessor
        // tag named, every one made for this stack (its metadata: stack, account, region),
        // and with --rotate-secret-id every one without an owner (made by an earlier version or
        // by hand), since the tag may be missing or stale. Another stack's of the same name in
        // another account or region, sharing this Vault, is never touched.
        if opts.auth == AuthMode::Approle {
            match replaced_secret_ids(admin, &role, spec, &new_accessor, accessor.as_deref(), opts.rotate_secret_id).await {
                Ok(0) => {}
                Ok(1) => report.changed.push("destroyed the previous secret id".into()),
                Ok(n) => report
                    .changed
                    .push(format!("destroyed the {n} previous secret ids")),
                Err(e) => report.warnings.push(format!(
                    "the new secret id is in place, but the earlier ones could not be listed or destroyed ({e}): they stay valid until their TTL; destroy them with `vault list auth/approle/role/{role}/secret-id` and `vault write auth/approle/role/{role}/secret-id-accessor/destroy`"
                )),
            }
        }
        Ok(())
    }

    /// Step 5b: with automatic rotation (AppRole): the rotator's Vault policy and its periodic
    /// token in the rotator secret (which only the rotation function's role reads, from inside
    /// that function), then the rotation turned on. A stored token still valid is kept
    /// (`--rotate-secret-id` replaces it too); a replaced one is revoked.
    async fn rotator(&mut self) -> Result<(), InitError> {
        let (c, spec) = (self.c, self.spec);
        let days = spec.cfg.secret_id_rotation_days;
        let name = spec.rotator_secret();
        let seen = crate::resources::secret::describe(c, &spec.owner(), &name).await?;
        if self.opts.auth != AuthMode::Approle || days <= 0 {
            return self.retire_rotator(&name, seen.as_ref()).await;
        }
        if seen.as_ref().is_some_and(|s| !s.ours) {
            return Err(InitError::Needs(format!(
                "{name} exists without this stack's tag: another stack's with the same prefix? Its token is not this stack's to replace; give this stack another secrets_prefix"
            )));
        }
        let role = self.role.clone();
        let policy = rotator_policy_name(&role);
        if self
            .admin
            .ensure_policy(&policy, &rotator_policy(&role))
            .await?
        {
            self.report.changed.push(format!(
                "wrote the rotator's policy {policy} (secret ids of {role} only)"
            ));
        }
        let role_id = self.admin.role_id(&role).await?;
        let rotator = contract::RotatorSecret {
            vault_token: SecretString::from(""),
            vault_address: spec.replicator_vault_address(),
            vault_ca_cert: self.opts.ca_pem.clone(),
            vault_namespace: self.opts.namespace.clone(),
            vault_approle_mount: "approle".into(),
            vault_approle_role: role,
            vault_role_id: role_id,
            secret_id_metadata: secret_id_owner(spec),
        };
        let made_for = rotator_made_for(&rotator, days);
        let live = seen.as_ref().filter(|s| !s.pending_deletion);
        // Any token it names is this stack's rotator, stored or not, current or not.
        let stored = seen.as_ref().and_then(|s| s.accessor()).map(str::to_owned);
        let valid = match (&stored, live) {
            (Some(a), Some(s))
                if s.has_value
                    && !self.opts.rotate_secret_id
                    && s.tags.get(ROTATOR_FOR_TAG) == Some(&made_for) =>
            {
                self.admin.token_accessor_exists(a).await?
            }
            _ => false,
        };
        if valid {
            self.report
                .kept
                .push(format!("the rotator's token in {name} is valid"));
            self.keep_rotator_policy(&name, live).await?;
        } else {
            self.store_rotator(&name, seen.as_ref(), rotator, &made_for, days)
                .await?;
            if let Some(old) = stored {
                self.revoke_rotator_token(&old).await?;
            }
        }
        let ch = crate::resources::rotation::converge(c, &spec.rotation_spec()).await?;
        match ch.action {
            crate::change::Action::Update | crate::change::Action::Create => {
                self.report.changed.push(format!(
                    "turned on Secrets Manager's rotation of {}: a new secret id every {days} days by {}",
                    spec.connection_secret(),
                    spec.function_name_of(crate::spec::Duty::Rotate)
                ));
            }
            crate::change::Action::Absent => self.report.warnings.push(format!(
                "the rotation of {} is not on: {}",
                spec.connection_secret(),
                ch.note.unwrap_or_else(|| "run `deployer up` first".into())
            )),
            _ => {}
        }
        Ok(())
    }

    /// No automatic rotation (turned off, or `--auth token`): the rotation stops, the rotator's
    /// token is revoked and its secret scheduled for deletion, so nothing that could mint a
    /// secret id is left.
    async fn retire_rotator(
        &mut self,
        name: &str,
        seen: Option<&crate::resources::secret::SecretState>,
    ) -> Result<(), InitError> {
        let c = self.c;
        let Some(s) = seen.filter(|s| s.ours) else {
            return Ok(());
        };
        let conn = self.spec.connection_secret();
        let stopped = crate::resources::rotation::destroy(c, &self.spec.rotation_spec()).await?;
        if stopped.action == crate::change::Action::Delete {
            self.report
                .changed
                .push(format!("turned off the rotation of {conn}"));
        }
        if let Some(a) = s.accessor() {
            self.revoke_rotator_token(a).await?;
        }
        if !s.pending_deletion {
            crate::resources::secret::destroy_rotator(
                c,
                &self
                    .spec
                    .secret_spec()
                    .map_err(crate::resources::DeployError::from)?,
            )
            .await?;
            self.report
                .changed
                .push(format!("scheduled {name} for deletion"));
        }
        Ok(())
    }

    /// Revokes a rotator token by its accessor, when Vault still has it; one that cannot be
    /// revoked is said, with the command to do it by hand.
    async fn revoke_rotator_token(&mut self, accessor: &str) -> Result<(), InitError> {
        if !self.admin.token_accessor_exists(accessor).await? {
            return Ok(());
        }
        match self.admin.revoke_token_accessor(accessor).await {
            Ok(()) => self
                .report
                .changed
                .push("revoked the rotator's token".into()),
            Err(e) => self.report.warnings.push(format!(
                "the rotator's token (accessor {accessor}) could not be revoked ({e}): revoke it with `vault token revoke -accessor {accessor}`"
            )),
        }
        Ok(())
    }

    /// The rotator secret's resource policy, put back when it drifted.
    async fn keep_rotator_policy(
        &mut self,
        name: &str,
        seen: Option<&crate::resources::secret::SecretState>,
    ) -> Result<(), InitError> {
        let doc = self
            .spec
            .rotator_secret_policy()
            .map_err(crate::resources::DeployError::from)?;
        if seen.is_some_and(|s| s.policy == crate::policy::canonical(&doc)) {
            return Ok(());
        }
        crate::resources::secret::put_policy(self.c, name, &doc.to_string()).await?;
        self.report
            .changed
            .push(format!("put back the resource policy of {name}"));
        Ok(())
    }

    /// A new periodic rotator token, written into the rotator secret (made when missing, under
    /// the stack key, with its resource policy first); revoked again when it cannot be stored.
    async fn store_rotator(
        &mut self,
        name: &str,
        seen: Option<&crate::resources::secret::SecretState>,
        mut rotator: contract::RotatorSecret,
        made_for: &str,
        days: i32,
    ) -> Result<(), InitError> {
        let (c, spec) = (self.c, self.spec);
        if seen.is_some_and(|s| s.pending_deletion) {
            c.sm.restore_secret()
                .secret_id(name)
                .send()
                .await
                .ctx("RestoreSecret", name)?;
        }
        if seen.is_none() {
            let key_arn = crate::resources::key::observe(
                c,
                &spec
                    .stack_key()
                    .map_err(crate::resources::DeployError::from)?,
            )
            .await?
            .map(|k| k.arn)
            .ok_or_else(|| {
                InitError::Needs(format!(
                    "the stack's KMS key {} is missing: run `deployer up` first",
                    spec.key_alias()
                ))
            })?;
            crate::resources::secret::create(
                c,
                &spec.owner(),
                name,
                "vault-secrets-replicator: the Vault token that mints the replicator's AppRole secret ids, read only by the rotation function",
                Some(&key_arn),
                None,
            )
            .await?;
        }
        let doc = spec
            .rotator_secret_policy()
            .map_err(crate::resources::DeployError::from)?
            .to_string();
        crate::resources::secret::put_policy(c, name, &doc).await?;
        // Renewed by every rotation: it lives as long as rotations keep coming.
        let (token, accessor) = self
            .admin
            .scoped_token_with_accessor(
                &rotator_policy_name(&self.role),
                &default_secret_id_ttl(days),
            )
            .await?;
        rotator.vault_token = token;
        // Named first, so a token is never stored without the tag that lets a later run
        // revoke it.
        let tagged =
            c.sm.tag_resource()
                .secret_id(name)
                .tags(Tag::builder().key(ACCESSOR_TAG).value(&accessor).build())
                .tags(Tag::builder().key(ROTATOR_FOR_TAG).value(made_for).build())
                .send()
                .await
                .ctx("TagResource", name)
                .map_err(InitError::from);
        let put = match (tagged, serde_json::to_string(&rotator)) {
            (Err(e), _) => Err(e),
            (Ok(_), Ok(text)) => {
                c.sm.put_secret_value()
                    .secret_id(name)
                    .secret_string(text)
                    .send()
                    .await
                    .ctx("PutSecretValue", name)
                    .map_err(InitError::from)
            }
            (Ok(_), Err(e)) => Err(e.into()),
        };
        if let Err(e) = put {
            let _ = self.admin.revoke_token_accessor(&accessor).await;
            return Err(e);
        }
        self.report
            .changed
            .push(format!("wrote the rotator's token into {name}"));
        Ok(())
    }

    /// Step 6: The sample's two secrets, and a decoy mount that is not replicated.
    async fn sample_secrets(&mut self) -> Result<(), InitError> {
        let mount = &self.mount;
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
            if self.admin.kv_put_once(mount, path, data).await? {
                self.report
                    .changed
                    .push(format!("wrote sample secret {mount}/{path}"));
            }
        }
        if self.admin.ensure_kv2(DECOY_MOUNT).await? {
            self.report.changed.push(format!(
                "enabled decoy mount {DECOY_MOUNT}/ (not replicated)"
            ));
        }
        if self
            .admin
            .kv_put_once(
                DECOY_MOUNT,
                "do-not-replicate",
                json!({"value": "stays in Vault"}),
            )
            .await?
        {
            self.report
                .changed
                .push(format!("wrote decoy secret {DECOY_MOUNT}/do-not-replicate"));
        }
        Ok(())
    }
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

    #[test]
    fn with_rules_the_policy_reads_each_rules_path_in_its_namespace_only() {
        let read = |namespace: Option<&str>, mount: &str, path: &str| VaultRead {
            namespace: namespace.map(str::to_owned),
            mount: mount.into(),
            path: path.into(),
        };
        let reads = [
            read(None, "kv", "payments"),
            read(Some("team-a"), "kv", ""),
            read(Some("team-a/sub"), "apps", "web"),
        ];
        let p = reads_policy(&reads, Some("team-a")).unwrap();
        for path in [
            "kv/data/payments/*",
            "kv/metadata/payments/*",
            "kv/detailed-metadata/payments/*",
            "kv/data/*",
            "sub/apps/data/web/*",
            "sub/apps/metadata/web/*",
        ] {
            assert!(p.contains(&format!("path \"{path}\"")), "{path}: {p}");
        }
        assert_eq!(p.matches("path \"").count(), 11, "{p}");
        assert!(p.ends_with(RENEW_SELF));
        // From the root namespace, a namespace is a path prefix.
        let p = reads_policy(&reads[1..2], None).unwrap();
        assert!(p.contains("path \"team-a/kv/data/*\""), "{p}");
        // A namespace beside the login's cannot be granted from it.
        let err = reads_policy(&[read(Some("team-b"), "kv", "")], Some("team-a")).unwrap_err();
        assert!(err.contains("not under team-a"), "{err}");
    }
}
