//! `replicator sync`: the Lambda's sync, run from a shell.
//!
//! Exit codes: 0 = the run succeeded (conflicts are reported, not failed); 1 = the run failed
//! (a secret or the whole run); 64 = bad command line (as `deployer`). With
//! `--detailed-exitcode` (Terraform's convention, as `deployer plan`): 0 = nothing to write,
//! 2 = writes (planned with `--dry-run`, done without, or left for the next run by the
//! deadline), 1 = failed.

use std::io::Write;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use replicator::config::{OutputFormat, SyncArgs};
use replicator::progress::Progress;

/// Exit code of a bad command line (sysexits' EX_USAGE), the same in both programs.
const EXIT_USAGE: u8 = 64;

/// Replicates Vault / OpenBao KV v2 secrets into AWS Secrets Manager.
#[derive(Debug, Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    /// More logs on stderr (-v: debug, -vv: everything). RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
// Parsed once per process: the size of the larger variant does not matter.
#[allow(clippy::large_enum_variant)]
enum Command {
    /// Runs one sync, as the Lambda does, and prints the report.
    ///
    /// Examples:
    ///   VAULT_ADDR=https://vault:8200 VAULT_TOKEN=... replicator sync --prefix team --dry-run
    ///   replicator sync --connection-secret team-connection/vault --output json
    #[command(verbatim_doc_comment)]
    Sync {
        #[command(flatten)]
        args: SyncArgs,

        /// Report format on stdout.
        #[arg(long, value_enum, default_value = "text")]
        output: OutputFormat,

        /// For this run only: where Vault's latest version is older than the one AWS holds (a
        /// Vault restored from a snapshot, or failed over), replicate Vault's version anyway.
        #[arg(long)]
        accept_vault_rollback: bool,

        /// Exit 0 when there is nothing to write, 2 when there is (with --dry-run: planned;
        /// without: done), 1 when the run failed: for CI, `--dry-run --detailed-exitcode`
        /// tells whether AWS is behind Vault.
        #[arg(long)]
        detailed_exitcode: bool,
    },

    /// Where every secret of the sync stands: in sync, behind (Vault newer), drifted, missing,
    /// pending deletion, modified outside, conflict and why, orphaned, deleted, error. From a
    /// dry run: Vault's metadata and AWS's tags only, no value read, nothing written. Exit 0
    /// all settled, 2 something to do, 1 an error.
    ///
    /// Example:
    ///   replicator status --connection-secret team-connection/vault --prefix team --output json
    #[command(verbatim_doc_comment)]
    Status {
        #[command(flatten)]
        args: SyncArgs,

        /// Format on stdout.
        #[arg(long, value_enum, default_value = "text")]
        output: OutputFormat,
    },

    /// Follows Vault's file audit log and replicates each change a moment after it happens:
    /// the secrets its successful writes name, by their metadata and their AWS names (no
    /// listing). A full sync runs at start and every --reconcile-interval; SIGTERM finishes
    /// the batch under way and exits 0.
    ///
    /// Example:
    ///   replicator watch --audit-log /var/log/vault/audit.log --connection-secret team-connection/vault --prefix team
    #[command(verbatim_doc_comment)]
    Watch {
        #[command(flatten)]
        args: SyncArgs,

        #[command(flatten)]
        watch: replicator::watch::WatchArgs,
    },

    /// Prints a shell completion script.
    ///
    /// Example: replicator completions bash > /etc/bash_completion.d/replicator
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
}

/// Writes `text` on stdout; `false` when it could not (a closed pipe).
fn print(text: &str) -> bool {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .is_ok()
}

/// The exit code of a sync run (see the module's documentation).
fn exit_code(report: &replicator::report::Report, detailed: bool) -> u8 {
    if report.failed() {
        1
    } else if detailed && (report.writes() > 0 || report.partial) {
        2
    } else {
        0
    }
}

/// Runs the sync; on a terminal, a live progress line on stderr (none otherwise).
async fn run_showing_progress(
    args: &SyncArgs,
    aws: &aws_types::SdkConfig,
    request: &replicator::run::Request,
) -> replicator::report::Report {
    use std::io::IsTerminal;
    let progress = Progress::default();
    if !std::io::stderr().is_terminal() {
        return replicator::run::run_with_progress(args, aws, request, &progress).await;
    }
    let run = replicator::run::run_with_progress(args, aws, request, &progress);
    tokio::pin!(run);
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(150));
    let report = loop {
        tokio::select! {
            report = &mut run => break report,
            _ = tick.tick() => eprint!("\r\x1b[2K{}", progress.line()),
        }
    };
    eprint!("\r\x1b[2K");
    report
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            // Help and version are answers, not errors.
            return ExitCode::from(if e.use_stderr() { EXIT_USAGE } else { 0 });
        }
    };
    replicator::logging::init(cli.verbose, false);
    match cli.command {
        Command::Watch { args, watch } => {
            ExitCode::from(replicator::watch::main(&args, &watch).await)
        }
        Command::Status { mut args, output } => {
            args.dry_run = true;
            let aws = replicator::aws::load_sdk_config().await;
            let request = replicator::run::Request::default();
            let report = run_showing_progress(&args, &aws, &request).await;
            let entries = replicator::status::entries(&report);
            let mut text = match output {
                OutputFormat::Json => replicator::status::answer(&report).to_string() + "\n",
                OutputFormat::Text => replicator::status::to_text(&entries),
            };
            if output == OutputFormat::Text {
                for p in &report.failures {
                    let name = if p.name.is_empty() { "run" } else { &p.name };
                    text.push_str(&format!("FAILED {name} [{}]: {}\n", p.kind, p.message));
                }
            }
            if !print(&text) {
                return ExitCode::from(1);
            }
            ExitCode::from(replicator::status::exit_code(report.failed(), &entries))
        }
        Command::Completions { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            let mut out = std::io::stdout().lock();
            clap_complete::generate(shell, &mut cmd, "replicator", &mut out);
            ExitCode::SUCCESS
        }
        Command::Sync {
            args,
            output,
            accept_vault_rollback,
            detailed_exitcode,
        } => {
            let aws = replicator::aws::load_sdk_config().await;
            let request = replicator::run::Request {
                accept_vault_rollback,
                ..Default::default()
            };
            let report = run_showing_progress(&args, &aws, &request).await;
            let text = match output {
                OutputFormat::Json => report.to_json() + "\n",
                OutputFormat::Text => report.to_text(),
            };
            if !print(&text) {
                return ExitCode::from(1);
            }
            ExitCode::from(exit_code(&report, detailed_exitcode))
        }
    }
}
