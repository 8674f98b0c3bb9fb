//! The command line: global flags, one module per subcommand, results on an injected writer
//! (stdout in the binary), progress and logs on stderr.
//!
//! Exit codes: 0 success (`plan`/`status`: nothing to change); 1 error (bad configuration, AWS
//! failure, destroy not confirmed); 2 `plan`/`status`: something would change or has drifted;
//! 64 bad command line.

pub(crate) mod ask;
pub(crate) mod common;
pub(crate) mod destroy;
pub(crate) mod pause;
pub(crate) mod plan;
pub(crate) mod status;
pub(crate) mod sync_now;
pub(crate) mod target;
pub(crate) mod up;
pub(crate) mod vault_init;

use std::io::Write;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::clients::Clients;
use crate::config::{Config, ConfigError, FileConfig};
use crate::lambda_zip::{self, LambdaZip};
use crate::spec::Spec;

pub use common::{
    CliError, EXIT_CHANGES, EXIT_ERROR, EXIT_OK, EXIT_USAGE, ExitCodeArgs, Ticker, emit,
    error_chain, identity, outputs_text,
};

/// Deploys the vault-secrets-replicator stack (KMS key, IAM role, SNS topic, schedule,
/// connection secret, the Lambda, optionally Vault on EC2) with direct AWS SDK calls.
#[derive(Debug, Parser)]
#[command(name = "deployer", version, about, long_about = None)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Text,
    Json,
}

/// Flags every subcommand takes.
#[derive(Debug, Args)]
pub struct Global {
    /// Configuration file (TOML). A missing default file means all defaults.
    #[arg(long, global = true, default_value = "deployer.toml")]
    pub config: PathBuf,

    /// Stack name (overrides `stack_name`).
    #[arg(long, global = true)]
    pub stack_name: Option<String>,

    /// AWS region (overrides `region` and AWS_REGION).
    #[arg(long, global = true)]
    pub region: Option<String>,

    /// AWS profile from ~/.aws/config.
    #[arg(long, global = true)]
    pub profile: Option<String>,

    /// Any configuration key, as KEY=VALUE (repeatable; wins over the file).
    #[arg(long = "set", global = true, value_name = "KEY=VALUE")]
    pub set: Vec<String>,

    /// The replicator's Lambda zip.
    #[arg(long, global = true, default_value = lambda_zip::DEFAULT_PATH)]
    pub lambda_zip: PathBuf,

    /// Result format on stdout.
    #[arg(long, global = true, value_enum, default_value = "text")]
    pub output: Output,

    /// More logs on stderr (-v, -vv). RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Shows what `up` would do, resource by resource, and the monthly cost. Exit 0 when it
    /// worked; with --detailed-exitcode, 2 when anything would change.
    ///
    /// Example: deployer plan --config deployer.toml --detailed-exitcode
    Plan(ExitCodeArgs),
    /// Creates or updates the stack until it matches the configuration. A second run changes
    /// nothing. Changes of access (policies, trust, security groups) are listed and confirmed
    /// first, unless --yes.
    ///
    /// Example: deployer up --set notification_email=ops@example.com
    Up(up::UpArgs),
    /// Shows each resource as present, missing or drifted, and the outputs. Exit 0 when it
    /// worked; with --detailed-exitcode, 2 when anything is missing or drifted. With
    /// --secrets, where each replicated secret stands instead (exit 0 all settled, 2 something
    /// to do, 1 an error).
    ///
    /// Example: deployer status --secrets --output json
    Status(status::StatusArgs),
    /// Deletes the stack's resources (only those carrying its tag), in reverse order.
    ///
    /// Example: deployer destroy --yes
    Destroy(destroy::DestroyArgs),
    /// Initialises, unseals and configures the stack's Vault for the replicator, and writes the
    /// replicator's credentials into the connection secret. Safe to re-run.
    ///
    /// Example: deployer vault-init --keys-to secret --sample-secrets
    VaultInit(vault_init::VaultInitArgs),
    /// Runs the replicator now, as the schedule would: invokes the function synchronously and
    /// prints its report. Exit 0 when the sync succeeded, 1 when it failed.
    ///
    /// Example: deployer sync-now --output json
    SyncNow(sync_now::SyncNowArgs),
    /// Stops replication without removing anything: the schedule is disabled and the
    /// functions sync nothing (the change watcher's batches wait) until `deployer resume`.
    ///
    /// Example: deployer pause
    Pause,
    /// Undoes `deployer pause` and runs a full sync at once, so nothing changed meanwhile is
    /// lost. Exit 0 when the sync succeeded, 1 when it failed.
    ///
    /// Example: deployer resume
    Resume,
    /// The replicas' account, when `account_role_arn` names a role in another one: makes,
    /// shows or deletes that role there, with the credentials of --target-profile.
    ///
    /// Example: deployer target up --target-profile team-a
    Target(target::TargetArgs),
    /// Prints a shell completion script.
    ///
    /// Example: deployer completions bash > /etc/bash_completion.d/deployer
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
}

