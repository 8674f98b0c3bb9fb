//! `deployer vault-init`: initialise, unseal and configure the stack's Vault for the replicator.

use std::io::Write;
use std::path::PathBuf;

use clap::Args;

use super::common::{CliError, EXIT_OK, error_chain};
use crate::resources::vault_server;
use crate::stack::Stack;
use crate::vault_init::{self, AuthMode, KeysTo, Options};
use contract::secret::SecretString;

#[derive(Debug, Args)]
pub struct VaultInitArgs {
    /// Vault address [default: the stack's Vault: its Elastic IP, or external_vault_address].
    /// Only from the command line: an exported VAULT_ADDR (your everyday Vault) is not used.
    #[arg(long)]
    pub vault_addr: Option<String>,

    /// PEM file of the CA that signed Vault's certificate [default: the stack's CA].
    #[arg(long, env = "VAULT_CACERT")]
    pub ca_cert: Option<PathBuf>,

    /// Unseal key shares made by init.
    #[arg(long, default_value_t = 5)]
    pub key_shares: u8,

    /// Shares needed to unseal.
    #[arg(long, default_value_t = 3)]
    pub key_threshold: u8,

    /// Where the unseal keys and root token of a fresh init go.
    #[arg(long, value_enum, default_value = "print")]
    pub keys_to: KeysTo,

    /// Unseal key(s) for a sealed, initialised Vault (repeatable).
    #[arg(
        long = "unseal-key",
        env = "VAULT_UNSEAL_KEYS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub unseal_keys: Vec<SecretString>,

    /// Admin token for a re-run that must change something (the root token of the first run is
    /// revoked).
    #[arg(long, env = "VAULT_TOKEN", hide_env_values = true)]
    pub token: Option<SecretString>,

    /// The replicator's credentials: AppRole (default) or a scoped periodic token.
    #[arg(long, value_enum, default_value = "approle")]
    pub auth: AuthMode,

    /// TTL of the replicator's AppRole tokens (it logs in again before they expire).
    #[arg(long, default_value = "15m")]
    pub token_ttl: String,

    /// Also write the sample's two secrets and a decoy mount that is not replicated.
    #[arg(long)]
    pub sample_secrets: bool,

    /// Do not revoke the root token of a fresh init.
    #[arg(long)]
    pub keep_root_token: bool,

    /// Vault's audit log file on the server.
    #[arg(long, default_value = "/var/log/vault/audit.log")]
    pub audit_file: String,

    /// Lifetime of the AppRole secret id written into the connection secret (`0`: no expiry)
    /// [default: the role's own; a new role: no expiry]. Rotate before it ends with
    /// `--rotate-secret-id`.
    #[arg(long)]
    pub secret_id_ttl: Option<String>,

    /// Deliver a new AppRole secret id into the connection secret, then destroy the old one.
    #[arg(long)]
    pub rotate_secret_id: bool,

    /// Vault Enterprise / OpenBao namespace (made when missing) of the mount, the policy and the
    /// AppRole, sent as `X-Vault-Namespace` and written into the connection secret; init, unseal
    /// and the audit log stay in the root namespace.
    #[arg(long, env = "VAULT_NAMESPACE")]
    pub vault_namespace: Option<String>,
}

pub(crate) async fn run(
    stack: &Stack<'_>,
    args: &VaultInitArgs,
    json: bool,
    out: &mut dyn Write,
) -> Result<i32, CliError> {
    let (c, spec) = (stack.clients, stack.spec);
    if args.key_threshold == 0 || args.key_threshold > args.key_shares {
        return Err(CliError::Refused(format!(
            "--key-threshold {} must be 1 to --key-shares ({})",
            args.key_threshold, args.key_shares
        )));
    }
    if let Some(ttl) = &args.secret_id_ttl
        && crate::vault_admin::parse_duration(ttl).is_none()
    {
        return Err(CliError::Refused(format!(
            "--secret-id-ttl {ttl:?} is not a duration such as 2160h (or 0: no expiry)"
        )));
    }
    if args.rotate_secret_id && args.auth != AuthMode::Approle {
        return Err(CliError::Refused(
            "--rotate-secret-id rotates an AppRole secret id: it needs --auth approle".into(),
        ));
    }
    if crate::vault_admin::parse_duration(&args.token_ttl).is_none_or(|s| s == 0) {
        return Err(CliError::Refused(format!(
            "--token-ttl {:?} is not a duration such as 15m",
            args.token_ttl
        )));
    }
    let server = (spec.vault_server_spec()).map_err(crate::resources::DeployError::from)?;
    let address = match &args.vault_addr {
        Some(a) => a.clone(),
        None => match &spec.cfg.vault {
            crate::config::VaultMode::External { address, .. } => address.clone(),
            crate::config::VaultMode::Ec2 { .. } => {
                let a = vault_server::observe_address(c, &server)
                    .await?
                    .ok_or_else(|| {
                        CliError::Refused(
                            "the stack has no Vault address yet: run `deployer up` first".into(),
                        )
                    })?;
                crate::spec::vault_url(&a.public_ip)
            }
        },
    };
    let ca_pem = match &args.ca_cert {
        Some(path) => Some(std::fs::read_to_string(path).map_err(|e| {
            CliError::Refused(format!("cannot read --ca-cert {}: {e}", path.display()))
        })?),
        None if spec.deploys_vault() => {
            let key = crate::resources::key::observe(
                c,
                &spec
                    .stack_key()
                    .map_err(crate::resources::DeployError::from)?,
            )
            .await?
            .ok_or_else(|| {
                CliError::Refused("the stack has no KMS key yet: run `deployer up` first".into())
            })?;
            vault_server::read_ca(c, &server, &key.arn).await?
        }
        None => None,
    };
    let opts = Options {
        address,
        ca_pem,
        key_shares: args.key_shares,
        key_threshold: args.key_threshold,
        keys_to: args.keys_to,
        unseal_keys: args
            .unseal_keys
            .iter()
            .filter(|k| !k.is_empty())
            .cloned()
            .collect(),
        token: args.token.clone().filter(|t| !t.is_empty()),
        auth: args.auth,
        token_ttl: args.token_ttl.clone(),
        sample_secrets: args.sample_secrets,
        keep_root_token: args.keep_root_token,
        audit_file: args.audit_file.clone(),
        secret_id_ttl: args.secret_id_ttl.clone(),
        rotate_secret_id: args.rotate_secret_id,
        namespace: contract::namespace(args.vault_namespace.as_deref()),
    };
    let mut output = vault_init::Output::new(out, json);
    let report = match vault_init::run(c, spec, opts, &mut output).await {
        Ok(report) => report,
        Err(e) => {
            // An open document (the keys are in it) ends with the error: one JSON document.
            output.fail(&error_chain(&e))?;
            return Err(CliError::VaultInit(e));
        }
    };
    if json {
        output.finish(&report)?;
        return Ok(EXIT_OK);
    }
    let mut text = format!("Vault   {}\n", report.vault_address);
    for line in &report.changed {
        text.push_str(&format!("done    {line}\n"));
    }
    for line in &report.kept {
        text.push_str(&format!("kept    {line}\n"));
    }
    for line in &report.warnings {
        text.push_str(&format!("warning {line}\n"));
    }
    if report.changed.is_empty() {
        text.push_str("Nothing to do: Vault is initialised, unsealed and the replicator's credentials are in place.\n");
    }
    output.text().write_all(text.as_bytes())?;
    Ok(EXIT_OK)
}