/// Commands that need no configuration and no AWS: `Some(exit code)` when `cli` is one.
pub fn run_local(cli: &Cli, out: &mut dyn Write) -> Option<Result<i32, CliError>> {
    let Command::Completions { shell } = &cli.command else {
        return None;
    };
    let mut cmd = <Cli as clap::CommandFactory>::command();
    clap_complete::generate(*shell, &mut cmd, "deployer", out);
    Some(Ok(EXIT_OK))
}

/// Reads the file, applies flags, validates: all before any AWS call.
pub fn load_config(g: &Global) -> Result<Config, ConfigError> {
    let explicit = g.config.as_os_str() != "deployer.toml";
    let mut file = FileConfig::load(&g.config, explicit)?;
    let mut sets = g.set.clone();
    if let Some(s) = &g.stack_name {
        sets.push(format!("stack_name={s}"));
    }
    if let Some(r) = &g.region {
        sets.push(format!("region={r}"));
    }
    file.apply_overrides(&sets)?;
    file.validate()
}

/// The zip, checked before any AWS call, for the commands that upload or compare it.
pub fn load_zip(cmd: &Command, g: &Global) -> Result<Option<LambdaZip>, CliError> {
    match cmd {
        Command::Plan(_) | Command::Up(_) => Ok(Some(LambdaZip::load(&g.lambda_zip)?)),
        Command::Status(_) => Ok(LambdaZip::load(&g.lambda_zip).ok()),
        Command::Destroy(_)
        | Command::VaultInit(_)
        | Command::SyncNow(_)
        | Command::Pause
        | Command::Resume
        | Command::Target(_)
        | Command::Completions { .. } => Ok(None),
    }
}

/// Runs one command against AWS; returns the exit code. `target` acts in the replicas'
/// account (`deployer target`, from --target-profile).
pub async fn execute(
    cli: &Cli,
    cfg: Config,
    zip: Option<LambdaZip>,
    clients: &Clients,
    target: Option<&Clients>,
    region: Option<String>,
    out: &mut dyn Write,
) -> Result<i32, CliError> {
    for w in &cfg.warnings {
        tracing::warn!("{w}");
    }
    let id = identity(clients, region).await?;
    // The region may come from the environment, the account from the credentials: only now
    // are they known. Checked where the configuration would be deployed; `status`, `destroy`
    // and the rest still reach a stack an earlier version deployed with what is refused now.
    if matches!(cli.command, Command::Plan(_) | Command::Up(_)) {
        cfg.check_identity(&id.account, &id.partition, &id.region)?;
    }
    let mut spec = Spec::new(cfg, id);
    if matches!(cli.command, Command::Plan(_) | Command::Up(_)) {
        spec.check_limits().map_err(|problem| {
            CliError::Config(ConfigError::Invalid {
                key: "sync".into(),
                problem,
            })
        })?;
    }
    // Secrets Manager's own check of the replicas' policy, before anything is planned.
    if matches!(cli.command, Command::Plan(_) | Command::Up(_))
        && let Some(problem) =
            crate::resources::replicas::check_resource_policy(clients, &spec.replica_syncs())
                .await?
    {
        return Err(CliError::Config(ConfigError::Invalid {
            key: "resource_policy".into(),
            problem,
        }));
    }
    // A paused stack stays paused through `plan`, `up` and `status`.
    if matches!(
        cli.command,
        Command::Plan(_) | Command::Up(_) | Command::Status(_)
    ) {
        spec.paused = crate::resources::rule::paused(clients, &spec.schedule_spec()).await?;
    }
    let stack = crate::stack::Stack {
        clients,
        spec: &spec,
        zip: zip.as_ref(),
    };
    let json = cli.global.output == Output::Json;
    if let Command::Target(args) = &cli.command {
        let target = target.ok_or_else(|| {
            CliError::Refused(
                "--target-profile is required: the profile whose credentials act in the replicas' account".into(),
            )
        })?;
        return target::run(args, &spec, target, json, out).await;
    }
    match &cli.command {
        Command::Plan(codes) => plan::run(&stack, *codes, json, out).await,
        Command::Up(args) => up::run(&stack, args, json, out).await,
        Command::Status(args) => status::run(&stack, *args, json, out).await,
        Command::SyncNow(args) => sync_now::run(&stack, args, json, out).await,
        Command::Destroy(args) => destroy::run(&stack, args, json, out).await,
        Command::VaultInit(args) => vault_init::run(&stack, args, json, out).await,
        Command::Pause => pause::pause(&stack, json, out).await,
        Command::Resume => pause::resume(&stack, json, out).await,
        Command::Completions { .. } | Command::Target(_) => {
            run_local(cli, out).unwrap_or(Ok(EXIT_OK))
        }
    }
}
